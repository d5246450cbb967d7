/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "domain.h"

/* Shared pieces of the bus edge: turning -errno into named errors, and replying to a method
 * call when an asynchronous domain operation finishes. */

#define FERRY_ERROR_NO_SUCH_DOMAIN "org.ferry.Ferry1.Error.NoSuchDomain"
#define FERRY_ERROR_DOMAIN_EXISTS "org.ferry.Ferry1.Error.DomainExists"
#define FERRY_ERROR_INVALID_DEFINITION "org.ferry.Ferry1.Error.InvalidDefinition"
#define FERRY_ERROR_INVALID_STATE "org.ferry.Ferry1.Error.InvalidState"
#define FERRY_ERROR_TIMEOUT "org.ferry.Ferry1.Error.Timeout"
#define FERRY_ERROR_FAILED "org.ferry.Ferry1.Error.Failed"

/* The error name for an errno from a domain operation. */
const char *bus_error_name_for_domain_errno(int error);

/* A DomainDone that replies to the sd_bus_message in userdata (a reference it consumes). */
void bus_reply_domain_done(void *userdata, int error, const char *message);

/* Same, but the success reply carries the domain's object path (CreateDomain). */
typedef struct ReplyWithPath {
        sd_bus_message *message;
        char *path;
} ReplyWithPath;
void bus_reply_domain_done_with_path(void *userdata, int error, const char *message);
