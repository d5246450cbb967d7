/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-options.h"
#include "migration-internal.h"
#include "migration-peer.h"
#include "migration-postcopy.h"
#include "migration-storage.h"
#include "migration-tunnel.h"
#include "migration.h"
#include "qemu-monitor.h"

#define USEC_PER_SEC 1000000ULL
#define STATS_INTERVAL_USEC (USEC_PER_SEC / 10)
#define FINISH_WAIT_USEC (60ULL * USEC_PER_SEC)
/* QEMU 7.2 caps a migration at 128 MiB/s unless told otherwise; "unlimited" means this. */
#define BANDWIDTH_UNLIMITED (UINT64_C(1) << 40)

static const char *const phase_names[_MIGRATION_PHASE_MAX] = {
        [MIGRATION_PHASE_BEGIN] = "begin",
        [MIGRATION_PHASE_PREPARE] = "prepare",
        [MIGRATION_PHASE_PERFORM] = "perform",
        [MIGRATION_PHASE_FINISH] = "finish",
        [MIGRATION_PHASE_CONFIRM] = "confirm",
};

static const char *const state_names[_MIGRATION_STATE_MAX] = {
        [MIGRATION_RUNNING] = "running",
        [MIGRATION_COMPLETED] = "completed",
        [MIGRATION_FAILED] = "failed",
        [MIGRATION_CANCELLED] = "cancelled",
};

const char *migration_phase_to_string(MigrationPhase p) {
        return (unsigned) p < _MIGRATION_PHASE_MAX ? phase_names[p] : NULL;
}

const char *migration_state_to_string(MigrationState s) {
        return (unsigned) s < _MIGRATION_STATE_MAX ? state_names[s] : NULL;
}

const char *migration_direction_to_string(MigrationDirection d) {
        return d == MIGRATION_OUTGOING ? "outgoing" : "incoming";
}

void migration_options_done(MigrationOptions *o) {
        o->hypervisor_uri = mfree(o->hypervisor_uri);
        o->destination_xml = mfree(o->destination_xml);
        o->destination_name = mfree(o->destination_name);
        o->listen_address = mfree(o->listen_address);
        g_strfreev(o->disks);
        o->disks = NULL;
        o->disks_uri = mfree(o->disks_uri);
        for (size_t i = 0; i < o->n_disk_sizes; i++)
                free(o->disk_sizes[i].target);
        o->disk_sizes = mfree(o->disk_sizes);
        o->n_disk_sizes = 0;
        g_strfreev(o->storage_created);
        o->storage_created = NULL;
        o->tunnel_token = mfree(o->tunnel_token);
}

/* ---- QEMU's own TLS ---- */

char *migration_tls_dir(const char *config_dir) {
        return g_build_filename(config_dir, "pki", "qemu", NULL);
}

int migration_tls_check_files(const char *dir, bool server, char **ret_error) {
        const char *const files[] = { "ca-cert.pem", server ? "server-cert.pem" : "client-cert.pem",
                                      server ? "server-key.pem" : "client-key.pem" };

        /* QEMU would say so too, but only once it runs; name the file here, before anything starts. */
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                g_autofree char *path = g_build_filename(dir, files[i], NULL);
                if (access(path, R_OK) < 0) {
                        int r = -errno;
                        *ret_error = g_strdup_printf("TLS %s certificate file %s: %s", server ? "server" : "client",
                                                     path, strerror(-r));
                        return r;
                }
        }
        return 0;
}

JsonObject *migration_tls_object_args(const char *dir, bool server) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "qom-type", "tls-creds-x509");
        json_object_set_string_member(o, "id", MIGRATION_TLS_OBJECT_ID);
        json_object_set_string_member(o, "dir", dir);
        json_object_set_string_member(o, "endpoint", server ? "server" : "client");
        json_object_set_boolean_member(o, "verify-peer", true);
        return o;
}

Domain *migration_domain(Migration *m) {
        return m->domain_name ? manager_find_domain_by_name(m->manager, m->domain_name) : NULL;
}

