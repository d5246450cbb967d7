/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <string.h>

#include "ferry-bus.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-storage-internal.h"

#define STORAGE_STATS_INTERVAL_USEC (1000000ULL / 10)

static const char *const copy_storage_names[_MIGRATION_COPY_STORAGE_MAX] = {
        [MIGRATION_COPY_STORAGE_NONE] = "",
        [MIGRATION_COPY_STORAGE_ALL] = "all",
        [MIGRATION_COPY_STORAGE_INC] = "inc",
};

const char *migration_copy_storage_to_string(MigrationCopyStorage c) {
        return (unsigned) c < _MIGRATION_COPY_STORAGE_MAX ? copy_storage_names[c] : NULL;
}

MigrationCopyStorage migration_copy_storage_from_string(const char *s) {
        for (int i = MIGRATION_COPY_STORAGE_ALL; i < _MIGRATION_COPY_STORAGE_MAX; i++)
                if (strcmp(s, copy_storage_names[i]) == 0)
                        return (MigrationCopyStorage) i;
        return _MIGRATION_COPY_STORAGE_INVALID;
}

Domain *storage_domain(MigrationStorage *s) {
        return manager_find_domain_by_name(s->manager, s->domain_name);
}

QemuMonitor *storage_monitor(MigrationStorage *s) {
        Domain *d = storage_domain(s);
        return d ? domain_monitor(d) : NULL;
}

static void storage_detach(MigrationStorage *s) {
        Domain *d = storage_domain(s);
        if (d && d->storage_jobs == s)
                d->storage_jobs = NULL;
}

MigrationStorage *migration_storage_free(MigrationStorage *s) {
        if (!s)
                return NULL;
        storage_detach(s);
        for (size_t i = 0; i < s->n_disks; i++)
                free(s->disks[i].target);
        free(s->disks);
        migration_uri_free(s->nbd);
        g_free(s->disks_uri);
        free(s->domain_name);
        sd_bus_slot_unref(s->peer_call);
        sd_event_source_disable_unref(s->stats_timer);
        return mfree(s);
}

MigrationStorage *storage_new(Migration *m) {
        MigrationStorage *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->migration = m;
        s->manager = m->manager;
        s->domain_name = strdup(m->domain_name);
        if (!s->domain_name)
                return mfree(s);
        return s;
}

int storage_add_disk(MigrationStorage *s, const char *target, uint64_t size) {
        StorageDisk *n = realloc(s->disks, (s->n_disks + 1) * sizeof(StorageDisk));
        if (!n)
                return -ENOMEM;
        s->disks = n;
        s->disks[s->n_disks] = (StorageDisk) { .target = strdup(target), .size = size };
        if (!s->disks[s->n_disks].target)
                return -ENOMEM;
        s->n_disks++;
        return 0;
}

StorageDisk *storage_find_disk(MigrationStorage *s, const char *target) {
        for (size_t i = 0; i < s->n_disks; i++)
                if (strcmp(s->disks[i].target, target) == 0)
                        return &s->disks[i];
        return NULL;
}

/* ---- which disks ---- */

const DomainDiskDef *storage_find_def_disk(const DomainDef *def, const char *target) {
        for (size_t i = 0; i < def->n_disks; i++)
                if (strcmp(def->disks[i].target, target) == 0)
                        return &def->disks[i];
        return NULL;
}

static bool disk_copyable(const DomainDiskDef *disk) {
        return disk->device == DOMAIN_DISK_DEVICE_DISK && disk->source && !disk->readonly && !disk->shareable;
}

/* What cannot be copied, in words; NULL if it can. */
const char *storage_disk_refusal(const DomainDiskDef *disk) {
        if (!disk)
                return "no such disk in the domain";
        if (disk->device != DOMAIN_DISK_DEVICE_DISK)
                return "a cdrom is not copied";
        if (!disk->source)
                return "it has no image";
        if (disk->readonly)
                return "it is read-only (the destination must have it already)";
        if (disk->shareable)
                return "it is shareable (shared storage, not copied)";
        return NULL;
}

