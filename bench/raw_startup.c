/*
 * raw_startup.c - cfm-bench-raw startup: subscribes to a topic, then
 * starts a command RUNS times and prints how long each took from fork()
 * until a fresh (not retained) message containing MATCH arrived on the
 * topic, in milliseconds: the start of a manager, and of the plain client
 * (cfm-bench-raw pub) that is its baseline.
 */
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

#define MAX_RUNS 100

struct watch {
    struct raw_client c;     /* first: the callbacks' arg */
    const char *match;
    double armed_at;         /* 0 = not waiting */
    double hit_at;
    bool hit;
};

/* A fresh message containing the match, while armed. */
static void on_startup_message(struct mosquitto *m, void *arg,
                               const struct mosquitto_message *msg, const mosquitto_property *p)
{
    struct watch *w = arg;
    double at = raw_now_s();
    char *text;

    (void)m;
    (void)p;
    if (msg->retain || msg->payloadlen <= 0)
        return; /* retained: published before we asked */
    text = raw_payload_text(msg);
    raw_lock();
    if (w->armed_at > 0 && !w->hit && strstr(text, w->match)) {
        w->hit = true;
        w->hit_at = at;
        raw_notify();
    }
    raw_unlock();
    free(text);
}

int raw_startup(int argc, char **argv)
{
    struct watch sub = {0};
    const char *topic = NULL, *match = NULL, *log = NULL;
    double timeout_s = 10, samples[MAX_RUNS];
    int port = 0, runs = 5;
    char **cmd;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_TEXT("--topic", &topic),
        RAW_OPT_TEXT("--match", &match),
        RAW_OPT_INT("--runs", &runs, 1, MAX_RUNS),
        RAW_OPT_TEXT("--log", &log),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("startup", argc, argv, opts, &cmd);
    if (!port || !topic || !match || !cmd || !cmd[0])
        raw_die("startup needs --port, --topic, --match and -- COMMAND\n%s", raw_usage);

    sub.match = match;
    raw_client_start(&sub.c, "watch", port);
    mosquitto_message_v5_callback_set(sub.c.mosq, on_startup_message);
    raw_client_subscribe(&sub.c, topic, 1);
    for (int r = 0; r < runs; r++) {
        pid_t pid;
        bool ok;

        raw_lock();
        sub.hit = false;
        sub.armed_at = raw_now_s();
        raw_unlock();
        pid = raw_spawn(cmd, NULL, log, NULL);
        raw_lock();
        ok = raw_wait_flag(&sub.hit, sub.armed_at + timeout_s);
        samples[r] = (sub.hit_at - sub.armed_at) * 1000;
        sub.armed_at = 0;
        raw_unlock();
        raw_stop_child(pid);
        if (!ok) {
            raw_client_stop(&sub.c);
            raw_die("startup: no fresh message containing '%s' on %s within %g s of starting %s",
                    match, topic, timeout_s, cmd[0]);
        }
    }
    raw_client_stop(&sub.c);
    raw_print_samples("startup", "runs", "ms", 1, samples, runs);
    return 0;
}
