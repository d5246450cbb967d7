/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/un.h>

#include "qemu-command.h"

char *qemu_option_escape(const char *s) {
        GString *r = g_string_sized_new(strlen(s) + 8);

        for (const char *p = s; *p; p++) {
                g_string_append_c(r, *p);
                if (*p == ',')
                        g_string_append_c(r, ',');
        }
        return g_string_free(r, false);
}

static void arg(GPtrArray *a, const char *s) {
        g_ptr_array_add(a, g_strdup(s));
}

static void argf(GPtrArray *a, const char *format, ...) _printf_(2, 3);
static void argf(GPtrArray *a, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        g_ptr_array_add(a, g_strdup_vprintf(format, ap));
        va_end(ap);
}

static bool socket_path_fits(const char *path) {
        return strlen(path) < sizeof(((struct sockaddr_un) {}).sun_path);
}

/* Defence in depth: a DomainDef built by hand (not by the parser) must not smuggle anything
 * onto the command line either. */
static bool def_is_safe(const DomainDef *def) {
        if (!domain_name_is_valid(def->name) || !domain_machine_is_valid(def->machine) ||
            def->memory_kib < DOMAIN_MEMORY_MIN_KIB || def->memory_kib > DOMAIN_MEMORY_MAX_KIB ||
            def->vcpus < 1 || def->vcpus > DOMAIN_VCPUS_MAX)
                return false;
        if ((def->emulator && !domain_emulator_is_valid(def->emulator)) ||
            (def->kernel && !domain_path_is_valid(def->kernel)) ||
            (def->initrd && !domain_path_is_valid(def->initrd)) ||
            (def->cpu_mode == DOMAIN_CPU_CUSTOM && !domain_cpu_model_is_valid(def->cpu_model)) ||
            (def->vnc_socket && !domain_path_is_valid(def->vnc_socket)))
                return false;
        for (size_t i = 0; i < def->n_disks; i++)
                if ((def->disks[i].source && !domain_path_is_valid(def->disks[i].source)) ||
                    domain_disk_target_index(def->disks[i].target) < 0)
                        return false;
        for (size_t i = 0; i < def->n_serials; i++)
                if (!domain_path_is_valid(def->serials[i].path) || def->serials[i].port >= DOMAIN_SERIALS_MAX)
                        return false;
        return true;
}

static const char *cpu_model(const DomainDef *def, bool kvm) {
        switch (def->cpu_mode) {
        case DOMAIN_CPU_HOST_PASSTHROUGH:
        case DOMAIN_CPU_HOST_MODEL:
                /* host-model would be the host's CPU as a named model (libvirt computes one);
                 * 'host' is its closest QEMU spelling. TCG has no host CPU: 'max' offers
                 * everything TCG can emulate. */
                return kvm ? "host" : "max";
        case DOMAIN_CPU_CUSTOM:
                return def->cpu_model;
        default:
                return NULL;
        }
}

/* bootindex for <os><boot dev=...>: the first disk, cdrom or NIC gets the position of its
 * kind in the list; QEMU then tries only those (-boot strict=on). */
static int boot_index(const DomainDef *def, DomainBootDev kind) {
        for (size_t i = 0; i < def->n_boot; i++)
                if (def->boot[i] == kind)
                        return (int) i + 1;
        return 0;
}

