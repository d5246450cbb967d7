/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-bus.h>

#include "build-config.h"
#include "config.h"
#include "migration-uri.h"

/* ---- destination URIs ---- */

typedef struct FerryGood {
        const char *uri;
        FerryUriTransport transport;
        const char *user, *host;
        unsigned port;
        const char *socket;
        const char *canonical;          /* NULL: same as uri */
        const char *bus_address;        /* NULL: none (local) */
} FerryGood;

static const FerryGood ferry_good[] = {
        { "ferry:///system", FERRY_URI_LOCAL, NULL, NULL, 0, NULL, NULL, NULL },
        { "FERRY:///system", FERRY_URI_LOCAL, NULL, NULL, 0, NULL, "ferry:///system", NULL },
        { "ferry+unix:///system?socket=/tmp/migdir/test-sock-driver", FERRY_URI_UNIX, NULL, NULL, 0,
          "/tmp/migdir/test-sock-driver", NULL, "unix:path=/tmp/migdir/test-sock-driver" },
        { "ferry+unix:///system", FERRY_URI_UNIX, NULL, NULL, 0, FERRY_URI_DEFAULT_SOCKET,
          "ferry+unix:///system?socket=" FERRY_URI_DEFAULT_SOCKET, "unix:path=" FERRY_URI_DEFAULT_SOCKET },
        /* normalized, and '+', '@', '~' escaped for sd-bus */
        { "ferry+unix:///system?socket=//run/./ferry//a+b@c~d", FERRY_URI_UNIX, NULL, NULL, 0,
          "/run/ferry/a+b@c~d", "ferry+unix:///system?socket=/run/ferry/a+b@c~d",
          "unix:path=/run/ferry/a%2bb%40c%7ed" },
        { "ferry+ssh://desthost/system", FERRY_URI_SSH, NULL, "desthost", 0, NULL, NULL,
          "unixexec:path=ssh,argv1=-xT,argv2=--,argv3=desthost,argv4=systemd-stdio-bridge" },
        { "ferry+ssh://root@desthost.example.com:2222/system", FERRY_URI_SSH, "root", "desthost.example.com",
          2222, NULL, NULL,
          "unixexec:path=ssh,argv1=-xT,argv2=-p,argv3=2222,argv4=--,argv5=root%40desthost.example.com,"
          "argv6=systemd-stdio-bridge" },
        { "ferry+ssh://10.0.0.1/system", FERRY_URI_SSH, NULL, "10.0.0.1", 0, NULL, NULL,
          "unixexec:path=ssh,argv1=-xT,argv2=--,argv3=10.0.0.1,argv4=systemd-stdio-bridge" },
        { "ferry+ssh://_svc.migrate-1@[FE80::0001]:22/system", FERRY_URI_SSH, "_svc.migrate-1", "fe80::1", 22,
          NULL, "ferry+ssh://_svc.migrate-1@[fe80::1]:22/system",
          "unixexec:path=ssh,argv1=-xT,argv2=-p,argv3=22,argv4=--,argv5=_svc.migrate-1%40fe80%3a%3a1,"
          "argv6=systemd-stdio-bridge" },
        { "ferry+ssh://[::1]/system", FERRY_URI_SSH, NULL, "::1", 0, NULL, NULL,
          "unixexec:path=ssh,argv1=-xT,argv2=--,argv3=%3a%3a1,argv4=systemd-stdio-bridge" },
        { "ferry+ssh://a-b.c-d/system", FERRY_URI_SSH, NULL, "a-b.c-d", 0, NULL, NULL,
          "unixexec:path=ssh,argv1=-xT,argv2=--,argv3=a-b.c-d,argv4=systemd-stdio-bridge" },
        /* The default port is explicit, '=' ':' '[' ']' escaped; the name without brackets. */
        { "ferry+tls://desthost/system", FERRY_URI_TLS, NULL, "desthost", 0, NULL, NULL,
          "unixexec:path=" FERRY_LIBEXECDIR "/ferry-transport,argv1=--bus-connect%3ddesthost%3a16514,"
          "argv2=--peer-name%3ddesthost,argv3=--pki-dir%3d" FERRY_SYSCONF_DIR "/pki" },
        { "ferry+tls://[2001:db8::5]:16514/system", FERRY_URI_TLS, NULL, "2001:db8::5", 16514, NULL, NULL,
          "unixexec:path=" FERRY_LIBEXECDIR "/ferry-transport,argv1=--bus-connect%3d%5b2001%3adb8%3a%3a5%5d%3a16514,"
          "argv2=--peer-name%3d2001%3adb8%3a%3a5,argv3=--pki-dir%3d" FERRY_SYSCONF_DIR "/pki" },
        { "ferry+tls://host-b:65535/system", FERRY_URI_TLS, NULL, "host-b", 65535, NULL, NULL,
          "unixexec:path=" FERRY_LIBEXECDIR "/ferry-transport,argv1=--bus-connect%3dhost-b%3a65535,"
          "argv2=--peer-name%3dhost-b,argv3=--pki-dir%3d" FERRY_SYSCONF_DIR "/pki" },
};

static void assert_ferry_equal(const FerryUri *a, const FerryUri *b) {
        g_assert_cmpint(a->transport, ==, b->transport);
        g_assert_cmpstr(a->user, ==, b->user);
        g_assert_cmpstr(a->host, ==, b->host);
        g_assert_cmpuint(a->port, ==, b->port);
        g_assert_cmpstr(a->socket, ==, b->socket);
}

