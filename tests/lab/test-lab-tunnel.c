/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tunnelled migrations (docs/transport.md): the dirtying test guest moves between the lab
 * hosts through a pair of ferry-transport helper units, with TLS (x509 under /etc/ferry/pki),
 * in plaintext where both hosts allow it, with multifd channels; a helper killed in the middle
 * or a certificate from the wrong CA fails the migration cleanly. After each, no
 * ferry-transport unit is left on either host. The streams arrive on the shared peer port 16514
 * (ferry-peer.socket, started by ferryd on demand; ferry-peer hands them to the helper). */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define TO_A LAB_TO_A
#define TO_B LAB_TO_B
#define CTL LAB_CTL

static void set_plaintext_allowed(const char *host, bool on) {
        g_auto(LabResult) r = {};
        lab_sh(host, NULL, on ? "printf '[Migration]\\nTunnelPlaintext=yes\\n' > /etc/ferry/ferryd.conf && ferryctl reload"
                              : "printf '[Migration]\\nTunnelPlaintext=no\\n' > /etc/ferry/ferryd.conf && ferryctl reload", &r);
        g_assert_cmpint(r.status, ==, 0);
}

/* No helper unit on either host, in any state (CollectMode=inactive-or-failed), and no token
 * file or socket left in /run/ferry/transport. */
static void assert_no_transport_units(void) {
        static const char *const check =
                "! systemctl list-units --all --no-legend 'ferry-transport-*' | grep -q ferry-transport && "
                "test -z \"$(ls -A /run/ferry/transport 2>/dev/null)\"";
        g_assert_true(lab_wait_for("a", check, 30000));
        g_assert_true(lab_wait_for("b", check, 30000));
}

static void assert_moved(const char *from, const char *to, const char *name) {
        g_autofree char *on_to = lab_domain_state(to, name), *on_from = lab_domain_state(from, name);
        g_assert_cmpstr(on_to, ==, "running");
        g_assert_cmpstr(on_from, ==, "absent");
}

static void assert_stayed(const char *host, const char *other, const char *name) {
        g_autofree char *s = lab_domain_state(host, name);
        g_autofree char *gone = g_strdup_printf("! ferryctl dominfo %s", name);
        g_assert_cmpstr(s, ==, "running");
        g_assert_true(lab_wait_for(other, gone, 30000));
}

/* The CA and a certificate per host for both roles under /etc/ferry/pki, as the helpers read
 * it; /etc/ferry/pki-wrong: certificates of another CA. */
static void test_setup(void) {
        lab_pki_create();
        lab_guest_create("a", "tun1", false);
}

