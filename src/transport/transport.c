/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "notify.h"
#include "relay.h"
#include "sockets.h"
#include "tls.h"
#include "transport.h"

#define CONNS_MAX (STREAMS_MAX + PENDING_MAX)
#define STATUS_INTERVAL_USEC (1000 * 1000ULL)

typedef enum ConnState {
        CONN_CONNECTING,      /* source: TCP connect to the peer in progress */
        CONN_SEND_PREAMBLE,   /* source */
        CONN_RECV_PREAMBLE,   /* destination: nothing is known about the sender yet */
        CONN_HANDSHAKE,
        CONN_WAIT_TURN,       /* destination: earlier streams must reach QEMU first */
        CONN_RELAY,
} ConnState;

typedef struct Conn {
        ConnState state;
        unsigned index;
        bool claimed;         /* destination: the preamble carried our token */
        int local_fd, peer_fd;
        gnutls_session_t tls;
        short handshake_events;
        char preamble[PREAMBLE_SIZE];
        size_t preamble_off;
        uint64_t deadline;    /* monotonic usec; 0: none */
        RelayDirection out, in;
        char peer_desc[INET6_ADDRSTRLEN + 8];
} Conn;

typedef struct Transport {
        const TransportConfig *config;
        TlsConfig *tls;
        int listen_fd;
        int signal_fd;
        struct sockaddr_storage peer_addr;
        socklen_t peer_addr_len;
        Conn *conns[CONNS_MAX];
        unsigned next_index;         /* source: index of the next stream QEMU opens */
        unsigned connected_upto;     /* destination: streams below this reached QEMU */
        bool stream0_done;
        unsigned streams_done;
        uint64_t sent_done, received_done;
        uint64_t last_sent, last_received, next_status;
        unsigned refused;
        bool finished;
        int exit_status;
} Transport;

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static const char *role_name(const TransportConfig *c) {
        return c->role == ROLE_SOURCE ? "source" : "destination";
}

static Conn *conn_free(Conn *c) {
        if (!c)
                return NULL;
        if (c->tls)
                gnutls_deinit(c->tls);
        safe_close(c->local_fd);
        safe_close(c->peer_fd);
        relay_direction_done(&c->out);
        relay_direction_done(&c->in);
        free(c);
        return NULL;
}

static int conn_new(Transport *t, Conn **ret) {
        Conn *c;

        for (size_t i = 0; i < CONNS_MAX; i++) {
                if (t->conns[i])
                        continue;
                c = calloc(1, sizeof(*c));
                if (!c)
                        return -ENOMEM;
                c->local_fd = c->peer_fd = -EBADF;
                c->out.pipe[0] = c->out.pipe[1] = c->in.pipe[0] = c->in.pipe[1] = -EBADF;
                t->conns[i] = c;
                *ret = c;
                return 0;
        }
        return -E2BIG;
}

static void conn_remove(Transport *t, Conn *c) {
        for (size_t i = 0; i < CONNS_MAX; i++)
                if (t->conns[i] == c)
                        t->conns[i] = NULL;
        conn_free(c);
}

static void transport_stats(Transport *t, unsigned *ret_active, uint64_t *ret_sent, uint64_t *ret_received) {
        unsigned active = 0;
        uint64_t sent = t->sent_done, received = t->received_done;

        for (size_t i = 0; i < CONNS_MAX; i++) {
                Conn *c = t->conns[i];
                if (!c || (t->config->role == ROLE_DESTINATION && !c->claimed))
                        continue;
                active++;
                sent += c->out.bytes;
                received += c->in.bytes;
        }
        *ret_active = active;
        *ret_sent = sent;
        *ret_received = received;
}

/* The first failure ends the migration: one broken stream breaks QEMU's migration anyway. */
static void transport_fail(Transport *t, int exit_status, int error, const char *format, ...) _printf_(4, 5);
static void transport_fail(Transport *t, int exit_status, int error, const char *format, ...) {
        char message[900];
        va_list ap;

        if (t->finished)
                return;
        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        log_error("%s", message);
        notify_failed(error, "%s", message);
        t->finished = true;
        t->exit_status = exit_status;
}

