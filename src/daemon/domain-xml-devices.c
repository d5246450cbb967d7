/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* <devices>: disks, interfaces, serial ports and the console, VNC, the emulator. */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "domain-xml-internal.h"

/* Ferry lays out PCI addresses and controllers itself, the same way on every host, so
 * <address> and <alias> are accepted and dropped (docs/domain-xml.md). */
static bool is_ignored_child(xmlNode *c) {
        return node_is(c, "address") || node_is(c, "alias");
}

static int parse_path_attr(DomainXmlParser *p, xmlNode *node, const char *attr, char **ret) {
        g_autofree char *v = domain_xml_attr(node, attr);

        if (!v)
                return domain_xml_fail(p, node, "attribute '%s' is missing", attr);
        if (!domain_path_is_valid(v))
                return domain_xml_fail(p, node, "%s '%s' is not an absolute path without '.' or '..' components",
                                       attr, v);
        g_free(*ret);
        *ret = TAKE_PTR(v);
        return 0;
}

static int parse_disk_driver(DomainXmlParser *p, xmlNode *c, DomainDiskDef *disk) {
        g_autofree char *name = NULL, *type = NULL, *cache = NULL;
        int r;

        if ((r = domain_xml_check_attrs(p, c, ATTRS("name", "type", "cache"))) < 0)
                return r;
        name = domain_xml_attr(c, "name");
        if (name && strcmp(name, "qemu") != 0)
                return domain_xml_fail(p, c, "driver name '%s' is not supported (only 'qemu')", name);
        type = domain_xml_attr(c, "type");
        if (type) {
                r = domain_xml_enum(p, c, "format", type, domain_disk_format_from_string, CHOICES("raw", "qcow2"));
                if (r < 0)
                        return r;
                disk->format = r;
        }
        cache = domain_xml_attr(c, "cache");
        if (cache) {
                r = domain_xml_enum(p, c, "cache", cache, domain_disk_cache_from_string,
                                    CHOICES("none", "writethrough", "writeback", "directsync", "unsafe", "default"));
                if (r < 0)
                        return r;
                disk->cache = r;
        }
        return 0;
}

static int parse_disk_target(DomainXmlParser *p, xmlNode *c, DomainDiskDef *disk) {
        g_autofree char *dev = NULL, *bus = NULL;
        DomainDiskBus want;
        int r, idx;

        if ((r = domain_xml_check_attrs(p, c, ATTRS("dev", "bus"))) < 0)
                return r;
        dev = domain_xml_attr(c, "dev");
        if (!dev)
                return domain_xml_fail(p, c, "attribute 'dev' is missing");
        if (!domain_disk_target_is_valid(dev))
                return domain_xml_fail(p, c, "dev '%s' is not supported (vd[a-z]+ for virtio, sd[a-z]+ for sata)", dev);
        want = dev[0] == 'v' ? DOMAIN_DISK_BUS_VIRTIO : DOMAIN_DISK_BUS_SATA;
        bus = domain_xml_attr(c, "bus");
        if (bus) {
                r = domain_xml_enum(p, c, "bus", bus, domain_disk_bus_from_string, CHOICES("virtio", "sata"));
                if (r < 0)
                        return r;
                /* The name the guest sees should say which bus it is on. */
                if ((DomainDiskBus) r != want)
                        return domain_xml_fail(p, c, "dev '%s' does not match bus '%s' (vdX: virtio, sdX: sata)", dev, bus);
        }
        idx = domain_disk_target_index(dev);
        if (want == DOMAIN_DISK_BUS_SATA && idx >= DOMAIN_SATA_PORTS)
                return domain_xml_fail(p, c, "dev '%s': only sda..sdf fit on the SATA controller", dev);
        if (idx >= DOMAIN_DISKS_MAX)
                return domain_xml_fail(p, c, "dev '%s': at most %d disks", dev, DOMAIN_DISKS_MAX);
        disk->bus = want;
        disk->target = TAKE_PTR(dev);
        return 0;
}

