/*
 * raw_pingpong.c - cfm-bench-raw pingpong: two clients (on one broker, or
 * on two bridged ones) bounce a QoS 1 message: "ping" publishes, "pong"
 * answers from its message callback, "ping" sends the next when the answer
 * is in. Prints p50/p99 of the round trip and of a hop (half a round
 * trip), in microseconds, by its own clock. Each message is shaped as a cfm
 * event's ping ({"payload": {"n": i}, ...}, i from 1, padded to --size
 * bytes), so cfm-bench-raw hops can watch these rounds as it watches cfm's:
 * event_hop's baseline is measured by the same watcher as cfm.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

struct pingpong {
    char topic[MAX_TOPIC];      /* pings */
    char pong_topic[MAX_TOPIC];
    char *payload;
    long size;
    long warmup, total;         /* pings not counted; all pings */
    long want;                  /* the number of the ping in flight */
    double sent_at;
    double *rtt;                /* counted round trips, us */
    bool done;
};

static struct pingpong pp;

/* "pong": every ping goes straight back, from the network thread. */
static void on_pong_side(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                         const mosquitto_property *p)
{
    int rc;

    (void)arg;
    (void)p;
    rc = mosquitto_publish_v5(m, NULL, pp.pong_topic, msg->payloadlen, msg->payload, 1, false,
                              NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("pong: publish: %s", mosquitto_strerror(rc));
}

#define PING_HEAD "{\"payload\": {\"n\": "
#define PING_PAD ", \"pad\": \""
#define PING_TAIL "\"}"
/* The smallest --size: the head, a number of up to 19 digits, "}", the
 * pad's key and the tail. */
#define PING_MIN (sizeof PING_HEAD - 1 + 19 + 1 + sizeof PING_PAD - 1 + sizeof PING_TAIL - 1)

/* Writes ping n into payload, exactly size bytes (size >= PING_MIN). */
static void ping_text(char *payload, long size, long n)
{
    int len = snprintf(payload, (size_t)size, PING_HEAD "%ld}" PING_PAD, n);

    memset(payload + len, 'x', (size_t)(size - len));
    memcpy(payload + size - (long)(sizeof PING_TAIL - 1), PING_TAIL, sizeof PING_TAIL - 1);
}

/* Sends ping n (the network thread's, or the main thread's before the
 * first answer). */
static void send_ping(struct mosquitto *m, long n)
{
    int rc;

    ping_text(pp.payload, pp.size, n);
    pp.want = n;
    pp.sent_at = raw_now_s();
    rc = mosquitto_publish_v5(m, NULL, pp.topic, (int)pp.size, pp.payload, 1, false, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("ping: publish: %s", mosquitto_strerror(rc));
}

/* "ping": the answer carries the ping's number after PING_HEAD; the next
 * ping leaves from here. */
static void on_ping_side(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                         const mosquitto_property *p)
{
    double at = raw_now_s();
    char head[sizeof PING_HEAD + 24];
    size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    long n;

    (void)arg;
    (void)p;
    if (len >= sizeof head)
        len = sizeof head - 1;
    memcpy(head, msg->payload, len);
    head[len] = '\0';
    if (strncmp(head, PING_HEAD, sizeof PING_HEAD - 1) != 0)
        return;
    n = strtol(head + sizeof PING_HEAD - 1, NULL, 10);
    raw_lock();
    if (n != pp.want || pp.done) {
        raw_unlock();
        return;
    }
    if (n > pp.warmup)
        pp.rtt[n - pp.warmup - 1] = (at - pp.sent_at) * 1e6;
    if (n == pp.total) {
        pp.done = true;
        raw_notify();
    } else {
        send_ping(m, n + 1);
    }
    raw_unlock();
}

int raw_pingpong(int argc, char **argv)
{
    struct raw_client ping = {0}, pong = {0};
    int port = 0, port2 = 0;
    long count = 0, warmup = 20, size = 0;
    const char *prefix = NULL;
    double timeout_s = 60, *hop, t_start;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_PORT("--port2", &port2),
        RAW_OPT_LONG("--count", &count, 1, MAX_COUNT),
        RAW_OPT_LONG("--warmup", &warmup, 0, MAX_COUNT),
        RAW_OPT_LONG("--size", &size, (long)PING_MIN, MAX_SIZE),
        RAW_OPT_TEXT("--prefix", &prefix),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("pingpong", argc, argv, opts, NULL);
    if (!port || !count || !size || !prefix)
        raw_die("pingpong needs --port, --count, --size and --prefix\n%s", raw_usage);
    raw_check_prefix(prefix);
    if (!port2)
        port2 = port;
    snprintf(pp.topic, sizeof pp.topic, "%s/ping", prefix);
    snprintf(pp.pong_topic, sizeof pp.pong_topic, "%s/pong", prefix);
    pp.size = size;
    pp.warmup = warmup;
    pp.total = warmup + count;
    pp.payload = malloc((size_t)size);
    pp.rtt = calloc((size_t)count, sizeof *pp.rtt);
    hop = calloc((size_t)count, sizeof *hop);
    if (!pp.payload || !pp.rtt || !hop)
        raw_die("out of memory");

    raw_client_start(&pong, "pong", port2);
    mosquitto_message_v5_callback_set(pong.mosq, on_pong_side);
    raw_client_subscribe(&pong, pp.topic, 1);
    raw_client_start(&ping, "ping", port);
    mosquitto_message_v5_callback_set(ping.mosq, on_ping_side);
    raw_client_subscribe(&ping, pp.pong_topic, 1);

    t_start = raw_now_s();
    raw_lock();
    send_ping(ping.mosq, 1);
    if (!raw_wait_flag(&pp.done, t_start + timeout_s))
        raw_die("pingpong: no answer to ping %ld of %ld within the %g s of the run", pp.want,
                pp.total, timeout_s);
    raw_unlock();
    for (long i = 0; i < count; i++)
        hop[i] = pp.rtt[i] / 2;
    printf("pingpong: count=%ld size=%ld bridged=%s", count, size, port2 != port ? "yes" : "no");
    raw_print_pcts("rtt", pp.rtt, count);
    raw_print_pcts("hop", hop, count);
    printf(" seconds=%.3f\n", raw_now_s() - t_start);
    fflush(stdout);
    raw_client_stop(&ping);
    raw_client_stop(&pong);
    free(pp.payload);
    free(pp.rtt);
    free(hop);
    return 0;
}