Migration *migration_free(Migration *m) {
        if (!m)
                return NULL;
        Domain *d = migration_domain(m);
        /* Only while ferryd exits (an ended migration has let go of its domain): the live state
         * keeps its record, so that the next ferryd can undo the migration. */
        if (d && d->migration == m)
                domain_detach_migration(d);
        /* ferryd is stopping under a Perform call: it gets an answer. */
        managed_perform_answer(m, -ECANCELED, "ferryd is stopping");
        sd_bus_slot_unref(m->peer_call);
        sd_bus_slot_unref(m->abort_call);
        sd_bus_slot_unref(m->recover_call);
        sd_event_source_disable_unref(m->recover_timer);
        if (m->recover_done)
                m->recover_done(m->recover_userdata, -ECANCELED, "ferryd is stopping", NULL);
        sd_bus_slot_unref(m->peer_watch);
        peer_close(m->peer);
        free(m->peer_owner);
        sd_bus_message_unref(m->pending_finish);
        sd_bus_track_unref(m->client_track);
        sd_bus_slot_unref(m->client_check);
        free(m->client);
        tunnel_free(m->tunnel);
        free(m->tunnel_prepare);
        sd_event_source_disable_unref(m->stats_timer);
        sd_event_source_disable_unref(m->suspend_timer);
        sd_event_source_disable_unref(m->expire_timer);
        sd_event_source_disable_unref(m->emit_timer);
        migration_storage_free(m->storage);
        migration_options_done(&m->options);
        free(m->object_path);
        free(m->domain_name);
        free(m->domain_path);
        free(m->destination_uri);
        free(m->hypervisor_uri);
        free(m->tls_hostname);
        free(m->peer_migration);
        free(m->error_name);
        free(m->error_message);
        return mfree(m);
}

