/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>

#include "lab.h"

static char *lab_name;
static GPid reaper_pid;
static int reaper_fd = -1;

const char *lab_build_dir(void) {
        const char *d = g_getenv("FERRY_BUILD_ROOT");
        g_assert_nonnull(d);
        return d;
}

const char *lab_source_dir(void) {
        const char *d = g_getenv("FERRY_SOURCE_ROOT");
        g_assert_nonnull(d);
        return d;
}

static char *lab_tool(void) {
        return g_build_filename(lab_source_dir(), "tests", "lab", "ferry-lab", NULL);
}

void lab_result_clear(LabResult *r) {
        g_clear_pointer(&r->out, g_free);
        g_clear_pointer(&r->err, g_free);
}

gboolean lab_available(void) {
        if (geteuid() != 0) {
                g_printerr("lab tests need root (they boot systemd in namespaces)\n");
                return FALSE;
        }
        return TRUE;
}

static void run(const char *const *argv, LabResult *ret) {
        g_autoptr(GError) error = NULL;
        int wait_status;

        *ret = (LabResult) { .status = -1 };
        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                          &ret->out, &ret->err, &wait_status, &error))
                g_error("cannot run %s: %s", argv[0], error->message);
        if (WIFEXITED(wait_status))
                ret->status = WEXITSTATUS(wait_status);
}

/* A failed assertion aborts the test program before lab_down() can run. A child that waits
 * for our end of a pipe to close (on any exit, even SIGKILL) takes the lab down then. */
static void start_reaper(const char *tool, const char *name) {
        int fds[2];
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0)
                g_error("pipe2: %s", g_strerror(errno));
        pid = fork();
        if (pid < 0)
                g_error("fork: %s", g_strerror(errno));
        if (pid == 0) {
                char c;
                close(fds[1]);
                setsid();
                while (read(fds[0], &c, 1) < 0 && errno == EINTR)
                        ;
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(null, STDOUT_FILENO);
                execl(tool, tool, "--lab", name, "down", (char *) NULL);
                _exit(127);
        }
        close(fds[0]);
        reaper_pid = pid;
        reaper_fd = fds[1];
}

void lab_up(const char *name, const char *const *hosts) {
        g_autofree char *tool = lab_tool();
        g_autofree char *stage_name = g_strdup_printf("stage-%s", name);
        g_autofree char *stage = g_build_filename(lab_build_dir(), "tests", "lab", stage_name, NULL);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_auto(LabResult) r = {};

        /* FERRY_LAB_SUFFIX keeps labs of two checkouts on one machine apart. */
        lab_name = g_getenv("FERRY_LAB_SUFFIX") ? g_strdup_printf("%s-%s", name, g_getenv("FERRY_LAB_SUFFIX"))
                                                : g_strdup(name);
        /* Install this build as a package would, into a private tree the hosts overlay on /usr. */
        const char *install[] = { g_getenv("MESON") ?: "meson", "install", "-C", lab_build_dir(),
                                  "--no-rebuild", "--quiet", "--destdir", stage, NULL };
        run(install, &r);
        if (r.status != 0)
                g_error("meson install into %s failed:\n%s%s", stage, r.out, r.err);
        lab_result_clear(&r);

        start_reaper(tool, lab_name);
        g_ptr_array_add(argv, tool);
        g_ptr_array_add(argv, (char *) "--lab");
        g_ptr_array_add(argv, lab_name);
        g_ptr_array_add(argv, (char *) "up");
        g_ptr_array_add(argv, (char *) "--stage");
        g_ptr_array_add(argv, stage);
        g_ptr_array_add(argv, (char *) "--bind");
        g_ptr_array_add(argv, (char *) lab_build_dir());
        g_ptr_array_add(argv, (char *) "--bind");
        g_ptr_array_add(argv, (char *) lab_source_dir());
        for (const char *const *h = hosts; *h; h++)
                g_ptr_array_add(argv, (char *) *h);
        g_ptr_array_add(argv, NULL);
        run((const char *const *) argv->pdata, &r);
        if (r.status != 0)
                g_error("ferry-lab up failed:\n%s%s", r.out, r.err);
}

void lab_down(void) {
        g_autofree char *tool = lab_tool();
        g_auto(LabResult) r = {};

        if (!lab_name)
                return;
        const char *argv[] = { tool, "--lab", lab_name, "down", NULL };
        run(argv, &r);
        if (r.status != 0)
                g_printerr("ferry-lab down failed:\n%s%s", r.out, r.err);
        g_clear_pointer(&lab_name, g_free);
        /* Done by hand: the reaper has nothing left to do. */
        if (reaper_pid > 0) {
                kill(reaper_pid, SIGKILL);
                (void) waitpid(reaper_pid, NULL, 0);
                reaper_pid = 0;
        }
        if (reaper_fd >= 0) {
                close(reaper_fd);
                reaper_fd = -1;
        }
}

