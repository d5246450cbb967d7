/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Post-copy (QEMU's postcopy-ram) with recovery, and parallel connections (multifd), on both
 * sides of a migration. The seed's rule holds throughout: a guest never runs on two hosts.
 * Once QEMU switched to post-copy the destination runs the guest while its memory still
 * arrives; the source never resumes it after that point, whatever happens (a failure then is
 * not undone: the source stays paused, and the guest can only go on once the stream is
 * recovered). See docs/migration.md, "Post-copy". */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-peer.h"
#include "migration-postcopy.h"
#include "migration-tunnel.h"
#include "qemu-monitor.h"

/* A resumed QEMU that cannot reach the destination stays postcopy-paused without a word. */
#define RECOVER_TIMEOUT_USEC (60ULL * 1000000ULL)

#define POSTCOPY_SPLIT_MESSAGE "post-copy failed after the switch: the guest's memory is split between the hosts, " \
                               "it cannot run on either; the source keeps its part paused"

static const char *const postcopy_names[_MIGRATION_POSTCOPY_MAX] = {
        [MIGRATION_POSTCOPY_OFF] = "off",
        [MIGRATION_POSTCOPY_ARMED] = "armed",
        [MIGRATION_POSTCOPY_ACTIVE] = "active",
        [MIGRATION_POSTCOPY_PAUSED] = "paused",
        [MIGRATION_POSTCOPY_RECOVERING] = "recovering",
        [MIGRATION_POSTCOPY_COMPLETED] = "completed",
        [MIGRATION_POSTCOPY_FAILED] = "failed",
};

const char *migration_postcopy_to_string(MigrationPostcopy p) {
        return (unsigned) p < _MIGRATION_POSTCOPY_MAX ? postcopy_names[p] : NULL;
}

JsonObject *migration_capability(const char *name, bool on) {
        JsonObject *c = json_object_new();
        json_object_set_string_member(c, "capability", name);
        json_object_set_boolean_member(c, "state", on);
        return c;
}

bool migration_postcopy_started(const Migration *m) {
        return m->postcopy >= MIGRATION_POSTCOPY_ACTIVE;
}

int migration_check_postcopy_options(const MigrationOptions *o, bool managed, char **ret_error) {
        if (o->parallel_connections > MIGRATION_PARALLEL_CONNECTIONS_MAX) {
                *ret_error = g_strdup_printf("parallel_connections: at most %u", MIGRATION_PARALLEL_CONNECTIONS_MAX);
                return -EINVAL;
        }
        if ((o->postcopy || o->postcopy_bandwidth > 0 || o->parallel_connections > 0) && (o->offline || o->direct)) {
                *ret_error = g_strdup_printf("%s needs a ferryd on both sides and a stream: not with %s",
                                             o->parallel_connections > 0 ? "parallel_connections" : "post-copy",
                                             o->offline ? "offline" : "direct");
                return -EINVAL;
        }
        if (o->postcopy_bandwidth > 0 && !o->postcopy) {
                *ret_error = g_strdup("postcopy_bandwidth needs the postcopy option");
                return -EINVAL;
        }
        if (o->postcopy && o->parallel_connections > 0) {
                *ret_error = g_strdup("postcopy and parallel_connections cannot be combined (QEMU 7.2 refuses multifd with post-copy)");
                return -EINVAL;
        }
        /* After the switch the guest writes its disks on the destination while its memory is
         * split: a failure then keeps both halves, but a storage copy's failure removes the
         * images it created there, and its mirrors end at pre-switchover, untried with the
         * post-copy switch. Not combined until that is designed and tested (docs/migration.md). */
        if (o->postcopy && o->copy_storage != MIGRATION_COPY_STORAGE_NONE) {
                *ret_error = g_strdup("postcopy and copy_storage cannot be combined (a storage copy is not carried "
                                      "across the post-copy switch)");
                return -EINVAL;
        }
        if (o->postcopy && managed) {
                *ret_error = g_strdup("post-copy is for the peer-to-peer flow (Domain.Migrate), not MigrateBegin");
                return -EINVAL;
        }
        return 0;
}

/* ---- source ---- */

void postcopy_source_capabilities(Migration *m, JsonArray *caps, JsonObject *params) {
        /* Always set: a QEMU keeps capabilities and parameters from an earlier migration. */
        json_array_add_object_element(caps, migration_capability("postcopy-ram", m->options.postcopy));
        json_array_add_object_element(caps, migration_capability("multifd", m->options.parallel_connections > 0));
        json_object_set_int_member(params, "max-postcopy-bandwidth", (gint64) m->options.postcopy_bandwidth);
        if (m->options.parallel_connections > 0)
                json_object_set_int_member(params, "multifd-channels", m->options.parallel_connections);
}

static void on_start_postcopy_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                    JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        if (error < 0)
                log_warning("Migration %u: QEMU did not take migrate-start-postcopy: %s", m->id,
                            error_desc ?: strerror(-error));
}

