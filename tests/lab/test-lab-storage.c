/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Non-shared storage: the test guest keeps rewriting self-verifying blocks of its virtio disk
 * while ferryd copies the disk over NBD with the RAM. After a migration with --suspend both
 * copies are compared byte for byte (the source's QEMU has gone, the destination's is
 * paused); then the guest runs on and its own checks of the disk stay happy. Faults must leave
 * the guest running on the source and nothing behind on the destination. */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdbool.h>

#include "lab-guest.h"

#define TO_A LAB_TO_A
#define TO_B LAB_TO_B
#define CTL LAB_CTL
#define IMAGES LAB_DISK_IMAGES
#define IMAGE IMAGES "/st1.img"
#define IMAGE_SIZE LAB_DISK_SIZE
#define HOLD_PORT "49001"

/* The path of a file of host's /var on the machine (the upper layer of the host's /var). */
static char *var_file(const char *host, const char *path_in_var) {
        g_autofree char *dir = lab_host_dir(host);
        return g_build_filename(dir, "var-upper", path_in_var, NULL);
}

static void sh_ok(const char *host, const char *script) {
        g_auto(LabResult) r = {};
        lab_sh(host, NULL, script, &r);
        g_assert_cmpint(r.status, ==, 0);
}

static void disk_assert_checks(const char *image) {
        g_autofree char *checker = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-guest-check", NULL);
        const char *argv[] = { checker, "--disk", "--seed", "11", image, NULL };
        g_auto(LabResult) r = {};

        lab_local(argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "OK disk blocks=1024 "));
}

/* The guest is running on host, alone: the other host has no such domain. */
static void assert_only_on(const char *host, const char *other) {
        g_autofree char *here = lab_domain_state(host, "st1");
        g_assert_cmpstr(here, ==, "running");
        g_autofree char *gone = g_strdup("! ferryctl dominfo st1");
        g_assert_true(lab_wait_for(other, gone, 30000));
}

/* The guest runs on host, finds every block it wrote (before and after the move) and every
 * page; it is gone from other. */
static void assert_arrived(const char *host, const char *other) {
        assert_only_on(host, other);
        g_assert_true(lab_wait_for(host, "test $(grep -c 'ALIVE.*disk-written' /run/ferry-test/st1.log) -ge 3", 60000));
        lab_guest_assert_intact(host, "st1", 3, true);
}

static void test_copy_all_byte_for_byte(void) {
        g_auto(LabResult) r = {};
        g_autofree char *src = var_file("a", "lib/ferry/images/st1.img");
        g_autofree char *dst = var_file("b", "lib/ferry/images/st1.img");

        lab_disk_guest_create("a", "st1");
        sh_ok("b", "mkdir -p " IMAGES " && rm -f " IMAGE);
        /* b has no image: it is created with the source's size and format. */
        CTL("a", &r, "migrate", "--p2p", "--copy-storage-all", "--suspend", "--verbose", "st1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);

        g_autofree char *on_b = lab_domain_state("b", "st1");
        g_assert_cmpstr(on_b, ==, "paused");
        g_autofree char *on_a = lab_domain_state("a", "st1");
        g_assert_cmpstr(on_a, ==, "absent");
        /* The source's QEMU has gone, the destination's is paused: nothing writes either image. */
        g_assert_true(lab_wait_for("a", "! systemctl is-active -q ferry-qemu-st1.service", 30000));
        const char *cmp[] = { "cmp", src, dst, NULL };
        lab_local(cmp, &r);
        g_assert_cmpint(r.status, ==, 0);
        disk_assert_checks(dst);

        /* What both sides reported. */
        lab_result_clear(&r);
        const char *out[] = { "busctl", "get-property", "org.ferry.Ferry1", "/org/ferry/Ferry1/migration/1",
                              "org.ferry.Ferry1.Migration", "State", "CopyStorage", "DiskRemaining", NULL };
        lab_exec("a", NULL, out, &r);
        g_assert_cmpstr(r.out, ==, "s \"completed\"\ns \"all\"\nt 0\n");
        lab_result_clear(&r);
        const char *total[] = { "sh", "-c", "busctl get-property org.ferry.Ferry1 /org/ferry/Ferry1/migration/1 "
                                "org.ferry.Ferry1.Migration DiskTotal | awk '{ exit !($2 >= 4194304) }'", NULL };
        lab_exec("a", NULL, total, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "domjobinfo", "st1");
        g_assert_nonnull(strstr(r.out, "File total:"));
        lab_result_clear(&r);
        const char *in[] = { "busctl", "get-property", "org.ferry.Ferry1", "/org/ferry/Ferry1/migration/1",
                             "org.ferry.Ferry1.Migration", "Direction", "DisksURI", NULL };
        lab_exec("b", NULL, in, &r);
        g_assert_true(g_str_has_prefix(r.out, "s \"incoming\"\ns \"tcp://"));
        lab_assert_introspection_matches("a", "/org/ferry/Ferry1/migration/1", "org.ferry.Ferry1.Migration");

        /* The guest runs on with b's copy and finds every block it wrote. */
        lab_result_clear(&r);
        CTL("b", &r, "resume", "st1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", "test $(grep -c 'ALIVE.*disk-written' /run/ferry-test/st1.log) -ge 3", 60000));
        lab_guest_assert_intact("b", "st1", 3, true);
}

