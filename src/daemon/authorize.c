/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "authorize.h"
#include "macro.h"

AuthDecision auth_decide(const AuthAnswer *a, bool interactive) {
        /* Fail closed: anything but a well-formed "yes" is a no. */
        if (!a || a->call_error < 0)
                return AUTH_ERROR;
        if (!a->reply_valid)
                return AUTH_ERROR;
        if (a->is_authorized)
                return AUTH_ALLOW;
        /* polkit would have asked for a password, but the caller did not allow us to make it
         * wait for an agent: tell it so, so that it can retry with the flag set (as systemctl
         * does). When the flag was set, a challenge means no agent answered: plain denial. */
        if (a->is_challenge && !interactive && !a->dismissed)
                return AUTH_INTERACTIVE_REQUIRED;
        return AUTH_DENY;
}

const char *auth_decision_to_string(AuthDecision d) {
        static const char *const names[] = {
                [AUTH_ALLOW] = "allow",
                [AUTH_DENY] = "deny",
                [AUTH_INTERACTIVE_REQUIRED] = "interactive-required",
                [AUTH_ERROR] = "error",
        };
        if ((unsigned) d >= ELEMENTSOF(names))
                return NULL;
        return names[d];
}
