/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* Creating the sockets QEMU connects to under an SELinux socket-create context.
 *
 * A confined QEMU may only connect to sockets whose label its policy allows, and a socket's
 * label is fixed when socket() creates it: the creator sets the context with
 * setsockcreatecon_raw() right before socket() and clears it right after, so no other socket
 * of this process inherits it. The libselinux calls go through a table so the unit test can
 * observe their order; the default table is libselinux itself. */

#define FERRY_DEFAULT_SOCKET_CONTEXT "system_u:system_r:svirt_socket_t:s0"

typedef struct SelinuxOps {
        int (*is_selinux_enabled)(void);
        int (*setsockcreatecon_raw)(const char *context);
        int (*socket)(int domain, int type, int protocol);
} SelinuxOps;

extern const SelinuxOps selinux_ops_libselinux;

/* The context for QEMU's sockets: the configured socket context (NULL: the default above) with
 * the MLS/MCS range of the domain's seclabel (NULL or "": no seclabel, the configured context
 * as it is), so a QEMU confined to its categories (s0:c1,c2) may connect. */
int socket_context_compute(const char *seclabel, const char *configured, char **ret);

/* socket() under context; a NULL context, or SELinux disabled, creates an unlabelled socket.
 * The context is reset even when socket() fails. Returns the fd or a negative errno. */
int socket_create_labelled(const SelinuxOps *ops, const char *context, int domain, int type);
