/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "domain-store.h"
#include "fileio.h"
#include "log.h"
#include "manager.h"
#include "migration.h"

static char *config_path(Manager *m, const char *name) {
        g_autofree char *file = g_strconcat(name, ".xml", NULL);
        return g_build_filename(m->config_dir, "domains", file, NULL);
}

static char *autostart_path(Manager *m, const char *name) {
        g_autofree char *file = g_strconcat(name, ".xml", NULL);
        return g_build_filename(m->config_dir, "domains", "autostart", file, NULL);
}

int domain_store_save_config(Domain *d) {
        g_autofree char *dir = g_build_filename(d->manager->config_dir, "domains", NULL);
        g_autofree char *path = config_path(d->manager, d->def->name);
        g_autofree char *xml = domain_def_format(d->def, DOMAIN_FORMAT_INACTIVE);
        int r;

        if (!xml)
                return -ENOMEM;
        if (g_mkdir_with_parents(dir, 0755) < 0)
                return log_error_errno(errno, "Failed to create %s: %m", dir);
        r = write_file_atomic(path, xml, strlen(xml), 0600);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        return 0;
}

int domain_store_remove_config(Domain *d) {
        g_autofree char *path = config_path(d->manager, d->def->name);

        if (unlink(path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove %s: %m", path);
        return 0;
}

int domain_store_set_autostart(Domain *d, bool autostart) {
        g_autofree char *dir = g_build_filename(d->manager->config_dir, "domains", "autostart", NULL);
        g_autofree char *link = autostart_path(d->manager, d->def->name);
        g_autofree char *target = g_strconcat("../", d->def->name, ".xml", NULL);

        if (!autostart) {
                if (unlink(link) < 0 && errno != ENOENT)
                        return log_error_errno(errno, "Failed to remove %s: %m", link);
                return 0;
        }
        if (g_mkdir_with_parents(dir, 0755) < 0)
                return log_error_errno(errno, "Failed to create %s: %m", dir);
        (void) unlink(link);
        if (symlink(target, link) < 0)
                return log_error_errno(errno, "Failed to create %s: %m", link);
        return 0;
}

bool domain_store_autostart(Manager *m, const char *name) {
        g_autofree char *link = autostart_path(m, name);
        return access(link, F_OK) == 0;
}

int domain_store_save_live(Domain *d) {
        g_autofree char *xml_path = g_build_filename(d->run_dir, "live.xml", NULL);
        g_autofree char *state_path = g_build_filename(d->run_dir, "state", NULL);
        g_autofree char *xml = domain_def_format(d->live_def ?: d->def, 0);
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autofree char *state = NULL;
        Migration *m = d->migration;
        gsize length;
        int r;

        if (!xml)
                return -ENOMEM;
        g_key_file_set_string(kf, "Domain", "State", domain_state_to_string(d->state));
        g_key_file_set_string(kf, "Domain", "Reason", d->reason);
        g_key_file_set_string(kf, "Domain", "Unit", d->unit);
        g_key_file_set_boolean(kf, "Domain", "Incoming", d->incoming_uri != NULL);
        /* An outgoing migration in progress: a ferryd that restarts must undo it (or know that
         * it cannot), because QEMU goes on migrating without us. */
        if (m && m->direction == MIGRATION_OUTGOING) {
                g_key_file_set_string(kf, "OutgoingMigration", "DestinationURI", strempty(m->destination_uri));
                if (m->peer_migration && m->peer_owner) {
                        g_key_file_set_string(kf, "OutgoingMigration", "PeerMigration", m->peer_migration);
                        g_key_file_set_string(kf, "OutgoingMigration", "PeerOwner", m->peer_owner);
                }
                g_key_file_set_boolean(kf, "OutgoingMigration", "Direct", m->options.direct);
                g_key_file_set_boolean(kf, "OutgoingMigration", "FinishSent", m->finish_sent);
                g_key_file_set_boolean(kf, "OutgoingMigration", "SourceWasRunning", m->source_was_running);
        }
        state = g_key_file_to_data(kf, &length, NULL);
        if (g_mkdir_with_parents(d->run_dir, 0700) < 0)
                return log_error_errno(errno, "Failed to create %s: %m", d->run_dir);
        r = write_file_atomic(xml_path, xml, strlen(xml), 0600);
        if (r >= 0)
                r = write_file_atomic(state_path, state, length, 0600);
        if (r < 0)
                return log_error_errno(r, "Failed to save live state in %s: %m", d->run_dir);
        return 0;
}

void domain_store_remove_live(Domain *d) {
        static const char *const files[] = { "state", "live.xml", "qmp.sock" };

        /* state first: without it the directory is not a running domain any more. */
        for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
                g_autofree char *p = g_build_filename(d->run_dir, files[i], NULL);
                (void) unlink(p);
        }
        if (rmdir(d->run_dir) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove %s, ignoring: %m", d->run_dir);
}

int domain_store_read_def(const char *path, DomainDef **ret) {
        g_autofree char *text = NULL, *error = NULL;
        g_autoptr(GError) gerror = NULL;
        gsize length;
        int r;

        if (!g_file_get_contents(path, &text, &length, &gerror))
                return log_error_errno(gerror->code == G_FILE_ERROR_NOENT ? ENOENT : EIO,
                                       "Failed to read %s: %s", path, gerror->message);
        r = domain_def_parse(text, length, ret, &error);
        if (r < 0)
                return log_error_errno(r, "%s: %s", path, strna(error));
        return 0;
}

/* GKeyFile's booleans are true/false only; earlier versions wrote yes/no. */
static bool key_bool(GKeyFile *kf, const char *group, const char *key, bool def) {
        g_autofree char *v = g_key_file_get_value(kf, group, key, NULL);
        if (!v)
                return def;
        if (g_str_equal(v, "true") || g_str_equal(v, "yes") || g_str_equal(v, "1"))
                return true;
        if (g_str_equal(v, "false") || g_str_equal(v, "no") || g_str_equal(v, "0"))
                return false;
        return def;
}

int domain_store_load_live(const char *run_dir, DomainDef **ret_def, char **ret_state, char **ret_reason,
                           bool *ret_incoming, OutgoingMigrationRecord *ret_outgoing) {
        g_autofree char *xml_path = g_build_filename(run_dir, "live.xml", NULL);
        g_autofree char *state_path = g_build_filename(run_dir, "state", NULL);
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) gerror = NULL;
        int r;

        if (!g_key_file_load_from_file(kf, state_path, G_KEY_FILE_NONE, &gerror))
                return log_warning_errno(ENOENT, "%s: %s", state_path, gerror->message);
        r = domain_store_read_def(xml_path, ret_def);
        if (r < 0)
                return r;
        *ret_state = g_key_file_get_string(kf, "Domain", "State", NULL);
        *ret_reason = g_key_file_get_string(kf, "Domain", "Reason", NULL);
        *ret_incoming = key_bool(kf, "Domain", "Incoming", false);
        *ret_outgoing = (OutgoingMigrationRecord) {};
        if (g_key_file_has_group(kf, "OutgoingMigration"))
                *ret_outgoing = (OutgoingMigrationRecord) {
                        .active = true,
                        .destination_uri = g_key_file_get_string(kf, "OutgoingMigration", "DestinationURI", NULL),
                        .peer_migration = g_key_file_get_string(kf, "OutgoingMigration", "PeerMigration", NULL),
                        .peer_owner = g_key_file_get_string(kf, "OutgoingMigration", "PeerOwner", NULL),
                        .direct = key_bool(kf, "OutgoingMigration", "Direct", false),
                        /* Unreadable counts as sent: then the guest is only ever left paused. */
                        .finish_sent = key_bool(kf, "OutgoingMigration", "FinishSent", true),
                        .source_was_running = key_bool(kf, "OutgoingMigration", "SourceWasRunning", false),
                };
        return 0;
}

const char *domain_reason_intern(const char *s) {
        static const char *const reasons[] = {
                REASON_UNKNOWN, REASON_BOOTED, REASON_UNPAUSED, REASON_USER, REASON_STARTING,
                REASON_SHUTDOWN, REASON_DESTROYED, REASON_FAILED, REASON_CRASHED, REASON_PANICKED,
                REASON_MIGRATION, REASON_MIGRATED, REASON_MIGRATION_CANCELLED, REASON_MIGRATION_INTERRUPTED,
        };
        for (size_t i = 0; s && i < G_N_ELEMENTS(reasons); i++)
                if (strcmp(s, reasons[i]) == 0)
                        return reasons[i];
        return REASON_UNKNOWN;
}
