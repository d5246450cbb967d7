/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Post-copy and parallel (multifd) migrations of the dirtying test guest between lab hosts a
 * and b, with real QEMUs: a switch to post-copy (the destination runs the guest while its
 * memory still arrives), a network cut in the middle of post-copy (the migration socket killed
 * with ss -K) recovered with Migration.Recover, a destination whose QEMU may not use
 * userfaultfd (a seccomp filter on its unit: the kernel refuses the syscall), four multifd
 * connections seen on the destination, and the refusals of bad values. */

#include <glib.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lab-guest.h"

#define CTL LAB_CTL
#define MIB "1048576"

static char *domain_path(const char *host, const char *name) {
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", name, NULL };
        return lab_busctl_path(host, lookup);
}

static void assert_state(const char *host, const char *name, const char *state) {
        g_autofree char *s = lab_domain_state(host, name);
        g_assert_cmpstr(s, ==, state);
}

/* busctl get-property of the Migration interface, e.g. `s "active"`. */
static char *migration_property(const char *host, const char *job, const char *property) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "get-property", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                               property, NULL };
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        return g_strstrip(g_strdup(r.out));
}

static gboolean wait_property(const char *host, const char *job, const char *property, const char *value,
                              guint timeout_ms) {
        g_autofree char *script = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration %s | grep -qx '%s'", job, property,
                value);
        gboolean ok = lab_wait_for(host, script, timeout_ms);
        if (!ok) {
                g_autofree char *now = migration_property(host, job, property);
                g_autofree char *err = migration_property(host, job, "ErrorMessage");
                g_test_message("%s %s is %s, not %s (error: %s)", job, property, now, value, err);
        }
        return ok;
}

/* The running incoming job on host (its object path). */
static char *incoming_job(const char *host) {
        g_auto(LabResult) r = {};
        lab_sh(host, NULL,
               "for p in $(busctl --list tree org.ferry.Ferry1 | grep /migration/); do "
               "busctl get-property org.ferry.Ferry1 $p org.ferry.Ferry1.Migration Direction State | tr '\\n' ' ' | "
               "grep -q 'incoming.*running' && echo $p; done", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_auto(GStrv) lines = g_strsplit(g_strstrip(r.out), "\n", -1);
        g_assert_cmpuint(g_strv_length(lines), ==, 1);
        return g_strdup(lines[0]);
}

/* The port of a job's HypervisorURI (s "tcp:HOST:PORT"). */
static char *job_port(const char *host, const char *job) {
        g_autofree char *uri = migration_property(host, job, "HypervisorURI");
        const char *colon = strrchr(uri, ':');
        g_assert_nonnull(colon);
        return g_strndup(colon + 1, strspn(colon + 1, "0123456789"));
}

static void call_ok(const char *host, const char *job, const char *method) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", method, NULL };
        lab_exec(host, NULL, argv, &r);
        if (r.status != 0)
                g_test_message("%s: %s", method, r.err);
        g_assert_cmpint(r.status, ==, 0);
}

/* Domain.Migrate that must be refused; its error text. */
static char *migrate_refused(const char *host, const char *domain, const char *const *options) {
        g_auto(LabResult) r = {};
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        const char *head[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                               "sa{sv}t", LAB_TO_B };
        for (size_t i = 0; i < G_N_ELEMENTS(head); i++)
                g_ptr_array_add(argv, (char *) head[i]);
        for (const char *const *o = options; *o; o++)
                g_ptr_array_add(argv, (char *) *o);
        g_ptr_array_add(argv, (char *) "0");
        g_ptr_array_add(argv, NULL);
        lab_exec(host, NULL, (const char *const *) argv->pdata, &r);
        g_assert_cmpint(r.status, !=, 0);
        return g_strdup(r.err);
}

