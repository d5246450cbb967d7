/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"
#include "domain.h"
#include "ferry-bus.h"
#include "fileio.h"
#include "log.h"
#include "manager.h"
#include "migration-internal.h"
#include "migration-postcopy.h"
#include "migration-tunnel.h"
#include "systemd-units.h"

#define TUNNEL_SCHEME "ferry-tunnel://"
/* The shared peer port; its dispatcher hands each stream to <tunnel dir>/peer-<token>.sock. */
#define PEER_SOCKET_UNIT "ferry-peer.socket"
/* The group of the helpers, ferry-peer and ferryd (sysusers.d/ferry.conf): how the dynamic
 * user of a destination helper reaches QEMU's incoming socket and ferry-peer reaches the
 * helper's dispatch socket, with no capability anywhere. */
#define TRANSPORT_GROUP "ferry-transport"
#define TUNNEL_TOKEN_LEN 32
/* How long a failed source QEMU waits for its helper to say why (it usually has already). */
#define TUNNEL_EXPLAIN_USEC (3ULL * 1000000ULL)

struct MigrationTunnel {
        Migration *migration;
        char *unit;            /* ferry-transport-<id>.service */
        char *token_path;      /* 0600, root's, under /run/ferry/transport */
        char *address;         /* destination: what the source connects to */
        char *socket_path;     /* QEMU's side: the incoming QEMU's socket or the source helper's */
        GPtrArray *argv;       /* destination: the helper's, until the peer port is up */
        char *dispatch_path;   /* destination: where ferry-peer hands the helper its streams */
        UnitJob *job;
        UnitWatch *watch;
        TunnelReady ready_cb;
        sd_event_source *explain_timer;
        char *failure;         /* the helper's "failed: ..." status, once it failed */
        bool ready, failed, ended;
};

/* The helper's unit and runtime directory: ferry-transport-<id>, then -<id>-<n> for the pairs
 * a post-copy recovery starts (the old unit may still be stopping). */
static char *helper_name(Migration *m) {
        return m->tunnel_generation == 0 ? g_strdup_printf("ferry-transport-%u", m->id)
                                         : g_strdup_printf("ferry-transport-%u-%u", m->id, m->tunnel_generation);
}

static char *tunnel_dir(Manager *manager) {
        return g_build_filename(manager->runtime_dir, "transport", NULL);
}

static bool token_is_valid(const char *s) {
        if (!s || strlen(s) != TUNNEL_TOKEN_LEN)
                return false;
        for (const char *p = s; *p; p++)
                if (!g_ascii_isxdigit(*p) || g_ascii_isupper(*p))
                        return false;
        return true;
}

static int make_token(char **ret) {
        uint8_t b[TUNNEL_TOKEN_LEN / 2];
        GString *s;

        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                return -errno ?: -EIO;
        s = g_string_new(NULL);
        for (size_t i = 0; i < sizeof(b); i++)
                g_string_append_printf(s, "%02x", b[i]);
        *ret = g_string_free(s, FALSE);
        return 0;
}

/* The options that have no meaning, or no tested meaning, with the tunnel. */
static int check_common(Manager *manager, const MigrationOptions *o, char **ret_error) {
        if (o->tunnel_plaintext && !o->tunnelled) {
                *ret_error = g_strdup("tunnel_plaintext needs the tunnelled option");
                return -EINVAL;
        }
        if (!o->tunnelled)
                return 0;
        if (o->offline) {
                *ret_error = g_strdup("an offline migration moves no stream: the tunnelled option does not apply");
                return -EINVAL;
        }
        if (o->tls) {
                *ret_error = g_strdup("tunnelled and tls exclude each other: the tunnel encrypts the stream itself");
                return -EINVAL;
        }
        if (o->copy_storage != MIGRATION_COPY_STORAGE_NONE) {
                /* The disks would go over NBD beside the tunnel, not through it. */
                *ret_error = g_strdup("tunnelled and copy_storage cannot be combined yet: the NBD streams do not go "
                                      "through the tunnel");
                return -EINVAL;
        }
        if (o->hypervisor_uri || o->listen_address) {
                *ret_error = g_strdup("a tunnelled migration takes no hypervisor URI or listen address: "
                                      "the helpers choose their sockets and port");
                return -EINVAL;
        }
        if (o->tunnel_plaintext && !manager->config.migration_tunnel_plaintext) {
                *ret_error = g_strdup("this host does not allow plaintext tunnels ([Migration] TunnelPlaintext=no)");
                return -EPERM;
        }
        return 0;
}

