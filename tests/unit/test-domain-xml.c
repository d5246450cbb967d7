/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "domain-def.h"

#define HEAD "<domain type='kvm'>\n  <name>t</name>\n  <memory>65536</memory>\n"
#define MINIMAL_HEAD HEAD "  <os><type>hvm</type></os>\n"
/* A document around a <devices> body, so that errors inside are on known lines. */
#define WITH_DEVICES(body) MINIMAL_HEAD "  <devices>\n" body "  </devices>\n</domain>\n"

static DomainDef *parse_ok(const char *xml) {
        DomainDef *def = NULL;
        g_autofree char *error = NULL;
        int r = domain_def_parse(xml, strlen(xml), &def, &error);

        if (r < 0)
                g_error("unexpected parse failure: %s\n%s", error, xml);
        g_assert_null(error);
        return def;
}

static char *parse_error(const char *xml, size_t len, int expect) {
        DomainDef *def = NULL;
        char *error = NULL;

        g_assert_cmpint(domain_def_parse(xml, len, &def, &error), ==, expect);
        g_assert_null(def);
        g_assert_nonnull(error);
        return error;
}

/* format(parse(x)) is stable: a second round trip gives the same text, and so does a copy. */
static void assert_round_trip(const char *xml) {
        _cleanup_(domain_def_freep) DomainDef *a = parse_ok(xml), *b = NULL, *c = NULL;
        g_autofree char *x1 = domain_def_format(a, 0), *x2 = NULL, *x3 = NULL;

        b = parse_ok(x1);
        x2 = domain_def_format(b, 0);
        g_assert_cmpstr(x1, ==, x2);
        c = domain_def_copy(b);
        x3 = domain_def_format(c, 0);
        g_assert_cmpstr(x1, ==, x3);
}

static void test_defaults(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(WITH_DEVICES("    <interface type='user'/>\n"));
        static const uint8_t zero[16] = {};

        g_assert_cmpstr(def->name, ==, "t");
        g_assert_true(memcmp(def->uuid, zero, 16) != 0);
        g_assert_cmpint(def->uuid[6] >> 4, ==, 4);              /* v4 */
        g_assert_cmpint(def->uuid[8] & 0xc0, ==, 0x80);
        g_assert_cmpuint(def->memory_kib, ==, 65536);            /* default unit KiB */
        g_assert_cmpuint(def->current_memory_kib, ==, 65536);
        g_assert_cmpuint(def->vcpus, ==, 1);
        g_assert_cmpstr(def->machine, ==, "pc");
        g_assert_null(def->emulator);
        g_assert_cmpint(def->on_poweroff, ==, DOMAIN_LIFECYCLE_DESTROY);
        g_assert_cmpint(def->on_reboot, ==, DOMAIN_LIFECYCLE_RESTART);
        g_assert_cmpint(def->id, ==, -1);
        g_assert_cmpuint(def->n_nets, ==, 1);
        g_assert_cmpint(def->nets[0].model, ==, DOMAIN_NET_MODEL_VIRTIO);
        g_assert_cmpmem(def->nets[0].mac, 3, "\x52\x54\x00", 3);
}

static void test_memory_units(void) {
        static const struct { const char *unit, *value; uint64_t kib; } cases[] = {
                { "b", "1048576", 1024 },
                { "bytes", "1048577", 1025 },           /* rounded up */
                { "KB", "2000", 1954 },                 /* 2,000,000 bytes, rounded up */
                { "k", "2048", 2048 },
                { "KiB", "2048", 2048 },
                { "MB", "2", 1954 },
                { "M", "3", 3072 },
                { "MiB", "3", 3072 },
                { "G", "1", 1048576 },
                { "GiB", "2", 2097152 },
                { "T", "16", UINT64_C(16) << 30 },      /* the maximum */
                { "TiB", "1", UINT64_C(1) << 30 },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *xml = g_strdup_printf("<domain type='qemu'><name>m</name>"
                                                       "<memory unit='%s'> %s </memory><os><type>hvm</type></os></domain>",
                                                       cases[i].unit, cases[i].value);
                _cleanup_(domain_def_freep) DomainDef *def = parse_ok(xml);
                g_test_message("%s %s", cases[i].value, cases[i].unit);
                g_assert_cmpuint(def->memory_kib, ==, cases[i].kib);
        }
}

