/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus-relay.h"
#include "log.h"
#include "macro.h"
#include "relay.h"
#include "sockets.h"
#include "tls.h"
#include "transport.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(TlsConfig *, tls_config_free);

#define BRIDGE_EXIT_MSEC 5000

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static int set_nonblock(int fd) {
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

static int failf(char **ret_error, int status, const char *fmt, ...) _printf_(3, 4);
static int failf(char **ret_error, int status, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return status;
}

/* Waits for fd until the deadline; -ETIMEDOUT when it passed. */
static int wait_until(int fd, short events, uint64_t deadline) {
        for (;;) {
                uint64_t now = now_usec();
                struct pollfd p = { .fd = fd, .events = events };
                int r;

                if (now >= deadline)
                        return -ETIMEDOUT;
                r = poll(&p, 1, (int) ((deadline - now + 999) / 1000));
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0)
                        return 0;
        }
}

/* SIGTERM and SIGINT as a file descriptor for the poll loop; blocked, so the bridge must
 * unblock them. */
static int signals_open(void) {
        sigset_t mask;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        return fd < 0 ? -errno : fd;
}

/* Returns 0 or an exit status with *ret_error. */
static int handshake(TlsConfig *c, gnutls_session_t s, int in, int out, uint64_t deadline,
                     unsigned timeout_sec, char **ret_error) {
        for (;;) {
                short events = 0;
                int r;

                r = tls_handshake_step(c, s, &events, ret_error);
                if (r > 0)
                        return 0;
                if (r == -EACCES)
                        return EXIT_TRANSPORT_REFUSED;
                if (r < 0)
                        return EXIT_TRANSPORT_PEER;
                r = wait_until(events == POLLIN ? in : out, events, deadline);
                if (r == -ETIMEDOUT)
                        return failf(ret_error, EXIT_TRANSPORT_PEER,
                                     "the TLS handshake did not finish within %u s", timeout_sec);
                if (r < 0)
                        return failf(ret_error, EXIT_TRANSPORT_FAILED, "poll() failed: %s", strerror(-r));
        }
}

static int direction_failed(RelayDirection *d, int r, gnutls_session_t s, int gnutls_error, char **ret_error) {
        if (d->error_local)
                return failf(ret_error, EXIT_TRANSPORT_FAILED, "the local D-Bus connection: %s",
                             strerror(-r));
        /* In TLS 1.3 the client's handshake ends before the server checked its certificate:
         * a refused client learns it from the alert that comes instead of the first record. */
        if (gnutls_error == GNUTLS_E_FATAL_ALERT_RECEIVED)
                return failf(ret_error, EXIT_TRANSPORT_REFUSED, "the peer refused this side (TLS alert: %s)",
                             strna(gnutls_alert_get_name(gnutls_alert_get(s))));
        if (!d->error_is_errno)
                return failf(ret_error, EXIT_TRANSPORT_PEER, "%s", d->error);
        if (gnutls_error < 0)
                return failf(ret_error, EXIT_TRANSPORT_PEER, "%s: %s", d->error, gnutls_strerror(gnutls_error));
        return failf(ret_error, EXIT_TRANSPORT_PEER, "%s: %s", d->error, strerror(-r));
}

/* Stopped by a signal: sd-bus sends SIGTERM to its unixexec: child when it closes the
 * connection, the dispatcher may stop us. The peer gets a close_notify if it can be sent
 * within a second (not in the middle of a record), so it sees a clean end. */
static void say_goodbye(RelayDirection *up, gnutls_session_t s, int peer_out) {
        uint64_t deadline = now_usec() + 1000000ULL;

        if (up->done || up->buffer_off < up->buffer_len)
                return;
        for (;;) {
                int r = gnutls_bye(s, GNUTLS_SHUT_WR);
                if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
                        return;
                if (wait_until(peer_out, POLLOUT, deadline) < 0)
                        return;
        }
}

