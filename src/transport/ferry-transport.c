/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry-transport: the per-migration data relay ferryd starts in a transient unit, one per
 * migration and side. Command line, notifications and the wire protocol: docs/transport.md. */

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "bus-relay.h"
#include "log.h"
#include "macro.h"
#include "notify.h"
#include "selinux-socket.h"
#include "sockets.h"
#include "transport.h"

#define PKI_DIR_DEFAULT FERRY_SYSCONF_DIR "/pki"

static void help(void) {
        printf("Usage: ferry-transport --source|--destination [OPTIONS]\n"
               "       ferry-transport --bus-serve|--bus-connect=HOST[:PORT] [OPTIONS]\n\n"
               "Carries one migration's QEMU streams between two hosts, or one D-Bus connection\n"
               "to another host's system bus (ferry+tls://).\n\n"
               "  --source                 QEMU connects to --qemu-socket; streams go to --peer\n"
               "  --destination            streams arrive on --listen (or LISTEN_FDS) and go to\n"
               "                           QEMU's incoming socket --qemu-socket\n"
               "  --migration=ID           the migration, for messages\n"
               "  --qemu-socket=PATH       QEMU's side of the streams\n"
               "  --peer=HOST[:PORT]       source: the destination's peer port (default %u)\n"
               "  --peer-name=NAME         source: name the destination's certificate must carry\n"
               "                           (default: HOST of --peer)\n"
               "  --listen=ADDR:PORT       destination: listen here (port 0: any; see READY)\n"
               "  --dispatch-socket=PATH   destination: take connections (fd and preamble) from the\n"
               "                           dispatcher that owns the peer port, on this datagram socket\n"
               "  --dispatch-group=GROUP   destination: the dispatch socket is 0660 with this group\n"
               "                           (default: 0600, the helper's user only)\n"
               "  --token-file=PATH        the migration's routing token (32 hex digits)\n"
               "                           (default: $CREDENTIALS_DIRECTORY/token)\n"
               "  --pki-dir=DIR            x509 files (default: $CREDENTIALS_DIRECTORY, else %s)\n"
               "  --allowed-dn=PATTERN     destination: accept only client certificates whose DN\n"
               "                           matches (fnmatch; repeatable; default: any the CA signed)\n"
               "  --plaintext              no TLS (only when the administrator allows it)\n"
               "  --seclabel=LABEL         source: the domain's SELinux label (its MCS range labels\n"
               "                           QEMU's socket)\n"
               "  --socket-context=CTX     source: socket context (default %s)\n"
               "  --handshake-timeout=SEC  limit for connect, preamble and TLS handshake (default %u)\n"
               "  --log-level=LEVEL        err, warning, info (default), debug\n\n"
               "  --bus-serve              a D-Bus peer connection on fd 0/1 (preamble consumed):\n"
               "                           TLS server, then the bus bridge as --bridge-user\n"
               "  --bus-connect=HOST[:PORT] connect a D-Bus client on fd 0/1 to HOST's peer port\n"
               "                           (default port %u) over TLS; --peer-name as above\n"
               "  --bridge=PATH            --bus-serve: the bridge (default %s)\n"
               "  --bridge-user=USER       --bus-serve: the bridge's user (default %s)\n"
               "  --version\n",
               PEER_PORT_DEFAULT, PKI_DIR_DEFAULT, FERRY_DEFAULT_SOCKET_CONTEXT, HANDSHAKE_TIMEOUT_SEC_DEFAULT,
               PEER_PORT_DEFAULT, BUS_BRIDGE_DEFAULT, BUS_BRIDGE_USER_DEFAULT);
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
        return EXIT_TRANSPORT_CONFIG;
}

/* The D-Bus peer connection modes (bus-relay.h): one TLS connection, no migration, no token. */
static int run_bus(bool serve, const char *connect_peer, const TransportConfig *config, int role,
                   const char *token_path, const char *pki_dir, const char *seclabel, const char *socket_context,
                   const char *bridge, const char *bridge_user) {
        const char *credentials = getenv("CREDENTIALS_DIRECTORY");

        /* Not a unit of our own: a caller's NOTIFY_SOCKET (ferryd's) is not ours to write to. */
        (void) unsetenv("NOTIFY_SOCKET");
        if (serve && connect_peer)
                return usage_error("--bus-serve and --bus-connect exclude each other");
        if (role >= 0 || config->migration || config->qemu_socket || config->peer || config->listen ||
            config->dispatch_socket || token_path || config->plaintext || seclabel || socket_context)
                return usage_error("--bus-serve and --bus-connect take only --pki-dir, --handshake-timeout, "
                                   "--log-level and their own options");
        if (!pki_dir)
                pki_dir = credentials ?: PKI_DIR_DEFAULT;

        if (serve) {
                if (config->peer_name)
                        return usage_error("--peer-name is for --bus-connect");
                return bus_serve(&(BusServeConfig) {
                        .pki_dir = pki_dir,
                        .allowed_dn = config->allowed_dn,
                        .handshake_timeout_sec = config->handshake_timeout_sec,
                        .bridge = bridge ?: BUS_BRIDGE_DEFAULT,
                        .bridge_user = bridge_user ?: BUS_BRIDGE_USER_DEFAULT,
                });
        }
        if (config->allowed_dn || bridge || bridge_user)
                return usage_error("--allowed-dn, --bridge and --bridge-user are for --bus-serve");
        return bus_connect(&(BusConnectConfig) {
                .peer = connect_peer,
                .peer_name = config->peer_name,
                .pki_dir = pki_dir,
                .handshake_timeout_sec = config->handshake_timeout_sec,
        });
}

