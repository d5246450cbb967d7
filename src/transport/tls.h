/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gnutls/gnutls.h>
#include <stdbool.h>

/* TLS for the tunnel: TLS 1.3 only, x509 on both sides. The destination is the TLS server and
 * requires a client certificate signed by the CA whose DN matches the allowed list (if one is
 * given); the source verifies the destination's certificate against the CA and the peer name.
 *
 * Files in the PKI directory (libvirt's names, as /etc/ferry/pki/qemu): ca-cert.pem, optional
 * ca-crl.pem, and server-cert.pem + server-key.pem (destination) or client-cert.pem +
 * client-key.pem (source). */

#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3"

typedef struct TlsConfig {
        bool server;
        char *peer_name;           /* client: the name the server's certificate must carry */
        char **allowed_dn;         /* server: fnmatch() patterns for the client's DN; NULL: any */
        char **allowed_dn_file;    /* server, without patterns given: those of <pki>/allowed-dn (owned) */
        gnutls_certificate_credentials_t creds;
        gnutls_priority_t priority;
} TlsConfig;

/* A server given no allowed_dn reads <pki_dir>/allowed-dn if it exists: one pattern per line,
 * blank lines and lines starting with '#' ignored; a file without patterns admits nobody.
 * On failure *ret_error (malloc'd) says which file or what was wrong. */
int tls_config_new(bool server, const char *pki_dir, const char *peer_name, char **allowed_dn,
                   TlsConfig **ret, char **ret_error);
TlsConfig *tls_config_free(TlsConfig *c);

int tls_session_new(TlsConfig *c, int fd, gnutls_session_t *ret);

/* Advances the handshake: 1 when it is complete and the peer is verified, 0 when it waits for
 * *ret_events on the fd, negative errno on failure with *ret_error (malloc'd): -EACCES for
 * refused peers (verification, names, DN, alerts), -ECONNRESET/-EPIPE for broken connections. */
int tls_handshake_step(TlsConfig *c, gnutls_session_t s, short *ret_events, char **ret_error);

/* The peer certificate's subject DN (RFC 4514 form, malloc'd); -ENOENT if it sent none. */
int tls_peer_dn(gnutls_session_t s, char **ret_dn);

/* Whether dn matches one of the patterns (fnmatch; "CN=*,O=Ferry"). No list (NULL): any DN;
 * an empty list: none. */
bool tls_dn_allowed(char **patterns, const char *dn);
