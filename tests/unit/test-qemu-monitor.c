/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The QMP client, in two halves:
 *
 * - /qemu-monitor/fake/...: the monitor against a FAKE QMP PEER, the other end of a socketpair
 *   written and read by the test itself. It exists only for byte-level faults that a real QEMU
 *   cannot be made to produce reliably (messages split at arbitrary bytes or packed several per
 *   read, replies out of order, oversize lines, garbage, a peer vanishing with commands pending),
 *   and for re-entrancy (callbacks freeing the monitor at each point). Its greeting is a copy of
 *   QEMU 7.2's.
 * - /qemu-monitor/qemu/...: the monitor against a real qemu-system-x86_64 (skipped when absent):
 *   status, cont/stop and their events, fd passing with getfd, pipelining, a migration from one
 *   QEMU to another over fds passed with getfd, quit.
 *
 * Each test runs its own sd-event loop until a condition holds, with an sd-event timer as a
 * guard: nothing sleeps. */

#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/sockios.h>

#include "qemu-monitor.h"

/* Catches a hang, measures nothing: generous for a loaded 2-core machine under ASan, short of
 * meson's 120 s timeout so that the test's log is printed. */
#define GUARD_USEC (90ULL * 1000000ULL)

#define QMP_GREETING \
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, " \
        "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n"

typedef struct Test Test;

typedef struct Endpoint {
        Test *t;
        const char *name;
        QemuMonitor *mon;
        bool ready;
        unsigned n_closed;
        int closed_error;
        /* re-entrancy: free the monitor from inside this callback */
        bool free_on_ready, free_on_closed;
        const char *free_on_event;
        /* a real QEMU */
        pid_t pid;
        sd_event_source *child;
        bool exited;
        int exit_status;
} Endpoint;

typedef struct Call {
        Endpoint *e;
        char *tag;
        bool done;
        int error;
        char *error_class, *error_desc;
        JsonNode *ret;
        bool free_monitor;
} Call;

struct Test {
        sd_event *event;
        sd_event_source *guard;
        bool timed_out;
        GPtrArray *log;
        GPtrArray *calls;
        Endpoint m, dst;

        /* the fake peer */
        int peer_fd;
        sd_event_source *peer_source;
        GString *peer_in;
        GString *peer_out;
        size_t peer_out_sent;           /* bytes of peer_out already sent (no erasing from the front) */
        bool peer_eof;
        int peer_fd_received;
        size_t peer_fd_offset;          /* where in peer_in the bytes that came with it start */
};

/* ---- plumbing ---- */

static int on_guard(sd_event_source *s, uint64_t usec, void *userdata) {
        Test *t = userdata;
        t->timed_out = true;
        return 0;
}

static void call_free(void *p) {
        Call *c = p;
        g_free(c->tag);
        g_free(c->error_class);
        g_free(c->error_desc);
        if (c->ret)
                json_node_unref(c->ret);
        g_free(c);
}

static Test *test_new(void) {
        Test *t = g_new0(Test, 1);
        g_assert_cmpint(sd_event_new(&t->event), >=, 0);
        g_assert_cmpint(sd_event_add_time_relative(t->event, &t->guard, CLOCK_MONOTONIC, GUARD_USEC, 0,
                                                   on_guard, t), >=, 0);
        t->log = g_ptr_array_new_with_free_func(g_free);
        t->calls = g_ptr_array_new_with_free_func(call_free);
        t->m = (Endpoint) { .t = t, .name = "m", .pid = -1 };
        t->dst = (Endpoint) { .t = t, .name = "dst", .pid = -1 };
        t->peer_fd = -EBADF;
        t->peer_fd_received = -EBADF;
        t->peer_in = g_string_new(NULL);
        t->peer_out = g_string_new(NULL);
        return t;
}

static void run_once(Test *t) {
        g_assert_cmpint(sd_event_run(t->event, UINT64_MAX), >=, 0);
        if (t->timed_out) {
                /* On stderr, which the test runner shows, not only in the TAP stream. */
                for (guint i = 0; i < t->log->len; i++)
                        g_printerr("%s log: %s\n", g_test_get_path(), (const char *) t->log->pdata[i]);
                g_error("%s: timed out waiting for a condition.", g_test_get_path());
        }
}

#define RUN_UNTIL(t, cond)                      \
        do {                                    \
                while (!(cond))                 \
                        run_once(t);            \
        } while (0)

/* Dispatches whatever is ready now, without waiting. */
static void run_idle(Test *t) {
        int r;
        while ((r = sd_event_run(t->event, 0)) > 0)
                ;
        g_assert_cmpint(r, >=, 0);
}

static void log_add(Endpoint *e, const char *format, ...) G_GNUC_PRINTF(2, 3);
static void log_add(Endpoint *e, const char *format, ...) {
        va_list ap;
        g_autofree char *s = NULL;
        va_start(ap, format);
        s = g_strdup_vprintf(format, ap);
        va_end(ap);
        g_ptr_array_add(e->t->log, e == &e->t->m ? g_steal_pointer(&s) : g_strdup_printf("%s: %s", e->name, s));
}

static bool log_has(Test *t, const char *entry) {
        for (guint i = 0; i < t->log->len; i++)
                if (g_str_equal(t->log->pdata[i], entry))
                        return true;
        return false;
}

/* The log so far must be exactly these entries; then it is cleared. */
static void assert_log(Test *t, ...) {
        va_list ap;
        guint i = 0;
        const char *want;

        va_start(ap, t);
        while ((want = va_arg(ap, const char *))) {
                if (i >= t->log->len)
                        g_error("log ends before \"%s\"", want);
                g_assert_cmpstr(t->log->pdata[i], ==, want);
                i++;
        }
        va_end(ap);
        if (i < t->log->len)
                g_error("unexpected log entry \"%s\"", (const char *) t->log->pdata[i]);
        g_ptr_array_set_size(t->log, 0);
}

static const char *errname(int error) {
        return error == 0 ? "ok" : strerrorname_np(-error);
}

/* ---- monitor callbacks ---- */

static void on_event(QemuMonitor *mon, const char *name, JsonObject *data, void *userdata) {
        Endpoint *e = userdata;
        g_assert_true(mon == e->mon);
        if (data) {
                g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), data);
                g_autofree char *s = json_to_string(n, FALSE);
                log_add(e, "event %s %s", name, s);
        } else
                log_add(e, "event %s", name);
        if (e->free_on_event && g_str_equal(e->free_on_event, name))
                e->mon = qemu_monitor_free(e->mon);
}

static void on_closed(QemuMonitor *mon, int error, void *userdata) {
        Endpoint *e = userdata;
        g_assert_true(mon == e->mon);
        g_assert_false(qemu_monitor_is_ready(mon));
        e->n_closed++;
        e->closed_error = error;
        log_add(e, "closed %s", errname(error));
        /* dead: nothing more can be sent */
        g_assert_cmpint(qemu_monitor_command(mon, "query-status", NULL, 0, NULL, NULL), ==, -ENOTCONN);
        if (e->free_on_closed)
                e->mon = qemu_monitor_free(e->mon);
}

