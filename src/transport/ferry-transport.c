/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferry-transport: the per-migration data relay that ferryd starts in a transient unit.
 * Not implemented yet (see the transport issue); it refuses to run rather than pretend. */

#include <stdio.h>
#include <string.h>

#include "build-config.h"

int main(int argc, char *argv[]) {
        if (argc > 1 && strcmp(argv[1], "--version") == 0) {
                printf("ferry-transport %s\n", FERRY_VERSION);
                return 0;
        }
        fprintf(stderr, "ferry-transport: no transport is implemented in this version.\n");
        return 1;
}
