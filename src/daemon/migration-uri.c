/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A small strict parser rather than GUri: we accept a handful of shapes and refuse the rest by
 * name, and never decode anything, so what a caller wrote is byte for byte what is used. */

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <stdarg.h>
#include <string.h>

#include "build-config.h"
#include "migration-uri.h"

#define HOST_NAME_MAX_LEN 253u
#define HOST_LABEL_MAX 63u
#define ECHO_MAX 64u
#define DESTINATION_FORMS "ferry:///system, ferry+unix:///system?socket=PATH, " \
        "ferry+ssh://[USER@]HOST[:PORT]/system or ferry+tls://HOST[:PORT]/system"
#define HYPERVISOR_FORMS "tcp://HOST[:PORT]/, tcp:HOST:PORT or unix:///PATH"

static const char *const transport_names[_FERRY_URI_TRANSPORT_MAX] = {
        [FERRY_URI_LOCAL] = "ferry",
        [FERRY_URI_UNIX] = "ferry+unix",
        [FERRY_URI_SSH] = "ferry+ssh",
        [FERRY_URI_TLS] = "ferry+tls",
};

const char *ferry_uri_transport_to_string(FerryUriTransport t) {
        if ((unsigned) t >= _FERRY_URI_TRANSPORT_MAX)
                return NULL;
        return transport_names[t];
}

_printf_(2, 3)
static int fail(char **ret_error, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, format);
                *ret_error = g_strdup_vprintf(format, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/* For messages: at most ECHO_MAX bytes of s, anything but printable ASCII as \xNN. The raw
 * check runs first, so this only matters for bytes it let through, but stays cheap insurance
 * against a refused string forging a log line. */
static char *echo(const char *s, size_t n) {
        GString *g = g_string_new(NULL);

        for (size_t i = 0; i < n && i < ECHO_MAX; i++) {
                unsigned char c = s[i];
                if (c >= 0x20 && c < 0x7f && c != '\\')
                        g_string_append_c(g, c);
                else
                        g_string_append_printf(g, "\\x%02x", c);
        }
        if (n > ECHO_MAX)
                g_string_append(g, "...");
        return g_string_free(g, false);
}

/* RFC 3986's characters minus '%': no space, quote, backslash, control or non-ASCII byte gets
 * past this, and since we decode nothing, none can appear in any parsed field either. */
static bool uri_char_is_valid(char c) {
        return g_ascii_isalnum(c) || strchr("-._~:/?#[]@!$&'()*+,;=", c);
}

static int check_raw(const char *s, size_t *length, char **ret_error) {
        size_t n = *length == SIZE_MAX ? strlen(s) : *length;

        if (n == 0)
                return fail(ret_error, "Empty URI");
        if (memchr(s, 0, n))
                return fail(ret_error, "URI contains a NUL byte at offset %zu",
                            (size_t) ((const char *) memchr(s, 0, n) - s));
        if (n > FERRY_URI_LENGTH_MAX)
                return fail(ret_error, "URI is %zu bytes long, the limit is %u", n, FERRY_URI_LENGTH_MAX);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = s[i];
                if (c == '%')
                        return fail(ret_error, "URI contains '%%' at offset %zu: percent-encoding is "
                                    "not accepted (nothing is decoded)", i);
                if (c == ' ')
                        return fail(ret_error, "URI contains a space at offset %zu", i);
                if (c < 0x20 || c == 0x7f)
                        return fail(ret_error, "URI contains a control character at offset %zu", i);
                if (c >= 0x80)
                        return fail(ret_error, "URI contains a non-ASCII byte at offset %zu", i);
                if (!uri_char_is_valid(c))
                        return fail(ret_error, "URI contains '%c' at offset %zu, which is not allowed in a URI", c, i);
        }
        *length = n;
        return 0;
}

