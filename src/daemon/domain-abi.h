/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "domain-def.h"

/* Whether two definitions describe the same guest as the guest sees it (libvirt's "ABI
 * stability" check), for a destination XML given with a migration: the running QEMU's state
 * must load into a QEMU built from the other one. Host-side details may differ (docs/migration.md
 * lists them: title, description, disk and serial paths, disk cache and format, emulator,
 * kernel/initrd paths, boot order, lifecycle actions, VNC socket, seclabels); the name is the
 * caller's business. Returns 0, or -EINVAL with a message naming the first difference. */
int domain_def_check_abi(const DomainDef *running, const DomainDef *other, char **ret_error);