static void test_refusals(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "pc1", false);
        g_autofree char *domain = domain_path("a", "pc1");
        struct {
                const char *options[12];
                const char *error;
        } cases[] = {
                { { "1", "parallel_connections", "u", "0", NULL }, "must be 1..16, not 0" },
                { { "1", "parallel_connections", "u", "17", NULL }, "must be 1..16, not 17" },
                { { "1", "parallel_connections", "t", "4", NULL }, "Option 'parallel_connections' takes type 'u'" },
                { { "1", "postcopy", "s", "yes", NULL }, "Option 'postcopy' takes type 'b'" },
                { { "1", "postcopy_bandwidth", "t", MIB, NULL }, "postcopy_bandwidth needs the postcopy option" },
                { { "2", "postcopy", "b", "true", "parallel_connections", "u", "2", NULL }, "cannot be combined" },
                { { "2", "postcopy", "b", "true", "offline", "b", "true", NULL }, "not with offline" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *err = migrate_refused("a", domain, cases[i].options);
                g_test_message("%s", err);
                g_assert_nonnull(strstr(err, cases[i].error));
        }
        /* MigrateBegin (managed direct) has no post-copy. */
        const char *begin[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "MigrateBegin",
                                "sa{sv}t", LAB_TO_B, "1", "postcopy", "b", "true", "0", NULL };
        lab_exec("a", NULL, begin, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "peer-to-peer"));
        lab_result_clear(&r);
        /* The same through ferryctl, which names the error. */
        CTL("a", &r, "migrate", "--postcopy", "--parallel", "pc1", LAB_TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        g_assert_nonnull(strstr(r.err, "cannot be combined"));
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "--parallel-connections", "0", "pc1", LAB_TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--postcopy", "--offline", "pc1", LAB_TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        lab_result_clear(&r);
        CTL("a", &r, "migrate-postcopy", "pc1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "no job is active"));
        lab_result_clear(&r);

        /* Not armed: StartPostCopy and Recover are refused; the contract is what runs. */
        const char *slow[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                               "sa{sv}t", LAB_TO_B, "1", "max_bandwidth", "t", MIB, "0", NULL };
        g_autofree char *job = lab_busctl_path("a", slow);
        lab_assert_introspection_matches("a", job, "org.ferry.Ferry1.Migration");
        g_autofree char *pc = migration_property("a", job, "PostCopy");
        g_assert_cmpstr(pc, ==, "s \"off\"");
        const char *start[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                                "StartPostCopy", NULL };
        lab_exec("a", NULL, start, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "not armed for post-copy"));
        lab_result_clear(&r);
        const char *recover[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Recover",
                                  NULL };
        lab_exec("a", NULL, recover, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "only a paused post-copy is recovered"));
        lab_result_clear(&r);
        call_ok("a", job, "Cancel");
        g_assert_true(wait_property("a", job, "State", "s \"cancelled\"", 60000));
        assert_state("a", "pc1", "running");
        assert_state("b", "pc1", "absent");
}

/* Armed, switched during the first pass: the destination runs the guest at once and pulls
 * the pages it touches; the rest follows; the source's QEMU goes. */
static void test_postcopy(void) {
        g_auto(LabResult) r = {};
        g_autofree char *domain = domain_path("a", "pc1");
        /* 4 MiB/s: the pre-copy pass is far from done when we switch. */
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", LAB_TO_B, "2", "postcopy", "b", "true", "max_bandwidth", "t", "4194304",
                                  "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);
        g_autofree char *armed = migration_property("a", job, "PostCopy");
        g_assert_cmpstr(armed, ==, "s \"armed\"");
        g_assert_true(wait_property("a", job, "Phase", "s \"perform\"", 60000));
        call_ok("a", job, "StartPostCopy");
        /* Cancel is refused from the switch on; a second StartPostCopy too. */
        g_assert_true(wait_property("a", job, "State", "s \"completed\"", 300000));
        g_autofree char *done = migration_property("a", job, "PostCopy");
        g_assert_cmpstr(done, ==, "s \"completed\"");
        assert_state("b", "pc1", "running");
        assert_state("a", "pc1", "absent");
        lab_guest_assert_intact("b", "pc1", 3, true);

        /* Every page, from the host: a dump of the paused guest checks page by page. */
        CTL("b", &r, "suspend", "pc1");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_autofree char *dump = lab_guest_dump("b", "pc1", "postcopy.elf");
        g_assert_cmpuint(lab_dump_assert_checks(dump), >, 0);
        CTL("b", &r, "resume", "pc1");
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("b", "pc1", 4, true);
}

/* The migration socket killed in the middle of post-copy: both sides pause (the source
 * keeps its guest paused: the destination ran it), Recover resumes the stream on a new port,
 * and the guest arrives whole. */
