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
#include <grp.h>
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "transport-harness.h"

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

/* A client with the right token that offers no certificate: only GnuTLS can play it. */
static void test_no_client_certificate(void) {
        PairOptions o = { .no_source = true };
        Pair *p = pair_start(&o);
        int fd = connect_peer(p);

        g_assert_cmpint(send(fd, "FERRY-TRANSPORT/1 " TOKEN " 0000 T\n", PREAMBLE_SIZE, 0), ==, PREAMBLE_SIZE);
        g_assert_cmpint(tls_client_without_certificate(fd), <, 0);
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
        long rss_before, rss_after;

        /* The baseline after one round: whatever the helper allocates once is in it. */
        junk_round(p, deadline);
        fds_before = count_fds(p->destination->pid);
        rss_before = rss_kib(p->destination->pid);
        for (unsigned round = 0; round < 3; round++)
                junk_round(p, deadline);
        fds_after = count_fds(p->destination->pid);
        g_assert_cmpuint(fds_after, ==, fds_before);
        rss_after = rss_kib(p->destination->pid);
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
        Pair *p = pair_new_listening();
        Stream s[3] = {};
        int junk;

        socket_arg = g_strdup_printf("--qemu-socket=%s", p->incoming_socket);
        token_arg = g_strdup_printf("--token-file=%s", p->token_path);
        {
                /* As ferryd starts it: the dispatcher reaches the socket through a group. */
                const char *args[] = { "--destination", "--migration=test", dispatch_arg, "--dispatch-group=nogroup",
                                       pki_arg, socket_arg, token_arg, NULL };
                p->destination = helper_start("destination", args);
        }
        helper_wait(p->destination, false);
        listening = g_strdup_printf("listening: %s", dispatch_path);
        g_assert_cmpstr(p->destination->status, ==, listening);
        {
                struct stat st;
                g_assert_cmpint(stat(dispatch_path, &st), ==, 0);
                g_assert_cmpuint(st.st_mode & 07777, ==, 0660);
                g_assert_cmpuint(st.st_gid, ==, getgrnam("nogroup")->gr_gid);
        }

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
        int r;

        g_test_init(&argc, &argv, NULL);
        if (!harness_setup())
                return 77;

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
        harness_cleanup();
        return r;
}
