/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "domain-def.h"
#include "qemu-command.h"

static const QemuLaunchParams params = {
        .qmp_socket = "/run/ferry/domains/x/qmp.sock",
        .runtime_dir = "/run/ferry/domains/x",
};

static DomainDef *parse_ok(const char *xml) {
        DomainDef *def = NULL;
        g_autofree char *error = NULL;

        if (domain_def_parse(xml, strlen(xml), &def, &error) < 0)
                g_error("parse failure: %s\n%s", error, xml);
        return def;
}

static char **build(const char *xml, const QemuLaunchParams *p) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(xml);
        char **argv = NULL;

        g_assert_cmpint(qemu_build_argv(def, p, &argv), ==, 0);
        g_assert_nonnull(argv);
        return argv;
}

/* "-opt value" appears in argv. */
static bool has_pair(char **argv, const char *opt, const char *value) {
        for (char **a = argv; *a && a[1]; a++)
                if (strcmp(a[0], opt) == 0 && strcmp(a[1], value) == 0)
                        return true;
        return false;
}

static bool has_arg(char **argv, const char *arg) {
        return g_strv_contains((const char *const *) argv, arg);
}

#define assert_pair(argv, opt, value)                                                   \
        do {                                                                            \
                if (!has_pair(argv, opt, value)) {                                      \
                        g_autofree char *all = g_strjoinv(" ", argv);                   \
                        g_error("missing \"%s %s\" in: %s", opt, value, all);           \
                }                                                                       \
        } while (0)

static const char full_xml[] =
        "<domain type='kvm'><name>demo.1</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>"
        "<memory unit='KiB'>219100</memory><vcpu>3</vcpu>"
        "<os><type machine='q35'>hvm</type><boot dev='cdrom'/><boot dev='network'/><boot dev='hd'/></os>"
        "<features><acpi/><apic/></features><cpu mode='host-passthrough'/><clock offset='localtime'/>"
        "<on_reboot>destroy</on_reboot>"
        "<devices>"
        "<disk type='file'><driver type='qcow2' cache='none'/><source file='/img/a,b.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file'><driver cache='writethrough'/><source file='/img/c.img'/><target dev='sdb'/></disk>"
        "<disk type='file'><driver cache='unsafe'/><source file='/img/s.img'/><target dev='vdc'/><shareable/></disk>"
        "<disk type='file' device='cdrom'><target dev='sda'/></disk>"
        "<interface type='user'><mac address='52:54:00:00:00:01'/><model type='e1000'/></interface>"
        "<serial type='file'><source path='/log/demo,1.log'/></serial>"
        "<graphics type='vnc'><listen type='socket'/></graphics>"
        "</devices></domain>";