int storage_check_options(Domain *d, const MigrationOptions *o, bool managed, char **ret_error) {
        const DomainDef *def = d->live_def ?: d->def;
        size_t n = 0;

        if (o->disk_sizes) {
                *ret_error = g_strdup("disk_sizes is an option of PrepareMigration (the source's ferryd sends it)");
                return -EINVAL;
        }
        if (o->copy_storage == MIGRATION_COPY_STORAGE_NONE) {
                if (o->disks || o->disks_uri) {
                        *ret_error = g_strdup(o->disks ? "disks needs copy_storage (\"all\" or \"inc\")"
                                                       : "disks_uri needs copy_storage (\"all\" or \"inc\")");
                        return -EINVAL;
                }
                return 0;
        }
        if (o->offline || o->direct || managed) {
                *ret_error = g_strdup_printf("copy_storage works in the peer-to-peer flow only, not %s",
                                             o->offline ? "with offline" : o->direct ? "with direct" :
                                             "in the managed direct flow (use ferryctl migrate --p2p)");
                return -EINVAL;
        }
        if (o->disks_uri && o->tls) {
                _cleanup_(migration_uri_freep) MigrationUri *u = NULL;
                /* QEMU checks the server's certificate against a host name. */
                if (migration_uri_parse_full(o->disks_uri, SIZE_MAX, MIGRATION_URI_ALLOW_ANY, &u, NULL) >= 0 &&
                    u->kind != MIGRATION_URI_TCP) {
                        *ret_error = g_strdup("TLS needs a tcp: disks URI");
                        return -EINVAL;
                }
        }
        if (o->disks) {
                for (char **t = o->disks; *t; t++) {
                        const char *why = storage_disk_refusal(storage_find_def_disk(def, *t));
                        if (why) {
                                *ret_error = g_strdup_printf("cannot copy disk %s: %s", *t, why);
                                return -EINVAL;
                        }
                        for (char **u = o->disks; u < t; u++)
                                if (strcmp(*u, *t) == 0) {
                                        *ret_error = g_strdup_printf("disk %s is listed twice", *t);
                                        return -EINVAL;
                                }
                        n++;
                }
        } else
                for (size_t i = 0; i < def->n_disks; i++)
                        if (disk_copyable(&def->disks[i]))
                                n++;
        if (n == 0) {
                *ret_error = g_strdup("copy_storage: the domain has no writable, unshared disk to copy");
                return -EINVAL;
        }
        return 0;
}

/* ---- source ---- */

static void storage_fail(MigrationStorage *s, const char *fmt, ...) _printf_(2, 3);
static void storage_fail(MigrationStorage *s, const char *fmt, ...) {
        g_autofree char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (s->migration->state == MIGRATION_RUNNING)
                source_fail(s->migration, FERRY_ERROR_MIGRATION_FAILED, msg);
}

static void on_named_nodes(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                           JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        MigrationStorage *s = m->storage;
        JsonArray *nodes;

        if (m->state != MIGRATION_RUNNING || !s)
                return;
        if (error < 0 || !ret || !JSON_NODE_HOLDS_ARRAY(ret)) {
                storage_fail(s, "cannot read the disks' sizes: %s", error_desc ?: strerror(error < 0 ? -error : EBADMSG));
                return;
        }
        nodes = json_node_get_array(ret);
        for (guint i = 0; i < json_array_get_length(nodes); i++) {
                JsonObject *node = json_array_get_object_element(nodes, i), *image;
                const char *name = json_object_get_string_member_with_default(node, "node-name", "");
                StorageDisk *disk;

                if (!g_str_has_prefix(name, "fmt-") || !(disk = storage_find_disk(s, name + strlen("fmt-"))))
                        continue;
                image = json_object_has_member(node, "image") ? json_object_get_object_member(node, "image") : NULL;
                if (image && json_object_has_member(image, "virtual-size"))
                        disk->size = (uint64_t) json_object_get_int_member(image, "virtual-size");
        }
        m->options.disk_sizes = calloc(s->n_disks, sizeof(MigrationDiskSize));
        if (!m->options.disk_sizes) {
                storage_fail(s, "out of memory");
                return;
        }
        for (size_t i = 0; i < s->n_disks; i++) {
                if (s->disks[i].size == 0) {
                        storage_fail(s, "QEMU does not report the size of disk %s", s->disks[i].target);
                        return;
                }
                m->options.disk_sizes[i] = (MigrationDiskSize) { .target = strdup(s->disks[i].target),
                                                                 .size = s->disks[i].size };
                m->options.n_disk_sizes++;
                if (!m->options.disk_sizes[i].target) {
                        storage_fail(s, "out of memory");
                        return;
                }
        }
        s->next(m);
}

