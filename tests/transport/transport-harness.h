/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The harness of test-transport: helper processes with their own NOTIFY_SOCKET, a pair of
 * helpers with the two fake QEMUs, and byte streams anyone can regenerate from a seed. */

#include <gio/gio.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define TOKEN "5f1e0c8a9b7d6e4f3a2b1c0d9e8f7a6b"
#define PREAMBLE_SIZE 58
#define WAIT_MSEC (120 * 1000)  /* generous: 2 cores shared with other work */
#define MiB (1024 * 1024)
#define PENDING_MAX_GUESS 16  /* the helper keeps 16 unidentified connections */

extern const char *helper_path;
extern char *pki;
extern char *tmpdir;

typedef struct Helper {
        const char *name;
        GPid pid;
        int pidfd;
        int notify_fd;
        char *notify_path;
        char *log_path;
        char *status;      /* last STATUS= */
        int errno_value;   /* last ERRNO= */
        bool ready;
        int exit_status;   /* -1 while running; 128+sig when killed */
} Helper;

typedef struct Pair {
        Helper *source, *destination;
        char *source_socket;       /* the source helper creates it; "source QEMU" connects */
        char *incoming_socket;     /* "destination QEMU" listens */
        int incoming_fd;
        char *peer;                /* 127.0.0.1:port from the destination's READY status */
        char *token_path;
} Pair;

typedef struct PairOptions {
        const char *source_pki, *destination_pki;
        const char *peer_name;
        bool source_plaintext, destination_plaintext;
        const char *allowed_dn;
        const char *handshake_timeout;
        bool no_source;
        bool qemu_incoming;        /* a real QEMU listens on incoming_socket, not the test */
} PairOptions;

typedef struct Flow {
        int write_fd, read_fd;   /* the two ends of the tunnel for this direction */
        uint64_t seed;
        size_t length;           /* SIZE_MAX: write until an error */
        bool half_close;         /* shutdown(SHUT_WR) after writing */
        /* results */
        size_t written, received;
        bool write_error, mismatch, eof;
        GThread *writer, *reader;
        /* mid-stream faults wait for the reader to pass a mark */
        GMutex lock;
        GCond cond;
        size_t mark;
        bool mark_passed;
} Flow;

/* A byte sequence anyone can regenerate from its seed (xorshift64*), to check every byte. */
typedef struct Pattern {
        uint64_t state;
        uint8_t bytes[8];
        unsigned used;
} Pattern;

void pattern_init(Pattern *g, uint64_t seed);
void pattern_fill(Pattern *g, uint8_t *buf, size_t n);

/* One stream as QEMU sees it: the source end and the destination end, data both ways. */
typedef struct Stream {
        int source_fd, destination_fd;
        Flow forward, back;
} Stream;

/* Makes tmpdir and the certificates (FERRY_TRANSPORT and FERRY_MAKE_PKI from meson); false
 * when run outside meson. */
bool harness_setup(void);
void harness_cleanup(void);

int64_t deadline_after(int msec);
int msec_left(int64_t deadline);
void helper_wait(Helper *h, bool until_exit);
Helper *helper_start(const char *name, const char *const *args);
/* The same for another program (ferry-peer), with the same notify socket and log. */
Helper *helper_start_program(const char *program, const char *name, const char *const *args);
/* The same with stdin and stdout on stdio_fd (-1: none and the log), as --bus-* want them. */
Helper *helper_start_with_stdio(const char *name, const char *const *args, int stdio_fd);
/* Both: program, and stdin/stdout on stdio_fd (-1: none and the log). */
Helper *helper_start_full(const char *program, const char *name, const char *const *args, int stdio_fd);
void helper_free(Helper *h);
char *helper_log(Helper *h);
void assert_status(Helper *h, int exit_status, const char *status_prefix, const char *status_part);
void pair_start_source(Pair *p, const PairOptions *o);
Pair *pair_start(const PairOptions *o);
void pair_free(Pair *p);
Pair *pair_new_listening(void);
int tls_client_without_certificate(int fd);
int connect_unix(const char *path);
int accept_timeout(int listen_fd, int msec);
void flow_start(Flow *f, int write_fd, int read_fd, uint64_t seed, size_t length);
void flow_join(Flow *f);
void flow_assert_exact(Flow *f);
void streams_open(Pair *p, Stream *s, size_t n);
void streams_run(Stream *s, size_t n, size_t forward, size_t back);
uint64_t streams_total(Stream *s, size_t n, bool forward);
/* n streams with these byte counts each way through the pair (taken and freed), every byte and
 * both helpers' "done:" status lines checked. */
void run_streams_on_pair(Pair *p, size_t n, size_t forward, size_t back);
void run_streams_test(const PairOptions *o, size_t n, size_t forward, size_t back);
int connect_peer(Pair *p);
unsigned count_fds(GPid pid);
long rss_kib(GPid pid);
bool wait_closed_by_peer(int fd, int64_t deadline);