static void peer_fail(Transport *t, Conn *c, int error, const char *format, ...) _printf_(4, 5);
static void peer_fail(Transport *t, Conn *c, int error, const char *format, ...) {
        char message[800];
        va_list ap;

        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        transport_fail(t, error == EACCES ? EXIT_TRANSPORT_REFUSED : EXIT_TRANSPORT_PEER, error,
                       "stream %u: %s", c->index, message);
}

/* Destination only: a connection that never proved to belong to this migration is closed
 * and counted, nothing more, so junk on the shared port cannot fail a migration. */
static void conn_refuse(Transport *t, Conn *c, const char *reason) {
        log_warning("Refused a connection from %s on the peer port: %s", c->peer_desc, reason);
        t->refused++;
        conn_remove(t, c);
}

static int conn_start_relay(Transport *t, Conn *c) {
        int r;

        r = relay_direction_init(&c->out, true, c->tls != NULL);
        if (r >= 0)
                r = relay_direction_init(&c->in, false, c->tls != NULL);
        if (r < 0) {
                transport_fail(t, EXIT_TRANSPORT_FAILED, -r, "stream %u: cannot set up the relay: %s", c->index, strerror(-r));
                return r;
        }
        c->out.ready = c->in.ready = true;
        c->state = CONN_RELAY;
        c->deadline = 0;
        log_info("Stream %u: relaying (%s).", c->index, c->tls ? "TLS" : "plaintext");
        return 0;
}

static void conn_start_handshake(Transport *t, Conn *c) {
        int r;

        if (t->config->plaintext) {
                if (t->config->role == ROLE_SOURCE)
                        (void) conn_start_relay(t, c);
                else
                        c->state = CONN_WAIT_TURN;
                return;
        }
        r = tls_session_new(t->tls, c->peer_fd, &c->tls);
        if (r < 0) {
                transport_fail(t, EXIT_TRANSPORT_FAILED, -r, "stream %u: cannot set up TLS: %s", c->index, strerror(-r));
                return;
        }
        c->state = CONN_HANDSHAKE;
        c->handshake_events = POLLIN | POLLOUT;
}

/* Destination: connect the streams to QEMU in the order the source's QEMU opened them, so
 * the destination QEMU sees its main channel first, as without the tunnel. */
static void destination_connect_turns(Transport *t) {
        for (;;) {
                Conn *next = NULL;
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int fd;

                for (size_t i = 0; i < CONNS_MAX; i++)
                        if (t->conns[i] && t->conns[i]->state == CONN_WAIT_TURN &&
                            t->conns[i]->index == t->connected_upto)
                                next = t->conns[i];
                if (!next)
                        return;

                strncpy(sa.sun_path, t->config->qemu_socket, sizeof(sa.sun_path) - 1);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                        int e = errno;
                        safe_close(fd);
                        transport_fail(t, EXIT_TRANSPORT_FAILED, e, "stream %u: connecting to QEMU's socket %s failed: %s",
                                       next->index, t->config->qemu_socket, strerror(e));
                        return;
                }
                (void) fcntl(fd, F_SETFL, O_NONBLOCK);
                next->local_fd = fd;
                t->connected_upto++;
                if (conn_start_relay(t, next) < 0)
                        return;
        }
}

static void conn_handshake(Transport *t, Conn *c) {
        _cleanup_free_ char *error = NULL;
        int r;

        r = tls_handshake_step(t->tls, c->tls, &c->handshake_events, &error);
        if (r == 0)
                return;
        if (r < 0) {
                peer_fail(t, c, -r, "%s (peer %s)", error ?: strerror(-r), c->peer_desc);
                return;
        }
        log_info("Stream %u: TLS 1.3 with %s established.", c->index, c->peer_desc);
        if (t->config->role == ROLE_SOURCE)
                (void) conn_start_relay(t, c);
        else {
                c->state = CONN_WAIT_TURN;
                destination_connect_turns(t);
        }
}

