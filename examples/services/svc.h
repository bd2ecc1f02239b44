/*
 * svc.h - what the files of cfm-svc share. main.c owns the process (command
 * line, signals, --watch, the poll loop), conn.c owns one HTTP connection,
 * proxy.c its upstream connection, modes.c says what web, lb and db answer.
 * Everything is bounded by the constants below; nothing blocks the loop but
 * the db's fsync.
 */
#ifndef CFM_SVC_H
#define CFM_SVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define CFM_SVC_MAX_HEAD (16u << 10)       /* request line + headers */
#define CFM_SVC_MAX_BODY (1u << 20)        /* request or stored value */
#define CFM_SVC_MAX_RESP (CFM_SVC_MAX_HEAD + CFM_SVC_MAX_BODY)
#define CFM_SVC_MAX_CONNS 256              /* client connections at once */
#define CFM_SVC_TIMEOUT_MS 5000            /* connect, read, write without progress */
#define CFM_SVC_MAX_LIFE_MS 60000          /* request + upstream; then the answer */
#define CFM_SVC_LINGER_MS 1000             /* draining a client after the answer */
#define CFM_SVC_MAX_DRAIN (2u << 20)       /* bytes drained before closing anyway */
#define CFM_SVC_MAX_BACKENDS 64
#define CFM_SVC_MAX_BACKENDS_FILE (64u << 10)
#define CFM_SVC_MAX_NAME 64                /* service and backend names, keys */
#define CFM_SVC_MAX_ADDR 64                /* "IP:PORT" or "[V6]:PORT" */
#define CFM_SVC_MAX_LISTEN 4               /* --listen addresses */
#define CFM_SVC_SLACK 1024                 /* room for our own headers around a body */
#define CFM_SVC_READ_STEP (64u << 10)      /* bytes asked of one recv() */

enum cfm_svc_mode { CFM_SVC_WEB, CFM_SVC_LB, CFM_SVC_DB };

struct cfm_svc_addr {
    struct sockaddr_storage sa;
    socklen_t len;
    char text[CFM_SVC_MAX_ADDR + 1];
};

struct cfm_svc_backend {
    char name[CFM_SVC_MAX_NAME + 1];
    struct cfm_svc_addr addr;
};

/* A growable byte buffer; its owner frees data. */
struct cfm_svc_buf {
    char *data;
    size_t len, cap;
};

/* The whole service: its flags and what its mode keeps. */
struct cfm_svc {
    enum cfm_svc_mode mode;
    const char *mode_name;
    const char *name; /* --name; the mode's name when not given */
    struct cfm_svc_addr listen[CFM_SVC_MAX_LISTEN];
    size_t nlisten;
    pid_t watch;
    const char *pidfile;
    /* web */
    bool has_db;
    struct cfm_svc_addr db;
    /* lb */
    const char *backends_path;
    struct cfm_svc_backend backends[CFM_SVC_MAX_BACKENDS];
    size_t nbackends;
    bool backends_known; /* the file was looked at at least once */
    bool backends_missing; /* ... and was not there */
    dev_t backends_dev; /* identity of the file last read */
    ino_t backends_ino;
    off_t backends_size;
    struct timespec backends_mtime;
    int64_t backends_checked_ms;
    unsigned rr; /* round-robin position */
    /* db */
    const char *data_path;
    int data_fd;
    bool has_replica;             /* --replicate-to: every write is copied there */
    bool has_sync;                /* --sync-from: copy everything from there at start */
    struct cfm_svc_addr sync_from;
    struct cfm_svc_addr replica;
    unsigned long replica_failures;
};

/* The request a connection has read; strings point into its input buffer. */
struct cfm_svc_req {
    const char *method;
    const char *target; /* as sent, with any ?query */
    size_t path_len; /* length of target without the query */
    const char *ctype; /* Content-Type or NULL */
    const char *body;
    size_t body_len;
};

enum cfm_svc_conn_state {
    CFM_SVC_READ, /* reading the request */
    CFM_SVC_PROXY, /* waiting for the upstream connection */
    CFM_SVC_WRITE, /* writing the answer */
    CFM_SVC_LINGER, /* answer sent; draining until the client closes */
    CFM_SVC_CLOSED
};

enum cfm_svc_up_state { CFM_SVC_UP_NONE, CFM_SVC_UP_CONNECT, CFM_SVC_UP_SEND, CFM_SVC_UP_RECV };

