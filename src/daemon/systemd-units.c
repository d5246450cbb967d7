/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "log.h"
#include "systemd-units.h"

#define SYSTEMD_DEST "org.freedesktop.systemd1"
#define SYSTEMD_PATH "/org/freedesktop/systemd1"
#define SYSTEMD_MANAGER "org.freedesktop.systemd1.Manager"

struct UnitJob {
        sd_bus_slot *match;        /* JobRemoved, installed before the job exists */
        sd_bus_slot *call;         /* the pending StartTransientUnit/StopUnit */
        char *job_path;            /* known once the call returns */
        char *early_result;        /* JobRemoved may arrive before the call's reply */
        UnitJobDone done;
        void *userdata;
        bool finished;
};

UnitJob *unit_job_free(UnitJob *job) {
        if (!job)
                return NULL;
        sd_bus_slot_unref(job->match);
        sd_bus_slot_unref(job->call);
        free(job->job_path);
        free(job->early_result);
        return mfree(job);
}

/* Finishes the job once: the callback may free the job (through its owner), so nothing
 * touches job after calling it. */
static void job_finish(UnitJob *job, int error, const char *message) {
        UnitJobDone done = job->done;
        void *userdata = job->userdata;

        if (job->finished)
                return;
        job->finished = true;
        job->match = sd_bus_slot_unref(job->match);
        job->call = sd_bus_slot_unref(job->call);
        if (done)
                done(userdata, error, message);
}

static void job_result(UnitJob *job, const char *result) {
        g_autofree char *msg = NULL;

        if (strcmp(result, "done") == 0) {
                job_finish(job, 0, NULL);
                return;
        }
        msg = g_strdup_printf("systemd job %s", result);
        job_finish(job, strcmp(result, "timeout") == 0 ? -ETIMEDOUT :
                        strcmp(result, "canceled") == 0 ? -ECANCELED : -EIO, msg);
}

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        UnitJob *job = userdata;
        const char *path, *unit, *result;
        uint32_t id;

        if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
                return 0;
        if (!job->job_path) {
                /* Our call has not returned yet; it might be ours. Remember and decide later. */
                if (!job->early_result) {
                        job->early_result = g_strdup_printf("%s\n%s", path, result);
                }
                return 0;
        }
        if (strcmp(path, job->job_path) == 0)
                job_result(job, result);
        return 0;
}

static int on_job_call_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitJob *job = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *path;

        job->call = sd_bus_slot_unref(job->call);
        if (e) {
                job_finish(job, -(sd_bus_error_get_errno(e) ?: EIO), e->message ?: e->name);
                return 0;
        }
        if (sd_bus_message_read(reply, "o", &path) < 0) {
                job_finish(job, -EBADMSG, "systemd's reply did not name a job");
                return 0;
        }
        job->job_path = strdup(path);
        if (!job->job_path) {
                job_finish(job, -ENOMEM, NULL);
                return 0;
        }
        if (job->early_result) {
                char *nl = strchr(job->early_result, '\n');
                *nl = '\0';
                if (strcmp(job->early_result, path) == 0)
                        job_result(job, nl + 1);
        }
        return 0;
}

static int job_new(sd_bus *bus, UnitJobDone done, void *userdata, UnitJob **ret) {
        _cleanup_(unit_job_freep) UnitJob *job = NULL;
        int r;

        job = calloc(1, sizeof(*job));
        if (!job)
                return -ENOMEM;
        job->done = done;
        job->userdata = userdata;
        /* Before the job exists, so that its end cannot be missed. */
        r = sd_bus_match_signal_async(bus, &job->match, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER,
                                      "JobRemoved", on_job_removed, NULL, job);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(job);
        return 0;
}

