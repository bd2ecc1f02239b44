/*
 * test_agent_http.c - unit tests of the agent's http_get (httpget.c,
 * httpwait.c): URL
 * and answer-head parsing, then whole GETs on a real loop against a small
 * libuv server in the same process that answers what each test scripts
 * (an answer, a binary or cut body, a lie about Content-Length, endless
 * headers, something not HTTP, silence, a close, 503 while "starting"),
 * and the retried GET of httpwait.c (until ready, giving up, refused until
 * the service listens, aborted in a pause). Every test ends with
 * uv_loop_close() == 0: no handle of a GET outlives it. Messages are
 * compared whole: they are what a procedure author reads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <uv.h>

#include "httpget.h"
#include "httpwait.h"

/* ---- URLs ---------------------------------------------------------------- */

static void expect_url(const char *url, int family, const char *host, int port,
                       const char *authority, const char *target)
{
    struct cfm_why why = {{0}};
    struct cfm_agent_url u;

    assert_int_equal(cfm_agent_http_parse_url(url, strlen(url), &u, &why), CFM_OK);
    assert_int_equal(u.family, family);
    assert_string_equal(u.host, host);
    assert_int_equal(u.port, port);
    assert_string_equal(u.authority, authority);
    assert_string_equal(u.target, target);
}

static void expect_url_error(const char *url, size_t len, const char *error)
{
    struct cfm_why why = {{0}};
    struct cfm_agent_url u;

    assert_int_equal(cfm_agent_http_parse_url(url, len, &u, &why), CFM_EINVAL);
    assert_string_equal(why.text, error);
}

static void test_url_forms(void **state)
{
    (void)state;
    expect_url("http://127.0.0.1:8080/health?instance=web.vm-1", AF_INET, "127.0.0.1", 8080,
               "127.0.0.1:8080", "/health?instance=web.vm-1");
    expect_url("http://[::1]:81", AF_INET6, "::1", 81, "[::1]:81", "/");
    expect_url("HTTP://db.example_1.local?q=1#frag", 0, "db.example_1.local", 80,
               "db.example_1.local:80", "/?q=1");
    expect_url("http://h/a/b#x", 0, "h", 80, "h:80", "/a/b");
    expect_url("http://h:65535/%20", 0, "h", 65535, "h:65535", "/%20");
}

static void test_url_errors(void **state)
{
    char long_url[CFM_AGENT_HTTP_MAX_URL + 2];

    (void)state;
    expect_url_error("https://127.0.0.1/", 18,
                     "url 'https://127.0.0.1/': scheme 'https' is not supported (only http://)");
    expect_url_error("ftp://h/", 8, "url 'ftp://h/': scheme 'ftp' is not supported (only http://)");
    expect_url_error("localhost:80/x", 14,
                     "url 'localhost:80/x' is not of the form http://HOST[:PORT]/PATH");
    expect_url_error("", 0, "url '' is not of the form http://HOST[:PORT]/PATH");
    expect_url_error("http://:80/", 11, "url 'http://:80/' names no host");
    expect_url_error("http://h:0/", 11,
                     "url 'http://h:0/': the port must be a number from 1 to 65535");
    expect_url_error("http://h:65536/", 15,
                     "url 'http://h:65536/': the port must be a number from 1 to 65535");
    expect_url_error("http://h:/", 10,
                     "url 'http://h:/': the port must be a number from 1 to 65535");
    expect_url_error("http://h:8x/", 12,
                     "url 'http://h:8x/': the port must be a number from 1 to 65535");
    expect_url_error("http://u:p@h/", 13,
                     "url 'http://u:p@h/': user information (user@) is not supported");
    expect_url_error("http://[::1/", 12, "url 'http://[::1/': '[' without ']'");
    expect_url_error("http://[zz]/", 12, "url 'http://[zz]/': 'zz' is not an IPv6 address");
    expect_url_error("http://[::1]x/", 14,
                     "url 'http://[::1]x/': ':PORT' or '/' expected after the host");
    expect_url_error("http://a!b/", 11,
                     "url 'http://a!b/': the host may hold letters, digits, '-', '.' and '_' "
                     "only");
    expect_url_error("http://h/a b", 12,
                     "url 'http://h/a b' must be printable ASCII without spaces (percent-encode "
                     "the rest)");
    expect_url_error("http://h/\0", 10,
                     "url 'http://h/\\x00' must be printable ASCII without spaces (percent-encode "
                     "the rest)");
    memset(long_url, 'a', sizeof long_url);
    expect_url_error(long_url, sizeof long_url, "url is 2050 bytes, over the 2048-byte limit");
}

