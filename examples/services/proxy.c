/*
 * proxy.c - the upstream side of a connection: lb passes every request to
 * a backend, web passes /kv requests to the db.
 *
 * The request is re-sent with Content-Length and "Connection: close" (its
 * head rebuilt here, its body straight from the client's buffer), and the
 * upstream's answer is read to EOF, at most CFM_SVC_MAX_RESP bytes, and
 * passed on as it came, with an X-Backend header added after the status
 * line when the caller asks (lb). Which upstream to try is modes.c's
 * choice (cfm_svc_pick_upstream): one that refuses the connection, or does
 * not connect within CFM_SVC_TIMEOUT_MS, is skipped for the next, and so is
 * one that closes without a byte of answer to a GET. Anything else that
 * goes wrong after the request is sent is a 502 (a PUT is never sent twice).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "svc.h"

/* A diagnostic for the answer and the log; cut short if it must be. */
static void set_why(struct cfm_svc_conn *c, const char *what)
{
    int n = snprintf(c->up_why, sizeof c->up_why, "%s %s: %s", c->backend, c->up_addr.text, what);

    if (n < 0)
        c->up_why[0] = '\0';
}

void cfm_svc_proxy_close(struct cfm_svc_conn *c)
{
    if (c->up_fd >= 0)
        close(c->up_fd);
    c->up_fd = -1;
    c->up = CFM_SVC_UP_NONE;
    c->up_off = 0;
    c->up_out.len = c->up_in.len = 0;
}

static void next_upstream(struct cfm_svc *svc, struct cfm_svc_conn *c);

/* The upstream failed: the next one for a connect failure, or for a GET
 * that got no byte of answer; else 502. */
static void upstream_failed(struct cfm_svc *svc, struct cfm_svc_conn *c, const char *what,
                            bool may_retry)
{
    set_why(c, what);
    cfm_svc_log(svc, "%s: %s %s: %s", c->peer, c->req.method, c->req.target, c->up_why);
    if (may_retry) {
        next_upstream(svc, c);
        return;
    }
    cfm_svc_respondf(svc, c, 502, "%s\n", c->up_why);
}

static void next_upstream(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    const struct cfm_svc_req *r = &c->req;
    int fd;

    cfm_svc_proxy_close(c);
    if (!cfm_svc_pick_upstream(svc, c)) {
        cfm_svc_no_upstream(svc, c);
        return;
    }
    c->up_tries++;
    /* the head only: the body is sent from the request's own buffer */
    if (!cfm_svc_buf_addf(
            &c->up_out, CFM_SVC_MAX_HEAD + CFM_SVC_SLACK,
            "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cfm-svc\r\nConnection: close\r\n"
            "Content-Length: %zu\r\n%s%s%s\r\n",
            r->method, r->target, c->up_addr.text, r->body_len, r->ctype ? "Content-Type: " : "",
            r->ctype ? r->ctype : "", r->ctype ? "\r\n" : "")) {
        cfm_svc_respondf(svc, c, 500, "out of memory\n");
        return;
    }
    c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
    fd = socket(c->up_addr.sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        int e = errno;

        if (fd >= 0)
            close(fd);
        c->up_fd = -1;
        cfm_svc_respondf(svc, c, 500, "cannot open a socket: %s\n", strerror(e));
        return;
    }
    c->up_fd = fd;
    if (connect(fd, (const struct sockaddr *)&c->up_addr.sa, c->up_addr.len) == 0)
        c->up = CFM_SVC_UP_SEND;
    else if (errno == EINPROGRESS || errno == EINTR)
        c->up = CFM_SVC_UP_CONNECT;
    else
        upstream_failed(svc, c, strerror(errno), true);
}

void cfm_svc_proxy(struct cfm_svc *svc, struct cfm_svc_conn *c, bool tag)
{
    c->state = CFM_SVC_PROXY;
    c->up_tag = tag;
    c->up_tries = 0;
    next_upstream(svc, c);
}

