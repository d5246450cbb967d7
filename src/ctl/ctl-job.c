/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl's job verbs, as virsh's: domjobinfo, domjobabort, migrate-setspeed,
 * migrate-setmaxdowntime. A domain's job is its migration on this host (the Migration objects
 * under the manager's ObjectManager): the running one, else the most recent. */

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ferry-bus.h"
#include "macro.h"

typedef struct Job {
        unsigned long id;
        char *path, *domain, *domain_name, *direction, *phase, *state, *error_message, *postcopy;
        uint64_t elapsed, total, processed, remaining, bps, dirty_rate, iteration, expected_downtime, downtime;
        uint64_t disk_total, disk_processed, disk_remaining, disk_bps;
        char *copy_storage;
        int tls, auto_converge;
        uint32_t throttle;
} Job;

static void job_done(Job *j) {
        free(j->path), free(j->domain), free(j->domain_name), free(j->direction);
        free(j->phase), free(j->state), free(j->error_message), free(j->copy_storage), free(j->postcopy);
        *j = (Job) {};
}

/* Reads one a{sv} of Migration properties into j; unknown ones are skipped. */
static int read_properties(sd_bus_message *m, Job *j) {
        static const struct { const char *name; size_t offset; } strings[] = {
                { "Domain", offsetof(Job, domain) }, { "DomainName", offsetof(Job, domain_name) },
                { "Direction", offsetof(Job, direction) }, { "Phase", offsetof(Job, phase) },
                { "State", offsetof(Job, state) }, { "ErrorMessage", offsetof(Job, error_message) },
                { "CopyStorage", offsetof(Job, copy_storage) }, { "PostCopy", offsetof(Job, postcopy) },
        }, numbers[] = {
                { "ElapsedUSec", offsetof(Job, elapsed) }, { "DataTotal", offsetof(Job, total) },
                { "DataProcessed", offsetof(Job, processed) }, { "DataRemaining", offsetof(Job, remaining) },
                { "BytesPerSecond", offsetof(Job, bps) }, { "DirtyPagesRate", offsetof(Job, dirty_rate) },
                { "Iteration", offsetof(Job, iteration) },
                { "ExpectedDowntimeUSec", offsetof(Job, expected_downtime) },
                { "DowntimeUSec", offsetof(Job, downtime) },
                { "DiskTotal", offsetof(Job, disk_total) }, { "DiskProcessed", offsetof(Job, disk_processed) },
                { "DiskRemaining", offsetof(Job, disk_remaining) },
                { "DiskBytesPerSecond", offsetof(Job, disk_bps) },
        };
        const char *name, *s;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                bool done = false;
                r = sd_bus_message_read(m, "s", &name);
                for (size_t i = 0; r >= 0 && !done && i < ELEMENTSOF(strings); i++)
                        if (strcmp(name, strings[i].name) == 0) {
                                char **field = (char **) ((char *) j + strings[i].offset);
                                r = sd_bus_message_read(m, "v", strcmp(name, "Domain") == 0 ? "o" : "s", &s);
                                if (r >= 0 && !(*field = strdup(s)))
                                        r = -ENOMEM;
                                done = true;
                        }
                for (size_t i = 0; r >= 0 && !done && i < ELEMENTSOF(numbers); i++)
                        if (strcmp(name, numbers[i].name) == 0) {
                                r = sd_bus_message_read(m, "v", "t", (uint64_t *) ((char *) j + numbers[i].offset));
                                done = true;
                        }
                if (r >= 0 && !done && (strcmp(name, "TLS") == 0 || strcmp(name, "AutoConverge") == 0)) {
                        r = sd_bus_message_read(m, "v", "b", name[0] == 'T' ? &j->tls : &j->auto_converge);
                        done = true;
                }
                if (r >= 0 && !done && strcmp(name, "AutoConvergeThrottle") == 0) {
                        r = sd_bus_message_read(m, "v", "u", &j->throttle);
                        done = true;
                }
                if (r >= 0 && !done)
                        r = sd_bus_message_skip(m, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        return r < 0 ? r : sd_bus_message_exit_container(m);
}

/* The job of the domain at domain_path (or, with NULL, of the domain called name, which no
 * longer exists here): the running migration, else the one with the highest id. Returns 0 and
 * an empty job when there is none. */
static int find_job(sd_bus *bus, const char *domain_path, const char *name, Job *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path, *iface;
        int r;

        *ret = (Job) {};
        r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                               "GetManagedObjects", &error, &reply, NULL);
        if (r < 0)
                return ctl_report_error("failed to list the migrations", &error, r);
        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                r = sd_bus_message_read(reply, "o", &path);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        Job j = {};
                        _cleanup_free_ char *id = NULL;
                        r = sd_bus_message_read(reply, "s", &iface);
                        if (r >= 0 && strcmp(iface, FERRY_MIGRATION_INTERFACE) != 0)
                                r = sd_bus_message_skip(reply, "a{sv}");
                        else if (r >= 0)
                                r = read_properties(reply, &j);
                        if (r >= 0 && j.state && sd_bus_path_decode(path, FERRY_MIGRATION_PATH_PREFIX, &id) > 0)
                                j.id = strtoul(id, NULL, 10);
                        bool mine = j.id > 0 && strcmp(strempty(domain_path ? j.domain : j.domain_name),
                                                       domain_path ?: name) == 0;
                        if (mine && (!ret->path || strcmp(j.state, "running") == 0 ||
                                     (strcmp(ret->state, "running") != 0 && j.id > ret->id))) {
                                job_done(ret);
                                j.path = strdup(path);
                                *ret = j;
                                if (!ret->path)
                                        r = -ENOMEM;
                        } else
                                job_done(&j);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0) {
                job_done(ret);
                return ctl_report_error("bad reply from ferryd", NULL, r);
        }
        return 0;
}

