/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The destination side of a migration: Prepare (the migrate hook, images for a storage copy,
 * the incoming QEMU, its NBD server or tunnel helper) and Finish. The jobs themselves and the
 * source side are in migration.c. */

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "hook.h"
#include "migration-internal.h"
#include "migration-postcopy.h"
#include "migration-storage.h"
#include "migration-tunnel.h"
#include "migration.h"
#include "qemu-monitor.h"


typedef struct PrepareRequest {
        Migration *migration;
        MigrationPrepared done;
        void *userdata;
} PrepareRequest;

static void on_disks_served(void *userdata, int error, const char *message) {
        PrepareRequest *req = userdata;
        Migration *m = req->migration;
        Domain *d = migration_domain(m);
        MigrationPrepared done = req->done;
        void *ud = req->userdata;
        free(req);

        if (error < 0 || !d || m->state != MIGRATION_RUNNING) {
                if (d && m->state == MIGRATION_RUNNING)
                        domain_discard_incoming(d);
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, message ?: "QEMU did not start");
                done(ud, m, error < 0 ? error : -EIO, message ?: "QEMU did not start", NULL);
                return;
        }
        (void) domain_begin_migration(d, m);
        set_phase(m, MIGRATION_PHASE_PERFORM);
        done(ud, m, 0, NULL, m->hypervisor_uri);
}

static void on_destination_tunnel_ready(Migration *m, int error, const char *message, const char *address) {
        PrepareRequest *req = TAKE_PTR(m->tunnel_prepare);
        Domain *d = migration_domain(m);

        if (!req)
                return;
        if (error < 0) {
                if (d && d->migration == m) {
                        domain_end_migration(d);
                        domain_discard_incoming(d);
                }
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, message);
                req->done(req->userdata, m, error, message, NULL);
        } else {
                free(m->hypervisor_uri);
                m->hypervisor_uri = strdup(address);
                set_phase(m, MIGRATION_PHASE_PERFORM);
                req->done(req->userdata, m, 0, NULL, address);
        }
        free(req);
}

static void on_incoming_started(void *userdata, int error, const char *message) {
        PrepareRequest *req = userdata;
        Migration *m = req->migration;
        Domain *d = migration_domain(m);
        MigrationPrepared done = req->done;
        void *ud = req->userdata;
        int r;
        free(req);

        if (error < 0 || !d) {
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, message ?: "QEMU did not start");
                done(ud, m, error < 0 ? error : -EIO, message ?: "QEMU did not start", NULL);
                return;
        }
        if (m->storage) {
                /* QEMU listens for the stream; now its NBD server for the disks. */
                req = calloc(1, sizeof(*req));
                if (!req) {
                        domain_discard_incoming(d);
                        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, "out of memory");
                        done(ud, m, -ENOMEM, "out of memory", NULL);
                        return;
                }
                *req = (PrepareRequest) { .migration = m, .done = done, .userdata = ud };
                storage_destination_start(m, on_disks_served, req);
                return;
        }
        (void) domain_begin_migration(d, m);
        if (m->options.tunnelled) {
                /* The answer waits for the helper: the source connects to it, not to QEMU. */
                r = tunnel_start_destination(m, d->uuid_string, on_destination_tunnel_ready);
                if (r < 0) {
                        g_autofree char *why = g_strdup_printf(
                                "cannot start the tunnel helper: %s",
                                r == -ESRCH ? "this host has no group ferry-transport (systemd-sysusers makes it)"
                                            : strerror(-r));
                        domain_end_migration(d);
                        domain_discard_incoming(d);
                        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, why);
                        done(ud, m, r, why, NULL);
                        return;
                }
                m->tunnel_prepare = g_memdup2(&(PrepareRequest) { .migration = m, .done = done, .userdata = ud },
                                              sizeof(PrepareRequest));
                return;
        }
        set_phase(m, MIGRATION_PHASE_PERFORM);
        done(ud, m, 0, NULL, m->hypervisor_uri);
}

uint16_t migration_pick_port(Manager *manager) {
        uint16_t min = manager->config.migration_port_min, max = manager->config.migration_port_max;
        /* Ports of incoming migrations in progress are taken; the rest of the range is tried in
         * order (QEMU reports a port someone else holds, and the source gets the error). */
        for (uint32_t p = min; p <= max; p++)
                if (!manager_incoming_port_in_use(manager, (uint16_t) p))
                        return (uint16_t) p;
        return 0;
}

