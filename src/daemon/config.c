/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "config.h"
#include "migration-uri.h"
#include "log.h"

typedef struct KnownKey {
        const char *group;
        const char *key;
} KnownKey;

static const KnownKey known_keys[] = {
        { "Daemon", "IdleTimeoutSec" },
        { "Daemon", "LogLevel" },
        { "Daemon", "Hostname" },
        { "Migration", "Ports" },
        { "Migration", "ForceTLS" },
        { "Migration", "TunnelPlaintext" },
        { "Migration", "TunnelPort" },
        { "Migration", "KeepEndedSec" },
};

void config_init(Config *c) {
        *c = (Config) {
                .idle_timeout_sec = CONFIG_IDLE_TIMEOUT_SEC_DEFAULT,
                .log_level = LOG_INFO,
                .migration_port_min = CONFIG_MIGRATION_PORT_MIN_DEFAULT,
                .migration_port_max = CONFIG_MIGRATION_PORT_MAX_DEFAULT,
                .migration_tunnel_port = CONFIG_MIGRATION_TUNNEL_PORT_DEFAULT,
                .migration_keep_ended_sec = CONFIG_MIGRATION_KEEP_ENDED_SEC_DEFAULT,
        };
}

void config_done(Config *c) {
        if (!c)
                return;
        c->hostname = mfree(c->hostname);
}

int config_hostname_is_valid(const char *s) {
        size_t n, label = 0;

        if (!s)
                return 0;
        n = strlen(s);
        if (n == 0 || n > CONFIG_HOSTNAME_MAX)
                return 0;
        if (g_hostname_is_ip_address(s))
                return 1;
        for (const char *p = s; *p; p++) {
                if (*p == '.') {
                        if (label == 0 || p[-1] == '-')
                                return 0;
                        label = 0;
                        continue;
                }
                if (!g_ascii_isalnum(*p) && *p != '-')
                        return 0;
                if (label == 0 && *p == '-')
                        return 0;
                if (++label > 63)
                        return 0;
        }
        return label > 0 && s[n - 1] != '-';
}

static bool key_is_known(const char *group, const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(known_keys); i++)
                if (strcmp(known_keys[i].group, group) == 0 && strcmp(known_keys[i].key, key) == 0)
                        return true;
        return false;
}

static void warn_unknown(GKeyFile *kf, const char *origin) {
        g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);

        for (char **g = groups; g && *g; g++) {
                g_auto(GStrv) keys = g_key_file_get_keys(kf, *g, NULL, NULL);
                for (char **k = keys; k && *k; k++)
                        if (!key_is_known(*g, *k))
                                log_warning("%s: unknown setting [%s] %s=, ignoring.", origin, *g, *k);
        }
}

/* Returns 1 and the trimmed value if set, 0 if absent. */
static int get_string(GKeyFile *kf, const char *group, const char *key, char **ret) {
        g_autofree char *v = g_key_file_get_value(kf, group, key, NULL);
        if (!v)
                return 0;
        *ret = g_strdup(g_strstrip(v));
        return 1;
}

