/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Cancel in each phase of the peer-to-peer flow, and a source ferryd killed in the middle of
 * a migration: every time the guest ends up running on exactly one host with its RAM intact,
 * and nothing is left on the other host. */

#include <gio/gio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define TO_B LAB_TO_B
#define CTL LAB_CTL

/* A UNIX socket on a that accepts connections and never says a word: a peer whose bus
 * handshake hangs, so the migration stays in phase begin. */
#define SILENT_SOCKET "/run/ferry-test/silent.sock"
#define SILENT_LISTENER                                                                            \
        "systemd-run --quiet --unit=ferry-test-silent /usr/bin/python3 -c \"import socket; "               \
        "s = socket.socket(socket.AF_UNIX); s.bind('" SILENT_SOCKET "'); s.listen(8); "             \
        "held = [s.accept() for _ in iter(int, 1)]\""

/* Domain.Migrate of name on host to dest (bandwidth in bytes/s, 0: unlimited); returns the
 * Migration object. */
static char *migrate(const char *host, const char *name, const char *dest, const char *bandwidth) {
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", name, NULL };
        g_autofree char *domain = lab_busctl_path(host, lookup);
        const char *call[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                               "sa{sv}t", dest, "1", "max_bandwidth", "t", bandwidth, "0", NULL };
        return lab_busctl_path(host, call);
}
static void assert_lab_job_property(const char *host, const char *job, const char *property, const char *want) {
        g_autofree char *v = lab_job_property(host, job, property);
        g_assert_cmpstr(v, ==, want);
}

static gboolean wait_phase(const char *host, const char *job, const char *phase, guint timeout_ms) {
        g_autofree char *script = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -qx 's \"%s\"'", job, phase);
        return lab_wait_for(host, script, timeout_ms);
}

static gboolean wait_job_ended(const char *host, const char *job, guint timeout_ms) {
        g_autofree char *ended = g_strdup_printf(
                "! busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q running", job);
        return lab_wait_for(host, ended, timeout_ms);
}

/* Migration.Cancel with gdbus, which names the D-Bus error on failure. */
static void cancel(const char *host, const char *job, LabResult *r) {
        const char *argv[] = { "gdbus", "call", "--system", "--dest", "org.ferry.Ferry1", "--object-path", job,
                               "--method", "org.ferry.Ferry1.Migration.Cancel", NULL };
        lab_exec(host, NULL, argv, r);
}

/* Nothing of name on host: no domain, no QEMU unit. */
static void wait_nothing_left(const char *host, const char *name) {
        g_autofree char *gone = g_strdup_printf(
                "! ferryctl dominfo %s && ! systemctl -q is-active ferry-qemu-%s.service", name, name);
        g_assert_true(lab_wait_for(host, gone, 30000));
}

static void assert_runs_on(const char *host, const char *other, const char *name, bool migrated_here) {
        g_autofree char *here = lab_domain_state(host, name);
        g_assert_cmpstr(here, ==, "running");
        wait_nothing_left(other, name);
        lab_guest_assert_intact(host, name, 3, migrated_here);
}

static void destroy(const char *host, const char *name) {
        g_auto(LabResult) r = {};
        CTL(host, &r, "destroy", name);
        g_assert_cmpint(r.status, ==, 0);
}

static void test_cancel_in_begin(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "c1", false);
        lab_sh("a", NULL, SILENT_LISTENER, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("a", "test -S " SILENT_SOCKET, 10000));

        g_autofree char *job = migrate("a", "c1", "ferry+unix:///system?socket=" SILENT_SOCKET, "0");
        assert_lab_job_property("a", job, "Phase", "begin");
        /* The answer comes at once: ferryd does not wait for the silent peer. */
        gint64 start = g_get_monotonic_time();
        lab_result_clear(&r);
        CTL("a", &r, "domjobabort", "c1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_cmpint(g_get_monotonic_time() - start, <, 10 * G_USEC_PER_SEC);
        g_assert_true(wait_job_ended("a", job, 10000));
        assert_lab_job_property("a", job, "State", "cancelled");
        assert_lab_job_property("a", job, "Phase", "begin");
        assert_lab_job_property("a", job, "ErrorName", "org.ferry.Ferry1.Error.MigrationCancelled");

        assert_runs_on("a", "b", "c1", false);
        lab_result_clear(&r);
        lab_sh("a", NULL, "systemctl stop ferry-test-silent.service", &r);
        destroy("a", "c1");
}

