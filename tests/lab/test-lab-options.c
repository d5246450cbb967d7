/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The options of Domain.Migrate beyond the basics (libvirt's virDomainMigrate3 parameters and
 * virsh migrate's flags), each with real guests moving between lab hosts a and b: auto-converge,
 * a destination XML, a destination name, change protection, a listen address, and the suspend
 * timeout. Every refusal leaves the guest running where it was; every move keeps its RAM. */

#include <glib.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lab-guest.h"

#define TO_A LAB_TO_A
#define TO_B LAB_TO_B
#define CTL LAB_CTL

/* Writes xml to /etc/ferry/<file> inside host; returns that path. */
static char *put_file(const char *host, const char *file, const char *xml) {
        g_autofree char *dir = lab_host_dir(host);
        g_autofree char *path = g_build_filename(dir, "etc-ferry", file, NULL);
        g_assert_true(g_file_set_contents(path, xml, -1, NULL));
        return g_build_filename("/etc/ferry", file, NULL);
}

/* s with the first occurrence of what replaced by with (which must be there). */
static char *replace_once(const char *s, const char *what, const char *with) {
        const char *p = strstr(s, what);
        g_assert_nonnull(p);
        return g_strdup_printf("%.*s%s%s", (int) (p - s), s, with, p + strlen(what));
}

static void assert_state(const char *host, const char *name, const char *state) {
        g_autofree char *s = lab_domain_state(host, name);
        g_assert_cmpstr(s, ==, state);
}

/* Runs busctl in host; returns its stdout (the test fails if it fails). */
static char *busctl(const char *host, const char *const *argv) {
        g_auto(LabResult) r = {};
        lab_exec(host, NULL, argv, &r);
        if (r.status != 0)
                g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        return g_strdup(r.out);
}

/* The object path of the domain called name on host. */
static char *domain_path(const char *host, const char *name) {
        const char *argv[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                               "GetDomainByName", "s", name, NULL };
        return lab_busctl_path(host, argv);
}

static void test_destination_xml(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "dx1", false);
        CTL("a", &r, "dumpxml", "--migratable", "dx1");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *xml = g_strdup(r.out);
        lab_result_clear(&r);

        /* Another guest (more RAM): refused, named, before anything moves. */
        g_autofree char *bigger = replace_once(xml, ">131080<", ">131088<");
        g_autofree char *bad = put_file("a", "dx1-bigger.xml", bigger);
        CTL("a", &r, "migrate", "--p2p", "--xml", bad, "dx1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidArgs"));
        g_assert_nonnull(strstr(r.err, "memory 131088 KiB, not 131080 KiB"));
        lab_result_clear(&r);
        /* Another UUID, and XML the strict parser refuses. */
        g_autoptr(GRegex) uuid_re = g_regex_new("<uuid>[^<]*</uuid>", 0, 0, NULL);
        g_autofree char *other_uuid = g_regex_replace(uuid_re, xml, -1, 0,
                                                      "<uuid>00000000-0000-4000-8000-000000000001</uuid>", 0, NULL);
        g_autofree char *bad2 = put_file("a", "dx1-uuid.xml", other_uuid);
        CTL("a", &r, "migrate", "--p2p", "--xml", bad2, "dx1", TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "UUID 00000000-0000-4000-8000-000000000001 is not the domain's"));
        lab_result_clear(&r);
        g_autofree char *broken = replace_once(xml, "<vcpu", "<bogus/><vcpu");
        g_autofree char *bad3 = put_file("a", "dx1-broken.xml", broken);
        CTL("a", &r, "migrate", "--p2p", "--xml", bad3, "dx1", TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "invalid destination XML"));
        lab_result_clear(&r);
        assert_state("a", "dx1", "running");
        assert_state("b", "dx1", "absent");

        /* A new title is the host's business: allowed, and b has it. */
        g_autofree char *titled = replace_once(xml, "</name>", "</name>\n  <title>moved with --xml</title>");
        g_autofree char *good = put_file("a", "dx1-titled.xml", titled);
        CTL("a", &r, "migrate", "--p2p", "--xml", good, "dx1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        assert_state("b", "dx1", "running");
        assert_state("a", "dx1", "absent");
        CTL("b", &r, "dumpxml", "dx1");
        g_assert_nonnull(strstr(r.out, "<title>moved with --xml</title>"));
        lab_guest_assert_intact("b", "dx1", 3, true);
}