static int find_domain_quietly(sd_bus *bus, const char *key, char **ret_path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r = -ENOENT;

        if (strlen(key) >= 32 && strspn(key, "0123456789abcdefABCDEF-") == strlen(key))
                r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                       "GetDomainByUUID", NULL, &reply, "s", key);
        if (r < 0)
                r = sd_bus_call_method(bus, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                       "GetDomainByName", NULL, &reply, "s", key);
        if (r >= 0)
                r = sd_bus_message_read(reply, "o", &path);
        if (r >= 0 && !(*ret_path = strdup(path)))
                r = -ENOMEM;
        return r;
}

static void print_job(const Job *j) {
        const char *type = !j->path                              ? "None"
                           : strcmp(j->state, "running") == 0   ? "Unbounded"
                           : strcmp(j->state, "completed") == 0 ? "Completed"
                           : strcmp(j->state, "cancelled") == 0 ? "Cancelled"
                                                                : "Failed";
        printf("%-17s %s\n", "Job type:", type);
        if (!j->path) {
                printf("\n");
                return;
        }
        printf("%-17s %s migration\n", "Operation:", strcmp(j->direction, "outgoing") == 0 ? "Outgoing" : "Incoming");
        printf("%-17s %s\n", "Phase:", j->phase);
        printf("%-17s %" PRIu64 " ms\n", "Time elapsed:", j->elapsed / 1000);
        printf("%-17s %.3f MiB\n", "Data processed:", j->processed / 1048576.0);
        printf("%-17s %.3f MiB\n", "Data remaining:", j->remaining / 1048576.0);
        printf("%-17s %.3f MiB\n", "Data total:", j->total / 1048576.0);
        printf("%-17s %.3f MiB/s\n", "Memory bandwidth:", j->bps / 1048576.0);
        printf("%-17s %" PRIu64 " pages/s\n", "Dirty rate:", j->dirty_rate);
        printf("%-17s %" PRIu64 "\n", "Iteration:", j->iteration);
        /* virsh's names for the storage copy's figures. */
        if (j->copy_storage && j->copy_storage[0]) {
                printf("%-17s %.3f MiB\n", "File processed:", j->disk_processed / 1048576.0);
                printf("%-17s %.3f MiB\n", "File remaining:", j->disk_remaining / 1048576.0);
                printf("%-17s %.3f MiB\n", "File total:", j->disk_total / 1048576.0);
                printf("%-17s %.3f MiB/s\n", "File bandwidth:", j->disk_bps / 1048576.0);
        }
        printf("%-17s %s\n", "Encrypted (TLS):", j->tls ? "yes" : "no");
        if (j->postcopy && strcmp(j->postcopy, "off") != 0)
                printf("%-17s %s\n", "Post-copy:", j->postcopy);
        if (j->auto_converge)
                printf("%-17s %" PRIu32 " %%\n", "Auto converge throttle:", j->throttle);
        if (strcmp(j->state, "running") == 0)
                printf("%-17s %" PRIu64 " ms\n", "Expected downtime:", j->expected_downtime / 1000);
        else
                printf("%-17s %" PRIu64 " ms\n", "Total downtime:", j->downtime / 1000);
        if (j->error_message && *j->error_message)
                printf("%-17s %s\n", "Error:", j->error_message);
        printf("\n");
}

void ctl_job_help(void) {
        printf("Job commands (a domain's job is its migration on this host):\n"
               "  domjobinfo DOMAIN              the running or most recent migration's progress\n"
               "  domjobabort DOMAIN             cancel the running outgoing migration\n"
               "  migrate-setspeed DOMAIN MiB    its bandwidth limit in MiB/s (0: none)\n"
               "  migrate-setmaxdowntime DOMAIN MS\n"
               "                                 its maximum downtime at the switch-over\n"
               "  migrate-postcopy DOMAIN        switch its migration (armed with --postcopy) to post-copy\n");
}

