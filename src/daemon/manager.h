/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "config.h"
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

/* True while something (a pending polkit check, later: migrations) must keep us alive. */
bool manager_is_busy(Manager *m);
