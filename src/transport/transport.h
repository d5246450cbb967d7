/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

#include "preamble.h"

/* One helper instance carries one migration's streams for one side (docs/transport.md).
 *
 * source:      QEMU connects to qemu_socket (created here, SELinux-labelled); each connection
 *              becomes a stream, carried over its own connection to the peer address.
 * destination: streams arrive on the peer port (listen address, an inherited socket, or
 *              handed over by the dispatcher that owns the port, with their preamble);
 *              after the preamble and TLS, each is connected to QEMU's incoming socket, in the
 *              order the source accepted them. */

typedef enum Role {
        ROLE_SOURCE,
        ROLE_DESTINATION,
} Role;

/* Exit statuses, so ferryd can tell causes apart without parsing text. */
enum {
        EXIT_TRANSPORT_FAILED = 1,     /* anything else, including QEMU's side of a stream */
        EXIT_TRANSPORT_CONFIG = 2,     /* bad options, unreadable token or certificates */
        EXIT_TRANSPORT_REFUSED = 3,    /* the peer was refused or refused us (TLS, mode) */
        EXIT_TRANSPORT_PEER = 4,       /* the connection to the peer failed or broke */
        EXIT_TRANSPORT_CANCELED = 5,   /* SIGTERM/SIGINT */
};

#define PEER_PORT_DEFAULT 16514
#define PENDING_MAX 16
#define HANDSHAKE_TIMEOUT_SEC_DEFAULT 30

typedef struct TransportConfig {
        Role role;
        const char *migration;       /* for messages */
        const char *qemu_socket;
        const char *peer;            /* source: host[:port] */
        const char *listen;          /* destination: address:port, or NULL for LISTEN_FDS */
        const char *dispatch_socket; /* destination: receive connections from a dispatcher */
        const char *dispatch_group;  /* destination: the group that may hand us connections */
        const char *peer_name;       /* source: name in the destination's certificate */
        const char *pki_dir;
        char **allowed_dn;
        bool plaintext;
        char token[TOKEN_HEX_LEN + 1];
        const char *socket_context;  /* source: computed SELinux context, NULL: none */
        unsigned handshake_timeout_sec;
} TransportConfig;

/* Runs until the migration's streams have ended; returns the exit status. */
int transport_run(const TransportConfig *config);
