/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>
#include <stdio.h>
#include <unistd.h>

#include "build-config.h"
#include "domain-dbus.h"
#include "domain-store.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager-dbus.h"
#include "manager.h"
#include "migration-dbus.h"
#include "migration.h"
#include "migration-storage.h"

#define USEC_PER_SEC 1000000ULL

static char *effective_hostname(const Config *c) {
        char buf[HOST_NAME_MAX + 1] = {};

        if (c->hostname)
                return strdup(c->hostname);
        if (gethostname(buf, sizeof(buf) - 1) < 0)
                return strdup("localhost");
        return strdup(buf);
}

static int load_config(Manager *m) {
        Config c;
        char *h;
        int r;

        config_init(&c);
        r = config_load(&c, m->config_path);
        if (r < 0) {
                config_done(&c);
                return r;
        }
        h = effective_hostname(&c);
        if (!h) {
                config_done(&c);
                return -ENOMEM;
        }
        config_done(&m->config);
        m->config = c;
        free(m->hostname);
        m->hostname = h;
        if (!getenv("FERRY_LOG_LEVEL"))
                log_set_max_level(m->config.log_level);
        return 0;
}

/* Points the idle timer at last activity + timeout: one wakeup per quiet period. */
static void idle_schedule(Manager *m) {
        if (!m->idle_timer)
                return;
        if (m->exiting || m->config.idle_timeout_sec == 0) {
                (void) sd_event_source_set_enabled(m->idle_timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time(m->idle_timer,
                                        m->last_activity_usec + m->config.idle_timeout_sec * USEC_PER_SEC);
        (void) sd_event_source_set_enabled(m->idle_timer, SD_EVENT_ONESHOT);
}

int manager_new(const char *config_path, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        config_init(&m->config);
        m->config_path = strdup(config_path);
        m->polkit = polkit_registry_new();
        /* Overridable for running a ferryd by hand next to an installed one. */
        m->config_dir = strdup(getenv("FERRY_CONFIG_DIR") ?: FERRY_SYSCONF_DIR);
        m->runtime_dir = strdup(getenv("FERRY_RUNTIME_DIR") ?: FERRY_RUNTIME_DIR);
        m->domains_by_name = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        m->domains_by_uuid = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        if (!m->config_path || !m->polkit || !m->config_dir || !m->runtime_dir)
                return -ENOMEM;
        m->kvm = access("/dev/kvm", R_OK | W_OK) == 0;
        m->migrations = g_hash_table_new(g_direct_hash, g_direct_equal);
        m->next_migration_id = 1;
        sd_id128_t machine;
        if (sd_id128_get_machine(&machine) >= 0)
                snprintf(m->host_uuid, sizeof(m->host_uuid), SD_ID128_UUID_FORMAT_STR, SD_ID128_FORMAT_VAL(machine));
        else
                snprintf(m->host_uuid, sizeof(m->host_uuid), "00000000-0000-0000-0000-000000000000");

        r = load_config(m);
        if (r < 0)
                return r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        sd_event_source_unref(m->idle_timer);
        if (m->migrations) {
                GList *all = g_hash_table_get_values(m->migrations);
                for (GList *l = all; l; l = l->next)
                        migration_free(l->data);
                g_list_free(all);
                g_hash_table_destroy(m->migrations);
        }
        /* Freeing a domain leaves its QEMU running: guests outlive ferryd. */
        if (m->domains_by_name) {
                GList *all = g_hash_table_get_values(m->domains_by_name);
                for (GList *l = all; l; l = l->next)
                        domain_free(l->data);
                g_list_free(all);
                g_hash_table_destroy(m->domains_by_name);
                g_hash_table_destroy(m->domains_by_uuid);
        }
        /* Pending polkit replies hold slots on the bus: drop them before the bus. */
        polkit_registry_free(m->polkit);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        config_done(&m->config);
        free(m->config_path);
        free(m->config_dir);
        free(m->runtime_dir);
        free(m->hostname);
        return mfree(m);
}

int manager_reload(Manager *m) {
        int r = load_config(m);
        if (r < 0)
                return r;
        log_info("Configuration reloaded from %s.", m->config_path);
        idle_schedule(m);
        return 0;
}

bool manager_is_busy(Manager *m) {
        GHashTableIter i;
        Domain *d;

        /* Ended migrations too: they stay readable for [Migration] KeepEndedSec= (and one may
         * still be telling the destination to drop its half: exiting would cut that short). */
        if (polkit_registry_pending(m->polkit) > 0 || g_hash_table_size(m->migrations) > 0)
                return true;
        g_hash_table_iter_init(&i, m->domains_by_name);
        while (g_hash_table_iter_next(&i, NULL, (void **) &d))
                if (domain_is_busy(d))
                        return true;
        return false;
}

sd_bus *manager_bus(Manager *m) {
        return m->bus;
}

sd_event *manager_event(Manager *m) {
        return m->event;
}

bool manager_kvm_available(Manager *m) {
        return m->kvm;
}

int manager_register_domain(Manager *m, Domain *d, const DomainDef *def) {
        char uuid[37];

        domain_uuid_format(def->uuid, uuid);
        if (g_hash_table_contains(m->domains_by_name, def->name) ||
            g_hash_table_contains(m->domains_by_uuid, uuid))
                return -EEXIST;
        if (g_hash_table_size(m->domains_by_name) >= DOMAINS_MAX)
                return -E2BIG;
        g_hash_table_insert(m->domains_by_name, g_strdup(def->name), d);
        g_hash_table_insert(m->domains_by_uuid, g_strdup(uuid), d);
        return 0;
}

void manager_unregister_domain(Manager *m, Domain *d) {
        if (g_hash_table_lookup(m->domains_by_name, d->def->name) == d)
                g_hash_table_remove(m->domains_by_name, d->def->name);
        if (g_hash_table_lookup(m->domains_by_uuid, d->uuid_string) == d)
                g_hash_table_remove(m->domains_by_uuid, d->uuid_string);
}

Domain *manager_find_domain_by_name(Manager *m, const char *name) {
        return g_hash_table_lookup(m->domains_by_name, name);
}

Domain *manager_find_domain_by_uuid_string(Manager *m, const char *uuid) {
        uint8_t bytes[16];
        char canonical[37];

        /* Accept any spelling the parser accepts (upper case, no dashes, ...). */
        if (domain_uuid_parse(uuid, bytes) < 0)
                return NULL;
        domain_uuid_format(bytes, canonical);
        return g_hash_table_lookup(m->domains_by_uuid, canonical);
}

Domain *manager_find_domain_by_uuid(Manager *m, const uint8_t uuid[16]) {
        char s[37];
        domain_uuid_format(uuid, s);
        return g_hash_table_lookup(m->domains_by_uuid, s);
}

int manager_register_migration(Manager *m, Migration *mig) {
        if (g_hash_table_size(m->migrations) >= MIGRATIONS_KEPT_MAX) {
                /* Make room by forgetting the oldest ended one; running ones are bounded apart. */
                GHashTableIter i;
                Migration *old = NULL, *x;
                g_hash_table_iter_init(&i, m->migrations);
                while (g_hash_table_iter_next(&i, NULL, (void **) &x))
                        if (x->state != MIGRATION_RUNNING && (!old || x->id < old->id))
                                old = x;
                if (!old)
                        return -E2BIG;
                manager_remove_migration(m, old);
        }
        mig->id = m->next_migration_id++;
        mig->object_path = g_strdup_printf(FERRY_MIGRATION_PATH_PREFIX "/%u", mig->id);
        g_hash_table_insert(m->migrations, GUINT_TO_POINTER(mig->id), mig);
        return 0;
}

unsigned manager_migrations_running(Manager *m) {
        GHashTableIter i;
        Migration *mig;
        unsigned n = 0;

        if (!m->migrations)
                return 0;
        g_hash_table_iter_init(&i, m->migrations);
        while (g_hash_table_iter_next(&i, NULL, (void **) &mig))
                if (mig->state == MIGRATION_RUNNING)
                        n++;
        return n;
}

bool manager_incoming_port_in_use(Manager *m, uint16_t port) {
        GHashTableIter i;
        Migration *mig;

        g_hash_table_iter_init(&i, m->migrations);
        while (g_hash_table_iter_next(&i, NULL, (void **) &mig))
                if (mig->state == MIGRATION_RUNNING && (mig->incoming_port == port || migration_storage_port(mig) == port))
                        return true;
        return false;
}

const char *manager_host_uuid(Manager *m) {
        return m->host_uuid;
}

void manager_migration_added(Manager *m, Migration *mig) {
        migration_dbus_emit_added(mig);
}

void manager_migration_changed(Manager *m, Migration *mig) {
        migration_dbus_emit_changed(mig);
}

void manager_migration_ended(Manager *m, Migration *mig) {
        migration_dbus_emit_ended(mig);
        manager_check_idle(m);
}

void manager_migration_finish_pending(Manager *m, Migration *mig) {
        migration_dbus_finish_pending(mig);
}

void manager_remove_migration(Manager *m, Migration *mig) {
        g_hash_table_remove(m->migrations, GUINT_TO_POINTER(mig->id));
        migration_dbus_emit_removed(mig);
        migration_free(mig);
}

void manager_domain_added(Manager *m, Domain *d) {
        domain_dbus_emit_added(d);
}

void manager_domain_changed(Manager *m, Domain *d, DomainChange what) {
        domain_dbus_emit_changed(d, what);
}

void manager_remove_domain(Manager *m, Domain *d) {
        domain_dbus_emit_removed(d);
        domain_free(d);
        manager_check_idle(m);
}

static int on_name_released(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        /* All calls that reached us before the release were dispatched before this reply
         * arrived (the bus keeps order); later ones wait for the next activation. */
        log_debug("Bus name released, exiting.");
        return sd_event_exit(m->event, 0);
}

static void begin_idle_exit(Manager *m) {
        int r;

        log_info("Idle for %us, exiting; the next call starts ferryd again.", m->config.idle_timeout_sec);
        m->exiting = true;
        idle_schedule(m);
        /* Tell systemd first, so that activation requests get queued rather than lost. */
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Exiting on idle.");
        r = sd_bus_call_method_async(m->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "ReleaseName",
                                     on_name_released, m, "s", FERRY_BUS_NAME);
        if (r < 0) {
                log_warning_errno(r, "Failed to release bus name, exiting anyway: %m");
                (void) sd_event_exit(m->event, 0);
        }
}

void manager_check_idle(Manager *m) {
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &m->last_activity_usec);
        idle_schedule(m);
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (manager_is_busy(m)) {
                /* Work in progress counts as activity; look again one period later. */
                m->last_activity_usec = usec;
                idle_schedule(m);
                return 0;
        }
        begin_idle_exit(m);
        return 0;
}

static int on_bus_message(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        /* Every incoming message counts as activity. */
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &m->last_activity_usec);
        idle_schedule(m);
        return 0;
}