struct cfm_svc_conn {
    int fd;
    enum cfm_svc_conn_state state;
    int64_t started_ms;
    int64_t deadline_ms; /* the current phase must progress by then */
    int64_t expires_ms; /* ... and end by then */
    char peer[CFM_SVC_MAX_ADDR + 1];
    /* the request */
    struct cfm_svc_buf in;
    size_t scan, line_start; /* where the search for the blank line stands */
    size_t head_len; /* 0 until the head is complete */
    size_t body_len;
    bool expect_continue;
    struct cfm_svc_req req;
    /* the answer */
    struct cfm_svc_buf out;
    size_t out_off, drained;
    int status;
    /* the upstream (lb: a backend; web: the db) */
    int up_fd;
    enum cfm_svc_up_state up;
    size_t up_tries; /* upstreams tried so far for this request */
    size_t up_first; /* lb: the backend tried first */
    bool up_tag; /* add X-Backend to the answer */
    char up_why[128]; /* why the last upstream failed */
    struct cfm_svc_buf up_out, up_in;
    size_t up_off;
    char backend[CFM_SVC_MAX_NAME + 1];
    struct cfm_svc_addr up_addr;
};

/* main.c */
int64_t cfm_svc_now_ms(void);
/* Parses "IP:PORT" or "[V6]:PORT" (numeric only: never blocks on DNS). */
bool cfm_svc_parse_addr(const char *text, struct cfm_svc_addr *addr);
void cfm_svc_log(const struct cfm_svc *svc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* conn.c */
/* Takes ownership of fd (a connected, non-blocking socket); NULL on ENOMEM,
 * with fd closed. */
struct cfm_svc_conn *cfm_svc_conn_new(int fd, const struct sockaddr *peer, socklen_t len);
/* Closes both sockets and frees c; NULL-safe. */
void cfm_svc_conn_free(struct cfm_svc_conn *c);
/* The poll events the client socket and the upstream socket wait for. */
short cfm_svc_conn_events(const struct cfm_svc_conn *c, short *up_events);
void cfm_svc_conn_ready(struct cfm_svc *svc, struct cfm_svc_conn *c, short revents,
                        short up_revents);
/* Acts on the deadlines of c that have passed by now. */
void cfm_svc_conn_tick(struct cfm_svc *svc, struct cfm_svc_conn *c, int64_t now);
/* Sets the answer (body copied) and logs the request. */
void cfm_svc_respond(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status,
                     const char *ctype, const char *body, size_t len);
/* As cfm_svc_respond, with a printf-formatted text/plain body. */
void cfm_svc_respondf(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The answer is in c->out, whole: logs it and starts writing it. */
void cfm_svc_answer(const struct cfm_svc *svc, struct cfm_svc_conn *c, int status);
/* Buffers never grow past max; false (b unchanged) when they would, or on
 * ENOMEM. cfm_svc_buf_free releases b->data and empties b. */
bool cfm_svc_buf_grow(struct cfm_svc_buf *b, size_t need, size_t max);
bool cfm_svc_buf_add(struct cfm_svc_buf *b, const void *data, size_t len, size_t max);
bool cfm_svc_buf_addf(struct cfm_svc_buf *b, size_t max, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cfm_svc_buf_free(struct cfm_svc_buf *b);

/* proxy.c */
/* Forwards the request to the upstreams cfm_svc_pick_upstream names, in
 * turn, until one takes the connection; tag adds X-Backend to the answer. */
void cfm_svc_proxy(struct cfm_svc *svc, struct cfm_svc_conn *c, bool tag);
/* The upstream socket is ready (or failed). */
void cfm_svc_proxy_ready(struct cfm_svc *svc, struct cfm_svc_conn *c);
/* c's deadline passed in CFM_SVC_PROXY; expired: the request is out of time. */
void cfm_svc_proxy_timeout(struct cfm_svc *svc, struct cfm_svc_conn *c, bool expired);
/* Closes the upstream socket, if any, and empties its buffers. */
void cfm_svc_proxy_close(struct cfm_svc_conn *c);

/* modes.c */
bool cfm_svc_start_mode(struct cfm_svc *svc);
void cfm_svc_stop_mode(struct cfm_svc *svc);
/* Answers c's complete request, at once or through cfm_svc_proxy. */
void cfm_svc_handle(struct cfm_svc *svc, struct cfm_svc_conn *c);
/* Fills c->up_addr and c->backend with the upstream for attempt
 * c->up_tries; false when there is none left to try. */
bool cfm_svc_pick_upstream(struct cfm_svc *svc, struct cfm_svc_conn *c);
/* Answers c when no upstream took the request. */
void cfm_svc_no_upstream(struct cfm_svc *svc, struct cfm_svc_conn *c);
/* db: copies a stored write to the replica (synchronously, bounded by a
 * short timeout) so the standby site holds the data; returns whether the
 * replica confirmed it. */
bool cfm_svc_replicate(struct cfm_svc *svc, const char *key, const char *body, size_t len);

/* db: stores value under key atomically, logging a failure. */
bool cfm_svc_db_store(struct cfm_svc *svc, const char *key, const char *value, size_t len);

/* db: copies every key of the db at from into this one (GET /keys, then
 * each value): how a new primary or replica starts from another's data. */
bool cfm_svc_sync_from(struct cfm_svc *svc, const struct cfm_svc_addr *from);

/* lb: re-reads the backends file if it changed (at most once a second
 * unless force). */
void cfm_svc_lb_refresh(struct cfm_svc *svc, bool force);

#endif
