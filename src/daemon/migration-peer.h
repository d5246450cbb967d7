/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "migration.h"

/* The one place that talks to the destination host's ferryd (as a client of its bus, with
 * this ferryd's own credentials: the seed's peer-to-peer flow). All calls are asynchronous;
 * each callback gets the reply message (check sd_bus_message_get_error()). */

/* address: an sd-bus address (unix:path=..., unixexec:... for ssh), or NULL for this host's
 * system bus. */
int peer_open(sd_event *event, const char *address, sd_bus **ret);

/* Flushes (if the connection is up) and closes; returns NULL. Never waits for a handshake the
 * other side does not answer. */
sd_bus *peer_close(sd_bus *peer);

int peer_get_host_uuid(sd_bus *peer, sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot);

/* Manager.PrepareMigration(s xml, a{sv} options) -> (o migration, s hypervisor_uri) */
int peer_prepare(sd_bus *peer, const char *xml, const MigrationOptions *options,
                 sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot);

/* Migration.Finish(b success) on the destination's migration object, sent to owner: the
 * unique name of the ferryd that prepared it (a restarted ferryd knows nothing of it). */
int peer_finish(sd_bus *peer, const char *owner, const char *migration_path, bool success,
                sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot);

/* Migration.Recover() -> (s hypervisor_uri) on the destination's migration object (post-copy
 * paused there): it listens again and says where. */
int peer_recover(sd_bus *peer, const char *owner, const char *migration_path, sd_bus_message_handler_t cb,
                 void *userdata, sd_bus_slot **ret_slot);

/* cb runs when the ferryd with unique name owner leaves the destination's bus. */
int peer_watch_owner(sd_bus *peer, sd_bus_message_handler_t cb, void *userdata, sd_bus_slot **ret_slot);
