/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The harness of test-transport (see transport-harness.h). */

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "transport-harness.h"

const char *helper_path;
char *pki;
char *tmpdir;

bool harness_setup(void) {
        g_autoptr(GError) error = NULL;
        const char *script = g_getenv("FERRY_MAKE_PKI");
        int status;

        signal(SIGPIPE, SIG_IGN);
        helper_path = g_getenv("FERRY_TRANSPORT");
        if (!helper_path || !script) {
                g_printerr("FERRY_TRANSPORT and FERRY_MAKE_PKI must be set (meson test sets them).\n");
                return false;
        }
        tmpdir = g_dir_make_tmp("ferry-transport-test-XXXXXX", &error);
        g_assert_no_error(error);
        pki = g_build_filename(tmpdir, "pki", NULL);
        {
                const char *argv_pki[] = { script, pki, NULL };
                g_assert_true(g_spawn_sync(NULL, (char **) argv_pki, NULL, 0, NULL, NULL, NULL, NULL, &status, &error));
                g_assert_no_error(error);
                g_assert_true(g_spawn_check_wait_status(status, &error));
        }
        return true;
}

void harness_cleanup(void) {
        const char *rm[] = { "rm", "-rf", tmpdir, NULL };

        g_spawn_sync(NULL, (char **) rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
        g_free(tmpdir);
        g_free(pki);
}

/* ---- the helper processes ---- */

int64_t deadline_after(int msec) {
        /* g_get_monotonic_time(), as g_cond_wait_until() wants it */
        return g_get_monotonic_time() + (int64_t) msec * 1000;
}

int msec_left(int64_t deadline) {
        int64_t left = deadline - g_get_monotonic_time();
        return left > 0 ? (int) (left / 1000) + 1 : 0;
}

static void helper_read_notify(Helper *h) {
        char buf[4096];
        ssize_t n;

        while ((n = recv(h->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
                g_auto(GStrv) lines = NULL;

                buf[n] = 0;
                lines = g_strsplit(buf, "\n", -1);
                for (char **l = lines; *l; l++) {
                        if (g_str_has_prefix(*l, "STATUS=")) {
                                g_free(h->status);
                                h->status = g_strdup(*l + 7);
                                g_test_message("%s: %s", h->name, h->status);
                        } else if (g_str_has_prefix(*l, "ERRNO="))
                                h->errno_value = atoi(*l + 6);
                        else if (g_str_equal(*l, "READY=1"))
                                h->ready = true;
                }
        }
}

static void helper_reap(Helper *h) {
        int status;

        if (h->exit_status >= 0)
                return;
        if (waitpid(h->pid, &status, WNOHANG) != h->pid)
                return;
        h->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        helper_read_notify(h);
        g_test_message("%s exited with %i", h->name, h->exit_status);
}

/* Waits for READY=1 (until_exit false) or for the exit, reading notifications meanwhile. */
void helper_wait(Helper *h, bool until_exit) {
        int64_t deadline = deadline_after(WAIT_MSEC);

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = h->notify_fd, .events = POLLIN },
                        { .fd = h->pidfd, .events = POLLIN },
                };

                helper_read_notify(h);
                helper_reap(h);
                if (h->exit_status >= 0 || (!until_exit && h->ready))
                        return;
                if (msec_left(deadline) == 0) {
                        g_autofree char *log = NULL;
                        g_file_get_contents(h->log_path, &log, NULL, NULL);
                        g_test_message("%s log:\n%s", h->name, log);
                        g_error("%s did not %s in time (last status: %s)", h->name,
                                until_exit ? "exit" : "become ready", h->status);
                }
                (void) poll(p, 2, msec_left(deadline));
        }
}