void storage_source_prepare(Migration *m, void (*next)(Migration *m)) {
        Domain *d = migration_domain(m);
        const DomainDef *def;
        JsonObject *args;
        int r = 0;

        if (!d || !domain_monitor(d)) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the domain's QEMU is not reachable");
                return;
        }
        def = d->live_def ?: d->def;
        m->storage = storage_new(m);
        if (!m->storage) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "out of memory");
                return;
        }
        if (m->options.disks)
                for (char **t = m->options.disks; *t && r >= 0; t++)
                        r = storage_add_disk(m->storage, *t, 0);
        else
                for (size_t i = 0; i < def->n_disks && r >= 0; i++)
                        if (disk_copyable(&def->disks[i]))
                                r = storage_add_disk(m->storage, def->disks[i].target, 0);
        if (r < 0) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "out of memory");
                return;
        }
        m->storage->next = next;
        args = json_object_new();
        json_object_set_boolean_member(args, "flat", true);
        if (qemu_monitor_command(domain_monitor(d), "query-named-block-nodes", args, 0, on_named_nodes, m) < 0)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "cannot send query-named-block-nodes to QEMU");
}

static int on_peer_disks_uri(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Migration *m = userdata;
        MigrationStorage *s = m->storage;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        g_autofree char *why = NULL;
        const char *uri;

        s->peer_call = sd_bus_slot_unref(s->peer_call);
        if (m->state != MIGRATION_RUNNING)
                return 0;
        if (e) {
                storage_fail(s, "cannot read the destination's NBD address: %s", e->message ?: e->name);
                return 0;
        }
        if (sd_bus_message_read(reply, "v", "s", &uri) < 0) {
                storage_fail(s, "bad reply from the destination");
                return 0;
        }
        /* Input from the other host: strictly parsed, like its hypervisor URI. */
        if (migration_uri_parse(uri, &s->nbd, &why) < 0 || (s->nbd->kind == MIGRATION_URI_TCP && s->nbd->port == 0)) {
                storage_fail(s, "the destination offered an unusable NBD address: %s", why ?: "no port");
                return 0;
        }
        if (m->options.tls && s->nbd->kind != MIGRATION_URI_TCP) {
                storage_fail(s, "TLS needs a tcp: NBD address from the destination");
                return 0;
        }
        s->disks_uri = migration_uri_to_string(s->nbd);
        manager_migration_changed(s->manager, m);
        s->next(m);
        return 0;
}

void storage_source_locate(Migration *m, void (*next)(Migration *m)) {
        MigrationStorage *s = m->storage;
        int r;

        s->next = next;
        r = sd_bus_call_method_async(m->peer, &s->peer_call, m->peer_owner, m->peer_migration,
                                     "org.freedesktop.DBus.Properties", "Get", on_peer_disks_uri, m, "ss",
                                     FERRY_MIGRATION_INTERFACE, "DisksURI");
        if (r < 0)
                storage_fail(s, "cannot ask the destination for its NBD address: %s", strerror(-r));
}

