/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "notify.h"

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
