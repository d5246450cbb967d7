/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <glib.h>
#include <glib/gstdio.h>
#include <syslog.h>

#include "config.h"

static int parse(Config *c, const char *text) {
        return config_parse(c, text, strlen(text), "test.conf");
}

static void test_defaults(void) {
        Config c;
        config_init(&c);
        g_assert_cmpuint(c.idle_timeout_sec, ==, CONFIG_IDLE_TIMEOUT_SEC_DEFAULT);
        g_assert_cmpint(c.log_level, ==, LOG_INFO);
        g_assert_null(c.hostname);
        /* An empty file, and one with only comments, change nothing. */
        g_assert_cmpint(parse(&c, ""), ==, 0);
        g_assert_cmpint(parse(&c, "# comment\n[Daemon]\n#IdleTimeoutSec=5\n"), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, CONFIG_IDLE_TIMEOUT_SEC_DEFAULT);
        config_done(&c);
}

static void test_values(void) {
        Config c;
        config_init(&c);
        g_assert_cmpint(parse(&c, "[Daemon]\nIdleTimeoutSec = 7 \nLogLevel=debug\nHostname=host-b.example\n"), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, 7);
        g_assert_cmpint(c.log_level, ==, LOG_DEBUG);
        g_assert_cmpstr(c.hostname, ==, "host-b.example");
        /* 0 means never exit. */
        g_assert_cmpint(parse(&c, "[Daemon]\nIdleTimeoutSec=0\n"), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, 0);
        /* Keys not in the text keep what they had. */
        g_assert_cmpstr(c.hostname, ==, "host-b.example");
        /* Empty resets to the default. */
        g_assert_cmpint(parse(&c, "[Daemon]\nHostname=\n"), ==, 0);
        g_assert_null(c.hostname);
        g_assert_cmpint(parse(&c, "[Daemon]\nHostname=10.77.0.2\n"), ==, 0);
        g_assert_cmpstr(c.hostname, ==, "10.77.0.2");
        g_assert_cmpint(parse(&c, "[Migration]\nPorts=50000-50010\n"), ==, 0);
        g_assert_cmpuint(c.migration_port_min, ==, 50000);
        g_assert_cmpuint(c.migration_port_max, ==, 50010);
        g_assert_false(c.migration_force_tls);
        g_assert_cmpint(parse(&c, "[Daemon]\nHostname=fe80::1\n"), ==, 0);
        g_assert_cmpstr(c.hostname, ==, "fe80::1");
        config_done(&c);
}

static void test_invalid_keeps_old(void) {
        static const char *const bad[] = {
                "[Daemon]\nIdleTimeoutSec=-1\n",
                "[Daemon]\nIdleTimeoutSec=abc\n",
                "[Daemon]\nIdleTimeoutSec=\n",
                "[Daemon]\nIdleTimeoutSec=86401\n",
                "[Daemon]\nIdleTimeoutSec=99999999999999999999999\n",
                "[Daemon]\nLogLevel=loud\n",
                "[Daemon]\nHostname=has space\n",
                "[Daemon]\nHostname=-leading\n",
                "[Daemon]\nHostname=a..b\n",
                "[Daemon]\nHostname=../../etc\n",
                "[Daemon]\nIdleTimeoutSec=5\nHostname=bad_name\n", /* nothing of it applies */
                "[Migration]\nPorts=80-90\n",
                "[Migration]\nPorts=50010-50000\n",
                "[Migration]\nPorts=+1024-2000\n",
                "[Migration]\nForceTLS=maybe\n",
                "[Migration]\nForceTLS=\n",
                "[Migration]\nTunnelPlaintext=sometimes\n",
                "[Migration]\nTunnelPort=0\n",
                "[Migration]\nTunnelPort=65536\n",
                "[Migration]\nTunnelPort=16514x\n",
                "[Migration]\nKeepEndedSec=0\n",
                "[Migration]\nKeepEndedSec=86401\n",
                "[Migration]\nKeepEndedSec=-5\n",
                "[Migration]\nKeepEndedSec=5min\n",
                "not a key file\n",
                "[Daemon\nIdleTimeoutSec=5\n",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                Config c;
                config_init(&c);
                g_assert_cmpint(parse(&c, "[Daemon]\nIdleTimeoutSec=9\nHostname=keep\n"), ==, 0);
                g_test_message("input: %s", bad[i]);
                g_assert_cmpint(parse(&c, bad[i]), ==, -EINVAL);
                g_assert_cmpuint(c.idle_timeout_sec, ==, 9);
                g_assert_cmpstr(c.hostname, ==, "keep");
                config_done(&c);
        }
}

static void test_keep_ended(void) {
        Config c;
        config_init(&c);
        g_assert_cmpuint(c.migration_keep_ended_sec, ==, 300);
        g_assert_cmpint(parse(&c, "[Migration]\nKeepEndedSec=3600\n"), ==, 0);
        g_assert_cmpuint(c.migration_keep_ended_sec, ==, 3600);
        g_assert_cmpint(parse(&c, "[Migration]\nKeepEndedSec=0\n"), ==, -EINVAL);
        g_assert_cmpuint(c.migration_keep_ended_sec, ==, 3600);
        config_done(&c);
}