static const char *const round_trip_docs[] = {
        MINIMAL_HEAD "</domain>",
        WITH_DEVICES("    <disk type='file'><source file='/a b/c,d.img'/><target dev='vdb'/></disk>\n"
                     "    <disk type='file' device='cdrom'><source/><target dev='sdc'/></disk>\n"
                     "    <console type='file'><source path='/log/x'/></console>\n"
                     "    <serial type='file'><source path='/log/y'/></serial>\n"
                     "    <graphics type='vnc' socket='/run/v.sock'/>\n"),
        "<domain type='qemu' id='7'><name>esc</name><title>a &amp; &lt;b&gt; \"q\" 'a'</title>"
        "<description>line1&#13;\nline2\t&amp;&#x10FFFF;</description>"
        "<memory unit='G'>1</memory><currentMemory unit='M'>512</currentMemory><vcpu>255</vcpu>"
        "<os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><kernel>/k</kernel>"
        "<cmdline>console=ttyS0 a=\"b c\" &amp;&amp;</cmdline><boot dev='network'/><boot dev='hd'/></os>"
        "<cpu mode='host-model'/><clock offset='localtime'/>"
        "<seclabel type='none'/></domain>",
};

static void test_round_trip(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(round_trip_docs); i++)
                assert_round_trip(round_trip_docs[i]);
}

static void test_escaping(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(round_trip_docs[2]);

        g_assert_cmpstr(def->title, ==, "a & <b> \"q\" 'a'");
        g_assert_cmpstr(def->description, ==, "line1\r\nline2\t&\xf4\x8f\xbf\xbf");
        g_assert_cmpstr(def->cmdline, ==, "console=ttyS0 a=\"b c\" &&");
        g_assert_cmpint(def->id, ==, 7);
        g_assert_cmpuint(def->current_memory_kib, ==, 524288);
}

static void test_format_flags(void) {
        static const char xml[] =
                "<domain type='kvm' id='3'><name>f</name><memory>65536</memory><os><type>hvm</type></os>"
                "<seclabel type='dynamic' model='selinux'><label>system_u:system_r:svirt_t:s0:c1,c2</label></seclabel>"
                "<seclabel type='static' model='dac'><label>+107:+107</label></seclabel></domain>";
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(xml);
        g_autofree char *live = domain_def_format(def, 0);
        g_autofree char *inactive = domain_def_format(def, DOMAIN_FORMAT_INACTIVE);
        g_autofree char *migratable = domain_def_format(def, DOMAIN_FORMAT_MIGRATABLE);

        g_assert_nonnull(strstr(live, "id='3'"));
        g_assert_nonnull(strstr(live, "svirt_t:s0:c1,c2"));
        for (const char *x = inactive; x; x = x == inactive ? migratable : NULL) {
                g_assert_null(strstr(x, "id='3'"));
                g_assert_null(strstr(x, "svirt_t"));
                /* a static label is configuration: kept */
                g_assert_nonnull(strstr(x, "+107:+107"));
                assert_round_trip(x);
        }
}