/* Returns the lowercased scheme and sets *rest past its ':'. */
static int split_scheme(const char *s, size_t n, char **ret_scheme, const char **rest, char **ret_error) {
        const char *colon = memchr(s, ':', n);

        if (!colon || colon == s || !g_ascii_isalpha(s[0]))
                return fail(ret_error, "Not a URI: no scheme (\"scheme:...\")");
        for (const char *p = s; p < colon; p++)
                if (!g_ascii_isalnum(*p) && !strchr("+-.", *p))
                        return fail(ret_error, "Not a URI: invalid scheme");
        *ret_scheme = g_ascii_strdown(s, colon - s);
        *rest = colon + 1;
        return 0;
}

static bool ipv6_is_valid(const char *s) {
        struct in6_addr a;

        /* inet_pton() alone would do; the charset check keeps zones ("%eth0") out explicitly. */
        for (const char *p = s; *p; p++)
                if (!g_ascii_isxdigit(*p) && *p != ':' && *p != '.')
                        return false;
        return inet_pton(AF_INET6, s, &a) == 1;
}

static bool host_is_unspecified(const char *host) {
        struct in6_addr a6;
        struct in_addr a4;

        if (inet_pton(AF_INET, host, &a4) == 1)
                return a4.s_addr == htonl(INADDR_ANY);
        if (ipv6_is_valid(host) && inet_pton(AF_INET6, host, &a6) == 1)
                return IN6_IS_ADDR_UNSPECIFIED(&a6);
        return false;
}

bool migration_ip_address_is_valid(const char *s) {
        struct in_addr a4;

        if (!s)
                return false;
        return inet_pton(AF_INET, s, &a4) == 1 || (strchr(s, ':') && ipv6_is_valid(s));
}

bool migration_ip_address_is_unspecified(const char *s) {
        return s && host_is_unspecified(s);
}

bool migration_host_is_valid(const char *host) {
        struct in_addr a4;
        size_t n, label = 0;
        bool numeric = true;

        if (!host)
                return false;
        n = strlen(host);
        if (n == 0 || n > HOST_NAME_MAX_LEN)
                return false;
        if (strchr(host, ':'))
                return ipv6_is_valid(host);
        if (inet_pton(AF_INET, host, &a4) == 1)
                return true;

        for (const char *p = host; *p; p++) {
                if (*p == '.') {
                        if (label == 0 || p[-1] == '-')
                                return false;
                        label = 0;
                        numeric = true;
                        continue;
                }
                if (!g_ascii_isalnum(*p) && *p != '-')
                        return false;
                if (label == 0 && *p == '-')
                        return false;
                if (!g_ascii_isdigit(*p))
                        numeric = false;
                if (++label > HOST_LABEL_MAX)
                        return false;
        }
        /* An all-numeric last label is an IPv4 literal in disguise ("1.2.3", "010.0.0.1"):
         * resolvers would read it as an address, and inet_pton() did not accept it. */
        return label > 0 && host[n - 1] != '-' && !numeric;
}

/* Canonical text of a valid host: IPv6 as inet_ntop() writes it, the rest as given. */
static char *host_canonical(const char *host) {
        struct in6_addr a6;
        char buf[INET6_ADDRSTRLEN];

        if (strchr(host, ':') && inet_pton(AF_INET6, host, &a6) == 1 &&
            inet_ntop(AF_INET6, &a6, buf, sizeof buf))
                return g_strdup(buf);
        return g_strdup(host);
}

static int parse_port(const char *p, size_t n, uint16_t *ret, char **ret_error) {
        unsigned v = 0;

        if (n == 0)
                return fail(ret_error, "Empty port after ':'");
        for (size_t i = 0; i < n; i++) {
                if (!g_ascii_isdigit(p[i])) {
                        g_autofree char *e = echo(p, n);
                        return fail(ret_error, "Invalid port '%s'", e);
                }
                if (i >= 5) {
                        g_autofree char *e = echo(p, n);
                        return fail(ret_error, "Port '%s' is out of range 1-65535", e);
                }
                v = v * 10 + (p[i] - '0');
        }
        if (v == 0)
                return fail(ret_error, "Port 0 is not a port; leave the port out for the default");
        if (v > UINT16_MAX)
                return fail(ret_error, "Port %u is out of range 1-65535", v);
        *ret = v;
        return 0;
}

