/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

#include "domain.h"

/* Where domains live on disk:
 *   /etc/ferry/domains/<name>.xml            persistent definition
 *   /etc/ferry/domains/autostart/<name>.xml  symlink: start at boot
 *   /run/ferry/domains/<uuid>/live.xml       the definition QEMU runs with
 *   /run/ferry/domains/<uuid>/state          key file: [Domain] State=, Reason=, Unit=, Incoming=;
 *                                            [OutgoingMigration] while one is in progress
 *   /run/ferry/domains/<uuid>/qmp.sock       QEMU's monitor
 * Every write is atomic. */

int domain_store_save_config(Domain *d);
int domain_store_remove_config(Domain *d);
int domain_store_set_autostart(Domain *d, bool autostart);
bool domain_store_autostart(Manager *m, const char *name);

int domain_store_save_live(Domain *d);
void domain_store_remove_live(Domain *d);
/* ret_incoming: QEMU was started as a migration destination; ret_outgoing: it was migrating
 * away (active = false if not; free with outgoing_migration_record_done()). */
int domain_store_load_live(const char *run_dir, DomainDef **ret_def, char **ret_state, char **ret_reason,
                           bool *ret_incoming, OutgoingMigrationRecord *ret_outgoing);

/* Reads one definition file (config or live). */
int domain_store_read_def(const char *path, DomainDef **ret);

/* Maps a saved reason string back to the REASON_* constant (unknown ones: REASON_UNKNOWN). */
const char *domain_reason_intern(const char *s);
