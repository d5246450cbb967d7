/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The bus edge of the manager object: org.ferry.Ferry1.Manager, as specified in
 * dbus-interfaces/org.ferry.Ferry1.Manager.xml. */

#include <glib.h>
#include <inttypes.h>
#include <string.h>

#include "build-config.h"
#include "bus-util.h"
#include "domain-dbus.h"
#include "migration-dbus.h"
#include "migration.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager-dbus.h"
#include "manager.h"

static int property_get_version(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", FERRY_VERSION);
}

static int property_get_hostname(sd_bus *bus, const char *path, const char *interface,
                                 const char *property, sd_bus_message *reply, void *userdata,
                                 sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "s", m->hostname);
}

static int property_get_idle_timeout(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply, void *userdata,
                                     sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "t", (uint64_t) m->config.idle_timeout_sec * 1000000ULL);
}

static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int r;

        /* No arguments to read or validate. */
        r = polkit_verify(m->polkit, msg, FERRY_ACTION_MANAGE_SERVICE, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1; /* polkit will answer; we run again then */

        g_autofree char *old_hostname = g_strdup(m->hostname);
        unsigned old_idle = m->config.idle_timeout_sec;

        r = manager_reload(m);
        if (r < 0)
                return sd_bus_error_setf(error, FERRY_ERROR_PREFIX "InvalidConfiguration",
                                         "%s is invalid, keeping the previous configuration "
                                         "(ferryd's log names the setting).", m->config_path);

        if (strcmp(old_hostname, m->hostname) != 0)
                (void) sd_bus_emit_properties_changed(sd_bus_message_get_bus(msg), FERRY_MANAGER_PATH,
                                                      FERRY_MANAGER_INTERFACE, "Hostname", NULL);
        if (old_idle != m->config.idle_timeout_sec)
                (void) sd_bus_emit_properties_changed(sd_bus_message_get_bus(msg), FERRY_MANAGER_PATH,
                                                      FERRY_MANAGER_INTERFACE, "IdleTimeoutUSec", NULL);
        return sd_bus_reply_method_return(msg, NULL);
}


static int reply_path(sd_bus_message *msg, Domain *d) {
        return sd_bus_reply_method_return(msg, "o", d->object_path);
}

static int no_such_domain(sd_bus_error *error, const char *what, const char *key) {
        return sd_bus_error_setf(error, FERRY_ERROR_NO_SUCH_DOMAIN, "No domain with %s '%s'.", what, key);
}

