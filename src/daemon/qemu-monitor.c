/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "log.h"
#include "qemu-monitor.h"

#define READ_CHUNK (64U * 1024U)
#define READ_BUFFER_KEEP (1024U * 1024U)       /* shrink back after a big message */
#define WRITE_IOV_MAX 16U

typedef enum MonitorState {
        MONITOR_CONNECTING,     /* non-blocking connect() underway */
        MONITOR_GREETING,       /* waiting for {"QMP": ...} */
        MONITOR_NEGOTIATING,    /* qmp_capabilities sent */
        MONITOR_READY,
        MONITOR_CLOSED,
} MonitorState;

typedef struct QemuCommand {
        QemuMonitor *monitor;
        int64_t id;
        char *buf;                      /* the serialized command with its "\n" */
        size_t size, written;
        int fd;                         /* to pass with the first byte; closed once sent */
        bool passes_fd;
        bool internal;                  /* qmp_capabilities: may go out before READY */
        QemuMonitorReply reply;         /* NULL once nobody waits (ignored, or timed out) */
        void *userdata;
        sd_event_source *timer;
} QemuCommand;

struct QemuMonitor {
        unsigned n_ref;
        bool freed;                     /* the owner let go: never call back again */
        MonitorState state;
        sd_event *event;
        sd_event_source *io;
        uint32_t io_events;
        sd_event_source *negotiation_timer;
        int fd;
        QemuMonitorCallbacks cb;
        void *userdata;

        JsonParser *parser;
        char *rbuf;
        size_t rsize, ralloc, rscan;    /* rscan: bytes already searched for '\n' */

        GQueue out;                     /* QemuCommand*, not completely written, in order */
        GQueue sent;                    /* QemuCommand*, written, waiting for their reply */
        unsigned n_sent_with_fd;
        bool write_failed;              /* the peer stopped reading; its EOF ends us soon */
        int64_t next_id;
};

static QemuCommand *command_free(QemuCommand *c) {
        if (!c)
                return NULL;
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        g_free(c->buf);
        return mfree(c);
}

static QemuMonitor *monitor_ref(QemuMonitor *m) {
        m->n_ref++;
        return m;
}

static QemuMonitor *monitor_unref(QemuMonitor *m) {
        if (!m || --m->n_ref > 0)
                return NULL;
        /* The connection and the commands went in monitor_disconnect(). */
        g_clear_object(&m->parser);
        free(m->rbuf);
        sd_event_unref(m->event);
        return mfree(m);
}

static void monitor_unrefp(QemuMonitor **m) {
        monitor_unref(*m);
}

static bool command_may_go(QemuMonitor *m, QemuCommand *c) {
        if (c->written > 0)
                return true;
        if (m->state == MONITOR_NEGOTIATING)
                return c->internal;
        if (m->state != MONITOR_READY)
                return false;
        /* QEMU's chardev keeps only the latest fds it received until a command takes them:
         * never let two fd-passing commands overlap. */
        if (m->n_sent_with_fd > 0)
                return false;
        if (c->fd >= 0 && !g_queue_is_empty(&m->sent))
                return false;
        return true;
}

static bool monitor_want_write(QemuMonitor *m) {
        QemuCommand *c = g_queue_peek_head(&m->out);
        return c && !m->write_failed && command_may_go(m, c);
}

static int monitor_update_io(QemuMonitor *m) {
        uint32_t events;
        int r;

        if (m->state == MONITOR_CLOSED)
                return 0;
        if (m->state == MONITOR_CONNECTING)
                events = EPOLLOUT;
        else
                events = EPOLLIN | (monitor_want_write(m) ? EPOLLOUT : 0);
        if (events == m->io_events)
                return 0;
        r = sd_event_source_set_io_events(m->io, events);
        if (r < 0)
                return r;
        m->io_events = events;
        return 0;
}