static int parse_disk(DomainXmlParser *p, xmlNode *node, DomainDiskDef *disk) {
        g_autofree char *type = NULL, *device = NULL;
        xmlNode *driver = NULL, *source = NULL, *target = NULL, *readonly = NULL, *shareable = NULL;
        int r;

        *disk = (DomainDiskDef) {};
        if ((r = domain_xml_check_attrs(p, node, ATTRS("type", "device"))) < 0 ||
            (r = domain_xml_check_children(p, node)) < 0)
                return r;
        type = domain_xml_attr(node, "type");
        if (!type || strcmp(type, "file") != 0)
                return domain_xml_fail(p, node, "disk type '%s' is not supported (only 'file')", strna(type));
        device = domain_xml_attr(node, "device");
        r = domain_xml_enum(p, node, "device", device ?: "disk", domain_disk_device_from_string, CHOICES("disk", "cdrom"));
        if (r < 0)
                return r;
        disk->device = r;

        FOREACH_ELEMENT(c, node) {
                if (node_is(c, "driver")) {
                        if ((r = domain_xml_once(p, c, &driver)) < 0 || (r = parse_disk_driver(p, c, disk)) < 0)
                                return r;
                } else if (node_is(c, "source")) {
                        if ((r = domain_xml_once(p, c, &source)) < 0 ||
                            (r = domain_xml_check_attrs(p, c, ATTRS("file"))) < 0)
                                return r;
                        /* <source/> without a file is an empty cdrom drive. */
                        if (xmlHasProp(c, (const xmlChar *) "file") && (r = parse_path_attr(p, c, "file", &disk->source)) < 0)
                                return r;
                } else if (node_is(c, "target")) {
                        if ((r = domain_xml_once(p, c, &target)) < 0 || (r = parse_disk_target(p, c, disk)) < 0)
                                return r;
                } else if (node_is(c, "readonly") || node_is(c, "shareable")) {
                        if ((r = domain_xml_once(p, c, node_is(c, "readonly") ? &readonly : &shareable)) < 0 ||
                            (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0)
                                return r;
                } else if (!is_ignored_child(c))
                        return domain_xml_fail(p, c, "element is not supported");
        }
        if (!target)
                return domain_xml_fail(p, node, "<target> is missing");
        if (!disk->source && disk->device == DOMAIN_DISK_DEVICE_DISK)
                return domain_xml_fail(p, node, "<source file=...> is missing");
        if (disk->device == DOMAIN_DISK_DEVICE_CDROM && disk->bus != DOMAIN_DISK_BUS_SATA)
                return domain_xml_fail(p, target, "a cdrom must be on bus 'sata'");
        disk->readonly = readonly || disk->device == DOMAIN_DISK_DEVICE_CDROM;
        disk->shareable = shareable;
        /* QEMU's ide-hd refuses read-only backends; a read-only SATA medium is a cdrom. */
        if (readonly && disk->bus == DOMAIN_DISK_BUS_SATA && disk->device == DOMAIN_DISK_DEVICE_DISK)
                return domain_xml_fail(p, readonly, "a read-only disk must be on bus 'virtio' (or be a cdrom)");
        /* Two guests writing one qcow2 image corrupt its metadata. */
        if (disk->shareable && disk->format != DOMAIN_DISK_FORMAT_RAW)
                return domain_xml_fail(p, shareable, "only raw disks can be shareable");
        return 0;
}

static int parse_interface(DomainXmlParser *p, xmlNode *node, DomainNetDef *net) {
        g_autofree char *type = NULL;
        xmlNode *mac = NULL, *model = NULL;
        int r;

        *net = (DomainNetDef) { .model = DOMAIN_NET_MODEL_VIRTIO };
        if ((r = domain_xml_check_attrs(p, node, ATTRS("type"))) < 0 ||
            (r = domain_xml_check_children(p, node)) < 0)
                return r;
        type = domain_xml_attr(node, "type");
        if (!type || strcmp(type, "user") != 0)
                return domain_xml_fail(p, node, "interface type '%s' is not supported (only 'user')", strna(type));

        FOREACH_ELEMENT(c, node) {
                if (node_is(c, "mac")) {
                        g_autofree char *address = NULL;

                        if ((r = domain_xml_once(p, c, &mac)) < 0 || (r = domain_xml_check_attrs(p, c, ATTRS("address"))) < 0)
                                return r;
                        address = domain_xml_attr(c, "address");
                        if (domain_mac_parse(address, net->mac) < 0)
                                return domain_xml_fail(p, c, "address '%s' is not a unicast MAC address", strna(address));
                } else if (node_is(c, "model")) {
                        g_autofree char *mtype = NULL;

                        if ((r = domain_xml_once(p, c, &model)) < 0 || (r = domain_xml_check_attrs(p, c, ATTRS("type"))) < 0)
                                return r;
                        mtype = domain_xml_attr(c, "type");
                        r = domain_xml_enum(p, c, "model", strna(mtype), domain_net_model_from_string,
                                            CHOICES("virtio", "e1000", "rtl8139"));
                        if (r < 0)
                                return r;
                        net->model = r;
                } else if (!is_ignored_child(c))
                        return domain_xml_fail(p, c, "element is not supported");
        }
        if (!mac)
                domain_mac_generate(net->mac);
        return 0;
}

/* <serial type='file'> and <console type='file'> share this shape: a <source path=>, a
 * <target port=> (console: also type='serial'). */
static int parse_char(DomainXmlParser *p, xmlNode *node, bool console, DomainSerialDef *ret, bool *ret_has_port) {
        g_autofree char *type = NULL;
        xmlNode *source = NULL, *target = NULL;
        int r;

        *ret = (DomainSerialDef) {};
        *ret_has_port = false;
        if ((r = domain_xml_check_attrs(p, node, ATTRS("type"))) < 0 || (r = domain_xml_check_children(p, node)) < 0)
                return r;
        type = domain_xml_attr(node, "type");
        if (!type || strcmp(type, "file") != 0)
                return domain_xml_fail(p, node, "type '%s' is not supported (only 'file': the guest's console is "
                                       "a log file, there are no ptys)", strna(type));
        FOREACH_ELEMENT(c, node) {
                if (node_is(c, "source")) {
                        if ((r = domain_xml_once(p, c, &source)) < 0 || (r = domain_xml_check_attrs(p, c, ATTRS("path"))) < 0 ||
                            (r = parse_path_attr(p, c, "path", &ret->path)) < 0)
                                goto fail;
                } else if (node_is(c, "target")) {
                        g_autofree char *port = NULL, *ttype = NULL;

                        if ((r = domain_xml_once(p, c, &target)) < 0 ||
                            (r = domain_xml_check_attrs(p, c, console ? ATTRS("type", "port") : ATTRS("port"))) < 0)
                                goto fail;
                        ttype = domain_xml_attr(c, "type");
                        if (ttype && strcmp(ttype, "serial") != 0) {
                                r = domain_xml_fail(p, c, "console target type '%s' is not supported (only 'serial')", ttype);
                                goto fail;
                        }
                        port = domain_xml_attr(c, "port");
                        if (port) {
                                uint64_t v;
                                if ((r = domain_xml_uint(p, c, "port", port, 0, console ? 0 : DOMAIN_SERIALS_MAX - 1, &v)) < 0)
                                        goto fail;
                                ret->port = (unsigned) v;
                                *ret_has_port = true;
                        }
                } else if (!is_ignored_child(c)) {
                        r = domain_xml_fail(p, c, "element is not supported");
                        goto fail;
                }
        }
        if (!ret->path) {
                r = domain_xml_fail(p, node, "<source path=...> is missing");
                goto fail;
        }
        return 0;
fail:
        ret->path = mfree(ret->path);
        return r;
}

static int add_serial(DomainXmlParser *p, xmlNode *node, DomainDef *def, bool console) {
        DomainSerialDef s;
        bool has_port;
        size_t i;
        int r;

        r = parse_char(p, node, console, &s, &has_port);
        if (r < 0)
                return r;
        if (console) {
                /* libvirt's <console> on x86 is another view of serial port 0, not a device. */
                if (def->n_serials > 0 && def->serials[0].port == 0) {
                        bool same = strcmp(def->serials[0].path, s.path) == 0;
                        g_free(s.path);
                        return same ? 0 : domain_xml_fail(p, node, "must have the same source path as serial port 0");
                }
                s.port = 0;
        } else if (!has_port) {
                /* Like libvirt: the lowest free port. */
                for (s.port = 0; s.port < DOMAIN_SERIALS_MAX; s.port++) {
                        for (i = 0; i < def->n_serials && def->serials[i].port != s.port; i++)
                                ;
                        if (i == def->n_serials)
                                break;
                }
        }
        for (i = 0; i < def->n_serials; i++)
                if (def->serials[i].port == s.port)
                        break;
        if (i < def->n_serials || s.port >= DOMAIN_SERIALS_MAX) {
                g_free(s.path);
                return domain_xml_fail(p, node, "serial port %u is already used or out of range 0..%d",
                                       s.port, DOMAIN_SERIALS_MAX - 1);
        }
        /* Keep them sorted by port: serial 0 first is what the formatter relies on. */
        def->serials = g_renew(DomainSerialDef, def->serials, def->n_serials + 1);
        for (i = def->n_serials; i > 0 && def->serials[i - 1].port > s.port; i--)
                def->serials[i] = def->serials[i - 1];
        def->serials[i] = s;
        def->n_serials++;
        return 0;
}

static int parse_graphics(DomainXmlParser *p, xmlNode *node, DomainDef *def) {
        g_autofree char *type = NULL;
        xmlNode *listen = NULL;
        int r;

        if ((r = domain_xml_check_attrs(p, node, ATTRS("type", "socket"))) < 0 || (r = domain_xml_check_children(p, node)) < 0)
                return r;
        type = domain_xml_attr(node, "type");
        if (!type || strcmp(type, "vnc") != 0)
                return domain_xml_fail(p, node, "graphics type '%s' is not supported (only 'vnc')", strna(type));
        /* The old spelling <graphics type='vnc' socket='/path'/> means the same. */
        if (xmlHasProp(node, (const xmlChar *) "socket") && (r = parse_path_attr(p, node, "socket", &def->vnc_socket)) < 0)
                return r;
        FOREACH_ELEMENT(c, node) {
                g_autofree char *ltype = NULL;

                if (!node_is(c, "listen"))
                        return domain_xml_fail(p, c, "element is not supported");
                if ((r = domain_xml_once(p, c, &listen)) < 0 || (r = domain_xml_check_attrs(p, c, ATTRS("type", "socket"))) < 0)
                        return r;
                ltype = domain_xml_attr(c, "type");
                if (!ltype || strcmp(ltype, "socket") != 0)
                        return domain_xml_fail(p, c, "listen type '%s' is not supported (only 'socket': no VNC over TCP)",
                                               strna(ltype));
                if (xmlHasProp(c, (const xmlChar *) "socket") && (r = parse_path_attr(p, c, "socket", &def->vnc_socket)) < 0)
                        return r;
        }
        if (def->vnc_socket && strlen(def->vnc_socket) > DOMAIN_SOCKET_PATH_MAX)
                return domain_xml_fail(p, listen ?: node, "socket path longer than %d bytes (a UNIX socket "
                                       "address holds no more)", DOMAIN_SOCKET_PATH_MAX);
        if (!listen && !def->vnc_socket)
                return domain_xml_fail(p, node, "VNC over TCP is not supported: add <listen type='socket'/>");
        def->vnc = true;
        return 0;
}

/* Devices that libvirt lists but that Ferry provides implicitly or not at all. */
static int parse_ignored(DomainXmlParser *p, xmlNode *c, bool *ret) {
        g_autofree char *type = domain_xml_attr(c, "type"), *bus = domain_xml_attr(c, "bus"),
                        *model = domain_xml_attr(c, "model");

        *ret = true;
        if (node_is(c, "controller") && type &&
            (strcmp(type, "pci") == 0 || strcmp(type, "ide") == 0 || strcmp(type, "sata") == 0 ||
             (strcmp(type, "usb") == 0 && (!model || strcmp(model, "none") == 0 || strcmp(model, "piix3-uhci") == 0))))
                return 0;
        if (node_is(c, "input") && bus && strcmp(bus, "ps2") == 0)
                return 0;
        if (node_is(c, "memballoon") && model && strcmp(model, "none") == 0)
                return 0;
        *ret = false;
        return 0;
}

int domain_xml_parse_devices(DomainXmlParser *p, xmlNode *devices, DomainDef *def) {
        xmlNode *emulator = NULL, *graphics = NULL;
        int r;

        if ((r = domain_xml_check_attrs(p, devices, NO_ATTRS)) < 0 || (r = domain_xml_check_children(p, devices)) < 0)
                return r;
        FOREACH_ELEMENT(c, devices) {
                bool ignored;

                if (node_is(c, "emulator")) {
                        g_autofree char *path = NULL;

                        if ((r = domain_xml_once(p, c, &emulator)) < 0 || (r = domain_xml_check_attrs(p, c, NO_ATTRS)) < 0 ||
                            (r = domain_xml_text_stripped(p, c, &path)) < 0)
                                return r;
                        if (!domain_emulator_is_valid(path))
                                return domain_xml_fail(p, c, "'%s' is not an absolute path to a qemu-system-* binary", path);
                        def->emulator = TAKE_PTR(path);
                } else if (node_is(c, "disk")) {
                        DomainDiskDef disk;

                        if (def->n_disks >= DOMAIN_DISKS_MAX)
                                return domain_xml_fail(p, c, "more than %d disks", DOMAIN_DISKS_MAX);
                        if ((r = parse_disk(p, c, &disk)) < 0) {
                                g_free(disk.source);
                                g_free(disk.target);
                                return r;
                        }
                        def->disks = g_renew(DomainDiskDef, def->disks, def->n_disks + 1);
                        def->disks[def->n_disks++] = disk;
                        for (size_t i = 0; i + 1 < def->n_disks; i++)
                                if (strcmp(def->disks[i].target, disk.target) == 0)
                                        return domain_xml_fail(p, c, "target dev '%s' is used twice", disk.target);
                } else if (node_is(c, "interface")) {
                        DomainNetDef net;

                        if (def->n_nets >= DOMAIN_NETS_MAX)
                                return domain_xml_fail(p, c, "more than %d interfaces", DOMAIN_NETS_MAX);
                        if ((r = parse_interface(p, c, &net)) < 0)
                                return r;
                        for (size_t i = 0; i < def->n_nets; i++)
                                if (memcmp(def->nets[i].mac, net.mac, 6) == 0)
                                        return domain_xml_fail(p, c, "MAC address used twice");
                        def->nets = g_renew(DomainNetDef, def->nets, def->n_nets + 1);
                        def->nets[def->n_nets++] = net;
                } else if (node_is(c, "serial") || node_is(c, "console")) {
                        if ((r = add_serial(p, c, def, node_is(c, "console"))) < 0)
                                return r;
                } else if (node_is(c, "graphics")) {
                        if ((r = domain_xml_once(p, c, &graphics)) < 0 || (r = parse_graphics(p, c, def)) < 0)
                                return r;
                } else if ((r = parse_ignored(p, c, &ignored)) < 0 || !ignored)
                        return domain_xml_fail(p, c, "device is not supported");
        }
        return 0;
}