static void source_send_preamble(Transport *t, Conn *c) {
        ssize_t n;

        n = send(c->peer_fd, c->preamble + c->preamble_off, PREAMBLE_SIZE - c->preamble_off, MSG_NOSIGNAL);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return;
                peer_fail(t, c, errno, "sending the preamble to %s failed: %s", c->peer_desc, strerror(errno));
                return;
        }
        c->preamble_off += (size_t) n;
        if (c->preamble_off == PREAMBLE_SIZE)
                conn_start_handshake(t, c);
}

static void source_connected(Transport *t, Conn *c) {
        int error = 0;
        socklen_t len = sizeof(error);

        if (getsockopt(c->peer_fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                error = errno;
        if (error != 0) {
                peer_fail(t, c, error, "connecting to the peer %s failed: %s", c->peer_desc, strerror(error));
                return;
        }
        c->state = CONN_SEND_PREAMBLE;
        source_send_preamble(t, c);
}

static void source_accept(Transport *t) {
        for (;;) {
                _cleanup_close_ int fd = -EBADF;
                Conn *c;
                int r;

                fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return;
                        transport_fail(t, EXIT_TRANSPORT_FAILED, errno, "accepting QEMU's connection failed: %s", strerror(errno));
                        return;
                }
                if (t->next_index >= STREAMS_MAX) {
                        transport_fail(t, EXIT_TRANSPORT_FAILED, E2BIG, "QEMU opened more than %u streams", STREAMS_MAX);
                        return;
                }
                r = conn_new(t, &c);
                if (r < 0) {
                        transport_fail(t, EXIT_TRANSPORT_FAILED, -r, "no room for another stream: %s", strerror(-r));
                        return;
                }
                c->index = t->next_index++;
                c->local_fd = TAKE_FD(fd);
                c->deadline = now_usec() + (uint64_t) t->config->handshake_timeout_sec * 1000000ULL;
                preamble_format(t->config->token, c->index, !t->config->plaintext, c->preamble);

                c->peer_fd = socket(t->peer_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (c->peer_fd < 0) {
                        transport_fail(t, EXIT_TRANSPORT_FAILED, errno, "cannot create a socket: %s", strerror(errno));
                        return;
                }
                set_nodelay(c->peer_fd);
                snprintf(c->peer_desc, sizeof(c->peer_desc), "%s", t->config->peer);
                log_info("Stream %u: QEMU connected; connecting to %s.", c->index, c->peer_desc);
                if (connect(c->peer_fd, (struct sockaddr *) &t->peer_addr, t->peer_addr_len) < 0) {
                        if (errno != EINPROGRESS) {
                                peer_fail(t, c, errno, "connecting to the peer %s failed: %s", c->peer_desc, strerror(errno));
                                return;
                        }
                        c->state = CONN_CONNECTING;
                } else {
                        c->state = CONN_SEND_PREAMBLE;
                        source_send_preamble(t, c);
                }
        }
}

static Conn *oldest_unclaimed(Transport *t, unsigned *ret_count) {
        Conn *oldest = NULL;
        unsigned n = 0;

        for (size_t i = 0; i < CONNS_MAX; i++) {
                Conn *c = t->conns[i];
                if (!c || c->claimed)
                        continue;
                n++;
                if (!oldest || c->deadline < oldest->deadline)
                        oldest = c;
        }
        *ret_count = n;
        return oldest;
}

static void destination_accept(Transport *t) {
        for (;;) {
                _cleanup_close_ int fd = -EBADF;
                unsigned pending;
                Conn *c, *oldest;
                int r;

                fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* Transient; the unclaimed connections time out and free fds. */
                                log_warning_errno(errno, "Accepting on the peer port failed, ignoring: %m");
                                return;
                        }
                        transport_fail(t, EXIT_TRANSPORT_FAILED, errno, "accepting on the peer port failed: %s", strerror(errno));
                        return;
                }
                /* Unclaimed connections are bounded: the oldest makes room, so a flood of idle
                 * connections delays the real streams by at most the handshake timeout. */
                oldest = oldest_unclaimed(t, &pending);
                if (pending >= PENDING_MAX && oldest)
                        conn_refuse(t, oldest, "too many unidentified connections, dropped the oldest");
                r = conn_new(t, &c);
                if (r < 0) {
                        log_warning("Refused a connection on the peer port: no room.");
                        t->refused++;
                        continue;
                }
                c->peer_fd = TAKE_FD(fd);
                c->state = CONN_RECV_PREAMBLE;
                c->deadline = now_usec() + (uint64_t) t->config->handshake_timeout_sec * 1000000ULL;
                describe_peer(c->peer_fd, c->peer_desc, sizeof(c->peer_desc));
                set_nodelay(c->peer_fd);
        }
}

