/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The bus edge of the manager object: org.ferry.Ferry1.Manager, as specified in
 * dbus-interfaces/org.ferry.Ferry1.Manager.xml. */

#include <glib.h>
#include <string.h>

#include "build-config.h"
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

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Hostname", "s", property_get_hostname, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("IdleTimeoutUSec", "t", property_get_idle_timeout, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD("Reload", NULL, NULL, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
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