/* Parses "host[:port]", "[v6][:port]", or (if allow_empty) ":port" / "". */
static int parse_host_port(const char *s, size_t n, bool allow_empty, char **ret_host,
                           uint16_t *ret_port, char **ret_error) {
        g_autofree char *host = NULL;
        const char *port = NULL;
        size_t port_len = 0;
        uint16_t v = 0;
        int r;

        if (n > 0 && s[0] == '[') {
                const char *close = memchr(s, ']', n);
                if (!close)
                        return fail(ret_error, "Missing ']' after an IPv6 address");
                host = g_strndup(s + 1, close - s - 1);
                if (!ipv6_is_valid(host)) {
                        g_autofree char *e = echo(host, strlen(host));
                        return fail(ret_error, "Invalid IPv6 address '[%s]'", e);
                }
                if (close + 1 < s + n) {
                        if (close[1] != ':')
                                return fail(ret_error, "Unexpected characters after ']'");
                        port = close + 2;
                        port_len = s + n - port;
                }
        } else {
                const char *colon = memchr(s, ':', n);
                size_t host_len = colon ? (size_t) (colon - s) : n;

                host = g_strndup(s, host_len);
                if (colon) {
                        port = colon + 1;
                        port_len = s + n - port;
                        if (memchr(port, ':', port_len))
                                return fail(ret_error, "An IPv6 address must be written in brackets, as in [::1]:4444");
                }
                if (host_len == 0) {
                        if (!allow_empty)
                                return fail(ret_error, "No host given");
                        host = mfree(host);
                } else if (host[0] == '-') {
                        g_autofree char *e = echo(host, host_len);
                        return fail(ret_error, "Host '%s' starts with '-'", e);
                } else if (!migration_host_is_valid(host)) {
                        g_autofree char *e = echo(host, host_len);
                        return fail(ret_error, "Invalid host '%s': not a DNS name or an IP address", e);
                }
        }

        if (port) {
                r = parse_port(port, port_len, &v, ret_error);
                if (r < 0)
                        return r;
        }

        *ret_host = host ? host_canonical(host) : NULL;
        *ret_port = v;
        return 0;
}

static bool path_char_is_valid(char c) {
        return g_ascii_isalnum(c) || strchr("-._~+@/", c);
}

/* An absolute socket path: "//" and "/./" collapsed, ".." refused, at most sun_path. */
static int path_normalize(const char *s, size_t n, char **ret, char **ret_error) {
        g_autoptr(GString) g = NULL;
        const char *p = s, *end = s + n;

        if (n == 0 || s[0] != '/')
                return fail(ret_error, "Socket path must be absolute");
        for (size_t i = 0; i < n; i++)
                if (!path_char_is_valid(s[i]))
                        return fail(ret_error, "Socket path contains '%c', which is not allowed in a path "
                                    "(letters, digits, '/' and - . _ ~ + @ are)", s[i]);
        if (s[n - 1] == '/')
                return fail(ret_error, "Socket path ends in '/', which names a directory");

        g = g_string_new(NULL);
        while (p < end) {
                const char *slash;
                size_t len;

                while (p < end && *p == '/')
                        p++;
                slash = memchr(p, '/', end - p) ?: end;
                len = slash - p;
                if (len == 2 && p[0] == '.' && p[1] == '.')
                        return fail(ret_error, "Socket path contains a '..' component");
                if (len > 0 && !(len == 1 && p[0] == '.')) {
                        g_string_append_c(g, '/');
                        g_string_append_len(g, p, len);
                }
                p = slash;
        }
        if (g->len == 0)
                return fail(ret_error, "Socket path names no file");
        if (g->len > FERRY_URI_SOCKET_PATH_MAX)
                return fail(ret_error, "Socket path is %zu bytes long, a UNIX socket path can have at most %u",
                            g->len, FERRY_URI_SOCKET_PATH_MAX);
        *ret = g_string_free(TAKE_PTR(g), false);
        return 0;
}

