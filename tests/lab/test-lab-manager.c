/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The manager object on a real lab host: bus activation, introspection against our XML,
 * polkit decisions, idle exit and re-activation, ferryctl's messages. Test order matters:
 * the first test proves that nothing started ferryd before the first call. */

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "lab.h"

#define HOST "a"
#define ACTION_MANAGE "org.ferry.Ferry1.manage-service"

static char *client;

static void client_run(const char *user, const char *cmd, LabResult *r) {
        const char *argv[] = { client, cmd, NULL };
        lab_exec(HOST, user, argv, r);
}

static char *unit_property(const char *property) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "systemctl", "show", "--value", "-p", property, "ferryd.service", NULL };
        lab_exec(HOST, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        return g_strdup(g_strstrip(r.out));
}

static void write_host_file(const char *subdir, const char *name, const char *contents) {
        g_autofree char *dir = lab_host_dir(HOST);
        g_autofree char *path = g_build_filename(dir, subdir, name, NULL);
        if (contents)
                g_assert_true(g_file_set_contents(path, contents, -1, NULL));
        else
                (void) g_unlink(path);
}

static void test_bus_activation(void) {
        g_auto(LabResult) r = {};
        g_autofree char *state = unit_property("ActiveState");

        g_assert_cmpstr(state, ==, "inactive");
        client_run(NULL, "version", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "Version=0.1.0\n"));
        g_assert_nonnull(strstr(r.out, "Hostname=" HOST "\n"));
        g_free(state);
        state = unit_property("ActiveState");
        g_assert_cmpstr(state, ==, "active");
}

static void test_busctl_introspect(void) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "busctl", "introspect", "org.ferry.Ferry1", "/org/ferry/Ferry1", NULL };

        lab_exec(HOST, NULL, argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "org.ferry.Ferry1.Manager"));
        g_assert_nonnull(strstr(r.out, ".Reload"));
        g_assert_nonnull(strstr(r.out, "org.freedesktop.DBus.ObjectManager"));
}

static void test_introspection_equals_xml(void) {
        lab_assert_introspection_matches(HOST, "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager");
}

static void test_ferryctl_version(void) {
        g_auto(LabResult) r = {};
        const char *argv[] = { "ferryctl", "version", NULL };

        lab_exec(HOST, "nobody", argv, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_cmpstr(r.out, ==, "Client: ferryctl 0.1.0\nDaemon: ferryd 0.1.0 on " HOST "\n");
}

static void test_unprivileged_refused_unless_rule(void) {
        g_auto(LabResult) r = {};
        const char *ctl[] = { "ferryctl", "reload", NULL };
        g_autofree char *reload_as_nobody = g_strdup_printf(
                "setpriv --reuid=nobody --regid=nogroup --clear-groups %s reload", client);

        /* Root is always allowed by polkit. */
        client_run(NULL, "reload", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* Without the interactive flag: told that a password would be needed. */
        client_run("nobody", "reload", &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.out, "ERROR=org.freedesktop.DBus.Error.InteractiveAuthorizationRequired\n"));
        g_assert_nonnull(strstr(r.out, ACTION_MANAGE));
        lab_result_clear(&r);

        /* With it, but no agent to ask: denied, naming the action. */
        client_run("nobody", "reload-interactive", &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.out, "ERROR=org.freedesktop.DBus.Error.AccessDenied\n"));
        g_assert_nonnull(strstr(r.out, ACTION_MANAGE));
        lab_result_clear(&r);

        lab_exec(HOST, "nobody", ctl, &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, ACTION_MANAGE));
        lab_result_clear(&r);

        /* Reading stays open to everyone. */
        client_run("nobody", "version", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        write_host_file("polkit-rules", "50-ferry-test.rules",
                        "polkit.addRule(function(action, subject) {\n"
                        "  if (action.id == \"" ACTION_MANAGE "\" && subject.user == \"nobody\")\n"
                        "    return polkit.Result.YES;\n"
                        "});\n");
        /* polkitd re-reads rules on its own inotify event; give it time. */
        g_assert_true(lab_wait_for(HOST, reload_as_nobody, 15000));

        write_host_file("polkit-rules", "50-ferry-test.rules", NULL);
        g_autofree char *denied_again = g_strdup_printf("! %s", reload_as_nobody);
        g_assert_true(lab_wait_for(HOST, denied_again, 15000));
}

static void test_invalid_config_keeps_old(void) {
        g_auto(LabResult) r = {};

        write_host_file("etc-ferry", "ferryd.conf", "[Daemon]\nIdleTimeoutSec=-5\n");
        client_run(NULL, "reload", &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.out, "ERROR=org.ferry.Ferry1.Error.InvalidConfiguration\n"));
        lab_result_clear(&r);

        client_run(NULL, "version", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_nonnull(strstr(r.out, "IdleTimeoutUSec=120000000\n"));
        write_host_file("etc-ferry", "ferryd.conf", "");
}

static void test_idle_exit_and_reactivation(void) {
        g_auto(LabResult) r = {};
        g_autofree char *pid_before = NULL, *pid_after = NULL, *result = NULL;

        write_host_file("etc-ferry", "ferryd.conf", "[Daemon]\nIdleTimeoutSec=1\n");
        client_run(NULL, "reload", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        client_run(NULL, "version", &r);
        g_assert_nonnull(strstr(r.out, "IdleTimeoutUSec=1000000\n"));
        pid_before = unit_property("MainPID");
        g_assert_cmpstr(pid_before, !=, "0");

        g_assert_true(lab_wait_for(HOST, "! systemctl -q is-active ferryd.service", 10000));
        result = unit_property("Result");
        g_assert_cmpstr(result, ==, "success");

        /* Back to the default first, or the new ferryd would be gone again within a second. */
        write_host_file("etc-ferry", "ferryd.conf", "");
        lab_result_clear(&r);
        client_run(NULL, "version", &r);
        g_assert_cmpint(r.status, ==, 0);
        pid_after = unit_property("MainPID");
        g_assert_cmpstr(pid_after, !=, "0");
        g_assert_cmpstr(pid_after, !=, pid_before);
}

static void test_ferryctl_service_missing(void) {
        g_auto(LabResult) r = {};
        const char *ctl[] = { "ferryctl", "version", NULL };

        lab_sh(HOST, NULL, "systemctl stop ferryd.service && systemctl mask --runtime ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        lab_exec(HOST, NULL, ctl, &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "is not available"));
        lab_result_clear(&r);

        lab_sh(HOST, NULL, "systemctl unmask --runtime ferryd.service", &r);
        g_assert_cmpint(r.status, ==, 0);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { HOST, NULL };
        g_test_init(&argc, &argv, NULL);
        client = g_build_filename(lab_build_dir(), "tests", "lab", "ferry-test-client", NULL);

        g_test_add_func("/lab/manager/bus-activation", test_bus_activation);
        g_test_add_func("/lab/manager/busctl-introspect", test_busctl_introspect);
        g_test_add_func("/lab/manager/introspection-equals-xml", test_introspection_equals_xml);
        g_test_add_func("/lab/manager/ferryctl-version", test_ferryctl_version);
        g_test_add_func("/lab/manager/unprivileged-refused-unless-rule", test_unprivileged_refused_unless_rule);
        g_test_add_func("/lab/manager/invalid-config-keeps-old", test_invalid_config_keeps_old);
        g_test_add_func("/lab/manager/idle-exit-and-reactivation", test_idle_exit_and_reactivation);
        g_test_add_func("/lab/manager/ferryctl-service-missing", test_ferryctl_service_missing);

        return lab_run("manager", hosts);
}
