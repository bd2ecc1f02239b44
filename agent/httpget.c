/*
 * httpget.c - one GET over plain HTTP, made by the agent itself on its
 * loop: a health check costs no process (curl costs some 9 ms of CPU a
 * run, most of it loading TLS libraries a probe of http:// never uses).
 *
 * The host is resolved (a literal at once, a name with uv_getaddrinfo on
 * libuv's thread pool), each address is tried in turn until one takes the
 * connection ("localhost" may be ::1 first while the service listens on
 * 127.0.0.1), an HTTP/1.0 request with "Connection: close" is written, and
 * the answer is read until the server closes, its Content-Length is in, or
 * the kept body is full. One timer bounds the whole exchange.
 *
 * A well-formed request always gets a result: the answer's status and
 * body, or status 0 and what happened instead (refused, nothing in time,
 * not HTTP). A failed probe is a finding, like a command's exit code.
 *
 * Lifetime: the struct owns its timer, its TCP handle (closed and set up
 * again between two addresses) and its getaddrinfo request; it is freed
 * once the last of them is done, right after the done callback, so
 * nothing of it outlives the loop.
 */
#include "httpget.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "text.h"
#include "util.h"

#define SHOWN_URL 96   /* bytes of a URL quoted in a message */
#define SHOWN_BEGIN 32 /* bytes of a non-HTTP answer quoted */
#define PEER_MAX (CFM_AGENT_HTTP_MAX_HOST + INET6_ADDRSTRLEN + 16)
#define REQUEST_FMT \
    "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\nUser-Agent: cfm-agent\r\n\r\n"

struct cfm_agent_http {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_getaddrinfo_t gai;
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct cfm_agent_url url;
    struct sockaddr_storage literal; /* the address of a literal host */
    bool literal_left;               /* ... not tried yet */
    struct addrinfo *addrs, *next_addr; /* a name's addresses, the next to try */
    char peer[PEER_MAX];             /* the address tried: "127.0.0.1:80", "name ([::1]:80)" */
    int handles;                     /* open handles: the timer, the TCP handle */
    bool resolving, tcp_open, connected, over;
    uint64_t timeout_ms, started_ms; /* started_ms: loop time, as the timer counts */
    size_t max_body;
    char *request;
    size_t request_len;
    char *buf; /* the answer as it came: head, then body */
    size_t len, cap;
    struct cfm_agent_http_head head;
    bool truncated;
    char error[CFM_WHY_MAX]; /* what went wrong; "" when nothing did */
    cfm_agent_http_done done;
    void *arg;
};

/* --- parsing ------------------------------------------------------------- */

static bool host_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

enum cfm_err cfm_agent_http_parse_url(const char *url, size_t len, struct cfm_agent_url *u,
                                      struct cfm_why *why)
{
    char shown[4 * SHOWN_URL + 8], v6[INET6_ADDRSTRLEN + 1];
    const char *end = url + len, *sep, *auth, *auth_end, *host, *host_end, *p, *frag;
    unsigned char probe[sizeof(struct in6_addr)];
    size_t hlen, tlen;
    long port = 80;

