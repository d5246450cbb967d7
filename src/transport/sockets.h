/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The helper's sockets: QEMU's socket, the peer port, addresses. */

/* "host", "host:port", "[v6]:port" -> host (malloc'd) and port (default PEER_PORT_DEFAULT). */
int parse_host_port(const char *s, char **ret_host, unsigned *ret_port);
/* Resolves once, at start: a name that changes mid-migration must not split its streams. */
int resolve_address(const char *address, bool passive, struct sockaddr_storage *ret, socklen_t *ret_len);

/* The socket the source QEMU connects to: created under the SELinux context (NULL: none),
 * mode 0600, replacing a stale socket (never another kind of file). */
int listen_qemu_socket(const char *path, const char *context, int *ret_fd);
/* The destination's way in: the dispatcher's datagram socket, a TCP listening address, or
 * (both NULL) the one socket passed with LISTEN_FDS. desc names it for the READY status. */
/* dispatch_group: the dispatch socket becomes 0660 with that group (the helper must be a member)
 * instead of 0600: a dispatcher running as another user of the group may hand us connections. */
int listen_peer(const char *listen_address, const char *dispatch_socket, const char *dispatch_group, int *ret_fd,
                char *desc, size_t desc_size);

void describe_peer(int fd, char *buf, size_t size);
/* Post-copy's page requests are small and urgent; bulk data goes in large writes. */
void set_nodelay(int fd);
