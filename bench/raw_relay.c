/*
 * raw_relay.c - cfm-bench-raw relay: a publisher on one broker sends COUNT
 * QoS 1 retained messages of SIZE bytes; subscribers on other (bridged)
 * brokers count them. Prints the time from the first publish until every
 * subscriber holds all of them: the baseline of replicate.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "raw_common.h"

#define MAX_SUBS 8

struct relay_sub {
    struct raw_client c;     /* first: the callbacks' arg */
    const char *prefix;
    size_t prefix_len;
    unsigned char *seen;     /* one byte per message index: duplicates count once */
    long count, want;
    bool done;
    double done_at;
};

/* Counts each message index once. */
static void on_relay_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                             const mosquitto_property *p)
{
    struct relay_sub *s = arg;
    const char *tail;
    char *end;
    long i;

    (void)m;
    (void)p;
    if (strncmp(msg->topic, s->prefix, s->prefix_len) != 0 || msg->topic[s->prefix_len] != '/')
        return;
    tail = msg->topic + s->prefix_len + 1;
    errno = 0;
    i = strtol(tail, &end, 10);
    if (errno || end == tail || *end || i < 0 || i >= s->want)
        return;
    raw_lock();
    if (!s->seen[i]) {
        s->seen[i] = 1;
        if (++s->count == s->want) {
            s->done = true;
            s->done_at = raw_now_s();
            raw_notify();
        }
    }
    raw_unlock();
}

int raw_relay(int argc, char **argv)
{
    struct raw_client pub = {0};
    struct relay_sub subs[MAX_SUBS] = {0};
    int pub_port = 0, sub_ports[MAX_SUBS], nsubs = 0;
    long count = 0, size = 0;
    const char *prefix = NULL;
    double timeout_s = 60, t0, deadline, last = 0;
    char topic[MAX_TOPIC], *payload;
    bool all;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--pub", &pub_port),
        RAW_OPT_PORTS("--sub", sub_ports, &nsubs, MAX_SUBS, "subscribers"),
        RAW_OPT_LONG("--count", &count, 1, MAX_COUNT),
        RAW_OPT_LONG("--size", &size, 1, MAX_SIZE),
        RAW_OPT_TEXT("--prefix", &prefix),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("relay", argc, argv, opts, NULL);
    if (!pub_port || !nsubs || !count || !size || !prefix)
        raw_die("relay needs --pub, --sub, --count, --size and --prefix\n%s", raw_usage);
    raw_check_prefix(prefix);

    payload = malloc((size_t)size);
    if (!payload)
        raw_die("out of memory");
    memset(payload, 'x', (size_t)size);
    for (int s = 0; s < nsubs; s++) {
        char name[16];
        subs[s].prefix = prefix;
        subs[s].prefix_len = strlen(prefix);
        subs[s].want = count;
        subs[s].seen = calloc((size_t)count, 1);
        if (!subs[s].seen)
            raw_die("out of memory");
        snprintf(name, sizeof name, "sub%d", s + 1);
        raw_client_start(&subs[s].c, name, sub_ports[s]);
        mosquitto_message_v5_callback_set(subs[s].c.mosq, on_relay_message);
        snprintf(topic, sizeof topic, "%s/#", prefix);
        raw_client_subscribe(&subs[s].c, topic, 1);
    }
    raw_client_start(&pub, "pub", pub_port);

    /* Everything queued at once, as a manager does after committing a load:
     * libmosquitto sends as many as the broker's receive maximum allows. */
    t0 = raw_now_s();
    for (long i = 0; i < count; i++) {
        int rc;
        snprintf(topic, sizeof topic, "%s/%ld", prefix, i);
        rc = mosquitto_publish_v5(pub.mosq, NULL, topic, (int)size, payload, 1, true, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            raw_die("publish %s: %s", topic, mosquitto_strerror(rc));
    }
    deadline = t0 + timeout_s;
    raw_lock();
    for (;;) {
        all = true;
        for (int s = 0; s < nsubs; s++)
            all = all && subs[s].done;
        if (all || raw_now_s() >= deadline)
            break;
        raw_wait_change(deadline);
    }
    raw_unlock();
    if (!all) {
        for (int s = 0; s < nsubs; s++)
            fprintf(stderr, "cfm-bench-raw: sub%d (port %d) has %ld of %ld\n", s + 1,
                    sub_ports[s], subs[s].count, count);
        raw_die("relay: not every subscriber had all %ld messages within %g s", count,
                timeout_s);
    }
    printf("relay: count=%ld size=%ld", count, size);
    for (int s = 0; s < nsubs; s++) {
        printf(" sub%d=%.3f", s + 1, subs[s].done_at - t0);
        if (subs[s].done_at > last)
            last = subs[s].done_at;
    }
    {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru); /* every client thread of this process */
        printf(" clients_cpu=%.2f",
               (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    }
    printf(" seconds=%.3f\n", last - t0);
    fflush(stdout);
    raw_client_stop(&pub);
    for (int s = 0; s < nsubs; s++) {
        raw_client_stop(&subs[s].c);
        free(subs[s].seen);
    }
    free(payload);
    return 0;
}
