/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl migrate: virsh migrate's peer-to-peer form, with a progress bar. */

#include <errno.h>
#include <glib.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "ferry-bus.h"
#include "macro.h"

typedef struct Progress {
        char *state;
        char *phase;
        char *error_name;
        char *error_message;
        uint64_t total, remaining, processed;
} Progress;

static void progress_done(Progress *p) {
        free(p->state);
        free(p->phase);
        free(p->error_name);
        free(p->error_message);
}

static int read_progress(sd_bus *bus, const char *path, Progress *p) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        progress_done(p);
        *p = (Progress) {};
#define STR(name, field) \
        r = sd_bus_get_property_string(bus, FERRY_BUS_NAME, path, FERRY_MIGRATION_INTERFACE, name, &error, &p->field); \
        if (r < 0) return ctl_report_error("failed to read the migration's state", &error, r);
#define U64(name, field) \
        r = sd_bus_get_property_trivial(bus, FERRY_BUS_NAME, path, FERRY_MIGRATION_INTERFACE, name, &error, 't', &p->field); \
        if (r < 0) return ctl_report_error("failed to read the migration's state", &error, r);
        STR("State", state);
        STR("Phase", phase);
        STR("ErrorName", error_name);
        STR("ErrorMessage", error_message);
        U64("DataTotal", total);
        U64("DataRemaining", remaining);
        U64("DataProcessed", processed);
#undef STR
#undef U64
        return 0;
}

static void draw(const Progress *p, bool final) {
        unsigned percent = 0;

        if (p->total > 0)
                percent = (unsigned) (100 - (p->remaining * 100 / p->total));
        if (final && strcmp(p->state, "completed") == 0)
                percent = 100;
        /* As virsh --verbose: one line, rewritten in place on a terminal. */
        fprintf(stderr, "%sMigration: [%3u %%] %-8s %" PRIu64 " MiB sent%s", isatty(STDERR_FILENO) ? "\r" : "",
                percent, p->phase, p->processed >> 20, final || !isatty(STDERR_FILENO) ? "\n" : "");
        fflush(stderr);
}

static int on_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        bool *dirty = userdata;
        *dirty = true;
        return 0;
}

/* The options of ferryctl migrate, as virsh migrate's, and the Domain.Migrate a{sv} they make.
 * Kept apart from the call so that every flow builds its options the same way. */
typedef struct MigrateArgs {
        const char *domain, *destination;
        const char *migrateuri, *dname, *listen_address;
        char *xml;                 /* --xml FILE: its contents */
        uint64_t bandwidth, downtime, timeout;
        bool verbose, suspend, persistent, undefine_source, offline, direct, tls, auto_converge,
             change_protection;
} MigrateArgs;

static void migrate_args_done(MigrateArgs *a) {
        g_free(a->xml);
}

