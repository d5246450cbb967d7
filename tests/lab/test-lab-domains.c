/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Domains on a real lab host: real QEMU guests (the project's test guest) in transient
 * units, driven through ferryctl and busctl as an administrator would. */

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "lab.h"

#define HOST "a"

static char *guest_kernel;

static void ctl(const char *user, LabResult *r, const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_ptr_array_add(argv, (char *) "ferryctl");
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);
        lab_exec(HOST, user, (const char *const *) argv->pdata, r);
}
#define CTL(r, ...) ctl(NULL, r, (const char *const[]) { __VA_ARGS__, NULL })
#define CTL_AS(user, r, ...) ctl(user, r, (const char *const[]) { __VA_ARGS__, NULL })

static char *guest_xml(const char *name, const char *extra) {
        return g_strdup_printf(
                "<domain type='kvm'>\n"
                "  <name>%s</name>\n"
                "  <memory unit='MiB'>64</memory>\n"
                "  <vcpu>1</vcpu>\n"
                "  <os>\n"
                "    <type arch='x86_64' machine='pc'>hvm</type>\n"
                "    <kernel>%s</kernel>\n"
                "    <cmdline>fill=8M dirty=1M seed=42</cmdline>\n"
                "  </os>\n"
                "  <devices>\n"
                "    <serial type='file'><source path='/run/ferry-test/%s.log'/><target port='0'/></serial>\n"
                "  </devices>\n"
                "%s"
                "</domain>\n", name, guest_kernel, name, extra ?: "");
}

/* Writes text to a file inside the host (via its /etc/ferry bind, visible from here). */
static char *host_file(const char *name, const char *contents) {
        g_autofree char *dir = lab_host_dir(HOST);
        char *path = g_build_filename(dir, "etc-ferry", name, NULL);
        g_assert_true(g_file_set_contents(path, contents, -1, NULL));
        return g_build_filename("/etc/ferry", name, NULL);
}

static void define_guest(const char *name) {
        g_autofree char *xml = guest_xml(name, NULL);
        g_autofree char *file = g_strconcat(name, "-def.xml", NULL);
        g_autofree char *path = host_file(file, xml);
        g_auto(LabResult) r = {};

        CTL(&r, "define", path);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *expect = g_strdup_printf("Domain '%s' defined from %s", name, path);
        g_assert_nonnull(strstr(r.out, expect));
}

static char *dominfo_field(const char *name, const char *field) {
        g_auto(LabResult) r = {};
        CTL(&r, "dominfo", name);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *key = g_strconcat("\n", field, ":", NULL);
        g_autofree char *text = g_strconcat("\n", r.out, NULL);
        const char *p = strstr(text, key);
        g_assert_nonnull(p);
        p += strlen(key);
        while (*p == ' ')
                p++;
        return g_strndup(p, strcspn(p, "\n"));
}

static gboolean serial_shows(const char *name, const char *what, guint timeout_ms) {
        g_autofree char *script = g_strdup_printf("grep -q '%s' /run/ferry-test/%s.log", what, name);
        return lab_wait_for(HOST, script, timeout_ms);
}

static void test_define_start_runs(void) {
        g_auto(LabResult) r = {};
        g_autofree char *state = NULL, *cfg = NULL;

        define_guest("g1");

        /* Persistent: the definition is in /etc/ferry/domains. */
        cfg = g_build_filename(lab_host_dir(HOST), "etc-ferry", "domains", "g1.xml", NULL);
        g_assert_true(g_file_test(cfg, G_FILE_TEST_IS_REGULAR));
        state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "shut off");

        CTL(&r, "start", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "Domain 'g1' started"));
        g_free(state);
        state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "running");

        /* The guest itself runs: it reports on its serial port. */
        g_assert_true(serial_shows("g1", "READY", 60000));
        g_assert_true(serial_shows("g1", "ALIVE", 60000));

        /* In its own unit, as a service of systemd. */
        lab_result_clear(&r);
        lab_sh(HOST, NULL, "systemctl is-active ferry-qemu-g1.service", &r);
        g_assert_cmpstr(g_strstrip(r.out), ==, "active");

        lab_result_clear(&r);
        CTL(&r, "list");
        g_assert_nonnull(strstr(r.out, "g1"));
        g_assert_nonnull(strstr(r.out, "running"));
}

