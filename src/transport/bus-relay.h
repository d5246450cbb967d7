/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gnutls/gnutls.h>

/* D-Bus peer connections over TLS (ferry+tls://HOST[:PORT]/system, docs/transport.md, "D-Bus
 * peer connections"): one TLS connection carries one D-Bus connection between the source's
 * ferryd (or ferryctl) and the destination's system bus.
 *
 * client (--bus-connect): sd-bus's unixexec: runs us with a socket on fd 0 and 1; we connect to
 *         the peer port, send the 13-byte preamble "FERRY-PEER/1\n", make a TLS 1.3 client
 *         handshake (client-cert.pem, the server verified against the CA and the name), then
 *         relay fd 0/1 <-> TLS.
 * server (--bus-serve): the peer port's dispatcher ran us with the connection on fd 0 and 1,
 *         the preamble consumed; TLS 1.3 server handshake (a client certificate signed by the
 *         CA is required, optionally with an allowed DN), then systemd-stdio-bridge runs as the
 *         unprivileged user ferry-peer on a socketpair and we relay TLS <-> socketpair. The
 *         bus, and so polkit, sees the remote host as that user, never as root.
 *
 * Both return the exit status (transport.h's EXIT_TRANSPORT_*): 0 when both directions ended
 * cleanly (TLS close_notify, local end of file). */

#define BUS_PEER_PREAMBLE "FERRY-PEER/1\n"
#define BUS_PEER_PREAMBLE_LEN 13
#define BUS_BRIDGE_DEFAULT "/usr/bin/systemd-stdio-bridge"
#define BUS_BRIDGE_USER_DEFAULT "ferry-peer"

typedef struct BusServeConfig {
        const char *pki_dir;
        char **allowed_dn;            /* NULL: any certificate the CA signed */
        unsigned handshake_timeout_sec;
        const char *bridge;           /* executable serving D-Bus on its stdio */
        const char *bridge_user;      /* the bridge runs as this user */
} BusServeConfig;

typedef struct BusConnectConfig {
        const char *peer;             /* HOST[:PORT], [IPv6][:PORT] */
        const char *peer_name;        /* name the server's certificate must carry; NULL: HOST */
        const char *pki_dir;
        unsigned handshake_timeout_sec;
} BusConnectConfig;

int bus_serve(const BusServeConfig *config);
int bus_connect(const BusConnectConfig *config);

/* The relay between a local fd pair (in may equal out) and a TLS session on peer_in/peer_out,
 * both directions at once, bounded buffers, half-closes forwarded, until both directions
 * ended or a signal arrives on signal_fd (EXIT_TRANSPORT_CANCELED, after a best-effort
 * close_notify). Returns an exit status; otherwise *ret_error (malloc'd) says what broke. */
int bus_relay(int local_in, int local_out, int peer_in, int peer_out, int signal_fd, gnutls_session_t s,
              char **ret_error);
