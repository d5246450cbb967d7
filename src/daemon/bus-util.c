/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-util.h"
#include "log.h"

const char *bus_error_name_for_domain_errno(int error) {
        switch (-abs(error)) {
        case -ENOENT:
                return FERRY_ERROR_NO_SUCH_DOMAIN;
        case -EEXIST:
                return FERRY_ERROR_DOMAIN_EXISTS;
        case -EBUSY:
        case -EALREADY:
        case -ENOTCONN:
        case -ECANCELED:
                return FERRY_ERROR_INVALID_STATE;
        case -ETIMEDOUT:
                return FERRY_ERROR_TIMEOUT;
        case -E2BIG:
                return SD_BUS_ERROR_LIMITS_EXCEEDED;
        case -EINVAL:
                return SD_BUS_ERROR_INVALID_ARGS;
        default:
                return FERRY_ERROR_FAILED;
        }
}

void bus_reply_domain_done(void *userdata, int error, const char *message) {
        sd_bus_message *m = userdata;

        if (error < 0)
                (void) sd_bus_reply_method_errorf(m, bus_error_name_for_domain_errno(error), "%s",
                                                  message ?: strerror(-error));
        else
                (void) sd_bus_reply_method_return(m, NULL);
        sd_bus_message_unref(m);
}

void bus_reply_domain_done_with_path(void *userdata, int error, const char *message) {
        ReplyWithPath *r = userdata;

        if (error < 0)
                (void) sd_bus_reply_method_errorf(r->message, bus_error_name_for_domain_errno(error), "%s",
                                                  message ?: strerror(-error));
        else
                (void) sd_bus_reply_method_return(r->message, "o", r->path);
        sd_bus_message_unref(r->message);
        free(r->path);
        free(r);
}