static void test_ferry_accepted(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(ferry_good); i++) {
                const FerryGood *t = &ferry_good[i];
                _cleanup_(ferry_uri_freep) FerryUri *u = NULL, *again = NULL;
                g_autofree char *error = NULL, *s = NULL, *address = NULL;
                int r;

                g_test_message("%s", t->uri);
                g_assert_cmpint(ferry_uri_parse(t->uri, &u, &error), ==, 0);
                g_assert_null(error);
                g_assert_cmpint(u->transport, ==, t->transport);
                g_assert_cmpstr(u->user, ==, t->user);
                g_assert_cmpstr(u->host, ==, t->host);
                g_assert_cmpuint(u->port, ==, t->port);
                g_assert_cmpstr(u->socket, ==, t->socket);

                s = ferry_uri_to_string(u);
                g_assert_cmpstr(s, ==, t->canonical ?: t->uri);
                g_assert_cmpint(ferry_uri_parse(s, &again, NULL), ==, 0);
                assert_ferry_equal(u, again);

                r = ferry_uri_to_bus_address(u, NULL, &address);
                g_assert_cmpint(r, ==, 0);
                g_assert_cmpstr(address, ==, t->bus_address);
        }
}

typedef struct Bad {
        const char *uri;
        const char *message;            /* a substring of the error */
} Bad;

static const Bad ferry_bad[] = {
        { "", "Empty URI" },
        { "system", "no scheme" },
        { "/system", "no scheme" },
        { "1ferry:///system", "no scheme" },
        { "qemu+ssh://desthost/system", "Unsupported destination URI scheme 'qemu+ssh:'" },
        { "tcp://10.0.0.1/", "'tcp:' is a hypervisor URI" },
        { "exec:ssh desthost", "space" },
        { "exec:/bin/true", "Unsupported destination URI scheme 'exec:'" },
        { "ferry+tcp://host/system", "Unsupported destination URI scheme 'ferry+tcp:'" },
        { "ferry:/system", "must be followed by '//'" },
        { "ferry:system", "must be followed by '//'" },
        { "ferry://desthost/system", "takes no host" },
        { "ferry+unix://host/system?socket=/run/x", "takes no host" },
        { "ferry:///session", "no per-user (session) instance" },
        { "ferry+ssh://desthost/session", "no per-user (session) instance" },
        { "ferry:///system/", "must be /system" },
        { "ferry:///", "must be /system" },
        { "ferry://", "/system is missing" },
        { "ferry+ssh://desthost", "/system is missing" },
        { "ferry+ssh://desthost/System", "must be /system" },
        { "ferry+ssh://desthost/system#frag", "no fragment" },
        { "ferry:///system?socket=/run/x", "takes no query" },
        { "ferry+ssh://desthost/system?keyfile=/root/.ssh/id", "takes no query" },
        { "ferry+tls://desthost/system?pkipath=/etc", "takes no query" },
        { "ferry+ssh://desthost/system?", "takes no query" },
        /* ssh option injection */
        { "ferry+ssh://-oProxyCommand=evil/system", "starts with '-'" },
        { "ferry+ssh://-oProxyCommand=evil:22/system", "starts with '-'" },
        { "ferry+ssh://-l/system", "starts with '-'" },
        { "ferry+ssh://-oProxyCommand=evil@host/system", "User name '-oProxyCommand=evil' starts with '-'" },
        { "ferry+ssh://[-oProxyCommand=x]/system", "Invalid IPv6 address" },
        /* hosts */
        { "ferry+ssh://desthost /system", "space" },
        { "ferry+ssh://dest\"host/system", "'\"'" },
        { "ferry+ssh://dest'host/system", "Invalid host" },
        { "ferry+ssh://dest;reboot/system", "Invalid host" },
        { "ferry+ssh://dest\nhost/system", "control character" },
        { "ferry+ssh://dest\thost/system", "control character" },
        { "ferry+ssh://dest$(id)/system", "Invalid host" },
        { "ferry+ssh://dest`id`/system", "'`'" },
        { "ferry+ssh://dest|id/system", "'|'" },
        { "ferry+ssh://dest\\host/system", "'\\'" },
        { "ferry+ssh://dest_host/system", "Invalid host" },
        { "ferry+ssh://dest..host/system", "Invalid host" },
        { "ferry+ssh://desthost./system", "Invalid host" },
        { "ferry+ssh://host-/system", "Invalid host" },
        { "ferry+ssh://1.2.3/system", "Invalid host" },
        { "ferry+ssh://010.0.0.1/system", "Invalid host" },
        { "ferry+ssh://0x7f.1/system", "Invalid host" },
        { "ferry+ssh://0.0.0.0/system", "unspecified address" },
        { "ferry+ssh://[::]/system", "unspecified address" },
        { "ferry+ssh:///system", "No host given" },
        { "ferry+tls:///system", "No host given" },
        { "ferry+ssh://fe80::1/system", "must be written in brackets" },
        { "ferry+ssh://[fe80::1/system", "Missing ']'" },
        { "ferry+ssh://[fe80::1]x/system", "after ']'" },
        { "ferry+ssh://[fe80::1%25eth0]/system", "percent-encoding" },
        { "ferry+ssh://[1.2.3.4]/system", "Invalid IPv6 address" },
        { "ferry+ssh://d\xc3\xa9sthost/system", "non-ASCII" },
        { "ferry+ssh://%64esthost/system", "percent-encoding" },
        /* users */
        { "ferry+ssh://a@b@desthost/system", "must not contain '@'" },
        { "ferry+ssh://@desthost/system", "Empty user name" },
        { "ferry+ssh://us:er@desthost/system", "Invalid user name" },
        { "ferry+ssh://us;er@desthost/system", "Invalid user name" },
        { "ferry+ssh://.user@desthost/system", "Invalid user name" },
        { "ferry+ssh://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@h/system", "Invalid user name" },
        { "ferry+tls://root@desthost/system", "no user name" },
        /* ports */
        { "ferry+ssh://desthost:0/system", "Port 0" },
        { "ferry+ssh://desthost:65536/system", "out of range" },
        { "ferry+ssh://desthost:999999/system", "out of range" },
        { "ferry+ssh://desthost:abc/system", "Invalid port 'abc'" },
        { "ferry+ssh://desthost:-22/system", "Invalid port" },
        { "ferry+ssh://desthost:+22/system", "Invalid port" },
        { "ferry+ssh://desthost:/system", "Empty port" },
        { "ferry+tls://[::1]:/system", "Empty port" },
        /* unix sockets */
        { "ferry+unix:///system?socket=run/x", "must be absolute" },
        { "ferry+unix:///system?socket=/run/../etc/x", "'..'" },
        { "ferry+unix:///system?socket=/run/..", "'..'" },
        { "ferry+unix:///system?socket=/run/x/", "ends in '/'" },
        { "ferry+unix:///system?socket=/", "ends in '/'" },
        { "ferry+unix:///system?socket=/.", "names no file" },
        { "ferry+unix:///system?socket=/run/a,b", "contains ','" },
        { "ferry+unix:///system?socket=/run/a:b", "contains ':'" },
        { "ferry+unix:///system?socket=/run/a%20b", "percent-encoding" },
        { "ferry+unix:///system?socket=/run/a%00b", "percent-encoding" },
        { "ferry+unix:///system?socket=", "needs a value" },
        { "ferry+unix:///system?socket", "needs a value" },
        { "ferry+unix:///system?socket=/a&socket=/b", "more than once" },
        { "ferry+unix:///system?socket=/a&mode=legacy", "Unknown parameter 'mode'" },
        { "ferry+unix:///system?no_verify=1", "Unknown parameter 'no_verify'" },
        { "ferry+unix:///system?socket=/a&", "Unknown parameter ''" },
        { "ferry+unix:///system?", "Empty query" },
        { "ferry+unix:///system?socket=/tmp/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
          "at most 107" },
};

