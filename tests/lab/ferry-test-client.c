/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A client of ferryd built only from the XML files in dbus-interfaces/ through gdbus-codegen, as
 * language bindings are: if our XML is wrong for such clients, the lab tests fail here.
 * Runs inside lab hosts. Prints results as KEY=VALUE lines; on a D-Bus error prints
 * ERROR=<name> and MESSAGE=<text> and exits 1. */

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "ferry-generated.h"

static int fail(GError *error) {
        g_autofree char *name = g_dbus_error_get_remote_error(error);
        g_dbus_error_strip_remote_error(error);
        printf("ERROR=%s\nMESSAGE=%s\n", name ? name : "(local)", error->message);
        return 1;
}

static FerryManager *manager(GError **error) {
        /* No flags: the first call must activate ferryd, as for any client. */
        return ferry_manager_proxy_new_for_bus_sync(G_BUS_TYPE_SYSTEM, G_DBUS_PROXY_FLAGS_NONE,
                                                    "org.ferry.Ferry1", "/org/ferry/Ferry1", NULL, error);
}

int main(int argc, char *argv[]) {
        g_autoptr(GError) error = NULL;
        g_autoptr(FerryManager) m = NULL;

        if (argc < 2 || (strcmp(argv[1], "dump-memory") == 0 ? argc != 5 : argc != 2)) {
                fprintf(stderr, "usage: ferry-test-client version|reload|reload-interactive\n"
                                "       ferry-test-client dump-memory DOMAIN-PATH FD FLAGS\n");
                return 2;
        }
        m = manager(&error);
        if (!m)
                return fail(error);

        if (strcmp(argv[1], "version") == 0) {
                /* Cached properties come from GetAll: an empty cache means no daemon answered. */
                if (!ferry_manager_get_version(m)) {
                        g_autofree char *owner = g_dbus_proxy_get_name_owner(G_DBUS_PROXY(m));
                        printf("ERROR=no-properties\nMESSAGE=owner %s\n", owner ? owner : "(none)");
                        return 1;
                }
                printf("Version=%s\nHostname=%s\nIdleTimeoutUSec=%" G_GUINT64_FORMAT "\n",
                       ferry_manager_get_version(m), ferry_manager_get_hostname(m),
                       ferry_manager_get_idle_timeout_usec(m));
                return 0;
        }
        if (strcmp(argv[1], "reload") == 0) {
                if (!ferry_manager_call_reload_sync(m, NULL, &error))
                        return fail(error);
                printf("OK\n");
                return 0;
        }
        if (strcmp(argv[1], "reload-interactive") == 0) {
                /* Generated calls cannot set message flags; this is what a GUI would send. */
                g_autoptr(GVariant) v = g_dbus_proxy_call_sync(G_DBUS_PROXY(m), "Reload", NULL,
                                                               G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION,
                                                               -1, NULL, &error);
                if (!v)
                        return fail(error);
                printf("OK\n");
                return 0;
        }
        if (strcmp(argv[1], "dump-memory") == 0) {
                /* Any fd the caller gives (busctl cannot pass fds), to see what ferryd accepts. */
                g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
                if (g_unix_fd_list_append(fds, atoi(argv[3]), &error) < 0)
                        return fail(error);
                g_autoptr(GVariant) v = g_dbus_connection_call_with_unix_fd_list_sync(
                        g_dbus_proxy_get_connection(G_DBUS_PROXY(m)), "org.ferry.Ferry1", argv[2],
                        "org.ferry.Ferry1.Domain", "DumpMemory",
                        g_variant_new("(ht)", 0, g_ascii_strtoull(argv[4], NULL, 0)), NULL,
                        G_DBUS_CALL_FLAGS_NONE, -1, fds, NULL, NULL, &error);
                if (!v)
                        return fail(error);
                printf("OK\n");
                return 0;
        }
        fprintf(stderr, "unknown command %s\n", argv[1]);
        return 2;
}