int tunnel_check_source_options(Manager *manager, MigrationOptions *o, bool managed, char **ret_error) {
        int r;

        if (o->tunnel_token) {
                *ret_error = g_strdup("tunnel_token is for PrepareMigration: the source makes it");
                return -EINVAL;
        }
        r = check_common(manager, o, ret_error);
        if (r < 0)
                return r == -EPERM ? -EINVAL : r;
        if (!o->tunnelled)
                return 0;
        if (o->direct || managed) {
                *ret_error = g_strdup("the tunnelled option needs the peer-to-peer flow (Domain.Migrate to a ferryd), "
                                      "not direct or managed direct");
                return -EINVAL;
        }
        return make_token(&o->tunnel_token);
}

int tunnel_check_destination_options(Manager *manager, const MigrationOptions *o, char **ret_error) {
        int r;

        r = check_common(manager, o, ret_error);
        if (r < 0)
                return r;
        if (!o->tunnelled)
                return 0;
        if (!token_is_valid(o->tunnel_token)) {
                *ret_error = g_strdup("a tunnelled migration needs tunnel_token: 32 lower-case hex digits");
                return -EINVAL;
        }
        return 0;
}

/* QEMU's incoming sockets: root's directory, which the group may only enter. */
static char *incoming_dir(Manager *manager) {
        return g_build_filename(manager->runtime_dir, "transport-in", NULL);
}

char *tunnel_incoming_uri(Manager *manager, const char *domain_uuid) {
        g_autofree char *dir = incoming_dir(manager);
        if (mkdir(dir, 0710) < 0 && errno != EEXIST)
                return NULL;
        return g_strdup_printf("unix:%s/incoming-%s.sock", dir, domain_uuid);
}

MigrationTunnel *tunnel_free(MigrationTunnel *t) {
        if (!t)
                return NULL;
        unit_job_free(t->job);
        unit_watch_free(t->watch);
        sd_event_source_disable_unref(t->explain_timer);
        if (t->token_path)
                (void) unlink(t->token_path);
        free(t->token_path);
        free(t->unit);
        free(t->address);
        free(t->socket_path);
        free(t->dispatch_path);
        free(t->failure);
        if (t->argv)
                g_ptr_array_unref(t->argv);
        return mfree(t);
}

static void tunnel_ready(MigrationTunnel *t, int error, const char *message) {
        TunnelReady cb = t->ready_cb;

        t->ready_cb = NULL;
        if (cb)
                cb(t->migration, error, message, t->address);
}

/* The helper failed: the migration fails with its words, on both sides the way a QEMU failure
 * would (the source resumes its guest, the destination throws its copy away). */
