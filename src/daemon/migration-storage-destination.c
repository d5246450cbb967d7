/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The destination's side of a storage copy: the images (checked or created by qemu-img), the
 * NBD server and its exports. See migration-storage.h. */

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hook.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-storage-internal.h"

#define QEMU_IMG_DEFAULT "/usr/bin/qemu-img"

typedef struct ImagesRequest {
        Manager *manager;
        DomainDef *def;
        MigrationOptions *options;
        size_t index;
        bool creating;             /* the worker running creates the image (else inspects it) */
        Hook *worker;
        GPtrArray *created;
        StorageImagesDone next;
        void *userdata;
} ImagesRequest;

static void images_request_free(ImagesRequest *req) {
        hook_free(req->worker);
        domain_def_free(req->def);
        if (req->created)
                g_ptr_array_unref(req->created);
        free(req);
}

static void unlink_images(char **paths) {
        for (char **p = paths; p && *p; p++)
                if (unlink(*p) < 0 && errno != ENOENT)
                        log_warning_errno(errno, "Cannot remove %s: %m", *p);
                else
                        log_info("Removed the disk image %s (created for a migration that failed).", *p);
}

static void images_finish(ImagesRequest *req, int error, const char *message) {
        g_ptr_array_add(req->created, NULL);
        char **created = (char **) g_ptr_array_free(g_steal_pointer(&req->created), false);

        if (error < 0) {
                unlink_images(created);
                g_strfreev(created);
        } else {
                g_strfreev(req->options->storage_created);
                req->options->storage_created = created;
        }
        StorageImagesDone next = req->next;
        void *ud = req->userdata;
        images_request_free(req);
        next(ud, error, message);
}

static void images_next(ImagesRequest *req);

static const char *qemu_img_path(const DomainDef *def, char **buf) {
        /* The qemu-img of the emulator's installation, if it names one. */
        if (def->emulator) {
                g_autofree char *dir = g_path_get_dirname(def->emulator);
                *buf = g_build_filename(dir, "qemu-img", NULL);
                if (access(*buf, X_OK) >= 0)
                        return *buf;
        }
        return QEMU_IMG_DEFAULT;
}

static void on_image_worker(void *userdata, int error, const char *message, const char *output) {
        ImagesRequest *req = userdata;
        const MigrationDiskSize *want = &req->options->disk_sizes[req->index];
        const DomainDiskDef *disk = storage_find_def_disk(req->def, want->target);
        g_autoptr(JsonParser) parser = NULL;
        g_autofree char *msg = NULL;
        JsonObject *info;

        if (error < 0) {
                msg = g_strdup_printf("disk %s: qemu-img cannot %s %s (%s)", want->target,
                                      req->creating ? "create" : "read", disk->source, message);
                images_finish(req, -EIO, msg);
                return;
        }
        /* output belongs to the worker: read it before the worker goes. */
        parser = json_parser_new();
        bool parsed = !req->creating && json_parser_load_from_data(parser, output ?: "", -1, NULL) &&
                      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser));
        req->worker = hook_free(req->worker);
        if (req->creating) {
                log_info("Created %s (%s, %" PRIu64 " bytes) for disk %s.", disk->source,
                         domain_disk_format_to_string(disk->format), want->size, want->target);
                g_ptr_array_add(req->created, g_strdup(disk->source));
                req->index++;
                images_next(req);
                return;
        }
        if (!parsed) {
                msg = g_strdup_printf("disk %s: cannot understand qemu-img info about %s", want->target, disk->source);
                images_finish(req, -EIO, msg);
                return;
        }
        info = json_node_get_object(json_parser_get_root(parser));
        const char *format = json_object_get_string_member_with_default(info, "format", "");
        uint64_t size = (uint64_t) json_object_get_int_member_with_default(info, "virtual-size", 0);
        if (strcmp(format, domain_disk_format_to_string(disk->format)) != 0) {
                msg = g_strdup_printf("disk %s: the image %s here is %s, the domain says %s", want->target,
                                      disk->source, format, domain_disk_format_to_string(disk->format));
                images_finish(req, -EINVAL, msg);
                return;
        }
        if (size != want->size) {
                msg = g_strdup_printf("disk %s: the image %s here is %s (%" PRIu64 " bytes, the source's is %" PRIu64 ")",
                                      want->target, disk->source, size < want->size ? "too small" : "larger",
                                      size, want->size);
                images_finish(req, -EINVAL, msg);
                return;
        }
        req->index++;
        images_next(req);
}