static void test_refusals(void) {
        g_auto(LabResult) r = {};

        /* Plaintext is the administrator's to allow: a does not. */
        CTL("a", &r, "migrate", "--p2p", "--tunnelled", "--tunnel-plaintext", "tun1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        g_assert_nonnull(strstr(r.err, "TunnelPlaintext=no"));
        lab_result_clear(&r);

        /* The tunnel encrypts; QEMU's TLS on top is refused, as are the flows it does not fit. */
        CTL("a", &r, "migrate", "--p2p", "--tunnelled", "--tls", "tun1", TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        g_assert_nonnull(strstr(r.err, "exclude each other"));
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "--tunnelled", "--offline", "tun1", TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        lab_result_clear(&r);

        /* a allows plaintext, b does not: b refuses at Prepare, the guest stays on a. */
        set_plaintext_allowed("a", true);
        CTL("a", &r, "migrate", "--p2p", "--tunnelled", "--tunnel-plaintext", "tun1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "does not allow plaintext"));
        assert_stayed("a", "b", "tun1");
        assert_no_transport_units();
        lab_result_clear(&r);

        /* b's administrator forbids tunnels by masking the peer port: Prepare says so. */
        lab_sh("b", NULL, "systemctl stop ferry-peer.socket ferry-peer.service && "
                          "systemctl mask --runtime ferry-peer.socket", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "--tunnelled", "tun1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "cannot start ferry-peer.socket"));
        g_assert_nonnull(strstr(r.err, "masked"));
        assert_stayed("a", "b", "tun1");
        assert_no_transport_units();
        lab_result_clear(&r);
        lab_sh("b", NULL, "systemctl unmask --runtime ferry-peer.socket", &r);
        g_assert_cmpint(r.status, ==, 0);
}

static void test_plaintext_when_allowed(void) {
        g_auto(LabResult) r = {};

        set_plaintext_allowed("b", true);
        CTL("a", &r, "migrate", "--p2p", "--live", "--verbose", "--tunnelled", "--tunnel-plaintext", "tun1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_moved("a", "b", "tun1");
        lab_guest_assert_intact("b", "tun1", 3, true);
        assert_no_transport_units();
        lab_result_clear(&r);
        /* Both records say how the stream went. */
        static const char *const transports =
                "for p in $(busctl tree --list org.ferry.Ferry1 | grep '/migration/'); do "
                "busctl get-property org.ferry.Ferry1 $p org.ferry.Ferry1.Migration Transport State; done";
        lab_sh("a", NULL, transports, &r);
        g_test_message("a: %s", r.out);
        g_assert_nonnull(strstr(r.out, "s \"tunnelled\"\ns \"completed\""));
        lab_result_clear(&r);
        lab_sh("b", NULL, transports, &r);
        g_test_message("b: %s", r.out);
        g_assert_nonnull(strstr(r.out, "s \"tunnelled\"\ns \"completed\""));
        set_plaintext_allowed("a", false);
        set_plaintext_allowed("b", false);
}

static void test_tls_multifd(void) {
        g_auto(LabResult) r = {};

        /* b -> a over TLS with 3 multifd channels: 4 streams through the tunnel. */
        CTL("b", &r, "migrate", "--p2p", "--live", "--verbose", "--tunnelled", "--parallel", "--parallel-connections",
            "3", "tun1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_moved("b", "a", "tun1");
        lab_guest_assert_intact("a", "tun1", 3, true);
        assert_no_transport_units();
}

static void test_tls(void) {
        g_auto(LabResult) r = {};

        CTL("a", &r, "migrate", "--p2p", "--live", "--verbose", "--tunnelled", "tun1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.err, "Migration: [100 %]"));
        assert_moved("a", "b", "tun1");
        lab_guest_assert_intact("b", "tun1", 3, true);
        lab_guest_assert_dump_checks("b", "tun1", "tunnel-tls.elf");
        assert_no_transport_units();
}

/* Migrate tun1 b -> a through the tunnel at 1 MiB/s, so that it is still going a while later;
 * returns b's Migration object. */
static char *start_slow_tunnel(void) {
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "tun1", NULL };
        g_autofree char *domain = lab_busctl_path("b", lookup);
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_A, "2", "max_bandwidth", "t", "1048576", "tunnelled", "b", "true", "0",
                                  NULL };
        return lab_busctl_path("b", migrate);
}

/* A helper killed mid-stream on host kill_on (b: the source's, a: the destination's): the
 * migration fails with the helper's unit named, the guest goes on on b, nothing is left on a. */
static void run_helper_killed(const char *kill_on) {
        g_auto(LabResult) r = {};
        /* The stream is still going when the helper dies. */
        g_autofree char *job = start_slow_tunnel();
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform && "
                "systemctl -q is-active 'ferry-transport-*.service'", job);
        g_autofree char *failed = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q failed", job);

        g_assert_true(lab_wait_for("b", in_perform, 60000));
        /* Let bytes flow, then kill one helper. */
        g_assert_true(lab_wait_for(kill_on, "systemctl -q is-active 'ferry-transport-*.service' && sleep 2", 10000));
        lab_sh(kill_on, NULL, "systemctl kill -s KILL 'ferry-transport-*.service'", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", failed, 60000));
        lab_result_clear(&r);
        g_autofree char *msg = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration ErrorMessage", job);
        lab_sh("b", NULL, msg, &r);
        g_test_message("error: %s", r.out);
        g_assert_nonnull(strstr(r.out, "ferry-transport-"));
        /* The killed one's own unit is named; when the destination's dies, the source's helper
         * usually notices first and says the peer went away. */
        if (g_str_equal(kill_on, "b"))
                g_assert_nonnull(strstr(r.out, "ended unexpectedly (signal"));
        assert_stayed("b", "a", "tun1");
        lab_guest_assert_intact("b", "tun1", 3, true);
        assert_no_transport_units();
}

static void test_source_helper_killed(void) {
        run_helper_killed("b");
}

static void test_destination_helper_killed(void) {
        run_helper_killed("a");
}

static void test_cancel(void) {
        g_auto(LabResult) r = {};
        g_autofree char *job = start_slow_tunnel();
        g_autofree char *relaying = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform && "
                "systemctl show -P StatusText 'ferry-transport-*.service' | grep -q '^relaying'", job);
        g_autofree char *cancelled = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q cancelled", job);

        /* Cancel while both helpers carry the stream: they go with the migration. */
        g_assert_true(lab_wait_for("b", relaying, 60000));
        g_assert_true(lab_wait_for("a", "systemctl -q is-active 'ferry-transport-*.service'", 10000));
        /* The streams came through the shared peer port: ferry-peer (and systemd) hold 16514, no
         * helper listens on TCP itself, on no port of [Migration] Ports= or any other. */
        g_assert_true(lab_wait_for("a", "ss -Htlnp 'sport = :16514' | grep -q '\"ferry-peer\"'", 10000));
        lab_sh("a", NULL, "ss -Htlnp", &r);
        g_test_message("a listens on:\n%s", r.out);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_null(strstr(r.out, "ferry-transport"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "systemctl show -P ExecMainPID ferry-peer.service | grep -vx 0 && "
                          "systemctl show -P StatusText ferry-peer.service", &r);
        g_test_message("ferry-peer: %s", r.out);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        /* Both helpers run as dynamic users, never root: the source's owns the socket QEMU
         * writes to; the destination's reaches QEMU's incoming socket and gets its streams from
         * ferry-peer through the group ferry-transport. */
        for (const char *h = "b"; h; h = g_str_equal(h, "b") ? "a" : NULL) {
                lab_sh(h, NULL, "pid=$(systemctl show -P MainPID 'ferry-transport-*.service') && "
                                "echo $(stat -c %u /proc/$pid) "
                                "$(stat -c %u /run/ferry-transport-*/qemu.sock /run/ferry-transport-*/dispatch.sock) "
                                "$(systemctl show -P DynamicUser 'ferry-transport-*.service')", &r);
                g_test_message("%s: helper uid, its socket's owner, DynamicUser: %s", h, r.out);
                g_assert_cmpint(r.status, ==, 0);
                unsigned uid = 0, owner = 0;
                char dynamic[8] = "";
                g_assert_cmpint(sscanf(r.out, "%u %u %7s", &uid, &owner, dynamic), ==, 3);
                g_assert_cmpuint(uid, !=, 0);
                g_assert_cmpuint(owner, ==, uid);
                g_assert_cmpstr(dynamic, ==, "yes");
                lab_result_clear(&r);
                /* Only the source's makes IP sockets; the destination's cannot. */
                lab_sh(h, NULL, "systemctl show -P RestrictAddressFamilies 'ferry-transport-*.service'", &r);
                g_test_message("%s: RestrictAddressFamilies=%s", h, r.out);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_nonnull(strstr(r.out, "AF_UNIX"));
                if (g_str_equal(h, "b"))
                        g_assert_nonnull(strstr(r.out, "AF_INET"));
                else
                        g_assert_null(strstr(r.out, "AF_INET"));
                lab_result_clear(&r);
        }
        const char *cancel[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Cancel", NULL };
        lab_exec("b", NULL, cancel, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", cancelled, 30000));
        assert_stayed("b", "a", "tun1");
        lab_guest_assert_intact("b", "tun1", 3, true);
        assert_no_transport_units();
}

static void test_wrong_ca(void) {
        g_auto(LabResult) r = {};

        /* a (the destination now) has a certificate of another CA: b's helper refuses it. */
        lab_sh("a", NULL, "cd /etc/ferry/pki && mkdir good && cp *.pem good/ && cp ../pki-wrong/server-*.pem .", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("b", &r, "migrate", "--p2p", "--tunnelled", "tun1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        /* The helper's own words reach the user. */
        g_assert_nonnull(strstr(r.err, "ferry-transport"));
        g_assert_nonnull(strstr(r.err, "certificate"));
        assert_stayed("b", "a", "tun1");
        lab_guest_assert_intact("b", "tun1", 3, true);
        assert_no_transport_units();
        lab_result_clear(&r);
        lab_sh("a", NULL, "cd /etc/ferry/pki && mv good/*.pem . && rmdir good", &r);
        g_assert_cmpint(r.status, ==, 0);
}

static char *job_property(const char *host, const char *job, const char *property) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "get-property", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                               property, NULL };
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        return g_strdup(g_strstrip(r.out));
}

/* Post-copy through the tunnel: the destination's page requests go back through stream 0. */
static void test_postcopy(void) {
        g_auto(LabResult) r = {};
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "tun1", NULL };
        g_autofree char *domain = lab_busctl_path("b", lookup);
        /* 4 MiB/s: the pre-copy pass is far from done when we switch. */
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_A, "3", "max_bandwidth", "t", "4194304", "tunnelled", "b", "true",
                                  "postcopy", "b", "true", "0", NULL };
        g_autofree char *job = lab_busctl_path("b", migrate);
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform", job);
        g_autofree char *completed = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q completed", job);

        g_assert_true(lab_wait_for("b", in_perform, 60000));
        const char *start[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                                "StartPostCopy", NULL };
        lab_exec("b", NULL, start, &r);
        g_test_message("StartPostCopy: %s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", completed, 300000));
        g_autofree char *pc = job_property("b", job, "PostCopy");
        g_assert_cmpstr(pc, ==, "s \"completed\"");
        assert_moved("b", "a", "tun1");
        lab_guest_assert_intact("a", "tun1", 3, true);
        lab_guest_assert_dump_checks("a", "tun1", "tunnel-postcopy.elf");
        assert_no_transport_units();
}

static gboolean wait_job_property(const char *host, const char *job, const char *property, const char *value,
                                  guint timeout_ms) {
        g_autofree char *cmd = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration %s | grep -qx '%s'", job, property, value);
        return lab_wait_for(host, cmd, timeout_ms);
}

/* Post-copy through the tunnel, broken after the switch: the destination's helper is killed,
 * both QEMUs pause post-copy (neither host gives up its half), and Migration.Recover starts a
 * new pair of helpers (units ferry-transport-<id>-1) through which QEMU resumes; every page
 * arrives. The guest stays paused (option paused) so that it pulls no pages itself, and
 * post-copy sends at 2 MiB/s, so the post-copy phase lasts long enough to break it. */
static void test_postcopy_recover(void) {
        g_auto(LabResult) r = {};
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "tun1", NULL };
        g_autofree char *domain = lab_busctl_path("a", lookup);
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_B, "5", "tunnelled", "b", "true", "postcopy", "b", "true",
                                  "postcopy_bandwidth", "t", "2097152", "max_bandwidth", "t", "2097152",
                                  "paused", "b", "true", "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);

        g_assert_true(wait_job_property("a", job, "Phase", "s \"perform\"", 60000));
        const char *start[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                                "StartPostCopy", NULL };
        lab_exec("a", NULL, start, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_job_property("a", job, "PostCopy", "s \"active\"", 60000));
        lab_sh("b", NULL, LAB_NEWEST_MIGRATION, &r);
        g_autofree char *in = g_strdup(g_strstrip(r.out));
        lab_result_clear(&r);
        g_assert_true(wait_job_property("b", in, "PostCopy", "s \"active\"", 60000));

        lab_sh("b", NULL, "systemctl kill -s KILL 'ferry-transport-*.service'", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(wait_job_property("a", job, "PostCopy", "s \"paused\"", 120000));
        g_assert_true(wait_job_property("b", in, "PostCopy", "s \"paused\"", 120000));
        g_autofree char *st_a = job_property("a", job, "State"), *st_b = job_property("b", in, "State");
        g_assert_cmpstr(st_a, ==, "s \"running\"");
        g_assert_cmpstr(st_b, ==, "s \"running\"");

        const char *recover[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Recover",
                                  NULL };
        lab_exec("a", NULL, recover, &r);
        g_test_message("Recover: %s %s", r.out, r.err);
        g_assert_cmpint(r.status, ==, 0);
        /* QEMU resumed into the new source helper, a unit of a new name ("ferry-transport-<id>-1"). */
        g_assert_true(g_regex_match_simple("^s \"unix:/run/ferry-transport-[0-9]+-1/qemu.sock\"", r.out, 0, 0));
        lab_result_clear(&r);
        g_assert_true(wait_job_property("a", job, "State", "s \"completed\"", 300000));
        g_assert_true(wait_job_property("b", in, "State", "s \"completed\"", 60000));
        g_autofree char *on_a = lab_domain_state("a", "tun1"), *on_b = lab_domain_state("b", "tun1");
        g_assert_cmpstr(on_a, ==, "absent");
        g_assert_cmpstr(on_b, ==, "paused");
        /* Every page the host can check in a dump of b's copy, before it runs again. */
        g_autofree char *dump = lab_guest_dump("b", "tun1", "tunnel-recovered.elf");
        g_assert_cmpuint(lab_dump_assert_checks(dump), >, 0);
        (void) unlink(dump);
        CTL("b", &r, "resume", "tun1");
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("b", "tun1", 3, true);
        assert_no_transport_units();
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);
        if (!lab_available()) {
                g_test_skip("lab tests need root");
                return g_test_run();
        }

        g_test_add_func("/lab/tunnel/setup", test_setup);
        g_test_add_func("/lab/tunnel/refusals", test_refusals);
        g_test_add_func("/lab/tunnel/plaintext-when-allowed", test_plaintext_when_allowed);
        g_test_add_func("/lab/tunnel/tls-multifd", test_tls_multifd);
        g_test_add_func("/lab/tunnel/tls", test_tls);
        g_test_add_func("/lab/tunnel/source-helper-killed", test_source_helper_killed);
        g_test_add_func("/lab/tunnel/destination-helper-killed", test_destination_helper_killed);
        g_test_add_func("/lab/tunnel/cancel", test_cancel);
        g_test_add_func("/lab/tunnel/wrong-ca", test_wrong_ca);
        g_test_add_func("/lab/tunnel/postcopy", test_postcopy);
        g_test_add_func("/lab/tunnel/postcopy-recover", test_postcopy_recover);

        return lab_run("tunnel", hosts);
}