/* ---- answer heads ---------------------------------------------------------- */

static void test_head(void **state)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nServer: x\r\ncontent-LENGTH:  12 \r\n\r\nbody";
    static const char lf[] = "HTTP/1.0 404\nA: b\n\n";
    static const char two[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    struct cfm_agent_http_head head;
    struct cfm_why why = {{0}};

    (void)state;
    assert_int_equal(cfm_agent_http_parse_head(ok, strlen(ok), false, "p", &head, &why), CFM_OK);
    assert_int_equal(head.len, strlen(ok) - 4);
    assert_int_equal(head.status, 200);
    assert_int_equal(head.content_length, 12);
    /* Incomplete, byte by byte: never an error, never complete too early. */
    for (size_t n = 0; n < strlen(ok) - 4; n++) {
        assert_int_equal(cfm_agent_http_parse_head(ok, n, false, "p", &head, &why), CFM_OK);
        assert_int_equal(head.len, 0);
    }
    assert_int_equal(cfm_agent_http_parse_head(lf, strlen(lf), false, "p", &head, &why), CFM_OK);
    assert_int_equal(head.len, strlen(lf));
    assert_int_equal(head.status, 404);
    assert_int_equal(head.content_length, -1);
    /* Closed after the status line: an answer without headers or body. */
    assert_int_equal(cfm_agent_http_parse_head("HTTP/1.0 204 No\r\n", 17, true, "p", &head, &why),
                     CFM_OK);
    assert_int_equal(head.status, 204);
    assert_int_equal(head.len, 17);
    /* Two different lengths: not trusted, read to the end. */
    assert_int_equal(cfm_agent_http_parse_head(two, strlen(two), false, "p", &head, &why), CFM_OK);
    assert_int_equal(head.status, 200);
    assert_int_equal(head.content_length, -1);
}

static void expect_head_error(const char *text, bool eof, const char *error)
{
    struct cfm_agent_http_head head;
    struct cfm_why why = {{0}};

    assert_int_equal(cfm_agent_http_parse_head(text, strlen(text), eof, "10.0.0.1:80", &head, &why),
                     CFM_EINVAL);
    assert_int_equal(head.len, 0);
    assert_string_equal(why.text, error);
}

static void test_head_errors(void **state)
{
    (void)state;
    expect_head_error("SSH-2.0-OpenSSH_9.2\r\n", false,
                      "not an HTTP answer from 10.0.0.1:80 (it begins "
                      "'SSH-2.0-OpenSSH_9.2\\x0d\\x0a')");
    expect_head_error("HTTP/1.1 20 OK\r\n", false,
                      "not an HTTP answer from 10.0.0.1:80 (it begins 'HTTP/1.1 20 OK\\x0d\\x0a')");
    expect_head_error("HTTP/x 200\r\n", false,
                      "not an HTTP answer from 10.0.0.1:80 (it begins 'HTTP/x 200\\x0d\\x0a')");
    expect_head_error("HTTP/1.1 200 O", true,
                      "not an HTTP answer from 10.0.0.1:80 (it begins 'HTTP/1.1 200 O')");
    expect_head_error("H\x01", false, "not an HTTP answer from 10.0.0.1:80 (it begins 'H\\x01')");
}

/* ---- whole GETs against a scripted server ------------------------------- */

enum mode { ANSWER, SILENT, CLOSE };

/* True when s[0..len) holds the string what (memmem is a GNU extension). */
static bool find(const char *s, size_t len, const char *what)
{
    size_t n = strlen(what);

    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(s + i, what, n) == 0)
            return true;
    return false;
}

struct conn {
    uv_tcp_t tcp;
    uv_write_t w;
    struct server *s;
    bool open;
};

struct server {
    uv_tcp_t listen;
    int port;
    enum mode mode;
    const char *answer;
    size_t answer_len;
    char got[8192]; /* the request received */
    size_t got_len;
    int unready; /* ANSWER: the first requests get 503 (a service still starting) */
    int served;  /* requests answered so far */
    struct conn conns[64];
    int nconns;
};

struct fixture {
    uv_loop_t loop;
    struct server server;
    json_t *result;
    json_int_t duration_ms; /* of the last GET */
    char error[256];
    bool done;
};

