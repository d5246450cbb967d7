/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

static int max_level = LOG_INFO;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
        [LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

void log_set_max_level(int level) {
        if (level >= LOG_EMERG && level <= LOG_DEBUG)
                max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return (int) i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

int log_internal(int level, int error, const char *file, int line, const char *format, ...) {
        int saved_errno = errno;
        error = abs(error);

        if (level <= max_level) {
                static int journal = -1;
                char buf[2048];
                va_list ap;

                if (journal < 0)
                        journal = getenv("JOURNAL_STREAM") != NULL;

                /* %m must refer to the error passed in, not to whatever errno happens to be. */
                errno = error;
                va_start(ap, format);
                vsnprintf(buf, sizeof(buf), format, ap);
                va_end(ap);

                if (journal)
                        fprintf(stderr, "<%i>%s\n", level, buf);
                else if (max_level >= LOG_DEBUG)
                        fprintf(stderr, "%s:%i: %s\n", file, line, buf);
                else
                        fprintf(stderr, "%s\n", buf);
        }

        errno = saved_errno;
        return -error;
}
