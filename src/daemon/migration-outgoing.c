/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The start of an outgoing migration: the checks every outgoing flow shares (outgoing_new), and
 * for the peer-to-peer flow the source's Begin and Prepare: the connection to the destination's
 * ferryd, its HostUUID (not ourselves), PrepareMigration with the migratable XML, and the answer
 * that becomes QEMU's address (or the tunnel's). Perform, Finish and Confirm: migration.c. */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "domain.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-options.h"
#include "migration-peer.h"
#include "migration-postcopy.h"
#include "migration-storage.h"
#include "migration-tunnel.h"
#include "migration.h"

static int on_peer_owner_changed(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(msg, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (!m->peer_owner || strcmp(old_owner, m->peer_owner) != 0 || m->state != MIGRATION_RUNNING)
                return 0;
        /* During Finish the answer to the call decides (it fails now too); before it, the
         * destination never ran the guest. */
        if (!m->finish_sent)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the destination's ferryd went away");
        return 0;
}

/* Prepare answered after we gave up (source_fail): undo it there. */
static void abort_late_prepare(Migration *m, sd_bus_message *reply) {
        const char *path, *uri;

        m->abort_call = sd_bus_slot_unref(m->abort_call);
        if (!sd_bus_message_get_error(reply) && !m->options.offline &&
            sd_bus_message_read(reply, "os", &path, &uri) >= 0) {
                log_info("Migration %u: the destination prepared after all, telling it to discard that.", m->id);
                if (peer_finish(m->peer, sd_bus_message_get_sender(reply), path, false, source_on_peer_finish_abort, m,
                                &m->abort_call) >= 0)
                        return;
        }
        m->peer = peer_close(m->peer);
}

int outgoing_set_hypervisor_uri(Migration *m, const char *uri, char **ret_error) {
        _cleanup_(migration_uri_freep) MigrationUri *parsed = NULL;
        g_autofree char *why = NULL;

        /* What the destination gives us is input too: it must be a tcp: or unix: address. */
        if (migration_uri_parse(uri, &parsed, &why) < 0) {
                *ret_error = g_strdup_printf("the destination offered an unusable address: %s", strna(why));
                return -EINVAL;
        }
        if (m->options.tls && parsed->kind != MIGRATION_URI_TCP) {
                *ret_error = g_strdup("TLS needs a tcp: address from the destination");
                return -EINVAL;
        }
        free(m->hypervisor_uri);
        m->hypervisor_uri = migration_uri_to_qemu(parsed);
        free(m->tls_hostname);
        m->tls_hostname = parsed->host ? strdup(parsed->host) : NULL;
        if (!m->hypervisor_uri)
                return -ENOMEM;
        migration_changed(m);
        return 0;
}

static void on_source_tunnel_ready(Migration *m, int error, const char *message, const char *address) {
        if (error < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, message);
        else if (m->state == MIGRATION_RUNNING)
                source_perform(m);
}

static int on_peer_prepared(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        g_autofree char *why = NULL;
        const char *path, *uri;

        if (m->state != MIGRATION_RUNNING) {
                abort_late_prepare(m, reply);
                return 0;
        }
        m->peer_call = sd_bus_slot_unref(m->peer_call);
        if (e) {
                g_autofree char *msg = g_strdup_printf("the destination refused: %s", e->message ?: e->name);
                source_fail(m, sd_bus_error_has_name(e, "org.ferry.Ferry1.Error.DomainExists") ?
                                       "org.ferry.Ferry1.Error.DomainExists" : FERRY_ERROR_MIGRATION_FAILED, msg);
                return 0;
        }
        if (sd_bus_message_read(reply, "os", &path, &uri) < 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "bad reply from the destination");
                return 0;
        }
        m->peer_migration = strdup(path);
        m->peer_owner = strdup(strempty(sd_bus_message_get_sender(reply)));
        if (migration_domain(m))
                domain_save_live_state(migration_domain(m));
        /* If that ferryd goes away before Finish, its half is lost: stop and resume ours. */
        (void) peer_watch_owner(m->peer, on_peer_owner_changed, m, &m->peer_watch);
        if (m->options.offline) {
                Domain *d = migration_domain(m);
                /* The definition is there now; the seed's --undefinesource applies to ours. */
                if (d && m->options.undefine_source && d->persistent && domain_undefine(d) < 0)
                        log_warning("Migration %u: cannot remove the source definition, ignoring.", m->id);
                migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
                return 0;
        }
        if (m->options.tunnelled) {
                int r = tunnel_start_source(m, uri, on_source_tunnel_ready, &why);
                if (r < 0)
                        source_fail(m, FERRY_ERROR_MIGRATION_FAILED,
                                    why ?: "cannot start the tunnel helper");
                return 0;
        }
        if (outgoing_set_hypervisor_uri(m, uri, &why) < 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, why);
                return 0;
        }
        if (m->storage)
                storage_source_locate(m, source_perform); /* where its NBD server listens */
        else
                source_perform(m);
        return 0;
}