static void test_ferry_refused(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(ferry_bad); i++) {
                const Bad *t = &ferry_bad[i];
                _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
                g_autofree char *error = NULL;

                g_test_message("%s", t->uri);
                g_assert_cmpint(ferry_uri_parse(t->uri, &u, &error), ==, -EINVAL);
                g_assert_null(u);
                g_assert_nonnull(error);
                g_test_message("  -> %s", error);
                if (!strstr(error, t->message))
                        g_error("'%s': expected \"%s\" in \"%s\"", t->uri, t->message, error);
                /* also without a message */
                g_assert_cmpint(ferry_uri_parse(t->uri, &u, NULL), ==, -EINVAL);
                g_assert_null(u);
        }
}

static void test_ferry_lengths(void) {
        _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
        g_autofree char *error = NULL, *longest = NULL, *too_long = NULL, *huge = NULL;
        g_autofree char *x106 = g_strnfill(106, 'x');
        static const char with_nul[] = "ferry+unix:///system?socket=/run/a\0/../../etc/x";

        /* An embedded NUL is refused when the length says it is part of the string... */
        g_assert_cmpint(ferry_uri_parse_full(with_nul, sizeof with_nul - 1, &u, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "NUL byte at offset 34"));
        /* ...and the part before it is all a C string is. */
        g_assert_cmpint(ferry_uri_parse_full(with_nul, 34, &u, NULL), ==, 0);
        g_assert_cmpstr(u->socket, ==, "/run/a");
        u = ferry_uri_free(u);
        /* A length that cuts a string short is honoured, no terminator needed. */
        g_assert_cmpint(ferry_uri_parse_full("ferry:///systemXYZ", 15, &u, NULL), ==, 0);
        g_assert_cmpint(u->transport, ==, FERRY_URI_LOCAL);
        u = ferry_uri_free(u);

        /* sun_path: 107 bytes fit, 108 do not. */
        longest = g_strdup_printf("ferry+unix:///system?socket=/%s", x106);
        g_assert_cmpint(ferry_uri_parse(longest, &u, NULL), ==, 0);
        g_assert_cmpuint(strlen(u->socket), ==, 107);
        u = ferry_uri_free(u);
        too_long = g_strdup_printf("ferry+unix:///system?socket=/%sx", x106);
        g_assert_cmpint(ferry_uri_parse(too_long, &u, NULL), ==, -EINVAL);
        /* normalization happens before the length check */
        g_clear_pointer(&longest, g_free);
        longest = g_strdup_printf("ferry+unix:///system?socket=/./././%s", x106);
        g_assert_cmpint(ferry_uri_parse(longest, &u, NULL), ==, 0);
        u = ferry_uri_free(u);

        huge = g_strnfill(FERRY_URI_LENGTH_MAX + 1, 'a');
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(ferry_uri_parse(huge, &u, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "limit"));
}

static void test_ferry_invalid_structs(void) {
        FerryUri u = { .transport = FERRY_URI_SSH, .host = (char *) "-oProxyCommand=x" };
        g_autofree char *address = NULL;

        /* Structs not from the parser are checked again before anything is built from them. */
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, -EINVAL);
        g_assert_null(ferry_uri_to_string(&u));
        u.host = (char *) "host";
        u.user = (char *) "-x";
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, -EINVAL);
        u.user = NULL;
        u.socket = (char *) "/run/x";
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, -EINVAL);
        u = (FerryUri) { .transport = FERRY_URI_UNIX, .socket = (char *) "/run/../x" };
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, -EINVAL);
        u.socket = NULL;
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, -EINVAL);
        u = (FerryUri) { .transport = 42 };
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, -EINVAL);
        g_assert_cmpint(ferry_uri_to_bus_address(NULL, NULL, &address), ==, -EINVAL);
        u = (FerryUri) { .transport = FERRY_URI_LOCAL };
        address = g_strdup("x");
        g_clear_pointer(&address, g_free);
        g_assert_cmpint(ferry_uri_to_bus_address(&u, NULL, &address), ==, 0);
        g_assert_null(address);
}

