/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry+tls:// peer connections (docs/migration-uris.md, docs/transport.md "D-Bus peer
 * connections"): a p2p migration a -> b whose source ferryd reaches b's bus through
 * ferry-transport --bus-connect / --bus-serve over TLS; on b that connection is the user
 * ferry-peer, which polkit lets migrate guests in and nothing else, and the bus policy lets
 * talk to ferryd only; a client with a certificate from another CA gets nowhere.
 * The connections arrive on the shared peer port 16514: ferry-peer.socket, which an
 * administrator enables on a host that accepts TLS peers (here: started by the test), hands
 * each to ferry-transport --bus-serve. */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define CTL LAB_CTL
#define TO_B_TLS "ferry+tls://b/system"
/* What ferryd builds for TO_B_TLS (src/daemon/migration-uri.c), for busctl. */
#define BUS_B_TLS(pki) "unixexec:path=/usr/libexec/ferry-transport,argv1=--bus-connect%3db%3a16514," \
        "argv2=--peer-name%3db,argv3=--pki-dir%3d" pki

/* The CA and a certificate per host for both roles under /etc/ferry/pki; /etc/ferry/pki-wrong:
 * the right CA, but certificates of another CA. */
static void test_setup(void) {
        g_auto(LabResult) r = {};

        lab_pki_create();
        /* The lab's systemd-sysusers.service made the user from the staged sysusers.d. */
        lab_sh("b", NULL, "getent passwd ferry-peer", &r);
        g_test_message("%s", r.out);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        for (const char *h = "a"; h; h = g_str_equal(h, "a") ? "b" : NULL) {
                lab_sh(h, NULL, "systemctl start ferry-peer.socket", &r);
                g_test_message("%s", r.err);
                g_assert_cmpint(r.status, ==, 0);
                lab_result_clear(&r);
        }

        lab_guest_create("a", "tls1", false);
}

static unsigned count_journal(const char *host, const char *pattern) {
        g_auto(LabResult) r = {};
        g_autofree char *cmd = g_strdup_printf("journalctl -b --no-pager -o cat | grep -c '%s' || true", pattern);
        lab_sh(host, NULL, cmd, &r);
        return (unsigned) g_ascii_strtoull(r.out, NULL, 10);
}

static void test_migrate(void) {
        g_auto(LabResult) r = {};

        CTL("a", &r, "migrate", "--p2p", "--live", "--verbose", "tls1", TO_B_TLS);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.err, "Migration: [100 %]"));
        g_autofree char *on_b = lab_domain_state("b", "tls1"), *on_a = lab_domain_state("a", "tls1");
        g_assert_cmpstr(on_b, ==, "running");
        g_assert_cmpstr(on_a, ==, "absent");
        lab_guest_assert_intact("b", "tls1", 3, true);
        lab_guest_assert_dump_checks("b", "tls1", "tlspeer.elf");

        /* b saw a's certificate and bridged it as ferry-peer. */
        g_assert_cmpuint(count_journal("b", "accepted with certificate \"CN=a\"; bridging it to the system bus as ferry-peer"),
                         >=, 1);
}

static void assert_denied(const char *what, const char *const *argv, const char *error_part) {
        g_auto(LabResult) r = {};

        lab_exec("a", NULL, argv, &r);
        g_test_message("%s: status %d: %s%s", what, r.status, r.out, r.err);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, error_part));
}