/* Back to a, running, with --copy-storage-inc onto the image a still has (same size and
 * format: it is used as it is). */
static void test_copy_inc_onto_existing(void) {
        g_auto(LabResult) r = {};

        CTL("b", &r, "migrate", "--p2p", "--copy-storage-inc", "--migrate-disks", "vda", "st1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        /* a's guest reads back what it wrote on b. */
        assert_arrived("a", "b");
}

/* A failed migration from a to b: the guest stays on a; returns ferryctl's stderr. */
static char *migrate_fails(const char *const *extra) {
        g_autoptr(GPtrArray) args = g_ptr_array_new();
        g_auto(LabResult) r = {};

        g_ptr_array_add(args, (char *) "migrate");
        g_ptr_array_add(args, (char *) "--p2p");
        g_ptr_array_add(args, (char *) "--copy-storage-all");
        for (const char *const *e = extra; e && *e; e++)
                g_ptr_array_add(args, (char *) *e);
        g_ptr_array_add(args, (char *) "st1");
        g_ptr_array_add(args, (char *) TO_B);
        g_ptr_array_add(args, NULL);
        lab_ctl("a", &r, (const char *const *) args->pdata);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        assert_only_on("a", "b");
        return g_strdup(r.err);
}

static void test_faults(void) {
        g_auto(LabResult) r = {};

        /* b's image is smaller than a's: refused before b's QEMU starts; b's image stays. */
        sh_ok("b", "rm -f " IMAGE " && truncate -s 2M " IMAGE);
        g_autofree char *small = migrate_fails(NULL);
        g_assert_nonnull(strstr(small, "too small"));
        sh_ok("b", "test $(stat -c %s " IMAGE ") = 2097152");

        /* b's image is qcow2, the domain says raw. */
        sh_ok("b", "rm -f " IMAGE " && qemu-img create -q -f qcow2 " IMAGE " " IMAGE_SIZE);
        g_autofree char *format = migrate_fails(NULL);
        g_assert_nonnull(strstr(format, "is qcow2, the domain says raw"));
        sh_ok("b", "test -e " IMAGE);

        /* The NBD port is taken on b: Prepare fails there; the image it created goes. */
        sh_ok("b", "rm -f " IMAGE " && systemd-run --quiet --unit=ferry-test-hold-port /usr/bin/python3 -c "
                   "\"import socket, time; s = socket.socket(); s.bind(('0.0.0.0', " HOLD_PORT ")); s.listen(); "
                   "time.sleep(3600)\"");
        g_assert_true(lab_wait_for("b", "ss -ltn | grep -q ':" HOLD_PORT " '", 20000));
        const char *port[] = { "--disks-port", HOLD_PORT, NULL };
        g_autofree char *in_use = migrate_fails(port);
        g_assert_nonnull(strstr(in_use, "in use"));
        g_assert_true(lab_wait_for("b", "test ! -e " IMAGE, 20000));
        sh_ok("b", "systemctl stop ferry-test-hold-port.service");

        /* The NBD connection is cut while the disk is being mirrored (the RAM goes at 1 MiB/s:
         * the mirror runs for a long while): the guest stays on a, the destination goes. */
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "st1", NULL };
        g_autofree char *domain = lab_busctl_path("a", lookup);
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_B, "2", "max_bandwidth", "t", "1048576", "copy_storage", "s", "all",
                                  "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);
        g_autofree char *mirroring = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration DiskTotal | "
                "awk '{ exit !($2 > 0) }'", job);
        g_assert_true(lab_wait_for("a", mirroring, 60000));
        lab_result_clear(&r);
        g_autofree char *uri_cmd = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration DisksURI", job);
        lab_sh("a", NULL, uri_cmd, &r);
        g_assert_cmpint(r.status, ==, 0);
        const char *colon = strrchr(r.out, ':');
        g_assert_nonnull(colon);
        g_autofree char *nbd_port = g_strndup(colon + 1, strspn(colon + 1, "0123456789"));
        /* Abruptly, from b's side: its end of every connection to that port is destroyed (RST). */
        g_autofree char *cut = g_strdup_printf("ss -K state established '( sport = :%s )' >/dev/null", nbd_port);
        sh_ok("b", cut);
        g_autofree char *failed = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q failed", job);
        g_assert_true(lab_wait_for("a", failed, 60000));
        lab_result_clear(&r);
        g_autofree char *why = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase ErrorMessage", job);
        lab_sh("a", NULL, why, &r);
        g_assert_true(g_str_has_prefix(r.out, "s \"perform\"\n"));
        g_assert_nonnull(strstr(r.out, "disk vda"));
        assert_only_on("a", "b");
        g_assert_true(lab_wait_for("b", "test ! -e " IMAGE, 20000));
        lab_guest_assert_intact("a", "st1", 3, true);

        /* Nothing was left behind on a (its NBD nodes would clash): the next one goes through. */
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "--copy-storage-all", "st1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_arrived("b", "a");
}

