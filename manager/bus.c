/*
 * bus.c - libmosquitto on the libuv loop; the only file of the manager that
 * talks to libmosquitto. Everything else publishes through cfm_bus_publish
 * and never sees a mosquitto pointer.
 *
 * No mosquitto thread: a uv_poll_t watches mosquitto_socket() and calls
 * mosquitto_loop_read/write; a 1 s timer calls mosquitto_loop_misc for
 * keep-alives. Each connection gets its own poll handle (a new socket each
 * time). The connection is opened with mosquitto_connect_bind_v5 every time,
 * also when reconnecting, because only that call carries the CONNECT
 * properties (the session expiry that makes the session persistent);
 * libmosquitto keeps unacknowledged QoS 1 messages across it and resends
 * them. The TCP connect itself is a blocking call: the site broker is on
 * the manager's own host or LAN, where it returns at once.
 *
 * libmosquitto is told it is threaded (mosquitto_threaded_set) although it
 * is not: then it only queues what it sends and the bus decides when the
 * queue is written. Left alone, it writes the PUBACK of a QoS 1 message
 * before it hands the message to us, so the broker forgot a message the
 * manager had not yet stored, and a crash in between lost it. The bus
 * writes after the callbacks of a wake-up have returned, and the manager
 * has committed what they brought (on_read's end) by then: the broker
 * hears "received" for what is on disk, and redelivers anything else
 * after a crash (the session is persistent). Publishes made outside a
 * wake-up are written at once.
 */
#include "bus.h"

#include <errno.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MISC_INTERVAL_MS 1000
#define MAX_SUBS 4096
#define READS_PER_WAKE 64

struct conn {
    uv_poll_t poll;
    struct cfm_bus *bus;
};

struct cfm_bus {
    uv_loop_t *loop;
    struct mosquitto *mosq;
    struct cfm_bus_callbacks cb;
    char *host;
    int port;
    int keepalive_s;
    uint32_t session_expiry_s;

    struct conn *conn;        /* NULL while not connected at the TCP level */
    int poll_events;
    uv_timer_t misc_timer;
    uv_timer_t retry_timer;
    unsigned backoff_ms;
    bool up;                  /* CONNACK received */
    bool closing;
    bool dispatching;         /* inside mosquitto_loop_*: callbacks may run */
    int open_handles;

    char **subs;
    bool *no_local;           /* per subscription */
    size_t nsubs;
};

static void try_connect(struct cfm_bus *bus);

static void on_handle_closed(uv_handle_t *h)
{
    struct cfm_bus *bus = h->data;

    if (h->type == UV_POLL)
        free(h); /* the poll handle is the first member of its struct conn */
    if (--bus->open_handles > 0)
        return;
    mosquitto_threaded_set(bus->mosq, false); /* no thread of its own to stop */
    mosquitto_destroy(bus->mosq);
    for (size_t i = 0; i < bus->nsubs; i++)
        free(bus->subs[i]);
    free(bus->subs);
    free(bus->no_local);
    free(bus->host);
    free(bus);
}

static void drop_conn(struct cfm_bus *bus)
{
    if (!bus->conn)
        return;
    uv_poll_stop(&bus->conn->poll);
    uv_close((uv_handle_t *)&bus->conn->poll, on_handle_closed);
    bus->conn = NULL;
}

static void on_retry(uv_timer_t *t)
{
    try_connect(t->data);
}

static void schedule_retry(struct cfm_bus *bus)
{
    if (bus->closing)
        return;
    uv_timer_start(&bus->retry_timer, on_retry, bus->backoff_ms, 0);
    bus->backoff_ms = bus->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : bus->backoff_ms * 2;
}

/* The connection is gone (socket error, broker closed it, keep-alive lost). */
static void connection_lost(struct cfm_bus *bus, const char *why)
{
    bool was_up = bus->up;

    if (!bus->conn && !bus->up)
        return;
    drop_conn(bus);
    bus->up = false;
    if (was_up)
        cfm_warn("bus", "lost the broker %s:%d (%s); reconnecting", bus->host, bus->port, why);
    if (was_up && bus->cb.on_connection)
        bus->cb.on_connection(bus->cb.arg, false);
    schedule_retry(bus);
}

