/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl's domain verbs, worded as virsh's so that its users feel at home. */

#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "ferry-bus.h"
#include "macro.h"

#define LONG_CALL_USEC (120ULL * 1000000ULL) /* starting a guest may take a while */

int ctl_find_domain(sd_bus *bus, const char *key, char **ret_path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r = -ENOENT;

        /* As virsh: a UUID first, then a name. */
        if (strlen(key) >= 32 && strspn(key, "0123456789abcdefABCDEF-") == strlen(key)) {
                r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                       "GetDomainByUUID", &error, &reply, "s", key);
                if (r < 0 && sd_bus_error_has_name(&error, "org.ferry.Ferry1.Error.NoSuchDomain"))
                        sd_bus_error_free(&error);
        }
        if (r < 0 && !sd_bus_error_is_set(&error))
                r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                       "GetDomainByName", &error, &reply, "s", key);
        if (r < 0) {
                g_autofree char *what = g_strdup_printf("failed to get domain '%s'", key);
                return ctl_report_error(what, &error, r);
        }
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return ctl_report_error("bad reply from ferryd", NULL, r);
        *ret_path = strdup(path);
        return *ret_path ? 0 : -ENOMEM;
}

static int get_string(sd_bus *bus, const char *path, const char *property, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_get_property_string(bus, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, property,
                                           &error, ret);
        if (r < 0)
                return ctl_report_error("failed to read domain property", &error, r);
        return 0;
}

static const char *state_for_people(const char *state) {
        return strcmp(state, "shutoff") == 0 ? "shut off" : state;
}

static int call_domain(sd_bus *bus, const char *path, const char *method, const char *what,
                       const char *types, ...) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, method);
        if (r < 0)
                return ctl_report_error(what, NULL, r);
        if (types) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
                if (r < 0)
                        return ctl_report_error(what, NULL, r);
        }
        r = sd_bus_call(bus, m, LONG_CALL_USEC, &error, &reply);
        if (r < 0)
                return ctl_report_error(what, &error, r);
        return 0;
}

static int read_file(const char *path, char **ret) {
        g_autoptr(GError) gerror = NULL;
        if (!g_file_get_contents(path, ret, NULL, &gerror)) {
                fprintf(stderr, "error: failed to read %s: %s\n", path, gerror->message);
                return -EIO;
        }
        return 0;
}

static int cmd_list(sd_bus *bus, bool all) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r;

        r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE, "ListDomains",
                               &error, &reply, "t", all ? (uint64_t) 0 : FERRY_LIST_ACTIVE);
        if (r < 0)
                return ctl_report_error("failed to list domains", &error, r);
        printf(" %-30s %s\n", "Name", "State");
        printf("----------------------------------------------\n");
        r = sd_bus_message_enter_container(reply, 'a', "o");
        if (r < 0)
                return ctl_report_error("bad reply from ferryd", NULL, r);
        while ((r = sd_bus_message_read(reply, "o", &path)) > 0) {
                _cleanup_free_ char *name = NULL, *state = NULL;
                if (get_string(bus, path, "Name", &name) < 0 || get_string(bus, path, "State", &state) < 0)
                        return -EIO;
                printf(" %-30s %s\n", name, state_for_people(state));
        }
        printf("\n");
        return r < 0 ? ctl_report_error("bad reply from ferryd", NULL, r) : 0;
}

static int cmd_define_or_create(sd_bus *bus, const char *file, bool create, bool paused) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        g_autofree char *xml = NULL;
        _cleanup_free_ char *name = NULL;
        const char *path;
        int r;

        r = read_file(file, &xml);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                           create ? "CreateDomain" : "DefineDomain");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", xml);
        if (r >= 0 && create)
                r = sd_bus_message_append(m, "t", paused ? FERRY_START_PAUSED : (uint64_t) 0);
        if (r < 0)
                return ctl_report_error("failed to build the request", NULL, r);
        r = sd_bus_call(bus, m, LONG_CALL_USEC, &error, &reply);
        if (r < 0) {
                g_autofree char *what = g_strdup_printf("failed to %s domain from %s",
                                                        create ? "create" : "define", file);
                return ctl_report_error(what, &error, r);
        }
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0 || get_string(bus, path, "Name", &name) < 0)
                return -EIO;
        printf("Domain '%s' %s from %s\n\n", name, create ? "created" : "defined", file);
        return 0;
}

