/*
 * raw_client.c - cfm-bench-raw's MQTT clients: MQTT 5, clean sessions,
 * libmosquitto's own network threads, and the one mutex and condition
 * through which those threads tell the main thread what arrived.
 */
#include <errno.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "raw_common.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;

void raw_lock(void)
{
    pthread_mutex_lock(&lock);
}

void raw_unlock(void)
{
    pthread_mutex_unlock(&lock);
}

void raw_notify(void)
{
    pthread_cond_broadcast(&changed);
}

/* At most 100 ms: the condition uses CLOCK_REALTIME, and a short slice
 * keeps a clock step from stretching the wait. */
void raw_wait_change(double deadline)
{
    double left = deadline - raw_now_s();
    struct timespec ts;

    if (left <= 0)
        return;
    if (left > 0.1)
        left = 0.1;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(left * 1e9);
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&changed, &lock, &ts);
}

bool raw_wait_flag(const bool *flag, double deadline)
{
    while (!*flag && raw_now_s() < deadline)
        raw_wait_change(deadline);
    return *flag;
}

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
                       const mosquitto_property *p)
{
    struct raw_client *c = arg;

    (void)m;
    (void)flags;
    (void)p;
    if (rc != 0)
        raw_die("%s: the broker on port %d refused the connection: %s", c->name, c->port,
                mosquitto_reason_string(rc));
    raw_lock();
    c->connected = true;
    raw_notify();
    raw_unlock();
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *qos,
                         const mosquitto_property *p)
{
    struct raw_client *c = arg;

    (void)m;
    (void)mid;
    (void)p;
    if (n < 1 || qos[0] >= 0x80)
        raw_die("%s: the broker refused the subscription", c->name);
    raw_lock();
    c->subscribed = true;
    raw_notify();
    raw_unlock();
}

struct mosquitto *raw_mosq_new(const char *name, void *obj)
{
    struct mosquitto *mosq;
    char id[64];

    snprintf(id, sizeof id, "cfm-bench-%s-%ld", name, (long)getpid());
    if (!(mosq = mosquitto_new(id, true, obj)))
        raw_die("cannot create an MQTT client");
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
    return mosq;
}

void raw_client_start(struct raw_client *c, const char *name, int port)
{
    int rc;

    snprintf(c->name, sizeof c->name, "%s", name);
    c->port = port;
    c->mosq = raw_mosq_new(name, c);
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
    rc = mosquitto_connect_bind_v5(c->mosq, "127.0.0.1", port, KEEPALIVE_S, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("%s: cannot connect to 127.0.0.1:%d: %s", name, port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    if ((rc = mosquitto_loop_start(c->mosq)) != MOSQ_ERR_SUCCESS)
        raw_die("%s: cannot start the network thread: %s", name, mosquitto_strerror(rc));
    raw_lock();
    if (!raw_wait_flag(&c->connected, raw_now_s() + CONNECT_TIMEOUT_S))
        raw_die("%s: no CONNACK from port %d within %g s", name, port, CONNECT_TIMEOUT_S);
    raw_unlock();
}

void raw_client_subscribe(struct raw_client *c, const char *pattern, int qos)
{
    int rc = mosquitto_subscribe_v5(c->mosq, NULL, pattern, qos, 0, NULL);

    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("%s: subscribe %s: %s", c->name, pattern, mosquitto_strerror(rc));
    raw_lock();
    if (!raw_wait_flag(&c->subscribed, raw_now_s() + CONNECT_TIMEOUT_S))
        raw_die("%s: no SUBACK for %s within %g s", c->name, pattern, CONNECT_TIMEOUT_S);
    raw_unlock();
}

void raw_client_stop(struct raw_client *c)
{
    mosquitto_disconnect_v5(c->mosq, 0, NULL);
    mosquitto_loop_stop(c->mosq, false);
    mosquitto_destroy(c->mosq);
    c->mosq = NULL;
}

char *raw_payload_text(const struct mosquitto_message *msg)
{
    char *text = malloc((size_t)(msg->payloadlen > 0 ? msg->payloadlen : 0) + 1);

    if (!text)
        raw_die("out of memory");
    if (msg->payloadlen > 0)
        memcpy(text, msg->payload, (size_t)msg->payloadlen);
    text[msg->payloadlen > 0 ? msg->payloadlen : 0] = '\0';
    return text;
}
