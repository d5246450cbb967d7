/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ferryctl dump --memory-only DOMAIN FILE: the guest's memory as an ELF core, as virsh's. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "ferry-bus.h"
#include "macro.h"

/* A dump writes all of guest RAM: minutes for big guests on slow disks. */
#define DUMP_CALL_USEC (3600ULL * 1000000ULL)

int ctl_dump(int argc, char **argv) {
        enum { O_MEMORY_ONLY = 0x100, O_FORMAT };
        static const struct option options[] = {
                { "memory-only", no_argument, NULL, O_MEMORY_ONLY },
                { "format", required_argument, NULL, O_FORMAT },
                {}
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *domain, *file;
        bool memory_only = false;
        struct stat st;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case O_MEMORY_ONLY:
                        memory_only = true;
                        break;
                case O_FORMAT:
                        if (strcmp(optarg, "elf") != 0) {
                                fprintf(stderr, "error: only --format elf is supported\n");
                                return CTL_USAGE_ERROR;
                        }
                        break;
                default:
                        return CTL_USAGE_ERROR;
                }
        if (argc - optind != 2) {
                fprintf(stderr, "error: usage: ferryctl dump --memory-only DOMAIN FILE\n");
                return CTL_USAGE_ERROR;
        }
        /* virsh dump without it saves QEMU's whole device state, which ferry does not do. */
        if (!memory_only) {
                fprintf(stderr, "error: only memory dumps are supported: use --memory-only\n");
                return CTL_USAGE_ERROR;
        }
        domain = argv[optind];
        file = argv[optind + 1];

        r = ctl_connect(&bus);
        if (r < 0)
                return r;
        r = ctl_find_domain(bus, domain, &path);
        if (r < 0)
                return r;

        /* Opened here, with the caller's permissions; 0600: it holds whatever the guest does.
         * O_NONBLOCK only so that a FIFO without a reader fails rather than hangs here. */
        fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0600);
        if (fd < 0) {
                r = -errno;
                fprintf(stderr, "error: cannot open %s: %s\n", file, strerror(-r));
                return r;
        }
        /* ferryd takes regular files only; and only those may be removed after a failure. */
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                fprintf(stderr, "error: %s is not a regular file: memory dumps go to regular files\n", file);
                return -EINVAL;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
                r = -errno;
                fprintf(stderr, "error: cannot use %s: %s\n", file, strerror(-r));
                return r;
        }
        r = sd_bus_message_new_method_call(bus, &m, FERRY_BUS_NAME, path, FERRY_DOMAIN_INTERFACE, "DumpMemory");
        if (r >= 0)
                r = sd_bus_message_append(m, "ht", fd, (uint64_t) 0);
        if (r >= 0)
                r = sd_bus_call(bus, m, DUMP_CALL_USEC, &error, NULL);
        if (r < 0) {
                /* A half-written dump is worse than none. */
                (void) unlink(file);
                g_autofree char *what = g_strdup_printf("failed to dump domain '%s'", domain);
                return ctl_report_error(what, &error, r);
        }
        printf("\nDomain '%s' dumped to %s\n\n", domain, file);
        return 0;
}

void ctl_dump_help(void) {
        printf("  dump --memory-only [--format elf] DOMAIN FILE\n"
               "                                 write a paused guest's memory to FILE (ELF core)\n");
}