    memset(u, 0, sizeof *u);
    cfm_quote(shown, sizeof shown, url, len, SHOWN_URL);
    if (len > CFM_AGENT_HTTP_MAX_URL)
        return cfm_why_set(why, CFM_EINVAL, "url is %zu bytes, over the %d-byte limit", len,
                           CFM_AGENT_HTTP_MAX_URL);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return cfm_why_set(why, CFM_EINVAL,
                               "url '%s' must be printable ASCII without spaces (percent-encode "
                               "the rest)", shown);
    for (sep = url; sep < end && isalpha((unsigned char)*sep); sep++)
        ;
    if (sep == url || end - sep < 3 || memcmp(sep, "://", 3) != 0)
        return cfm_why_set(why, CFM_EINVAL, "url '%s' is not of the form http://HOST[:PORT]/PATH",
                           shown);
    if (sep - url != 4 || strncasecmp(url, "http", 4) != 0)
        return cfm_why_set(why, CFM_EINVAL,
                           "url '%s': scheme '%.*s' is not supported (only http://)", shown,
                           (int)(sep - url < 16 ? sep - url : 16), url);
    auth = sep + 3;
    for (auth_end = auth; auth_end < end && !strchr("/?#", *auth_end); auth_end++)
        ;
    if (memchr(auth, '@', (size_t)(auth_end - auth)))
        return cfm_why_set(why, CFM_EINVAL, "url '%s': user information (user@) is not supported",
                           shown);
    if (auth < auth_end && *auth == '[') {
        host = auth + 1;
        if (!(host_end = memchr(host, ']', (size_t)(auth_end - host))))
            return cfm_why_set(why, CFM_EINVAL, "url '%s': '[' without ']'", shown);
        hlen = (size_t)(host_end - host);
        if (hlen >= sizeof v6)
            return cfm_why_set(why, CFM_EINVAL, "url '%s': not an IPv6 address in [ ]", shown);
        memcpy(v6, host, hlen);
        v6[hlen] = '\0';
        if (uv_inet_pton(AF_INET6, v6, probe) != 0)
            return cfm_why_set(why, CFM_EINVAL, "url '%s': '%s' is not an IPv6 address", shown,
                               v6);
        u->family = AF_INET6;
        p = host_end + 1;
    } else {
        host = auth;
        for (host_end = host; host_end < auth_end && *host_end != ':'; host_end++)
            if (!host_char(*host_end))
                return cfm_why_set(why, CFM_EINVAL,
                                   "url '%s': the host may hold letters, digits, '-', '.' and "
                                   "'_' only", shown);
        hlen = (size_t)(host_end - host);
        if (hlen == 0)
            return cfm_why_set(why, CFM_EINVAL, "url '%s' names no host", shown);
        if (hlen > CFM_AGENT_HTTP_MAX_HOST)
            return cfm_why_set(why, CFM_EINVAL, "url '%s': the host is over %d bytes", shown,
                               CFM_AGENT_HTTP_MAX_HOST);
        p = host_end;
    }
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    if (!u->family && uv_inet_pton(AF_INET, u->host, probe) == 0)
        u->family = AF_INET;
    if (p < auth_end) {
        size_t digits = 0;
        if (*p++ != ':')
            return cfm_why_set(why, CFM_EINVAL, "url '%s': ':PORT' or '/' expected after the host",
                               shown);
        for (port = 0; p < auth_end && isdigit((unsigned char)*p) && digits < 6; p++, digits++)
            port = port * 10 + (*p - '0');
        if (p != auth_end || digits == 0 || port < 1 || port > 65535)
            return cfm_why_set(why, CFM_EINVAL,
                               "url '%s': the port must be a number from 1 to 65535", shown);
    }
    u->port = (int)port;
    snprintf(u->authority, sizeof u->authority, u->family == AF_INET6 ? "[%s]:%d" : "%s:%d",
             u->host, u->port);
    frag = memchr(auth_end, '#', (size_t)(end - auth_end));
    tlen = (size_t)((frag ? frag : end) - auth_end);
    if (tlen == 0 || *auth_end != '/')
        u->target[0] = '/'; /* "http://h" and "http://h?q" ask for the root */
    memcpy(u->target + strlen(u->target), auth_end, tlen);
    return CFM_OK;
}

/* True when s[0..n) is name, ignoring case. */
static bool named(const char *s, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(s, name, n) == 0;
}

/* A header line (without its line end): notes the Content-Length. */
static void header(struct cfm_agent_http_head *head, const char *s, size_t n, bool *seen)
{
    const char *colon = memchr(s, ':', n), *end = s + n;
    long long v = 0;
    int digits = 0;

    if (!colon || !named(s, (size_t)(colon - s), "content-length"))
        return;
    for (s = colon + 1; s < end && (*s == ' ' || *s == '\t'); s++)
        ;
    for (; s < end && isdigit((unsigned char)*s) && digits < 18; s++, digits++)
        v = v * 10 + (*s - '0');
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    if (s != end || digits == 0 || (*seen && head->content_length != v))
        v = -1; /* not understood, or two that differ: read to the end */
    *seen = true;
    head->content_length = v;
}