static void storage_update_stats(MigrationStorage *s, JsonArray *jobs) {
        uint64_t now = 0, total = 0, processed = 0;

        for (guint i = 0; jobs && i < json_array_get_length(jobs); i++) {
                JsonObject *job = json_array_get_object_element(jobs, i);
                const char *id = json_object_get_string_member_with_default(job, "device", "");
                StorageDisk *disk;
                if (!g_str_has_prefix(id, "mirror-") || !(disk = storage_find_disk(s, id + strlen("mirror-"))))
                        continue;
                disk->len = (uint64_t) json_object_get_int_member_with_default(job, "len", 0);
                disk->offset = (uint64_t) json_object_get_int_member_with_default(job, "offset", 0);
        }
        for (size_t i = 0; i < s->n_disks; i++) {
                total += s->disks[i].len;
                processed += MIN(s->disks[i].offset, s->disks[i].len);
        }
        (void) sd_event_now(manager_event(s->manager), CLOCK_MONOTONIC, &now);
        if (s->last_usec && now > s->last_usec && processed >= s->last_processed)
                s->stats.bytes_per_second = (processed - s->last_processed) * 1000000ULL / (now - s->last_usec);
        s->last_usec = now;
        s->last_processed = processed;
        s->stats.total = total;
        s->stats.processed = processed;
        s->stats.remaining = total - processed;
        manager_migration_changed(s->manager, s->migration);
}

static void on_query_block_jobs(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                                JsonNode *ret, void *userdata) {
        MigrationStorage *s = userdata;
        if (error >= 0 && ret && JSON_NODE_HOLDS_ARRAY(ret) && s->state >= STORAGE_MIRRORING &&
            s->state <= STORAGE_SWITCHING)
                storage_update_stats(s, json_node_get_array(ret));
}

static int on_stats_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        MigrationStorage *s = userdata;
        QemuMonitor *mon = storage_monitor(s);

        if (mon)
                (void) qemu_monitor_command(mon, "query-block-jobs", NULL, 0, on_query_block_jobs, s);
        (void) sd_event_source_set_time(es, usec + STORAGE_STATS_INTERVAL_USEC);
        return sd_event_source_set_enabled(es, SD_EVENT_ON);
}

JsonObject *storage_nbd_address(const MigrationUri *u, bool legacy) {
        JsonObject *addr = json_object_new(), *data = legacy ? json_object_new() : addr;

        json_object_set_string_member(addr, "type", u->kind == MIGRATION_URI_TCP ? "inet" : "unix");
        if (u->kind == MIGRATION_URI_TCP) {
                g_autofree char *port = g_strdup_printf("%u", u->port);
                json_object_set_string_member(data, "host", u->host ?: "0.0.0.0");
                json_object_set_string_member(data, "port", port);
        } else
                json_object_set_string_member(data, "path", u->path);
        /* nbd-server-start takes the legacy form, {"type", "data": {...}}; blockdev-add the flat one. */
        if (legacy)
                json_object_set_object_member(addr, "data", data);
        return addr;
}

static void on_mirror_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                            JsonNode *ret, void *userdata) {
        Migration *m = userdata;
        if (error < 0 && m->state == MIGRATION_RUNNING && m->storage)
                storage_fail(m->storage, "QEMU cannot copy the disks: %s", error_desc ?: strerror(-error));
}