static void test_recover(void) {
        g_auto(LabResult) r = {};
        g_autofree char *domain = domain_path("b", "pc1");
        /* The guest stays paused on a (option paused) so that it pulls no pages itself, and
         * post-copy sends at 1 MiB/s: the post-copy phase lasts long enough to cut it. */
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", LAB_TO_A, "4", "postcopy", "b", "true", "postcopy_bandwidth", "t", MIB,
                                  "max_bandwidth", "t", MIB, "paused", "b", "true", "0", NULL };
        g_autofree char *job = lab_busctl_path("b", migrate);
        g_assert_true(wait_property("b", job, "Phase", "s \"perform\"", 60000));
        call_ok("b", job, "StartPostCopy");
        g_assert_true(wait_property("b", job, "PostCopy", "s \"active\"", 60000));
        g_autofree char *in = incoming_job("a");
        g_assert_true(wait_property("a", in, "PostCopy", "s \"active\"", 60000));
        g_autofree char *bw = migration_property("b", job, "PostCopyBandwidth");
        g_assert_cmpstr(bw, ==, "t " MIB);

        /* Cancel is past its point now. */
        const char *cancel[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Cancel", NULL };
        lab_exec("b", NULL, cancel, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "past the point"));
        lab_result_clear(&r);

        /* Cut: kill the established stream on the destination (RST to both QEMUs). */
        g_autofree char *port = job_port("a", in);
        g_autofree char *cut = g_strdup_printf("ss -K -tn state established '( sport = :%s )'", port);
        lab_sh("a", NULL, cut, &r);
        g_test_message("ss -K: %d %s %s", r.status, r.out, r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_property("b", job, "PostCopy", "s \"paused\"", 120000));
        g_assert_true(wait_property("a", in, "PostCopy", "s \"paused\"", 120000));
        /* Both jobs still run; the source's guest stays paused, never resumed. */
        g_autofree char *st_b = migration_property("b", job, "State");
        g_assert_cmpstr(st_b, ==, "s \"running\"");
        g_autofree char *st_a = migration_property("a", in, "State");
        g_assert_cmpstr(st_a, ==, "s \"running\"");
        assert_state("b", "pc1", "paused");
        CTL("b", &r, "resume", "pc1");
        g_assert_cmpint(r.status, !=, 0);
        lab_result_clear(&r);

        /* Recover: a new port on a, QEMU resumes from b. */
        const char *recover[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Recover",
                                  NULL };
        lab_exec("b", NULL, recover, &r);
        g_test_message("Recover: %s %s", r.out, r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *new_port = job_port("a", in);
        g_assert_cmpstr(new_port, !=, port);
        g_assert_nonnull(strstr(r.out, new_port));
        lab_result_clear(&r);
        g_assert_true(wait_property("b", job, "State", "s \"completed\"", 300000));
        g_assert_true(wait_property("a", in, "State", "s \"completed\"", 60000));
        assert_state("b", "pc1", "absent");
        assert_state("a", "pc1", "paused");

        g_autofree char *dump = lab_guest_dump("a", "pc1", "recovered.elf");
        g_assert_cmpuint(lab_dump_assert_checks(dump), >, 0);
        CTL("a", &r, "resume", "pc1");
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("a", "pc1", 5, true);
}

/* The kernel refuses userfaultfd to b's QEMU (a seccomp filter on its unit, as a hardened
 * host would have): Prepare says so, and nothing moved. */
