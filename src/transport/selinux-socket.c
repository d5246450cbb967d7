/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <selinux/context.h>
#include <selinux/selinux.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "macro.h"
#include "selinux-socket.h"

static int libselinux_setsockcreatecon_raw(const char *context) {
        /* libselinux takes a non-const pointer in older releases. */
        return setsockcreatecon_raw((char *) context);
}

const SelinuxOps selinux_ops_libselinux = {
        .is_selinux_enabled = is_selinux_enabled,
        .setsockcreatecon_raw = libselinux_setsockcreatecon_raw,
        .socket = socket,
};

static void context_freep(context_t *c) {
        if (*c)
                context_free(*c);
}

int socket_context_compute(const char *seclabel, const char *configured, char **ret) {
        _cleanup_(context_freep) context_t con = NULL, label = NULL;
        const char *range, *s;

        if (!configured || !*configured)
                configured = FERRY_DEFAULT_SOCKET_CONTEXT;

        /* context_new() is libselinux's parser; it works without SELinux enabled. */
        con = context_new(configured);
        if (!con)
                return -EINVAL;
        if (seclabel && *seclabel) {
                label = context_new(seclabel);
                if (!label)
                        return -EINVAL;
                range = context_range_get(label);
                if (!range)
                        return -EINVAL; /* a label without MLS part says nothing about categories */
                if (context_range_set(con, range) != 0)
                        return -errno ?: -EINVAL;
        }
        s = context_str(con);
        if (!s)
                return -EINVAL;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int socket_create_labelled(const SelinuxOps *ops, const char *context, int domain, int type) {
        int fd, saved;

        if (!context || ops->is_selinux_enabled() <= 0) {
                fd = ops->socket(domain, type | SOCK_CLOEXEC, 0);
                return fd < 0 ? -errno : fd;
        }

        if (ops->setsockcreatecon_raw(context) < 0)
                return -errno ?: -EINVAL;
        fd = ops->socket(domain, type | SOCK_CLOEXEC, 0);
        saved = fd < 0 ? errno : 0;
        /* Failing to reset would label every later socket of this process: refuse the socket. */
        if (ops->setsockcreatecon_raw(NULL) < 0) {
                saved = errno ?: EINVAL;
                fd = safe_close(fd);
        }
        return fd < 0 ? -saved : fd;
}