/* Offline: the definition only, as a persistent domain here; no QEMU, nothing to finish. */
static int prepare_offline(Manager *manager, DomainDef **defp, Domain *existing, MigrationOptions *options,
                           MigrationPrepared done, void *userdata, char **ret_error) {
        Domain *d = existing;
        Migration *m;
        int r;

        if (d) {
                r = domain_redefine(d, *defp);
                if (r < 0)
                        return r;
                *defp = NULL;
        } else {
                r = domain_new(manager, *defp, true, &d);
                if (r < 0)
                        return r;
                *defp = NULL;
                r = domain_save_config(d);
                if (r < 0) {
                        domain_free(d);
                        return r;
                }
                manager_domain_added(manager, d);
        }
        r = migration_new(manager, MIGRATION_INCOMING, d, &m);
        if (r < 0)
                return 0; /* the definition is in; only the record is missing */
        m->options = *options;
        *options = (MigrationOptions) {};
        manager_migration_added(manager, m);
        migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
        done(userdata, m, 0, NULL, "");
        return 0;
}

static int prepare_parsed(Manager *manager, const char *xml, MigrationOptions *options,
                          MigrationPrepared done, void *userdata, char **ret_error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        _cleanup_(migration_uri_freep) MigrationUri *listen = NULL;
        g_autofree char *listen_uri = NULL, *offer_uri = NULL, *tls_dir = NULL, *nbd_host = NULL;
        PrepareRequest *req;
        Domain *d, *by_name, *by_uuid;
        Migration *m;
        bool created = false;
        int r;

        r = domain_def_parse(xml, strlen(xml), &def, ret_error);
        if (r < 0)
                return r;
        by_name = manager_find_domain_by_name(manager, def->name);
        by_uuid = manager_find_domain_by_uuid(manager, def->uuid);
        if (by_name != by_uuid || (by_name && domain_is_active(by_name))) {
                *ret_error = g_strdup_printf("domain '%s' already exists here%s", def->name,
                                             by_name && domain_is_active(by_name) ? " and is active" : " with another UUID");
                return -EEXIST;
        }
        r = migration_check_postcopy_options(options, false, ret_error);
        if (r < 0)
                return r;
        r = tunnel_check_destination_options(manager, options, ret_error);
        if (r < 0)
                return r;
        if (options->offline)
                return prepare_offline(manager, &def, by_name, options, done, userdata, ret_error);
        if (options->tls) {
                tls_dir = migration_tls_dir(manager->config_dir);
                r = migration_tls_check_files(tls_dir, true, ret_error);
                if (r < 0)
                        return r;
        }

        if (options->tunnelled) {
                /* QEMU listens on a UNIX socket for the helper; the helper takes the port. */
                char uuid[37];
                g_autofree char *uri = NULL;
                domain_uuid_format(def->uuid, uuid);
                uri = tunnel_incoming_uri(manager, uuid);
                r = uri ? migration_uri_parse(uri, &listen, ret_error) : -ENOMEM;
                if (r < 0)
                        return r;
        } else if (options->hypervisor_uri) {
                r = migration_uri_parse(options->hypervisor_uri, &listen, ret_error);
                if (r < 0)
                        return r;
        } else {
                listen = g_new0(MigrationUri, 1);
                listen->kind = MIGRATION_URI_TCP;
                listen->host = NULL; /* any address */
        }
        /* tcp://HOST/ without a port, or none given at all: one from the configured range. */
        if (listen->kind == MIGRATION_URI_TCP && listen->port == 0) {
                listen->port = migration_pick_port(manager);
                if (listen->port == 0) {
                        *ret_error = g_strdup("no free port in the migration port range");
                        return -EADDRINUSE;
                }
        }
        if (listen->kind == MIGRATION_URI_TCP) {
                /* listen_address: QEMU binds that address. The source connects to the hypervisor
                 * URI's host if one was given, else to that address, else to our name (QEMU
                 * itself then listens on every address). */
                const char *bind_host = listen->host, *offer_host = listen->host;
                if (options->listen_address) {
                        bind_host = migration_ip_address_is_unspecified(options->listen_address) ? NULL :
                                    options->listen_address;
                        offer_host = offer_host ?: bind_host;
                }
                MigrationUri bind = { .kind = MIGRATION_URI_TCP, .host = (char *) bind_host, .port = listen->port };
                MigrationUri offer = { .kind = MIGRATION_URI_TCP, .host = (char *) (offer_host ?: manager->hostname),
                                       .port = listen->port };
                listen_uri = migration_uri_to_qemu(&bind);
                offer_uri = migration_uri_to_qemu(&offer);
                nbd_host = g_strdup(offer.host);
        } else if (options->listen_address) {
                *ret_error = g_strdup("listen_address needs a tcp: hypervisor URI, not a unix: one");
                return -EINVAL;
        } else {
                listen_uri = migration_uri_to_qemu(listen);
                offer_uri = g_strdup(listen_uri);
        }
        if (!listen_uri || !offer_uri)
                return -EINVAL;

        d = by_name;
        if (!d) {
                DomainDef *copy = domain_def_copy(def);
                if (!copy)
                        return -ENOMEM;
                r = domain_new(manager, copy, false, &d);
                if (r < 0) {
                        domain_def_free(copy);
                        return r;
                }
                created = true;
        }
        r = migration_new(manager, MIGRATION_INCOMING, d, &m);
        if (r < 0)
                goto fail_domain;
        m->options = *options;
        *options = (MigrationOptions) {};
        m->incoming_port = listen->kind == MIGRATION_URI_TCP ? listen->port : 0;
        if (m->options.copy_storage != MIGRATION_COPY_STORAGE_NONE) {
                r = storage_destination_new(m, nbd_host ?: manager->hostname, ret_error);
                if (r < 0) {
                        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, *ret_error ?: strerror(-r));
                        manager_remove_migration(manager, m);
                        goto fail_domain;
                }
        }
        m->hypervisor_uri = TAKE_PTR(offer_uri);
        if (created)
                manager_domain_added(manager, d);
        manager_migration_added(manager, m);
        set_phase(m, MIGRATION_PHASE_PREPARE);

        req = calloc(1, sizeof(*req));
        if (!req) {
                r = -ENOMEM;
                goto fail_migration;
        }
        *req = (PrepareRequest) { .migration = m, .done = done, .userdata = userdata };
        d->incoming_def = TAKE_PTR(def);
        d->incoming_postcopy = m->options.postcopy;
        d->incoming_channels = m->options.parallel_connections;
        m->postcopy = m->options.postcopy ? MIGRATION_POSTCOPY_ARMED : MIGRATION_POSTCOPY_OFF;
        r = domain_start_incoming(d, listen_uri, tls_dir, on_incoming_started, req);
        if (r < 0) {
                free(req);
                goto fail_migration;
        }
        return 0;

