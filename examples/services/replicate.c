/*
 * replicate.c - the db's copy of every write to its replica (--replicate-to),
 * which is how the example keeps the standby site's volume current: the
 * write is stored here first, then sent to the replica as the same
 * PUT /kv/KEY, and the client's answer waits for the replica's (bounded by
 * REPLICA_TIMEOUT_MS). A replica that is down costs one timeout per write
 * and is logged; the write itself is never refused for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "svc.h"

#define REPLICA_TIMEOUT_MS 2000

/* Waits until fd is ready for events or the deadline passes. */
static bool wait_fd(int fd, short events, int64_t deadline_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int64_t left = deadline_ms - cfm_svc_now_ms();

    return left > 0 && poll(&p, 1, (int)left) == 1 && !(p.revents & (POLLERR | POLLNVAL));
}

static bool send_all(int fd, const char *p, size_t len, int64_t deadline_ms)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        } else if (!wait_fd(fd, POLLOUT, deadline_ms)) {
            return false;
        }
    }
    return true;
}

bool cfm_svc_replicate(struct cfm_svc *svc, const char *key, const char *body, size_t len)
{
    int64_t deadline = cfm_svc_now_ms() + REPLICA_TIMEOUT_MS;
    char head[256], status[32];
    int fd, n, err = 0;
    socklen_t elen = sizeof err;
    ssize_t got = 0;
    bool ok = false;

    fd = socket(svc->replica.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto out;
    if (connect(fd, (const struct sockaddr *)&svc->replica.sa, svc->replica.len) != 0 &&
        (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline) ||
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0))
        goto out;
    n = snprintf(head, sizeof head,
                 "PUT /kv/%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 key, svc->replica.text, len);
    if (n < 0 || (size_t)n >= sizeof head || !send_all(fd, head, (size_t)n, deadline) ||
        !send_all(fd, body, len, deadline))
        goto out;
    while ((size_t)got < sizeof status - 1) {
        ssize_t r = recv(fd, status + got, sizeof status - 1 - (size_t)got, 0);
        if (r > 0)
            got += r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR) || !wait_fd(fd, POLLIN, deadline))
            break;
    }
    status[got] = '\0';
    /* "HTTP/1.1 2xx" */
    ok = got >= 12 && strncmp(status, "HTTP/1.", 7) == 0 && status[9] == '2';
out:
    if (fd >= 0)
        close(fd);
    if (!ok && svc->replica_failures++ % 100 == 0)
        cfm_svc_log(svc, "replica %s did not take %s (%lu failure(s) so far)", svc->replica.text,
                    key, svc->replica_failures);
    return ok;
}
