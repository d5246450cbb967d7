/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "domain-store.h"
#include "domain.h"
#include "migration.h"
#include "migration-postcopy.h"
#include "migration-storage.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "qemu-command.h"
#include "qemu-monitor.h"
#include "systemd-units.h"

#define USEC_PER_SEC 1000000ULL
/* From the unit running to QEMU's QMP greeting and our first answer. */
#define QMP_READY_TIMEOUT_USEC (30ULL * USEC_PER_SEC)

static const char *const state_names[_DOMAIN_STATE_MAX] = {
        [DOMAIN_SHUTOFF] = "shutoff",
        [DOMAIN_RUNNING] = "running",
        [DOMAIN_PAUSED] = "paused",
        [DOMAIN_CRASHED] = "crashed",
};

const char *domain_state_to_string(DomainState s) {
        return (unsigned) s < _DOMAIN_STATE_MAX ? state_names[s] : NULL;
}

bool domain_is_active(const Domain *d) {
        return d->state == DOMAIN_RUNNING || d->state == DOMAIN_PAUSED || d->op == DOMAIN_OP_START;
}

bool domain_is_busy(const Domain *d) {
        return d->op != DOMAIN_OP_NONE || d->reattaching;
}

static void set_state(Domain *d, DomainState state, const char *reason) {
        if (d->state == state && strcmp(d->reason, reason) == 0)
                return;
        log_info("Domain %s: %s (%s) -> %s (%s).", d->def->name, domain_state_to_string(d->state),
                 d->reason, domain_state_to_string(state), reason);
        d->state = state;
        d->reason = reason;
        /* live_def is set exactly while a QEMU of ours may exist. */
        if (d->live_def)
                (void) domain_store_save_live(d);
        manager_domain_changed(d->manager, d, DOMAIN_CHANGE_STATE);
}

int domain_new(Manager *m, DomainDef *def, bool persistent, Domain **ret) {
        _cleanup_(domain_freep) Domain *d = NULL;
        int r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        *d = (Domain) {
                .manager = m,
                .persistent = persistent,
                .state = DOMAIN_SHUTOFF,
                .reason = REASON_UNKNOWN,
                .qmp_stdin_peer = -EBADF,
        };
        domain_uuid_format(def->uuid, d->uuid_string);
        d->unit = unit_name_for_domain(def->name);
        d->run_dir = g_build_filename(m->runtime_dir, "domains", d->uuid_string, NULL);
        d->qmp_path = g_build_filename(d->run_dir, "qmp.sock", NULL);
        r = sd_bus_path_encode(FERRY_DOMAIN_PATH_PREFIX, d->uuid_string, &d->object_path);
        if (r < 0)
                return r;

        r = manager_register_domain(m, d, def);
        if (r < 0)
                return r;
        d->def = def;
        *ret = TAKE_PTR(d);
        return 0;
}

static void op_finish(Domain *d, int error, const char *message);
static void on_unit_stopped(void *userdata, int error, const char *message);

static void release_qemu(Domain *d) {
        d->monitor = qemu_monitor_free(d->monitor);
        d->qmp_stdin_peer = safe_close(d->qmp_stdin_peer);
        d->unit_job = unit_job_free(d->unit_job);
}

Domain *domain_free(Domain *d) {
        if (!d)
                return NULL;
        /* An operation still waiting learns that it will not complete. */
        if (d->op != DOMAIN_OP_NONE && d->op_done) {
                DomainDone done = d->op_done;
                d->op_done = NULL;
                done(d->op_userdata, -ECANCELED, "the domain went away");
        }
        release_qemu(d);
        sd_event_source_disable_unref(d->op_timer);
        if (d->def)
                manager_unregister_domain(d->manager, d);
        domain_def_free(d->def);
        domain_def_free(d->live_def);
        free(d->object_path);
        free(d->unit);
        free(d->run_dir);
        free(d->qmp_path);
        free(d->incoming_uri);
        free(d->incoming_tls_dir);
        domain_def_free(d->incoming_def);
        outgoing_migration_record_done(&d->reattaching_outgoing);
        return mfree(d);
}

/* Ends the current operation and tells its caller. The callback runs last: it may reply on
 * the bus, and the domain must be consistent by then. */
static void op_finish(Domain *d, int error, const char *message) {
        DomainDone done = d->op_done;
        void *userdata = d->op_userdata;

        d->op = DOMAIN_OP_NONE;
        d->op_done = NULL;
        d->op_userdata = NULL;
        d->op_timer = sd_event_source_disable_unref(d->op_timer);
        manager_check_idle(d->manager);
        if (done)
                done(userdata, error, message);
}