static bool path_is_normalized(const char *path) {
        g_autofree char *n = NULL;

        if (!path)
                return false;
        return path_normalize(path, strlen(path), &n, NULL) >= 0 && strcmp(n, path) == 0;
}

static bool user_is_valid(const char *user) {
        size_t n;

        if (!user)
                return false;
        n = strlen(user);
        if (n == 0 || n > FERRY_URI_USER_MAX)
                return false;
        if (!g_ascii_isalnum(user[0]) && user[0] != '_')
                return false;
        for (const char *p = user; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("_.-", *p))
                        return false;
        return true;
}

/* ---- destination URIs ---- */

FerryUri *ferry_uri_free(FerryUri *u) {
        if (!u)
                return NULL;
        g_free(u->user);
        g_free(u->host);
        g_free(u->socket);
        g_free(u);
        return NULL;
}

static int ferry_uri_parse_query(FerryUri *u, const char *q, size_t n, char **ret_error) {
        const char *p = q, *end = q + n;

        if (n == 0)
                return fail(ret_error, "Empty query after '?'");
        while (p <= end) {
                const char *amp = memchr(p, '&', end - p) ?: end;
                const char *eq = memchr(p, '=', amp - p);
                g_autofree char *key = NULL;
                int r;

                key = g_strndup(p, (eq ?: amp) - p);
                if (strcmp(key, "socket") != 0) {
                        g_autofree char *e = echo(key, strlen(key));
                        return fail(ret_error, "Unknown parameter '%s' (ferry+unix:// takes only socket=)", e);
                }
                if (!eq || eq + 1 == amp)
                        return fail(ret_error, "Parameter socket= needs a value");
                if (u->socket)
                        return fail(ret_error, "Parameter socket= given more than once");
                r = path_normalize(eq + 1, amp - eq - 1, &u->socket, ret_error);
                if (r < 0)
                        return r;
                p = amp + 1;
        }
        return 0;
}