static void close_conn(struct conn *c)
{
    if (c->open) {
        c->open = false;
        uv_close((uv_handle_t *)&c->tcp, NULL);
    }
}

static void on_answered(uv_write_t *w, int status)
{
    (void)status;
    close_conn(w->data);
}

static void on_srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    struct server *s = c->s;

    (void)suggested;
    *buf = uv_buf_init(s->got + s->got_len, (unsigned)(sizeof s->got - s->got_len));
}

static void on_srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    struct server *s = c->s;
    uv_buf_t out;

    (void)buf;
    if (n < 0) {
        close_conn(c);
        return;
    }
    s->got_len += (size_t)n;
    if (!find(s->got, s->got_len, "\r\n\r\n"))
        return;
    uv_read_stop(st);
    if (s->mode == CLOSE) {
        close_conn(c);
    } else if (s->mode == ANSWER) {
        static const char starting[] = "HTTP/1.1 503 Service Unavailable\r\n\r\nstarting";
        out = s->served++ < s->unready ? uv_buf_init((char *)starting, sizeof starting - 1)
                                       : uv_buf_init((char *)s->answer, (unsigned)s->answer_len);
        c->w.data = c;
        assert_int_equal(uv_write(&c->w, st, &out, 1, on_answered), 0);
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    struct server *s = l->data;
    struct conn *c;

    assert_int_equal(status, 0);
    assert_true(s->nconns < 64);
    c = &s->conns[s->nconns++];
    c->s = s;
    c->open = true;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    s->got_len = 0; /* one request at a time */
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, on_srv_alloc, on_srv_read), 0);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;

    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    uv_tcp_init(&fx->loop, &fx->server.listen);
    fx->server.listen.data = &fx->server;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&fx->server.listen, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&fx->server.listen, 8, on_connection), 0);
    assert_int_equal(
        uv_tcp_getsockname(&fx->server.listen, (struct sockaddr *)&bound, &len), 0);
    fx->server.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    for (int i = 0; i < fx->server.nconns; i++)
        close_conn(&fx->server.conns[i]);
    uv_close((uv_handle_t *)&fx->server.listen, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0); /* nothing of a GET left */
    json_decref(fx->result);
    free(fx);
    return 0;
}

static void on_done(void *arg, const json_t *result, const char *error)
{
    struct fixture *fx = arg;

    fx->done = true;
    fx->result = result ? json_deep_copy(result) : NULL;
    snprintf(fx->error, sizeof fx->error, "%s", error ? error : "");
}

/* The GET of req (JSON text, %d for the server's port) against the
 * server; returns its result as compact JSON without duration_ms (freed by
 * the caller). */
static char *get(struct fixture *fx, const char *fmt, struct cfm_agent_http **out)
{
    struct cfm_why why = {{0}};
    char text[1024];
    json_t *req;

    snprintf(text, sizeof text, fmt, fx->server.port);
    req = json_loads(text, 0, NULL);
    assert_non_null(req);
    fx->done = false;
    json_decref(fx->result);
    fx->result = NULL;
    assert_int_equal(cfm_agent_http_start(&fx->loop, req, on_done, fx, out, &why), CFM_OK);
    json_decref(req);
    assert_false(fx->done); /* never called back before the start returns */
    if (out)
        return NULL;
    while (!fx->done)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_non_null(fx->result);
    assert_true(json_is_integer(json_object_get(fx->result, "duration_ms")));
    fx->duration_ms = json_integer_value(json_object_get(fx->result, "duration_ms"));
    json_object_del(fx->result, "duration_ms");
    return json_dumps(fx->result, JSON_COMPACT);
}

static void answer_with(struct fixture *fx, const char *text, size_t len)
{
    fx->server.mode = ANSWER;
    fx->server.answer = text;
    fx->server.answer_len = len;
}

static void expect_get(struct fixture *fx, const char *req, const char *result)
{
    char *got = get(fx, req, NULL);

    assert_string_equal(got, result);
    free(got);
}

static void test_get_answer(void **state)
{
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    struct fixture *fx = *state;
    char want[256];

    answer_with(fx, ans, strlen(ans));
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/p?q=1#f\"}",
               "{\"status\":200,\"body\":\"hello\",\"body_truncated\":false}");
    snprintf(want, sizeof want,
             "GET /p?q=1 HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
             "User-Agent: cfm-agent\r\n\r\n",
             fx->server.port);
    assert_int_equal(fx->server.got_len, strlen(want));
    assert_memory_equal(fx->server.got, want, strlen(want));
}

