/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry-peer, the dispatcher of the shared peer port, without a lab: it listens on a loopback
 * port of its own (--listen), hands streams to a real destination helper's dispatch socket in a
 * temporary directory (--dispatch-dir) and runs a stand-in for "ferry-transport --bus-serve"
 * (--bus-serve=bus-serve-echo.sh, which echoes what follows the preamble). The source helper
 * connects to ferry-peer's port exactly as it would to 16514. */

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "transport-harness.h"

#define PEER_PENDING_MAX 64
#define PEER_BUS_MAX 16

static const char *peer_program, *bus_serve_standin;

typedef struct Peer {
        Helper *h;
        char *dir;        /* --dispatch-dir */
        char *address;    /* 127.0.0.1:PORT */
} Peer;

static Peer *peer_start(const char *handshake_timeout, const char *idle_timeout) {
        Peer *peer = g_new0(Peer, 1);
        g_autofree char *dir_arg = NULL, *hs_arg = NULL, *idle_arg = NULL, *bus_arg = NULL;

        peer->dir = g_strdup_printf("%s/dispatch", tmpdir);
        g_assert_cmpint(g_mkdir_with_parents(peer->dir, 0700), ==, 0);
        dir_arg = g_strdup_printf("--dispatch-dir=%s", peer->dir);
        hs_arg = g_strdup_printf("--handshake-timeout=%s", handshake_timeout);
        idle_arg = g_strdup_printf("--idle-timeout=%s", idle_timeout);
        bus_arg = g_strdup_printf("--bus-serve=%s", bus_serve_standin);
        {
                const char *args[] = { "--listen=127.0.0.1:0", dir_arg, hs_arg, idle_arg, bus_arg, "--log-level=debug", NULL };
                peer->h = helper_start_program(peer_program, "ferry-peer", args);
        }
        helper_wait(peer->h, false);
        g_assert_true(peer->h->ready);
        g_assert_true(g_str_has_prefix(peer->h->status, "listening: 127.0.0.1:"));
        peer->address = g_strdup(peer->h->status + strlen("listening: "));
        return peer;
}

static void peer_free(Peer *peer) {
        helper_free(peer->h);
        g_free(peer->dir);
        g_free(peer->address);
        g_free(peer);
}

/* A destination helper behind ferry-peer (its dispatch socket named by the token, as ferryd
 * names it) and a source helper that connects to ferry-peer's port. */
static Pair *pair_behind_peer(Peer *peer, bool plaintext) {
        g_autofree char *dispatch_arg = g_strdup_printf("--dispatch-socket=%s/peer-" TOKEN ".sock", peer->dir);
        g_autofree char *pki_arg = g_strdup_printf("--pki-dir=%s/destination", pki);
        g_autofree char *socket_arg = NULL, *token_arg = NULL;
        PairOptions o = { .source_plaintext = plaintext };
        Pair *p = pair_new_listening();

        socket_arg = g_strdup_printf("--qemu-socket=%s", p->incoming_socket);
        token_arg = g_strdup_printf("--token-file=%s", p->token_path);
        {
                const char *args[] = { "--destination", "--migration=test", dispatch_arg, pki_arg, socket_arg, token_arg,
                                       plaintext ? "--plaintext" : NULL, NULL };
                p->destination = helper_start("destination", args);
        }
        helper_wait(p->destination, false);
        g_assert_true(p->destination->ready);
        p->peer = g_strdup(peer->address);
        pair_start_source(p, &o);
        return p;
}

static void run_transfer(Peer *peer, bool plaintext, size_t n, size_t forward, size_t back) {
        run_streams_on_pair(pair_behind_peer(peer, plaintext), n, forward, back);
}

static int connect_to(const char *address) {
        Pair p = { .peer = (char *) address };
        return connect_peer(&p);
}

static void assert_log_has(Helper *h, const char *text) {
        g_autofree char *log = helper_log(h);
        if (!strstr(log, text)) {
                g_test_message("%s log:\n%s", h->name, log);
                g_error("%s's log lacks \"%s\"", h->name, text);
        }
}

/* Byte-exact multi-stream transfers through the dispatcher, TLS and plaintext, and its fd count
 * after the second is what it was after the first (the first status update opens the one fd
 * notify_progress() keeps). */