static void child_setup(gpointer data) {
        /* A failed assertion aborts the test; its helpers must not outlive it. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

Helper *helper_start(const char *name, const char *const *args) {
        return helper_start_full(helper_path, name, args, -1);
}

Helper *helper_start_program(const char *program, const char *name, const char *const *args) {
        return helper_start_full(program, name, args, -1);
}

Helper *helper_start_with_stdio(const char *name, const char *const *args, int stdio_fd) {
        return helper_start_full(helper_path, name, args, stdio_fd);
}

Helper *helper_start_full(const char *program, const char *name, const char *const *args, int stdio_fd) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_auto(GStrv) envp = g_get_environ();
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        g_autoptr(GError) error = NULL;
        Helper *h = g_new0(Helper, 1);
        int log_fd;

        h->name = name;
        h->exit_status = -1;
        h->notify_path = g_strdup_printf("%s/notify-%s", tmpdir, name);
        h->log_path = g_strdup_printf("%s/log-%s", tmpdir, name);
        (void) unlink(h->notify_path);
        h->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(h->notify_fd, >=, 0);
        g_strlcpy(sa.sun_path, h->notify_path, sizeof(sa.sun_path));
        g_assert_cmpint(bind(h->notify_fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);

        g_ptr_array_add(argv, (char *) program);
        for (size_t i = 0; args[i]; i++)
                g_ptr_array_add(argv, (char *) args[i]);
        g_ptr_array_add(argv, NULL);
        envp = g_environ_setenv(envp, "NOTIFY_SOCKET", h->notify_path, TRUE);
        envp = g_environ_unsetenv(envp, "CREDENTIALS_DIRECTORY");

        log_fd = open(h->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        g_assert_cmpint(log_fd, >=, 0);
        g_assert_true(g_spawn_async_with_fds(NULL, (char **) argv->pdata, envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                             child_setup, NULL, &h->pid, stdio_fd, stdio_fd >= 0 ? stdio_fd : log_fd,
                                             log_fd, &error));
        g_assert_no_error(error);
        close(log_fd);
        h->pidfd = (int) syscall(SYS_pidfd_open, h->pid, 0);
        g_assert_cmpint(h->pidfd, >=, 0);
        return h;
}

void helper_free(Helper *h) {
        if (!h)
                return;
        if (h->exit_status < 0) {
                kill(h->pid, SIGKILL);
                helper_wait(h, true);
        }
        close(h->pidfd);
        close(h->notify_fd);
        unlink(h->notify_path);
        g_free(h->notify_path);
        g_free(h->log_path);
        g_free(h->status);
        g_free(h);
}

char *helper_log(Helper *h) {
        char *log = NULL;
        g_assert_true(g_file_get_contents(h->log_path, &log, NULL, NULL));
        return log;
}

void assert_status(Helper *h, int exit_status, const char *status_prefix, const char *status_part) {
        if (h->exit_status != exit_status || !h->status || !g_str_has_prefix(h->status, status_prefix) ||
            (status_part && !strstr(h->status, status_part))) {
                g_autofree char *log = helper_log(h);
                g_test_message("%s log:\n%s", h->name, log);
                g_error("%s: exit status %i, status \"%s\"; expected %i, \"%s...%s...\"", h->name, h->exit_status,
                        h->status, exit_status, status_prefix, status_part ?: "");
        }
}

/* ---- a pair of helpers and the two fake QEMUs ---- */



void pair_start_source(Pair *p, const PairOptions *o) {
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/%s", pki, o->source_pki ?: "source");
        g_autofree char *socket_arg = g_strdup_printf("--qemu-socket=%s", p->source_socket);
        g_autofree char *peer_arg = g_strdup_printf("--peer=%s", p->peer);
        g_autofree char *name_arg = g_strdup_printf("--peer-name=%s", o->peer_name ?: "localhost");
        g_autofree char *token_arg = g_strdup_printf("--token-file=%s", p->token_path);
        const char *args[16] = { "--source", "--migration=test", pki_arg, socket_arg, peer_arg, name_arg, token_arg };
        size_t n = 7;

        if (o->source_plaintext)
                args[n++] = "--plaintext";
        p->source = helper_start("source", args);
        helper_wait(p->source, false);
        g_assert_true(p->source->ready);
        g_assert_true(g_str_has_prefix(p->source->status, "listening: "));
        g_assert_cmpstr(p->source->status + strlen("listening: "), ==, p->source_socket);
}

Pair *pair_start(const PairOptions *o) {
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/%s", pki, o->destination_pki ?: "destination");
        g_autofree char *socket_arg = NULL, *token_arg = NULL, *dn_arg = NULL, *timeout_arg = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *args[16] = { "--destination", "--migration=test", "--listen=127.0.0.1:0", pki_arg };
        size_t n = 4;
        Pair *p = g_new0(Pair, 1);

        p->source_socket = g_strdup_printf("%s/source.sock", tmpdir);
        p->incoming_socket = g_strdup_printf("%s/incoming.sock", tmpdir);
        p->token_path = g_strdup_printf("%s/token", tmpdir);
        g_assert_true(g_file_set_contents(p->token_path, TOKEN "\n", -1, NULL));

        p->incoming_fd = -1;
        if (!o->qemu_incoming) {
                (void) unlink(p->incoming_socket);
                p->incoming_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                g_strlcpy(sa.sun_path, p->incoming_socket, sizeof(sa.sun_path));
                g_assert_cmpint(bind(p->incoming_fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
                g_assert_cmpint(listen(p->incoming_fd, 64), ==, 0);
        }

        socket_arg = g_strdup_printf("--qemu-socket=%s", p->incoming_socket);
        token_arg = g_strdup_printf("--token-file=%s", p->token_path);
        args[n++] = socket_arg;
        args[n++] = token_arg;
        if (o->destination_plaintext)
                args[n++] = "--plaintext";
        if (o->allowed_dn)
                args[n++] = dn_arg = g_strdup_printf("--allowed-dn=%s", o->allowed_dn);
        if (o->handshake_timeout)
                args[n++] = timeout_arg = g_strdup_printf("--handshake-timeout=%s", o->handshake_timeout);

        p->destination = helper_start("destination", args);
        helper_wait(p->destination, false);
        g_assert_true(p->destination->ready);
        g_assert_true(g_str_has_prefix(p->destination->status, "listening: 127.0.0.1:"));
        p->peer = g_strdup(p->destination->status + strlen("listening: "));

        if (!o->no_source)
                pair_start_source(p, o);
        return p;
}

void pair_free(Pair *p) {
        helper_free(p->source);
        helper_free(p->destination);
        if (p->incoming_fd >= 0)
                close(p->incoming_fd);
        unlink(p->incoming_socket);
        unlink(p->source_socket);
        g_free(p->source_socket);
        g_free(p->incoming_socket);
        g_free(p->token_path);
        g_free(p->peer);
        g_free(p);
}

int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
        g_assert_cmpint(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        return fd;
}

int accept_timeout(int listen_fd, int msec) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };

        if (poll(&p, 1, msec) <= 0)
                return -1;
        return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
}

/* ---- byte streams with known content ---- */

void pattern_init(Pattern *g, uint64_t seed) {
        *g = (Pattern) { .state = seed * 0x9e3779b97f4a7c15ULL + 1, .used = 8 };
}

void pattern_fill(Pattern *g, uint8_t *buf, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (g->used == 8) {
                        uint64_t x = g->state;
                        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
                        g->state = x;
                        x *= 0x2545f4914f6cdd1dULL;
                        memcpy(g->bytes, &x, 8);
                        g->used = 0;
                }
                buf[i] = g->bytes[g->used++];
        }
}


