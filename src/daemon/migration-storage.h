/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Non-shared storage: the disks travel with the guest over NBD (libvirt's copy-storage-all and
 * copy-storage-inc; docs/migration.md, "Storage copy").
 *
 * Destination: before its QEMU starts, the images of the copied disks are checked (format and
 * virtual size, as the source reports them in Prepare's disk_sizes) or created with qemu-img;
 * once it listens for the stream, QEMU's NBD server exports each of them writable. Finish stops
 * the NBD server before the guest runs; a failed migration removes the images it created.
 *
 * Source: after Prepare, one NBD client node per disk (blockdev-add) and a mirror job onto it
 * (blockdev-mirror, sync full or top); the RAM stream starts once every mirror is ready. At
 * pre-switchover (the guest is paused) the ready mirrors are cancelled, which completes them
 * without a pivot; the NBD nodes go and QEMU sends the devices' state. A failure cancels the
 * jobs and removes the nodes. */

#include "domain.h"
#include "migration.h"

typedef struct MigrationStorage MigrationStorage;

/* Live figures from query-block-jobs (source side). */
typedef struct MigrationDiskStats {
        uint64_t total, processed, remaining, bytes_per_second;
} MigrationDiskStats;

const char *migration_copy_storage_to_string(MigrationCopyStorage c);
MigrationCopyStorage migration_copy_storage_from_string(const char *s); /* _MIGRATION_COPY_STORAGE_INVALID */

MigrationStorage *migration_storage_free(MigrationStorage *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MigrationStorage *, migration_storage_free);

/* Source, at Migrate: the storage options fit the flow and name disks that can be copied.
 * -EINVAL with a message. */
int storage_check_options(Domain *d, const MigrationOptions *o, bool managed, char **ret_error);

/* Source, before Prepare: the virtual sizes of the copied disks go into m->options.disk_sizes,
 * then next(m). On failure the migration fails. */
void storage_source_prepare(Migration *m, void (*next)(Migration *m));
/* Source, after Prepare: reads where the destination's NBD server listens (its Migration's
 * DisksURI), then next(m). */
void storage_source_locate(Migration *m, void (*next)(Migration *m));
/* Source, in Perform (after the TLS credentials): starts the mirrors; next(m) once all are ready. */
void storage_source_start(Migration *m, void (*next)(Migration *m));
/* Source, at pre-switchover: completes the mirrors and drops the NBD nodes, then next(m). */
void storage_source_switchover(Migration *m, void (*next)(Migration *m));

/* Destination, before anything else of Prepare: checks or creates the images of the disks in
 * options->disk_sizes (per xml), then next(userdata, 0, NULL) or next(userdata, <0, message);
 * the paths created go into options->storage_created. */
typedef void (*StorageImagesDone)(void *userdata, int error, const char *message);
int storage_destination_images(Manager *manager, const char *xml, MigrationOptions *options,
                               StorageImagesDone next, void *userdata, char **ret_error);
/* Removes the images a failed Prepare created (options->storage_created), and forgets them. */
void storage_remove_created(MigrationOptions *options);
/* Destination, in Prepare: takes the NBD address (the disks_uri option or a port from the range);
 * offer_host: the host the source reaches us at. */
int storage_destination_new(Migration *m, const char *offer_host, char **ret_error);
/* Destination, once its QEMU listens: the NBD server and one export per disk. */
void storage_destination_start(Migration *m, MigrationDone done, void *userdata);
/* Destination, Finish(true): the NBD server goes before the guest runs. */
void storage_destination_finish(Migration *m);

/* The migration ended (both sides): on failure the source cancels its jobs and drops its nodes,
 * the destination removes the images it created. */
void storage_migration_ended(Migration *m);
/* A BLOCK_JOB_* event of the domain's QEMU. */
void storage_block_job_event(MigrationStorage *s, const char *name, JsonObject *data);

/* For the bus: NULL-safe. */
const char *migration_storage_disks_uri(const Migration *m);
MigrationDiskStats migration_storage_stats(const Migration *m);
uint16_t migration_storage_port(const Migration *m);