static int op_begin(Domain *d, DomainOperation op, DomainDone done, void *userdata) {
        if (d->op != DOMAIN_OP_NONE || d->reattaching)
                return -EBUSY;
        d->op = op;
        d->op_done = done;
        d->op_userdata = userdata;
        return 0;
}

/* QEMU is gone (or never came): tidy up, decide what the domain is now, and end a pending
 * operation with op_error (0: the operation achieved what it wanted). May free d when the
 * domain was transient. */
static void domain_stopped(Domain *d, DomainState state, const char *reason, int op_error,
                           const char *op_message) {
        Migration *migration = TAKE_PTR(d->migration);

        release_qemu(d);
        d->live_def = domain_def_free(d->live_def);
        d->incoming_uri = mfree(d->incoming_uri);
        d->incoming_tls_dir = mfree(d->incoming_tls_dir);
        d->exit_expected = false;
        d->exit_reason = NULL;
        domain_store_remove_live(d);
        /* A failed unit would keep the name taken for the next start. */
        if (state == DOMAIN_CRASHED || strcmp(reason, REASON_FAILED) == 0)
                (void) unit_reset_failed(manager_bus(d->manager), d->unit);
        set_state(d, state, reason);

        if (d->op != DOMAIN_OP_NONE)
                op_finish(d, op_error, op_message);
        if (migration)
                migration_domain_stopped(migration);
        if (!d->persistent)
                manager_remove_domain(d->manager, d);
}

/* The error an interrupted operation reports when QEMU goes away under it. */
static int op_error_on_exit(const Domain *d) {
        return d->op == DOMAIN_OP_SHUTDOWN || d->op == DOMAIN_OP_DESTROY ? 0 : -EIO;
}

static void stop_qemu_after_failure(Domain *d, int error, const char *message) {
        log_error_errno(error, "Domain %s: %s", d->def->name, message);
        d->exit_expected = true;
        d->exit_reason = REASON_FAILED;
        /* Report the real cause now; QEMU is stopped in the background. */
        op_finish(d, error, message);
        if (d->monitor && qemu_monitor_is_ready(d->monitor) &&
            qemu_monitor_command(d->monitor, "quit", NULL, 0, NULL, NULL) >= 0)
                return;
        d->unit_job = unit_job_free(d->unit_job);
        if (unit_stop(manager_bus(d->manager), d->unit, on_unit_stopped, d, &d->unit_job) < 0)
                domain_stopped(d, DOMAIN_SHUTOFF, REASON_FAILED, 0, NULL);
}

/* ---- QMP ---- */

static void start_listening(Domain *d);
static void continue_listening(Domain *d);

static void on_monitor_event(QemuMonitor *mon, const char *name, JsonObject *data, void *userdata) {
        Domain *d = userdata;

        if (strcmp(name, "MIGRATION") == 0) {
                const char *status = data ? json_object_get_string_member_with_default(data, "status", NULL) : NULL;
                if (d->migration && status)
                        migration_qemu_event(d->migration, status);
        } else if (g_str_has_prefix(name, "BLOCK_JOB_")) {
                if (d->storage_jobs)
                        storage_block_job_event(d->storage_jobs, name, data);
        } else if (strcmp(name, "DUMP_COMPLETED") == 0) {
                domain_dump_completed(d, data);
        } else if (strcmp(name, "STOP") == 0) {
                if (d->state == DOMAIN_RUNNING)
                        set_state(d, DOMAIN_PAUSED, d->op == DOMAIN_OP_SUSPEND ? REASON_USER :
                                                    d->op == DOMAIN_OP_MIGRATE ? REASON_MIGRATION : REASON_UNKNOWN);
        } else if (strcmp(name, "RESUME") == 0) {
                /* During a migration: QEMU resumed the source itself after the migration was
                 * cancelled or failed. */
                set_state(d, DOMAIN_RUNNING, d->op == DOMAIN_OP_RESUME ? (d->pending_reason ?: REASON_UNPAUSED) :
                                             d->op == DOMAIN_OP_START ? REASON_BOOTED :
                                             /* post-copy: the destination's QEMU starts the guest itself */
                                             d->op == DOMAIN_OP_MIGRATE ? (d->migration && d->migration->direction == MIGRATION_INCOMING ?
                                                                           REASON_MIGRATED : REASON_MIGRATION_CANCELLED) :
                                             REASON_UNKNOWN);
        } else if (strcmp(name, "SHUTDOWN") == 0) {
                bool guest = data && json_object_has_member(data, "guest") &&
                             json_object_get_boolean_member(data, "guest");
                /* We run QEMU with -no-shutdown: it waits for us to decide. on_poweroff=destroy
                 * (the only policy we act on yet) means: let it go. */
                if (!d->exit_expected) {
                        d->exit_expected = true;
                        d->exit_reason = guest ? REASON_SHUTDOWN : REASON_DESTROYED;
                }
                (void) qemu_monitor_command(mon, "quit", NULL, 0, NULL, NULL);
        } else if (strcmp(name, "GUEST_PANICKED") == 0) {
                d->exit_expected = true;
                d->exit_reason = REASON_PANICKED;
                set_state(d, DOMAIN_CRASHED, REASON_PANICKED);
                (void) qemu_monitor_command(mon, "quit", NULL, 0, NULL, NULL);
        }
}