static void test_argv(void) {
        QemuLaunchParams p = params;
        g_auto(GStrv) argv = NULL;

        p.incoming_defer = p.start_paused = p.qmp_on_stdin = true;
        argv = build(full_xml, &p);
        g_assert_cmpstr(argv[0], ==, DOMAIN_EMULATOR_DEFAULT);
        /* ferryd's own monitor: the connected socket on stdin, beside the listening one */
        assert_pair(argv, "-chardev", "socket,id=ferry-qmp-stdin,fd=0");
        assert_pair(argv, "-mon", "chardev=ferry-qmp-stdin,mode=control");
        assert_pair(argv, "-name", "guest=demo.1,debug-threads=on");
        assert_pair(argv, "-uuid", "c7a5fdbd-edaf-9455-926a-d65c16db1809");
        assert_pair(argv, "-machine", "q35,usb=off,dump-guest-core=off,acpi=on");
        assert_pair(argv, "-accel", "tcg");
        assert_pair(argv, "-cpu", "max");
        assert_pair(argv, "-m", "219100K");       /* not whole MiB: exactly, in KiB */
        assert_pair(argv, "-smp", "3");
        assert_pair(argv, "-qmp", "unix:/run/ferry/domains/x/qmp.sock,server=on,wait=off");
        assert_pair(argv, "-vnc", "unix:/run/ferry/domains/x/vnc.sock");
        assert_pair(argv, "-action", "reboot=shutdown");
        assert_pair(argv, "-rtc", "base=localtime");
        assert_pair(argv, "-boot", "strict=on");
        assert_pair(argv, "-incoming", "defer");
        assert_pair(argv, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        g_assert_true(has_arg(argv, "-no-shutdown"));
        g_assert_true(has_arg(argv, "-nodefaults"));
        g_assert_true(has_arg(argv, "-no-user-config"));
        g_assert_true(has_arg(argv, "-S"));
        g_assert_false(has_arg(argv, "-display"));
        /* Commas in paths are doubled, so they cannot start a new option. */
        assert_pair(argv, "-blockdev", "driver=file,filename=/img/a,,b.qcow2,node-name=file-vda,read-only=off,"
                    "cache.direct=on,cache.no-flush=off");
        assert_pair(argv, "-blockdev", "driver=qcow2,file=file-vda,node-name=fmt-vda,read-only=off,"
                    "cache.direct=on,cache.no-flush=off");
        assert_pair(argv, "-device", "virtio-blk-pci,drive=fmt-vda,id=vda,write-cache=on,bootindex=3");
        assert_pair(argv, "-device", "ich9-ahci,id=sata0");
        assert_pair(argv, "-device", "ide-hd,bus=sata0.1,drive=fmt-sdb,id=sdb,write-cache=off");
        assert_pair(argv, "-device", "virtio-blk-pci,drive=fmt-vdc,id=vdc,write-cache=on,share-rw=on");
        assert_pair(argv, "-blockdev", "driver=file,filename=/img/s.img,node-name=file-vdc,read-only=off,"
                    "cache.direct=off,cache.no-flush=on");
        assert_pair(argv, "-device", "ide-cd,bus=sata0.0,id=sda,bootindex=1");
        assert_pair(argv, "-netdev", "user,id=hostnet0");
        assert_pair(argv, "-device", "e1000,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01,bootindex=2");
        assert_pair(argv, "-chardev", "file,id=charserial0,path=/log/demo,,1.log,append=on");
        assert_pair(argv, "-device", "isa-serial,chardev=charserial0,id=serial0,index=0");
}

static void test_accel_and_cpu(void) {
        static const char kvm_xml[] = "<domain type='kvm'><name>k</name><memory unit='G'>1</memory>"
                "<os><type>hvm</type></os><cpu mode='host-model'/></domain>";
        static const char qemu_xml[] = "<domain type='qemu'><name>q</name><memory unit='G'>1</memory>"
                "<os><type>hvm</type></os><cpu><model>Skylake-Client</model></cpu></domain>";
        QemuLaunchParams p = params;
        g_auto(GStrv) a = NULL, b = NULL, c = NULL;

        p.kvm = true;
        a = build(kvm_xml, &p);
        assert_pair(a, "-accel", "kvm");
        assert_pair(a, "-cpu", "host");
        assert_pair(a, "-machine", "pc,usb=off,dump-guest-core=off,acpi=off");
        assert_pair(a, "-display", "none");
        g_assert_false(has_arg(a, "-action"));     /* on_reboot restart: QEMU resets */
        g_assert_false(has_arg(a, "-S"));
        g_assert_false(has_arg(a, "-incoming"));
        /* type='qemu' is TCG even where KVM works. */
        b = build(qemu_xml, &p);
        assert_pair(b, "-accel", "tcg");
        assert_pair(b, "-cpu", "Skylake-Client");
        p.kvm = false;
        c = build(kvm_xml, &p);
        assert_pair(c, "-accel", "tcg");
        assert_pair(c, "-cpu", "max");
}

static void test_refuses_unsafe(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(full_xml);
        g_autofree char *long_path = g_strdup_printf("/%0200d", 0);
        QemuLaunchParams p = params;
        char **argv = NULL;

        /* A definition changed by hand after parsing is checked again. */
        g_free(def->name);
        def->name = g_strdup("x,chardev=evil");
        g_assert_cmpint(qemu_build_argv(def, &p, &argv), ==, -EINVAL);
        g_free(def->name);
        def->name = g_strdup("ok");
        g_free(def->disks[0].source);
        def->disks[0].source = g_strdup("../../etc/shadow");
        g_assert_cmpint(qemu_build_argv(def, &p, &argv), ==, -EINVAL);
        g_free(def->disks[0].source);
        def->disks[0].source = g_strdup("/img/a");
        g_assert_cmpint(qemu_build_argv(def, &p, &argv), ==, 0);
        g_strfreev(argv);

        p.qmp_socket = "qmp.sock";
        g_assert_cmpint(qemu_build_argv(def, &p, &argv), ==, -EINVAL);
        p.qmp_socket = long_path;
        g_assert_cmpint(qemu_build_argv(def, &p, &argv), ==, -ENAMETOOLONG);
        p = params;
        p.runtime_dir = long_path;  /* the automatic VNC socket would not fit */
        g_assert_cmpint(qemu_build_argv(def, &p, &argv), ==, -ENAMETOOLONG);
}

static void test_escape(void) {
        g_autofree char *a = qemu_option_escape("a,b,,c");
        g_autofree char *b = qemu_option_escape("");

        g_assert_cmpstr(a, ==, "a,,b,,,,c");
        g_assert_cmpstr(b, ==, "");
}

/* Definitions run by the real QEMU; @DIR@ is a fresh directory holding their files. */
static const char *const runnable[] = {
        /* everything at once, q35 */
        "<domain type='kvm'><name>run-all</name><memory unit='MiB'>128</memory><vcpu>2</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type><boot dev='cdrom'/><boot dev='hd'/><boot dev='network'/></os>"
        "<features><acpi/><apic/><pae/></features><cpu mode='host-passthrough'/><clock offset='localtime'/>"
        "<on_poweroff>preserve</on_poweroff><on_reboot>destroy</on_reboot><on_crash>restart</on_crash>"
        "<devices>"
        "<disk type='file'><driver name='qemu' type='qcow2' cache='none'/><source file='@DIR@/a,b.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file'><driver type='raw' cache='writethrough'/><source file='@DIR@/sata.img'/><target dev='sdb' bus='sata'/></disk>"
        "<disk type='file'><driver type='raw' cache='unsafe'/><source file='@DIR@/shared.img'/><target dev='vdb'/><shareable/></disk>"
        "<disk type='file'><driver type='raw' cache='directsync'/><source file='@DIR@/ro.img'/><target dev='vdc'/><readonly/></disk>"
        "<disk type='file' device='cdrom'><source file='@DIR@/cd.iso'/><target dev='sda'/></disk>"
        "<disk type='file' device='cdrom'><target dev='sdc'/></disk>"
        "<interface type='user'><model type='virtio'/></interface>"
        "<interface type='user'><model type='e1000'/></interface>"
        "<interface type='user'><model type='rtl8139'/></interface>"
        "<serial type='file'><source path='@DIR@/serial0.log'/></serial>"
        "<serial type='file'><source path='@DIR@/serial1.log'/><target port='3'/></serial>"
        "<console type='file'><source path='@DIR@/serial0.log'/><target type='serial' port='0'/></console>"
        "<graphics type='vnc'><listen type='socket' socket='@DIR@/vnc.sock'/></graphics>"
        "</devices>"
        "<seclabel type='dynamic' model='selinux'/></domain>",
        /* the smallest definition, pc */
        "<domain type='qemu'><name>run-min</name><memory unit='MiB'>16</memory><os><type>hvm</type></os></domain>",
        /* a versioned machine, a named CPU, the automatic VNC socket, writeback */
        "<domain type='qemu'><name>run-named</name><memory unit='KiB'>219100</memory><vcpu>4</vcpu>"
        "<os><type machine='pc-i440fx-7.2'>hvm</type></os><cpu mode='custom'><model>Skylake-Client</model></cpu>"
        "<devices><disk type='file'><driver type='raw' cache='writeback'/><source file='@DIR@/sata.img'/>"
        "<target dev='sdf'/></disk><graphics type='vnc'><listen type='socket'/></graphics></devices></domain>",
        "<domain type='qemu'><name>run-q35v</name><memory unit='MiB'>64</memory>"
        "<os><type machine='pc-q35-7.2'>hvm</type></os><cpu mode='host-model'/>"
        "<devices><disk type='file' device='cdrom'><source file='@DIR@/cd.iso'/><target dev='sdb'/></disk></devices></domain>",
};

static void make_file(const char *dir, const char *name, size_t size) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        g_autofree char *zeros = g_malloc0(size);

        g_assert_true(g_file_set_contents(path, zeros, size, NULL));
}

