/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The managed direct flow: the client (ferryctl, or the test client ferry-md-client) drives
 * Begin, Prepare, Perform, Finish and Confirm on both ferryds. The dirtying test guest must
 * come out intact, and a client killed after any step must leave the guest on exactly one
 * host (running, or paused on the source once Perform completed, as docs/migration.md says),
 * with nothing left on the other host and both jobs failed with a message saying why. */

#include <gio/gio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define CTL LAB_CTL
#define B_BUS "unix:path=/run/ferry-lab-peers/b/system_bus_socket"

static char *property(const char *host, const char *path, const char *name) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "get-property", "org.ferry.Ferry1", path, "org.ferry.Ferry1.Migration",
                               name, NULL };
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        return g_strdup(g_strstrip(r.out));
}

static void assert_no_unit(const char *host, const char *name) {
        g_auto(LabResult) r = {};
        g_autofree char *script = g_strdup_printf("systemctl is-active ferry-qemu-%s.service", name);
        lab_sh(host, NULL, script, &r);
        g_assert_cmpstr(g_strstrip(r.out), !=, "active");
}

/* The job at path on host has ended in state, with an error message containing words. */
static void assert_job_ended(const char *host, const char *path, const char *state, const char *words) {
        g_autofree char *ended = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -qv running", path);
        g_assert_true(lab_wait_for(host, ended, 120000));
        g_autofree char *s = property(host, path, "State");
        g_autofree char *expected = g_strdup_printf("s \"%s\"", state);
        g_assert_cmpstr(s, ==, expected);
        if (words) {
                g_autofree char *msg = property(host, path, "ErrorMessage");
                g_test_message("%s %s: %s", host, path, msg);
                /* "A|B": either reason will do. */
                g_auto(GStrv) alternatives = g_strsplit(words, "|", 0);
                bool found = false;
                for (char **w = alternatives; *w; w++)
                        found = found || strstr(msg, *w);
                g_assert_true(found);
        }
}

static void test_ferryctl_over_unix(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "web1", false);
        CTL("a", &r, "migrate", "--live", "--verbose", "web1", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.err, "Migration: [100 %]"));

        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        g_autofree char *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "absent");
        assert_no_unit("a", "web1");

        g_autofree char *flow = property("a", "/org/ferry/Ferry1/migration/1", "Flow");
        g_assert_cmpstr(flow, ==, "s \"managed-direct\"");
        g_autofree char *state = property("a", "/org/ferry/Ferry1/migration/1", "State");
        g_assert_cmpstr(state, ==, "s \"completed\"");
        g_autofree char *in = property("b", "/org/ferry/Ferry1/migration/1", "State");
        g_assert_cmpstr(in, ==, "s \"completed\"");
        lab_assert_introspection_matches("a", "/org/ferry/Ferry1/migration/1", "org.ferry.Ferry1.Migration");
        lab_guest_assert_intact("b", "web1", 3, true);
        lab_guest_assert_dump_checks("b", "web1", "managed-live.elf");
}

static void test_ferryctl_over_ssh(void) {
        g_auto(LabResult) r = {};

        CTL("b", &r, "migrate", "--verbose", "web1", "ferry+ssh://a/system");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.err, "Migration: [100 %]"));
        g_autofree char *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "running");
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "absent");
        assert_no_unit("b", "web1");
        lab_guest_assert_intact("a", "web1", 3, true);
}

typedef struct Client {
        char *unit;
        char *source;       /* the job on a */
        char *destination;  /* the job on b, NULL before Prepare */
} Client;

/* Starts ferry-md-client on a (as a unit, so that it outlives our exec and can be killed),
 * waits until it stopped after step, and reads the paths of its jobs. */