static void test_streams(void) {
        Peer *peer = peer_start("10", "0");
        unsigned fds_before;

        run_transfer(peer, false, 4, 24 * MiB, 8 * MiB);
        fds_before = count_fds(peer->h->pid);
        run_transfer(peer, true, 2, 16 * MiB, 4 * MiB);
        g_assert_cmpuint(count_fds(peer->h->pid), ==, fds_before);
        g_assert_cmpint(peer->h->exit_status, ==, -1);
        assert_log_has(peer->h, "Handed stream 3 of token 5f1e0c8a...");
        peer_free(peer);
}

/* One round of junk: idle connections (more than the dispatcher keeps), garbage, half a
 * preamble, well-formed preambles with a token nobody waits for, another protocol's magic.
 * Every one is closed by the dispatcher. */
static void junk_round(Peer *peer, int64_t deadline) {
        int junk[PEER_PENDING_MAX + 40];

        for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
                junk[i] = connect_to(peer->address);
                switch (i % 5) {
                case 1:
                        (void) send(junk[i], "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL);
                        break;
                case 2:
                        (void) send(junk[i], "FERRY-TRANSPORT/1 ", 18, MSG_NOSIGNAL);
                        break;
                case 3:
                        (void) send(junk[i], "FERRY-TRANSPORT/1 00000000000000000000000000000000 0000 T\n", PREAMBLE_SIZE,
                                    MSG_NOSIGNAL);
                        break;
                case 4:
                        (void) send(junk[i], "FERRY-PEER/2\n", 13, MSG_NOSIGNAL);
                        break;
                }
        }
        for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
                g_assert_true(wait_closed_by_peer(junk[i], deadline));
                close(junk[i]);
        }
}

static void test_junk(void) {
        Peer *peer = peer_start("2", "0");
        int64_t deadline = deadline_after(WAIT_MSEC);
        unsigned fds_before, fds_after;
        long rss_before, rss_after;
        int idle[PEER_PENDING_MAX + 8];

        /* The baseline after one round: whatever ferry-peer allocates once is in it. */
        junk_round(peer, deadline);
        fds_before = count_fds(peer->h->pid);
        rss_before = rss_kib(peer->h->pid);
        for (unsigned round = 0; round < 2; round++)
                junk_round(peer, deadline);
        fds_after = count_fds(peer->h->pid);
        rss_after = rss_kib(peer->h->pid);
        g_test_message("ferry-peer: %u fds and %ld KiB before, %u fds and %ld KiB after two more junk rounds",
                       fds_before, rss_before, fds_after, rss_after);
        g_assert_cmpuint(fds_after, ==, fds_before);
        g_assert_cmpint(rss_after - rss_before, <, 4096);

        /* A real migration while the dispatcher is full of idle connections: its streams push
         * the oldest out and get through. */
        for (size_t i = 0; i < G_N_ELEMENTS(idle); i++)
                idle[i] = connect_to(peer->address);
        run_transfer(peer, false, 3, 16 * MiB, 4 * MiB);
        for (size_t i = 0; i < G_N_ELEMENTS(idle); i++) {
                g_assert_true(wait_closed_by_peer(idle[i], deadline));
                close(idle[i]);
        }
        g_assert_cmpuint(count_fds(peer->h->pid), ==, fds_before);
        g_assert_cmpint(peer->h->exit_status, ==, -1);

        assert_log_has(peer->h, "not a Ferry preamble");
        assert_log_has(peer->h, "no migration waits for token 00000000...");
        assert_log_has(peer->h, "too many unidentified connections (64), dropped the oldest");
        assert_log_has(peer->h, "no complete preamble within 2 s");
        peer_free(peer);
}

/* More streams at once than a helper's dispatch queue holds (net.unix.max_dgram_qlen, 10 by
 * default), as a migration with many multifd channels opens them: the dispatcher waits for room
 * instead of dropping any. The test plays the helper (a datagram socket that reads late) and
 * checks each fd it gets against the preamble it came with, by the byte each connection sent
 * after its preamble, which ferry-peer must have left unread. */