int bus_relay(int local_in, int local_out, int peer_in, int peer_out, int signal_fd, gnutls_session_t s,
              char **ret_error) {
        RelayDirection up, down;   /* up: local -> peer; down: peer -> local */
        int status = EXIT_TRANSPORT_FAILED, r;

        r = relay_direction_init(&up, true, true);
        if (r < 0)
                return failf(ret_error, EXIT_TRANSPORT_FAILED, "cannot set up the relay: %s", strerror(-r));
        r = relay_direction_init(&down, false, true);
        if (r < 0) {
                relay_direction_done(&up);
                return failf(ret_error, EXIT_TRANSPORT_FAILED, "cannot set up the relay: %s", strerror(-r));
        }

        for (;;) {
                struct pollfd fds[3] = { { .fd = signal_fd, .events = POLLIN } };
                unsigned n = 1;
                bool ready = false;
                int gnutls_error;

                r = relay_step(&up, local_in, peer_out, s, &gnutls_error);
                if (r < 0 && !up.error_local && (down.done || down.peer_eof) && (r == -EPIPE || r == -ECONNRESET)) {
                        /* The peer ended its direction (close_notify) and then its connection:
                         * D-Bus has no goodbye beyond that, so it is a clean end, not a break. */
                        up.done = true;
                        r = 1;
                }
                if (r < 0 && !up.error_local) {
                        /* Sending fails once the peer closed; the alert it sent first says why. */
                        int down_error;
                        int r2 = relay_step(&down, local_out, peer_in, s, &down_error);
                        if (r2 < 0 && down_error == GNUTLS_E_FATAL_ALERT_RECEIVED) {
                                status = direction_failed(&down, r2, s, down_error, ret_error);
                                break;
                        }
                }
                if (r < 0) {
                        status = direction_failed(&up, r, s, gnutls_error, ret_error);
                        break;
                }
                r = relay_step(&down, local_out, peer_in, s, &gnutls_error);
                if (r < 0 && down.error_local && up.local_eof && (r == -EPIPE || r == -ECONNRESET)) {
                        /* The local side closed its whole connection (a D-Bus client that is
                         * done does): what the peer still sends has nobody to go to. */
                        down.done = true;
                        r = 1;
                }
                if (r < 0) {
                        status = direction_failed(&down, r, s, gnutls_error, ret_error);
                        break;
                }
                if (up.done && down.done) {
                        status = 0;
                        break;
                }

                for (RelayDirection *d = &up; d; d = d == &up ? &down : NULL) {
                        if (d->done)
                                continue;
                        if (d->ready)
                                ready = true;
                        else if (d->wait_fd >= 0)
                                fds[n++] = (struct pollfd) { .fd = d->wait_fd, .events = d->wait_events };
                }
                if (poll(fds, n, ready ? 0 : -1) < 0 && errno != EINTR) {
                        status = failf(ret_error, EXIT_TRANSPORT_FAILED, "poll() failed: %s", strerror(errno));
                        break;
                }
                if (fds[0].revents & POLLIN) {
                        struct signalfd_siginfo si = {};
                        (void) read(signal_fd, &si, sizeof(si));
                        say_goodbye(&up, s, peer_out);
                        status = failf(ret_error, EXIT_TRANSPORT_CANCELED, "stopped by signal %u", si.ssi_signo);
                        break;
                }
        }

        relay_direction_done(&up);
        relay_direction_done(&down);
        return status;
}

/* ---- server ---- */

static int bridge_start(const char *bridge, const struct passwd *pw, int fd, pid_t *ret_pid) {
        pid_t pid = fork();

        if (pid < 0)
                return -errno;
        if (pid > 0) {
                *ret_pid = pid;
                return 0;
        }

        /* Child: the bridge's stdin and stdout are our end of the socketpair (dup2() clears
         * CLOEXEC on the copies); every other fd of ours is CLOEXEC. */
        if (dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0) {
                log_error_errno(errno, "Cannot set up the bridge's stdio: %m");
                _exit(EXIT_FAILURE);
        }
        signal(SIGPIPE, SIG_DFL);
        {
                sigset_t none;
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
        }
        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
                log_error_errno(errno, "Cannot become user %s: %m", pw->pw_name);
                _exit(EXIT_FAILURE);
        }
        /* Checked, not assumed: a bridge that kept root would give the remote host root's bus
         * identity, which polkit grants everything. */
        if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid || getgid() != pw->pw_gid ||
            getegid() != pw->pw_gid || setuid(0) == 0) {
                log_error("Dropping privileges to %s did not stick, refusing to run the bridge.", pw->pw_name);
                _exit(EXIT_FAILURE);
        }
        execl(bridge, bridge, (char *) NULL);
        log_error_errno(errno, "Cannot run the bus bridge %s: %m", bridge);
        _exit(EXIT_FAILURE);
}

/* After a clean end the bridge has read its end of file and is exiting: it gets a moment to
 * finish. Otherwise, or if it lingers, it must not outlive the connection it speaks for. */
static void bridge_stop(pid_t pid, bool clean) {
        int pidfd = (int) syscall(SYS_pidfd_open, pid, 0), ws;

        if (clean && pidfd >= 0) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                while (poll(&p, 1, BRIDGE_EXIT_MSEC) < 0 && errno == EINTR)
                        ;
        }
        safe_close(pidfd);
        if (waitpid(pid, &ws, WNOHANG) != pid) {
                (void) kill(pid, SIGTERM);
                while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
                        ;
        } else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                log_debug("The bus bridge ended with %s %i.", WIFEXITED(ws) ? "status" : "signal",
                          WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws));
}

