/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Live migration between two lab hosts, peer to peer: the test guest keeps dirtying its RAM
 * and checking every page itself; after the move its counters go on and nothing is corrupt.
 * Every failure must leave the guest running on exactly one host. */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define TO_A LAB_TO_A
#define TO_B LAB_TO_B
#define CTL LAB_CTL

static void test_live_migration_keeps_ram(void) {
        g_auto(LabResult) r = {};
        g_autofree char *on_a = NULL, *on_b = NULL;

        lab_guest_create("a", "web1", false);
        CTL("a", &r, "migrate", "--p2p", "--live", "--verbose", "web1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.err, "Migration: [100 %]"));

        on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "running");
        /* Transient on the source: gone there, and its QEMU unit too. Never on two hosts. */
        on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "absent");
        lab_result_clear(&r);
        lab_sh("a", NULL, "systemctl is-active ferry-qemu-web1.service", &r);
        g_assert_cmpstr(g_strstrip(r.out), !=, "active");

        lab_guest_assert_intact("b", "web1", 3, true);
        /* And the host's view: every page of b's copy checks (ferry-guest-check on a dump). */
        lab_guest_assert_dump_checks("b", "web1", "p2p-live.elf");
}

static void test_migration_object_reports(void) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "get-property", "org.ferry.Ferry1", "/org/ferry/Ferry1/migration/1",
                               "org.ferry.Ferry1.Migration", "State", "Phase", "Direction", "DataTotal", "ErrorName", NULL };

        lab_exec("a", NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "s \"completed\"\ns \"confirm\"\ns \"outgoing\"\nt "));
        g_assert_nonnull(strstr(r.out, "s \"\"\n"));
        lab_assert_introspection_matches("a", "/org/ferry/Ferry1/migration/1", "org.ferry.Ferry1.Migration");
        lab_result_clear(&r);
        /* QEMU's final figures: read once QEMU has them (it says "completed" a little earlier). */
        const char *figures[] = { "busctl", "get-property", "org.ferry.Ferry1", "/org/ferry/Ferry1/migration/1",
                                  "org.ferry.Ferry1.Migration", "ElapsedUSec", "DowntimeUSec", NULL };
        lab_exec("a", NULL, figures, &r);
        g_test_message("%s", r.out);
        g_assert_false(g_str_has_prefix(r.out, "t 0\n"));
        g_assert_null(strstr(r.out, "\nt 0\n"));
        lab_result_clear(&r);
        /* The destination has its own record, incoming. */
        const char *in[] = { "busctl", "get-property", "org.ferry.Ferry1", "/org/ferry/Ferry1/migration/1",
                             "org.ferry.Ferry1.Migration", "Direction", "State", "ElapsedUSec", NULL };
        lab_exec("b", NULL, in, &r);
        g_assert_true(g_str_has_prefix(r.out, "s \"incoming\"\ns \"completed\"\nt "));
        /* Its QEMU reports no total-time: the time since Prepare, not 0. */
        g_assert_cmpuint(g_ascii_strtoull(strrchr(r.out, ' ') + 1, NULL, 10), >, 0);
}

static void test_and_back_persistent(void) {
        g_auto(LabResult) r = {};
        g_autofree char *on_a = NULL;

        lab_guest_create("b", "db1", true);
        CTL("b", &r, "migrate", "--p2p", "db1", TO_A);
        g_assert_cmpint(r.status, ==, 0);
        on_a = lab_domain_state("a", "db1");
        g_assert_cmpstr(on_a, ==, "running");
        /* Persistent on the source: still defined there, shut off because it migrated. */
        lab_result_clear(&r);
        CTL("b", &r, "dominfo", "db1");
        g_assert_nonnull(strstr(r.out, "State:          shut off"));
        g_assert_nonnull(strstr(r.out, "State reason:   migrated"));
        lab_guest_assert_intact("a", "db1", 3, true);
}

