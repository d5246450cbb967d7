/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One direction of one stream: local (QEMU's socket) to peer, or peer to local.
 *
 * Plaintext streams move the data with splice() through a pipe, never through user space, in
 * frames: a 4-byte big-endian length, then that many bytes; length 0 marks the end of the
 * direction. The end marker is what tells a clean end from a peer helper that died (its kernel
 * closes the TCP connection just as cleanly). TLS streams use GnuTLS records; the end is a
 * close_notify alert (gnutls_bye(GNUTLS_SHUT_WR)), a bare TCP end is premature termination.
 *
 * Buffers are bounded: one pipe (RELAY_PIPE_SIZE) or one buffer (RELAY_BUFFER_SIZE) per
 * direction. Ends are propagated as half-closes (shutdown(SHUT_WR) towards QEMU; a local fd that is
 * not a socket, a pipe, is left for the caller to close), so post-copy's return path keeps
 * flowing the other way. */

#define RELAY_PIPE_SIZE (1024 * 1024)
#define RELAY_BUFFER_SIZE (256 * 1024)
#define RELAY_FRAME_MAX (16 * 1024 * 1024)

typedef struct RelayDirection {
        bool to_peer;
        bool done;
        bool local_eof;
        bool peer_eof;        /* TLS: close_notify received, buffer still to be written */

        /* plaintext */
        int pipe[2];
        size_t pipe_size;
        size_t pipe_bytes;    /* bytes in the pipe */
        size_t frame_left;    /* bytes of the current frame not yet moved */
        uint8_t header[4];
        size_t header_off;
        bool header_pending;  /* to_peer: a header waits to be written */

        /* TLS */
        uint8_t *buffer;
        size_t buffer_len, buffer_off;

        /* What to wait for when relay_step() returns 0 and ready is false. */
        int wait_fd;
        short wait_events;
        bool ready;           /* work left without waiting (the step's budget ran out) */

        uint64_t bytes;
        const char *error;    /* static text describing a failure */
        bool error_is_errno;  /* the failure is a syscall's errno (else the text says it all) */
        bool error_local;     /* the failure is on the local socket, not the peer's */
} RelayDirection;

int relay_direction_init(RelayDirection *d, bool to_peer, bool tls);
void relay_direction_done(RelayDirection *d);

/* Moves data until it would block or a budget is spent. Returns 1 when the direction has ended
 * cleanly, 0 when it waits (see wait_fd/wait_events/ready), negative errno on failure (with
 * d->error set; for TLS failures *ret_gnutls_error holds the GnuTLS code). */
int relay_step(RelayDirection *d, int local_fd, int peer_fd, gnutls_session_t tls, int *ret_gnutls_error);
