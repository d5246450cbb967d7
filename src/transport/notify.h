/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "macro.h"

/* What ferryd learns from the helper, through sd_notify() (systemd keeps the last STATUS= as
 * the unit's StatusText and ERRNO= as StatusErrno). Each STATUS starts with one word that
 * programs may match: "listening", "relaying", "done", "failed", "canceled"; the rest is for
 * humans. See docs/transport.md. Without NOTIFY_SOCKET these do nothing. */

void notify_ready(const char *format, ...) _printf_(1, 2);
void notify_status(const char *format, ...) _printf_(1, 2);
/* Like notify_status(), but dropped rather than waited for when the receiver's queue is full:
 * a slow reader of progress must never stall the streams. Final states use the calls above,
 * which wait, so they are never lost. */
void notify_progress(const char *format, ...) _printf_(1, 2);
/* STATUS=failed: <message> and ERRNO=<error>. */
void notify_failed(int error, const char *format, ...) _printf_(2, 3);

/* Closes what notify_progress() keeps open. */
void notify_close(void);