static void tunnel_failed(MigrationTunnel *t, const char *status, const char *result) {
        Migration *m = t->migration;
        g_autofree char *msg = NULL;

        if (t->failed)
                return;
        t->failed = true;
        t->failure = strdup(status ?: "failed");
        if (status && g_str_has_prefix(status, "failed:"))
                msg = g_strdup_printf("the tunnel helper %s %s", t->unit, status);
        else
                /* Killed, or gone without a word: what systemd saw, and its last status. */
                msg = g_strdup_printf("the tunnel helper %s ended unexpectedly (%s; last status: %s)", t->unit,
                                      result && *result ? result : "failed", status && *status ? status : "none");
        if (t->ready_cb) {
                tunnel_ready(t, -EIO, msg);
                return;
        }
        if (m->state != MIGRATION_RUNNING)
                return;
        t->explain_timer = sd_event_source_disable_unref(t->explain_timer);
        if (migration_postcopy_started(m))
                /* After the switch neither half may be given up: QEMU pauses post-copy when its
                 * streams end, and Migration.Recover starts a new pair of helpers. */
                log_warning("Migration %u: %s; post-copy pauses until Migration.Recover.", m->id, msg);
        else if (m->direction == MIGRATION_OUTGOING)
                source_fail(m, FERRY_ERROR_MIGRATION_FAILED, msg);
        else {
                Domain *d = migration_domain(m);
                if (d && d->migration == m) {
                        domain_end_migration(d);
                        domain_discard_incoming(d);
                }
                migration_end(m, MIGRATION_FAILED, FERRY_ERROR_MIGRATION_FAILED, msg);
        }
}

static void on_unit_state(void *userdata, const char *active_state, const char *status_text, const char *result) {
        MigrationTunnel *t = userdata;

        log_debug("Migration %u: %s is %s (%s): %s", t->migration->id, t->unit, active_state, strna(result),
                  strna(status_text));
        /* "inactive" comes also before the start; after READY=1 it means the helper ended, which
         * is only right once it said "done". */
        if (strcmp(active_state, "failed") == 0 ||
            (strcmp(active_state, "inactive") == 0 && t->ready && !t->ended &&
             (!status_text || strncmp(status_text, "done:", 5) != 0)))
                tunnel_failed(t, status_text, result);
}

static void on_unit_started(void *userdata, int error, const char *message) {
        MigrationTunnel *t = userdata;

        t->job = unit_job_free(t->job);
        if (error < 0) {
                /* Failed before READY=1: the status it sent (if any) says why. */
                tunnel_failed(t, NULL, message ?: "cannot start");
                return;
        }
        t->ready = true;
        log_info("Migration %u: %s is ready.", t->migration->id, t->unit);
        tunnel_ready(t, 0, NULL);
}

