/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A managed direct client for the lab tests only: drives the phases as ferryctl migrate does,
 * over one persistent connection to each ferryd, and stops after a given step, holding both
 * connections open until the test SIGKILLs it (the client dying mid-way is the point).
 *
 *   ferry-md-client STEP DOMAIN DEST-BUS-ADDRESS STATE-FILE [MAX-BANDWIDTH]
 *
 * STEP: begin, prepare, perform (Perform called and QEMU sending), performed (Perform
 * returned), finished (the destination's Finish returned). STATE-FILE gets "source PATH",
 * "destination PATH" and finally "stopped STEP" lines; errors go to stderr, exit status 1. */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#define BUS "org.ferry.Ferry1"
#define MIGRATION_IFACE "org.ferry.Ferry1.Migration"
#define LONG_CALL_USEC (600ULL * 1000000ULL)

static FILE *state;

static int fail(const char *what, const sd_bus_error *e, int r) {
        fprintf(stderr, "ferry-md-client: %s: %s\n", what, e && e->message ? e->message : strerror(-r));
        exit(1);
}

static void say(const char *key, const char *value) {
        fprintf(state, "%s %s\n", key, value);
        fflush(state);
}

static void stop_here(const char *step) {
        say("stopped", step);
        /* Keep both connections as they are until SIGKILL. */
        for (;;)
                pause();
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        *(sd_bus_message **) userdata = sd_bus_message_ref(m);
        return 0;
}

static int on_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        *(bool *) userdata = true;
        return 0;
}

int main(int argc, char **argv) {
        sd_bus *src = NULL, *dst = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL, *performed = NULL;
        const char *mig, *xml, *dst_mig, *hv;
        char *domain = NULL;
        uint64_t bandwidth = 0;
        bool dirty = true, sending = false;
        int r;

        if (argc < 5 || argc > 6) {
                fprintf(stderr, "usage: ferry-md-client STEP DOMAIN DEST-BUS-ADDRESS STATE-FILE [MAX-BANDWIDTH]\n");
                return 2;
        }
        const char *step = argv[1];
        if (argc == 6)
                bandwidth = strtoull(argv[5], NULL, 10);
        state = fopen(argv[4], "we");
        if (!state)
                return 1;

        r = sd_bus_open_system(&src);
        if (r < 0)
                fail("source bus", NULL, r);
        r = sd_bus_new(&dst);
        if (r >= 0)
                r = sd_bus_set_address(dst, argv[3]);
        if (r >= 0)
                r = sd_bus_set_bus_client(dst, true);
        if (r >= 0)
                r = sd_bus_start(dst);
        if (r < 0)
                fail("destination bus", NULL, r);
        /* Prepare starts a QEMU, Finish may wait for it: no 25 s default here. */
        (void) sd_bus_set_method_call_timeout(src, LONG_CALL_USEC);
        (void) sd_bus_set_method_call_timeout(dst, LONG_CALL_USEC);

        r = sd_bus_call_method(src, BUS, "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "GetDomainByName", &error,
                               &reply, "s", argv[2]);
        if (r < 0)
                fail("GetDomainByName", &error, r);
        r = sd_bus_message_read(reply, "o", &mig);
        if (r < 0)
                fail("GetDomainByName reply", NULL, r);
        domain = strdup(mig);
        reply = sd_bus_message_unref(reply);

        /* Begin */
        r = sd_bus_message_new_method_call(src, &m, BUS, domain, "org.ferry.Ferry1.Domain", "MigrateBegin");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "ferry+unix:///system?socket=/run/ferry-lab-peers/b/system_bus_socket");
        if (r >= 0 && bandwidth)
                r = sd_bus_message_append(m, "a{sv}", 1, "max_bandwidth", "t", bandwidth);
        else if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", (uint64_t) 0);
        if (r >= 0)
                r = sd_bus_call(src, m, 0, &error, &reply);
        if (r < 0)
                fail("MigrateBegin", &error, r);
        r = sd_bus_message_read(reply, "os", &mig, &xml);
        if (r < 0)
                fail("MigrateBegin reply", NULL, r);
        say("source", mig);
        if (strcmp(step, "begin") == 0)
                stop_here(step);

        /* Prepare */
        r = sd_bus_call_method(dst, BUS, "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "PrepareMigration", &error,
                               &m, "sa{sv}", xml, 0);
        if (r < 0)
                fail("PrepareMigration", &error, r);
        r = sd_bus_message_read(m, "os", &dst_mig, &hv);
        if (r < 0)
                fail("PrepareMigration reply", NULL, r);
        say("destination", dst_mig);
        if (strcmp(step, "prepare") == 0)
                stop_here(step);

        /* Perform, watching the job until QEMU is sending (for "perform") or the answer comes. */
        r = sd_bus_match_signal(src, NULL, BUS, mig, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                on_changed, &dirty);
        if (r >= 0)
                r = sd_bus_call_method_async(src, NULL, BUS, mig, MIGRATION_IFACE, "Perform", on_reply, &performed,
                                             "s", hv);
        if (r < 0)
                fail("Perform", NULL, r);
        while (!performed) {
                if (dirty && strcmp(step, "perform") == 0) {
                        uint64_t processed = 0;
                        dirty = false;
                        r = sd_bus_get_property_trivial(src, BUS, mig, MIGRATION_IFACE, "DataProcessed", &error, 't',
                                                        &processed);
                        if (r < 0)
                                fail("DataProcessed", &error, r);
                        sending = processed > 0;
                        if (sending)
                                stop_here(step);
                }
                r = sd_bus_process(src, NULL);
                if (r < 0)
                        fail("source bus", NULL, r);
                if (r == 0 && !performed)
                        (void) sd_bus_wait(src, UINT64_MAX);
        }
        if (sd_bus_message_is_method_error(performed, NULL))
                fail("Perform", sd_bus_message_get_error(performed), -EIO);
        if (strcmp(step, "perform") == 0 || strcmp(step, "performed") == 0)
                stop_here("performed");

        /* Finish, on the destination */
        r = sd_bus_call_method(dst, BUS, dst_mig, MIGRATION_IFACE, "Finish", &error, NULL, "b", 1);
        if (r < 0)
                fail("Finish", &error, r);
        if (strcmp(step, "finished") == 0)
                stop_here(step);

        r = sd_bus_call_method(src, BUS, mig, MIGRATION_IFACE, "Confirm", &error, NULL, "b", 1);
        if (r < 0)
                fail("Confirm", &error, r);
        say("stopped", "confirmed");
        return 0;
}
