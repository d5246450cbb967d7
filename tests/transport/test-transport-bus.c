/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry-transport --bus-connect and --bus-serve (docs/transport.md, "D-Bus peer connections")
 * over loopback with real TLS: the test plays sd-bus (a socket on the client's fd 0/1) and the
 * peer port's dispatcher (it accepts, reads the 13-byte preamble and runs --bus-serve with the
 * connection on fd 0/1); a stand-in bridge (bus-bridge-standin) plays systemd-stdio-bridge as
 * user nobody. Bytes both ways at once, exactly; the refusals with exit status 3 and the words
 * of the stream helper; configuration errors. Needs root (the bridge's setuid). */

#include <gnutls/gnutls.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "transport-harness.h"

#define PREAMBLE "FERRY-PEER/1\n"
#define PREAMBLE_LEN 13

static const char *standin;

typedef struct BusPair {
        Helper *client, *server;
        int local;         /* the test's end of the client's fd 0/1 */
} BusPair;

typedef struct BusOptions {
        const char *client_pki, *server_pki;
        const char *peer_name;
        const char *allowed_dn;
        const char *handshake_timeout;  /* NULL: 60 */
} BusOptions;

static int listen_loopback(unsigned *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        g_assert_cmpint(listen(fd, 4), ==, 0);
        g_assert_cmpint(getsockname(fd, (struct sockaddr *) &sa, &len), ==, 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

/* What the dispatcher does: the preamble, exactly, then the connection goes to --bus-serve. */
static void read_preamble(int fd) {
        char buf[PREAMBLE_LEN];
        size_t got = 0;

        while (got < PREAMBLE_LEN) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                g_assert_cmpint(poll(&p, 1, WAIT_MSEC), ==, 1);
                ssize_t n = recv(fd, buf + got, PREAMBLE_LEN - got, 0);
                g_assert_cmpint(n, >, 0);
                got += (size_t) n;
        }
        g_assert_cmpmem(buf, PREAMBLE_LEN, PREAMBLE, PREAMBLE_LEN);
}

static Helper *server_start(int fd, const BusOptions *o) {
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/%s", pki, o->server_pki ?: "destination");
        g_autofree char *bridge = g_strdup_printf("--bridge=%s", standin);
        g_autofree char *dn = o->allowed_dn ? g_strdup_printf("--allowed-dn=%s", o->allowed_dn) : NULL;
        g_autofree char *timeout = g_strdup_printf("--handshake-timeout=%s", o->handshake_timeout ?: "60");
        const char *args[] = { "--bus-serve", pki_arg, bridge, "--bridge-user=nobody", timeout, dn, NULL };

        return helper_start_with_stdio("bus-serve", args, fd);
}

static BusPair *bus_pair_start(const BusOptions *o) {
        BusPair *p = g_new0(BusPair, 1);
        unsigned port;
        int listen_fd = listen_loopback(&port), pair[2], conn;
        g_autofree char *peer = g_strdup_printf("--bus-connect=127.0.0.1:%u", port);
        g_autofree char *name = g_strdup_printf("--peer-name=%s", o->peer_name ?: "localhost");
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/%s", pki, o->client_pki ?: "source");
        const char *args[] = { peer, name, pki_arg, "--handshake-timeout=60", NULL };

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), ==, 0);
        p->local = pair[0];
        p->client = helper_start_with_stdio("bus-connect", args, pair[1]);
        close(pair[1]);

        conn = accept_timeout(listen_fd, WAIT_MSEC);
        g_assert_cmpint(conn, >=, 0);
        close(listen_fd);
        read_preamble(conn);
        p->server = server_start(conn, o);
        close(conn);
        return p;
}

static void bus_pair_free(BusPair *p) {
        helper_free(p->client);
        helper_free(p->server);
        if (p->local >= 0)
                close(p->local);
        g_free(p);
}

static void assert_exit(Helper *h, int status, const char *part) {
        g_autofree char *log = NULL;

        helper_wait(h, true);
        log = helper_log(h);
        g_test_message("%s: exit %d: %s", h->name, h->exit_status, log);
        g_assert_cmpint(h->exit_status, ==, status);
        if (part)
                g_assert_nonnull(strstr(log, part));
}