fail_migration:
        migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, "cannot start the incoming QEMU");
        manager_remove_migration(manager, m);
fail_domain:
        if (created)
                manager_remove_domain(manager, d);
        return r;
}

/* copy_storage: the images are checked or created before anything else is made. */
typedef struct ImagesStep {
        Manager *manager;
        char *xml;
        MigrationOptions options;
        MigrationPrepared done;
        void *userdata;
} ImagesStep;

static void on_images_ready(void *userdata, int error, const char *message) {
        ImagesStep *step = userdata;
        g_autofree char *why = NULL;
        int r = error;

        if (r >= 0)
                r = prepare_parsed(step->manager, step->xml, &step->options, step->done, step->userdata, &why);
        if (r < 0) {
                storage_remove_created(&step->options);
                step->done(step->userdata, NULL, r, why ?: message ?: strerror(-r), NULL);
        }
        migration_options_done(&step->options);
        free(step->xml);
        free(step);
}

static int prepare_storage_then_parsed(Manager *manager, const char *xml, MigrationOptions *options,
                                       MigrationPrepared done, void *userdata, char **ret_error) {
        ImagesStep *step;
        int r;

        if (options->copy_storage == MIGRATION_COPY_STORAGE_NONE && !options->disk_sizes && !options->disks_uri)
                return prepare_parsed(manager, xml, options, done, userdata, ret_error);
        step = calloc(1, sizeof(*step));
        if (!step)
                return -ENOMEM;
        *step = (ImagesStep) { .manager = manager, .xml = strdup(xml), .options = *options, .done = done,
                               .userdata = userdata };
        *options = (MigrationOptions) {};
        r = step->xml ? storage_destination_images(manager, step->xml, &step->options, on_images_ready, step, ret_error)
                      : -ENOMEM;
        if (r < 0) {
                *options = step->options;
                free(step->xml);
                free(step);
        }
        return r < 0 ? r : 0;
}

/* The administrator's hook (/etc/ferry/hooks/migrate NAME migrate begin -) may rewrite the
 * incoming XML or refuse it, as libvirt's qemu hook does; empty output keeps it. */
typedef struct HookRequest {
        Manager *manager;
        char *xml;
        MigrationOptions options;
        MigrationPrepared done;
        void *userdata;
        Hook *hook;
} HookRequest;

