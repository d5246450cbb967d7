/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <systemd/sd-bus.h>

#include "macro.h"

/* Asynchronous polkit checks for method handlers, in the manner of systemd's bus-polkit.c:
 * the first call of a handler starts CheckAuthorization and returns 0 ("not yet"); when polkit
 * answers, the original message is queued again and the handler runs a second time, and this
 * time polkit_verify() returns the stored answer. The subject is always the caller's unique bus
 * name; every error fails closed. */

#define POLKIT_PENDING_MAX 128u

typedef struct PolkitRegistry PolkitRegistry;

PolkitRegistry *polkit_registry_new(void);
PolkitRegistry *polkit_registry_free(PolkitRegistry *reg);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolkitRegistry *, polkit_registry_free);

/* Checks still waiting for polkitd (the daemon stays up while there are any). */
size_t polkit_registry_pending(PolkitRegistry *reg);

/* details: NULL or a NULL-terminated list of key, value, key, value, ...
 * Returns 1 when authorized; 0 when the check is underway (the handler must then return 1
 * without replying); <0 with *error set when denied or when polkit could not decide. */
int polkit_verify(PolkitRegistry *reg, sd_bus_message *m, const char *action,
                  const char *const *details, sd_bus_error *error);
