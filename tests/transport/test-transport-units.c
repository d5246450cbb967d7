/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The transport helper's pure parts: the SELinux socket context and the order of the
 * libselinux calls around socket(), the routing preamble, addresses and DN patterns. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "preamble.h"
#include "selinux-socket.h"
#include "tls.h"
#include "sockets.h"
#include "transport.h"

static void assert_context(const char *seclabel, const char *configured, const char *expected) {
        char *s = NULL;

        g_assert_cmpint(socket_context_compute(seclabel, configured, &s), ==, 0);
        g_assert_cmpstr(s, ==, expected);
        free(s);
}

static void test_context(void) {
        char *s = NULL;

        assert_context(NULL, NULL, FERRY_DEFAULT_SOCKET_CONTEXT);
        assert_context("", "", FERRY_DEFAULT_SOCKET_CONTEXT);
        /* A confined QEMU keeps its categories: the socket gets the domain's range. */
        assert_context("system_u:system_r:svirt_t:s0:c87,c520", NULL,
                       "system_u:system_r:svirt_socket_t:s0:c87,c520");
        assert_context("system_u:system_r:svirt_t:s0:c1.c5", "system_u:object_r:ferry_migration_socket_t:s0",
                       "system_u:object_r:ferry_migration_socket_t:s0:c1.c5");
        assert_context(NULL, "system_u:object_r:ferry_migration_socket_t:s0",
                       "system_u:object_r:ferry_migration_socket_t:s0");
        /* A label without MLS range cannot say which categories QEMU has. */
        g_assert_cmpint(socket_context_compute("system_u:system_r:svirt_t", NULL, &s), ==, -EINVAL);
        g_assert_cmpint(socket_context_compute("garbage", NULL, &s), ==, -EINVAL);
        g_assert_cmpint(socket_context_compute(NULL, "garbage", &s), ==, -EINVAL);
        g_assert_null(s);
}

/* A table that records the calls, with the real socket() underneath. */
static GString *calls;
static int fake_enabled = 1, fake_socket_errno, fake_reset_errno;

static int fake_is_enabled(void) {
        return fake_enabled;
}

static int fake_setsockcreatecon(const char *context) {
        g_string_append_printf(calls, "set(%s) ", context ?: "NULL");
        if (!context && fake_reset_errno) {
                errno = fake_reset_errno;
                return -1;
        }
        return 0;
}

static int fake_socket(int domain, int type, int protocol) {
        g_string_append(calls, "socket ");
        if (fake_socket_errno) {
                errno = fake_socket_errno;
                return -1;
        }
        return socket(domain, type, protocol);
}

static const SelinuxOps fake_ops = {
        .is_selinux_enabled = fake_is_enabled,
        .setsockcreatecon_raw = fake_setsockcreatecon,
        .socket = fake_socket,
};

static void test_call_order(void) {
        const char *ctx = "system_u:system_r:svirt_socket_t:s0:c1,c2";
        int fd;

        calls = g_string_new(NULL);
        fake_enabled = 1, fake_socket_errno = 0, fake_reset_errno = 0;

        fd = socket_create_labelled(&fake_ops, ctx, AF_UNIX, SOCK_STREAM);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpstr(calls->str, ==, "set(system_u:system_r:svirt_socket_t:s0:c1,c2) socket set(NULL) ");
        g_assert_cmpint(fcntl(fd, F_GETFD), ==, FD_CLOEXEC);
        close(fd);

        /* socket() fails: the context is reset all the same. */
        g_string_truncate(calls, 0);
        fake_socket_errno = EMFILE;
        g_assert_cmpint(socket_create_labelled(&fake_ops, ctx, AF_UNIX, SOCK_STREAM), ==, -EMFILE);
        g_assert_cmpstr(calls->str, ==, "set(system_u:system_r:svirt_socket_t:s0:c1,c2) socket set(NULL) ");

        /* The reset fails: no socket, since every later socket would carry the label. */
        g_string_truncate(calls, 0);
        fake_socket_errno = 0;
        fake_reset_errno = EPERM;
        g_assert_cmpint(socket_create_labelled(&fake_ops, ctx, AF_UNIX, SOCK_STREAM), ==, -EPERM);
        g_assert_cmpstr(calls->str, ==, "set(system_u:system_r:svirt_socket_t:s0:c1,c2) socket set(NULL) ");

        /* SELinux disabled: no libselinux call but the check. */
        g_string_truncate(calls, 0);
        fake_enabled = 0, fake_reset_errno = 0;
        fd = socket_create_labelled(&fake_ops, ctx, AF_UNIX, SOCK_STREAM);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpstr(calls->str, ==, "socket ");
        close(fd);

        g_string_free(calls, TRUE);
}

