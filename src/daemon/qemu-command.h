/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* DomainDef -> QEMU's argv. Pure: no I/O, nothing started. docs/domain-xml.md has the
 * mapping table; the caller (the unit launcher) runs the result in the domain's unit. */

#include <stdbool.h>

#include "domain-def.h"

typedef struct QemuLaunchParams {
        const char *qmp_socket;      /* UNIX socket path for QMP (server, wait=off) */
        /* A second QMP monitor on fd 0, a connected socket whose other end the caller holds:
         * how ferryd talks to a QEMU it started (docs/domains.md, "The QMP connection"). */
        bool qmp_on_stdin;
        const char *runtime_dir;     /* /run/ferry/domains/<uuid>/ for other sockets */
        bool incoming_defer;         /* add "-incoming defer" */
        bool kvm;                    /* /dev/kvm usable: -accel kvm, else -accel tcg */
        bool start_paused;           /* -S */
} QemuLaunchParams;

/* Returns 0 and a NULL-terminated argv (free with g_strfreev()), argv[0] being the emulator;
 * -EINVAL if def or p holds anything that must not reach QEMU (a definition that did not
 * come from domain_def_parse(), a relative socket path), -ENAMETOOLONG if a socket path does
 * not fit in sun_path. */
int qemu_build_argv(const DomainDef *def, const QemuLaunchParams *p, char ***ret_argv);

/* Doubles every ',' so that s stays one value in QEMU's "key=value,..." option syntax. */
char *qemu_option_escape(const char *s);