static void test_force_tls(void) {
        Config c;
        config_init(&c);
        g_assert_false(c.migration_force_tls);
        g_assert_cmpint(parse(&c, "[Migration]\nForceTLS=yes\n"), ==, 0);
        g_assert_true(c.migration_force_tls);
        /* Keys not in the text keep what they had. */
        g_assert_cmpint(parse(&c, "[Migration]\nPorts=50000-50010\n"), ==, 0);
        g_assert_true(c.migration_force_tls);
        g_assert_cmpint(parse(&c, "[Migration]\nForceTLS = off \n"), ==, 0);
        g_assert_false(c.migration_force_tls);
        g_assert_cmpint(parse(&c, "[Migration]\nForceTLS=TRUE\n"), ==, 0);
        g_assert_true(c.migration_force_tls);
        /* A bad value changes nothing. */
        g_assert_cmpint(parse(&c, "[Migration]\nForceTLS=2\n"), ==, -EINVAL);
        g_assert_true(c.migration_force_tls);
        g_assert_cmpint(parse(&c, "[Migration]\nForceTLS=no\n"), ==, 0);
        g_assert_false(c.migration_force_tls);
        /* Plaintext tunnels: off unless the administrator says so. */
        g_assert_false(c.migration_tunnel_plaintext);
        g_assert_cmpint(parse(&c, "[Migration]\nTunnelPlaintext=yes\n"), ==, 0);
        g_assert_true(c.migration_tunnel_plaintext);
        g_assert_cmpint(parse(&c, "[Migration]\nTunnelPlaintext=1x\n"), ==, -EINVAL);
        g_assert_true(c.migration_tunnel_plaintext);
        /* The shared peer port the destination names to the source. */
        g_assert_cmpuint(c.migration_tunnel_port, ==, 16514);
        g_assert_cmpint(parse(&c, "[Migration]\nTunnelPort=443\n"), ==, 0);
        g_assert_cmpuint(c.migration_tunnel_port, ==, 443);
        config_done(&c);
}

static void test_unknown_ignored(void) {
        Config c;
        config_init(&c);
        g_assert_cmpint(parse(&c, "[Daemon]\nIdleTimeoutSec=3\nNoSuchKey=1\n[Other]\nX=y\n"), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, 3);
        config_done(&c);
}

static void test_hostname_limits(void) {
        g_autofree char *long_label = g_strnfill(64, 'a');
        g_autofree char *ok_label = g_strnfill(63, 'a');
        g_autofree char *too_long = g_strnfill(254, 'a');

        g_assert_true(config_hostname_is_valid("a"));
        g_assert_true(config_hostname_is_valid(ok_label));
        g_assert_false(config_hostname_is_valid(long_label));
        g_assert_false(config_hostname_is_valid(too_long));
        g_assert_false(config_hostname_is_valid(""));
        g_assert_false(config_hostname_is_valid(NULL));
        g_assert_false(config_hostname_is_valid("a-"));
        g_assert_false(config_hostname_is_valid("a/b"));
}

static void test_load_missing_and_file(void) {
        g_autofree char *dir = g_dir_make_tmp("ferry-config-XXXXXX", NULL);
        g_autofree char *path = g_build_filename(dir, "ferryd.conf", NULL);
        Config c;

        config_init(&c);
        /* A missing file is all defaults, not an error: a fresh install has none. */
        g_assert_cmpint(config_load(&c, path), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, CONFIG_IDLE_TIMEOUT_SEC_DEFAULT);
        g_assert_true(g_file_set_contents(path, "[Daemon]\nIdleTimeoutSec=11\n", -1, NULL));
        g_assert_cmpint(config_load(&c, path), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, 11);
        config_done(&c);
        g_unlink(path);
        g_rmdir(dir);
}

/* The file we install documents the defaults: parsing it must give exactly them. */
static void test_shipped_file_is_defaults(void) {
        const char *path = g_getenv("FERRY_SHIPPED_CONF");
        Config c, d;

        if (!path) {
                g_test_skip("FERRY_SHIPPED_CONF not set");
                return;
        }
        config_init(&c);
        config_init(&d);
        g_assert_cmpint(config_load(&c, path), ==, 0);
        g_assert_cmpuint(c.idle_timeout_sec, ==, d.idle_timeout_sec);
        g_assert_cmpint(c.log_level, ==, d.log_level);
        g_assert_null(c.hostname);
        g_assert_true(c.migration_force_tls == d.migration_force_tls);
        config_done(&c);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/config/defaults", test_defaults);
        g_test_add_func("/config/values", test_values);
        g_test_add_func("/config/invalid-keeps-old", test_invalid_keeps_old);
        g_test_add_func("/config/force-tls", test_force_tls);
        g_test_add_func("/config/keep-ended", test_keep_ended);
        g_test_add_func("/config/unknown-ignored", test_unknown_ignored);
        g_test_add_func("/config/hostname-limits", test_hostname_limits);
        g_test_add_func("/config/load", test_load_missing_and_file);
        g_test_add_func("/config/shipped-file", test_shipped_file_is_defaults);
        return g_test_run();
}
