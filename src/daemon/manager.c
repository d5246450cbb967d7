/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "build-config.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager-dbus.h"
#include "manager.h"

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
        if (!m->config_path || !m->polkit)
                return -ENOMEM;

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
        /* Pending polkit replies hold slots on the bus: drop them before the bus. */
        polkit_registry_free(m->polkit);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        config_done(&m->config);
        free(m->config_path);
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
        return polkit_registry_pending(m->polkit) > 0;
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