/* Ends the connection: pending commands get -ECONNRESET, then closed(error). Idempotent. */
static void monitor_disconnect(QemuMonitor *m, int error) {
        _cleanup_(monitor_unrefp) _unused_ QemuMonitor *hold = monitor_ref(m);
        GQueue pending = G_QUEUE_INIT;
        QemuCommand *c;

        if (m->state == MONITOR_CLOSED)
                return;
        if (error == 0 && m->state != MONITOR_READY)
                error = -ECONNRESET;
        m->state = MONITOR_CLOSED;
        m->io = sd_event_source_disable_unref(m->io);
        m->negotiation_timer = sd_event_source_disable_unref(m->negotiation_timer);
        m->fd = safe_close(m->fd);
        if (error < 0)
                log_debug_errno(error, "QMP connection failed: %m");
        else if (!m->freed)
                log_debug("QMP connection closed by QEMU.");

        /* In submission order: everything sent precedes everything still queued. A reply may
         * free the monitor; the rest are then dropped. */
        while ((c = g_queue_pop_head(&m->sent)))
                g_queue_push_tail(&pending, c);
        while ((c = g_queue_pop_head(&m->out)))
                g_queue_push_tail(&pending, c);
        m->n_sent_with_fd = 0;
        while ((c = g_queue_pop_head(&pending))) {
                QemuMonitorReply reply = TAKE_PTR(c->reply);
                c->timer = sd_event_source_disable_unref(c->timer);
                if (reply && !m->freed)
                        reply(m, -ECONNRESET, NULL, NULL, NULL, c->userdata);
                command_free(c);
        }

        if (!m->freed && m->cb.closed)
                m->cb.closed(m, error, m->userdata);
}

static int command_queue(QemuMonitor *m, const char *command, JsonObject *args, int fd_take,
                         bool internal, uint64_t timeout_usec, QemuMonitorReply reply,
                         void *userdata, QemuCommand **ret);

static void on_capabilities_reply(QemuMonitor *m, int error, const char *error_class,
                                  const char *error_desc, JsonNode *ret, void *userdata) {
        if (m->state == MONITOR_CLOSED)
                return;
        if (error < 0) {
                log_debug("qmp_capabilities refused: %s: %s", strna(error_class), strna(error_desc));
                monitor_disconnect(m, error == -EREMOTEIO ? -EPROTO : error);
                return;
        }
        m->state = MONITOR_READY;
        m->negotiation_timer = sd_event_source_disable_unref(m->negotiation_timer);
        log_debug("QMP negotiation done.");
        if (m->cb.ready)
                m->cb.ready(m, m->userdata);
}

static const char *object_get_string(JsonObject *o, const char *name) {
        JsonNode *n = json_object_get_member(o, name);
        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
                return NULL;
        return json_node_get_string(n);
}

static JsonObject *object_get_object(JsonObject *o, const char *name) {
        JsonNode *n = json_object_get_member(o, name);
        if (!n || !JSON_NODE_HOLDS_OBJECT(n))
                return NULL;
        return json_node_get_object(n);
}

static QemuCommand *monitor_take_sent(QemuMonitor *m, JsonObject *o) {
        JsonNode *n = json_object_get_member(o, "id");
        int64_t id;

        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
                return NULL;
        id = json_node_get_int(n);
        for (GList *l = m->sent.head; l; l = l->next) {
                QemuCommand *c = l->data;
                if (c->id != id)
                        continue;
                g_queue_delete_link(&m->sent, l);
                if (c->passes_fd)
                        m->n_sent_with_fd--;
                return c;
        }
        return NULL;
}

static int monitor_dispatch_reply(QemuMonitor *m, JsonObject *o, JsonNode *ret) {
        QemuCommand *c = monitor_take_sent(m, o);
        JsonObject *e;

        if (!c) {
                /* A reply whose command timed out, or QEMU's answer to input it could not parse
                 * (which has no id): nobody waits for it. */
                log_debug("Ignoring QMP reply without a waiting command.");
                return 0;
        }
        c->timer = sd_event_source_disable_unref(c->timer);
        if (c->reply) {
                if (ret)
                        c->reply(m, 0, NULL, NULL, ret, c->userdata);
                else {
                        e = object_get_object(o, "error");
                        c->reply(m, -EREMOTEIO, e ? object_get_string(e, "class") : NULL,
                                 e ? object_get_string(e, "desc") : NULL, NULL, c->userdata);
                }
        }
        command_free(c);
        return 0;
}