/* The upstream closed: pass its answer on. */
static void upstream_done(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    struct cfm_svc_buf *in = &c->up_in;
    char *nl = in->len ? memchr(in->data, '\n', in->len) : NULL;
    size_t first;
    int status = 0;

    if (!nl || in->len < 12 || memcmp(in->data, "HTTP/1.", 7) != 0 || in->data[8] != ' ') {
        upstream_failed(svc, c, in->len ? "not an HTTP answer" : "closed without answering",
                        in->len == 0 && strcmp(c->req.method, "GET") == 0);
        return;
    }
    for (size_t i = 9; i < 12; i++) {
        if (in->data[i] < '0' || in->data[i] > '9') {
            upstream_failed(svc, c, "not an HTTP status", false);
            return;
        }
        status = status * 10 + (in->data[i] - '0');
    }
    first = (size_t)(nl - in->data) + 1;
    if (c->up_tag) { /* X-Backend goes right after the status line, in place */
        char tag[CFM_SVC_MAX_NAME + 16];
        int n = snprintf(tag, sizeof tag, "X-Backend: %s\r\n", c->backend);

        if (n < 0 || (size_t)n >= sizeof tag ||
            !cfm_svc_buf_grow(in, in->len + (size_t)n, CFM_SVC_MAX_RESP + CFM_SVC_SLACK)) {
            cfm_svc_respondf(svc, c, 500, "out of memory\n");
            return;
        }
        memmove(in->data + first + n, in->data + first, in->len - first);
        memcpy(in->data + first, tag, (size_t)n);
        in->len += (size_t)n;
    }
    cfm_svc_buf_free(&c->out); /* the answer is the upstream's buffer: no copy */
    c->out = *in;
    *in = (struct cfm_svc_buf){0};
    cfm_svc_answer(svc, c, status);
}

void cfm_svc_proxy_ready(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;

    if (c->up == CFM_SVC_UP_CONNECT) {
        if (getsockopt(c->up_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == EINPROGRESS || err == EALREADY)
            return;
        if (err != 0) {
            upstream_failed(svc, c, strerror(err), true);
            return;
        }
        c->up = CFM_SVC_UP_SEND;
        c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
    }
    while (c->up == CFM_SVC_UP_SEND) { /* the head, then the body */
        bool in_head = c->up_off < c->up_out.len;
        const char *from =
            in_head ? c->up_out.data + c->up_off : c->req.body + (c->up_off - c->up_out.len);
        size_t left =
            in_head ? c->up_out.len - c->up_off : c->req.body_len - (c->up_off - c->up_out.len);
        ssize_t n = left ? send(c->up_fd, from, left, MSG_NOSIGNAL) : 0;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            upstream_failed(svc, c, strerror(errno), strcmp(c->req.method, "GET") == 0);
            return;
        }
        c->up_off += (size_t)n;
        c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
        if (c->up_off == c->up_out.len + c->req.body_len)
            c->up = CFM_SVC_UP_RECV;
    }
    for (;;) {
        ssize_t n;

        if (!cfm_svc_buf_grow(&c->up_in,
                              c->up_in.len + CFM_SVC_READ_STEP < CFM_SVC_MAX_RESP
                                  ? c->up_in.len + CFM_SVC_READ_STEP
                                  : CFM_SVC_MAX_RESP,
                              CFM_SVC_MAX_RESP)) {
            upstream_failed(svc, c, "out of memory", false);
            return;
        }
        if (c->up_in.len == CFM_SVC_MAX_RESP) {
            upstream_failed(svc, c, "answer larger than the limit", false);
            return;
        }
        n = recv(c->up_fd, c->up_in.data + c->up_in.len, c->up_in.cap - c->up_in.len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            upstream_failed(svc, c, strerror(errno),
                            c->up_in.len == 0 && strcmp(c->req.method, "GET") == 0);
            return;
        }
        if (n == 0) {
            upstream_done(svc, c);
            return;
        }
        c->up_in.len += (size_t)n;
        c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
    }
}

/* The phase's deadline passed: a connect that hangs moves on to the next
 * upstream unless the request is out of time; anything else is a 504. */
void cfm_svc_proxy_timeout(struct cfm_svc *svc, struct cfm_svc_conn *c, bool expired)
{
    if (c->up == CFM_SVC_UP_CONNECT && !expired) {
        upstream_failed(svc, c, "connect timed out", true);
        return;
    }
    set_why(c, "no answer in time");
    cfm_svc_respondf(svc, c, 504, "%s\n", c->up_why);
}