/* ferryd passes its configuration directory's pki; every byte of it is escaped for sd-bus. */
static void test_bus_address_tls_pki_dir(void) {
        _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
        g_autofree char *address = NULL;

        g_assert_cmpint(ferry_uri_parse("ferry+tls://b.example:16515/system", &u, NULL), ==, 0);
        g_assert_cmpint(ferry_uri_to_bus_address(u, "/srv/ferry conf,x=1/pki", &address), ==, 0);
        g_assert_cmpstr(address, ==, "unixexec:path=" FERRY_LIBEXECDIR "/ferry-transport,"
                        "argv1=--bus-connect%3db.example%3a16515,argv2=--peer-name%3db.example,"
                        "argv3=--pki-dir%3d/srv/ferry%20conf%2cx%3d1/pki");
}

/* ---- what sd-bus makes of our addresses ---- */

static bool wait_for_file(const char *path) {
        for (int i = 0; i < 500; i++) {
                if (g_file_test(path, G_FILE_TEST_EXISTS))
                        return true;
                g_usleep(10 * 1000);
        }
        return false;
}

/* A fake "ssh" first in $PATH records the argv sd-bus really runs for our address. */
static void test_bus_address_ssh_argv(void) {
        static const struct {
                const char *uri;
                const char *argv;       /* as recorded, one argument a line */
        } cases[] = {
                { "ferry+ssh://desthost/system", "-xT\n--\ndesthost\nsystemd-stdio-bridge\n" },
                { "ferry+ssh://root@desthost:2222/system",
                  "-xT\n-p\n2222\n--\nroot@desthost\nsystemd-stdio-bridge\n" },
                { "ferry+ssh://migrate@[fe80::1]:22/system",
                  "-xT\n-p\n22\n--\nmigrate@fe80::1\nsystemd-stdio-bridge\n" },
        };
        g_autofree char *dir = NULL, *script = NULL, *old_path = g_strdup(g_getenv("PATH"));
        g_autoptr(GError) gerror = NULL;

        dir = g_dir_make_tmp("test-migration-uri-XXXXXX", &gerror);
        g_assert_no_error(gerror);
        script = g_build_filename(dir, "ssh", NULL);
        g_assert_true(g_file_set_contents(script,
                "#!/bin/sh\n"
                "d=$(dirname \"$0\")\n"
                "for a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$d/argv.tmp\"\n"
                "mv \"$d/argv.tmp\" \"$d/argv\"\n", -1, &gerror));
        g_assert_cmpint(g_chmod(script, 0755), ==, 0);
        {
                g_autofree char *path = g_strdup_printf("%s:%s", dir, old_path ?: "/usr/bin:/bin");
                g_setenv("PATH", path, true);
        }

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
                g_autofree char *address = NULL, *argv_file = g_build_filename(dir, "argv", NULL), *got = NULL;
                sd_bus *bus = NULL;

                g_assert_cmpint(ferry_uri_parse(cases[i].uri, &u, NULL), ==, 0);
                g_assert_cmpint(ferry_uri_to_bus_address(u, NULL, &address), ==, 0);
                g_test_message("%s -> %s", cases[i].uri, address);
                g_assert_cmpint(sd_bus_new(&bus), >=, 0);
                g_assert_cmpint(sd_bus_set_address(bus, address), >=, 0);
                g_assert_cmpint(sd_bus_start(bus), >=, 0);
                g_assert_true(wait_for_file(argv_file));
                g_assert_true(g_file_get_contents(argv_file, &got, NULL, NULL));
                g_assert_cmpstr(got, ==, cases[i].argv);
                g_assert_cmpint(g_unlink(argv_file), ==, 0);
                sd_bus_close_unref(bus);
        }

        g_setenv("PATH", old_path, true);
        g_unlink(script);
        g_rmdir(dir);
}