int main(int argc, char *argv[]) {
        enum {
                ARG_SOURCE = 0x100, ARG_DESTINATION, ARG_MIGRATION, ARG_QEMU_SOCKET, ARG_PEER,
                ARG_PEER_NAME, ARG_LISTEN, ARG_DISPATCH_SOCKET, ARG_DISPATCH_GROUP, ARG_TOKEN_FILE,
                ARG_PKI_DIR, ARG_ALLOWED_DN, ARG_PLAINTEXT,
                ARG_SECLABEL, ARG_SOCKET_CONTEXT, ARG_HANDSHAKE_TIMEOUT, ARG_LOG_LEVEL, ARG_VERSION,
                ARG_BUS_SERVE, ARG_BUS_CONNECT, ARG_BRIDGE, ARG_BRIDGE_USER,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "source", no_argument, NULL, ARG_SOURCE },
                { "destination", no_argument, NULL, ARG_DESTINATION },
                { "migration", required_argument, NULL, ARG_MIGRATION },
                { "qemu-socket", required_argument, NULL, ARG_QEMU_SOCKET },
                { "peer", required_argument, NULL, ARG_PEER },
                { "peer-name", required_argument, NULL, ARG_PEER_NAME },
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "dispatch-socket", required_argument, NULL, ARG_DISPATCH_SOCKET },
                { "dispatch-group", required_argument, NULL, ARG_DISPATCH_GROUP },
                { "token-file", required_argument, NULL, ARG_TOKEN_FILE },
                { "pki-dir", required_argument, NULL, ARG_PKI_DIR },
                { "allowed-dn", required_argument, NULL, ARG_ALLOWED_DN },
                { "plaintext", no_argument, NULL, ARG_PLAINTEXT },
                { "seclabel", required_argument, NULL, ARG_SECLABEL },
                { "socket-context", required_argument, NULL, ARG_SOCKET_CONTEXT },
                { "handshake-timeout", required_argument, NULL, ARG_HANDSHAKE_TIMEOUT },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "version", no_argument, NULL, ARG_VERSION },
                { "bus-serve", no_argument, NULL, ARG_BUS_SERVE },
                { "bus-connect", required_argument, NULL, ARG_BUS_CONNECT },
                { "bridge", required_argument, NULL, ARG_BRIDGE },
                { "bridge-user", required_argument, NULL, ARG_BRIDGE_USER },
                {}
        };
        TransportConfig config = {
                .handshake_timeout_sec = HANDSHAKE_TIMEOUT_SEC_DEFAULT,
        };
        _cleanup_free_ char *token_path = NULL, *pki_dir = NULL, *peer_host = NULL, *context = NULL;
        _cleanup_free_ char **allowed_dn = NULL;
        const char *seclabel = NULL, *socket_context = NULL, *credentials = getenv("CREDENTIALS_DIRECTORY");
        const char *bus_connect_peer = NULL, *bridge = NULL, *bridge_user = NULL;
        bool bus_serve_mode = false;
        size_t n_allowed = 0;
        int role = -1, c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("ferry-transport %s\n", FERRY_VERSION);
                        return 0;
                case ARG_SOURCE:
                        role = ROLE_SOURCE;
                        break;
                case ARG_DESTINATION:
                        role = ROLE_DESTINATION;
                        break;
                case ARG_MIGRATION:
                        config.migration = optarg;
                        break;
                case ARG_QEMU_SOCKET:
                        config.qemu_socket = optarg;
                        break;
                case ARG_PEER:
                        config.peer = optarg;
                        break;
                case ARG_PEER_NAME:
                        config.peer_name = optarg;
                        break;
                case ARG_LISTEN:
                        config.listen = optarg;
                        break;
                case ARG_DISPATCH_SOCKET:
                        config.dispatch_socket = optarg;
                        break;
                case ARG_DISPATCH_GROUP:
                        config.dispatch_group = optarg;
                        break;
                case ARG_TOKEN_FILE:
                        free(token_path);
                        token_path = strdup(optarg);
                        if (!token_path)
                                return log_oom(), EXIT_TRANSPORT_FAILED;
                        break;
                case ARG_PKI_DIR:
                        free(pki_dir);
                        pki_dir = strdup(optarg);
                        if (!pki_dir)
                                return log_oom(), EXIT_TRANSPORT_FAILED;
                        break;
                case ARG_ALLOWED_DN: {
                        char **a = realloc(allowed_dn, (n_allowed + 2) * sizeof(char *));
                        if (!a)
                                return log_oom(), EXIT_TRANSPORT_FAILED;
                        allowed_dn = a;
                        allowed_dn[n_allowed++] = optarg;
                        allowed_dn[n_allowed] = NULL;
                        break;
                }
                case ARG_PLAINTEXT:
                        config.plaintext = true;
                        break;
                case ARG_SECLABEL:
                        seclabel = optarg;
                        break;
                case ARG_SOCKET_CONTEXT:
                        socket_context = optarg;
                        break;
                case ARG_HANDSHAKE_TIMEOUT: {
                        char *end;
                        unsigned long v;
                        errno = 0;
                        v = strtoul(optarg, &end, 10);
                        if (errno || end == optarg || *end || v == 0 || v > 3600)
                                return usage_error("invalid --handshake-timeout=%s (1 to 3600 seconds)", optarg);
                        config.handshake_timeout_sec = (unsigned) v;
                        break;
                }
                case ARG_BUS_SERVE:
                        bus_serve_mode = true;
                        break;
                case ARG_BUS_CONNECT:
                        bus_connect_peer = optarg;
                        break;
                case ARG_BRIDGE:
                        bridge = optarg;
                        break;
                case ARG_BRIDGE_USER:
                        bridge_user = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0)
                                return usage_error("invalid --log-level=%s", optarg);
                        log_set_max_level(r);
                        break;
                default:
                        return EXIT_TRANSPORT_CONFIG;
                }
        }
        if (optind < argc)
                return usage_error("unexpected argument %s", argv[optind]);
        config.allowed_dn = allowed_dn;
        if (bus_serve_mode || bus_connect_peer)
                return run_bus(bus_serve_mode, bus_connect_peer, &config, role, token_path, pki_dir, seclabel,
                               socket_context, bridge, bridge_user);
        if (bridge || bridge_user)
                return usage_error("--bridge and --bridge-user are for --bus-serve");
        if (role < 0)
                return usage_error("one of --source and --destination is required");
        config.role = role;
        if (!config.qemu_socket)
                return usage_error("--qemu-socket is required");
        if (config.role == ROLE_SOURCE && !config.peer)
                return usage_error("--peer is required with --source");
        if (config.role == ROLE_SOURCE && (config.listen || config.dispatch_socket || allowed_dn))
                return usage_error("--listen, --dispatch-socket and --allowed-dn are for --destination");
        if (config.listen && config.dispatch_socket)
                return usage_error("--listen and --dispatch-socket exclude each other");
        if (config.dispatch_group && !config.dispatch_socket)
                return usage_error("--dispatch-group goes with --dispatch-socket");
        if (config.role == ROLE_DESTINATION && (config.peer || config.peer_name || seclabel || socket_context))
                return usage_error("--peer, --peer-name, --seclabel and --socket-context are for --source");

        if (!token_path) {
                if (!credentials)
                        return usage_error("--token-file is required (or a credential named \"token\")");
                if (asprintf(&token_path, "%s/token", credentials) < 0)
                        return log_oom(), EXIT_TRANSPORT_FAILED;
        }
        r = token_read_file(token_path, config.token);
        if (r < 0) {
                char message[512];
                snprintf(message, sizeof(message), "cannot read the token from %s: %s", token_path,
                         r == -EBADMSG ? "not 32 lower-case hex digits" : strerror(-r));
                log_error("%s", message);
                notify_failed(-r, "%s", message);
                return EXIT_TRANSPORT_CONFIG;
        }

        if (!pki_dir) {
                pki_dir = strdup(credentials ?: PKI_DIR_DEFAULT);
                if (!pki_dir)
                        return log_oom(), EXIT_TRANSPORT_FAILED;
        }
        config.pki_dir = pki_dir;
        config.allowed_dn = allowed_dn;

        if (config.role == ROLE_SOURCE) {
                unsigned port;

                if (parse_host_port(config.peer, &peer_host, &port) < 0)
                        return usage_error("invalid --peer=%s (HOST[:PORT], [IPv6][:PORT])", config.peer);
                if (!config.peer_name)
                        config.peer_name = peer_host;

                /* Computed even with SELinux off, so a bad label fails everywhere alike. */
                r = socket_context_compute(seclabel, socket_context, &context);
                if (r < 0)
                        return usage_error("invalid SELinux label or socket context (%s)",
                                           seclabel ?: socket_context ?: FERRY_DEFAULT_SOCKET_CONTEXT);
                config.socket_context = context;
        }

        return transport_run(&config);
}