int ferry_uri_parse_full(const char *input, size_t length, FerryUri **ret, char **ret_error) {
        _cleanup_(ferry_uri_freep) FerryUri *u = NULL;
        g_autofree char *scheme = NULL, *s = NULL;
        const char *rest, *end, *authority, *authority_end, *path, *path_end, *query = NULL;
        int r;

        g_return_val_if_fail(input, -EINVAL);
        g_return_val_if_fail(ret, -EINVAL);

        r = check_raw(input, &length, ret_error);
        if (r < 0)
                return r;
        s = g_strndup(input, length);   /* input need not be NUL-terminated at length */
        end = s + length;
        r = split_scheme(s, length, &scheme, &rest, ret_error);
        if (r < 0)
                return r;

        u = g_new0(FerryUri, 1);
        if (strcmp(scheme, "ferry") == 0)
                u->transport = FERRY_URI_LOCAL;
        else if (strcmp(scheme, "ferry+unix") == 0)
                u->transport = FERRY_URI_UNIX;
        else if (strcmp(scheme, "ferry+ssh") == 0)
                u->transport = FERRY_URI_SSH;
        else if (strcmp(scheme, "ferry+tls") == 0)
                u->transport = FERRY_URI_TLS;
        else if (strcmp(scheme, "tcp") == 0 || strcmp(scheme, "unix") == 0)
                return fail(ret_error, "'%s:' is a hypervisor URI, not a destination; a destination is "
                            DESTINATION_FORMS, scheme);
        else
                return fail(ret_error, "Unsupported destination URI scheme '%s:'; a destination is "
                            DESTINATION_FORMS, scheme);

        if (end - rest < 2 || rest[0] != '/' || rest[1] != '/')
                return fail(ret_error, "'%s:' must be followed by '//'", scheme);

        authority = rest + 2;
        if (memchr(s, '#', length))
                return fail(ret_error, "A destination URI takes no fragment ('#')");
        authority_end = authority + strcspn(authority, "/?");
        path = authority_end;
        path_end = path + strcspn(path, "?");
        if (path_end < end)
                query = path_end + 1;

        if ((size_t) (path_end - path) != strlen("/system") || memcmp(path, "/system", path_end - path) != 0) {
                g_autofree char *e = echo(path, path_end - path);
                if (path_end - path == 8 && memcmp(path, "/session", 8) == 0)
                        return fail(ret_error, "Ferry has no per-user (session) instance; the path must be /system");
                if (path_end == path)
                        return fail(ret_error, "The path /system is missing");
                return fail(ret_error, "The path must be /system, not '%s'", e);
        }

        switch (u->transport) {

        case FERRY_URI_LOCAL:
        case FERRY_URI_UNIX:
                if (authority_end != authority)
                        return fail(ret_error, "%s:// takes no host; write %s:///system, or use "
                                    "ferry+ssh:// or ferry+tls:// for a remote host", scheme, scheme);
                break;

        case FERRY_URI_SSH:
        case FERRY_URI_TLS: {
                const char *at = memchr(authority, '@', authority_end - authority), *hp = authority;

                if (at) {
                        if (u->transport == FERRY_URI_TLS)
                                return fail(ret_error, "ferry+tls:// takes no user name: "
                                            "the peer is identified by its certificate");
                        if (memchr(at + 1, '@', authority_end - at - 1))
                                return fail(ret_error, "A user name must not contain '@'");
                        u->user = g_strndup(authority, at - authority);
                        if (u->user[0] == '\0')
                                return fail(ret_error, "Empty user name before '@'");
                        if (u->user[0] == '-') {
                                g_autofree char *e = echo(u->user, strlen(u->user));
                                return fail(ret_error, "User name '%s' starts with '-'", e);
                        }
                        if (!user_is_valid(u->user)) {
                                g_autofree char *e = echo(u->user, strlen(u->user));
                                return fail(ret_error, "Invalid user name '%s' (letters, digits and _ . -, "
                                            "at most %u)", e, FERRY_URI_USER_MAX);
                        }
                        hp = at + 1;
                }
                r = parse_host_port(hp, authority_end - hp, false, &u->host, &u->port, ret_error);
                if (r < 0)
                        return r;
                if (host_is_unspecified(u->host))
                        return fail(ret_error, "Host %s is the unspecified address, not a host", u->host);
                break;
        }

        default:
                g_assert_not_reached();
        }

        if (query) {
                if (u->transport != FERRY_URI_UNIX)
                        return fail(ret_error, "%s:// takes no query parameters", scheme);
                r = ferry_uri_parse_query(u, query, end - query, ret_error);
                if (r < 0)
                        return r;
        }
        if (u->transport == FERRY_URI_UNIX && !u->socket)
                u->socket = g_strdup(FERRY_URI_DEFAULT_SOCKET);

        *ret = TAKE_PTR(u);
        return 0;
}

int ferry_uri_parse(const char *s, FerryUri **ret, char **ret_error) {
        return ferry_uri_parse_full(s, SIZE_MAX, ret, ret_error);
}

static bool ferry_uri_is_valid(const FerryUri *u) {
        if (!u)
                return false;
        switch (u->transport) {
        case FERRY_URI_LOCAL:
                return !u->user && !u->host && u->port == 0 && !u->socket;
        case FERRY_URI_UNIX:
                return !u->user && !u->host && u->port == 0 && path_is_normalized(u->socket);
        case FERRY_URI_SSH:
                if (u->user && !user_is_valid(u->user))
                        return false;
                break;
        case FERRY_URI_TLS:
                if (u->user)
                        return false;
                break;
        default:
                return false;
        }
        return migration_host_is_valid(u->host) && !host_is_unspecified(u->host) && !u->socket;
}

