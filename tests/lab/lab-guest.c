/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab-guest.h"

void lab_ctl(const char *host, LabResult *r, const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_ptr_array_add(argv, (char *) "ferryctl");
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);
        lab_exec(host, NULL, (const char *const *) argv->pdata, r);
}

char *lab_guest_xml(const char *name) {
        g_autofree char *kernel = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-test-guest", NULL);
        return g_strdup_printf(
                "<domain type='kvm'>\n"
                "  <name>%s</name>\n"
                "  <memory unit='KiB'>131080</memory>\n"
                "  <vcpu>1</vcpu>\n"
                "  <os>\n"
                "    <type arch='x86_64' machine='pc'>hvm</type>\n"
                "    <kernel>%s</kernel>\n"
                "    <cmdline>" LAB_GUEST_CMDLINE "</cmdline>\n"
                "  </os>\n"
                "  <devices>\n"
                "    <serial type='file'><source path='/run/ferry-test/%s.log'/><target port='0'/></serial>\n"
                "  </devices>\n"
                "</domain>\n", name, kernel, name);
}

void lab_guest_create(const char *host, const char *name, bool persistent) {
        g_autofree char *xml = lab_guest_xml(name);
        g_autofree char *dir = lab_host_dir(host);
        g_autofree char *file = g_strconcat(name, ".xml", NULL);
        g_autofree char *path = g_build_filename(dir, "etc-ferry", file, NULL);
        g_autofree char *inside = g_build_filename("/etc/ferry", file, NULL);
        g_autofree char *ready = g_strdup_printf("grep -q 'ALIVE' /run/ferry-test/%s.log", name);
        g_auto(LabResult) r = {};

        g_assert_true(g_file_set_contents(path, xml, -1, NULL));
        if (persistent) {
                LAB_CTL(host, &r, "define", inside);
                g_assert_cmpint(r.status, ==, 0);
                lab_result_clear(&r);
                LAB_CTL(host, &r, "start", name);
        } else
                LAB_CTL(host, &r, "create", inside);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(host, ready, 60000));
}

char *lab_domain_state(const char *host, const char *name) {
        g_auto(LabResult) r = {};
        const char *p;

        LAB_CTL(host, &r, "dominfo", name);
        if (r.status != 0)
                return g_strdup("absent");
        p = strstr(r.out, "State:");
        g_assert_nonnull(p);
        p += strlen("State:");
        while (*p == ' ')
                p++;
        return g_strndup(p, strcspn(p, "\n"));
}

void lab_guest_assert_intact(const char *host, const char *name, unsigned min_alive, bool migrated_here) {
        g_autofree char *enough = g_strdup_printf("test $(grep -c ALIVE /run/ferry-test/%s.log) -ge %u", name, min_alive);
        g_autofree char *log = g_strdup_printf("/run/ferry-test/%s.log", name);
        const char *argv[] = { "cat", log, NULL };
        g_auto(LabResult) r = {};

        g_assert_true(lab_wait_for(host, enough, 60000));
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_null(strstr(r.out, "CORRUPT"));
        g_assert_null(strstr(r.out, "ERROR"));
        g_assert_nonnull(strstr(r.out, "corrupt=0"));
        g_assert_null(strstr(r.out, "corrupt=1"));
        if (migrated_here)
                g_assert_null(strstr(r.out, "ALIVE gen=0 "));
}

char *lab_busctl_path(const char *host, const char *const *argv) {
        g_auto(LabResult) r = {};
        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        /* o "/org/..." */
        g_auto(GStrv) parts = g_strsplit(r.out, "\"", -1);
        g_assert_cmpuint(g_strv_length(parts), >=, 2);
        return g_strdup(parts[1]);
}