static int write_token(MigrationTunnel *t, const char *dir, const char *token) {
        _cleanup_close_ int fd = -EBADF;
        g_autofree char *line = g_strdup_printf("%s\n", token);

        t->token_path = g_strdup_printf("%s/%u.token", dir, t->migration->id);
        (void) unlink(t->token_path);
        fd = open(t->token_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (write(fd, line, strlen(line)) != (ssize_t) strlen(line))
                return -EIO;
        return 0;
}

/* The x509 files as credentials: systemd copies them for the helper's dynamic user. A missing
 * file is named here; systemd would only say the unit failed. */
static int add_pki_credentials(GPtrArray *creds, const char *pki, bool source, char **ret_error) {
        static const char *const source_files[] = { "ca-cert.pem", "client-cert.pem", "client-key.pem", "ca-crl.pem" };
        static const char *const destination_files[] = { "ca-cert.pem", "server-cert.pem", "server-key.pem",
                                                          "ca-crl.pem", "allowed-dn" };
        const char *const *files = source ? source_files : destination_files;
        size_t n = source ? G_N_ELEMENTS(source_files) : G_N_ELEMENTS(destination_files);

        for (size_t i = 0; i < n; i++) {
                g_autofree char *path = g_build_filename(pki, files[i], NULL);
                if (access(path, R_OK) < 0) {
                        if (errno == ENOENT && (strcmp(files[i], "ca-crl.pem") == 0 || strcmp(files[i], "allowed-dn") == 0))
                                continue; /* optional */
                        *ret_error = g_strdup_printf("cannot read %s, which the tunnel's TLS needs: %s", path,
                                                     strerror(errno));
                        return -errno;
                }
                g_ptr_array_add(creds, g_strdup(files[i]));
                g_ptr_array_add(creds, g_steal_pointer(&path));
        }
        return 0;
}

/* The unit, with the options both roles share. argv ends with the role's own options.
 * Both run as dynamic users, with the token and x509 files as credentials: the source's socket
 * is reached by QEMU (root); the destination reaches QEMU's incoming socket and ferry-peer
 * reaches its dispatch socket through the group (docs/transport.md, "The transient units"). */
static int start_helper(MigrationTunnel *t, GPtrArray *argv, char **ret_error) {
        Migration *m = t->migration;
        Manager *manager = m->manager;
        bool source = m->direction == MIGRATION_OUTGOING;
        g_autofree char *dir = tunnel_dir(manager), *pki = g_build_filename(manager->config_dir, "pki", NULL);
        g_autofree char *description = NULL, *runtime = helper_name(m);
        g_autoptr(GPtrArray) creds = g_ptr_array_new_with_free_func(g_free);
        int r;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        r = write_token(t, dir, m->options.tunnel_token);
        if (r < 0)
                return r;
        g_ptr_array_add(argv, g_strdup_printf("--migration=%u", m->id));
        g_ptr_array_add(creds, g_strdup("token"));
        g_ptr_array_add(creds, g_strdup(t->token_path));
        if (!m->options.tunnel_plaintext) {
                r = add_pki_credentials(creds, pki, source, ret_error);
                if (r < 0)
                        return r;
        }
        g_ptr_array_add(creds, NULL);
        if (m->options.tunnel_plaintext)
                g_ptr_array_add(argv, g_strdup("--plaintext"));
        g_ptr_array_add(argv, NULL);

        t->unit = g_strdup_printf("%s.service", runtime);
        description = g_strdup_printf("Ferry migration tunnel %u (%s %s)", m->id,
                                      migration_direction_to_string(m->direction), m->domain_name);
        /* A failed helper of an earlier ferryd's migration with this id may linger. */
        (void) unit_reset_failed(manager_bus(manager), t->unit);
        r = unit_watch(manager_bus(manager), t->unit, on_unit_state, t, &t->watch);
        if (r < 0)
                return r;
        TransientService svc = {
                .name = t->unit,
                .description = description,
                .slice = "system.slice",
                .argv = (char **) argv->pdata,
                .notify = true,
                .collect_failed = true,
                .sandbox = true,
                /* The destination's streams come from ferry-peer as accepted sockets
                 * (SCM_RIGHTS); it never makes an IP socket itself. */
                .unix_sockets_only = !source,
                .dynamic_user = true,
                .supplementary_group = source ? NULL : TRANSPORT_GROUP,
                .runtime_directory = runtime,
                .credentials = (char **) creds->pdata,
        };
        return unit_start_transient(manager_bus(manager), &svc, on_unit_started, t, &t->job);
}

static MigrationTunnel *tunnel_new(Migration *m, TunnelReady ready) {
        MigrationTunnel *t = g_new0(MigrationTunnel, 1);
        t->migration = m;
        t->ready_cb = ready;
        m->tunnel = t;
        return t;
}

/* The peer port is listening (systemd's answer to StartUnit): now the helper, which the source
 * may reach as soon as Prepare answers. */
static void on_peer_socket_started(void *userdata, int error, const char *message) {
        MigrationTunnel *t = userdata;
        g_autoptr(GPtrArray) argv = TAKE_PTR(t->argv);
        g_autofree char *msg = NULL;
        int r;

        t->job = unit_job_free(t->job);
        if (error < 0) {
                /* Masked by the administrator (no tunnels here), or the port is taken. */
                msg = g_strdup_printf("cannot start %s, the shared peer port %u of tunnelled migrations: %s",
                                      PEER_SOCKET_UNIT, t->migration->manager->config.migration_tunnel_port,
                                      message ?: strerror(-error));
                tunnel_ready(t, error, msg);
                return;
        }
        r = start_helper(t, argv, &msg);
        if (r < 0) {
                if (!msg)
                        msg = g_strdup_printf("cannot start the tunnel helper: %s", strerror(-r));
                tunnel_ready(t, r, msg);
        }
}

int tunnel_start_destination(Migration *m, const char *domain_uuid, TunnelReady ready) {
        g_autofree char *incoming = tunnel_incoming_uri(m->manager, domain_uuid);
        g_autofree char *dir = tunnel_dir(m->manager), *dispatch_socket = NULL, *name = NULL;
        MigrationTunnel *t;
        int r;

        if (!incoming)
                return -errno ?: -EIO;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        t = tunnel_new(m, ready);
        /* No port of [Migration] Ports=: every tunnel shares the peer port, and ferry-peer finds
         * this helper by the token in each stream's preamble. */
        t->address = g_strdup_printf(TUNNEL_SCHEME "%s:%u", m->manager->hostname,
                                     m->manager->config.migration_tunnel_port);
        t->argv = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(t->argv, g_strdup(FERRY_LIBEXECDIR "/ferry-transport"));
        g_ptr_array_add(t->argv, g_strdup("--destination"));
        t->socket_path = g_strdup(incoming + strlen("unix:"));
        g_ptr_array_add(t->argv, g_strdup_printf("--qemu-socket=%s", t->socket_path));
        /* QEMU (root) made its socket: the helper's group may enter and connect. */
        g_autofree char *in_dir = incoming_dir(m->manager);
        r = share_with_group(in_dir, TRANSPORT_GROUP, 0710);
        if (r >= 0)
                r = share_with_group(t->socket_path, TRANSPORT_GROUP, 0660);
        if (r < 0)
                return r;
        /* ferry-peer looks for the token's socket here; the helper makes it in its runtime
         * directory (its dynamic user's), with the group. */
        name = helper_name(m);
        dispatch_socket = g_strdup_printf("/run/%s/dispatch.sock", name);
        t->dispatch_path = g_strdup_printf("%s/peer-%s.sock", dir, m->options.tunnel_token);
        (void) unlink(t->dispatch_path);
        if (symlink(dispatch_socket, t->dispatch_path) < 0)
                return -errno;
        g_ptr_array_add(t->argv, g_strdup_printf("--dispatch-socket=%s", dispatch_socket));
        g_ptr_array_add(t->argv, g_strdup("--dispatch-group=" TRANSPORT_GROUP));
        /* Started on demand (administrators mask it to forbid tunnels); already running is fine. */
        return unit_start(manager_bus(m->manager), PEER_SOCKET_UNIT, on_peer_socket_started, t, &t->job);
}

/* HOST:PORT as the destination said it, checked: it becomes an argument of the helper. */
static int parse_address(const char *address, char **ret_peer) {
        const char *p, *colon;

        if (!address || !g_str_has_prefix(address, TUNNEL_SCHEME))
                return -EINVAL;
        p = address + strlen(TUNNEL_SCHEME);
        colon = strrchr(p, ':');
        if (!colon || colon == p || p[0] == '-' || !colon[1] || strlen(p) > 300)
                return -EINVAL;
        for (const char *c = p; *c; c++)
                if (!g_ascii_isalnum(*c) && !strchr(".-:[]", *c))
                        return -EINVAL;
        for (const char *c = colon + 1; *c; c++)
                if (!g_ascii_isdigit(*c))
                        return -EINVAL;
        *ret_peer = g_strdup(p);
        return 0;
}

int tunnel_start_source(Migration *m, const char *address, TunnelReady ready, char **ret_error) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *peer = NULL;
        MigrationTunnel *t;
        int r;

        if (parse_address(address, &peer) < 0) {
                *ret_error = g_strdup_printf("the destination offered an unusable tunnel address: %s", strna(address));
                return -EINVAL;
        }
        t = tunnel_new(m, ready);
        free(m->hypervisor_uri);
        /* The helper's RuntimeDirectory=, made for its dynamic user by systemd. */
        g_autofree char *name = helper_name(m);
        m->hypervisor_uri = g_strdup_printf("unix:/run/%s/qemu.sock", name);
        g_ptr_array_add(argv, g_strdup(FERRY_LIBEXECDIR "/ferry-transport"));
        g_ptr_array_add(argv, g_strdup("--source"));
        t->socket_path = g_strdup(m->hypervisor_uri + strlen("unix:"));
        g_ptr_array_add(argv, g_strdup_printf("--qemu-socket=%s", t->socket_path));
        g_ptr_array_add(argv, g_strdup_printf("--peer=%s", peer));
        r = start_helper(t, argv, ret_error);
        if (r < 0 && !*ret_error)
                *ret_error = g_strdup_printf("cannot start the tunnel helper: %s", strerror(-r));
        return r;
}

