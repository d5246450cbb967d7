/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The names clients depend on (docs/dbus-api.md). Shared by ferryd, ferryctl and tests. */

#define FERRY_BUS_NAME "org.ferry.Ferry1"
#define FERRY_MANAGER_PATH "/org/ferry/Ferry1"
#define FERRY_MANAGER_INTERFACE "org.ferry.Ferry1.Manager"

#define FERRY_ERROR_PREFIX "org.ferry.Ferry1.Error."

/* polkit actions (polkit/org.ferry.Ferry1.policy) */
#define FERRY_ACTION_READ "org.ferry.Ferry1.read"
#define FERRY_ACTION_MANAGE_SERVICE "org.ferry.Ferry1.manage-service"
