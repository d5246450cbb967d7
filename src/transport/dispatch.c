/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "macro.h"
#include "notify.h"
#include "preamble.h"
#include "sockets.h"

/* How long SIGTERM'd bus children get before SIGKILL (systemd's own stop timeout is longer). */
#define STOP_TIMEOUT_USEC (10ULL * 1000000ULL)
/* Accepts per turn and listening socket, so a flood cannot starve the connections we have. */
#define ACCEPT_BURST 64

typedef struct Pending {
        int fd;                     /* -EBADF: a free slot */
        uint64_t accepted;          /* for "the oldest goes" */
        uint64_t deadline;
        size_t off;
        char buf[PREAMBLE_SIZE];
        char peer[INET6_ADDRSTRLEN + 16];
        /* A stream whose helper's queue was full: a datagram socket connected to that helper,
         * which poll() reports writable once the helper has room. */
        int helper_fd;
} Pending;

typedef struct Dispatch {
        const DispatchConfig *config;
        int listen_fd;
        int signal_fd;
        int send_fd;                /* unbound datagram socket: hands connections to helpers */
        Pending pending[DISPATCH_PENDING_MAX];
        unsigned n_pending;
        pid_t children[DISPATCH_BUS_CHILDREN_MAX];
        unsigned n_children;
        uint64_t idle_since;        /* 0: busy */
        bool stopping, killed;
        uint64_t stop_deadline;
        uint64_t handed, bus, dropped;
        bool status_dirty;
        uint64_t status_due;
} Dispatch;

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

bool dispatch_socket_path(const char *dir, const char *token, char *buf, unsigned size) {
        struct sockaddr_un sa;
        int n;

        if (size > sizeof(sa.sun_path))
                size = sizeof(sa.sun_path);
        n = snprintf(buf, size, "%s/" DISPATCH_SOCKET_PREFIX "%s.sock", dir, token);
        return n > 0 && (unsigned) n < size;
}

/* The first digits name the migration in the log without handing out its whole token. */
#define TOKEN_LOG_LEN 8

static void pending_drop(Dispatch *d, Pending *p, int level, const char *why) {
        if (p->fd < 0)
                return;
        log_full(level, "Dropped a connection from %s: %s.", p->peer, why);
        p->fd = safe_close(p->fd);
        p->helper_fd = safe_close(p->helper_fd);
        d->n_pending--;
        d->dropped++;
        d->status_dirty = true;
}

/* The connection went where it belongs: our copy goes, without counting it as dropped. */
static void pending_done(Dispatch *d, Pending *p) {
        p->fd = safe_close(p->fd);
        p->helper_fd = safe_close(p->helper_fd);
        d->n_pending--;
        d->status_dirty = true;
}