int migration_new(Manager *manager, MigrationDirection direction, Domain *d, Migration **ret) {
        _cleanup_(migration_freep) Migration *m = NULL;
        int r;

        if (manager_migrations_running(manager) >= MIGRATIONS_MAX)
                return -E2BIG;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        *m = (Migration) {
                .manager = manager,
                .direction = direction,
                .phase = MIGRATION_PHASE_BEGIN,
                .state = MIGRATION_RUNNING,
                .domain_name = strdup(d->def->name),
                .domain_path = strdup(d->object_path),
                .started_usec = (uint64_t) g_get_monotonic_time(),
        };
        if (!m->domain_name || !m->domain_path)
                return -ENOMEM;
        r = manager_register_migration(manager, m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

/* An incoming QEMU reports no total-time: the job's own clock, since Prepare, stopped at the end. */
static void update_incoming_elapsed(Migration *m) {
        if (m->direction == MIGRATION_INCOMING && m->state == MIGRATION_RUNNING)
                m->stats.elapsed_usec = (uint64_t) g_get_monotonic_time() - m->started_usec;
}

void migration_changed(Migration *m) {
        update_incoming_elapsed(m);
        manager_migration_changed(m->manager, m);
}

void set_phase(Migration *m, MigrationPhase p) {
        log_info("Migration %u (%s %s): phase %s.", m->id, migration_direction_to_string(m->direction),
                 m->domain_name, migration_phase_to_string(p));
        m->phase = p;
        migration_changed(m);
}

static int on_expire(sd_event_source *s, uint64_t usec, void *userdata) {
        Migration *m = userdata;
        manager_remove_migration(m->manager, m);
        return 0;
}

/* The end: the result is recorded, the domain's slot given back, the job stays visible a
 * while for whoever wants to read how it went. */
void migration_end(Migration *m, MigrationState state, const char *error_name, const char *message) {
        Domain *d = migration_domain(m);

        if (m->state != MIGRATION_RUNNING)
                return;
        update_incoming_elapsed(m);
        m->state = state;
        if (error_name) {
                free(m->error_name);
                free(m->error_message);
                m->error_name = strdup(error_name);
                m->error_message = strdup(message ?: "");
                log_error("Migration %u of %s failed in phase %s: %s", m->id, m->domain_name,
                          migration_phase_to_string(m->phase), strempty(message));
        } else
                log_info("Migration %u of %s: %s.", m->id, m->domain_name, migration_state_to_string(state));
        storage_migration_ended(m);
        m->stats_timer = sd_event_source_disable_unref(m->stats_timer);
        m->suspend_timer = sd_event_source_disable_unref(m->suspend_timer);
        tunnel_end(m);
        m->peer_call = sd_bus_slot_unref(m->peer_call);
        m->peer_watch = sd_bus_slot_unref(m->peer_watch);
        /* A Finish(false) on its way keeps the connection until answered: closed earlier, the
         * destination cannot check who sent it (polkit) and would keep its copy. */
        if (!m->abort_call)
                m->peer = peer_close(m->peer);
        m->client_track = sd_bus_track_unref(m->client_track);
        m->client_check = sd_bus_slot_unref(m->client_check);
        if (d && d->migration == m)
                domain_end_migration(d);
        /* A Perform waiting for QEMU (managed direct) gets its answer now. */
        managed_perform_answer(m, state == MIGRATION_COMPLETED ? 0 : -EIO, m->error_message);
        /* A Finish waiting for QEMU gets its answer now (an error: we are not running), so
         * the source resumes its guest instead of waiting for a timeout. */
        if (m->pending_finish)
                manager_migration_finish_pending(m->manager, m);
        migration_changed(m);
        manager_migration_ended(m->manager, m);
        (void) sd_event_add_time_relative(manager_event(m->manager), &m->expire_timer, CLOCK_MONOTONIC,
                                          m->manager->config.migration_keep_ended_sec * USEC_PER_SEC, USEC_PER_SEC,
                                          on_expire, m);
}

/* ---- statistics ---- */

static uint64_t member_u64(JsonObject *o, const char *name) {
        if (!o || !json_object_has_member(o, name))
                return 0;
        gint64 v = json_object_get_int_member(o, name);
        return v < 0 ? 0 : (uint64_t) v;
}

void migration_on_query_migrate(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                             JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        JsonObject *o, *ram;

        if (error < 0 || !ret || !JSON_NODE_HOLDS_OBJECT(ret))
                return;
        o = json_node_get_object(ret);
        ram = json_object_has_member(o, "ram") ? json_object_get_object_member(o, "ram") : NULL;
        /* After a failure QEMU reports nothing but the status: keep the last figures. */
        if (!ram)
                return;
        /* QEMU reports the throttle only while it applies (not once completed): keep the last. */
        unsigned throttle = json_object_has_member(o, "cpu-throttle-percentage") ?
                (unsigned) member_u64(o, "cpu-throttle-percentage") : m->stats.cpu_throttle_percent;
        m->stats = (MigrationStats) {
                .elapsed_usec = member_u64(o, "total-time") * 1000,
                .setup_usec = member_u64(o, "setup-time") * 1000,
                .expected_downtime_usec = member_u64(o, "expected-downtime") * 1000,
                .downtime_usec = member_u64(o, "downtime") * 1000,
                .data_total = member_u64(ram, "total"),
                .data_processed = member_u64(ram, "transferred"),
                .data_remaining = member_u64(ram, "remaining"),
                .bytes_per_second = (uint64_t) ((ram && json_object_has_member(ram, "mbps") ?
                                                 json_object_get_double_member(ram, "mbps") : 0) * 1000000.0 / 8.0),
                .dirty_pages_rate = member_u64(ram, "dirty-pages-rate"),
                .iteration = member_u64(ram, "dirty-sync-count"),
                .cpu_throttle_percent = throttle,
        };
        migration_changed(m);
}

static int on_stats_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Migration *m = userdata;
        Domain *d = migration_domain(m);

        if (d && domain_monitor(d))
                (void) qemu_monitor_command(domain_monitor(d), "query-migrate", NULL, 0, migration_on_query_migrate, m);
        (void) sd_event_source_set_time(s, usec + STATS_INTERVAL_USEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ON);
}

/* ---- source side ---- */

void resume_source(Migration *m) {
        Domain *d = migration_domain(m);
        if (m->options.offline)
                return; /* the guest was never touched */
        /* After the switch to post-copy the destination may run the guest: never ours again. */
        if (migration_postcopy_started(m)) {
                if (d)
                        domain_end_migration(d);
                return;
        }
        /* Our end of the guest never stopped being the real one: let it run again. */
        if (d) {
                bool was_running = m->source_was_running;
                domain_end_migration(d);
                if (d->state == DOMAIN_PAUSED && d->reason && strcmp(d->reason, REASON_MIGRATION) == 0 && was_running)
                        (void) domain_run_after_migration(d, false, REASON_MIGRATION_CANCELLED, NULL, NULL);
        }
}

int source_on_peer_finish_abort(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (e)
                log_warning("Migration %u: the destination did not take Finish(false): %s", m->id,
                            e->message ?: e->name);
        m->abort_call = sd_bus_slot_unref(m->abort_call);
        m->peer = peer_close(m->peer);
        return 0;
}

void source_fail(Migration *m, const char *error_name, const char *message) {
        Domain *d = migration_domain(m);

        if (m->state != MIGRATION_RUNNING)
                return;
        if (migration_postcopy_started(m)) {
                /* After the switch neither half is the guest alone: throw nothing away, resume
                 * nothing (docs/migration.md, "When it cannot recover"). */
                m->postcopy = MIGRATION_POSTCOPY_FAILED;
                resume_source(m);
                migration_end(m, MIGRATION_FAILED, error_name, message);
                return;
        }
        /* Tell QEMU to stop sending, and the destination to throw its half away. */
        if (m->phase == MIGRATION_PHASE_PERFORM && d && domain_monitor(d))
                (void) qemu_monitor_command(domain_monitor(d), "migrate_cancel", NULL, 0, NULL, NULL);
        if (m->peer && m->peer_migration) {
                m->peer_call = sd_bus_slot_unref(m->peer_call);
                m->abort_call = sd_bus_slot_unref(m->abort_call);
                (void) peer_finish(m->peer, m->peer_owner, m->peer_migration, false, source_on_peer_finish_abort, m,
                                   &m->abort_call);
                (void) sd_bus_flush(m->peer);
        } else if (m->phase == MIGRATION_PHASE_PREPARE && m->peer_call) {
                /* Prepare is still running there (a hook, QEMU starting): whatever it makes
                 * would wait for a stream forever. Keep the connection for its answer, then
                 * tell it to throw that away (on_peer_prepared). */
                m->abort_call = sd_bus_slot_unref(m->abort_call);
                m->abort_call = TAKE_PTR(m->peer_call);
        }
        resume_source(m);
        migration_end(m, strcmp(error_name, FERRY_ERROR_MIGRATION_CANCELLED) == 0 ? MIGRATION_CANCELLED : MIGRATION_FAILED,
                      error_name, message);
}

static int on_peer_finish(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        Domain *d = migration_domain(m);

        m->peer_call = sd_bus_slot_unref(m->peer_call);
        if (e) {
                /* NoReply & co: the call may have arrived; NameHasNoOwner/ServiceUnknown: that
                 * ferryd was gone before it, so it never ran the guest. */
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_DISCONNECTED, SD_BUS_ERROR_TIMEOUT)) {
                        /* We cannot know whether the destination runs the guest: the one safe
                         * choice left is to keep ours paused (seed: "managed direct"). */
                        if (d)
                                domain_end_migration(d);
                        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED,
                                      "lost the destination during Finish; the guest is left paused on the source");
                        return 0;
                }
                resume_source(m);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, e->message ?: e->name);
                return 0;
        }
        source_confirm(m);
        return 0;
}