/* A post-copy recovery: the broken pair's units are stopped if they still run (their streams
 * are gone) and forgotten; the next pair gets new unit names and the same token. The
 * destination's QEMU listens again (migrate-recover) before its new helper starts. */
static void tunnel_discard(Migration *m) {
        MigrationTunnel *t = m->tunnel;
        UnitJob *job = NULL;

        if (!t)
                return;
        if (t->unit && unit_stop(manager_bus(m->manager), t->unit, NULL, NULL, &job) >= 0)
                unit_job_free(job); /* systemd's job goes on */
        m->tunnel = tunnel_free(t);
        m->tunnel_generation++;
}

int tunnel_restart_destination(Migration *m, const char *domain_uuid, TunnelReady ready) {
        tunnel_discard(m);
        return tunnel_start_destination(m, domain_uuid, ready);
}

int tunnel_restart_source(Migration *m, const char *address, TunnelReady ready, char **ret_error) {
        tunnel_discard(m);
        return tunnel_start_source(m, address, ready, ret_error);
}

static int on_explain_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MigrationTunnel *t = userdata;

        t->explain_timer = sd_event_source_disable_unref(t->explain_timer);
        if (t->migration->state == MIGRATION_RUNNING)
                source_fail(t->migration, FERRY_ERROR_MIGRATION_FAILED, "QEMU's migration failed (the tunnel did not say why)");
        return 0;
}