static int monitor_dispatch_message(QemuMonitor *m, JsonObject *o) {
        JsonNode *ret;
        const char *name;
        int r;

        if (m->state == MONITOR_GREETING) {
                if (!object_get_object(o, "QMP"))
                        return -EBADMSG;
                m->state = MONITOR_NEGOTIATING;
                r = command_queue(m, "qmp_capabilities", NULL, -EBADF, true, UINT64_MAX,
                                  on_capabilities_reply, NULL, NULL);
                if (r < 0)
                        return r;
                return 0;
        }

        if (json_object_has_member(o, "event")) {
                name = object_get_string(o, "event");
                if (!name)
                        return -EBADMSG;
                log_debug("QMP event %s", name);
                if (m->cb.event)
                        m->cb.event(m, name, object_get_object(o, "data"), m->userdata);
                return 0;
        }

        ret = json_object_get_member(o, "return");
        if (ret || json_object_has_member(o, "error"))
                return monitor_dispatch_reply(m, o, ret);

        return -EBADMSG;
}

static int monitor_dispatch_line(QemuMonitor *m, const char *line, size_t len) {
        g_autoptr(GError) error = NULL;
        g_autoptr(JsonNode) root = NULL;

        while (len > 0 && strchr(" \t\r", line[len - 1]))
                len--;
        if (len == 0)
                return 0;
        if (!json_parser_load_from_data(m->parser, line, (gssize) len, &error)) {
                log_debug("QMP message is not JSON: %s", error->message);
                return -EBADMSG;
        }
        root = json_parser_steal_root(m->parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root))
                return -EBADMSG;
        return monitor_dispatch_message(m, json_node_get_object(root));
}

/* Dispatches every complete line in the buffer; stops when a callback ended the connection. */
static int monitor_process_input(QemuMonitor *m) {
        size_t start = 0;
        int r;

        while (m->state != MONITOR_CLOSED) {
                char *nl = memchr(m->rbuf + m->rscan, '\n', m->rsize - m->rscan);
                size_t line_start = start;

                if (!nl) {
                        m->rscan = m->rsize;
                        break;
                }
                start = m->rscan = (size_t) (nl - m->rbuf) + 1;
                if (start - 1 - line_start > QEMU_MONITOR_MESSAGE_MAX)
                        return -EMSGSIZE;
                r = monitor_dispatch_line(m, m->rbuf + line_start, start - 1 - line_start);
                if (r < 0)
                        return r;
        }
        if (m->state == MONITOR_CLOSED)
                return 0;

        /* Only when lines were consumed: a long line arriving in many reads must not be moved
         * onto itself after each one. */
        if (start > 0) {
                memmove(m->rbuf, m->rbuf + start, m->rsize - start);
                m->rsize -= start;
                m->rscan -= start;
        }
        if (m->rsize > QEMU_MONITOR_MESSAGE_MAX)
                return -EMSGSIZE;
        if (m->ralloc > READ_BUFFER_KEEP && m->rsize + READ_CHUNK <= READ_BUFFER_KEEP) {
                char *p = realloc(m->rbuf, READ_BUFFER_KEEP);
                if (p) {
                        m->rbuf = p;
                        m->ralloc = READ_BUFFER_KEEP;
                }
        }
        return 0;
}

/* Returns 1 when data arrived, 0 when there was none, -EPIPE at the end of the stream. */
static int monitor_read(QemuMonitor *m) {
        ssize_t n;

        if (m->ralloc - m->rsize < READ_CHUNK) {
                size_t want = MAX(m->ralloc * 2, m->rsize + READ_CHUNK);
                char *p = realloc(m->rbuf, want);
                if (!p)
                        return -ENOMEM;
                m->rbuf = p;
                m->ralloc = want;
        }
        n = recv(m->fd, m->rbuf + m->rsize, m->ralloc - m->rsize, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                /* QEMU exiting with our unread bytes in its queue resets instead of closing. */
                return errno == ECONNRESET ? -EPIPE : -errno;
        }
        if (n == 0)
                return -EPIPE;
        m->rsize += (size_t) n;
        return 1;
}

