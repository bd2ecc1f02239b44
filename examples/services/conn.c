/*
 * conn.c - one HTTP/1.1 connection of cfm-svc, from accept to close, on a
 * non-blocking socket driven by main.c's poll loop; and the byte buffers
 * everything in cfm-svc is built in.
 *
 * A connection reads one whole request (head at most CFM_SVC_MAX_HEAD,
 * body at most CFM_SVC_MAX_BODY, by Content-Length only), hands it to
 * modes.c, writes one answer with "Connection: close", then half-closes and
 * drains what the client still sends (a lingering close, so an early 413
 * is read by the client rather than lost to a reset). A request modes.c
 * passes on waits in CFM_SVC_PROXY while proxy.c talks to the upstream.
 *
 * Every phase has CFM_SVC_TIMEOUT_MS to make progress; any progress
 * restarts the clock. Reading the request and waiting for the upstream
 * together have at most CFM_SVC_MAX_LIFE_MS, and so has writing the answer,
 * so a client trickling a byte at a time cannot hold a slot for ever.
 *
 * The one thing a reader must know: a connection never frees itself. It
 * moves to CFM_SVC_CLOSED and main.c frees it after the poll round, so no
 * pointer held by the loop dangles.
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include "svc.h"

#define MAX_METHOD 16

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Makes room for need bytes in b, never more than max. */
bool cfm_svc_buf_grow(struct cfm_svc_buf *b, size_t need, size_t max)
{
    size_t cap = b->cap ? b->cap : 4096;
    char *data;

    if (need > max)
        return false;
    if (need <= b->cap)
        return true;
    while (cap < need)
        cap = cap > max / 2 ? max : cap * 2;
    data = realloc(b->data, cap);
    if (!data)
        return false;
    b->data = data;
    b->cap = cap;
    return true;
}

