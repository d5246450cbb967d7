/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Guest memory dumps (Domain.DumpMemory, `ferryctl dump --memory-only`): QEMU writes the
 * guest's physical memory as an ELF core, the format of `virsh dump --memory-only`, into a file
 * the caller opened. The caller opens it, not ferryd: its own permissions decide where a dump
 * may go, and ferryd never creates files for others.
 *
 * QMP: getfd hands QEMU a duplicate of the fd under DUMP_FD_NAME; dump-guest-memory
 * (paging=false: guest-physical addresses, no page-table walk in a guest we do not trust;
 * detach=true: QEMU's monitor stays responsive) takes it, and DUMP_COMPLETED says how it ended. */

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "domain.h"
#include "log.h"
#include "qemu-monitor.h"

#define DUMP_FD_NAME "ferry-dump"

static void dump_failed(Domain *d, int error, const char *message) {
        JsonObject *args = json_object_new();

        log_error("Domain %s: memory dump failed: %s", d->def->name, message);
        /* A named fd that no command took stays open in QEMU until it is replaced. Harmless
         * (and answered with an error) when dump-guest-memory took it already. */
        json_object_set_string_member(args, "fdname", DUMP_FD_NAME);
        if (d->monitor)
                (void) qemu_monitor_command(d->monitor, "closefd", args, 0, NULL, NULL);
        else
                json_object_unref(args);
        domain_op_finish(d, error, message);
}

static void on_dump_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                          JsonNode *ret, void *userdata) {
        Domain *d = userdata;
        g_autofree char *msg = NULL;

        /* Success only means QEMU started writing: DUMP_COMPLETED ends the operation (and may
         * even come before this reply). */
        if (error >= 0 || d->op != DOMAIN_OP_DUMP)
                return;
        msg = g_strdup_printf("QEMU refused to dump the guest's memory: %s", error_desc ?: strerror(-error));
        dump_failed(d, error == -EREMOTEIO ? -EIO : error, msg);
}

static void on_getfd_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                           JsonNode *ret, void *userdata) {
        Domain *d = userdata;
        JsonObject *args;

        if (d->op != DOMAIN_OP_DUMP)
                return;
        if (error < 0) {
                g_autofree char *msg = g_strdup_printf("cannot pass the file to QEMU: %s",
                                                       error_desc ?: strerror(-error));
                dump_failed(d, error == -EREMOTEIO ? -EIO : error, msg);
                return;
        }
        args = json_object_new();
        json_object_set_boolean_member(args, "paging", false);
        json_object_set_string_member(args, "protocol", "fd:" DUMP_FD_NAME);
        json_object_set_boolean_member(args, "detach", true);
        if (qemu_monitor_command(mon, "dump-guest-memory", args, 0, on_dump_reply, d) < 0)
                dump_failed(d, -EIO, "cannot send dump-guest-memory to QEMU");
}

int domain_dump_memory(Domain *d, int fd, DomainDone done, void *userdata) {
        JsonObject *args;
        int r;

        if (d->state != DOMAIN_PAUSED)
                return -ENOTCONN;
        if (!d->monitor || !qemu_monitor_is_ready(d->monitor))
                return -EBUSY;
        r = domain_op_begin(d, DOMAIN_OP_DUMP, done, userdata);
        if (r < 0)
                return r;

        args = json_object_new();
        json_object_set_string_member(args, "fdname", DUMP_FD_NAME);
        r = qemu_monitor_command_with_fd(d->monitor, "getfd", args, fd, 0, on_getfd_reply, d);
        if (r < 0) {
                domain_op_abandon(d);
                return r;
        }
        log_info("Domain %s: dumping its memory.", d->def->name);
        return 0;
}

void domain_dump_completed(Domain *d, JsonObject *data) {
        JsonObject *result;
        const char *status = NULL, *error = NULL;

        if (d->op != DOMAIN_OP_DUMP)
                return;
        if (data) {
                error = json_object_get_string_member_with_default(data, "error", NULL);
                result = json_object_has_member(data, "result") ? json_object_get_object_member(data, "result") : NULL;
                if (result)
                        status = json_object_get_string_member_with_default(result, "status", NULL);
        }
        if (error || g_strcmp0(status, "completed") != 0) {
                g_autofree char *msg = g_strdup_printf("QEMU could not write the dump: %s",
                                                       error ?: status ?: "no result");
                dump_failed(d, -EIO, msg);
                return;
        }
        log_info("Domain %s: memory dump written.", d->def->name);
        domain_op_finish(d, 0, NULL);
}