static void test_get_by_name(void **state)
{
    static const char ans[] = "HTTP/1.0 503 Busy\r\n\r\nlater\n";
    struct fixture *fx = *state;

    /* "localhost" may be ::1 first: the server is on 127.0.0.1 only. */
    answer_with(fx, ans, strlen(ans));
    expect_get(fx, "{\"url\": \"http://localhost:%d/\"}",
               "{\"status\":503,\"body\":\"later\\n\",\"body_truncated\":false}");
    assert_true(find(fx->server.got, fx->server.got_len, "\r\nHost: localhost:"));
}

static void test_get_bodies(void **state)
{
    static const char bin[] = "HTTP/1.0 200 OK\r\n\r\n\x00\xff\x01";
    static const char utf8[] = "HTTP/1.0 200 OK\r\n\r\na\xc3\xa9z";
    static const char cut[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    struct fixture *fx = *state;

    answer_with(fx, bin, sizeof bin - 1);
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}",
               "{\"status\":200,\"body_b64\":\"AP8B\",\"body_truncated\":false}");
    /* Cut inside a character: the text ends before it. */
    answer_with(fx, utf8, sizeof utf8 - 1);
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"max_body\": 2}",
               "{\"status\":200,\"body\":\"a\",\"body_truncated\":true}");
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"max_body\": 3}",
               "{\"status\":200,\"body\":\"a\xc3\xa9\",\"body_truncated\":true}");
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"max_body\": 4}",
               "{\"status\":200,\"body\":\"a\xc3\xa9z\",\"body_truncated\":false}");
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"max_body\": 0}",
               "{\"status\":200,\"body\":\"\",\"body_truncated\":true}");
    answer_with(fx, cut, strlen(cut));
    {
        char want[256];
        snprintf(want, sizeof want,
                 "{\"status\":200,\"body\":\"abc\",\"body_truncated\":false,\"error\":\"the answer "
                 "from 127.0.0.1:%d ended after 3 of its 10 body bytes\"}",
                 fx->server.port);
        expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}", want);
    }
}

static void test_get_failures(void **state)
{
    struct fixture *fx = *state;
    char want[512], *big;
    size_t n = CFM_AGENT_HTTP_MAX_HEAD + 100;

    answer_with(fx, "SSH-2.0-x\r\n", 11);
    snprintf(want, sizeof want,
             "{\"status\":0,\"error\":\"not an HTTP answer from 127.0.0.1:%d (it begins "
             "'SSH-2.0-x\\\\x0d\\\\x0a')\"}",
             fx->server.port);
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}", want);

    fx->server.mode = CLOSE;
    snprintf(want, sizeof want,
             "{\"status\":0,\"error\":\"127.0.0.1:%d closed the connection without an answer\"}",
             fx->server.port);
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}", want);

    fx->server.mode = SILENT;
    snprintf(want, sizeof want,
             "{\"status\":0,\"error\":\"no answer from 127.0.0.1:%d within 50 ms\"}",
             fx->server.port);
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"timeout_ms\": 50}", want);
    assert_true(fx->duration_ms >= 50); /* never less than the timeout it reports */

    big = malloc(n);
    assert_non_null(big);
    memset(big, 'x', n);
    memcpy(big, "HTTP/1.0 200 OK\r\nX: ", 20);
    answer_with(fx, big, n);
    snprintf(want, sizeof want,
             "{\"status\":0,\"error\":\"the status line and headers from 127.0.0.1:%d are over "
             "16384 bytes\"}",
             fx->server.port);
    expect_get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}", want);
    free(big);
}

static void test_get_refused(void **state)
{
    struct fixture *fx = *state;
    int port = fx->server.port;
    char want[256], req[128];

    /* A port nothing listens on: the server's, once it is closed. */
    uv_close((uv_handle_t *)&fx->server.listen, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    uv_tcp_init(&fx->loop, &fx->server.listen); /* teardown closes it again */
    snprintf(req, sizeof req, "{\"url\": \"http://127.0.0.1:%d/\"}", port);
    snprintf(want, sizeof want,
             "{\"status\":0,\"error\":\"connect to 127.0.0.1:%d: connection refused\"}", port);
    expect_get(fx, req, want);
}

static void test_get_abort(void **state)
{
    struct fixture *fx = *state;
    struct cfm_agent_http *h = NULL;

    fx->server.mode = SILENT;
    get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}", &h);
    assert_non_null(h);
    while (fx->server.nconns == 0)
        uv_run(&fx->loop, UV_RUN_ONCE);
    cfm_agent_http_abort(h);
    cfm_agent_http_abort(h); /* twice is harmless */
    while (!fx->done)
        uv_run(&fx->loop, UV_RUN_ONCE);
    json_object_del(fx->result, "duration_ms");
    {
        char *got = json_dumps(fx->result, JSON_COMPACT);
        assert_string_equal(got, "{\"status\":0,\"error\":\"" CFM_AGENT_HTTP_STOPPED "\"}");
        free(got);
    }
}

