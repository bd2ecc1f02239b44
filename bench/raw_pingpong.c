/*
 * raw_pingpong.c - cfm-bench-raw pingpong: two clients (on one broker, or
 * on two bridged ones) bounce a QoS 1 message: "ping" publishes, "pong"
 * answers from its message callback, "ping" sends the next when the answer
 * is in. Prints p50/p99 of the round trip and of a hop (half a round
 * trip), in microseconds: the baseline of event_hop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

struct pingpong {
    char pong_topic[MAX_TOPIC];
    long want;        /* the sequence number "ping" waits for */
    bool got;
    double got_at;
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

/* "ping": the answer carries the sequence number first. */
static void on_ping_side(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                         const mosquitto_property *p)
{
    double at = raw_now_s();
    char head[24];
    size_t n = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;

    (void)m;
    (void)arg;
    (void)p;
    if (n >= sizeof head)
        n = sizeof head - 1;
    memcpy(head, msg->payload, n);
    head[n] = '\0';
    raw_lock();
    if (strtol(head, NULL, 10) == pp.want && !pp.got) {
        pp.got = true;
        pp.got_at = at;
        raw_notify();
    }
    raw_unlock();
}

int raw_pingpong(int argc, char **argv)
{
    struct raw_client ping = {0}, pong = {0};
    int port = 0, port2 = 0;
    long count = 0, warmup = 20, size = 0;
    const char *prefix = NULL;
    double timeout_s = 60, deadline, *rtt, *hop, t_start;
    char topic[MAX_TOPIC], *payload;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_PORT("--port2", &port2),
        RAW_OPT_LONG("--count", &count, 1, MAX_COUNT),
        RAW_OPT_LONG("--warmup", &warmup, 0, MAX_COUNT),
        RAW_OPT_LONG("--size", &size, 24, MAX_SIZE),
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
    snprintf(pp.pong_topic, sizeof pp.pong_topic, "%s/pong", prefix);
    payload = malloc((size_t)size);
    rtt = calloc((size_t)count, sizeof *rtt);
    hop = calloc((size_t)count, sizeof *hop);
    if (!payload || !rtt || !hop)
        raw_die("out of memory");
    memset(payload, 'x', (size_t)size);

    raw_client_start(&pong, "pong", port2);
    mosquitto_message_v5_callback_set(pong.mosq, on_pong_side);
    snprintf(topic, sizeof topic, "%s/ping", prefix);
    raw_client_subscribe(&pong, topic, 1);
    raw_client_start(&ping, "ping", port);
    mosquitto_message_v5_callback_set(ping.mosq, on_ping_side);
    raw_client_subscribe(&ping, pp.pong_topic, 1);

    t_start = raw_now_s();
    deadline = t_start + timeout_s;
    for (long i = 0; i < warmup + count; i++) {
        double t0;
        int rc, n = snprintf(payload, (size_t)size, "%ld ", i);
        payload[n] = 'x'; /* the number, a blank, then padding */
        raw_lock();
        pp.want = i;
        pp.got = false;
        raw_unlock();
        t0 = raw_now_s();
        rc = mosquitto_publish_v5(ping.mosq, NULL, topic, (int)size, payload, 1, false, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            raw_die("ping: publish: %s", mosquitto_strerror(rc));
        raw_lock();
        if (!raw_wait_flag(&pp.got, deadline))
            raw_die("pingpong: no answer to ping %ld within the %g s of the run", i, timeout_s);
        if (i >= warmup) {
            rtt[i - warmup] = (pp.got_at - t0) * 1e6;
            hop[i - warmup] = rtt[i - warmup] / 2;
        }
        raw_unlock();
    }
    printf("pingpong: count=%ld size=%ld bridged=%s", count, size, port2 != port ? "yes" : "no");
    raw_print_pcts("rtt", rtt, count);
    raw_print_pcts("hop", hop, count);
    printf(" seconds=%.3f\n", raw_now_s() - t_start);
    fflush(stdout);
    raw_client_stop(&ping);
    raw_client_stop(&pong);
    free(payload);
    free(rtt);
    free(hop);
    return 0;
}