static void images_next(ImagesRequest *req) {
        g_autofree char *qemu_img_buf = NULL, *size = NULL;
        const MigrationDiskSize *want;
        const DomainDiskDef *disk;
        struct stat st;
        int r;

        if (req->index >= req->options->n_disk_sizes) {
                images_finish(req, 0, NULL);
                return;
        }
        want = &req->options->disk_sizes[req->index];
        disk = storage_find_def_disk(req->def, want->target);
        const char *qemu_img = qemu_img_path(req->def, &qemu_img_buf);
        size = g_strdup_printf("%" PRIu64, want->size);
        req->creating = stat(disk->source, &st) < 0 && errno == ENOENT;
        /* qemu-img runs as a worker of ours, on the event loop (it may take a while on slow
         * storage); it writes where ferryd may write (see docs/migration.md). */
        char *create[] = { (char *) qemu_img, (char *) "create", (char *) "-q", (char *) "-f",
                           (char *) domain_disk_format_to_string(disk->format), disk->source, size, NULL };
        char *info[] = { (char *) qemu_img, (char *) "info", (char *) "--output=json", disk->source, NULL };
        r = hook_run(manager_event(req->manager), req->creating ? create : info, "", on_image_worker, req, &req->worker);
        if (r < 0) {
                g_autofree char *msg = g_strdup_printf("cannot run %s: %s", qemu_img, strerror(-r));
                images_finish(req, r, msg);
        }
}

int storage_destination_images(Manager *manager, const char *xml, MigrationOptions *options,
                               StorageImagesDone next, void *userdata, char **ret_error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        ImagesRequest *req;
        int r;

        if (options->copy_storage == MIGRATION_COPY_STORAGE_NONE) {
                if (options->disk_sizes || options->disks_uri) {
                        *ret_error = g_strdup("disk_sizes and disks_uri need copy_storage");
                        return -EINVAL;
                }
                return 0;
        }
        if (options->offline || options->n_disk_sizes == 0) {
                *ret_error = g_strdup(options->offline ? "copy_storage: an offline migration has no disks to copy"
                                                       : "copy_storage needs disk_sizes (the disks and their sizes)");
                return -EINVAL;
        }
        r = domain_def_parse(xml, strlen(xml), &def, ret_error);
        if (r < 0)
                return r;
        /* Its images are in use here: not ours to inspect or touch (Prepare refuses it anyway). */
        Domain *existing = manager_find_domain_by_name(manager, def->name);
        if (existing && domain_is_active(existing)) {
                *ret_error = g_strdup_printf("domain '%s' already exists here and is active", def->name);
                return -EEXIST;
        }
        for (size_t i = 0; i < options->n_disk_sizes; i++) {
                const char *why = storage_disk_refusal(storage_find_def_disk(def, options->disk_sizes[i].target));
                if (why) {
                        *ret_error = g_strdup_printf("cannot copy disk %s: %s", options->disk_sizes[i].target, why);
                        return -EINVAL;
                }
        }
        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (ImagesRequest) { .manager = manager, .def = TAKE_PTR(def), .options = options,
                                 .created = g_ptr_array_new_with_free_func(g_free), .next = next,
                                 .userdata = userdata };
        images_next(req);
        return 1;
}

