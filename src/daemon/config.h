/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* ferryd.conf: a GKeyFile, documented in docs/ferryd.conf.md and in data/ferryd.conf. */

#define CONFIG_IDLE_TIMEOUT_SEC_DEFAULT 120u
#define CONFIG_IDLE_TIMEOUT_SEC_MAX (24u * 3600u)
#define CONFIG_HOSTNAME_MAX 253u /* DNS name length */
#define CONFIG_MIGRATION_PORT_MIN_DEFAULT 49152
#define CONFIG_MIGRATION_PORT_MAX_DEFAULT 49215
#define CONFIG_MIGRATION_TUNNEL_PORT_DEFAULT 16514 /* ferry-peer.socket's ListenStream= */
#define CONFIG_MIGRATION_KEEP_ENDED_SEC_DEFAULT 300u
#define CONFIG_MIGRATION_KEEP_ENDED_SEC_MAX (24u * 3600u)

typedef struct Config {
        /* seconds without calls, domains in transition or migrations before ferryd exits;
         * 0 means never */
        unsigned idle_timeout_sec;
        int log_level;            /* LOG_* */
        char *hostname;           /* name peers use to reach this host; NULL: gethostname() */
        uint16_t migration_port_min, migration_port_max; /* incoming migrations listen here */
        bool migration_force_tls; /* refuse to send or receive a migration stream without TLS */
        bool migration_tunnel_plaintext; /* allow tunnelled migrations without TLS (both hosts must) */
        uint16_t migration_tunnel_port; /* the shared peer port the sources' helpers connect to */
        unsigned migration_keep_ended_sec; /* an ended Migration object stays readable this long */
} Config;

void config_init(Config *c);
void config_done(Config *c);

/* Parses the text of a ferryd.conf into *c (which must be config_init()ed; values not in the
 * text keep their defaults). Unknown groups and keys are warned about and ignored, as systemd
 * does; a malformed file or a value out of range is -EINVAL and leaves *c untouched. */
int config_parse(Config *c, const char *text, size_t length, const char *origin);

/* Loads path; a missing file means "all defaults" and is not an error. */
int config_load(Config *c, const char *path);

/* Accepts an RFC 1123 host name or an IP address literal. */
int config_hostname_is_valid(const char *s);
