/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* DomainDef -> domain XML, in libvirt's element order and indentation. Every field is
 * written explicitly (defaults included), so that parse(format(def)) gives back def and the
 * text is stable from the first round trip on. */

#include <glib.h>
#include <inttypes.h>
#include <string.h>

#include "domain-def.h"

/* g_markup_escape_text() leaves '\r' as is, which a parser turns into '\n', and escapes
 * control characters as character references that XML 1.0 forbids: write our own. Parsed
 * text never holds those control characters (libxml2 refuses them), so only the five
 * markup characters and the whitespace that attribute normalization would change matter. */
static void append_escaped(GString *s, const char *text) {
        for (const char *p = text; *p; p++)
                switch (*p) {
                case '&':  g_string_append(s, "&amp;"); break;
                case '<':  g_string_append(s, "&lt;"); break;
                case '>':  g_string_append(s, "&gt;"); break;
                case '\'': g_string_append(s, "&apos;"); break;
                case '"':  g_string_append(s, "&quot;"); break;
                case '\r': g_string_append(s, "&#13;"); break;
                case '\n': g_string_append(s, "&#10;"); break;
                case '\t': g_string_append(s, "&#9;"); break;
                default:   g_string_append_c(s, *p);
                }
}

/* Text content: newlines stay readable, except that '\r' must stay a reference. */
static void append_text(GString *s, const char *text) {
        for (const char *p = text; *p; p++)
                if (*p == '\n' || *p == '\t')
                        g_string_append_c(s, *p);
                else {
                        char one[2] = { *p, 0 };
                        append_escaped(s, one);
                }
}

static void element_text(GString *s, int indent, const char *name, const char *text) {
        g_string_append_printf(s, "%*s<%s>", indent, "", name);
        append_text(s, text);
        g_string_append_printf(s, "</%s>\n", name);
}

static void attr(GString *s, const char *name, const char *value) {
        g_string_append_printf(s, " %s='", name);
        append_escaped(s, value);
        g_string_append_c(s, '\'');
}

static void format_os(GString *s, const DomainDef *def) {
        g_string_append(s, "  <os>\n    <type arch='x86_64'");
        attr(s, "machine", def->machine ?: "pc");
        g_string_append(s, ">hvm</type>\n");
        if (def->kernel)
                element_text(s, 4, "kernel", def->kernel);
        if (def->initrd)
                element_text(s, 4, "initrd", def->initrd);
        if (def->cmdline)
                element_text(s, 4, "cmdline", def->cmdline);
        for (size_t i = 0; i < def->n_boot; i++)
                g_string_append_printf(s, "    <boot dev='%s'/>\n", domain_boot_dev_to_string(def->boot[i]));
        g_string_append(s, "  </os>\n");
}

static void format_features_cpu_clock(GString *s, const DomainDef *def) {
        if (def->acpi || def->apic || def->pae) {
                g_string_append(s, "  <features>\n");
                if (def->acpi)
                        g_string_append(s, "    <acpi/>\n");
                if (def->apic)
                        g_string_append(s, "    <apic/>\n");
                if (def->pae)
                        g_string_append(s, "    <pae/>\n");
                g_string_append(s, "  </features>\n");
        }
        if (def->cpu_mode == DOMAIN_CPU_CUSTOM) {
                g_string_append(s, "  <cpu mode='custom' match='exact'>\n");
                element_text(s, 4, "model", def->cpu_model);
                g_string_append(s, "  </cpu>\n");
        } else if (def->cpu_mode != DOMAIN_CPU_DEFAULT)
                g_string_append_printf(s, "  <cpu mode='%s'/>\n", domain_cpu_mode_to_string(def->cpu_mode));

        g_string_append_printf(s, "  <clock offset='%s'/>\n", domain_clock_offset_to_string(def->clock));
        g_string_append_printf(s, "  <on_poweroff>%s</on_poweroff>\n", domain_lifecycle_action_to_string(def->on_poweroff));
        g_string_append_printf(s, "  <on_reboot>%s</on_reboot>\n", domain_lifecycle_action_to_string(def->on_reboot));
        g_string_append_printf(s, "  <on_crash>%s</on_crash>\n", domain_lifecycle_action_to_string(def->on_crash));
}

static void format_disk(GString *s, const DomainDiskDef *d) {
        g_string_append_printf(s, "    <disk type='file' device='%s'>\n", domain_disk_device_to_string(d->device));
        g_string_append_printf(s, "      <driver name='qemu' type='%s'", domain_disk_format_to_string(d->format));
        if (d->cache != DOMAIN_DISK_CACHE_DEFAULT)
                attr(s, "cache", domain_disk_cache_to_string(d->cache));
        g_string_append(s, "/>\n");
        if (d->source) {
                g_string_append(s, "      <source");
                attr(s, "file", d->source);
                g_string_append(s, "/>\n");
        }
        g_string_append(s, "      <target");
        attr(s, "dev", d->target);
        g_string_append_printf(s, " bus='%s'/>\n", domain_disk_bus_to_string(d->bus));
        if (d->readonly)
                g_string_append(s, "      <readonly/>\n");
        if (d->shareable)
                g_string_append(s, "      <shareable/>\n");
        g_string_append(s, "    </disk>\n");
}