/* systemd's spellings of a boolean. */
static int parse_boolean(const char *v) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (g_ascii_strcasecmp(v, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (g_ascii_strcasecmp(v, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

/* A plain decimal number (of seconds, or a port), at most max. */
static int parse_seconds(const char *v, unsigned max, unsigned *ret) {
        unsigned long long t;
        char *end;

        errno = 0;
        t = strtoull(v, &end, 10);
        if (v[0] == '\0' || v[0] == '-' || *end != '\0' || errno != 0 || t > max)
                return -EINVAL;
        *ret = (unsigned) t;
        return 0;
}

int config_parse(Config *c, const char *text, size_t length, const char *origin) {
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) gerror = NULL;
        g_autofree char *v = NULL;
        Config n = *c;

        if (!g_key_file_load_from_data(kf, text, length, G_KEY_FILE_NONE, &gerror)) {
                log_error("%s: %s", origin, gerror->message);
                return -EINVAL;
        }
        warn_unknown(kf, origin);

        if (get_string(kf, "Daemon", "IdleTimeoutSec", &v) > 0) {
                if (parse_seconds(v, CONFIG_IDLE_TIMEOUT_SEC_MAX, &n.idle_timeout_sec) < 0) {
                        log_error("%s: [Daemon] IdleTimeoutSec=%s is not a number of seconds between 0 and %u.",
                                  origin, v, CONFIG_IDLE_TIMEOUT_SEC_MAX);
                        return -EINVAL;
                }
                v = mfree(v);
        }

        if (get_string(kf, "Daemon", "LogLevel", &v) > 0) {
                int l = log_level_from_string(v);
                if (l < 0) {
                        log_error("%s: [Daemon] LogLevel=%s is not one of debug, info, notice, warning, err.",
                                  origin, v);
                        return -EINVAL;
                }
                n.log_level = l;
                v = mfree(v);
        }

        if (get_string(kf, "Migration", "Ports", &v) > 0) {
                uint16_t lo, hi;
                if (migration_port_range_parse(v, &lo, &hi) < 0 || lo < 1024) {
                        log_error("%s: [Migration] Ports=%s is not a range like 49152-49215 within 1024-65535.",
                                  origin, v);
                        return -EINVAL;
                }
                n.migration_port_min = lo;
                n.migration_port_max = hi;
                v = mfree(v);
        }

        if (get_string(kf, "Migration", "ForceTLS", &v) > 0) {
                int b = parse_boolean(v);
                if (b < 0) {
                        log_error("%s: [Migration] ForceTLS=%s is not a boolean (yes or no).", origin, v);
                        return -EINVAL;
                }
                n.migration_force_tls = b;
                v = mfree(v);
        }

        if (get_string(kf, "Migration", "TunnelPlaintext", &v) > 0) {
                int b = parse_boolean(v);
                if (b < 0) {
                        log_error("%s: [Migration] TunnelPlaintext=%s is not a boolean (yes or no).", origin, v);
                        return -EINVAL;
                }
                n.migration_tunnel_plaintext = b;
                v = mfree(v);
        }

        if (get_string(kf, "Migration", "TunnelPort", &v) > 0) {
                unsigned port;
                if (parse_seconds(v, 65535, &port) < 0 || port == 0) {
                        log_error("%s: [Migration] TunnelPort=%s is not a TCP port (1-65535).", origin, v);
                        return -EINVAL;
                }
                n.migration_tunnel_port = (uint16_t) port;
                v = mfree(v);
        }

        if (get_string(kf, "Migration", "KeepEndedSec", &v) > 0) {
                /* At least a second: the client that followed the job reads its end result. */
                if (parse_seconds(v, CONFIG_MIGRATION_KEEP_ENDED_SEC_MAX, &n.migration_keep_ended_sec) < 0 ||
                    n.migration_keep_ended_sec == 0) {
                        log_error("%s: [Migration] KeepEndedSec=%s is not a number of seconds between 1 and %u.",
                                  origin, v, CONFIG_MIGRATION_KEEP_ENDED_SEC_MAX);
                        return -EINVAL;
                }
                v = mfree(v);
        }

        if (get_string(kf, "Daemon", "Hostname", &v) > 0) {
                if (v[0] != '\0' && !config_hostname_is_valid(v)) {
                        log_error("%s: [Daemon] Hostname=%s is not a valid host name or address.", origin, v);
                        return -EINVAL;
                }
                /* An empty value resets to the default, as in systemd's unit files. */
                n.hostname = v[0] ? TAKE_PTR(v) : NULL;
        } else
                n.hostname = c->hostname ? strdup(c->hostname) : NULL;

        /* Commit only once everything parsed, so a bad file changes nothing. */
        free(c->hostname);
        *c = n;
        return 0;
}

int config_load(Config *c, const char *path) {
        g_autofree char *text = NULL;
        g_autoptr(GError) gerror = NULL;
        gsize length;

        if (!g_file_get_contents(path, &text, &length, &gerror)) {
                if (g_error_matches(gerror, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
                        log_debug("%s does not exist, using defaults.", path);
                        return 0;
                }
                log_error("Failed to read %s: %s", path, gerror->message);
                return -EIO;
        }
        return config_parse(c, text, length, path);
}
