/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "preamble.h"

static bool is_lower_hex(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!strchr("0123456789abcdef", s[i]) || s[i] == 0)
                        return false;
        return true;
}

void preamble_format(const char *token, unsigned index, bool tls, char out[PREAMBLE_SIZE]) {
        char buf[PREAMBLE_SIZE + 1];

        snprintf(buf, sizeof(buf), PREAMBLE_MAGIC "%.32s %04x %c\n", token, index & 0xffff, tls ? 'T' : 'P');
        memcpy(out, buf, PREAMBLE_SIZE);
}

int preamble_parse(const char buf[PREAMBLE_SIZE], Preamble *ret) {
        const size_t m = strlen(PREAMBLE_MAGIC);
        const char *p = buf + m;
        unsigned index = 0;

        if (memcmp(buf, PREAMBLE_MAGIC, m) != 0)
                return -EBADMSG;
        if (!is_lower_hex(p, TOKEN_HEX_LEN) || p[TOKEN_HEX_LEN] != ' ')
                return -EBADMSG;
        if (!is_lower_hex(p + TOKEN_HEX_LEN + 1, 4) || p[TOKEN_HEX_LEN + 5] != ' ')
                return -EBADMSG;
        if ((p[TOKEN_HEX_LEN + 6] != 'T' && p[TOKEN_HEX_LEN + 6] != 'P') || p[TOKEN_HEX_LEN + 7] != '\n')
                return -EBADMSG;
        for (size_t i = 0; i < 4; i++) {
                char c = p[TOKEN_HEX_LEN + 1 + i];
                index = index * 16 + (unsigned) (c <= '9' ? c - '0' : c - 'a' + 10);
        }
        if (index >= STREAMS_MAX)
                return -EBADMSG;

        memcpy(ret->token, p, TOKEN_HEX_LEN);
        ret->token[TOKEN_HEX_LEN] = 0;
        ret->index = index;
        ret->tls = p[TOKEN_HEX_LEN + 6] == 'T';
        return 0;
}

bool token_equal(const char *a, const char *b) {
        unsigned char d = 0;

        for (size_t i = 0; i < TOKEN_HEX_LEN; i++)
                d |= (unsigned char) (a[i] ^ b[i]);
        return d == 0;
}

int token_read_file(const char *path, char ret[TOKEN_HEX_LEN + 1]) {
        _cleanup_close_ int fd = -EBADF;
        char buf[TOKEN_HEX_LEN + 2];
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf));
        if (n < 0)
                return -errno;
        if (n < TOKEN_HEX_LEN || (n == TOKEN_HEX_LEN + 1 && buf[TOKEN_HEX_LEN] != '\n') ||
            n > TOKEN_HEX_LEN + 1 || !is_lower_hex(buf, TOKEN_HEX_LEN))
                return -EBADMSG;
        memcpy(ret, buf, TOKEN_HEX_LEN);
        ret[TOKEN_HEX_LEN] = 0;
        return 0;
}
