/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "domain-def.h"
#include "macro.h"

/* A domain: its definition, its state, and while active its QEMU (a transient unit and a
 * QMP connection). No bus code here: domain-dbus.c is the bus edge; changes are reported to
 * the manager, which forwards them. */

typedef struct Manager Manager;
typedef struct QemuMonitor QemuMonitor;
typedef struct UnitJob UnitJob;
typedef struct Migration Migration;
typedef struct MigrationStorage MigrationStorage;
typedef struct _JsonObject JsonObject;  /* json-glib's */

typedef enum DomainState {
        DOMAIN_SHUTOFF,
        DOMAIN_RUNNING,
        DOMAIN_PAUSED,
        DOMAIN_CRASHED,
        _DOMAIN_STATE_MAX,
} DomainState;

/* Reasons, as libvirt's virDomain*Reason, as strings on the bus. */
#define REASON_UNKNOWN "unknown"
#define REASON_BOOTED "booted"
#define REASON_UNPAUSED "unpaused"
#define REASON_USER "user"
#define REASON_STARTING "starting"
#define REASON_SHUTDOWN "shutdown"
#define REASON_DESTROYED "destroyed"
#define REASON_FAILED "failed"
#define REASON_CRASHED "crashed"
#define REASON_PANICKED "panicked"
#define REASON_MIGRATION "migration"
#define REASON_MIGRATED "migrated"
#define REASON_MIGRATION_CANCELLED "migration-cancelled"
/* Paused because ferryd restarted after it had sent Finish: the destination may run the guest. */
#define REASON_MIGRATION_INTERRUPTED "migration-interrupted"

/* Which properties changed, for PropertiesChanged. */
typedef enum DomainChange {
        DOMAIN_CHANGE_STATE = 1 << 0,       /* State and StateReason */
        DOMAIN_CHANGE_PERSISTENT = 1 << 1,
        DOMAIN_CHANGE_AUTOSTART = 1 << 2,
        DOMAIN_CHANGE_DEFINITION = 1 << 3,  /* Memory, VCPUs, Title */
} DomainChange;

/* Completion of an asynchronous operation: error 0, or -errno with a message for people. */
typedef void (*DomainDone)(void *userdata, int error, const char *message);

typedef enum DomainOperation {
        DOMAIN_OP_NONE,
        DOMAIN_OP_START,
        DOMAIN_OP_SHUTDOWN,
        DOMAIN_OP_DESTROY,
        DOMAIN_OP_SUSPEND,
        DOMAIN_OP_RESUME,
        DOMAIN_OP_MIGRATE,         /* held by a Migration from Begin to Confirm */
        DOMAIN_OP_DUMP,            /* QEMU writes the guest's memory to a caller's file */
} DomainOperation;

/* What the live state keeps of an outgoing migration (domain-store.c), so that a ferryd that
 * restarts in the middle can undo it (migration_recover_outgoing()). */
typedef struct OutgoingMigrationRecord {
        bool active;
        bool direct;               /* unmanaged direct: no destination ferryd */
        bool finish_sent;          /* Finish went (or may have gone) to the destination */
        bool source_was_running;   /* resume the guest here when undoing it */
        char *destination_uri;
        char *peer_migration;      /* the destination's Migration object, once prepared */
        char *peer_owner;          /* ... and the unique name of the ferryd that has it */
} OutgoingMigrationRecord;

void outgoing_migration_record_done(OutgoingMigrationRecord *r);

typedef struct Domain {
        Manager *manager;
        DomainDef *def;            /* the persistent definition, or the transient one */
        DomainDef *live_def;       /* while active: what QEMU runs */
        char uuid_string[37];
        char *object_path;

        bool persistent;
        bool autostart;
        DomainState state;
        const char *reason;        /* one of REASON_* */

        char *unit;                /* ferry-qemu-<name>.service */
        char *run_dir;             /* /run/ferry/domains/<uuid> */
        char *qmp_path;
        QemuMonitor *monitor;
        UnitJob *unit_job;
        int qmp_stdin_peer;             /* while QEMU's unit starts: our end of its stdin monitor */
        sd_event_source *op_timer;

        /* One operation at a time (libvirt's job lock); others get -EBUSY. */
        DomainOperation op;
        DomainDone op_done;
        void *op_userdata;
        bool start_paused;
        bool exit_expected;        /* we asked QEMU to go: its exit is not a crash */
        const char *exit_reason;   /* reason for shutoff once it has gone */
        bool reattaching;
        bool reattaching_incoming;  /* ... to a QEMU started as a migration destination */
        OutgoingMigrationRecord reattaching_outgoing; /* ... to a QEMU that was migrating away */

        char *incoming_uri;        /* starting as a migration destination: QEMU listens here */
        char *incoming_tls_dir;    /* ... with QEMU's own TLS, server credentials from here */
        bool incoming_postcopy;    /* ... with post-copy armed (postcopy-ram before migrate-incoming) */
        unsigned incoming_channels;/* ... with multifd, that many channels (0: off) */
        DomainDef *incoming_def;   /* ... and runs this definition (the source's) */
        const char *pending_reason;/* the reason a pending resume will give (REASON_*) */
        Migration *migration;      /* the migration in progress, if any */
        MigrationStorage *storage_jobs; /* whose block jobs run in QEMU (a storage copy), if any */
} Domain;

