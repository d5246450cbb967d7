/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The guest's RAM checked from the host, byte for byte: ferryd dumps it (Domain.DumpMemory,
 * `ferryctl dump --memory-only`) before and after a migration, and the dumps are compared and
 * checked with tests/guest/ferry-guest-check. And a destination that refuses by polkit: the
 * source's ferryd logs in to it as an unprivileged user. */

#include <elf.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdbool.h>
#include <stdio.h>

#include "lab-guest.h"

#define CTL LAB_CTL

static char *checker(void) {
        return g_build_filename(lab_build_dir(), "tests", "guest", "ferry-guest-check", NULL);
}

static char *domain_path(const char *host, const char *name) {
        const char *lookup[] = { "busctl", "call", "org.ferry.Ferry1", "/org/ferry/Ferry1", "org.ferry.Ferry1.Manager",
                                 "GetDomainByName", "s", name, NULL };
        return lab_busctl_path(host, lookup);
}

/* The file offset of guest-physical address paddr in an ELF core (from its PT_LOAD headers). */
static gsize elf_offset_of(const char *data, gsize size, guint64 paddr) {
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *) data;

        g_assert_cmpuint(size, >=, sizeof(*eh));
        g_assert_cmpint(memcmp(eh->e_ident, ELFMAG, SELFMAG), ==, 0);
        g_assert_cmpint(eh->e_ident[EI_CLASS], ==, ELFCLASS64);
        for (unsigned i = 0; i < eh->e_phnum; i++) {
                const Elf64_Phdr *ph = (const Elf64_Phdr *) (data + eh->e_phoff + (gsize) i * eh->e_phentsize);
                if (ph->p_type == PT_LOAD && paddr >= ph->p_paddr && paddr - ph->p_paddr < ph->p_filesz) {
                        g_assert_cmpuint(ph->p_offset + (paddr - ph->p_paddr), <, size);
                        return ph->p_offset + (paddr - ph->p_paddr);
                }
        }
        g_assert_not_reached();
}

static void test_dump_refusals(void) {
        g_auto(LabResult) r = {};

        lab_guest_create("a", "mem1", false);
        g_autofree char *path = domain_path("a", "mem1");
        lab_assert_introspection_matches("a", path, "org.ferry.Ferry1.Domain");

        /* virsh's full dump (device state too) is not ferry's. */
        CTL("a", &r, "dump", "mem1", "/run/ferry-test/x.elf");
        g_assert_cmpint(r.status, ==, 2);
        g_assert_nonnull(strstr(r.err, "--memory-only"));
        lab_result_clear(&r);

        /* A running guest would change under the dump; the half-made file does not stay. */
        CTL("a", &r, "dump", "--memory-only", "mem1", "/run/ferry-test/x.elf");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.InvalidState"));
        g_assert_nonnull(strstr(r.err, "suspend it first"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "test ! -e /run/ferry-test/x.elf", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* Only a regular file open for writing; ferryctl says so itself (and leaves the rest alone). */
        CTL("a", &r, "dump", "--memory-only", "mem1", "/dev/null");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "not a regular file"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "test -c /dev/null && mkfifo /run/ferry-test/fifo && "
                          "! timeout 10 ferryctl dump --memory-only mem1 /run/ferry-test/fifo && test -p /run/ferry-test/fifo", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_autofree char *client = g_build_filename(lab_build_dir(), "tests", "lab", "ferry-test-client", NULL);
        g_autofree char *chr = g_strdup_printf("%s dump-memory %s 0 0 </dev/null", client, path);
        lab_sh("a", NULL, chr, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.out, "ERROR=org.freedesktop.DBus.Error.InvalidArgs\n"));
        g_assert_nonnull(strstr(r.out, "regular file, not a character device"));
        lab_result_clear(&r);
        g_autofree char *ro = g_strdup_printf("%s dump-memory %s 3 0 3</etc/hostname", client, path);
        lab_sh("a", NULL, ro, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.out, "not open for writing"));
        lab_result_clear(&r);
        g_autofree char *flags = g_strdup_printf("%s dump-memory %s 3 4 3>/run/ferry-test/y", client, path);
        lab_sh("a", NULL, flags, &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.out, "Unknown flags 0x4"));
        lab_result_clear(&r);

        /* Reading a guest's memory is an action of its own, not granted to everyone. */
        const char *as_nobody[] = { "ferryctl", "--no-ask-password", "dump", "--memory-only", "mem1", "/tmp/n.elf", NULL };
        lab_exec("a", "nobody", as_nobody, &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.dump-memory"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "test ! -e /tmp/n.elf", &r);
        g_assert_cmpint(r.status, ==, 0);
}

/* Flips one byte of a page body of the fill in a copy of dump; returns the copy's path. */
static char *flipped_copy(const char *dump) {
        g_autofree char *data = NULL;
        char *copy = g_strconcat(dump, ".flipped", NULL);
        gsize size;

        g_assert_true(g_file_get_contents(dump, &data, &size, NULL));
        data[elf_offset_of(data, size, 0x200000 + 100 * 4096 + 2000)] ^= 0x01;
        g_assert_true(g_file_set_contents(copy, data, (gssize) size, NULL));
        return copy;
}