static void test_helper_queue_full(void) {
        const char token[] = "0123456789abcdef0123456789abcdef";
        enum { N = 24 };
        Peer *peer = peer_start("10", "0");
        g_autofree char *path = g_strdup_printf("%s/peer-%s.sock", peer->dir, token);
        g_autofree char *qlen = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int64_t deadline = deadline_after(WAIT_MSEC);
        int helper, conns[N];
        bool seen[N] = {};

        helper = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
        g_assert_cmpint(bind(helper, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);

        for (unsigned i = 0; i < N; i++) {
                g_autofree char *first = g_strdup_printf("FERRY-TRANSPORT/1 %s %04x P\n%c", token, i, 'A' + i);
                conns[i] = connect_to(peer->address);
                g_assert_cmpint(send(conns[i], first, PREAMBLE_SIZE + 1, MSG_NOSIGNAL), ==, PREAMBLE_SIZE + 1);
        }
        for (unsigned k = 0; k < N; k++) {
                char preamble[PREAMBLE_SIZE + 1];
                union {
                        struct cmsghdr h;
                        uint8_t buf[CMSG_SPACE(sizeof(int))];
                } control;
                struct iovec iov = { .iov_base = preamble, .iov_len = sizeof(preamble) };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                                     .msg_controllen = sizeof(control) };
                struct pollfd pfd = { .fd = helper, .events = POLLIN };
                struct cmsghdr *cm;
                unsigned index;
                char byte;
                int fd;

                g_assert_cmpint(poll(&pfd, 1, msec_left(deadline)), ==, 1);
                g_assert_cmpint(recvmsg(helper, &mh, MSG_CMSG_CLOEXEC), ==, PREAMBLE_SIZE);
                cm = CMSG_FIRSTHDR(&mh);
                g_assert_nonnull(cm);
                g_assert_cmpint(cm->cmsg_type, ==, SCM_RIGHTS);
                memcpy(&fd, CMSG_DATA(cm), sizeof(int));
                preamble[PREAMBLE_SIZE] = 0;
                g_assert_cmpint(sscanf(preamble + 18 + 33, "%4x", &index), ==, 1);
                g_assert_cmpuint(index, <, N);
                g_assert_false(seen[index]);
                seen[index] = true;
                g_assert_cmpint(fcntl(fd, F_SETFL, 0), ==, 0);
                g_assert_cmpint(recv(fd, &byte, 1, 0), ==, 1);
                g_assert_cmpint(byte, ==, 'A' + (int) index);
                close(fd);
        }
        for (unsigned i = 0; i < N; i++)
                close(conns[i]);
        close(helper);
        unlink(path);
        if (g_file_get_contents("/proc/sys/net/unix/max_dgram_qlen", &qlen, NULL, NULL) && atoi(qlen) < N)
                assert_log_has(peer->h, "waits for room in");
        g_assert_cmpint(peer->h->exit_status, ==, -1);
        peer_free(peer);
}

static void echo_check(int fd, const char *text) {
        size_t n = strlen(text), got = 0;
        char buf[256];

        g_assert_cmpint(send(fd, text, n, MSG_NOSIGNAL), ==, (ssize_t) n);
        while (got < n) {
                ssize_t k = recv(fd, buf + got, n - got, 0);
                g_assert_cmpint(k, >, 0);
                got += (size_t) k;
        }
        g_assert_cmpmem(buf, n, text, n);
}

/* FERRY-PEER/1: the connection goes to "<bus-serve> --bus-serve" as fd 0 and 1 with nothing
 * read past the preamble (the stand-in echoes what it gets); at most 16 at once; SIGTERM
 * reaches them. */