int ctl_job(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *domain_path = NULL;
        const char *verb = argv[0], *method = NULL, *what = "failed to abort the job";
        bool info = strcmp(verb, "domjobinfo") == 0, abort_job = strcmp(verb, "domjobabort") == 0,
             postcopy = strcmp(verb, "migrate-postcopy") == 0;
        uint64_t value = 0;
        char *end;
        Job j = {};
        int r;

        if (postcopy) {
                abort_job = true; /* the same checks; another method */
                method = "StartPostCopy";
                what = "failed to switch to post-copy";
        }
        if (argc != (info || abort_job ? 2 : 3)) {
                fprintf(stderr, "error: usage: ferryctl %s DOMAIN%s\n", verb,
                        info || abort_job ? "" : strcmp(verb, "migrate-setspeed") == 0 ? " MiB" : " MS");
                return CTL_USAGE_ERROR;
        }
        if (!info && !abort_job) {
                /* migrate-setspeed takes MiB/s, migrate-setmaxdowntime milliseconds. */
                bool speed = strcmp(verb, "migrate-setspeed") == 0;
                errno = 0;
                value = strtoull(argv[2], &end, 10);
                if (errno || end == argv[2] || *end || argv[2][0] == '-' ||
                    (speed ? value > UINT64_C(1) << 30 : value < 1 || value > 3600000)) {
                        fprintf(stderr, "error: %s takes %s\n", verb,
                                speed ? "a bandwidth in MiB/s" : "a downtime in milliseconds (1 to 3600000)");
                        return CTL_USAGE_ERROR;
                }
                value = speed ? value << 20 : value * 1000;
                method = speed ? "SetMaxBandwidth" : "SetMaxDowntime";
                what = speed ? "failed to set the migration's bandwidth" : "failed to set the migration's maximum downtime";
        }

        r = ctl_connect(&bus);
        if (r < 0)
                return r;
        r = find_domain_quietly(bus, argv[1], &domain_path);
        if (r < 0 && info) {
                /* A transient domain that migrated away is gone, but its job is still known. */
                r = find_job(bus, NULL, argv[1], &j);
                if (r < 0)
                        return r;
        }
        if (!j.path && !domain_path) {
                r = ctl_find_domain(bus, argv[1], &domain_path); /* says why */
                if (r < 0)
                        return r;
        }
        if (domain_path) {
                r = find_job(bus, domain_path, NULL, &j);
                if (r < 0)
                        return r;
        }

        if (info) {
                print_job(&j);
        } else if (!j.path || strcmp(j.state, "running") != 0 || strcmp(j.direction, "outgoing") != 0) {
                fprintf(stderr, "error: %s\nerror: Requested operation is not valid: %s\n", what,
                        !j.path || strcmp(j.state, "running") != 0 ? "no job is active on the domain"
                                                                  : "the migration is incoming here; ask the source host");
                r = -ENOENT;
        } else {
                if (abort_job)
                        r = sd_bus_call_method(bus, FERRY_BUS_NAME, j.path, FERRY_MIGRATION_INTERFACE,
                                               method ?: "Cancel", &error, NULL, NULL);
                else
                        r = sd_bus_call_method(bus, FERRY_BUS_NAME, j.path, FERRY_MIGRATION_INTERFACE, method,
                                               &error, NULL, "t", value);
                if (r < 0)
                        r = ctl_report_error(what, &error, r);
        }
        job_done(&j);
        return r;
}

int ctl_job_recover(sd_bus *bus, const char *domain_path, char **ret_job) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        Job j = {};
        int r;

        r = find_job(bus, domain_path, NULL, &j);
        if (r < 0)
                return r;
        if (!j.path || strcmp(j.state, "running") != 0 || strcmp(j.direction, "outgoing") != 0) {
                fprintf(stderr, "error: failed to resume the post-copy migration\nerror: Requested operation is not valid: %s\n",
                        !j.path || strcmp(j.state, "running") != 0 ? "no job is active on the domain"
                                                                  : "the migration is incoming here; ask the source host");
                job_done(&j);
                return -ENOENT;
        }
        r = sd_bus_call_method(bus, FERRY_BUS_NAME, j.path, FERRY_MIGRATION_INTERFACE, "Recover", &error, NULL, NULL);
        if (r < 0)
                r = ctl_report_error("failed to resume the post-copy migration", &error, r);
        else
                *ret_job = TAKE_PTR(j.path);
        job_done(&j);
        return r;
}