static void on_final_stats(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                           JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        void (*then)(Migration *m) = m->after_final_stats;

        m->after_final_stats = NULL;
        migration_on_query_migrate(mon, error, error_class, error_desc, ret, m);
        if (then && m->state == MIGRATION_RUNNING)
                then(m);
}

void source_read_final_stats(Migration *m, void (*then)(Migration *m)) {
        Domain *d = migration_domain(m);

        /* QEMU 7.2 reports "completed" before it has worked out the total time and the downtime,
         * so the figures read at that event may be zeros. Before our QEMU goes, ask again: by now
         * (the destination answered Finish) it has them, and the ended job keeps them. */
        m->after_final_stats = then;
        if (!d || !domain_monitor(d) ||
            qemu_monitor_command(domain_monitor(d), "query-migrate", NULL, 0, on_final_stats, m) < 0) {
                m->after_final_stats = NULL;
                if (then)
                        then(m);
        }
}

static void source_confirm_now(Migration *m) {
        Domain *d = migration_domain(m);

        /* The destination runs the guest: ours must go. With undefine_source the definition
         * goes too (the domain turns transient and disappears with its QEMU). */
        set_phase(m, MIGRATION_PHASE_CONFIRM);
        m->stats_timer = sd_event_source_disable_unref(m->stats_timer);
        if (d) {
                domain_end_migration(d);
                if (m->options.undefine_source && d->persistent && domain_undefine(d) < 0)
                        log_warning("Migration %u: cannot remove the source definition of %s, ignoring.",
                                    m->id, m->domain_name);
                domain_confirm_migrated_out(d);
        }
        migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
}

