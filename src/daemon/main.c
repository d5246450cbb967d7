/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryd: the Ferry system service. Started by D-Bus activation through systemd
 * (ferryd.service); see docs/architecture.md. */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "build-config.h"
#include "log.h"
#include "manager.h"

static void help(void) {
        printf("Usage: ferryd [--config FILE] [--version]\n\n"
               "The Ferry D-Bus service (org.ferry.Ferry1). Normally started by D-Bus activation.\n\n"
               "  -c, --config FILE   configuration file (default: %s)\n"
               "      --version       print the version and exit\n"
               "  -h, --help          this text\n", FERRY_CONFIG_FILE);
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        _cleanup_(manager_freep) Manager *m = NULL;
        const char *config_path = FERRY_CONFIG_FILE;
        const char *env_level = getenv("FERRY_LOG_LEVEL");
        int c, r;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case ARG_VERSION:
                        printf("ferryd %s\n", FERRY_VERSION);
                        return EXIT_SUCCESS;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                log_error("ferryd takes no positional arguments.");
                return EXIT_FAILURE;
        }

        r = manager_new(config_path, &m);
        if (r < 0) {
                log_error_errno(r, "Failed to start: %m");
                return EXIT_FAILURE;
        }
        /* The environment overrides the file, for debugging a single run. */
        if (env_level && log_level_from_string(env_level) >= 0)
                log_set_max_level(log_level_from_string(env_level));

        r = manager_start(m);
        if (r < 0)
                return EXIT_FAILURE;
        r = manager_run(m);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