static void test_name_is_valid(void) {
        g_autofree char *long_name = g_strnfill(300, 'a');
        g_autofree char *max_name = g_strnfill(DOMAIN_NAME_MAX, 'a');

        g_assert_true(domain_name_is_valid("a"));
        g_assert_true(domain_name_is_valid("web-01.example_b+c"));
        g_assert_true(domain_name_is_valid(max_name));
        g_assert_false(domain_name_is_valid(NULL));
        g_assert_false(domain_name_is_valid(""));
        g_assert_false(domain_name_is_valid(long_name));
        g_assert_false(domain_name_is_valid("a/b"));
        g_assert_false(domain_name_is_valid(".."));
        g_assert_false(domain_name_is_valid(".hidden"));
        g_assert_false(domain_name_is_valid("-rf"));
        g_assert_false(domain_name_is_valid("a,b"));
        g_assert_false(domain_name_is_valid("a b"));
        g_assert_false(domain_name_is_valid("caf\xc3\xa9"));
}

static void test_uuid(void) {
        uint8_t u[16], v[16];
        char buf[37];

        g_assert_cmpint(domain_uuid_parse("C7A5FDBD-edaf-9455-926a-d65c16db1809", u), ==, 0);
        domain_uuid_format(u, buf);
        g_assert_cmpstr(buf, ==, "c7a5fdbd-edaf-9455-926a-d65c16db1809");
        g_assert_cmpint(domain_uuid_parse("c7a5fdbdedaf9455926ad65c16db1809", v), ==, -EINVAL);
        g_assert_cmpint(domain_uuid_parse("c7a5fdbd-edaf-9455-926a-d65c16db180", v), ==, -EINVAL);
        g_assert_cmpint(domain_uuid_parse("c7a5fdbd-edaf-9455-926a-d65c16db180g", v), ==, -EINVAL);
        g_assert_cmpint(domain_uuid_parse(NULL, v), ==, -EINVAL);
        domain_uuid_generate(v);
        g_assert_true(memcmp(u, v, 16) != 0);
}

typedef struct BadCase {
        const char *xml;
        const char *message;      /* must be contained in the error */
} BadCase;