static void on_migrate_hook(void *userdata, int error, const char *message, const char *output) {
        HookRequest *req = userdata;
        g_autofree char *why = NULL;
        int r;

        if (error < 0) {
                why = g_strdup_printf("the migrate hook refused the domain: %s", message);
                r = -EPERM;
        } else {
                const char *xml = output && output[strspn(output, " \t\r\n")] ? output : req->xml;
                r = prepare_storage_then_parsed(req->manager, xml, &req->options, req->done, req->userdata, &why);
        }
        if (r < 0)
                req->done(req->userdata, NULL, r, why ?: strerror(-r), NULL);
        migration_options_done(&req->options);
        hook_free(req->hook);
        free(req->xml);
        free(req);
}

int migration_prepare_incoming(Manager *manager, const char *xml, MigrationOptions *options,
                               MigrationPrepared done, void *userdata, char **ret_error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        g_autofree char *hook = g_build_filename(manager->config_dir, "hooks", "migrate", NULL);
        HookRequest *req;
        int r;

        /* Validate before anything runs; the hook sees only XML we would accept. */
        r = domain_def_parse(xml, strlen(xml), &def, ret_error);
        if (r < 0)
                return r;
        if (!options->offline && !options->tls && !(options->tunnelled && !options->tunnel_plaintext) &&
            manager->config.migration_force_tls) {
                *ret_error = g_strdup("this host requires TLS for incoming migrations ([Migration] ForceTLS=yes)");
                return -EPERM;
        }
        /* Refused combinations, before the hook runs or any image is made (prepare_parsed
         * checks them again). */
        r = migration_check_postcopy_options(options, false, ret_error);
        if (r < 0)
                return r;
        if (access(hook, X_OK) < 0)
                return prepare_storage_then_parsed(manager, xml, options, done, userdata, ret_error);

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (HookRequest) { .manager = manager, .xml = strdup(xml), .options = *options, .done = done,
                               .userdata = userdata };
        *options = (MigrationOptions) {};
        char *argv[] = { hook, def->name, (char *) "migrate", (char *) "begin", (char *) "-", NULL };
        r = req->xml ? hook_run(manager_event(manager), argv, xml, on_migrate_hook, req, &req->hook) : -ENOMEM;
        if (r < 0) {
                *options = req->options;
                free(req->xml);
                free(req);
                *ret_error = g_strdup("cannot run the migrate hook");
                return r;
        }
        return 0;
}

typedef struct FinishRequest {
        Migration *migration;
        MigrationDone done;
        void *userdata;
} FinishRequest;

static void on_incoming_running(void *userdata, int error, const char *message) {
        FinishRequest *req = userdata;
        Migration *m = req->migration;
        Domain *d = migration_domain(m);

        /* The seed's table: --persistent defines the domain here with the source's definition
         * (replacing one we had); without it, a definition we had stays as it was. */
        if (error >= 0 && d && m->options.persistent) {
                DomainDef *def = domain_def_copy(d->live_def ?: d->def);
                if (!def || domain_redefine(d, def) < 0) {
                        domain_def_free(def);
                        log_warning("Migration %u: cannot save the definition of %s here, ignoring.",
                                    m->id, m->domain_name);
                }
        }
        if (error < 0)
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, message);
        else if (postcopy_destination_keeps_going(m))
                ; /* the guest runs; the end comes with QEMU's completed */
        else {
                set_phase(m, MIGRATION_PHASE_CONFIRM);
                migration_end(m, MIGRATION_COMPLETED, NULL, NULL);
        }
        req->done(req->userdata, error, message);
        free(req);
}

int migration_finish_incoming(Migration *m, bool success, MigrationDone done, void *userdata) {
        Domain *d = migration_domain(m);
        FinishRequest *req;
        int r;

        if (m->direction != MIGRATION_INCOMING || m->state != MIGRATION_RUNNING || !d)
                return -ENOTCONN;
        /* After the switch to post-copy this copy holds pages the source lacks. */
        if (!success && migration_postcopy_started(m))
                return -EBUSY;
        set_phase(m, MIGRATION_PHASE_FINISH);
        if (!success) {
                domain_end_migration(d);
                domain_discard_incoming(d);
                migration_end(m, MIGRATION_CANCELLED, FERRY_ERROR_MIGRATION_CANCELLED, "the source gave up");
                done(userdata, 0, NULL);
                return 0;
        }
        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (FinishRequest) { .migration = m, .done = done, .userdata = userdata };
        domain_end_migration(d);
        if (m->storage)
                storage_destination_finish(m);
        r = domain_run_after_migration(d, m->options.paused, REASON_MIGRATED, on_incoming_running, req);
        if (r < 0) {
                free(req);
                return r;
        }
        return 0;
}