void source_confirm(Migration *m) {
        source_read_final_stats(m, source_confirm_now);
}

static void source_finish(Migration *m) {
        int r;

        set_phase(m, MIGRATION_PHASE_FINISH);
        m->stats_timer = sd_event_source_disable_unref(m->stats_timer);
        m->finish_sent = true;
        /* On disk before it goes: a ferryd restarted from here on must not resume the guest. */
        if (migration_domain(m))
                domain_save_live_state(migration_domain(m));
        r = peer_finish(m->peer, m->peer_owner, m->peer_migration, true, on_peer_finish, m, &m->peer_call);
        if (r < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "cannot call Finish on the destination");
}

/* The last pass is done and the source is paused. Let QEMU send the devices' state; the
 * guest only runs again after Finish, on exactly one host. */
static void continue_switchover(Migration *m) {
        Domain *d = migration_domain(m);
        JsonObject *args = json_object_new();

        json_object_set_string_member(args, "state", "pre-switchover");
        if (d && domain_monitor(d))
                (void) qemu_monitor_command(domain_monitor(d), "migrate-continue", args, 0, NULL, NULL);
        else
                json_object_unref(args);
}

void migration_qemu_event(Migration *m, const char *status) {
        Domain *d = migration_domain(m);

        log_debug("Migration %u: QEMU status %s.", m->id, status);
        if (m->direction == MIGRATION_INCOMING) {
                if (postcopy_destination_event(m, status))
                        return;
                if (strcmp(status, "completed") == 0) {
                        m->qemu_completed = true;
                        m->stats.data_remaining = 0;
                        if (m->pending_finish)
                                manager_migration_finish_pending(m->manager, m);
                } else if (strcmp(status, "failed") == 0) {
                        /* This copy never ran and never will: the source keeps the guest. QEMU
                         * may not exit by itself, and a Finish(false) arriving after this is
                         * refused (we are no longer running): throw it away now. */
                        if (d && d->migration == m) {
                                domain_end_migration(d);
                                domain_discard_incoming(d);
                        }
                        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED,
                                      "the incoming stream failed");
                }
                return;
        }

        if (!m->recovered && postcopy_source_event(m, status))
                return;
        if (m->phase != MIGRATION_PHASE_PERFORM)
                return;
        if (m->recovered && !(m->options.direct && strcmp(status, "completed") == 0)) {
                /* A restarted ferryd only undoes the migration: no switchover, no Finish. (Unmanaged
                 * direct completed: the other QEMU runs the guest; ours goes, as below.) */
                if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)
                        source_fail(m, FERRY_ERROR_MIGRATION_FAILED, RECOVERED_MESSAGE);
                return;
        }
        if (strcmp(status, "pre-switchover") == 0) {
                /* The disks first, while the guest is paused: then nothing writes to them. */
                if (m->storage)
                        storage_source_switchover(m, continue_switchover);
                else
                        continue_switchover(m);
        } else if (strcmp(status, "completed") == 0) {
                if (d && domain_monitor(d))
                        (void) qemu_monitor_command(domain_monitor(d), "query-migrate", NULL, 0, migration_on_query_migrate, m);
                if (m->options.direct) {
                        /* The other QEMU has everything and runs the guest: ours goes. */
                        set_phase(m, MIGRATION_PHASE_CONFIRM);
                        m->stats_timer = sd_event_source_disable_unref(m->stats_timer);
                        if (d) {
                                domain_end_migration(d);
                                domain_confirm_migrated_out(d);
                        }
                        migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
                        return;
                }
                if (m->managed) {
                        /* The client calls Finish on the destination itself, then Confirm here. */
                        m->stats_timer = sd_event_source_disable_unref(m->stats_timer);
                        managed_performed(m);
                        return;
                }
                source_finish(m);
        } else if (strcmp(status, "failed") == 0) {
                if (!tunnel_explain_qemu_failure(m))
                        source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "QEMU's migration failed");
        }
        else if (strcmp(status, "cancelled") == 0)
                source_fail(m, FERRY_ERROR_MIGRATION_CANCELLED, "the migration was cancelled");
}