static int monitor_write(QemuMonitor *m) {
        for (;;) {
                struct iovec iov[WRITE_IOV_MAX];
                union {
                        struct cmsghdr cmsghdr;
                        uint8_t buf[CMSG_SPACE(sizeof(int))];
                } control = {};
                struct msghdr mh = { .msg_iov = iov };
                QemuCommand *first = g_queue_peek_head(&m->out);
                size_t n = 0;
                ssize_t k;

                if (!first || m->write_failed || !command_may_go(m, first))
                        return 0;

                for (GList *l = m->out.head; l && n < WRITE_IOV_MAX; l = l->next) {
                        QemuCommand *c = l->data;
                        /* An fd-passing command starts its own sendmsg() and ends it. */
                        if (n > 0 && (c->fd >= 0 || !command_may_go(m, c)))
                                break;
                        iov[n++] = (struct iovec) { c->buf + c->written, c->size - c->written };
                        if (c->fd >= 0 || c->passes_fd)
                                break;
                }
                mh.msg_iovlen = n;
                if (first->fd >= 0) {
                        struct cmsghdr *cmsg;
                        mh.msg_control = &control;
                        mh.msg_controllen = sizeof(control);
                        cmsg = CMSG_FIRSTHDR(&mh);
                        cmsg->cmsg_level = SOL_SOCKET;
                        cmsg->cmsg_type = SCM_RIGHTS;
                        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(cmsg), &first->fd, sizeof(int));
                }

                k = sendmsg(m->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN)
                                return 0;
                        if (errno == EINTR)
                                continue;
                        if (errno == EPIPE || errno == ECONNRESET) {
                                /* Replies may still wait in our receive queue: let the reading
                                 * side drain them and end the connection at EOF. */
                                m->write_failed = true;
                                return 0;
                        }
                        return -errno;
                }
                if (k > 0 && first->fd >= 0) {
                        first->fd = safe_close(first->fd);
                        first->passes_fd = true;
                }
                while (k > 0) {
                        QemuCommand *c = g_queue_peek_head(&m->out);
                        size_t take = MIN((size_t) k, c->size - c->written);
                        c->written += take;
                        k -= (ssize_t) take;
                        if (c->written == c->size) {
                                g_queue_pop_head(&m->out);
                                g_queue_push_tail(&m->sent, c);
                                if (c->passes_fd)
                                        m->n_sent_with_fd++;
                        }
                }
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_(monitor_unrefp) QemuMonitor *m = monitor_ref(userdata);
        int r;

        if (m->state == MONITOR_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(m->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        monitor_disconnect(m, -error);
                        return 0;
                }
                m->state = MONITOR_GREETING;
                r = monitor_update_io(m);
                if (r < 0)
                        monitor_disconnect(m, r);
                return 0;
        }

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                r = monitor_read(m);
                if (r > 0)
                        r = monitor_process_input(m);
                if (r < 0) {
                        monitor_disconnect(m, r == -EPIPE ? 0 : r);
                        return 0;
                }
        }

        if (m->state != MONITOR_CLOSED && (revents & EPOLLOUT)) {
                r = monitor_write(m);
                if (r < 0) {
                        monitor_disconnect(m, r);
                        return 0;
                }
        }

        r = monitor_update_io(m);
        if (r < 0)
                monitor_disconnect(m, r);
        return 0;
}

static int on_negotiation_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        monitor_disconnect(userdata, -ETIMEDOUT);
        return 0;
}