void lab_exec(const char *host, const char *user, const char *const *argv, LabResult *ret) {
        g_autofree char *tool = lab_tool();
        g_autoptr(GPtrArray) a = g_ptr_array_new();

        g_ptr_array_add(a, tool);
        g_ptr_array_add(a, (char *) "--lab");
        g_ptr_array_add(a, lab_name);
        g_ptr_array_add(a, (char *) "exec");
        g_ptr_array_add(a, (char *) host);
        if (user) {
                g_ptr_array_add(a, (char *) "--user");
                g_ptr_array_add(a, (char *) user);
        }
        g_ptr_array_add(a, (char *) "--");
        for (const char *const *p = argv; *p; p++)
                g_ptr_array_add(a, (char *) *p);
        g_ptr_array_add(a, NULL);
        run((const char *const *) a->pdata, ret);
        g_test_message("[%s%s%s] %s -> %d\n%s%s", host, user ? " as " : "", user ? user : "",
                       argv[0], ret->status, ret->out, ret->err);
}

void lab_sh(const char *host, const char *user, const char *script, LabResult *ret) {
        const char *argv[] = { "/bin/sh", "-c", script, NULL };
        lab_exec(host, user, argv, ret);
}

char *lab_host_dir(const char *host) {
        g_autofree char *tool = lab_tool();
        g_auto(LabResult) r = {};
        const char *argv[] = { tool, "--lab", lab_name, "path", host, NULL };

        run(argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        return g_strdup(g_strstrip(r.out));
}

void lab_pki_create(void) {
        g_autofree char *script = g_build_filename(lab_source_dir(), "tests", "lab", "lab-pki.sh", NULL);
        g_autofree char *work = g_dir_make_tmp("ferry-lab-pki-XXXXXX", NULL);
        g_autofree char *dir_a = lab_host_dir("a"), *dir_b = lab_host_dir("b");
        g_auto(LabResult) r = {};

        g_assert_nonnull(work);
        const char *make[] = { "sh", script, work, dir_a, dir_b, NULL };
        run(make, &r);
        if (r.status != 0)
                g_error("%s failed: %s", script, r.err);
        lab_result_clear(&r);
        const char *rm[] = { "rm", "-rf", work, NULL };
        run(rm, &r);
}

gboolean lab_wait_for(const char *host, const char *script, guint timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout_ms * 1000;

        /* Tests may wait on outside events (polkitd noticing a rules file, a unit stopping)
         * that have no notification we can subscribe to from here; bounded retries. */
        for (;;) {
                g_auto(LabResult) r = {};
                lab_sh(host, NULL, script, &r);
                if (r.status == 0)
                        return TRUE;
                if (g_get_monotonic_time() > deadline)
                        return FALSE;
                g_usleep(100 * 1000);
        }
}

static char *interface_xml(GDBusInterfaceInfo *i) {
        GString *s = g_string_new(NULL);
        g_dbus_interface_info_generate_xml(i, 0, s);
        return g_string_free(s, FALSE);
}

void lab_assert_introspection_matches(const char *host, const char *path, const char *interface) {
        g_autofree char *file = g_strconcat(interface, ".xml", NULL);
        g_autofree char *contract_path = g_build_filename(lab_source_dir(), "dbus-interfaces", file, NULL);
        g_autoptr(GDBusNodeInfo) live = NULL, contract = NULL;
        g_autofree char *text = NULL, *want = NULL, *got = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(LabResult) r = {};
        GDBusInterfaceInfo *live_iface, *contract_iface;
        const char *argv[] = { "gdbus", "introspect", "--system", "--dest", "org.ferry.Ferry1",
                               "--object-path", path, "--xml", NULL };

        lab_exec(host, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        live = g_dbus_node_info_new_for_xml(r.out, &error);
        g_assert_no_error(error);
        g_assert_true(g_file_get_contents(contract_path, &text, NULL, NULL));
        contract = g_dbus_node_info_new_for_xml(text, &error);
        g_assert_no_error(error);

        live_iface = g_dbus_node_info_lookup_interface(live, interface);
        contract_iface = g_dbus_node_info_lookup_interface(contract, interface);
        g_assert_nonnull(live_iface);
        g_assert_nonnull(contract_iface);
        want = interface_xml(contract_iface);
        got = interface_xml(live_iface);
        g_assert_cmpstr(got, ==, want);

        /* And nothing of ours is published that the contract lacks. */
        for (GDBusInterfaceInfo **i = live->interfaces; i && *i; i++)
                if (g_str_has_prefix((*i)->name, "org.ferry.")) {
                        g_autofree char *f = g_strconcat((*i)->name, ".xml", NULL);
                        g_autofree char *p = g_build_filename(lab_source_dir(), "dbus-interfaces", f, NULL);
                        g_assert_true(g_file_test(p, G_FILE_TEST_EXISTS));
                }
}

int lab_run(const char *name, const char *const *hosts) {
        int ret;

        if (!lab_available()) {
                /* TAP's "skip all": meson reports the program as skipped, not passed. */
                g_print("1..0 # SKIP lab tests need root\n");
                return 0;
        }
        lab_up(name, hosts);
        for (const char *const *h = hosts; *h; h++) {
                g_auto(LabResult) r = {};
                lab_sh(*h, NULL, "mkdir -p /run/ferry-test", &r);
                g_assert_cmpint(r.status, ==, 0);
        }
        ret = g_test_run();
        lab_down();
        return ret;
}
