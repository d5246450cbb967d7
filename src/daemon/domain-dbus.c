/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The bus edge of domains: org.ferry.Ferry1.Domain, as specified in
 * dbus-interfaces/org.ferry.Ferry1.Domain.xml. */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "bus-util.h"
#include "domain-dbus.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-dbus.h"
#include "migration.h"
#include <inttypes.h>
#include <glib.h>

#define SHUTDOWN_TIMEOUT_MAX_USEC (3600ULL * 1000000ULL)

static int object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                       void **found, sd_bus_error *error) {
        _cleanup_free_ char *uuid = NULL;
        Manager *m = userdata;
        Domain *d;

        if (sd_bus_path_decode(path, FERRY_DOMAIN_PATH_PREFIX, &uuid) <= 0)
                return 0;
        d = g_hash_table_lookup(m->domains_by_uuid, uuid);
        if (!d)
                return 0;
        *found = d;
        return 1;
}

static int node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                           sd_bus_error *error) {
        Manager *m = userdata;
        GHashTableIter i;
        Domain *d;
        char **l;
        size_t n = 0;

        l = calloc(g_hash_table_size(m->domains_by_uuid) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        g_hash_table_iter_init(&i, m->domains_by_uuid);
        while (g_hash_table_iter_next(&i, NULL, (void **) &d))
                if (!(l[n++] = strdup(d->object_path))) {
                        g_strfreev(l);
                        return -ENOMEM;
                }
        *nodes = l;
        return 1;
}

/* polkit, with the details administrators write rules against. */
static int authorize(Domain *d, sd_bus_message *msg, const char *action, sd_bus_error *error) {
        const char *details[] = {
                "domain_name", d->def->name,
                "domain_uuid", d->uuid_string,
                NULL,
        };
        return polkit_verify(d->manager->polkit, msg, action, details, error);
}

static int errno_to_bus(sd_bus_error *error, int r, const char *what, Domain *d) {
        switch (r) {
        case -EALREADY:
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE, "Domain %s is already active.", d->def->name);
        case -ENOTCONN:
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE, "Domain %s is %s: cannot %s.",
                                         d->def->name, domain_state_to_string(d->state), what);
        case -EBUSY:
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Domain %s has another operation in progress: cannot %s now.",
                                         d->def->name, what);
        default:
                return sd_bus_error_setf(error, bus_error_name_for_domain_errno(r), "Cannot %s domain %s: %s",
                                         what, d->def->name, strerror(-r));
        }
}

/* r: what starting an asynchronous operation returned, which was handed a reference to msg to
 * reply with later. On failure that reference was not taken over: drop it and say why now. */
static int async_started(Domain *d, sd_bus_message *msg, int r, const char *what, sd_bus_error *error) {
        if (r < 0) {
                sd_bus_message_unref(msg);
                return errno_to_bus(error, r, what, d);
        }
        return 1;
}

int domain_dbus_check_change_protection(Domain *d, sd_bus_error *error) {
        if (!domain_is_migrating(d))
                return 0;
        return sd_bus_error_setf(error, FERRY_ERROR_MIGRATION_IN_PROGRESS,
                                 "Domain %s is being migrated: its definition cannot change until the migration ends.",
                                 d->def->name);
}

typedef int (*DomainAsyncOp)(Domain *d, DomainDone done, void *userdata);

static int run_async(Domain *d, sd_bus_message *msg, DomainAsyncOp op, const char *what, sd_bus_error *error) {
        return async_started(d, msg, op(d, bus_reply_domain_done, sd_bus_message_ref(msg)), what, error);
}

static int method_start(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(msg, "t", &flags);
        if (r < 0)
                return r;
        if (flags & ~(uint64_t) FERRY_START_PAUSED)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx64 ".",
                                         flags & ~(uint64_t) FERRY_START_PAUSED);
        r = authorize(d, msg, FERRY_ACTION_MANAGE_DOMAINS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = domain_start(d, flags & FERRY_START_PAUSED, bus_reply_domain_done, sd_bus_message_ref(msg));
        return async_started(d, msg, r, "start", error);
}