static void on_ready(QemuMonitor *mon, void *userdata) {
        Endpoint *e = userdata;
        g_assert_true(mon == e->mon);
        g_assert_true(qemu_monitor_is_ready(mon));
        e->ready = true;
        log_add(e, "ready");
        if (e->free_on_ready)
                e->mon = qemu_monitor_free(e->mon);
}

static const QemuMonitorCallbacks callbacks = {
        .event = on_event,
        .closed = on_closed,
        .ready = on_ready,
};

static void on_reply(QemuMonitor *mon, int error, const char *error_class, const char *error_desc,
                     JsonNode *ret, void *userdata) {
        Call *c = userdata;
        g_assert_true(mon == c->e->mon);
        g_assert_false(c->done);
        c->done = true;
        c->error = error;
        c->error_class = g_strdup(error_class);
        c->error_desc = g_strdup(error_desc);
        c->ret = ret ? json_node_copy(ret) : NULL;
        g_assert_true((error == 0) == (ret != NULL));
        if (error == -EREMOTEIO)
                log_add(c->e, "reply %s %s %s", c->tag, errname(error), strna(error_class));
        else
                log_add(c->e, "reply %s %s", c->tag, errname(error));
        if (c->free_monitor)
                c->e->mon = qemu_monitor_free(c->e->mon);
}

static JsonObject *args_from_json(const char *json) {
        g_autoptr(GError) error = NULL;
        g_autoptr(JsonNode) n = NULL;
        if (!json)
                return NULL;
        n = json_from_string(json, &error);
        g_assert_no_error(error);
        g_assert_true(JSON_NODE_HOLDS_OBJECT(n));
        return json_object_ref(json_node_get_object(n));
}

static Call *send_full(Endpoint *e, const char *tag, const char *command, const char *args_json,
                       int fd, uint64_t timeout_usec) {
        Call *c = g_new0(Call, 1);
        *c = (Call) { .e = e, .tag = g_strdup(tag) };
        g_ptr_array_add(e->t->calls, c);
        g_assert_cmpint(qemu_monitor_command_with_fd(e->mon, command, args_from_json(args_json), fd,
                                                     timeout_usec, on_reply, c), ==, 0);
        return c;
}

static Call *send_cmd(Endpoint *e, const char *tag, const char *command, const char *args_json) {
        return send_full(e, tag, command, args_json, -EBADF, 0);
}

static const char *ret_string_member(Call *c, const char *name) {
        g_assert_nonnull(c->ret);
        g_assert_true(JSON_NODE_HOLDS_OBJECT(c->ret));
        return json_object_get_string_member(json_node_get_object(c->ret), name);
}

/* ---- the fake peer ---- */

static int on_peer_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Test *t = userdata;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                char buf[65536];
                union {
                        struct cmsghdr cmsghdr;
                        uint8_t buf[CMSG_SPACE(sizeof(int) * 4)];
                } control = {};
                struct iovec iov = { buf, sizeof(buf) };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                                     .msg_control = &control, .msg_controllen = sizeof(control) };
                ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

                if (n < 0 && errno != EAGAIN && errno != ECONNRESET)
                        g_error("fake peer: recvmsg: %m");
                if (n > 0) {
                        for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
                                if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
                                        continue;
                                g_assert_cmpuint(cmsg->cmsg_len, ==, CMSG_LEN(sizeof(int)));
                                g_assert_cmpint(t->peer_fd_received, <, 0);
                                memcpy(&t->peer_fd_received, CMSG_DATA(cmsg), sizeof(int));
                                t->peer_fd_offset = t->peer_in->len;
                        }
                        g_string_append_len(t->peer_in, buf, n);
                } else if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                        t->peer_eof = true;
                        g_assert_cmpint(sd_event_source_set_enabled(s, SD_EVENT_OFF), >=, 0);
                        return 0;
                }
        }
        if ((revents & EPOLLOUT) && t->peer_out->len > 0) {
                ssize_t n = send(fd, t->peer_out->str + t->peer_out_sent, t->peer_out->len - t->peer_out_sent,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
                        t->peer_out_sent = t->peer_out->len;    /* the monitor hung up on us */
                else if (n < 0 && errno != EAGAIN)
                        g_error("fake peer: send: %m");
                else if (n > 0)
                        t->peer_out_sent += (size_t) n;
                if (t->peer_out_sent == t->peer_out->len) {
                        g_string_truncate(t->peer_out, 0);
                        t->peer_out_sent = 0;
                }
        }
        g_assert_cmpint(sd_event_source_set_io_events(s, EPOLLIN | (t->peer_out->len > 0 ? EPOLLOUT : 0)), >=, 0);
        return 0;
}

static void fake_connect(Test *t) {
        int sv[2];
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), ==, 0);
        t->peer_fd = sv[1];
        g_assert_cmpint(sd_event_add_io(t->event, &t->peer_source, t->peer_fd, EPOLLIN, on_peer_io, t), >=, 0);
        g_assert_cmpint(qemu_monitor_connect_fd(t->event, sv[0], &callbacks, &t->m, &t->m.mon), ==, 0);
}

static void peer_send(Test *t, const char *data, size_t len) {
        g_string_append_len(t->peer_out, data, len);
        g_assert_cmpint(sd_event_source_set_io_events(t->peer_source, EPOLLIN | EPOLLOUT), >=, 0);
}

static int peer_outq(Test *t) {
        int n = 0;
        g_assert_cmpint(ioctl(t->peer_fd, SIOCOUTQ, &n), ==, 0);
        return n;
}

/* Sends and runs until the monitor has read every byte of it. */
static void peer_send_consumed(Test *t, const char *data, size_t len) {
        peer_send(t, data, len);
        RUN_UNTIL(t, t->peer_out->len == 0 && peer_outq(t) == 0);
}

static void peer_sends(Test *t, const char *s) {
        peer_send_consumed(t, s, strlen(s));
}

/* Waits for the next command line from the monitor; returns its id. */
static int64_t peer_expect(Test *t, const char *execute, const char *args_json) {
        g_autoptr(GError) error = NULL;
        g_autoptr(JsonNode) n = NULL;
        g_autofree char *line = NULL;
        JsonObject *o;
        char *nl;

        RUN_UNTIL(t, (nl = memchr(t->peer_in->str, '\n', t->peer_in->len)));
        line = g_strndup(t->peer_in->str, nl - t->peer_in->str);
        g_string_erase(t->peer_in, 0, nl - t->peer_in->str + 1);
        if (t->peer_fd_offset > 0)
                t->peer_fd_offset -= MIN(t->peer_fd_offset, strlen(line) + 1);
        n = json_from_string(line, &error);
        g_assert_no_error(error);
        o = json_node_get_object(n);
        g_assert_cmpstr(json_object_get_string_member(o, "execute"), ==, execute);
        if (args_json) {
                g_autoptr(JsonNode) want = json_from_string(args_json, NULL);
                g_assert_true(json_node_equal(json_object_get_member(o, "arguments"), want));
        } else
                g_assert_false(json_object_has_member(o, "arguments"));
        return json_object_get_int_member(o, "id");
}

static void peer_reply(Test *t, int64_t id) {
        g_autofree char *s = g_strdup_printf("{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n", id);
        peer_sends(t, s);
}