int bus_serve(const BusServeConfig *config) {
        _cleanup_(tls_config_freep) TlsConfig *tls = NULL;
        _cleanup_free_ char *error = NULL, *dn = NULL;
        gnutls_session_t s = NULL;
        struct passwd *pw;
        char peer[INET6_ADDRSTRLEN + 16];
        int pair[2] = { -EBADF, -EBADF }, status, r;
        _cleanup_close_ int signal_fd = -EBADF;
        pid_t pid = 0;

        signal(SIGPIPE, SIG_IGN);
        describe_peer(STDIN_FILENO, peer, sizeof(peer));

        r = tls_config_new(true, config->pki_dir, NULL, config->allowed_dn, &tls, &error);
        if (r < 0) {
                log_error("Bus peer %s: %s", peer, error ?: strerror(-r));
                return EXIT_TRANSPORT_CONFIG;
        }
        errno = 0;
        pw = getpwnam(config->bridge_user);
        if (!pw) {
                log_error("Bus peer %s: the bridge user %s does not exist%s%s", peer, config->bridge_user,
                          errno ? ": " : "", errno ? strerror(errno) : "");
                return EXIT_TRANSPORT_CONFIG;
        }
        if (pw->pw_uid == 0 || pw->pw_gid == 0) {
                log_error("Bus peer %s: the bridge user %s has uid or gid 0, a remote host must never be root here",
                          peer, config->bridge_user);
                return EXIT_TRANSPORT_CONFIG;
        }
        /* fd 0 and 1 are the same connection; GnuTLS reads one and writes the other. */
        if (set_nonblock(STDIN_FILENO) < 0 || set_nonblock(STDOUT_FILENO) < 0) {
                log_error_errno(errno, "Bus peer %s: fd 0 and 1 must be the peer's connection: %m", peer);
                return EXIT_TRANSPORT_CONFIG;
        }

        r = tls_session_new(tls, STDIN_FILENO, &s);
        if (r < 0) {
                log_error("Bus peer %s: cannot set up a TLS session: %s", peer, strerror(-r));
                return EXIT_TRANSPORT_FAILED;
        }
        gnutls_transport_set_int2(s, STDIN_FILENO, STDOUT_FILENO);
        status = handshake(tls, s, STDIN_FILENO, STDOUT_FILENO,
                           now_usec() + (uint64_t) config->handshake_timeout_sec * 1000000ULL,
                           config->handshake_timeout_sec, &error);
        if (status != 0) {
                log_error("Bus peer %s %s%s", peer, status == EXIT_TRANSPORT_REFUSED ? "refused: " : "failed: ",
                          strna(error));
                goto finish;
        }
        (void) tls_peer_dn(s, &dn);
        log_info("Bus peer %s accepted with certificate \"%s\"; bridging it to the system bus as %s.",
                 peer, strna(dn), pw->pw_name);

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
                status = EXIT_TRANSPORT_FAILED;
                log_error_errno(errno, "Bus peer %s: socketpair() failed: %m", peer);
                goto finish;
        }
        r = bridge_start(config->bridge, pw, pair[1], &pid);
        pair[1] = safe_close(pair[1]);
        if (r < 0) {
                status = EXIT_TRANSPORT_FAILED;
                log_error_errno(r, "Bus peer %s: fork() failed: %m", peer);
                goto finish;
        }
        if (set_nonblock(pair[0]) < 0) {
                status = EXIT_TRANSPORT_FAILED;
                goto finish;
        }

        free(error);
        error = NULL;
        signal_fd = signals_open();
        if (signal_fd < 0) {
                status = EXIT_TRANSPORT_FAILED;
                log_error_errno(signal_fd, "Bus peer %s: cannot watch signals: %m", peer);
                goto finish;
        }
        status = bus_relay(pair[0], pair[0], STDIN_FILENO, STDOUT_FILENO, signal_fd, s, &error);
        if (status != 0)
                log_error("Bus peer %s: %s", peer, strna(error));
        else
                log_info("Bus peer %s: the connection ended.", peer);

finish:
        pair[0] = safe_close(pair[0]);
        if (pid > 0)
                bridge_stop(pid, status == 0);
        if (s)
                gnutls_deinit(s);
        return status;
}

/* ---- client ---- */

/* Connects and sends the preamble; desc gets the peer's address once connected (it cannot be
 * asked for after a reset). */
