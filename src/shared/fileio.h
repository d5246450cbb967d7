/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Writes path so that readers see the old or the new content, never a mix, even across a
 * crash: a temporary file in the same directory, fsync, rename, fsync of the directory. */
int write_file_atomic(const char *path, const void *data, size_t length, mode_t mode);

/* Gives path to group (by name) with mode, for sharing a socket or directory between the
 * transport's pieces without any capability: the caller owns path and is a member of group.
 * -ESRCH if there is no such group. */
int share_with_group(const char *path, const char *group, mode_t mode);