static void test_libselinux(void) {
        /* The real table on this machine; where SELinux is enabled this really labels. */
        int enabled = selinux_ops_libselinux.is_selinux_enabled();
        int fd = socket_create_labelled(&selinux_ops_libselinux, FERRY_DEFAULT_SOCKET_CONTEXT, AF_UNIX, SOCK_STREAM);

        g_test_message("SELinux is %s", enabled > 0 ? "enabled" : "disabled");
        if (enabled > 0 && fd < 0)
                g_test_skip("SELinux enabled and the policy refuses the default context here");
        else {
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(fcntl(fd, F_GETFD), ==, FD_CLOEXEC);
                close(fd);
        }
}

static void test_preamble(void) {
        const char *token = "00112233445566778899aabbccddeeff";
        char buf[PREAMBLE_SIZE], copy[PREAMBLE_SIZE];
        Preamble p;

        preamble_format(token, 5, true, buf);
        g_assert_cmpmem(buf, PREAMBLE_SIZE, "FERRY-TRANSPORT/1 00112233445566778899aabbccddeeff 0005 T\n", PREAMBLE_SIZE);
        g_assert_cmpint(preamble_parse(buf, &p), ==, 0);
        g_assert_cmpstr(p.token, ==, token);
        g_assert_cmpuint(p.index, ==, 5);
        g_assert_true(p.tls);
        g_assert_true(token_equal(p.token, token));
        g_assert_false(token_equal(p.token, "00112233445566778899aabbccddeefe"));

        preamble_format(token, 0, false, buf);
        g_assert_cmpint(preamble_parse(buf, &p), ==, 0);
        g_assert_false(p.tls);

        /* Every single-byte change is refused, except inside the token and index digits. */
        for (size_t i = 0; i < PREAMBLE_SIZE; i++) {
                bool digit = i >= 18 && i < 18 + 32 + 5 && i != 18 + 32;
                memcpy(copy, buf, sizeof(copy));
                copy[i] = 'X';
                g_assert_cmpint(preamble_parse(copy, &p), ==, -EBADMSG);
                if (!digit) {
                        copy[i] = '0';
                        if (buf[i] != '0')
                                g_assert_cmpint(preamble_parse(copy, &p), ==, -EBADMSG);
                }
        }
        /* Upper-case hex and out-of-range stream indexes. */
        memcpy(copy, buf, sizeof(copy));
        copy[18] = 'A';
        g_assert_cmpint(preamble_parse(copy, &p), ==, -EBADMSG);
        preamble_format(token, STREAMS_MAX, true, buf);
        g_assert_cmpint(preamble_parse(buf, &p), ==, -EBADMSG);
}

static void test_host_port(void) {
        char *host = NULL;
        unsigned port = 0;

        g_assert_cmpint(parse_host_port("b.example", &host, &port), ==, 0);
        g_assert_cmpstr(host, ==, "b.example");
        g_assert_cmpuint(port, ==, PEER_PORT_DEFAULT);
        free(host);
        g_assert_cmpint(parse_host_port("127.0.0.1:0", &host, &port), ==, 0);
        g_assert_cmpstr(host, ==, "127.0.0.1");
        g_assert_cmpuint(port, ==, 0);
        free(host);
        g_assert_cmpint(parse_host_port("[::1]:16515", &host, &port), ==, 0);
        g_assert_cmpstr(host, ==, "::1");
        g_assert_cmpuint(port, ==, 16515);
        free(host);
        g_assert_cmpint(parse_host_port("[::1]", &host, &port), ==, 0);
        g_assert_cmpstr(host, ==, "::1");
        free(host);
        host = NULL;
        g_assert_cmpint(parse_host_port("::1", &host, &port), ==, -EINVAL);
        g_assert_cmpint(parse_host_port("b:65536", &host, &port), ==, -EINVAL);
        g_assert_cmpint(parse_host_port("b:", &host, &port), ==, -EINVAL);
        g_assert_cmpint(parse_host_port(":1", &host, &port), ==, -EINVAL);
        g_assert_cmpint(parse_host_port("[::1]x", &host, &port), ==, -EINVAL);
        g_assert_cmpint(parse_host_port("", &host, &port), ==, -EINVAL);
        g_assert_null(host);
}

static void test_dn(void) {
        char *patterns[] = { "CN=*.lab,O=Ferry", "CN=a.example,O=Other", NULL };
        char *none[] = { NULL };

        g_assert_true(tls_dn_allowed(patterns, "CN=b.lab,O=Ferry"));
        g_assert_true(tls_dn_allowed(patterns, "CN=a.example,O=Other"));
        g_assert_false(tls_dn_allowed(patterns, "CN=b.lab,O=Ferry,C=XX"));
        g_assert_false(tls_dn_allowed(patterns, "CN=a.example,O=Ferry"));
        g_assert_false(tls_dn_allowed(none, "CN=anything"));
        g_assert_true(tls_dn_allowed(NULL, "CN=anything"));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/transport/selinux/context", test_context);
        g_test_add_func("/transport/selinux/call-order", test_call_order);
        g_test_add_func("/transport/selinux/libselinux", test_libselinux);
        g_test_add_func("/transport/preamble", test_preamble);
        g_test_add_func("/transport/host-port", test_host_port);
        g_test_add_func("/transport/allowed-dn", test_dn);
        return g_test_run();
}