void storage_source_start(Migration *m, void (*next)(Migration *m)) {
        MigrationStorage *s = m->storage;
        Domain *d = migration_domain(m);
        QemuMonitor *mon = d ? domain_monitor(d) : NULL;

        if (!mon) {
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, "the domain's QEMU is not reachable");
                return;
        }
        s->next = next;
        s->state = STORAGE_MIRRORING;
        d->storage_jobs = s;
        for (size_t i = 0; i < s->n_disks; i++) {
                StorageDisk *disk = &s->disks[i];
                g_autofree char *node = g_strconcat("nbd-", disk->target, NULL);
                g_autofree char *job = g_strconcat("mirror-", disk->target, NULL);
                g_autofree char *device = g_strconcat("fmt-", disk->target, NULL);
                JsonObject *add = json_object_new(), *mirror = json_object_new();

                /* The destination's export of this disk, as a node of ours; QEMU answers the
                 * commands in order, so the mirror below finds it (or fails with it). */
                json_object_set_string_member(add, "driver", "nbd");
                json_object_set_string_member(add, "node-name", node);
                json_object_set_object_member(add, "server", storage_nbd_address(s->nbd, false));
                json_object_set_string_member(add, "export", disk->target);
                if (m->options.tls)
                        json_object_set_string_member(add, "tls-creds", MIGRATION_TLS_OBJECT_ID);
                disk->node_added = true;
                if (qemu_monitor_command(mon, "blockdev-add", add, 0, on_mirror_reply, m) < 0) {
                        storage_fail(s, "cannot send blockdev-add to QEMU");
                        return;
                }
                json_object_set_string_member(mirror, "job-id", job);
                json_object_set_string_member(mirror, "device", device);
                json_object_set_string_member(mirror, "target", node);
                json_object_set_string_member(mirror, "sync",
                                              m->options.copy_storage == MIGRATION_COPY_STORAGE_INC ? "top" : "full");
                disk->job_running = true;
                if (qemu_monitor_command(mon, "blockdev-mirror", mirror, 0, on_mirror_reply, m) < 0) {
                        storage_fail(s, "cannot send blockdev-mirror to QEMU");
                        return;
                }
        }
        log_info("Migration %u: copying %zu disk(s) of %s to %s.", m->id, s->n_disks, m->domain_name, s->disks_uri);
        (void) sd_event_add_time_relative(manager_event(m->manager), &s->stats_timer, CLOCK_MONOTONIC,
                                          STORAGE_STATS_INTERVAL_USEC, 0, on_stats_timer, s);
}

static void storage_del_node(MigrationStorage *s, StorageDisk *disk) {
        QemuMonitor *mon = storage_monitor(s);
        g_autofree char *node = g_strconcat("nbd-", disk->target, NULL);
        JsonObject *args;

        if (!disk->node_added)
                return;
        disk->node_added = false;
        if (!mon)
                return;
        args = json_object_new();
        json_object_set_string_member(args, "node-name", node);
        (void) qemu_monitor_command(mon, "blockdev-del", args, 0, NULL, NULL);
}

void storage_source_switchover(Migration *m, void (*next)(Migration *m)) {
        MigrationStorage *s = m->storage;
        QemuMonitor *mon = storage_monitor(s);

        s->next = next;
        s->state = STORAGE_SWITCHING;
        /* The guest is paused: cancelling a ready mirror lets it write what is left and end
         * without a pivot (BLOCK_JOB_COMPLETED), the destination then has every write. */
        for (size_t i = 0; i < s->n_disks; i++) {
                g_autofree char *job = g_strconcat("mirror-", s->disks[i].target, NULL);
                JsonObject *args = json_object_new();
                json_object_set_string_member(args, "device", job);
                if (!mon || qemu_monitor_command(mon, "block-job-cancel", args, 0, NULL, NULL) < 0) {
                        storage_fail(s, "cannot complete the disk copies");
                        return;
                }
        }
}

static bool all_disks(MigrationStorage *s, bool ready) {
        for (size_t i = 0; i < s->n_disks; i++)
                if (ready ? !s->disks[i].job_ready : s->disks[i].job_running)
                        return false;
        return true;
}