static char *host_for_uri(const char *host) {
        return strchr(host, ':') ? g_strdup_printf("[%s]", host) : g_strdup(host);
}

char *ferry_uri_to_string(const FerryUri *u) {
        g_autofree char *host = NULL, *port = NULL;

        if (!ferry_uri_is_valid(u))
                return NULL;
        switch (u->transport) {
        case FERRY_URI_LOCAL:
                return g_strdup("ferry:///system");
        case FERRY_URI_UNIX:
                return g_strdup_printf("ferry+unix:///system?socket=%s", u->socket);
        default:
                host = host_for_uri(u->host);
                port = u->port > 0 ? g_strdup_printf(":%u", u->port) : g_strdup("");
                return g_strdup_printf("%s://%s%s%s%s/system", transport_names[u->transport],
                                       strempty(u->user), u->user ? "@" : "", host, port);
        }
}

/* sd-bus's bus_address_escape(): everything but [0-9A-Za-z_/.-] as %xx. */
static char *bus_address_escape(const char *v) {
        GString *g = g_string_new(NULL);

        for (const char *p = v; *p; p++) {
                if (g_ascii_isalnum(*p) || strchr("_-/.", *p))
                        g_string_append_c(g, *p);
                else
                        g_string_append_printf(g, "%%%02x", (unsigned char) *p);
        }
        return g_string_free(g, false);
}

int ferry_uri_to_bus_address(const FerryUri *u, const char *pki_dir, char **ret) {
        g_autofree char *e = NULL, *destination = NULL, *name = NULL, *dir = NULL, *host = NULL;

        g_return_val_if_fail(ret, -EINVAL);

        if (!ferry_uri_is_valid(u))
                return -EINVAL;

        switch (u->transport) {

        case FERRY_URI_LOCAL:
                *ret = NULL;
                return 0;

        case FERRY_URI_UNIX:
                e = bus_address_escape(u->socket);
                *ret = g_strdup_printf("unix:path=%s", e);
                return 0;

        case FERRY_URI_SSH:
                /* As systemd's bus_set_address_system_remote(): "[user@]host" is one argument after
                 * "--", an IPv6 literal without brackets, the port a separate "-p" argument. The
                 * host and user were validated, so none of them can start with '-' anyway. */
                destination = u->user ? g_strdup_printf("%s@%s", u->user, u->host) : g_strdup(u->host);
                e = bus_address_escape(destination);
                if (u->port > 0)
                        *ret = g_strdup_printf("unixexec:path=ssh,argv1=-xT,argv2=-p,argv3=%u,"
                                               "argv4=--,argv5=%s,argv6=systemd-stdio-bridge", u->port, e);
                else
                        *ret = g_strdup_printf("unixexec:path=ssh,argv1=-xT,"
                                               "argv2=--,argv3=%s,argv4=systemd-stdio-bridge", e);
                return 0;

        case FERRY_URI_TLS:
                /* The helper connects to the peer port and speaks TLS; sd-bus talks to it over
                 * the socket unixexec: gives it as fd 0 and 1. The certificate must carry the
                 * host as written (without brackets for IPv6). */
                host = host_for_uri(u->host);
                destination = g_strdup_printf("%s:%u", host, u->port > 0 ? u->port : FERRY_PEER_PORT_DEFAULT);
                e = bus_address_escape(destination);
                name = bus_address_escape(u->host);
                dir = bus_address_escape(pki_dir ?: FERRY_SYSCONF_DIR "/pki");
                *ret = g_strdup_printf("unixexec:path=" FERRY_LIBEXECDIR "/ferry-transport,"
                                       "argv1=--bus-connect%%3d%s,argv2=--peer-name%%3d%s,argv3=--pki-dir%%3d%s",
                                       e, name, dir);
                return 0;

        default:
                return -EINVAL;
        }
}

/* ---- hypervisor and disks URIs ---- */

