/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "relay.h"

/* Rounds of work one step may do before giving the other streams a turn. */
#define STEP_BUDGET 16

int relay_direction_init(RelayDirection *d, bool to_peer, bool tls) {
        *d = (RelayDirection) {
                .to_peer = to_peer,
                .pipe = { -EBADF, -EBADF },
                .wait_fd = -EBADF,
        };
        if (tls) {
                d->buffer = malloc(RELAY_BUFFER_SIZE);
                return d->buffer ? 0 : -ENOMEM;
        }
        if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        /* A larger pipe means fewer, larger frames; the default 64 KiB still works. */
        (void) fcntl(d->pipe[1], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
        int sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
        d->pipe_size = sz > 0 ? (size_t) sz : 65536;
        return 0;
}

void relay_direction_done(RelayDirection *d) {
        d->pipe[0] = safe_close(d->pipe[0]);
        d->pipe[1] = safe_close(d->pipe[1]);
        d->buffer = mfree(d->buffer);
}

static int wait_for(RelayDirection *d, int fd, short events) {
        d->wait_fd = fd;
        d->wait_events = events;
        return 0;
}

static int fail(RelayDirection *d, int error, const char *what) {
        d->error = what;
        d->error_is_errno = true;
        return -abs(error);
}

/* A failure of this side's socket (QEMU's, or the local D-Bus client's), not of the peer. */
static int fail_local(RelayDirection *d, int error, const char *what) {
        d->error_local = true;
        return fail(d, error, what);
}

static int fail_protocol(RelayDirection *d, int error, const char *what) {
        d->error = what;
        d->error_is_errno = false;
        return -abs(error);
}

static bool is_again(int e) {
        return e == EAGAIN || e == EWOULDBLOCK;
}

static int plain_to_peer(RelayDirection *d, int local_fd, int peer_fd) {
        for (unsigned round = 0; round < STEP_BUDGET; round++) {
                ssize_t n;

                if (d->header_pending) {
                        /* MSG_MORE: the header leaves with the frame's first bytes, not as a
                         * segment of its own (the socket has TCP_NODELAY). The end marker has
                         * nothing after it and goes at once. */
                        n = send(peer_fd, d->header + d->header_off, sizeof(d->header) - d->header_off,
                                 MSG_NOSIGNAL | (d->frame_left > 0 ? MSG_MORE : 0));
                        if (n < 0) {
                                if (is_again(errno))
                                        return wait_for(d, peer_fd, POLLOUT);
                                if (errno == EINTR)
                                        continue;
                                return fail(d, errno, "sending to the peer failed");
                        }
                        d->header_off += (size_t) n;
                        if (d->header_off < sizeof(d->header))
                                continue;
                        d->header_pending = false;
                        d->header_off = 0;
                }
                if (d->frame_left > 0) {
                        n = splice(d->pipe[0], NULL, peer_fd, NULL, d->frame_left,
                                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
                        if (n < 0) {
                                if (is_again(errno))
                                        return wait_for(d, peer_fd, POLLOUT);
                                if (errno == EINTR)
                                        continue;
                                return fail(d, errno, "sending to the peer failed");
                        }
                        d->frame_left -= (size_t) n;
                        d->pipe_bytes -= (size_t) n;
                        d->bytes += (uint64_t) n;
                        continue;
                }
                if (d->local_eof) {
                        d->done = true;
                        return 1;
                }
                n = splice(local_fd, NULL, d->pipe[1], NULL, d->pipe_size, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
                if (n < 0) {
                        if (is_again(errno))
                                return wait_for(d, local_fd, POLLIN);
                        if (errno == EINTR)
                                continue;
                        return fail_local(d, errno, "reading from QEMU's socket failed");
                }
                if (n == 0)
                        d->local_eof = true;
                d->pipe_bytes = d->frame_left = (size_t) n;
                d->header[0] = (uint8_t) (n >> 24);
                d->header[1] = (uint8_t) (n >> 16);
                d->header[2] = (uint8_t) (n >> 8);
                d->header[3] = (uint8_t) n;
                d->header_pending = true;
        }
        d->ready = true;
        return 0;
}

static int plain_from_peer(RelayDirection *d, int local_fd, int peer_fd) {
        for (unsigned round = 0; round < STEP_BUDGET; round++) {
                ssize_t n;

                if (d->pipe_bytes > 0) {
                        n = splice(d->pipe[0], NULL, local_fd, NULL, d->pipe_bytes, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
                        if (n < 0) {
                                if (is_again(errno))
                                        return wait_for(d, local_fd, POLLOUT);
                                if (errno == EINTR)
                                        continue;
                                return fail_local(d, errno, "writing to QEMU's socket failed");
                        }
                        d->pipe_bytes -= (size_t) n;
                        d->bytes += (uint64_t) n;
                        continue;
                }
                if (d->frame_left > 0) {
                        size_t want = d->frame_left < d->pipe_size ? d->frame_left : d->pipe_size;

                        n = splice(peer_fd, NULL, d->pipe[1], NULL, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
                        if (n < 0) {
                                if (is_again(errno))
                                        return wait_for(d, peer_fd, POLLIN);
                                if (errno == EINTR)
                                        continue;
                                return fail(d, errno, "receiving from the peer failed");
                        }
                        if (n == 0)
                                return fail_protocol(d, EPIPE, "the peer's connection ended in the middle of a frame (the peer helper died?)");
                        d->frame_left -= (size_t) n;
                        d->pipe_bytes += (size_t) n;
                        continue;
                }
                n = read(peer_fd, d->header + d->header_off, sizeof(d->header) - d->header_off);
                if (n < 0) {
                        if (is_again(errno))
                                return wait_for(d, peer_fd, POLLIN);
                        if (errno == EINTR)
                                continue;
                        return fail(d, errno, "receiving from the peer failed");
                }
                if (n == 0)
                        return fail_protocol(d, EPIPE, "the peer's connection ended without the stream's end marker (the peer helper died, or refused the stream?)");
                d->header_off += (size_t) n;
                if (d->header_off < sizeof(d->header))
                        continue;
                d->header_off = 0;
                d->frame_left = (size_t) d->header[0] << 24 | (size_t) d->header[1] << 16 |
                                (size_t) d->header[2] << 8 | (size_t) d->header[3];
                if (d->frame_left > RELAY_FRAME_MAX)
                        return fail_protocol(d, EBADMSG, "the peer sent a frame larger than allowed");
                if (d->frame_left == 0) {
                        /* QEMU reads the end of this direction; the other one may go on. */
                        if (shutdown(local_fd, SHUT_WR) < 0 && errno != ENOTCONN && errno != ENOTSOCK)
                                return fail_local(d, errno, "half-closing QEMU's socket failed");
                        d->done = true;
                        return 1;
                }
        }
        d->ready = true;
        return 0;
}

static int tls_fail(RelayDirection *d, ssize_t r, int *ret_gnutls_error, const char *what) {
        *ret_gnutls_error = (int) r;
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
                return fail_protocol(d, EPIPE, "the peer's connection ended without TLS close_notify (the peer helper died?)");
        /* What GnuTLS says when the connection ends inside a record, as a killed sender leaves it. */
        if (r == GNUTLS_E_UNEXPECTED_PACKET_LENGTH)
                return fail_protocol(d, EPIPE, "the peer's connection ended in the middle of a TLS record (the peer helper died?)");
        if (r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR)
                return fail(d, ECONNRESET, what);
        return fail(d, EPROTO, what);
}

static int tls_to_peer(RelayDirection *d, int local_fd, int peer_fd, gnutls_session_t s, int *ret_gnutls_error) {
        for (unsigned round = 0; round < STEP_BUDGET; round++) {
                ssize_t n;

                if (d->buffer_off < d->buffer_len) {
                        /* After GNUTLS_E_AGAIN the same arguments must be passed again: they are. */
                        n = gnutls_record_send(s, d->buffer + d->buffer_off, d->buffer_len - d->buffer_off);
                        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
                                return wait_for(d, peer_fd, POLLOUT);
                        if (n < 0)
                                return tls_fail(d, n, ret_gnutls_error, "sending a TLS record to the peer failed");
                        d->buffer_off += (size_t) n;
                        d->bytes += (uint64_t) n;
                        if (d->buffer_off == d->buffer_len)
                                d->buffer_off = d->buffer_len = 0;
                        continue;
                }
                if (d->local_eof) {
                        int r = gnutls_bye(s, GNUTLS_SHUT_WR);
                        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
                                return wait_for(d, peer_fd, POLLOUT);
                        if (r < 0)
                                return tls_fail(d, r, ret_gnutls_error, "sending TLS close_notify to the peer failed");
                        d->done = true;
                        return 1;
                }
                n = read(local_fd, d->buffer, RELAY_BUFFER_SIZE);
                if (n < 0) {
                        if (is_again(errno))
                                return wait_for(d, local_fd, POLLIN);
                        if (errno == EINTR)
                                continue;
                        return fail_local(d, errno, "reading from QEMU's socket failed");
                }
                if (n == 0)
                        d->local_eof = true;
                d->buffer_len = (size_t) n;
        }
        d->ready = true;
        return 0;
}

static int tls_from_peer(RelayDirection *d, int local_fd, int peer_fd, gnutls_session_t s, int *ret_gnutls_error) {
        for (unsigned round = 0; round < STEP_BUDGET; round++) {
                ssize_t n;

                if (d->buffer_off < d->buffer_len) {
                        n = write(local_fd, d->buffer + d->buffer_off, d->buffer_len - d->buffer_off);
                        if (n < 0) {
                                if (is_again(errno))
                                        return wait_for(d, local_fd, POLLOUT);
                                if (errno == EINTR)
                                        continue;
                                return fail_local(d, errno, "writing to QEMU's socket failed");
                        }
                        d->buffer_off += (size_t) n;
                        d->bytes += (uint64_t) n;
                        if (d->buffer_off == d->buffer_len)
                                d->buffer_off = d->buffer_len = 0;
                        continue;
                }
                if (d->peer_eof) {
                        if (shutdown(local_fd, SHUT_WR) < 0 && errno != ENOTCONN && errno != ENOTSOCK)
                                return fail_local(d, errno, "half-closing QEMU's socket failed");
                        d->done = true;
                        return 1;
                }
                /* Collect records while they are at hand, so QEMU gets large writes rather than
                 * one per 16 KiB record. A call returns one record at most; GNUTLS_E_AGAIN means
                 * nothing is buffered inside GnuTLS either, so waiting for the socket is right. */
                while (d->buffer_len + 16384 <= RELAY_BUFFER_SIZE) {
                        n = gnutls_record_recv(s, d->buffer + d->buffer_len, RELAY_BUFFER_SIZE - d->buffer_len);
                        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                                if (d->buffer_len > 0)
                                        break;
                                return wait_for(d, peer_fd, POLLIN);
                        }
                        if (n < 0) {
                                if (!gnutls_error_is_fatal((int) n))
                                        continue;
                                return tls_fail(d, n, ret_gnutls_error, "receiving a TLS record from the peer failed");
                        }
                        if (n == 0) {
                                d->peer_eof = true;
                                break;
                        }
                        d->buffer_len += (size_t) n;
                }
        }
        d->ready = true;
        return 0;
}

int relay_step(RelayDirection *d, int local_fd, int peer_fd, gnutls_session_t tls, int *ret_gnutls_error) {
        *ret_gnutls_error = 0;
        d->ready = false;
        d->wait_fd = -EBADF;
        if (d->done)
                return 1;
        if (tls)
                return d->to_peer ? tls_to_peer(d, local_fd, peer_fd, tls, ret_gnutls_error)
                                  : tls_from_peer(d, local_fd, peer_fd, tls, ret_gnutls_error);
        return d->to_peer ? plain_to_peer(d, local_fd, peer_fd) : plain_from_peer(d, local_fd, peer_fd);
}