static void test_refusals_leave_guest_running(void) {
        g_auto(LabResult) r = {};

        /* The same host. */
        CTL("b", &r, "migrate", "--p2p", "web1", "ferry+unix:///system?socket=/run/ferry-lab-peers/b/system_bus_socket");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "same host"));
        g_autofree char *s1 = lab_domain_state("b", "web1");
        g_assert_cmpstr(s1, ==, "running");
        lab_result_clear(&r);

        /* A name taken by a running domain there. */
        lab_guest_create("a", "web1", false);
        CTL("b", &r, "migrate", "--p2p", "web1", TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "DomainExists"));
        g_autofree char *s2 = lab_domain_state("b", "web1");
        g_assert_cmpstr(s2, ==, "running");
        g_autofree char *s3 = lab_domain_state("a", "web1");
        g_assert_cmpstr(s3, ==, "running");
        lab_result_clear(&r);

        /* Nobody there. */
        CTL("b", &r, "migrate", "--p2p", "web1", "ferry+unix:///system?socket=/run/nonexistent/socket");
        g_assert_cmpint(r.status, ==, 1);
        g_autofree char *s4 = lab_domain_state("b", "web1");
        g_assert_cmpstr(s4, ==, "running");
        lab_result_clear(&r);

        /* QEMU's exec: and other tricks never get through. */
        CTL("b", &r, "migrate", "--p2p", "--migrateuri", "exec:/bin/sh -c true", "web1", TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        lab_result_clear(&r);
        const char *unknown[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                  "PrepareMigration", "sa{sv}", "<domain/>", "1", "bogus", "b", "true", NULL };
        lab_exec("a", NULL, unknown, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "Unknown option"));

        lab_guest_assert_intact("b", "web1", 3, true);
}