/* Connect, greet, negotiate. */
static void fake_ready(Test *t) {
        fake_connect(t);
        peer_sends(t, QMP_GREETING);
        peer_reply(t, peer_expect(t, "qmp_capabilities", NULL));
        RUN_UNTIL(t, t->m.ready);
        assert_log(t, "ready", NULL);
}

static void endpoint_done(Endpoint *e) {
        e->mon = qemu_monitor_free(e->mon);
        e->child = sd_event_source_disable_unref(e->child);
        if (e->pid > 0 && !e->exited) {
                (void) kill(e->pid, SIGKILL);
                (void) waitpid(e->pid, NULL, 0);
        }
}

static void test_free(Test *t) {
        endpoint_done(&t->m);
        endpoint_done(&t->dst);
        sd_event_source_disable_unref(t->peer_source);
        safe_close(t->peer_fd);
        safe_close(t->peer_fd_received);
        g_string_free(t->peer_in, TRUE);
        g_string_free(t->peer_out, TRUE);
        g_ptr_array_unref(t->calls);
        g_ptr_array_unref(t->log);
        sd_event_source_disable_unref(t->guard);
        sd_event_unref(t->event);
        g_free(t);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Test, test_free)

/* ---- fake peer tests ---- */

static void test_fake_negotiation(void) {
        g_autoptr(Test) t = test_new();
        Call *c;
        int64_t id;

        fake_connect(t);
        g_assert_false(qemu_monitor_is_ready(t->m.mon));
        /* Sent before the greeting: queued, nothing goes out yet. */
        c = send_cmd(&t->m, "q", "query-status", NULL);
        run_idle(t);
        g_assert_cmpuint(t->peer_in->len, ==, 0);

        peer_sends(t, QMP_GREETING);
        id = peer_expect(t, "qmp_capabilities", NULL);
        /* Still only the negotiation on the wire. */
        run_idle(t);
        g_assert_cmpuint(t->peer_in->len, ==, 0);
        assert_log(t, NULL);
        peer_reply(t, id);
        RUN_UNTIL(t, t->m.ready);
        g_assert_true(qemu_monitor_is_ready(t->m.mon));

        id = peer_expect(t, "query-status", NULL);
        g_assert_cmpint(id, >, 0);
        g_assert_false(c->done);
        {
                g_autofree char *s = g_strdup_printf(
                        "{\"return\": {\"status\": \"prelaunch\", \"singlestep\": false, \"running\": false}, \"id\": %" G_GINT64_FORMAT "}\r\n", id);
                peer_sends(t, s);
        }
        RUN_UNTIL(t, c->done);
        assert_log(t, "ready", "reply q ok", NULL);
        g_assert_cmpstr(ret_string_member(c, "status"), ==, "prelaunch");
}

static void test_fake_framing(void) {
        g_autoptr(Test) t = test_new();
        Call *a, *b, *c;
        int64_t ida, idb, idc;
        g_autofree char *burst = NULL, *split = NULL;

        fake_ready(t);
        a = send_cmd(&t->m, "a", "stop", NULL);
        b = send_cmd(&t->m, "b", "cont", "{\"x\": [1, \"two\", {\"three\": null}]}");
        ida = peer_expect(t, "stop", NULL);
        idb = peer_expect(t, "cont", "{\"x\": [1, \"two\", {\"three\": null}]}");
        g_assert_cmpint(ida, !=, idb);

        /* Several messages in one read, events interleaved with replies, blank lines. */
        burst = g_strdup_printf(
                "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"
                "{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n"
                "\r\n"
                "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 3}}\n"
                "{\"id\": %" G_GINT64_FORMAT ", \"return\": {}}\r\n"
                "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"setup\"}}\r\n",
                ida, idb);
        peer_sends(t, burst);
        run_idle(t);
        assert_log(t, "event STOP", "reply a ok", "event RESUME", "reply b ok",
                   "event MIGRATION {\"status\":\"setup\"}", NULL);
        g_assert_true(a->done && b->done);

        /* One message trickling in a byte at a time, "\r\n" split too, each byte read alone. */
        c = send_cmd(&t->m, "c", "query-migrate", NULL);
        idc = peer_expect(t, "query-migrate", NULL);
        split = g_strdup_printf("{\"return\": {\"status\": \"active\", \"ram\": {\"total\": 1024}}, \"id\": %" G_GINT64_FORMAT "}\r\n"
                                "{\"event\": \"POWERDOWN\"}\r\n", idc);
        for (size_t i = 0; split[i]; i++) {
                peer_send_consumed(t, split + i, 1);
                g_assert_true(c->done == (i >= strlen(split) - strlen("\n{\"event\": \"POWERDOWN\"}\r\n")));
        }
        assert_log(t, "reply c ok", "event POWERDOWN", NULL);
        g_assert_cmpstr(ret_string_member(c, "status"), ==, "active");

        /* Replies matched by id, not by order. */
        a = send_cmd(&t->m, "a2", "query-status", NULL);
        b = send_cmd(&t->m, "b2", "query-status", NULL);
        ida = peer_expect(t, "query-status", NULL);
        idb = peer_expect(t, "query-status", NULL);
        {
                g_autofree char *s = g_strdup_printf(
                        "{\"return\": {\"status\": \"b\"}, \"id\": %" G_GINT64_FORMAT "}\r\n"
                        "{\"return\": {\"status\": \"a\"}, \"id\": %" G_GINT64_FORMAT "}\r\n", idb, ida);
                peer_sends(t, s);
        }
        run_idle(t);
        assert_log(t, "reply b2 ok", "reply a2 ok", NULL);
        g_assert_cmpstr(ret_string_member(a, "status"), ==, "a");
        g_assert_cmpstr(ret_string_member(b, "status"), ==, "b");
}

static void test_fake_errors_and_strays(void) {
        g_autoptr(Test) t = test_new();
        Call *c, *d;
        int64_t id;
        g_autofree char *s = NULL;

        fake_ready(t);
        c = send_cmd(&t->m, "c", "closefd", "{\"fdname\": \"nope\"}");
        id = peer_expect(t, "closefd", "{\"fdname\": \"nope\"}");
        s = g_strdup_printf(
                /* answers nobody waits for: unknown id, no id (QEMU's answer to unparsable input) */
                "{\"return\": {}, \"id\": 999999}\r\n"
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n"
                "{\"return\": {}, \"id\": \"a string\"}\r\n"
                "{\"id\": %" G_GINT64_FORMAT ", \"error\": {\"class\": \"GenericError\", \"desc\": \"File descriptor named 'nope' not found\"}}\r\n",
                id);
        peer_sends(t, s);
        run_idle(t);
        assert_log(t, "reply c EREMOTEIO GenericError", NULL);
        g_assert_cmpstr(c->error_class, ==, "GenericError");
        g_assert_cmpstr(c->error_desc, ==, "File descriptor named 'nope' not found");
        g_assert_null(c->ret);

        /* A "return" of any JSON type; an error object without members. */
        c = send_cmd(&t->m, "hmp", "human-monitor-command", "{\"command-line\": \"info status\"}");
        d = send_cmd(&t->m, "d", "x", NULL);
        id = peer_expect(t, "human-monitor-command", "{\"command-line\": \"info status\"}");
        g_clear_pointer(&s, g_free);
        s = g_strdup_printf("{\"return\": \"VM status: paused (prelaunch)\\r\\n\", \"id\": %" G_GINT64_FORMAT "}\n"
                            "{\"error\": {}, \"id\": %" G_GINT64_FORMAT "}\n", id, peer_expect(t, "x", NULL));
        peer_sends(t, s);
        run_idle(t);
        assert_log(t, "reply hmp ok", "reply d EREMOTEIO n/a", NULL);
        g_assert_cmpstr(json_node_get_string(c->ret), ==, "VM status: paused (prelaunch)\r\n");
        g_assert_null(d->error_class);
        g_assert_true(qemu_monitor_is_ready(t->m.mon));

        /* Bad calls. */
        g_assert_cmpint(qemu_monitor_command(t->m.mon, "", NULL, 0, NULL, NULL), ==, -EINVAL);
        g_assert_cmpint(qemu_monitor_command(NULL, "stop", args_from_json("{}"), 0, NULL, NULL), ==, -EINVAL);
        /* reply NULL: fire and forget */
        g_assert_cmpint(qemu_monitor_command(t->m.mon, "cont", NULL, 0, NULL, NULL), ==, 0);
        peer_reply(t, peer_expect(t, "cont", NULL));
        run_idle(t);
        assert_log(t, NULL);
}

