/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

/* Shared by ferryctl's verbs. Every verb returns 0 or a negative errno after printing its
 * own message; main turns that into the exit status (0 / 1, 2 for bad usage). */

#define CTL_USAGE_ERROR (-1000)

int ctl_connect(sd_bus **ret);
/* The one place that turns a failed call into a message for a person; returns r (<0). */
int ctl_report_error(const char *what, const sd_bus_error *e, int r);

/* Resolves a name or UUID to a domain object path (prints "failed to get domain" itself). */
int ctl_find_domain(sd_bus *bus, const char *name_or_uuid, char **ret_path);

int ctl_domain_verb(const char *verb, int argc, char **argv, bool *ret_handled);
void ctl_domain_help(void);

int ctl_migrate(int argc, char **argv);
/* Migration.Recover on the domain's running outgoing migration (a paused post-copy); its path
 * in *ret_job (free()). Errors are reported. */
int ctl_job_recover(sd_bus *bus, const char *domain_path, char **ret_job);

/* dump --memory-only DOMAIN FILE */
int ctl_dump(int argc, char **argv);
void ctl_dump_help(void);

/* domjobinfo, domjobabort, migrate-setspeed, migrate-setmaxdowntime (argv[0] is the verb). */
int ctl_job(int argc, char **argv);
void ctl_job_help(void);