static void client_start(Client *c, const char *step, const char *bandwidth) {
        g_autofree char *state = g_strdup_printf("/run/ferry-test/md-%s.state", step);
        g_autofree char *tool = g_build_filename(lab_build_dir(), "tests", "lab", "ferry-md-client", NULL);
        g_autofree char *script = NULL, *stopped = NULL;
        g_auto(LabResult) r = {};

        c->unit = g_strdup_printf("ferry-md-client-%s.service", step);
        script = g_strdup_printf("rm -f %s; systemd-run --quiet --unit=%s %s %s web1 %s %s %s", state, c->unit, tool,
                                 step, B_BUS, state, bandwidth ? bandwidth : "");
        lab_sh("a", NULL, script, &r);
        g_assert_cmpint(r.status, ==, 0);
        stopped = g_strdup_printf("grep -q '^stopped' %s", state);
        if (!lab_wait_for("a", stopped, 180000)) {
                lab_result_clear(&r);
                g_autofree char *journal = g_strdup_printf("journalctl -u %s", c->unit);
                lab_sh("a", NULL, journal, &r);
                g_assert_not_reached();
        }
        lab_result_clear(&r);
        const char *cat[] = { "cat", state, NULL };
        lab_exec("a", NULL, cat, &r);
        g_auto(GStrv) lines = g_strsplit(r.out, "\n", -1);
        for (char **l = lines; *l; l++) {
                if (g_str_has_prefix(*l, "source "))
                        c->source = g_strdup(*l + strlen("source "));
                else if (g_str_has_prefix(*l, "destination "))
                        c->destination = g_strdup(*l + strlen("destination "));
        }
        g_assert_nonnull(c->source);
}

static void client_kill(Client *c) {
        g_auto(LabResult) r = {};
        g_autofree char *script = g_strdup_printf("systemctl kill --signal=SIGKILL %s", c->unit);
        lab_sh("a", NULL, script, &r);
        g_assert_cmpint(r.status, ==, 0);
}

static void client_done(Client *c) {
        g_auto(LabResult) r = {};
        g_autofree char *script = g_strdup_printf("systemctl reset-failed %s || true", c->unit);
        lab_sh("a", NULL, script, &r);
        g_free(c->unit);
        g_free(c->source);
        g_free(c->destination);
}

/* Before Perform completed: the guest runs on at the source, nothing stays at the destination. */
static void check_killed_before_performed(Client *c, const char *source_words, const char *destination_words) {
        assert_job_ended("a", c->source, "failed", source_words);
        if (c->destination)
                assert_job_ended("b", c->destination, "failed", destination_words);
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "absent");
        assert_no_unit("b", "web1");
        g_assert_true(lab_wait_for("a", "ferryctl dominfo web1 | grep -q 'State: *running'", 60000));
        lab_guest_assert_intact("a", "web1", 3, true);
}

static void test_other_client_refused_then_killed_after_begin(void) {
        g_auto(LabResult) r = {};
        Client c = {};

        /* The same host: the client compares the two HostUUIDs. */
        CTL("a", &r, "migrate", "web1", LAB_TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "same host"));
        lab_result_clear(&r);

        client_start(&c, "begin", NULL);
        /* Someone else (gdbus is another bus name) may not drive the job. (gdbus rather than
         * busctl, which prints every AccessDenied as just "Access denied".) */
        static const char *const calls[][2] = {
                { "org.ferry.Ferry1.Migration.Perform", "tcp:b:49152" },
                { "org.ferry.Ferry1.Migration.Confirm", "false" },
                { "org.ferry.Ferry1.Migration.Cancel", NULL },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(calls); i++) {
                const char *argv[] = { "gdbus", "call", "--system", "--dest", "org.ferry.Ferry1", "--object-path",
                                       c.source, "--method", calls[i][0], calls[i][1], NULL };
                lab_exec("a", NULL, argv, &r);
                g_assert_cmpint(r.status, !=, 0);
                g_assert_nonnull(strstr(r.err, "org.freedesktop.DBus.Error.AccessDenied"));
                g_assert_nonnull(strstr(r.err, "driven by the client that began it"));
                lab_result_clear(&r);
        }
        g_autofree char *still = property("a", c.source, "State");
        g_assert_cmpstr(still, ==, "s \"running\"");

        client_kill(&c);
        check_killed_before_performed(&c, "went away before Perform completed", "went away before Finish");
        client_done(&c);
}

static void test_killed_after_prepare(void) {
        Client c = {};
        client_start(&c, "prepare", NULL);
        g_assert_nonnull(c.destination);
        client_kill(&c);
        check_killed_before_performed(&c, "went away before Perform completed", "went away before Finish");
        client_done(&c);
}

static void test_killed_during_perform(void) {
        Client c = {};
        /* 1 MiB/s: QEMU is still sending when the client dies. */
        client_start(&c, "perform", "1048576");
        g_autofree char *phase = property("a", c.source, "Phase");
        g_assert_cmpstr(phase, ==, "s \"perform\"");
        client_kill(&c);
        /* Both ferryds follow the client, each on its own: if b's notices first, it drops its
         * half and a's QEMU sees the stream fail before a's ferryd sees the client go; if a's
         * does, it cancels and b's incoming stream fails first. */
        check_killed_before_performed(&c, "went away before Perform completed|QEMU's migration failed",
                                      "went away before Finish|the incoming stream failed");
        client_done(&c);
}