static int add_timer(sd_event *e, sd_event_source **ret, uint64_t timeout_usec,
                     sd_event_time_handler_t handler, void *userdata) {
        uint64_t now;
        int r;

        r = sd_event_now(e, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        return sd_event_add_time(e, ret, CLOCK_MONOTONIC,
                                 timeout_usec > UINT64_MAX - now ? UINT64_MAX - 1 : now + timeout_usec,
                                 0, handler, userdata);
}

static int monitor_new(sd_event *event, int fd, MonitorState state, const QemuMonitorCallbacks *cb,
                       void *userdata, QemuMonitor **ret) {
        _cleanup_close_ int fd_close = fd;
        QemuMonitor *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        *m = (QemuMonitor) {
                .n_ref = 1,
                .state = state,
                .event = sd_event_ref(event),
                .fd = TAKE_FD(fd_close),
                .cb = cb ? *cb : (QemuMonitorCallbacks) {},
                .userdata = userdata,
                .parser = json_parser_new(),
                .out = G_QUEUE_INIT,
                .sent = G_QUEUE_INIT,
                .next_id = 1,
        };
        m->io_events = state == MONITOR_CONNECTING ? EPOLLOUT : EPOLLIN;
        r = sd_event_add_io(event, &m->io, m->fd, m->io_events, on_io, m);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(m->io, "qemu-monitor");
        r = add_timer(event, &m->negotiation_timer, QEMU_MONITOR_TIMEOUT_DEFAULT_USEC,
                      on_negotiation_timeout, m);
        if (r < 0)
                goto fail;
        *ret = m;
        return 0;
fail:
        qemu_monitor_free(m);
        return r;
}

int qemu_monitor_connect_fd(sd_event *event, int fd, const QemuMonitorCallbacks *cb,
                            void *userdata, QemuMonitor **ret) {
        _cleanup_close_ int fd_close = fd;
        int flags;

        if (!event || fd < 0 || !ret)
                return -EINVAL;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return -errno;
        return monitor_new(event, TAKE_FD(fd_close), MONITOR_GREETING, cb, userdata, ret);
}

int qemu_monitor_connect(sd_event *event, const char *socket_path, const QemuMonitorCallbacks *cb,
                         void *userdata, QemuMonitor **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        MonitorState state = MONITOR_GREETING;
        size_t len;

        if (!event || !socket_path || !ret)
                return -EINVAL;
        len = strlen(socket_path);
        if (len == 0)
                return -EINVAL;
        if (len >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, socket_path, len);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1)) < 0) {
                if (errno != EINPROGRESS)
                        return -errno;
                state = MONITOR_CONNECTING;
        }
        return monitor_new(event, TAKE_FD(fd), state, cb, userdata, ret);
}

static int on_command_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        QemuCommand *c = userdata;
        _cleanup_(monitor_unrefp) QemuMonitor *m = monitor_ref(c->monitor);
        QemuMonitorReply reply = TAKE_PTR(c->reply);
        void *reply_userdata = c->userdata;
        int r;

        c->timer = sd_event_source_disable_unref(c->timer);
        /* Never started: forget it. Otherwise it stays queued so that the byte stream and the
         * id matching stay intact; its reply will be dropped. */
        if (c->written == 0 && g_queue_remove(&m->out, c))
                command_free(c);

        log_debug("QMP command timed out.");
        if (reply)
                reply(m, -ETIMEDOUT, NULL, NULL, NULL, reply_userdata);
        r = monitor_update_io(m);
        if (r < 0)
                monitor_disconnect(m, r);
        return 0;
}

static char *command_serialize(const char *command, JsonObject *args_take, int64_t id, size_t *ret_size) {
        g_autoptr(JsonObject) o = json_object_new();
        g_autoptr(JsonNode) node = NULL;
        g_autofree char *s = NULL;
        char *buf;

        json_object_set_string_member(o, "execute", command);
        if (args_take)
                json_object_set_object_member(o, "arguments", args_take);
        json_object_set_int_member(o, "id", id);
        node = json_node_init_object(json_node_alloc(), o);
        s = json_to_string(node, FALSE);
        buf = g_strconcat(s, "\n", NULL);
        *ret_size = strlen(buf);
        return buf;
}

static int command_queue(QemuMonitor *m, const char *command, JsonObject *args, int fd_take,
                         bool internal, uint64_t timeout_usec, QemuMonitorReply reply,
                         void *userdata, QemuCommand **ret) {
        QemuCommand *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                safe_close(fd_take);
                if (args)
                        json_object_unref(args);
                return -ENOMEM;
        }
        *c = (QemuCommand) {
                .monitor = m,
                .id = m->next_id++,
                .fd = fd_take,
                .internal = internal,
                .reply = reply,
                .userdata = userdata,
        };
        c->buf = command_serialize(command, args, c->id, &c->size);

        if (timeout_usec != UINT64_MAX) {
                r = add_timer(m->event, &c->timer, timeout_usec ?: QEMU_MONITOR_TIMEOUT_DEFAULT_USEC,
                              on_command_timeout, c);
                if (r < 0) {
                        command_free(c);
                        return r;
                }
        }

        if (internal)
                g_queue_push_head(&m->out, c);
        else
                g_queue_push_tail(&m->out, c);
        r = monitor_update_io(m);
        if (r < 0) {
                g_queue_remove(&m->out, c);
                command_free(c);
                return r;
        }
        log_debug("QMP command %s queued (id %" PRIi64 ")", command, c->id);
        if (ret)
                *ret = c;
        return 0;
}