static gpointer flow_writer(gpointer data) {
        Flow *f = data;
        Pattern g;
        uint8_t buf[64 * 1024];

        pattern_init(&g, f->seed);
        while (f->written < f->length) {
                size_t n = MIN(sizeof(buf), f->length - f->written);
                ssize_t w;

                pattern_fill(&g, buf, n);
                for (size_t off = 0; off < n; off += (size_t) w) {
                        w = send(f->write_fd, buf + off, n - off, MSG_NOSIGNAL);
                        if (w < 0) {
                                f->write_error = true;
                                return NULL;
                        }
                }
                f->written += n;
        }
        if (f->half_close)
                shutdown(f->write_fd, SHUT_WR);
        return NULL;
}

static gpointer flow_reader(gpointer data) {
        Flow *f = data;
        Pattern g;
        uint8_t buf[64 * 1024], expected[64 * 1024];

        pattern_init(&g, f->seed);
        for (;;) {
                ssize_t n = recv(f->read_fd, buf, sizeof(buf), 0);
                if (n <= 0) {
                        f->eof = n == 0;
                        return NULL;
                }
                pattern_fill(&g, expected, (size_t) n);
                if (memcmp(buf, expected, (size_t) n) != 0) {
                        f->mismatch = true;
                        return NULL;
                }
                f->received += (size_t) n;
                if (f->mark && f->received >= f->mark) {
                        g_mutex_lock(&f->lock);
                        f->mark_passed = true;
                        g_cond_signal(&f->cond);
                        g_mutex_unlock(&f->lock);
                }
        }
}

