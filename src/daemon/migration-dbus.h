/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "migration.h"

/* org.ferry.Ferry1.Migration on /org/ferry/Ferry1/migration/<id>. */
int migration_dbus_register(Manager *m);

void migration_dbus_emit_added(Migration *mig);
void migration_dbus_emit_changed(Migration *mig);   /* at most about 10 a second */
void migration_dbus_emit_ended(Migration *mig);     /* Manager.MigrationEnded */
void migration_dbus_emit_removed(Migration *mig);
void migration_dbus_finish_pending(Migration *mig);

/* Reads the a{sv} options of Domain.Migrate and Manager.PrepareMigration; unknown keys and
 * wrong types are InvalidArgs. */
int migration_options_read(sd_bus_message *msg, MigrationOptions *o, sd_bus_error *error);