int storage_destination_new(Migration *m, const char *offer_host, char **ret_error) {
        _cleanup_(migration_storage_freep) MigrationStorage *s = NULL;
        int r;

        s = storage_new(m);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < m->options.n_disk_sizes; i++) {
                r = storage_add_disk(s, m->options.disk_sizes[i].target, m->options.disk_sizes[i].size);
                if (r < 0)
                        return r;
        }
        if (m->options.disks_uri) {
                r = migration_uri_parse_full(m->options.disks_uri, SIZE_MAX, MIGRATION_URI_ALLOW_ANY, &s->nbd, ret_error);
                if (r < 0)
                        return r;
        } else {
                s->nbd = g_new0(MigrationUri, 1);
                s->nbd->kind = MIGRATION_URI_TCP;
        }
        if (m->options.tls && s->nbd->kind != MIGRATION_URI_TCP) {
                *ret_error = g_strdup("TLS needs a tcp: disks URI");
                return -EINVAL;
        }
        if (s->nbd->kind == MIGRATION_URI_TCP && s->nbd->port == 0) {
                s->nbd->port = s->port = migration_pick_port(m->manager);
                if (s->port == 0) {
                        *ret_error = g_strdup("no free port in the migration port range for the NBD server");
                        return -EADDRINUSE;
                }
        }
        if (s->nbd->kind == MIGRATION_URI_TCP) {
                MigrationUri offer = { .kind = MIGRATION_URI_TCP, .host = s->nbd->host ?: (char *) offer_host,
                                       .port = s->nbd->port };
                s->disks_uri = migration_uri_to_string(&offer);
        } else
                s->disks_uri = migration_uri_to_string(s->nbd);
        if (!s->disks_uri)
                return -EINVAL;
        m->storage = TAKE_PTR(s);
        return 0;
}

void storage_destination_answer(MigrationStorage *s, int error, const char *message) {
        MigrationDone done = s->done;
        s->done = NULL;
        if (done)
                done(s->done_userdata, error, message);
}

static void on_export_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                            JsonNode *ret, void *userdata) {
        MigrationStorage *s = userdata;

        if (!s->done)
                return; /* answered already (an earlier step failed) */
        if (error < 0) {
                g_autofree char *msg = g_strdup_printf("QEMU cannot serve the disks over NBD at %s: %s", s->disks_uri,
                                                       error_desc ?: strerror(-error));
                storage_destination_answer(s, error, msg);
                return;
        }
        if (--s->pending == 0) {
                s->state = STORAGE_DONE;
                log_info("Migration %u: serving %zu disk(s) of %s over NBD at %s.", s->migration->id, s->n_disks,
                         s->domain_name, s->disks_uri);
                storage_destination_answer(s, 0, NULL);
        }
}

void storage_destination_start(Migration *m, MigrationDone done, void *userdata) {
        MigrationStorage *s = m->storage;
        QemuMonitor *mon = storage_monitor(s);
        JsonObject *start;

        s->done = done;
        s->done_userdata = userdata;
        if (!mon) {
                storage_destination_answer(s, -ENOTCONN, "the destination QEMU is not reachable");
                return;
        }
        start = json_object_new();
        json_object_set_object_member(start, "addr", storage_nbd_address(s->nbd, true));
        if (m->options.tls)
                json_object_set_string_member(start, "tls-creds", MIGRATION_TLS_OBJECT_ID);
        s->pending = 1 + s->n_disks;
        if (qemu_monitor_command(mon, "nbd-server-start", start, 0, on_export_reply, s) < 0) {
                storage_destination_answer(s, -EIO, "cannot send nbd-server-start to QEMU");
                return;
        }
        for (size_t i = 0; i < s->n_disks; i++) {
                g_autofree char *id = g_strconcat("nbd-", s->disks[i].target, NULL);
                g_autofree char *node = g_strconcat("fmt-", s->disks[i].target, NULL);
                JsonObject *add = json_object_new();
                json_object_set_string_member(add, "type", "nbd");
                json_object_set_string_member(add, "id", id);
                json_object_set_string_member(add, "node-name", node);
                json_object_set_string_member(add, "name", s->disks[i].target);
                json_object_set_boolean_member(add, "writable", true);
                if (qemu_monitor_command(mon, "block-export-add", add, 0, on_export_reply, s) < 0) {
                        storage_destination_answer(s, -EIO, "cannot send block-export-add to QEMU");
                        return;
                }
        }
}

void storage_destination_finish(Migration *m) {
        QemuMonitor *mon = m->storage ? storage_monitor(m->storage) : NULL;

        /* Before the guest runs (QEMU takes commands in order: this goes before "cont"): no
         * one may write to its disks from outside any more. */
        if (mon)
                (void) qemu_monitor_command(mon, "nbd-server-stop", NULL, 0, NULL, NULL);
}

void storage_remove_created(MigrationOptions *options) {
        unlink_images(options->storage_created);
        g_strfreev(options->storage_created);
        options->storage_created = NULL;
}