static void test_destination_name(void) {
        g_auto(LabResult) r = {};

        /* The new name is taken on a (a defined domain of another UUID): Prepare refuses it. */
        g_autofree char *other = lab_guest_xml("dx1-renamed");
        g_autofree char *other_path = put_file("a", "dx1-renamed.xml", other);
        CTL("a", &r, "define", other_path);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("b", &r, "migrate", "--p2p", "--dname", "dx1-renamed", "dx1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "DomainExists"));
        g_assert_nonnull(strstr(r.err, "dx1-renamed"));
        lab_result_clear(&r);
        assert_state("b", "dx1", "running");

        /* Not a domain name at all. */
        CTL("b", &r, "migrate", "--p2p", "--dname", "../x", "dx1", TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "Invalid destination name"));
        lab_result_clear(&r);

        CTL("a", &r, "undefine", "dx1-renamed");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("b", &r, "migrate", "--p2p", "--dname", "dx1-renamed", "dx1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_state("a", "dx1-renamed", "running");
        assert_state("a", "dx1", "absent");
        assert_state("b", "dx1", "absent");
        /* The serial log keeps its path (/run/ferry-test/dx1.log): the same guest, renamed. */
        lab_guest_assert_intact("a", "dx1", 3, true);
}

static void test_listen_address(void) {
        g_auto(LabResult) r = {};

        CTL("a", &r, "migrate", "--p2p", "--listen-address", "b", "dx1-renamed", TO_B);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "Invalid listen address"));
        lab_result_clear(&r);

        CTL("a", &r, "migrate", "--p2p", "--listen-address", "10.77.0.2", "dx1-renamed", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        assert_state("b", "dx1-renamed", "running");
        /* b's incoming record names the address its QEMU listened on. */
        lab_sh("b", NULL,
               "for p in $(busctl --list tree org.ferry.Ferry1 | grep /migration/); do "
               "busctl get-property org.ferry.Ferry1 $p org.ferry.Ferry1.Migration DomainName HypervisorURI | "
               "tr '\\n' ' '; echo; done", &r);
        g_test_message("%s", r.out);
        g_assert_true(g_regex_match_simple("s \"dx1-renamed\" s \"tcp:10\\.77\\.0\\.2:[0-9]+\"", r.out, 0, 0));
        lab_guest_assert_intact("b", "dx1", 3, true);
}

static void test_change_protection(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "prot1", true);
        /* Its own definition (same name and UUID) on both hosts: what a redefinition would send. */
        CTL("a", &r, "dumpxml", "--inactive", "prot1");
        g_assert_cmpint(r.status, ==, 0);
        g_free(put_file("a", "prot1-same.xml", r.out));
        g_free(put_file("b", "prot1-same.xml", r.out));
        lab_result_clear(&r);
        g_autofree char *domain = domain_path("a", "prot1");
        /* 1 MiB/s: slow enough to try changes in the middle. */
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_B, "2", "max_bandwidth", "t", "1048576", "change_protection", "b",
                                  "true", "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform", job);
        g_assert_true(lab_wait_for("a", in_perform, 30000));

        CTL("a", &r, "undefine", "prot1");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "MigrationInProgress"));
        lab_result_clear(&r);
        CTL("a", &r, "define", "/etc/ferry/prot1-same.xml");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "MigrationInProgress"));
        lab_result_clear(&r);
        CTL("a", &r, "autostart", "prot1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "MigrationInProgress"));
        lab_result_clear(&r);
        /* The incoming copy on b is protected too. */
        CTL("b", &r, "define", "/etc/ferry/prot1-same.xml");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "MigrationInProgress"));
        lab_result_clear(&r);

        const char *cancel[] = { "busctl", "call", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration", "Cancel", NULL };
        g_free(busctl("a", cancel));
        g_autofree char *cancelled = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q cancelled", job);
        g_assert_true(lab_wait_for("a", cancelled, 30000));
        assert_state("a", "prot1", "running");
        /* Once it has ended, the definition is the administrator's again. */
        CTL("a", &r, "autostart", "prot1");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "autostart", "--disable", "prot1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo prot1", 30000));
        lab_guest_assert_intact("a", "prot1", 3, false);
}

