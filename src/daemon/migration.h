/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* A migration job, libvirt's v3 protocol (Begin, Prepare, Perform, Finish, Confirm), in the
 * peer-to-peer flow: the source ferryd drives every phase and talks to the destination ferryd
 * itself (migration-peer.c); or in the managed direct flow: a client drives the phases on both
 * ferryds (migration-managed.c). The destination keeps its own Migration object for the
 * incoming side. No bus code for our own clients here: migration-dbus.c is that edge. */

typedef struct Manager Manager;
typedef struct Domain Domain;
typedef struct QemuMonitor QemuMonitor;
typedef struct OutgoingMigrationRecord OutgoingMigrationRecord;
typedef struct MigrationTunnel MigrationTunnel;

/* The answer to an asynchronous step: error < 0 with a message when it failed. */
typedef void (*MigrationDone)(void *userdata, int error, const char *message);

typedef enum MigrationDirection { MIGRATION_OUTGOING, MIGRATION_INCOMING } MigrationDirection;

typedef enum MigrationPhase {
        MIGRATION_PHASE_BEGIN,
        MIGRATION_PHASE_PREPARE,
        MIGRATION_PHASE_PERFORM,
        MIGRATION_PHASE_FINISH,
        MIGRATION_PHASE_CONFIRM,
        _MIGRATION_PHASE_MAX,
} MigrationPhase;

typedef enum MigrationState {
        MIGRATION_RUNNING,
        MIGRATION_COMPLETED,
        MIGRATION_FAILED,
        MIGRATION_CANCELLED,
        _MIGRATION_STATE_MAX,
} MigrationState;

/* Live figures from QEMU's query-migrate. */
typedef struct MigrationStats {
        uint64_t elapsed_usec;
        uint64_t setup_usec;
        uint64_t data_total, data_processed, data_remaining;
        uint64_t bytes_per_second;
        uint64_t dirty_pages_rate;
        uint64_t iteration;
        uint64_t expected_downtime_usec;
        uint64_t downtime_usec;
        unsigned cpu_throttle_percent;  /* auto-converge: the last throttle QEMU applied */
} MigrationStats;

/* copy_storage: libvirt's VIR_MIGRATE_NON_SHARED_DISK (all) and _INC (inc). */
typedef enum MigrationCopyStorage {
        MIGRATION_COPY_STORAGE_NONE,
        MIGRATION_COPY_STORAGE_ALL,    /* blockdev-mirror sync=full */
        MIGRATION_COPY_STORAGE_INC,    /* sync=top: the destination has the backing chain */
        _MIGRATION_COPY_STORAGE_MAX,
        _MIGRATION_COPY_STORAGE_INVALID = -EINVAL,
} MigrationCopyStorage;

typedef struct MigrationDiskSize {
        char *target;              /* "vda" */
        uint64_t size;             /* virtual size in bytes */
} MigrationDiskSize;

typedef struct MigrationStorage MigrationStorage;