static void on_monitor_closed(QemuMonitor *mon, int error, void *userdata) {
        Domain *d = userdata;

        if (d->exit_expected)
                domain_stopped(d, d->exit_reason && strcmp(d->exit_reason, REASON_PANICKED) == 0 ? DOMAIN_CRASHED : DOMAIN_SHUTOFF,
                               d->exit_reason ?: REASON_SHUTDOWN, op_error_on_exit(d), "QEMU exited");
        else {
                log_warning("Domain %s: QEMU went away unexpectedly.", d->def->name);
                domain_stopped(d, DOMAIN_CRASHED, REASON_CRASHED, -EIO, "QEMU exited unexpectedly");
        }
}

static void on_cont_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                          JsonNode *ret, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                stop_qemu_after_failure(d, error, error_desc ?: "QEMU refused to run the guest");
                return;
        }
        if (d->op == DOMAIN_OP_START) {
                set_state(d, DOMAIN_RUNNING, REASON_BOOTED);
                op_finish(d, 0, NULL);
        } else if (d->op == DOMAIN_OP_RESUME) {
                set_state(d, DOMAIN_RUNNING, d->pending_reason ?: REASON_UNPAUSED);
                d->pending_reason = NULL;
                op_finish(d, 0, NULL);
        }
}

static void on_status_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                            JsonNode *ret, void *userdata) {
        Domain *d = userdata;
        const char *status;
        QemuRunState s;

        if (error < 0 || !ret || !JSON_NODE_HOLDS_OBJECT(ret)) {
                if (d->reattaching) {
                        d->reattaching = false;
                        log_warning("Domain %s: cannot query QEMU's status, treating it as crashed.", d->def->name);
                        manager_check_idle(d->manager);
                        domain_stopped(d, DOMAIN_CRASHED, REASON_CRASHED, 0, NULL);
                        return;
                }
                stop_qemu_after_failure(d, error < 0 ? error : -EBADMSG, error_desc ?: "query-status failed");
                return;
        }
        status = json_object_get_string_member_with_default(json_node_get_object(ret), "status", "");
        s = qemu_monitor_status_from_string(status);

        if (d->reattaching) {
                d->reattaching = false;
                manager_check_idle(d->manager);
                if (d->reattaching_incoming && s != QEMU_RUN_STATE_RUNNING) {
                        /* An incoming migration whose ferryd died before Finish: the source
                         * still has the guest (it resumes it when Finish fails), so this copy
                         * must never run. */
                        d->reattaching_incoming = false;
                        log_warning("Domain %s: incoming migration was interrupted, discarding this copy.",
                                    d->def->name);
                        domain_discard_incoming(d);
                        return;
                }
                d->reattaching_incoming = false;
                if (d->reattaching_outgoing.active && (s == QEMU_RUN_STATE_SHUTDOWN || strcmp(status, "guest-panicked") == 0))
                        outgoing_migration_record_done(&d->reattaching_outgoing); /* the guest is gone anyway */
                if (s == QEMU_RUN_STATE_RUNNING)
                        set_state(d, DOMAIN_RUNNING, d->reason);
                else if (s == QEMU_RUN_STATE_SHUTDOWN) {
                        /* The guest powered off while nobody listened: finish the job now. */
                        d->exit_expected = true;
                        d->exit_reason = REASON_SHUTDOWN;
                        (void) qemu_monitor_command(mon, "quit", NULL, 0, NULL, NULL);
                } else if (strcmp(status, "guest-panicked") == 0) {
                        d->exit_expected = true;
                        d->exit_reason = REASON_PANICKED;
                        set_state(d, DOMAIN_CRASHED, REASON_PANICKED);
                        (void) qemu_monitor_command(mon, "quit", NULL, 0, NULL, NULL);
                } else
                        set_state(d, DOMAIN_PAUSED, d->state == DOMAIN_PAUSED ? d->reason : REASON_UNKNOWN);
                /* QEMU went on migrating while no ferryd was there: undo that, or say why not. */
                if (d->reattaching_outgoing.active)
                        migration_recover_outgoing(d, &d->reattaching_outgoing);
                outgoing_migration_record_done(&d->reattaching_outgoing);
                return;
        }

        /* Starting as a migration destination: have QEMU listen for the stream. */
        if (d->incoming_uri) {
                start_listening(d);
                return;
        }

        /* Starting: QEMU was started with -S and waits for us. */
        if (d->start_paused) {
                set_state(d, DOMAIN_PAUSED, REASON_USER);
                op_finish(d, 0, NULL);
                return;
        }
        (void) qemu_monitor_command(mon, "cont", NULL, 0, on_cont_reply, d);
}

