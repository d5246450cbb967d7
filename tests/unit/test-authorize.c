/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <glib.h>

#include "authorize.h"

static void test_allow(void) {
        AuthAnswer a = { .reply_valid = true, .is_authorized = true };
        g_assert_cmpint(auth_decide(&a, false), ==, AUTH_ALLOW);
        g_assert_cmpint(auth_decide(&a, true), ==, AUTH_ALLOW);
}

static void test_fail_closed(void) {
        /* polkit unreachable, timed out, or answered garbage: never allow. */
        AuthAnswer call_failed = { .call_error = -ETIMEDOUT, .reply_valid = true, .is_authorized = true };
        AuthAnswer garbage = { .reply_valid = false, .is_authorized = true };

        g_assert_cmpint(auth_decide(&call_failed, false), ==, AUTH_ERROR);
        g_assert_cmpint(auth_decide(&call_failed, true), ==, AUTH_ERROR);
        g_assert_cmpint(auth_decide(&garbage, false), ==, AUTH_ERROR);
        g_assert_cmpint(auth_decide(NULL, false), ==, AUTH_ERROR);
}

static void test_challenge(void) {
        AuthAnswer challenge = { .reply_valid = true, .is_challenge = true };
        AuthAnswer dismissed = { .reply_valid = true, .is_challenge = true, .dismissed = true };
        AuthAnswer no = { .reply_valid = true };

        /* Without the flag the caller learns it may retry interactively. */
        g_assert_cmpint(auth_decide(&challenge, false), ==, AUTH_INTERACTIVE_REQUIRED);
        /* With the flag polkit already tried an agent; a challenge now means no. */
        g_assert_cmpint(auth_decide(&challenge, true), ==, AUTH_DENY);
        /* The user closed the dialog: no, and no invitation to ask again. */
        g_assert_cmpint(auth_decide(&dismissed, false), ==, AUTH_DENY);
        g_assert_cmpint(auth_decide(&no, false), ==, AUTH_DENY);
        g_assert_cmpint(auth_decide(&no, true), ==, AUTH_DENY);
}

static void test_names(void) {
        g_assert_cmpstr(auth_decision_to_string(AUTH_ALLOW), ==, "allow");
        g_assert_cmpstr(auth_decision_to_string(AUTH_INTERACTIVE_REQUIRED), ==, "interactive-required");
        g_assert_null(auth_decision_to_string((AuthDecision) 42));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/authorize/allow", test_allow);
        g_test_add_func("/authorize/fail-closed", test_fail_closed);
        g_test_add_func("/authorize/challenge", test_challenge);
        g_test_add_func("/authorize/names", test_names);
        return g_test_run();
}