/* True when line (n bytes, no line end) is "HTTP/d[.d] ddd[ reason]". */
static bool status_line(const char *s, size_t n, int *status)
{
    size_t i = 5;

    if (n < 5 || memcmp(s, "HTTP/", 5) != 0)
        return false;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == 5)
        return false;
    if (i < n && s[i] == '.') {
        size_t j = ++i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == j)
            return false;
    }
    if (i + 4 > n || s[i] != ' ' || !isdigit((unsigned char)s[i + 1]) ||
        !isdigit((unsigned char)s[i + 2]) || !isdigit((unsigned char)s[i + 3]) ||
        (i + 4 < n && s[i + 4] != ' '))
        return false;
    *status = (s[i + 1] - '0') * 100 + (s[i + 2] - '0') * 10 + (s[i + 3] - '0');
    return *status >= 100;
}

enum cfm_err cfm_agent_http_parse_head(const char *buf, size_t len, bool eof, const char *from,
                                       struct cfm_agent_http_head *head, struct cfm_why *why)
{
    char shown[4 * SHOWN_BEGIN + 8];
    const char *nl;
    size_t at, n;
    bool seen = false;
    int status = 0;

    memset(head, 0, sizeof *head);
    head->content_length = -1;
    if (memcmp(buf, "HTTP/", len < 5 ? len : 5) != 0)
        goto not_http;
    if (!(nl = memchr(buf, '\n', len))) {
        if (eof)
            goto not_http;
        return CFM_OK;
    }
    n = (size_t)(nl - buf);
    if (!status_line(buf, n > 0 && buf[n - 1] == '\r' ? n - 1 : n, &status))
        goto not_http;
    for (at = n + 1; at < len; at += n + 1) {
        if (!(nl = memchr(buf + at, '\n', len - at)))
            break;
        n = (size_t)(nl - (buf + at));
        if (n == 0 || (n == 1 && buf[at] == '\r')) { /* the blank line */
            head->len = at + n + 1;
            head->status = status;
            return CFM_OK;
        }
        header(head, buf + at, buf[at + n - 1] == '\r' ? n - 1 : n, &seen);
    }
    if (eof) { /* closed after its headers: an answer without a body */
        head->len = len;
        head->status = status;
        return CFM_OK;
    }
    head->content_length = -1;
    return CFM_OK;
not_http:
    memset(head, 0, sizeof *head);
    head->content_length = -1;
    return cfm_why_set(why, CFM_EINVAL, "not an HTTP answer from %s (it begins '%s')", from,
                       cfm_quote(shown, sizeof shown, buf, len, SHOWN_BEGIN));
}

/* --- the exchange -------------------------------------------------------- */

static void set_error(struct cfm_agent_http *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct cfm_agent_http *h, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(h->error, sizeof h->error, fmt, ap);
    va_end(ap);
}

/* A text cut at max_body may end inside a character: when dropping that
 * character's first bytes makes body[0..len) valid text, returns the
 * shorter length and sets *plain. */
static size_t text_cut(const char *body, size_t len, bool *plain)
{
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        unsigned char c = (unsigned char)body[len - k];
        if (c >= 0x80 && c < 0xc0)
            continue; /* a continuation byte: its lead is further back */
        if (c >= 0xc0 && !memchr(body, '\0', len - k) &&
            cfm_agent_text_utf8_valid(body, len - k)) {
            *plain = true;
            return len - k;
        }
        break;
    }
    return len;
}

/* The result: the status, the body kept (text or base64), the error. */
static json_t *result_of(struct cfm_agent_http *h)
{
    const char *body = h->buf + h->head.len;
    size_t blen = h->head.len ? h->len - h->head.len : 0;
    json_t *r, *content = NULL;
    bool plain = true;

    if (blen > h->max_body)
        blen = h->max_body;
    if (h->head.content_length >= 0 && (unsigned long long)h->head.content_length < blen)
        blen = (size_t)h->head.content_length;
    r = json_pack("{s:i}", "status", h->head.len ? h->head.status : 0);
    if (!r)
        return NULL;
    if (h->head.len) {
        plain = !memchr(body, '\0', blen) && cfm_agent_text_utf8_valid(body, blen);
        if (!plain && h->truncated)
            blen = text_cut(body, blen, &plain);
        content = plain ? json_stringn(body, blen) : cfm_agent_text_b64_json(body, blen);
        if (json_object_set_new(r, plain ? "body" : "body_b64", content) != 0 ||
            json_object_set_new(r, "body_truncated", json_boolean(h->truncated)) != 0)
            goto fail;
    }
    if (h->error[0] &&
        json_object_set_new(r, "error", cfm_agent_text_json(h->error, strlen(h->error))) != 0)
        goto fail;
    if (json_object_set_new(r, "duration_ms",
                            json_integer((json_int_t)(uv_now(h->loop) - h->started_ms))) != 0)
        goto fail;
    return r;
fail:
    json_decref(r);
    return NULL;
}