typedef struct Writer {
        int fd;
        size_t length;
        bool error;
} Writer;

static gpointer writer_run(gpointer data) {
        Writer *w = data;
        uint8_t buf[64 * 1024];
        Pattern g;

        pattern_init(&g, 1);
        for (size_t done = 0; done < w->length;) {
                size_t n = MIN(sizeof(buf), w->length - done);
                pattern_fill(&g, buf, n);
                for (size_t off = 0; off < n;) {
                        ssize_t r = send(w->fd, buf + off, n - off, MSG_NOSIGNAL);
                        if (r < 0) {
                                w->error = true;
                                return NULL;
                        }
                        off += (size_t) r;
                }
                done += n;
        }
        shutdown(w->fd, SHUT_WR);
        return NULL;
}

/* 12 MiB from the client's side to the bridge and 8 MiB back, at the same time, every byte
 * checked; both helpers end with 0 once both sides closed; the bridge ran as nobody. */
static void test_relay(void) {
        const size_t up = 12 * MiB, down = 8 * MiB;
        g_autofree char *up_s = g_strdup_printf("%zu", up), *down_s = g_strdup_printf("%zu", down);
        g_autofree char *expect = g_strdup_printf("standin: received %zu bytes exactly", up);
        g_autofree char *uid = NULL;
        uint8_t buf[64 * 1024], expected[64 * 1024];
        size_t got = 0;
        bool mismatch = false;
        Writer w;
        Pattern g;
        BusPair *p;

        g_setenv("FERRY_STANDIN_SEND", down_s, true);
        g_setenv("FERRY_STANDIN_RECV", up_s, true);
        p = bus_pair_start(&(BusOptions) {});
        w = (Writer) { .fd = p->local, .length = up };
        GThread *t = g_thread_new("writer", writer_run, &w);

        pattern_init(&g, 2);
        for (;;) {
                ssize_t n = recv(p->local, buf, sizeof(buf), 0);
                g_assert_cmpint(n, >=, 0);
                if (n == 0)
                        break;
                pattern_fill(&g, expected, (size_t) n);
                if (memcmp(buf, expected, (size_t) n) != 0)
                        mismatch = true;
                got += (size_t) n;
        }
        g_thread_join(t);
        g_assert_false(w.error);
        g_assert_false(mismatch);
        g_assert_cmpuint(got, ==, down);

        assert_exit(p->client, 0, NULL);
        assert_exit(p->server, 0, expect);
        uid = g_strdup_printf("standin: uid=%u ", (unsigned) getpwnam("nobody")->pw_uid);
        g_autofree char *log = helper_log(p->server);
        g_assert_nonnull(strstr(log, uid));
        g_assert_nonnull(strstr(log, "accepted with certificate \"CN=source.test,O=Ferry test\"; "
                                     "bridging it to the system bus as nobody"));
        g_unsetenv("FERRY_STANDIN_SEND");
        g_unsetenv("FERRY_STANDIN_RECV");
        bus_pair_free(p);
}

/* sd-bus ends its unixexec: child with SIGTERM when it closes the connection: the client
 * says goodbye (close_notify), so both sides end cleanly. */
static void test_client_terminated(void) {
        BusPair *p;
        char c;

        g_setenv("FERRY_STANDIN_SEND", "0", true);
        g_setenv("FERRY_STANDIN_RECV", "0", true);
        p = bus_pair_start(&(BusOptions) {});
        /* The bridge's end of file arrives: the connection is up and relaying. */
        g_assert_cmpint(recv(p->local, &c, 1, 0), ==, 0);
        g_assert_cmpint(kill(p->client->pid, SIGTERM), ==, 0);
        assert_exit(p->client, 0, NULL);
        assert_exit(p->server, 0, "standin: received 0 bytes exactly");
        g_autofree char *log = helper_log(p->server);
        g_assert_null(strstr(log, "close_notify"));
        g_unsetenv("FERRY_STANDIN_SEND");
        g_unsetenv("FERRY_STANDIN_RECV");
        bus_pair_free(p);
}