static int cmd_dominfo(sd_bus *bus, const char *path) {
        _cleanup_free_ char *name = NULL, *uuid = NULL, *state = NULL, *reason = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        uint64_t memory = 0;
        uint32_t vcpus = 0;
        int persistent = 0, autostart = 0, r;

        if (get_string(bus, path, "Name", &name) < 0 || get_string(bus, path, "UUID", &uuid) < 0 ||
            get_string(bus, path, "State", &state) < 0 || get_string(bus, path, "StateReason", &reason) < 0)
                return -EIO;
        r = sd_bus_get_property_trivial(bus, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, "Memory", &error, 't', &memory);
        if (r >= 0)
                r = sd_bus_get_property_trivial(bus, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, "VCPUs", &error, 'u', &vcpus);
        if (r >= 0)
                r = sd_bus_get_property_trivial(bus, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, "Persistent", &error, 'b', &persistent);
        if (r >= 0)
                r = sd_bus_get_property_trivial(bus, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, "Autostart", &error, 'b', &autostart);
        if (r < 0)
                return ctl_report_error("failed to read domain properties", &error, r);

        printf("%-15s %s\n", "Name:", name);
        printf("%-15s %s\n", "UUID:", uuid);
        printf("%-15s %s\n", "OS Type:", "hvm");
        printf("%-15s %s\n", "State:", state_for_people(state));
        printf("%-15s %s\n", "State reason:", reason);
        printf("%-15s %" PRIu32 "\n", "CPU(s):", vcpus);
        printf("%-15s %" PRIu64 " KiB\n", "Max memory:", memory / 1024);
        printf("%-15s %s\n", "Persistent:", persistent ? "yes" : "no");
        printf("%-15s %s\n\n", "Autostart:", autostart ? "enable" : "disable");
        return 0;
}

static int cmd_dumpxml(sd_bus *bus, const char *path, uint64_t flags) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *xml;
        int r;

        r = sd_bus_call_method(bus, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, "GetXML", &error, &reply,
                               "t", flags);
        if (r < 0)
                return ctl_report_error("failed to get the domain's XML", &error, r);
        r = sd_bus_message_read(reply, "s", &xml);
        if (r < 0)
                return ctl_report_error("bad reply from ferryd", NULL, r);
        fputs(xml, stdout);
        return 0;
}

void ctl_domain_help(void) {
        printf("Domain commands (DOMAIN is a name or a UUID):\n"
               "  list [--all]                   list active (or all) domains\n"
               "  define FILE                    define (or redefine) a persistent domain from XML\n"
               "  undefine DOMAIN                remove a domain's definition\n"
               "  create FILE [--paused]         create and start a transient domain\n"
               "  start DOMAIN [--paused]        start a defined domain\n"
               "  shutdown DOMAIN [--timeout S]  ask the guest to power off (ACPI); with --timeout,\n"
               "                                 wait up to S seconds for it\n"
               "  destroy DOMAIN                 stop the domain at once\n"
               "  suspend DOMAIN                 pause the guest's CPUs\n"
               "  resume DOMAIN                  let them run again\n"
               "  dumpxml DOMAIN [--inactive] [--migratable]\n"
               "  dominfo DOMAIN\n"
               "  autostart DOMAIN [--disable]   start the domain when the host boots\n\n"
               "  migrate [--p2p | --direct] [--live] [--offline] [--verbose] [--suspend] [--persistent] [--undefinesource]\n"
               "          [--tls] [--tunnelled [--tunnel-plaintext]] [--auto-converge] [--change-protection] [--bandwidth MiB] [--max-downtime MS]\n"
               "          [--timeout S] [--migrateuri URI] [--listen-address A] [--xml FILE] [--dname NAME]\n"
               "          [--postcopy [--postcopy-after-precopy] [--postcopy-bandwidth MiB]] [--postcopy-resume]\n"
               "          [--parallel [--parallel-connections N]]\n"
               "          [--copy-storage-all | --copy-storage-inc] [--migrate-disks vda,vdb] [--disks-uri URI | --disks-port N]\n"
               "          DOMAIN DEST-URI  (or --desturi DEST-URI DOMAIN)\n"
               "                                 live-migrate to another host's ferryd (peer to peer)\n");
}

/* Parses "VERB ARG [--option]..." with the options a verb allows. */
typedef struct VerbArgs {
        const char *arg;
        bool all, paused, inactive, migratable, disable;
        long timeout;
} VerbArgs;