static void on_incoming_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                              JsonNode *ret, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                stop_qemu_after_failure(d, error, error_desc ?: "QEMU cannot listen for the migration stream");
                return;
        }
        set_state(d, DOMAIN_PAUSED, REASON_MIGRATION);
        op_finish(d, 0, NULL);
}

static void listen_now(Domain *d) {
        JsonObject *incoming = json_object_new();

        json_object_set_string_member(incoming, "uri", d->incoming_uri);
        if (qemu_monitor_command(d->monitor, "migrate-incoming", incoming, 0, on_incoming_reply, d) < 0)
                stop_qemu_after_failure(d, -EIO, "cannot send migrate-incoming");
}

static void on_tls_parameters_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                    JsonNode *ret, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                stop_qemu_after_failure(d, error, error_desc ?: "QEMU refused the TLS parameters");
                return;
        }
        listen_now(d);
}

static void on_tls_creds_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                               JsonNode *ret, void *userdata) {
        Domain *d = userdata;
        JsonObject *params;

        if (error < 0) {
                g_autofree char *msg = g_strdup_printf("QEMU cannot load the TLS server credentials: %s",
                                                       error_desc ?: strerror(-error));
                stop_qemu_after_failure(d, error, msg);
                return;
        }
        params = json_object_new();
        json_object_set_string_member(params, "tls-creds", MIGRATION_TLS_OBJECT_ID);
        if (qemu_monitor_command(mon, "migrate-set-parameters", params, 0, on_tls_parameters_reply, d) < 0)
                stop_qemu_after_failure(d, -EIO, "cannot send migrate-set-parameters");
}

static void on_incoming_caps_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                   JsonNode *ret, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                /* postcopy-ram is where QEMU checks that it may use userfaultfd here: say so
                 * in Prepare's answer, before the source sends anything. */
                g_autofree char *msg = d->incoming_postcopy ?
                        g_strdup_printf("this host's QEMU cannot do post-copy (%s): the kernel refuses it userfaultfd "
                                        "(a seccomp filter, vm.unprivileged_userfaultfd) or its memory does not support it",
                                        error_desc ?: strerror(-error)) :
                        g_strdup_printf("QEMU refused the migration capabilities: %s", error_desc ?: strerror(-error));
                stop_qemu_after_failure(d, -EOPNOTSUPP, msg);
                return;
        }
        if (d->incoming_channels > 0) {
                JsonObject *params = json_object_new();
                json_object_set_int_member(params, "multifd-channels", d->incoming_channels);
                (void) qemu_monitor_command(d->monitor, "migrate-set-parameters", params, 0, NULL, NULL);
        }
        continue_listening(d);
}

static void start_listening(Domain *d) {
        JsonObject *caps_arg = json_object_new();
        JsonArray *caps = json_array_new();
        JsonObject *events = json_object_new();

        /* MIGRATION events on this side too, so Finish knows when the stream is complete. */
        json_object_set_string_member(events, "capability", "events");
        json_object_set_boolean_member(events, "state", true);
        json_array_add_object_element(caps, events);
        /* Post-copy and multifd are set on both ends, here before migrate-incoming. */
        if (d->incoming_postcopy)
                json_array_add_object_element(caps, migration_capability("postcopy-ram", true));
        if (d->incoming_channels > 0)
                json_array_add_object_element(caps, migration_capability("multifd", true));
        json_object_set_array_member(caps_arg, "capabilities", caps);
        if (qemu_monitor_command(d->monitor, "migrate-set-capabilities", caps_arg, 0, on_incoming_caps_reply, d) < 0)
                stop_qemu_after_failure(d, -EIO, "cannot send migrate-set-capabilities");
}

static void continue_listening(Domain *d) {
        if (!d->incoming_tls_dir) {
                listen_now(d);
                return;
        }
        /* QEMU's own TLS: the credentials and the parameter first, so that it never accepts a
         * plain stream; QEMU reads the files itself (it runs as root). */
        if (qemu_monitor_command(d->monitor, "object-add", migration_tls_object_args(d->incoming_tls_dir, true), 0,
                                 on_tls_creds_reply, d) < 0)
                stop_qemu_after_failure(d, -EIO, "cannot send object-add");
}

