/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared between the files of a migration: migration.c (the jobs, the source's Perform, Finish
 * and Confirm), migration-outgoing.c (starting an outgoing job, the source's peer-to-peer Begin
 * and Prepare), migration-incoming.c (the destination side), migration-managed.c (the source
 * side of managed direct), migration-recover.c (a restarted ferryd), and the postcopy, storage
 * and tunnel parts. Not for anything else. */

#include "domain.h"
#include "migration-uri.h"
#include "migration.h"

Domain *migration_domain(Migration *m);
/* query-migrate's answer into the job's statistics (a QEMU monitor callback). */
void migration_on_query_migrate(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                JsonNode *ret, void *userdata);
/* What a restarted ferryd reports about the migration it found in progress. */
#define RECOVERED_MESSAGE "ferryd was restarted during the migration: it was cancelled, the guest stays on the source"
#define INTERRUPTED_MESSAGE "ferryd was restarted after Finish was sent: the destination may run the guest, " \
                            "so it is left paused here"
int migration_new(Manager *manager, MigrationDirection direction, Domain *d, Migration **ret);
void set_phase(Migration *m, MigrationPhase p);
/* Its properties changed: PropertiesChanged, coalesced. */
void migration_changed(Migration *m);
void migration_end(Migration *m, MigrationState state, const char *error_name, const char *message);

/* Source side. The checks every outgoing flow shares, then the job, announced and holding the
 * domain's slot (*ret). Returns 1 when it may go on, 0 when the job exists but failed already
 * (e.g. a TLS file missing), <0 (with *ret_error for -EINVAL) when there is no job. */
int outgoing_new(Domain *d, const char *destination_uri, MigrationOptions *options, bool managed,
                 Migration **ret, MigrationUri **ret_hv, char **ret_address, char **ret_error);
/* The destination's hypervisor URI, parsed strictly (-EINVAL with *ret_error). */
int outgoing_set_hypervisor_uri(Migration *m, const char *uri, char **ret_error);
void source_perform(Migration *m);
void source_fail(Migration *m, const char *error_name, const char *message);
void resume_source(Migration *m);
/* The answer to a Finish(false) we sent the destination to undo its half: closes the peer. */
int source_on_peer_finish_abort(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error);
/* The destination runs the guest: ours goes (and its definition with undefine_source). */
void source_confirm(Migration *m);
/* Reads QEMU's final figures (total time, downtime), then calls then(m) (if not NULL). */
void source_read_final_stats(Migration *m, void (*then)(Migration *m));
/* A free port of the configured range for an incoming stream, or 0. */
uint16_t migration_pick_port(Manager *manager);

/* migration-managed.c: QEMU sent everything (managed direct); the answer to a pending Perform
 * (once, with error < 0 when it failed). */
void managed_performed(Migration *m);
void managed_perform_answer(Migration *m, int error, const char *message);
