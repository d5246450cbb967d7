/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "migration.h"

/* Tunnelled migrations (docs/transport.md): QEMU's streams go through a pair of ferry-transport
 * helpers, one transient unit ferry-transport-<migration id>.service on each host. The source's
 * QEMU migrates to its helper's UNIX socket, the destination's helper connects to the incoming
 * QEMU's UNIX socket, and the helpers carry the streams over TCP with TLS (or plaintext frames
 * where both administrators allow it). No bus code for our clients here. */

typedef struct MigrationTunnel MigrationTunnel;

/* Source, at Migrate: the tunnel's options fit the flow and this host's configuration; makes
 * the token for the pair. -EINVAL with a message for people. */
int tunnel_check_source_options(Manager *manager, MigrationOptions *o, bool managed, char **ret_error);
/* Destination, at Prepare: the same for what the source asked. */
int tunnel_check_destination_options(Manager *manager, const MigrationOptions *o, char **ret_error);

/* Destination: where the incoming QEMU listens for the helper (a unix: URI for QEMU). */
char *tunnel_incoming_uri(Manager *manager, const char *domain_uuid);

/* Called once: the helper is up (READY=1), or error < 0 with a message. For the destination,
 * address is what the source's helper connects to: "ferry-tunnel://HOST:PORT". */
typedef void (*TunnelReady)(Migration *m, int error, const char *message, const char *address);

/* Destination, once QEMU listens on tunnel_incoming_uri(): makes sure the shared peer port
 * listens (starts ferry-peer.socket), then starts the helper behind it (its dispatch socket is
 * named by the token). The address is "ferry-tunnel://HOST:<[Migration] TunnelPort=>". */
int tunnel_start_destination(Migration *m, const char *domain_uuid, TunnelReady ready);
/* Source, with the destination's "ferry-tunnel://HOST:PORT": starts the helper; once it is
 * ready m->hypervisor_uri is its socket. -EINVAL with *ret_error for an unusable address. */
int tunnel_start_source(Migration *m, const char *address, TunnelReady ready, char **ret_error);

/* Post-copy recovery (Migration.Recover) after the tunnel broke past the switch: a new pair of
 * helpers (units ferry-transport-<id>-<n>) with the same token. The destination's once QEMU
 * listens again on the same socket (migrate-recover); the source's with the destination's new
 * address, after which m->hypervisor_uri is its socket for QEMU's migrate resume. */
int tunnel_restart_destination(Migration *m, const char *domain_uuid, TunnelReady ready);
int tunnel_restart_source(Migration *m, const char *address, TunnelReady ready, char **ret_error);

/* Source: QEMU's migration failed. The helper usually knows why (a refused certificate):
 * returns true if the tunnel takes over and fails the migration with its own message within a
 * few seconds, false if the caller should fail it now. */
bool tunnel_explain_qemu_failure(Migration *m);

/* The migration ended: the helper unit is stopped if it still runs (and collected by systemd),
 * the token file goes. */
void tunnel_end(Migration *m);
MigrationTunnel *tunnel_free(MigrationTunnel *t);