static const BadCase bad_cases[] = {
        { "<domain type='kvm'><name>a/b</name></domain>", "line 1: <name>: 'a/b' is not a valid name" },
        { "<domain type='kvm'><name>..</name></domain>", "line 1: <name>: '..' is not a valid name" },
        { "<domain type='kvm'><name></name></domain>", "<name>: '' is not a valid name" },
        { "<domain type='kvm'>\n<name>t</name>\n<memory>0</memory></domain>", "line 3: <memory>: 0 KiB is out of range" },
        { "<domain type='kvm'><name>t</name><memory unit='PiB'>1</memory></domain>", "<memory>: 1099511627776 KiB is out of range" },
        { "<domain type='kvm'><name>t</name><memory unit='EiB'>20</memory></domain>", "<memory>: 20 EiB is too large" },
        { "<domain type='kvm'><name>t</name><memory unit='KiB'>1023</memory></domain>", "out of range" },
        { "<domain type='kvm'><name>t</name><memory unit='kb'>1</memory></domain>", "<memory>: unit 'kb' is not supported" },
        { "<domain type='kvm'><name>t</name><memory>-5</memory></domain>", "<memory>: '-5' is not a number" },
        { MINIMAL_HEAD "<currentMemory>65537</currentMemory></domain>", "line 5: <currentMemory>: 65537 KiB is more than <memory>" },
        { MINIMAL_HEAD "<vcpu>0</vcpu></domain>", "<vcpu>: vcpu count 0 is out of range 1..255" },
        { MINIMAL_HEAD "<vcpu>256</vcpu></domain>", "<vcpu>: vcpu count 256 is out of range" },
        { MINIMAL_HEAD "<uuid>nope</uuid></domain>", "line 5: <uuid>: 'nope' is not a uuid" },
        { MINIMAL_HEAD "<name>u</name></domain>", "line 5: <name>: may appear only once (first on line 2)" },
        { MINIMAL_HEAD "\n\n<bogus/></domain>", "line 7: <bogus>: element is not supported" },
        { HEAD "<os><type>hvm</type><loader>/x</loader></os></domain>", "<loader>: element is not supported" },
        { "<domain type='kvm' foo='1'/>", "line 1: <domain>: attribute 'foo' is not supported" },
        { "<domain type='xen'/>", "<domain>: domain type 'xen' is not supported (supported: kvm, qemu)" },
        { "<domain/>", "<domain>: attribute 'type' is missing" },
        { "<domain type='kvm'><memory>65536</memory></domain>", "<domain>: <name> is missing" },
        { "<domain type='kvm'><name>t</name><memory>65536</memory></domain>", "<domain>: <os> is missing" },
        { "<vm/>", "line 1: <vm>: the root element must be <domain>" },
        { "<domain type='kvm'>text</domain>", "<domain>: unexpected text" },
        { HEAD "<os><type machine='virt'>hvm</type></os></domain>", "machine 'virt' is not supported" },
        { HEAD "<os><type>hvm</type><initrd>/i</initrd></os></domain>", "<os>: <initrd> and <cmdline> need <kernel>" },
        { HEAD "<os><type>hvm</type><kernel>vmlinuz</kernel></os></domain>", "<kernel>: 'vmlinuz' is not an absolute path" },
        { HEAD "<os><type>hvm</type><boot dev='hd'/><boot dev='hd'/></os></domain>", "boot dev 'hd' is listed twice" },
        { MINIMAL_HEAD "<cpu mode='custom'/></domain>", "<cpu>: mode 'custom' needs a <model>" },
        { MINIMAL_HEAD "<cpu mode='custom'><model>a,b</model></cpu></domain>", "<model>: 'a,b' is not a valid CPU model name" },
        { MINIMAL_HEAD "<cpu mode='host-passthrough'><model>max</model></cpu></domain>", "a model needs mode='custom'" },
        { MINIMAL_HEAD "<cpu><topology sockets='1'/></cpu></domain>", "<topology>: element is not supported" },
        { MINIMAL_HEAD "<features><hyperv/></features></domain>", "<hyperv>: feature is not supported" },
        { MINIMAL_HEAD "<clock offset='variable'/></domain>", "<clock>: clock offset 'variable' is not supported" },
        { MINIMAL_HEAD "<on_crash>coredump-destroy</on_crash></domain>", "<on_crash>: action 'coredump-destroy' is not supported" },
        { MINIMAL_HEAD "<seclabel type='static' model='selinux'/></domain>", "<seclabel>: type 'static' needs a <label>" },
        { MINIMAL_HEAD "<seclabel type='none'/><seclabel type='dynamic' model='dac'/></domain>", "conflicts with an earlier <seclabel>" },
        /* found by the fuzzer: an error after the <label> leaked it */
        { MINIMAL_HEAD "<seclabel type='dynamic' model='dac'><label>+1:+1</label><imagelabel>a<x/>b</imagelabel></seclabel></domain>",
          "<imagelabel>: only text is allowed here" },
        { WITH_DEVICES("    <disk type='file'>\n      <source file='/a'/>\n      <target dev='vda'/>\n    </disk>\n"
                       "    <disk type='file'>\n      <source file='/b'/>\n      <target dev='vda'/>\n    </disk>\n"),
          "line 10: <disk>: target dev 'vda' is used twice" },
        { WITH_DEVICES("<disk type='file'><source file='images/a.img'/><target dev='vda'/></disk>"),
          "line 6: <source>: file 'images/a.img' is not an absolute path" },
        { WITH_DEVICES("<disk type='file'><source file='/var/lib/../../etc/shadow'/><target dev='vda'/></disk>"),
          "is not an absolute path without '.' or '..' components" },
        { WITH_DEVICES("<disk type='file'><source file='/a/./b'/><target dev='vda'/></disk>"), "not an absolute path" },
        { WITH_DEVICES("<disk type='file'><source file='/a'/><target dev='hda'/></disk>"), "<target>: dev 'hda' is not supported" },
        { WITH_DEVICES("<disk type='file'><source file='/a'/><target dev='vda' bus='sata'/></disk>"), "dev 'vda' does not match bus 'sata'" },
        { WITH_DEVICES("<disk type='file'><source file='/a'/><target dev='sdg'/></disk>"), "only sda..sdf fit" },
        { WITH_DEVICES("<disk type='file' device='cdrom'><target dev='vda'/></disk>"), "<target>: a cdrom must be on bus 'sata'" },
        { WITH_DEVICES("<disk type='file'><target dev='vda'/></disk>"), "<disk>: <source file=...> is missing" },
        { WITH_DEVICES("<disk type='file'><driver type='qcow2'/><source file='/a'/><target dev='vda'/><shareable/></disk>"),
          "<shareable>: only raw disks can be shareable" },
        { WITH_DEVICES("<disk type='file'><driver cache='bogus'/><source file='/a'/><target dev='vda'/></disk>"),
          "<driver>: cache 'bogus' is not supported" },
        { WITH_DEVICES("<disk type='file'><driver io='native'/><source file='/a'/><target dev='vda'/></disk>"),
          "<driver>: attribute 'io' is not supported" },
        { WITH_DEVICES("<disk type='file'><source file='/a'/><target dev='vda'/><boot order='1'/></disk>"),
          "<boot>: element is not supported" },
        { WITH_DEVICES("<interface type='user'><mac address='01:00:5e:00:00:01'/></interface>"), "is not a unicast MAC address" },
        { WITH_DEVICES("<interface type='user'><mac address='52:54:00:00:00:01'/></interface>"
                       "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>"), "MAC address used twice" },
        { WITH_DEVICES("<interface type='user'><model type='ne2k_pci'/></interface>"), "<model>: model 'ne2k_pci' is not supported" },
        { WITH_DEVICES("<serial type='file'><source path='/l'/><target port='4'/></serial>"), "port 4 is out of range 0..3" },
        { WITH_DEVICES("<serial type='file'><source path='/l'/></serial><console type='file'><source path='/m'/></console>"),
          "<console>: must have the same source path as serial port 0" },
        { WITH_DEVICES("<console type='pty'/>"), "<console>: type 'pty' is not supported" },
        { WITH_DEVICES("<graphics type='vnc'/>"), "<graphics>: VNC over TCP is not supported" },
        { WITH_DEVICES("<graphics type='vnc'><listen type='socket' socket='/run/"
                       "a123456789a123456789a123456789a123456789a123456789a123456789a123456789a123456789a123456789a123456789.sock'/></graphics>"),
          "<listen>: socket path longer than 107 bytes" },
        { WITH_DEVICES("<graphics type='spice'/>"), "graphics type 'spice' is not supported" },
        { WITH_DEVICES("<emulator>/usr/bin/sh</emulator>"), "<emulator>: '/usr/bin/sh' is not an absolute path to a qemu-system-* binary" },
        { WITH_DEVICES("<emulator>qemu-system-x86_64</emulator>"), "is not an absolute path to a qemu-system-* binary" },
        { WITH_DEVICES("<memballoon model='virtio'/>"), "<memballoon>: device is not supported" },
        { WITH_DEVICES("<xi:include xmlns:xi='http://www.w3.org/2001/XInclude' href='/etc/passwd'/>"),
          "<xi:include>: namespaced elements are not supported" },
};

