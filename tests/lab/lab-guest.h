/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

#include "lab.h"

/* Lab helpers around ferryctl and the project's test guest (tests/guest/), shared by the
 * lab tests that move guests around. */

#define LAB_TO_A "ferry+unix:///system?socket=/run/ferry-lab-peers/a/system_bus_socket"
#define LAB_TO_B "ferry+unix:///system?socket=/run/ferry-lab-peers/b/system_bus_socket"

/* ferryctl ARGS... inside host (as root); the result in *r. */
void lab_ctl(const char *host, LabResult *r, const char *const *args);
/* Shell: the object path of the host's newest Migration object. */
#define LAB_NEWEST_MIGRATION                                                                           \
        "busctl call org.ferry.Ferry1 /org/ferry/Ferry1 org.freedesktop.DBus.ObjectManager GetManagedObjects | " \
        "grep -o '/org/ferry/Ferry1/migration/[0-9]*' | sort -t/ -k6 -n | tail -1"
#define LAB_CTL(host, r, ...) lab_ctl(host, r, (const char *const[]) { __VA_ARGS__, NULL })

/* Domain XML of the test guest: 128 MiB + 8 KiB of RAM, because QEMU 7.2 under TCG loses dirty
 * pages of RAM sizes that are multiples of 256 KiB (tests/guest/README.md; with KVM any size
 * works); 32 MiB of self-checking pages, 2 MiB rewritten at a modest rate; serial log in
 * /run/ferry-test/NAME.log inside the host. */
#define LAB_GUEST_CMDLINE "fill=32M dirty=2M seed=11 rate=4M"
char *lab_guest_xml(const char *name);

/* Defines and starts (persistent) or creates (transient) the guest on host, and waits until it
 * reports ALIVE. */
void lab_guest_create(const char *host, const char *name, bool persistent);

/* ferryctl dominfo's State (e.g. "running", "shut off"), or "absent". */
char *lab_domain_state(const char *host, const char *name);

/* The guest's own verdict from its serial log on host: at least min_alive ALIVE lines, no page
 * found wrong. migrated_here: the log began after a migration, so the counters must go on
 * rather than start at 0. */
void lab_guest_assert_intact(const char *host, const char *name, unsigned min_alive, bool migrated_here);

/* Runs a busctl call that returns one object path, and returns it. */
char *lab_busctl_path(const char *host, const char *const *argv);

/* ferry-guest-check's options for the geometry and seed of LAB_GUEST_CMDLINE. */
#define LAB_GUEST_CHECK_ARGS "--fill", "32M", "--dirty", "2M", "--seed", "11"

/* Runs argv (NULL-terminated) on the machine, outside the lab. */
void lab_local(const char *const *argv, LabResult *r);

/* `ferryctl dump --memory-only` of the (paused) guest on host into FILE in the host's state dir,
 * which the machine sees at the same path; returns that path. */
char *lab_guest_dump(const char *host, const char *name, const char *file);

/* ferry-guest-check of a dump against LAB_GUEST_CMDLINE: every page must check. Returns the
 * max-gen it reports (the generations the guest wrote). */
unsigned lab_dump_assert_checks(const char *dump);

/* The host's view of a migrated guest's RAM: suspends it, dumps it (FILE in the host's state
 * dir), checks every page of the dump and resumes it. */
void lab_guest_assert_dump_checks(const char *host, const char *name, const char *file);

/* Where the disk guests' images live inside a host: LAB_DISK_IMAGES/NAME.img, 4 MiB, raw. */
#define LAB_DISK_IMAGES "/var/lib/ferry/images"
#define LAB_DISK_SIZE "4M"

/* Like lab_guest_create (transient), with a fresh raw image as virtio disk vda that the guest
 * keeps rewriting; returns once the guest says it has written it. */
void lab_disk_guest_create(const char *host, const char *name);

/* A property of the Migration object at job on host, without busctl's type and quotes. */
char *lab_job_property(const char *host, const char *job, const char *property);