static void test_refusals(void) {
        g_auto(LabResult) r = {};

        /* ferryctl: only the peer-to-peer flow copies storage. */
        CTL("b", &r, "migrate", "--copy-storage-all", "st1", TO_A);
        g_assert_cmpint(r.status, ==, 2);
        g_assert_nonnull(strstr(r.err, "--p2p"));
        lab_result_clear(&r);
        /* A disk the domain does not have. */
        CTL("b", &r, "migrate", "--p2p", "--copy-storage-all", "--migrate-disks", "vdb", "st1", TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "cannot copy disk vdb"));
        lab_result_clear(&r);
        /* QEMU checks the NBD server's certificate against a host name. */
        CTL("b", &r, "migrate", "--p2p", "--tls", "--copy-storage-all", "--disks-uri", "unix:///run/ferry-test/nbd.sock",
            "st1", TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "TLS needs a tcp: disks URI"));
        lab_result_clear(&r);
        /* Post-copy is not combined with a storage copy (docs/migration.md, "Storage copy"): the
         * source refuses it, and so does a destination asked directly, before any image is made. */
        CTL("b", &r, "migrate", "--p2p", "--postcopy", "--copy-storage-all", "st1", TO_A);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "postcopy and copy_storage cannot be combined"));
        lab_result_clear(&r);
        g_autofree char *xml = lab_guest_xml("st1");
        const char *prepare[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                  "PrepareMigration", "sa{sv}", xml, "3", "copy_storage", "s", "all",
                                  "postcopy", "b", "true", "disk_sizes", "a{st}", "1", "vda", "4194304", NULL };
        lab_exec("a", NULL, prepare, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "postcopy and copy_storage cannot be combined"));
        lab_result_clear(&r);
        /* Bad values, at the bus edge. */
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", "st1", NULL };
        g_autofree char *domain = lab_busctl_path("b", lookup);
        const char *bad_mode[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                   "sa{sv}t", TO_A, "1", "copy_storage", "s", "some", "0", NULL };
        lab_exec("b", NULL, bad_mode, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "copy_storage takes"));
        lab_result_clear(&r);
        const char *bad_uri[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", TO_A, "2", "copy_storage", "s", "all", "disks_uri", "s", "exec:/bin/true",
                                  "0", NULL };
        lab_exec("b", NULL, bad_uri, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "Invalid disks URI"));
        g_autofree char *s = lab_domain_state("b", "st1");
        g_assert_cmpstr(s, ==, "running");
}