static void load_persistent_domains(Manager *m) {
        g_autofree char *dir = g_build_filename(m->config_dir, "domains", NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);
                g_autofree char *expected = NULL;
                DomainDef *def = NULL;
                Domain *domain;
                int r;

                if (!g_str_has_suffix(name, ".xml") || !g_file_test(path, G_FILE_TEST_IS_REGULAR))
                        continue;
                if (domain_store_read_def(path, &def) < 0)
                        continue; /* logged; the other domains still load */
                expected = g_strconcat(def->name, ".xml", NULL);
                if (strcmp(expected, name) != 0) {
                        log_warning("%s defines domain '%s'; its file must be named %s, ignoring.",
                                    path, def->name, expected);
                        domain_def_free(def);
                        continue;
                }
                r = domain_new(m, def, true, &domain);
                if (r < 0) {
                        log_warning_errno(r, "Cannot load %s, ignoring: %m", path);
                        domain_def_free(def);
                        continue;
                }
                domain->autostart = domain_store_autostart(m, def->name);
        }
}

static void reattach_running_domains(Manager *m) {
        g_autofree char *dir = g_build_filename(m->runtime_dir, "domains", NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);
                if (domain_reattach(m, path) < 0)
                        log_warning("Cannot re-attach the domain in %s, ignoring.", path);
        }
}