/* sd-bus connects to the very path we parsed, characters it escapes included. */
static void test_bus_address_unix_connects(void) {
        g_autofree char *dir = NULL, *path = NULL, *uri = NULL, *address = NULL;
        _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
        g_autoptr(GError) gerror = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int listener = -EBADF, accepted = -EBADF;
        sd_bus *bus = NULL;

        dir = g_dir_make_tmp("test-migration-uri-XXXXXX", &gerror);
        g_assert_no_error(gerror);
        path = g_build_filename(dir, "a+b@c~d.sock", NULL);
        g_assert_cmpuint(strlen(path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, path);
        listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(listener, >=, 0);
        g_assert_cmpint(bind(listener, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        g_assert_cmpint(listen(listener, 1), ==, 0);

        uri = g_strdup_printf("ferry+unix:///system?socket=%s", path);
        g_assert_cmpint(ferry_uri_parse(uri, &u, NULL), ==, 0);
        g_assert_cmpint(ferry_uri_to_bus_address(u, NULL, &address), ==, 0);
        g_test_message("%s -> %s", uri, address);
        g_assert_nonnull(strstr(address, "a%2bb%40c%7ed.sock"));
        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        g_assert_cmpint(sd_bus_set_address(bus, address), >=, 0);
        g_assert_cmpint(sd_bus_start(bus), >=, 0);
        accepted = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        g_assert_cmpint(accepted, >=, 0);
        sd_bus_close_unref(bus);

        g_unlink(path);
        g_rmdir(dir);
}

/* ---- hypervisor and disks URIs ---- */

typedef struct MigrationGood {
        const char *uri;
        MigrationUriFlags flags;
        MigrationUriKind kind;
        const char *host;
        unsigned port;
        const char *path;
        const char *canonical;          /* NULL: same as uri */
        const char *qemu;               /* NULL: none (no port yet) */
} MigrationGood;

static const MigrationGood migration_good[] = {
        { "tcp://10.0.0.1/", 0, MIGRATION_URI_TCP, "10.0.0.1", 0, NULL, NULL, NULL },
        { "tcp://10.0.0.1", 0, MIGRATION_URI_TCP, "10.0.0.1", 0, NULL, "tcp://10.0.0.1/", NULL },
        { "tcp://10.0.0.1:49152", 0, MIGRATION_URI_TCP, "10.0.0.1", 49152, NULL, "tcp://10.0.0.1:49152/",
          "tcp:10.0.0.1:49152" },
        { "tcp://desthost.example.com:4444/", 0, MIGRATION_URI_TCP, "desthost.example.com", 4444, NULL, NULL,
          "tcp:desthost.example.com:4444" },
        { "TCP://Dest-Host:1/", 0, MIGRATION_URI_TCP, "Dest-Host", 1, NULL, "tcp://Dest-Host:1/", "tcp:Dest-Host:1" },
        { "tcp://[::1]:4444", 0, MIGRATION_URI_TCP, "::1", 4444, NULL, "tcp://[::1]:4444/", "tcp:[::1]:4444" },
        { "tcp://[2001:DB8:0::7]/", 0, MIGRATION_URI_TCP, "2001:db8::7", 0, NULL, "tcp://[2001:db8::7]/", NULL },
        { "tcp:10.0.0.1:4444", 0, MIGRATION_URI_TCP, "10.0.0.1", 4444, NULL, "tcp://10.0.0.1:4444/",
          "tcp:10.0.0.1:4444" },
        { "tcp:[fe80::2]:65535", 0, MIGRATION_URI_TCP, "fe80::2", 65535, NULL, "tcp://[fe80::2]:65535/",
          "tcp:[fe80::2]:65535" },
        { "tcp:[::ffff:10.0.0.1]:5", 0, MIGRATION_URI_TCP, "::ffff:10.0.0.1", 5, NULL,
          "tcp://[::ffff:10.0.0.1]:5/", "tcp:[::ffff:10.0.0.1]:5" },
        /* listening addresses */
        { "tcp://:4444/", MIGRATION_URI_ALLOW_ANY, MIGRATION_URI_TCP, NULL, 4444, NULL, NULL, "tcp::4444" },
        { "tcp::4444", MIGRATION_URI_ALLOW_ANY, MIGRATION_URI_TCP, NULL, 4444, NULL, "tcp://:4444/", "tcp::4444" },
        { "tcp://0.0.0.0:4444", MIGRATION_URI_ALLOW_ANY, MIGRATION_URI_TCP, NULL, 4444, NULL, "tcp://:4444/",
          "tcp::4444" },
        { "tcp://[::]/", MIGRATION_URI_ALLOW_ANY, MIGRATION_URI_TCP, NULL, 0, NULL, "tcp:///", NULL },
        { "tcp://", MIGRATION_URI_ALLOW_ANY, MIGRATION_URI_TCP, NULL, 0, NULL, "tcp:///", NULL },
        { "tcp://10.0.0.1/", MIGRATION_URI_ALLOW_ANY, MIGRATION_URI_TCP, "10.0.0.1", 0, NULL, NULL, NULL },
        /* unix */
        { "unix:///tmp/migdir/test-sock-qemu", 0, MIGRATION_URI_UNIX, NULL, 0, "/tmp/migdir/test-sock-qemu",
          NULL, "unix:/tmp/migdir/test-sock-qemu" },
        { "unix:///tmp/migdir/test-sock-nbd", 0, MIGRATION_URI_UNIX, NULL, 0, "/tmp/migdir/test-sock-nbd",
          NULL, "unix:/tmp/migdir/test-sock-nbd" },
        { "unix:/run/ferry/m.sock", 0, MIGRATION_URI_UNIX, NULL, 0, "/run/ferry/m.sock",
          "unix:///run/ferry/m.sock", "unix:/run/ferry/m.sock" },
        { "UNIX:////run//./ferry/m.sock", 0, MIGRATION_URI_UNIX, NULL, 0, "/run/ferry/m.sock",
          "unix:///run/ferry/m.sock", "unix:/run/ferry/m.sock" },
        { "unix:/.hidden", 0, MIGRATION_URI_UNIX, NULL, 0, "/.hidden", "unix:///.hidden", "unix:/.hidden" },
        { "unix:/x...y", 0, MIGRATION_URI_UNIX, NULL, 0, "/x...y", "unix:///x...y", "unix:/x...y" },
};

static void assert_migration_equal(const MigrationUri *a, const MigrationUri *b) {
        g_assert_cmpint(a->kind, ==, b->kind);
        g_assert_cmpstr(a->host, ==, b->host);
        g_assert_cmpuint(a->port, ==, b->port);
        g_assert_cmpstr(a->path, ==, b->path);
}

static void test_migration_accepted(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(migration_good); i++) {
                const MigrationGood *t = &migration_good[i];
                _cleanup_(migration_uri_freep) MigrationUri *u = NULL, *again = NULL;
                g_autofree char *error = NULL, *s = NULL, *qemu = NULL;

                g_test_message("%s", t->uri);
                if (migration_uri_parse_full(t->uri, SIZE_MAX, t->flags, &u, &error) < 0)
                        g_error("'%s' refused: %s", t->uri, error);
                g_assert_cmpint(u->kind, ==, t->kind);
                g_assert_cmpstr(u->host, ==, t->host);
                g_assert_cmpuint(u->port, ==, t->port);
                g_assert_cmpstr(u->path, ==, t->path);

                s = migration_uri_to_string(u);
                g_assert_cmpstr(s, ==, t->canonical ?: t->uri);
                g_assert_cmpint(migration_uri_parse_full(s, SIZE_MAX, t->flags, &again, NULL), ==, 0);
                assert_migration_equal(u, again);

                qemu = migration_uri_to_qemu(u);
                g_assert_cmpstr(qemu, ==, t->qemu);

                /* Without the flag, "any" is refused. */
                if (t->flags & MIGRATION_URI_ALLOW_ANY && !t->host) {
                        _cleanup_(migration_uri_freep) MigrationUri *v = NULL;
                        g_assert_cmpint(migration_uri_parse(t->uri, &v, NULL), ==, -EINVAL);
                }
        }
}

static const Bad migration_bad[] = {
        { "", "Empty URI" },
        { "10.0.0.1:4444", "no scheme" },
        { ":4444", "no scheme" },
        { "exec:cat > /tmp/x", "space" },
        { "exec:true", "Refused migration URI scheme 'exec:': it makes QEMU run a shell command" },
        { "EXEC:/bin/sh", "Refused migration URI scheme 'exec:'" },
        { "exec:/bin/sh;id", "Refused migration URI scheme 'exec:'" },
        { "fd:3", "Refused migration URI scheme 'fd:'" },
        { "fd:migfd", "Refused migration URI scheme 'fd:'" },
        { "file:/var/lib/x", "Refused migration URI scheme 'file:'" },
        { "rdma:10.0.0.1:4444", "Refused migration URI scheme 'rdma:'" },
        { "vsock:3:4444", "Refused migration URI scheme 'vsock:'" },
        { "channel:x", "Refused migration URI scheme 'channel:'" },
        { "xenmigr://10.0.0.1/", "Unsupported migration URI scheme 'xenmigr:'" },
        { "http://10.0.0.1/", "Unsupported migration URI scheme 'http:'" },
        { "localhost:4444", "Unsupported migration URI scheme 'localhost:'" },
        { "ferry+ssh://desthost/system", "is a destination URI" },
        { "qemu+ssh://desthost/system", "is a destination URI" },
        /* tcp */
        { "tcp://-oProxyCommand=x", "starts with '-'" },
        { "tcp:-oProxyCommand=x:4444", "starts with '-'" },
        { "tcp://user@10.0.0.1/", "no user name" },
        { "tcp://10.0.0.1/?x=1", "no query" },
        { "tcp://10.0.0.1/#x", "no fragment" },
        { "tcp://10.0.0.1/path", "no path" },
        { "tcp://10.0.0.1//", "no path" },
        { "tcp:10.0.0.1:4444/", "no path" },
        { "tcp:/10.0.0.1:4444", "Write tcp://" },
        { "tcp:10.0.0.1:4444,ipv4=on", "no options" },
        { "tcp:10.0.0.1:4444;id", "no options" },
        { "tcp://10.0.0.1:0/", "Port 0" },
        { "tcp:10.0.0.1:0", "Port 0" },
        { "tcp://10.0.0.1:65536/", "out of range" },
        { "tcp://10.0.0.1:4294967297/", "out of range" },
        { "tcp://10.0.0.1:abc/", "Invalid port 'abc'" },
        { "tcp://10.0.0.1:/", "Empty port" },
        { "tcp:10.0.0.1", "needs a port" },
        { "tcp:desthost", "needs a port" },
        { "tcp://", "No host given" },
        { "tcp:", "No host given" },
        { "tcp://:4444/", "No host given" },
        { "tcp::4444", "No host given" },
        { "tcp://0.0.0.0:4444/", "unspecified address" },
        { "tcp://[::]:4444/", "unspecified address" },
        { "tcp://[0:0::0]:4444/", "unspecified address" },
        { "tcp://::1:4444", "must be written in brackets" },
        { "tcp:::1:4444", "must be written in brackets" },
        { "tcp://[::1/", "Missing ']'" },
        { "tcp://[fe80::1%eth0]:4444/", "percent-encoding" },
        { "tcp://[v1.x]:4444/", "Invalid IPv6 address" },
        { "tcp://dest host/", "space" },
        { "tcp://dest\"host/", "'\"'" },
        { "tcp://dest'host/", "Invalid host" },
        { "tcp://dest;host/", "no options" },
        { "tcp://dest\nhost/", "control character" },
        { "tcp://dest\rhost:1/", "control character" },
        { "tcp://dest\x7fhost:1/", "control character" },
        { "tcp://dest_host/", "Invalid host" },
        { "tcp://999.1.1.1/", "Invalid host" },
        { "tcp://1.2.3/", "Invalid host" },
        /* unix */
        { "unix:relative/sock", "absolute path" },
        { "unix:", "absolute path" },
        { "unix://", "takes no host" },
        { "unix://host/tmp/sock", "takes no host" },
        { "unix:///tmp/../etc/sock", "'..'" },
        { "unix:/tmp/sock/..", "'..'" },
        { "unix:///tmp/migdir/", "ends in '/'" },
        { "unix:///", "ends in '/'" },
        { "unix:/tmp/a,server=on", "contains ','" },
        { "unix:/tmp/a;b", "contains ';'" },
        { "unix:/tmp/a=b", "contains '='" },
        { "unix:/tmp/a:b", "contains ':'" },
        { "unix:/tmp/a$b", "contains '$'" },
        { "unix:///tmp/a?x=1", "no query" },
        { "unix:///tmp/a#x", "no fragment" },
        { "unix:///tmp/a%2e%2e/b", "percent-encoding" },
        { "unix:/tmp/\xe2\x80\x8bsock", "non-ASCII" },
        { "unix:///tmp/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
          "at most 107" },
};

static void test_migration_refused(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(migration_bad); i++) {
                const Bad *t = &migration_bad[i];
                _cleanup_(migration_uri_freep) MigrationUri *u = NULL;
                g_autofree char *error = NULL;

                g_test_message("%s", t->uri);
                g_assert_cmpint(migration_uri_parse(t->uri, &u, &error), ==, -EINVAL);
                g_assert_null(u);
                g_assert_nonnull(error);
                g_test_message("  -> %s", error);
                if (!strstr(error, t->message))
                        g_error("'%s': expected \"%s\" in \"%s\"", t->uri, t->message, error);
                g_assert_cmpint(migration_uri_parse(t->uri, &u, NULL), ==, -EINVAL);
        }
}

static void test_migration_lengths(void) {
        _cleanup_(migration_uri_freep) MigrationUri *u = NULL;
        g_autofree char *error = NULL;
        static const char with_nul[] = "unix:///tmp/sock\0,server=on";

        g_assert_cmpint(migration_uri_parse_full(with_nul, sizeof with_nul - 1, 0, &u, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "NUL byte at offset 16"));
        g_assert_null(u);
        g_assert_cmpint(migration_uri_parse_full(with_nul, SIZE_MAX, 0, &u, NULL), ==, 0);
        g_assert_cmpstr(u->path, ==, "/tmp/sock");
}

static void test_migration_to_qemu_checks(void) {
        MigrationUri u = { .kind = MIGRATION_URI_TCP, .host = (char *) "-oProxyCommand=x", .port = 1 };

        /* Hand-made structs are validated again: nothing unchecked reaches QEMU. */
        g_assert_null(migration_uri_to_qemu(&u));
        u.host = (char *) "10.0.0.1,fd=3";
        g_assert_null(migration_uri_to_qemu(&u));
        u.host = (char *) "fe80::1%eth0";
        g_assert_null(migration_uri_to_qemu(&u));
        u.host = (char *) "10.0.0.1";
        u.port = 0;
        g_assert_null(migration_uri_to_qemu(&u));     /* no port picked yet */
        u.port = 7;
        g_autofree char *q = migration_uri_to_qemu(&u);
        g_assert_cmpstr(q, ==, "tcp:10.0.0.1:7");
        u.path = (char *) "/x";
        g_assert_null(migration_uri_to_qemu(&u));
        u = (MigrationUri) { .kind = MIGRATION_URI_UNIX, .path = (char *) "relative" };
        g_assert_null(migration_uri_to_qemu(&u));
        u.path = (char *) "/tmp/a,server=on";
        g_assert_null(migration_uri_to_qemu(&u));
        u.path = NULL;
        g_assert_null(migration_uri_to_qemu(&u));
        u = (MigrationUri) { .kind = 7, .path = (char *) "/x" };
        g_assert_null(migration_uri_to_qemu(&u));
        g_assert_null(migration_uri_to_qemu(NULL));
        g_assert_null(migration_uri_to_string(NULL));
}

static void test_port_range(void) {
        uint16_t lo = 1, hi = 1;
        static const char *const bad[] = {
                "", "-", "0", "0-10", "10-0", "49215-49152", "65536", "1-65536", "abc", "1-2-3",
                " 1-2", "1-2 ", "1 - 2", "+1-2", "1-", "-2", "0x10-0x20", "4915249215",
        };

        g_assert_cmpint(migration_port_range_parse("49152-49215", &lo, &hi), ==, 0);
        g_assert_cmpuint(lo, ==, CONFIG_MIGRATION_PORT_MIN_DEFAULT);
        g_assert_cmpuint(hi, ==, CONFIG_MIGRATION_PORT_MAX_DEFAULT);
        g_assert_cmpint(migration_port_range_parse("4444", &lo, &hi), ==, 0);
        g_assert_cmpuint(lo, ==, 4444);
        g_assert_cmpuint(hi, ==, 4444);
        g_assert_cmpint(migration_port_range_parse("1-65535", &lo, &hi), ==, 0);
        g_assert_cmpuint(lo, ==, 1);
        g_assert_cmpuint(hi, ==, 65535);
        g_assert_cmpint(migration_port_range_parse("7-7", &lo, &hi), ==, 0);

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                lo = hi = 9;
                g_test_message("'%s'", bad[i]);
                g_assert_cmpint(migration_port_range_parse(bad[i], &lo, &hi), ==, -EINVAL);
                g_assert_cmpuint(lo, ==, 9);
                g_assert_cmpuint(hi, ==, 9);
        }
        g_assert_cmpint(migration_port_range_parse(NULL, &lo, &hi), ==, -EINVAL);
}