static void test_get_bad_requests(void **state)
{
    static const struct {
        const char *req, *error;
    } cases[] = {
        {"{}", "http_get needs \"url\" (a string, http://...)"},
        {"{\"url\": 7}", "http_get needs \"url\" (a string, http://...)"},
        {"{\"url\": \"http://h/\", \"timeout_ms\": 0}", "timeout_ms must be an integer from 1 to 60000"},
        {"{\"url\": \"http://h/\", \"timeout_ms\": 1.5}", "timeout_ms must be an integer from 1 to 60000"},
        {"{\"url\": \"http://h/\", \"max_body\": 65537}", "max_body must be an integer from 0 to 65536"},
        {"{\"url\": \"https://h/\"}", "url 'https://h/': scheme 'https' is not supported (only http://)"},
    };
    struct fixture *fx = *state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfm_why why = {{0}};
        struct cfm_agent_http *h = (void *)1;
        json_t *req = json_loads(cases[i].req, 0, NULL);
        assert_non_null(req);
        assert_int_equal(cfm_agent_http_start(&fx->loop, req, on_done, fx, &h, &why), CFM_EINVAL);
        assert_null(h);
        assert_string_equal(why.text, cases[i].error);
        json_decref(req);
    }
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_false(fx->done);
}

/* ---- retried GETs (httpwait.c) ------------------------------------------- */

/* The retried GET of req (%d for the port) to its end; returns the result
 * as compact JSON without duration_ms, attempts in *attempts. */
static char *wait_get(struct fixture *fx, const char *fmt, json_int_t *attempts)
{
    struct cfm_why why = {{0}};
    char text[1024];
    json_t *req;
    char *got;

    snprintf(text, sizeof text, fmt, fx->server.port);
    assert_non_null(req = json_loads(text, 0, NULL));
    fx->done = false;
    assert_int_equal(cfm_agent_httpwait_start(&fx->loop, req, on_done, fx, NULL, &why), CFM_OK);
    json_decref(req);
    assert_false(fx->done);
    while (!fx->done)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_non_null(fx->result);
    *attempts = json_integer_value(json_object_get(fx->result, "attempts"));
    json_object_del(fx->result, "attempts");
    json_object_del(fx->result, "duration_ms");
    got = json_dumps(fx->result, JSON_COMPACT);
    json_decref(fx->result);
    fx->result = NULL;
    return got;
}

static void test_wait_until_ready(void **state)
{
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct fixture *fx = *state;
    json_int_t attempts;
    char *got;

    answer_with(fx, ans, strlen(ans));
    fx->server.unready = 3;
    got = wait_get(fx, "{\"url\": \"http://127.0.0.1:%d/health\", \"retry_for_ms\": 30000}",
                   &attempts);
    assert_string_equal(got, "{\"status\":200,\"body\":\"ok\",\"body_truncated\":false}");
    assert_int_equal(attempts, 4); /* three 503s, then the answer */
    assert_int_equal(fx->server.served, 4);
    free(got);
}

static void test_wait_gives_up(void **state)
{
    static const char ans[] = "HTTP/1.1 200 OK\r\n\r\n";
    struct fixture *fx = *state;
    json_int_t attempts;
    char *got;

    answer_with(fx, ans, strlen(ans));
    fx->server.unready = 1000000; /* never ready */
    got = wait_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"retry_for_ms\": 200}",
                   &attempts);
    assert_string_equal(got, "{\"status\":503,\"body\":\"starting\",\"body_truncated\":false}");
    assert_true(attempts >= 2);
    assert_int_equal(attempts, fx->server.served); /* the last try's answer is the result */
    free(got);
}