static void update_poll(struct cfm_bus *bus);
static void finish_close(struct cfm_bus *bus);

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct conn *c = (struct conn *)poll;
    struct cfm_bus *bus = c->bus;
    int rc = MOSQ_ERR_SUCCESS;

    if (status < 0) {
        connection_lost(bus, uv_strerror(status));
        return;
    }
    bus->dispatching = true;
    if (events & UV_WRITABLE)
        rc = mosquitto_loop_write(bus->mosq, 1);
    /* Read a batch per wake-up, until the socket is drained: loop_read
     * reports a drained non-blocking socket as success, with errno EAGAIN
     * (errno is cleared before each read; a callback that leaves EAGAIN
     * behind only ends the batch early, and level-triggered polling wakes
     * us again if more is there). Reading on after EAGAIN would cost a
     * failed read(2) for every remaining turn of the batch. */
    if ((events & UV_READABLE) && bus->cb.on_read)
        bus->cb.on_read(bus->cb.arg, true);
    for (int i = 0; rc == MOSQ_ERR_SUCCESS && (events & UV_READABLE) && i < READS_PER_WAKE &&
                    bus->conn == c && !bus->closing;
         i++) {
        errno = 0;
        rc = mosquitto_loop_read(bus->mosq, 1);
        if (rc == MOSQ_ERR_SUCCESS && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
    }
    if ((events & UV_READABLE) && bus->cb.on_read)
        bus->cb.on_read(bus->cb.arg, false);
    /* What the reads acknowledge (PUBACKs) and answer, after on_read's end
     * committed them. */
    if (rc == MOSQ_ERR_SUCCESS && bus->conn == c && !bus->closing && mosquitto_want_write(bus->mosq))
        rc = mosquitto_loop_write(bus->mosq, 1);
    bus->dispatching = false;
    if (bus->closing) {
        finish_close(bus); /* asked for by a callback */
        return;
    }
    if (bus->conn != c)
        return; /* a callback dropped this connection */
    if (rc != MOSQ_ERR_SUCCESS) {
        connection_lost(bus, rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        return;
    }
    update_poll(bus);
}

static void update_poll(struct cfm_bus *bus)
{
    int events;

    if (!bus->conn)
        return;
    events = UV_READABLE | (mosquitto_want_write(bus->mosq) ? UV_WRITABLE : 0);
    if (events != bus->poll_events) {
        bus->poll_events = events;
        uv_poll_start(&bus->conn->poll, events, on_poll);
    }
}

/* Writes what libmosquitto has queued now, unless a wake-up is being
 * dispatched: its end writes, and watching for writable meanwhile would
 * cost two epoll_ctl calls for nothing. A write that fails leaves the
 * packets queued: the poll then watches for writable and on_poll finds the
 * error. */
static void write_now(struct cfm_bus *bus)
{
    if (bus->dispatching)
        return;
    if (bus->conn && mosquitto_want_write(bus->mosq)) {
        bus->dispatching = true;
        mosquitto_loop_write(bus->mosq, 1);
        bus->dispatching = false;
        if (bus->closing) {
            finish_close(bus); /* asked for by a callback (a QoS 0 publish's) */
            return;
        }
    }
    update_poll(bus);
}

static void on_misc(uv_timer_t *t)
{
    struct cfm_bus *bus = t->data;
    int rc;

    if (!bus->conn)
        return;
    bus->dispatching = true;
    rc = mosquitto_loop_misc(bus->mosq);
    bus->dispatching = false;
    if (bus->closing) {
        finish_close(bus);
        return;
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        connection_lost(bus, mosquitto_strerror(rc));
        return;
    }
    update_poll(bus);
}

static void try_connect(struct cfm_bus *bus)
{
    mosquitto_property *props = NULL;
    struct conn *c;
    int rc, fd;

    if (bus->closing || bus->conn)
        return;
    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                 bus->session_expiry_s);
    rc = mosquitto_connect_bind_v5(bus->mosq, bus->host, bus->port, bus->keepalive_s, NULL, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        cfm_debug("bus", "cannot reach the broker %s:%d: %s", bus->host, bus->port,
                  rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        schedule_retry(bus);
        return;
    }
    fd = mosquitto_socket(bus->mosq);
    /* Child processes (agents, commands) must not inherit the broker
     * connection: it would outlive us and delay our Last Will. */
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    c = calloc(1, sizeof *c);
    if (!c || uv_poll_init_socket(bus->loop, &c->poll, fd) != 0) {
        free(c);
        cfm_error("bus", "cannot watch the broker socket");
        mosquitto_disconnect(bus->mosq);
        schedule_retry(bus);
        return;
    }
    c->bus = bus;
    c->poll.data = bus;
    bus->conn = c;
    bus->open_handles++;
    bus->poll_events = 0;
    update_poll(bus);
}

static void on_connect(struct mosquitto *mosq, void *arg, int rc, int flags,
                       const mosquitto_property *props)
{
    struct cfm_bus *bus = arg;

    (void)mosq;
    (void)props;
    if (rc != 0) {
        cfm_error("bus", "the broker %s:%d refused the connection: %s", bus->host, bus->port,
                  mosquitto_reason_string(rc));
        connection_lost(bus, "refused");
        return;
    }
    cfm_info("bus", "connected to %s:%d (session %s)", bus->host, bus->port,
             (flags & 1) ? "resumed" : "new");
    bus->up = true;
    bus->backoff_ms = BACKOFF_MIN_MS;
    for (size_t i = 0; i < bus->nsubs; i++) {
        rc = mosquitto_subscribe_v5(bus->mosq, NULL, bus->subs[i], 1,
                                    bus->no_local[i] ? MQTT_SUB_OPT_NO_LOCAL : 0, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            cfm_error("bus", "subscribe %s: %s", bus->subs[i], mosquitto_strerror(rc));
    }
    if (bus->cb.on_connection)
        bus->cb.on_connection(bus->cb.arg, true);
}

static void on_disconnect(struct mosquitto *mosq, void *arg, int rc,
                          const mosquitto_property *props)
{
    struct cfm_bus *bus = arg;

    (void)mosq;
    (void)props;
    if (!bus->closing)
        connection_lost(bus, rc == 0 ? "disconnected" : mosquitto_strerror(rc));
}

static void on_publish(struct mosquitto *mosq, void *arg, int mid, int reason,
                       const mosquitto_property *props)
{
    struct cfm_bus *bus = arg;

    (void)mosq;
    (void)props;
    if (reason >= 0x80)
        cfm_error("bus", "the broker refused message %d: %s", mid,
                  mosquitto_reason_string(reason));
    if (bus->cb.on_ack && !bus->closing)
        bus->cb.on_ack(bus->cb.arg, mid, reason < 0x80);
}

static void on_message(struct mosquitto *mosq, void *arg, const struct mosquitto_message *m,
                       const mosquitto_property *props)
{
    struct cfm_bus *bus = arg;
    struct cfm_bus_msg msg;
    char *response_topic = NULL;
    void *corr = NULL;
    uint16_t corr_len = 0;

    (void)mosq;
    if (bus->closing || !bus->cb.on_message)
        return;
    mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic, false);
    mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    memset(&msg, 0, sizeof msg);
    msg.topic = m->topic;
    msg.payload = m->payload;
    msg.len = (size_t)m->payloadlen;
    msg.qos = m->qos;
    msg.retain = m->retain;
    msg.response_topic = response_topic;
    msg.correlation = corr;
    msg.correlation_len = corr_len;
    bus->cb.on_message(bus->cb.arg, &msg);
    free(response_topic);
    free(corr);
}

enum cfm_err cfm_bus_start(uv_loop_t *loop, const struct cfm_bus_opts *opts,
                           const struct cfm_bus_callbacks *cb, struct cfm_bus **out,
                           struct cfm_why *why)
{
    struct cfm_bus *bus;
    int rc;

    *out = NULL;
    bus = calloc(1, sizeof *bus);
    if (!bus)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    bus->loop = loop;
    bus->cb = *cb;
    bus->port = opts->port;
    bus->keepalive_s = opts->keepalive_s < 5 ? 5 : opts->keepalive_s;
    bus->session_expiry_s = opts->session_expiry_s;
    bus->backoff_ms = BACKOFF_MIN_MS;
    bus->host = strdup(opts->host);
    bus->mosq = mosquitto_new(opts->client_id, false, bus);
    if (!bus->host || !bus->mosq) {
        mosquitto_destroy(bus->mosq);
        free(bus->host);
        free(bus);
        return cfm_why_set(why, CFM_ENOMEM, "cannot create the MQTT client");
    }
    mosquitto_threaded_set(bus->mosq, true); /* it queues; the bus writes */
    mosquitto_int_option(bus->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (opts->username)
        mosquitto_username_pw_set(bus->mosq, opts->username, opts->password);
    if (opts->will_topic) {
        rc = mosquitto_will_set_v5(bus->mosq, opts->will_topic, (int)strlen(opts->will_payload),
                                   opts->will_payload, 1, true, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            mosquitto_destroy(bus->mosq);
            free(bus->host);
            free(bus);
            return cfm_why_set(why, CFM_EINVAL, "last will: %s", mosquitto_strerror(rc));
        }
    }
    mosquitto_connect_v5_callback_set(bus->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(bus->mosq, on_disconnect);
    mosquitto_publish_v5_callback_set(bus->mosq, on_publish);
    mosquitto_message_v5_callback_set(bus->mosq, on_message);

    uv_timer_init(loop, &bus->misc_timer);
    uv_timer_init(loop, &bus->retry_timer);
    bus->misc_timer.data = bus;
    bus->retry_timer.data = bus;
    bus->open_handles = 2;
    uv_timer_start(&bus->misc_timer, on_misc, MISC_INTERVAL_MS, MISC_INTERVAL_MS);
    try_connect(bus);
    *out = bus;
    return CFM_OK;
}

static enum cfm_err subscribe(struct cfm_bus *bus, const char *pattern, bool no_local)
{
    char **grown;
    bool *flags;
    char *copy;

    for (size_t i = 0; i < bus->nsubs; i++)
        if (strcmp(bus->subs[i], pattern) == 0)
            return CFM_OK;
    if (bus->nsubs == MAX_SUBS) {
        cfm_error("bus", "more than %d subscriptions; refusing %s", MAX_SUBS, pattern);
        return CFM_ETOOBIG;
    }
    grown = realloc(bus->subs, (bus->nsubs + 1) * sizeof *grown);
    if (!grown)
        return CFM_ENOMEM;
    bus->subs = grown;
    flags = realloc(bus->no_local, (bus->nsubs + 1) * sizeof *flags);
    if (!flags)
        return CFM_ENOMEM;
    bus->no_local = flags;
    copy = strdup(pattern);
    if (!copy)
        return CFM_ENOMEM;
    bus->no_local[bus->nsubs] = no_local;
    bus->subs[bus->nsubs++] = copy;
    if (bus->up) {
        int rc = mosquitto_subscribe_v5(bus->mosq, NULL, pattern, 1,
                                        no_local ? MQTT_SUB_OPT_NO_LOCAL : 0, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            cfm_error("bus", "subscribe %s: %s", pattern, mosquitto_strerror(rc));
        update_poll(bus);
    }
    return CFM_OK;
}

enum cfm_err cfm_bus_subscribe(struct cfm_bus *bus, const char *pattern)
{
    return subscribe(bus, pattern, false);
}

enum cfm_err cfm_bus_subscribe_no_local(struct cfm_bus *bus, const char *pattern)
{
    return subscribe(bus, pattern, true);
}

bool cfm_bus_subscribed(const struct cfm_bus *bus, const char *pattern)
{
    for (size_t i = 0; i < bus->nsubs; i++)
        if (strcmp(bus->subs[i], pattern) == 0)
            return true;
    return false;
}

enum cfm_err cfm_bus_unsubscribe(struct cfm_bus *bus, const char *pattern)
{
    for (size_t i = 0; i < bus->nsubs; i++) {
        if (strcmp(bus->subs[i], pattern) != 0)
            continue;
        free(bus->subs[i]);
        bus->subs[i] = bus->subs[--bus->nsubs];
        bus->no_local[i] = bus->no_local[bus->nsubs];
        if (bus->up) {
            mosquitto_unsubscribe_v5(bus->mosq, NULL, pattern, NULL);
            update_poll(bus);
        }
        return CFM_OK;
    }
    return CFM_ENOTFOUND;
}

enum cfm_err cfm_bus_publish(struct cfm_bus *bus, const struct cfm_bus_msg *msg, int *mid)
{
    mosquitto_property *props = NULL;
    int rc;

    if (msg->len > INT32_MAX)
        return CFM_ETOOBIG;
    if (msg->expiry_s)
        mosquitto_property_add_int32(&props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, msg->expiry_s);
    if (msg->response_topic)
        mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, msg->response_topic);
    if (msg->correlation)
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, msg->correlation,
                                      (uint16_t)msg->correlation_len);
    rc = mosquitto_publish_v5(bus->mosq, mid, msg->topic, (int)msg->len, msg->payload, msg->qos,
                              msg->retain, props);
    mosquitto_property_free_all(&props);
    /* A QoS 1 message is queued by libmosquitto before it tries to send it;
     * NO_CONN then means "queued, sent after reconnecting", not lost. */
    if (rc == MOSQ_ERR_NO_CONN && msg->qos > 0)
        rc = MOSQ_ERR_SUCCESS;
    if (rc != MOSQ_ERR_SUCCESS) {
        cfm_warn("bus", "publish %s: %s", msg->topic, mosquitto_strerror(rc));
        return CFM_EBUS;
    }
    write_now(bus);
    return CFM_OK;
}

bool cfm_bus_connected(const struct cfm_bus *bus)
{
    return bus->up;
}

/* Disconnects and closes the handles; never called from inside a
 * libmosquitto callback, whose locks mosquitto_loop_write would take again. */
static void finish_close(struct cfm_bus *bus)
{
    if (bus->conn) {
        /* A clean DISCONNECT: the broker drops the Will instead of sending it. */
        mosquitto_disconnect_v5(bus->mosq, 0, NULL);
        mosquitto_loop_write(bus->mosq, 1);
        drop_conn(bus);
    }
    bus->up = false;
    uv_timer_stop(&bus->misc_timer);
    uv_timer_stop(&bus->retry_timer);
    uv_close((uv_handle_t *)&bus->misc_timer, on_handle_closed);
    uv_close((uv_handle_t *)&bus->retry_timer, on_handle_closed);
}

void cfm_bus_close(struct cfm_bus *bus)
{
    if (!bus || bus->closing)
        return;
    bus->closing = true;
    if (!bus->dispatching)
        finish_close(bus);
}