static void destination_check_preamble(Transport *t, Conn *c);

/* The dispatcher that owns the shared peer port read the preamble, found our token and hands
 * us the connection: one datagram carrying the preamble it read and the connection's fd. */
static void destination_receive_dispatched(Transport *t) {
        for (;;) {
                char preamble[PREAMBLE_SIZE + 1];
                union {
                        struct cmsghdr h;
                        uint8_t buf[CMSG_SPACE(sizeof(int) * 4)];
                } control;
                struct iovec iov = { .iov_base = preamble, .iov_len = sizeof(preamble) };
                struct msghdr mh = {
                        .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = &control, .msg_controllen = sizeof(control),
                };
                int fds[4], n_fds = 0;
                unsigned pending;
                Conn *c, *oldest;
                ssize_t n;
                int r;

                n = recvmsg(t->listen_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        transport_fail(t, EXIT_TRANSPORT_FAILED, errno, "receiving from the dispatch socket failed: %s", strerror(errno));
                        return;
                }
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
                        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                                size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                                for (size_t i = 0; i < k; i++) {
                                        int fd;
                                        memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                                        if (n_fds < (int) ELEMENTSOF(fds))
                                                fds[n_fds++] = fd;
                                        else
                                                safe_close(fd);
                                }
                        }
                if (n != PREAMBLE_SIZE || n_fds != 1 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                        log_warning("Refused a malformed message on the dispatch socket (%zi bytes, %i fds).", n, n_fds);
                        for (int i = 0; i < n_fds; i++)
                                safe_close(fds[i]);
                        t->refused++;
                        continue;
                }

                oldest = oldest_unclaimed(t, &pending);
                if (pending >= PENDING_MAX && oldest)
                        conn_refuse(t, oldest, "too many unidentified connections, dropped the oldest");
                r = conn_new(t, &c);
                if (r < 0) {
                        safe_close(fds[0]);
                        t->refused++;
                        continue;
                }
                c->peer_fd = fds[0];
                (void) fcntl(c->peer_fd, F_SETFL, O_NONBLOCK);
                set_nodelay(c->peer_fd);
                describe_peer(c->peer_fd, c->peer_desc, sizeof(c->peer_desc));
                memcpy(c->preamble, preamble, PREAMBLE_SIZE);
                c->preamble_off = PREAMBLE_SIZE;
                c->state = CONN_RECV_PREAMBLE;
                c->deadline = now_usec() + (uint64_t) t->config->handshake_timeout_sec * 1000000ULL;
                destination_check_preamble(t, c);
        }
}

static void destination_recv_preamble(Transport *t, Conn *c) {
        ssize_t n;

        /* Never more than the preamble: what follows belongs to TLS. */
        n = recv(c->peer_fd, c->preamble + c->preamble_off, PREAMBLE_SIZE - c->preamble_off, 0);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return;
                conn_refuse(t, c, strerror(errno));
                return;
        }
        if (n == 0) {
                conn_refuse(t, c, "closed before a complete preamble");
                return;
        }
        c->preamble_off += (size_t) n;
        if (c->preamble_off < PREAMBLE_SIZE)
                return;
        destination_check_preamble(t, c);
}

