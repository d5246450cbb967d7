/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The destination XML check of migrations: what the guest sees must stay, what the host
 * decides may change. */

#include <glib.h>
#include <string.h>

#include "domain-abi.h"

#define UUID "<uuid>6f1b2a34-1c2d-4e5f-8a9b-0c1d2e3f4a5b</uuid>\n"

static char *xml_with(const char *extra_top, const char *memory, const char *disk_source, const char *mac) {
        return g_strdup_printf(
                "<domain type='kvm'>\n  <name>g</name>\n" UUID "%s"
                "  <memory unit='KiB'>%s</memory>\n  <vcpu>2</vcpu>\n"
                "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
                "  <devices>\n"
                "    <disk type='file' device='disk'><source file='%s'/><target dev='vda' bus='virtio'/></disk>\n"
                "    <interface type='user'><mac address='%s'/><model type='virtio'/></interface>\n"
                "  </devices>\n</domain>\n",
                extra_top, memory, disk_source, mac);
}

static DomainDef *parse(const char *xml) {
        DomainDef *def = NULL;
        g_autofree char *error = NULL;
        if (domain_def_parse(xml, strlen(xml), &def, &error) < 0)
                g_error("parse failed: %s\n%s", error, xml);
        return def;
}

static char *check(const char *a_xml, const char *b_xml) {
        _cleanup_(domain_def_freep) DomainDef *a = parse(a_xml), *b = parse(b_xml);
        char *error = NULL;
        int r = domain_def_check_abi(a, b, &error);
        g_assert_true((r == 0) == (error == NULL));
        return error;
}

static void test_host_side_changes_pass(void) {
        g_autofree char *a = xml_with("", "65536", "/var/lib/a.img", "52:54:00:00:00:01");
        g_autofree char *b = xml_with("  <title>elsewhere</title>\n", "65536", "/srv/b.img", "52:54:00:00:00:01");
        g_autofree char *e = check(a, b);
        g_assert_null(e);
}

static void test_guest_side_changes_fail(void) {
        g_autofree char *a = xml_with("", "65536", "/var/lib/a.img", "52:54:00:00:00:01");
        g_autofree char *mem = xml_with("", "131072", "/var/lib/a.img", "52:54:00:00:00:01");
        g_autofree char *mac = xml_with("", "65536", "/var/lib/a.img", "52:54:00:00:00:02");
        g_autofree char *e1 = check(a, mem), *e2 = check(a, mac);
        g_assert_cmpstr(e1, ==, "memory 131072 KiB, not 65536 KiB");
        g_assert_cmpstr(e2, ==, "network interface 1 has MAC 52:54:00:00:00:02, not 52:54:00:00:00:01");

        g_autofree char *uuid = g_strdup(a);
        memcpy(strstr(uuid, "6f1b2a34"), "00000000", 8);
        g_autofree char *e3 = check(a, uuid);
        g_assert_nonnull(strstr(e3, "is not the domain's"));

        g_autofree char *cpus = g_strdup(a);
        memcpy(strstr(cpus, "<vcpu>2"), "<vcpu>3", 7);
        g_autofree char *e4 = check(a, cpus);
        g_assert_cmpstr(e4, ==, "3 vCPUs, not 2");

        /* One disk fewer. */
        g_autofree char *nodisk = g_strdup(a);
        char *d = strstr(nodisk, "    <disk"), *end = strstr(nodisk, "</disk>\n") + strlen("</disk>\n");
        memmove(d, end, strlen(end) + 1);
        g_autofree char *e5 = check(a, nodisk);
        g_assert_cmpstr(e5, ==, "the number of disks differs (0, not 1)");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/domain-abi/host-side-changes-pass", test_host_side_changes_pass);
        g_test_add_func("/domain-abi/guest-side-changes-fail", test_guest_side_changes_fail);
        return g_test_run();
}