static void test_killed_after_perform(void) {
        g_auto(LabResult) r = {};
        Client c = {};

        client_start(&c, "performed", NULL);
        client_kill(&c);
        /* The client may have called Finish: the source cannot know, and leaves the guest
         * paused; the destination never got Finish and throws its copy away. */
        assert_job_ended("a", c.source, "failed", "left paused");
        assert_job_ended("b", c.destination, "failed", "went away before Finish");
        g_autofree char *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "paused");
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "absent");
        assert_no_unit("b", "web1");
        /* The administrator checked: it is not on b. Resume it where it is. */
        CTL("a", &r, "resume", "web1");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *again = lab_domain_state("a", "web1");
        g_assert_cmpstr(again, ==, "running");
        lab_guest_assert_intact("a", "web1", 3, true);
        client_done(&c);
}

static void test_killed_after_finish(void) {
        g_auto(LabResult) r = {};
        Client c = {};

        client_start(&c, "finished", NULL);
        client_kill(&c);
        /* The guest runs on b; a keeps its paused copy (never both running). */
        assert_job_ended("b", c.destination, "completed", NULL);
        assert_job_ended("a", c.source, "failed", "left paused");
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        g_autofree char *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "paused");
        /* As docs/migration.md says: it runs on b, so the stale copy on a goes. */
        CTL("a", &r, "destroy", "web1");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *gone = lab_domain_state("a", "web1");
        g_assert_cmpstr(gone, ==, "absent");
        assert_no_unit("a", "web1");
        lab_guest_assert_intact("b", "web1", 3, true);
        client_done(&c);
}

/* ferryctl after a failed step: Prepare refused (the name runs there) -> Confirm(false), the
 * source's guest runs on and its job says why. */
static void test_ferryctl_prepare_refused(void) {
        g_auto(LabResult) r = {};

        /* web1 runs on b now (the previous case); another web1 on a. */
        lab_guest_create("a", "web1", false);
        CTL("a", &r, "migrate", "web1", LAB_TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "error: migration failed in phase prepare"));
        g_assert_nonnull(strstr(r.err, "DomainExists"));
        g_autofree char *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "running");
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        /* a's job: the client gave up with Confirm(false). */
        assert_job_ended("a", "/org/ferry/Ferry1/migration/8", "failed", "Confirm(false)");
        lab_guest_assert_intact("a", "web1", 3, false);
}

/* Offline: Begin (the inactive XML), Prepare (the destination defines it), Confirm; no
 * Perform or Finish. With --undefinesource the source's definition goes. */
static void test_ferryctl_offline(void) {
        g_autofree char *xml = lab_guest_xml("off1");
        g_autofree char *dir = lab_host_dir("a");
        g_autofree char *path = g_build_filename(dir, "etc-ferry", "off1.xml", NULL);
        g_auto(LabResult) r = {};

        g_assert_true(g_file_set_contents(path, xml, -1, NULL));
        CTL("a", &r, "define", "/etc/ferry/off1.xml");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--offline", "--persistent", "--undefinesource", "off1", LAB_TO_B);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_b = lab_domain_state("b", "off1");
        g_assert_cmpstr(on_b, ==, "shut off");
        g_autofree char *on_a = lab_domain_state("a", "off1");
        g_assert_cmpstr(on_a, ==, "absent");
}

int main(int argc, char **argv) {
        static const char *const hosts[] = { "a", "b", NULL };

        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/lab/managed/ferryctl-over-unix", test_ferryctl_over_unix);
        g_test_add_func("/lab/managed/ferryctl-over-ssh", test_ferryctl_over_ssh);
        g_test_add_func("/lab/managed/other-client-refused-then-killed-after-begin",
                        test_other_client_refused_then_killed_after_begin);
        g_test_add_func("/lab/managed/killed-after-prepare", test_killed_after_prepare);
        g_test_add_func("/lab/managed/killed-during-perform", test_killed_during_perform);
        g_test_add_func("/lab/managed/killed-after-perform", test_killed_after_perform);
        g_test_add_func("/lab/managed/killed-after-finish", test_killed_after_finish);
        g_test_add_func("/lab/managed/ferryctl-prepare-refused", test_ferryctl_prepare_refused);
        g_test_add_func("/lab/managed/ferryctl-offline", test_ferryctl_offline);
        return lab_run("managed", hosts);
}
