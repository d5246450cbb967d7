/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "notify.h"

__attribute__((format(printf, 3, 0)))
static void send_status(const char *prefix, const char *extra, const char *format, va_list ap) {
        char text[1024];

        vsnprintf(text, sizeof(text), format, ap);
        /* STATUS= is one line. */
        for (char *p = text; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        (void) sd_notifyf(false, "%sSTATUS=%s%s", prefix, text, extra);
}

void notify_ready(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        send_status("READY=1\n", "", format, ap);
        va_end(ap);
}

void notify_status(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        send_status("", "", format, ap);
        va_end(ap);
}

void notify_failed(int error, const char *format, ...) {
        char message[900];
        va_list ap;

        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        for (char *p = message; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        (void) sd_notifyf(false, "STATUS=failed: %s\nERRNO=%i", message, abs(error));
}

static int progress_fd = -EBADF;
static bool progress_unsupported;

void notify_close(void) {
        if (progress_fd >= 0)
                (void) close(progress_fd);
        progress_fd = -EBADF;
}

void notify_progress(const char *format, ...) {
        const char *e = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char text[1024];
        size_t n;
        va_list ap;

        if (!e)
                return;
        va_start(ap, format);
        memcpy(text, "STATUS=", 7);
        vsnprintf(text + 7, sizeof(text) - 7, format, ap);
        va_end(ap);

        /* sd_notify() blocks when the queue is full; we only know how to send UNIX datagrams
         * without blocking, other NOTIFY_SOCKET kinds get sd_notify(). */
        n = strlen(e);
        if (progress_unsupported || (e[0] != '/' && e[0] != '@') || n >= sizeof(sa.sun_path)) {
                (void) sd_notify(false, text);
                return;
        }
        if (progress_fd < 0) {
                progress_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (progress_fd < 0) {
                        progress_unsupported = true;
                        (void) sd_notify(false, text);
                        return;
                }
        }
        memcpy(sa.sun_path, e, n);
        if (e[0] == '@')
                sa.sun_path[0] = 0;
        (void) sendto(progress_fd, text, strlen(text), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *) &sa,
                      (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n));
}
