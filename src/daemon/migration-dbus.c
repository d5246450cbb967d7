/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The bus edge of migrations: org.ferry.Ferry1.Migration, as specified in
 * dbus-interfaces/org.ferry.Ferry1.Migration.xml. */

#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <string.h>

#include "bus-util.h"
#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-dbus.h"
#include "domain-def.h"
#include "migration-postcopy.h"
#include "migration-storage.h"
#include "migration-uri.h"

#define EMIT_INTERVAL_USEC (1000000ULL / 10)

static int object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                       void **found, sd_bus_error *error) {
        _cleanup_free_ char *id = NULL;
        Manager *m = userdata;
        Migration *mig;
        char *end;
        unsigned long n;

        if (sd_bus_path_decode(path, FERRY_MIGRATION_PATH_PREFIX, &id) <= 0)
                return 0;
        n = strtoul(id, &end, 10);
        if (*end || n == 0 || n > UINT_MAX)
                return 0;
        mig = g_hash_table_lookup(m->migrations, GUINT_TO_POINTER((unsigned) n));
        if (!mig)
                return 0;
        *found = mig;
        return 1;
}

static int node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        GHashTableIter i;
        Migration *mig;
        char **l = calloc(g_hash_table_size(m->migrations) + 1, sizeof(char *));
        size_t n = 0;

        if (!l)
                return -ENOMEM;
        g_hash_table_iter_init(&i, m->migrations);
        while (g_hash_table_iter_next(&i, NULL, (void **) &mig))
                l[n++] = strdup(mig->object_path);
        *nodes = l;
        return 1;
}

/* The options that are a plain flag or number; the others are checked one by one below. */
/* A string option's check: NULL if the value is fine, else what is wrong (for InvalidArgs). */
typedef char *(*OptionCheck)(const char *value);

typedef struct OptionField {
        const char *key;
        size_t offset;
        OptionCheck check;         /* string options only; NULL: checked by the flow that uses it */
} OptionField;

static const OptionField bool_options[] = {
        { "paused", offsetof(MigrationOptions, paused) },
        { "persistent", offsetof(MigrationOptions, persistent) },
        { "undefine_source", offsetof(MigrationOptions, undefine_source) },
        { "offline", offsetof(MigrationOptions, offline) },
        { "direct", offsetof(MigrationOptions, direct) },
        { "tls", offsetof(MigrationOptions, tls) },
        { "tunnelled", offsetof(MigrationOptions, tunnelled) },
        { "tunnel_plaintext", offsetof(MigrationOptions, tunnel_plaintext) },
        { "auto_converge", offsetof(MigrationOptions, auto_converge) },
        { "change_protection", offsetof(MigrationOptions, change_protection) },
        { "postcopy", offsetof(MigrationOptions, postcopy) },
};

static const OptionField u64_options[] = {
        { "max_bandwidth", offsetof(MigrationOptions, max_bandwidth) },
        { "max_downtime_usec", offsetof(MigrationOptions, max_downtime_usec) },
        { "postcopy_bandwidth", offsetof(MigrationOptions, postcopy_bandwidth) },
        { "suspend_timeout_usec", offsetof(MigrationOptions, suspend_timeout_usec) },
};

static char *check_hypervisor_uri(const char *s) {
        _cleanup_(migration_uri_freep) MigrationUri *u = NULL;
        g_autofree char *why = NULL;
        if (migration_uri_parse(s, &u, &why) < 0)
                return g_strdup_printf("Invalid hypervisor URI: %s", strna(why));
        return NULL;
}

static char *check_destination_xml(const char *s) {
        /* Parsed against the domain by migration_start_outgoing(). */
        if (strlen(s) > DOMAIN_XML_SIZE_MAX)
                return g_strdup_printf("Destination XML is larger than %u bytes.", DOMAIN_XML_SIZE_MAX);
        return NULL;
}

static char *check_destination_name(const char *s) {
        return domain_name_is_valid(s) ? NULL : g_strdup("Invalid destination name: not a valid domain name.");
}