typedef struct MigrationOptions {
        char *hypervisor_uri;      /* NULL: the destination picks */
        uint64_t max_bandwidth;    /* bytes/s; 0 = unlimited */
        uint64_t max_downtime_usec;/* 0 = QEMU's default (300 ms) */
        bool paused;               /* leave the guest paused on the destination */
        bool persistent;           /* define it on the destination (seed: --persistent) */
        bool undefine_source;      /* remove the source's definition (seed: --undefinesource) */
        bool offline;              /* move the definition only (seed: "Offline migration") */
        bool direct;               /* unmanaged direct: the destination is a hypervisor URI, a QEMU
                                    * listening there, with no ferryd (seed: "Unmanaged direct") */
        bool tls;                  /* QEMU's own TLS (tls-creds-x509) for the stream (seed: VIR_MIGRATE_TLS) */
        bool auto_converge;        /* source: QEMU throttles the guest's vCPUs until the copy
                                    * converges (VIR_MIGRATE_AUTO_CONVERGE) */
        bool change_protection;    /* accepted for libvirt's sake; always on (see docs/migration.md) */
        char *destination_xml;     /* source: what the destination defines instead of our migratable
                                    * XML; the same guest ABI (VIR_MIGRATE_PARAM_DEST_XML) */
        char *destination_name;    /* source: the guest's name there (VIR_MIGRATE_PARAM_DEST_NAME) */
        char *listen_address;      /* destination: the IP address its QEMU listens on
                                    * (VIR_MIGRATE_PARAM_LISTEN_ADDRESS) */
        uint64_t suspend_timeout_usec; /* source: pause the guest if Perform lasts longer (virsh
                                    * migrate --timeout); 0 = never */
        MigrationCopyStorage copy_storage; /* copy the disks over NBD (migration-storage.c) */
        char **disks;              /* source: the targets to copy; NULL = every writable, unshared disk */
        char *disks_uri;           /* where the destination's NBD server listens (tcp:// or unix://);
                                    * NULL = the hypervisor URI's host, a port from the range */
        MigrationDiskSize *disk_sizes; /* Prepare: the copied disks and their virtual sizes (from the source) */
        size_t n_disk_sizes;
        char **storage_created;    /* destination, internal: images Prepare created (removed on failure) */
        bool postcopy;             /* both: post-copy armed (QEMU's postcopy-ram); StartPostCopy
                                    * switches (VIR_MIGRATE_POSTCOPY) */
        uint64_t postcopy_bandwidth; /* source: bytes/s in the post-copy phase; 0 = unlimited */
        unsigned parallel_connections; /* both: QEMU multifd with that many channels; 0 = off
                                    * (VIR_MIGRATE_PARALLEL) */
        bool tunnelled;            /* both: the streams go through ferry-transport helpers
                                    * (VIR_MIGRATE_TUNNELLED; migration-tunnel.c) */
        bool tunnel_plaintext;     /* both: the tunnel without TLS, where both hosts allow it */
        char *tunnel_token;        /* destination: the routing token the source made */
} MigrationOptions;

/* Where post-copy stands (Migration.PostCopy): armed until StartPostCopy has switched; from
 * "active" on, the destination runs the guest and the source never resumes it. */
typedef enum MigrationPostcopy {
        MIGRATION_POSTCOPY_OFF,
        MIGRATION_POSTCOPY_ARMED,
        MIGRATION_POSTCOPY_ACTIVE,
        MIGRATION_POSTCOPY_PAUSED,      /* the stream broke: Recover, or the guest stays stuck */
        MIGRATION_POSTCOPY_RECOVERING,
        MIGRATION_POSTCOPY_COMPLETED,
        MIGRATION_POSTCOPY_FAILED,      /* cannot recover: the memory is split between the hosts */
        _MIGRATION_POSTCOPY_MAX,
} MigrationPostcopy;

#define MIGRATION_PARALLEL_CONNECTIONS_MAX 16u

