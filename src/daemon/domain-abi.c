/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <string.h>

#include "domain-abi.h"

static int differ(char **ret_error, const char *format, ...) G_GNUC_PRINTF(2, 3);
static int differ(char **ret_error, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, format);
                *ret_error = g_strdup_vprintf(format, ap);
                va_end(ap);
        }
        return -EINVAL;
}

static const char *yes_no(bool b) {
        return b ? "yes" : "no";
}

static int check_disks(const DomainDef *a, const DomainDef *b, char **ret_error) {
        if (a->n_disks != b->n_disks)
                return differ(ret_error, "the number of disks differs (%zu, not %zu)", b->n_disks, a->n_disks);
        for (size_t i = 0; i < a->n_disks; i++) {
                const DomainDiskDef *x = a->disks + i, *y = b->disks + i;

                /* The source path, format and cache are the host's business; what the guest
                 * sees on its bus is not. */
                if (strcmp(x->target, y->target) != 0)
                        return differ(ret_error, "disk %zu has target '%s', not '%s'", i + 1, y->target, x->target);
                if (x->device != y->device)
                        return differ(ret_error, "disk %s is a %s, not a %s", x->target,
                                      domain_disk_device_to_string(y->device), domain_disk_device_to_string(x->device));
                if (x->bus != y->bus)
                        return differ(ret_error, "disk %s is on bus %s, not %s", x->target,
                                      domain_disk_bus_to_string(y->bus), domain_disk_bus_to_string(x->bus));
                if (x->readonly != y->readonly)
                        return differ(ret_error, "disk %s: readonly %s, not %s", x->target, yes_no(y->readonly),
                                      yes_no(x->readonly));
                if (x->shareable != y->shareable)
                        return differ(ret_error, "disk %s: shareable %s, not %s", x->target, yes_no(y->shareable),
                                      yes_no(x->shareable));
                if ((x->source == NULL) != (y->source == NULL))
                        return differ(ret_error, "cdrom %s: %s medium, unlike the running guest", x->target,
                                      y->source ? "a" : "no");
        }
        return 0;
}

static int check_devices(const DomainDef *a, const DomainDef *b, char **ret_error) {
        int r;

        r = check_disks(a, b, ret_error);
        if (r < 0)
                return r;
        if (a->n_nets != b->n_nets)
                return differ(ret_error, "the number of network interfaces differs (%zu, not %zu)", b->n_nets, a->n_nets);
        for (size_t i = 0; i < a->n_nets; i++) {
                char x[18], y[18];
                domain_mac_format(a->nets[i].mac, x);
                domain_mac_format(b->nets[i].mac, y);
                if (strcmp(x, y) != 0)
                        return differ(ret_error, "network interface %zu has MAC %s, not %s", i + 1, y, x);
                if (a->nets[i].model != b->nets[i].model)
                        return differ(ret_error, "network interface %s is a %s, not a %s", x,
                                      domain_net_model_to_string(b->nets[i].model),
                                      domain_net_model_to_string(a->nets[i].model));
        }
        if (a->n_serials != b->n_serials)
                return differ(ret_error, "the number of serial ports differs (%zu, not %zu)", b->n_serials, a->n_serials);
        for (size_t i = 0; i < a->n_serials; i++)
                if (a->serials[i].port != b->serials[i].port)
                        return differ(ret_error, "serial port %zu is port %u, not %u", i + 1, b->serials[i].port,
                                      a->serials[i].port);
        if (a->vnc != b->vnc)
                return differ(ret_error, "VNC graphics %s, unlike the running guest", b->vnc ? "added" : "removed");
        return 0;
}

int domain_def_check_abi(const DomainDef *a, const DomainDef *b, char **ret_error) {
        char x[37], y[37];

        if (memcmp(a->uuid, b->uuid, sizeof(a->uuid)) != 0) {
                domain_uuid_format(a->uuid, x);
                domain_uuid_format(b->uuid, y);
                return differ(ret_error, "UUID %s is not the domain's (%s)", y, x);
        }
        if (a->virt_type != b->virt_type)
                return differ(ret_error, "domain type %s, not %s", domain_virt_type_to_string(b->virt_type),
                              domain_virt_type_to_string(a->virt_type));
        if (a->memory_kib != b->memory_kib)
                return differ(ret_error, "memory %" PRIu64 " KiB, not %" PRIu64 " KiB", b->memory_kib, a->memory_kib);
        if (a->current_memory_kib != b->current_memory_kib)
                return differ(ret_error, "current memory %" PRIu64 " KiB, not %" PRIu64 " KiB",
                              b->current_memory_kib, a->current_memory_kib);
        if (a->vcpus != b->vcpus)
                return differ(ret_error, "%u vCPUs, not %u", b->vcpus, a->vcpus);
        if (g_strcmp0(a->machine, b->machine) != 0)
                return differ(ret_error, "machine type '%s', not '%s'", b->machine ?: "", a->machine ?: "");
        if (a->cpu_mode != b->cpu_mode || g_strcmp0(a->cpu_model, b->cpu_model) != 0)
                return differ(ret_error, "CPU %s%s%s, not %s%s%s", domain_cpu_mode_to_string(b->cpu_mode),
                              b->cpu_model ? " " : "", b->cpu_model ?: "", domain_cpu_mode_to_string(a->cpu_mode),
                              a->cpu_model ? " " : "", a->cpu_model ?: "");
        if (a->acpi != b->acpi || a->apic != b->apic || a->pae != b->pae)
                return differ(ret_error, "features (acpi, apic, pae) differ");
        if (a->clock != b->clock)
                return differ(ret_error, "clock offset %s, not %s", domain_clock_offset_to_string(b->clock),
                              domain_clock_offset_to_string(a->clock));
        /* The kernel is in the guest's RAM already; its command line stays readable by the guest
         * (fw_cfg), so it must be the same. */
        if (g_strcmp0(a->cmdline, b->cmdline) != 0)
                return differ(ret_error, "the kernel command line differs");
        if ((a->kernel == NULL) != (b->kernel == NULL) || (a->initrd == NULL) != (b->initrd == NULL))
                return differ(ret_error, "direct kernel boot differs (kernel or initrd added or removed)");
        return check_devices(a, b, ret_error);
}