static char *check_listen_address(const char *s) {
        return migration_ip_address_is_valid(s) ? NULL
                                                : g_strdup("Invalid listen address: an IPv4 or IPv6 address is needed.");
}

static char *check_disks_uri(const char *s) {
        _cleanup_(migration_uri_freep) MigrationUri *u = NULL;
        g_autofree char *why = NULL;
        if (migration_uri_parse_full(s, SIZE_MAX, MIGRATION_URI_ALLOW_ANY, &u, &why) < 0)
                return g_strdup_printf("Invalid disks URI: %s", strna(why));
        return NULL;
}

static const OptionField string_options[] = {
        { "hypervisor_uri", offsetof(MigrationOptions, hypervisor_uri), check_hypervisor_uri },
        /* Checked by the flow that uses it (only PrepareMigration does). */
        { "tunnel_token", offsetof(MigrationOptions, tunnel_token), NULL },
        { "destination_xml", offsetof(MigrationOptions, destination_xml), check_destination_xml },
        { "destination_name", offsetof(MigrationOptions, destination_name), check_destination_name },
        { "listen_address", offsetof(MigrationOptions, listen_address), check_listen_address },
        { "disks_uri", offsetof(MigrationOptions, disks_uri), check_disks_uri },
};

static const OptionField *option_field(const OptionField *table, size_t n, const char *key) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(table[i].key, key) == 0)
                        return &table[i];
        return NULL;
}

int migration_options_read(sd_bus_message *msg, MigrationOptions *o, sd_bus_error *error) {
        const OptionField *f;
        const char *key;
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                r = sd_bus_message_read(msg, "s", &key);
                if (r < 0)
                        return r;
#define READ_VARIANT(sig, ptr)                                                                   \
                do {                                                                             \
                        r = sd_bus_message_enter_container(msg, 'v', sig);                       \
                        if (r < 0)                                                               \
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,       \
                                                         "Option '%s' takes type '%s'.", key, sig); \
                        r = sd_bus_message_read(msg, sig, ptr);                                  \
                        if (r < 0)                                                               \
                                return r;                                                        \
                        r = sd_bus_message_exit_container(msg);                                  \
                        if (r < 0)                                                               \
                                return r;                                                        \
                } while (0)
                if ((f = option_field(bool_options, ELEMENTSOF(bool_options), key))) {
                        int b;
                        READ_VARIANT("b", &b);
                        *(bool *) ((uint8_t *) o + f->offset) = b;
                } else if ((f = option_field(u64_options, ELEMENTSOF(u64_options), key)))
                        READ_VARIANT("t", (uint64_t *) ((uint8_t *) o + f->offset));
                else if ((f = option_field(string_options, ELEMENTSOF(string_options), key))) {
                        char **field = (char **) ((uint8_t *) o + f->offset);
                        g_autofree char *wrong = NULL;
                        const char *v;
                        READ_VARIANT("s", &v);
                        if (f->check && (wrong = f->check(v)))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s", wrong);
                        free(*field);
                        *field = strdup(v);
                        if (!*field)
                                return -ENOMEM;
                } else if (strcmp(key, "parallel_connections") == 0) {
                        uint32_t n;
                        READ_VARIANT("u", &n);
                        if (n < 1 || n > MIGRATION_PARALLEL_CONNECTIONS_MAX)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option 'parallel_connections' must be 1..%u, not %" PRIu32 ".",
                                                         MIGRATION_PARALLEL_CONNECTIONS_MAX, n);
                        o->parallel_connections = n;
                } else if (strcmp(key, "copy_storage") == 0) {
                        const char *s;
                        READ_VARIANT("s", &s);
                        MigrationCopyStorage c = migration_copy_storage_from_string(s);
                        if (c < 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option copy_storage takes \"all\" or \"inc\".");
                        o->copy_storage = c;
                } else if (strcmp(key, "disks") == 0) {
                        g_auto(GStrv) l = NULL;
                        r = sd_bus_message_enter_container(msg, 'v', "as");
                        if (r < 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option '%s' takes type '%s'.", key, "as");
                        r = sd_bus_message_read_strv(msg, &l);
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(msg);
                        if (r < 0)
                                return r;
                        if (!l || !l[0] || g_strv_length(l) > DOMAIN_DISKS_MAX)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option disks takes 1 to %u disk targets.", DOMAIN_DISKS_MAX);
                        for (char **t = l; *t; t++)
                                if (!domain_disk_target_is_valid(*t))
                                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                 "Invalid disk target in disks: not like vda or sdb.");
                        g_strfreev(o->disks);
                        o->disks = g_strdupv(l);
                } else if (strcmp(key, "disk_sizes") == 0) {
                        const char *target;
                        uint64_t size;
                        r = sd_bus_message_enter_container(msg, 'v', "a{st}");
                        if (r < 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option '%s' takes type '%s'.", key, "a{st}");
                        r = sd_bus_message_enter_container(msg, 'a', "{st}");
                        if (r < 0)
                                return r;
                        while ((r = sd_bus_message_read(msg, "{st}", &target, &size)) > 0) {
                                if (!domain_disk_target_is_valid(target) || size == 0 ||
                                    o->n_disk_sizes >= DOMAIN_DISKS_MAX)
                                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                 "Invalid disk_sizes: up to %u disk targets, each with a size.",
                                                                 DOMAIN_DISKS_MAX);
                                for (size_t i = 0; i < o->n_disk_sizes; i++)
                                        if (strcmp(o->disk_sizes[i].target, target) == 0)
                                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                         "Invalid disk_sizes: %s twice.", target);
                                MigrationDiskSize *n = realloc(o->disk_sizes, (o->n_disk_sizes + 1) * sizeof(*n));
                                if (!n)
                                        return -ENOMEM;
                                o->disk_sizes = n;
                                o->disk_sizes[o->n_disk_sizes] = (MigrationDiskSize) { .target = strdup(target), .size = size };
                                if (!o->disk_sizes[o->n_disk_sizes].target)
                                        return -ENOMEM;
                                o->n_disk_sizes++;
                        }
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(msg);
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(msg);
                        if (r < 0)
                                return r;
                } else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s'.", key);