static void test_host_is_valid(void) {
        g_assert_true(migration_host_is_valid("a"));
        g_assert_true(migration_host_is_valid("10.0.0.1"));
        g_assert_true(migration_host_is_valid("::1"));
        g_assert_true(migration_host_is_valid("xn--bcher-kva.example"));
        g_assert_true(migration_host_is_valid("1a.example.2b"));
        g_assert_false(migration_host_is_valid(NULL));
        g_assert_false(migration_host_is_valid(""));
        g_assert_false(migration_host_is_valid("-a"));
        g_assert_false(migration_host_is_valid("[::1]"));
        g_assert_false(migration_host_is_valid("example.123"));
        g_assert_false(migration_host_is_valid("a b"));
        g_assert_false(migration_host_is_valid(".a"));
        g_autofree char *label63 = g_strnfill(63, 'a'), *label64 = g_strnfill(64, 'a');
        g_assert_true(migration_host_is_valid(label63));
        g_assert_false(migration_host_is_valid(label64));
        g_autofree char *label61 = g_strnfill(61, 'b');
        g_autofree char *name253 = g_strdup_printf("%s.%s.%s.%s", label63, label63, label63, label61);
        g_assert_cmpuint(strlen(name253), ==, 253);
        g_assert_true(migration_host_is_valid(name253));
        g_autofree char *name254 = g_strconcat(name253, "b", NULL);
        g_assert_false(migration_host_is_valid(name254));
}

