/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "domain-def.h"

#define DEFINE_STRING_TABLE(name, type, ...)                                    \
        static const char *const name##_table[] = { __VA_ARGS__ };              \
        const char *name##_to_string(type v) {                                  \
                if ((size_t) v >= ELEMENTSOF(name##_table))                     \
                        return NULL;                                            \
                return name##_table[v];                                         \
        }                                                                       \
        int name##_from_string(const char *s) {                                 \
                if (!s)                                                         \
                        return -EINVAL;                                         \
                for (size_t i = 0; i < ELEMENTSOF(name##_table); i++)           \
                        if (strcmp(name##_table[i], s) == 0)                    \
                                return (int) i;                                 \
                return -EINVAL;                                                 \
        }

DEFINE_STRING_TABLE(domain_virt_type, DomainVirtType, "kvm", "qemu")
DEFINE_STRING_TABLE(domain_cpu_mode, DomainCpuMode, "default", "host-passthrough", "host-model", "custom")
DEFINE_STRING_TABLE(domain_clock_offset, DomainClockOffset, "utc", "localtime")
DEFINE_STRING_TABLE(domain_lifecycle_action, DomainLifecycleAction, "destroy", "restart", "preserve")
DEFINE_STRING_TABLE(domain_boot_dev, DomainBootDev, "hd", "cdrom", "network")
DEFINE_STRING_TABLE(domain_disk_device, DomainDiskDevice, "disk", "cdrom")
DEFINE_STRING_TABLE(domain_disk_format, DomainDiskFormat, "raw", "qcow2")
DEFINE_STRING_TABLE(domain_disk_cache, DomainDiskCache,
                    "default", "none", "writethrough", "writeback", "directsync", "unsafe")
DEFINE_STRING_TABLE(domain_disk_bus, DomainDiskBus, "virtio", "sata")
DEFINE_STRING_TABLE(domain_net_model, DomainNetModel, "virtio", "e1000", "rtl8139")
DEFINE_STRING_TABLE(domain_seclabel_type, DomainSeclabelType, "none", "dynamic", "static")
DEFINE_STRING_TABLE(domain_seclabel_model, DomainSeclabelModel, "selinux", "dac")

DomainDef *domain_def_new(void) {
        DomainDef *def = g_new(DomainDef, 1);

        /* libvirt's defaults, so that a minimal document means what it means there. */
        *def = (DomainDef) {
                .virt_type = DOMAIN_VIRT_KVM,
                .id = -1,
                .vcpus = 1,
                .cpu_mode = DOMAIN_CPU_DEFAULT,
                .clock = DOMAIN_CLOCK_UTC,
                .on_poweroff = DOMAIN_LIFECYCLE_DESTROY,
                .on_reboot = DOMAIN_LIFECYCLE_RESTART,
                .on_crash = DOMAIN_LIFECYCLE_DESTROY,
        };
        return def;
}

DomainDef *domain_def_free(DomainDef *def) {
        if (!def)
                return NULL;

        g_free(def->name);
        g_free(def->title);
        g_free(def->description);
        g_free(def->machine);
        g_free(def->kernel);
        g_free(def->initrd);
        g_free(def->cmdline);
        g_free(def->cpu_model);
        g_free(def->emulator);
        for (size_t i = 0; i < def->n_disks; i++) {
                g_free(def->disks[i].source);
                g_free(def->disks[i].target);
        }
        g_free(def->disks);
        g_free(def->nets);
        for (size_t i = 0; i < def->n_serials; i++)
                g_free(def->serials[i].path);
        g_free(def->serials);
        g_free(def->vnc_socket);
        for (size_t i = 0; i < def->n_seclabels; i++)
                g_free(def->seclabels[i].label);
        g_free(def->seclabels);
        g_free(def);
        return NULL;
}

DomainDef *domain_def_copy(const DomainDef *def) {
        DomainDef *c;

        if (!def)
                return NULL;

        c = g_memdup2(def, sizeof(*def));
        c->name = g_strdup(def->name);
        c->title = g_strdup(def->title);
        c->description = g_strdup(def->description);
        c->machine = g_strdup(def->machine);
        c->kernel = g_strdup(def->kernel);
        c->initrd = g_strdup(def->initrd);
        c->cmdline = g_strdup(def->cmdline);
        c->cpu_model = g_strdup(def->cpu_model);
        c->emulator = g_strdup(def->emulator);
        c->vnc_socket = g_strdup(def->vnc_socket);

        c->disks = g_memdup2(def->disks, def->n_disks * sizeof(DomainDiskDef));
        for (size_t i = 0; i < def->n_disks; i++) {
                c->disks[i].source = g_strdup(def->disks[i].source);
                c->disks[i].target = g_strdup(def->disks[i].target);
        }
        c->nets = g_memdup2(def->nets, def->n_nets * sizeof(DomainNetDef));
        c->serials = g_memdup2(def->serials, def->n_serials * sizeof(DomainSerialDef));
        for (size_t i = 0; i < def->n_serials; i++)
                c->serials[i].path = g_strdup(def->serials[i].path);
        c->seclabels = g_memdup2(def->seclabels, def->n_seclabels * sizeof(DomainSeclabelDef));
        for (size_t i = 0; i < def->n_seclabels; i++)
                c->seclabels[i].label = g_strdup(def->seclabels[i].label);
        return c;
}

bool domain_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n == 0 || n > DOMAIN_NAME_MAX)
                return false;
        /* A name becomes a file name (/etc/ferry/domains/NAME.xml), a unit name and part of
         * QEMU options: no leading '.' (hidden files, "..") or '-' (looks like an option). */
        if (name[0] == '.' || name[0] == '-')
                return false;
        for (const char *p = name; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("_.+-", *p))
                        return false;
        return true;
}

bool domain_path_is_valid(const char *path) {
        size_t n;

        if (!path || path[0] != '/')
                return false;
        n = strlen(path);
        if (n > DOMAIN_PATH_MAX)
                return false;
        for (const char *p = path; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        return false;
        /* "." and ".." components make a path mean something other than it says to the
         * reader (and to any prefix check done on it later). */
        for (const char *c = path; c; c = strchr(c + 1, '/')) {
                const char *e = c + 1;
                size_t len = strcspn(e, "/");
                if ((len == 1 && e[0] == '.') || (len == 2 && e[0] == '.' && e[1] == '.'))
                        return false;
        }
        return true;
}

bool domain_disk_target_is_valid(const char *target) {
        if (!target || (!g_str_has_prefix(target, "vd") && !g_str_has_prefix(target, "sd")))
                return false;
        if (target[2] == '\0' || strlen(target) > 5)   /* vdzzz is far beyond any limit */
                return false;
        for (const char *p = target + 2; *p; p++)
                if (*p < 'a' || *p > 'z')
                        return false;
        return true;
}

int domain_disk_target_index(const char *target) {
        int idx = 0;

        if (!domain_disk_target_is_valid(target))
                return -EINVAL;
        /* Bijective base 26 as the kernel names disks: a..z, aa..az, ... */
        for (const char *p = target + 2; *p; p++)
                idx = idx * 26 + (*p - 'a' + 1);
        return idx - 1;
}

static bool version_is_valid(const char *s) {
        /* "7.2", "2.12": digits '.' digits */
        size_t a = strspn(s, "0123456789");
        if (a == 0 || a > 3 || s[a] != '.')
                return false;
        s += a + 1;
        a = strspn(s, "0123456789");
        return a > 0 && a <= 3 && s[a] == '\0';
}

bool domain_machine_is_valid(const char *machine) {
        if (!machine)
                return false;
        if (strcmp(machine, "pc") == 0 || strcmp(machine, "q35") == 0)
                return true;
        if (g_str_has_prefix(machine, "pc-i440fx-"))
                return version_is_valid(machine + strlen("pc-i440fx-"));
        if (g_str_has_prefix(machine, "pc-q35-"))
                return version_is_valid(machine + strlen("pc-q35-"));
        return false;
}

bool domain_emulator_is_valid(const char *path) {
        const char *base;

        if (!domain_path_is_valid(path))
                return false;
        base = strrchr(path, '/') + 1;
        if (!g_str_has_prefix(base, "qemu-system-") || base[strlen("qemu-system-")] == '\0')
                return false;
        for (const char *p = base + strlen("qemu-system-"); *p; p++)
                if (!g_ascii_isalnum(*p) && *p != '_')
                        return false;
        return true;
}

bool domain_cpu_model_is_valid(const char *model) {
        size_t n;

        if (!model)
                return false;
        n = strlen(model);
        if (n == 0 || n > 64 || strcmp(model, "host") == 0)
                return false;
        for (const char *p = model; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("._-", *p))
                        return false;
        return true;
}

bool domain_seclabel_label_is_valid(const char *label) {
        size_t n;

        if (!label)
                return false;
        n = strlen(label);
        if (n == 0 || n > DOMAIN_TEXT_MAX)
                return false;
        for (const char *p = label; *p; p++)
                if (*p <= ' ' || *p >= 0x7f)
                        return false;
        return true;
}

void domain_uuid_format(const uint8_t uuid[16], char buf[37]) {
        snprintf(buf, 37,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7],
                 uuid[8], uuid[9], uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);
}

int domain_uuid_parse(const char *s, uint8_t ret[16]) {
        uint8_t u[16];
        size_t n = 0;

        /* The canonical 8-4-4-4-12 form only: one spelling per uuid keeps round trips exact
         * (we always format lower case). */
        if (!s || strlen(s) != 36)
                return -EINVAL;
        for (size_t i = 0; i < 36;) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return -EINVAL;
                        i++;
                        continue;
                }
                int hi = g_ascii_xdigit_value(s[i]), lo = g_ascii_xdigit_value(s[i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                u[n++] = (uint8_t) (hi << 4 | lo);
                i += 2;
        }
        memcpy(ret, u, 16);
        return 0;
}

static void random_bytes(uint8_t *buf, size_t n) {
        ssize_t l = getrandom(buf, n, GRND_NONBLOCK);

        /* Only before the kernel's pool is initialized; uniqueness, not secrecy, is what
         * uuids and MACs need. */
        if (l < 0 || (size_t) l != n)
                for (size_t i = 0; i < n; i++)
                        buf[i] = (uint8_t) g_random_int();
}

void domain_uuid_generate(uint8_t ret[16]) {
        random_bytes(ret, 16);
        ret[6] = (ret[6] & 0x0f) | 0x40;   /* version 4 */
        ret[8] = (ret[8] & 0x3f) | 0x80;   /* RFC 4122 variant */
}

void domain_mac_format(const uint8_t mac[6], char buf[18]) {
        snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x",
                 mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

int domain_mac_parse(const char *s, uint8_t ret[6]) {
        uint8_t m[6];

        if (!s || strlen(s) != 17)
                return -EINVAL;
        for (size_t i = 0; i < 6; i++) {
                const char *p = s + i * 3;
                int hi = g_ascii_xdigit_value(p[0]), lo = g_ascii_xdigit_value(p[1]);
                if (hi < 0 || lo < 0 || (i < 5 && p[2] != ':'))
                        return -EINVAL;
                m[i] = (uint8_t) (hi << 4 | lo);
        }
        /* A multicast address on a NIC breaks the guest's network in confusing ways. */
        if (m[0] & 1)
                return -EINVAL;
        memcpy(ret, m, 6);
        return 0;
}

void domain_mac_generate(uint8_t ret[6]) {
        /* QEMU's OUI, as libvirt does. */
        ret[0] = 0x52;
        ret[1] = 0x54;
        ret[2] = 0x00;
        random_bytes(ret + 3, 3);
}