static void on_migrate_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                             JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        if (error < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, error_desc ?: "QEMU refused to migrate");
}

/* virsh migrate --timeout, done here so that it also holds when the client has gone: a live
 * copy that has not converged in time stops the guest, so that the rest is sent once. The
 * guest runs again on the destination (or here, if the migration fails). */
static int on_suspend_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Migration *m = userdata;
        Domain *d = migration_domain(m);

        m->suspend_timer = sd_event_source_disable_unref(m->suspend_timer);
        if (m->state != MIGRATION_RUNNING || m->phase != MIGRATION_PHASE_PERFORM || !d ||
            d->state != DOMAIN_RUNNING || !domain_monitor(d))
                return 0;
        log_info("Migration %u: not finished after %" PRIu64 " ms, suspending %s.", m->id,
                 m->options.suspend_timeout_usec / 1000, m->domain_name);
        (void) qemu_monitor_command(domain_monitor(d), "stop", NULL, 0, NULL, NULL);
        return 0;
}

static void source_migrate(Migration *m) {
        Domain *d = migration_domain(m);
        QemuMonitor *mon = d ? domain_monitor(d) : NULL;
        JsonObject *caps_arg, *params, *migrate;
        JsonArray *caps;
        int r;

        if (!mon) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the domain's QEMU is not reachable");
                return;
        }
        caps = json_array_new();
        json_array_add_object_element(caps, migration_capability("events", true));
        /* Unmanaged direct: nobody on the other side to Finish with; QEMU switches over itself. */
        json_array_add_object_element(caps, migration_capability("pause-before-switchover", !m->options.direct));
        /* Always set: a QEMU keeps capabilities from an earlier migration. */
        json_array_add_object_element(caps, migration_capability("auto-converge", m->options.auto_converge));
        params = json_object_new();
        postcopy_source_capabilities(m, caps, params);
        caps_arg = json_object_new();
        json_object_set_array_member(caps_arg, "capabilities", caps);
        (void) qemu_monitor_command(mon, "migrate-set-capabilities", caps_arg, 0, NULL, NULL);

        json_object_set_int_member(params, "max-bandwidth",
                                   (gint64) (m->options.max_bandwidth ?: BANDWIDTH_UNLIMITED));
        if (m->options.max_downtime_usec)
                json_object_set_int_member(params, "downtime-limit",
                                           (gint64) ((m->options.max_downtime_usec + 999) / 1000));
        /* Always set: a QEMU that migrated with TLS before keeps its parameters; "" is plain. */
        json_object_set_string_member(params, "tls-creds", m->options.tls ? MIGRATION_TLS_OBJECT_ID : "");
        json_object_set_string_member(params, "tls-hostname", m->options.tls ? strempty(m->tls_hostname) : "");
        (void) qemu_monitor_command(mon, "migrate-set-parameters", params, 0, NULL, NULL);

        migrate = json_object_new();
        json_object_set_string_member(migrate, "uri", m->hypervisor_uri);
        r = qemu_monitor_command(mon, "migrate", migrate, 0, on_migrate_reply, m);
        if (r < 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "cannot send migrate to QEMU");
                return;
        }
        postcopy_source_migrating(m);
        (void) sd_event_add_time_relative(manager_event(m->manager), &m->stats_timer, CLOCK_MONOTONIC,
                                          STATS_INTERVAL_USEC, 0, on_stats_timer, m);
        if (m->options.suspend_timeout_usec > 0 &&
            sd_event_add_time_relative(manager_event(m->manager), &m->suspend_timer, CLOCK_MONOTONIC,
                                       m->options.suspend_timeout_usec, 0, on_suspend_timer, m) < 0)
                log_warning("Migration %u: cannot arm the suspend timeout, the guest will not be suspended.", m->id);
}