static int parse_args(const char *verb, int argc, char **argv, bool want_arg, VerbArgs *a) {
        enum { O_ALL = 0x100, O_PAUSED, O_INACTIVE, O_MIGRATABLE, O_DISABLE, O_TIMEOUT };
        static const struct option options[] = {
                { "all", no_argument, NULL, O_ALL },
                { "paused", no_argument, NULL, O_PAUSED },
                { "inactive", no_argument, NULL, O_INACTIVE },
                { "migratable", no_argument, NULL, O_MIGRATABLE },
                { "disable", no_argument, NULL, O_DISABLE },
                { "timeout", required_argument, NULL, O_TIMEOUT },
                {}
        };
        char *end;
        int c;

        *a = (VerbArgs) {};
        /* 0 makes glibc start over (main parsed its own options already); options may follow
         * the domain, as with virsh. */
        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case O_ALL: a->all = true; break;
                case O_PAUSED: a->paused = true; break;
                case O_INACTIVE: a->inactive = true; break;
                case O_MIGRATABLE: a->migratable = true; break;
                case O_DISABLE: a->disable = true; break;
                case O_TIMEOUT:
                        a->timeout = strtol(optarg, &end, 10);
                        if (*end || a->timeout < 0 || a->timeout > 3600) {
                                fprintf(stderr, "error: --timeout takes seconds between 0 and 3600\n");
                                return CTL_USAGE_ERROR;
                        }
                        break;
                default:
                        return CTL_USAGE_ERROR;
                }
        if (want_arg) {
                if (optind >= argc) {
                        fprintf(stderr, "error: command '%s' requires an argument; see 'ferryctl --help'\n", verb);
                        return CTL_USAGE_ERROR;
                }
                a->arg = argv[optind++];
        }
        if (optind < argc) {
                fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
                return CTL_USAGE_ERROR;
        }
        return 0;
}

int ctl_domain_verb(const char *verb, int argc, char **argv, bool *ret_handled) {
        static const char *const verbs[] = { "list", "define", "undefine", "create", "start", "shutdown", "destroy",
                                             "suspend", "resume", "dumpxml", "dominfo", "autostart" };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *path = NULL, *name = NULL;
        bool known = false, file_arg;
        VerbArgs a;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                known = known || strcmp(verb, verbs[i]) == 0;
        *ret_handled = known;
        if (!known)
                return 0;

        r = parse_args(verb, argc, argv, strcmp(verb, "list") != 0, &a);
        if (r < 0)
                return r;
        r = ctl_connect(&bus);
        if (r < 0)
                return r;

        if (strcmp(verb, "list") == 0)
                return cmd_list(bus, a.all);
        file_arg = strcmp(verb, "define") == 0 || strcmp(verb, "create") == 0;
        if (file_arg)
                return cmd_define_or_create(bus, a.arg, strcmp(verb, "create") == 0, a.paused);

        r = ctl_find_domain(bus, a.arg, &path);
        if (r < 0)
                return r;
        if (strcmp(verb, "dominfo") == 0)
                return cmd_dominfo(bus, path);
        if (strcmp(verb, "dumpxml") == 0)
                return cmd_dumpxml(bus, path, (a.inactive ? 1 : 0) | (a.migratable ? 2 : 0));
        r = get_string(bus, path, "Name", &name);
        if (r < 0)
                return r;

        if (strcmp(verb, "start") == 0) {
                r = call_domain(bus, path, "Start", "failed to start domain", "t",
                                a.paused ? FERRY_START_PAUSED : (uint64_t) 0);
                if (r >= 0)
                        printf("Domain '%s' started\n\n", name);
        } else if (strcmp(verb, "shutdown") == 0) {
                r = call_domain(bus, path, "Shutdown", "failed to shutdown domain", "t",
                                (uint64_t) a.timeout * 1000000ULL);
                if (r >= 0)
                        printf(a.timeout ? "Domain '%s' is shut off\n\n" : "Domain '%s' is being shutdown\n\n", name);
        } else if (strcmp(verb, "destroy") == 0) {
                r = call_domain(bus, path, "Destroy", "failed to destroy domain", NULL);
                if (r >= 0)
                        printf("Domain '%s' destroyed\n\n", name);
        } else if (strcmp(verb, "suspend") == 0) {
                r = call_domain(bus, path, "Suspend", "failed to suspend domain", NULL);
                if (r >= 0)
                        printf("Domain '%s' suspended\n\n", name);
        } else if (strcmp(verb, "resume") == 0) {
                r = call_domain(bus, path, "Resume", "failed to resume domain", NULL);
                if (r >= 0)
                        printf("Domain '%s' resumed\n\n", name);
        } else if (strcmp(verb, "undefine") == 0) {
                r = call_domain(bus, path, "Undefine", "failed to undefine domain", NULL);
                if (r >= 0)
                        printf("Domain '%s' has been undefined\n\n", name);
        } else if (strcmp(verb, "autostart") == 0) {
                r = call_domain(bus, path, "SetAutostart", "failed to change autostart", "b", !a.disable);
                if (r >= 0)
                        printf(a.disable ? "Domain '%s' unmarked as autostarted\n\n"
                                         : "Domain '%s' marked as autostarted\n\n", name);
        }
        return r;
}