MigrationUri *migration_uri_free(MigrationUri *u) {
        if (!u)
                return NULL;
        g_free(u->host);
        g_free(u->path);
        g_free(u);
        return NULL;
}

static int refuse_migration_scheme(const char *scheme, char **ret_error) {
        static const struct {
                const char *scheme;
                const char *why;
        } refused[] = {
                { "exec", "it makes QEMU run a shell command" },
                { "fd", "it hands QEMU one of its own file descriptors" },
                { "file", "it writes the guest's state to a file (not supported)" },
                { "rdma", "it needs RDMA hardware (not supported)" },
                { "vsock", "it is not supported" },
                { "channel", "it is not supported" },
        };

        for (size_t i = 0; i < ELEMENTSOF(refused); i++)
                if (strcmp(scheme, refused[i].scheme) == 0)
                        return fail(ret_error, "Refused migration URI scheme '%s:': %s; use "
                                    HYPERVISOR_FORMS, scheme, refused[i].why);
        if (g_str_has_prefix(scheme, "ferry") || g_str_has_prefix(scheme, "qemu"))
                return fail(ret_error, "'%s:' is a destination URI, not a hypervisor URI; use "
                            HYPERVISOR_FORMS, scheme);
        return fail(ret_error, "Unsupported migration URI scheme '%s:'; use " HYPERVISOR_FORMS, scheme);
}

static int parse_tcp(MigrationUri *u, const char *rest, const char *end, MigrationUriFlags flags,
                     char **ret_error) {
        const char *hp, *hp_end;
        bool qemu_style;
        int r;

        if (memchr(rest, '?', end - rest))
                return fail(ret_error, "A tcp: URI takes no query ('?')");
        if (memchr(rest, '#', end - rest))
                return fail(ret_error, "A tcp: URI takes no fragment ('#')");

        qemu_style = !(end - rest >= 2 && rest[0] == '/' && rest[1] == '/');
        if (qemu_style) {
                if (rest < end && rest[0] == '/')
                        return fail(ret_error, "Write tcp://HOST[:PORT]/ or tcp:HOST:PORT");
                hp = rest;
                hp_end = end;
                if (memchr(hp, '/', hp_end - hp))
                        return fail(ret_error, "A tcp:HOST:PORT URI takes no path");
        } else {
                hp = rest + 2;
                hp_end = memchr(hp, '/', end - hp) ?: end;
                if (hp_end < end && hp_end + 1 != end)
                        return fail(ret_error, "A tcp:// URI takes no path");
        }
        if (memchr(hp, '@', hp_end - hp))
                return fail(ret_error, "A tcp: URI takes no user name ('@')");
        if (memchr(hp, ',', hp_end - hp) || memchr(hp, ';', hp_end - hp))
                return fail(ret_error, "A tcp: URI takes no options (',' or ';')");

        r = parse_host_port(hp, hp_end - hp, flags & MIGRATION_URI_ALLOW_ANY, &u->host, &u->port, ret_error);
        if (r < 0)
                return r;
        if (qemu_style && u->port == 0)
                return fail(ret_error, "tcp:HOST:PORT needs a port; write tcp://HOST/ to have one picked");
        if (u->host && host_is_unspecified(u->host)) {
                if (!(flags & MIGRATION_URI_ALLOW_ANY))
                        return fail(ret_error, "Host %s is the unspecified address; give the address "
                                    "of the destination", u->host);
                u->host = mfree(u->host);
        }
        return 0;
}

static int parse_unix(MigrationUri *u, const char *rest, const char *end, char **ret_error) {
        const char *path = rest;

        if (memchr(rest, '?', end - rest))
                return fail(ret_error, "A unix: URI takes no query ('?')");
        if (memchr(rest, '#', end - rest))
                return fail(ret_error, "A unix: URI takes no fragment ('#')");
        if (end - rest >= 2 && rest[0] == '/' && rest[1] == '/') {
                path = rest + 2;
                if (path == end || path[0] != '/')
                        return fail(ret_error, "A unix:// URI takes no host; write unix:///PATH");
        } else if (rest == end || rest[0] != '/')
                return fail(ret_error, "A unix: URI needs an absolute path: unix:///PATH");

        return path_normalize(path, end - path, &u->path, ret_error);
}