static void test_introspection_equals_xml(void) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1",
                               "org.ferry.Ferry1.Manager", "GetDomainByName", "s", "g1", NULL };

        lab_exec(HOST, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        /* "o \"/org/ferry/Ferry1/domain/...\"" */
        g_auto(GStrv) parts = g_strsplit(g_strstrip(r.out), "\"", -1);
        g_assert_cmpuint(g_strv_length(parts), >=, 2);
        g_assert_true(g_str_has_prefix(parts[1], "/org/ferry/Ferry1/domain/"));
        lab_assert_introspection_matches(HOST, parts[1], "org.ferry.Ferry1.Domain");
}

static void test_wrong_states(void) {
        g_auto(LabResult) r = {};

        CTL(&r, "start", "g1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.InvalidState"));
        lab_result_clear(&r);

        CTL(&r, "resume", "g1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidState"));
        lab_result_clear(&r);

        CTL(&r, "suspend", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "paused");
        lab_result_clear(&r);

        CTL(&r, "suspend", "g1");
        g_assert_cmpint(r.status, ==, 1);
        lab_result_clear(&r);

        CTL(&r, "resume", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_free(state);
        state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "running");
        lab_result_clear(&r);

        /* The test guest has no ACPI: the power button is ignored, and says so in time. */
        CTL(&r, "shutdown", "g1", "--timeout", "2");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.Timeout"));
        g_free(state);
        state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "running");
}

static void test_bad_definitions_change_nothing(void) {
        static const struct {
                const char *label;
                const char *xml;
                const char *error;
        } bad[] = {
                { "malformed", "<domain><name>x</name>", "InvalidDefinition" },
                { "slash", "<domain type='kvm'><name>a/b</name><memory>65536</memory><os><type>hvm</type></os></domain>", "InvalidDefinition" },
                { "dotdot", "<domain type='kvm'><name>..</name><memory>65536</memory><os><type>hvm</type></os></domain>", "InvalidDefinition" },
                { "zero-memory", "<domain type='kvm'><name>z</name><memory>0</memory><os><type>hvm</type></os></domain>", "InvalidDefinition" },
                { "pib-memory", "<domain type='kvm'><name>z</name><memory unit='PiB'>1</memory><os><type>hvm</type></os></domain>", "InvalidDefinition" },
                { "xxe", "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
                         "<domain type='kvm'><name>&x;</name><memory>65536</memory><os><type>hvm</type></os></domain>", "InvalidDefinition" },
                { "laughs", "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
                            "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>]>"
                            "<domain type='kvm'><name>&d;</name></domain>", "InvalidDefinition" },
        };
        g_auto(LabResult) before = {};
        CTL(&before, "list", "--all");

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_auto(LabResult) r = {};
                g_autofree char *file = g_strconcat("bad-", bad[i].label, ".xml", NULL);
                g_autofree char *path = host_file(file, bad[i].xml);

                CTL(&r, "define", path);
                g_test_message("%s: %s", bad[i].label, r.err);
                g_assert_cmpint(r.status, ==, 1);
                g_assert_nonnull(strstr(r.err, bad[i].error));
                g_assert_null(strstr(r.err, "root:")); /* no file content leaked */
        }

        /* A name that is taken, with another UUID. */
        g_auto(LabResult) r = {};
        g_autofree char *dup = guest_xml("g1", NULL);
        g_autofree char *dup_path = host_file("dup.xml", dup);
        CTL(&r, "define", dup_path);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.DomainExists"));

        g_auto(LabResult) after = {};
        CTL(&after, "list", "--all");
        g_assert_cmpstr(after.out, ==, before.out);
        g_autofree char *state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "running");
}

static void test_unprivileged_reads_not_manages(void) {
        g_auto(LabResult) r = {};

        CTL_AS("nobody", &r, "list", "--all");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "g1"));
        lab_result_clear(&r);

        CTL_AS("nobody", &r, "dumpxml", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "<name>g1</name>"));
        lab_result_clear(&r);

        CTL_AS("nobody", &r, "suspend", "g1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.manage-domains"));
        lab_result_clear(&r);

        g_autofree char *rules = g_build_filename(lab_host_dir(HOST), "polkit-rules", "50-domains.rules", NULL);
        g_assert_true(g_file_set_contents(rules,
                "polkit.addRule(function(action, subject) {\n"
                "  if (action.id == 'org.ferry.Ferry1.manage-domains' && subject.user == 'nobody' &&\n"
                "      action.lookup('domain_name') == 'g1')\n"
                "    return polkit.Result.YES;\n"
                "});\n", -1, NULL));
        g_assert_true(lab_wait_for(HOST, "setpriv --reuid=nobody --regid=nogroup --clear-groups ferryctl suspend g1", 15000));
        CTL_AS("nobody", &r, "resume", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_unlink(rules);
}