/* With copy_storage the disks are mirrored first; the RAM follows once every copy is ready. */
static void copy_storage_then_migrate(Migration *m) {
        if (m->storage)
                storage_source_start(m, source_migrate);
        else
                source_migrate(m);
}

static void on_tls_creds_added(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                               JsonNode *ret, void *userdata) {
        Migration *m = userdata;

        if (m->state != MIGRATION_RUNNING)
                return;
        if (error < 0) {
                g_autofree char *msg = g_strdup_printf("QEMU cannot load the TLS client credentials: %s",
                                                       error_desc ?: strerror(-error));
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, msg);
                return;
        }
        copy_storage_then_migrate(m);
}

void source_perform(Migration *m) {
        Domain *d = migration_domain(m);
        QemuMonitor *mon = d ? domain_monitor(d) : NULL;
        g_autofree char *dir = NULL;
        JsonObject *del;

        set_phase(m, MIGRATION_PHASE_PERFORM);
        if (!m->options.tls || !mon) {
                copy_storage_then_migrate(m);
                return;
        }
        /* Fresh client credentials: this QEMU may hold the server ones it came in with, or
         * those of an earlier attempt (object-del fails harmlessly when there are none). */
        dir = migration_tls_dir(m->manager->config_dir);
        del = json_object_new();
        json_object_set_string_member(del, "id", MIGRATION_TLS_OBJECT_ID);
        (void) qemu_monitor_command(mon, "object-del", del, 0, NULL, NULL);
        if (qemu_monitor_command(mon, "object-add", migration_tls_object_args(dir, false), 0, on_tls_creds_added, m) < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "cannot send object-add to QEMU");
}

int migration_cancel(Migration *m) {
        if (m->state != MIGRATION_RUNNING)
                return -ENOTCONN;
        if (m->direction != MIGRATION_OUTGOING || m->finish_sent || m->perform_done || migration_postcopy_started(m))
                return -EBUSY; /* past the point of no return */
        source_fail(m, FERRY_ERROR_MIGRATION_CANCELLED, "cancelled by request");
        return 0;
}

static int set_parameter(Migration *m, const char *name, uint64_t value) {
        Domain *d = migration_domain(m);
        JsonObject *params;

        if (m->state != MIGRATION_RUNNING || m->direction != MIGRATION_OUTGOING)
                return -ENOTCONN;
        if (!d || !domain_monitor(d))
                return -EBUSY;
        params = json_object_new();
        json_object_set_int_member(params, name, (gint64) value);
        return qemu_monitor_command(domain_monitor(d), "migrate-set-parameters", params, 0, NULL, NULL);
}

int migration_set_max_bandwidth(Migration *m, uint64_t bytes_per_second) {
        int r = set_parameter(m, "max-bandwidth", bytes_per_second ?: BANDWIDTH_UNLIMITED);
        if (r >= 0)
                m->options.max_bandwidth = bytes_per_second;
        return r;
}

int migration_set_max_downtime(Migration *m, uint64_t usec) {
        int r = set_parameter(m, "downtime-limit", (usec + 999) / 1000);
        if (r >= 0)
                m->options.max_downtime_usec = usec;
        return r;
}

void migration_domain_stopped(Migration *m) {
        /* QEMU is gone under the migration. */
        if (m->direction == MIGRATION_OUTGOING && m->phase == MIGRATION_PHASE_CONFIRM)
                return;
        if (m->direction == MIGRATION_OUTGOING)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the source QEMU exited");
        else
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, "the destination QEMU exited");
}