static void test_fake_big_and_oversize(void) {
        g_autoptr(Test) t = test_new();
        g_autoptr(GString) big = g_string_new(NULL);
        Call *c, *pending;
        int64_t id;

        fake_ready(t);
        /* 8 MiB in one reply is fine. */
        c = send_cmd(&t->m, "big", "human-monitor-command", "{\"command-line\": \"info mtree\"}");
        id = peer_expect(t, "human-monitor-command", "{\"command-line\": \"info mtree\"}");
        g_string_append(big, "{\"return\": \"");
        g_string_set_size(big, big->len + 8 * 1024 * 1024);
        for (size_t i = 0; i < 8 * 1024 * 1024; i++)
                big->str[big->len - 8 * 1024 * 1024 + i] = (char) ('a' + i % 26);
        g_string_append_printf(big, "\", \"id\": %" G_GINT64_FORMAT "}\r\n", id);
        peer_send(t, big->str, big->len);
        RUN_UNTIL(t, c->done);
        assert_log(t, "reply big ok", NULL);
        g_assert_cmpuint(strlen(json_node_get_string(c->ret)), ==, 8 * 1024 * 1024);

        /* A line longer than the limit ends the connection. */
        pending = send_cmd(&t->m, "pending", "query-status", NULL);
        (void) peer_expect(t, "query-status", NULL);
        g_string_truncate(big, 0);
        g_string_append(big, "{\"return\": \"");
        g_string_set_size(big, QEMU_MONITOR_MESSAGE_MAX + 1);
        memset(big->str + strlen("{\"return\": \""), 'x', big->len - strlen("{\"return\": \""));
        peer_send(t, big->str, big->len);
        RUN_UNTIL(t, t->m.n_closed > 0);
        assert_log(t, "reply pending ECONNRESET", "closed EMSGSIZE", NULL);
        g_assert_true(pending->done);
        RUN_UNTIL(t, t->peer_eof);
}

static void test_fake_garbage(void) {
        static const char *const garbage[] = {
                "this is not json\r\n",
                "[1, 2, 3]\r\n",
                "\"a string\"\r\n",
                "{\"neither\": \"reply nor event\"}\r\n",
                "{\"event\": 42}\r\n",
                "{\"return\": {}, \"id\": 1",              /* then the peer closes: incomplete */
        };

        for (size_t i = 0; i < G_N_ELEMENTS(garbage); i++) {
                g_autoptr(Test) t = test_new();

                g_test_message("garbage: %s", garbage[i]);
                fake_ready(t);
                (void) send_cmd(&t->m, "p1", "stop", NULL);
                (void) send_cmd(&t->m, "p2", "cont", NULL);
                (void) peer_expect(t, "stop", NULL);
                peer_send(t, garbage[i], strlen(garbage[i]));
                if (!strchr(garbage[i], '\n')) {
                        RUN_UNTIL(t, t->peer_out->len == 0 && peer_outq(t) == 0);
                        t->peer_source = sd_event_source_disable_unref(t->peer_source);
                        t->peer_fd = safe_close(t->peer_fd);
                }
                RUN_UNTIL(t, t->m.n_closed > 0);
                if (strchr(garbage[i], '\n'))
                        assert_log(t, "reply p1 ECONNRESET", "reply p2 ECONNRESET", "closed EBADMSG", NULL);
                else
                        assert_log(t, "reply p1 ECONNRESET", "reply p2 ECONNRESET", "closed ok", NULL);
                run_idle(t);
                g_assert_cmpuint(t->m.n_closed, ==, 1);
        }

        /* Before the greeting, anything but a greeting is garbage. */
        {
                g_autoptr(Test) t = test_new();
                fake_connect(t);
                peer_sends(t, "{\"return\": {}}\r\n");
                RUN_UNTIL(t, t->m.n_closed > 0);
                assert_log(t, "closed EBADMSG", NULL);
        }
}

static void test_fake_peer_closes(void) {
        /* QEMU dies with commands pending, some of them not even written yet. */
        {
                g_autoptr(Test) t = test_new();
                Call *a, *b;

                fake_ready(t);
                a = send_cmd(&t->m, "a", "migrate", "{\"uri\": \"fd:x\"}");
                (void) peer_expect(t, "migrate", "{\"uri\": \"fd:x\"}");
                b = send_cmd(&t->m, "b", "query-migrate", NULL);
                t->peer_source = sd_event_source_disable_unref(t->peer_source);
                t->peer_fd = safe_close(t->peer_fd);
                RUN_UNTIL(t, t->m.n_closed > 0);
                assert_log(t, "reply a ECONNRESET", "reply b ECONNRESET", "closed ok", NULL);
                g_assert_true(a->done && b->done);
                g_assert_false(qemu_monitor_is_ready(t->m.mon));
                g_assert_cmpint(qemu_monitor_command(t->m.mon, "cont", args_from_json("{}"), 0, NULL, NULL), ==, -ENOTCONN);
                run_idle(t);
                g_assert_cmpuint(t->m.n_closed, ==, 1);
        }
        /* A reply and EOF in the same read: the reply still counts. */
        {
                g_autoptr(Test) t = test_new();
                g_autofree char *s = NULL;

                fake_ready(t);
                (void) send_cmd(&t->m, "quit", "quit", NULL);
                s = g_strdup_printf("{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}\r\n"
                                    "{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n", peer_expect(t, "quit", NULL));
                g_assert_cmpint(send(t->peer_fd, s, strlen(s), MSG_NOSIGNAL), ==, (ssize_t) strlen(s));
                t->peer_source = sd_event_source_disable_unref(t->peer_source);
                t->peer_fd = safe_close(t->peer_fd);
                RUN_UNTIL(t, t->m.n_closed > 0);
                assert_log(t, "event SHUTDOWN {\"guest\":false,\"reason\":\"host-qmp-quit\"}", "reply quit ok",
                           "closed ok", NULL);
        }
        /* Gone before the greeting, or during negotiation. */
        for (int greet = 0; greet < 2; greet++) {
                g_autoptr(Test) t = test_new();
                Call *a;

                fake_connect(t);
                a = send_cmd(&t->m, "a", "query-status", NULL);
                if (greet) {
                        peer_sends(t, QMP_GREETING);
                        (void) peer_expect(t, "qmp_capabilities", NULL);
                }
                t->peer_source = sd_event_source_disable_unref(t->peer_source);
                t->peer_fd = safe_close(t->peer_fd);
                RUN_UNTIL(t, t->m.n_closed > 0);
                assert_log(t, "reply a ECONNRESET", "closed ECONNRESET", NULL);
                g_assert_true(a->done);
        }
}