void flow_start(Flow *f, int write_fd, int read_fd, uint64_t seed, size_t length) {
        f->write_fd = write_fd;
        f->read_fd = read_fd;
        f->seed = seed;
        f->length = length;
        f->half_close = true;
        g_mutex_init(&f->lock);
        g_cond_init(&f->cond);
        f->writer = g_thread_new("writer", flow_writer, f);
        f->reader = g_thread_new("reader", flow_reader, f);
}

void flow_join(Flow *f) {
        g_thread_join(f->writer);
        g_thread_join(f->reader);
        g_mutex_clear(&f->lock);
        g_cond_clear(&f->cond);
}

void flow_assert_exact(Flow *f) {
        g_assert_false(f->write_error);
        g_assert_false(f->mismatch);
        g_assert_true(f->eof);
        g_assert_cmpuint(f->written, ==, f->length);
        g_assert_cmpuint(f->received, ==, f->length);
}


/* Opens n streams the way QEMU does (main channel first, then multifd channels) and checks
 * the destination receives them in the same order. */
void streams_open(Pair *p, Stream *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                s[i].source_fd = connect_unix(p->source_socket);
        for (size_t i = 0; i < n; i++) {
                s[i].destination_fd = accept_timeout(p->incoming_fd, WAIT_MSEC);
                g_assert_cmpint(s[i].destination_fd, >=, 0);
        }
}

void streams_run(Stream *s, size_t n, size_t forward, size_t back) {
        for (size_t i = 0; i < n; i++) {
                /* Stream 0 carries most, as the main channel does; the seed differs per stream and
                 * direction, so a stream crossed with another is a mismatch. */
                flow_start(&s[i].forward, s[i].source_fd, s[i].destination_fd, 2 * i + 1, i == 0 ? forward : forward / 2);
                flow_start(&s[i].back, s[i].destination_fd, s[i].source_fd, 2 * i + 2, i == 0 ? back : back / 2);
        }
        for (size_t i = 0; i < n; i++) {
                flow_join(&s[i].forward);
                flow_join(&s[i].back);
                flow_assert_exact(&s[i].forward);
                flow_assert_exact(&s[i].back);
                close(s[i].source_fd);
                close(s[i].destination_fd);
        }
}

uint64_t streams_total(Stream *s, size_t n, bool forward) {
        uint64_t t = 0;
        for (size_t i = 0; i < n; i++)
                t += forward ? s[i].forward.length : s[i].back.length;
        return t;
}

void run_streams_on_pair(Pair *p, size_t n, size_t forward, size_t back) {
        Stream s[8] = {};
        g_autofree char *done_source = NULL, *done_destination = NULL;

        streams_open(p, s, n);
        streams_run(s, n, forward, back);

        helper_wait(p->source, true);
        helper_wait(p->destination, true);
        done_source = g_strdup_printf("done: %zu streams, %" G_GUINT64_FORMAT " bytes sent, %" G_GUINT64_FORMAT " bytes received",
                                      n, streams_total(s, n, true), streams_total(s, n, false));
        done_destination = g_strdup_printf("done: %zu streams, %" G_GUINT64_FORMAT " bytes sent, %" G_GUINT64_FORMAT " bytes received",
                                           n, streams_total(s, n, false), streams_total(s, n, true));
        assert_status(p->source, 0, done_source, NULL);
        assert_status(p->destination, 0, done_destination, NULL);
        pair_free(p);
}

