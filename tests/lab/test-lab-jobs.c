/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl's job verbs (domjobinfo, domjobabort, migrate-setspeed) on live migrations between
 * two lab hosts, and what a migration leaves behind when the destination's QEMU or ferryd is
 * killed in the middle of the transfer: the guest must run on exactly one host. */

#include <gio/gio.h>
#include <stdbool.h>

#include "lab.h"

#define TO_B "ferry+unix:///system?socket=/run/ferry-lab-peers/b/system_bus_socket"

static char *guest_kernel;

static void ctl(const char *host, LabResult *r, const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_ptr_array_add(argv, (char *) "ferryctl");
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);
        lab_exec(host, NULL, (const char *const *) argv->pdata, r);
}
#define CTL(host, r, ...) ctl(host, r, (const char *const[]) { __VA_ARGS__, NULL })

/* 128 MiB + 8 KiB: QEMU 7.2 under TCG loses dirty pages of RAM sizes that are multiples of
 * 256 KiB (tests/guest/README.md); with KVM any size works. rate= keeps dirtying modest. */
static char *guest_xml(const char *name) {
        return g_strdup_printf(
                "<domain type='kvm'>\n"
                "  <name>%s</name>\n"
                "  <memory unit='KiB'>131080</memory>\n"
                "  <vcpu>1</vcpu>\n"
                "  <os>\n"
                "    <type arch='x86_64' machine='pc'>hvm</type>\n"
                "    <kernel>%s</kernel>\n"
                "    <cmdline>fill=32M dirty=2M seed=11 rate=4M</cmdline>\n"
                "  </os>\n"
                "  <devices>\n"
                "    <serial type='file'><source path='/run/ferry-test/%s.log'/><target port='0'/></serial>\n"
                "  </devices>\n"
                "</domain>\n", name, guest_kernel, name);
}

static void create_guest(const char *host, const char *name) {
        g_autofree char *xml = guest_xml(name);
        g_autofree char *dir = lab_host_dir(host);
        g_autofree char *file = g_strconcat(name, ".xml", NULL);
        g_autofree char *path = g_build_filename(dir, "etc-ferry", file, NULL);
        g_autofree char *inside = g_build_filename("/etc/ferry", file, NULL);
        g_autofree char *ready = g_strdup_printf("grep -q 'ALIVE' /run/ferry-test/%s.log", name);
        g_auto(LabResult) r = {};

        g_assert_true(g_file_set_contents(path, xml, -1, NULL));
        CTL(host, &r, "create", inside);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(host, ready, 60000));
}

static char *state_of(const char *host, const char *name) {
        g_auto(LabResult) r = {};
        CTL(host, &r, "dominfo", name);
        if (r.status != 0)
                return g_strdup("absent");
        const char *p = strstr(r.out, "State:");
        g_assert_nonnull(p);
        p += strlen("State:");
        while (*p == ' ')
                p++;
        return g_strndup(p, strcspn(p, "\n"));
}

/* The guest's own verdict, from its serial log on host: it went on (generation counters
 * beyond start) and found no page wrong. */
static void assert_guest_intact(const char *host, const char *name, guint min_alive) {
        g_autofree char *enough = g_strdup_printf("test $(grep -c ALIVE /run/ferry-test/%s.log) -ge %u", name, min_alive);
        g_autofree char *log = g_strdup_printf("/run/ferry-test/%s.log", name);
        g_auto(LabResult) r = {};

        g_assert_true(lab_wait_for(host, enough, 60000));
        const char *argv[] = { "cat", log, NULL };
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_null(strstr(r.out, "CORRUPT"));
        g_assert_null(strstr(r.out, "corrupt=1"));
        g_assert_null(strstr(r.out, "ERROR"));
        g_assert_nonnull(strstr(r.out, "corrupt=0"));
}

/* After a migration: the source's log must show counters going on, not restarting. */
static void assert_guest_continued(const char *host, const char *name) {
        g_autofree char *log = g_strdup_printf("/run/ferry-test/%s.log", name);
        const char *argv[] = { "cat", log, NULL };
        g_auto(LabResult) r = {};

        assert_guest_intact(host, name, 3);
        lab_exec(host, NULL, argv, &r);
        g_assert_null(strstr(r.out, "ALIVE gen=0 "));
}

static char *busctl_path(const char *host, const char *const *argv) {
        g_auto(LabResult) r = {};
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        /* o "/org/..." */
        g_auto(GStrv) parts = g_strsplit(r.out, "\"", -1);
        g_assert_cmpuint(g_strv_length(parts), >=, 2);
        return g_strdup(parts[1]);
}

/* Starts a 1 MiB/s migration of name from host to dest: slow enough to act on in the middle
 * (128 MiB of RAM). Returns the Migration object once it is in phase perform. */