static void format_char(GString *s, const char *element, const DomainSerialDef *c, bool console) {
        g_string_append_printf(s, "    <%s type='file'>\n      <source", element);
        attr(s, "path", c->path);
        g_string_append(s, "/>\n");
        if (console)
                g_string_append(s, "      <target type='serial' port='0'/>\n");
        else
                g_string_append_printf(s, "      <target port='%u'/>\n", c->port);
        g_string_append_printf(s, "    </%s>\n", element);
}

static void format_devices(GString *s, const DomainDef *def) {
        g_string_append(s, "  <devices>\n");
        if (def->emulator)
                element_text(s, 4, "emulator", def->emulator);
        for (size_t i = 0; i < def->n_disks; i++)
                format_disk(s, &def->disks[i]);
        for (size_t i = 0; i < def->n_nets; i++) {
                char mac[18];

                domain_mac_format(def->nets[i].mac, mac);
                g_string_append_printf(s, "    <interface type='user'>\n"
                                          "      <mac address='%s'/>\n"
                                          "      <model type='%s'/>\n"
                                          "    </interface>\n",
                                       mac, domain_net_model_to_string(def->nets[i].model));
        }
        for (size_t i = 0; i < def->n_serials; i++)
                format_char(s, "serial", &def->serials[i], false);
        /* As libvirt does: the console is serial port 0 seen again. */
        if (def->n_serials > 0 && def->serials[0].port == 0)
                format_char(s, "console", &def->serials[0], true);
        if (def->vnc) {
                g_string_append(s, "    <graphics type='vnc'>\n      <listen type='socket'");
                if (def->vnc_socket)
                        attr(s, "socket", def->vnc_socket);
                g_string_append(s, "/>\n    </graphics>\n");
        }
        g_string_append(s, "  </devices>\n");
}

static void format_seclabels(GString *s, const DomainDef *def, DomainFormatFlags flags) {
        for (size_t i = 0; i < def->n_seclabels; i++) {
                const DomainSeclabelDef *sl = &def->seclabels[i];
                /* A dynamic label is picked at start on this host: not configuration, and not
                 * valid on another host. */
                bool label = sl->label &&
                        !(sl->type == DOMAIN_SECLABEL_DYNAMIC &&
                          (flags & (DOMAIN_FORMAT_INACTIVE | DOMAIN_FORMAT_MIGRATABLE)));

                g_string_append_printf(s, "  <seclabel type='%s'", domain_seclabel_type_to_string(sl->type));
                if (sl->type != DOMAIN_SECLABEL_NONE)
                        g_string_append_printf(s, " model='%s'", domain_seclabel_model_to_string(sl->model));
                if (!label) {
                        g_string_append(s, "/>\n");
                        continue;
                }
                g_string_append(s, ">\n");
                element_text(s, 4, "label", sl->label);
                g_string_append(s, "  </seclabel>\n");
        }
}

char *domain_def_format(const DomainDef *def, DomainFormatFlags flags) {
        GString *s;
        char uuid[37];

        if (!def)
                return NULL;
        s = g_string_sized_new(2048);
        g_string_append_printf(s, "<domain type='%s'", domain_virt_type_to_string(def->virt_type));
        if (def->id > 0 && !(flags & (DOMAIN_FORMAT_INACTIVE | DOMAIN_FORMAT_MIGRATABLE)))
                g_string_append_printf(s, " id='%d'", def->id);
        g_string_append(s, ">\n");
        element_text(s, 2, "name", def->name);
        domain_uuid_format(def->uuid, uuid);
        g_string_append_printf(s, "  <uuid>%s</uuid>\n", uuid);
        if (def->title)
                element_text(s, 2, "title", def->title);
        if (def->description)
                element_text(s, 2, "description", def->description);
        g_string_append_printf(s, "  <memory unit='KiB'>%" PRIu64 "</memory>\n", def->memory_kib);
        g_string_append_printf(s, "  <currentMemory unit='KiB'>%" PRIu64 "</currentMemory>\n", def->current_memory_kib);
        g_string_append_printf(s, "  <vcpu placement='static'>%u</vcpu>\n", def->vcpus);
        format_os(s, def);
        format_features_cpu_clock(s, def);
        format_devices(s, def);
        format_seclabels(s, def, flags);
        g_string_append(s, "</domain>\n");
        return g_string_free(s, false);
}
