/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The domain definition: the subset of libvirt's domain XML that Ferry supports, as plain
 * data. docs/domain-xml.md lists the subset element by element. Nothing here does I/O: the
 * parser (domain-xml.c) and the formatter (domain-format.c) convert from and to XML, and
 * qemu-command.c turns a definition into QEMU's argv. A DomainDef that came out of
 * domain_def_parse() has passed every check below, so its strings are safe to hand to QEMU
 * (after QEMU's own option escaping). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define DOMAIN_NAME_MAX 64
#define DOMAIN_XML_SIZE_MAX (1024 * 1024)
#define DOMAIN_MEMORY_MIN_KIB UINT64_C(1024)                      /* 1 MiB */
#define DOMAIN_MEMORY_MAX_KIB (UINT64_C(16) << 30)                /* 16 TiB */
#define DOMAIN_VCPUS_MAX 255
#define DOMAIN_DISKS_MAX 64
#define DOMAIN_NETS_MAX 16
#define DOMAIN_SERIALS_MAX 4       /* isa-serial index 0..3 */
#define DOMAIN_SATA_PORTS 6        /* one ich9-ahci controller: sda..sdf */
#define DOMAIN_BOOT_DEVS_MAX 3
#define DOMAIN_PATH_MAX 4096
#define DOMAIN_SOCKET_PATH_MAX 107  /* sun_path holds 108 bytes with the NUL */
#define DOMAIN_TEXT_MAX 4096       /* title, kernel command line, seclabel label */
#define DOMAIN_DESCRIPTION_MAX 65536

typedef enum DomainVirtType {
        DOMAIN_VIRT_KVM,          /* <domain type='kvm'>: KVM when the host has it, else TCG */
        DOMAIN_VIRT_QEMU,         /* <domain type='qemu'>: always TCG */
        _DOMAIN_VIRT_MAX,
} DomainVirtType;

typedef enum DomainCpuMode {
        DOMAIN_CPU_DEFAULT,       /* no <cpu>: QEMU's default model for the machine */
        DOMAIN_CPU_HOST_PASSTHROUGH,
        DOMAIN_CPU_HOST_MODEL,
        DOMAIN_CPU_CUSTOM,
        _DOMAIN_CPU_MAX,
} DomainCpuMode;

typedef enum DomainClockOffset {
        DOMAIN_CLOCK_UTC,
        DOMAIN_CLOCK_LOCALTIME,
        _DOMAIN_CLOCK_MAX,
} DomainClockOffset;

typedef enum DomainLifecycleAction {
        DOMAIN_LIFECYCLE_DESTROY,
        DOMAIN_LIFECYCLE_RESTART,
        DOMAIN_LIFECYCLE_PRESERVE,
        _DOMAIN_LIFECYCLE_MAX,
} DomainLifecycleAction;

typedef enum DomainBootDev {
        DOMAIN_BOOT_HD,
        DOMAIN_BOOT_CDROM,
        DOMAIN_BOOT_NETWORK,
        _DOMAIN_BOOT_MAX,
} DomainBootDev;

typedef enum DomainDiskDevice {
        DOMAIN_DISK_DEVICE_DISK,
        DOMAIN_DISK_DEVICE_CDROM,
        _DOMAIN_DISK_DEVICE_MAX,
} DomainDiskDevice;

typedef enum DomainDiskFormat {
        DOMAIN_DISK_FORMAT_RAW,
        DOMAIN_DISK_FORMAT_QCOW2,
        _DOMAIN_DISK_FORMAT_MAX,
} DomainDiskFormat;

typedef enum DomainDiskCache {
        DOMAIN_DISK_CACHE_DEFAULT,
        DOMAIN_DISK_CACHE_NONE,
        DOMAIN_DISK_CACHE_WRITETHROUGH,
        DOMAIN_DISK_CACHE_WRITEBACK,
        DOMAIN_DISK_CACHE_DIRECTSYNC,
        DOMAIN_DISK_CACHE_UNSAFE,
        _DOMAIN_DISK_CACHE_MAX,
} DomainDiskCache;

typedef enum DomainDiskBus {
        DOMAIN_DISK_BUS_VIRTIO,   /* target vdX */
        DOMAIN_DISK_BUS_SATA,     /* target sdX */
        _DOMAIN_DISK_BUS_MAX,
} DomainDiskBus;

typedef enum DomainNetModel {
        DOMAIN_NET_MODEL_VIRTIO,
        DOMAIN_NET_MODEL_E1000,
        DOMAIN_NET_MODEL_RTL8139,
        _DOMAIN_NET_MODEL_MAX,
} DomainNetModel;

typedef enum DomainSeclabelType {
        DOMAIN_SECLABEL_NONE,
        DOMAIN_SECLABEL_DYNAMIC,
        DOMAIN_SECLABEL_STATIC,
        _DOMAIN_SECLABEL_TYPE_MAX,
} DomainSeclabelType;

typedef enum DomainSeclabelModel {
        DOMAIN_SECLABEL_MODEL_SELINUX,
        DOMAIN_SECLABEL_MODEL_DAC,
        _DOMAIN_SECLABEL_MODEL_MAX,
} DomainSeclabelModel;

typedef struct DomainDiskDef {
        DomainDiskDevice device;
        DomainDiskFormat format;
        DomainDiskCache cache;
        DomainDiskBus bus;
        char *source;             /* absolute path; NULL only for an empty cdrom */
        char *target;             /* "vda", "sdb", ... */
        bool readonly;            /* always true for cdroms */
        bool shareable;
} DomainDiskDef;

typedef struct DomainNetDef {
        uint8_t mac[6];           /* generated (52:54:00:xx:xx:xx) when absent */
        DomainNetModel model;
} DomainNetDef;

typedef struct DomainSerialDef {
        unsigned port;            /* 0..DOMAIN_SERIALS_MAX-1 */
        char *path;               /* log file, absolute */
} DomainSerialDef;

typedef struct DomainSeclabelDef {
        DomainSeclabelType type;
        DomainSeclabelModel model;
        char *label;              /* static: required; dynamic: the runtime label, if any */
} DomainSeclabelDef;

typedef struct DomainDef {
        DomainVirtType virt_type;
        int id;                   /* runtime id of a running domain, -1 when none */
        char *name;
        uint8_t uuid[16];
        char *title;
        char *description;

        uint64_t memory_kib;
        uint64_t current_memory_kib;
        unsigned vcpus;

        char *machine;            /* QEMU machine type, e.g. "pc", "pc-q35-7.2" */
        char *kernel, *initrd, *cmdline;
        DomainBootDev boot[DOMAIN_BOOT_DEVS_MAX];
        size_t n_boot;

        DomainCpuMode cpu_mode;
        char *cpu_model;          /* DOMAIN_CPU_CUSTOM only */

        bool acpi, apic, pae;
        DomainClockOffset clock;
        DomainLifecycleAction on_poweroff, on_reboot, on_crash;

        char *emulator;           /* NULL: DOMAIN_EMULATOR_DEFAULT */

        DomainDiskDef *disks;
        size_t n_disks;
        DomainNetDef *nets;
        size_t n_nets;
        DomainSerialDef *serials; /* sorted by port; serial 0 is also the console */
        size_t n_serials;

        bool vnc;
        char *vnc_socket;         /* NULL: the daemon picks one in the runtime directory */

        DomainSeclabelDef *seclabels;
        size_t n_seclabels;
} DomainDef;

#define DOMAIN_EMULATOR_DEFAULT "/usr/bin/qemu-system-x86_64"

/* Flags for domain_def_format().
 * INACTIVE: the persistent configuration: no runtime id, no dynamic seclabel label (both are
 *   assigned at start).
 * MIGRATABLE: what may be sent to another host: like INACTIVE in what it drops (the runtime
 *   id and the dynamic seclabel label are host-specific), everything else stays, since the
 *   destination must build the same guest ABI. */
typedef enum DomainFormatFlags {
        DOMAIN_FORMAT_INACTIVE   = 1 << 0,
        DOMAIN_FORMAT_MIGRATABLE = 1 << 1,
} DomainFormatFlags;

/* Parses and validates. On failure returns a negative errno (-EINVAL for anything wrong in
 * the document, -E2BIG for a document over DOMAIN_XML_SIZE_MAX, -ENOMEM) and, if ret_error
 * is not NULL, a message "line N: <element>: what is wrong". */
int domain_def_parse(const char *xml, size_t length, DomainDef **ret, char **ret_error);

/* NULL only on OOM. */
char *domain_def_format(const DomainDef *def, DomainFormatFlags flags);

DomainDef *domain_def_new(void);
DomainDef *domain_def_free(DomainDef *def);
DEFINE_TRIVIAL_CLEANUP_FUNC(DomainDef *, domain_def_free);
DomainDef *domain_def_copy(const DomainDef *def);

bool domain_name_is_valid(const char *name);
/* Absolute, no "." or ".." component, no control characters, at most DOMAIN_PATH_MAX. */
bool domain_path_is_valid(const char *path);
bool domain_disk_target_is_valid(const char *target);
/* "pc", "q35", "pc-i440fx-X.Y", "pc-q35-X.Y". */
bool domain_machine_is_valid(const char *machine);
/* An absolute path whose last component is "qemu-system-<arch>". */
bool domain_emulator_is_valid(const char *path);
/* QEMU CPU model names: [A-Za-z0-9._-], at most 64 characters, not "host". */
bool domain_cpu_model_is_valid(const char *model);
/* Printable ASCII without spaces (SELinux contexts, DAC "+uid:+gid"). */
bool domain_seclabel_label_is_valid(const char *label);
/* Index of the target among its bus's names: "vda" -> 0, "sdb" -> 1, "vdaa" -> 26. */
int domain_disk_target_index(const char *target);

void domain_uuid_format(const uint8_t uuid[16], char buf[37]);
int domain_uuid_parse(const char *s, uint8_t ret[16]);
void domain_uuid_generate(uint8_t ret[16]);

void domain_mac_format(const uint8_t mac[6], char buf[18]);
int domain_mac_parse(const char *s, uint8_t ret[6]);
void domain_mac_generate(uint8_t ret[6]);

/* String tables shared by the parser, the formatter and the docs. to_string returns NULL
 * for an out-of-range value, from_string -EINVAL for an unknown string. */
#define DOMAIN_DECLARE_STRING_TABLE(name, type)                 \
        const char *name##_to_string(type v);                   \
        int name##_from_string(const char *s)

DOMAIN_DECLARE_STRING_TABLE(domain_virt_type, DomainVirtType);
DOMAIN_DECLARE_STRING_TABLE(domain_cpu_mode, DomainCpuMode);
DOMAIN_DECLARE_STRING_TABLE(domain_clock_offset, DomainClockOffset);
DOMAIN_DECLARE_STRING_TABLE(domain_lifecycle_action, DomainLifecycleAction);
DOMAIN_DECLARE_STRING_TABLE(domain_boot_dev, DomainBootDev);
DOMAIN_DECLARE_STRING_TABLE(domain_disk_device, DomainDiskDevice);
DOMAIN_DECLARE_STRING_TABLE(domain_disk_format, DomainDiskFormat);
DOMAIN_DECLARE_STRING_TABLE(domain_disk_cache, DomainDiskCache);
DOMAIN_DECLARE_STRING_TABLE(domain_disk_bus, DomainDiskBus);
DOMAIN_DECLARE_STRING_TABLE(domain_net_model, DomainNetModel);
DOMAIN_DECLARE_STRING_TABLE(domain_seclabel_type, DomainSeclabelType);
DOMAIN_DECLARE_STRING_TABLE(domain_seclabel_model, DomainSeclabelModel);
