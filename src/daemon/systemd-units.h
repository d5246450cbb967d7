/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "macro.h"

/* The one place that asks systemd (org.freedesktop.systemd1) for units: QEMU and transport
 * helpers run as transient services, so that they outlive ferryd and are accounted, limited
 * and logged by systemd like any service. */

typedef struct UnitJob UnitJob;

/* Called once when systemd has finished the job: error 0 means "done" (for a start job with
 * Type=exec: the program was executed), else -errno with a message (job result or bus error). */
typedef void (*UnitJobDone)(void *userdata, int error, const char *message);

typedef struct TransientService {
        const char *name;          /* "ferry-qemu-web1.service" */
        const char *description;
        const char *slice;         /* e.g. "machine.slice" */
        char **argv;               /* argv[0] is the absolute path */
        uint64_t stop_timeout_usec;/* SIGTERM, then SIGKILL after this long */
        /* Type=notify (NotifyAccess=main) instead of exec: the start job ends at READY=1. */
        bool notify;
        /* CollectMode=inactive-or-failed instead of inactive: nothing stays behind. */
        bool collect_failed;
        /* The transport helper's sandbox (docs/transport.md, "The transient units"); writable:
         * only the runtime directory. */
        bool sandbox;
        /* With sandbox: RestrictAddressFamilies=AF_UNIX only (no IP socket can be created; sockets
         * received over a UNIX socket still work), instead of AF_UNIX AF_INET AF_INET6. */
        bool unix_sockets_only;
        /* DynamicUser=yes: a user of its own that exists while the unit runs. */
        bool dynamic_user;
        const char *runtime_directory; /* RuntimeDirectory=, relative to /run, owned by the unit's user */
        const char *supplementary_group; /* SupplementaryGroups= (one) */
        char **credentials;            /* NULL-terminated "ID", "PATH" pairs for LoadCredential= */
        /* > 0: the service's stdin (StandardInputFileDescriptor=; systemd keeps a copy), with
         * stdout and stderr to the journal instead of inheriting it. */
        int stdin_fd;
} TransientService;

/* Starts the unit; done is called when the start job finishes. The caller owns *ret and may
 * lose interest with unit_job_free() (systemd's job goes on). */
int unit_start_transient(sd_bus *bus, const TransientService *svc, UnitJobDone done, void *userdata,
                         UnitJob **ret);

/* StartUnit(name, "replace") of an installed unit (ferry-peer.socket); done when systemd's job
 * finished: 0 once it is active, else -errno with a message (a masked unit: the bus error's). */
int unit_start(sd_bus *bus, const char *name, UnitJobDone done, void *userdata, UnitJob **ret);

/* StopUnit(name, "replace"): SIGTERM, escalating to SIGKILL after the unit's stop timeout. */
int unit_stop(sd_bus *bus, const char *name, UnitJobDone done, void *userdata, UnitJob **ret);

/* Forgets a failed unit of that name, so that the name can be used again. Fire and forget. */
int unit_reset_failed(sd_bus *bus, const char *name);

/* Synchronous query, for start-up only: ActiveState ("active", "failed", ...) and Result;
 * -ENOENT if systemd does not know the unit. */
int unit_get_state(sd_bus *bus, const char *name, char **ret_active_state, char **ret_result);

/* Follows a unit through systemd's PropertiesChanged signals (ferryd subscribes for them):
 * called with the unit's ActiveState whenever it changes, and the last StatusText (sd_notify's
 * STATUS=) and Result systemd sent with it. */
typedef struct UnitWatch UnitWatch;
typedef void (*UnitStateChanged)(void *userdata, const char *active_state, const char *status_text,
                                 const char *result);
int unit_watch(sd_bus *bus, const char *name, UnitStateChanged cb, void *userdata, UnitWatch **ret);
UnitWatch *unit_watch_free(UnitWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(UnitWatch *, unit_watch_free);

UnitJob *unit_job_free(UnitJob *job);
DEFINE_TRIVIAL_CLEANUP_FUNC(UnitJob *, unit_job_free);

/* "ferry-qemu-" + name + ".service", with name escaped as systemd-escape does for a unit name
 * component (our domain names are already restricted to safe characters). */
char *unit_name_for_domain(const char *domain_name);
