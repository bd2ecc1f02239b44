/*
 * raw_hops.c - cfm-bench-raw hops: watches the ping/pong events of two cfm
 * procedures (payload {"n": i}) on a broker and prints the figures of
 * pingpong for them, from the arrival times of ping i, pong i and ping
 * i+1: event_hop's measurement of cfm.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

struct hops {
    size_t prefix_len;
    long count;
    double *ping_at, *pong_at;  /* index n, 1..count; 0 = not seen */
    long pongs;
    int ping_size;              /* bytes of the first ping seen */
    bool done;
};

static struct hops hw;

/* The number of "n" inside the event's "payload" object, or -1. */
static long event_n(const char *text)
{
    const char *p = strstr(text, "\"payload\"");

    if (!p || !(p = strstr(p, "\"n\"")))
        return -1;
    p += 3;
    while (*p == ' ' || *p == ':')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    return strtol(p, NULL, 10);
}

static void on_hops_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                            const mosquitto_property *p)
{
    double at = raw_now_s();
    const char *type = msg->topic + hw.prefix_len;
    char *text;
    long n;

    (void)m;
    (void)arg;
    (void)p;
    if (msg->retain || strlen(msg->topic) <= hw.prefix_len)
        return;
    text = raw_payload_text(msg);
    n = event_n(text);
    free(text);
    if (n < 1 || n > hw.count)
        return;
    raw_lock();
    if (strcmp(type, "/ping") == 0 && !hw.ping_at[n]) {
        hw.ping_at[n] = at;
        if (!hw.ping_size)
            hw.ping_size = msg->payloadlen;
    } else if (strcmp(type, "/pong") == 0 && !hw.pong_at[n]) {
        hw.pong_at[n] = at;
        if (++hw.pongs == hw.count) {
            hw.done = true;
            raw_notify();
        }
    }
    raw_unlock();
}

/* --samples FILE: one line per counted round trip, in order: n, when its
 * ping arrived (ms after the first counted ping), A to B and B to A (us):
 * where a tail sits in time (every 100th round trip, or a stall). */
static void write_samples(const char *path, long skip, const double *cycle, const double *ab,
                          const double *ba, long m)
{
    FILE *f = fopen(path, "w");

    if (!f)
        raw_die("--samples %s: %s", path, strerror(errno));
    fputs("# n at_ms rtt_us ab_us ba_us\n", f);
    for (long i = 0; i < m; i++)
        fprintf(f, "%ld %.3f %.1f %.1f %.1f\n", skip + 1 + i,
                (hw.ping_at[skip + 1 + i] - hw.ping_at[skip + 1]) * 1e3, cycle[i], ab[i], ba[i]);
    if (fclose(f) != 0)
        raw_die("--samples %s: %s", path, strerror(errno));
}

int raw_hops(int argc, char **argv)
{
    struct raw_client w = {0};
    const char *prefix = NULL, *ready = NULL, *samples = NULL;
    double timeout_s = 120, deadline, *cycle, *half, *ab, *ba;
    long skip = 0, m = 0;
    char topic[MAX_TOPIC];
    int port = 0;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_TEXT("--prefix", &prefix),
        RAW_OPT_LONG("--count", &hw.count, 3, MAX_COUNT),
        RAW_OPT_LONG("--skip", &skip, 0, MAX_COUNT),
        RAW_OPT_TEXT("--ready", &ready),
        RAW_OPT_TEXT("--samples", &samples),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("hops", argc, argv, opts, NULL);
    if (!port || !prefix || !hw.count)
        raw_die("hops needs --port, --prefix and --count\n%s", raw_usage);
    if (skip > hw.count - 3)
        raw_die("--skip must leave at least 2 round trips of --count");
    raw_check_prefix(prefix);
    hw.prefix_len = strlen(prefix);
    hw.ping_at = calloc((size_t)hw.count + 1, sizeof *hw.ping_at);
    hw.pong_at = calloc((size_t)hw.count + 1, sizeof *hw.pong_at);
    cycle = calloc((size_t)hw.count, sizeof *cycle);
    half = calloc((size_t)hw.count, sizeof *half);
    ab = calloc((size_t)hw.count, sizeof *ab);
    ba = calloc((size_t)hw.count, sizeof *ba);
    if (!hw.ping_at || !hw.pong_at || !cycle || !half || !ab || !ba)
        raw_die("out of memory");

    raw_client_start(&w, "hops", port);
    mosquitto_message_v5_callback_set(w.mosq, on_hops_message);
    snprintf(topic, sizeof topic, "%s/+", prefix);
    raw_client_subscribe(&w, topic, 0);
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (!f || fputs("ready\n", f) == EOF || fclose(f) != 0)
            raw_die("--ready %s: %s", ready, strerror(errno));
    }
    deadline = raw_now_s() + timeout_s;
    raw_lock();
    if (!raw_wait_flag(&hw.done, deadline))
        raw_die("hops: %ld of %ld pongs within %g s", hw.pongs, hw.count, timeout_s);
    /* Round trip i: ping i -> pong i (A to B) -> ping i+1 (B to A). */
    for (long n = skip + 1; n < hw.count; n++) {
        if (!hw.ping_at[n] || !hw.ping_at[n + 1])
            raw_die("hops: ping %ld or %ld was not seen", n, n + 1);
        cycle[m] = (hw.ping_at[n + 1] - hw.ping_at[n]) * 1e6;
        half[m] = cycle[m] / 2;
        ab[m] = (hw.pong_at[n] - hw.ping_at[n]) * 1e6;
        ba[m] = (hw.ping_at[n + 1] - hw.pong_at[n]) * 1e6;
        m++;
    }
    raw_unlock();
    if (samples)
        write_samples(samples, skip, cycle, ab, ba, m);
    printf("hops: count=%ld size=%d", m, hw.ping_size);
    raw_print_pcts("rtt", cycle, m);
    raw_print_pcts("hop", half, m);
    raw_print_pcts("ab", ab, m);
    raw_print_pcts("ba", ba, m);
    printf(" seconds=%.3f\n", (hw.ping_at[hw.count] - hw.ping_at[skip + 1]));
    fflush(stdout);
    raw_client_stop(&w);
    free(hw.ping_at);
    free(hw.pong_at);
    free(cycle);
    free(half);
    free(ab);
    free(ba);
    return 0;
}
