/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <glib.h>

#include "config.h"
#include "domain.h"
#include "polkit.h"

/* The daemon's one owner of everything: event loop, bus connection, configuration,
 * pending polkit checks, the idle timer. Freed by manager_free(). */
typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        PolkitRegistry *polkit;

        char *config_path;
        Config config;
        char *hostname;            /* effective: Config.hostname or gethostname() */

        char *config_dir;          /* /etc/ferry */
        char *runtime_dir;         /* /run/ferry */
        bool kvm;                  /* /dev/kvm usable; else guests run with TCG */

        GHashTable *domains_by_name;   /* name -> Domain* */
        GHashTable *domains_by_uuid;   /* uuid string -> Domain* */
        GHashTable *migrations;        /* id -> Migration* */
        unsigned next_migration_id;
        char host_uuid[37];            /* machine id, as a UUID: tells hosts apart */

        sd_event_source *idle_timer;
        uint64_t last_activity_usec;
        bool exiting;
} Manager;

int manager_new(const char *config_path, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Connects to the system bus, publishes the objects, takes the name. */
int manager_start(Manager *m);

/* Runs until idle exit or SIGTERM/SIGINT; returns the exit code. */
int manager_run(Manager *m);

/* Re-reads the configuration file; on error the old configuration stays. */
int manager_reload(Manager *m);

/* True while something (a pending polkit check, a domain operation) must keep us alive. */
bool manager_is_busy(Manager *m);
/* Something that kept us busy has ended: restart the idle countdown. */
void manager_check_idle(Manager *m);

sd_bus *manager_bus(Manager *m);
sd_event *manager_event(Manager *m);
bool manager_kvm_available(Manager *m);

/* The domain registry. register: -EEXIST if the name or uuid is taken, -E2BIG when full. */
int manager_register_domain(Manager *m, Domain *d, const DomainDef *def);
void manager_unregister_domain(Manager *m, Domain *d);
Domain *manager_find_domain_by_name(Manager *m, const char *name);
Domain *manager_find_domain_by_uuid(Manager *m, const uint8_t uuid[16]);
Domain *manager_find_domain_by_uuid_string(Manager *m, const char *uuid);

/* Migrations: register assigns an id and a path (-E2BIG when too many are kept). */
typedef struct Migration Migration;
int manager_register_migration(Manager *m, Migration *mig);
unsigned manager_migrations_running(Manager *m);
bool manager_incoming_port_in_use(Manager *m, uint16_t port);
const char *manager_host_uuid(Manager *m);
void manager_migration_added(Manager *m, Migration *mig);
void manager_migration_changed(Manager *m, Migration *mig);
void manager_migration_ended(Manager *m, Migration *mig);
void manager_migration_finish_pending(Manager *m, Migration *mig);
void manager_remove_migration(Manager *m, Migration *mig);

/* Bus announcements of domains coming, changing and going; remove also frees d. */
void manager_domain_added(Manager *m, Domain *d);
void manager_domain_changed(Manager *m, Domain *d, DomainChange what);
void manager_remove_domain(Manager *m, Domain *d);
