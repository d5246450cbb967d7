/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fnmatch.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "tls.h"

static int errorf(char **ret_error, int error, const char *fmt, ...) _printf_(3, 4);
static int errorf(char **ret_error, int error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return -abs(error);
}

TlsConfig *tls_config_free(TlsConfig *c) {
        if (!c)
                return NULL;
        if (c->creds)
                gnutls_certificate_free_credentials(c->creds);
        if (c->priority)
                gnutls_priority_deinit(c->priority);
        free(c->peer_name);
        for (size_t i = 0; c->allowed_dn_file && c->allowed_dn_file[i]; i++)
                free(c->allowed_dn_file[i]);
        free(c->allowed_dn_file);
        free(c);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(TlsConfig *, tls_config_free);

static int pki_file(const char *dir, const char *name, bool required, char **ret, char **ret_error) {
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        if (access(p, R_OK) < 0) {
                int e = errno;
                if (!required && e == ENOENT) {
                        free(p);
                        *ret = NULL;
                        return 0;
                }
                errorf(ret_error, e, "cannot read %s: %s", p, strerror(e));
                free(p);
                return -e;
        }
        *ret = p;
        return 0;
}

#define ALLOWED_DN_MAX 1024

/* The administrator's list of peers (libvirt's tls_allowed_dn_list, as a file beside the
 * certificates, so the stream helper and the D-Bus bridge read the same one). */
static int read_allowed_dn(TlsConfig *c, const char *dir, char **ret_error) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size = 0, n = 0;
        ssize_t len;

        if (asprintf(&path, "%s/allowed-dn", dir) < 0)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT)
                        return 0;
                return errorf(ret_error, errno, "cannot read %s: %s", path, strerror(errno));
        }
        c->allowed_dn_file = calloc(1, sizeof(char *));
        if (!c->allowed_dn_file)
                return -ENOMEM;
        while ((len = getline(&line, &size, f)) >= 0) {
                char *p = line, *end = line + len;
                while (*p == ' ' || *p == '\t')
                        p++;
                while (end > p && strchr(" \t\r\n", end[-1]))
                        *--end = 0;
                if (!*p || *p == '#')
                        continue;
                if (n >= ALLOWED_DN_MAX)
                        return errorf(ret_error, E2BIG, "%s: more than %u patterns", path, ALLOWED_DN_MAX);
                char **a = realloc(c->allowed_dn_file, (n + 2) * sizeof(char *));
                if (!a)
                        return -ENOMEM;
                c->allowed_dn_file = a;
                a[n] = strdup(p);
                if (!a[n])
                        return -ENOMEM;
                a[++n] = NULL;
        }
        if (ferror(f))
                return errorf(ret_error, EIO, "cannot read %s", path);
        c->allowed_dn = c->allowed_dn_file;
        return 0;
}

int tls_config_new(bool server, const char *pki_dir, const char *peer_name, char **allowed_dn,
                   TlsConfig **ret, char **ret_error) {
        _cleanup_(tls_config_freep) TlsConfig *c = NULL;
        _cleanup_free_ char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
        const char *err_pos = NULL;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->server = server;
        c->allowed_dn = allowed_dn;
        if (peer_name) {
                c->peer_name = strdup(peer_name);
                if (!c->peer_name)
                        return -ENOMEM;
        }

        if (server && !allowed_dn) {
                r = read_allowed_dn(c, pki_dir, ret_error);
                if (r < 0)
                        return r;
        }
        r = pki_file(pki_dir, "ca-cert.pem", true, &ca, ret_error);
        if (r < 0)
                return r;
        r = pki_file(pki_dir, "ca-crl.pem", false, &crl, ret_error);
        if (r < 0)
                return r;
        r = pki_file(pki_dir, server ? "server-cert.pem" : "client-cert.pem", true, &cert, ret_error);
        if (r < 0)
                return r;
        r = pki_file(pki_dir, server ? "server-key.pem" : "client-key.pem", true, &key, ret_error);
        if (r < 0)
                return r;

        r = gnutls_certificate_allocate_credentials(&c->creds);
        if (r < 0)
                return -ENOMEM;
        r = gnutls_certificate_set_x509_trust_file(c->creds, ca, GNUTLS_X509_FMT_PEM);
        if (r <= 0)
                return errorf(ret_error, EINVAL, "%s holds no usable CA certificate: %s", ca,
                              r < 0 ? gnutls_strerror(r) : "no certificate found");
        if (crl) {
                r = gnutls_certificate_set_x509_crl_file(c->creds, crl, GNUTLS_X509_FMT_PEM);
                if (r < 0)
                        return errorf(ret_error, EINVAL, "%s: %s", crl, gnutls_strerror(r));
        }
        r = gnutls_certificate_set_x509_key_file(c->creds, cert, key, GNUTLS_X509_FMT_PEM);
        if (r < 0)
                return errorf(ret_error, EINVAL, "%s with %s: %s", cert, key, gnutls_strerror(r));

        r = gnutls_priority_init(&c->priority, TLS_PRIORITY, &err_pos);
        if (r < 0)
                return errorf(ret_error, EINVAL, "TLS priority \"%s\" refused at \"%s\": %s",
                              TLS_PRIORITY, strempty(err_pos), gnutls_strerror(r));

        *ret = TAKE_PTR(c);
        return 0;
}