#undef READ_VARIANT
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

/* Managed direct: the job belongs to the client that began it (its phases must not be driven
 * by two clients at once); everyone else is refused before polkit is asked. */
static int check_client(Migration *mig, sd_bus_message *msg, sd_bus_error *error) {
        if (migration_is_client(mig, sd_bus_message_get_sender(msg)))
                return 0;
        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                 "Migration %u of %s is driven by the client that began it (%s); only it may call this.",
                                 mig->id, mig->domain_name, strna(mig->client));
}

static int method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        int r;

        r = check_client(mig, msg, error);
        if (r < 0)
                return r;
        r = polkit_verify(mig->manager->polkit, msg, FERRY_ACTION_MIGRATE, details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = migration_cancel(mig);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "The migration is past the point where it can be cancelled.");
        if (r < 0)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE, "The migration is not running.");
        return sd_bus_reply_method_return(msg, NULL);
}

static int set_limit(sd_bus_message *msg, Migration *mig, int (*set)(Migration *, uint64_t), sd_bus_error *error) {
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        uint64_t v;
        int r;

        r = sd_bus_message_read(msg, "t", &v);
        if (r < 0)
                return r;
        r = polkit_verify(mig->manager->polkit, msg, FERRY_ACTION_MIGRATE, details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = set(mig, v);
        if (r < 0)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Only a running outgoing migration takes new limits.");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_set_max_bandwidth(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return set_limit(msg, userdata, migration_set_max_bandwidth, error);
}

static int method_set_max_downtime(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return set_limit(msg, userdata, migration_set_max_downtime, error);
}

static int method_start_post_copy(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        int r;

        if (mig->direction != MIGRATION_OUTGOING)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "StartPostCopy is for the source's migration object.");
        if (mig->postcopy == MIGRATION_POSTCOPY_OFF)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Migration %u was not armed for post-copy (the postcopy option of Migrate).",
                                         mig->id);
        r = polkit_verify(mig->manager->polkit, msg, FERRY_ACTION_MIGRATE, details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = migration_start_postcopy(mig);
        if (r == -EALREADY)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE, "Post-copy was started already.");
        if (r < 0)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Migration %u is %s in phase %s: post-copy starts while the memory is copied.",
                                         mig->id, migration_state_to_string(mig->state),
                                         migration_phase_to_string(mig->phase));
        return sd_bus_reply_method_return(msg, NULL);
}