/* One datagram: the preamble and the connection's fd; to sa, or on the connected helper_fd. */
static int send_connection(int s, const struct sockaddr_un *sa, Pending *p) {
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = p->buf, .iov_len = PREAMBLE_SIZE };
        struct msghdr mh = {
                .msg_name = (void *) sa, .msg_namelen = sa ? sizeof(*sa) : 0,
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = &control, .msg_controllen = sizeof(control),
        };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &p->fd, sizeof(int));
        /* Never blocks: a helper that does not read must not stall the port. */
        return sendmsg(s, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static int connect_helper(const struct sockaddr_un *sa, int *ret) {
        int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (s < 0)
                return -errno;
        if (connect(s, (const struct sockaddr *) sa, sizeof(*sa)) < 0) {
                int r = -errno;
                safe_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

/* A transport stream: to its destination helper, preamble and fd in one datagram. The helper
 * checks the preamble again; we only route. Called again when a full helper queue has room. */
static void hand_over(Dispatch *d, Pending *p) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Preamble pre;
        char why[256];
        int r;

        if (preamble_parse(p->buf, &pre) < 0) {
                pending_drop(d, p, LOG_INFO, "malformed FERRY-TRANSPORT/1 preamble");
                return;
        }
        if (!dispatch_socket_path(d->config->dispatch_dir, pre.token, sa.sun_path, sizeof(sa.sun_path))) {
                pending_drop(d, p, LOG_WARNING, "the dispatch socket's path is too long");
                return;
        }
        if (p->helper_fd >= 0)
                r = send_connection(p->helper_fd, NULL, p);
        else {
                r = send_connection(d->send_fd, &sa, p);
                /* The helper's queue holds net.unix.max_dgram_qlen datagrams (10 by default):
                 * a migration with many multifd channels may fill it before the helper reads. */
                if (r == -EAGAIN) {
                        r = connect_helper(&sa, &p->helper_fd);
                        if (r == 0)
                                r = send_connection(p->helper_fd, NULL, p);
                }
        }
        if (r == -EAGAIN) {
                log_debug("Stream %u of token %.*s... waits for room in %s.", pre.index, TOKEN_LOG_LEN, pre.token,
                          sa.sun_path);
                return;
        }
        if (r < 0) {
                if (r == -ENOENT || r == -ECONNREFUSED)
                        snprintf(why, sizeof(why), "no migration waits for token %.*s... (stream %u)", TOKEN_LOG_LEN,
                                 pre.token, pre.index);
                else
                        snprintf(why, sizeof(why), "handing stream %u of token %.*s... to %s failed: %s", pre.index,
                                 TOKEN_LOG_LEN, pre.token, sa.sun_path, strerror(-r));
                pending_drop(d, p, r == -ENOENT || r == -ECONNREFUSED ? LOG_INFO : LOG_WARNING, why);
                return;
        }
        log_debug("Handed stream %u of token %.*s... from %s to %s.", pre.index, TOKEN_LOG_LEN, pre.token, p->peer,
                  sa.sun_path);
        pending_done(d, p);
        d->handed++;
}

/* A D-Bus peer connection: its own process, the connection as fd 0 and 1, TLS and all the
 * rest are its business. */
static void spawn_bus_serve(Dispatch *d, Pending *p) {
        int fd = p->fd;
        pid_t pid;

        if (d->n_children >= DISPATCH_BUS_CHILDREN_MAX) {
                char why[96];
                snprintf(why, sizeof(why), "too many D-Bus peer connections at once (%u), refused",
                         DISPATCH_BUS_CHILDREN_MAX);
                pending_drop(d, p, LOG_WARNING, why);
                return;
        }
        pid = fork();
        if (pid < 0) {
                char why[128];
                snprintf(why, sizeof(why), "fork() failed: %s", strerror(errno));
                pending_drop(d, p, LOG_WARNING, why);
                return;
        }
        if (pid == 0) {
                /* The child: only async-signal-safe calls until exec. */
                const char *argv[] = { d->config->bus_serve, "--bus-serve", NULL };
                sigset_t none;
                int c;

                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) signal(SIGPIPE, SIG_DFL);
                /* Above 1 first, so both dup2()s make fresh fds without O_CLOEXEC. */
                c = fcntl(fd, F_DUPFD, 3);
                if (c < 0 || fcntl(c, F_SETFL, 0) < 0 || dup2(c, 0) < 0 || dup2(c, 1) < 0)
                        _exit(127);
                (void) close(c);
                execv(argv[0], (char **) argv);
                _exit(127);
        }
        for (size_t i = 0; i < DISPATCH_BUS_CHILDREN_MAX; i++)
                if (d->children[i] == 0) {
                        d->children[i] = pid;
                        break;
                }
        d->n_children++;
        d->bus++;
        log_info("D-Bus peer connection from %s: started %s --bus-serve (PID %i).", p->peer, d->config->bus_serve,
                 (int) pid);
        pending_done(d, p);
}

static bool is_prefix_of(const char *buf, size_t n, const char *s) {
        size_t m = strlen(s);
        return memcmp(buf, s, n < m ? n : m) == 0;
}

/* Reads no more than the preamble can be: first the 13 bytes of the shorter one, then, for a
 * transport preamble, the rest of its 58. */
static void pending_read(Dispatch *d, Pending *p) {
        size_t want = p->off < PEER_PREAMBLE_SIZE ? PEER_PREAMBLE_SIZE : PREAMBLE_SIZE;
        ssize_t n;

        n = recv(p->fd, p->buf + p->off, want - p->off, MSG_DONTWAIT);
        if (n < 0) {
                char why[128];
                if (errno == EAGAIN || errno == EINTR)
                        return;
                snprintf(why, sizeof(why), "%s", strerror(errno));
                pending_drop(d, p, LOG_DEBUG, why);
                return;
        }
        if (n == 0) {
                pending_drop(d, p, LOG_DEBUG, "closed before a complete preamble");
                return;
        }
        p->off += (size_t) n;
        if (!is_prefix_of(p->buf, p->off, PEER_PREAMBLE) && !is_prefix_of(p->buf, p->off, PREAMBLE_MAGIC)) {
                pending_drop(d, p, LOG_INFO, "not a Ferry preamble");
                return;
        }
        if (p->off == PEER_PREAMBLE_SIZE && memcmp(p->buf, PEER_PREAMBLE, PEER_PREAMBLE_SIZE) == 0)
                spawn_bus_serve(d, p);
        else if (p->off == PREAMBLE_SIZE)
                hand_over(d, p);
}

static Pending *pending_free_slot(Dispatch *d) {
        Pending *oldest = NULL;
        char why[96];

        for (size_t i = 0; i < DISPATCH_PENDING_MAX; i++) {
                Pending *p = &d->pending[i];
                if (p->fd < 0)
                        return p;
                if (!oldest || p->accepted < oldest->accepted)
                        oldest = p;
        }
        /* Full: a flood of idle connections delays a real one by at most the handshake timeout. */
        snprintf(why, sizeof(why), "too many unidentified connections (%u), dropped the oldest", DISPATCH_PENDING_MAX);
        pending_drop(d, oldest, LOG_INFO, why);
        return oldest;
}

static void accept_connections(Dispatch *d) {
        for (unsigned k = 0; k < ACCEPT_BURST; k++) {
                Pending *p;
                int fd;

                fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning("accept() on the peer port failed: %s", strerror(errno));
                        return;
                }
                p = pending_free_slot(d);
                *p = (Pending) { .fd = fd, .helper_fd = -EBADF, .accepted = now_usec() };
                p->deadline = p->accepted + (uint64_t) d->config->handshake_timeout_sec * 1000000ULL;
                describe_peer(fd, p->peer, sizeof(p->peer));
                d->n_pending++;
        }
}