static void test_cancel_keeps_source(void) {
        g_auto(LabResult) r = {};

        /* a's own web1 (from the previous test) must go, or Prepare is refused there. */
        CTL("a", &r, "destroy", "web1");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "web1", NULL };
        g_autofree char *domain = lab_busctl_path("b", lookup);
        /* 1 MiB/s: slow enough to cancel in the middle. */
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_A, "1", "max_bandwidth", "t", "1048576", "0", NULL };
        g_autofree char *job = lab_busctl_path("b", migrate);
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform", job);
        g_autofree char *cancelled = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q cancelled", job);

        g_assert_true(lab_wait_for("b", in_perform, 30000));
        const char *cancel[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Cancel", NULL };
        lab_exec("b", NULL, cancel, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", cancelled, 30000));

        g_autofree char *s = lab_domain_state("b", "web1");
        g_assert_cmpstr(s, ==, "running");
        /* The destination threw its half away. */
        g_assert_true(lab_wait_for("a", "! ferryctl dominfo web1", 30000));
        lab_guest_assert_intact("b", "web1", 3, true);
}

static void test_over_ssh(void) {
        g_auto(LabResult) r = {};

        /* The source ferryd reaches the destination as root over ssh (systemd-stdio-bridge). */
        CTL("b", &r, "migrate", "--p2p", "--verbose", "web1", "ferry+ssh://a/system");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_a = lab_domain_state("a", "web1");
        g_assert_cmpstr(on_a, ==, "running");
        g_autofree char *on_b = lab_domain_state("b", "web1");
        g_assert_cmpstr(on_b, ==, "absent");
        lab_guest_assert_intact("a", "web1", 3, true);
}

/* Unmanaged direct: no ferryd at the destination, only a QEMU listening there that an
 * administrator started (here: with the source's own command line, as a transient unit). */
static void test_unmanaged_direct(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "raw1", false);
        lab_sh("a", NULL, "systemctl show -P ExecStart ferry-qemu-raw1.service | "
                          "sed -n 's/.*argv\\[\\]=\\(.*\\) ; ignore_errors.*/\\1/p'", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *cmdline = g_strdup(g_strstrip(r.out));
        g_assert_true(g_str_has_prefix(cmdline, "/usr/bin/qemu-system-x86_64 "));
        /* systemctl prints argv unquoted: take the one argument with spaces out, add it back. */
        g_auto(GStrv) halves = g_strsplit(cmdline, "-append " LAB_GUEST_CMDLINE, 2);
        g_assert_cmpuint(g_strv_length(halves), ==, 2);
        g_free(cmdline);
        cmdline = g_strjoinv("", halves);
        /* Without ferryd's monitor on stdin (ferryd's end of it is not there). */
        g_auto(GStrv) stdin_mon = g_strsplit(cmdline, " -chardev socket,id=ferry-qmp-stdin,fd=0 "
                                             "-mon chardev=ferry-qmp-stdin,mode=control", 2);
        g_assert_cmpuint(g_strv_length(stdin_mon), ==, 2);
        g_free(cmdline);
        cmdline = g_strjoinv("", stdin_mon);
        g_autofree char *script = g_strdup_printf(
                "set -e; args=''; prev=''\n"
                "for w in %s; do\n"
                "  if [ \"$prev\" = -qmp ]; then w=unix:/run/ferry-test/raw1-qmp.sock,server=on,wait=off; fi\n"
                "  [ \"$w\" = -S ] || args=\"$args $w\"; prev=$w\n"
                "done\n"
                "systemd-run --quiet --unit=raw-qemu-raw1 -p Type=exec -- $args -append '" LAB_GUEST_CMDLINE "' "
                "-incoming tcp:0.0.0.0:4444\n",
                cmdline);
        lab_result_clear(&r);
        lab_sh("b", NULL, script, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", "ss -ltn | grep -q ':4444 '", 20000));
        lab_result_clear(&r);

        CTL("a", &r, "migrate", "--direct", "raw1", "tcp://10.77.0.2:4444");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_a = lab_domain_state("a", "raw1");
        g_assert_cmpstr(on_a, ==, "absent");
        /* The guest goes on in the QEMU on b, with all its pages right. */
        lab_guest_assert_intact("b", "raw1", 3, true);
        lab_result_clear(&r);
        lab_sh("b", NULL, "systemctl stop raw-qemu-raw1.service", &r);
}

static void lab_force_tls(const char *host, bool on) {
        g_auto(LabResult) r = {};
        lab_sh(host, NULL, on ? "printf '[Migration]\\nForceTLS=yes\\n' > /etc/ferry/ferryd.conf && ferryctl reload"
                              : "printf '[Migration]\\nForceTLS=no\\n' > /etc/ferry/ferryd.conf && ferryctl reload", &r);
        g_assert_cmpint(r.status, ==, 0);
}

static void test_native_tls(void) {
        g_auto(LabResult) r = {};

        /* QEMU's own TLS (tls-creds-x509): /etc/ferry/pki/qemu in libvirt's layout. */
        lab_pki_create();

        lab_guest_create("a", "tls1", false);

        /* b takes only TLS: a plain migration is refused there, the guest stays on a. */
        lab_force_tls("b", true);
        CTL("a", &r, "migrate", "--p2p", "tls1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "requires TLS"));
        g_autofree char *s1 = lab_domain_state("a", "tls1");
        g_assert_cmpstr(s1, ==, "running");
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo tls1", 10000));
        lab_result_clear(&r);

        /* a too: refused before anything starts (InvalidArgs). */
        lab_force_tls("a", true);
        CTL("a", &r, "migrate", "--p2p", "tls1", TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        g_assert_nonnull(strstr(r.err, "requires TLS"));
        lab_result_clear(&r);

        /* A missing file is named. */
        lab_sh("a", NULL, "mv /etc/ferry/pki/qemu/client-key.pem /etc/ferry/pki/qemu/client-key.pem.off", &r);
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "--tls", "tls1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "/etc/ferry/pki/qemu/client-key.pem"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "mv /etc/ferry/pki/qemu/client-key.pem.off /etc/ferry/pki/qemu/client-key.pem", &r);
        lab_result_clear(&r);

        /* b has a PKI of another CA: QEMU there loads it, the handshake fails, the guest goes
         * on on a. */
        lab_sh("b", NULL, "cd /etc/ferry/pki/qemu && mkdir good && cp *.pem good/ && cp ../../pki-other/*.pem .", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "--tls", "tls1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        /* Past Prepare: the stream itself failed. */
        g_assert_nonnull(strstr(r.err, "in phase perform"));
        g_autofree char *s2 = lab_domain_state("a", "tls1");
        g_assert_cmpstr(s2, ==, "running");
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo tls1", 10000));
        lab_guest_assert_intact("a", "tls1", 3, false);
        lab_result_clear(&r);
        lab_sh("b", NULL, "cd /etc/ferry/pki/qemu && mv good/*.pem . && rmdir good", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* With TLS, both hosts forcing it: the guest moves, every page intact. */
        CTL("a", &r, "migrate", "--p2p", "--tls", "--verbose", "tls1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_b = lab_domain_state("b", "tls1");
        g_assert_cmpstr(on_b, ==, "running");
        g_autofree char *on_a = lab_domain_state("a", "tls1");
        g_assert_cmpstr(on_a, ==, "absent");
        lab_guest_assert_intact("b", "tls1", 3, true);

        lab_force_tls("a", false);
        lab_force_tls("b", false);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/migration/live-migration-keeps-ram", test_live_migration_keeps_ram);
        g_test_add_func("/lab/migration/migration-object-reports", test_migration_object_reports);
        g_test_add_func("/lab/migration/and-back-persistent", test_and_back_persistent);
        g_test_add_func("/lab/migration/refusals-leave-guest-running", test_refusals_leave_guest_running);
        g_test_add_func("/lab/migration/cancel-keeps-source", test_cancel_keeps_source);
        g_test_add_func("/lab/migration/over-ssh", test_over_ssh);
        g_test_add_func("/lab/migration/unmanaged-direct", test_unmanaged_direct);
        g_test_add_func("/lab/migration/native-tls", test_native_tls);

        return lab_run("migration", hosts);
}