static int append_exec_start(sd_bus_message *m, char **argv) {
        int r;

        r = sd_bus_message_open_container(m, 'r', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", "ExecStart");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'v', "a(sasb)");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "(sasb)");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'r', "sasb");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", argv[0]);
        if (r < 0)
                return r;
        r = sd_bus_message_append_strv(m, argv);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "b", 0); /* a failing exit is a failure */
        if (r < 0)
                return r;
        for (int i = 0; i < 4; i++) {
                r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* What systemd's sandboxing gives a network relay that needs no privilege: no capabilities, no
 * new privileges, a read-only system (the unit's RuntimeDirectory= aside), only the address
 * families it uses, the system-service call set. */
static int append_sandbox(sd_bus_message *m, bool unix_sockets_only) {
        int r;

        r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)(sv)(sv)(sv)(sv)(sv)",
                                  "NoNewPrivileges", "b", 1,
                                  "CapabilityBoundingSet", "t", (uint64_t) 0,
                                  "ProtectSystem", "s", "strict",
                                  "ProtectHome", "s", "yes",
                                  "PrivateTmp", "b", 1,
                                  "ProtectKernelTunables", "b", 1,
                                  "ProtectKernelModules", "b", 1,
                                  "ProtectControlGroups", "b", 1,
                                  "LockPersonality", "b", 1,
                                  "MemoryDenyWriteExecute", "b", 1);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)(sv)(sv)(sv)",
                                  "PrivateDevices", "b", 1,
                                  "ProtectKernelLogs", "b", 1,
                                  "ProtectClock", "b", 1,
                                  "ProtectHostname", "b", 1,
                                  "RestrictNamespaces", "t", (uint64_t) 0, /* none may be created */
                                  "RestrictRealtime", "b", 1,
                                  "RestrictSUIDSGID", "b", 1,
                                  "UMask", "u", (uint32_t) 0077);
        if (r < 0)
                return r;
        if (unix_sockets_only)
                r = sd_bus_message_append(m, "(sv)", "RestrictAddressFamilies", "(bas)", 1, 1, "AF_UNIX");
        else
                r = sd_bus_message_append(m, "(sv)", "RestrictAddressFamilies", "(bas)", 1, 3,
                                          "AF_UNIX", "AF_INET", "AF_INET6");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "(sv)", "SystemCallArchitectures", "as", 1, "native");
        if (r < 0)
                return r;
        return sd_bus_message_append(m, "(sv)", "SystemCallFilter", "(bas)", 1, 1, "@system-service");
}

/* LoadCredential=: systemd (root) copies each file into the unit's own credentials directory,
 * readable by its user only: the helper needs no access to the files themselves. */
static int append_credentials(sd_bus_message *m, char **pairs) {
        int r;

        r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "LoadCredential");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "a(ss)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(ss)");
        for (size_t i = 0; r >= 0 && pairs[i] && pairs[i + 1]; i += 2)
                r = sd_bus_message_append(m, "(ss)", pairs[i], pairs[i + 1]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int unit_start_transient(sd_bus *bus, const TransientService *svc, UnitJobDone done, void *userdata,
                         UnitJob **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(unit_job_freep) UnitJob *job = NULL;
        int r;

        if (!ret || !svc->name || !svc->argv || !svc->argv[0] || svc->argv[0][0] != '/')
                return -EINVAL;

        r = job_new(bus, done, userdata, &job);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER,
                                           "StartTransientUnit");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", svc->name, "fail");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)(sv)",
                                  "Description", "s", svc->description ?: svc->name,
                                  "Slice", "s", svc->slice ?: "machine.slice",
                                  /* Type=exec: the start job fails if QEMU cannot be executed. */
                                  "Type", "s", svc->notify ? "notify" : "exec",
                                  "TimeoutStopUSec", "t", svc->stop_timeout_usec ?: 10ULL * 1000000ULL,
                                  /* A crashed guest's unit stays "failed" so that a restarted
                                   * ferryd can still tell a crash from a shutdown. */
                                  "CollectMode", "s", svc->collect_failed ? "inactive-or-failed" : "inactive",
                                  "KillMode", "s", "mixed");
        if (r < 0)
                return r;
        if (svc->notify) {
                r = sd_bus_message_append(m, "(sv)", "NotifyAccess", "s", "main");
                if (r < 0)
                        return r;
        }
        if (svc->sandbox) {
                r = append_sandbox(m, svc->unix_sockets_only);
                if (r < 0)
                        return r;
        }
        if (svc->dynamic_user) {
                r = sd_bus_message_append(m, "(sv)", "DynamicUser", "b", 1);
                if (r < 0)
                        return r;
        }
        if (svc->supplementary_group) {
                r = sd_bus_message_append(m, "(sv)", "SupplementaryGroups", "as", 1, svc->supplementary_group);
                if (r < 0)
                        return r;
        }
        if (svc->runtime_directory) {
                r = sd_bus_message_append(m, "(sv)", "RuntimeDirectory", "as", 1, svc->runtime_directory);
                if (r < 0)
                        return r;
        }
        if (svc->credentials) {
                r = append_credentials(m, svc->credentials);
                if (r < 0)
                        return r;
        }
        if (svc->stdin_fd > 0) {
                r = sd_bus_message_append(m, "(sv)(sv)(sv)",
                                          "StandardInputFileDescriptor", "h", svc->stdin_fd,
                                          "StandardOutput", "s", "journal",
                                          "StandardError", "s", "journal");
                if (r < 0)
                        return r;
        }
        r = append_exec_start(m, svc->argv);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "a(sa(sv))", 0); /* no auxiliary units */
        if (r < 0)
                return r;
        r = sd_bus_call_async(bus, &job->call, m, on_job_call_reply, job, 0);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(job);
        return 0;
}

static int unit_job_call(sd_bus *bus, const char *method, const char *name, UnitJobDone done, void *userdata,
                         UnitJob **ret) {
        _cleanup_(unit_job_freep) UnitJob *job = NULL;
        int r;

        r = job_new(bus, done, userdata, &job);
        if (r < 0)
                return r;
        r = sd_bus_call_method_async(bus, &job->call, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER,
                                     method, on_job_call_reply, job, "ss", name, "replace");
        if (r < 0)
                return r;
        *ret = TAKE_PTR(job);
        return 0;
}