void postcopy_source_migrating(Migration *m) {
        Domain *d = migration_domain(m);

        m->migrate_sent = true;
        if (m->postcopy_requested && d && domain_monitor(d))
                (void) qemu_monitor_command(domain_monitor(d), "migrate-start-postcopy", NULL, 0,
                                            on_start_postcopy_reply, m);
}

int migration_start_postcopy(Migration *m) {
        Domain *d = migration_domain(m);

        if (m->direction != MIGRATION_OUTGOING || m->state != MIGRATION_RUNNING)
                return -ENOTCONN;
        if (m->postcopy == MIGRATION_POSTCOPY_OFF)
                return -EOPNOTSUPP;
        if (m->postcopy_requested || migration_postcopy_started(m))
                return -EALREADY;
        /* After the last pass the guest is about to switch over anyway. */
        if (m->phase > MIGRATION_PHASE_PERFORM || m->perform_done)
                return -ENOTCONN;
        m->postcopy_requested = true;
        log_info("Migration %u of %s: switching to post-copy.", m->id, m->domain_name);
        /* Before QEMU migrates, QEMU refuses it: it goes with the migrate command. */
        if (m->migrate_sent && d && domain_monitor(d))
                return qemu_monitor_command(domain_monitor(d), "migrate-start-postcopy", NULL, 0,
                                            on_start_postcopy_reply, m);
        return 0;
}

static void postcopy_set(Migration *m, MigrationPostcopy p) {
        if (m->postcopy == p)
                return;
        log_info("Migration %u (%s %s): post-copy %s.", m->id, migration_direction_to_string(m->direction),
                 m->domain_name, migration_postcopy_to_string(p));
        m->postcopy = p;
        manager_migration_changed(m->manager, m);
}

static void recover_answer(Migration *m, int error, const char *message, const char *uri) {
        MigrationRecovered done = m->recover_done;
        void *userdata = m->recover_userdata;

        m->recover_done = NULL;
        m->recover_userdata = NULL;
        m->recover_timer = sd_event_source_disable_unref(m->recover_timer);
        if (done)
                done(userdata, error, message, uri);
}

static int on_recover_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Migration *m = userdata;
        m->recover_call = sd_bus_slot_unref(m->recover_call);
        recover_answer(m, -ETIMEDOUT, "QEMU did not get back to post-copy within 60 s (is the destination reachable?); "
                       "post-copy stays paused, Recover may be tried again", NULL);
        return 0;
}

/* The source's guest is gone for good now: the destination has it all and runs it. */
static void source_postcopy_done(Migration *m) {
        postcopy_set(m, MIGRATION_POSTCOPY_COMPLETED);
        source_confirm(m);
}

static int on_postcopy_finish(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        m->peer_call = sd_bus_slot_unref(m->peer_call);
        if (m->state != MIGRATION_RUNNING)
                return 0;
        if (e) {
                /* Whatever it says, the destination may have started the guest; ours is
                 * incomplete without its pages there anyway. Keep it paused. */
                g_autofree char *msg = g_strdup_printf("the destination did not run the guest after the switch to post-copy "
                                                       "(%s); the guest stays paused on the source",
                                                       e->message ?: e->name);
                Domain *d = migration_domain(m);
                postcopy_set(m, MIGRATION_POSTCOPY_FAILED);
                if (d)
                        domain_end_migration(d);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, msg);
                return 0;
        }
        m->finish_answered = true;
        if (m->outgoing_completed)
                source_postcopy_done(m);
        return 0;
}

/* QEMU switched: the source is paused for good, the destination gets Finish now and runs the
 * guest while the rest of its memory arrives (libvirt does the same). */