void cfm_svc_buf_free(struct cfm_svc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

bool cfm_svc_buf_add(struct cfm_svc_buf *b, const void *data, size_t len, size_t max)
{
    if (len == 0)
        return true;
    if (len > max || b->len > max - len || !cfm_svc_buf_grow(b, b->len + len, max))
        return false;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

bool cfm_svc_buf_addf(struct cfm_svc_buf *b, size_t max, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= max || b->len > max - (size_t)n - 1 ||
        !cfm_svc_buf_grow(b, b->len + (size_t)n + 1, max))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

struct cfm_svc_conn *cfm_svc_conn_new(int fd, const struct sockaddr *peer, socklen_t len)
{
    struct cfm_svc_conn *c = calloc(1, sizeof *c);
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (!c) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->up_fd = -1;
    c->state = CFM_SVC_READ;
    c->started_ms = cfm_svc_now_ms();
    c->deadline_ms = c->started_ms + CFM_SVC_TIMEOUT_MS;
    c->expires_ms = c->started_ms + CFM_SVC_MAX_LIFE_MS;
    if (getnameinfo(peer, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0 ||
        snprintf(c->peer, sizeof c->peer, "%s:%s", host, port) >= (int)sizeof c->peer)
        snprintf(c->peer, sizeof c->peer, "?");
    return c;
}

void cfm_svc_conn_free(struct cfm_svc_conn *c)
{
    if (!c)
        return;
    cfm_svc_proxy_close(c);
    if (c->fd >= 0)
        close(c->fd);
    cfm_svc_buf_free(&c->in);
    cfm_svc_buf_free(&c->out);
    cfm_svc_buf_free(&c->up_out);
    cfm_svc_buf_free(&c->up_in);
    free(c);
}

short cfm_svc_conn_events(const struct cfm_svc_conn *c, short *up_events)
{
    *up_events = 0;
    if (c->state == CFM_SVC_PROXY)
        *up_events = c->up == CFM_SVC_UP_RECV ? POLLIN : c->up == CFM_SVC_UP_NONE ? 0 : POLLOUT;
    switch (c->state) {
    case CFM_SVC_READ:
    case CFM_SVC_LINGER: return POLLIN;
    case CFM_SVC_WRITE: return POLLOUT;
    default: return 0;
    }
}

static void log_request(const struct cfm_svc *svc, const struct cfm_svc_conn *c)
{
    cfm_svc_log(svc, "%s %s %s %d backend=%s tries=%zu %lldms", c->peer,
                c->req.method ? c->req.method : "-", c->req.target ? c->req.target : "-", c->status,
                c->backend[0] ? c->backend : "-", c->up_tries,
                (long long)(cfm_svc_now_ms() - c->started_ms));
}

static void on_writable(struct cfm_svc_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);

        if (n > 0) {
            c->out_off += (size_t)n;
            c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            c->state = CFM_SVC_CLOSED; /* the client went away: nothing to tell */
            return;
        }
    }
    if (shutdown(c->fd, SHUT_WR) != 0) {
        c->state = CFM_SVC_CLOSED;
        return;
    }
    cfm_svc_buf_free(&c->out);
    cfm_svc_buf_free(&c->up_in);
    cfm_svc_buf_free(&c->up_out);
    cfm_svc_buf_free(&c->in);
    c->req = (struct cfm_svc_req){0};
    c->state = CFM_SVC_LINGER;
    c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_LINGER_MS;
}

void cfm_svc_answer(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status)
{
    c->status = status;
    c->out_off = 0;
    c->state = CFM_SVC_WRITE;
    c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
    c->expires_ms = cfm_svc_now_ms() + CFM_SVC_MAX_LIFE_MS; /* the answer's own time */
    cfm_svc_proxy_close(c);
    log_request(svc, c);
    on_writable(c);
}

void cfm_svc_respond(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status,
                     const char *ctype, const char *body, size_t len)
{
    c->out.len = 0;
    if (!cfm_svc_buf_addf(&c->out, CFM_SVC_MAX_RESP,
                          "HTTP/1.1 %d %s\r\nServer: cfm-svc\r\nContent-Type: %s\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          status, reason(status), ctype, len) ||
        !cfm_svc_buf_add(&c->out, body, len, CFM_SVC_MAX_RESP)) {
        cfm_svc_log(svc, "%s: out of memory for a %zu-byte answer; closing", c->peer, len);
        c->state = CFM_SVC_CLOSED;
        return;
    }
    cfm_svc_answer(svc, c, status);
}

void cfm_svc_respondf(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status,
                      const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof body) { /* keep the line's end visible */
        n = (int)sizeof body - 1;
        body[n - 1] = '\n';
    }
    cfm_svc_respond(svc, c, status, "text/plain; charset=utf-8", body, (size_t)n);
}

/* Finds the blank line ending the head; remembers how far it looked. */
static bool find_head_end(struct cfm_svc_conn *c)
{
    for (; c->scan < c->in.len; c->scan++) {
        size_t n;

        if (c->in.data[c->scan] != '\n')
            continue;
        n = c->scan - c->line_start;
        if (c->line_start > 0 && (n == 0 || (n == 1 && c->in.data[c->line_start] == '\r'))) {
            c->head_len = c->scan + 1;
            return true;
        }
        c->line_start = c->scan + 1;
    }
    return false;
}

static bool token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Cuts the head into NUL-terminated lines in place and reads the request
 * line and the headers cfm-svc cares about. Returns 0, or the status of
 * the error answer. */
static int parse_head(struct cfm_svc_conn *c)
{
    char *p = c->in.data, *end = c->in.data + c->head_len, *line, *next, *sp, *v;
    bool have_length = false;
    size_t i;

    for (char *q = p; q < end; q++) /* every line ends at its \r\n or \n */
        if (*q == '\n' || (*q == '\r' && q + 1 < end && q[1] == '\n'))
            *q = '\0';
    line = p;
    sp = strchr(line, ' ');
    if (!sp || sp == line || sp - line >= MAX_METHOD)
        return 400;
    for (char *q = line; q < sp; q++)
        if (*q < 'A' || *q > 'Z')
            return 400;
    *sp = '\0';
    c->req.method = line;
    c->req.target = sp + 1;
    sp = strchr(sp + 1, ' ');
    if (!sp || c->req.target[0] != '/')
        return 400;
    *sp = '\0';
    for (const char *q = c->req.target; *q; q++)
        if (*q <= ' ' || *q > '~')
            return 400;
    c->req.path_len = strcspn(c->req.target, "?");
    if (strncmp(sp + 1, "HTTP/1.", 7) != 0)
        return 400;
    if (strcmp(sp + 1, "HTTP/1.0") != 0 && strcmp(sp + 1, "HTTP/1.1") != 0)
        return 505;
    for (line = sp + 1 + strlen(sp + 1) + 1; line < end; line = next) {
        next = line + strlen(line) + 1; /* before the line is cut further */
        if (*line == '\0') /* the second half of a cut "\r\n" */
            continue;
        v = strchr(line, ':');
        if (!v || v == line)
            return 400;
        for (char *q = line; q < v; q++)
            if (!token_char(*q))
                return 400;
        *v++ = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        for (i = strlen(v); i > 0 && (v[i - 1] == ' ' || v[i - 1] == '\t'); i--)
            v[i - 1] = '\0';
        if (strcasecmp(line, "Content-Length") == 0) {
            size_t n = 0;

            if (!*v || strspn(v, "0123456789") != strlen(v))
                return 400;
            if (strlen(v) > 9) /* over CFM_SVC_MAX_BODY; no overflow below */
                return 413;
            for (const char *q = v; *q; q++)
                n = n * 10 + (size_t)(*q - '0');
            if (have_length && n != c->body_len)
                return 400;
            have_length = true;
            c->body_len = n;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            return 501;
        } else if (strcasecmp(line, "Expect") == 0) {
            if (strcasecmp(v, "100-continue") != 0)
                return 417;
            c->expect_continue = true;
        } else if (strcasecmp(line, "Content-Type") == 0) {
            c->req.ctype = v;
        }
    }
    return c->body_len > CFM_SVC_MAX_BODY ? 413 : 0;
}

static void answer_bad_head(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status)
{
    switch (status) {
    case 413:
        cfm_svc_respondf(svc, c, 413,
                         "request too large: at most %u bytes of head and %u of body\n",
                         CFM_SVC_MAX_HEAD, CFM_SVC_MAX_BODY);
        break;
    case 501:
        cfm_svc_respondf(svc, c, 501, "Transfer-Encoding is not supported: send Content-Length\n");
        break;
    case 417: cfm_svc_respondf(svc, c, 417, "only 'Expect: 100-continue' is understood\n"); break;
    case 505: cfm_svc_respondf(svc, c, 505, "HTTP/1.0 and HTTP/1.1 only\n"); break;
    default: cfm_svc_respondf(svc, c, 400, "malformed request\n"); break;
    }
}

/* Makes room for the whole request now, so that the pointers of c->req
 * into the buffer stay valid while the body comes in. */
static bool reserve_request(struct cfm_svc_conn *c)
{
    const char *old = c->in.data;
    size_t method = (size_t)(c->req.method - old), target = (size_t)(c->req.target - old);
    size_t ctype = c->req.ctype ? (size_t)(c->req.ctype - old) : 0;

    if (!cfm_svc_buf_grow(&c->in, c->head_len + c->body_len, CFM_SVC_MAX_HEAD + CFM_SVC_MAX_BODY))
        return false;
    c->req.method = c->in.data + method;
    c->req.target = c->in.data + target;
    if (c->req.ctype)
        c->req.ctype = c->in.data + ctype;
    return true;
}

/* Head complete: parse it; 0 to go on reading the body, -1 when answered. */
static int on_head(const struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    int status = parse_head(c);

    if (status != 0) {
        answer_bad_head(svc, c, status);
        return -1;
    }
    if (!reserve_request(c)) {
        cfm_svc_log(svc, "%s: out of memory for a %zu-byte body; closing", c->peer, c->body_len);
        c->state = CFM_SVC_CLOSED;
        return -1;
    }
    if (c->expect_continue && c->in.len < c->head_len + c->body_len) {
        /* 25 bytes into an empty socket buffer: they go at once or never */
        ssize_t n = send(c->fd, continue_line, sizeof continue_line - 1, MSG_NOSIGNAL);

        if (n != (ssize_t)(sizeof continue_line - 1)) {
            c->state = CFM_SVC_CLOSED;
            return -1;
        }
    }
    return 0;
}

static void on_readable(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    for (;;) {
        size_t limit = c->head_len ? c->head_len + c->body_len : CFM_SVC_MAX_HEAD;
        size_t want;
        ssize_t n;

        if (c->in.len >= limit)
            break;
        want = limit - c->in.len < CFM_SVC_READ_STEP ? limit - c->in.len : CFM_SVC_READ_STEP;
        if (!cfm_svc_buf_grow(&c->in, c->in.len + want, CFM_SVC_MAX_HEAD + CFM_SVC_MAX_BODY)) {
            cfm_svc_log(svc, "%s: out of memory reading a request; closing", c->peer);
            c->state = CFM_SVC_CLOSED;
            return;
        }
        n = recv(c->fd, c->in.data + c->in.len, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) { /* closed or reset before the request was whole */
            c->state = CFM_SVC_CLOSED;
            return;
        }
        c->in.len += (size_t)n;
        c->deadline_ms = cfm_svc_now_ms() + CFM_SVC_TIMEOUT_MS;
        if (!c->head_len && find_head_end(c) && on_head(svc, c) != 0)
            return;
    }
    if (!c->head_len) { /* the limit is reached without a blank line */
        answer_bad_head(svc, c, 413);
        return;
    }
    c->req.body = c->in.data + c->head_len;
    c->req.body_len = c->body_len;
    cfm_svc_handle(svc, c);
}

static void on_linger(struct cfm_svc_conn *c)
{
    char sink[4096];

    for (;;) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0 || (c->drained += (size_t)n) > CFM_SVC_MAX_DRAIN) {
            c->state = CFM_SVC_CLOSED;
            return;
        }
    }
}

