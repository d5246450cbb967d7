/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The seed's "Migration using only UNIX sockets": hosts a and b share one directory,
 * /tmp/migdir, and nothing else is used for the migration. b's system bus is reachable in it at
 * /tmp/migdir/ferry-sock, the destination QEMU listens for the RAM at /tmp/migdir/qemu-sock and
 * its NBD server at /tmp/migdir/nbd-sock; eth0 is down in both hosts while it runs. */

#include <glib.h>
#include <stdbool.h>
#include <string.h>

#include "lab-guest.h"

#define CTL LAB_CTL
#define IMAGES LAB_DISK_IMAGES
#define IMAGE IMAGES "/ux1.img"
#define MIGDIR "/tmp/migdir"

static char *shared_dir(void) {
        /* The build tree is bound into every host of the lab, at the same path: a directory in it
         * is one both hosts see (and only they: this lab has no other host). */
        return g_build_filename(lab_build_dir(), "tests", "lab", "migdir-unix", NULL);
}

static void sh_ok(const char *host, const char *script) {
        g_auto(LabResult) r = {};
        lab_sh(host, NULL, script, &r);
        if (r.status != 0)
                g_test_message("%s: %s%s", script, r.out, r.err);
        g_assert_cmpint(r.status, ==, 0);
}

static void sh_fails(const char *host, const char *script) {
        g_auto(LabResult) r = {};
        lab_sh(host, NULL, script, &r);
        g_assert_cmpint(r.status, !=, 0);
}

/* The path of a file of host's /var on the machine (the upper layer of the host's /var). */
static char *var_file(const char *host, const char *path_in_var) {
        g_autofree char *dir = lab_host_dir(host);
        return g_build_filename(dir, "var-upper", path_in_var, NULL);
}

/* /tmp/migdir in host is the shared directory. ferryd.service has PrivateTmp=yes: its /tmp is
 * its own, so the directory is given to it with BindPaths= (as an administrator would). QEMU runs
 * in the host's own mount namespace and sees it as it is. */
static void share_migdir(const char *host, const char *shared) {
        g_autofree char *script = g_strdup_printf(
                "mkdir -p " MIGDIR " && mount --bind %s " MIGDIR " && "
                "mkdir -p /run/systemd/system/ferryd.service.d && "
                "printf '[Service]\\nBindPaths=" MIGDIR "\\n' >/run/systemd/system/ferryd.service.d/migdir.conf && "
                "systemctl daemon-reload && systemctl try-restart ferryd.service", shared);
        sh_ok(host, script);
}

