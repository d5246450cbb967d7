/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The seed's configuration table ("Configuration file handling"), all 16 rows: source type,
 * source and destination config before, --undefinesource and --persistent, and what must be
 * true after a live migration from a to b. */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdbool.h>

#include "lab.h"

#define TO_B "ferry+unix:///system?socket=/run/ferry-lab-peers/b/system_bus_socket"

typedef struct Row {
        bool src_persistent;   /* source type; its config exists exactly when persistent */
        bool dst_config;
        bool undefine_source;
        bool persistent;
        /* after */
        bool dst_persistent;
        bool src_config;
        const char *dst_config_title;  /* NULL: no config; "dest": unchanged; "source": replaced */
} Row;

static const Row rows[] = {
        /* transient source, no dest config */
        { false, false, false, false, false, false, NULL },
        { false, false, true,  false, false, false, NULL },
        { false, false, false, true,  true,  false, "source" },
        { false, false, true,  true,  true,  false, "source" },
        /* transient source, dest config */
        { false, true,  false, false, true,  false, "dest" },
        { false, true,  true,  false, true,  false, "dest" },
        { false, true,  false, true,  true,  false, "source" },
        { false, true,  true,  true,  true,  false, "source" },
        /* persistent source, no dest config */
        { true,  false, false, false, false, true,  NULL },
        { true,  false, true,  false, false, false, NULL },
        { true,  false, false, true,  true,  true,  "source" },
        { true,  false, true,  true,  true,  false, "source" },
        /* persistent source, dest config */
        { true,  true,  false, false, true,  true,  "dest" },
        { true,  true,  true,  false, true,  false, "dest" },
        { true,  true,  false, true,  true,  true,  "source" },
        { true,  true,  true,  true,  true,  false, "source" },
};

static char *guest_kernel;

static char *xml_for(const char *name, const char *title, unsigned row) {
        /* Same UUID on both sides (it is the same domain); the title tells whose config it is.
         * Little RAM content: this test is about definitions, not pages. */
        return g_strdup_printf(
                "<domain type='kvm'>\n"
                "  <name>%s</name>\n"
                "  <uuid>6d2f7c8e-0000-4000-8000-0000000000%02u</uuid>\n"
                "  <title>%s</title>\n"
                "  <memory unit='KiB'>131080</memory>\n"
                "  <vcpu>1</vcpu>\n"
                "  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel>"
                "<cmdline>fill=1M dirty=64K rate=256K</cmdline></os>\n"
                "</domain>\n", name, row, title, guest_kernel);
}

static void put(const char *host, const char *file, const char *text) {
        g_autofree char *dir = lab_host_dir(host);
        g_autofree char *path = g_build_filename(dir, "etc-ferry", file, NULL);
        g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static int ctl(const char *host, LabResult *r, const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_ptr_array_add(argv, (char *) "ferryctl");
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);
        lab_exec(host, NULL, (const char *const *) argv->pdata, r);
        return r->status;
}
#define CTL(host, r, ...) ctl(host, r, (const char *const[]) { __VA_ARGS__, NULL })

static char *field(const char *text, const char *key) {
        g_autofree char *k = g_strconcat(key, ":", NULL);
        const char *p = strstr(text, k);
        if (!p)
                return NULL;
        p += strlen(k);
        while (*p == ' ')
                p++;
        return g_strndup(p, strcspn(p, "\n"));
}

static void test_row(gconstpointer data) {
        const Row *row = data;
        unsigned n = (unsigned) (row - rows) + 1;
        g_autofree char *name = g_strdup_printf("row%u", n);
        g_autofree char *file = g_strconcat(name, ".xml", NULL);
        g_autofree char *inside = g_build_filename("/etc/ferry", file, NULL);
        g_autofree char *src_xml = xml_for(name, "source", n);
        g_autofree char *dst_xml = xml_for(name, "dest", n);
        g_auto(LabResult) r = {};

        put("a", file, src_xml);
        if (row->src_persistent) {
                g_assert_cmpint(CTL("a", &r, "define", inside), ==, 0);
                lab_result_clear(&r);
                g_assert_cmpint(CTL("a", &r, "start", name), ==, 0);
        } else
                g_assert_cmpint(CTL("a", &r, "create", inside), ==, 0);
        lab_result_clear(&r);
        if (row->dst_config) {
                put("b", file, dst_xml);
                g_assert_cmpint(CTL("b", &r, "define", inside), ==, 0);
                lab_result_clear(&r);
        }

        g_autoptr(GPtrArray) args = g_ptr_array_new();
        g_ptr_array_add(args, (char *) "migrate");
        g_ptr_array_add(args, (char *) "--p2p");
        if (row->undefine_source)
                g_ptr_array_add(args, (char *) "--undefinesource");
        if (row->persistent)
                g_ptr_array_add(args, (char *) "--persistent");
        g_ptr_array_add(args, name);
        g_ptr_array_add(args, (char *) TO_B);
        g_ptr_array_add(args, NULL);
        g_assert_cmpint(ctl("a", &r, (const char *const *) args->pdata), ==, 0);
        lab_result_clear(&r);

        /* Destination: running, of the expected type, with the expected config. */
        g_assert_cmpint(CTL("b", &r, "dominfo", name), ==, 0);
        g_autofree char *state = field(r.out, "State");
        g_autofree char *persistent = field(r.out, "Persistent");
        g_assert_cmpstr(state, ==, "running");
        g_assert_cmpstr(persistent, ==, row->dst_persistent ? "yes" : "no");
        lab_result_clear(&r);
        if (row->dst_config_title) {
                g_assert_cmpint(CTL("b", &r, "dumpxml", "--inactive", name), ==, 0);
                g_autofree char *title = g_strdup_printf("<title>%s</title>", row->dst_config_title);
                g_assert_nonnull(strstr(r.out, title));
                lab_result_clear(&r);
        }

        /* Source: its config is there (domain defined, shut off) or not (domain gone). */
        int have = CTL("a", &r, "dominfo", name);
        if (row->src_config) {
                g_assert_cmpint(have, ==, 0);
                g_autofree char *s = field(r.out, "State");
                g_assert_cmpstr(s, ==, "shut off");
        } else {
                g_autofree char *gone = g_strdup_printf("! ferryctl dominfo %s", name);
                g_assert_true(lab_wait_for("a", gone, 10000));
        }
        lab_result_clear(&r);

        /* Tidy up for the next row. */
        (void) CTL("b", &r, "destroy", name);
        lab_result_clear(&r);
        (void) CTL("b", &r, "undefine", name);
        lab_result_clear(&r);
        (void) CTL("a", &r, "undefine", name);
}