void lab_local(const char *const *argv, LabResult *r) {
        g_autoptr(GError) error = NULL;
        int status;

        *r = (LabResult) { .status = -1 };
        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &r->out, &r->err, &status, &error))
                g_error("cannot run %s: %s", argv[0], error->message);
        if (WIFEXITED(status))
                r->status = WEXITSTATUS(status);
        g_test_message("[machine] %s -> %d\n%s%s", argv[0], r->status, r->out, r->err);
}

char *lab_guest_dump(const char *host, const char *name, const char *file) {
        g_autofree char *dir = g_build_filename(lab_host_dir(host), "dumps", NULL);
        char *path = g_build_filename(dir, file, NULL);
        g_auto(LabResult) r = {};

        g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
        LAB_CTL(host, &r, "dump", "--memory-only", name, path);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "dumped to"));
        return path;
}

unsigned lab_dump_assert_checks(const char *dump) {
        g_autofree char *checker = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-guest-check", NULL);
        const char *argv[] = { checker, LAB_GUEST_CHECK_ARGS, dump, NULL };
        g_auto(LabResult) r = {};
        const char *gen;

        lab_local(argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "OK pages=8192 "));
        gen = strstr(r.out, "max-gen=");
        g_assert_nonnull(gen);
        return (unsigned) strtoul(gen + strlen("max-gen="), NULL, 10);
}

void lab_guest_assert_dump_checks(const char *host, const char *name, const char *file) {
        g_auto(LabResult) r = {};

        LAB_CTL(host, &r, "suspend", name);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *dump = lab_guest_dump(host, name, file);
        g_assert_cmpuint(lab_dump_assert_checks(dump), >, 0);
        (void) unlink(dump);
        lab_result_clear(&r);
        LAB_CTL(host, &r, "resume", name);
        g_assert_cmpint(r.status, ==, 0);
}

void lab_disk_guest_create(const char *host, const char *name) {
        g_autofree char *base = lab_guest_xml(name);
        g_autofree char *dir = lab_host_dir(host);
        g_autofree char *file = g_strconcat(name, ".xml", NULL);
        g_autofree char *path = g_build_filename(dir, "etc-ferry", file, NULL);
        g_autofree char *inside = g_build_filename("/etc/ferry", file, NULL);
        g_autofree char *image = g_strdup_printf(LAB_DISK_IMAGES "/%s.img", name);
        g_autofree char *prepare = g_strdup_printf("mkdir -p " LAB_DISK_IMAGES " && rm -f %s && truncate -s "
                                                   LAB_DISK_SIZE " %s", image, image);
        g_autofree char *ready = g_strdup_printf("grep -q 'ALIVE.*disk-written' /run/ferry-test/%s.log", name);
        g_auto(GStrv) halves = g_strsplit(base, "  </devices>", 2);
        g_auto(LabResult) r = {};

        g_assert_cmpuint(g_strv_length(halves), ==, 2);
        g_autofree char *disk = g_strdup_printf("    <disk type='file' device='disk'>\n"
                                                "      <driver name='qemu' type='raw'/>\n"
                                                "      <source file='%s'/>\n"
                                                "      <target dev='vda' bus='virtio'/>\n"
                                                "    </disk>\n", image);
        g_autofree char *xml = g_strconcat(halves[0], disk, "  </devices>", halves[1], NULL);
        lab_sh(host, NULL, prepare, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_assert_true(g_file_set_contents(path, xml, -1, NULL));
        LAB_CTL(host, &r, "create", inside);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for(host, ready, 60000));
}

char *lab_job_property(const char *host, const char *job, const char *property) {
        const char *argv[] = { "busctl", "get-property", "org.ferry.Ferry1", job, "org.ferry.Ferry1.Migration",
                               property, NULL };
        g_auto(LabResult) r = {};

        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_strstrip(r.out);
        const char *v = strchr(r.out, ' ') ? strchr(r.out, ' ') + 1 : r.out;
        if (*v == '"')
                return g_strndup(v + 1, strlen(v) - 2);
        return g_strdup(v);
}