static void test_unix_sockets_only(void) {
        g_autofree char *shared = shared_dir();
        g_autofree char *src = var_file("a", "lib/ferry/images/ux1.img");
        g_autofree char *dst = var_file("b", "lib/ferry/images/ux1.img");
        g_autofree char *checker = g_build_filename(lab_build_dir(), "tests", "guest", "ferry-guest-check", NULL);
        g_auto(LabResult) r = {};

        const char *fresh[] = { "sh", "-c", "rm -rf \"$0\" && mkdir -m 0700 \"$0\"", shared, NULL };
        lab_local(fresh, &r);
        g_assert_cmpint(r.status, ==, 0);
        share_migdir("a", shared);
        share_migdir("b", shared);
        /* b's bus must be reachable at /tmp/migdir/ferry-sock from a. A bind mount of
         * /run/dbus/system_bus_socket made inside b would exist in b's mount namespace only; a
         * socket is reached through the file bind() made, so the listener has to be made in the
         * shared directory: a socket unit there, forwarding to the bus. */
        sh_ok("b", "systemd-run --quiet --unit=migdir-ferry-sock --socket-property=ListenStream=" MIGDIR "/ferry-sock "
                   "/usr/lib/systemd/systemd-socket-proxyd /run/dbus/system_bus_socket");

        lab_disk_guest_create("a", "ux1");
        sh_ok("b", "mkdir -p " IMAGES " && rm -f " IMAGE);

        /* No network route between a and b from here on. */
        sh_ok("a", "ip link set eth0 down");
        sh_ok("b", "ip link set eth0 down");
        sh_fails("a", "ip route get 10.77.0.2");
        sh_fails("a", "timeout 20 ssh -o BatchMode=yes -o ConnectTimeout=5 10.77.0.2 true");
        sh_fails("b", "ip route get 10.77.0.1");

        /* The seed's command, with the disk copied too; --suspend so that the images can be
         * compared while nothing writes them. */
        CTL("a", &r, "migrate", "--p2p", "--desturi", "ferry+unix:///system?socket=" MIGDIR "/ferry-sock",
            "--migrateuri", "unix://" MIGDIR "/qemu-sock", "--copy-storage-all", "--disks-uri",
            "unix://" MIGDIR "/nbd-sock", "--suspend", "ux1");
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);

        g_autofree char *on_b = lab_domain_state("b", "ux1");
        g_assert_cmpstr(on_b, ==, "paused");
        g_autofree char *on_a = lab_domain_state("a", "ux1");
        g_assert_cmpstr(on_a, ==, "absent");
        g_assert_true(lab_wait_for("a", "! systemctl is-active -q ferry-qemu-ux1.service", 30000));
        lab_result_clear(&r);
        const char *cmp[] = { "cmp", src, dst, NULL };
        lab_local(cmp, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        const char *check[] = { checker, "--disk", "--seed", "11", dst, NULL };
        lab_local(check, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "OK disk blocks=1024 "));

        /* The source's job went where the command said, over nothing but the shared directory (the
         * hypervisor URI as QEMU spells it). */
        lab_result_clear(&r);
        lab_sh("a", NULL, "busctl get-property org.ferry.Ferry1 $(" LAB_NEWEST_MIGRATION ") org.ferry.Ferry1.Migration State DestinationURI HypervisorURI DisksURI",
               &r);
        g_assert_cmpstr(r.out, ==, "s \"completed\"\ns \"ferry+unix:///system?socket=" MIGDIR "/ferry-sock\"\n"
                                   "s \"unix:" MIGDIR "/qemu-sock\"\ns \"unix://" MIGDIR "/nbd-sock\"\n");

        /* Nothing is left in the shared directory but the bus socket the test made: the QEMUs'
         * listening sockets are gone with the migration. */
        lab_result_clear(&r);
        const char *ls[] = { "ls", "-A", shared, NULL };
        lab_local(ls, &r);
        g_assert_cmpstr(r.out, ==, "ferry-sock\n");

        /* The guest runs on in b, with its RAM and disk as it left them. */
        lab_result_clear(&r);
        CTL("b", &r, "resume", "ux1");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(lab_wait_for("b", "test $(grep -c 'ALIVE.*disk-written' /run/ferry-test/ux1.log) -ge 3", 90000));
        lab_guest_assert_intact("b", "ux1", 3, true);
        lab_guest_assert_dump_checks("b", "ux1", "ux1-unix.dump");

        sh_ok("a", "ip link set eth0 up");
        sh_ok("b", "ip link set eth0 up");
        lab_result_clear(&r);
        const char *rm[] = { "rm", "-rf", shared, NULL };
        lab_local(rm, &r);
}

/* --desturi or the positional DEST-URI: exactly one of the two. */
static void test_desturi_usage(void) {
        g_auto(LabResult) r = {};

        CTL("a", &r, "migrate", "--p2p", "--desturi", LAB_TO_B, "ux1", LAB_TO_B);
        g_assert_cmpint(r.status, ==, 2);
        g_assert_nonnull(strstr(r.err, "--desturi DEST-URI DOMAIN"));
        lab_result_clear(&r);
        CTL("a", &r, "migrate", "--p2p", "ux1");
        g_assert_cmpint(r.status, ==, 2);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/unix/sockets-only", test_unix_sockets_only);
        g_test_add_func("/lab/unix/desturi-usage", test_desturi_usage);

        return lab_run("unix", hosts);
}
