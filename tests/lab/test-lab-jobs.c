/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl's job verbs (domjobinfo, domjobabort, migrate-setspeed) on live migrations between
 * two lab hosts, and what a migration leaves behind when the destination's QEMU or ferryd is
 * killed in the middle of the transfer: the guest must run on exactly one host. */

#include <gio/gio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define TO_B LAB_TO_B
#define CTL LAB_CTL

/* Starts a 1 MiB/s migration of name from host to dest: slow enough to act on in the middle
 * (128 MiB of RAM). Returns the Migration object once it is in phase perform. */
static char *start_slow_migration(const char *host, const char *name, const char *dest) {
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", name, NULL };
        g_autofree char *domain = lab_busctl_path(host, lookup);
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", dest, "1", "max_bandwidth", "t", "1048576", "0", NULL };
        char *job = lab_busctl_path(host, migrate);
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform", job);

        g_assert_true(lab_wait_for(host, in_perform, 30000));
        return job;
}

static gboolean wait_job_ended(const char *host, const char *job, guint timeout_ms) {
        g_autofree char *ended = g_strdup_printf(
                "! busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q running", job);
        return lab_wait_for(host, ended, timeout_ms);
}

static double data_processed(const char *host, const char *name) {
        g_auto(LabResult) r = {};
        CTL(host, &r, "domjobinfo", name);
        g_assert_cmpint(r.status, ==, 0);
        const char *p = strstr(r.out, "Data processed:");
        g_assert_nonnull(p);
        return g_ascii_strtod(p + strlen("Data processed:"), NULL);
}

static void test_info_and_setspeed(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "web1", false);
        CTL("a", &r, "domjobinfo", "web1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_cmpstr(r.out, ==, "Job type:         None\n\n");
        lab_result_clear(&r);

        g_autofree char *job = start_slow_migration("a", "web1", TO_B);
        CTL("a", &r, "domjobinfo", "web1");
        g_test_message("%s", r.out);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "Job type:         Unbounded\nOperation:        Outgoing migration\n"
                                              "Phase:            perform\nTime elapsed:     "));
        lab_result_clear(&r);
        double before = data_processed("a", "web1");
        g_usleep(1500 * 1000);
        double after = data_processed("a", "web1");
        g_test_message("Data processed: %.3f MiB, then %.3f MiB", before, after);
        g_assert_cmpfloat(after, >, before);

        gint64 start = g_get_monotonic_time();
        CTL("a", &r, "migrate-setspeed", "web1", "2000");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("a", job, 60000));
        g_test_message("completed %.1f s after migrate-setspeed", (g_get_monotonic_time() - start) / 1e6);
        g_autofree char *state = lab_job_property("a", job, "State");
        g_assert_cmpstr(state, ==, "completed");
        g_autofree char *on_b = lab_domain_state("b", "web1"), *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        g_assert_cmpstr(on_a, ==, "absent");
        lab_guest_assert_intact("b", "web1", 3, true);

        /* The domain is gone from a (transient), its job is not. */
        lab_result_clear(&r);
        CTL("a", &r, "domjobinfo", "web1");
        g_test_message("%s", r.out);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "Job type:         Completed\nOperation:        Outgoing migration\n"
                                              "Phase:            confirm\n"));
        g_assert_nonnull(strstr(r.out, "Total downtime:"));
        g_assert_null(strstr(r.out, "Error:"));
        lab_result_clear(&r);
        CTL("b", &r, "domjobinfo", "web1");
        g_assert_true(g_str_has_prefix(r.out, "Job type:         Completed\nOperation:        Incoming migration\n"));
}