/* A refused handshake: both sides exit 3 with their words, and no bridge ran. */
static void run_refused(const BusOptions *o, const char *client_part, const char *server_part) {
        BusPair *p = bus_pair_start(o);

        assert_exit(p->client, 3, client_part);
        assert_exit(p->server, 3, server_part);
        g_autofree char *log = helper_log(p->server);
        g_assert_null(strstr(log, "standin:"));
        g_assert_null(strstr(log, "accepted"));
        bus_pair_free(p);
}

static void test_client_wrong_ca(void) {
        run_refused(&(BusOptions) { .client_pki = "source-other-ca" },
                    "the peer refused this side (TLS alert: Certificate is bad)",
                    "the client certificate failed verification: The certificate is NOT trusted. "
                    "The certificate issuer is unknown.");
}

static void test_server_wrong_ca(void) {
        run_refused(&(BusOptions) { .server_pki = "destination-other-ca" },
                    "the server certificate failed verification for name localhost: The certificate is NOT trusted. "
                    "The certificate issuer is unknown.",
                    "the peer refused the TLS handshake (alert: Certificate is bad)");
}

static void test_wrong_name(void) {
        run_refused(&(BusOptions) { .peer_name = "wrong.test" },
                    "The name in the certificate does not match",
                    "the peer refused the TLS handshake (alert:");
}

static void test_dn_not_allowed(void) {
        run_refused(&(BusOptions) { .client_pki = "source-other-dn", .allowed_dn = "CN=source.test,O=Ferry test" },
                    "the peer refused this side (TLS alert: Access was denied)",
                    "the client certificate's DN \"CN=intruder.test,O=Ferry test\" is not in the allowed list");
}

/* The administrator's list beside the certificates (<pki>/allowed-dn), read by the server
 * when no --allowed-dn is given: a DN it does not list is refused, one it lists gets through
 * (comments and blank lines ignored). */
static void test_dn_file(void) {
        g_autofree char *dir = g_strdup_printf("%s/destination-dn-file", pki);
        g_autofree char *src = g_strdup_printf("%s/destination", pki), *file = g_build_filename(dir, "allowed-dn", NULL);
        const char *cp[] = { "cp", "-r", src, dir, NULL };
        int status = -1;

        g_assert_true(g_spawn_sync(NULL, (char **) cp, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));
        g_assert_true(g_file_set_contents(file, "# who may migrate guests in\n\n  CN=source.test,O=Ferry test  \n", -1, NULL));
        run_refused(&(BusOptions) { .client_pki = "source-other-dn", .server_pki = "destination-dn-file" },
                    "the peer refused this side (TLS alert: Access was denied)",
                    "the client certificate's DN \"CN=intruder.test,O=Ferry test\" is not in the allowed list");

        g_setenv("FERRY_STANDIN_SEND", "0", true);
        g_setenv("FERRY_STANDIN_RECV", "0", true);
        BusPair *p = bus_pair_start(&(BusOptions) { .server_pki = "destination-dn-file" });
        char c;
        g_assert_cmpint(recv(p->local, &c, 1, 0), ==, 0);
        g_assert_cmpint(kill(p->client->pid, SIGTERM), ==, 0);
        assert_exit(p->client, 0, NULL);
        assert_exit(p->server, 0, "accepted with certificate \"CN=source.test,O=Ferry test\"");
        bus_pair_free(p);
        g_unsetenv("FERRY_STANDIN_SEND");
        g_unsetenv("FERRY_STANDIN_RECV");

        /* A list without patterns admits nobody. */
        g_assert_true(g_file_set_contents(file, "# nobody for now\n", -1, NULL));
        run_refused(&(BusOptions) { .server_pki = "destination-dn-file" },
                    "the peer refused this side (TLS alert: Access was denied)",
                    "the client certificate's DN \"CN=source.test,O=Ferry test\" is not in the allowed list");
}

/* --bus-serve on an accepted loopback connection whose other end the test plays itself
 * (*ret_fd): a peer that is not ferry-transport --bus-connect. */
static Helper *server_for_test_client(const BusOptions *o, int *ret_fd) {
        unsigned port;
        int listen_fd = listen_loopback(&port), fd, conn;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        Helper *server;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        conn = accept_timeout(listen_fd, WAIT_MSEC);
        g_assert_cmpint(conn, >=, 0);
        close(listen_fd);
        server = server_start(conn, o);
        close(conn);
        *ret_fd = fd;
        return server;
}

