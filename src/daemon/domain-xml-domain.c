/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The top-level elements of <domain>; <devices> is in domain-xml-devices.c. */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "domain-xml-internal.h"

typedef struct MemoryUnit {
        const char *name;
        uint64_t bytes;
} MemoryUnit;

/* libvirt's units: the one-letter and *iB forms are binary, the *B forms decimal. */
static const MemoryUnit memory_units[] = {
        { "b", 1 },            { "bytes", 1 },
        { "KB", 1000 },        { "k", 1024 },          { "KiB", 1024 },
        { "MB", 1000000 },     { "M", 1 << 20 },       { "MiB", 1 << 20 },
        { "GB", 1000000000 },  { "G", 1 << 30 },       { "GiB", 1 << 30 },
        { "TB", UINT64_C(1000000000000) },    { "T", UINT64_C(1) << 40 }, { "TiB", UINT64_C(1) << 40 },
        { "PB", UINT64_C(1000000000000000) }, { "P", UINT64_C(1) << 50 }, { "PiB", UINT64_C(1) << 50 },
        { "EB", UINT64_C(1000000000000000000) }, { "E", UINT64_C(1) << 60 }, { "EiB", UINT64_C(1) << 60 },
};

static int parse_memory(DomainXmlParser *p, xmlNode *node, uint64_t *ret_kib) {
        g_autofree char *unit = NULL, *text = NULL;
        const MemoryUnit *u = NULL;
        guint64 v;
        int r;

        r = domain_xml_check_attrs(p, node, ATTRS("unit"));
        if (r < 0)
                return r;
        unit = domain_xml_attr(node, "unit");
        for (size_t i = 0; i < ELEMENTSOF(memory_units); i++)
                if (strcmp(memory_units[i].name, unit ?: "KiB") == 0)
                        u = &memory_units[i];
        if (!u)
                return domain_xml_fail(p, node, "unit '%s' is not supported (b, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, ...)", unit);
        r = domain_xml_text_stripped(p, node, &text);
        if (r < 0)
                return r;
        if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64, &v, NULL))
                return domain_xml_fail(p, node, "'%s' is not a number", text);
        if (v > UINT64_MAX / u->bytes)
                return domain_xml_fail(p, node, "%s %s is too large", text, u->name);
        /* Stored in KiB, rounded up as libvirt does. */
        v = v * u->bytes / 1024 + (v * u->bytes % 1024 != 0);
        if (v < DOMAIN_MEMORY_MIN_KIB || v > DOMAIN_MEMORY_MAX_KIB)
                return domain_xml_fail(p, node, "%" PRIu64 " KiB is out of range (1 MiB .. 16 TiB)", v);
        *ret_kib = v;
        return 0;
}

static int parse_vcpu(DomainXmlParser *p, xmlNode *node, DomainDef *def) {
        g_autofree char *placement = NULL, *text = NULL;
        uint64_t v;
        int r;

        r = domain_xml_check_attrs(p, node, ATTRS("placement"));
        if (r < 0)
                return r;
        placement = domain_xml_attr(node, "placement");
        if (placement && strcmp(placement, "static") != 0)
                return domain_xml_fail(p, node, "placement '%s' is not supported (only 'static')", placement);
        r = domain_xml_text_stripped(p, node, &text);
        if (r < 0)
                return r;
        r = domain_xml_uint(p, node, "vcpu count", text, 1, DOMAIN_VCPUS_MAX, &v);
        if (r < 0)
                return r;
        def->vcpus = (unsigned) v;
        return 0;
}

static int parse_path_text(DomainXmlParser *p, xmlNode *node, char **ret) {
        g_autofree char *s = NULL;
        int r;

        r = domain_xml_check_attrs(p, node, NO_ATTRS);
        if (r < 0)
                return r;
        r = domain_xml_text_stripped(p, node, &s);
        if (r < 0)
                return r;
        if (!domain_path_is_valid(s))
                return domain_xml_fail(p, node, "'%s' is not an absolute path without '.' or '..' components", s);
        g_free(*ret);
        *ret = TAKE_PTR(s);
        return 0;
}

