/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* bench-migrate: the benchmark's D-Bus client (bench/README.md). It calls Domain.Migrate on a
 * ferryd whose bus it reaches by address, takes the wall-clock time right before the call,
 * waits for Manager.MigrationEnded of that migration (no polling), and prints the Migration
 * object's figures as one JSON object. Not part of Ferry: built by bench/migration-bench.
 *
 *   bench-migrate migrate BUS-ADDRESS DOMAIN DEST-URI [KEY=SIG:VALUE]...
 *   bench-migrate probe BUS-ADDRESS DOMAIN KEY SIG
 *
 * Options are typed: tls=b:true, parallel_connections=u:4, hypervisor_uri=s:tcp:b:49160.
 * probe asks whether ferryd knows a Migrate option, without migrating: it passes the option
 * with a value of the wrong type, so a known option answers "takes type" and an unknown one
 * "Unknown option"; prints "known" or "unknown". */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

#define BUS_NAME "org.ferry.Ferry1"
#define MANAGER_PATH "/org/ferry/Ferry1"
#define MANAGER_IFACE "org.ferry.Ferry1.Manager"
#define DOMAIN_IFACE "org.ferry.Ferry1.Domain"
#define MIGRATION_IFACE "org.ferry.Ferry1.Migration"

static uint64_t now_realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static int die(const char *what, const sd_bus_error *e, int r) {
        fprintf(stderr, "bench-migrate: %s: %s\n", what, e && e->message ? e->message : strerror(r < 0 ? -r : r));
        return 1;
}

static int append_option(sd_bus_message *m, const char *spec) {
        char key[128], sig;
        const char *eq = strchr(spec, '='), *value;
        int r;

        if (!eq || (size_t) (eq - spec) >= sizeof(key) || !eq[1] || eq[2] != ':')
                return -EINVAL;
        memcpy(key, spec, (size_t) (eq - spec));
        key[eq - spec] = '\0';
        sig = eq[1];
        value = eq + 3;
        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", key);
        if (r < 0)
                return r;
        switch (sig) {
        case 'b':
                r = sd_bus_message_append(m, "v", "b", (int) (strcmp(value, "true") == 0 || strcmp(value, "1") == 0));
                break;
        case 'u':
                r = sd_bus_message_append(m, "v", "u", (uint32_t) strtoul(value, NULL, 0));
                break;
        case 't':
                r = sd_bus_message_append(m, "v", "t", (uint64_t) strtoull(value, NULL, 0));
                break;
        case 's':
                r = sd_bus_message_append(m, "v", "s", value);
                break;
        default:
                return -EINVAL;
        }
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* Phase changes of outgoing migrations, as PropertiesChanged shows them (ferryd signals at
 * most about ten times a second, so a phase may be seen up to ~100 ms late, or skipped). */
#define MAX_PHASES 16
typedef struct Wait {
        const char *path;
        bool ended;
        uint64_t end_usec;
        size_t n_phases;
        struct {
                char path[128], phase[32];
                uint64_t usec;
        } phases[MAX_PHASES];
} Wait;

static int on_properties(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;
        const char *iface, *key, *phase;
        uint64_t usec = now_realtime_usec();

        (void) ret_error;
        if (sd_bus_message_read(m, "s", &iface) < 0 || strcmp(iface, MIGRATION_IFACE) != 0)
                return 0;
        if (sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
                return 0;
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                if (sd_bus_message_read(m, "s", &key) < 0)
                        return 0;
                if (strcmp(key, "Phase") == 0 && sd_bus_message_read(m, "v", "s", &phase) >= 0) {
                        if (w->n_phases < MAX_PHASES) {
                                snprintf(w->phases[w->n_phases].path, sizeof(w->phases[0].path), "%s",
                                         sd_bus_message_get_path(m));
                                snprintf(w->phases[w->n_phases].phase, sizeof(w->phases[0].phase), "%s", phase);
                                w->phases[w->n_phases++].usec = usec;
                        }
                } else if (sd_bus_message_skip(m, "v") < 0)
                        return 0;
                if (sd_bus_message_exit_container(m) < 0)
                        return 0;
        }
        return 0;
}

static int on_ended(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;
        const char *path, *state, *error_name;

        (void) ret_error;
        if (sd_bus_message_read(m, "oss", &path, &state, &error_name) < 0)
                return 0;
        if (w->path && strcmp(path, w->path) == 0 && !w->ended) {
                w->ended = true;
                w->end_usec = now_realtime_usec();
        }
        return 0;
}

static void print_string_property(sd_bus *bus, const char *path, const char *name) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char *v = NULL;

        if (sd_bus_get_property_string(bus, BUS_NAME, path, MIGRATION_IFACE, name, &e, &v) >= 0) {
                printf(", \"%s\": \"", name);
                for (const char *p = v; *p; p++) {
                        if (*p == '"' || *p == '\\')
                                putchar('\\');
                        putchar((unsigned char) *p < 0x20 ? '?' : *p);
                }
                printf("\"");
        }
        free(v);
        sd_bus_error_free(&e);
}