static void on_recovered(void *userdata, int error, const char *message, const char *hypervisor_uri) {
        sd_bus_message *msg = userdata;

        if (error < 0)
                (void) sd_bus_reply_method_errorf(msg, FERRY_ERROR_MIGRATION_FAILED, "Recovery failed: %s",
                                                  message ?: strerror(-error));
        else
                (void) sd_bus_reply_method_return(msg, "s", strempty(hypervisor_uri));
        sd_bus_message_unref(msg);
}

static int method_recover(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        int r;

        if (mig->state != MIGRATION_RUNNING || mig->postcopy != MIGRATION_POSTCOPY_PAUSED)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Migration %u is %s with post-copy %s: only a paused post-copy is recovered.",
                                         mig->id, migration_state_to_string(mig->state),
                                         migration_postcopy_to_string(mig->postcopy));
        r = polkit_verify(mig->manager->polkit, msg,
                          mig->direction == MIGRATION_INCOMING ? FERRY_ACTION_MIGRATE_INCOMING : FERRY_ACTION_MIGRATE,
                          details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = migration_recover(mig, on_recovered, sd_bus_message_ref(msg));
        if (r < 0) {
                sd_bus_message_unref(msg);
                if (r == -EALREADY)
                        return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE, "A recovery is in progress already.");
                if (r == -ENOTCONN)
                        return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                                 "Migration %u cannot be recovered from here: the QEMU or the destination is not reachable.",
                                                 mig->id);
                return sd_bus_error_setf(error, FERRY_ERROR_MIGRATION_FAILED, "Cannot recover: %s", strerror(-r));
        }
        return 1;
}

static void on_performed(void *userdata, int error, const char *message) {
        sd_bus_message *msg = userdata;

        if (error < 0)
                (void) sd_bus_reply_method_errorf(msg, FERRY_ERROR_MIGRATION_FAILED, "Perform failed: %s",
                                                  message ?: strerror(-error));
        else
                (void) sd_bus_reply_method_return(msg, NULL);
        sd_bus_message_unref(msg);
}

static int method_perform(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        g_autofree char *why = NULL;
        const char *uri;
        int r;

        r = sd_bus_message_read(msg, "s", &uri);
        if (r < 0)
                return r;
        if (!mig->managed)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Only a managed direct migration (Domain.MigrateBegin) takes Perform.");
        r = check_client(mig, msg, error);
        if (r < 0)
                return r;
        r = polkit_verify(mig->manager->polkit, msg, FERRY_ACTION_MIGRATE, details, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = migration_perform_managed(mig, uri, on_performed, sd_bus_message_ref(msg), &why);
        if (r < 0) {
                sd_bus_message_unref(msg);
                if (r == -EINVAL)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid hypervisor URI: %s",
                                                 strna(why));
                if (r == -ENOTCONN)
                        return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                                 "Migration %u is %s in phase %s: Perform comes once, after Begin%s.",
                                                 mig->id, migration_state_to_string(mig->state),
                                                 migration_phase_to_string(mig->phase),
                                                 mig->options.offline ? " (and not for offline)" : "");
                return r;
        }
        return 1;
}

static int method_confirm(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        int success, r;

        r = sd_bus_message_read(msg, "b", &success);
        if (r < 0)
                return r;
        if (!mig->managed)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Only a managed direct migration (Domain.MigrateBegin) takes Confirm.");
        r = check_client(mig, msg, error);
        if (r < 0)
                return r;
        r = polkit_verify(mig->manager->polkit, msg, FERRY_ACTION_MIGRATE, details, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = migration_confirm_managed(mig, success);
        if (r < 0)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Migration %u is %s in phase %s: Confirm(true) comes after a completed Perform.",
                                         mig->id, migration_state_to_string(mig->state),
                                         migration_phase_to_string(mig->phase));
        return sd_bus_reply_method_return(msg, NULL);
}