static void on_monitor_ready(QemuMonitor *mon, void *userdata) {
        Domain *d = userdata;
        int r = qemu_monitor_command(mon, "query-status", NULL, 0, on_status_reply, d);
        if (r < 0)
                on_status_reply(mon, r, NULL, "cannot send query-status", NULL, d);
}

static const QemuMonitorCallbacks monitor_callbacks = {
        .event = on_monitor_event,
        .closed = on_monitor_closed,
        .ready = on_monitor_ready,
};

/* A restarted ferryd re-attaching to a QEMU that is (nearly always) long up, through its
 * listening -qmp socket (domain_start() says why a starting QEMU is not connected this way). */
static int connect_monitor(Domain *d) {
        return qemu_monitor_connect(manager_event(d->manager), d->qmp_path, &monitor_callbacks, d, &d->monitor);
}

static int on_op_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        switch (d->op) {
        case DOMAIN_OP_START:
                stop_qemu_after_failure(d, -ETIMEDOUT, "QEMU did not open its monitor in time");
                break;
        case DOMAIN_OP_SHUTDOWN:
                /* The guest ignored the ACPI request: it keeps running, as with virsh. */
                op_finish(d, -ETIMEDOUT, "the guest did not shut down in time; it is still running");
                break;
        default:
                op_finish(d, -ETIMEDOUT, "QEMU did not answer in time");
        }
        return 0;
}

static int arm_op_timer(Domain *d, uint64_t usec) {
        return sd_event_add_time_relative(manager_event(d->manager), &d->op_timer, CLOCK_MONOTONIC, usec,
                                          USEC_PER_SEC / 10, on_op_timeout, d);
}

static void on_unit_started(void *userdata, int error, const char *message) {
        Domain *d = userdata;
        int r;

        d->unit_job = unit_job_free(d->unit_job);
        if (error < 0) {
                d->qmp_stdin_peer = safe_close(d->qmp_stdin_peer);
                /* Nothing runs, so nothing to stop. */
                g_autofree char *msg = g_strdup_printf("cannot start %s: %s", d->unit, message ?: "failed");
                log_error_errno(error, "Domain %s: %s", d->def->name, msg);
                domain_stopped(d, DOMAIN_SHUTOFF, REASON_FAILED, error, msg); /* may free d */
                return;
        }

        /* The connection exists already; QEMU greets on it once its monitor is set up. */
        r = qemu_monitor_connect_fd(manager_event(d->manager), TAKE_FD(d->qmp_stdin_peer), &monitor_callbacks, d,
                                    &d->monitor);
        if (r < 0)
                stop_qemu_after_failure(d, r, "cannot talk to QEMU's monitor");
}

int domain_start(Domain *d, bool paused, DomainDone done, void *userdata) {
        _cleanup_close_ int qmp_ours = -EBADF, qmp_qemus = -EBADF;
        g_autofree char *description = NULL;
        g_auto(GStrv) argv = NULL;
        QemuLaunchParams p;
        int r;

        if (domain_is_active(d))
                return -EALREADY;
        r = op_begin(d, DOMAIN_OP_START, done, userdata);
        if (r < 0)
                return r;

        r = g_mkdir_with_parents(d->run_dir, 0700) < 0 ? -errno : 0;
        if (r < 0)
                goto fail;
        (void) unlink(d->qmp_path);
        /* ferryd talks to the QEMU it starts over a socketpair, QEMU's end as its stdin: the
         * connection exists before QEMU does. Connecting to QEMU's listening socket while it
         * starts can race QEMU 7.2's move of the monitor to its I/O thread, after which QEMU
         * reads the connection from two threads and takes commands with bytes swapped
         * ("exectue"); seen in test-qemu-monitor under load. The listening socket stays for a
         * restarted ferryd (connect_monitor()). */
        {
                int pair[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
                        r = -errno;
                        goto fail;
                }
                qmp_ours = pair[0];
                qmp_qemus = pair[1];
        }

        p = (QemuLaunchParams) {
                .qmp_socket = d->qmp_path,
                .runtime_dir = d->run_dir,
                .kvm = manager_kvm_available(d->manager),
                .start_paused = true,    /* always: we connect before the guest runs */
                .incoming_defer = d->incoming_uri != NULL,
                .qmp_on_stdin = true,
        };
        r = qemu_build_argv(d->incoming_def ?: d->def, &p, &argv);
        if (r < 0)
                goto fail;

        d->live_def = d->incoming_def ? TAKE_PTR(d->incoming_def) : domain_def_copy(d->def);
        if (!d->live_def) {
                r = -ENOMEM;
                goto fail;
        }
        d->start_paused = paused;
        d->exit_expected = false;
        d->exit_reason = NULL;

        /* The unit may linger as "failed" from an earlier crash. */
        (void) unit_reset_failed(manager_bus(d->manager), d->unit);

        description = g_strdup_printf("Ferry guest %s", d->def->name);
        TransientService svc = {
                .name = d->unit,
                .description = description,
                .slice = "machine.slice",
                .argv = argv,
                .stdin_fd = qmp_qemus,
        };
        r = unit_start_transient(manager_bus(d->manager), &svc, on_unit_started, d, &d->unit_job);
        if (r < 0)
                goto fail;
        d->qmp_stdin_peer = TAKE_FD(qmp_ours);
        r = arm_op_timer(d, QMP_READY_TIMEOUT_USEC);
        if (r < 0)
                goto fail;

        /* Record that QEMU is ours before it exists, so a restarted ferryd finds it. */
        d->state = DOMAIN_PAUSED;
        d->reason = REASON_STARTING;
        r = domain_store_save_live(d);
        if (r < 0)
                log_warning_errno(r, "Domain %s: cannot save live state, ignoring: %m", d->def->name);
        manager_domain_changed(d->manager, d, DOMAIN_CHANGE_STATE);
        return 0;

fail:
        d->live_def = domain_def_free(d->live_def);
        d->unit_job = unit_job_free(d->unit_job);
        d->op = DOMAIN_OP_NONE;
        d->op_done = NULL;
        d->op_timer = sd_event_source_disable_unref(d->op_timer);
        return r;
}