static void test_fake_negotiation_refused(void) {
        g_autoptr(Test) t = test_new();
        g_autofree char *s = NULL;

        fake_connect(t);
        (void) send_cmd(&t->m, "a", "query-status", NULL);
        peer_sends(t, QMP_GREETING);
        s = g_strdup_printf("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}, \"id\": %" G_GINT64_FORMAT "}\r\n",
                            peer_expect(t, "qmp_capabilities", NULL));
        peer_sends(t, s);
        RUN_UNTIL(t, t->m.n_closed > 0);
        assert_log(t, "reply a ECONNRESET", "closed EPROTO", NULL);
        RUN_UNTIL(t, t->peer_eof);
        g_assert_cmpuint(t->peer_in->len, ==, 0);       /* the queued command never went out */
}

static void test_fake_free_in_callbacks(void) {
        /* In a reply, with another reply and an event in the same read. */
        {
                g_autoptr(Test) t = test_new();
                g_autofree char *s = NULL;
                Call *a, *b;
                int64_t ida, idb;

                fake_ready(t);
                a = send_cmd(&t->m, "a", "stop", NULL);
                b = send_cmd(&t->m, "b", "cont", NULL);
                a->free_monitor = true;
                ida = peer_expect(t, "stop", NULL);
                idb = peer_expect(t, "cont", NULL);
                s = g_strdup_printf("{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n{\"event\": \"RESUME\"}\r\n"
                                    "{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n", ida, idb);
                peer_sends(t, s);
                RUN_UNTIL(t, t->peer_eof);
                run_idle(t);
                assert_log(t, "reply a ok", NULL);
                g_assert_null(t->m.mon);
                g_assert_false(b->done);
        }
        /* In an event. */
        {
                g_autoptr(Test) t = test_new();
                Call *a;

                fake_ready(t);
                a = send_cmd(&t->m, "a", "stop", NULL);
                (void) peer_expect(t, "stop", NULL);
                t->m.free_on_event = "STOP";
                peer_sends(t, "{\"event\": \"STOP\"}\r\n{\"event\": \"RESUME\"}\r\n");
                RUN_UNTIL(t, t->peer_eof);
                run_idle(t);
                assert_log(t, "event STOP", NULL);
                g_assert_false(a->done);
        }
        /* In the first of the replies failed by a lost connection: no more replies, no closed. */
        {
                g_autoptr(Test) t = test_new();
                Call *a, *b;

                fake_ready(t);
                a = send_cmd(&t->m, "a", "stop", NULL);
                b = send_cmd(&t->m, "b", "cont", NULL);
                a->free_monitor = true;
                (void) peer_expect(t, "stop", NULL);
                t->peer_source = sd_event_source_disable_unref(t->peer_source);
                t->peer_fd = safe_close(t->peer_fd);
                RUN_UNTIL(t, a->done);
                run_idle(t);
                assert_log(t, "reply a ECONNRESET", NULL);
                g_assert_false(b->done);
                g_assert_cmpuint(t->m.n_closed, ==, 0);
        }
        /* In closed, in ready (with a command queued behind the negotiation). */
        {
                g_autoptr(Test) t = test_new();

                fake_ready(t);
                t->m.free_on_closed = true;
                t->peer_source = sd_event_source_disable_unref(t->peer_source);
                t->peer_fd = safe_close(t->peer_fd);
                RUN_UNTIL(t, t->m.n_closed > 0);
                assert_log(t, "closed ok", NULL);
                g_assert_null(t->m.mon);
        }
        {
                g_autoptr(Test) t = test_new();
                Call *a;

                fake_connect(t);
                a = send_cmd(&t->m, "a", "stop", NULL);
                t->m.free_on_ready = true;
                peer_sends(t, QMP_GREETING);
                peer_reply(t, peer_expect(t, "qmp_capabilities", NULL));
                RUN_UNTIL(t, t->peer_eof);
                run_idle(t);
                assert_log(t, "ready", NULL);
                g_assert_false(a->done);
                g_assert_cmpuint(t->peer_in->len, ==, 0);
        }
        /* Freed with commands pending and never called back. */
        {
                g_autoptr(Test) t = test_new();
                Call *a;

                fake_ready(t);
                a = send_cmd(&t->m, "a", "stop", NULL);
                t->m.mon = qemu_monitor_free(t->m.mon);
                RUN_UNTIL(t, t->peer_eof);
                run_idle(t);
                assert_log(t, NULL);
                g_assert_false(a->done);
        }
}

static void test_fake_timeout(void) {
        g_autoptr(Test) t = test_new();
        g_autofree char *late = NULL;
        Call *slow, *never_sent, *next;
        int64_t id;

        fake_ready(t);
        slow = send_full(&t->m, "slow", "query-migrate", NULL, -EBADF, 20 * 1000);
        id = peer_expect(t, "query-migrate", NULL);
        RUN_UNTIL(t, slow->done);
        assert_log(t, "reply slow ETIMEDOUT", NULL);

        /* The late answer is dropped; the connection goes on. */
        late = g_strdup_printf("{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n", id);
        peer_sends(t, late);
        next = send_cmd(&t->m, "next", "query-status", NULL);
        peer_reply(t, peer_expect(t, "query-status", NULL));
        RUN_UNTIL(t, next->done);
        assert_log(t, "reply next ok", NULL);

        /* A command that timed out before it could go out is never sent. */
        {
                g_autoptr(Test) u = test_new();
                fake_connect(u);
                never_sent = send_full(&u->m, "never", "stop", NULL, -EBADF, 20 * 1000);
                next = send_cmd(&u->m, "next", "cont", NULL);
                RUN_UNTIL(u, never_sent->done);
                peer_sends(u, QMP_GREETING);
                peer_reply(u, peer_expect(u, "qmp_capabilities", NULL));
                peer_reply(u, peer_expect(u, "cont", NULL));
                RUN_UNTIL(u, next->done);
                assert_log(u, "reply never ETIMEDOUT", "ready", "reply next ok", NULL);
        }
}