static void on_finished(void *userdata, int error, const char *message) {
        bus_reply_domain_done(userdata, error == 0 ? 0 : -EIO, message);
}

static void finish_now(Migration *mig, sd_bus_message *msg, bool success) {
        int r = migration_finish_incoming(mig, success, on_finished, sd_bus_message_ref(msg));
        if (r < 0) {
                (void) sd_bus_reply_method_errorf(msg, FERRY_ERROR_MIGRATION_FAILED, "Cannot finish: %s", strerror(-r));
                sd_bus_message_unref(msg);
        }
}

void migration_dbus_finish_pending(Migration *mig) {
        sd_bus_message *msg = TAKE_PTR(mig->pending_finish);
        finish_now(mig, msg, true);
        sd_bus_message_unref(msg);
}

static int method_finish(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        const char *details[] = { "domain_name", mig->domain_name, NULL };
        int success, r;

        r = sd_bus_message_read(msg, "b", &success);
        if (r < 0)
                return r;
        if (mig->direction != MIGRATION_INCOMING || mig->state != MIGRATION_RUNNING || mig->pending_finish)
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE, "This migration cannot be finished.");
        if (!success && migration_postcopy_started(mig))
                return sd_bus_error_setf(error, FERRY_ERROR_INVALID_STATE,
                                         "Migration %u switched to post-copy: this copy holds pages the source lacks "
                                         "and is not thrown away.", mig->id);
        r = polkit_verify(mig->manager->polkit, msg, FERRY_ACTION_MIGRATE_INCOMING, details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        /* The source may be done sending before our QEMU has loaded everything: wait for it. */
        if (success && !mig->qemu_completed && !migration_postcopy_started(mig)) {
                mig->pending_finish = sd_bus_message_ref(msg);
                return 1;
        }
        finish_now(mig, msg, success);
        return 1;
}

