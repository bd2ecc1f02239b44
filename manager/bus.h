/*
 * bus.h - the manager's MQTT connection (MQTT 5, QoS 1, persistent session)
 * running on the libuv loop. The rest of the manager publishes and receives
 * through this interface and never sees a mosquitto pointer.
 */
#ifndef CFM_BUS_H
#define CFM_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

struct cfm_bus;

/* A message to publish or a message received; all pointers borrowed. */
struct cfm_bus_msg {
    const char *topic;
    const void *payload;
    size_t len;
    int qos;
    bool retain;
    uint32_t expiry_s;          /* MQTT 5 message expiry; 0 = none */
    const char *response_topic; /* MQTT 5 request/response, or NULL */
    const void *correlation;    /* MQTT 5 correlation data, or NULL */
    size_t correlation_len;
};

struct cfm_bus_callbacks {
    void *arg;
    /* The connection came up (CONNACK success, subscriptions renewed) or went down. */
    void (*on_connection)(void *arg, bool up);
    /* A message arrived on a subscribed topic. */
    void (*on_message)(void *arg, const struct cfm_bus_msg *msg);
    /* The broker acknowledged the QoS 1 publish mid; ok is false when the
     * broker refused it (MQTT 5 reason code >= 0x80, e.g. not authorized). */
    void (*on_ack)(void *arg, int mid, bool ok);
    /* Optional: called with begin true before the bus reads what a wake-up
     * brought (one on_message per message read), and with false after. */
    void (*on_read)(void *arg, bool begin);
};

struct cfm_bus_opts {
    const char *client_id;      /* also the persistent session's key */
    const char *host;
    int port;
    const char *username;       /* NULL: anonymous */
    const char *password;
    int keepalive_s;            /* >= 5 */
    uint32_t session_expiry_s;  /* how long the broker keeps our session */
    const char *will_topic;     /* NULL: no Last Will */
    const char *will_payload;   /* retained, QoS 1 */
};

/* Creates the client and starts connecting on loop (retrying with backoff
 * from 100 ms up to 5 s while the broker is unreachable). opts and cb are
 * copied. On success *out is the bus; release it with cfm_bus_close(). */
enum cfm_err cfm_bus_start(uv_loop_t *loop, const struct cfm_bus_opts *opts,
                           const struct cfm_bus_callbacks *cb, struct cfm_bus **out,
                           struct cfm_why *why);

/* Subscribes to pattern at QoS 1 now (if connected) and after every
 * reconnect. Subscribing twice to one pattern is a no-op. */
enum cfm_err cfm_bus_subscribe(struct cfm_bus *bus, const char *pattern);

/* The same, with MQTT 5 "no local": messages this client published itself
 * are not sent back to it on this subscription. */
enum cfm_err cfm_bus_subscribe_no_local(struct cfm_bus *bus, const char *pattern);

/* True when pattern is among the subscriptions. */
bool cfm_bus_subscribed(const struct cfm_bus *bus, const char *pattern);

/* Forgets and unsubscribes pattern. */
enum cfm_err cfm_bus_unsubscribe(struct cfm_bus *bus, const char *pattern);

/* Publishes msg (borrowed; copied by libmosquitto). For QoS 1, *mid (may be
 * NULL) receives the id later passed to on_ack. While disconnected a QoS 1
 * message is queued by the client and sent after reconnecting; CFM_EBUS
 * means it was not accepted at all and must be retried by the caller. */
enum cfm_err cfm_bus_publish(struct cfm_bus *bus, const struct cfm_bus_msg *msg, int *mid);

/* True between CONNACK and the loss of the connection. */
bool cfm_bus_connected(const struct cfm_bus *bus);

/* Sends DISCONNECT if connected (so the broker does not publish the Will),
 * stops every handle and frees the bus once libuv has closed them; NULL is
 * allowed. No callback is made after this call. */
void cfm_bus_close(struct cfm_bus *bus);

#endif
