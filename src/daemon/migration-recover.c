/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A ferryd restarted while a migration went out: it finds the record in the live state and
 * undoes the migration (or leaves the guest paused once Finish was sent). Taking the job over
 * where it was is not done; docs/migration.md says what a restart does instead. */

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "domain.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-peer.h"
#include "migration.h"
#include "qemu-monitor.h"

static void on_recover_query(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                             JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        const char *status = "none";

        if (m->state != MIGRATION_RUNNING)
                return;
        migration_on_query_migrate(mon, error, error_class, error_desc, ret, m); /* how far it got */
        if (error >= 0 && ret && JSON_NODE_HOLDS_OBJECT(ret))
                status = json_object_get_string_member_with_default(json_node_get_object(ret), "status", "none");
        log_info("Migration %u of %s: QEMU's migration is %s after the restart.", m->id, m->domain_name, status);
        if (m->options.direct && strcmp(status, "completed") == 0) {
                migration_qemu_event(m, status); /* the other QEMU has it: as if we had seen it */
                return;
        }
        if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0 ||
            strcmp(status, "none") == 0) {
                /* Over already (completed: QEMU sent everything, but Finish never went, so the
                 * destination does not run the guest). */
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, RECOVERED_MESSAGE);
                return;
        }
        /* Still sending, or paused before switchover: cancel; QEMU's "cancelled" event ends it
         * (migration_qemu_event). */
        if (qemu_monitor_command(mon, "migrate_cancel", NULL, 0, NULL, NULL) < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, RECOVERED_MESSAGE);
}

void migration_recover_outgoing(Domain *d, OutgoingMigrationRecord *rec) {
        Migration *m;
        int r;

        r = migration_new(d->manager, MIGRATION_OUTGOING, d, &m);
        if (r < 0) {
                /* No record, still the same choices. */
                log_error_errno(r, "Domain %s: cannot take over its interrupted migration (%m); %s.", d->def->name,
                                rec->finish_sent ? "leaving it paused" : "cancelling QEMU's migration");
                if (rec->finish_sent)
                        domain_set_paused_reason(d, REASON_MIGRATION_INTERRUPTED);
                else if (domain_monitor(d))
                        (void) qemu_monitor_command(domain_monitor(d), "migrate_cancel", NULL, 0, NULL, NULL);
                domain_save_live_state(d);
                return;
        }
        m->destination_uri = TAKE_PTR(rec->destination_uri);
        m->peer_migration = TAKE_PTR(rec->peer_migration);
        m->peer_owner = TAKE_PTR(rec->peer_owner);
        m->options.direct = rec->direct;
        m->source_was_running = rec->source_was_running;
        m->finish_sent = rec->finish_sent;
        m->recovered = true;
        m->phase = m->finish_sent ? MIGRATION_PHASE_FINISH : MIGRATION_PHASE_PERFORM;
        manager_migration_added(d->manager, m);
        log_warning("Domain %s was migrating to %s when ferryd stopped; %s.", d->def->name,
                    strna(m->destination_uri), m->finish_sent ? "Finish was sent, leaving it paused" : "cancelling");

        if (m->finish_sent) {
                /* The seed's one safe choice: we cannot know whether the destination runs it. */
                domain_set_paused_reason(d, REASON_MIGRATION_INTERRUPTED);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, INTERRUPTED_MESSAGE);
                domain_save_live_state(d);
                return;
        }
        /* The record stays on disk while we undo it (a crash now does it all again). */
        r = domain_begin_migration(d, m);
        if (r < 0) {
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, "cannot take over the domain");
                return;
        }
        /* The destination's half goes when its stream fails; tell it too, in case QEMU had sent
         * everything already. Only the ferryd that prepared it (its unique name): a restarted
         * one may have another migration at that path. */
        if (!m->options.direct && m->peer_migration && m->peer_owner && m->destination_uri) {
                _cleanup_(ferry_uri_freep) FerryUri *dest = NULL;
                g_autofree char *address = NULL, *why = NULL,
                                 *pki = g_build_filename(d->manager->config_dir, "pki", NULL);
                if (ferry_uri_parse(m->destination_uri, &dest, &why) >= 0 &&
                    ferry_uri_to_bus_address(dest, pki, &address) >= 0 &&
                    peer_open(manager_event(d->manager), address, &m->peer) < 0)
                        log_warning("Migration %u: cannot reach %s to drop its half, ignoring.", m->id,
                                    m->destination_uri);
        }
        if (!domain_monitor(d) ||
            qemu_monitor_command(domain_monitor(d), "query-migrate", NULL, 0, on_recover_query, m) < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, RECOVERED_MESSAGE);
}
