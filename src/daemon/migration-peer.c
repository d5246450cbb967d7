/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>

#include "ferry-bus.h"
#include "migration-peer.h"
#include "migration-storage.h"

/* Copying a whole guest may take a while; Finish waits for the destination's QEMU. */
#define PEER_CALL_TIMEOUT_USEC (120ULL * 1000000ULL)

int peer_open(sd_event *event, const char *address, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        if (!address)
                r = sd_bus_open_system(&bus);
        else {
                r = sd_bus_new(&bus);
                if (r < 0)
                        return r;
                r = sd_bus_set_address(bus, address);
                if (r < 0)
                        return r;
                r = sd_bus_set_bus_client(bus, true);
                if (r < 0)
                        return r;
                r = sd_bus_start(bus);
        }
        if (r < 0)
                return r;
        r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(bus);
        return 0;
}

sd_bus *peer_close(sd_bus *peer) {
        if (!peer)
                return NULL;
        /* sd_bus_flush() on a connection still authenticating waits for the handshake to end:
         * a peer that accepted and never answers would block the whole daemon. */
        if (sd_bus_is_ready(peer) > 0)
                (void) sd_bus_flush(peer);
        return sd_bus_close_unref(peer);
}

int peer_get_host_uuid(sd_bus *peer, sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot) {
        return sd_bus_call_method_async(peer, ret_slot, FERRY_BUS_NAME, FERRY_MANAGER_PATH,
                                        "org.freedesktop.DBus.Properties", "Get", cb, userdata, "ss",
                                        FERRY_MANAGER_INTERFACE, "HostUUID");
}

int peer_prepare(sd_bus *peer, const char *xml, const MigrationOptions *o, sd_bus_message_handler_t cb,
                 void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(peer, &m, FERRY_BUS_NAME, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                           "PrepareMigration");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", xml);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (o->hypervisor_uri) {
                r = sd_bus_message_append(m, "{sv}", "hypervisor_uri", "s", o->hypervisor_uri);
                if (r < 0)
                        return r;
        }
        if (o->paused) {
                r = sd_bus_message_append(m, "{sv}", "paused", "b", 1);
                if (r < 0)
                        return r;
        }
        if (o->persistent) {
                r = sd_bus_message_append(m, "{sv}", "persistent", "b", 1);
                if (r < 0)
                        return r;
        }
        if (o->offline) {
                r = sd_bus_message_append(m, "{sv}", "offline", "b", 1);
                if (r < 0)
                        return r;
        }
        if (o->tls) {
                r = sd_bus_message_append(m, "{sv}", "tls", "b", 1);
                if (r < 0)
                        return r;
        }
        if (o->listen_address) {
                r = sd_bus_message_append(m, "{sv}", "listen_address", "s", o->listen_address);
                if (r < 0)
                        return r;
        }
        if (o->copy_storage != MIGRATION_COPY_STORAGE_NONE) {
                r = sd_bus_message_append(m, "{sv}", "copy_storage", "s", migration_copy_storage_to_string(o->copy_storage));
                if (r < 0)
                        return r;
                /* The copied disks, with the sizes the destination's images must have. */
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "disk_sizes");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "a{st}");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "{st}");
                for (size_t i = 0; r >= 0 && i < o->n_disk_sizes; i++)
                        r = sd_bus_message_append(m, "{st}", o->disk_sizes[i].target, o->disk_sizes[i].size);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        if (o->disks_uri) {
                r = sd_bus_message_append(m, "{sv}", "disks_uri", "s", o->disks_uri);
                if (r < 0)
                        return r;
        }
        /* Both QEMUs need post-copy and multifd set before the stream starts. */
        if (o->postcopy) {
                r = sd_bus_message_append(m, "{sv}", "postcopy", "b", 1);
                if (r < 0)
                        return r;
        }
        /* The tunnel: the destination starts its helper with the source's token. */
        if (o->tunnelled) {
                r = sd_bus_message_append(m, "{sv}{sv}{sv}", "tunnelled", "b", 1,
                                          "tunnel_plaintext", "b", o->tunnel_plaintext,
                                          "tunnel_token", "s", strempty(o->tunnel_token));
                if (r < 0)
                        return r;
        }
        if (o->parallel_connections > 0) {
                r = sd_bus_message_append(m, "{sv}", "parallel_connections", "u", o->parallel_connections);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        return sd_bus_call_async(peer, ret_slot, m, cb, userdata, PEER_CALL_TIMEOUT_USEC);
}

int peer_finish(sd_bus *peer, const char *owner, const char *migration_path, bool success,
                sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(peer, &m, owner ?: FERRY_BUS_NAME, migration_path,
                                           FERRY_MIGRATION_INTERFACE, "Finish");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "b", success);
        if (r < 0)
                return r;
        return sd_bus_call_async(peer, ret_slot, m, cb, userdata, PEER_CALL_TIMEOUT_USEC);
}

int peer_recover(sd_bus *peer, const char *owner, const char *migration_path, sd_bus_message_handler_t cb,
                 void *userdata, sd_bus_slot **ret_slot) {
        return sd_bus_call_method_async(peer, ret_slot, owner ?: FERRY_BUS_NAME, migration_path,
                                        FERRY_MIGRATION_INTERFACE, "Recover", cb, userdata, NULL);
}

int peer_watch_owner(sd_bus *peer, sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot) {
        return sd_bus_match_signal_async(peer, ret_slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "NameOwnerChanged", cb, NULL, userdata);
}