static void test_paused_migration_keeps_every_byte(void) {
        g_autofree char *check = checker();
        g_auto(LabResult) r = {};

        CTL("a", &r, "suspend", "mem1");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *before = lab_guest_dump("a", "mem1", "before.elf");
        unsigned gen = lab_dump_assert_checks(before);
        g_assert_cmpuint(gen, >, 0); /* it did dirty its pages before */
        lab_result_clear(&r);

        /* QEMU's write error comes back as it is (a full disk); the domain stays usable. */
        lab_sh("a", NULL, "mkdir -p /run/ferry-test/small && mount -t tmpfs -o size=1m tmpfs /run/ferry-test/small", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        CTL("a", &r, "dump", "--memory-only", "mem1", "/run/ferry-test/small/full.elf");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.Failed"));
        g_assert_nonnull(strstr(r.err, "No space left on device"));
        lab_result_clear(&r);
        lab_sh("a", NULL, "test ! -e /run/ferry-test/small/full.elf && umount /run/ferry-test/small", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* One operation at a time: no dump while a migration holds the domain. A slow one
         * (1 MiB/s), cancelled afterwards; then not a byte has changed. */
        g_autofree char *domain = domain_path("a", "mem1");
        const char *migrate[] = { "busctl", "call", "org.ferry.Ferry1", domain, "org.ferry.Ferry1.Domain", "Migrate",
                                  "sa{sv}t", LAB_TO_B, "1", "max_bandwidth", "t", "1048576", "0", NULL };
        g_autofree char *job = lab_busctl_path("a", migrate);
        g_autofree char *in_perform = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration Phase | grep -q perform", job);
        g_assert_true(lab_wait_for("a", in_perform, 30000));
        CTL("a", &r, "dump", "--memory-only", "mem1", "/run/ferry-test/busy.elf");
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.Error.InvalidState"));
        g_assert_nonnull(strstr(r.err, "another operation in progress"));
        lab_result_clear(&r);
        CTL("a", &r, "domjobabort", "mem1");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_autofree char *cancelled = g_strdup_printf(
                "busctl get-property org.ferry.Ferry1 %s org.ferry.Ferry1.Migration State | grep -q cancelled", job);
        g_assert_true(lab_wait_for("a", cancelled, 30000));
        g_assert_true(lab_wait_for("b", "! ferryctl dominfo mem1", 30000));
        g_autofree char *still = lab_domain_state("a", "mem1");
        g_assert_cmpstr(still, ==, "paused");
        g_autofree char *after_cancel = lab_guest_dump("a", "mem1", "after-cancel.elf");
        const char *same[] = { "cmp", before, after_cancel, NULL };
        lab_local(same, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* A paused guest moves paused (--suspend says it too): nothing runs in between. */
        CTL("a", &r, "migrate", "--p2p", "--suspend", "mem1", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_b = lab_domain_state("b", "mem1");
        g_assert_cmpstr(on_b, ==, "paused");
        g_autofree char *on_a = lab_domain_state("a", "mem1");
        g_assert_cmpstr(on_a, ==, "absent");
        lab_result_clear(&r);

        g_autofree char *after = lab_guest_dump("b", "mem1", "after.elf");
        g_assert_cmpuint(lab_dump_assert_checks(after), ==, gen);

        /* Byte for byte: the whole files (memory and the vCPU notes), then page by page. */
        const char *cmp[] = { "cmp", before, after, NULL };
        lab_local(cmp, &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        const char *compare[] = { check, "--compare", before, after, NULL };
        lab_local(compare, &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_true(g_str_has_prefix(r.out, "OK identical pages="));
        lab_result_clear(&r);

        /* And the comparison does see a single byte. */
        g_autofree char *flipped = flipped_copy(after);
        const char *cmp_flipped[] = { "cmp", before, flipped, NULL };
        lab_local(cmp_flipped, &r);
        g_assert_cmpint(r.status, ==, 1);
        lab_result_clear(&r);
        const char *compare_flipped[] = { check, "--compare", before, flipped, NULL };
        lab_local(compare_flipped, &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.out, "DIFF addr=0x00264000"));
        g_assert_nonnull(strstr(r.out, "FAIL differing-pages=1 "));
        lab_result_clear(&r);
        const char *check_flipped[] = { check, LAB_GUEST_CHECK_ARGS, flipped, NULL };
        lab_local(check_flipped, &r);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.out, "BAD addr=0x00264000"));
        lab_result_clear(&r);

        /* The guest goes on on b from where it stopped, every page right. */
        CTL("b", &r, "resume", "mem1");
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("b", "mem1", 3, true);
        lab_result_clear(&r);
        CTL("b", &r, "destroy", "mem1");
        g_assert_cmpint(r.status, ==, 0);
}

static void test_live_migration_then_check(void) {
        g_auto(LabResult) r = {};

        /* Dirtying its working set all along the migration. */
        lab_guest_create("a", "mem2", false);
        CTL("a", &r, "migrate", "--p2p", "--live", "mem2", LAB_TO_B);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *on_b = lab_domain_state("b", "mem2");
        g_assert_cmpstr(on_b, ==, "running");
        lab_result_clear(&r);

        CTL("b", &r, "suspend", "mem2");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        g_autofree char *dump = lab_guest_dump("b", "mem2", "live.elf");
        /* Every page consistent: no stale generation, at most one page caught mid-write. */
        g_assert_cmpuint(lab_dump_assert_checks(dump), >, 0);

        CTL("b", &r, "resume", "mem2");
        g_assert_cmpint(r.status, ==, 0);
        lab_guest_assert_intact("b", "mem2", 3, true);
        lab_result_clear(&r);
        CTL("b", &r, "destroy", "mem2");
        g_assert_cmpint(r.status, ==, 0);
}

#define MIGRATOR_RULE "50-ferry-migrator.rules"

/* The source's ferryd logs in to b over ssh as "migrator", an ordinary user of b: the lab's
 * sshd takes its key for every user (AuthorizedKeysFile /etc/ssh/ferry-lab/authorized_keys). */
static void test_destination_refuses_by_polkit(void) {
        g_auto(LabResult) r = {};
        const char *dest = "ferry+ssh://migrator@b/system";

        /* Home in b's private /var; '*': no password, but not a locked account (sshd). */
        lab_sh("b", NULL, "useradd --system --create-home --home-dir /var/lib/migrator --shell /bin/sh "
                          "--password '*' migrator", &r);
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);
        lab_sh("a", NULL, "ssh migrator@b id -un", &r);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_cmpstr(g_strstrip(r.out), ==, "migrator");
        lab_result_clear(&r);

        lab_guest_create("a", "mem3", false);
        CTL("a", &r, "migrate", "--p2p", "mem3", dest);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_nonnull(strstr(r.err, "org.ferry.Ferry1.migrate-incoming"));
        lab_result_clear(&r);
        /* Refused at Prepare: nothing was made on b, the guest never stopped on a. */
        g_autofree char *on_a = lab_domain_state("a", "mem3");
        g_assert_cmpstr(on_a, ==, "running");
        g_autofree char *on_b = lab_domain_state("b", "mem3");
        g_assert_cmpstr(on_b, ==, "absent");
        lab_sh("b", NULL, "systemctl is-active ferry-qemu-mem3.service", &r);
        g_assert_cmpstr(g_strstrip(r.out), !=, "active");
        lab_result_clear(&r);
        lab_guest_assert_intact("a", "mem3", 3, false);
        /* ... and its memory from the host: every page checks. */
        CTL("a", &r, "suspend", "mem3");
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *dump = lab_guest_dump("a", "mem3", "refused.elf");
        g_assert_cmpuint(lab_dump_assert_checks(dump), >, 0);
        lab_result_clear(&r);
        CTL("a", &r, "resume", "mem3");
        g_assert_cmpint(r.status, ==, 0);
        lab_result_clear(&r);

        /* The rule an administrator of b writes: migrate-incoming is all a migration needs there
         * (PrepareMigration and Migration.Finish; HostUUID is a property, not checked). */
        g_autofree char *rules = g_build_filename(lab_host_dir("b"), "polkit-rules", MIGRATOR_RULE, NULL);
        g_assert_true(g_file_set_contents(rules,
                "polkit.addRule(function(action, subject) {\n"
                "    if (action.id == \"org.ferry.Ferry1.migrate-incoming\" && subject.user == \"migrator\")\n"
                "        return polkit.Result.YES;\n"
                "});\n", -1, NULL));
        /* polkitd re-reads its rules on an inotify event of its own; wait until it has. */
        g_assert_true(lab_wait_for("b", "setpriv --reuid=migrator --regid=migrator --init-groups "
                                        "sh -c 'pkcheck --action-id org.ferry.Ferry1.migrate-incoming --process $$'",
                                   15000));

        CTL("a", &r, "migrate", "--p2p", "--verbose", "mem3", dest);
        g_test_message("%s", r.err);
        g_assert_cmpint(r.status, ==, 0);
        g_autofree char *now_b = lab_domain_state("b", "mem3");
        g_assert_cmpstr(now_b, ==, "running");
        g_autofree char *now_a = lab_domain_state("a", "mem3");
        g_assert_cmpstr(now_a, ==, "absent");
        lab_guest_assert_intact("b", "mem3", 3, true);
        g_unlink(rules);
}

int main(int argc, char *argv[]) {
        const char *hosts[] = { "a", "b", NULL };
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lab/memory/dump-refusals", test_dump_refusals);
        g_test_add_func("/lab/memory/paused-migration-keeps-every-byte", test_paused_migration_keeps_every_byte);
        g_test_add_func("/lab/memory/live-migration-then-check", test_live_migration_then_check);
        g_test_add_func("/lab/memory/destination-refuses-by-polkit", test_destination_refuses_by_polkit);

        return lab_run("memory", hosts);
}