static void child_forget(Dispatch *d, pid_t pid) {
        for (size_t i = 0; i < DISPATCH_BUS_CHILDREN_MAX; i++)
                if (d->children[i] == pid) {
                        d->children[i] = 0;
                        d->n_children--;
                        d->status_dirty = true;
                        return;
                }
}

static void reap_children(Dispatch *d) {
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);

                if (pid <= 0)
                        return;
                child_forget(d, pid);
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                        log_debug("The D-Bus peer connection of PID %i ended.", (int) pid);
                else if (WIFEXITED(status))
                        log_info("The D-Bus peer connection of PID %i ended with exit status %i.", (int) pid,
                                 WEXITSTATUS(status));
                else
                        log_info("The D-Bus peer connection of PID %i was killed by signal %i.", (int) pid,
                                 WTERMSIG(status));
        }
}

static void signal_children(Dispatch *d, int sig) {
        for (size_t i = 0; i < DISPATCH_BUS_CHILDREN_MAX; i++)
                if (d->children[i] > 0)
                        (void) kill(d->children[i], sig);
}

static void begin_stop(Dispatch *d, unsigned sig) {
        log_info("Received signal %u, stopping%s.", sig, d->n_children > 0 ? " the D-Bus peer connections" : "");
        d->stopping = true;
        d->stop_deadline = now_usec() + STOP_TIMEOUT_USEC;
        /* systemd keeps its own copy of the port: connections wait in its backlog for the next
         * start. */
        d->listen_fd = safe_close(d->listen_fd);
        for (size_t i = 0; i < DISPATCH_PENDING_MAX; i++)
                pending_drop(d, &d->pending[i], LOG_DEBUG, "stopping");
        signal_children(d, SIGTERM);
}

static void update_status(Dispatch *d, uint64_t now) {
        if (!d->status_dirty || now < d->status_due)
                return;
        d->status_dirty = false;
        d->status_due = now + 1000000ULL;
        notify_progress("serving: %" PRIu64 " streams handed over, %" PRIu64 " D-Bus peers (%u now), %" PRIu64
                        " connections dropped", d->handed, d->bus, d->n_children, d->dropped);
}