static void finish(struct cfm_agent_http *h)
{
    json_t *result = result_of(h);

    h->done(h->arg, result, result ? NULL : "out of memory building the result");
    json_decref(result);
    if (h->addrs)
        uv_freeaddrinfo(h->addrs);
    free(h->request);
    free(h->buf);
    free(h);
}

static void maybe_finish(struct cfm_agent_http *h)
{
    if (h->over && h->handles == 0 && !h->resolving)
        finish(h);
}

static void on_closed(uv_handle_t *hd);

static void close_tcp(struct cfm_agent_http *h)
{
    if (h->tcp_open && !uv_is_closing((uv_handle_t *)&h->tcp))
        uv_close((uv_handle_t *)&h->tcp, on_closed);
}

/* The exchange is over: with fmt (when given) as its error. Closes what is
 * open; finish() follows from the last close. */
static void conclude(struct cfm_agent_http *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void conclude(struct cfm_agent_http *h, const char *fmt, ...)
{
    va_list ap;

    if (h->over)
        return;
    h->over = true;
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(h->error, sizeof h->error, fmt, ap);
        va_end(ap);
    }
    uv_timer_stop(&h->timer);
    if (!uv_is_closing((uv_handle_t *)&h->timer))
        uv_close((uv_handle_t *)&h->timer, on_closed);
    close_tcp(h);
    if (h->resolving)
        uv_cancel((uv_req_t *)&h->gai); /* else its callback comes when the lookup ends */
}

static void try_next(struct cfm_agent_http *h);

static void on_closed(uv_handle_t *hd)
{
    struct cfm_agent_http *h = hd->data;

    h->handles--;
    if (hd == (uv_handle_t *)&h->tcp) {
        h->tcp_open = false;
        h->connected = false;
        if (!h->over) { /* a connection failed: the next address */
            try_next(h);
            return;
        }
    }
    maybe_finish(h);
}