typedef struct Migration {
        Manager *manager;
        unsigned id;
        char *object_path;
        MigrationDirection direction;
        MigrationPhase phase;
        MigrationState state;
        char *domain_name;
        char *domain_path;         /* the domain's object path on this host */
        char *destination_uri;     /* outgoing */
        char *hypervisor_uri;      /* where QEMU's stream goes / comes in */
        char *tls_hostname;        /* outgoing with tls: the name the destination's certificate must carry */
        MigrationOptions options;
        MigrationStats stats;
        uint64_t started_usec;     /* CLOCK_MONOTONIC: the destination's elapsed time (QEMU reports none there) */
        char *error_name;
        char *error_message;

        /* The client whose going away ends the job: the one that called MigrateBegin (managed
         * direct, outgoing), the caller of PrepareMigration (incoming). */
        char *client;              /* its unique bus name */
        sd_bus_track *client_track;
        sd_bus_slot *client_check; /* GetNameOwner: was it gone before we watched? */

        /* outgoing */
        bool managed;              /* managed direct: a client drives the phases */
        bool perform_done;         /* managed: QEMU sent everything, the guest is paused here */
        void (*after_final_stats)(struct Migration *m); /* Confirm, once QEMU's final figures are read */
        MigrationDone perform_done_cb; /* managed: the answer to Perform */
        void *perform_userdata;
        sd_bus *peer;              /* connection to the destination ferryd */
        char *peer_migration;      /* its Migration object */
        char *peer_owner;          /* the unique name of the ferryd that prepared it */
        sd_bus_slot *peer_watch;   /* NameOwnerChanged: that ferryd going away */
        sd_bus_slot *peer_call;
        sd_bus_slot *abort_call;   /* Finish(false) after a failure: the peer stays open for it */
        bool finish_sent;          /* after this, losing the peer leaves the guest paused */
        bool recovered;            /* taken over by a restarted ferryd, only to be undone */
        bool source_was_running;   /* resume it when the migration fails (options.paused is the
                                    * destination's, and also set when the source was paused) */
        /* incoming */
        uint16_t incoming_port;    /* taken from the port range while we listen */
        bool qemu_completed;       /* QEMU has the whole stream */
        sd_bus_message *pending_finish; /* Finish came before that */

        MigrationStorage *storage; /* copy_storage: the disks' side of the job (both directions) */
        /* post-copy (migration-postcopy.c) */
        MigrationPostcopy postcopy;
        bool postcopy_requested;   /* source: StartPostCopy came; sent to QEMU once it migrates */
        bool migrate_sent;         /* source: QEMU's migrate went out */
        bool finish_answered;      /* source, post-copy: the destination runs the guest */
        bool outgoing_completed;   /* source, post-copy: QEMU sent the last page */
        bool running_here;         /* destination, post-copy: Finish ran the guest before QEMU completed */
        sd_bus_slot *recover_call; /* source: the destination's Recover */
        void (*recover_done)(void *userdata, int error, const char *message, const char *hypervisor_uri);
        void *recover_userdata;    /* the caller of Recover, answered once QEMU took it */
        sd_event_source *recover_timer; /* source: QEMU does not say when it cannot reconnect */

        /* tunnelled (migration-tunnel.c): this side's helper unit */
        MigrationTunnel *tunnel;
        unsigned tunnel_generation; /* helper pairs started before this one (post-copy recovery) */
        void *tunnel_prepare;      /* destination: the Prepare waiting for the helper */

        sd_event_source *stats_timer;
        sd_event_source *suspend_timer;  /* suspend_timeout_usec */
        sd_event_source *expire_timer;
        sd_event_source *emit_timer;   /* coalesces PropertiesChanged */
        uint64_t last_emit_usec;
        bool emit_pending;
} Migration;

#define MIGRATIONS_MAX 4u                       /* running at once on one host */
#define MIGRATIONS_KEPT_MAX 64u                 /* ended ones still visible */

/* QEMU's own TLS: x509 files in libvirt's layout under CONFIG_DIR/pki/qemu (ca-cert.pem,
 * server-cert.pem and server-key.pem for the destination, client-cert.pem and client-key.pem
 * for the source, optional dh-params.pem); QEMU reads them itself, as a tls-creds-x509 object. */
#define MIGRATION_TLS_OBJECT_ID "ferry-migrate-tls"
/* The directory for config_dir (g_free() it). */
char *migration_tls_dir(const char *config_dir);
/* 0 if the files of that endpoint are there and readable; else -ENOENT (or another error) and
 * a message naming the first missing file. */
int migration_tls_check_files(const char *dir, bool server, char **ret_error);
/* The arguments of QMP's object-add for the credentials. */
JsonObject *migration_tls_object_args(const char *dir, bool server);

const char *migration_phase_to_string(MigrationPhase p);
const char *migration_state_to_string(MigrationState s);
const char *migration_direction_to_string(MigrationDirection d);

void migration_options_done(MigrationOptions *o);