static void destination_check_preamble(Transport *t, Conn *c) {
        Preamble p;

        if (preamble_parse(c->preamble, &p) < 0) {
                conn_refuse(t, c, "not a ferry-transport preamble");
                return;
        }
        if (!token_equal(p.token, t->config->token)) {
                conn_refuse(t, c, "unknown migration token");
                return;
        }

        /* From here on the connection speaks for our migration: its failures are ours. */
        c->claimed = true;
        c->index = p.index;
        for (size_t i = 0; i < CONNS_MAX; i++) {
                Conn *o = t->conns[i];
                if (o && o != c && o->claimed && o->index == c->index) {
                        peer_fail(t, c, EBADMSG, "the peer %s opened stream %u twice", c->peer_desc, c->index);
                        return;
                }
        }
        if (c->index < t->connected_upto) {
                peer_fail(t, c, EBADMSG, "the peer %s opened stream %u twice", c->peer_desc, c->index);
                return;
        }
        if (p.tls && t->config->plaintext) {
                peer_fail(t, c, EACCES, "the peer %s offers TLS but this side was set up for plaintext", c->peer_desc);
                return;
        }
        if (!p.tls && !t->config->plaintext) {
                peer_fail(t, c, EACCES, "the peer %s offers a plaintext stream but this side requires TLS", c->peer_desc);
                return;
        }
        log_info("Stream %u: arrived from %s.", c->index, c->peer_desc);
        conn_start_handshake(t, c);
        if (c->state == CONN_WAIT_TURN)
                destination_connect_turns(t);
}

static void conn_relay(Transport *t, Conn *c, bool out_ready, bool in_ready) {
        struct { RelayDirection *d; bool ready; } dirs[] = { { &c->out, out_ready }, { &c->in, in_ready } };
        int r, gnutls_error;

        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                RelayDirection *d = dirs[i].d;
                if (d->done || !(dirs[i].ready || d->ready))
                        continue;
                r = relay_step(d, c->local_fd, c->peer_fd, c->tls, &gnutls_error);
                if (r >= 0)
                        continue;
                if (strstr(d->error, "QEMU"))
                        transport_fail(t, EXIT_TRANSPORT_FAILED, -r, "stream %u: %s: %s", c->index, d->error, strerror(-r));
                else if (gnutls_error == GNUTLS_E_FATAL_ALERT_RECEIVED)
                        peer_fail(t, c, EACCES, "the peer %s refused this side (TLS alert: %s)", c->peer_desc,
                                  strna(gnutls_alert_get_name(gnutls_alert_get(c->tls))));
                else if (!d->error_is_errno)
                        peer_fail(t, c, -r, "%s (peer %s)", d->error, c->peer_desc);
                else if (gnutls_error < 0)
                        peer_fail(t, c, -r, "%s (peer %s): %s", d->error, c->peer_desc, gnutls_strerror(gnutls_error));
                else
                        peer_fail(t, c, -r, "%s (peer %s): %s", d->error, c->peer_desc, strerror(-r));
                return;
        }

        if (c->out.done && c->in.done) {
                log_info("Stream %u: ended, %" PRIu64 " bytes sent, %" PRIu64 " bytes received.",
                         c->index, c->out.bytes, c->in.bytes);
                t->sent_done += c->out.bytes;
                t->received_done += c->in.bytes;
                t->streams_done++;
                if (c->index == 0)
                        t->stream0_done = true;
                conn_remove(t, c);
        }
}

static void transport_check_done(Transport *t) {
        unsigned active;
        uint64_t sent, received;

        if (t->finished || !t->stream0_done)
                return;
        /* The main stream ending means QEMU finished (or gave up) the migration; multifd
         * channels end around it. Done once no claimed stream is left. */
        transport_stats(t, &active, &sent, &received);
        if (active > 0)
                return;
        notify_status("done: %u streams, %" PRIu64 " bytes sent, %" PRIu64 " bytes received",
                      t->streams_done, sent, received);
        log_info("Migration %s: all %u streams ended.", strna(t->config->migration), t->streams_done);
        t->finished = true;
        t->exit_status = 0;
}

static void transport_progress(Transport *t, uint64_t now) {
        unsigned active;
        uint64_t sent, received;

        if (now < t->next_status)
                return;
        t->next_status = now + STATUS_INTERVAL_USEC;
        transport_stats(t, &active, &sent, &received);
        if (active == 0 || (sent == t->last_sent && received == t->last_received))
                return;
        t->last_sent = sent;
        t->last_received = received;
        notify_progress("relaying: %u streams, %" PRIu64 " bytes sent, %" PRIu64 " bytes received",
                      active, sent, received);
}