static void test_no_userfaultfd(void) {
        g_auto(LabResult) r = {};

        lab_sh("b", NULL,
               "mkdir -p /run/systemd/system/ferry-qemu-pc1.service.d && "
               "printf '[Service]\\nSystemCallFilter=~userfaultfd\\nSystemCallErrorNumber=EPERM\\n' "
               "> /run/systemd/system/ferry-qemu-pc1.service.d/50-no-userfaultfd.conf && systemctl daemon-reload",
               &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        CTL("a", &r, "migrate", "--p2p", "--postcopy", "pc1", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "cannot do post-copy"));
        g_assert_nonnull(strstr(r.err, "userfaultfd"));
        lab_result_clear(&r);
        assert_state("a", "pc1", "running");
        assert_state("b", "pc1", "absent");

        /* The same host takes a pre-copy migration: only post-copy needs userfaultfd. */
        CTL("a", &r, "migrate", "--p2p", "pc1", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        assert_state("b", "pc1", "running");
        lab_guest_assert_intact("b", "pc1", 6, true);
        lab_sh("b", NULL, "rm -r /run/systemd/system/ferry-qemu-pc1.service.d && systemctl daemon-reload", &r);
}

/* Four multifd channels: the destination sees five connections (the main one and four). */
static void test_parallel(void) {
        g_auto(LabResult) r = {};
        g_autofree char *domain = domain_path("b", "pc1");
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", LAB_TO_A, "2", "parallel_connections", "u", "4", "max_bandwidth", "t", MIB,
                                  "0", NULL };
        g_autofree char *job = lab_busctl_path("b", migrate);
        g_assert_true(wait_property("b", job, "Phase", "s \"perform\"", 60000));
        g_autofree char *n = migration_property("b", job, "ParallelConnections");
        g_assert_cmpstr(n, ==, "u 4");
        g_autofree char *in = incoming_job("a");
        g_autofree char *port = job_port("a", in);
        g_autofree char *five = g_strdup_printf(
                "test $(ss -Htn state established '( sport = :%s )' | wc -l) -eq 5", port);
        g_assert_true(lab_wait_for("a", five, 60000));
        const char *unlimited[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                                    "SetMaxBandwidth", "t", "0", NULL };
        lab_exec("b", NULL, unlimited, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_property("b", job, "State", "s \"completed\"", 300000));
        assert_state("a", "pc1", "running");
        assert_state("b", "pc1", "absent");
        lab_guest_assert_intact("a", "pc1", 7, true);

        /* ferryctl's --parallel-connections, back to b. */
        CTL("a", &r, "migrate", "--p2p", "--parallel", "--parallel-connections", "3", "pc1", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_state("b", "pc1", "running");
        lab_guest_assert_intact("b", "pc1", 8, true);
}

/* The same through ferryctl: --postcopy-after-precopy switches after the first pass,
 * migrate-postcopy switches by hand, and migrate --postcopy-resume recovers after a cut. */
static void test_ferryctl(void) {
        g_auto(LabResult) r = {};

        /* 2 MiB/s: the guest dirties faster than that, pre-copy alone would not converge. */
        CTL("b", &r, "migrate", "--postcopy", "--postcopy-after-precopy", "--bandwidth", "2", "pc1", LAB_TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        assert_state("a", "pc1", "running");
        assert_state("b", "pc1", "absent");
        /* The destination's job ends with its own QEMU's "completed", which may come a moment
         * after the source's job (and so ferryctl migrate) has ended. */
        g_assert_true(lab_wait_for("a", "ferryctl domjobinfo pc1 | grep -q '^Post-copy: *completed$'", 60000));
        CTL("a", &r, "domjobinfo", "pc1");
        g_test_message("%s", r.out);
        g_assert_nonnull(strstr(r.out, "Post-copy:        completed"));
        lab_result_clear(&r);
        lab_guest_assert_intact("a", "pc1", 9, true);

        g_autofree char *domain = domain_path("a", "pc1");
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", LAB_TO_B, "4", "postcopy", "b", "true", "postcopy_bandwidth", "t", MIB,
                                  "max_bandwidth", "t", MIB, "paused", "b", "true", "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);
        g_assert_true(wait_property("a", job, "Phase", "s \"perform\"", 60000));
        CTL("a", &r, "migrate-postcopy", "pc1");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_property("a", job, "PostCopy", "s \"active\"", 60000));
        g_autofree char *in = incoming_job("b");
        g_assert_true(wait_property("b", in, "PostCopy", "s \"active\"", 60000));
        /* A second switch is refused. */
        CTL("a", &r, "migrate-postcopy", "pc1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidState"));
        lab_result_clear(&r);
        g_autofree char *port = job_port("b", in);
        g_autofree char *cut = g_strdup_printf("ss -K -tn state established '( sport = :%s )'", port);
        lab_sh("b", NULL, cut, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_property("a", job, "PostCopy", "s \"paused\"", 120000));
        g_assert_true(wait_property("b", in, "PostCopy", "s \"paused\"", 120000));
        CTL("a", &r, "domjobinfo", "pc1");
        g_assert_nonnull(strstr(r.out, "Post-copy:        paused"));
        lab_result_clear(&r);

        CTL("a", &r, "migrate", "--postcopy-resume", "pc1", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_property("b", in, "State", "s \"completed\"", 60000));
        assert_state("a", "pc1", "absent");
        assert_state("b", "pc1", "paused");
        CTL("b", &r, "resume", "pc1");
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("b", "pc1", 10, true);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/postcopy/refusals", test_refusals);
        g_test_add_func("/lab/postcopy/postcopy", test_postcopy);
        g_test_add_func("/lab/postcopy/recover", test_recover);
        g_test_add_func("/lab/postcopy/no-userfaultfd", test_no_userfaultfd);
        g_test_add_func("/lab/postcopy/parallel", test_parallel);
        g_test_add_func("/lab/postcopy/ferryctl", test_ferryctl);

        return lab_run("postcopy", hosts);
}