/* Limits */
#define DOMAINS_MAX 256u

/* Creation registers the domain with the manager (by name and uuid). -EEXIST if the name or
 * uuid is taken, -E2BIG past DOMAINS_MAX. Takes ownership of def on success. */
int domain_new(Manager *m, DomainDef *def, bool persistent, Domain **ret);
Domain *domain_free(Domain *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Domain *, domain_free);

bool domain_is_active(const Domain *d);
const char *domain_state_to_string(DomainState s);

/* Persistent configuration (/etc/ferry/domains/<name>.xml), written atomically. */
int domain_save_config(Domain *d);
int domain_remove_config(Domain *d);
int domain_set_autostart(Domain *d, bool autostart);

/* Replaces the persistent definition (Define on an existing domain). */
int domain_redefine(Domain *d, DomainDef *def);

/* Asynchronous operations; done is called exactly once, unless the call itself fails. */
int domain_start(Domain *d, bool paused, DomainDone done, void *userdata);
int domain_destroy(Domain *d, DomainDone done, void *userdata);
int domain_shutdown(Domain *d, uint64_t timeout_usec, DomainDone done, void *userdata);
int domain_suspend(Domain *d, DomainDone done, void *userdata);
int domain_resume(Domain *d, DomainDone done, void *userdata);

/* Undefine: forget the configuration; an active domain becomes transient. Returns 1 if the
 * domain object is gone (it was inactive) — then d is freed. */
int domain_undefine(Domain *d);

/* Start-up: re-attach to a QEMU that a previous ferryd started (live state in run_dir). */
int domain_reattach(Manager *m, const char *run_dir);

/* The text of the live or inactive definition (see DomainFormatFlags). */
char *domain_get_xml(Domain *d, DomainFormatFlags flags);

/* Migration support (migration.c drives these). */
QemuMonitor *domain_monitor(Domain *d);
/* Destination: starts QEMU with -incoming defer and has it listen on incoming_uri (QEMU syntax);
 * done when it listens. The domain is then paused (reason migration) and owned by the migration.
 * tls_dir (or NULL): QEMU accepts only a TLS stream, with the x509 server credentials there. */
int domain_start_incoming(Domain *d, const char *incoming_uri, const char *tls_dir, DomainDone done,
                          void *userdata);
/* Takes (or gives back) the domain's operation slot for a migration. */
int domain_begin_migration(Domain *d, Migration *m);
void domain_end_migration(Domain *d);
/* The same without touching the live state (ferryd exiting). */
void domain_detach_migration(Domain *d);
/* Saves the live state again (the migration's progress is part of it). */
void domain_save_live_state(Domain *d);
/* A paused guest gets this reason (REASON_*); a running one is left as it is. */
void domain_set_paused_reason(Domain *d, const char *reason);
/* Source, after a good Finish: QEMU goes, the domain is shut off (reason migrated); a transient
 * domain disappears. Destination, Finish: the guest runs (reason migrated) or stays paused. */
void domain_confirm_migrated_out(Domain *d);
int domain_run_after_migration(Domain *d, bool paused, const char *reason, DomainDone done, void *userdata);
/* Throws away a domain that never ran here (a failed incoming migration). */
void domain_discard_incoming(Domain *d);

/* Change protection (libvirt's VIR_MIGRATE_CHANGE_PROTECTION, always on): while a migration
 * moves the domain, in either direction, its definition must stay what was sent. */
bool domain_is_migrating(const Domain *d);

/* True while an operation is running (keeps ferryd from exiting on idle). */
bool domain_is_busy(const Domain *d);

/* Memory dumps (domain-dump.c): QEMU writes the guest's physical memory as an ELF core into fd
 * (a regular file open for writing; QEMU gets a duplicate). Only a paused domain (-ENOTCONN
 * otherwise): a running guest would change under the dump. One at a time, as every operation
 * (-EBUSY). done when every byte is written. */
int domain_dump_memory(Domain *d, int fd, DomainDone done, void *userdata);
void domain_dump_completed(Domain *d, JsonObject *data);

/* The operation slot, for operations kept in their own files. */
int domain_op_begin(Domain *d, DomainOperation op, DomainDone done, void *userdata);
void domain_op_abandon(Domain *d);   /* starting failed: free the slot, done is not called */
void domain_op_finish(Domain *d, int error, const char *message);
