/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "domain.h"

#include "ferry-bus.h"

/* org.ferry.Ferry1.Domain on /org/ferry/Ferry1/domain/<escaped uuid>. */
int domain_dbus_register(Manager *m);

void domain_dbus_emit_added(Domain *d);
void domain_dbus_emit_changed(Domain *d, DomainChange what);
void domain_dbus_emit_removed(Domain *d);