static void test_bus_serve(void) {
        Peer *peer = peer_start("10", "0");
        int64_t deadline = deadline_after(WAIT_MSEC);
        int bus[PEER_BUS_MAX], extra;
        char first[64];

        for (size_t i = 0; i < G_N_ELEMENTS(bus); i++) {
                g_autofree char *hello = g_strdup_printf("hello %zu\n", i);
                bus[i] = connect_to(peer->address);
                /* The preamble and the first bytes of the "TLS" in one segment: none may be lost. */
                snprintf(first, sizeof(first), "FERRY-PEER/1\n%s", hello);
                g_assert_cmpint(send(bus[i], first, strlen(first), MSG_NOSIGNAL), ==, (ssize_t) strlen(first));
                {
                        char buf[64];
                        size_t got = 0, n = strlen(hello);
                        while (got < n) {
                                ssize_t k = recv(bus[i], buf + got, n - got, 0);
                                g_assert_cmpint(k, >, 0);
                                got += (size_t) k;
                        }
                        g_assert_cmpmem(buf, n, hello, n);
                }
        }
        echo_check(bus[0], "still there\n");

        /* The 17th is refused; the others go on. */
        extra = connect_to(peer->address);
        g_assert_cmpint(send(extra, "FERRY-PEER/1\n", 13, MSG_NOSIGNAL), ==, 13);
        g_assert_true(wait_closed_by_peer(extra, deadline));
        close(extra);
        echo_check(bus[15], "and this one\n");
        assert_log_has(peer->h, "too many D-Bus peer connections at once (16), refused");

        /* One ends: there is room again. */
        close(bus[3]);
        for (;;) {
                extra = connect_to(peer->address);
                g_assert_cmpint(send(extra, "FERRY-PEER/1\nagain\n", 19, MSG_NOSIGNAL), ==, 19);
                {
                        char buf[8];
                        ssize_t k = recv(extra, buf, 6, MSG_WAITALL);
                        if (k == 6) {
                                g_assert_cmpmem(buf, 6, "again\n", 6);
                                break;
                        }
                }
                /* The child of bus[3] may not be reaped yet: try again. */
                close(extra);
                g_assert_cmpint(msec_left(deadline), >, 0);
                g_usleep(100 * 1000);
        }
        bus[3] = extra;

        /* SIGTERM: the children get it, then ferry-peer exits. */
        kill(peer->h->pid, SIGTERM);
        helper_wait(peer->h, true);
        g_assert_cmpint(peer->h->exit_status, ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(bus); i++) {
                g_assert_true(wait_closed_by_peer(bus[i], deadline));
                close(bus[i]);
        }
        peer_free(peer);
}

/* Nothing to do for --idle-timeout: it exits 0 and says so (systemd keeps the port). */
static void test_idle_exit(void) {
        Peer *peer = peer_start("10", "1");

        helper_wait(peer->h, true);
        assert_status(peer->h, 0, "idle: exiting after 1 s without connections", NULL);
        peer_free(peer);
}

static void test_bad_options(void) {
        const char *bad_idle[] = { "--listen=127.0.0.1:0", "--idle-timeout=soon", NULL };
        const char *bad_listen[] = { "--listen=not an address:x", NULL };
        const char *no_socket[] = { NULL };
        Helper *h;

        h = helper_start_program(peer_program, "bad-idle", bad_idle);
        helper_wait(h, true);
        assert_status(h, 2, "failed: invalid --idle-timeout=soon", NULL);
        helper_free(h);

        h = helper_start_program(peer_program, "bad-listen", bad_listen);
        helper_wait(h, true);
        assert_status(h, 2, "failed: cannot listen on not an address:x", NULL);
        helper_free(h);

        /* Neither --listen nor LISTEN_FDS. */
        h = helper_start_program(peer_program, "no-socket", no_socket);
        helper_wait(h, true);
        assert_status(h, 2, "failed: cannot listen on the socket from systemd", NULL);
        helper_free(h);
}

int main(int argc, char *argv[]) {
        int r;

        g_test_init(&argc, &argv, NULL);
        peer_program = g_getenv("FERRY_PEER");
        bus_serve_standin = g_getenv("FERRY_PEER_BUS_SERVE_STANDIN");
        if (!peer_program || !bus_serve_standin) {
                g_printerr("FERRY_PEER and FERRY_PEER_BUS_SERVE_STANDIN must be set (meson test sets them).\n");
                return 77;
        }
        if (!harness_setup())
                return 77;

        g_test_add_func("/peer/streams", test_streams);
        g_test_add_func("/peer/junk", test_junk);
        g_test_add_func("/peer/helper-queue-full", test_helper_queue_full);
        g_test_add_func("/peer/bus-serve", test_bus_serve);
        g_test_add_func("/peer/idle-exit", test_idle_exit);
        g_test_add_func("/peer/bad-options", test_bad_options);
        r = g_test_run();
        harness_cleanup();
        return r;
}