/* Autostart runs once per boot: /run is empty after a reboot, not after an idle exit. */
static void autostart_domains(Manager *m) {
        g_autofree char *marker = g_build_filename(m->runtime_dir, "autostarted", NULL);
        GHashTableIter i;
        Domain *d;

        if (access(marker, F_OK) == 0)
                return;
        g_hash_table_iter_init(&i, m->domains_by_name);
        while (g_hash_table_iter_next(&i, NULL, (void **) &d))
                if (d->autostart && !domain_is_active(d)) {
                        int r = domain_start(d, false, NULL, NULL);
                        if (r < 0)
                                log_warning_errno(r, "Cannot autostart %s, ignoring: %m", d->def->name);
                        else
                                log_info("Autostarting domain %s.", d->def->name);
                }
        if (g_mkdir_with_parents(m->runtime_dir, 0755) < 0 || !g_file_set_contents(marker, "", 0, NULL))
                log_warning("Cannot create %s, ignoring.", marker);
}

int manager_start(Manager *m) {
        int r;

        r = sd_bus_default_system(&m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        r = sd_bus_add_filter(m->bus, NULL, on_bus_message, m);
        if (r < 0)
                return log_error_errno(r, "Failed to install the bus filter: %m");

        r = manager_dbus_register(m);
        if (r < 0)
                return r;
        r = domain_dbus_register(m);
        if (r < 0)
                return r;
        r = migration_dbus_register(m);
        if (r < 0)
                return r;

        load_persistent_domains(m);
        reattach_running_domains(m);
        autostart_domains(m);

        r = sd_bus_request_name(m->bus, FERRY_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire bus name %s: %m", FERRY_BUS_NAME);

        r = sd_event_add_time(m->event, &m->idle_timer, CLOCK_MONOTONIC, 0, USEC_PER_SEC / 10,
                              on_idle_timer, m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the idle timer: %m");
        (void) sd_event_source_set_description(m->idle_timer, "idle-timer");
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &m->last_activity_usec);
        idle_schedule(m);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        log_info("Received SIG%s, exiting.", sigabbrev_np(si->ssi_signo) ?: "?");
        (void) sd_notify(false, "STOPPING=1");
        return sd_event_exit(m->event, 0);
}

int manager_run(Manager *m) {
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD); /* hooks are child processes watched by sd-event */
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
        if (r < 0)
                return log_error_errno(r, "Failed to handle signals: %m");

        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %s on %s.", FERRY_BUS_NAME, m->hostname);
        log_info("ferryd %s ready on %s (idle timeout %us).", FERRY_VERSION, m->hostname,
                 m->config.idle_timeout_sec);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}