static void on_unit_stopped(void *userdata, int error, const char *message) {
        Domain *d = userdata;

        d->unit_job = unit_job_free(d->unit_job);
        if (error < 0 && d->op == DOMAIN_OP_DESTROY) {
                op_finish(d, error, message);
                return;
        }
        /* The monitor's close usually came first; if not, this is the end of QEMU. */
        if (domain_is_active(d))
                domain_stopped(d, DOMAIN_SHUTOFF, d->exit_reason ?: REASON_DESTROYED, 0, NULL);
}

int domain_destroy(Domain *d, DomainDone done, void *userdata) {
        int r;

        if (!domain_is_active(d))
                return -ENOTCONN;
        /* Destroy overrides a pending shutdown, a hanging start or a memory dump, as virsh
         * destroy does. */
        if (d->op == DOMAIN_OP_SHUTDOWN || d->op == DOMAIN_OP_START || d->op == DOMAIN_OP_DUMP)
                op_finish(d, -ECANCELED, "the domain was destroyed");
        r = op_begin(d, DOMAIN_OP_DESTROY, done, userdata);
        if (r < 0)
                return r;
        d->exit_expected = true;
        d->exit_reason = REASON_DESTROYED;
        d->unit_job = unit_job_free(d->unit_job);
        r = unit_stop(manager_bus(d->manager), d->unit, on_unit_stopped, d, &d->unit_job);
        if (r < 0) {
                d->op = DOMAIN_OP_NONE;
                d->op_done = NULL;
                return r;
        }
        return 0;
}

static void on_powerdown_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                               JsonNode *ret, void *userdata) {
        Domain *d = userdata;

        if (error < 0 && d->op == DOMAIN_OP_SHUTDOWN)
                op_finish(d, error, error_desc ?: "QEMU refused the ACPI power button");
        else if (d->op == DOMAIN_OP_SHUTDOWN && !d->op_timer)
                op_finish(d, 0, NULL); /* no timeout: the request is all that was asked */
}

int domain_shutdown(Domain *d, uint64_t timeout_usec, DomainDone done, void *userdata) {
        int r;

        if (d->state != DOMAIN_RUNNING && d->state != DOMAIN_PAUSED)
                return -ENOTCONN;
        if (!d->monitor || !qemu_monitor_is_ready(d->monitor))
                return -EBUSY;
        r = op_begin(d, DOMAIN_OP_SHUTDOWN, done, userdata);
        if (r < 0)
                return r;
        if (timeout_usec > 0) {
                r = arm_op_timer(d, timeout_usec);
                if (r < 0)
                        goto fail;
        }
        r = qemu_monitor_command(d->monitor, "system_powerdown", NULL, 0, on_powerdown_reply, d);
        if (r < 0)
                goto fail;
        return 0;
fail:
        d->op_timer = sd_event_source_disable_unref(d->op_timer);
        d->op = DOMAIN_OP_NONE;
        d->op_done = NULL;
        return r;
}

static void on_stop_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                          JsonNode *ret, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                op_finish(d, error, error_desc ?: "QEMU refused to pause");
                return;
        }
        set_state(d, DOMAIN_PAUSED, REASON_USER);
        op_finish(d, 0, NULL);
}

