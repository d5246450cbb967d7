/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the domain XML parser. Beyond "no crash, no leak" (ASan, UBSan), it
 * checks the promises the rest of ferryd relies on: an accepted document formats, the
 * formatted text parses again to the same text, every flag's output parses, and an accepted
 * definition always yields a QEMU command line. Built by tools/fuzz (meson -Dfuzzers=true). */

#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain-def.h"
#include "qemu-command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static DomainDef *reparse(const char *xml) {
        DomainDef *def = NULL;
        g_autofree char *error = NULL;

        if (domain_def_parse(xml, strlen(xml), &def, &error) < 0) {
                fprintf(stderr, "formatted XML does not parse: %s\n%s", error, xml);
                abort();
        }
        return def;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL, *again = NULL;
        g_autofree char *error = NULL, *x1 = NULL, *x2 = NULL;
        static const QemuLaunchParams params = {
                .qmp_socket = "/run/ferry/domains/fuzz/qmp.sock",
                .runtime_dir = "/run/ferry/domains/fuzz",
        };
        char **argv = NULL;

        if (domain_def_parse((const char *) data, size, &def, &error) < 0) {
                /* Every refusal explains itself. */
                if (!error || strncmp(error, "line ", 5) != 0)
                        abort();
                return 0;
        }

        x1 = domain_def_format(def, 0);
        again = reparse(x1);
        x2 = domain_def_format(again, 0);
        if (strcmp(x1, x2) != 0) {
                fprintf(stderr, "format is not stable:\n%s\n---\n%s", x1, x2);
                abort();
        }
        for (DomainFormatFlags f = DOMAIN_FORMAT_INACTIVE; f <= DOMAIN_FORMAT_MIGRATABLE; f <<= 1) {
                g_autofree char *x = domain_def_format(def, f);
                domain_def_free(reparse(x));
        }
        if (qemu_build_argv(def, &params, &argv) < 0) {
                fprintf(stderr, "no command line for:\n%s", x1);
                abort();
        }
        g_strfreev(argv);
        return 0;
}