int unit_start(sd_bus *bus, const char *name, UnitJobDone done, void *userdata, UnitJob **ret) {
        return unit_job_call(bus, "StartUnit", name, done, userdata, ret);
}

int unit_stop(sd_bus *bus, const char *name, UnitJobDone done, void *userdata, UnitJob **ret) {
        return unit_job_call(bus, "StopUnit", name, done, userdata, ret);
}

int unit_reset_failed(sd_bus *bus, const char *name) {
        return sd_bus_call_method_async(bus, NULL, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER,
                                        "ResetFailedUnit", NULL, NULL, "s", name);
}

int unit_get_state(sd_bus *bus, const char *name, char **ret_active_state, char **ret_result) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *state = NULL, *result = NULL;
        const char *path;
        int r;

        r = sd_bus_call_method(bus, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER, "GetUnit", &error,
                               &reply, "s", name);
        if (r < 0)
                return sd_bus_error_has_name(&error, "org.freedesktop.systemd1.NoSuchUnit") ? -ENOENT : r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, SYSTEMD_DEST, path, "org.freedesktop.systemd1.Unit",
                                       "ActiveState", &error, &state);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, SYSTEMD_DEST, path, "org.freedesktop.systemd1.Service",
                                       "Result", &error, &result);
        if (r < 0)
                return r;
        if (ret_active_state)
                *ret_active_state = TAKE_PTR(state);
        if (ret_result)
                *ret_result = TAKE_PTR(result);
        return 0;
}

struct UnitWatch {
        sd_bus_slot *match;
        char *active_state;
        char *status_text;
        char *result;
        UnitStateChanged cb;
        void *userdata;
};

UnitWatch *unit_watch_free(UnitWatch *w) {
        if (!w)
                return NULL;
        sd_bus_slot_unref(w->match);
        free(w->active_state);
        free(w->status_text);
        free(w->result);
        return mfree(w);
}

static int on_unit_properties(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        UnitWatch *w = userdata;
        const char *iface;
        bool state_changed = false;
        int r;

        if (sd_bus_message_read(m, "s", &iface) < 0 || sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
                return 0;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *value;
                char **slot = NULL;

                if (sd_bus_message_read(m, "s", &key) < 0)
                        return 0;
                if (strcmp(key, "ActiveState") == 0)
                        slot = &w->active_state;
                else if (strcmp(key, "StatusText") == 0)
                        slot = &w->status_text;
                else if (strcmp(key, "Result") == 0)
                        slot = &w->result;
                if (slot && sd_bus_message_read(m, "v", "s", &value) >= 0) {
                        if (slot == &w->active_state && (!w->active_state || strcmp(w->active_state, value) != 0))
                                state_changed = true;
                        free(*slot);
                        *slot = strdup(value);
                } else if (sd_bus_message_skip(m, "v") < 0)
                        return 0;
                if (sd_bus_message_exit_container(m) < 0)
                        return 0;
        }
        /* systemd sends the Service interface's changes before the Unit's, so the status is
         * current when the state changes. The callback may free w. */
        if (state_changed && w->active_state)
                w->cb(w->userdata, w->active_state, w->status_text, w->result);
        return 0;
}

int unit_watch(sd_bus *bus, const char *name, UnitStateChanged cb, void *userdata, UnitWatch **ret) {
        _cleanup_(unit_watch_freep) UnitWatch *w = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode("/org/freedesktop/systemd1/unit", name, &path);
        if (r < 0)
                return r;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->cb = cb;
        w->userdata = userdata;
        r = sd_bus_match_signal_async(bus, &w->match, SYSTEMD_DEST, path, "org.freedesktop.DBus.Properties",
                                      "PropertiesChanged", on_unit_properties, NULL, w);
        if (r < 0)
                return r;
        /* systemd sends unit signals only while a client is subscribed; a second Subscribe of
         * ours is refused harmlessly. */
        (void) sd_bus_call_method_async(bus, NULL, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER, "Subscribe",
                                        NULL, NULL, NULL);
        *ret = TAKE_PTR(w);
        return 0;
}

char *unit_name_for_domain(const char *domain_name) {
        GString *s = g_string_new("ferry-qemu-");

        /* As systemd-escape: keep [A-Za-z0-9:_.] (not a leading '.'), '/' becomes '-',
         * everything else \xNN. */
        for (const char *p = domain_name; *p; p++) {
                if (g_ascii_isalnum(*p) || *p == ':' || *p == '_' || (*p == '.' && p != domain_name))
                        g_string_append_c(s, *p);
                else
                        g_string_append_printf(s, "\\x%02x", (unsigned char) *p);
        }
        g_string_append(s, ".service");
        return g_string_free(s, FALSE);
}