static void on_listen_now(uv_timer_t *t)
{
    struct server *s = t->data;
    struct sockaddr_in addr;

    uv_ip4_addr("127.0.0.1", s->port, &addr);
    assert_int_equal(uv_tcp_bind(&s->listen, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listen, 8, on_connection), 0);
    uv_close((uv_handle_t *)t, NULL);
}

/* The usual case: the service is not listening yet when the wait starts. */
static void test_wait_refused_then_listening(void **state)
{
    static const char ans[] = "HTTP/1.1 204 No Content\r\n\r\n";
    struct fixture *fx = *state;
    uv_timer_t later;
    json_int_t attempts;
    char *got;

    answer_with(fx, ans, strlen(ans));
    uv_close((uv_handle_t *)&fx->server.listen, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    uv_tcp_init(&fx->loop, &fx->server.listen);
    fx->server.listen.data = &fx->server;
    uv_timer_init(&fx->loop, &later);
    later.data = &fx->server;
    uv_timer_start(&later, on_listen_now, 20, 0);
    got = wait_get(fx, "{\"url\": \"http://127.0.0.1:%d/\", \"retry_for_ms\": 30000}",
                   &attempts);
    assert_string_equal(got, "{\"status\":204,\"body\":\"\",\"body_truncated\":false}");
    assert_true(attempts >= 2); /* refused while nothing listened */
    assert_int_equal(fx->server.served, 1);
    free(got);
}

/* Without retry_for_ms a 503 is the answer, after one try. */
static void test_wait_without_retry_is_one_get(void **state)
{
    static const char ans[] = "HTTP/1.1 200 OK\r\n\r\n";
    struct fixture *fx = *state;
    json_int_t attempts;
    char *got;

    answer_with(fx, ans, strlen(ans));
    fx->server.unready = 1;
    got = wait_get(fx, "{\"url\": \"http://127.0.0.1:%d/\"}", &attempts);
    assert_string_equal(got, "{\"status\":503,\"body\":\"starting\",\"body_truncated\":false}");
    assert_int_equal(attempts, 0); /* no "attempts" field: a plain GET's result */
    assert_int_equal(fx->server.served, 1);
    free(got);
}

static void test_wait_abort(void **state)
{
    static const char ans[] = "HTTP/1.1 200 OK\r\n\r\n";
    struct fixture *fx = *state;
    struct cfm_agent_httpwait *w = NULL;
    struct cfm_why why = {{0}};
    char text[256];
    json_t *req;

    answer_with(fx, ans, strlen(ans));
    fx->server.unready = 1000000;
    snprintf(text, sizeof text,
             "{\"url\": \"http://127.0.0.1:%d/\", \"retry_for_ms\": 600000}", fx->server.port);
    assert_non_null(req = json_loads(text, 0, NULL));
    assert_int_equal(cfm_agent_httpwait_start(&fx->loop, req, on_done, fx, &w, &why), CFM_OK);
    json_decref(req);
    while (fx->server.served < 2)
        uv_run(&fx->loop, UV_RUN_ONCE);
    cfm_agent_httpwait_abort(w);
    cfm_agent_httpwait_abort(w); /* twice is harmless */
    assert_false(fx->done);      /* done follows, never from inside abort */
    while (!fx->done)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_string_equal(json_string_value(json_object_get(fx->result, "error")),
                        CFM_AGENT_HTTP_STOPPED);
    assert_true(json_integer_value(json_object_get(fx->result, "attempts")) >= 2);
}

static void test_wait_bad_retry(void **state)
{
    static const char *bad[] = {
        "{\"url\": \"http://h/\", \"retry_for_ms\": -1}",
        "{\"url\": \"http://h/\", \"retry_for_ms\": 600001}",
        "{\"url\": \"http://h/\", \"retry_for_ms\": \"5\"}",
    };
    struct fixture *fx = *state;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cfm_why why = {{0}};
        struct cfm_agent_httpwait *w = (void *)1;
        json_t *req = json_loads(bad[i], 0, NULL);
        assert_non_null(req);
        assert_int_equal(cfm_agent_httpwait_start(&fx->loop, req, on_done, fx, &w, &why),
                         CFM_EINVAL);
        assert_null(w);
        assert_string_equal(why.text, "retry_for_ms must be an integer from 0 to 600000");
        json_decref(req);
    }
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_false(fx->done);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the server writes to GETs that gave up */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_forms),
        cmocka_unit_test(test_url_errors),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_head_errors),
        cmocka_unit_test_setup_teardown(test_get_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_until_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_refused_then_listening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_without_retry_is_one_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_bad_retry, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