static void source_switched(Migration *m) {
        int r;

        set_phase(m, MIGRATION_PHASE_FINISH);
        m->finish_sent = true;
        /* On disk before: a ferryd restarted from here on must not resume the guest. */
        if (migration_domain(m))
                domain_save_live_state(migration_domain(m));
        r = peer_finish(m->peer, m->peer_owner, m->peer_migration, true, on_postcopy_finish, m, &m->peer_call);
        if (r < 0) {
                Domain *d = migration_domain(m);
                postcopy_set(m, MIGRATION_POSTCOPY_FAILED);
                if (d)
                        domain_end_migration(d);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED,
                              "cannot call Finish on the destination after the switch to post-copy; the guest stays paused");
        }
}

bool postcopy_source_event(Migration *m, const char *status) {
        Domain *d = migration_domain(m);

        if (m->postcopy == MIGRATION_POSTCOPY_OFF || m->state != MIGRATION_RUNNING)
                return false;
        if (strcmp(status, "postcopy-active") == 0) {
                bool first = !migration_postcopy_started(m);
                postcopy_set(m, MIGRATION_POSTCOPY_ACTIVE);
                if (first)
                        source_switched(m);
                else
                        recover_answer(m, 0, NULL, m->hypervisor_uri);
                return true;
        }
        if (!migration_postcopy_started(m))
                return false; /* pre-copy so far: the usual handling */
        if (strcmp(status, "postcopy-paused") == 0) {
                postcopy_set(m, MIGRATION_POSTCOPY_PAUSED);
                recover_answer(m, -ECONNRESET, "the stream broke again while recovering", NULL);
        } else if (strcmp(status, "postcopy-recover") == 0)
                postcopy_set(m, MIGRATION_POSTCOPY_RECOVERING);
        else if (strcmp(status, "completed") == 0) {
                m->outgoing_completed = true;
                m->stats.data_remaining = 0;
                if (m->finish_answered)
                        source_postcopy_done(m);
        } else if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
                postcopy_set(m, MIGRATION_POSTCOPY_FAILED);
                recover_answer(m, -EIO, "QEMU's migration failed", NULL);
                if (d)
                        domain_end_migration(d);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, POSTCOPY_SPLIT_MESSAGE);
        }
        return true;
}

static void on_resume_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                            JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        if (error < 0) {
                g_autofree char *msg = g_strdup_printf("QEMU refused to resume the migration: %s",
                                                       error_desc ?: strerror(-error));
                recover_answer(m, -EIO, msg, NULL);
        }
        /* Else the answer comes with postcopy-active (or postcopy-paused again). */
}

static void source_resume(Migration *m);
static void on_source_recover_tunnel_ready(Migration *m, int error, const char *message, const char *address);

static int on_peer_recovered(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        g_autofree char *why = NULL;
        const char *uri;

        m->recover_call = sd_bus_slot_unref(m->recover_call);
        if (m->state != MIGRATION_RUNNING)
                return 0;
        if (e) {
                g_autofree char *msg = g_strdup_printf("the destination cannot recover: %s", e->message ?: e->name);
                recover_answer(m, -EIO, msg, NULL);
                return 0;
        }
        if (sd_bus_message_read(reply, "s", &uri) < 0) {
                recover_answer(m, -EIO, "bad reply from the destination", NULL);
                return 0;
        }
        if (m->options.tunnelled) {
                /* A new source helper for the destination's new one; QEMU resumes into it. */
                if (tunnel_restart_source(m, uri, on_source_recover_tunnel_ready, &why) < 0)
                        recover_answer(m, -EIO, why ?: "cannot start a new tunnel helper", NULL);
                return 0;
        }
        if (outgoing_set_hypervisor_uri(m, uri, &why) < 0) {
                recover_answer(m, -EIO, why, NULL);
                return 0;
        }
        source_resume(m);
        return 0;
}

static void source_resume(Migration *m) {
        Domain *d = migration_domain(m);
        JsonObject *args;

        if (!d || !domain_monitor(d)) {
                recover_answer(m, -EIO, "the source's QEMU is not reachable", NULL);
                return;
        }
        args = json_object_new();
        json_object_set_string_member(args, "uri", m->hypervisor_uri);
        json_object_set_boolean_member(args, "resume", true);
        if (qemu_monitor_command(domain_monitor(d), "migrate", args, 0, on_resume_reply, m) < 0)
                recover_answer(m, -EIO, "cannot send migrate to QEMU", NULL);
}