static void make_qcow2(const char *dir, const char *name) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", path, "16M", NULL };
        int status;

        g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));
}

/* Starts QEMU with the argv, paused: a bad option makes it exit at once with status 1.
 * Alive with its QMP socket bound means every option was accepted. */
static bool run_qemu(char **argv, const char *qmp, char **ret_log) {
        g_autofree char *log = NULL;
        GPid pid;
        int err_fd, status = 0;
        bool alive = true;

        g_assert_true(g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                                               NULL, NULL, &pid, NULL, NULL, &err_fd, NULL));
        for (int i = 0; i < 100; i++) {   /* up to 10 s: TCG start-up is slow under valgrind */
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        alive = false;
                        break;
                }
                if (i >= 10 && g_file_test(qmp, G_FILE_TEST_EXISTS))
                        break;
                g_usleep(G_USEC_PER_SEC / 10);
        }
        if (alive) {
                kill(pid, SIGKILL);
                g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        }
        {
                g_autoptr(GIOChannel) ch = g_io_channel_unix_new(err_fd);
                g_io_channel_set_close_on_unref(ch, true);
                g_io_channel_read_to_end(ch, &log, NULL, NULL);
        }
        g_spawn_close_pid(pid);
        *ret_log = TAKE_PTR(log);
        return alive && g_file_test(qmp, G_FILE_TEST_EXISTS);
}