static void test_signals(void) {
        g_auto(LabResult) r = {};

        /* gdbus monitor says "Monitoring signals ..." once it has subscribed: no race. */
        lab_sh(HOST, NULL,
               "(timeout 60 gdbus monitor --system --dest org.ferry.Ferry1 > /run/ferry-test/monitor.log 2>&1 &)", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(HOST, "grep -q 'Monitoring signals' /run/ferry-test/monitor.log", 10000));

        define_guest("g4");
        g_assert_true(lab_wait_for(HOST,
                "grep 'InterfacesAdded' /run/ferry-test/monitor.log | grep -q \"'org.ferry.Ferry1.Domain'\"", 10000));
        lab_result_clear(&r);
        CTL(&r, "start", "g4");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(HOST,
                "grep 'PropertiesChanged' /run/ferry-test/monitor.log | grep -q \"'State': <'running'>\"", 10000));
        lab_result_clear(&r);
        CTL(&r, "destroy", "g4");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(HOST,
                "grep 'PropertiesChanged' /run/ferry-test/monitor.log | grep -q \"'StateReason': <'destroyed'>\"", 10000));
        lab_result_clear(&r);
        CTL(&r, "undefine", "g4");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(HOST, "grep -q 'InterfacesRemoved' /run/ferry-test/monitor.log", 10000));
}

static void test_more_wrong_calls(void) {
        g_auto(LabResult) r = {};
        g_autofree char *path = NULL;

        /* Same UUID as an existing domain, other name. */
        define_guest("g5");
        g_autofree char *uuid = dominfo_field("g5", "UUID");
        g_autofree char *twin = g_strdup_printf(
                "<domain type='kvm'><name>g5-twin</name><uuid>%s</uuid><memory unit='MiB'>64</memory>"
                "<os><type>hvm</type></os></domain>", uuid);
        path = host_file("twin.xml", twin);
        CTL(&r, "define", path);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.DomainExists"));
        lab_result_clear(&r);

        CTL(&r, "shutdown", "g5");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidState"));
        lab_result_clear(&r);
        CTL(&r, "suspend", "g5");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidState"));
        lab_result_clear(&r);

        /* Unknown flags and bad arguments on the raw API. */
        const char *flags[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                "ListDomains", "t", "4", NULL };
        lab_exec(HOST, NULL, flags, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "Unknown flags"));
        lab_result_clear(&r);
        const char *name[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                               "GetDomainByName", "s", "../etc", NULL };
        lab_exec(HOST, NULL, name, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "Invalid domain name"));
        lab_result_clear(&r);

        /* Unknown domain: virsh's wording and exit code. */
        CTL(&r, "start", "nosuch");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "error: failed to get domain 'nosuch'"));
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.NoSuchDomain"));
}

static void test_autostart_at_boot(void) {
        g_auto(LabResult) r = {};

        CTL(&r, "autostart", "g5");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *autostart = dominfo_field("g5", "Autostart");
        g_assert_cmpstr(autostart, ==, "enable");
        lab_result_clear(&r);

        /* What a reboot does to ferryd: /run is empty, and the enabled unit starts. */
        lab_sh(HOST, NULL, "systemctl stop ferryd.service && rm -f /run/ferry/autostarted && "
                           "systemctl start ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(HOST, "ferryctl dominfo g5 | grep -q 'State: *running'", 30000));
        lab_result_clear(&r);

        /* Once per boot only: a later activation does not start it again. */
        CTL(&r, "destroy", "g5");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        lab_sh(HOST, NULL, "systemctl restart ferryd.service", &r);
        g_autofree char *state = dominfo_field("g5", "State");
        g_assert_cmpstr(state, ==, "shut off");
        lab_result_clear(&r);
        CTL(&r, "undefine", "g5");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *dir = lab_host_dir(HOST);
        g_autofree char *link = g_build_filename(dir, "etc-ferry", "domains", "autostart", "g5.xml", NULL);
        g_assert_false(g_file_test(link, G_FILE_TEST_EXISTS));
}

static void test_sigkill_ferryd_reattaches(void) {
        g_auto(LabResult) r = {};

        define_guest("g2");
        CTL(&r, "start", "g2");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        lab_sh(HOST, NULL, "systemctl kill -s KILL ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(HOST, "! systemctl -q is-active ferryd.service", 10000));
        lab_result_clear(&r);

        /* The guests ran on meanwhile; the next call activates ferryd, which finds them. */
        CTL(&r, "list");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "g1"));
        g_assert_nonnull(strstr(r.out, "g2"));
        g_autofree char *s1 = dominfo_field("g1", "State");
        g_autofree char *s2 = dominfo_field("g2", "State");
        g_assert_cmpstr(s1, ==, "running");
        g_assert_cmpstr(s2, ==, "running");
        /* And controls them: pause and resume go through QMP again. */
        lab_result_clear(&r);
        CTL(&r, "suspend", "g2");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL(&r, "resume", "g2");
        g_assert_cmpint(r.status, ==, 0);
}