static void test_invalid(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(bad_cases); i++) {
                g_autofree char *error = NULL;

                g_test_message("case %zu: %s", i, bad_cases[i].xml);
                error = parse_error(bad_cases[i].xml, strlen(bad_cases[i].xml), -EINVAL);
                g_test_message("error: %s", error);
                if (!strstr(error, bad_cases[i].message))
                        g_error("case %zu: expected \"%s\" in \"%s\"", i, bad_cases[i].message, error);
                g_assert_true(g_str_has_prefix(error, "line "));
        }
}

static void test_invalid_names(void) {
        g_autofree char *long_name = g_strnfill(300, 'a');
        g_autofree char *xml = g_strdup_printf("<domain type='kvm'><name>%s</name></domain>", long_name);
        g_autofree char *e1 = parse_error(xml, strlen(xml), -EINVAL);
        /* A NUL byte inside the name, passed with a length that includes it. */
        static const char nul[] = "<domain type='kvm'><name>a\0b</name></domain>";
        g_autofree char *e2 = parse_error(nul, sizeof(nul) - 1, -EINVAL);

        g_assert_nonnull(strstr(e1, "<name>: 'aaaa"));
        g_assert_nonnull(strstr(e1, "is not a valid name"));
        g_assert_true(g_str_has_prefix(e2, "line 1: malformed XML"));
}