static void append_disks(GPtrArray *a, const DomainDef *def) {
        bool sata = false, hd_done = false, cdrom_done = false;

        for (size_t i = 0; i < def->n_disks; i++)
                if (def->disks[i].bus == DOMAIN_DISK_BUS_SATA)
                        sata = true;
        /* Our own AHCI controller on both machine types, so that sdX maps to the same port
         * whatever the machine (q35's built-in one stays unused). */
        if (sata) {
                arg(a, "-device");
                arg(a, "ich9-ahci,id=sata0");
        }

        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDiskDef *d = &def->disks[i];
                const char *ro = d->readonly ? "on" : "off";
                /* libvirt's mapping: cache.direct is O_DIRECT on the host, cache.no-flush
                 * drops flushes, write-cache is what the guest is told. */
                bool direct = d->cache == DOMAIN_DISK_CACHE_NONE || d->cache == DOMAIN_DISK_CACHE_DIRECTSYNC;
                bool no_flush = d->cache == DOMAIN_DISK_CACHE_UNSAFE;
                const char *write_cache =
                        d->cache == DOMAIN_DISK_CACHE_DEFAULT ? NULL :
                        d->cache == DOMAIN_DISK_CACHE_WRITETHROUGH || d->cache == DOMAIN_DISK_CACHE_DIRECTSYNC ? "off" : "on";
                g_autofree char *cache = g_strdup_printf("cache.direct=%s,cache.no-flush=%s",
                                                         direct ? "on" : "off", no_flush ? "on" : "off");
                g_autofree char *src = d->source ? qemu_option_escape(d->source) : NULL;
                GString *dev = g_string_new(NULL);
                int boot = 0;

                if (src) {
                        arg(a, "-blockdev");
                        argf(a, "driver=file,filename=%s,node-name=file-%s,read-only=%s,%s",
                             src, d->target, ro, cache);
                        arg(a, "-blockdev");
                        argf(a, "driver=%s,file=file-%s,node-name=fmt-%s,read-only=%s,%s",
                             domain_disk_format_to_string(d->format), d->target, d->target, ro, cache);
                }

                if (d->device == DOMAIN_DISK_DEVICE_CDROM && !cdrom_done) {
                        boot = boot_index(def, DOMAIN_BOOT_CDROM);
                        cdrom_done = true;
                } else if (d->device == DOMAIN_DISK_DEVICE_DISK && !hd_done) {
                        boot = boot_index(def, DOMAIN_BOOT_HD);
                        hd_done = true;
                }

                if (d->bus == DOMAIN_DISK_BUS_VIRTIO)
                        g_string_append(dev, "virtio-blk-pci");
                else
                        g_string_append_printf(dev, "%s,bus=sata0.%d",
                                               d->device == DOMAIN_DISK_DEVICE_CDROM ? "ide-cd" : "ide-hd",
                                               domain_disk_target_index(d->target));
                if (src)
                        g_string_append_printf(dev, ",drive=fmt-%s", d->target);
                g_string_append_printf(dev, ",id=%s", d->target);
                if (write_cache)
                        g_string_append_printf(dev, ",write-cache=%s", write_cache);
                if (d->shareable)
                        g_string_append(dev, ",share-rw=on");
                if (boot > 0)
                        g_string_append_printf(dev, ",bootindex=%d", boot);
                arg(a, "-device");
                g_ptr_array_add(a, g_string_free(dev, false));
        }
}

static void append_nets(GPtrArray *a, const DomainDef *def) {
        static const char *const device[] = {
                [DOMAIN_NET_MODEL_VIRTIO] = "virtio-net-pci",
                [DOMAIN_NET_MODEL_E1000] = "e1000",
                [DOMAIN_NET_MODEL_RTL8139] = "rtl8139",
        };

        for (size_t i = 0; i < def->n_nets; i++) {
                char mac[18];
                int boot = i == 0 ? boot_index(def, DOMAIN_BOOT_NETWORK) : 0;

                domain_mac_format(def->nets[i].mac, mac);
                arg(a, "-netdev");
                argf(a, "user,id=hostnet%zu", i);
                arg(a, "-device");
                if (boot > 0)
                        argf(a, "%s,netdev=hostnet%zu,id=net%zu,mac=%s,bootindex=%d",
                             device[def->nets[i].model], i, i, mac, boot);
                else
                        argf(a, "%s,netdev=hostnet%zu,id=net%zu,mac=%s", device[def->nets[i].model], i, i, mac);
        }
}