/* Source side: starts a peer-to-peer migration of d to destination_uri (a ferry URI). Returns
 * the job at once (it is announced on the bus before the caller's reply). -EBUSY: d is busy;
 * -E2BIG: too many migrations; -EINVAL with *ret_error for a bad URI. */
int migration_start_outgoing(Domain *d, const char *destination_uri, MigrationOptions *options,
                             Migration **ret, char **ret_error);

/* Managed direct, source side (migration-managed.c). Begin: the checks of
 * migration_start_outgoing, the job (phase begin) holding the domain's slot, and the XML for
 * the destination's Prepare (g_free() it). client: the caller's unique bus name; only it may
 * drive the job, and its going away ends the job. */
int migration_begin_managed(Domain *d, const char *destination_uri, MigrationOptions *options,
                            const char *client, Migration **ret, char **ret_xml, char **ret_error);
/* Perform: hypervisor_uri is what the destination's Prepare returned. done() runs once QEMU
 * sent everything (the guest is paused here), or with the error (the guest runs here again).
 * -ENOTCONN: not the phase for it; -EINVAL with *ret_error: a bad address. */
int migration_perform_managed(Migration *m, const char *hypervisor_uri, MigrationDone done, void *userdata,
                              char **ret_error);
/* Confirm: success -> the source's QEMU goes (and the definition with undefine_source);
 * false -> the guest runs here again. -ENOTCONN: not the phase for it. */
int migration_confirm_managed(Migration *m, bool success);
/* Whether name is the client that drives m (always true for jobs without one). */
bool migration_is_client(const Migration *m, const char *name);
/* Watches the unique bus name of m's client (see Migration.client). */
int migration_track_client(Migration *m, const char *name);

const char *migration_flow_to_string(const Migration *m);

/* Destination side, called by the source's ferryd: Prepare. Defines the incoming domain,
 * starts its QEMU waiting for the stream; done() gets the hypervisor URI to give the source. */
typedef void (*MigrationPrepared)(void *userdata, Migration *m, int error, const char *message,
                                  const char *hypervisor_uri);
int migration_prepare_incoming(Manager *manager, const char *xml, MigrationOptions *options,
                               MigrationPrepared done, void *userdata, char **ret_error);

/* Destination side: Finish. success=false: throw the incoming guest away. The reply comes once
 * the guest runs (or is gone). */
int migration_finish_incoming(Migration *m, bool success, MigrationDone done, void *userdata);

int migration_cancel(Migration *m);
int migration_set_max_bandwidth(Migration *m, uint64_t bytes_per_second);
int migration_set_max_downtime(Migration *m, uint64_t usec);

/* migration-postcopy.c */
const char *migration_postcopy_to_string(MigrationPostcopy p);
/* Source: switch to post-copy now (or as soon as QEMU migrates). -ENOTCONN: not a running
 * outgoing migration; -EOPNOTSUPP: not armed; -EALREADY: switched already. */
int migration_start_postcopy(Migration *m);
/* Recover a paused post-copy. Source: the destination's Recover, then QEMU's migrate with
 * resume; done(userdata, error, message, uri). Destination: migrate-recover on a new port,
 * done gets the address for the source. -ENOTCONN: not paused in post-copy. */
typedef void (*MigrationRecovered)(void *userdata, int error, const char *message, const char *hypervisor_uri);
int migration_recover(Migration *m, MigrationRecovered done, void *userdata);

Migration *migration_free(Migration *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Migration *, migration_free);

/* A restarted ferryd found d's QEMU migrating away (rec, from the live state): before Finish it
 * cancels QEMU's migration, tells the destination to drop its half and resumes the guest; after
 * Finish it leaves the guest paused (REASON_MIGRATION_INTERRUPTED). Either way a failed
 * Migration object says what happened. */
void migration_recover_outgoing(Domain *d, OutgoingMigrationRecord *rec);

/* Called by the domain for its QEMU's MIGRATION events, and when its QEMU is gone. */
void migration_qemu_event(Migration *m, const char *status);
void migration_domain_stopped(Migration *m);