static void conn_timeouts(Transport *t, uint64_t now) {
        for (size_t i = 0; i < CONNS_MAX; i++) {
                Conn *c = t->conns[i];
                if (!c || c->deadline == 0 || c->deadline > now)
                        continue;
                if (t->config->role == ROLE_DESTINATION && !c->claimed)
                        conn_refuse(t, c, "no preamble in time");
                else if (c->state != CONN_WAIT_TURN)
                        peer_fail(t, c, ETIMEDOUT, "no connection to the peer %s within %u s", c->peer_desc,
                                  t->config->handshake_timeout_sec);
                else
                        peer_fail(t, c, ETIMEDOUT, "the streams before it did not arrive within %u s",
                                  t->config->handshake_timeout_sec);
        }
}

typedef struct PollRef {
        Conn *conn;
        int what;  /* 0: connection setup, 1: out, 2: in */
} PollRef;

static int transport_loop(Transport *t) {
        struct pollfd fds[2 + 2 * CONNS_MAX];
        PollRef refs[2 + 2 * CONNS_MAX];

        while (!t->finished) {
                uint64_t now = now_usec(), next = now + STATUS_INTERVAL_USEC;
                bool immediate = false;
                size_t n = 0;
                int timeout_ms, r;

                fds[n] = (struct pollfd) { .fd = t->signal_fd, .events = POLLIN };
                refs[n++] = (PollRef) {};
                fds[n] = (struct pollfd) { .fd = t->listen_fd, .events = POLLIN };
                refs[n++] = (PollRef) {};

                for (size_t i = 0; i < CONNS_MAX; i++) {
                        Conn *c = t->conns[i];
                        short events = 0;

                        if (!c)
                                continue;
                        if (c->deadline != 0 && c->deadline < next)
                                next = c->deadline;
                        switch (c->state) {
                        case CONN_CONNECTING:
                        case CONN_SEND_PREAMBLE:
                                events = POLLOUT;
                                break;
                        case CONN_RECV_PREAMBLE:
                                events = POLLIN;
                                break;
                        case CONN_HANDSHAKE:
                                events = c->handshake_events;
                                break;
                        case CONN_WAIT_TURN:
                                break;
                        case CONN_RELAY:
                                for (int w = 1; w <= 2; w++) {
                                        RelayDirection *d = w == 1 ? &c->out : &c->in;
                                        if (d->done)
                                                continue;
                                        if (d->ready) {
                                                immediate = true;
                                                continue;
                                        }
                                        fds[n] = (struct pollfd) { .fd = d->wait_fd, .events = d->wait_events };
                                        refs[n++] = (PollRef) { .conn = c, .what = w };
                                }
                                continue;
                        }
                        if (events) {
                                fds[n] = (struct pollfd) { .fd = c->peer_fd, .events = events };
                                refs[n++] = (PollRef) { .conn = c, .what = 0 };
                        }
                }

                timeout_ms = immediate ? 0 : (int) ((next > now ? next - now : 0) + 999) / 1000;
                r = poll(fds, n, timeout_ms);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        transport_fail(t, EXIT_TRANSPORT_FAILED, errno, "poll() failed: %s", strerror(errno));
                        break;
                }

                if (fds[0].revents) {
                        struct signalfd_siginfo si;
                        if (read(t->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                                log_info("Received signal %u, stopping.", si.ssi_signo);
                                notify_status("canceled: stopped by signal %u", si.ssi_signo);
                                t->finished = true;
                                t->exit_status = EXIT_TRANSPORT_CANCELED;
                                break;
                        }
                }
                if (fds[1].revents) {
                        if (t->config->role == ROLE_SOURCE)
                                source_accept(t);
                        else if (t->config->dispatch_socket)
                                destination_receive_dispatched(t);
                        else
                                destination_accept(t);
                }

                /* Handle each connection once, with what its entries reported. A connection
                 * freed on the way is skipped: later entries are matched against the table. */
                for (size_t i = 0; i < CONNS_MAX && !t->finished; i++) {
                        Conn *c = t->conns[i];
                        bool setup = false, out = false, in = false;

                        if (!c)
                                continue;
                        for (size_t k = 2; k < n; k++) {
                                if (refs[k].conn != c || !fds[k].revents)
                                        continue;
                                if (refs[k].what == 0)
                                        setup = true;
                                else if (refs[k].what == 1)
                                        out = true;
                                else
                                        in = true;
                        }
                        switch (c->state) {
                        case CONN_CONNECTING:
                                if (setup)
                                        source_connected(t, c);
                                break;
                        case CONN_SEND_PREAMBLE:
                                if (setup)
                                        source_send_preamble(t, c);
                                break;
                        case CONN_RECV_PREAMBLE:
                                if (setup)
                                        destination_recv_preamble(t, c);
                                break;
                        case CONN_HANDSHAKE:
                                if (setup)
                                        conn_handshake(t, c);
                                break;
                        case CONN_WAIT_TURN:
                                break;
                        case CONN_RELAY:
                                conn_relay(t, c, out, in);
                                break;
                        }
                }

                now = now_usec();
                if (!t->finished)
                        conn_timeouts(t, now);
                transport_check_done(t);
                if (!t->finished)
                        transport_progress(t, now);
        }
        return t->exit_status;
}