static void test_copy_with_tls(void) {
        g_auto(LabResult) r = {};

        /* QEMU's TLS for the stream and the NBD connections: /etc/ferry/pki/qemu. */
        lab_pki_create();

        /* st1 is on b; a still has an image of the right size from before. */
        CTL("b", &r, "migrate", "--p2p", "--tls", "--copy-storage-all", "st1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_arrived("a", "b");
        /* The job says what it did. */
        lab_result_clear(&r);
        const char *tls[] = { "sh", "-c", "busctl get-property org.ferry.Ferry1 $(" LAB_NEWEST_MIGRATION ") "
                              "org.ferry.Ferry1.Migration TLS CopyStorage", NULL };
        lab_exec("a", NULL, tls, &r);
        g_assert_cmpstr(r.out, ==, "b true\ns \"all\"\n");
}

/* The NBD server on a UNIX socket both hosts see (the lab's shared peers directory). */
static void test_unix_disks_uri(void) {
        g_auto(LabResult) r = {};

        sh_ok("b", "rm -f " IMAGE);
        CTL("a", &r, "migrate", "--p2p", "--copy-storage-all", "--disks-uri", "unix:///run/ferry-lab-peers/st1-nbd.sock",
            "st1", TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_arrived("b", "a");
        lab_result_clear(&r);
        lab_sh("b", NULL, "busctl get-property org.ferry.Ferry1 $(" LAB_NEWEST_MIGRATION ") org.ferry.Ferry1.Migration DisksURI", &r);
        g_assert_cmpstr(r.out, ==, "s \"unix:///run/ferry-lab-peers/st1-nbd.sock\"\n");
}

/* Multifd carries the RAM only; the disks go over NBD as ever: back to a (onto the image it
 * still has) with two parallel connections. */
static void test_with_parallel_connections(void) {
        g_auto(LabResult) r = {};

        CTL("b", &r, "migrate", "--p2p", "--copy-storage-all", "--parallel-connections", "2", "st1", TO_A);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        assert_arrived("a", "b");
        lab_result_clear(&r);
        lab_sh("b", NULL, "busctl get-property org.ferry.Ferry1 $(" LAB_NEWEST_MIGRATION ") org.ferry.Ferry1.Migration State CopyStorage ParallelConnections", &r);
        g_assert_cmpstr(r.out, ==, "s \"completed\"\ns \"all\"\nu 2\n");
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/storage/copy-all-byte-for-byte", test_copy_all_byte_for_byte);
        g_test_add_func("/lab/storage/copy-inc-onto-existing", test_copy_inc_onto_existing);
        g_test_add_func("/lab/storage/faults", test_faults);
        g_test_add_func("/lab/storage/refusals", test_refusals);
        g_test_add_func("/lab/storage/copy-with-tls", test_copy_with_tls);
        g_test_add_func("/lab/storage/unix-disks-uri", test_unix_disks_uri);
        g_test_add_func("/lab/storage/with-parallel-connections", test_with_parallel_connections);

        return lab_run("storage", hosts);
}
