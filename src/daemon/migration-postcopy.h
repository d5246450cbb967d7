/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-glib/json-glib.h>
#include <stdbool.h>

#include "migration.h"

/* Between migration.c and migration-postcopy.c (post-copy and multifd); the public part is in
 * migration.h. */

/* An element of migrate-set-capabilities' list. */
JsonObject *migration_capability(const char *name, bool on);
/* The option combinations QEMU and the flows allow; -EINVAL with a message for people. */
int migration_check_postcopy_options(const MigrationOptions *o, bool managed, char **ret_error);
bool migration_postcopy_started(const Migration *m);

/* Source: adds postcopy-ram and multifd (always, on or off) and their parameters. */
void postcopy_source_capabilities(Migration *m, JsonArray *caps, JsonObject *params);
/* Source: QEMU's migrate went out (a StartPostCopy that came earlier goes now). */
void postcopy_source_migrating(Migration *m);
/* QEMU's MIGRATION status; true when it was post-copy's to handle. */
bool postcopy_source_event(Migration *m, const char *status);
bool postcopy_destination_event(Migration *m, const char *status);
/* Destination, Finish ran the guest: true when post-copy still loads its memory, the job
 * then going on until QEMU completes. */
bool postcopy_destination_keeps_going(Migration *m);
