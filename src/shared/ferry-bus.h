/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

/* The names clients depend on (docs/dbus-api.md). Shared by ferryd, ferryctl and tests. */

#define FERRY_BUS_NAME "org.ferry.Ferry1"
#define FERRY_MANAGER_PATH "/org/ferry/Ferry1"
#define FERRY_MANAGER_INTERFACE "org.ferry.Ferry1.Manager"
#define FERRY_DOMAIN_PATH_PREFIX "/org/ferry/Ferry1/domain"
#define FERRY_DOMAIN_INTERFACE "org.ferry.Ferry1.Domain"
#define FERRY_MIGRATION_PATH_PREFIX "/org/ferry/Ferry1/migration"
#define FERRY_MIGRATION_INTERFACE "org.ferry.Ferry1.Migration"

#define FERRY_ERROR_PREFIX "org.ferry.Ferry1.Error."
#define FERRY_ERROR_MIGRATION_FAILED "org.ferry.Ferry1.Error.MigrationFailed"
#define FERRY_ERROR_MIGRATION_CANCELLED "org.ferry.Ferry1.Error.MigrationCancelled"
#define FERRY_ERROR_MIGRATION_IN_PROGRESS "org.ferry.Ferry1.Error.MigrationInProgress"

/* polkit actions (polkit/org.ferry.Ferry1.policy) */
#define FERRY_ACTION_READ "org.ferry.Ferry1.read"
#define FERRY_ACTION_MANAGE_SERVICE "org.ferry.Ferry1.manage-service"
#define FERRY_ACTION_MANAGE_DOMAINS "org.ferry.Ferry1.manage-domains"
#define FERRY_ACTION_MIGRATE "org.ferry.Ferry1.migrate"
#define FERRY_ACTION_MIGRATE_INCOMING "org.ferry.Ferry1.migrate-incoming"
#define FERRY_ACTION_DUMP_MEMORY "org.ferry.Ferry1.dump-memory"

/* Flags of Manager.CreateDomain and Domain.Start */
#define FERRY_START_PAUSED (UINT64_C(1) << 0)

/* Flags of Manager.ListDomains */
#define FERRY_LIST_ACTIVE (UINT64_C(1) << 0)
#define FERRY_LIST_INACTIVE (UINT64_C(1) << 1)