static void test_abort(void) {
        g_auto(LabResult) r = {};

        /* web1 runs on b since the previous test; send it back slowly and change our mind. */
        g_autofree char *job = start_slow_migration("b", "web1",
                                                    "ferry+unix:///system?socket=/run/ferry-lab-peers/a/system_bus_socket");
        CTL("b", &r, "migrate-setmaxdowntime", "web1", "500");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *downtime = lab_job_property("b", job, "MaxDowntimeUSec");
        g_assert_cmpstr(downtime, ==, "500000");
        lab_result_clear(&r);
        CTL("b", &r, "domjobabort", "web1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("b", job, 30000));
        g_autofree char *state = lab_job_property("b", job, "State");
        g_assert_cmpstr(state, ==, "cancelled");
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        g_assert_true(lab_wait_for("a", "! ferryctl dominfo web1", 30000));

        lab_result_clear(&r);
        CTL("b", &r, "domjobinfo", "web1");
        g_assert_true(g_str_has_prefix(r.out, "Job type:         Cancelled\n"));
        g_assert_nonnull(strstr(r.out, "Error:            cancelled by request\n"));
        /* Nothing left to abort or to speed up. */
        lab_result_clear(&r);
        CTL("b", &r, "domjobabort", "web1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "no job is active on the domain"));
        lab_result_clear(&r);
        CTL("b", &r, "migrate-setspeed", "web1", "10");
        g_assert_cmpint(r.status, ==, 1);
        lab_result_clear(&r);
        CTL("b", &r, "migrate-setspeed", "web1", "lots");
        g_assert_cmpint(r.status, ==, 2);
        lab_result_clear(&r);
        CTL("b", &r, "domjobabort", "nosuchdomain");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "failed to get domain 'nosuchdomain'"));

        lab_guest_assert_intact("b", "web1", 3, true);
        lab_result_clear(&r);
        CTL("b", &r, "destroy", "web1");
        g_assert_cmpint(r.status, ==, 0);
}

static void test_destination_qemu_killed(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "web3", false);
        g_autofree char *job = start_slow_migration("a", "web3", TO_B);
        lab_sh("b", NULL, "systemctl kill -s KILL ferry-qemu-web3.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("a", job, 30000));

        g_autofree char *state = lab_job_property("a", job, "State");
        g_autofree char *phase = lab_job_property("a", job, "Phase");
        g_autofree char *message = lab_job_property("a", job, "ErrorMessage");
        g_test_message("source: %s in phase %s: %s", state, phase, message);
        g_assert_cmpstr(state, ==, "failed");
        g_assert_cmpstr(message, !=, "");
        g_autofree char *on_a = lab_domain_state("a", "web3");
        g_assert_cmpstr(on_a, ==, "running");
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo web3", 30000));
        lab_guest_assert_intact("a", "web3", 3, false);
        lab_result_clear(&r);
        CTL("a", &r, "destroy", "web3");
        g_assert_cmpint(r.status, ==, 0);
}

static void test_destination_ferryd_killed(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "web4", false);
        g_autofree char *job = start_slow_migration("a", "web4", TO_B);
        lab_sh("b", NULL, "systemctl kill -s KILL ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        /* The source notices by itself (it watches the ferryd that prepared the migration). */
        g_assert_true(wait_job_ended("a", job, 10000));
        g_autofree char *state = lab_job_property("a", job, "State");
        g_autofree char *message = lab_job_property("a", job, "ErrorMessage");
        g_test_message("source: %s: %s", state, message);
        g_assert_cmpstr(state, ==, "failed");
        g_autofree char *on_a = lab_domain_state("a", "web4");
        g_assert_cmpstr(on_a, ==, "running");
        /* The next ferryd on b finds the interrupted incoming QEMU and throws it away: no
         * copy is left that could ever be resumed there. */
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo web4 && ! systemctl -q is-active ferry-qemu-web4.service",
                                   20000));
        lab_guest_assert_intact("a", "web4", 3, false);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/jobs/info-and-setspeed", test_info_and_setspeed);
        g_test_add_func("/lab/jobs/abort", test_abort);
        g_test_add_func("/lab/jobs/destination-qemu-killed", test_destination_qemu_killed);
        g_test_add_func("/lab/jobs/destination-ferryd-killed", test_destination_ferryd_killed);

        return lab_run("jobs", hosts);
}