static int simple_command(Domain *d, DomainOperation op, DomainState required, const char *command,
                          QemuMonitorReply reply, DomainDone done, void *userdata) {
        int r;

        if (d->state != required)
                return -ENOTCONN;
        if (!d->monitor || !qemu_monitor_is_ready(d->monitor))
                return -EBUSY;
        r = op_begin(d, op, done, userdata);
        if (r < 0)
                return r;
        r = qemu_monitor_command(d->monitor, command, NULL, 0, reply, d);
        if (r < 0) {
                d->op = DOMAIN_OP_NONE;
                d->op_done = NULL;
        }
        return r;
}

int domain_suspend(Domain *d, DomainDone done, void *userdata) {
        return simple_command(d, DOMAIN_OP_SUSPEND, DOMAIN_RUNNING, "stop", on_stop_reply, done, userdata);
}

int domain_resume(Domain *d, DomainDone done, void *userdata) {
        return simple_command(d, DOMAIN_OP_RESUME, DOMAIN_PAUSED, "cont", on_cont_reply, done, userdata);
}

int domain_undefine(Domain *d) {
        int r;

        if (!d->persistent)
                return -ENOENT;
        r = domain_remove_config(d);
        if (r < 0)
                return r;
        (void) domain_set_autostart(d, false);
        d->persistent = false;
        if (!domain_is_active(d) && d->op == DOMAIN_OP_NONE) {
                manager_remove_domain(d->manager, d);
                return 1;
        }
        manager_domain_changed(d->manager, d, DOMAIN_CHANGE_PERSISTENT);
        return 0;
}

int domain_redefine(Domain *d, DomainDef *def) {
        DomainDef *old = d->def;
        int r;

        d->def = def;
        r = domain_store_save_config(d);
        if (r < 0) {
                d->def = old;
                return r;
        }
        domain_def_free(old);
        d->persistent = true;
        manager_domain_changed(d->manager, d, DOMAIN_CHANGE_DEFINITION | DOMAIN_CHANGE_PERSISTENT);
        return 0;
}

int domain_save_config(Domain *d) {
        return domain_store_save_config(d);
}

int domain_remove_config(Domain *d) {
        return domain_store_remove_config(d);
}

int domain_set_autostart(Domain *d, bool autostart) {
        int r;

        if (autostart && !d->persistent)
                return -EINVAL;
        if (d->autostart == autostart)
                return 0;
        r = domain_store_set_autostart(d, autostart);
        if (r < 0)
                return r;
        d->autostart = autostart;
        manager_domain_changed(d->manager, d, DOMAIN_CHANGE_AUTOSTART);
        return 0;
}

char *domain_get_xml(Domain *d, DomainFormatFlags flags) {
        const DomainDef *def = (flags & DOMAIN_FORMAT_INACTIVE) || !d->live_def ? d->def : d->live_def;
        return domain_def_format(def, flags);
}

int domain_reattach(Manager *m, const char *run_dir) {
        _cleanup_(domain_def_freep) DomainDef *live = NULL;
        g_autofree char *saved_state = NULL, *saved_reason = NULL;
        Domain *d;
        int r;

        _cleanup_(outgoing_migration_record_done) OutgoingMigrationRecord outgoing = {};
        bool incoming = false;
        r = domain_store_load_live(run_dir, &live, &saved_state, &saved_reason, &incoming, &outgoing);
        if (r < 0)
                return r;

        d = manager_find_domain_by_uuid(m, live->uuid);
        if (!d) {
                /* A transient domain: it exists only while QEMU runs. */
                DomainDef *def = domain_def_copy(live);
                if (!def)
                        return -ENOMEM;
                r = domain_new(m, def, false, &d);
                if (r < 0) {
                        domain_def_free(def);
                        return r;
                }
                manager_domain_added(m, d);
        }
        d->live_def = TAKE_PTR(live);
        d->state = g_strcmp0(saved_state, "running") == 0 ? DOMAIN_RUNNING : DOMAIN_PAUSED;
        d->reason = domain_reason_intern(saved_reason);
        d->reattaching = true;
        d->reattaching_incoming = incoming;
        outgoing_migration_record_done(&d->reattaching_outgoing);
        d->reattaching_outgoing = outgoing;
        outgoing = (OutgoingMigrationRecord) {};

        r = connect_monitor(d);
        if (r < 0) {
                d->reattaching = false;
                log_warning_errno(r, "Domain %s: QEMU is gone (%m), marking it crashed.", d->def->name);
                domain_stopped(d, DOMAIN_CRASHED, REASON_CRASHED, 0, NULL);
                return 0;
        }
        log_info("Domain %s: re-attaching to %s.", d->def->name, d->unit);
        return 0;
}

QemuMonitor *domain_monitor(Domain *d) {
        return d->monitor && qemu_monitor_is_ready(d->monitor) ? d->monitor : NULL;
}