static int method_shutdown(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        uint64_t timeout;
        int r;

        r = sd_bus_message_read(msg, "t", &timeout);
        if (r < 0)
                return r;
        if (timeout > SHUTDOWN_TIMEOUT_MAX_USEC)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Timeout is longer than an hour.");
        r = authorize(d, msg, FERRY_ACTION_MANAGE_DOMAINS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = domain_shutdown(d, timeout, bus_reply_domain_done, sd_bus_message_ref(msg));
        return async_started(d, msg, r, "shut down", error);
}

#define SIMPLE_ASYNC_METHOD(fn, op, what)                                                       \
        static int fn(sd_bus_message *msg, void *userdata, sd_bus_error *error) {               \
                Domain *d = userdata;                                                           \
                int r = authorize(d, msg, FERRY_ACTION_MANAGE_DOMAINS, error);                  \
                if (r <= 0)                                                                     \
                        return r < 0 ? r : 1;                                                   \
                return run_async(d, msg, op, what, error);                                      \
        }

SIMPLE_ASYNC_METHOD(method_destroy, domain_destroy, "destroy")
SIMPLE_ASYNC_METHOD(method_suspend, domain_suspend, "suspend")
SIMPLE_ASYNC_METHOD(method_resume, domain_resume, "resume")

static int method_undefine(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        int r;

        if (!d->persistent)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Domain %s is transient: there is no definition to remove.", d->def->name);
        r = authorize(d, msg, FERRY_ACTION_MANAGE_DOMAINS, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = domain_dbus_check_change_protection(d, error);
        if (r < 0)
                return r;
        if (d->op != DOMAIN_OP_NONE)
                return errno_to_bus(error, -EBUSY, "undefine", d);

        r = domain_undefine(d); /* 1: d is gone */
        if (r < 0)
                return errno_to_bus(error, r, "undefine", d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_get_xml(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *xml = NULL;
        Domain *d = userdata;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(msg, "t", &flags);
        if (r < 0)
                return r;
        if (flags & ~(uint64_t) (DOMAIN_FORMAT_INACTIVE | DOMAIN_FORMAT_MIGRATABLE))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx64 ".",
                                         flags & ~(uint64_t) (DOMAIN_FORMAT_INACTIVE | DOMAIN_FORMAT_MIGRATABLE));
        r = authorize(d, msg, FERRY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        xml = domain_get_xml(d, (DomainFormatFlags) flags);
        if (!xml)
                return -ENOMEM;
        return sd_bus_reply_method_return(msg, "s", xml);
}

/* fd: where QEMU writes; the caller opened it, with its own permissions. Regular files only:
 * a pipe whose reader stops reading would hold the domain's operation slot for good. */
static int check_dump_fd(int fd, sd_bus_error *error) {
        struct stat st;
        int flags;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The dump must go to a regular file, not a %s.",
                                         S_ISFIFO(st.st_mode) ? "pipe" : S_ISSOCK(st.st_mode) ? "socket" :
                                         S_ISCHR(st.st_mode) ? "character device" :
                                         S_ISBLK(st.st_mode) ? "block device" : "directory or other special file");
        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        if ((flags & O_ACCMODE) != O_WRONLY && (flags & O_ACCMODE) != O_RDWR)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The dump file descriptor is not open for writing.");
        return 0;
}

static int method_dump_memory(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        uint64_t flags;
        int fd, r;

        r = sd_bus_message_read(msg, "ht", &fd, &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx64 ".", flags);
        r = check_dump_fd(fd, error);
        if (r < 0)
                return r;
        /* A separate action: a dump holds everything the guest keeps in memory. */
        r = authorize(d, msg, FERRY_ACTION_DUMP_MEMORY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = domain_dump_memory(d, fd, bus_reply_domain_done, sd_bus_message_ref(msg));
        if (r >= 0)
                return 1;
        sd_bus_message_unref(msg);
        if (r == -ENOTCONN)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Domain %s is %s: only a paused domain can be dumped, so that its memory "
                                         "does not change under the dump (suspend it first).",
                                         d->def->name, domain_state_to_string(d->state));
        if (r == -EBUSY)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Domain %s has another operation in progress (a dump, a migration, ...): "
                                         "cannot dump its memory now.", d->def->name);
        return sd_bus_error_setf(error, bus_error_name_for_domain_errno(r), "Cannot dump the memory of domain %s: %s",
                                 d->def->name, strerror(-r));
}

static int method_set_autostart(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        int autostart, r;

        r = sd_bus_message_read(msg, "b", &autostart);
        if (r < 0)
                return r;
        if (autostart && !d->persistent)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Domain %s is transient: only defined domains can autostart.", d->def->name);
        r = authorize(d, msg, FERRY_ACTION_MANAGE_DOMAINS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = domain_dbus_check_change_protection(d, error);
        if (r < 0)
                return r;
        r = domain_set_autostart(d, autostart);
        if (r < 0)
                return errno_to_bus(error, r, "change autostart of", d);
        return sd_bus_reply_method_return(msg, NULL);
}

/* The common part of Migrate and MigrateBegin: (s destination_uri, a{sv} options, t flags),
 * validated and authorized. > 0: go on; otherwise the handler returns it. */
static int read_migrate_call(sd_bus_message *msg, Domain *d, const char **ret_uri, MigrationOptions *options,
                             sd_bus_error *error) {
        uint64_t flags;
        int r;

        r = sd_bus_message_read(msg, "s", ret_uri);
        if (r < 0)
                return r;
        r = migration_options_read(msg, options, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "t", &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx64 ".", flags);
        const char *details[] = { "domain_name", d->def->name, "domain_uuid", d->uuid_string,
                                  "destination", *ret_uri, NULL };
        r = polkit_verify(d->manager->polkit, msg, FERRY_ACTION_MIGRATE, details, error);
        if (r <= 0)
                return r < 0 ? r : 0;
        return 1;
}

/* A migration that could not start, as the caller sees it (why: the model's explanation). */
static int migrate_start_error(sd_bus_error *error, int r, const char *why, Domain *d) {
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Cannot migrate: %s", strna(why));
        if (r == -E2BIG)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many migrations at once (at most %u).", MIGRATIONS_MAX);
        if (r == -EIO && why) /* the job existed and failed at once (MigrateBegin) */
                return sd_bus_error_setf(error, FERRY_ERROR_MIGRATION_FAILED, "Cannot migrate: %s", why);
        return errno_to_bus(error, r, "migrate", d);
}

static int method_migrate(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(migration_options_done) MigrationOptions options = {};
        g_autofree char *why = NULL;
        const char *uri;
        Domain *d = userdata;
        Migration *mig;
        int r;

        r = read_migrate_call(msg, d, &uri, &options, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 1: polkit answers later, the call comes again */

        r = migration_start_outgoing(d, uri, &options, &mig, &why);
        if (r < 0)
                return migrate_start_error(error, r, why, d);
        /* The job is announced already; the client may go away now, the migration goes on. */
        return sd_bus_reply_method_return(msg, "o", mig->object_path);
}

static int method_migrate_begin(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(migration_options_done) MigrationOptions options = {};
        g_autofree char *why = NULL;
        _cleanup_free_ char *xml = NULL;
        const char *uri;
        Domain *d = userdata;
        Migration *mig;
        int r;

        r = read_migrate_call(msg, d, &uri, &options, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 1: polkit answers later, the call comes again */

        /* Managed direct: the caller drives the other phases (Migration.Perform, .Confirm). */
        r = migration_begin_managed(d, uri, &options, sd_bus_message_get_sender(msg), &mig, &xml, &why);
        if (r < 0)
                return migrate_start_error(error, r, why, d);
        return sd_bus_reply_method_return(msg, "os", mig->object_path, xml);
}

static int property_get_name(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", d->def->name);
}

static int property_get_uuid(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", d->uuid_string);
}

static int property_get_title(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", strempty(d->def->title));
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", domain_state_to_string(d->state));
}

static int property_get_reason(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", d->reason);
}

static int property_get_persistent(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "b", d->persistent);
}

static int property_get_autostart(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "b", d->autostart);
}

static int property_get_memory(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        const DomainDef *def = d->live_def ?: d->def;
        return sd_bus_message_append(reply, "t", def->memory_kib * UINT64_C(1024));
}

static int property_get_vcpus(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        const DomainDef *def = d->live_def ?: d->def;
        return sd_bus_message_append(reply, "u", (uint32_t) def->vcpus);
}

void domain_dbus_emit_added(Domain *d) {
        sd_bus *bus = manager_bus(d->manager);
        if (bus)
                (void) sd_bus_emit_object_added(bus, d->object_path);
}

void domain_dbus_emit_removed(Domain *d) {
        sd_bus *bus = manager_bus(d->manager);
        if (bus)
                (void) sd_bus_emit_object_removed(bus, d->object_path);
}

void domain_dbus_emit_changed(Domain *d, DomainChange what) {
        sd_bus *bus = manager_bus(d->manager);
        const char *props[8];
        size_t n = 0;

        if (!bus)
                return;
        if (what & DOMAIN_CHANGE_STATE) {
                props[n++] = "State";
                props[n++] = "StateReason";
        }
        if (what & DOMAIN_CHANGE_PERSISTENT)
                props[n++] = "Persistent";
        if (what & DOMAIN_CHANGE_AUTOSTART)
                props[n++] = "Autostart";
        if (what & DOMAIN_CHANGE_DEFINITION) {
                props[n++] = "Title";
                props[n++] = "Memory";
                props[n++] = "VCPUs";
        }
        props[n] = NULL;
        if (n > 0)
                (void) sd_bus_emit_properties_changed_strv(bus, d->object_path, FERRY_DOMAIN_INTERFACE,
                                                           (char **) props);
}

static const sd_bus_vtable domain_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", property_get_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("UUID", "s", property_get_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Title", "s", property_get_title, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StateReason", "s", property_get_reason, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Persistent", "b", property_get_persistent, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Autostart", "b", property_get_autostart, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Memory", "t", property_get_memory, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("VCPUs", "u", property_get_vcpus, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT,
                                method_start, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Shutdown", SD_BUS_ARGS("t", timeout_usec), SD_BUS_NO_RESULT,
                                method_shutdown, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Destroy", NULL, NULL, method_destroy, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Suspend", NULL, NULL, method_suspend, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Resume", NULL, NULL, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Undefine", NULL, NULL, method_undefine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetXML", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("s", xml),
                                method_get_xml, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DumpMemory", SD_BUS_ARGS("h", fd, "t", flags), SD_BUS_NO_RESULT,
                                method_dump_memory, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetAutostart", SD_BUS_ARGS("b", autostart), SD_BUS_NO_RESULT,
                                method_set_autostart, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Migrate", SD_BUS_ARGS("s", destination_uri, "a{sv}", options, "t", flags),
                                SD_BUS_RESULT("o", migration), method_migrate, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MigrateBegin", SD_BUS_ARGS("s", destination_uri, "a{sv}", options, "t", flags),
                                SD_BUS_RESULT("o", migration, "s", xml), method_migrate_begin,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int domain_dbus_register(Manager *m) {
        int r;

        r = sd_bus_add_fallback_vtable(m->bus, NULL, FERRY_DOMAIN_PATH_PREFIX, FERRY_DOMAIN_INTERFACE,
                                       domain_vtable, object_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to publish %s: %m", FERRY_DOMAIN_INTERFACE);
        r = sd_bus_add_node_enumerator(m->bus, NULL, FERRY_DOMAIN_PATH_PREFIX, node_enumerator, m);
        if (r < 0)
                return log_error_errno(r, "Failed to enumerate domains: %m");
        return 0;
}