static int dispatch_loop(Dispatch *d) {
        const uint64_t idle_usec = (uint64_t) d->config->idle_timeout_sec * 1000000ULL;

        for (;;) {
                struct pollfd fds[2 + DISPATCH_PENDING_MAX];
                Pending *refs[2 + DISPATCH_PENDING_MAX];
                uint64_t now = now_usec(), next = UINT64_MAX;
                size_t n = 0;
                int r;

                if (d->stopping) {
                        if (d->n_children == 0)
                                return 0;
                        if (now >= d->stop_deadline && !d->killed) {
                                log_warning("%u D-Bus peer connections did not end in time, killing them.",
                                            d->n_children);
                                signal_children(d, SIGKILL);
                                d->killed = true;
                        }
                        if (!d->killed)
                                next = d->stop_deadline;
                } else if (d->n_pending == 0 && d->n_children == 0) {
                        if (d->idle_since == 0)
                                d->idle_since = now;
                        if (idle_usec > 0 && now - d->idle_since >= idle_usec) {
                                log_info("No connection for %u s, exiting (systemd keeps the port).",
                                         d->config->idle_timeout_sec);
                                notify_status("idle: exiting after %u s without connections",
                                              d->config->idle_timeout_sec);
                                return 0;
                        }
                        if (idle_usec > 0)
                                next = d->idle_since + idle_usec;
                } else
                        d->idle_since = 0;
                if (d->status_dirty && d->status_due < next)
                        next = d->status_due;

                fds[n] = (struct pollfd) { .fd = d->signal_fd, .events = POLLIN };
                refs[n++] = NULL;
                if (d->listen_fd >= 0) {
                        fds[n] = (struct pollfd) { .fd = d->listen_fd, .events = POLLIN };
                        refs[n++] = NULL;
                }
                for (size_t i = 0; i < DISPATCH_PENDING_MAX; i++) {
                        Pending *p = &d->pending[i];
                        if (p->fd < 0)
                                continue;
                        if (p->deadline < next)
                                next = p->deadline;
                        /* Its preamble is read: only its helper's room is awaited. */
                        if (p->helper_fd >= 0)
                                fds[n] = (struct pollfd) { .fd = p->helper_fd, .events = POLLOUT };
                        else
                                fds[n] = (struct pollfd) { .fd = p->fd, .events = POLLIN };
                        refs[n++] = p;
                }

                r = poll(fds, n, next == UINT64_MAX ? -1 : (int) (((next > now ? next - now : 0) + 999) / 1000));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        log_error("poll() failed: %s", strerror(errno));
                        return EXIT_DISPATCH_FAILED;
                }

                if (fds[0].revents) {
                        struct signalfd_siginfo si;
                        while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                                if (si.ssi_signo == SIGCHLD)
                                        reap_children(d);
                                else if (!d->stopping)
                                        begin_stop(d, si.ssi_signo);
                        }
                }
                /* Connections first, then new ones: a slot freed now is there for the next. */
                for (size_t k = 1; k < n; k++) {
                        if (!refs[k] || refs[k]->fd < 0 || !fds[k].revents)
                                continue;
                        if (refs[k]->helper_fd >= 0)
                                hand_over(d, refs[k]);
                        else
                                pending_read(d, refs[k]);
                }
                if (n > 1 && !refs[1] && d->listen_fd >= 0 && fds[1].revents)
                        accept_connections(d);

                now = now_usec();
                for (size_t i = 0; i < DISPATCH_PENDING_MAX; i++) {
                        Pending *p = &d->pending[i];
                        if (p->fd >= 0 && p->deadline <= now) {
                                char why[96];
                                snprintf(why, sizeof(why), "no complete preamble within %u s",
                                         d->config->handshake_timeout_sec);
                                pending_drop(d, p, LOG_INFO, why);
                        }
                }
                update_status(d, now);
        }
}

int dispatch_run(const DispatchConfig *config) {
        Dispatch d = {
                .config = config,
                .listen_fd = -EBADF,
                .signal_fd = -EBADF,
                .send_fd = -EBADF,
        };
        char desc[INET6_ADDRSTRLEN + 16];
        sigset_t mask;
        int r, status = EXIT_DISPATCH_FAILED;

        for (size_t i = 0; i < DISPATCH_PENDING_MAX; i++)
                d.pending[i].fd = d.pending[i].helper_fd = -EBADF;
        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        d.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (d.signal_fd < 0) {
                log_error("signalfd() failed: %s", strerror(errno));
                notify_failed(errno, "signalfd() failed: %s", strerror(errno));
                goto finish;
        }
        d.send_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (d.send_fd < 0) {
                log_error("socket(AF_UNIX) failed: %s", strerror(errno));
                notify_failed(errno, "socket(AF_UNIX) failed: %s", strerror(errno));
                goto finish;
        }
        r = listen_peer(config->listen, NULL, NULL, &d.listen_fd, desc, sizeof(desc));
        if (r < 0) {
                const char *what = config->listen ?: "the socket from systemd (exactly one, LISTEN_FDS)";
                log_error("Cannot listen on %s: %s", what, strerror(-r));
                notify_failed(-r, "cannot listen on %s: %s", what, strerror(-r));
                status = EXIT_DISPATCH_CONFIG;
                goto finish;
        }
        log_info("Listening on %s; dispatch sockets in %s.", desc, config->dispatch_dir);
        notify_ready("listening: %s", desc);
        status = dispatch_loop(&d);

finish:
        for (size_t i = 0; i < DISPATCH_PENDING_MAX; i++) {
                d.pending[i].fd = safe_close(d.pending[i].fd);
                d.pending[i].helper_fd = safe_close(d.pending[i].helper_fd);
        }
        safe_close(d.listen_fd);
        safe_close(d.send_fd);
        safe_close(d.signal_fd);
        notify_close();
        if (d.handed + d.bus + d.dropped > 0)
                log_info("Handed over %" PRIu64 " streams, served %" PRIu64 " D-Bus peers, dropped %" PRIu64
                         " connections.", d.handed, d.bus, d.dropped);
        return status;
}
