/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The URIs a migration caller can pass (docs/migration-uris.md): the destination connection
 * URI (a FerryUri: where the peer ferryd is) and the hypervisor and disks URIs (a MigrationUri:
 * where QEMU's streams go). Every caller string goes through these strict parsers; only the
 * strings built from the parsed structs reach sd-bus, ssh or QEMU, so QEMU's exec:, fd:, file:,
 * rdma: and option syntax can never be reached.
 *
 * Strings (fields, results, *ret_error) are GLib-allocated: free them with g_free(). Parsers
 * return -EINVAL with a message in *ret_error (if ret_error is not NULL) for any refused URI,
 * and never echo a refused string's control or non-ASCII bytes back. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define FERRY_URI_LENGTH_MAX 1024u            /* longer caller strings are refused */
#define FERRY_URI_SOCKET_PATH_MAX 107u        /* sizeof(sun_path) - 1 */
#define FERRY_URI_USER_MAX 64u
#define FERRY_URI_DEFAULT_SOCKET "/run/dbus/system_bus_socket"

typedef enum FerryUriTransport {
        FERRY_URI_LOCAL,                      /* ferry:///system */
        FERRY_URI_UNIX,                       /* ferry+unix:///system[?socket=PATH] */
        FERRY_URI_SSH,                        /* ferry+ssh://[user@]host[:port]/system */
        FERRY_URI_TLS,                        /* ferry+tls://host[:port]/system */
        _FERRY_URI_TRANSPORT_MAX,
} FerryUriTransport;

typedef struct FerryUri {                     /* the destination (connection) URI */
        FerryUriTransport transport;
        char *user;                           /* ssh only, may be NULL */
        char *host;                           /* ssh/tls: host name or IP literal (IPv6 without brackets) */
        uint16_t port;                        /* 0 = default */
        char *socket;                         /* unix: absolute path, normalized, no "..", fits sun_path */
} FerryUri;

/* s is a NUL-terminated string; the _full form takes its length (SIZE_MAX: strlen(s)) and
 * refuses an embedded NUL, for strings that did not come from D-Bus. */
int ferry_uri_parse(const char *s, FerryUri **ret, char **ret_error);
int ferry_uri_parse_full(const char *s, size_t length, FerryUri **ret, char **ret_error);
FerryUri *ferry_uri_free(FerryUri *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(FerryUri *, ferry_uri_free);

/* The canonical text of u ("ferry+ssh://root@[fe80::1]:2222/system"); parsing it gives u back.
 * NULL if u is not valid (did not come from ferry_uri_parse()). */
char *ferry_uri_to_string(const FerryUri *u);

/* The sd_bus_set_address() address to reach the ferryd that u names:
 *   local -> *ret = NULL, 0 (use the system bus);
 *   unix  -> "unix:path=PATH";
 *   ssh   -> what systemd 252's bus_set_address_system_remote() builds for "busctl --host",
 *            "unixexec:path=ssh,argv1=-xT[,argv2=-p,argv3=PORT],argvN=--,argvN+1=[USER@]HOST,
 *            argvN+2=systemd-stdio-bridge", values escaped as sd-bus does;
 *   tls   -> "unixexec:path=LIBEXECDIR/ferry-transport,argv1=--bus-connect=HOST:PORT,
 *            argv2=--peer-name=HOST,argv3=--pki-dir=PKI_DIR" (escaped; port 16514 by default,
 *            an IPv6 HOST in brackets in --bus-connect only; pki_dir NULL: SYSCONFDIR/ferry/pki),
 *            docs/migration-uris.md.
 * -EINVAL if u is not valid. */
#define FERRY_PEER_PORT_DEFAULT 16514u
int ferry_uri_to_bus_address(const FerryUri *u, const char *pki_dir, char **ret);

const char *ferry_uri_transport_to_string(FerryUriTransport t);

typedef enum MigrationUriKind {
        MIGRATION_URI_TCP,
        MIGRATION_URI_UNIX,
        _MIGRATION_URI_KIND_MAX,
} MigrationUriKind;

typedef struct MigrationUri {                 /* the hypervisor (data) URI, and the disks URI */
        MigrationUriKind kind;
        char *host;                           /* tcp: IP literal (IPv6 without brackets) or host name;
                                               * NULL = any address, only with MIGRATION_URI_ALLOW_ANY */
        uint16_t port;                        /* tcp: 0 = pick from the configured range */
        char *path;                           /* unix: absolute, normalized, fits sun_path */
} MigrationUri;

typedef enum MigrationUriFlags {
        /* For addresses to listen on: accept an empty host ("tcp://:4444", "tcp::4444") and the
         * unspecified addresses 0.0.0.0 and ::, all stored as host = NULL. */
        MIGRATION_URI_ALLOW_ANY = 1 << 0,
} MigrationUriFlags;

/* Accepts tcp://HOST[:PORT][/], tcp:HOST:PORT (QEMU's form), unix:///PATH and unix:/PATH, IPv6
 * as tcp://[::1]:4444 or tcp:[::1]:4444. Refuses everything else with a message naming what is
 * wrong: any other scheme (exec:, fd:, file:, rdma:, vsock:, ...), a user, query or fragment,
 * an explicit port 0 or one over 65535, an invalid host, a relative path or one with "..". */
int migration_uri_parse(const char *s, MigrationUri **ret, char **ret_error);
int migration_uri_parse_full(const char *s, size_t length, MigrationUriFlags flags,
                             MigrationUri **ret, char **ret_error);
MigrationUri *migration_uri_free(MigrationUri *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(MigrationUri *, migration_uri_free);

/* The canonical URI text ("tcp://[::1]:4444/", "unix:///run/x"); parsing it gives u back. NULL
 * if u is not valid. */
char *migration_uri_to_string(const MigrationUri *u);

/* The string for QEMU's migrate / migrate-incoming: "tcp:HOST:PORT" ("tcp:[::1]:PORT", and
 * "tcp::PORT" for any address), "unix:PATH". Built only from a valid MigrationUri with a port
 * chosen: NULL if the host is neither an IP literal nor a DNS name, the path is not valid, or
 * the port is 0. */
char *migration_uri_to_qemu(const MigrationUri *u);

/* "MIN-MAX" (both 1..65535, MIN <= MAX) or a single "PORT", decimal digits only; -EINVAL
 * otherwise, and *ret_min, *ret_max untouched. The default range is config.h's. */
int migration_port_range_parse(const char *s, uint16_t *ret_min, uint16_t *ret_max);

/* A host name (RFC 1123 labels, not all-numeric at the end) or an IPv4/IPv6 literal (IPv6
 * without brackets, no zone). No leading '-', so it can never be taken for an option. */
bool migration_host_is_valid(const char *host);

/* An IPv4 or IPv6 literal (no brackets, no zone): what listen_address takes. */
bool migration_ip_address_is_valid(const char *s);
/* 0.0.0.0 or :: (any address). */
bool migration_ip_address_is_unspecified(const char *s);
