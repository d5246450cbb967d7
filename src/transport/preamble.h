/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* The routing preamble: the first bytes of every connection on the peer port, in plaintext,
 * before TLS. It names the migration (by its random token) and the stream, so one port can
 * serve every migration (see docs/transport.md). Fixed size, so a reader never reads into the
 * TLS handshake that follows and never buffers more than this from an unknown peer:
 *
 *   "FERRY-TRANSPORT/1 " <32 hex digits token> " " <4 hex digits stream index> " " <T|P> "\n"
 *
 * T: the rest of the connection is TLS 1.3; P: plaintext frames. */

#define PREAMBLE_MAGIC "FERRY-TRANSPORT/1 "
#define PREAMBLE_SIZE 58
#define TOKEN_HEX_LEN 32
#define STREAMS_MAX 64

typedef struct Preamble {
        char token[TOKEN_HEX_LEN + 1];
        unsigned index;
        bool tls;
} Preamble;

void preamble_format(const char *token, unsigned index, bool tls, char out[PREAMBLE_SIZE]);
/* -EBADMSG when buf is not a preamble of this version. */
int preamble_parse(const char buf[PREAMBLE_SIZE], Preamble *ret);
/* Compares two tokens in time independent of where they differ. */
bool token_equal(const char *a, const char *b);
/* Reads a token file: 32 lower-case hex digits, optionally followed by a newline. */
int token_read_file(const char *path, char ret[TOKEN_HEX_LEN + 1]);