/* ---- random input ---- */

static char *random_string(GRand *rand, size_t *ret_length) {
        static const char *const seeds[] = {
                "ferry:///system", "ferry+unix:///system?socket=/run/x", "ferry+ssh://u@h:22/system",
                "ferry+tls://[::1]:5/system", "tcp://10.0.0.1:4444/", "tcp:[::1]:1", "unix:///tmp/a",
                "unix:/a/./b", "tcp::4444", "exec:x", "fd:3",
        };
        static const char alphabet[] = "ferry+unixsshtlcp:/?#[]@!$&'()*,;=%-._~0123456789aAzZ \n\"\\";
        size_t n;
        GString *g;

        switch (g_rand_int_range(rand, 0, 3)) {
        case 0: /* raw bytes, NUL included */
                n = g_rand_int_range(rand, 0, 80);
                g = g_string_sized_new(n);
                for (size_t i = 0; i < n; i++)
                        g_string_append_c(g, (char) g_rand_int_range(rand, 0, 256));
                break;
        case 1: /* URI-ish characters */
                n = g_rand_int_range(rand, 0, 60);
                g = g_string_sized_new(n);
                for (size_t i = 0; i < n; i++)
                        g_string_append_c(g, alphabet[g_rand_int_range(rand, 0, sizeof alphabet - 1)]);
                break;
        default: /* a valid one, mutated */
                g = g_string_new(seeds[g_rand_int_range(rand, 0, G_N_ELEMENTS(seeds))]);
                for (int k = g_rand_int_range(rand, 0, 4); k > 0; k--) {
                        size_t at = g_rand_int_range(rand, 0, g->len + 1);
                        char c = alphabet[g_rand_int_range(rand, 0, sizeof alphabet - 1)];
                        switch (g_rand_int_range(rand, 0, 3)) {
                        case 0:
                                g_string_insert_c(g, at, c);
                                break;
                        case 1:
                                if (at < g->len)
                                        g_string_erase(g, at, 1);
                                break;
                        default:
                                if (at < g->len)
                                        g->str[at] = c;
                        }
                }
        }
        *ret_length = g->len;
        return g_string_free(g, false);
}