void run_streams_test(const PairOptions *o, size_t n, size_t forward, size_t back) {
        run_streams_on_pair(pair_start(o), n, forward, back);
}

int connect_peer(Pair *p) {
        g_autoptr(GSocketClient) client = g_socket_client_new();
        g_autoptr(GError) error = NULL;
        GSocketConnection *conn;
        int fd;

        conn = g_socket_client_connect_to_host(client, p->peer, 0, NULL, &error);
        g_assert_no_error(error);
        fd = dup(g_socket_get_fd(g_socket_connection_get_socket(conn)));
        g_object_unref(conn);
        g_assert_cmpint(fd, >=, 0);
        /* GSocket made it non-blocking; the test's clients block. */
        g_assert_cmpint(fcntl(fd, F_SETFL, 0), ==, 0);
        return fd;
}

/* Resident memory in KiB (/proc/PID/status). */
long rss_kib(GPid pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/status", pid), *status = NULL;
        const char *p;

        g_assert_true(g_file_get_contents(path, &status, NULL, NULL));
        p = strstr(status, "VmRSS:");
        g_assert_nonnull(p);
        return atol(p + strlen("VmRSS:"));
}

unsigned count_fds(GPid pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/fd", pid);
        g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
        unsigned n = 0;

        g_assert_nonnull(d);
        while (g_dir_read_name(d))
                n++;
        return n;
}

bool wait_closed_by_peer(int fd, int64_t deadline) {
        char buf[256];

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (poll(&p, 1, msec_left(deadline)) <= 0)
                        return false;
                n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n <= 0)
                        return n == 0 || errno == ECONNRESET;
        }
}

/* A pair whose "destination QEMU" listens and whose token file is written, with neither helper
 * started: the tests that start the destination themselves (behind a dispatcher) begin here. */
Pair *pair_new_listening(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Pair *p = g_new0(Pair, 1);

        p->source_socket = g_strdup_printf("%s/source.sock", tmpdir);
        p->incoming_socket = g_strdup_printf("%s/incoming.sock", tmpdir);
        p->token_path = g_strdup_printf("%s/token", tmpdir);
        g_assert_true(g_file_set_contents(p->token_path, TOKEN "\n", -1, NULL));
        (void) unlink(p->incoming_socket);
        p->incoming_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_strlcpy(sa.sun_path, p->incoming_socket, sizeof(sa.sun_path));
        g_assert_cmpint(bind(p->incoming_fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        g_assert_cmpint(listen(p->incoming_fd, 64), ==, 0);
        return p;
}

/* A TLS 1.3 client on fd that trusts the test CA and offers no certificate (only GnuTLS can
 * play that peer): returns the handshake's result, or the first read's when the client
 * finished first (TLS 1.3 lets it; the server's refusal shows on the next read). */
int tls_client_without_certificate(int fd) {
        gnutls_certificate_credentials_t creds;
        gnutls_session_t s;
        char ca[PATH_MAX], buf[16];
        int r;

        snprintf(ca, sizeof(ca), "%s/source/ca-cert.pem", pki);
        g_assert_cmpint(gnutls_certificate_allocate_credentials(&creds), ==, 0);
        g_assert_cmpint(gnutls_certificate_set_x509_trust_file(creds, ca, GNUTLS_X509_FMT_PEM), ==, 1);
        g_assert_cmpint(gnutls_init(&s, GNUTLS_CLIENT), ==, 0);
        g_assert_cmpint(gnutls_priority_set_direct(s, "NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL), ==, 0);
        g_assert_cmpint(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds), ==, 0);
        gnutls_session_set_verify_cert(s, "localhost", 0);
        gnutls_transport_set_int(s, fd);
        r = gnutls_handshake(s);
        g_test_message("client handshake: %s", r < 0 ? gnutls_strerror(r) : "complete");
        if (r == 0)
                r = (int) gnutls_record_recv(s, buf, sizeof(buf));
        g_test_message("client: %s", r < 0 ? gnutls_strerror(r) : "data");
        gnutls_deinit(s);
        gnutls_certificate_free_credentials(creds);
        return r;
}