static void send_prepare(Migration *m);

static int on_peer_host_uuid(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        Domain *d = migration_domain(m);
        const char *uuid;

        m->peer_call = sd_bus_slot_unref(m->peer_call);
        if (e) {
                g_autofree char *msg = g_strdup_printf("cannot reach ferryd at %s: %s", m->destination_uri,
                                                       e->message ?: e->name);
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, msg);
                return 0;
        }
        if (sd_bus_message_read(reply, "v", "s", &uuid) < 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "bad reply from the destination");
                return 0;
        }
        if (strcmp(uuid, manager_host_uuid(m->manager)) == 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED,
                            "the destination is this host (same host UUID): refusing to migrate to itself");
                return 0;
        }
        if (!d) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the domain went away");
                return 0;
        }
        set_phase(m, MIGRATION_PHASE_PREPARE);
        if (m->options.copy_storage != MIGRATION_COPY_STORAGE_NONE)
                storage_source_prepare(m, send_prepare); /* the disks' sizes go with Prepare */
        else
                send_prepare(m);
        return 0;
}

static void send_prepare(Migration *m) {
        Domain *d = migration_domain(m);
        g_autofree char *xml = NULL;
        int r;

        if (!d) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the domain went away");
                return;
        }
        r = migration_destination_xml(d, &m->options, &xml);
        if (r < 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "cannot make the destination's definition");
                return;
        }
        r = xml ? peer_prepare(m->peer, xml, &m->options, on_peer_prepared, m, &m->peer_call) : -ENOMEM;
        if (r < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "cannot call Prepare on the destination");
}

