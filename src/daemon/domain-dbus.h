/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "domain.h"

#include "ferry-bus.h"

/* org.ferry.Ferry1.Domain on /org/ferry/Ferry1/domain/<escaped uuid>. */
int domain_dbus_register(Manager *m);

void domain_dbus_emit_added(Domain *d);
void domain_dbus_emit_changed(Domain *d, DomainChange what);
void domain_dbus_emit_removed(Domain *d);

/* MigrationInProgress if d's definition is protected by a migration (< 0), else 0. */
int domain_dbus_check_change_protection(Domain *d, sd_bus_error *error);
