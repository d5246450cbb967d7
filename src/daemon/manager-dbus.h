/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

typedef struct Manager Manager;

/* org.ferry.Ferry1.Manager at /org/ferry/Ferry1, plus the ObjectManager there. */
int manager_dbus_register(Manager *m);