static void test_fake_queue_limit(void) {
        g_autoptr(Test) t = test_new();
        Call *calls[QEMU_MONITOR_COMMANDS_MAX];

        fake_connect(t);
        for (unsigned i = 0; i < QEMU_MONITOR_COMMANDS_MAX; i++) {
                g_autofree char *tag = g_strdup_printf("%u", i);
                calls[i] = send_cmd(&t->m, tag, "query-status", NULL);
        }
        g_assert_cmpint(qemu_monitor_command(t->m.mon, "stop", args_from_json("{\"a\": 1}"), 0, NULL, NULL), ==, -EBUSY);

        peer_sends(t, QMP_GREETING);
        peer_reply(t, peer_expect(t, "qmp_capabilities", NULL));
        for (unsigned i = 0; i < QEMU_MONITOR_COMMANDS_MAX; i++)
                peer_reply(t, peer_expect(t, "query-status", NULL));
        RUN_UNTIL(t, calls[QEMU_MONITOR_COMMANDS_MAX - 1]->done);
        for (unsigned i = 0; i < QEMU_MONITOR_COMMANDS_MAX; i++)
                g_assert_true(calls[i]->done && calls[i]->error == 0);
        g_assert_cmpstr(t->log->pdata[1], ==, "reply 0 ok");
        g_assert_cmpstr(t->log->pdata[QEMU_MONITOR_COMMANDS_MAX], ==, "reply 255 ok");
        /* room again */
        g_assert_cmpint(qemu_monitor_command(t->m.mon, "stop", NULL, 0, NULL, NULL), ==, 0);
}

static void test_fake_fd_passing(void) {
        g_autoptr(Test) t = test_new();
        int pipefd[2];
        Call *before, *getfd, *after;
        int64_t id_before, id_getfd;
        char c = 0;

        fake_ready(t);
        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC | O_NONBLOCK), ==, 0);

        before = send_cmd(&t->m, "before", "query-status", NULL);
        getfd = send_full(&t->m, "getfd", "getfd", "{\"fdname\": \"migrate\"}", pipefd[1], 0);
        after = send_cmd(&t->m, "after", "migrate", "{\"uri\": \"fd:migrate\"}");
        pipefd[1] = safe_close(pipefd[1]);      /* the monitor holds its own copy */

        /* The fd command waits for the command in flight to be answered... */
        id_before = peer_expect(t, "query-status", NULL);
        run_idle(t);
        g_assert_cmpuint(t->peer_in->len, ==, 0);
        peer_reply(t, id_before);

        /* ...then goes alone, with the fd on its first byte, and nothing follows until it is
         * answered. */
        id_getfd = peer_expect(t, "getfd", "{\"fdname\": \"migrate\"}");
        g_assert_cmpint(t->peer_fd_received, >=, 0);
        g_assert_cmpuint(t->peer_fd_offset, ==, 0);
        run_idle(t);
        g_assert_cmpuint(t->peer_in->len, ==, 0);
        peer_reply(t, id_getfd);
        peer_reply(t, peer_expect(t, "migrate", "{\"uri\": \"fd:migrate\"}"));
        RUN_UNTIL(t, after->done);
        assert_log(t, "reply before ok", "reply getfd ok", "reply after ok", NULL);
        g_assert_true(before->done && getfd->done);

        /* It is our pipe, and the monitor's copy is closed: only the peer's keeps it open. */
        g_assert_cmpint(write(t->peer_fd_received, "!", 1), ==, 1);
        g_assert_cmpint(read(pipefd[0], &c, 1), ==, 1);
        g_assert_cmpint(c, ==, '!');
        t->peer_fd_received = safe_close(t->peer_fd_received);
        g_assert_cmpint(read(pipefd[0], &c, 1), ==, 0);
        safe_close(pipefd[0]);

        g_assert_cmpint(qemu_monitor_command_with_fd(t->m.mon, "getfd", NULL, 9999, 0, NULL, NULL), ==, -EBADF);
}

static void test_connect_errors(void) {
        g_autoptr(Test) t = test_new();
        g_autofree char *dir = g_dir_make_tmp("ferry-test-qmp-XXXXXX", NULL);
        g_autofree char *path = g_build_filename(dir, "missing.sock", NULL);
        g_autofree char *longpath = g_strnfill(200, 'x');
        QemuMonitor *m = NULL;

        g_assert_cmpint(qemu_monitor_connect(t->event, path, &callbacks, NULL, &m), ==, -ENOENT);
        g_assert_cmpint(qemu_monitor_connect(t->event, longpath, &callbacks, NULL, &m), ==, -ENAMETOOLONG);
        g_assert_null(m);
        g_assert_null(qemu_monitor_free(NULL));
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_status_from_string(void) {
        static const struct {
                const char *s;
                QemuRunState state;
        } table[] = {
                { "running", QEMU_RUN_STATE_RUNNING },
                { "paused", QEMU_RUN_STATE_PAUSED },
                { "prelaunch", QEMU_RUN_STATE_PRELAUNCH },
                { "inmigrate", QEMU_RUN_STATE_INMIGRATE },
                { "postmigrate", QEMU_RUN_STATE_POSTMIGRATE },
                { "finish-migrate", QEMU_RUN_STATE_FINISH_MIGRATE },
                { "shutdown", QEMU_RUN_STATE_SHUTDOWN },
                { "guest-panicked", QEMU_RUN_STATE_ERROR },
                { "internal-error", QEMU_RUN_STATE_ERROR },
                { "io-error", QEMU_RUN_STATE_ERROR },
                { "suspended", QEMU_RUN_STATE_SUSPENDED },
                { "restore-vm", QEMU_RUN_STATE_PAUSED },
                { "save-vm", QEMU_RUN_STATE_PAUSED },
                { "watchdog", QEMU_RUN_STATE_ERROR },
                { "colo", QEMU_RUN_STATE_PAUSED },
                { "debug", QEMU_RUN_STATE_PAUSED },
                { "Running", _QEMU_RUN_STATE_INVALID },
                { "", _QEMU_RUN_STATE_INVALID },
                { NULL, _QEMU_RUN_STATE_INVALID },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(table); i++)
                g_assert_cmpint(qemu_monitor_status_from_string(table[i].s), ==, table[i].state);
        for (int s = 0; s < _QEMU_RUN_STATE_MAX; s++)
                g_assert_nonnull(qemu_run_state_to_string(s));
        g_assert_cmpstr(qemu_run_state_to_string(QEMU_RUN_STATE_FINISH_MIGRATE), ==, "finish-migrate");
        g_assert_null(qemu_run_state_to_string(_QEMU_RUN_STATE_MAX));
        g_assert_null(qemu_run_state_to_string(_QEMU_RUN_STATE_INVALID));
}

/* ---- real QEMU ---- */

static const char *qemu_binary(void) {
        static char *path = NULL;
        if (!path)
                path = g_find_program_in_path("qemu-system-x86_64");
        return path;
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Endpoint *e = userdata;
        e->exited = true;
        e->exit_status = si->si_code == CLD_EXITED ? si->si_status : 128 + si->si_status;
        log_add(e, "exited %d", e->exit_status);
        return 0;
}

/* Starts QEMU with its QMP chardev on one end of a socketpair made here, handed down as fd 3:
 * the connection exists before QEMU starts, as with ferryd (docs/domain-xml.md, how ferryd
 * reaches QEMU's monitor). Connecting to a listening socket at once instead, QEMU 7.2 can read
 * the connection from two threads and take our commands with bytes swapped ("exectue"): seen
 * here under load about once in 400 starts, never in 2,500 this way. */
static void qemu_start(Endpoint *e, const char *const *extra) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        int sv[2];

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);

        g_ptr_array_add(argv, (char *) qemu_binary());
        for (const char *const *a = (const char *const[]) {
                     "-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none",
                     "-chardev", "socket,id=qmp,fd=3",
                     "-mon", "chardev=qmp,mode=control", NULL }; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        for (const char *const *a = extra; a && *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);

        e->pid = fork();
        g_assert_cmpint(e->pid, >=, 0);
        if (e->pid == 0) {
                sigset_t ss;
                sigemptyset(&ss);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                (void) sigprocmask(SIG_SETMASK, &ss, NULL);
                if (sv[1] == 3)
                        (void) fcntl(3, F_SETFD, 0);
                else if (dup2(sv[1], 3) < 0)
                        _exit(127);
                execv(argv->pdata[0], (char **) argv->pdata);
                _exit(127);
        }
        safe_close(sv[1]);
        g_assert_cmpint(sd_event_add_child(e->t->event, &e->child, e->pid, WEXITED, on_child, e), >=, 0);
        g_assert_cmpint(qemu_monitor_connect_fd(e->t->event, sv[0], &callbacks, e, &e->mon), ==, 0);
}