/* Looks at what came so far; concludes when the answer is complete. */
static void examine(struct cfm_agent_http *h, bool eof)
{
    struct cfm_why why = {{0}};
    size_t body;

    if (!h->head.len) {
        if (eof && h->len == 0) {
            conclude(h, "%s closed the connection without an answer", h->peer);
            return;
        }
        if (cfm_agent_http_parse_head(h->buf, h->len, eof, h->peer, &h->head, &why) != CFM_OK) {
            conclude(h, "%s", why.text);
            return;
        }
        if (!h->head.len) {
            if (h->len >= CFM_AGENT_HTTP_MAX_HEAD)
                conclude(h, "the status line and headers from %s are over %d bytes", h->peer,
                         CFM_AGENT_HTTP_MAX_HEAD);
            return;
        }
    }
    if (h->head.len > CFM_AGENT_HTTP_MAX_HEAD) { /* it ended in the read that passed the limit */
        memset(&h->head, 0, sizeof h->head);
        conclude(h, "the status line and headers from %s are over %d bytes", h->peer,
                 CFM_AGENT_HTTP_MAX_HEAD);
        return;
    }
    body = h->len - h->head.len;
    if (h->head.content_length >= 0 && body >= (size_t)h->head.content_length) {
        h->truncated = (unsigned long long)h->head.content_length > h->max_body;
        conclude(h, NULL);
    } else if (body > h->max_body) {
        h->truncated = true;
        conclude(h, NULL);
    } else if (eof && h->head.content_length >= 0) {
        conclude(h, "the answer from %s ended after %zu of its %lld body bytes", h->peer, body,
                 h->head.content_length);
    } else if (eof) {
        conclude(h, NULL);
    }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    struct cfm_agent_http *h = hd->data;

    (void)suggested;
    /* examine() concludes before the buffer fills: there is always room. */
    *buf = uv_buf_init(h->buf + h->len, (unsigned)(h->cap - h->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct cfm_agent_http *h = s->data;

    (void)buf;
    if (h->over || n == 0)
        return;
    if (n > 0) {
        h->len += (size_t)n;
        examine(h, false);
    } else if (n == UV_EOF) {
        examine(h, true);
    } else {
        conclude(h, "reading the answer from %s: %s", h->peer, uv_strerror((int)n));
    }
}

static void on_written(uv_write_t *req, int status)
{
    struct cfm_agent_http *h = req->data;

    /* A server may answer and close before it read the request (an error
     * page): what it answered is the result. */
    if (status < 0 && !h->over && !h->len)
        conclude(h, "sending the request to %s: %s", h->peer, uv_strerror(status));
}

static void on_connect(uv_connect_t *req, int status)
{
    struct cfm_agent_http *h = req->data;
    uv_buf_t buf;
    int rc;

    if (h->over)
        return; /* UV_ECANCELED: closing */
    if (status < 0) {
        set_error(h, "connect to %s: %s", h->peer, uv_strerror(status));
        close_tcp(h); /* then the next address */
        return;
    }
    h->connected = true;
    h->error[0] = '\0';
    buf = uv_buf_init(h->request, (unsigned)h->request_len);
    h->write_req.data = h;
    if ((rc = uv_write(&h->write_req, (uv_stream_t *)&h->tcp, &buf, 1, on_written)) != 0 ||
        (rc = uv_read_start((uv_stream_t *)&h->tcp, on_alloc, on_read)) != 0)
        conclude(h, "sending the request to %s: %s", h->peer, uv_strerror(rc));
}

/* Names address sa in h->peer, with the host's name when it is one. */
static void name_peer(struct cfm_agent_http *h, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    bool v6 = sa->sa_family == AF_INET6;

    if (v6)
        uv_ip6_name((const struct sockaddr_in6 *)sa, ip, sizeof ip);
    else
        uv_ip4_name((const struct sockaddr_in *)sa, ip, sizeof ip);
    if (h->url.family)
        snprintf(h->peer, sizeof h->peer, v6 ? "[%s]:%d" : "%s:%d", ip, h->url.port);
    else
        snprintf(h->peer, sizeof h->peer, v6 ? "%s:%d ([%s])" : "%s:%d (%s)", h->url.host,
                 h->url.port, ip);
}

/* Connects to the next address; concludes when none is left. */
static void try_next(struct cfm_agent_http *h)
{
    const struct sockaddr *sa = NULL;
    int rc;

    if (h->literal_left) {
        h->literal_left = false;
        sa = (const struct sockaddr *)&h->literal;
    }
    while (!sa && h->next_addr) {
        struct addrinfo *ai = h->next_addr;
        h->next_addr = ai->ai_next;
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            sa = ai->ai_addr;
    }
    if (!sa) {
        if (h->error[0])
            conclude(h, NULL); /* the last address's error */
        else
            conclude(h, "resolving '%s': no IPv4 or IPv6 address", h->url.host);
        return;
    }
    name_peer(h, sa);
    uv_tcp_init(h->loop, &h->tcp);
    h->tcp.data = h;
    h->tcp_open = true;
    h->handles++;
    h->connect_req.data = h;
    if ((rc = uv_tcp_connect(&h->connect_req, &h->tcp, sa, on_connect)) != 0) {
        set_error(h, "connect to %s: %s", h->peer, uv_strerror(rc));
        close_tcp(h); /* then the next address */
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct cfm_agent_http *h = req->data;

    h->resolving = false;
    if (h->over) {
        if (res)
            uv_freeaddrinfo(res);
        maybe_finish(h);
        return;
    }
    if (status < 0) {
        conclude(h, "resolving '%s': %s", h->url.host, uv_strerror(status));
        return;
    }
    h->addrs = h->next_addr = res;
    try_next(h);
}

static void on_timeout(uv_timer_t *t)
{
    struct cfm_agent_http *h = t->data;
    unsigned long long ms = (unsigned long long)h->timeout_ms;

    if (h->resolving)
        conclude(h, "resolving '%s': no address within %llu ms", h->url.host, ms);
    else if (!h->connected)
        conclude(h, "connect to %s: no connection within %llu ms", h->peer, ms);
    else if (!h->head.len)
        conclude(h, "no %sanswer from %s within %llu ms", h->len ? "complete " : "", h->peer, ms);
    else
        conclude(h, "the body from %s did not end within %llu ms", h->peer, ms);
}

void cfm_agent_http_abort(struct cfm_agent_http *h)
{
    conclude(h, "%s", CFM_AGENT_HTTP_STOPPED);
}

static void start(struct cfm_agent_http *h)
{
    struct addrinfo hints;
    char port[8];
    int rc = 0;

    /* Durations in the loop's time, like the timer's: a GET that timed out
     * never reports less than its timeout. */
    uv_update_time(h->loop);
    h->started_ms = uv_now(h->loop);
    uv_timer_init(h->loop, &h->timer);
    h->timer.data = h;
    h->handles++;
    uv_timer_start(&h->timer, on_timeout, h->timeout_ms, 0);
    if (h->url.family == AF_INET6)
        rc = uv_ip6_addr(h->url.host, h->url.port, (struct sockaddr_in6 *)&h->literal);
    else if (h->url.family == AF_INET)
        rc = uv_ip4_addr(h->url.host, h->url.port, (struct sockaddr_in *)&h->literal);
    if (h->url.family) {
        if (rc != 0) { /* parse_url checked it: cannot happen */
            conclude(h, "'%s' is not an address: %s", h->url.host, uv_strerror(rc));
            return;
        }
        h->literal_left = true;
        try_next(h);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", h->url.port);
    h->gai.data = h;
    if ((rc = uv_getaddrinfo(h->loop, &h->gai, on_resolved, h->url.host, port, &hints)) != 0) {
        conclude(h, "resolving '%s': %s", h->url.host, uv_strerror(rc));
        return;
    }
    h->resolving = true;
}

enum cfm_err cfm_agent_http_start(uv_loop_t *loop, const json_t *req, cfm_agent_http_done done,
                                  void *arg, struct cfm_agent_http **out, struct cfm_why *why)
{
    const json_t *url = json_object_get(req, "url");
    json_int_t timeout_ms = 0, max_body = 0;
    struct cfm_agent_http *h;
    enum cfm_err err;
    int n;

    if (out)
        *out = NULL;
    if (!json_is_string(url))
        return cfm_why_set(why, CFM_EINVAL, "http_get needs \"url\" (a string, http://...)");
    if ((err = cfm_agent_req_int(req, "timeout_ms", CFM_AGENT_HTTP_DEFAULT_TIMEOUT_MS, 1,
                       CFM_AGENT_HTTP_MAX_TIMEOUT_MS, &timeout_ms, why)) != CFM_OK ||
        (err = cfm_agent_req_int(req, "max_body", CFM_AGENT_HTTP_DEFAULT_BODY, 0, CFM_AGENT_HTTP_MAX_BODY,
                       &max_body, why)) != CFM_OK)
        return err;
    if (!(h = calloc(1, sizeof *h)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if ((err = cfm_agent_http_parse_url(json_string_value(url), json_string_length(url),
                                        &h->url, why)) != CFM_OK) {
        free(h);
        return err;
    }
    h->loop = loop;
    h->timeout_ms = (uint64_t)timeout_ms;
    h->max_body = (size_t)max_body;
    /* Room for the head and one byte past max_body: to tell a body that
     * ends there from one that goes on. */
    h->cap = CFM_AGENT_HTTP_MAX_HEAD + h->max_body + 1;
    h->request_len = sizeof REQUEST_FMT + strlen(h->url.target) + strlen(h->url.authority);
    h->buf = malloc(h->cap);
    h->request = malloc(h->request_len);
    if (!h->buf || !h->request) {
        free(h->buf);
        free(h->request);
        free(h);
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    n = snprintf(h->request, h->request_len, REQUEST_FMT, h->url.target, h->url.authority);
    h->request_len = (size_t)n; /* it fits: the buffer is larger than the format's expansion */
    h->done = done;
    h->arg = arg;
    if (out)
        *out = h;
    start(h);
    return CFM_OK;
}
