/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <glib.h>
#include <string.h>
#include <time.h>

#include "authorize.h"
#include "log.h"
#include "polkit.h"

#define POLKIT_DONE_TTL_USEC (30ULL * 1000000ULL)

typedef struct PolkitQuery {
        PolkitRegistry *registry;
        sd_bus_message *request;   /* the method call being authorized (the table key) */
        char *action;
        sd_bus_slot *slot;         /* the pending CheckAuthorization call; NULL once answered */
        AuthDecision decision;
        char *polkit_error;        /* why polkit could not decide, for the caller's message */
        uint64_t done_usec;
} PolkitQuery;

struct PolkitRegistry {
        GHashTable *queries;       /* sd_bus_message* -> PolkitQuery* */
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

static void polkit_query_free(void *p) {
        PolkitQuery *q = p;
        if (!q)
                return;
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        free(q->action);
        free(q->polkit_error);
        free(q);
}

PolkitRegistry *polkit_registry_new(void) {
        PolkitRegistry *reg = calloc(1, sizeof(*reg));
        if (!reg)
                return NULL;
        reg->queries = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, polkit_query_free);
        return reg;
}

PolkitRegistry *polkit_registry_free(PolkitRegistry *reg) {
        if (!reg)
                return NULL;
        g_hash_table_destroy(reg->queries);
        return mfree(reg);
}

size_t polkit_registry_pending(PolkitRegistry *reg) {
        GHashTableIter i;
        PolkitQuery *q;
        size_t n = 0;

        if (!reg)
                return 0;
        g_hash_table_iter_init(&i, reg->queries);
        while (g_hash_table_iter_next(&i, NULL, (void **) &q))
                if (q->slot)
                        n++;
        return n;
}

/* Answers whose request was never dispatched again (its object vanished meanwhile) would
 * otherwise stay forever. */
static void prune_stale(PolkitRegistry *reg) {
        GHashTableIter i;
        PolkitQuery *q;
        uint64_t now = now_usec();

        g_hash_table_iter_init(&i, reg->queries);
        while (g_hash_table_iter_next(&i, NULL, (void **) &q))
                if (!q->slot && now - q->done_usec > POLKIT_DONE_TTL_USEC)
                        g_hash_table_iter_remove(&i);
}

static void parse_answer(sd_bus_message *reply, AuthAnswer *a) {
        const char *key, *value;
        int authorized, challenge, r;

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r <= 0)
                return;
        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0)
                return;
        r = sd_bus_message_enter_container(reply, 'a', "{ss}");
        if (r < 0)
                return;
        while ((r = sd_bus_message_read(reply, "{ss}", &key, &value)) > 0)
                if (strcmp(key, "polkit.dismissed") == 0 && strcmp(value, "true") == 0)
                        a->dismissed = true;
        if (r < 0)
                return;
        a->is_authorized = authorized;
        a->is_challenge = challenge;
        a->reply_valid = true;
}

static int on_check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        AuthAnswer a = {};
        int r;

        if (e) {
                a.call_error = -sd_bus_error_get_errno(e) ?: -EACCES;
                q->polkit_error = strdup(e->message ?: e->name);
                log_warning("polkit check of %s failed: %s", q->action, e->message ?: e->name);
        } else
                parse_answer(reply, &a);

        q->decision = auth_decide(&a, sd_bus_message_get_allow_interactive_authorization(q->request) > 0);
        q->slot = sd_bus_slot_unref(q->slot);
        q->done_usec = now_usec();

        log_debug("polkit: %s for %s: %s", q->action, strna(sd_bus_message_get_sender(q->request)),
                  auth_decision_to_string(q->decision));

        /* Run the handler again; this time polkit_verify() finds the answer. */
        r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r < 0) {
                log_error_errno(r, "Failed to requeue method call after polkit check: %m");
                g_hash_table_remove(q->registry->queries, q->request);
        }
        return 0;
}

static int append_details(sd_bus_message *m, const char *const *details) {
        int r = sd_bus_message_open_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        for (const char *const *d = details; d && d[0] && d[1]; d += 2) {
                r = sd_bus_message_append(m, "{ss}", d[0], d[1]);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

static int start_check(PolkitRegistry *reg, sd_bus_message *m, const char *action,
                       const char *const *details) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        sd_bus *bus = sd_bus_message_get_bus(m);
        const char *sender = sd_bus_message_get_sender(m);
        PolkitQuery *q;
        int interactive = sd_bus_message_get_allow_interactive_authorization(m) > 0;
        int r;

        if (!sender)
                return -EBADMSG;

        r = sd_bus_message_new_method_call(bus, &call, "org.freedesktop.PolicyKit1",
                                           "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority",
                                           "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, action);
        if (r < 0)
                return r;
        r = append_details(call, details);
        if (r < 0)
                return r;
        /* flags: 1 = AllowUserInteraction; cancellation id: none */
        r = sd_bus_message_append(call, "us", (uint32_t) (interactive ? 1 : 0), "");
        if (r < 0)
                return r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        *q = (PolkitQuery) {
                .registry = reg,
                .request = sd_bus_message_ref(m),
                .action = strdup(action),
        };
        if (!q->action) {
                polkit_query_free(q);
                return -ENOMEM;
        }
        /* An administrator typing a password may take a while; without interaction polkit
         * answers at once, so the default timeout is plenty. */
        r = sd_bus_call_async(bus, &q->slot, call, on_check_reply, q,
                              interactive ? 300ULL * 1000000ULL : 0);
        if (r < 0) {
                polkit_query_free(q);
                return r;
        }
        g_hash_table_replace(reg->queries, m, q);
        return 0;
}

int polkit_verify(PolkitRegistry *reg, sd_bus_message *m, const char *action,
                  const char *const *details, sd_bus_error *error) {
        PolkitQuery *q;
        AuthDecision d;
        int r;

        q = g_hash_table_lookup(reg->queries, m);
        if (q && q->slot)
                return 0; /* still waiting; should not happen, but never reply twice */
        if (q) {
                /* Second dispatch: the answer is here. One action per method call. */
                d = strcmp(q->action, action) == 0 ? q->decision : AUTH_ERROR;
                g_autofree char *why = g_strdup(q->polkit_error);
                g_hash_table_remove(reg->queries, m);

                switch (d) {
                case AUTH_ALLOW:
                        return 1;
                case AUTH_INTERACTIVE_REQUIRED:
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                                 "Interactive authentication required for polkit action %s.", action);
                case AUTH_DENY:
                        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                                 "Access denied: polkit action %s is not granted to the caller.", action);
                default:
                        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                                 "Access denied: polkit could not check action %s (%s).",
                                                 action, why ?: "no valid answer");
                }
        }

        prune_stale(reg);
        if (g_hash_table_size(reg->queries) >= POLKIT_PENDING_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many authorization checks in progress, try again later.");

        r = start_check(reg, m, action, details);
        if (r < 0) {
                log_error_errno(r, "Failed to ask polkit about %s: %m", action);
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Access denied: polkit could not check action %s.", action);
        }
        return 0;
}
