/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl: the command-line client of ferryd (docs/ferryctl.md). */

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "build-config.h"
#include "ctl.h"
#include "ferry-bus.h"
#include "macro.h"

static bool arg_ask_password = true;

int ctl_connect(sd_bus **ret) {
        int r = sd_bus_default_system(ret);
        if (r < 0) {
                fprintf(stderr, "error: cannot connect to the system bus: %s\n", strerror(-r));
                return r;
        }
        /* Let polkit ask for a password when there is someone at a terminal to type it. */
        (void) sd_bus_set_allow_interactive_authorization(*ret, arg_ask_password && isatty(STDIN_FILENO));
        return 0;
}

static bool error_means_service_missing(const sd_bus_error *e) {
        return sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                      "org.freedesktop.systemd1.NoSuchUnit",
                                      "org.freedesktop.systemd1.UnitMasked",
                                      "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
                                      "org.freedesktop.DBus.Error.Spawn.ChildExited",
                                      "org.freedesktop.DBus.Error.Spawn.Failed",
                                      "org.freedesktop.DBus.Error.Spawn.FailedToSetup");
}

/* Two lines, as virsh prints them: what failed, then why. */
int ctl_report_error(const char *what, const sd_bus_error *e, int r) {
        fprintf(stderr, "error: %s\n", what);
        if (e && error_means_service_missing(e))
                fprintf(stderr,
                        "error: the Ferry service (%s) is not available: %s\n"
                        "Is ferry installed? 'systemctl status ferryd' may tell more.\n",
                        FERRY_BUS_NAME, e->message ?: e->name);
        else if (e && sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED))
                fprintf(stderr, "error: %s\n"
                        "Ask an administrator to grant it with a polkit rule, or run as root.\n",
                        e->message ?: "access denied");
        else if (e && sd_bus_error_has_name(e, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                fprintf(stderr, "error: %s\n"
                        "Run ferryctl from a terminal with a polkit agent, or as root.\n",
                        e->message ?: "authentication required");
        else if (e && sd_bus_error_is_set(e))
                fprintf(stderr, "error: %s (%s)\n", e->message ?: "failed", e->name);
        else
                fprintf(stderr, "error: %s\n", strerror(-r));
        return r < 0 ? r : -EIO;
}

static int cmd_version(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *version = NULL, *hostname = NULL;
        int r;

        printf("Client: ferryctl %s\n", FERRY_VERSION);
        r = ctl_connect(&bus);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                       "Version", &error, &version);
        if (r >= 0)
                r = sd_bus_get_property_string(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH,
                                               FERRY_MANAGER_INTERFACE, "Hostname", &error, &hostname);
        if (r < 0)
                return ctl_report_error("failed to ask ferryd for its version", &error, r);
        printf("Daemon: ferryd %s on %s\n", version, hostname);
        return 0;
}

static int cmd_reload(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = ctl_connect(&bus);
        if (r < 0)
                return r;
        r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                               "Reload", &error, NULL, NULL);
        if (r < 0)
                return ctl_report_error("failed to reload ferryd's configuration", &error, r);
        return 0;
}

static void help(void) {
        printf("Usage: ferryctl [OPTIONS] COMMAND\n\n"
               "Control the Ferry virtualization service (ferryd) on this host.\n\n"
               "Commands:\n"
               "  version            print the versions of ferryctl and ferryd\n"
               "  reload             make ferryd re-read %s\n\n"
               "Options:\n"
               "  --no-ask-password  never ask for a password (polkit)\n"
               "  -h, --help         this text\n"
               "  --version          print ferryctl's version\n\n"
               "Exit status: 0 on success, 1 on failure, 2 on bad usage.\n\n", FERRY_CONFIG_FILE);
        ctl_domain_help();
        ctl_dump_help();
        printf("\n");
        ctl_job_help();
}

typedef struct Verb {
        const char *name;
        int (*run)(int argc, char **argv);
} Verb;

static const Verb verbs[] = {
        { "version", cmd_version },
        { "reload", cmd_reload },
        { "migrate", ctl_migrate },
        { "dump", ctl_dump },
        { "domjobinfo", ctl_job },
        { "domjobabort", ctl_job },
        { "migrate-setspeed", ctl_job },
        { "migrate-setmaxdowntime", ctl_job },
        { "migrate-postcopy", ctl_job },
};

int main(int argc, char *argv[]) {
        enum { ARG_NO_ASK_PASSWORD = 0x100, ARG_VERSION };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("ferryctl %s\n", FERRY_VERSION);
                        return 0;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                default:
                        return 2;
                }

        if (optind >= argc) {
                fprintf(stderr, "error: no command given; see 'ferryctl --help'.\n");
                return 2;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(argv[optind], verbs[i].name) == 0)
                {
                        int k = verbs[i].run(argc - optind, argv + optind);
                        return k == CTL_USAGE_ERROR ? 2 : k < 0 ? 1 : 0;
                }

        bool handled;
        int r = ctl_domain_verb(argv[optind], argc - optind, argv + optind, &handled);
        if (handled)
                return r == CTL_USAGE_ERROR ? 2 : r < 0 ? 1 : 0;

        fprintf(stderr, "error: unknown command '%s'; see 'ferryctl --help'.\n", argv[optind]);
        return 2;
}
