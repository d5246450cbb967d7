/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hook.h"
#include "log.h"

struct Hook {
        pid_t pid;
        int in_fd, out_fd;
        sd_event_source *in_source, *out_source, *child_source, *timer;
        char *input;
        size_t input_len, input_done;
        GString *output;
        bool exited, eof;
        int status;
        HookDone done;
        void *userdata;
};

Hook *hook_free(Hook *h) {
        if (!h)
                return NULL;
        sd_event_source_disable_unref(h->in_source);
        sd_event_source_disable_unref(h->out_source);
        sd_event_source_disable_unref(h->timer);
        if (h->child_source) {
                /* Still running: it must not outlive its purpose. */
                if (!h->exited)
                        (void) sd_event_source_send_child_signal(h->child_source, SIGKILL, NULL, 0);
                sd_event_source_disable_unref(h->child_source);
        }
        safe_close(h->in_fd);
        safe_close(h->out_fd);
        free(h->input);
        if (h->output)
                g_string_free(h->output, TRUE);
        return mfree(h);
}

static void finish(Hook *h, int error, const char *message) {
        HookDone done = h->done;

        if (!done)
                return;
        h->done = NULL;
        h->timer = sd_event_source_disable_unref(h->timer);
        done(h->userdata, error, message, error == 0 ? h->output->str : NULL);
}

static void maybe_done(Hook *h) {
        g_autofree char *msg = NULL;

        if (!h->exited || !h->eof)
                return;
        if (WIFEXITED(h->status) && WEXITSTATUS(h->status) == 0) {
                finish(h, 0, NULL);
                return;
        }
        msg = WIFEXITED(h->status) ? g_strdup_printf("the hook exited with status %d", WEXITSTATUS(h->status))
                                   : g_strdup_printf("the hook was killed by signal %d", WTERMSIG(h->status));
        finish(h, -EPERM, msg);
}

static int on_input(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Hook *h = userdata;
        ssize_t n = write(fd, h->input + h->input_done, h->input_len - h->input_done);

        if (n < 0 && errno == EAGAIN)
                return 0;
        if (n > 0)
                h->input_done += (size_t) n;
        /* Done, or the hook does not read its input (EPIPE): either way, stdin closes. */
        if (n < 0 || h->input_done >= h->input_len) {
                h->in_source = sd_event_source_disable_unref(h->in_source);
                h->in_fd = safe_close(h->in_fd);
        }
        return 0;
}

static int on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Hook *h = userdata;
        char buf[16384];
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n < 0 && errno == EAGAIN)
                return 0;
        if (n > 0) {
                if (h->output->len + (size_t) n > HOOK_OUTPUT_MAX) {
                        finish(h, -E2BIG, "the hook wrote more than 1 MiB");
                        return 0;
                }
                g_string_append_len(h->output, buf, n);
                return 0;
        }
        h->eof = true;
        h->out_source = sd_event_source_disable_unref(h->out_source);
        h->out_fd = safe_close(h->out_fd);
        maybe_done(h);
        return 0;
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Hook *h = userdata;

        h->exited = true;
        h->status = si->si_code == CLD_EXITED ? W_EXITCODE(si->si_status, 0) : si->si_status;
        maybe_done(h);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Hook *h = userdata;
        if (h->child_source && !h->exited)
                (void) sd_event_source_send_child_signal(h->child_source, SIGKILL, NULL, 0);
        finish(h, -ETIMEDOUT, "the hook did not finish within 30 s");
        return 0;
}

int hook_run(sd_event *event, char **argv, const char *input, HookDone done, void *userdata, Hook **ret) {
        _cleanup_(hook_freep) Hook *h = NULL;
        int in[2], out[2], r;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        *h = (Hook) { .in_fd = -EBADF, .out_fd = -EBADF, .done = done, .userdata = userdata,
                      .input = strdup(input), .input_len = strlen(input), .output = g_string_new(NULL) };
        if (!h->input)
                return -ENOMEM;
        if (pipe2(in, O_CLOEXEC) < 0)
                return -errno;
        if (pipe2(out, O_CLOEXEC) < 0) {
                safe_close(in[0]);
                safe_close(in[1]);
                return -errno;
        }
        h->pid = fork();
        if (h->pid < 0) {
                r = -errno;
                safe_close(in[0]); safe_close(in[1]); safe_close(out[0]); safe_close(out[1]);
                return r;
        }
        if (h->pid == 0) {
                char *envp[] = { (char *) "PATH=/usr/sbin:/usr/bin:/sbin:/bin", (char *) "LANG=C.UTF-8", NULL };
                sigset_t all;
                /* The daemon blocks signals for sd-event; a hook starts with none blocked. */
                sigemptyset(&all);
                (void) sigprocmask(SIG_SETMASK, &all, NULL);
                if (dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0)
                        _exit(127);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        safe_close(in[0]);
        safe_close(out[1]);
        h->in_fd = in[1];
        h->out_fd = out[0];
        (void) fcntl(h->in_fd, F_SETFL, O_NONBLOCK);
        (void) fcntl(h->out_fd, F_SETFL, O_NONBLOCK);

        r = sd_event_add_child(event, &h->child_source, h->pid, WEXITED, on_child_exit, h);
        if (r < 0) {
                (void) kill(h->pid, SIGKILL);
                (void) waitpid(h->pid, NULL, 0);
                return r;
        }
        r = sd_event_add_io(event, &h->in_source, h->in_fd, EPOLLOUT, on_input, h);
        if (r >= 0)
                r = sd_event_add_io(event, &h->out_source, h->out_fd, EPOLLIN, on_output, h);
        if (r >= 0)
                r = sd_event_add_time_relative(event, &h->timer, CLOCK_MONOTONIC, HOOK_TIMEOUT_USEC, 0, on_timeout, h);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(h);
        return 0;
}