int outgoing_new(Domain *d, const char *destination_uri, MigrationOptions *options, bool managed,
                 Migration **ret, MigrationUri **ret_hv, char **ret_address, char **ret_error) {
        _cleanup_(ferry_uri_freep) FerryUri *dest = NULL;
        _cleanup_(migration_uri_freep) MigrationUri *hv = NULL;
        g_autofree char *address = NULL;
        Migration *m;
        int r;

        if (options->direct) {
                if (managed) {
                        *ret_error = g_strdup("the direct option (unmanaged direct) is for Domain.Migrate, not MigrateBegin");
                        return -EINVAL;
                }
                /* The destination URI is the hypervisor URI itself. */
                if (options->offline || options->hypervisor_uri || options->persistent || options->destination_xml ||
                    options->destination_name || options->listen_address) {
                        *ret_error = g_strdup("an unmanaged direct migration takes only a hypervisor URI");
                        return -EINVAL;
                }
                r = migration_uri_parse(destination_uri, &hv, ret_error);
                if (r < 0)
                        return r;
                if (hv->kind == MIGRATION_URI_TCP && hv->port == 0) {
                        *ret_error = g_strdup("an unmanaged direct migration needs the port QEMU listens on");
                        return -EINVAL;
                }
        } else {
                r = ferry_uri_parse(destination_uri, &dest, ret_error);
                if (r < 0)
                        return r;
        }
        if (options->hypervisor_uri) {
                r = migration_uri_parse(options->hypervisor_uri, &hv, ret_error);
                if (r < 0)
                        return r;
        }
        r = tunnel_check_source_options(d->manager, options, managed, ret_error);
        if (r < 0)
                return r;
        /* Offline moves no stream: there is nothing to encrypt. The tunnel encrypts unless
         * plaintext was asked for. */
        if (!options->offline && !options->tls && !(options->tunnelled && !options->tunnel_plaintext) &&
            d->manager->config.migration_force_tls) {
                *ret_error = g_strdup("this host requires TLS for migrations ([Migration] ForceTLS=yes): use the tls option");
                return -EINVAL;
        }
        if (options->tls && !options->offline && hv && hv->kind != MIGRATION_URI_TCP) {
                *ret_error = g_strdup("TLS needs a tcp: hypervisor URI (QEMU checks the destination's name)");
                return -EINVAL;
        }
        r = migration_check_destination_options(d, options, hv, ret_error);
        if (r < 0)
                return r;
        r = migration_check_postcopy_options(options, managed, ret_error);
        if (r < 0)
                return r;
        r = storage_check_options(d, options, managed, ret_error);
        if (r < 0)
                return r;
        if (options->offline) {
                /* Only the definition moves; the guest, running or not, stays where it is. */
                if (!d->persistent) {
                        *ret_error = g_strdup("offline migration moves a definition: the domain must be persistent");
                        return -EINVAL;
                }
        } else {
                if (d->state != DOMAIN_RUNNING && d->state != DOMAIN_PAUSED)
                        return -ENOTCONN;
                if (d->op != DOMAIN_OP_NONE || !domain_monitor(d))
                        return -EBUSY;
        }
        /* Managed direct: the client connects to the destination, not us. */
        if (dest && !managed) {
                g_autofree char *pki = g_build_filename(d->manager->config_dir, "pki", NULL);
                r = ferry_uri_to_bus_address(dest, pki, &address);
                if (r < 0)
                        return r;
        }

        r = migration_new(d->manager, MIGRATION_OUTGOING, d, &m);
        if (r < 0)
                return r;
        m->managed = managed;
        m->destination_uri = strdup(destination_uri);
        m->options = *options;
        *options = (MigrationOptions) {};
        m->source_was_running = d->state == DOMAIN_RUNNING;
        m->postcopy = m->options.postcopy ? MIGRATION_POSTCOPY_ARMED : MIGRATION_POSTCOPY_OFF;
        m->options.paused = m->options.paused || d->state == DOMAIN_PAUSED;
        if (!m->options.offline) {
                r = domain_begin_migration(d, m);
                if (r < 0) {
                        manager_remove_migration(d->manager, m);
                        return r;
                }
        }
        manager_migration_added(d->manager, m);
        *ret = m;
        if (ret_hv)
                *ret_hv = TAKE_PTR(hv);
        if (ret_address)
                *ret_address = TAKE_PTR(address);

        if (m->options.tls && !m->options.offline) {
                g_autofree char *dir = migration_tls_dir(d->manager->config_dir);
                g_autofree char *why = NULL;
                if (migration_tls_check_files(dir, false, &why) < 0) {
                        source_fail(m, FERRY_ERROR_MIGRATION_FAILED, why);
                        return 0;
                }
        }
        return 1;
}

int migration_start_outgoing(Domain *d, const char *destination_uri, MigrationOptions *options,
                             Migration **ret, char **ret_error) {
        _cleanup_(migration_uri_freep) MigrationUri *hv = NULL;
        g_autofree char *address = NULL;
        Migration *m;
        int r;

        r = outgoing_new(d, destination_uri, options, false, &m, &hv, &address, ret_error);
        if (r < 0)
                return r;
        *ret = m;
        if (r == 0) /* the job is there, and failed already */
                return 0;

        if (m->options.direct) {
                m->hypervisor_uri = migration_uri_to_qemu(hv);
                m->tls_hostname = hv->host ? strdup(hv->host) : NULL;
                source_perform(m);
                return 0;
        }

        /* Begin is ours: the migratable XML is made when Prepare is sent. Then connect with
         * our own credentials, and make sure the peer is another host. */
        r = peer_open(manager_event(d->manager), address, &m->peer);
        if (r >= 0)
                r = peer_get_host_uuid(m->peer, on_peer_host_uuid, m, &m->peer_call);
        if (r < 0) {
                g_autofree char *msg = g_strdup_printf("cannot connect to %s: %s", destination_uri, strerror(-r));
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, msg);
        }
        return 0;
}

