/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* What polkit's answer means for a method call. Kept free of bus code so that the
 * fail-closed rules can be unit tested on their own. */

typedef enum AuthDecision {
        AUTH_ALLOW,
        AUTH_DENY,                     /* -> org.freedesktop.DBus.Error.AccessDenied */
        AUTH_INTERACTIVE_REQUIRED,     /* -> org.freedesktop.DBus.Error.InteractiveAuthorizationRequired */
        AUTH_ERROR,                    /* polkit could not decide: deny as well */
} AuthDecision;

typedef struct AuthAnswer {
        int call_error;        /* <0: the CheckAuthorization call failed (polkit gone, timeout, ...) */
        bool reply_valid;      /* the reply parsed as (bba{ss}) */
        bool is_authorized;
        bool is_challenge;
        bool dismissed;        /* details "polkit.dismissed" = "true": the user closed the agent */
} AuthAnswer;

/* interactive: the caller set ALLOW_INTERACTIVE_AUTHORIZATION on its message. */
AuthDecision auth_decide(const AuthAnswer *a, bool interactive);

const char *auth_decision_to_string(AuthDecision d);