int migration_uri_parse_full(const char *input, size_t length, MigrationUriFlags flags,
                             MigrationUri **ret, char **ret_error) {
        _cleanup_(migration_uri_freep) MigrationUri *u = NULL;
        g_autofree char *scheme = NULL, *s = NULL;
        const char *rest;
        int r;

        g_return_val_if_fail(input, -EINVAL);
        g_return_val_if_fail(ret, -EINVAL);

        r = check_raw(input, &length, ret_error);
        if (r < 0)
                return r;
        s = g_strndup(input, length);
        r = split_scheme(s, length, &scheme, &rest, ret_error);
        if (r < 0)
                return r;

        u = g_new0(MigrationUri, 1);
        if (strcmp(scheme, "tcp") == 0) {
                u->kind = MIGRATION_URI_TCP;
                r = parse_tcp(u, rest, s + length, flags, ret_error);
        } else if (strcmp(scheme, "unix") == 0) {
                u->kind = MIGRATION_URI_UNIX;
                r = parse_unix(u, rest, s + length, ret_error);
        } else
                r = refuse_migration_scheme(scheme, ret_error);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(u);
        return 0;
}

int migration_uri_parse(const char *s, MigrationUri **ret, char **ret_error) {
        return migration_uri_parse_full(s, SIZE_MAX, 0, ret, ret_error);
}

static bool migration_uri_is_valid(const MigrationUri *u) {
        if (!u)
                return false;
        switch (u->kind) {
        case MIGRATION_URI_TCP:
                return !u->path && (!u->host || migration_host_is_valid(u->host));
        case MIGRATION_URI_UNIX:
                return !u->host && u->port == 0 && path_is_normalized(u->path);
        default:
                return false;
        }
}

char *migration_uri_to_string(const MigrationUri *u) {
        g_autofree char *host = NULL, *port = NULL;

        if (!migration_uri_is_valid(u))
                return NULL;
        if (u->kind == MIGRATION_URI_UNIX)
                return g_strdup_printf("unix://%s", u->path);

        host = u->host ? host_for_uri(u->host) : g_strdup("");
        port = u->port > 0 ? g_strdup_printf(":%u", u->port) : g_strdup("");
        return g_strdup_printf("tcp://%s%s/", host, port);
}

char *migration_uri_to_qemu(const MigrationUri *u) {
        g_autofree char *host = NULL;

        if (!migration_uri_is_valid(u))
                return NULL;
        if (u->kind == MIGRATION_URI_UNIX)
                return g_strdup_printf("unix:%s", u->path);

        if (u->port == 0)
                return NULL;
        /* QEMU's inet_parse(): an empty host listens on every address, v4 and v6. */
        host = u->host ? host_for_uri(u->host) : g_strdup("");
        return g_strdup_printf("tcp:%s:%u", host, u->port);
}

int migration_port_range_parse(const char *s, uint16_t *ret_min, uint16_t *ret_max) {
        const char *dash;
        uint16_t lo, hi;
        int r;

        g_return_val_if_fail(ret_min, -EINVAL);
        g_return_val_if_fail(ret_max, -EINVAL);

        if (!s)
                return -EINVAL;
        dash = strchr(s, '-');
        if (dash) {
                r = parse_port(s, dash - s, &lo, NULL);
                if (r < 0)
                        return r;
                r = parse_port(dash + 1, strlen(dash + 1), &hi, NULL);
                if (r < 0)
                        return r;
                if (lo > hi)
                        return -EINVAL;
        } else {
                r = parse_port(s, strlen(s), &lo, NULL);
                if (r < 0)
                        return r;
                hi = lo;
        }
        *ret_min = lo;
        *ret_max = hi;
        return 0;
}
