/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry-transport end to end: a source and a destination helper on this machine, connected
 * over loopback TCP, real sockets and real TLS (certificates made by make-pki.sh with
 * openssl). The test plays both QEMUs: it connects to the source helper's socket as the
 * source QEMU does, and listens on the "incoming" socket as the destination QEMU does, then
 * checks every byte of each stream in both directions, the helpers' exit statuses and their
 * sd_notify messages (a NOTIFY_SOCKET of the test's own). The faults are real: wrong CA,
 * expired certificate, wrong name, no client certificate, plaintext against TLS, helpers
 * killed with SIGKILL mid-stream, junk and idle connections on the peer port. */

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
#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOKEN "5f1e0c8a9b7d6e4f3a2b1c0d9e8f7a6b"
#define PREAMBLE_SIZE 58
#define WAIT_MSEC (120 * 1000)  /* generous: 2 cores shared with other work */
#define MiB (1024 * 1024)
#define PENDING_MAX_GUESS 16  /* the helper keeps 16 unidentified connections */

static const char *helper_path;
static char *pki;
static char *tmpdir;

/* ---- the helper processes ---- */

typedef struct Helper {
        const char *name;
        GPid pid;
        int pidfd;
        int notify_fd;
        char *notify_path;
        char *log_path;
        char *status;      /* last STATUS= */
        int errno_value;   /* last ERRNO= */
        bool ready;
        int exit_status;   /* -1 while running; 128+sig when killed */
} Helper;

static int64_t deadline_after(int msec) {
        /* g_get_monotonic_time(), as g_cond_wait_until() wants it */
        return g_get_monotonic_time() + (int64_t) msec * 1000;
}

static int msec_left(int64_t deadline) {
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
static void helper_wait(Helper *h, bool until_exit) {
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

static Helper *helper_start(const char *name, const char *const *args) {
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

        g_ptr_array_add(argv, (char *) helper_path);
        for (size_t i = 0; args[i]; i++)
                g_ptr_array_add(argv, (char *) args[i]);
        g_ptr_array_add(argv, NULL);
        envp = g_environ_setenv(envp, "NOTIFY_SOCKET", h->notify_path, TRUE);
        envp = g_environ_unsetenv(envp, "CREDENTIALS_DIRECTORY");

        log_fd = open(h->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        g_assert_cmpint(log_fd, >=, 0);
        g_assert_true(g_spawn_async_with_fds(NULL, (char **) argv->pdata, envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                             child_setup, NULL, &h->pid, -1, log_fd, log_fd, &error));
        g_assert_no_error(error);
        close(log_fd);
        h->pidfd = (int) syscall(SYS_pidfd_open, h->pid, 0);
        g_assert_cmpint(h->pidfd, >=, 0);
        return h;
}

static void helper_free(Helper *h) {
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

static char *helper_log(Helper *h) {
        char *log = NULL;
        g_assert_true(g_file_get_contents(h->log_path, &log, NULL, NULL));
        return log;
}

static void assert_status(Helper *h, int exit_status, const char *status_prefix, const char *status_part) {
        if (h->exit_status != exit_status || !h->status || !g_str_has_prefix(h->status, status_prefix) ||
            (status_part && !strstr(h->status, status_part))) {
                g_autofree char *log = helper_log(h);
                g_test_message("%s log:\n%s", h->name, log);
                g_error("%s: exit status %i, status \"%s\"; expected %i, \"%s...%s...\"", h->name, h->exit_status,
                        h->status, exit_status, status_prefix, status_part ?: "");
        }
}

/* ---- a pair of helpers and the two fake QEMUs ---- */

typedef struct Pair {
        Helper *source, *destination;
        char *source_socket;       /* the source helper creates it; "source QEMU" connects */
        char *incoming_socket;     /* "destination QEMU" listens */
        int incoming_fd;
        char *peer;                /* 127.0.0.1:port from the destination's READY status */
        char *token_path;
} Pair;

typedef struct PairOptions {
        const char *source_pki, *destination_pki;
        const char *peer_name;
        bool source_plaintext, destination_plaintext;
        const char *allowed_dn;
        const char *handshake_timeout;
        bool no_source;
} PairOptions;

static void pair_start_source(Pair *p, const PairOptions *o) {
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

static Pair *pair_start(const PairOptions *o) {
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

        (void) unlink(p->incoming_socket);
        p->incoming_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_strlcpy(sa.sun_path, p->incoming_socket, sizeof(sa.sun_path));
        g_assert_cmpint(bind(p->incoming_fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        g_assert_cmpint(listen(p->incoming_fd, 64), ==, 0);

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

static void pair_free(Pair *p) {
        helper_free(p->source);
        helper_free(p->destination);
        close(p->incoming_fd);
        unlink(p->incoming_socket);
        unlink(p->source_socket);
        g_free(p->source_socket);
        g_free(p->incoming_socket);
        g_free(p->token_path);
        g_free(p->peer);
        g_free(p);
}

static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
        g_assert_cmpint(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        return fd;
}

static int accept_timeout(int listen_fd, int msec) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };

        if (poll(&p, 1, msec) <= 0)
                return -1;
        return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
}

/* ---- byte streams with known content ---- */

/* A byte sequence anyone can regenerate from its seed (xorshift64*), to check every byte. */
typedef struct Pattern {
        uint64_t state;
        uint8_t bytes[8];
        unsigned used;
} Pattern;

static void pattern_init(Pattern *g, uint64_t seed) {
        *g = (Pattern) { .state = seed * 0x9e3779b97f4a7c15ULL + 1, .used = 8 };
}

static void pattern_fill(Pattern *g, uint8_t *buf, size_t n) {
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

typedef struct Flow {
        int write_fd, read_fd;   /* the two ends of the tunnel for this direction */
        uint64_t seed;
        size_t length;           /* SIZE_MAX: write until an error */
        bool half_close;         /* shutdown(SHUT_WR) after writing */
        /* results */
        size_t written, received;
        bool write_error, mismatch, eof;
        GThread *writer, *reader;
        /* mid-stream faults wait for the reader to pass a mark */
        GMutex lock;
        GCond cond;
        size_t mark;
        bool mark_passed;
} Flow;

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

static void flow_start(Flow *f, int write_fd, int read_fd, uint64_t seed, size_t length) {
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

static void flow_join(Flow *f) {
        g_thread_join(f->writer);
        g_thread_join(f->reader);
        g_mutex_clear(&f->lock);
        g_cond_clear(&f->cond);
}

static void flow_assert_exact(Flow *f) {
        g_assert_false(f->write_error);
        g_assert_false(f->mismatch);
        g_assert_true(f->eof);
        g_assert_cmpuint(f->written, ==, f->length);
        g_assert_cmpuint(f->received, ==, f->length);
}

/* One stream as QEMU sees it: the source end and the destination end, data both ways. */
typedef struct Stream {
        int source_fd, destination_fd;
        Flow forward, back;
} Stream;

/* Opens n streams the way QEMU does (main channel first, then multifd channels) and checks
 * the destination receives them in the same order. */
static void streams_open(Pair *p, Stream *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                s[i].source_fd = connect_unix(p->source_socket);
        for (size_t i = 0; i < n; i++) {
                s[i].destination_fd = accept_timeout(p->incoming_fd, WAIT_MSEC);
                g_assert_cmpint(s[i].destination_fd, >=, 0);
        }
}

static void streams_run(Stream *s, size_t n, size_t forward, size_t back) {
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

static uint64_t streams_total(Stream *s, size_t n, bool forward) {
        uint64_t t = 0;
        for (size_t i = 0; i < n; i++)
                t += forward ? s[i].forward.length : s[i].back.length;
        return t;
}

static void run_streams_test(const PairOptions *o, size_t n, size_t forward, size_t back) {
        Pair *p = pair_start(o);
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

/* ---- the tests ---- */

static void test_plaintext_streams(void) {
        PairOptions o = { .source_plaintext = true, .destination_plaintext = true };
        run_streams_test(&o, 4, 48 * MiB, 24 * MiB);
}

static void test_tls_streams(void) {
        PairOptions o = { .allowed_dn = "CN=source.test,O=Ferry test" };
        run_streams_test(&o, 4, 48 * MiB, 24 * MiB);
}

/* A TLS failure: both helpers exit with status 3 and say why. */
static void run_refused_test(const PairOptions *o, Helper *(*pick)(Pair *), const char *part) {
        Pair *p = pair_start(o);
        int fd = connect_unix(p->source_socket);
        Helper *h;

        helper_wait(p->source, true);
        helper_wait(p->destination, true);
        h = pick(p);
        assert_status(h, 3, "failed: stream 0: ", part);
        /* The other side fails too, refused or cut off. */
        h = h == p->source ? p->destination : p->source;
        g_assert_cmpint(h->exit_status, >=, 3);
        g_assert_cmpint(h->exit_status, <=, 4);
        g_assert_true(g_str_has_prefix(h->status, "failed: "));
        g_assert_cmpint(h->errno_value, >, 0);
        /* The destination QEMU never saw a connection. */
        g_assert_cmpint(accept_timeout(p->incoming_fd, 0), <, 0);
        close(fd);
        pair_free(p);
}

static Helper *pick_source(Pair *p) {
        return p->source;
}

static Helper *pick_destination(Pair *p) {
        return p->destination;
}

static void test_wrong_ca(void) {
        PairOptions o = { .destination_pki = "destination-other-ca" };
        run_refused_test(&o, pick_source, "issuer is unknown");
}

static void test_client_wrong_ca(void) {
        PairOptions o = { .source_pki = "source-other-ca" };
        run_refused_test(&o, pick_destination, "the client certificate failed verification");
}

static void test_expired(void) {
        PairOptions o = { .destination_pki = "destination-expired" };
        run_refused_test(&o, pick_source, "expired");
}

static void test_wrong_name(void) {
        PairOptions o = { .peer_name = "b.example" };
        run_refused_test(&o, pick_source, "does not match");
}

static void test_dn_not_allowed(void) {
        PairOptions o = { .source_pki = "source-other-dn", .allowed_dn = "CN=source.test,O=Ferry test" };
        run_refused_test(&o, pick_destination, "\"CN=intruder.test,O=Ferry test\" is not in the allowed list");
}

static void test_plaintext_refused(void) {
        PairOptions o = { .source_plaintext = true };
        run_refused_test(&o, pick_destination, "offers a plaintext stream but this side requires TLS");
}

static int connect_peer(Pair *p) {
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

/* A client with the right token that offers no certificate: only GnuTLS can play it. */
static void test_no_client_certificate(void) {
        PairOptions o = { .no_source = true };
        Pair *p = pair_start(&o);
        int fd = connect_peer(p);
        gnutls_certificate_credentials_t creds;
        gnutls_session_t s;
        char ca[PATH_MAX];
        char buf[16];
        int r;

        g_assert_cmpint(send(fd, "FERRY-TRANSPORT/1 " TOKEN " 0000 T\n", PREAMBLE_SIZE, 0), ==, PREAMBLE_SIZE);
        snprintf(ca, sizeof(ca), "%s/source/ca-cert.pem", pki);
        g_assert_cmpint(gnutls_certificate_allocate_credentials(&creds), ==, 0);
        g_assert_cmpint(gnutls_certificate_set_x509_trust_file(creds, ca, GNUTLS_X509_FMT_PEM), ==, 1);
        g_assert_cmpint(gnutls_init(&s, GNUTLS_CLIENT), ==, 0);
        g_assert_cmpint(gnutls_priority_set_direct(s, "NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL), ==, 0);
        g_assert_cmpint(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds), ==, 0);
        gnutls_session_set_verify_cert(s, "localhost", 0);
        gnutls_transport_set_int(s, fd);
        r = gnutls_handshake(s);
        /* TLS 1.3: the client may finish first; the refusal shows on the next read. */
        g_test_message("client handshake: %s", r < 0 ? gnutls_strerror(r) : "complete");
        if (r == 0)
                r = (int) gnutls_record_recv(s, buf, sizeof(buf));
        g_test_message("client: %s", r < 0 ? gnutls_strerror(r) : "data");
        g_assert_cmpint(r, <, 0);
        gnutls_deinit(s);
        gnutls_certificate_free_credentials(creds);
        close(fd);

        helper_wait(p->destination, true);
        assert_status(p->destination, 3, "failed: stream 0: ", "no client certificate");
        pair_free(p);
}

/* SIGKILL one helper while a large stream flows: the other fails with status 4 and says that
 * the stream ended without its end marker (or broke), never "done". */
static void run_killed_test(bool plaintext, bool kill_source) {
        PairOptions o = { .source_plaintext = plaintext, .destination_plaintext = plaintext };
        Pair *p = pair_start(&o);
        Stream s = {};
        Helper *victim = kill_source ? p->source : p->destination;
        Helper *survivor = kill_source ? p->destination : p->source;
        int64_t deadline = deadline_after(WAIT_MSEC);

        streams_open(p, &s, 1);
        s.forward.mark = 4 * MiB;
        flow_start(&s.forward, s.source_fd, s.destination_fd, 7, SIZE_MAX);
        g_mutex_lock(&s.forward.lock);
        while (!s.forward.mark_passed)
                g_assert_true(g_cond_wait_until(&s.forward.cond, &s.forward.lock, deadline));
        g_mutex_unlock(&s.forward.lock);
        g_assert_cmpint(kill(victim->pid, SIGKILL), ==, 0);
        helper_wait(victim, true);
        g_assert_cmpint(victim->exit_status, ==, 128 + SIGKILL);
        helper_wait(survivor, true);
        assert_status(survivor, 4, "failed: stream 0: ", kill_source ? "the peer helper died" : NULL);

        /* Unblock the fake QEMUs: the surviving helper closed its side. */
        shutdown(s.source_fd, SHUT_RDWR);
        shutdown(s.destination_fd, SHUT_RDWR);
        flow_join(&s.forward);
        g_assert_false(s.forward.mismatch);
        close(s.source_fd);
        close(s.destination_fd);
        pair_free(p);
}

static void test_killed_source_plain(void) {
        run_killed_test(true, true);
}
static void test_killed_destination_plain(void) {
        run_killed_test(true, false);
}
static void test_killed_source_tls(void) {
        run_killed_test(false, true);
}
static void test_killed_destination_tls(void) {
        run_killed_test(false, false);
}

static unsigned count_fds(GPid pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/fd", pid);
        g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
        unsigned n = 0;

        g_assert_nonnull(d);
        while (g_dir_read_name(d))
                n++;
        return n;
}

static bool wait_closed_by_peer(int fd, int64_t deadline) {
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

/* Junk on the peer port while a real migration runs: idle connections (more than the helper
 * keeps), garbage, wrong tokens, half a preamble. All are closed by the helper, the streams are
 * unaffected, and the helper's fd count comes back to where it was. */
static void test_junk_connections(void) {
        PairOptions o = { .handshake_timeout = "5", .no_source = true };
        Pair *p = pair_start(&o);
        Stream s[2] = {};
        int junk[40];
        size_t n_junk = 0;
        unsigned fds_before = count_fds(p->destination->pid);
        int64_t deadline;
        g_autofree char *log = NULL;
        uint8_t garbage[4096];

        for (size_t i = 0; i < sizeof(garbage); i++)
                garbage[i] = (uint8_t) g_random_int();

        for (size_t i = 0; i < 24; i++)              /* idle: half-open from the helper's view */
                junk[n_junk++] = connect_peer(p);
        for (size_t i = 0; i < 4; i++) {              /* garbage, more than a preamble */
                junk[n_junk] = connect_peer(p);
                (void) send(junk[n_junk++], garbage, sizeof(garbage), MSG_NOSIGNAL);
        }
        for (size_t i = 0; i < 4; i++) {              /* well-formed, wrong token */
                junk[n_junk] = connect_peer(p);
                g_assert_cmpint(send(junk[n_junk++], "FERRY-TRANSPORT/1 00000000000000000000000000000000 0000 T\n",
                                     PREAMBLE_SIZE, 0), ==, PREAMBLE_SIZE);
        }
        junk[n_junk] = connect_peer(p);               /* half a preamble, then silence */
        g_assert_cmpint(send(junk[n_junk++], "FERRY-TRANSPORT/1 " TOKEN, 40, 0), ==, 40);

        pair_start_source(p, &o);
        streams_open(p, s, 2);
        streams_run(s, 2, 24 * MiB, 8 * MiB);

        /* The destination is done with the real streams but still running? It exits once
         * they ended; the junk must have been closed by then or by its exit. */
        deadline = deadline_after(WAIT_MSEC);
        for (size_t i = 0; i < n_junk; i++) {
                g_assert_true(wait_closed_by_peer(junk[i], deadline));
                close(junk[i]);
        }
        helper_wait(p->source, true);
        helper_wait(p->destination, true);
        assert_status(p->destination, 0, "done: 2 streams", NULL);
        assert_status(p->source, 0, "done: 2 streams", NULL);
        log = helper_log(p->destination);
        g_assert_nonnull(strstr(log, "not a ferry-transport preamble"));
        g_assert_nonnull(strstr(log, "unknown migration token"));
        g_assert_nonnull(strstr(log, "too many unidentified connections"));
        g_test_message("destination had %u fds when ready", fds_before);
        pair_free(p);
}

/* The same junk, but the helper stays up (no migration): every junk connection is closed
 * within the handshake timeout and the fd count returns to the baseline. */
static void junk_round(Pair *p, int64_t deadline) {
        int junk[3 * PENDING_MAX_GUESS];

        for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
                junk[i] = connect_peer(p);
                if (i % 3 == 1)
                        (void) send(junk[i], "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL);
                else if (i % 3 == 2)
                        (void) send(junk[i], "FERRY-TRANSPORT/1 ", 18, MSG_NOSIGNAL);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
                g_assert_true(wait_closed_by_peer(junk[i], deadline));
                close(junk[i]);
        }
}

static void test_junk_bounded(void) {
        PairOptions o = { .handshake_timeout = "2", .no_source = true };
        Pair *p = pair_start(&o);
        unsigned fds_before, fds_after;
        int64_t deadline = deadline_after(WAIT_MSEC);
        g_autofree char *status_path = g_strdup_printf("/proc/%i/status", p->destination->pid);
        g_autofree char *status_before = NULL, *status_after = NULL;
        long rss_before, rss_after;

        /* The baseline after one round: whatever the helper allocates once is in it. */
        junk_round(p, deadline);
        fds_before = count_fds(p->destination->pid);
        g_assert_true(g_file_get_contents(status_path, &status_before, NULL, NULL));
        for (unsigned round = 0; round < 3; round++)
                junk_round(p, deadline);
        fds_after = count_fds(p->destination->pid);
        g_assert_cmpuint(fds_after, ==, fds_before);
        g_assert_true(g_file_get_contents(status_path, &status_after, NULL, NULL));
        rss_before = atol(strstr(status_before, "VmRSS:") + 6);
        rss_after = atol(strstr(status_after, "VmRSS:") + 6);
        g_test_message("destination RSS %ld kB before, %ld kB after 144 more junk connections", rss_before, rss_after);
        g_assert_cmpint(rss_after - rss_before, <, 4096);
        g_assert_cmpint(p->destination->exit_status, ==, -1);
        g_assert_true(g_str_has_prefix(p->destination->status, "listening: "));

        /* Stopping it is a cancel, not a failure of the migration. */
        kill(p->destination->pid, SIGTERM);
        helper_wait(p->destination, true);
        assert_status(p->destination, 5, "canceled: ", NULL);
        pair_free(p);
}

static void dispatch_fd(const char *dispatch_path, const char *preamble, int fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = (void *) preamble, .iov_len = PREAMBLE_SIZE };
        struct msghdr mh = {
                .msg_name = &sa, .msg_namelen = sizeof(sa),
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = &control, .msg_controllen = sizeof(control),
        };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        g_strlcpy(sa.sun_path, dispatch_path, sizeof(sa.sun_path));
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        g_assert_cmpint(sendmsg(s, &mh, 0), ==, PREAMBLE_SIZE);
        close(s);
}

/* The shared peer port: the test plays the dispatcher that owns it. It accepts the source
 * helper's connections, reads each preamble and hands preamble and fd to the destination
 * helper's dispatch socket; a connection with a foreign token handed over by mistake is
 * refused there without harm. */
static void test_dispatch(void) {
        g_autofree char *dispatch_path = g_strdup_printf("%s/dispatch.sock", tmpdir);
        g_autofree char *dispatch_arg = g_strdup_printf("--dispatch-socket=%s", dispatch_path);
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/destination", pki);
        g_autofree char *socket_arg = NULL, *token_arg = NULL, *listening = NULL, *log = NULL;
        g_autoptr(GSocketListener) listener = g_socket_listener_new();
        g_autoptr(GInetAddress) loopback = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
        g_autoptr(GSocketAddress) any = g_inet_socket_address_new(loopback, 0);
        g_autoptr(GSocketAddress) bound = NULL;
        g_autoptr(GError) error = NULL;
        PairOptions o = { .no_source = true };
        Pair *p = g_new0(Pair, 1);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Stream s[3] = {};
        int junk;

        p->source_socket = g_strdup_printf("%s/source.sock", tmpdir);
        p->incoming_socket = g_strdup_printf("%s/incoming.sock", tmpdir);
        p->token_path = g_strdup_printf("%s/token", tmpdir);
        g_assert_true(g_file_set_contents(p->token_path, TOKEN "\n", -1, NULL));
        (void) unlink(p->incoming_socket);
        p->incoming_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_strlcpy(sa.sun_path, p->incoming_socket, sizeof(sa.sun_path));
        g_assert_cmpint(bind(p->incoming_fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        g_assert_cmpint(listen(p->incoming_fd, 64), ==, 0);

        socket_arg = g_strdup_printf("--qemu-socket=%s", p->incoming_socket);
        token_arg = g_strdup_printf("--token-file=%s", p->token_path);
        {
                const char *args[] = { "--destination", "--migration=test", dispatch_arg, pki_arg, socket_arg, token_arg, NULL };
                p->destination = helper_start("destination", args);
        }
        helper_wait(p->destination, false);
        listening = g_strdup_printf("listening: %s", dispatch_path);
        g_assert_cmpstr(p->destination->status, ==, listening);

        /* The "shared port" */
        g_socket_listener_add_address(listener, any, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, &bound, &error);
        g_assert_no_error(error);
        p->peer = g_strdup_printf("127.0.0.1:%u", g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound)));
        pair_start_source(p, &o);

        for (size_t i = 0; i < G_N_ELEMENTS(s); i++)
                s[i].source_fd = connect_unix(p->source_socket);
        /* A foreign connection first: well-formed, another migration's token. */
        {
                int pair[2];
                g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), ==, 0);
                dispatch_fd(dispatch_path, "FERRY-TRANSPORT/1 00000000000000000000000000000000 0000 T\n", pair[1]);
                close(pair[1]);
                junk = pair[0];
        }
        for (size_t i = 0; i < G_N_ELEMENTS(s); i++) {
                g_autoptr(GSocketConnection) conn = g_socket_listener_accept(listener, NULL, NULL, &error);
                int fd = g_socket_get_fd(g_socket_connection_get_socket(conn));
                char preamble[PREAMBLE_SIZE];

                g_assert_no_error(error);
                g_assert_cmpint(fcntl(fd, F_SETFL, 0), ==, 0);
                g_assert_cmpint(recv(fd, preamble, sizeof(preamble), MSG_WAITALL), ==, PREAMBLE_SIZE);
                g_assert_true(g_str_has_prefix(preamble, "FERRY-TRANSPORT/1 " TOKEN " "));
                dispatch_fd(dispatch_path, preamble, fd);
                /* conn closes the dispatcher's copy; the helper holds its own */
        }
        g_assert_true(wait_closed_by_peer(junk, deadline_after(WAIT_MSEC)));
        close(junk);
        for (size_t i = 0; i < G_N_ELEMENTS(s); i++) {
                s[i].destination_fd = accept_timeout(p->incoming_fd, WAIT_MSEC);
                g_assert_cmpint(s[i].destination_fd, >=, 0);
        }
        streams_run(s, G_N_ELEMENTS(s), 16 * MiB, 4 * MiB);
        helper_wait(p->source, true);
        helper_wait(p->destination, true);
        assert_status(p->source, 0, "done: 3 streams", NULL);
        assert_status(p->destination, 0, "done: 3 streams", NULL);
        log = helper_log(p->destination);
        g_assert_nonnull(strstr(log, "unknown migration token"));
        g_assert_false(g_file_test(dispatch_path, G_FILE_TEST_EXISTS));
        pair_free(p);
}

static void test_bad_configuration(void) {
        g_autofree char *token_path = g_strdup_printf("%s/bad-token", tmpdir);
        g_autofree char *token_arg = g_strdup_printf("--token-file=%s", token_path);
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/nonexistent", tmpdir);
        g_autofree char *good_token_path = g_strdup_printf("%s/good-token", tmpdir);
        g_autofree char *good_token_arg = g_strdup_printf("--token-file=%s", good_token_path);
        const char *bad_token[] = { "--destination", "--qemu-socket=/nonexistent", "--listen=127.0.0.1:0", token_arg, NULL };
        const char *no_pki[] = { "--destination", "--qemu-socket=/nonexistent", "--listen=127.0.0.1:0", good_token_arg, pki_arg, NULL };
        Helper *h;

        g_assert_true(g_file_set_contents(token_path, "not a token\n", -1, NULL));
        g_assert_true(g_file_set_contents(good_token_path, TOKEN, -1, NULL));

        h = helper_start("bad-token", bad_token);
        helper_wait(h, true);
        assert_status(h, 2, "failed: cannot read the token", "not 32 lower-case hex digits");
        helper_free(h);

        h = helper_start("no-pki", no_pki);
        helper_wait(h, true);
        assert_status(h, 2, "failed: TLS credentials: cannot read ", "ca-cert.pem");
        g_assert_cmpint(h->errno_value, ==, ENOENT);
        helper_free(h);
}

int main(int argc, char *argv[]) {
        g_autoptr(GError) error = NULL;
        g_autofree char *script = NULL;
        int status, r;

        g_test_init(&argc, &argv, NULL);
        signal(SIGPIPE, SIG_IGN);

        helper_path = g_getenv("FERRY_TRANSPORT");
        script = g_strdup(g_getenv("FERRY_MAKE_PKI"));
        if (!helper_path || !script) {
                g_printerr("FERRY_TRANSPORT and FERRY_MAKE_PKI must be set (meson test sets them).\n");
                return 77;
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

        g_test_add_func("/transport/plaintext/streams", test_plaintext_streams);
        g_test_add_func("/transport/tls/streams", test_tls_streams);
        g_test_add_func("/transport/tls/wrong-ca", test_wrong_ca);
        g_test_add_func("/transport/tls/client-wrong-ca", test_client_wrong_ca);
        g_test_add_func("/transport/tls/expired", test_expired);
        g_test_add_func("/transport/tls/wrong-name", test_wrong_name);
        g_test_add_func("/transport/tls/dn-not-allowed", test_dn_not_allowed);
        g_test_add_func("/transport/tls/no-client-certificate", test_no_client_certificate);
        g_test_add_func("/transport/tls/plaintext-refused", test_plaintext_refused);
        g_test_add_func("/transport/killed/source-plaintext", test_killed_source_plain);
        g_test_add_func("/transport/killed/destination-plaintext", test_killed_destination_plain);
        g_test_add_func("/transport/killed/source-tls", test_killed_source_tls);
        g_test_add_func("/transport/killed/destination-tls", test_killed_destination_tls);
        g_test_add_func("/transport/junk/during-migration", test_junk_connections);
        g_test_add_func("/transport/junk/bounded", test_junk_bounded);
        g_test_add_func("/transport/dispatch", test_dispatch);
        g_test_add_func("/transport/bad-configuration", test_bad_configuration);
        r = g_test_run();

        {
                const char *rm[] = { "rm", "-rf", tmpdir, NULL };
                g_spawn_sync(NULL, (char **) rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
        }
        return r;
}
