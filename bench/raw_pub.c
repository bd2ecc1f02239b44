/*
 * raw_pub.c - cfm-bench-raw pub: connects, publishes one retained QoS 1
 * message, waits for the PUBACK and exits: the "plain client" that startup
 * times as the baseline of a manager's start. It runs libmosquitto's loop
 * itself, without a network thread.
 */
#include <string.h>

#include "raw_common.h"

struct one_pub {
    int mid;
    int connect_rc;     /* -1 until the CONNACK */
    bool acked;
};

static void on_pub_connect(struct mosquitto *m, void *arg, int rc, int flags,
                           const mosquitto_property *p)
{
    (void)m;
    (void)flags;
    (void)p;
    ((struct one_pub *)arg)->connect_rc = rc;
}

static void on_pub_publish(struct mosquitto *m, void *arg, int mid, int reason,
                           const mosquitto_property *p)
{
    struct one_pub *o = arg;

    (void)m;
    (void)p;
    if (mid == o->mid && reason < 0x80)
        o->acked = true;
}

int raw_pub(int argc, char **argv)
{
    struct one_pub o = {.connect_rc = -1};
    const char *topic = NULL, *message = NULL;
    double deadline = raw_now_s() + CONNECT_TIMEOUT_S;
    struct mosquitto *mosq;
    int port = 0, rc;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_TEXT("--topic", &topic),
        RAW_OPT_TEXT("--message", &message),
        {0},
    };

    raw_parse_opts("pub", argc, argv, opts, NULL);
    if (!port || !topic || !message)
        raw_die("pub needs --port, --topic and --message\n%s", raw_usage);
    mosq = raw_mosq_new("pub", &o);
    mosquitto_connect_v5_callback_set(mosq, on_pub_connect);
    mosquitto_publish_v5_callback_set(mosq, on_pub_publish);
    rc = mosquitto_connect_bind_v5(mosq, "127.0.0.1", port, KEEPALIVE_S, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("pub: cannot connect to 127.0.0.1:%d: %s", port, mosquitto_strerror(rc));
    while (o.connect_rc < 0 && raw_now_s() < deadline)
        if ((rc = mosquitto_loop(mosq, 100, 1)) != MOSQ_ERR_SUCCESS)
            raw_die("pub: lost the broker: %s", mosquitto_strerror(rc));
    if (o.connect_rc != 0)
        raw_die("pub: no CONNACK, or refused");
    rc = mosquitto_publish_v5(mosq, &o.mid, topic, (int)strlen(message), message, 1, true, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        raw_die("pub: publish %s: %s", topic, mosquitto_strerror(rc));
    while (!o.acked && raw_now_s() < deadline)
        if ((rc = mosquitto_loop(mosq, 100, 1)) != MOSQ_ERR_SUCCESS)
            raw_die("pub: lost the broker: %s", mosquitto_strerror(rc));
    if (!o.acked)
        raw_die("pub: no PUBACK within %g s", CONNECT_TIMEOUT_S);
    mosquitto_disconnect_v5(mosq, 0, NULL);
    mosquitto_destroy(mosq);
    return 0;
}