static Call *qemu_call(Endpoint *e, const char *tag, const char *command, const char *args_json) {
        Call *c = send_cmd(e, tag, command, args_json);
        RUN_UNTIL(e->t, c->done);
        return c;
}

static void assert_status(Endpoint *e, const char *status, QemuRunState state) {
        Call *c = qemu_call(e, "status", "query-status", NULL);
        g_assert_cmpint(c->error, ==, 0);
        g_assert_cmpstr(ret_string_member(c, "status"), ==, status);
        g_assert_cmpint(qemu_monitor_status_from_string(ret_string_member(c, "status")), ==, state);
}

static int log_index(Test *t, const char *entry) {
        for (guint i = 0; i < t->log->len; i++)
                if (g_str_equal(t->log->pdata[i], entry))
                        return (int) i;
        g_error("no log entry \"%s\"", entry);
}

/* quit: the reply and the SHUTDOWN event (in either order: QEMU emits the event from its main
 * loop), then the end of the connection, and QEMU exits cleanly. */
static void qemu_quit(Endpoint *e) {
        Test *t = e->t;
        g_autofree char *shutdown = NULL, *reply = NULL, *closed = NULL;
        Call *c = send_cmd(e, "quit", "quit", NULL);

        RUN_UNTIL(t, e->n_closed > 0 && e->exited);
        g_assert_true(c->done);
        g_assert_cmpint(c->error, ==, 0);
        g_assert_cmpint(e->closed_error, ==, 0);
        g_assert_cmpint(e->exit_status, ==, 0);
        shutdown = g_strdup_printf("%s%sevent SHUTDOWN {\"guest\":false,\"reason\":\"host-qmp-quit\"}",
                                   e == &t->m ? "" : e->name, e == &t->m ? "" : ": ");
        reply = g_strdup_printf("%s%sreply quit ok", e == &t->m ? "" : e->name, e == &t->m ? "" : ": ");
        closed = g_strdup_printf("%s%sclosed ok", e == &t->m ? "" : e->name, e == &t->m ? "" : ": ");
        g_assert_cmpint(log_index(t, shutdown), <, log_index(t, closed));
        g_assert_cmpint(log_index(t, reply), <, log_index(t, closed));
}

#define SKIP_WITHOUT_QEMU()                                                     \
        do {                                                                    \
                if (!qemu_binary()) {                                           \
                        g_test_skip("qemu-system-x86_64 is not installed");     \
                        return;                                                 \
                }                                                               \
        } while (0)

static void test_qemu_lifecycle(void) {
        g_autoptr(Test) t = test_new();
        Call *c;

        SKIP_WITHOUT_QEMU();
        qemu_start(&t->m, (const char *const[]) { "-S", NULL });
        RUN_UNTIL(t, t->m.ready);
        assert_log(t, "ready", NULL);
        assert_status(&t->m, "prelaunch", QEMU_RUN_STATE_PRELAUNCH);

        c = qemu_call(&t->m, "hmp", "human-monitor-command", "{\"command-line\": \"info status\"}");
        g_assert_cmpint(c->error, ==, 0);
        g_assert_nonnull(strstr(json_node_get_string(c->ret), "prelaunch"));

        /* cont: RESUME comes before the reply. */
        c = qemu_call(&t->m, "cont", "cont", NULL);
        g_assert_cmpint(c->error, ==, 0);
        assert_log(t, "reply status ok", "reply hmp ok", "event RESUME", "reply cont ok", NULL);
        assert_status(&t->m, "running", QEMU_RUN_STATE_RUNNING);

        c = qemu_call(&t->m, "stop", "stop", NULL);
        g_assert_cmpint(c->error, ==, 0);
        assert_status(&t->m, "paused", QEMU_RUN_STATE_PAUSED);
        assert_log(t, "reply status ok", "event STOP", "reply stop ok", "reply status ok", NULL);

        /* The event comes from QEMU's main loop, before or after the reply. */
        c = qemu_call(&t->m, "powerdown", "system_powerdown", NULL);
        g_assert_cmpint(c->error, ==, 0);
        RUN_UNTIL(t, log_has(t, "event POWERDOWN"));
        g_ptr_array_set_size(t->log, 0);

        c = qemu_call(&t->m, "migrate", "query-migrate", NULL);
        g_assert_cmpint(c->error, ==, 0);
        g_assert_true(JSON_NODE_HOLDS_OBJECT(c->ret));

        c = qemu_call(&t->m, "unknown", "no-such-command", NULL);
        g_assert_cmpint(c->error, ==, -EREMOTEIO);
        g_assert_cmpstr(c->error_class, ==, "CommandNotFound");
        c = qemu_call(&t->m, "badarg", "closefd", "{\"no-such-argument\": 1}");
        g_assert_cmpint(c->error, ==, -EREMOTEIO);
        g_assert_cmpstr(c->error_class, ==, "GenericError");
        g_assert_nonnull(c->error_desc);

        qemu_quit(&t->m);
}

/* getfd hands QEMU our fd: proven with a pipe whose only other write end is QEMU's copy. */
static void test_qemu_getfd(void) {
        g_autoptr(Test) t = test_new();
        int pipefd[2];
        Call *c;
        char b;

        SKIP_WITHOUT_QEMU();
        qemu_start(&t->m, (const char *const[]) { "-S", NULL });
        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC | O_NONBLOCK), ==, 0);
        c = send_full(&t->m, "getfd", "getfd", "{\"fdname\": \"ferry-test\"}", pipefd[1], 0);
        pipefd[1] = safe_close(pipefd[1]);
        RUN_UNTIL(t, c->done);
        g_assert_cmpint(c->error, ==, 0);

        /* QEMU holds the write end: no EOF. */
        g_assert_cmpint(read(pipefd[0], &b, 1), ==, -1);
        g_assert_cmpint(errno, ==, EAGAIN);

        c = qemu_call(&t->m, "closefd-unknown", "closefd", "{\"fdname\": \"no-such-fd\"}");
        g_assert_cmpint(c->error, ==, -EREMOTEIO);
        g_assert_cmpstr(c->error_class, ==, "GenericError");
        g_assert_cmpint(read(pipefd[0], &b, 1), ==, -1);

        c = qemu_call(&t->m, "closefd", "closefd", "{\"fdname\": \"ferry-test\"}");
        g_assert_cmpint(c->error, ==, 0);
        g_assert_cmpint(read(pipefd[0], &b, 1), ==, 0);
        safe_close(pipefd[0]);

        /* A second fd under the same name twice, and a getfd without an fd, fail as they should. */
        c = qemu_call(&t->m, "getfd-nofd", "getfd", "{\"fdname\": \"x\"}");
        g_assert_cmpint(c->error, ==, -EREMOTEIO);
        qemu_quit(&t->m);
}