/* What the connection may do on b: read, and nothing but migrating in. */
static void test_identity(void) {
        g_auto(LabResult) r = {};
        const char *host_uuid[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "get-property",
                                    "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "HostUUID", NULL };
        lab_exec("a", NULL, host_uuid, &r);
        g_test_message("HostUUID: %s%s", r.out, r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "s \""));
        lab_result_clear(&r);

        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "tls1", NULL };
        g_autofree char *domain = lab_busctl_path("b", lookup);

        const char *reload[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "call", "org.ferry.Ferry1",
                                 "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "Reload", NULL };
        assert_denied("Reload", reload, "ccess denied");
        g_autofree char *xml = lab_guest_xml("tls2");
        const char *create[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "call", "org.ferry.Ferry1",
                                 "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "CreateDomain", "st", xml, "0", NULL };
        assert_denied("CreateDomain", create, "ccess denied");
        const char *destroy[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "call", "org.ferry.Ferry1",
                                  domain, "org.ferry.Ferry1.Domain", "Destroy", NULL };
        assert_denied("Destroy", destroy, "ccess denied");
        /* Not ferryd: the bus itself refuses (GetUnit needs no polkit; root on b may call it). */
        const char *get_unit[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "call",
                                   "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                   "org.freedesktop.systemd1.Manager", "GetUnit", "s", "lab.target", NULL };
        assert_denied("GetUnit", get_unit, "ccess denied");
        const char *start_unit[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "call",
                                     "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                     "org.freedesktop.systemd1.Manager", "StartUnit", "ss", "exit.target", "fail", NULL };
        assert_denied("StartUnit", start_unit, "ccess denied");
        lab_sh("b", NULL, "busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 "
               "org.freedesktop.systemd1.Manager GetUnit s lab.target", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* Nothing happened on b. */
        g_autofree char *state = lab_domain_state("b", "tls1"), *other = lab_domain_state("b", "tls2");
        g_assert_cmpstr(state, ==, "running");
        g_assert_cmpstr(other, ==, "absent");
        /* Every connection above ended cleanly on b's side too: ferry-peer logs a --bus-serve
         * that exits non-zero. */
        lab_sh("b", NULL, "journalctl -b --no-pager -o cat -u ferry-peer.service | tail -n 40", &r);
        g_test_message("%s", r.out);
        g_assert_null(strstr(r.out, "ended with exit status"));
        g_assert_null(strstr(r.out, "killed by signal"));
        lab_result_clear(&r);
        lab_sh("b", NULL, "systemctl --failed --no-legend --plain", &r);
        g_test_message("failed units: %s", r.out);
        g_assert_null(strstr(r.out, "ferry-peer"));
        g_assert_cmpuint(count_journal("b", "accepted with certificate \"CN=a\""), >=, 7);
}

static void test_wrong_ca(void) {
        unsigned accepted = count_journal("b", "accepted with certificate");
        const char *call[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki-wrong"), "get-property",
                               "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "HostUUID", NULL };
        g_auto(LabResult) r = {};

        lab_exec("a", NULL, call, &r);
        g_test_message("status %d: %s%s", r.status, r.out, r.err);
        g_assert_cmpint(r.status, !=, 0);
        /* The helper's own words, on busctl's stderr. */
        g_assert_nonnull(strstr(r.err, "the peer refused this side (TLS alert: Certificate is bad)"));
        g_assert_true(lab_wait_for("b", "journalctl -b --no-pager -o cat | "
                                   "grep -q 'refused: the client certificate failed verification: .*issuer is unknown'",
                                   30000));
        /* No bridge ran for it. */
        g_assert_cmpuint(count_journal("b", "accepted with certificate"), ==, accepted);
}

/* b's administrator lists the peers it accepts (/etc/ferry/pki/allowed-dn): a's certificate,
 * signed by the right CA but not listed, gets nowhere; listed, it gets through again. */
static void test_dn_not_listed(void) {
        const char *call[] = { "busctl", "--address=" BUS_B_TLS("/etc/ferry/pki"), "get-property",
                               "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager", "HostUUID", NULL };
        g_auto(LabResult) r = {};

        lab_sh("b", NULL, "printf '# peers that may migrate guests here\\nCN=c\\n' > /etc/ferry/pki/allowed-dn", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        lab_exec("a", NULL, call, &r);
        g_test_message("status %d: %s%s", r.status, r.out, r.err);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "(TLS alert: Access was denied)"));
        g_assert_true(lab_wait_for("b", "journalctl -b --no-pager -o cat | "
                                   "grep -q 'the client certificate.s DN \"CN=a\" is not in the allowed list'", 30000));
        lab_result_clear(&r);

        lab_sh("b", NULL, "echo 'CN=a' >> /etc/ferry/pki/allowed-dn", &r);
        lab_result_clear(&r);
        lab_exec("a", NULL, call, &r);
        g_test_message("status %d: %s%s", r.status, r.out, r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "s \""));
        lab_result_clear(&r);
        lab_sh("b", NULL, "rm /etc/ferry/pki/allowed-dn", &r);
}

/* Managed direct: ferryctl on b (root, /etc/ferry/pki) drives both ferryds, a's over TLS as
 * ferry-peer there: Prepare and Finish are all it calls on a. */
static void test_managed_direct(void) {
        g_auto(LabResult) r = {};

        CTL("b", &r, "migrate", "--live", "--verbose", "tls1", "ferry+tls://a/system");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_a = lab_domain_state("a", "tls1"), *on_b = lab_domain_state("b", "tls1");
        g_assert_cmpstr(on_a, ==, "running");
        g_assert_cmpstr(on_b, ==, "absent");
        lab_guest_assert_intact("a", "tls1", 3, true);
        g_assert_cmpuint(count_journal("a", "accepted with certificate \"CN=b\"; bridging it to the system bus as ferry-peer"),
                         >=, 1);
}

/* The tunnelled transport under a TLS peer connection: two TLS layers, each with its own job. */
static void test_tunnelled(void) {
        g_auto(LabResult) r = {};

        CTL("a", &r, "migrate", "--p2p", "--live", "--verbose", "--tunnelled", "tls1", TO_B_TLS);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_b = lab_domain_state("b", "tls1"), *on_a = lab_domain_state("a", "tls1");
        g_assert_cmpstr(on_b, ==, "running");
        g_assert_cmpstr(on_a, ==, "absent");
        lab_guest_assert_intact("b", "tls1", 3, true);
}

/* The source ferryd's own connection refused: a's client certificate is from another CA. The
 * migration fails, the guest stays on a, nothing is left on b. */
static void test_migrate_refused(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "tls3", false);
        lab_sh("a", NULL, "cd /etc/ferry/pki && mkdir good && cp client-*.pem good/ && "
               "cp ../pki-wrong/client-*.pem .", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        unsigned accepted = count_journal("b", "accepted with certificate");

        CTL("a", &r, "migrate", "--p2p", "--live", "tls3", TO_B_TLS);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "cannot reach ferryd at " TO_B_TLS));
        g_autofree char *on_a = lab_domain_state("a", "tls3"), *on_b = lab_domain_state("b", "tls3");
        g_assert_cmpstr(on_a, ==, "running");
        g_assert_cmpstr(on_b, ==, "absent");
        g_assert_cmpuint(count_journal("b", "accepted with certificate"), ==, accepted);
        /* The helper's words are in a's journal (ferryd's stderr). */
        g_assert_true(lab_wait_for("a", "journalctl -b --no-pager -o cat | "
                                   "grep -q 'the peer refused this side (TLS alert: Certificate is bad)'", 30000));
        lab_result_clear(&r);
        lab_sh("a", NULL, "cd /etc/ferry/pki && mv good/*.pem . && rmdir good", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("a", "tls3", 3, false);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);
        if (!lab_available()) {
                g_test_skip("lab tests need root");
                return g_test_run();
        }

        g_test_add_func("/lab/tlspeer/setup", test_setup);
        g_test_add_func("/lab/tlspeer/migrate", test_migrate);
        g_test_add_func("/lab/tlspeer/identity", test_identity);
        g_test_add_func("/lab/tlspeer/wrong-ca", test_wrong_ca);
        g_test_add_func("/lab/tlspeer/dn-not-listed", test_dn_not_listed);
        g_test_add_func("/lab/tlspeer/managed-direct", test_managed_direct);
        g_test_add_func("/lab/tlspeer/tunnelled", test_tunnelled);
        g_test_add_func("/lab/tlspeer/migrate-refused", test_migrate_refused);

        return lab_run("tlspeer", hosts);
}
