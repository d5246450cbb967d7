/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared by migration-storage.c (common, source side) and migration-storage-destination.c.
 * Not for anything else. */

#include <json-glib/json-glib.h>

#include "domain.h"
#include "migration-storage.h"
#include "migration-uri.h"
#include "qemu-monitor.h"

typedef struct StorageDisk {
        char *target;
        uint64_t size;
        bool node_added;           /* source: nbd-<target> exists in QEMU */
        bool job_running;          /* source: mirror-<target> exists in QEMU */
        bool job_ready;
        uint64_t len, offset;      /* source: the job's last figures */
} StorageDisk;

typedef enum StorageState {
        STORAGE_IDLE,
        STORAGE_MIRRORING,         /* jobs started, not all ready */
        STORAGE_READY,             /* all ready: the RAM stream runs */
        STORAGE_SWITCHING,         /* pre-switchover: jobs being completed */
        STORAGE_DONE,              /* source: jobs completed, nodes gone; destination: exports up */
        STORAGE_ABORTING,          /* source: cancelling after a failure */
} StorageState;

struct MigrationStorage {
        Migration *migration;
        Manager *manager;
        char *domain_name;
        StorageState state;
        StorageDisk *disks;
        size_t n_disks;
        MigrationUri *nbd;         /* source: where to connect; destination: where to listen */
        char *disks_uri;           /* what DisksURI shows: the address the source connects to */
        uint16_t port;             /* destination: taken from the port range */
        void (*next)(Migration *m);
        MigrationDone done;        /* destination: the answer of storage_destination_start */
        void *done_userdata;
        unsigned pending;          /* destination: exports not answered yet */
        sd_bus_slot *peer_call;
        sd_event_source *stats_timer;
        uint64_t last_usec, last_processed;
        MigrationDiskStats stats;
};

Domain *storage_domain(MigrationStorage *s);
QemuMonitor *storage_monitor(MigrationStorage *s);
MigrationStorage *storage_new(Migration *m);
int storage_add_disk(MigrationStorage *s, const char *target, uint64_t size);
StorageDisk *storage_find_disk(MigrationStorage *s, const char *target);
const DomainDiskDef *storage_find_def_disk(const DomainDef *def, const char *target);
/* What makes a disk impossible to copy, in words; NULL if it can be copied. */
const char *storage_disk_refusal(const DomainDiskDef *disk);
/* QMP's SocketAddress for u: legacy ({"type", "data": {...}}, nbd-server-start) or flat (blockdev-add). */
JsonObject *storage_nbd_address(const MigrationUri *u, bool legacy);
/* Destination: the answer to storage_destination_start, once. */
void storage_destination_answer(MigrationStorage *s, int error, const char *message);
