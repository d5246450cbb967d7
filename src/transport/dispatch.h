/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* ferry-peer's loop: it owns the shared peer port (ferry-peer.socket, default 16514) and sends
 * each connection where its first bytes say it belongs (docs/transport.md, "The shared peer
 * port"):
 *
 *   "FERRY-TRANSPORT/1 <token> <idx> <T|P>\n"  -> the destination helper whose dispatch socket
 *                                                is <dispatch_dir>/peer-<token>.sock (the 58
 *                                                bytes and the fd in one datagram)
 *   "FERRY-PEER/1\n"                           -> a new "ferry-transport --bus-serve" with the
 *                                                connection as its fd 0 and 1
 *   anything else, or nothing complete in time -> closed
 *
 * It reads no byte past the preamble, so TLS is left whole for whoever gets the connection. */

#include <stdbool.h>

#include "build-config.h"

#define PEER_PREAMBLE "FERRY-PEER/1\n"
#define PEER_PREAMBLE_SIZE 13
#define DISPATCH_DIR_DEFAULT FERRY_RUNTIME_DIR "/transport"
#define DISPATCH_SOCKET_PREFIX "peer-"
#define DISPATCH_HANDSHAKE_TIMEOUT_SEC_DEFAULT 10
#define DISPATCH_IDLE_TIMEOUT_SEC_DEFAULT 60
/* Unidentified connections kept at once; one more makes the oldest go. */
#define DISPATCH_PENDING_MAX 64
/* D-Bus peer connections served at once; more are closed. */
#define DISPATCH_BUS_CHILDREN_MAX 16
#define DISPATCH_LISTEN_MAX 8

typedef struct DispatchConfig {
        const char *listen;           /* ADDR:PORT (tests), NULL: the sockets in LISTEN_FDS */
        const char *dispatch_dir;
        const char *bus_serve;        /* the program for FERRY-PEER/1, run with "--bus-serve" */
        unsigned handshake_timeout_sec;
        unsigned idle_timeout_sec;    /* 0: never exit on idle */
} DispatchConfig;

/* Exit statuses. */
enum {
        EXIT_DISPATCH_FAILED = 1,
        EXIT_DISPATCH_CONFIG = 2,
};

/* Runs until idle (exit 0), SIGTERM/SIGINT (exit 0, after its bus children ended) or a
 * failure; returns the exit status. */
int dispatch_run(const DispatchConfig *config);

/* "<dir>/peer-<token>.sock"; false if it does not fit a sockaddr_un. */
bool dispatch_socket_path(const char *dir, const char *token, char *buf, unsigned size);