static void test_cancel_in_prepare(void) {
        g_auto(LabResult) r = {};

        /* b's migrate hook takes its time; meanwhile the source gives up. */
        lab_sh("b", NULL, "mkdir -p /etc/ferry/hooks && printf '#!/bin/sh\\ncat >/dev/null\\nsleep 8\\n' "
                          "> /etc/ferry/hooks/migrate && chmod 755 /etc/ferry/hooks/migrate", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_create("a", "c2", false);

        g_autofree char *job = migrate("a", "c2", TO_B, "1048576");
        g_assert_true(wait_phase("a", job, "prepare", 30000));
        lab_result_clear(&r);
        CTL("a", &r, "domjobabort", "c2");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("a", job, 10000));
        assert_lab_job_property("a", job, "State", "cancelled");
        assert_lab_job_property("a", job, "Phase", "prepare");
        g_autofree char *on_a = lab_domain_state("a", "c2");
        g_assert_cmpstr(on_a, ==, "running");

        /* Once the hook is done, b prepares after all (QEMU waiting for a stream); the source
         * kept the connection for that answer and tells b to throw it away. */
        g_assert_true(lab_wait_for("b", "ferryctl domjobinfo c2 | grep -q '^Job type: *Cancelled'", 60000));
        lab_result_clear(&r);
        CTL("b", &r, "domjobinfo", "c2");
        g_assert_nonnull(strstr(r.out, "Error:            the source gave up\n"));
        assert_runs_on("a", "b", "c2", false);

        lab_result_clear(&r);
        lab_sh("b", NULL, "rm /etc/ferry/hooks/migrate", &r);
        g_assert_cmpint(r.status, ==, 0);
        destroy("a", "c2");
}

static void test_cancel_in_perform(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "c3", false);
        g_autofree char *job = migrate("a", "c3", TO_B, "1048576");
        g_assert_true(wait_phase("a", job, "perform", 30000));
        cancel("a", job, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("a", job, 30000));
        assert_lab_job_property("a", job, "State", "cancelled");
        assert_lab_job_property("a", job, "Phase", "perform");
        assert_lab_job_property("a", job, "ErrorName", "org.ferry.Ferry1.Error.MigrationCancelled");
        assert_runs_on("a", "b", "c3", false);
        destroy("a", "c3");
}

