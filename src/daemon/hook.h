/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-event.h>

#include "macro.h"

/* Administrator hooks (/etc/ferry/hooks/NAME, as libvirt's /etc/libvirt/hooks): a worker
 * process that gets text on stdin and answers on stdout, run on the event loop with a time
 * and size limit, never blocking the daemon. */

#define HOOK_TIMEOUT_USEC (30ULL * 1000000ULL)
#define HOOK_OUTPUT_MAX (1024u * 1024u)

typedef struct Hook Hook;

/* error 0: the hook exited 0, output is its stdout (owned by the callee; may be empty).
 * -EPERM: it exited non-zero (message has its status); -ETIMEDOUT; -E2BIG: too much output. */
typedef void (*HookDone)(void *userdata, int error, const char *message, const char *output);

/* Runs path with argv (argv[0] = path) and input on stdin. */
int hook_run(sd_event *event, char **argv, const char *input, HookDone done, void *userdata, Hook **ret);
Hook *hook_free(Hook *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(Hook *, hook_free);