static void test_random(void) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
        unsigned accepted_ferry = 0, accepted_migration = 0;
        unsigned rounds = g_test_slow() ? 1000000 : 100000;

        for (unsigned i = 0; i < rounds; i++) {
                size_t n;
                g_autofree char *t = random_string(rand, &n);
                /* exactly n bytes, no terminator: the parsers must not read past the length */
                g_autofree char *s = n > 0 ? g_memdup2(t, n) : g_strdup("");
                _cleanup_(ferry_uri_freep) FerryUri *f = NULL, *f2 = NULL;
                _cleanup_(migration_uri_freep) MigrationUri *m = NULL, *m2 = NULL;
                g_autofree char *error = NULL, *error2 = NULL, *text = NULL, *text2 = NULL, *out = NULL;
                MigrationUriFlags flags = g_rand_boolean(rand) ? MIGRATION_URI_ALLOW_ANY : 0;
                int r;

                r = ferry_uri_parse_full(s, n, &f, &error);
                if (r >= 0) {
                        accepted_ferry++;
                        g_assert_null(error);
                        text = ferry_uri_to_string(f);
                        g_assert_nonnull(text);
                        g_assert_cmpint(ferry_uri_parse(text, &f2, NULL), ==, 0);
                        assert_ferry_equal(f, f2);
                        r = ferry_uri_to_bus_address(f, NULL, &out);
                        g_assert_cmpint(r, ==, 0);
                        g_assert_true(!out || g_str_has_prefix(out, "unix:path=/") ||
                                      g_str_has_prefix(out, "unixexec:path=ssh,argv1=-xT,") ||
                                      g_str_has_prefix(out, "unixexec:path=" FERRY_LIBEXECDIR "/ferry-transport,argv1=--bus-connect%3d"));
                        g_assert_true(!f->host || f->host[0] != '-');
                        g_assert_true(!f->user || f->user[0] != '-');
                } else {
                        g_assert_cmpint(r, ==, -EINVAL);
                        g_assert_nonnull(error);
                        g_assert_null(f);
                        /* messages never carry control characters from the input */
                        for (const char *p = error; *p; p++)
                                g_assert_true((unsigned char) *p >= 0x20 && (unsigned char) *p < 0x7f);
                }

                g_clear_pointer(&out, g_free);
                r = migration_uri_parse_full(s, n, flags, &m, &error2);
                if (r >= 0) {
                        accepted_migration++;
                        text2 = migration_uri_to_string(m);
                        g_assert_nonnull(text2);
                        g_assert_cmpint(migration_uri_parse_full(text2, SIZE_MAX, flags, &m2, NULL), ==, 0);
                        assert_migration_equal(m, m2);
                        out = migration_uri_to_qemu(m);
                        if (m->kind == MIGRATION_URI_UNIX || m->port > 0) {
                                g_assert_nonnull(out);
                                g_assert_true(g_str_has_prefix(out, "tcp:") || g_str_has_prefix(out, "unix:/"));
                                g_assert_null(strchr(out, ','));
                        } else
                                g_assert_null(out);
                } else {
                        g_assert_cmpint(r, ==, -EINVAL);
                        g_assert_nonnull(error2);
                        g_assert_null(m);
                        for (const char *p = error2; *p; p++)
                                g_assert_true((unsigned char) *p >= 0x20 && (unsigned char) *p < 0x7f);
                }
        }
        g_test_message("accepted %u destination and %u migration URIs of %u", accepted_ferry,
                       accepted_migration, rounds);
        /* the mutation of valid seeds must produce some valid URIs, or the loop tests little */
        g_assert_cmpuint(accepted_ferry, >, 0);
        g_assert_cmpuint(accepted_migration, >, 0);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/migration-uri/ferry/accepted", test_ferry_accepted);
        g_test_add_func("/migration-uri/ferry/refused", test_ferry_refused);
        g_test_add_func("/migration-uri/ferry/lengths", test_ferry_lengths);
        g_test_add_func("/migration-uri/ferry/invalid-structs", test_ferry_invalid_structs);
        g_test_add_func("/migration-uri/ferry/bus-address-tls-pki-dir", test_bus_address_tls_pki_dir);
        g_test_add_func("/migration-uri/ferry/bus-address-ssh-argv", test_bus_address_ssh_argv);
        g_test_add_func("/migration-uri/ferry/bus-address-unix-connects", test_bus_address_unix_connects);
        g_test_add_func("/migration-uri/migration/accepted", test_migration_accepted);
        g_test_add_func("/migration-uri/migration/refused", test_migration_refused);
        g_test_add_func("/migration-uri/migration/lengths", test_migration_lengths);
        g_test_add_func("/migration-uri/migration/to-qemu-checks", test_migration_to_qemu_checks);
        g_test_add_func("/migration-uri/port-range", test_port_range);
        g_test_add_func("/migration-uri/host-is-valid", test_host_is_valid);
        g_test_add_func("/migration-uri/random", test_random);
        return g_test_run();
}