static void on_source_recover_tunnel_ready(Migration *m, int error, const char *message, const char *address) {
        if (m->state != MIGRATION_RUNNING)
                return;
        if (error < 0)
                recover_answer(m, -EIO, message, NULL);
        else
                source_resume(m);
}

/* ---- destination ---- */

static void on_destination_recover_tunnel_ready(Migration *m, int error, const char *message, const char *address) {
        if (error < 0) {
                recover_answer(m, -EIO, message, NULL);
                return;
        }
        free(m->hypervisor_uri);
        m->hypervisor_uri = strdup(address);
        manager_migration_changed(m->manager, m);
        recover_answer(m, 0, NULL, m->hypervisor_uri);
}

static void on_migrate_recover_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                     JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        Domain *d = migration_domain(m);

        if (error < 0) {
                g_autofree char *msg = g_strdup_printf("QEMU cannot listen for the recovery: %s",
                                                       error_desc ?: strerror(-error));
                recover_answer(m, -EIO, msg, NULL);
                return;
        }
        if (m->options.tunnelled) {
                /* QEMU listens again on its socket: a new helper behind the peer port. */
                int r = d ? tunnel_restart_destination(m, d->uuid_string, on_destination_recover_tunnel_ready) : -ENOTCONN;
                if (r < 0) {
                        g_autofree char *msg = g_strdup_printf("cannot start a new tunnel helper: %s", strerror(-r));
                        recover_answer(m, -EIO, msg, NULL);
                }
                return;
        }
        recover_answer(m, 0, NULL, m->hypervisor_uri);
}

/* migrate-recover on a fresh port (the old one may still be in TIME_WAIT, and is no longer
 * listened on); the source gets the address as at Prepare. */
static int destination_recover(Migration *m) {
        Domain *d = migration_domain(m);
        _cleanup_(migration_uri_freep) MigrationUri *offer = NULL, *asked = NULL;
        g_autofree char *why = NULL, *listen_uri = NULL, *offer_uri = NULL;
        JsonObject *args;
        int r;

        if (!d || !domain_monitor(d))
                return -ENOTCONN;
        if (m->options.tunnelled) {
                /* QEMU unlinks its socket before it binds again; the helper's group gets it after. */
                g_autofree char *incoming = tunnel_incoming_uri(m->manager, d->uuid_string);
                if (!incoming)
                        return -ENOMEM;
                args = json_object_new();
                json_object_set_string_member(args, "uri", incoming);
                return qemu_monitor_command(domain_monitor(d), "migrate-recover", args, 0, on_migrate_recover_reply, m);
        }
        r = migration_uri_parse(m->hypervisor_uri, &offer, &why);
        if (r < 0)
                return r;
        if (offer->kind == MIGRATION_URI_TCP) {
                uint16_t port = migration_pick_port(m->manager);
                const char *bind_host = NULL;
                if (port == 0)
                        return -EADDRINUSE;
                /* Bind where Prepare bound. */
                if (m->options.listen_address)
                        bind_host = migration_ip_address_is_unspecified(m->options.listen_address) ? NULL :
                                    m->options.listen_address;
                else if (m->options.hypervisor_uri && migration_uri_parse(m->options.hypervisor_uri, &asked, &why) >= 0)
                        bind_host = asked->host;
                MigrationUri bind = { .kind = MIGRATION_URI_TCP, .host = (char *) bind_host, .port = port };
                offer->port = port;
                listen_uri = migration_uri_to_qemu(&bind);
                offer_uri = migration_uri_to_qemu(offer);
                m->incoming_port = port;
        } else {
                /* QEMU unlinks the path before it binds again. */
                listen_uri = migration_uri_to_qemu(offer);
                offer_uri = g_strdup(listen_uri);
        }
        if (!listen_uri || !offer_uri)
                return -ENOMEM;
        free(m->hypervisor_uri);
        m->hypervisor_uri = TAKE_PTR(offer_uri);
        manager_migration_changed(m->manager, m);
        args = json_object_new();
        json_object_set_string_member(args, "uri", listen_uri);
        return qemu_monitor_command(domain_monitor(d), "migrate-recover", args, 0, on_migrate_recover_reply, m);
}