int tls_session_new(TlsConfig *c, int fd, gnutls_session_t *ret) {
        gnutls_session_t s;
        int r;

        r = gnutls_init(&s, (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
        if (r < 0)
                return -ENOMEM;
        r = gnutls_priority_set(s, c->priority);
        if (r >= 0)
                r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->creds);
        if (r < 0)
                goto fail;
        if (c->server) {
                gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
                /* Without the CA list a client sends the certificate it has, so a wrong one is
                 * refused as such ("issuer unknown"), not as "no certificate". */
                gnutls_certificate_send_x509_rdn_sequence(s, 1);
                /* Verified against the CA during the handshake; no name for a client. */
                gnutls_session_set_verify_cert(s, NULL, 0);
        } else {
                /* SNI only for names; the certificate check covers names and IP addresses. */
                if (c->peer_name && !strchr(c->peer_name, ':') && strspn(c->peer_name, "0123456789.") != strlen(c->peer_name))
                        (void) gnutls_server_name_set(s, GNUTLS_NAME_DNS, c->peer_name, strlen(c->peer_name));
                gnutls_session_set_verify_cert(s, c->peer_name, 0);
        }
        gnutls_transport_set_int(s, fd);
        gnutls_handshake_set_timeout(s, 0); /* our own deadline covers it */
        *ret = s;
        return 0;
fail:
        gnutls_deinit(s);
        return -EINVAL;
}

bool tls_dn_allowed(char **patterns, const char *dn) {
        if (!patterns)
                return true;
        for (char **p = patterns; *p; p++)
                if (fnmatch(*p, dn, 0) == 0)
                        return true;
        return false;
}

int tls_peer_dn(gnutls_session_t s, char **ret_dn) {
        const gnutls_datum_t *certs;
        unsigned n = 0;
        gnutls_x509_crt_t crt;
        gnutls_datum_t dn = {};
        int r;

        certs = gnutls_certificate_get_peers(s, &n);
        if (!certs || n == 0)
                return -ENOENT;
        if (gnutls_x509_crt_init(&crt) < 0)
                return -ENOMEM;
        r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
        if (r >= 0)
                r = gnutls_x509_crt_get_dn3(crt, &dn, 0);
        gnutls_x509_crt_deinit(crt);
        if (r < 0)
                return -EBADMSG;
        *ret_dn = strdup((const char *) dn.data);
        gnutls_free(dn.data);
        return *ret_dn ? 0 : -ENOMEM;
}

static int check_client_dn(TlsConfig *c, gnutls_session_t s, char **ret_error) {
        _cleanup_free_ char *dn = NULL;
        int r;

        r = tls_peer_dn(s, &dn);
        if (r == -ENOENT)
                return errorf(ret_error, EACCES, "the peer sent no client certificate");
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return errorf(ret_error, EACCES, "cannot read the client certificate's DN");
        if (!tls_dn_allowed(c->allowed_dn, dn))
                return errorf(ret_error, EACCES, "the client certificate's DN \"%s\" is not in the allowed list", dn);
        return 0;
}

int tls_handshake_step(TlsConfig *c, gnutls_session_t s, short *ret_events, char **ret_error) {
        int r;

        r = gnutls_handshake(s);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
                *ret_events = gnutls_record_get_direction(s) ? POLLOUT : POLLIN;
                return 0;
        }
        if (r < 0 && r != GNUTLS_E_FATAL_ALERT_RECEIVED)
                /* Tell the peer why, best effort (the socket is non-blocking): its helper then
                 * reports "unknown CA" or "bad certificate" rather than a broken connection. */
                (void) gnutls_alert_send_appropriate(s, r);
        if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
                gnutls_datum_t out = {};
                unsigned status = gnutls_session_get_verify_cert_status(s);

                if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0)
                        return errorf(ret_error, EACCES, "the %s certificate failed verification",
                                      c->server ? "client" : "server");
                /* The text ends in ". " */
                while (out.size > 0 && (out.data[out.size - 1] == ' ' || out.data[out.size - 1] == 0))
                        out.data[--out.size] = 0;
                r = errorf(ret_error, EACCES, "the %s certificate failed verification%s%s: %s",
                           c->server ? "client" : "server",
                           c->server ? "" : " for name ", c->server ? "" : strna(c->peer_name),
                           (const char *) out.data);
                gnutls_free(out.data);
                return r;
        }
        if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
                return errorf(ret_error, EACCES, "the peer refused the TLS handshake (alert: %s)",
                              strna(gnutls_alert_get_name(gnutls_alert_get(s))));
        if (r == GNUTLS_E_NO_CERTIFICATE_FOUND || r == GNUTLS_E_CERTIFICATE_REQUIRED)
                return errorf(ret_error, EACCES, "the peer sent no %s certificate",
                              c->server ? "client" : "server");
        if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR)
                return errorf(ret_error, ECONNRESET, "the connection broke during the TLS handshake: %s",
                              gnutls_strerror(r));
        if (r < 0)
                return errorf(ret_error, EACCES, "TLS handshake failed: %s", gnutls_strerror(r));

        if (c->server && check_client_dn(c, s, ret_error) < 0) {
                (void) gnutls_alert_send(s, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
                return -EACCES;
        }
        return 1;
}