int qemu_build_argv(const DomainDef *def, const QemuLaunchParams *p, char ***ret_argv) {
        g_autoptr(GPtrArray) a = NULL;
        g_autofree char *vnc_socket = NULL, *qmp = NULL;
        bool kvm;
        char uuid[37];

        if (!def || !p || !ret_argv)
                return -EINVAL;
        if (!def_is_safe(def) || !domain_path_is_valid(p->qmp_socket) || !domain_path_is_valid(p->runtime_dir))
                return -EINVAL;
        if (def->vnc)
                vnc_socket = def->vnc_socket ? g_strdup(def->vnc_socket) : g_build_filename(p->runtime_dir, "vnc.sock", NULL);
        if (!socket_path_fits(p->qmp_socket) || (vnc_socket && !socket_path_fits(vnc_socket)))
                return -ENAMETOOLONG;

        qmp = qemu_option_escape(p->qmp_socket);
        kvm = p->kvm && def->virt_type == DOMAIN_VIRT_KVM;
        a = g_ptr_array_new_with_free_func(g_free);

        arg(a, def->emulator ?: DOMAIN_EMULATOR_DEFAULT);
        arg(a, "-name");
        argf(a, "guest=%s,debug-threads=on", def->name);   /* names cannot hold ',' */
        domain_uuid_format(def->uuid, uuid);
        arg(a, "-uuid");
        arg(a, uuid);
        arg(a, "-msg");
        arg(a, "timestamp=on");
        /* Only what is written here: no /etc/qemu config, no default NIC, VGA, floppy,
         * cdrom, serial or monitor. */
        arg(a, "-no-user-config");
        arg(a, "-nodefaults");
        arg(a, "-machine");
        argf(a, "%s,usb=off,dump-guest-core=off,acpi=%s", def->machine, def->acpi ? "on" : "off");
        arg(a, "-accel");
        arg(a, kvm ? "kvm" : "tcg");
        if (cpu_model(def, kvm)) {
                arg(a, "-cpu");
                arg(a, cpu_model(def, kvm));
        }
        arg(a, "-m");
        /* KiB when not a whole number of MiB (QEMU takes any multiple of the page size):
         * the guest gets exactly what the definition says. */
        if (def->memory_kib % 1024 == 0)
                argf(a, "%" G_GUINT64_FORMAT, def->memory_kib / 1024);
        else
                argf(a, "%" G_GUINT64_FORMAT "K", (def->memory_kib + 3) / 4 * 4);
        arg(a, "-smp");
        argf(a, "%u", def->vcpus);
        /* QEMU may not spawn, setuid, or change its own scheduling/affinity: a compromised
         * guest-facing QEMU keeps as little as it can. */
        arg(a, "-sandbox");
        arg(a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");

        arg(a, "-qmp");
        argf(a, "unix:%s,server=on,wait=off", qmp);
        if (p->qmp_on_stdin) {
                arg(a, "-chardev");
                arg(a, "socket,id=ferry-qmp-stdin,fd=0");
                arg(a, "-mon");
                arg(a, "chardev=ferry-qmp-stdin,mode=control");
        }
        if (vnc_socket) {
                g_autofree char *v = qemu_option_escape(vnc_socket);
                arg(a, "-vnc");
                argf(a, "unix:%s", v);
                arg(a, "-device");
                arg(a, "VGA,id=video0");
        } else {
                arg(a, "-display");
                arg(a, "none");
        }

        /* The guest's poweroff stops it and QEMU says SHUTDOWN; ferryd then applies
         * <on_poweroff> (and quits QEMU itself, as libvirt does). A reboot is a shutdown
         * when the definition wants the guest to stay down. */
        arg(a, "-no-shutdown");
        if (def->on_reboot != DOMAIN_LIFECYCLE_RESTART) {
                arg(a, "-action");
                arg(a, "reboot=shutdown");
        }
        arg(a, "-boot");
        arg(a, "strict=on");
        arg(a, "-rtc");
        argf(a, "base=%s", def->clock == DOMAIN_CLOCK_LOCALTIME ? "localtime" : "utc");

        /* -kernel, -initrd and -append take their value whole, no option syntax. */
        if (def->kernel) {
                arg(a, "-kernel");
                arg(a, def->kernel);
        }
        if (def->initrd) {
                arg(a, "-initrd");
                arg(a, def->initrd);
        }
        if (def->cmdline) {
                arg(a, "-append");
                arg(a, def->cmdline);
        }

        append_disks(a, def);
        append_nets(a, def);
        for (size_t i = 0; i < def->n_serials; i++) {
                g_autofree char *path = qemu_option_escape(def->serials[i].path);
                unsigned port = def->serials[i].port;

                arg(a, "-chardev");
                argf(a, "file,id=charserial%u,path=%s,append=on", port, path);
                arg(a, "-device");
                argf(a, "isa-serial,chardev=charserial%u,id=serial%u,index=%u", port, port, port);
        }

        if (p->incoming_defer) {
                arg(a, "-incoming");
                arg(a, "defer");
        }
        if (p->start_paused)
                arg(a, "-S");

        g_ptr_array_add(a, NULL);
        *ret_argv = (char **) g_ptr_array_free(g_steal_pointer(&a), false);
        return 0;
}