int transport_run(const TransportConfig *config) {
        Transport t = {
                .config = config,
                .listen_fd = -EBADF,
                .signal_fd = -EBADF,
        };
        _cleanup_free_ char *tls_error = NULL;
        char desc[INET6_ADDRSTRLEN + 16];
        sigset_t mask;
        int r;

        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        t.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (t.signal_fd < 0) {
                transport_fail(&t, EXIT_TRANSPORT_FAILED, errno, "signalfd() failed: %s", strerror(errno));
                return t.exit_status;
        }

        if (!config->plaintext) {
                r = tls_config_new(config->role == ROLE_DESTINATION, config->pki_dir, config->peer_name,
                                   config->allowed_dn, &t.tls, &tls_error);
                if (r < 0) {
                        transport_fail(&t, EXIT_TRANSPORT_CONFIG, -r, "TLS credentials: %s", tls_error ?: strerror(-r));
                        goto finish;
                }
        }

        if (config->role == ROLE_SOURCE) {
                r = resolve_address(config->peer, false, &t.peer_addr, &t.peer_addr_len);
                if (r < 0) {
                        transport_fail(&t, EXIT_TRANSPORT_PEER, -r, "cannot resolve the peer address %s: %s",
                                       config->peer, strerror(-r));
                        goto finish;
                }
                r = listen_qemu_socket(config->qemu_socket, config->socket_context, &t.listen_fd);
                if (r < 0) {
                        transport_fail(&t, EXIT_TRANSPORT_FAILED, -r, "cannot create QEMU's socket %s: %s",
                                       config->qemu_socket, strerror(-r));
                        goto finish;
                }
                snprintf(desc, sizeof(desc), "%s", config->qemu_socket);
        } else {
                r = listen_peer(config->listen, config->dispatch_socket, config->dispatch_group, &t.listen_fd, desc,
                                sizeof(desc));
                if (r < 0) {
                        transport_fail(&t, EXIT_TRANSPORT_CONFIG, -r, "cannot listen on %s: %s",
                                       config->dispatch_socket ?: config->listen ?: "the inherited socket", strerror(-r));
                        goto finish;
                }
        }
        log_info("Migration %s, %s side: listening on %s (%s).", strna(config->migration), role_name(config),
                 desc, config->plaintext ? "plaintext" : "TLS 1.3");
        notify_ready("listening: %s", desc);

        (void) transport_loop(&t);

finish:
        for (size_t i = 0; i < CONNS_MAX; i++)
                t.conns[i] = conn_free(t.conns[i]);
        if (config->role == ROLE_SOURCE && t.listen_fd >= 0)
                (void) unlink(config->qemu_socket);
        if (config->dispatch_socket && t.listen_fd >= 0)
                (void) unlink(config->dispatch_socket);
        safe_close(t.listen_fd);
        safe_close(t.signal_fd);
        tls_config_free(t.tls);
        notify_close();
        if (t.refused > 0)
                log_info("Refused %u connections that did not belong to this migration.", t.refused);
        return t.exit_status;
}
