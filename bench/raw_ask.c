/*
 * raw_ask.c - cfm-bench-raw ask: for each key, optionally publishes a
 * "prepare" message and waits for a "ready" message, then publishes a
 * message and times until a matching answer arrives ({k} in texts stands
 * for the key). Prints the median and the samples in microseconds: how
 * long cfm takes to answer an event (waiting runs, DR's RTO).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raw_common.h"

#define MAX_MATCH 4
#define MAX_KEYS 1000

struct matcher {
    char filter[MAX_TOPIC];
    const char *templates[MAX_MATCH];
    char texts[MAX_MATCH][MAX_TOPIC];  /* the templates with the key put in */
    int n;
    bool armed, hit;
    double hit_at;
};

static struct matcher ask_ready, ask_expect;

/* Writes tmpl with every "{k}" replaced by key into out. */
static void put_key(char *out, size_t len, const char *tmpl, const char *key)
{
    size_t o = 0;

    for (const char *p = tmpl; *p && o + 1 < len;) {
        if (strncmp(p, "{k}", 3) == 0) {
            o += (size_t)snprintf(out + o, len - o, "%s", key);
            p += 3;
        } else {
            out[o++] = *p++;
        }
    }
    if (o >= len)
        raw_die("text too long: %s", tmpl);
    out[o] = '\0';
}

static void arm(struct matcher *mt, const char *key)
{
    for (int i = 0; i < mt->n; i++)
        put_key(mt->texts[i], sizeof mt->texts[i], mt->templates[i], key);
    mt->hit = false;
    mt->armed = true;
}

static void try_match(struct matcher *mt, const struct mosquitto_message *msg, const char *text,
                      double at)
{
    bool ok = false;

    if (!mt->armed || mt->hit || !mt->filter[0])
        return;
    if (mosquitto_topic_matches_sub(mt->filter, msg->topic, &ok) != MOSQ_ERR_SUCCESS || !ok)
        return;
    for (int i = 0; i < mt->n; i++)
        if (!strstr(text, mt->texts[i]))
            return;
    mt->hit = true;
    mt->hit_at = at;
    mt->armed = false;
    raw_notify();
}

static void on_ask_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                           const mosquitto_property *p)
{
    double at = raw_now_s();
    char *text = raw_payload_text(msg);

    (void)m;
    (void)arg;
    (void)p;
    raw_lock();
    try_match(&ask_ready, msg, text, at);
    try_match(&ask_expect, msg, text, at);
    raw_unlock();
    free(text);
}

static void publish_text(struct raw_client *c, const char *topic, const char *text)
{
    int rc = mosquitto_publish_v5(c->mosq, NULL, topic, (int)strlen(text), text, 1, false, NULL);

    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("publish %s: %s", topic, mosquitto_strerror(rc));
}

int raw_ask(int argc, char **argv)
{
    struct raw_client c = {0};
    const char *send_topic = NULL, *send = NULL, *prep_topic = NULL, *prep = NULL;
    const char *keys_arg = NULL, *expect_topic = NULL, *ready_topic = NULL;
    char *keys[MAX_KEYS], *list = NULL, text[4096], topic[MAX_TOPIC];
    double timeout_s = 30, samples[MAX_KEYS];
    long gap_ms = 0;
    int port = 0, nkeys = 0;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_TEXT("--keys", &keys_arg),
        RAW_OPT_TEXT("--send-topic", &send_topic),
        RAW_OPT_TEXT("--send", &send),
        RAW_OPT_TEXT("--expect-topic", &expect_topic),
        RAW_OPT_TEXTS("--expect", ask_expect.templates, &ask_expect.n, MAX_MATCH,
                      "--expect texts"),
        RAW_OPT_TEXTS("--ready", ask_ready.templates, &ask_ready.n, MAX_MATCH, "--ready texts"),
        RAW_OPT_TEXT("--prepare-topic", &prep_topic),
        RAW_OPT_TEXT("--prepare", &prep),
        RAW_OPT_TEXT("--ready-topic", &ready_topic),
        RAW_OPT_LONG("--gap-ms", &gap_ms, 0, 60000),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("ask", argc, argv, opts, NULL);
    if (keys_arg && !(list = strdup(keys_arg)))
        raw_die("out of memory");
    if (expect_topic)
        snprintf(ask_expect.filter, sizeof ask_expect.filter, "%s", expect_topic);
    if (ready_topic)
        snprintf(ask_ready.filter, sizeof ask_ready.filter, "%s", ready_topic);
    if (!port || !list || !send_topic || !send || !ask_expect.filter[0] || !ask_expect.n)
        raw_die("ask needs --port, --keys, --send-topic, --send, --expect-topic and --expect\n%s",
                raw_usage);
    if (!prep != !prep_topic || (prep && (!ask_ready.filter[0] || !ask_ready.n)))
        raw_die("--prepare needs --prepare-topic, --ready-topic and --ready\n%s", raw_usage);
    for (char *save = NULL, *k = strtok_r(list, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        if (nkeys == MAX_KEYS)
            raw_die("at most %d keys", MAX_KEYS);
        keys[nkeys++] = k;
    }
    if (!nkeys)
        raw_die("--keys: none given");

    raw_client_start(&c, "ask", port);
    mosquitto_message_v5_callback_set(c.mosq, on_ask_message);
    raw_client_subscribe(&c, ask_expect.filter, 1);
    if (prep) {
        raw_lock();
        c.subscribed = false; /* the next SUBACK is the second subscription's */
        raw_unlock();
        raw_client_subscribe(&c, ask_ready.filter, 1);
    }
    for (int k = 0; k < nkeys; k++) {
        struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
        double t0;
        if (prep) {
            raw_lock();
            arm(&ask_ready, keys[k]);
            raw_unlock();
            put_key(topic, sizeof topic, prep_topic, keys[k]);
            put_key(text, sizeof text, prep, keys[k]);
            publish_text(&c, topic, text);
            raw_lock();
            if (!raw_wait_flag(&ask_ready.hit, raw_now_s() + timeout_s))
                raw_die("ask: key %s: no ready message on %s within %g s", keys[k],
                        ask_ready.filter, timeout_s);
            raw_unlock();
        }
        if (gap_ms)
            nanosleep(&gap, NULL);
        put_key(topic, sizeof topic, send_topic, keys[k]);
        put_key(text, sizeof text, send, keys[k]);
        raw_lock();
        arm(&ask_expect, keys[k]);
        raw_unlock();
        t0 = raw_now_s();
        publish_text(&c, topic, text);
        raw_lock();
        if (!raw_wait_flag(&ask_expect.hit, t0 + timeout_s))
            raw_die("ask: key %s: no answer on %s within %g s", keys[k], ask_expect.filter,
                    timeout_s);
        samples[k] = (ask_expect.hit_at - t0) * 1e6;
        raw_unlock();
    }
    raw_client_stop(&c);
    raw_print_samples("ask", "count", "us", 0, samples, nkeys);
    free(list);
    return 0;
}