/* A client that offers no certificate: only GnuTLS can play it. */
static void test_no_client_certificate(void) {
        int fd;
        Helper *server = server_for_test_client(&(BusOptions) {}, &fd);

        g_assert_cmpint(tls_client_without_certificate(fd), <, 0);
        close(fd);

        assert_exit(server, 3, "the peer sent no client certificate");
        helper_free(server);
}

/* A peer that connects and says nothing is dropped after the handshake timeout. */
static void test_silent_peer(void) {
        int fd;
        Helper *server = server_for_test_client(&(BusOptions) { .handshake_timeout = "1" }, &fd);

        assert_exit(server, 4, "failed: the TLS handshake did not finish within 1 s");
        g_assert_true(wait_closed_by_peer(fd, deadline_after(WAIT_MSEC)));
        close(fd);
        helper_free(server);
}

static void run_config_error(const char *const *args, int stdio_fd, const char *part) {
        Helper *h = helper_start_with_stdio("bad", args, stdio_fd);
        assert_exit(h, 2, part);
        helper_free(h);
}

static void test_bad_configuration(void) {
        g_autofree char *missing = g_strdup_printf("--pki-dir=%s/nowhere", pki);
        g_autofree char *good = g_strdup_printf("--pki-dir=%s/destination", pki);
        g_autofree char *bridge = g_strdup_printf("--bridge=%s", standin);
        int pair[2];

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), ==, 0);
        run_config_error((const char *[]) { "--bus-serve", missing, NULL }, pair[1], "nowhere/ca-cert.pem");
        run_config_error((const char *[]) { "--bus-connect=localhost", missing, NULL }, pair[1], "nowhere/ca-cert.pem");
        run_config_error((const char *[]) { "--bus-serve", good, bridge, "--bridge-user=root", NULL }, pair[1],
                         "the bridge user root has uid or gid 0, a remote host must never be root here");
        run_config_error((const char *[]) { "--bus-serve", good, "--bridge-user=no-such-user-here", NULL }, pair[1],
                         "the bridge user no-such-user-here does not exist");
        run_config_error((const char *[]) { "--bus-serve", "--bus-connect=localhost", NULL }, pair[1],
                         "exclude each other");
        run_config_error((const char *[]) { "--bus-serve", "--source", NULL }, pair[1],
                         "take only --pki-dir");
        run_config_error((const char *[]) { "--bus-connect=localhost", "--bridge=/bin/cat", NULL }, pair[1],
                         "are for --bus-serve");
        run_config_error((const char *[]) { "--bus-connect=[::1", good, NULL }, pair[1], "invalid --bus-connect");
        run_config_error((const char *[]) { "--source", "--bridge=/bin/cat", NULL }, -1, "are for --bus-serve");
        close(pair[0]);
        close(pair[1]);
}

int main(int argc, char *argv[]) {
        int r;

        g_test_init(&argc, &argv, NULL);
        standin = g_getenv("FERRY_BUS_STANDIN");
        if (!standin || !harness_setup()) {
                g_test_skip("needs FERRY_TRANSPORT, FERRY_MAKE_PKI and FERRY_BUS_STANDIN (meson test sets them)");
                return g_test_run();
        }
        if (geteuid() != 0) {
                g_test_skip("the bridge's user switch needs root");
                harness_cleanup();
                return g_test_run();
        }

        g_test_add_func("/transport/bus/relay", test_relay);
        g_test_add_func("/transport/bus/client-terminated", test_client_terminated);
        g_test_add_func("/transport/bus/client-wrong-ca", test_client_wrong_ca);
        g_test_add_func("/transport/bus/server-wrong-ca", test_server_wrong_ca);
        g_test_add_func("/transport/bus/wrong-name", test_wrong_name);
        g_test_add_func("/transport/bus/dn-not-allowed", test_dn_not_allowed);
        g_test_add_func("/transport/bus/dn-file", test_dn_file);
        g_test_add_func("/transport/bus/no-client-certificate", test_no_client_certificate);
        g_test_add_func("/transport/bus/silent-peer", test_silent_peer);
        g_test_add_func("/transport/bus/bad-configuration", test_bad_configuration);

        r = g_test_run();
        harness_cleanup();
        return r;
}