int main(int argc, char **argv) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_slot *slot = NULL, *slot_props = NULL;
        sd_bus *bus = NULL;
        const char *domain_path, *migration_path;
        char *domain = NULL;
        bool probe;
        Wait w = {};
        int r;

        if (argc < 5 || (strcmp(argv[1], "migrate") != 0 && strcmp(argv[1], "probe") != 0) ||
            (strcmp(argv[1], "probe") == 0 && argc != 6)) {
                fprintf(stderr, "usage: bench-migrate migrate BUS-ADDRESS DOMAIN DEST-URI [KEY=SIG:VALUE]...\n"
                                "       bench-migrate probe BUS-ADDRESS DOMAIN KEY SIG\n");
                return 2;
        }
        probe = strcmp(argv[1], "probe") == 0;

        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, argv[2]);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0)
                return die("cannot connect to the bus", NULL, r);

        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetDomainByName", &error, &reply,
                               "s", argv[3]);
        if (r < 0)
                return die("GetDomainByName", &error, r);
        r = sd_bus_message_read(reply, "o", &domain_path);
        if (r < 0)
                return die("GetDomainByName's reply", NULL, r);
        domain = strdup(domain_path);
        reply = sd_bus_message_unref(reply);

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, domain, DOMAIN_IFACE, "Migrate");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", probe ? "ferry+unix:///system?socket=/nonexistent" : argv[4]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (probe && r >= 0) {
                /* the wrong type on purpose: never a valid request */
                char spec[256];
                snprintf(spec, sizeof(spec), "%s=%c:0", argv[4], argv[5][0] == 's' ? 'u' : 's');
                r = append_option(m, spec);
        }
        for (int i = 5; !probe && r >= 0 && i < argc; i++)
                r = append_option(m, argv[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", (uint64_t) 0);
        if (r < 0)
                return die("cannot build the call (options are KEY=SIG:VALUE, SIG one of b u t s)", NULL, r);

        if (probe) {
                r = sd_bus_call(bus, m, 0, &error, NULL);
                if (r >= 0) {
                        fprintf(stderr, "bench-migrate: the probe was accepted: a migration to nowhere may run\n");
                        return 1;
                }
                if (error.message && strstr(error.message, "Unknown option")) {
                        printf("unknown\n");
                        return 0;
                }
                if (error.message && strstr(error.message, "takes type")) {
                        printf("known\n");
                        return 0;
                }
                return die("unexpected answer to the probe", &error, r);
        }

        /* Subscribe before calling: the end cannot slip past us. */
        r = sd_bus_match_signal(bus, &slot, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "MigrationEnded", on_ended, &w);
        if (r < 0)
                return die("cannot subscribe to MigrationEnded", NULL, r);
        r = sd_bus_add_match(bus, &slot_props,
                             "type='signal',sender='" BUS_NAME "',interface='org.freedesktop.DBus.Properties',"
                             "member='PropertiesChanged',path_namespace='/org/ferry/Ferry1/migration'",
                             on_properties, &w);
        if (r < 0)
                return die("cannot subscribe to PropertiesChanged", NULL, r);

        uint64_t call_usec = now_realtime_usec();
        r = sd_bus_call(bus, m, 0, &error, &reply);
        uint64_t reply_usec = now_realtime_usec();
        if (r < 0)
                return die("Migrate", &error, r);
        r = sd_bus_message_read(reply, "o", &migration_path);
        if (r < 0)
                return die("Migrate's reply", NULL, r);
        w.path = migration_path;

        while (!w.ended) {
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return die("lost the bus", NULL, r);
                if (r > 0)
                        continue;
                r = sd_bus_wait(bus, UINT64_MAX);
                if (r < 0)
                        return die("lost the bus", NULL, r);
        }

        printf("{\"migration\": \"%s\", \"call_usec\": %" PRIu64 ", \"reply_usec\": %" PRIu64
               ", \"end_usec\": %" PRIu64, migration_path, call_usec, reply_usec, w.end_usec);
        print_string_property(bus, migration_path, "State");
        print_string_property(bus, migration_path, "Phase");
        print_string_property(bus, migration_path, "ErrorName");
        print_string_property(bus, migration_path, "ErrorMessage");
        print_string_property(bus, migration_path, "Transport");
        print_string_property(bus, migration_path, "HypervisorURI");
        static const char *const u64s[] = { "ElapsedUSec", "SetupUSec", "DataTotal", "DataProcessed",
                                            "DataRemaining", "DowntimeUSec", "Iteration", NULL };
        for (const char *const *p = u64s; *p; p++) {
                uint64_t v;
                sd_bus_error_free(&error);
                if (sd_bus_get_property_trivial(bus, BUS_NAME, migration_path, MIGRATION_IFACE, *p, &error, 't', &v) >= 0)
                        printf(", \"%s\": %" PRIu64, *p, v);
        }
        printf(", \"phases\": [");
        bool first = true;
        for (size_t i = 0; i < w.n_phases; i++)
                if (strcmp(w.phases[i].path, migration_path) == 0) {
                        printf("%s{\"phase\": \"%s\", \"usec\": %" PRIu64 "}", first ? "" : ", ",
                               w.phases[i].phase, w.phases[i].usec);
                        first = false;
                }
        printf("]}\n");

        sd_bus_message_unref(reply);
        sd_bus_message_unref(m);
        sd_bus_slot_unref(slot);
        sd_bus_slot_unref(slot_props);
        sd_bus_error_free(&error);
        sd_bus_flush_close_unref(bus);
        free(domain);
        return 0;
}