static int migrate_args_parse(int argc, char **argv, MigrateArgs *a) {
        enum { O_P2P = 0x100, O_LIVE, O_VERBOSE, O_BANDWIDTH, O_MIGRATEURI, O_SUSPEND, O_DOWNTIME, O_PERSISTENT,
               O_UNDEFINE_SOURCE, O_OFFLINE, O_DIRECT, O_TLS, O_AUTO_CONVERGE, O_XML, O_DNAME, O_CHANGE_PROTECTION,
               O_LISTEN_ADDRESS, O_TIMEOUT };
        static const struct option options[] = {
                { "p2p", no_argument, NULL, O_P2P },
                { "live", no_argument, NULL, O_LIVE },
                { "verbose", no_argument, NULL, O_VERBOSE },
                { "bandwidth", required_argument, NULL, O_BANDWIDTH },
                { "migrateuri", required_argument, NULL, O_MIGRATEURI },
                { "suspend", no_argument, NULL, O_SUSPEND },
                { "max-downtime", required_argument, NULL, O_DOWNTIME },
                { "persistent", no_argument, NULL, O_PERSISTENT },
                { "undefinesource", no_argument, NULL, O_UNDEFINE_SOURCE },
                { "offline", no_argument, NULL, O_OFFLINE },
                { "direct", no_argument, NULL, O_DIRECT },
                { "tls", no_argument, NULL, O_TLS },
                { "auto-converge", no_argument, NULL, O_AUTO_CONVERGE },
                { "xml", required_argument, NULL, O_XML },
                { "dname", required_argument, NULL, O_DNAME },
                { "change-protection", no_argument, NULL, O_CHANGE_PROTECTION },
                { "listen-address", required_argument, NULL, O_LISTEN_ADDRESS },
                { "timeout", required_argument, NULL, O_TIMEOUT },
                {}
        };
        g_autoptr(GError) gerror = NULL;
        char *end;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case O_P2P:
                case O_LIVE:
                        break; /* the only flow and mode so far */
                case O_VERBOSE:
                        a->verbose = true;
                        break;
                case O_SUSPEND:
                        a->suspend = true;
                        break;
                case O_PERSISTENT:
                        a->persistent = true;
                        break;
                case O_UNDEFINE_SOURCE:
                        a->undefine_source = true;
                        break;
                case O_OFFLINE:
                        a->offline = true;
                        break;
                case O_DIRECT:
                        a->direct = true;
                        break;
                case O_TLS:
                        a->tls = true;
                        break;
                case O_AUTO_CONVERGE:
                        a->auto_converge = true;
                        break;
                case O_CHANGE_PROTECTION:
                        a->change_protection = true;
                        break;
                case O_MIGRATEURI:
                        a->migrateuri = optarg;
                        break;
                case O_DNAME:
                        a->dname = optarg;
                        break;
                case O_LISTEN_ADDRESS:
                        a->listen_address = optarg;
                        break;
                case O_XML:
                        g_free(a->xml);
                        a->xml = NULL;
                        if (!g_file_get_contents(optarg, &a->xml, NULL, &gerror)) {
                                fprintf(stderr, "error: failed to read %s: %s\n", optarg, gerror->message);
                                return -EIO;
                        }
                        break;
                case O_BANDWIDTH:
                        a->bandwidth = strtoull(optarg, &end, 10);
                        if (*end || a->bandwidth > (UINT64_C(1) << 30)) {
                                fprintf(stderr, "error: --bandwidth takes MiB/s\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->bandwidth <<= 20;
                        break;
                case O_DOWNTIME:
                        a->downtime = strtoull(optarg, &end, 10);
                        if (*end || a->downtime > 3600000) {
                                fprintf(stderr, "error: --max-downtime takes milliseconds\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->downtime *= 1000;
                        break;
                case O_TIMEOUT:
                        a->timeout = strtoull(optarg, &end, 10);
                        if (*end || a->timeout == 0 || a->timeout > 86400) {
                                fprintf(stderr, "error: --timeout takes seconds (1 to 86400)\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->timeout *= UINT64_C(1000000);
                        break;
                default:
                        return CTL_USAGE_ERROR;
                }
        if (argc - optind != 2) {
                fprintf(stderr, "error: usage: ferryctl migrate [OPTIONS] DOMAIN DEST-URI\n");
                return CTL_USAGE_ERROR;
        }
        a->domain = argv[optind];
        a->destination = argv[optind + 1];
        return 0;
}

/* Appends the a{sv} of Domain.Migrate for a. */
static int migrate_args_append(sd_bus_message *m, const MigrateArgs *a) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && a->migrateuri)
                r = sd_bus_message_append(m, "{sv}", "hypervisor_uri", "s", a->migrateuri);
        if (r >= 0 && a->bandwidth)
                r = sd_bus_message_append(m, "{sv}", "max_bandwidth", "t", a->bandwidth);
        if (r >= 0 && a->downtime)
                r = sd_bus_message_append(m, "{sv}", "max_downtime_usec", "t", a->downtime);
        if (r >= 0 && a->suspend)
                r = sd_bus_message_append(m, "{sv}", "paused", "b", 1);
        if (r >= 0 && a->persistent)
                r = sd_bus_message_append(m, "{sv}", "persistent", "b", 1);
        if (r >= 0 && a->undefine_source)
                r = sd_bus_message_append(m, "{sv}", "undefine_source", "b", 1);
        if (r >= 0 && a->offline)
                r = sd_bus_message_append(m, "{sv}", "offline", "b", 1);
        if (r >= 0 && a->direct)
                r = sd_bus_message_append(m, "{sv}", "direct", "b", 1);
        if (r >= 0 && a->tls)
                r = sd_bus_message_append(m, "{sv}", "tls", "b", 1);
        if (r >= 0 && a->auto_converge)
                r = sd_bus_message_append(m, "{sv}", "auto_converge", "b", 1);
        if (r >= 0 && a->change_protection)
                r = sd_bus_message_append(m, "{sv}", "change_protection", "b", 1);
        if (r >= 0 && a->xml)
                r = sd_bus_message_append(m, "{sv}", "destination_xml", "s", a->xml);
        if (r >= 0 && a->dname)
                r = sd_bus_message_append(m, "{sv}", "destination_name", "s", a->dname);
        if (r >= 0 && a->listen_address)
                r = sd_bus_message_append(m, "{sv}", "listen_address", "s", a->listen_address);
        if (r >= 0 && a->timeout)
                r = sd_bus_message_append(m, "{sv}", "suspend_timeout_usec", "t", a->timeout);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int ctl_migrate(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *match = NULL;
        _cleanup_free_ char *domain_path = NULL, *migration = NULL;
        _cleanup_(migrate_args_done) MigrateArgs a = {};
        const char *path;
        bool dirty = true;
        Progress p = {};
        int r;

        r = migrate_args_parse(argc, argv, &a);
        if (r < 0)
                return r;

        r = ctl_connect(&bus);
        if (r < 0)
                return r;
        r = ctl_find_domain(bus, a.domain, &domain_path);
        if (r < 0)
                return r;

        r = sd_bus_message_new_method_call(bus, &m, FERRY_BUS_NAME, domain_path, FERRY_DOMAIN_INTERFACE, "Migrate");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", a.destination);
        if (r >= 0)
                r = migrate_args_append(m, &a);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", (uint64_t) 0);
        if (r < 0)
                return ctl_report_error("failed to build the request", NULL, r);
        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return ctl_report_error("migration failed to start", &error, r);
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return ctl_report_error("bad reply from ferryd", NULL, r);
        migration = strdup(path);

        /* Subscribe first, then read: no change can slip between the two. */
        r = sd_bus_match_signal(bus, &match, FERRY_BUS_NAME, migration, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_changed, &dirty);
        if (r < 0)
                return ctl_report_error("cannot watch the migration", NULL, r);
        for (;;) {
                if (dirty) {
                        dirty = false;
                        r = read_progress(bus, migration, &p);
                        if (r < 0)
                                break;
                        if (strcmp(p.state, "running") != 0)
                                break;
                        if (a.verbose)
                                draw(&p, false);
                }
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return ctl_report_error("lost ferryd", NULL, r);
                if (r > 0)
                        continue;
                r = sd_bus_wait(bus, UINT64_MAX);
                if (r < 0)
                        return ctl_report_error("lost ferryd", NULL, r);
        }
        if (r >= 0) {
                if (a.verbose)
                        draw(&p, true);
                if (strcmp(p.state, "completed") != 0) {
                        fprintf(stderr, "error: migration %s in phase %s\nerror: %s (%s)\n", p.state, p.phase,
                                p.error_message, p.error_name);
                        r = -EIO;
                }
        }
        progress_done(&p);
        return r;
}