/* Offline migration: the definition moves (through the destination's migrate hook), the
 * guest does not. */
static void test_offline(void) {
        g_autofree char *xml1 = xml_for("off1", "source", 90);
        g_autofree char *xml2 = xml_for("off2", "source", 91);
        g_autofree char *xml3 = xml_for("refuse3", "source", 92);
        g_autofree char *dir = lab_host_dir("b");
        g_autofree char *hooks = g_build_filename(dir, "etc-ferry", "hooks", NULL);
        g_autofree char *hook = g_build_filename(hooks, "migrate", NULL);
        g_auto(LabResult) r = {};

        put("a", "off1.xml", xml1);
        put("a", "off2.xml", xml2);
        put("a", "refuse3.xml", xml3);
        g_assert_cmpint(CTL("a", &r, "define", "/etc/ferry/off1.xml"), ==, 0);
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "migrate", "--p2p", "--offline", "--persistent", "off1", TO_B), ==, 0);
        lab_result_clear(&r);
        g_assert_cmpint(CTL("b", &r, "dominfo", "off1"), ==, 0);
        g_assert_nonnull(strstr(r.out, "State:          shut off"));
        g_assert_nonnull(strstr(r.out, "Persistent:     yes"));
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "dominfo", "off1"), ==, 0); /* still defined at the source */
        lab_result_clear(&r);

        /* A transient domain has no definition to move. */
        g_assert_cmpint(CTL("a", &r, "create", "/etc/ferry/off2.xml"), ==, 0);
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "migrate", "--p2p", "--offline", "off2", TO_B), ==, 1);
        g_assert_nonnull(strstr(r.err, "must be persistent"));
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "destroy", "off2"), ==, 0);
        lab_result_clear(&r);

        /* The hook rewrites the XML, or refuses it with a non-zero exit. */
        g_assert_cmpint(g_mkdir_with_parents(hooks, 0755), ==, 0);
        g_assert_true(g_file_set_contents(hook,
                "#!/bin/sh\n"
                "# $1 = domain name, then: migrate begin -\n"
                "case \"$1\" in refuse*) echo no >&2; exit 1;; esac\n"
                "sed 's|<title>source</title>|<title>hooked</title>|'\n", -1, NULL));
        g_assert_cmpint(g_chmod(hook, 0755), ==, 0);
        g_assert_cmpint(CTL("a", &r, "define", "/etc/ferry/off2.xml"), ==, 0);
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "migrate", "--p2p", "--offline", "--persistent", "off2", TO_B), ==, 0);
        lab_result_clear(&r);
        g_assert_cmpint(CTL("b", &r, "dumpxml", "--inactive", "off2"), ==, 0);
        g_assert_nonnull(strstr(r.out, "<title>hooked</title>"));
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "define", "/etc/ferry/refuse3.xml"), ==, 0);
        lab_result_clear(&r);
        g_assert_cmpint(CTL("a", &r, "migrate", "--p2p", "--offline", "--persistent", "refuse3", TO_B), ==, 1);
        g_assert_nonnull(strstr(r.err, "hook refused"));
        lab_result_clear(&r);
        g_assert_cmpint(CTL("b", &r, "dominfo", "refuse3"), ==, 1);
        g_unlink(hook);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);
        guest_kernel = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-test-guest", NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
                const Row *row = &rows[i];
                g_autofree char *path = g_strdup_printf(
                        "/lab/config-table/row%02zu-%s-src%s-dst%s-undefinesource%s-persistent%s", i + 1,
                        row->src_persistent ? "persistent" : "transient", row->src_persistent ? "Y" : "N",
                        row->dst_config ? "Y" : "N", row->undefine_source ? "Y" : "N", row->persistent ? "Y" : "N");
                g_test_add_data_func(path, row, test_row);
        }
        g_test_add_func("/lab/offline/definition-moves-hook-applies", test_offline);
        return lab_run("config-table", hosts);
}