static int method_get_domain_by_name(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        Domain *d;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        if (!domain_name_is_valid(name))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid domain name.");
        r = polkit_verify(m->polkit, msg, FERRY_ACTION_READ, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        d = manager_find_domain_by_name(m, name);
        if (!d)
                return no_such_domain(error, "name", name);
        return reply_path(msg, d);
}

static int method_get_domain_by_uuid(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        uint8_t uuid[16];
        const char *s;
        Domain *d;
        int r;

        r = sd_bus_message_read(msg, "s", &s);
        if (r < 0)
                return r;
        if (domain_uuid_parse(s, uuid) < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid UUID.");
        r = polkit_verify(m->polkit, msg, FERRY_ACTION_READ, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        d = manager_find_domain_by_uuid(m, uuid);
        if (!d)
                return no_such_domain(error, "UUID", s);
        return reply_path(msg, d);
}

static int method_list_domains(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const uint64_t known = FERRY_LIST_ACTIVE | FERRY_LIST_INACTIVE;
        Manager *m = userdata;
        g_autoptr(GList) all = NULL;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(msg, "t", &flags);
        if (r < 0)
                return r;
        if (flags & ~known)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx64 ".",
                                         flags & ~known);
        if (flags == 0)
                flags = known;
        r = polkit_verify(m->polkit, msg, FERRY_ACTION_READ, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        /* Sorted by name, so that listings are stable. */
        all = g_hash_table_get_keys(m->domains_by_name);
        all = g_list_sort(all, (GCompareFunc) strcmp);
        for (GList *l = all; l; l = l->next) {
                Domain *d = manager_find_domain_by_name(m, l->data);
                if (!(flags & (domain_is_active(d) ? FERRY_LIST_ACTIVE : FERRY_LIST_INACTIVE)))
                        continue;
                r = sd_bus_message_append(reply, "o", d->object_path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* Reads and parses the XML argument; InvalidDefinition names the line and element. */
static int read_definition(sd_bus_message *msg, DomainDef **ret, sd_bus_error *error) {
        g_autofree char *why = NULL;
        const char *xml;
        int r;

        r = sd_bus_message_read(msg, "s", &xml);
        if (r < 0)
                return r;
        r = domain_def_parse(xml, strlen(xml), ret, &why);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_DEFINITION, "Invalid domain XML: %s",
                                         why ?: strerror(-r));
        return 0;
}

static int authorize_definition(Manager *m, sd_bus_message *msg, const DomainDef *def, sd_bus_error *error) {
        char uuid[37];
        domain_uuid_format(def->uuid, uuid);
        const char *details[] = { "domain_name", def->name, "domain_uuid", uuid, NULL };
        return polkit_verify(m->polkit, msg, FERRY_ACTION_MANAGE_DOMAINS, details, error);
}

/* Name and uuid must either both be new, or both name the same existing domain. */
static int check_identity(Manager *m, const DomainDef *def, Domain **ret_existing, sd_bus_error *error) {
        Domain *by_name = manager_find_domain_by_name(m, def->name);
        Domain *by_uuid = manager_find_domain_by_uuid(m, def->uuid);

        if (by_name != by_uuid) {
                if (by_name)
                        return sd_bus_error_setf(error, FERRY_ERROR_DOMAIN_EXISTS,
                                                 "Domain '%s' already exists with UUID %s.", def->name,
                                                 by_name->uuid_string);
                return sd_bus_error_setf(error, FERRY_ERROR_DOMAIN_EXISTS,
                                         "A domain with this UUID already exists: '%s'.", by_uuid->def->name);
        }
        *ret_existing = by_name;
        return 0;
}

static int method_define_domain(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        Manager *m = userdata;
        Domain *d = NULL;
        int r;

        r = read_definition(msg, &def, error);
        if (r < 0)
                return r;
        r = check_identity(m, def, &d, error);
        if (r < 0)
                return r;
        r = authorize_definition(m, msg, def, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (d) {
                r = domain_dbus_check_change_protection(d, error);
                if (r < 0)
                        return r;
                /* A new definition for an existing domain: it applies at its next start. */
                r = domain_redefine(d, def);
                if (r < 0)
                        return sd_bus_error_setf(error, FERRY_ERROR_FAILED, "Cannot save the definition: %s",
                                                 strerror(-r));
                TAKE_PTR(def);
                return reply_path(msg, d);
        }

        r = domain_new(m, def, true, &d);
        if (r == -E2BIG)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many domains (at most %u).", DOMAINS_MAX);
        if (r < 0)
                return r;
        TAKE_PTR(def);
        r = domain_save_config(d);
        if (r < 0) {
                domain_free(d);
                return sd_bus_error_setf(error, FERRY_ERROR_FAILED, "Cannot save the definition: %s",
                                         strerror(-r));
        }
        manager_domain_added(m, d);
        return reply_path(msg, d);
}

static int method_create_domain(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        Manager *m = userdata;
        ReplyWithPath *reply;
        Domain *d = NULL;
        uint64_t flags;
        int r;

        r = read_definition(msg, &def, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "t", &flags);
        if (r < 0)
                return r;
        if (flags & ~FERRY_START_PAUSED)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx64 ".",
                                         flags & ~FERRY_START_PAUSED);
        r = check_identity(m, def, &d, error);
        if (r < 0)
                return r;
        if (d)
                return sd_bus_error_setf(error, FERRY_ERROR_DOMAIN_EXISTS,
                                         "Domain '%s' already exists; start it instead.", def->name);
        r = authorize_definition(m, msg, def, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = domain_new(m, def, false, &d);
        if (r == -E2BIG)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many domains (at most %u).", DOMAINS_MAX);
        if (r < 0)
                return r;
        TAKE_PTR(def);
        manager_domain_added(m, d);

        reply = calloc(1, sizeof(*reply));
        if (!reply || !(reply->path = strdup(d->object_path))) {
                free(reply);
                manager_remove_domain(m, d);
                return -ENOMEM;
        }
        reply->message = sd_bus_message_ref(msg);
        /* The reply comes when the guest runs; a failed start removes the transient domain. */
        r = domain_start(d, flags & FERRY_START_PAUSED, bus_reply_domain_done_with_path, reply);
        if (r < 0) {
                sd_bus_message_unref(reply->message);
                free(reply->path);
                free(reply);
                manager_remove_domain(m, d);
                return sd_bus_error_setf(error, bus_error_name_for_domain_errno(r), "Cannot start the domain: %s",
                                         strerror(-r));
        }
        return 1;
}

static int property_get_host_uuid(sd_bus *bus, const char *path, const char *interface,
                                  const char *property, sd_bus_message *reply, void *userdata,
                                  sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "s", manager_host_uuid(m));
}

static void on_prepared(void *userdata, Migration *mig, int error, const char *message, const char *uri) {
        sd_bus_message *msg = userdata;

        if (error < 0)
                (void) sd_bus_reply_method_errorf(msg, error == -EEXIST ? FERRY_ERROR_DOMAIN_EXISTS :
                                                       error == -EINVAL ? FERRY_ERROR_INVALID_DEFINITION :
                                                       FERRY_ERROR_MIGRATION_FAILED,
                                                  "Prepare failed: %s", message ?: strerror(-error));
        else {
                /* Until Finish, the incoming guest exists only for the caller (the source's
                 * ferryd, or a managed direct client): if it goes away, so does the guest. */
                if (mig->state == MIGRATION_RUNNING && migration_track_client(mig, sd_bus_message_get_sender(msg)) < 0)
                        log_warning("Migration %u: cannot watch the caller of PrepareMigration, ignoring.", mig->id);
                (void) sd_bus_reply_method_return(msg, "os", mig->object_path, uri);
        }
        sd_bus_message_unref(msg);
}

static int method_prepare_migration(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(migration_options_done) MigrationOptions options = {};
        g_autofree char *why = NULL;
        Manager *m = userdata;
        const char *xml;
        int r;

        r = sd_bus_message_read(msg, "s", &xml);
        if (r < 0)
                return r;
        r = migration_options_read(msg, &options, error);
        if (r < 0)
                return r;
        if (options.auto_converge || options.destination_xml || options.destination_name ||
            options.suspend_timeout_usec > 0 || options.disks || options.postcopy_bandwidth > 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "auto_converge, destination_xml, destination_name, suspend_timeout_usec, "
                                         "disks and postcopy_bandwidth are options of Domain.Migrate, not of "
                                         "PrepareMigration.");
        r = polkit_verify(m->polkit, msg, FERRY_ACTION_MIGRATE_INCOMING, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = migration_prepare_incoming(m, xml, &options, on_prepared, sd_bus_message_ref(msg), &why);
        if (r < 0) {
                sd_bus_message_unref(msg);
                if (r == -EEXIST)
                        return sd_bus_error_setf(error, FERRY_ERROR_DOMAIN_EXISTS, "%s", strna(why));
                if (r == -EINVAL)
                        return sd_bus_error_setf(error, FERRY_ERROR_INVALID_DEFINITION, "%s", strna(why));
                if (r == -E2BIG)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED, "Too many migrations or domains.");
                return sd_bus_error_setf(error, FERRY_ERROR_MIGRATION_FAILED, "Prepare failed: %s",
                                         why ?: strerror(-r));
        }
        return 1;
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Hostname", "s", property_get_hostname, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("IdleTimeoutUSec", "t", property_get_idle_timeout, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HostUUID", "s", property_get_host_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD("Reload", NULL, NULL, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListDomains", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("ao", domains),
                                method_list_domains, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetDomainByName", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", domain),
                                method_get_domain_by_name, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetDomainByUUID", SD_BUS_ARGS("s", uuid), SD_BUS_RESULT("o", domain),
                                method_get_domain_by_uuid, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DefineDomain", SD_BUS_ARGS("s", xml), SD_BUS_RESULT("o", domain),
                                method_define_domain, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("PrepareMigration", SD_BUS_ARGS("s", xml, "a{sv}", options),
                                SD_BUS_RESULT("o", migration, "s", hypervisor_uri),
                                method_prepare_migration, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("MigrationEnded", SD_BUS_ARGS("o", migration, "s", state, "s", error_name), 0),
        SD_BUS_METHOD_WITH_ARGS("CreateDomain", SD_BUS_ARGS("s", xml, "t", flags), SD_BUS_RESULT("o", domain),
                                method_create_domain, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int manager_dbus_register(Manager *m) {
        int r;

        r = sd_bus_add_object_vtable(m->bus, NULL, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE,
                                     manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to publish %s: %m", FERRY_MANAGER_INTERFACE);
        r = sd_bus_add_object_manager(m->bus, NULL, FERRY_MANAGER_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to publish the object manager: %m");
        return 0;
}
