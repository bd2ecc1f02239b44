/*
 * httpget.h - the http_get request: one plain-HTTP GET made by the agent on
 * its own loop (a health check seen from inside the VM), no process
 * spawned, with one timeout for the whole exchange and a cap on the body
 * it keeps.
 */
#ifndef CFM_AGENT_HTTPGET_H
#define CFM_AGENT_HTTPGET_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "err.h"

#define CFM_AGENT_HTTP_DEFAULT_TIMEOUT_MS 2000
#define CFM_AGENT_HTTP_MAX_TIMEOUT_MS 60000
#define CFM_AGENT_HTTP_DEFAULT_BODY 4096 /* body bytes kept */
#define CFM_AGENT_HTTP_MAX_BODY 65536
#define CFM_AGENT_HTTP_MAX_HEAD 16384 /* status line and headers of an answer */
#define CFM_AGENT_HTTP_MAX_URL 2048
#define CFM_AGENT_HTTP_MAX_HOST 253
#define CFM_AGENT_HTTP_STOPPED "the agent stopped before an answer came"

/* A URL taken apart. */
struct cfm_agent_url {
    char host[CFM_AGENT_HTTP_MAX_HOST + 1]; /* a name or an address (IPv6 without brackets) */
    int family;                              /* AF_INET, AF_INET6 for a literal; 0 for a name */
    int port;                                /* 80 unless given */
    char authority[CFM_AGENT_HTTP_MAX_HOST + 9]; /* "host:port", "[v6]:port": the Host header */
    char target[CFM_AGENT_HTTP_MAX_URL + 2];     /* path and query, "/" at least; no fragment */
};

/* Parses url (untrusted, len bytes) of the form http://HOST[:PORT][/PATH][?QUERY]
 * (a fragment is dropped). HOST is a name, an IPv4 address or [an IPv6
 * address]. Only http is taken; every byte must be printable ASCII (the
 * rest percent-encoded). CFM_EINVAL with why naming what is wrong. */
enum cfm_err cfm_agent_http_parse_url(const char *url, size_t len, struct cfm_agent_url *out,
                                      struct cfm_why *why);

/* The head (status line and headers) of an HTTP answer. */
struct cfm_agent_http_head {
    size_t len;             /* bytes of the head, blank line included; 0 while incomplete */
    int status;             /* the status code, once complete */
    long long content_length; /* -1 when not given (or not understood) */
};

/* Parses the first len bytes of an answer received from `from` (named in
 * messages). CFM_OK with head->len > 0 when the head is complete, with
 * head->len == 0 when more bytes are needed; at eof (the server closed) a
 * whole status line without its blank line counts as complete. CFM_EINVAL
 * when the bytes are not an HTTP answer. */
enum cfm_err cfm_agent_http_parse_head(const char *buf, size_t len, bool eof, const char *from,
                                       struct cfm_agent_http_head *head, struct cfm_why *why);

struct cfm_agent_http;

/* Called once, after every handle of the request closed: with result
 * (borrowed; {"status", "body" or "body_b64", "body_truncated", "error",
 * "duration_ms"}, status 0 and an error when no HTTP answer came) or, when
 * out of memory, with result NULL and error saying so. The request is
 * freed after the call. */
typedef void (*cfm_agent_http_done)(void *arg, const json_t *result, const char *error);

/* Starts the GET req describes ({"url", "timeout_ms", "max_body"}; req
 * borrowed) on loop. On CFM_OK it runs and done will be called (never
 * before this returns); *out (may be NULL) lets the caller abort it.
 * Otherwise why names the field that was wrong and done is never called. */
enum cfm_err cfm_agent_http_start(uv_loop_t *loop, const json_t *req, cfm_agent_http_done done,
                                  void *arg, struct cfm_agent_http **out, struct cfm_why *why);

/* Stops the request (the agent is stopping): its result keeps what came
 * (status 0 when no head did) with error CFM_AGENT_HTTP_STOPPED, unless it
 * was over already. Safe to call more than once until done is called. A name resolution in progress is
 * waited for (libuv cannot stop a running getaddrinfo). */
void cfm_agent_http_abort(struct cfm_agent_http *h);

#endif
