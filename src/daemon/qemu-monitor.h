/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* The QEMU Machine Protocol (QMP) client: the one place in ferryd that talks to QEMU.
 *
 * Everything runs on the caller's sd-event loop and nothing blocks. On connection the monitor
 * reads QEMU's greeting, negotiates with qmp_capabilities (no OOB), and then calls ready().
 * Commands are written in submission order, each with its own numeric id, and may be pipelined;
 * replies are matched by id. QEMU must run its monitor in the default compact mode (one message
 * per line; not "pretty=on").
 *
 * No function of this API calls a callback synchronously: callbacks only run from the event
 * loop. Any callback may send commands or free the monitor; after qemu_monitor_free() no callback
 * of that monitor is called again, not even for commands still pending (their replies are
 * dropped silently, systemd-style: the owner freeing the monitor frees its own per-command state
 * too). */

#define QEMU_MONITOR_MESSAGE_MAX (16U * 1024U * 1024U)     /* bigger lines close with -EMSGSIZE */
#define QEMU_MONITOR_COMMANDS_MAX 256U                      /* more pending: -EBUSY */
#define QEMU_MONITOR_TIMEOUT_DEFAULT_USEC (30ULL * 1000000ULL)

typedef struct QemuMonitor QemuMonitor;

typedef struct QemuMonitorCallbacks {
        /* An asynchronous QMP event (STOP, RESUME, SHUTDOWN, POWERDOWN, RESET, MIGRATION,
         * MIGRATION_PASS, BLOCK_JOB_*, ...). data may be NULL; it is borrowed for the call. */
        void (*event)(QemuMonitor *mon, const char *name, JsonObject *data, void *userdata);
        /* Called once when the connection is over; the monitor is dead afterwards (commands fail
         * with -ENOTCONN) but must still be freed by its owner. Pending commands were answered
         * with -ECONNRESET just before. error is 0 when QEMU closed the connection after the
         * negotiation (it exited, or quit); otherwise <0: -ECONNRESET (closed before negotiation
         * finished), -ETIMEDOUT (no greeting/negotiation within the default timeout), -EBADMSG
         * (not QMP: garbage, not a JSON object, unexpected greeting), -EMSGSIZE (a line longer
         * than QEMU_MONITOR_MESSAGE_MAX), -EPROTO (qmp_capabilities refused), or the errno of a
         * failed read/write/connect. May be NULL. */
        void (*closed)(QemuMonitor *mon, int error, void *userdata);
        /* Negotiation finished: commands go out from now on (commands sent earlier were queued
         * and follow at once). May be NULL. */
        void (*ready)(QemuMonitor *mon, void *userdata);
} QemuMonitorCallbacks;

/* Called exactly once per command, unless the monitor is freed first:
 *   error == 0: success; ret is QMP's "return" member (any JSON node; borrowed for the call);
 *   error == -EREMOTEIO: QEMU refused; error_class/error_desc are QMP's "error" object
 *     (e.g. "GenericError", "DeviceNotActive");
 *   error == -ECONNRESET: the connection ended before the reply (class, desc, ret NULL);
 *   error == -ETIMEDOUT: no reply within the command's timeout (a late reply is dropped; the
 *     connection stays usable). */
typedef void (*QemuMonitorReply)(QemuMonitor *mon, int error, const char *error_class,
                                 const char *error_desc, JsonNode *ret, void *userdata);

/* Connect to QEMU's listening QMP UNIX socket (a path, not abstract). Never blocks. cb is copied. */
int qemu_monitor_connect(sd_event *event, const char *socket_path, const QemuMonitorCallbacks *cb,
                         void *userdata, QemuMonitor **ret);
/* Take ownership of an already connected stream socket fd (closed even on failure); it is made
 * O_NONBLOCK. */
int qemu_monitor_connect_fd(sd_event *event, int fd, const QemuMonitorCallbacks *cb,
                            void *userdata, QemuMonitor **ret);

/* Send a command. args may be NULL; the monitor always takes ownership of args (a JsonObject
 * reference), also when it fails. timeout_usec 0 means QEMU_MONITOR_TIMEOUT_DEFAULT_USEC,
 * UINT64_MAX means none. reply may be NULL to ignore the answer. Returns 0 when queued, -ENOTCONN
 * on a closed monitor, -EBUSY when QEMU_MONITOR_COMMANDS_MAX commands are pending. */
int qemu_monitor_command(QemuMonitor *mon, const char *command, JsonObject *args,
                         uint64_t timeout_usec, QemuMonitorReply reply, void *userdata);
/* The same, passing fd (duplicated: the caller keeps its own; <0: none) with SCM_RIGHTS in the
 * same sendmsg() as the command's first byte, as "getfd" and "add-fd" expect. QEMU keeps only the
 * last fd it received until a command takes it, so such a command is sent only when no other
 * command is awaiting a reply, and nothing follows it until it is answered. */
int qemu_monitor_command_with_fd(QemuMonitor *mon, const char *command, JsonObject *args, int fd,
                                 uint64_t timeout_usec, QemuMonitorReply reply, void *userdata);

/* Closes the connection and drops pending commands without calling their replies. Safe to call
 * from any callback of this monitor. */
QemuMonitor *qemu_monitor_free(QemuMonitor *mon);
DEFINE_TRIVIAL_CLEANUP_FUNC(QemuMonitor *, qemu_monitor_free);

bool qemu_monitor_is_ready(QemuMonitor *mon);

/* QEMU's RunState ("status" of query-status), folded into what ferryd acts on. */
typedef enum QemuRunState {
        QEMU_RUN_STATE_RUNNING,         /* running */
        QEMU_RUN_STATE_PRELAUNCH,       /* prelaunch: started with -S, never ran; cont starts it */
        QEMU_RUN_STATE_PAUSED,          /* paused (stop), debug (gdbstub), save-vm/restore-vm
                                         * (snapshot in progress), colo (unused by ferry) */
        QEMU_RUN_STATE_INMIGRATE,       /* inmigrate: destination, waiting for or loading a stream */
        QEMU_RUN_STATE_FINISH_MIGRATE,  /* finish-migrate: source, paused for the final pass */
        QEMU_RUN_STATE_POSTMIGRATE,     /* postmigrate: source after migration, paused; cont resumes */
        QEMU_RUN_STATE_SUSPENDED,       /* suspended: guest in ACPI S3; system_wakeup resumes */
        QEMU_RUN_STATE_SHUTDOWN,        /* shutdown: guest shut down (with -no-shutdown) */
        QEMU_RUN_STATE_ERROR,           /* paused by a fault: io-error (cont may retry),
                                         * internal-error, guest-panicked, watchdog */
        _QEMU_RUN_STATE_MAX,
        _QEMU_RUN_STATE_INVALID = -EINVAL,
} QemuRunState;

/* Maps one of QEMU's RunState strings; unknown strings give _QEMU_RUN_STATE_INVALID. */
QemuRunState qemu_monitor_status_from_string(const char *s);
/* Our name of a folded state ("running", "prelaunch", "paused", "inmigrate", "finish-migrate",
 * "postmigrate", "suspended", "shutdown", "error"), NULL when out of range. */
const char *qemu_run_state_to_string(QemuRunState state);
