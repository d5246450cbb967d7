/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

/* Lab tests run on the machine and drive lab hosts through tests/lab/ferry-lab: each test
 * program boots its own lab (named after the program, so programs may run side by side),
 * with this build staged into it, and tears it down at exit. */

typedef struct LabResult {
        int status;        /* exit status of the command inside the host, or -1 */
        char *out;
        char *err;
} LabResult;

void lab_result_clear(LabResult *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(LabResult, lab_result_clear)

/* Returns FALSE (and says why on stderr) when the lab cannot run here, e.g. not root. */
gboolean lab_available(void);

/* Stages the build and boots the hosts (NULL-terminated names). Aborts the test on failure. */
void lab_up(const char *lab_name, const char *const *hosts);
void lab_down(void);

/* What every lab test's main does after adding its cases: boot the hosts (with
 * /run/ferry-test made in each, for guests' serial logs), run the cases, tear down. Without
 * root, skips them all (TAP "1..0 # SKIP"). */
int lab_run(const char *lab_name, const char *const *hosts);

/* Runs argv (NULL-terminated) inside host; user NULL means root. */
void lab_exec(const char *host, const char *user, const char *const *argv, LabResult *ret);
/* Shell convenience: sh -c script inside host. */
void lab_sh(const char *host, const char *user, const char *script, LabResult *ret);

/* The per-host directory on the machine (see ferry-lab path). */
char *lab_host_dir(const char *host);

/* The x509 files of hosts a and b (tests/lab/lab-pki.sh): /etc/ferry/pki (ferry-transport),
 * /etc/ferry/pki/qemu (QEMU's TLS), /etc/ferry/pki-wrong (the right CA, certificates of
 * another CA) and /etc/ferry/pki-other (that other CA and its certificates) inside each. */
void lab_pki_create(void);

/* Repeats script inside host until it exits 0, at most timeout_ms. Returns TRUE on success. */
gboolean lab_wait_for(const char *host, const char *script, guint timeout_ms);

/* Asserts that what ferryd publishes for interface at path (introspected inside host) equals
 * dbus-interfaces/<interface>.xml, method by method, argument by argument. */
void lab_assert_introspection_matches(const char *host, const char *path, const char *interface);

/* Paths inside the build, valid inside hosts too (ferry-lab binds the build tree). */
const char *lab_build_dir(void);
const char *lab_source_dir(void);
