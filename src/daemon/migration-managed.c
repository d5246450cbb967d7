/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The source side of libvirt's managed direct flow (seed: "Communication control paths/flows"):
 * a client calls Begin here, Prepare on the destination, Perform here, Finish there and
 * Confirm here. This ferryd never talks to the destination; it follows its client instead. If
 * the client goes away before Perform completed, the guest runs on here; after that it stays
 * paused, because the client may have called Finish and the guest may run there already.
 *
 * Also the client watch both directions share: the destination follows the caller of
 * PrepareMigration the same way (in p2p that is the source's ferryd). */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "domain.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-postcopy.h"
#include "migration-options.h"

const char *migration_flow_to_string(const Migration *m) {
        if (m->options.direct)
                return "unmanaged-direct";
        return m->managed ? "managed-direct" : "peer-to-peer";
}

bool migration_is_client(const Migration *m, const char *name) {
        if (!m->managed)
                return true;
        return m->client && name && strcmp(m->client, name) == 0;
}

int migration_begin_managed(Domain *d, const char *destination_uri, MigrationOptions *options,
                            const char *client, Migration **ret, char **ret_xml, char **ret_error) {
        char *xml = NULL;
        Migration *m;
        int r;

        r = outgoing_new(d, destination_uri, options, true, &m, NULL, NULL, ret_error);
        if (r < 0)
                return r;
        if (r == 0) {
                /* The job is there and failed already (it says why, e.g. a missing TLS file). */
                *ret_error = g_strdup(m->error_message);
                return -EIO;
        }
        /* What the destination gets, as in peer-to-peer: the migratable XML (the inactive one for
         * offline), or destination_xml, under destination_name. */
        r = migration_destination_xml(d, &m->options, &xml);
        if (r >= 0)
                r = migration_track_client(m, client);
        if (r < 0) {
                free(xml);
                *ret_error = g_strdup_printf("cannot begin: %s", strerror(-r));
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, *ret_error);
                return -EIO;
        }
        *ret = m;
        *ret_xml = xml;
        return 0;
}

void managed_perform_answer(Migration *m, int error, const char *message) {
        MigrationDone done = m->perform_done_cb;

        if (!done)
                return;
        m->perform_done_cb = NULL;
        done(m->perform_userdata, error, message);
}

void managed_performed(Migration *m) {
        /* From here on, only Confirm decides: the client may call Finish on the destination. */
        m->perform_done = true;
        log_info("Migration %u of %s: QEMU sent everything, the guest is paused here until Confirm.",
                 m->id, m->domain_name);
        managed_perform_answer(m, 0, NULL);
}

int migration_perform_managed(Migration *m, const char *hypervisor_uri, MigrationDone done, void *userdata,
                              char **ret_error) {
        int r;

        if (!m->managed || m->state != MIGRATION_RUNNING || m->phase != MIGRATION_PHASE_BEGIN ||
            m->options.offline || m->perform_done_cb)
                return -ENOTCONN;
        r = outgoing_set_hypervisor_uri(m, hypervisor_uri, ret_error);
        if (r < 0)
                return r;
        /* done() may run before this returns (QEMU unreachable: the job fails at once). */
        m->perform_done_cb = done;
        m->perform_userdata = userdata;
        source_perform(m);
        return 0;
}

int migration_confirm_managed(Migration *m, bool success) {
        Domain *d = migration_domain(m);

        if (!m->managed || m->state != MIGRATION_RUNNING)
                return -ENOTCONN;
        if (!success) {
                /* As libvirt's Confirm(cancelled): whatever happened, the guest is ours again
                 * (a Perform in progress is stopped). */
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED,
                            m->perform_done ? "the client reported that the destination did not take the guest "
                                              "(Confirm(false)); it runs here again" :
                                              "the client gave up (Confirm(false)); the guest runs here again");
                return 0;
        }
        if (m->options.offline ? m->phase != MIGRATION_PHASE_BEGIN : !m->perform_done)
                return -ENOTCONN;
        /* The destination has the guest (or, offline, the definition): ours goes. */
        set_phase(m, MIGRATION_PHASE_CONFIRM);
        if (d) {
                bool offline = m->options.offline;
                if (!offline)
                        domain_end_migration(d);
                /* With undefine_source the definition goes too (offline, an inactive domain
                 * object goes with it: d is not used after this then). */
                if (m->options.undefine_source && d->persistent && domain_undefine(d) < 0)
                        log_warning("Migration %u: cannot remove the source definition of %s, ignoring.",
                                    m->id, m->domain_name);
                if (!offline)
                        domain_confirm_migrated_out(d);
        }
        migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
        return 0;
}

/* ---- the client going away ---- */

static void client_gone(Migration *m) {
        Domain *d = migration_domain(m);
        g_autofree char *msg = NULL;

        if (m->state != MIGRATION_RUNNING)
                return;
        if (m->direction == MIGRATION_INCOMING) {
                /* After Finish the job goes on by itself; before it, nobody will ever say
                 * whether this copy is the guest: the source keeps it (or left it paused). */
                if (m->pending_finish || m->phase >= MIGRATION_PHASE_FINISH)
                        return;
                /* Switched to post-copy: the guest's newest state may be here; never discarded. */
                if (migration_postcopy_started(m))
                        return;
                msg = g_strdup_printf("the caller of PrepareMigration (%s) went away before Finish: "
                                      "the incoming guest was discarded", m->client);
                if (d && d->migration == m) {
                        domain_end_migration(d);
                        domain_discard_incoming(d);
                }
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, msg);
                return;
        }
        if (!m->perform_done) {
                msg = g_strdup_printf("the client that drove this migration (%s) went away before Perform "
                                      "completed: the guest runs on here", m->client);
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, msg);
                return;
        }
        /* The seed's one safe choice: the client may have called Finish, and the guest may run
         * on the destination already. Resuming here could run it twice. */
        msg = g_strdup_printf("the client that drove this migration (%s) went away after Perform and before "
                              "Confirm: the guest is left paused here, as the destination may run it already "
                              "(check there, then resume or destroy it here)", m->client);
        if (d && d->migration == m)
                domain_end_migration(d);
        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, msg);
}

static int on_client_track_empty(sd_bus_track *track, void *userdata) {
        Migration *m = userdata;

        m->client_track = sd_bus_track_unref(m->client_track);
        client_gone(m);
        return 0;
}

static int on_client_owner(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;

        m->client_check = sd_bus_slot_unref(m->client_check);
        if (sd_bus_message_is_method_error(reply, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                client_gone(m);
        return 0;
}

int migration_track_client(Migration *m, const char *name) {
        sd_bus *bus = manager_bus(m->manager);
        int r;

        if (!bus || !name)
                return -ENOTCONN;
        if (!m->client) {
                m->client = strdup(name);
                if (!m->client)
                        return -ENOMEM;
        }
        m->client_track = sd_bus_track_unref(m->client_track);
        r = sd_bus_track_new(bus, &m->client_track, on_client_track_empty, m);
        if (r < 0)
                return r;
        r = sd_bus_track_add_name(m->client_track, name);
        if (r < 0)
                return r;
        /* The watch starts now; the name may have left already, between its call and this. */
        m->client_check = sd_bus_slot_unref(m->client_check);
        return sd_bus_call_method_async(bus, &m->client_check, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "GetNameOwner", on_client_owner, m, "s", name);
}
