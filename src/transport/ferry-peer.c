/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry-peer: owns the shared peer port (ferry-peer.socket, default 16514) and hands each
 * connection to whoever its first bytes name: a migration's destination helper or a D-Bus peer
 * connection's own process. Started by systemd on the first connection, exits when idle.
 * docs/transport.md, "The shared peer port". */

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "dispatch.h"
#include "log.h"
#include "macro.h"
#include "notify.h"

static void help(void) {
        printf("Usage: ferry-peer [OPTIONS]\n\n"
               "Dispatches the connections of the shared peer port (the socket from systemd).\n\n"
               "  --dispatch-dir=DIR       where the destination helpers' dispatch sockets are\n"
               "                           (default %s)\n"
               "  --handshake-timeout=SEC  a connection must send its preamble within this (default %u)\n"
               "  --idle-timeout=SEC       exit after this long without connections; 0: never\n"
               "                           (default %u)\n"
               "  --listen=ADDR:PORT       listen here instead of the socket from systemd (tests)\n"
               "  --bus-serve=PATH         the program for D-Bus peer connections (tests; default\n"
               "                           %s)\n"
               "  --log-level=LEVEL        err, warning, info (default), debug\n"
               "  --version\n",
               DISPATCH_DIR_DEFAULT, DISPATCH_HANDSHAKE_TIMEOUT_SEC_DEFAULT, DISPATCH_IDLE_TIMEOUT_SEC_DEFAULT,
               FERRY_LIBEXECDIR "/ferry-transport");
}

static int usage_error(const char *format, ...) _printf_(1, 2);
static int usage_error(const char *format, ...) {
        char message[512];
        va_list ap;

        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        log_error("%s", message);
        notify_failed(EINVAL, "%s", message);
        return EXIT_DISPATCH_CONFIG;
}

static int parse_seconds(const char *s, unsigned long min, unsigned *ret) {
        unsigned long v;
        char *end;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v < min || v > 86400)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

int main(int argc, char *argv[]) {
        enum {
                ARG_DISPATCH_DIR = 0x100, ARG_HANDSHAKE_TIMEOUT, ARG_IDLE_TIMEOUT, ARG_LISTEN, ARG_BUS_SERVE,
                ARG_LOG_LEVEL, ARG_VERSION,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "dispatch-dir", required_argument, NULL, ARG_DISPATCH_DIR },
                { "handshake-timeout", required_argument, NULL, ARG_HANDSHAKE_TIMEOUT },
                { "idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT },
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "bus-serve", required_argument, NULL, ARG_BUS_SERVE },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        DispatchConfig config = {
                .dispatch_dir = DISPATCH_DIR_DEFAULT,
                .bus_serve = FERRY_LIBEXECDIR "/ferry-transport",
                .handshake_timeout_sec = DISPATCH_HANDSHAKE_TIMEOUT_SEC_DEFAULT,
                .idle_timeout_sec = DISPATCH_IDLE_TIMEOUT_SEC_DEFAULT,
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("ferry-peer %s\n", FERRY_VERSION);
                        return 0;
                case ARG_DISPATCH_DIR:
                        if (optarg[0] != '/')
                                return usage_error("--dispatch-dir=%s is not an absolute path", optarg);
                        config.dispatch_dir = optarg;
                        break;
                case ARG_HANDSHAKE_TIMEOUT:
                        if (parse_seconds(optarg, 1, &config.handshake_timeout_sec) < 0)
                                return usage_error("invalid --handshake-timeout=%s (1 to 86400 seconds)", optarg);
                        break;
                case ARG_IDLE_TIMEOUT:
                        if (parse_seconds(optarg, 0, &config.idle_timeout_sec) < 0)
                                return usage_error("invalid --idle-timeout=%s (0 to 86400 seconds)", optarg);
                        break;
                case ARG_LISTEN:
                        config.listen = optarg;
                        break;
                case ARG_BUS_SERVE:
                        if (optarg[0] != '/')
                                return usage_error("--bus-serve=%s is not an absolute path", optarg);
                        config.bus_serve = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0)
                                return usage_error("invalid --log-level=%s", optarg);
                        log_set_max_level(r);
                        break;
                default:
                        return EXIT_DISPATCH_CONFIG;
                }
        }
        if (optind < argc)
                return usage_error("unexpected argument %s", argv[optind]);

        return dispatch_run(&config);
}