int migration_recover(Migration *m, MigrationRecovered done, void *userdata) {
        int r;

        if (m->state != MIGRATION_RUNNING || m->postcopy != MIGRATION_POSTCOPY_PAUSED)
                return -ENOTCONN;
        if (m->recover_done)
                return -EALREADY;
        m->recover_done = done;
        m->recover_userdata = userdata;
        if (m->direction == MIGRATION_INCOMING)
                r = destination_recover(m);
        else {
                r = m->peer && m->peer_migration ?
                        peer_recover(m->peer, m->peer_owner, m->peer_migration, on_peer_recovered, m, &m->recover_call) :
                        -ENOTCONN;
                if (r >= 0)
                        r = sd_event_add_time_relative(manager_event(m->manager), &m->recover_timer, CLOCK_MONOTONIC,
                                                       RECOVER_TIMEOUT_USEC, 0, on_recover_timeout, m);
                if (r < 0)
                        m->recover_call = sd_bus_slot_unref(m->recover_call);
        }
        if (r < 0) {
                m->recover_done = NULL;
                m->recover_userdata = NULL;
        }
        return r;
}

bool postcopy_destination_event(Migration *m, const char *status) {
        Domain *d = migration_domain(m);

        if (m->postcopy == MIGRATION_POSTCOPY_OFF || m->state != MIGRATION_RUNNING)
                return false;
        if (strcmp(status, "postcopy-active") == 0) {
                postcopy_set(m, MIGRATION_POSTCOPY_ACTIVE);
                /* The source switched and may have sent Finish already: run the guest now. */
                if (m->pending_finish)
                        manager_migration_finish_pending(m->manager, m);
                return true;
        }
        if (!migration_postcopy_started(m))
                return false;
        if (strcmp(status, "postcopy-paused") == 0)
                postcopy_set(m, MIGRATION_POSTCOPY_PAUSED);
        else if (strcmp(status, "postcopy-recover") == 0)
                postcopy_set(m, MIGRATION_POSTCOPY_RECOVERING);
        else if (strcmp(status, "completed") == 0) {
                m->qemu_completed = true;
                m->stats.data_remaining = 0;
                postcopy_set(m, MIGRATION_POSTCOPY_COMPLETED);
                if (m->running_here) {
                        if (d && d->migration == m)
                                domain_end_migration(d);
                        set_phase(m, MIGRATION_PHASE_CONFIRM);
                        migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
                } else if (m->pending_finish)
                        manager_migration_finish_pending(m->manager, m);
        } else if (strcmp(status, "failed") == 0) {
                /* Not discarded: this copy may be all there is of the guest's newest state. */
                postcopy_set(m, MIGRATION_POSTCOPY_FAILED);
                if (d && d->migration == m)
                        domain_end_migration(d);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, POSTCOPY_SPLIT_MESSAGE);
        }
        return true;
}

static void on_status_after_cont(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                 JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        const char *status;

        if (error < 0 || !ret || !JSON_NODE_HOLDS_OBJECT(ret) || m->state != MIGRATION_RUNNING || !m->running_here)
                return;
        status = json_object_get_string_member_with_default(json_node_get_object(ret), "status", NULL);
        if (status)
                (void) postcopy_destination_event(m, status);
}

bool postcopy_destination_keeps_going(Migration *m) {
        Domain *d = migration_domain(m);

        if (!migration_postcopy_started(m) || m->qemu_completed || !d)
                return false;
        /* The guest runs here; its memory still arrives: the job goes on until QEMU completes
         * (or is recovered), holding the domain as migrating. */
        m->running_here = true;
        if (domain_begin_migration(d, m) < 0)
                log_warning("Migration %u: %s is busy, its post-copy may end unnoticed.", m->id, m->domain_name);
        /* While Finish ran the guest the domain held no migration, and QEMU's MIGRATION events
         * of that moment (its "completed" after a short post-copy) went nowhere: ask for the
         * status now. */
        else if (!domain_monitor(d) ||
                 qemu_monitor_command(domain_monitor(d), "query-migrate", NULL, 0, on_status_after_cont, m) < 0)
                log_warning("Migration %u: cannot ask QEMU for the post-copy status, its end may go unnoticed.", m->id);
        return true;
}
