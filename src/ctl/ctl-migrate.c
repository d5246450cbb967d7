/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl migrate: virsh migrate, with a progress bar. Without --p2p or --direct this client
 * drives the managed direct flow itself (docs/migration.md): Begin on the source, Prepare on
 * the destination, Perform on the source, Finish on the destination, Confirm on the source,
 * over one connection to each ferryd, as virsh does. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "ctl.h"
#include "ferry-bus.h"
#include "macro.h"
#include "migration-uri.h"

/* Perform and Finish last as long as the guest's RAM takes to move: no timeout of ours. */
#define LONG_CALL_USEC (7ULL * 24 * 3600 * 1000000ULL)


typedef struct Progress {
        char *state;
        char *phase;
        char *error_name;
        char *error_message;
        uint64_t total, remaining, processed, iteration;
        char *postcopy;
} Progress;

static void progress_done(Progress *p) {
        free(p->state);
        free(p->phase);
        free(p->error_name);
        free(p->error_message);
        free(p->postcopy);
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
        U64("Iteration", iteration);
        STR("PostCopy", postcopy);
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
        const char *copy_storage, *disks_uri;  /* "all"/"inc"; --disks-uri, or --disks-port made one */
        char *disks_port_uri;
        char **disks;              /* --migrate-disks vda,vdb */
        char *xml;                 /* --xml FILE: its contents */
        uint64_t bandwidth, downtime, timeout, postcopy_bandwidth;
        unsigned parallel_connections;
        bool p2p, verbose, suspend, persistent, undefine_source, offline, direct, tls, auto_converge,
             change_protection, postcopy, postcopy_after_precopy, postcopy_resume, parallel,
             parallel_connections_set, tunnelled, tunnel_plaintext;
} MigrateArgs;

static void migrate_args_done(MigrateArgs *a) {
        g_free(a->xml);
        g_free(a->disks_port_uri);
        g_strfreev(a->disks);
}

