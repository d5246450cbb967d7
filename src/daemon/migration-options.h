/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "domain.h"
#include "migration-uri.h"
#include "migration.h"

/* The options of Domain.Migrate that shape what the destination gets (docs/migration.md,
 * "Options"). No bus code: migration-dbus.c reads them, migration.c applies them. */

/* Source, at Migrate: listen_address fits the flow and the hypervisor URI hv (or NULL), and
 * destination_xml parses and describes the same guest as d (under d's name or
 * destination_name). -EINVAL with a message for people, before anything moves. */
int migration_check_destination_options(Domain *d, const MigrationOptions *o, const MigrationUri *hv,
                                        char **ret_error);

/* Source, at Prepare: the XML the destination gets: d's migratable XML, or destination_xml,
 * under destination_name if given. */
int migration_destination_xml(Domain *d, const MigrationOptions *o, char **ret);