int domain_start_incoming(Domain *d, const char *incoming_uri, const char *tls_dir, DomainDone done,
                          void *userdata) {
        int r;

        d->incoming_uri = strdup(incoming_uri);
        d->incoming_tls_dir = tls_dir ? strdup(tls_dir) : NULL;
        if (!d->incoming_uri || (tls_dir && !d->incoming_tls_dir)) {
                d->incoming_uri = mfree(d->incoming_uri);
                d->incoming_tls_dir = mfree(d->incoming_tls_dir);
                return -ENOMEM;
        }
        r = domain_start(d, true, done, userdata);
        if (r < 0) {
                d->incoming_uri = mfree(d->incoming_uri);
                d->incoming_tls_dir = mfree(d->incoming_tls_dir);
        }
        return r;
}

bool domain_is_migrating(const Domain *d) {
        /* incoming_uri: an incoming domain before its QEMU listens, when it has no migration yet. */
        return d->migration || d->incoming_uri;
}

void outgoing_migration_record_done(OutgoingMigrationRecord *r) {
        free(r->destination_uri);
        free(r->peer_migration);
        free(r->peer_owner);
        *r = (OutgoingMigrationRecord) {};
}

void domain_save_live_state(Domain *d) {
        /* live_def is set exactly while a QEMU of ours may exist. */
        if (d->live_def)
                (void) domain_store_save_live(d);
}

int domain_begin_migration(Domain *d, Migration *m) {
        if (d->op != DOMAIN_OP_NONE || d->reattaching)
                return -EBUSY;
        d->op = DOMAIN_OP_MIGRATE;
        d->migration = m;
        domain_save_live_state(d);
        return 0;
}

void domain_detach_migration(Domain *d) {
        d->migration = NULL;
        if (d->op == DOMAIN_OP_MIGRATE) {
                d->op = DOMAIN_OP_NONE;
                manager_check_idle(d->manager);
        }
}

void domain_end_migration(Domain *d) {
        bool had = d->migration;

        domain_detach_migration(d);
        if (had)
                domain_save_live_state(d);
}

void domain_set_paused_reason(Domain *d, const char *reason) {
        if (d->state == DOMAIN_PAUSED)
                set_state(d, DOMAIN_PAUSED, reason);
}

void domain_confirm_migrated_out(Domain *d) {
        d->exit_expected = true;
        d->exit_reason = REASON_MIGRATED;
        if (!d->monitor || qemu_monitor_command(d->monitor, "quit", NULL, 0, NULL, NULL) < 0) {
                d->unit_job = unit_job_free(d->unit_job);
                if (unit_stop(manager_bus(d->manager), d->unit, on_unit_stopped, d, &d->unit_job) < 0)
                        domain_stopped(d, DOMAIN_SHUTOFF, REASON_MIGRATED, 0, NULL);
        }
}

int domain_run_after_migration(Domain *d, bool paused, const char *reason, DomainDone done, void *userdata) {
        int r;

        if (!d->monitor || !qemu_monitor_is_ready(d->monitor))
                return -ENOTCONN;
        /* From here on this copy is the guest: no longer an incoming one to discard. */
        d->incoming_uri = mfree(d->incoming_uri);
        d->incoming_tls_dir = mfree(d->incoming_tls_dir);
        if (paused) {
                set_state(d, DOMAIN_PAUSED, reason);
                if (done)
                        done(userdata, 0, NULL);
                return 0;
        }
        r = op_begin(d, DOMAIN_OP_RESUME, done, userdata);
        if (r < 0)
                return r;
        d->pending_reason = reason;
        r = qemu_monitor_command(d->monitor, "cont", NULL, 0, on_cont_reply, d);
        if (r < 0) {
                d->op = DOMAIN_OP_NONE;
                d->op_done = NULL;
        }
        return r;
}

void domain_discard_incoming(Domain *d) {
        d->exit_expected = true;
        d->exit_reason = REASON_FAILED;
        if (d->monitor && qemu_monitor_command(d->monitor, "quit", NULL, 0, NULL, NULL) >= 0)
                return;
        d->unit_job = unit_job_free(d->unit_job);
        if (unit_stop(manager_bus(d->manager), d->unit, on_unit_stopped, d, &d->unit_job) < 0)
                domain_stopped(d, DOMAIN_SHUTOFF, REASON_FAILED, 0, NULL);
}

int domain_op_begin(Domain *d, DomainOperation op, DomainDone done, void *userdata) {
        return op_begin(d, op, done, userdata);
}

void domain_op_abandon(Domain *d) {
        d->op = DOMAIN_OP_NONE;
        d->op_done = NULL;
        d->op_userdata = NULL;
}

void domain_op_finish(Domain *d, int error, const char *message) {
        op_finish(d, error, message);
}
