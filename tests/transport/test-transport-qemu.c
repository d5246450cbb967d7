/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Real QEMU through the tunnel: two QEMUs (TCG, no guest OS, 64 MiB of random data loaded into
 * the source's RAM so migration has non-zero pages to move) migrate through a pair of
 * ferry-transport helpers on this machine, the way ferryd will drive them: `migrate-incoming
 * unix:` on the destination, `migrate unix:<the source helper's socket>` on the source.
 * Checks QEMU's own verdict on both sides and the helpers' "done". Skipped without
 * qemu-system-x86_64. */

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "transport-harness.h"

#define GUEST_DATA (64 * MiB)

/* A minimal blocking QMP client: commands get their reply, events are kept to wait for. */
typedef struct Qmp {
        GPid pid;
        int fd;
        GString *in;
        GPtrArray *events;  /* JsonNode *, oldest first */
} Qmp;

static JsonNode *qmp_read(Qmp *q, int64_t deadline) {
        for (;;) {
                char *nl = memchr(q->in->str, '\n', q->in->len);
                char buf[65536];
                struct pollfd p = { .fd = q->fd, .events = POLLIN };
                ssize_t n;

                if (nl) {
                        g_autoptr(GError) error = NULL;
                        g_autofree char *line = g_strndup(q->in->str, (gsize) (nl - q->in->str));
                        JsonNode *node;

                        g_string_erase(q->in, 0, nl - q->in->str + 1);
                        node = json_from_string(line, &error);
                        g_assert_no_error(error);
                        return node;
                }
                g_assert_cmpint(poll(&p, 1, msec_left(deadline)), ==, 1);
                n = recv(q->fd, buf, sizeof(buf), 0);
                g_assert_cmpint(n, >, 0);
                g_string_append_len(q->in, buf, n);
        }
}

static JsonNode *qmp_query(Qmp *q, const char *json) {
        int64_t deadline = deadline_after(WAIT_MSEC);

        g_autofree char *line = g_strconcat(json, "\n", NULL);

        g_assert_cmpint(send(q->fd, line, strlen(line), MSG_NOSIGNAL), ==, (ssize_t) strlen(line));
        for (;;) {
                JsonNode *node = qmp_read(q, deadline);
                JsonObject *o = json_node_get_object(node);

                if (json_object_has_member(o, "event")) {
                        g_ptr_array_add(q->events, node);
                        continue;
                }
                if (json_object_has_member(o, "error"))
                        g_error("QMP %s: %s", json, json_to_string(node, FALSE));
                g_assert_true(json_object_has_member(o, "return"));
                return node;
        }
}

static void qmp_command(Qmp *q, const char *json) {
        json_node_unref(qmp_query(q, json));
}

/* Waits for a MIGRATION event whose status is one of the given (comma-separated). */
static char *qmp_wait_migration(Qmp *q, const char *statuses) {
        int64_t deadline = deadline_after(WAIT_MSEC);
        g_auto(GStrv) wanted = g_strsplit(statuses, ",", -1);

        for (;;) {
                JsonNode *node = q->events->len > 0 ? g_ptr_array_steal_index(q->events, 0) : qmp_read(q, deadline);
                JsonObject *o = json_node_get_object(node);

                if (json_object_has_member(o, "event") &&
                    g_str_equal(json_object_get_string_member(o, "event"), "MIGRATION")) {
                        const char *status = json_object_get_string_member(json_object_get_object_member(o, "data"), "status");
                        if (g_strv_contains((const char *const *) wanted, status)) {
                                char *s = g_strdup(status);
                                json_node_unref(node);
                                return s;
                        }
                }
                json_node_unref(node);
        }
}

static void child_setup(gpointer data) {
        /* A failed assertion aborts the test; its QEMUs must not outlive it. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* QMP on a socketpair, QEMU's end as its stdin: the connection exists before QEMU starts, as
 * with ferryd (connecting to a listening QMP socket while QEMU 7.2 starts can make it read the
 * connection from two threads, with bytes swapped: docs/domain-xml.md). */
static Qmp *qmp_start(const char *const *extra) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autoptr(GError) error = NULL;
        int64_t deadline = deadline_after(WAIT_MSEC);
        Qmp *q = g_new0(Qmp, 1);
        int sv[2];
        const char *base[] = { "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "136M", "-nodefaults",
                               "-display", "none", "-chardev", "socket,id=qmp,fd=0",
                               "-mon", "chardev=qmp,mode=control" };

        for (size_t i = 0; i < G_N_ELEMENTS(base); i++)
                g_ptr_array_add(argv, (char *) base[i]);
        for (size_t i = 0; extra[i]; i++)
                g_ptr_array_add(argv, (char *) extra[i]);
        g_ptr_array_add(argv, NULL);
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
        g_assert_true(g_spawn_async_with_fds(NULL, (char **) argv->pdata, NULL,
                                             G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                                             child_setup, NULL, &q->pid, sv[1], -1, -1, &error));
        g_assert_no_error(error);
        close(sv[1]);
        q->fd = sv[0];
        q->in = g_string_new(NULL);
        q->events = g_ptr_array_new_with_free_func((GDestroyNotify) json_node_unref);
        json_node_unref(qmp_read(q, deadline)); /* greeting */
        qmp_command(q, "{\"execute\": \"qmp_capabilities\"}");
        qmp_command(q, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
                       "[{\"capability\": \"events\", \"state\": true}]}}");
        return q;
}

static void qmp_quit(Qmp *q) {
        const char *quit = "{\"execute\": \"quit\"}\n";
        int64_t deadline = deadline_after(WAIT_MSEC);
        int status;

        /* QEMU may exit before its reply is read: wait for the end of the monitor instead. */
        g_assert_cmpint(send(q->fd, quit, strlen(quit), MSG_NOSIGNAL), ==, (ssize_t) strlen(quit));
        for (;;) {
                struct pollfd p = { .fd = q->fd, .events = POLLIN };
                char buf[4096];

                g_assert_cmpint(poll(&p, 1, msec_left(deadline)), ==, 1);
                if (recv(q->fd, buf, sizeof(buf), 0) <= 0)
                        break;
        }
        close(q->fd);
        g_assert_cmpint(waitpid(q->pid, &status, 0), ==, q->pid);
        g_string_free(q->in, TRUE);
        g_ptr_array_free(q->events, TRUE);
        g_free(q);
}

static char *qemu_status(Qmp *q) {
        g_autoptr(JsonNode) node = qmp_query(q, "{\"execute\": \"query-status\"}");
        JsonObject *o = json_node_get_object(node);

        return g_strdup(json_object_get_string_member(json_object_get_object_member(o, "return"), "status"));
}

static void run_qemu_test(bool tls, const char *capability, bool postcopy) {
        g_autofree char *data_path = g_strdup_printf("%s/guest-data.bin", tmpdir);
        g_autofree char *loader = g_strdup_printf("loader,file=%s,addr=0x1000000", data_path);
        g_autofree char *incoming = NULL, *migrate = NULL, *caps = NULL;
        const char *source_extra[] = { "-device", loader, NULL };
        const char *destination_extra[] = { "-incoming", "defer", NULL };
        PairOptions o = { .source_plaintext = !tls, .destination_plaintext = !tls, .qemu_incoming = true };
        g_autofree char *result = NULL, *status = NULL, *qemu = g_find_program_in_path("qemu-system-x86_64");
        g_autofree uint8_t *data = g_malloc(GUEST_DATA);
        Qmp *src, *dst;
        Pair *p;

        if (!qemu) {
                g_test_skip("qemu-system-x86_64 is not installed");
                return;
        }
        for (size_t i = 0; i < GUEST_DATA; i += 4)
                *(uint32_t *) (data + i) = g_random_int();
        g_assert_true(g_file_set_contents(data_path, (const char *) data, GUEST_DATA, NULL));

        dst = qmp_start(destination_extra);
        src = qmp_start(source_extra);
        if (capability) {
                caps = g_strdup_printf("{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
                                       "[{\"capability\": \"%s\", \"state\": true}]}}", capability);
                qmp_command(dst, caps);
                qmp_command(src, caps);
        }
        if (g_strcmp0(capability, "multifd") == 0) {
                qmp_command(dst, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"multifd-channels\": 3}}");
                qmp_command(src, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"multifd-channels\": 3}}");
        }
        /* Slow enough that post-copy starts with most pages still on the source. */
        qmp_command(src, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": 20971520}}");

        p = pair_start(&o);
        incoming = g_strdup_printf("{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"unix:%s\"}}", p->incoming_socket);
        qmp_command(dst, incoming);
        migrate = g_strdup_printf("{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"unix:%s\"}}", p->source_socket);
        qmp_command(src, migrate);
        if (postcopy) {
                g_free(qmp_wait_migration(src, "active"));
                qmp_command(src, "{\"execute\": \"migrate-start-postcopy\"}");
                g_free(qmp_wait_migration(src, "postcopy-active"));
        }
        result = qmp_wait_migration(src, "completed,failed,cancelled");
        g_assert_cmpstr(result, ==, "completed");
        g_free(qmp_wait_migration(dst, "completed,failed"));
        status = qemu_status(dst);
        g_assert_cmpstr(status, ==, "running");

        helper_wait(p->source, true);
        helper_wait(p->destination, true);
        assert_status(p->source, 0, "done: ", NULL);
        assert_status(p->destination, 0, "done: ", NULL);
        if (g_strcmp0(capability, "multifd") == 0) {
                /* main channel + 3 multifd channels */
                g_assert_true(g_str_has_prefix(p->source->status, "done: 4 streams"));
                g_assert_true(g_str_has_prefix(p->destination->status, "done: 4 streams"));
        }
        if (postcopy)
                /* the return path came back through stream 0 */
                g_assert_null(strstr(p->source->status, " 0 bytes received"));

        qmp_quit(src);
        qmp_quit(dst);
        pair_free(p);
        unlink(data_path);
}

static void test_plain(void) {
        run_qemu_test(false, NULL, false);
}

static void test_multifd_tls(void) {
        run_qemu_test(true, "multifd", false);
}

static void test_postcopy_tls(void) {
        run_qemu_test(true, "postcopy-ram", true);
}

int main(int argc, char *argv[]) {
        int r;

        g_test_init(&argc, &argv, NULL);
        if (!harness_setup())
                return 77;
        g_test_add_func("/transport/qemu/plaintext", test_plain);
        g_test_add_func("/transport/qemu/multifd-tls", test_multifd_tls);
        g_test_add_func("/transport/qemu/postcopy-tls", test_postcopy_tls);
        r = g_test_run();
        harness_cleanup();
        return r;
}