static void test_real_qemu(void) {
        g_autofree char *dir = NULL, *qemu_img = g_find_program_in_path("qemu-img");

        if (!g_file_test(DOMAIN_EMULATOR_DEFAULT, G_FILE_TEST_IS_EXECUTABLE)) {
                g_test_skip(DOMAIN_EMULATOR_DEFAULT " is not installed");
                return;
        }
        if (!qemu_img) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        /* Short: the sockets go in here and sun_path holds 108 bytes. */
        dir = g_dir_make_tmp("fq-XXXXXX", NULL);
        g_assert_nonnull(dir);
        make_qcow2(dir, "a,b.qcow2");
        make_file(dir, "sata.img", 1 << 20);
        make_file(dir, "shared.img", 1 << 20);
        make_file(dir, "ro.img", 1 << 20);
        make_file(dir, "cd.iso", 1 << 20);

        for (size_t i = 0; i < G_N_ELEMENTS(runnable); i++) {
                g_auto(GStrv) parts = g_strsplit(runnable[i], "@DIR@", -1);
                g_autofree char *xml = g_strjoinv(dir, parts);
                g_autofree char *qmp = g_strdup_printf("%s/qmp%zu.sock", dir, i);
                QemuLaunchParams p = {
                        .qmp_socket = qmp,
                        .runtime_dir = dir,
                        .incoming_defer = i % 2 == 0,
                        .start_paused = true,
                        .kvm = false,             /* the tests run TCG */
                };
                g_auto(GStrv) argv = build(xml, &p);
                g_autofree char *all = g_strjoinv(" ", argv);

                g_autofree char *log = NULL;

                g_test_message("%s", all);
                if (!run_qemu(argv, qmp, &log))
                        g_error("QEMU did not start: %s\ncommand: %s", strempty(log), all);

                /* The check itself works: one unknown option and QEMU is gone. */
                if (i == 0) {
                        g_autofree char *log2 = NULL;
                        g_autofree char *qmp2 = g_strdup_printf("%s/qmp-bad.sock", dir);
                        g_autofree char *bad_qmp = g_strdup_printf("unix:%s,server=on,wait=off", qmp2);
                        const char *bad[] = { argv[0], "-nodefaults", "-qmp", bad_qmp, "-S",
                                              "-machine", "pc,no-such-property=on", NULL };

                        g_assert_false(run_qemu((char **) bad, qmp2, &log2));
                        g_assert_nonnull(strstr(strempty(log2), "no-such-property"));
                }
        }

        /* Clean up what QEMU and we created. */
        {
                g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
                const char *name;

                while ((name = g_dir_read_name(d))) {
                        g_autofree char *path = g_build_filename(dir, name, NULL);
                        g_assert_cmpint(g_unlink(path), ==, 0);
                }
        }
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/qemu-command/argv", test_argv);
        g_test_add_func("/qemu-command/accel-and-cpu", test_accel_and_cpu);
        g_test_add_func("/qemu-command/refuses-unsafe", test_refuses_unsafe);
        g_test_add_func("/qemu-command/escape", test_escape);
        g_test_add_func("/qemu-command/real-qemu", test_real_qemu);
        return g_test_run();
}