int qemu_monitor_command_with_fd(QemuMonitor *mon, const char *command, JsonObject *args, int fd,
                                 uint64_t timeout_usec, QemuMonitorReply reply, void *userdata) {
        _cleanup_close_ int fd_copy = -EBADF;

        if (!mon || !command || !*command) {
                if (args)
                        json_object_unref(args);
                return -EINVAL;
        }
        if (mon->state == MONITOR_CLOSED) {
                if (args)
                        json_object_unref(args);
                return -ENOTCONN;
        }
        if (g_queue_get_length(&mon->out) + g_queue_get_length(&mon->sent) >= QEMU_MONITOR_COMMANDS_MAX) {
                if (args)
                        json_object_unref(args);
                return -EBUSY;
        }
        if (fd >= 0) {
                fd_copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (fd_copy < 0) {
                        if (args)
                                json_object_unref(args);
                        return -errno;
                }
        }
        return command_queue(mon, command, args, TAKE_FD(fd_copy), false, timeout_usec, reply,
                             userdata, NULL);
}

int qemu_monitor_command(QemuMonitor *mon, const char *command, JsonObject *args,
                         uint64_t timeout_usec, QemuMonitorReply reply, void *userdata) {
        return qemu_monitor_command_with_fd(mon, command, args, -EBADF, timeout_usec, reply, userdata);
}

QemuMonitor *qemu_monitor_free(QemuMonitor *mon) {
        if (!mon)
                return NULL;
        mon->freed = true;
        mon->cb = (QemuMonitorCallbacks) {};
        monitor_disconnect(mon, 0);
        monitor_unref(mon);
        return NULL;
}

bool qemu_monitor_is_ready(QemuMonitor *mon) {
        return mon && mon->state == MONITOR_READY;
}

static const char *const run_state_names[_QEMU_RUN_STATE_MAX] = {
        [QEMU_RUN_STATE_RUNNING] = "running",
        [QEMU_RUN_STATE_PRELAUNCH] = "prelaunch",
        [QEMU_RUN_STATE_PAUSED] = "paused",
        [QEMU_RUN_STATE_INMIGRATE] = "inmigrate",
        [QEMU_RUN_STATE_FINISH_MIGRATE] = "finish-migrate",
        [QEMU_RUN_STATE_POSTMIGRATE] = "postmigrate",
        [QEMU_RUN_STATE_SUSPENDED] = "suspended",
        [QEMU_RUN_STATE_SHUTDOWN] = "shutdown",
        [QEMU_RUN_STATE_ERROR] = "error",
};

QemuRunState qemu_monitor_status_from_string(const char *s) {
        static const struct {
                const char *qemu;
                QemuRunState state;
        } table[] = {
                { "running", QEMU_RUN_STATE_RUNNING },
                { "prelaunch", QEMU_RUN_STATE_PRELAUNCH },
                { "paused", QEMU_RUN_STATE_PAUSED },
                { "debug", QEMU_RUN_STATE_PAUSED },
                { "save-vm", QEMU_RUN_STATE_PAUSED },
                { "restore-vm", QEMU_RUN_STATE_PAUSED },
                { "colo", QEMU_RUN_STATE_PAUSED },
                { "inmigrate", QEMU_RUN_STATE_INMIGRATE },
                { "finish-migrate", QEMU_RUN_STATE_FINISH_MIGRATE },
                { "postmigrate", QEMU_RUN_STATE_POSTMIGRATE },
                { "suspended", QEMU_RUN_STATE_SUSPENDED },
                { "shutdown", QEMU_RUN_STATE_SHUTDOWN },
                { "io-error", QEMU_RUN_STATE_ERROR },
                { "internal-error", QEMU_RUN_STATE_ERROR },
                { "guest-panicked", QEMU_RUN_STATE_ERROR },
                { "watchdog", QEMU_RUN_STATE_ERROR },
        };

        if (!s)
                return _QEMU_RUN_STATE_INVALID;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcmp(s, table[i].qemu) == 0)
                        return table[i].state;
        return _QEMU_RUN_STATE_INVALID;
}

const char *qemu_run_state_to_string(QemuRunState state) {
        if (state < 0 || state >= _QEMU_RUN_STATE_MAX)
                return NULL;
        return run_state_names[state];
}