void storage_block_job_event(MigrationStorage *s, const char *name, JsonObject *data) {
        const char *id = data ? json_object_get_string_member_with_default(data, "device", "") : "";
        const char *error = data ? json_object_get_string_member_with_default(data, "error", NULL) : NULL;
        Migration *m = s->migration;
        StorageDisk *disk;

        if (!g_str_has_prefix(id, "mirror-") || !(disk = storage_find_disk(s, id + strlen("mirror-"))))
                return;
        log_debug("Migration %u: %s for %s.", m->id, name, id);

        if (strcmp(name, "BLOCK_JOB_READY") == 0) {
                disk->job_ready = true;
                if (s->state == STORAGE_MIRRORING && all_disks(s, true)) {
                        s->state = STORAGE_READY;
                        log_info("Migration %u: every disk copy is ready, migrating the RAM.", m->id);
                        s->next(m);
                }
                return;
        }
        if (strcmp(name, "BLOCK_JOB_ERROR") == 0) {
                /* The job stops on its own (on-target-error=report), and says so with an event. */
                const char *op = data ? json_object_get_string_member_with_default(data, "operation", "") : "";
                if (s->state != STORAGE_ABORTING)
                        storage_fail(s, "disk %s: %s error on the copy", disk->target, op);
                return;
        }
        if (strcmp(name, "BLOCK_JOB_COMPLETED") != 0 && strcmp(name, "BLOCK_JOB_CANCELLED") != 0)
                return;

        disk->job_running = false;
        disk->job_ready = false;
        if (s->state == STORAGE_ABORTING) {
                storage_del_node(s, disk);
                if (all_disks(s, false)) {
                        s->state = STORAGE_IDLE;
                        storage_detach(s);
                }
                return;
        }
        if (s->state == STORAGE_SWITCHING && strcmp(name, "BLOCK_JOB_COMPLETED") == 0 && !error) {
                storage_del_node(s, disk);
                if (all_disks(s, false)) {
                        s->state = STORAGE_DONE;
                        s->stats.remaining = 0;
                        s->stats.processed = s->stats.total;
                        s->stats_timer = sd_event_source_disable_unref(s->stats_timer);
                        storage_detach(s);
                        log_info("Migration %u: the disks are copied.", m->id);
                        s->next(m);
                }
                return;
        }
        /* A job that ended by itself: its copy is incomplete. */
        storage_fail(s, "disk %s: the copy ended early: %s", disk->target, error ?: "cancelled");
}

static void storage_source_abort(MigrationStorage *s) {
        QemuMonitor *mon = storage_monitor(s);

        s->state = STORAGE_ABORTING;
        s->stats_timer = sd_event_source_disable_unref(s->stats_timer);
        s->peer_call = sd_bus_slot_unref(s->peer_call);
        for (size_t i = 0; i < s->n_disks; i++) {
                StorageDisk *disk = &s->disks[i];
                if (disk->job_running && mon) {
                        /* The node goes when the job is gone (storage_block_job_event). */
                        g_autofree char *job = g_strconcat("mirror-", disk->target, NULL);
                        JsonObject *args = json_object_new();
                        json_object_set_string_member(args, "device", job);
                        json_object_set_boolean_member(args, "force", true);
                        (void) qemu_monitor_command(mon, "block-job-cancel", args, 0, NULL, NULL);
                } else
                        storage_del_node(s, disk);
        }
        if (all_disks(s, false))
                storage_detach(s);
}

void storage_migration_ended(Migration *m) {
        MigrationStorage *s = m->storage;

        if (s) {
                s->stats_timer = sd_event_source_disable_unref(s->stats_timer);
                s->peer_call = sd_bus_slot_unref(s->peer_call);
                storage_destination_answer(s, -ECANCELED, m->error_message ?: "the migration ended");
        }
        if (m->state == MIGRATION_COMPLETED)
                return;
        if (m->direction == MIGRATION_OUTGOING) {
                if (s && s->state != STORAGE_DONE && s->state != STORAGE_IDLE)
                        storage_source_abort(s);
        } else
                /* QEMU may still hold them open; it is on its way out. */
                storage_remove_created(&m->options);
}

const char *migration_storage_disks_uri(const Migration *m) {
        return m->storage ? m->storage->disks_uri : NULL;
}

MigrationDiskStats migration_storage_stats(const Migration *m) {
        return m->storage ? m->storage->stats : (MigrationDiskStats) {};
}

uint16_t migration_storage_port(const Migration *m) {
        return m->storage ? m->storage->port : 0;
}
