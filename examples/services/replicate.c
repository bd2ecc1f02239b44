/*
 * replicate.c - the db's copy of every write to its replica (--replicate-to),
 * which is how the example keeps the standby site's volume current: the
 * write is stored here first, then sent to the replica as the same
 * PUT /kv/KEY, and the client's answer waits for the replica's (bounded by
 * REPLICA_TIMEOUT_MS). A replica that is down costs one timeout per write
 * and is logged; the write itself is never refused for it.
 */
#define _GNU_SOURCE 1 /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "svc.h"

#define REPLICA_TIMEOUT_MS 5000
#define SYNC_TIMEOUT_MS 60000

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

/* One HTTP/1.1 request to addr (Connection: close), bounded by deadline.
 * Returns the status (0 when the request failed) and, when out is given,
 * the body of the answer in *out (malloc'd, NUL-terminated). */
static int http_call(const struct cfm_svc_addr *addr, const char *method, const char *path,
                     const char *body, size_t len, int64_t deadline, char **out, size_t *out_len)
{
    char head[512];
    int fd, n, err = 0, status = 0;
    socklen_t elen = sizeof err;
    struct cfm_svc_buf in = {0};

    if (out)
        *out = NULL;
    fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (connect(fd, (const struct sockaddr *)&addr->sa, addr->len) != 0 &&
        (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline) ||
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0))
        goto out;
    n = snprintf(head, sizeof head,
                 "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                 method, path, addr->text, len);
    if (n < 0 || (size_t)n >= sizeof head || !send_all(fd, head, (size_t)n, deadline) ||
        (len && !send_all(fd, body, len, deadline)))
        goto out;
    for (;;) {
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
            if (!cfm_svc_buf_add(&in, buf, (size_t)r, CFM_SVC_MAX_BODY + 4096))
                goto out;
        } else if (r == 0) {
            break;
        } else if ((errno != EAGAIN && errno != EINTR) || !wait_fd(fd, POLLIN, deadline)) {
            goto out;
        }
    }
    if (in.len >= 12 && strncmp(in.data, "HTTP/1.", 7) == 0)
        status = (in.data[9] - '0') * 100 + (in.data[10] - '0') * 10 + (in.data[11] - '0');
    if (out && status) {
        const char *sep = memmem(in.data, in.len, "\r\n\r\n", 4);
        size_t blen = sep ? in.len - (size_t)(sep + 4 - in.data) : 0;
        if ((*out = malloc(blen + 1))) {
            memcpy(*out, sep ? sep + 4 : "", blen);
            (*out)[blen] = '\0';
            *out_len = blen;
        } else {
            status = 0;
        }
    }
out:
    free(in.data);
    close(fd);
    return status;
}

bool cfm_svc_replicate(struct cfm_svc *svc, const char *key, const char *body, size_t len)
{
    char path[CFM_SVC_MAX_NAME + 8];
    int status;

    snprintf(path, sizeof path, "/kv/%s", key);
    status = http_call(&svc->replica, "PUT", path, body, len,
                       cfm_svc_now_ms() + REPLICA_TIMEOUT_MS, NULL, NULL);
    if (status / 100 != 2 && svc->replica_failures++ % 100 == 0)
        cfm_svc_log(svc, "replica %s did not take %s (%lu failure(s) so far)", svc->replica.text,
                    key, svc->replica_failures);
    return status / 100 == 2;
}

bool cfm_svc_sync_from(struct cfm_svc *svc, const struct cfm_svc_addr *from)
{
    int64_t deadline = cfm_svc_now_ms() + SYNC_TIMEOUT_MS;
    char *keys = NULL, *save = NULL, *key;
    size_t len = 0, copied = 0;
    bool ok = false;

    if (http_call(from, "GET", "/keys", NULL, 0, deadline, &keys, &len) != 200) {
        cfm_svc_log(svc, "sync: %s did not list its keys", from->text);
        goto out;
    }
    for (key = strtok_r(keys, "\n", &save); key; key = strtok_r(NULL, "\n", &save)) {
        char path[CFM_SVC_MAX_NAME + 8], *value = NULL;
        size_t vlen = 0;
        if (strlen(key) > CFM_SVC_MAX_NAME)
            continue;
        snprintf(path, sizeof path, "/kv/%s", key);
        if (http_call(from, "GET", path, NULL, 0, deadline, &value, &vlen) != 200 ||
            !cfm_svc_db_store(svc, key, value, vlen)) {
            cfm_svc_log(svc, "sync: cannot copy %s from %s", key, from->text);
            free(value);
            goto out;
        }
        free(value);
        copied++;
    }
    cfm_svc_log(svc, "sync: copied %zu key(s) from %s", copied, from->text);
    ok = true;
out:
    free(keys);
    return ok;
}