static char *start_slow_migration(const char *host, const char *name, const char *dest) {
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", name, NULL };
        g_autofree char *domain = busctl_path(host, lookup);
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", dest, "1", "max_bandwidth", "t", "1048576", "0", NULL };
        char *job = busctl_path(host, migrate);
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform", job);

        g_assert_true(lab_wait_for(host, in_perform, 30000));
        return job;
}

/* A Migration property, without busctl's type and quotes. */
static char *job_property(const char *host, const char *job, const char *property) {
        const char *argv[] = { "busctl", "get-property", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                               property, NULL };
        g_auto(LabResult) r = {};

        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_strstrip(r.out);
        const char *v = strchr(r.out, ' ') ? strchr(r.out, ' ') + 1 : r.out;
        if (*v == '"')
                return g_strndup(v + 1, strlen(v) - 2);
        return g_strdup(v);
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

        create_guest("a", "web1");
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
        g_autofree char *state = job_property("a", job, "State");
        g_assert_cmpstr(state, ==, "completed");
        g_autofree char *on_b = state_of("b", "web1"), *on_a = state_of("a", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        g_assert_cmpstr(on_a, ==, "absent");
        assert_guest_continued("b", "web1");

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
        g_autofree char *downtime = job_property("b", job, "MaxDowntimeUSec");
        g_assert_cmpstr(downtime, ==, "500000");
        lab_result_clear(&r);
        CTL("b", &r, "domjobabort", "web1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("b", job, 30000));
        g_autofree char *state = job_property("b", job, "State");
        g_assert_cmpstr(state, ==, "cancelled");
        g_autofree char *on_b = state_of("b", "web1");
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

        assert_guest_continued("b", "web1");
        lab_result_clear(&r);
        CTL("b", &r, "destroy", "web1");
        g_assert_cmpint(r.status, ==, 0);
}

static void test_destination_qemu_killed(void) {
        g_auto(LabResult) r = {};

        create_guest("a", "web3");
        g_autofree char *job = start_slow_migration("a", "web3", TO_B);
        lab_sh("b", NULL, "systemctl kill -s KILL ferry-qemu-web3.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("a", job, 30000));

        g_autofree char *state = job_property("a", job, "State");
        g_autofree char *phase = job_property("a", job, "Phase");
        g_autofree char *message = job_property("a", job, "ErrorMessage");
        g_test_message("source: %s in phase %s: %s", state, phase, message);
        g_assert_cmpstr(state, ==, "failed");
        g_assert_cmpstr(message, !=, "");
        g_autofree char *on_a = state_of("a", "web3");
        g_assert_cmpstr(on_a, ==, "running");
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo web3", 30000));
        assert_guest_intact("a", "web3", 3);
        lab_result_clear(&r);
        CTL("a", &r, "destroy", "web3");
        g_assert_cmpint(r.status, ==, 0);
}

static void test_destination_ferryd_killed(void) {
        g_auto(LabResult) r = {};

        create_guest("a", "web4");
        g_autofree char *job = start_slow_migration("a", "web4", TO_B);
        lab_sh("b", NULL, "systemctl kill -s KILL ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        /* The source notices by itself (it watches the ferryd that prepared the migration). */
        g_assert_true(wait_job_ended("a", job, 10000));
        g_autofree char *state = job_property("a", job, "State");
        g_autofree char *message = job_property("a", job, "ErrorMessage");
        g_test_message("source: %s: %s", state, message);
        g_assert_cmpstr(state, ==, "failed");
        g_autofree char *on_a = state_of("a", "web4");
        g_assert_cmpstr(on_a, ==, "running");
        /* The next ferryd on b finds the interrupted incoming QEMU and throws it away: no
         * copy is left that could ever be resumed there. */
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo web4 && ! systemctl -q is-active ferry-qemu-web4.service",
                                   20000));
        assert_guest_intact("a", "web4", 3);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        int ret;

        g_test_init(&argc, &argv, NULL);
        if (!lab_available()) {
                g_test_skip("lab tests need root");
                return g_test_run();
        }
        guest_kernel = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-test-guest", NULL);

        g_test_add_func("/lab/jobs/info-and-setspeed", test_info_and_setspeed);
        g_test_add_func("/lab/jobs/abort", test_abort);
        g_test_add_func("/lab/jobs/destination-qemu-killed", test_destination_qemu_killed);
        g_test_add_func("/lab/jobs/destination-ferryd-killed", test_destination_ferryd_killed);

        lab_up("jobs", hosts);
        for (const char *const *h = hosts; *h; h++) {
                g_auto(LabResult) r = {};
                lab_sh(*h, NULL, "mkdir -p /run/ferry-test", &r);
        }
        ret = g_test_run();
        lab_down();
        return ret;
}