static int migrate_args_parse(int argc, char **argv, MigrateArgs *a) {
        enum { O_P2P = 0x100, O_LIVE, O_VERBOSE, O_BANDWIDTH, O_MIGRATEURI, O_SUSPEND, O_DOWNTIME, O_PERSISTENT,
               O_UNDEFINE_SOURCE, O_OFFLINE, O_DIRECT, O_TLS, O_AUTO_CONVERGE, O_XML, O_DNAME, O_CHANGE_PROTECTION,
               O_LISTEN_ADDRESS, O_TIMEOUT, O_COPY_STORAGE_ALL, O_COPY_STORAGE_INC, O_MIGRATE_DISKS, O_DISKS_URI,
               O_DISKS_PORT, O_POSTCOPY, O_POSTCOPY_AFTER_PRECOPY, O_POSTCOPY_BANDWIDTH, O_POSTCOPY_RESUME, O_PARALLEL,
               O_PARALLEL_CONNECTIONS, O_TUNNELLED, O_TUNNEL_PLAINTEXT, O_DESTURI };
        static const struct option options[] = {
                { "p2p", no_argument, NULL, O_P2P },
                { "live", no_argument, NULL, O_LIVE },
                { "verbose", no_argument, NULL, O_VERBOSE },
                { "bandwidth", required_argument, NULL, O_BANDWIDTH },
                { "desturi", required_argument, NULL, O_DESTURI },
                { "migrateuri", required_argument, NULL, O_MIGRATEURI },
                { "suspend", no_argument, NULL, O_SUSPEND },
                { "max-downtime", required_argument, NULL, O_DOWNTIME },
                { "persistent", no_argument, NULL, O_PERSISTENT },
                { "undefinesource", no_argument, NULL, O_UNDEFINE_SOURCE },
                { "offline", no_argument, NULL, O_OFFLINE },
                { "direct", no_argument, NULL, O_DIRECT },
                { "tls", no_argument, NULL, O_TLS },
                { "tunnelled", no_argument, NULL, O_TUNNELLED },
                { "tunnel-plaintext", no_argument, NULL, O_TUNNEL_PLAINTEXT },
                { "auto-converge", no_argument, NULL, O_AUTO_CONVERGE },
                { "xml", required_argument, NULL, O_XML },
                { "dname", required_argument, NULL, O_DNAME },
                { "change-protection", no_argument, NULL, O_CHANGE_PROTECTION },
                { "listen-address", required_argument, NULL, O_LISTEN_ADDRESS },
                { "timeout", required_argument, NULL, O_TIMEOUT },
                { "copy-storage-all", no_argument, NULL, O_COPY_STORAGE_ALL },
                { "copy-storage-inc", no_argument, NULL, O_COPY_STORAGE_INC },
                { "migrate-disks", required_argument, NULL, O_MIGRATE_DISKS },
                { "disks-uri", required_argument, NULL, O_DISKS_URI },
                { "disks-port", required_argument, NULL, O_DISKS_PORT },
                { "postcopy", no_argument, NULL, O_POSTCOPY },
                { "postcopy-after-precopy", no_argument, NULL, O_POSTCOPY_AFTER_PRECOPY },
                { "postcopy-bandwidth", required_argument, NULL, O_POSTCOPY_BANDWIDTH },
                { "postcopy-resume", no_argument, NULL, O_POSTCOPY_RESUME },
                { "parallel", no_argument, NULL, O_PARALLEL },
                { "parallel-connections", required_argument, NULL, O_PARALLEL_CONNECTIONS },
                {}
        };
        g_autoptr(GError) gerror = NULL;
        char *end;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case O_P2P:
                        a->p2p = true;
                        break;
                case O_LIVE:
                        break; /* the only mode so far */
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
                case O_TUNNELLED:
                        a->tunnelled = true;
                        break;
                case O_TUNNEL_PLAINTEXT:
                        a->tunnel_plaintext = true;
                        break;
                case O_AUTO_CONVERGE:
                        a->auto_converge = true;
                        break;
                case O_CHANGE_PROTECTION:
                        a->change_protection = true;
                        break;
                case O_DESTURI:
                        a->destination = optarg;
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
                case O_COPY_STORAGE_ALL:
                case O_COPY_STORAGE_INC:
                        if (a->copy_storage) {
                                fprintf(stderr, "error: --copy-storage-all and --copy-storage-inc: pick one\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->copy_storage = c == O_COPY_STORAGE_ALL ? "all" : "inc";
                        break;
                case O_MIGRATE_DISKS:
                        g_strfreev(a->disks);
                        a->disks = g_strsplit(optarg, ",", -1);
                        break;
                case O_DISKS_URI:
                        a->disks_uri = optarg;
                        break;
                case O_DISKS_PORT: {
                        unsigned long port = strtoul(optarg, &end, 10);
                        if (*end || port == 0 || port > 65535) {
                                fprintf(stderr, "error: --disks-port takes a port number\n");
                                return CTL_USAGE_ERROR;
                        }
                        g_free(a->disks_port_uri);
                        /* virsh's meaning: that port, on the address the destination picks. */
                        a->disks_port_uri = g_strdup_printf("tcp://:%lu", port);
                        break;
                }
                case O_TIMEOUT:
                        a->timeout = strtoull(optarg, &end, 10);
                        if (*end || a->timeout == 0 || a->timeout > 86400) {
                                fprintf(stderr, "error: --timeout takes seconds (1 to 86400)\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->timeout *= UINT64_C(1000000);
                        break;
                case O_POSTCOPY:
                        a->postcopy = true;
                        break;
                case O_POSTCOPY_AFTER_PRECOPY:
                        a->postcopy_after_precopy = true;
                        break;
                case O_POSTCOPY_RESUME:
                        a->postcopy_resume = true;
                        break;
                case O_POSTCOPY_BANDWIDTH:
                        a->postcopy_bandwidth = strtoull(optarg, &end, 10);
                        if (*end || optarg[0] == '-' || a->postcopy_bandwidth > (UINT64_C(1) << 30)) {
                                fprintf(stderr, "error: --postcopy-bandwidth takes MiB/s\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->postcopy_bandwidth <<= 20;
                        break;
                case O_PARALLEL:
                        a->parallel = true;
                        break;
                case O_PARALLEL_CONNECTIONS: {
                        unsigned long n = strtoul(optarg, &end, 10);
                        /* ferryd checks the range; here only that it is a number. */
                        if (*end || optarg[0] == '-' || end == optarg || n > UINT32_MAX) {
                                fprintf(stderr, "error: --parallel-connections takes a number\n");
                                return CTL_USAGE_ERROR;
                        }
                        a->parallel_connections = (unsigned) n;
                        a->parallel_connections_set = true;
                        a->parallel = true;
                        break;
                }
                default:
                        return CTL_USAGE_ERROR;
                }
        /* virsh spells the destination --desturi; the positional form stays: one of the two. */
        if (argc - optind != (a->destination ? 1 : 2)) {
                fprintf(stderr, "error: usage: ferryctl migrate [OPTIONS] DOMAIN DEST-URI, or "
                                "ferryctl migrate [OPTIONS] --desturi DEST-URI DOMAIN\n");
                return CTL_USAGE_ERROR;
        }
        if (a->p2p && a->direct) {
                fprintf(stderr, "error: --p2p and --direct are two different flows: pick one\n");
                return CTL_USAGE_ERROR;
        }
        if ((a->postcopy_after_precopy || a->postcopy_bandwidth) && !a->postcopy) {
                fprintf(stderr, "error: --postcopy-after-precopy and --postcopy-bandwidth need --postcopy\n");
                return CTL_USAGE_ERROR;
        }
        /* As virsh: --parallel alone means two connections. */
        if (a->parallel && !a->parallel_connections_set)
                a->parallel_connections = 2;
        /* Post-copy needs the source's ferryd to drive the switch and the recovery: p2p. */
        if (a->postcopy && !a->direct)
                a->p2p = true;
        if (a->disks_uri && a->disks_port_uri) {
                fprintf(stderr, "error: --disks-uri and --disks-port: pick one\n");
                return CTL_USAGE_ERROR;
        }
        if (!a->disks_uri)
                a->disks_uri = a->disks_port_uri;
        if (!a->copy_storage && (a->disks || a->disks_uri)) {
                fprintf(stderr, "error: --migrate-disks, --disks-uri and --disks-port go with --copy-storage-all or "
                                "--copy-storage-inc\n");
                return CTL_USAGE_ERROR;
        }
        if (a->copy_storage && !a->p2p) {
                fprintf(stderr, "error: --copy-storage-%s: the disks are copied in the peer-to-peer flow only: "
                                "add --p2p\n", a->copy_storage);
                return CTL_USAGE_ERROR;
        }
        a->domain = argv[optind];
        if (!a->destination)
                a->destination = argv[optind + 1];
        return 0;
}

/* Appends the a{sv} of Domain.Migrate and MigrateBegin for a; with prepare, those of the
 * destination's PrepareMigration (what the source's ferryd sends it in the peer-to-peer flow). */
static int migrate_args_append(sd_bus_message *m, const MigrateArgs *a, bool prepare, bool paused) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && a->migrateuri)
                r = sd_bus_message_append(m, "{sv}", "hypervisor_uri", "s", a->migrateuri);
        if (r >= 0 && a->bandwidth && !prepare)
                r = sd_bus_message_append(m, "{sv}", "max_bandwidth", "t", a->bandwidth);
        if (r >= 0 && a->downtime && !prepare)
                r = sd_bus_message_append(m, "{sv}", "max_downtime_usec", "t", a->downtime);
        if (r >= 0 && (a->suspend || paused))
                r = sd_bus_message_append(m, "{sv}", "paused", "b", 1);
        if (r >= 0 && a->persistent)
                r = sd_bus_message_append(m, "{sv}", "persistent", "b", 1);
        if (r >= 0 && a->undefine_source && !prepare)
                r = sd_bus_message_append(m, "{sv}", "undefine_source", "b", 1);
        if (r >= 0 && a->offline)
                r = sd_bus_message_append(m, "{sv}", "offline", "b", 1);
        if (r >= 0 && a->direct && !prepare)
                r = sd_bus_message_append(m, "{sv}", "direct", "b", 1);
        if (r >= 0 && a->tls)
                r = sd_bus_message_append(m, "{sv}", "tls", "b", 1);
        /* The daemon refuses them outside Domain.Migrate's peer-to-peer flow. */
        if (r >= 0 && a->tunnelled && !prepare)
                r = sd_bus_message_append(m, "{sv}", "tunnelled", "b", 1);
        if (r >= 0 && a->tunnel_plaintext && !prepare)
                r = sd_bus_message_append(m, "{sv}", "tunnel_plaintext", "b", 1);
        if (r >= 0 && a->auto_converge && !prepare)
                r = sd_bus_message_append(m, "{sv}", "auto_converge", "b", 1);
        if (r >= 0 && a->change_protection && !prepare)
                r = sd_bus_message_append(m, "{sv}", "change_protection", "b", 1);
        if (r >= 0 && a->xml && !prepare)
                r = sd_bus_message_append(m, "{sv}", "destination_xml", "s", a->xml);
        if (r >= 0 && a->dname && !prepare)
                r = sd_bus_message_append(m, "{sv}", "destination_name", "s", a->dname);
        if (r >= 0 && a->listen_address)
                r = sd_bus_message_append(m, "{sv}", "listen_address", "s", a->listen_address);
        if (r >= 0 && a->timeout && !prepare)
                r = sd_bus_message_append(m, "{sv}", "suspend_timeout_usec", "t", a->timeout);
        /* Only the peer-to-peer flow copies storage: these never go to PrepareMigration from here. */
        if (r >= 0 && a->copy_storage && !prepare)
                r = sd_bus_message_append(m, "{sv}", "copy_storage", "s", a->copy_storage);
        if (r >= 0 && a->disks && !prepare) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "disks");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_append_strv(m, a->disks);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0 && a->disks_uri && !prepare)
                r = sd_bus_message_append(m, "{sv}", "disks_uri", "s", a->disks_uri);
        if (r >= 0 && a->postcopy)
                r = sd_bus_message_append(m, "{sv}", "postcopy", "b", 1);
        if (r >= 0 && a->postcopy_bandwidth && !prepare)
                r = sd_bus_message_append(m, "{sv}", "postcopy_bandwidth", "t", a->postcopy_bandwidth);
        if (r >= 0 && a->parallel)
                r = sd_bus_message_append(m, "{sv}", "parallel_connections", "u", (uint32_t) a->parallel_connections);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* Follows the job at path on bus until it ends (wait_reply NULL) or until *wait_reply is set
 * (a pending call's answer), drawing the bar with --verbose. p: the last figures read. */
static int watch(sd_bus *bus, const char *path, bool verbose, bool postcopy_after_precopy, sd_bus_message **wait_reply,
                 Progress *p) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *match = NULL;
        bool dirty = true, switched = false;
        int r;

        /* Subscribe first, then read: no change can slip between the two. */
        r = sd_bus_match_signal(bus, &match, FERRY_BUS_NAME, path, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_changed, &dirty);
        if (r < 0)
                return ctl_report_error("cannot watch the migration", NULL, r);
        for (;;) {
                if (wait_reply && *wait_reply)
                        return 0;
                if (dirty) {
                        dirty = false;
                        r = read_progress(bus, path, p);
                        if (r < 0)
                                return r;
                        if (!wait_reply && strcmp(p->state, "running") != 0)
                                return 0;
                        /* virsh --postcopy-after-precopy: QEMU counts a pass done when the
                         * next one begins (Iteration 2). */
                        if (postcopy_after_precopy && !switched && p->iteration >= 2 &&
                            strcmp(p->postcopy, "armed") == 0) {
                                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                                switched = true;
                                if (sd_bus_call_method(bus, FERRY_BUS_NAME, path, FERRY_MIGRATION_INTERFACE,
                                                       "StartPostCopy", &error, NULL, NULL) < 0)
                                        fprintf(stderr, "warning: cannot switch to post-copy: %s\n",
                                                error.message ?: error.name);
                        }
                        if (verbose && strcmp(p->state, "running") == 0)
                                draw(p, false);
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
}

/* The same two lines as a failed peer-to-peer job gives. */
static int report_failed(const char *phase, const char *message, const char *name) {
        fprintf(stderr, "error: migration failed in phase %s\nerror: %s (%s)\n", phase, message,
                name ?: "org.ferry.Ferry1.Error.MigrationFailed");
        return -EIO;
}

static int open_destination(const char *uri, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
        g_autofree char *why = NULL, *address = NULL;
        int r;

        /* The same strict parser as ferryd's: only these strings reach sd-bus (and ssh). */
        r = ferry_uri_parse(uri, &u, &why);
        if (r < 0) {
                fprintf(stderr, "error: invalid destination URI\nerror: %s\n", why ?: strerror(-r));
                return r;
        }
        r = ferry_uri_to_bus_address(u, NULL, &address);
        if (r >= 0 && !address)
                r = sd_bus_open_system(&bus);
        else if (r >= 0) {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        }
        if (r < 0) {
                fprintf(stderr, "error: cannot connect to the destination %s\nerror: %s\n", uri, strerror(-r));
                return r;
        }
        (void) sd_bus_set_allow_interactive_authorization(bus, isatty(STDIN_FILENO));
        /* Prepare starts a QEMU there and Finish waits for it: longer than sd-bus's 25 s. */
        (void) sd_bus_set_method_call_timeout(bus, LONG_CALL_USEC);
        *ret = TAKE_PTR(bus);
        return 0;
}

static int on_call_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        sd_bus_message **reply = userdata;
        *reply = sd_bus_message_ref(m);
        return 0;
}

/* Finish(false) on the destination or Confirm(false) on the source after a failure: best
 * effort, as libvirt's client does; the failure itself is what the user is told. */
static void give_up(sd_bus *bus, const char *path, const char *method) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        if (sd_bus_call_method(bus, FERRY_BUS_NAME, path, FERRY_MIGRATION_INTERFACE, method, &error, NULL, "b", 0) < 0)
                fprintf(stderr, "warning: %s(false) failed: %s\n", method, error.message ?: strerror(EIO));
}

static int host_uuid(sd_bus *bus, const char *which, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *what = g_strdup_printf("cannot ask the %s ferryd for its HostUUID", which);
        int r = sd_bus_get_property_string(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                           "HostUUID", &error, ret);
        return r < 0 ? ctl_report_error(what, &error, r) : 0;
}

static int migrate_managed(sd_bus *src, const char *domain_path, const char *dest_uri, const MigrateArgs *a) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *dst = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *begun = NULL, *prepared = NULL, *performed = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *call = NULL;
        _cleanup_free_ char *src_uuid = NULL, *dst_uuid = NULL, *state = NULL;
        const char *mig, *xml, *dst_mig, *hv_uri;
        Progress p = {};
        int r;

        r = open_destination(dest_uri, &dst);
        if (r < 0)
                return r;
        r = host_uuid(src, "source", &src_uuid);
        if (r >= 0)
                r = host_uuid(dst, "destination", &dst_uuid);
        if (r < 0)
                return r;
        if (strcmp(src_uuid, dst_uuid) == 0)
                return report_failed("begin", "the destination is this host (same host UUID): refusing to migrate to itself",
                                     NULL);
        /* A paused guest stays paused there, as the source's ferryd tells the destination in p2p. */
        r = sd_bus_get_property_string(src, FERRY_BUS_NAME, domain_path, FERRY_DOMAIN_INTERFACE, "State", &error, &state);
        if (r < 0)
                return ctl_report_error("failed to read the domain's state", &error, r);

        /* Begin */
        r = sd_bus_message_new_method_call(src, &m, FERRY_BUS_NAME, domain_path, FERRY_DOMAIN_INTERFACE, "MigrateBegin");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", dest_uri);
        if (r >= 0)
                r = migrate_args_append(m, a, false, false);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", (uint64_t) 0);
        if (r < 0)
                return ctl_report_error("failed to build the request", NULL, r);
        r = sd_bus_call(src, m, 0, &error, &begun);
        if (r < 0)
                return ctl_report_error("migration failed to start", &error, r);
        r = sd_bus_message_read(begun, "os", &mig, &xml);
        if (r < 0)
                return ctl_report_error("bad reply from ferryd", NULL, r);

        /* Prepare, on the destination */
        m = sd_bus_message_unref(m);
        r = sd_bus_message_new_method_call(dst, &m, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                           "PrepareMigration");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", xml);
        if (r >= 0)
                r = migrate_args_append(m, a, true, strcmp(state, "paused") == 0);
        if (r < 0)
                return ctl_report_error("failed to build the request", NULL, r);
        r = sd_bus_call(dst, m, LONG_CALL_USEC, &error, &prepared);
        if (r < 0) {
                give_up(src, mig, "Confirm");
                g_autofree char *msg = g_strdup_printf("the destination refused: %s", error.message ?: strerror(-r));
                return report_failed("prepare", msg, error.name);
        }
        r = sd_bus_message_read(prepared, "os", &dst_mig, &hv_uri);
        if (r < 0) {
                give_up(src, mig, "Confirm");
                return ctl_report_error("bad reply from the destination's ferryd", NULL, r);
        }

        if (!a->offline) {
                /* Perform: QEMU's stream, with the bar; the call returns once QEMU sent everything. */
                m = sd_bus_message_unref(m);
                r = sd_bus_message_new_method_call(src, &m, FERRY_BUS_NAME, mig, FERRY_MIGRATION_INTERFACE, "Perform");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", hv_uri);
                if (r >= 0)
                        r = sd_bus_call_async(src, &call, m, on_call_reply, &performed, LONG_CALL_USEC);
                if (r < 0) {
                        give_up(dst, dst_mig, "Finish");
                        give_up(src, mig, "Confirm");
                        return ctl_report_error("cannot call Perform", NULL, r);
                }
                r = watch(src, mig, a->verbose, false, &performed, &p);
                if (r < 0)
                        goto out;
                if (sd_bus_message_is_method_error(performed, NULL)) {
                        const sd_bus_error *e = sd_bus_message_get_error(performed);
                        /* The source resumed its guest; the destination throws its copy away. */
                        give_up(dst, dst_mig, "Finish");
                        if (read_progress(src, mig, &p) >= 0 && strcmp(p.state, "running") != 0 && p.error_message && *p.error_message)
                                r = report_failed("perform", p.error_message, p.error_name);
                        else
                                r = report_failed("perform", e->message ?: e->name, e->name);
                        goto out;
                }

                /* Finish, on the destination: the guest runs there when this returns. */
                sd_bus_error_free(&error);
                r = sd_bus_call_method(dst, FERRY_BUS_NAME, dst_mig, FERRY_MIGRATION_INTERFACE, "Finish", &error, NULL,
                                       "b", 1);
                if (r < 0) {
                        g_autofree char *msg = NULL;
                        if (sd_bus_error_has_names(&error, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_DISCONNECTED,
                                                   SD_BUS_ERROR_TIMEOUT) || !sd_bus_error_is_set(&error)) {
                                /* Whether the destination runs the guest is unknown: resuming the
                                 * source could run it twice. We go, and the source leaves it paused. */
                                msg = g_strdup_printf("lost the destination during Finish (%s); the guest is left paused "
                                                      "on the source: check the destination before resuming it",
                                                      error.message ?: strerror(-r));
                                r = report_failed("finish", msg, error.name);
                                goto out;
                        }
                        give_up(src, mig, "Confirm");
                        msg = g_strdup_printf("the destination could not finish: %s", error.message ?: error.name);
                        r = report_failed("finish", msg, error.name);
                        goto out;
                }
        }

        /* Confirm: the source's copy goes. */
        sd_bus_error_free(&error);
        r = sd_bus_call_method(src, FERRY_BUS_NAME, mig, FERRY_MIGRATION_INTERFACE, "Confirm", &error, NULL, "b", 1);
        if (r < 0) {
                r = ctl_report_error("Confirm failed on the source (the guest runs on the destination)", &error, r);
                goto out;
        }
        r = read_progress(src, mig, &p);
        if (r >= 0 && a->verbose)
                draw(&p, true);
out:
        progress_done(&p);
        return r;
}

int ctl_migrate(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *domain_path = NULL, *migration = NULL;
        const char *path;
        _cleanup_(migrate_args_done) MigrateArgs a = {};
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
        if (a.postcopy_resume) {
                /* virsh migrate --postcopy-resume: the domain's paused post-copy goes on. */
                r = ctl_job_recover(bus, domain_path, &migration);
                if (r < 0)
                        return r;
                goto follow;
        }
        if (!a.p2p && !a.direct)
                return migrate_managed(bus, domain_path, a.destination, &a);

        /* Peer to peer (the source's ferryd drives every phase) or unmanaged direct: one call,
         * then the job is followed until it ends. */
        r = sd_bus_message_new_method_call(bus, &m, FERRY_BUS_NAME, domain_path, FERRY_DOMAIN_INTERFACE, "Migrate");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", a.destination);
        if (r >= 0)
                r = migrate_args_append(m, &a, false, false);
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
        if (!migration)
                return ctl_report_error("out of memory", NULL, -ENOMEM);
follow:
        r = watch(bus, migration, a.verbose, a.postcopy_after_precopy, NULL, &p);
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