static void test_cancel_refused_in_finish(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "c4", false);
        g_autofree char *job = migrate("a", "c4", TO_B, "1048576");
        g_assert_true(wait_phase("a", job, "perform", 30000));
        /* b's ferryd frozen: the source's Finish waits there, in phase finish. */
        lab_sh("b", NULL, "systemctl kill -s STOP ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "migrate-setspeed", "c4", "2000");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_phase("a", job, "finish", 120000));

        /* Past the point of no return: b may be running the guest already. */
        lab_result_clear(&r);
        cancel("a", job, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.InvalidState"));
        g_assert_nonnull(strstr(r.err, "past the point"));
        lab_result_clear(&r);
        CTL("a", &r, "domjobabort", "c4");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.InvalidState"));
        assert_lab_job_property("a", job, "State", "running");

        lab_result_clear(&r);
        lab_sh("b", NULL, "systemctl kill -s CONT ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_job_ended("a", job, 60000));
        assert_lab_job_property("a", job, "State", "completed");
        assert_lab_job_property("a", job, "Phase", "confirm");
        /* Confirm is done as Finish returns: nothing left to cancel. */
        lab_result_clear(&r);
        cancel("a", job, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.InvalidState"));
        g_assert_nonnull(strstr(r.err, "not running"));

        assert_runs_on("b", "a", "c4", true);
        destroy("b", "c4");
}

static void test_source_ferryd_killed(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "c5", false);
        g_autofree char *job = migrate("a", "c5", TO_B, "1048576");
        g_assert_true(wait_phase("a", job, "perform", 30000));
        /* The live state says a migration is going out, before Finish. */
        lab_sh("a", NULL, "grep -l '^FinishSent=false' /run/ferry/domains/*/state", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        lab_sh("a", NULL, "systemctl kill -s KILL ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("a", "! systemctl -q is-active ferryd.service", 10000));
        /* QEMU goes on sending meanwhile; the next call starts ferryd again, which cancels it. */
        g_assert_true(lab_wait_for("a", "ferryctl domjobinfo c5 | grep -q '^Job type: *Failed'", 30000));
        lab_result_clear(&r);
        CTL("a", &r, "domjobinfo", "c5");
        g_test_message("%s", r.out);
        g_assert_nonnull(strstr(r.out, "Operation:        Outgoing migration\n"));
        g_assert_nonnull(strstr(r.out, "ferryd was restarted during the migration"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "journalctl -q -b -u ferryd -g 'after the restart|was migrating'", &r);
        lab_result_clear(&r);
        lab_sh("a", NULL, "! grep -q OutgoingMigration /run/ferry/domains/*/state", &r);
        g_assert_cmpint(r.status, ==, 0);

        assert_runs_on("a", "b", "c5", false);
        lab_result_clear(&r);
        CTL("a", &r, "dominfo", "c5");
        g_assert_null(strstr(r.out, "migration-interrupted"));
        destroy("a", "c5");
}

static void test_source_ferryd_killed_after_finish(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "c6", false);
        g_autofree char *job = migrate("a", "c6", TO_B, "1048576");
        g_assert_true(wait_phase("a", job, "perform", 30000));
        lab_sh("b", NULL, "systemctl kill -s STOP ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "migrate-setspeed", "c6", "2000");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(wait_phase("a", job, "finish", 120000));
        lab_result_clear(&r);
        lab_sh("a", NULL, "grep -l '^FinishSent=true' /run/ferry/domains/*/state", &r);
        g_assert_cmpint(r.status, ==, 0);

        /* Finish is on its way: whether b runs the guest is unknown to the next ferryd on a,
         * which therefore leaves it paused and says why. */
        lab_result_clear(&r);
        lab_sh("a", NULL, "systemctl kill -s KILL ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("a", "! systemctl -q is-active ferryd.service", 10000));
        lab_result_clear(&r);
        lab_sh("b", NULL, "systemctl kill -s CONT ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("a", "ferryctl domjobinfo c6 | grep -q '^Job type: *Failed'", 30000));
        lab_result_clear(&r);
        CTL("a", &r, "domjobinfo", "c6");
        g_test_message("%s", r.out);
        g_assert_nonnull(strstr(r.out, "Phase:            finish\n"));
        g_assert_nonnull(strstr(r.out, "ferryd was restarted after Finish was sent"));
        lab_result_clear(&r);
        CTL("a", &r, "dominfo", "c6");
        g_assert_nonnull(strstr(r.out, "State:          paused\n"));
        g_assert_nonnull(strstr(r.out, "State reason:   migration-interrupted\n"));

        lab_result_clear(&r);
        CTL("a", &r, "destroy", "c6");
        lab_result_clear(&r);
        CTL("b", &r, "destroy", "c6");
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/cancel/begin", test_cancel_in_begin);
        g_test_add_func("/lab/cancel/prepare", test_cancel_in_prepare);
        g_test_add_func("/lab/cancel/perform", test_cancel_in_perform);
        g_test_add_func("/lab/cancel/refused-in-finish", test_cancel_refused_in_finish);
        g_test_add_func("/lab/cancel/source-ferryd-killed", test_source_ferryd_killed);
        g_test_add_func("/lab/cancel/source-ferryd-killed-after-finish", test_source_ferryd_killed_after_finish);

        return lab_run("cancel", hosts);
}