static void test_timeout_suspends(void) {
        g_auto(LabResult) r = {};

        /* 4 MiB/s and 50 ms of downtime: the guest's 2 MiB working set never fits, the copy
         * cannot converge while the guest runs. After 3 s the source suspends it. */
        g_autofree char *domain = domain_path("a", "prot1");
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_B, "3", "max_bandwidth", "t", "4194304", "max_downtime_usec", "t",
                                  "50000", "suspend_timeout_usec", "t", "3000000", "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);
        g_assert_true(lab_wait_for("a", "ferryctl dominfo prot1 | grep -q 'State: *paused'", 60000));
        g_autofree char *done = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q completed", job);
        g_assert_true(lab_wait_for("a", done, 180000));
        /* Suspended for the copy only: it runs on b. */
        assert_state("b", "prot1", "running");
        assert_state("a", "prot1", "shut off");
        lab_guest_assert_intact("b", "prot1", 3, true);

        /* The same through ferryctl: --timeout. */
        CTL("b", &r, "migrate", "--p2p", "--bandwidth", "4", "--max-downtime", "50", "--timeout", "2", "prot1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_state("a", "prot1", "running");
        lab_guest_assert_intact("a", "prot1", 3, true);
}

static void test_auto_converge(void) {
        g_autofree char *xml = lab_guest_xml("conv1");
        g_autofree char *file = NULL;
        g_auto(LabResult) r = {};

        /* A busier guest: 8 MiB rewritten at 32 MiB/s. Over 8 MiB/s with 50 ms of downtime this
         * never converges unless QEMU throttles the vCPU; under TCG the guest dirties about
         * 4 MiB/s even at QEMU's last step (99 %), half the bandwidth, so then it does. */
        g_autofree char *busy = replace_once(xml, LAB_GUEST_CMDLINE, "fill=32M dirty=8M seed=11 rate=32M");
        file = put_file("a", "conv1.xml", busy);
        CTL("a", &r, "create", file);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(lab_wait_for("a", "grep -q ALIVE /run/ferry-test/conv1.log", 60000));

        /* The option takes a boolean. */
        g_autofree char *domain = domain_path("a", "conv1");
        const char *wrong[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                "sa{sv}t", TO_B, "1", "auto_converge", "s", "yes", "0", NULL };
        lab_exec("a", NULL, wrong, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "takes type 'b'"));
        lab_result_clear(&r);

        CTL("a", &r, "migrate", "--p2p", "--auto-converge", "--bandwidth", "8", "--max-downtime", "50", "conv1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        assert_state("b", "conv1", "running");

        /* QEMU did throttle: the source's record keeps the last throttle it applied. */
        CTL("a", &r, "domjobinfo", "conv1");
        g_test_message("%s", r.out);
        g_assert_nonnull(strstr(r.out, "Job type:         Completed\n"));
        g_assert_nonnull(strstr(r.out, "Encrypted (TLS):  no\n"));
        const char *t = strstr(r.out, "Auto converge throttle: ");
        g_assert_nonnull(t);
        g_assert_cmpint(atoi(t + strlen("Auto converge throttle: ")), >, 0);
        lab_guest_assert_intact("b", "conv1", 3, true);
}

static void test_contract(void) {
        g_auto(LabResult) r = {};

        lab_sh("a", NULL, "busctl --list tree org.ferry.Ferry1 | grep /migration/ | head -n1", &r);
        g_autofree char *path = g_strdup(g_strstrip(r.out));
        g_assert_true(g_str_has_prefix(path, "/org/ferry/Ferry1/migration/"));
        lab_assert_introspection_matches("a", path, "org.ferry.Ferry1.Migration");

        /* Source-side options are no business of PrepareMigration. */
        lab_result_clear(&r);
        const char *prepare[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                  "PrepareMigration", "sa{sv}", "<domain/>", "1", "destination_name", "s", "x", NULL };
        lab_exec("b", NULL, prepare, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "not of PrepareMigration"));
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/options/destination-xml", test_destination_xml);
        g_test_add_func("/lab/options/destination-name", test_destination_name);
        g_test_add_func("/lab/options/listen-address", test_listen_address);
        g_test_add_func("/lab/options/change-protection", test_change_protection);
        g_test_add_func("/lab/options/timeout-suspends", test_timeout_suspends);
        g_test_add_func("/lab/options/auto-converge", test_auto_converge);
        g_test_add_func("/lab/options/contract", test_contract);

        return lab_run("options", hosts);
}