static int parse_os(DomainXmlParser *p, xmlNode *os, DomainDef *def) {
        xmlNode *type = NULL, *kernel = NULL, *initrd = NULL, *cmdline = NULL;
        int r;

        r = domain_xml_check_attrs(p, os, NO_ATTRS);
        if (r < 0 || (r = domain_xml_check_children(p, os)) < 0)
                return r;
        FOREACH_ELEMENT(c, os) {
                if (node_is(c, "type")) {
                        g_autofree char *arch = NULL, *machine = NULL, *text = NULL;

                        if ((r = domain_xml_once(p, c, &type)) < 0 ||
                            (r = domain_xml_check_attrs(p, c, ATTRS("arch", "machine"))) < 0 ||
                            (r = domain_xml_text_stripped(p, c, &text)) < 0)
                                return r;
                        if (strcmp(text, "hvm") != 0)
                                return domain_xml_fail(p, c, "os type '%s' is not supported (only 'hvm')", text);
                        arch = domain_xml_attr(c, "arch");
                        if (arch && strcmp(arch, "x86_64") != 0)
                                return domain_xml_fail(p, c, "arch '%s' is not supported (only 'x86_64')", arch);
                        machine = domain_xml_attr(c, "machine");
                        if (machine && !domain_machine_is_valid(machine))
                                return domain_xml_fail(p, c, "machine '%s' is not supported (pc, q35, pc-i440fx-X.Y, pc-q35-X.Y)", machine);
                        if (machine)
                                g_free(def->machine), def->machine = TAKE_PTR(machine);
                } else if (node_is(c, "kernel")) {
                        if ((r = domain_xml_once(p, c, &kernel)) < 0 || (r = parse_path_text(p, c, &def->kernel)) < 0)
                                return r;
                } else if (node_is(c, "initrd")) {
                        if ((r = domain_xml_once(p, c, &initrd)) < 0 || (r = parse_path_text(p, c, &def->initrd)) < 0)
                                return r;
                } else if (node_is(c, "cmdline")) {
                        if ((r = domain_xml_once(p, c, &cmdline)) < 0 ||
                            (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                            (r = domain_xml_text(p, c, DOMAIN_TEXT_MAX, &def->cmdline)) < 0)
                                return r;
                        for (const char *s = def->cmdline; *s; s++)
                                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                                        return domain_xml_fail(p, c, "control characters are not allowed");
                } else if (node_is(c, "boot")) {
                        g_autofree char *dev = NULL;
                        int b;

                        if ((r = domain_xml_check_attrs(p, c, ATTRS("dev"))) < 0)
                                return r;
                        dev = domain_xml_attr(c, "dev");
                        if (!dev)
                                return domain_xml_fail(p, c, "attribute 'dev' is missing");
                        b = domain_xml_enum(p, c, "boot dev", dev, domain_boot_dev_from_string,
                                            CHOICES("hd", "cdrom", "network"));
                        if (b < 0)
                                return b;
                        for (size_t i = 0; i < def->n_boot; i++)
                                if (def->boot[i] == (DomainBootDev) b)
                                        return domain_xml_fail(p, c, "boot dev '%s' is listed twice", dev);
                        def->boot[def->n_boot++] = b;   /* three values, no duplicates: fits */
                } else
                        return domain_xml_fail(p, c, "element is not supported");
        }
        if (!type)
                return domain_xml_fail(p, os, "<type> is missing");
        if ((def->initrd || def->cmdline) && !def->kernel)
                return domain_xml_fail(p, os, "<initrd> and <cmdline> need <kernel>");
        return 0;
}

static int parse_cpu(DomainXmlParser *p, xmlNode *cpu, DomainDef *def) {
        g_autofree char *mode = NULL, *migratable = NULL, *match = NULL;
        xmlNode *model = NULL;
        int r;

        /* check= only tunes libvirt's own comparison against the host: accepted, dropped. */
        r = domain_xml_check_attrs(p, cpu, ATTRS("mode", "match", "check", "migratable"));
        if (r < 0 || (r = domain_xml_check_children(p, cpu)) < 0)
                return r;
        migratable = domain_xml_attr(cpu, "migratable");
        if (migratable && strcmp(migratable, "on") != 0)
                return domain_xml_fail(p, cpu, "migratable '%s' is not supported (only 'on')", migratable);
        match = domain_xml_attr(cpu, "match");
        if (match && strcmp(match, "exact") != 0)
                return domain_xml_fail(p, cpu, "match '%s' is not supported (only 'exact')", match);
        mode = domain_xml_attr(cpu, "mode");
        r = domain_xml_enum(p, cpu, "cpu mode", mode ?: "custom", domain_cpu_mode_from_string,
                            CHOICES("host-passthrough", "host-model", "custom"));
        if (r < 0)
                return r;
        if (r == DOMAIN_CPU_DEFAULT)
                return domain_xml_fail(p, cpu, "cpu mode 'default' is not supported (omit <cpu>)");
        def->cpu_mode = r;

        FOREACH_ELEMENT(c, cpu) {
                g_autofree char *fallback = NULL, *name = NULL;

                if (!node_is(c, "model"))
                        return domain_xml_fail(p, c, "element is not supported");
                if ((r = domain_xml_once(p, c, &model)) < 0 ||
                    (r = domain_xml_check_attrs(p, c, ATTRS("fallback"))) < 0)
                        return r;
                if (def->cpu_mode != DOMAIN_CPU_CUSTOM)
                        return domain_xml_fail(p, c, "a model needs mode='custom'");
                fallback = domain_xml_attr(c, "fallback");
                if (fallback && strcmp(fallback, "forbid") != 0 && strcmp(fallback, "allow") != 0)
                        return domain_xml_fail(p, c, "fallback '%s' is not supported", fallback);
                if ((r = domain_xml_text_stripped(p, c, &name)) < 0)
                        return r;
                if (!domain_cpu_model_is_valid(name))
                        return domain_xml_fail(p, c, "'%s' is not a valid CPU model name", name);
                def->cpu_model = TAKE_PTR(name);
        }
        if (def->cpu_mode == DOMAIN_CPU_CUSTOM && !def->cpu_model)
                return domain_xml_fail(p, cpu, "mode 'custom' needs a <model>");
        return 0;
}

static int parse_features(DomainXmlParser *p, xmlNode *features, DomainDef *def) {
        int r;

        r = domain_xml_check_attrs(p, features, NO_ATTRS);
        if (r < 0 || (r = domain_xml_check_children(p, features)) < 0)
                return r;
        FOREACH_ELEMENT(c, features) {
                bool *flag = node_is(c, "acpi") ? &def->acpi :
                             node_is(c, "apic") ? &def->apic :
                             node_is(c, "pae") ? &def->pae : NULL;
                if (!flag)
                        return domain_xml_fail(p, c, "feature is not supported (acpi, apic, pae)");
                if (*flag)
                        return domain_xml_fail(p, c, "may appear only once");
                if ((r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0)
                        return r;
                if (xmlFirstElementChild(c))
                        return domain_xml_fail(p, c, "must be empty");
                *flag = true;
        }
        return 0;
}

static int parse_lifecycle(DomainXmlParser *p, xmlNode *node, DomainLifecycleAction *ret) {
        g_autofree char *text = NULL;
        int r;

        if ((r = domain_xml_check_attrs(p, node, NO_ATTRS)) < 0 ||
            (r = domain_xml_text_stripped(p, node, &text)) < 0)
                return r;
        r = domain_xml_enum(p, node, "action", text, domain_lifecycle_action_from_string,
                            CHOICES("destroy", "restart", "preserve"));
        if (r < 0)
                return r;
        *ret = r;
        return 0;
}

static int parse_seclabel(DomainXmlParser *p, xmlNode *node, DomainDef *def) {
        g_autofree char *type = NULL, *model = NULL, *relabel = NULL, *label_text = NULL;
        DomainSeclabelDef sl = {};
        xmlNode *label = NULL, *imagelabel = NULL;
        int r;

        r = domain_xml_check_attrs(p, node, ATTRS("type", "model", "relabel"));
        if (r < 0 || (r = domain_xml_check_children(p, node)) < 0)
                return r;
        type = domain_xml_attr(node, "type");
        r = domain_xml_enum(p, node, "seclabel type", type ?: "dynamic", domain_seclabel_type_from_string,
                            CHOICES("none", "dynamic", "static"));
        if (r < 0)
                return r;
        sl.type = r;
        model = domain_xml_attr(node, "model");
        if (!model && sl.type != DOMAIN_SECLABEL_NONE)
                return domain_xml_fail(p, node, "attribute 'model' is missing");
        if (model) {
                r = domain_xml_enum(p, node, "seclabel model", model, domain_seclabel_model_from_string,
                                    CHOICES("selinux", "dac"));
                if (r < 0)
                        return r;
                sl.model = r;
        }
        relabel = domain_xml_attr(node, "relabel");
        if (relabel && (strcmp(relabel, "yes") != 0 || sl.type == DOMAIN_SECLABEL_NONE))
                return domain_xml_fail(p, node, "relabel '%s' is not supported (Ferry always relabels)", relabel);

        FOREACH_ELEMENT(c, node) {
                g_autofree char *text = NULL;

                if (!node_is(c, "label") && !node_is(c, "imagelabel"))
                        return domain_xml_fail(p, c, "element is not supported");
                if ((r = domain_xml_once(p, c, node_is(c, "label") ? &label : &imagelabel)) < 0 ||
                    (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                    (r = domain_xml_text_stripped(p, c, &text)) < 0)
                        return r;
                if (sl.type == DOMAIN_SECLABEL_NONE)
                        return domain_xml_fail(p, c, "type 'none' takes no label");
                if (!domain_seclabel_label_is_valid(text))
                        return domain_xml_fail(p, c, "'%s' is not a valid label", text);
                /* The image label of a dynamic label is derived from it at start: dropped. */
                if (node_is(c, "label"))
                        label_text = TAKE_PTR(text);
        }
        if (sl.type == DOMAIN_SECLABEL_STATIC && !label_text)
                return domain_xml_fail(p, node, "type 'static' needs a <label>");

        for (size_t i = 0; i < def->n_seclabels; i++)
                if (def->seclabels[i].type == DOMAIN_SECLABEL_NONE || sl.type == DOMAIN_SECLABEL_NONE ||
                    def->seclabels[i].model == sl.model)
                        return domain_xml_fail(p, node, "conflicts with an earlier <seclabel> "
                                               "(one per model; type 'none' only alone)");
        sl.label = TAKE_PTR(label_text);
        def->seclabels = g_renew(DomainSeclabelDef, def->seclabels, def->n_seclabels + 1);
        def->seclabels[def->n_seclabels++] = sl;
        return 0;
}

static int parse_top(DomainXmlParser *p, xmlNode *c, DomainDef *def, xmlNode **seen, xmlNode **current_memory) {
        g_autofree char *text = NULL;
        int r;

        if (node_is(c, "name")) {
                if ((r = domain_xml_once(p, c, &seen[0])) < 0 || (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                    (r = domain_xml_text(p, c, DOMAIN_TEXT_MAX, &text)) < 0)
                        return r;
                if (!domain_name_is_valid(text))
                        return domain_xml_fail(p, c, "'%s' is not a valid name (1..64 of A-Z a-z 0-9 _ . + -, "
                                               "not starting with '.' or '-')", text);
                def->name = TAKE_PTR(text);
        } else if (node_is(c, "uuid")) {
                if ((r = domain_xml_once(p, c, &seen[1])) < 0 || (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                    (r = domain_xml_text_stripped(p, c, &text)) < 0)
                        return r;
                if (domain_uuid_parse(text, def->uuid) < 0)
                        return domain_xml_fail(p, c, "'%s' is not a uuid (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", text);
        } else if (node_is(c, "title")) {
                if ((r = domain_xml_once(p, c, &seen[2])) < 0 || (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                    (r = domain_xml_text(p, c, DOMAIN_TEXT_MAX, &text)) < 0)
                        return r;
                if (strpbrk(text, "\r\n"))
                        return domain_xml_fail(p, c, "a title is a single line");
                def->title = TAKE_PTR(text);
        } else if (node_is(c, "description")) {
                if ((r = domain_xml_once(p, c, &seen[3])) < 0 || (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                    (r = domain_xml_text(p, c, DOMAIN_DESCRIPTION_MAX, &def->description)) < 0)
                        return r;
        } else if (node_is(c, "metadata")) {
                /* Applications' private data: accepted and dropped (docs/domain-xml.md). */
                return domain_xml_once(p, c, &seen[4]);
        } else if (node_is(c, "memory")) {
                if ((r = domain_xml_once(p, c, &seen[5])) < 0)
                        return r;
                return parse_memory(p, c, &def->memory_kib);
        } else if (node_is(c, "currentMemory")) {
                if ((r = domain_xml_once(p, c, current_memory)) < 0)
                        return r;
                return parse_memory(p, c, &def->current_memory_kib);
        } else if (node_is(c, "vcpu")) {
                if ((r = domain_xml_once(p, c, &seen[6])) < 0)
                        return r;
                return parse_vcpu(p, c, def);
        } else if (node_is(c, "os")) {
                if ((r = domain_xml_once(p, c, &seen[7])) < 0)
                        return r;
                return parse_os(p, c, def);
        } else if (node_is(c, "cpu")) {
                if ((r = domain_xml_once(p, c, &seen[8])) < 0)
                        return r;
                return parse_cpu(p, c, def);
        } else if (node_is(c, "features")) {
                if ((r = domain_xml_once(p, c, &seen[9])) < 0)
                        return r;
                return parse_features(p, c, def);
        } else if (node_is(c, "clock")) {
                g_autofree char *offset = NULL;

                if ((r = domain_xml_once(p, c, &seen[10])) < 0 || (r = domain_xml_check_attrs(p, c, ATTRS("offset"))) < 0 ||
                    (r = domain_xml_check_children(p, c)) < 0)
                        return r;
                if (xmlFirstElementChild(c))
                        return domain_xml_fail(p, xmlFirstElementChild(c), "element is not supported");
                offset = domain_xml_attr(c, "offset");
                r = domain_xml_enum(p, c, "clock offset", offset ?: "utc", domain_clock_offset_from_string,
                                    CHOICES("utc", "localtime"));
                if (r < 0)
                        return r;
                def->clock = r;
        } else if (node_is(c, "on_poweroff")) {
                if ((r = domain_xml_once(p, c, &seen[11])) < 0)
                        return r;
                return parse_lifecycle(p, c, &def->on_poweroff);
        } else if (node_is(c, "on_reboot")) {
                if ((r = domain_xml_once(p, c, &seen[12])) < 0)
                        return r;
                return parse_lifecycle(p, c, &def->on_reboot);
        } else if (node_is(c, "on_crash")) {
                if ((r = domain_xml_once(p, c, &seen[13])) < 0)
                        return r;
                return parse_lifecycle(p, c, &def->on_crash);
        } else if (node_is(c, "devices")) {
                if ((r = domain_xml_once(p, c, &seen[14])) < 0)
                        return r;
                return domain_xml_parse_devices(p, c, def);
        } else if (node_is(c, "seclabel"))
                return parse_seclabel(p, c, def);
        else
                return domain_xml_fail(p, c, "element is not supported");
        return 0;
}

int domain_xml_parse_domain(DomainXmlParser *p, xmlNode *root, DomainDef **ret) {
        _cleanup_(domain_def_freep) DomainDef *def = domain_def_new();
        g_autofree char *type = NULL, *id = NULL;
        xmlNode *seen[15] = {}, *current_memory = NULL;
        int r;

        r = domain_xml_check_attrs(p, root, ATTRS("type", "id"));
        if (r < 0 || (r = domain_xml_check_children(p, root)) < 0)
                return r;
        type = domain_xml_attr(root, "type");
        if (!type)
                return domain_xml_fail(p, root, "attribute 'type' is missing ('kvm' or 'qemu')");
        r = domain_xml_enum(p, root, "domain type", type, domain_virt_type_from_string, CHOICES("kvm", "qemu"));
        if (r < 0)
                return r;
        def->virt_type = r;
        id = domain_xml_attr(root, "id");
        if (id) {
                uint64_t v;
                if ((r = domain_xml_uint(p, root, "id", id, 1, INT32_MAX, &v)) < 0)
                        return r;
                def->id = (int) v;
        }

        FOREACH_ELEMENT(c, root)
                if ((r = parse_top(p, c, def, seen, &current_memory)) < 0)
                        return r;

        if (!def->name)
                return domain_xml_fail(p, root, "<name> is missing");
        if (def->memory_kib == 0)
                return domain_xml_fail(p, root, "<memory> is missing");
        if (!seen[7])
                return domain_xml_fail(p, root, "<os> is missing");
        if (!current_memory)
                def->current_memory_kib = def->memory_kib;
        else if (def->current_memory_kib > def->memory_kib)
                return domain_xml_fail(p, current_memory, "%" PRIu64 " KiB is more than <memory> (%" PRIu64 " KiB)",
                                       def->current_memory_kib, def->memory_kib);
        if (!seen[1])
                domain_uuid_generate(def->uuid);
        if (!def->machine)
                def->machine = g_strdup("pc");
        *ret = TAKE_PTR(def);
        return 0;
}