/* Commands pipelined before the greeting all come back, in order. */
static void test_qemu_pipelined(void) {
        g_autoptr(Test) t = test_new();
        Call *calls[200];

        SKIP_WITHOUT_QEMU();
        qemu_start(&t->m, (const char *const[]) { "-S", NULL });
        for (size_t i = 0; i < G_N_ELEMENTS(calls); i++) {
                g_autofree char *tag = g_strdup_printf("%zu", i);
                calls[i] = send_cmd(&t->m, tag, i % 2 ? "query-status" : "query-migrate", NULL);
        }
        RUN_UNTIL(t, calls[G_N_ELEMENTS(calls) - 1]->done);
        g_assert_cmpstr(t->log->pdata[0], ==, "ready");
        for (size_t i = 0; i < G_N_ELEMENTS(calls); i++) {
                g_autofree char *want = g_strdup_printf("reply %zu ok", i);
                g_assert_cmpstr(t->log->pdata[i + 1], ==, want);
        }
        qemu_quit(&t->m);
}

static bool migration_done(Test *t) {
        return log_has(t, "event MIGRATION {\"status\":\"completed\"}") &&
               log_has(t, "dst: event MIGRATION {\"status\":\"completed\"}") &&
               log_has(t, "dst: event RESUME");
}

/* libvirt's way: both QEMUs get their end of a socketpair with getfd, then "migrate fd:" and
 * "migrate-incoming fd:". */
static void test_qemu_migrate_fd(void) {
        g_autoptr(Test) t = test_new();
        static const char *events_on = "{\"capabilities\": [{\"capability\": \"events\", \"state\": true}]}";
        int sv[2];
        Call *c;

        SKIP_WITHOUT_QEMU();
        qemu_start(&t->m, (const char *const[]) { "-S", NULL });
        qemu_start(&t->dst, (const char *const[]) { "-incoming", "defer", NULL });
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);

        g_assert_cmpint(qemu_call(&t->dst, "caps", "migrate-set-capabilities", events_on)->error, ==, 0);
        assert_status(&t->dst, "inmigrate", QEMU_RUN_STATE_INMIGRATE);
        (void) send_full(&t->dst, "getfd", "getfd", "{\"fdname\": \"migration\"}", sv[1], 0);
        g_assert_cmpint(qemu_call(&t->dst, "incoming", "migrate-incoming", "{\"uri\": \"fd:migration\"}")->error, ==, 0);

        /* a running source: the destination then runs too */
        g_assert_cmpint(qemu_call(&t->m, "cont", "cont", NULL)->error, ==, 0);
        g_assert_cmpint(qemu_call(&t->m, "caps", "migrate-set-capabilities", events_on)->error, ==, 0);
        g_assert_cmpint(qemu_call(&t->m, "params", "migrate-set-parameters",
                                  "{\"max-bandwidth\": 1099511627776, \"downtime-limit\": 20}")->error, ==, 0);
        c = send_full(&t->m, "getfd", "getfd", "{\"fdname\": \"migration\"}", sv[0], 0);
        sv[0] = safe_close(sv[0]);
        sv[1] = safe_close(sv[1]);
        g_assert_cmpint(qemu_call(&t->m, "migrate", "migrate", "{\"uri\": \"fd:migration\"}")->error, ==, 0);
        g_assert_cmpint(c->error, ==, 0);

        RUN_UNTIL(t, migration_done(t));
        c = qemu_call(&t->m, "query", "query-migrate", NULL);
        g_assert_cmpstr(ret_string_member(c, "status"), ==, "completed");
        /* The source emits "completed" from its migration thread a moment before it sets its run
         * state to postmigrate (no event tells when): either may be seen here. */
        c = qemu_call(&t->m, "status", "query-status", NULL);
        g_assert_cmpint(c->error, ==, 0);
        g_assert_true(qemu_monitor_status_from_string(ret_string_member(c, "status")) == QEMU_RUN_STATE_POSTMIGRATE ||
                      qemu_monitor_status_from_string(ret_string_member(c, "status")) == QEMU_RUN_STATE_FINISH_MIGRATE);
        assert_status(&t->dst, "running", QEMU_RUN_STATE_RUNNING);
        g_assert_true(log_has(t, "event MIGRATION {\"status\":\"setup\"}"));
        g_assert_true(log_has(t, "dst: event MIGRATION {\"status\":\"active\"}"));

        qemu_quit(&t->m);
        qemu_quit(&t->dst);
}

int main(int argc, char *argv[]) {
        sigset_t ss;

        /* sd-event watches QEMU children with child sources, which need SIGCHLD blocked. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        g_assert_cmpint(sigprocmask(SIG_BLOCK, &ss, NULL), ==, 0);

        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/qemu-monitor/status-from-string", test_status_from_string);
        g_test_add_func("/qemu-monitor/connect-errors", test_connect_errors);
        g_test_add_func("/qemu-monitor/fake/negotiation", test_fake_negotiation);
        g_test_add_func("/qemu-monitor/fake/framing", test_fake_framing);
        g_test_add_func("/qemu-monitor/fake/errors-and-strays", test_fake_errors_and_strays);
        g_test_add_func("/qemu-monitor/fake/big-and-oversize", test_fake_big_and_oversize);
        g_test_add_func("/qemu-monitor/fake/garbage", test_fake_garbage);
        g_test_add_func("/qemu-monitor/fake/peer-closes", test_fake_peer_closes);
        g_test_add_func("/qemu-monitor/fake/negotiation-refused", test_fake_negotiation_refused);
        g_test_add_func("/qemu-monitor/fake/free-in-callbacks", test_fake_free_in_callbacks);
        g_test_add_func("/qemu-monitor/fake/timeout", test_fake_timeout);
        g_test_add_func("/qemu-monitor/fake/queue-limit", test_fake_queue_limit);
        g_test_add_func("/qemu-monitor/fake/fd-passing", test_fake_fd_passing);
        g_test_add_func("/qemu-monitor/qemu/lifecycle", test_qemu_lifecycle);
        g_test_add_func("/qemu-monitor/qemu/getfd", test_qemu_getfd);
        g_test_add_func("/qemu-monitor/qemu/pipelined", test_qemu_pipelined);
        g_test_add_func("/qemu-monitor/qemu/migrate-fd", test_qemu_migrate_fd);
        return g_test_run();
}