#define STRING_PROPERTY(fn, expr)                                                                       \
        static int fn(sd_bus *bus, const char *path, const char *interface, const char *property,      \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {                     \
                Migration *mig = userdata; (void) mig;                                                  \
                return sd_bus_message_append(reply, "s", strempty(expr));                               \
        }
#define U64_PROPERTY(fn, expr)                                                                          \
        static int fn(sd_bus *bus, const char *path, const char *interface, const char *property,      \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {                     \
                Migration *mig = userdata; (void) mig;                                                  \
                return sd_bus_message_append(reply, "t", (uint64_t) (expr));                            \
        }

#define BOOL_PROPERTY(fn, expr)                                                                         \
        static int fn(sd_bus *bus, const char *path, const char *interface, const char *property,      \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {                     \
                Migration *mig = userdata; (void) mig;                                                  \
                return sd_bus_message_append(reply, "b", (int) (expr));                                 \
        }

static int property_get_domain(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        return sd_bus_message_append(reply, "o", mig->domain_path);
}

STRING_PROPERTY(property_get_domain_name, mig->domain_name)
STRING_PROPERTY(property_get_direction, migration_direction_to_string(mig->direction))
STRING_PROPERTY(property_get_flow, migration_flow_to_string(mig))
STRING_PROPERTY(property_get_transport, mig->options.tunnelled ? "tunnelled" : "native")
STRING_PROPERTY(property_get_phase, migration_phase_to_string(mig->phase))
STRING_PROPERTY(property_get_state, migration_state_to_string(mig->state))
STRING_PROPERTY(property_get_destination_uri, mig->destination_uri)
STRING_PROPERTY(property_get_hypervisor_uri, mig->hypervisor_uri)
STRING_PROPERTY(property_get_error_name, mig->error_name)
STRING_PROPERTY(property_get_error_message, mig->error_message)
U64_PROPERTY(property_get_elapsed, mig->stats.elapsed_usec)
U64_PROPERTY(property_get_setup, mig->stats.setup_usec)
U64_PROPERTY(property_get_total, mig->stats.data_total)
U64_PROPERTY(property_get_processed, mig->stats.data_processed)
U64_PROPERTY(property_get_remaining, mig->stats.data_remaining)
U64_PROPERTY(property_get_bps, mig->stats.bytes_per_second)
U64_PROPERTY(property_get_dirty_rate, mig->stats.dirty_pages_rate)
U64_PROPERTY(property_get_iteration, mig->stats.iteration)
U64_PROPERTY(property_get_expected_downtime, mig->stats.expected_downtime_usec)
U64_PROPERTY(property_get_downtime, mig->stats.downtime_usec)
U64_PROPERTY(property_get_max_bandwidth, mig->options.max_bandwidth)
U64_PROPERTY(property_get_max_downtime, mig->options.max_downtime_usec)
STRING_PROPERTY(property_get_copy_storage, migration_copy_storage_to_string(mig->options.copy_storage))
STRING_PROPERTY(property_get_disks_uri, migration_storage_disks_uri(mig))
U64_PROPERTY(property_get_disk_total, migration_storage_stats(mig).total)
U64_PROPERTY(property_get_disk_processed, migration_storage_stats(mig).processed)
U64_PROPERTY(property_get_disk_remaining, migration_storage_stats(mig).remaining)
U64_PROPERTY(property_get_disk_bps, migration_storage_stats(mig).bytes_per_second)
BOOL_PROPERTY(property_get_tls, mig->options.tls)
BOOL_PROPERTY(property_get_auto_converge, mig->options.auto_converge)
STRING_PROPERTY(property_get_postcopy, migration_postcopy_to_string(mig->postcopy))
U64_PROPERTY(property_get_postcopy_bandwidth, mig->options.postcopy_bandwidth)

static int property_get_parallel(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        return sd_bus_message_append(reply, "u", (uint32_t) mig->options.parallel_connections);
}

static int property_get_throttle(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Migration *mig = userdata;
        return sd_bus_message_append(reply, "u", (uint32_t) mig->stats.cpu_throttle_percent);
}

static const char *const changing_properties[] = {
        "Phase", "State", "HypervisorURI", "ErrorName", "ErrorMessage", "ElapsedUSec", "SetupUSec",
        "DataTotal", "DataProcessed", "DataRemaining", "BytesPerSecond", "DirtyPagesRate", "Iteration",
        "ExpectedDowntimeUSec", "DowntimeUSec", "MaxBandwidth", "MaxDowntimeUSec", "AutoConvergeThrottle", "DisksURI", "DiskTotal", "DiskProcessed",
        "DiskRemaining", "DiskBytesPerSecond", "PostCopy", NULL,
};

static void emit_now(Migration *mig) {
        sd_bus *bus = manager_bus(mig->manager);
        uint64_t now = 0;

        (void) sd_event_now(manager_event(mig->manager), CLOCK_MONOTONIC, &now);
        mig->last_emit_usec = now;
        mig->emit_pending = false;
        if (bus)
                (void) sd_bus_emit_properties_changed_strv(bus, mig->object_path, FERRY_MIGRATION_INTERFACE,
                                                           (char **) changing_properties);
}

static int on_emit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Migration *mig = userdata;
        mig->emit_timer = sd_event_source_disable_unref(mig->emit_timer);
        if (mig->emit_pending)
                emit_now(mig);
        return 0;
}

void migration_dbus_emit_changed(Migration *mig) {
        uint64_t now = 0;

        (void) sd_event_now(manager_event(mig->manager), CLOCK_MONOTONIC, &now);
        /* Statistics change all the time: coalesce into at most ~10 signals a second, but
         * let an ended migration say so at once. */
        if (mig->state != MIGRATION_RUNNING || now >= mig->last_emit_usec + EMIT_INTERVAL_USEC) {
                emit_now(mig);
                return;
        }
        if (mig->emit_pending)
                return;
        mig->emit_pending = true;
        (void) sd_event_add_time(manager_event(mig->manager), &mig->emit_timer, CLOCK_MONOTONIC,
                                 mig->last_emit_usec + EMIT_INTERVAL_USEC, 0, on_emit_timer, mig);
}

void migration_dbus_emit_added(Migration *mig) {
        sd_bus *bus = manager_bus(mig->manager);
        if (bus)
                (void) sd_bus_emit_object_added(bus, mig->object_path);
}

void migration_dbus_emit_removed(Migration *mig) {
        sd_bus *bus = manager_bus(mig->manager);
        if (bus)
                (void) sd_bus_emit_object_removed(bus, mig->object_path);
}

void migration_dbus_emit_ended(Migration *mig) {
        sd_bus *bus = manager_bus(mig->manager);
        if (bus)
                (void) sd_bus_emit_signal(bus, FERRY_MANAGER_PATH, FERRY_MANAGER_INTERFACE, "MigrationEnded", "oss",
                                          mig->object_path, migration_state_to_string(mig->state),
                                          strempty(mig->error_name));
}

static const sd_bus_vtable migration_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Domain", "o", property_get_domain, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DomainName", "s", property_get_domain_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Direction", "s", property_get_direction, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Flow", "s", property_get_flow, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Transport", "s", property_get_transport, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("TLS", "b", property_get_tls, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AutoConverge", "b", property_get_auto_converge, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PostCopyBandwidth", "t", property_get_postcopy_bandwidth, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ParallelConnections", "u", property_get_parallel, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DestinationURI", "s", property_get_destination_uri, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HypervisorURI", "s", property_get_hypervisor_uri, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Phase", "s", property_get_phase, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ErrorName", "s", property_get_error_name, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ErrorMessage", "s", property_get_error_message, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ElapsedUSec", "t", property_get_elapsed, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SetupUSec", "t", property_get_setup, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DataTotal", "t", property_get_total, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DataProcessed", "t", property_get_processed, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DataRemaining", "t", property_get_remaining, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BytesPerSecond", "t", property_get_bps, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DirtyPagesRate", "t", property_get_dirty_rate, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Iteration", "t", property_get_iteration, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ExpectedDowntimeUSec", "t", property_get_expected_downtime, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DowntimeUSec", "t", property_get_downtime, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MaxBandwidth", "t", property_get_max_bandwidth, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MaxDowntimeUSec", "t", property_get_max_downtime, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("AutoConvergeThrottle", "u", property_get_throttle, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CopyStorage", "s", property_get_copy_storage, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DisksURI", "s", property_get_disks_uri, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DiskTotal", "t", property_get_disk_total, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DiskProcessed", "t", property_get_disk_processed, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DiskRemaining", "t", property_get_disk_remaining, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DiskBytesPerSecond", "t", property_get_disk_bps, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PostCopy", "s", property_get_postcopy, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD("Cancel", NULL, NULL, method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetMaxBandwidth", SD_BUS_ARGS("t", bytes_per_second), SD_BUS_NO_RESULT,
                                method_set_max_bandwidth, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetMaxDowntime", SD_BUS_ARGS("t", usec), SD_BUS_NO_RESULT,
                                method_set_max_downtime, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("StartPostCopy", NULL, NULL, method_start_post_copy, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Recover", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", hypervisor_uri),
                                method_recover, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Finish", SD_BUS_ARGS("b", success), SD_BUS_NO_RESULT,
                                method_finish, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Perform", SD_BUS_ARGS("s", hypervisor_uri), SD_BUS_NO_RESULT,
                                method_perform, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Confirm", SD_BUS_ARGS("b", success), SD_BUS_NO_RESULT,
                                method_confirm, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int migration_dbus_register(Manager *m) {
        int r;

        r = sd_bus_add_fallback_vtable(m->bus, NULL, FERRY_MIGRATION_PATH_PREFIX, FERRY_MIGRATION_INTERFACE,
                                       migration_vtable, object_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to publish %s: %m", FERRY_MIGRATION_INTERFACE);
        r = sd_bus_add_node_enumerator(m->bus, NULL, FERRY_MIGRATION_PATH_PREFIX, node_enumerator, m);
        if (r < 0)
                return log_error_errno(r, "Failed to enumerate migrations: %m");
        return 0;
}