static void test_malformed(void) {
        static const char *const docs[] = {
                "",
                "<domain",
                "<domain type='kvm'><name>t</domain>",
                "<domain type='kvm'></domain><domain/>",
                "<domain type='kvm'>&undefined;</domain>",
                "<domain type='kvm' type='qemu'/>",
                "\xff\xfe<\0d\0o\0m\0",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(docs); i++) {
                g_autofree char *e = parse_error(docs[i], i == 6 ? 10 : strlen(docs[i]), -EINVAL);
                g_test_message("%s", e);
                g_assert_nonnull(strstr(e, "malformed XML"));
        }
}

static void test_size_limit(void) {
        g_autofree char *big = g_malloc(DOMAIN_XML_SIZE_MAX + 2);
        g_autofree char *e = NULL;

        memset(big, ' ', DOMAIN_XML_SIZE_MAX + 1);
        memcpy(big, "<domain>", 8);
        big[DOMAIN_XML_SIZE_MAX + 1] = 0;
        e = parse_error(big, DOMAIN_XML_SIZE_MAX + 1, -E2BIG);
        g_assert_nonnull(strstr(e, "the limit is"));
}

static void test_xxe(void) {
        g_autofree char *dir = g_dir_make_tmp("ferry-xxe-XXXXXX", NULL);
        g_autofree char *secret_path = g_build_filename(dir, "secret", NULL);
        static const char secret[] = "TOP-SECRET-4f1c9a";
        const char *templates[] = {
                ("<?xml version='1.0'?>\n<!DOCTYPE domain [<!ENTITY xxe SYSTEM 'file://@PATH@'>]>\n"
                 "<domain type='kvm'><name>&xxe;</name><memory>65536</memory><os><type>hvm</type></os></domain>"),
                "<!DOCTYPE domain [<!ENTITY % p SYSTEM 'file://@PATH@'> %p;]><domain type='kvm'/>",
                "<!DOCTYPE domain SYSTEM 'file://@PATH@'><domain type='kvm'/>",
                "<?xml version='1.0' encoding='UTF-16'?><!DOCTYPE domain [<!ENTITY x SYSTEM '@PATH@'>]><domain>&x;</domain>",
                "<domain type='kvm'><name>&xxe;</name><!-- @PATH@ --></domain>",
        };

        g_assert_nonnull(dir);
        g_assert_true(g_file_set_contents(secret_path, secret, -1, NULL));
        for (size_t i = 0; i < G_N_ELEMENTS(templates); i++) {
                g_auto(GStrv) parts = g_strsplit(templates[i], "@PATH@", -1);
                g_autofree char *xml = g_strjoinv(secret_path, parts);
                g_autofree char *e = NULL;
                DomainDef *def = NULL;

                g_assert_cmpint(domain_def_parse(xml, strlen(xml), &def, &e), ==, -EINVAL);
                g_test_message("%s", e);
                g_assert_null(def);
                g_assert_null(strstr(e, secret));
                if (i < 4)
                        g_assert_nonnull(strstr(e, "<!DOCTYPE>: document type declarations are not allowed"));
        }
        g_assert_cmpint(g_unlink(secret_path), ==, 0);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_billion_laughs(void) {
        GString *s = g_string_new("<?xml version='1.0'?>\n<!DOCTYPE lolz [\n<!ENTITY lol0 'lol'>\n");
        g_autofree char *e = NULL;
        gint64 start;

        for (int i = 1; i < 10; i++)
                g_string_append_printf(s, "<!ENTITY lol%d '&lol%d;&lol%d;&lol%d;&lol%d;&lol%d;&lol%d;&lol%d;&lol%d;&lol%d;&lol%d;'>\n",
                                       i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
        g_string_append(s, "]>\n<domain type='kvm'><name>&lol9;</name><description>&lol9;</description></domain>\n");
        start = g_get_monotonic_time();
        e = parse_error(s->str, s->len, -EINVAL);
        g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);
        g_assert_nonnull(strstr(e, "line 2: <!DOCTYPE>"));
        g_string_free(s, true);
}

static void test_libvirt_corpus(void) {
        const char *dir = g_getenv("FERRY_TEST_DATA");
        g_autofree char *data = NULL, *exp_path = NULL, *text = NULL;
        g_auto(GStrv) lines = NULL;
        GRegex *prefix;
        unsigned ok = 0, failed = 0;

        if (!dir) {
                g_test_skip("FERRY_TEST_DATA is not set");
                return;
        }
        data = g_build_filename(dir, "libvirt-xml", NULL);
        exp_path = g_build_filename(data, "expectations.txt", NULL);
        g_assert_true(g_file_get_contents(exp_path, &text, NULL, NULL));
        prefix = g_regex_new("^line [0-9]+: <[A-Za-z_:]+>: ", 0, 0, NULL);
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) f = NULL;
                g_autofree char *path = NULL, *xml = NULL, *e = NULL;
                DomainDef *def = NULL;
                size_t len;
                int r;

                if (**l == '\0' || **l == '#')
                        continue;
                f = g_strsplit(*l, "\t", 3);
                g_assert_nonnull(f[1]);
                path = g_build_filename(data, f[0], NULL);
                g_assert_true(g_file_get_contents(path, &xml, &len, NULL));
                r = domain_def_parse(xml, len, &def, &e);
                g_test_message("%s: %s", f[0], r < 0 ? e : "ok");
                if (strcmp(f[1], "ok") == 0) {
                        if (r < 0)
                                g_error("%s: expected to parse: %s", f[0], e);
                        domain_def_free(def);
                        assert_round_trip(xml);
                        ok++;
                } else {
                        g_assert_cmpint(r, ==, -EINVAL);
                        g_assert_nonnull(f[2]);
                        if (!strstr(e, f[2]))
                                g_error("%s: expected \"%s\" in \"%s\"", f[0], f[2], e);
                        g_assert_true(g_regex_match(prefix, e, 0, NULL));
                        failed++;
                }
        }
        g_regex_unref(prefix);
        g_assert_cmpuint(ok, >=, 5);
        g_assert_cmpuint(failed, >=, 5);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/domain-xml/defaults", test_defaults);
        g_test_add_func("/domain-xml/memory-units", test_memory_units);
        g_test_add_func("/domain-xml/round-trip", test_round_trip);
        g_test_add_func("/domain-xml/escaping", test_escaping);
        g_test_add_func("/domain-xml/format-flags", test_format_flags);
        g_test_add_func("/domain-xml/name-is-valid", test_name_is_valid);
        g_test_add_func("/domain-xml/uuid", test_uuid);
        g_test_add_func("/domain-xml/invalid", test_invalid);
        g_test_add_func("/domain-xml/invalid-names", test_invalid_names);
        g_test_add_func("/domain-xml/malformed", test_malformed);
        g_test_add_func("/domain-xml/size-limit", test_size_limit);
        g_test_add_func("/domain-xml/xxe", test_xxe);
        g_test_add_func("/domain-xml/billion-laughs", test_billion_laughs);
        g_test_add_func("/domain-xml/libvirt-corpus", test_libvirt_corpus);
        return g_test_run();
}
