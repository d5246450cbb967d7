/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A stand-in for systemd-stdio-bridge in test-transport-bus (ferry-transport --bus-serve
 * --bridge=THIS): on its stdin/stdout socket it sends FERRY_STANDIN_SEND bytes of the pattern
 * with seed 2 and checks that it receives exactly FERRY_STANDIN_RECV bytes of seed 1, both at
 * once; it says who it runs as and what it got on stderr (the helper's log). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "transport-harness.h"

int main(void) {
        const char *s = getenv("FERRY_STANDIN_SEND"), *r = getenv("FERRY_STANDIN_RECV");
        size_t send_len = s ? strtoull(s, NULL, 10) : 0, recv_len = r ? strtoull(r, NULL, 10) : 0, got = 0;
        uint8_t buf[64 * 1024], expected[64 * 1024];
        bool mismatch = false;
        Pattern g;
        int status;
        pid_t pid;

        fprintf(stderr, "standin: uid=%u gid=%u groups=%d\n", (unsigned) getuid(), (unsigned) getgid(),
                getgroups(0, NULL));
        pid = fork();
        if (pid < 0)
                return 1;
        if (pid == 0) {
                pattern_init(&g, 2);
                for (size_t done = 0; done < send_len;) {
                        size_t n = send_len - done < sizeof(buf) ? send_len - done : sizeof(buf);
                        pattern_fill(&g, buf, n);
                        for (size_t off = 0; off < n;) {
                                ssize_t w = write(STDOUT_FILENO, buf + off, n - off);
                                if (w < 0) {
                                        fprintf(stderr, "standin: write: %s\n", strerror(errno));
                                        _exit(1);
                                }
                                off += (size_t) w;
                        }
                        done += n;
                }
                shutdown(STDOUT_FILENO, SHUT_WR);
                _exit(0);
        }

        pattern_init(&g, 1);
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
                if (n <= 0) {
                        if (n < 0)
                                fprintf(stderr, "standin: read: %s\n", strerror(errno));
                        break;
                }
                pattern_fill(&g, expected, (size_t) n);
                if (memcmp(buf, expected, (size_t) n) != 0)
                        mismatch = true;
                got += (size_t) n;
        }
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fprintf(stderr, "standin: the sender failed\n");
        fprintf(stderr, "standin: received %zu bytes %s\n", got,
                !mismatch && got == recv_len ? "exactly" : "WRONG");
        return 0;
}