void cfm_svc_conn_ready(struct cfm_svc *svc, struct cfm_svc_conn *c, short revents,
                        short up_revents)
{
    if (up_revents && c->state == CFM_SVC_PROXY && c->up != CFM_SVC_UP_NONE)
        cfm_svc_proxy_ready(svc, c);
    if (!revents)
        return;
    if (revents & POLLNVAL)
        c->state = CFM_SVC_CLOSED;
    else if (c->state == CFM_SVC_READ)
        on_readable(svc, c);
    else if (c->state == CFM_SVC_WRITE)
        on_writable(c);
    else if (c->state == CFM_SVC_LINGER)
        on_linger(c);
}

void cfm_svc_conn_tick(struct cfm_svc *svc, struct cfm_svc_conn *c, int64_t now)
{
    bool expired = now >= c->expires_ms;

    if (now < c->deadline_ms && !expired)
        return;
    switch (c->state) {
    case CFM_SVC_READ:
        if (c->in.len == 0)
            c->state = CFM_SVC_CLOSED; /* connected and said nothing */
        else
            cfm_svc_respondf(svc, c, 408, "request not received in time\n");
        break;
    case CFM_SVC_PROXY: cfm_svc_proxy_timeout(svc, c, expired); break;
    default: c->state = CFM_SVC_CLOSED; break;
    }
}
