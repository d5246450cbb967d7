/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "selinux-socket.h"
#include "sockets.h"
#include "transport.h"

void describe_peer(int fd, char *buf, size_t size) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (getpeername(fd, (struct sockaddr *) &sa, &len) == 0) {
                if (sa.ss_family == AF_INET) {
                        struct sockaddr_in *in = (struct sockaddr_in *) &sa;
                        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                        port = ntohs(in->sin_port);
                } else if (sa.ss_family == AF_INET6) {
                        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &sa;
                        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                        port = ntohs(in6->sin6_port);
                }
        }
        snprintf(buf, size, "%s:%u", host, port);
}

void set_nodelay(int fd) {
        int one = 1;

        /* Post-copy's page requests are small and urgent; bulk data goes in large writes. */
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int parse_host_port(const char *s, char **ret_host, unsigned *ret_port) {
        const char *colon, *host_end;
        const char *host = s;
        unsigned long port = PEER_PORT_DEFAULT;
        char *end;

        if (!s || !*s)
                return -EINVAL;
        if (s[0] == '[') {
                host = s + 1;
                host_end = strchr(host, ']');
                if (!host_end)
                        return -EINVAL;
                colon = host_end[1] == ':' ? host_end + 1 : NULL;
                if (!colon && host_end[1] != 0)
                        return -EINVAL;
        } else {
                colon = strrchr(s, ':');
                if (colon && strchr(s, ':') != colon)
                        return -EINVAL; /* bare IPv6 needs brackets */
                host_end = colon ?: s + strlen(s);
        }
        if (colon) {
                errno = 0;
                port = strtoul(colon + 1, &end, 10);
                if (errno || end == colon + 1 || *end || port > 65535)
                        return -EINVAL;
        }
        if (host_end == host)
                return -EINVAL;
        *ret_host = strndup(host, (size_t) (host_end - host));
        if (!*ret_host)
                return -ENOMEM;
        *ret_port = (unsigned) port;
        return 0;
}

int resolve_address(const char *address, bool passive, struct sockaddr_storage *ret, socklen_t *ret_len) {
        _cleanup_free_ char *host = NULL;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 }, *ai = NULL;
        char port_str[16];
        unsigned port;
        int r;

        r = parse_host_port(address, &host, &port);
        if (r < 0)
                return r;
        snprintf(port_str, sizeof(port_str), "%u", port);
        r = getaddrinfo(host, port_str, &hints, &ai);
        if (r != 0)
                return r == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
        memcpy(ret, ai->ai_addr, ai->ai_addrlen);
        *ret_len = ai->ai_addrlen;
        freeaddrinfo(ai);
        return 0;
}

int listen_qemu_socket(const char *path, const char *context, int *ret_fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        mode_t old_umask;
        int fd, r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);

        fd = socket_create_labelled(&selinux_ops_libselinux, context, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK);
        if (fd < 0)
                return fd;
        /* A stale socket from an earlier run of this migration id; never anything else. */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                (void) unlink(path);
        old_umask = umask(0077);
        r = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
        umask(old_umask);
        if (r < 0 || listen(fd, STREAMS_MAX) < 0) {
                r = -errno;
                safe_close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

int listen_peer(const char *listen_address, const char *dispatch_socket, const char *dispatch_group, int *ret_fd,
                char *desc, size_t desc_size) {
        struct sockaddr_storage sa;
        socklen_t len;
        int fd, one = 1, r;

        if (dispatch_socket) {
                struct sockaddr_un un = { .sun_family = AF_UNIX };
                struct stat st;
                mode_t old_umask;

                if (strlen(dispatch_socket) >= sizeof(un.sun_path))
                        return -ENAMETOOLONG;
                strncpy(un.sun_path, dispatch_socket, sizeof(un.sun_path) - 1);
                fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return -errno;
                if (lstat(dispatch_socket, &st) == 0 && S_ISSOCK(st.st_mode))
                        (void) unlink(dispatch_socket);
                /* Only root (the dispatcher) and this helper's user may hand us connections. */
                old_umask = umask(0077);
                r = bind(fd, (struct sockaddr *) &un, sizeof(un));
                umask(old_umask);
                if (r < 0) {
                        r = -errno;
                        safe_close(fd);
                        return r;
                }
                if (dispatch_group) {
                        /* ferry-peer (root without CAP_DAC_OVERRIDE) gets in through the group. */
                        r = share_with_group(dispatch_socket, dispatch_group, 0660);
                        if (r < 0) {
                                (void) unlink(dispatch_socket);
                                safe_close(fd);
                                return r;
                        }
                }
                *ret_fd = fd;
                snprintf(desc, desc_size, "%s", dispatch_socket);
                return 0;
        }
        if (!listen_address) {
                /* Socket activation: the dispatcher (or a test) hands us the listening socket. */
                r = sd_listen_fds(true);
                if (r < 0)
                        return r;
                if (r != 1)
                        return -EBADF;
                fd = SD_LISTEN_FDS_START;
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                (void) fcntl(fd, F_SETFL, O_NONBLOCK);
        } else {
                r = resolve_address(listen_address, true, &sa, &len);
                if (r < 0)
                        return r;
                fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return -errno;
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, (struct sockaddr *) &sa, len) < 0 || listen(fd, 128) < 0) {
                        r = -errno;
                        safe_close(fd);
                        return r;
                }
        }

        len = sizeof(sa);
        /* Owned by the caller from here, whatever happens below. */
        *ret_fd = fd;
        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return -errno;
        {
                char host[INET6_ADDRSTRLEN] = "?";
                unsigned port = 0;
                if (sa.ss_family == AF_INET) {
                        inet_ntop(AF_INET, &((struct sockaddr_in *) &sa)->sin_addr, host, sizeof(host));
                        port = ntohs(((struct sockaddr_in *) &sa)->sin_port);
                        snprintf(desc, desc_size, "%s:%u", host, port);
                } else if (sa.ss_family == AF_INET6) {
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &sa)->sin6_addr, host, sizeof(host));
                        port = ntohs(((struct sockaddr_in6 *) &sa)->sin6_port);
                        snprintf(desc, desc_size, "[%s]:%u", host, port);
                } else
                        return -EAFNOSUPPORT;
        }
        return 0;
}