static int peer_connect(const BusConnectConfig *config, uint64_t deadline, int *ret_fd, char *desc, size_t desc_size,
                        char **ret_error) {
        struct sockaddr_storage sa;
        socklen_t len;
        size_t sent = 0;
        int fd, error = 0, r;

        r = resolve_address(config->peer, false, &sa, &len);
        if (r < 0)
                return failf(ret_error, EXIT_TRANSPORT_PEER, "cannot resolve the peer address %s: %s",
                             config->peer, strerror(-r));
        fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return failf(ret_error, EXIT_TRANSPORT_FAILED, "socket() failed: %s", strerror(errno));
        *ret_fd = fd;
        if (connect(fd, (struct sockaddr *) &sa, len) < 0 && errno != EINPROGRESS)
                error = errno;
        if (!error) {
                r = wait_until(fd, POLLOUT, deadline);
                if (r < 0)
                        error = -r;
                else {
                        socklen_t l = sizeof(error);
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &l) < 0)
                                error = errno;
                }
        }
        if (error)
                return failf(ret_error, EXIT_TRANSPORT_PEER, "connecting to the peer %s failed: %s",
                             config->peer, strerror(error));
        set_nodelay(fd);
        describe_peer(fd, desc, desc_size);

        while (sent < BUS_PEER_PREAMBLE_LEN) {
                ssize_t n = send(fd, &BUS_PEER_PREAMBLE[sent], BUS_PEER_PREAMBLE_LEN - sent, MSG_NOSIGNAL);
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                        r = wait_until(fd, POLLOUT, deadline);
                        if (r < 0)
                                return failf(ret_error, EXIT_TRANSPORT_PEER, "sending to the peer failed: %s",
                                             strerror(-r));
                        continue;
                }
                if (n < 0)
                        return failf(ret_error, EXIT_TRANSPORT_PEER, "sending to the peer failed: %s",
                                     strerror(errno));
                sent += (size_t) n;
        }
        return 0;
}

int bus_connect(const BusConnectConfig *config) {
        _cleanup_(tls_config_freep) TlsConfig *tls = NULL;
        _cleanup_free_ char *error = NULL, *host = NULL;
        _cleanup_close_ int fd = -EBADF, signal_fd = -EBADF;
        gnutls_session_t s = NULL;
        uint64_t deadline = now_usec() + (uint64_t) config->handshake_timeout_sec * 1000000ULL;
        unsigned port;
        char desc[INET6_ADDRSTRLEN + 16] = "";
        int status, r;

        signal(SIGPIPE, SIG_IGN);
        if (parse_host_port(config->peer, &host, &port) < 0) {
                log_error("invalid --bus-connect=%s (HOST[:PORT], [IPv6][:PORT])", config->peer);
                return EXIT_TRANSPORT_CONFIG;
        }
        r = tls_config_new(false, config->pki_dir, config->peer_name ?: host, NULL, &tls, &error);
        if (r < 0) {
                log_error("%s", error ?: strerror(-r));
                return EXIT_TRANSPORT_CONFIG;
        }
        if (set_nonblock(STDIN_FILENO) < 0 || set_nonblock(STDOUT_FILENO) < 0) {
                log_error_errno(errno, "fd 0 and 1 must be the local D-Bus connection: %m");
                return EXIT_TRANSPORT_CONFIG;
        }

        status = peer_connect(config, deadline, &fd, desc, sizeof(desc), &error);
        if (status != 0)
                goto finish;
        r = tls_session_new(tls, fd, &s);
        if (r < 0) {
                status = failf(&error, EXIT_TRANSPORT_FAILED, "cannot set up a TLS session: %s", strerror(-r));
                goto finish;
        }
        status = handshake(tls, s, fd, fd, deadline, config->handshake_timeout_sec, &error);
        if (status != 0)
                goto finish;
        log_debug("Connected to the bus peer %s over TLS.", config->peer);
        signal_fd = signals_open();
        if (signal_fd < 0) {
                status = failf(&error, EXIT_TRANSPORT_FAILED, "cannot watch signals: %s", strerror(-signal_fd));
                goto finish;
        }
        status = bus_relay(STDIN_FILENO, STDOUT_FILENO, fd, fd, signal_fd, s, &error);
        if (status == EXIT_TRANSPORT_CANCELED) {
                /* How sd-bus ends its unixexec: child when it closes the connection. */
                log_debug("%s; the peer got close_notify.", strna(error));
                status = 0;
        }

finish:
        if (status != 0) {
                if (desc[0])
                        log_error("%s (peer %s)", strna(error), desc);
                else
                        log_error("%s", strna(error));
        }
        if (s)
                gnutls_deinit(s);
        return status;
}