static void test_qemu_died_while_ferryd_away(void) {
        g_auto(LabResult) r = {};

        lab_sh(HOST, NULL, "systemctl stop ferryd.service && systemctl kill -s KILL ferry-qemu-g2.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *state = dominfo_field("g2", "State");
        g_assert_cmpstr(state, ==, "crashed");
        g_autofree char *g1 = dominfo_field("g1", "State");
        g_assert_cmpstr(g1, ==, "running");
}

static void test_destroy_removes_units(void) {
        g_auto(LabResult) r = {};

        CTL(&r, "destroy", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "Domain 'g1' destroyed"));
        g_autofree char *state = dominfo_field("g1", "State");
        g_assert_cmpstr(state, ==, "shut off");
        lab_result_clear(&r);
        lab_sh(HOST, NULL, "systemctl list-units --all --plain --no-legend 'ferry-qemu-*' | grep -v failed", &r);
        g_assert_cmpstr(r.out, ==, "");
        lab_result_clear(&r);

        CTL(&r, "destroy", "g1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "InvalidState"));
}

static void test_transient_create_and_undefine(void) {
        g_auto(LabResult) r = {};
        g_autofree char *xml = guest_xml("t1", NULL);
        g_autofree char *path = host_file("t1.xml", xml);

        CTL(&r, "create", path);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *persistent = dominfo_field("t1", "Persistent");
        g_assert_cmpstr(persistent, ==, "no");
        lab_result_clear(&r);
        CTL(&r, "destroy", "t1");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        /* A transient domain is gone once it stops. */
        CTL(&r, "dominfo", "t1");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.NoSuchDomain"));
        lab_result_clear(&r);

        CTL(&r, "undefine", "g1");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *cfg = g_build_filename(lab_host_dir(HOST), "etc-ferry", "domains", "g1.xml", NULL);
        g_assert_false(g_file_test(cfg, G_FILE_TEST_EXISTS));
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { HOST, NULL };
        g_test_init(&argc, &argv, NULL);
        guest_kernel = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-test-guest", NULL);

        g_test_add_func("/lab/domains/define-start-runs", test_define_start_runs);
        g_test_add_func("/lab/domains/introspection-equals-xml", test_introspection_equals_xml);
        g_test_add_func("/lab/domains/wrong-states", test_wrong_states);
        g_test_add_func("/lab/domains/bad-definitions-change-nothing", test_bad_definitions_change_nothing);
        g_test_add_func("/lab/domains/unprivileged-reads-not-manages", test_unprivileged_reads_not_manages);
        g_test_add_func("/lab/domains/signals", test_signals);
        g_test_add_func("/lab/domains/more-wrong-calls", test_more_wrong_calls);
        g_test_add_func("/lab/domains/autostart-at-boot", test_autostart_at_boot);
        g_test_add_func("/lab/domains/sigkill-ferryd-reattaches", test_sigkill_ferryd_reattaches);
        g_test_add_func("/lab/domains/qemu-died-while-ferryd-away", test_qemu_died_while_ferryd_away);
        g_test_add_func("/lab/domains/destroy-removes-units", test_destroy_removes_units);
        g_test_add_func("/lab/domains/transient-create-and-undefine", test_transient_create_and_undefine);

        return lab_run("domains", hosts);
}