bool tunnel_explain_qemu_failure(Migration *m) {
        MigrationTunnel *t = m->tunnel;

        if (!t || t->failed || t->explain_timer)
                return false;
        return sd_event_add_time_relative(manager_event(m->manager), &t->explain_timer, CLOCK_MONOTONIC,
                                          TUNNEL_EXPLAIN_USEC, 0, on_explain_timer, t) >= 0;
}

void tunnel_end(Migration *m) {
        MigrationTunnel *t = m->tunnel;

        if (!t || t->ended)
                return;
        t->ended = true;
        t->explain_timer = sd_event_source_disable_unref(t->explain_timer);
        /* A Prepare still waiting for the helper gets its answer. */
        tunnel_ready(t, -ECANCELED, "the migration ended before its tunnel was ready");
        if (t->token_path) {
                (void) unlink(t->token_path);
                t->token_path = mfree(t->token_path);
        }
        /* Every stream is connected or the migration is over: the listening socket has done
         * its work (QEMU leaves its incoming one behind). */
        if (t->socket_path)
                (void) unlink(t->socket_path);
        /* The link for ferry-peer (the helper's own socket goes with its runtime directory). */
        if (t->dispatch_path)
                (void) unlink(t->dispatch_path);
        if (!t->unit)
                return;
        /* Stopped whether or not it still runs (a helper that ended is already gone; systemd
         * then answers NoSuchUnit). CollectMode=inactive-or-failed removes it afterwards. */
        t->job = unit_job_free(t->job);
        if (unit_stop(manager_bus(m->manager), t->unit, NULL, NULL, &t->job) < 0)
                log_warning("Migration %u: cannot stop %s.", m->id, t->unit);
}
