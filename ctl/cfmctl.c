/*
 * cfmctl.c - the operator's CLI. It talks to managers over MQTT only: a
 * request on cfm/v1/site/<site>/ctl/req with an MQTT 5 response topic of
 * its own and random correlation data, then the matching answer. Events are
 * published directly (QoS 1, waiting for the broker's PUBACK).
 *
 * A short-lived client, so it runs libmosquitto's own blocking loop with a
 * deadline rather than an event loop. Exit status: 0 success, 1 failure
 * (with a one-line reason), 2 usage error.
 */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounds.h"
#include "cfgutil.h"
#include "engine.h"
#include "event.h"
#include "id.h"
#include "kind.h"
#include "sysdesc.h"
#include "topic.h"
#include "util.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define MAX_RESPONSE (64u << 20)

static const char usage[] =
    "usage: cfmctl [-b HOST:PORT] [-s SITE] [-t SECONDS] [-u USER -P PASSWORD_FILE] [--json]\n"
    "              COMMAND\n"
    "commands:\n"
    "  system load FILE              load (create or update) a system description\n"
    "  system list                   list the systems the site holds\n"
    "  system show ID                show a system and its objects\n"
    "  objects list [--system ID] [--kind KIND] [--deleted]\n"
    "  sites list                    sites of the federation, online or offline\n"
    "  event publish SYSTEM TYPE [PAYLOAD-JSON]\n"
    "  event wait SYSTEM TYPE [--timeout S]   print the next such event\n"
    "  runs list [--system ID]       procedure runs of every site\n"
    "  runs show RUN                 one run, with its log\n"
    "  runs wait RUN [--timeout S]   until the run ends; exit 0 if it succeeded\n"
    "  runs cancel RUN               cancel a run, at whichever site runs it\n"
    "  runs resume RUN [--force]     replay a run stopped because its procedure changed\n"
    "                                (--force: against the new text)\n"
    "  procedure check FILE          compile a procedure without loading a system\n"
    "  vms list [--site S] [--system ID]   VMs of every site (from the replicated model)\n"
    "  ping                          ask the site's manager whether it is there\n"
    "defaults: -b $CFM_BROKER or 127.0.0.1:1883, -s $CFM_SITE, -t 5\n";

struct ctl {
    char host[256];
    int port;
    const char *site;
    const char *user;
    char password[257];
    double timeout_s;
    bool json;

    struct mosquitto *mosq;
    char client_id[48];
    char res_topic[CFM_MAX_TOPIC + 1];
    unsigned char corr[16];
    bool connected, subscribed, acked, answered;
    /* watch(): messages on a subscribed pattern go to on_watch until it returns true */
    bool (*on_watch)(struct ctl *c, const struct mosquitto_message *msg);
    bool watched;
    int connect_rc;
    int pub_mid;
    char *answer;
    size_t answer_len;
};

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("cfmctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- MQTT ------------------------------------------------------------ */

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
                       const mosquitto_property *p)
{
    struct ctl *c = arg;

    (void)m;
    (void)flags;
    (void)p;
    c->connect_rc = rc;
    c->connected = rc == 0;
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *qos,
                         const mosquitto_property *p)
{
    struct ctl *c = arg;

    (void)m;
    (void)mid;
    (void)p;
    c->subscribed = n > 0 && qos[0] < 0x80;
    if (!c->subscribed)
        die(EXIT_FAIL, "the broker refused the subscription to %s (ACL?)", c->res_topic);
}

static void on_publish(struct mosquitto *m, void *arg, int mid, int reason,
                       const mosquitto_property *p)
{
    struct ctl *c = arg;

    (void)m;
    (void)p;
    if (mid != c->pub_mid)
        return;
    if (reason >= 0x80)
        die(EXIT_FAIL, "the broker refused the message: %s", mosquitto_reason_string(reason));
    c->acked = true;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
    struct ctl *c = arg;
    void *corr = NULL;
    uint16_t corr_len = 0;

    (void)m;
    if (c->on_watch && !c->watched && mosquitto_topic_matches_sub2(
                                          c->res_topic, strlen(c->res_topic), msg->topic,
                                          strlen(msg->topic), &c->watched) == MOSQ_ERR_SUCCESS &&
        c->watched) {
        c->watched = c->on_watch(c, msg);
        return;
    }
    mosquitto_property_read_binary(p, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    if (corr && corr_len == sizeof c->corr && memcmp(corr, c->corr, sizeof c->corr) == 0 &&
        !c->answered && (size_t)msg->payloadlen <= MAX_RESPONSE) {
        c->answer = malloc((size_t)msg->payloadlen + 1);
        if (!c->answer)
            die(EXIT_FAIL, "out of memory");
        memcpy(c->answer, msg->payload, (size_t)msg->payloadlen);
        c->answer[msg->payloadlen] = '\0';
        c->answer_len = (size_t)msg->payloadlen;
        c->answered = true;
    }
    free(corr);
}

/* Runs the client loop until *flag is set or the deadline passes. */
static bool run_until(struct ctl *c, const bool *flag, double deadline)
{
    while (!*flag) {
        double left = deadline - now_s();
        if (left <= 0)
            return false;
        int rc = mosquitto_loop(c->mosq, left > 0.1 ? 100 : (int)(left * 1000) + 1, 1);
        if (rc != MOSQ_ERR_SUCCESS && !*flag)
            die(EXIT_FAIL, "lost the broker %s:%d: %s", c->host, c->port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    }
    return true;
}

static void connect_broker(struct ctl *c, double deadline)
{
    unsigned char r[6];
    int rc;

    if (RAND_bytes(r, sizeof r) != 1 || RAND_bytes(c->corr, sizeof c->corr) != 1)
        die(EXIT_FAIL, "no randomness available");
    snprintf(c->client_id, sizeof c->client_id, "cfmctl-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5]);
    c->mosq = mosquitto_new(c->client_id, true, c);
    if (!c->mosq)
        die(EXIT_FAIL, "cannot create an MQTT client");
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (c->user)
        mosquitto_username_pw_set(c->mosq, c->user, c->password[0] ? c->password : NULL);
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
    mosquitto_publish_v5_callback_set(c->mosq, on_publish);
    mosquitto_message_v5_callback_set(c->mosq, on_message);
    rc = mosquitto_connect_bind_v5(c->mosq, c->host, c->port, 30, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        die(EXIT_FAIL, "cannot connect to the broker %s:%d: %s", c->host, c->port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    c->connect_rc = -1; /* on_connect sets the CONNACK reason code (>= 0) */
    while (c->connect_rc < 0) {
        if (now_s() >= deadline)
            die(EXIT_FAIL, "the broker %s:%d did not answer within %g s", c->host, c->port,
                c->timeout_s);
        rc = mosquitto_loop(c->mosq, 100, 1);
        if (rc != MOSQ_ERR_SUCCESS && c->connect_rc < 0)
            die(EXIT_FAIL, "the broker %s:%d closed the connection: %s", c->host, c->port,
                mosquitto_strerror(rc));
    }
    if (!c->connected)
        die(EXIT_FAIL, "the broker %s:%d refused the connection: %s", c->host, c->port,
            mosquitto_reason_string(c->connect_rc));
}

static void publish(struct ctl *c, const char *topic, const char *payload, bool with_response)
{
    mosquitto_property *props = NULL;
    int rc;

    if (with_response) {
        mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, c->res_topic);
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, c->corr,
                                      sizeof c->corr);
    }
    rc = mosquitto_publish_v5(c->mosq, &c->pub_mid, topic, (int)strlen(payload), payload, 1,
                              false, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS)
        die(EXIT_FAIL, "cannot publish on %s: %s", topic, mosquitto_strerror(rc));
}

/* Sends {"op": op, "args": args} (args stolen) to the site's manager and
 * returns the result (new reference); dies with the manager's error. */
static json_t *request(struct ctl *c, const char *op, json_t *args)
{
    double deadline = now_s() + c->timeout_s;
    char topic[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};
    json_error_t jerr;
    json_t *req, *res, *result;
    char *text;

    if (!c->site)
        die(EXIT_USAGE, "no site given: use -s SITE or set CFM_SITE");
    if (cfm_topic_build(topic, sizeof topic, CFM_TOPIC_CTL_REQ, c->site, NULL, NULL, &why) !=
        CFM_OK)
        die(EXIT_USAGE, "-s: %s", why.text);
    req = json_pack("{s:s, s:o}", "op", op, "args", args ? args : json_object());
    text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        die(EXIT_FAIL, "out of memory");
    if (strlen(text) > CFM_MAX_PAYLOAD)
        die(EXIT_FAIL, "the request is %zu bytes; the limit is %u", strlen(text),
            CFM_MAX_PAYLOAD);

    connect_broker(c, deadline);
    cfm_topic_build(c->res_topic, sizeof c->res_topic, CFM_TOPIC_CTL_RES, c->client_id, NULL,
                    NULL, NULL);
    if (mosquitto_subscribe_v5(c->mosq, NULL, c->res_topic, 1, 0, NULL) != MOSQ_ERR_SUCCESS ||
        !run_until(c, &c->subscribed, deadline))
        die(EXIT_FAIL, "the broker did not confirm the subscription to %s", c->res_topic);
    publish(c, topic, text, true);
    free(text);
    if (!run_until(c, &c->answered, deadline))
        die(EXIT_FAIL, "no manager answered for site %s within %g s", c->site, c->timeout_s);
    res = json_loadb(c->answer, c->answer_len, 0, &jerr);
    if (!res || !json_is_object(res))
        die(EXIT_FAIL, "the manager of %s sent a malformed answer", c->site);
    if (!json_is_true(json_object_get(res, "ok")))
        die(EXIT_FAIL, "%s", json_string_value(json_object_get(res, "error"))
                                 ? json_string_value(json_object_get(res, "error"))
                                 : "the request failed");
    result = json_incref(json_object_get(res, "result"));
    json_decref(res);
    return result;
}

/* --- output ----------------------------------------------------------- */

static void print_json(json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);

    if (text)
        puts(text);
    free(text);
}

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && *s ? s : "-";
}

static void print_objects(json_t *arr, bool with_system)
{
    size_t i;
    json_t *o;

    if (with_system)
        printf("%-12s ", "SYSTEM");
    printf("%-30s %-16s %8s %-12s %-24s%s\n", "KIND", "ID", "VERSION", "ORIGIN", "UPDATED", "");
    json_array_foreach(arr, i, o) {
        if (with_system)
            printf("%-12s ", str(o, "system"));
        printf("%-30s %-16s %8lld %-12s %-24s%s\n", str(o, "kind"), str(o, "id"),
               (long long)json_integer_value(json_object_get(o, "version")), str(o, "origin"),
               str(o, "updated"), json_is_true(json_object_get(o, "deleted")) ? " deleted" : "");
    }
}

static char *join_sites(json_t *sites, char *buf, size_t len)
{
    size_t i, used = 0;
    json_t *s;

    buf[0] = '\0';
    json_array_foreach(sites, i, s) {
        int n = snprintf(buf + used, len - used, "%s%s", i ? "," : "",
                         json_string_value(s) ? json_string_value(s) : "?");
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    return buf;
}

/* --- commands ---------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long size;

    if (!f)
        die(EXIT_FAIL, "%s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        die(EXIT_FAIL, "%s: cannot read its size", path);
    if ((unsigned long)size > CFM_MAX_PAYLOAD)
        die(EXIT_FAIL, "%s: %ld bytes; the limit is %u", path, size, CFM_MAX_PAYLOAD);
    buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size)
        die(EXIT_FAIL, "%s: cannot read it", path);
    fclose(f);
    buf[size] = '\0';
    *len = (size_t)size;
    return buf;
}

static int cmd_system_load(struct ctl *c, const char *path)
{
    struct cfm_sysdesc *desc = NULL;
    struct cfm_why why = {{0}};
    size_t len;
    char *text = read_file(path, &len);
    json_t *res;

    /* Check here first: the answer names the position at once, without a round trip. */
    if (cfm_sysdesc_parse(text, len, &desc, &why) != CFM_OK)
        die(EXIT_FAIL, "%s: %s", path, why.text);
    cfm_sysdesc_free(desc);
    res = request(c, "system.load", json_pack("{s:s, s:s%}", "file", path, "text", text, len));
    free(text);
    if (c->json)
        print_json(res);
    else
        printf("loaded system %s at %s: %lld created, %lld updated, %lld deleted, %lld "
               "unchanged\n",
               str(res, "system"), c->site,
               (long long)json_integer_value(json_object_get(res, "created")),
               (long long)json_integer_value(json_object_get(res, "updated")),
               (long long)json_integer_value(json_object_get(res, "deleted")),
               (long long)json_integer_value(json_object_get(res, "unchanged")));
    json_decref(res);
    return 0;
}

static int cmd_system_list(struct ctl *c)
{
    json_t *res = request(c, "system.list", NULL);
    char sites[512];
    size_t i;
    json_t *o;

    if (c->json) {
        print_json(res);
    } else {
        printf("%-16s %-24s %-24s %-10s %8s %-10s %s\n", "ID", "NAME", "SITES", "PRIMARY",
               "VERSION", "ORIGIN", "HERE");
        json_array_foreach(res, i, o) {
            json_t *body = json_object_get(o, "body");
            printf("%-16s %-24s %-24s %-10s %8lld %-10s %s\n", str(o, "id"), str(body, "name"),
                   join_sites(json_object_get(body, "sites"), sites, sizeof sites),
                   str(body, "primary"),
                   (long long)json_integer_value(json_object_get(o, "version")),
                   str(o, "origin"),
                   json_is_false(json_object_get(o, "member")) ? "detached" : "member");
        }
    }
    json_decref(res);
    return 0;
}

static int cmd_system_show(struct ctl *c, const char *id)
{
    json_t *res = request(c, "system.show", json_pack("{s:s}", "id", id));
    json_t *sys = json_object_get(res, "system"), *body = json_object_get(sys, "body");
    char sites[512];

    if (c->json) {
        print_json(res);
    } else {
        printf("system   %s (%s)\n", str(sys, "id"), str(body, "name"));
        printf("sites    %s (primary %s, standby %s)\n",
               join_sites(json_object_get(body, "sites"), sites, sizeof sites),
               str(body, "primary"), str(body, "standby"));
        printf("version  %lld from %s at %s\n\n",
               (long long)json_integer_value(json_object_get(sys, "version")), str(sys, "origin"),
               str(sys, "updated"));
        print_objects(json_object_get(res, "objects"), false);
    }
    json_decref(res);
    return 0;
}

static int cmd_objects_list(struct ctl *c, int argc, char **argv)
{
    json_t *args = json_object(), *res;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--system") == 0 && i + 1 < argc)
            json_object_set_new(args, "system", json_string(argv[++i]));
        else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc)
            json_object_set_new(args, "kind", json_string(argv[++i]));
        else if (strcmp(argv[i], "--deleted") == 0)
            json_object_set_new(args, "deleted", json_true());
        else
            die(EXIT_USAGE, "objects list: unexpected '%s'\n%s", argv[i], usage);
    }
    res = request(c, "objects.list", args);
    if (c->json)
        print_json(res);
    else
        print_objects(res, true);
    json_decref(res);
    return 0;
}

static int cmd_vms_list(struct ctl *c, int argc, char **argv)
{
    json_t *args = json_pack("{s:s}", "kind", "VMInstance"), *res, *o;
    const char *site = NULL;
    int64_t now = cfm_time_ms();
    size_t i;

    for (int k = 0; k < argc; k++) {
        if (strcmp(argv[k], "--system") == 0 && k + 1 < argc)
            json_object_set_new(args, "system", json_string(argv[++k]));
        else if (strcmp(argv[k], "--site") == 0 && k + 1 < argc)
            site = argv[++k];
        else
            die(EXIT_USAGE, "vms list: unexpected '%s'\n%s", argv[k], usage);
    }
    res = request(c, "objects.list", args);
    if (c->json) {
        print_json(res);
        json_decref(res);
        return 0;
    }
    printf("%-14s %-10s %-8s %-11s %-8s %-10s %-15s %-15s %s\n", "VM", "SYSTEM", "SITE", "STATE",
           "CLASS", "ELEMENT", "PRIVATE-IP", "PUBLIC-IP", "AGE");
    json_array_foreach(res, i, o) {
        json_t *b = json_object_get(o, "body");
        int64_t created = 0;
        char age[32] = "-";
        if (site && strcmp(str(b, "site"), site) != 0)
            continue;
        if (cfm_time_parse(str(b, "created"), &created) == CFM_OK)
            snprintf(age, sizeof age, "%llds", (long long)((now - created) / 1000));
        printf("%-14s %-10s %-8s %-11s %-8s %-10s %-15s %-15s %s\n", str(o, "id"),
               str(o, "system"), str(b, "site"), str(b, "state"), str(b, "vm_class"),
               str(b, "element"), str(b, "private_ip"), str(b, "public_ip"), age);
    }
    json_decref(res);
    return 0;
}

static int cmd_sites_list(struct ctl *c)
{
    json_t *res = request(c, "sites.list", NULL);
    size_t i;
    json_t *o;

    if (c->json) {
        print_json(res);
    } else {
        printf("%-16s %-8s %-24s\n", "SITE", "STATE", "LAST-SEEN");
        json_array_foreach(res, i, o)
            printf("%-16s %-8s %-24s\n", str(o, "site"), str(o, "state"), str(o, "last_seen"));
    }
    json_decref(res);
    return 0;
}

static int cmd_ping(struct ctl *c)
{
    json_t *res = request(c, "ping", NULL);

    if (c->json)
        print_json(res);
    else
        printf("site %s answered\n", str(res, "site"));
    json_decref(res);
    return 0;
}

static int cmd_event_publish(struct ctl *c, const char *system, const char *type,
                             const char *payload_text)
{
    double deadline = now_s() + c->timeout_s;
    char topic[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};
    json_error_t jerr;
    json_t *payload = NULL, *ev;
    char *text;
    char origin[CFM_MAX_ID + 1];

    if (cfm_topic_build(topic, sizeof topic, CFM_TOPIC_EVENT, system, type, NULL, &why) != CFM_OK)
        die(EXIT_USAGE, "event publish: %s", why.text);
    if (payload_text) {
        payload = json_loads(payload_text, JSON_REJECT_DUPLICATES, &jerr);
        if (!payload)
            die(EXIT_USAGE, "event publish: payload is not JSON: column %d: %s", jerr.column,
                jerr.text);
        if (!json_is_object(payload))
            die(EXIT_USAGE, "event publish: payload must be a JSON object");
    }
    snprintf(origin, sizeof origin, "%s", c->site && cfm_id_valid(c->site) ? c->site : "cfmctl");
    ev = cfm_event_new(system, type, origin, payload);
    text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    if (!text)
        die(EXIT_FAIL, "out of memory");
    connect_broker(c, deadline);
    publish(c, topic, text, false);
    if (!run_until(c, &c->acked, deadline))
        die(EXIT_FAIL, "the broker did not acknowledge the event within %g s", c->timeout_s);
    if (c->json)
        print_json(ev);
    else
        printf("published event %s on %s (id %s)\n", type, system,
               json_string_value(json_object_get(ev, "id")));
    free(text);
    json_decref(ev);
    return 0;
}

/* Subscribes to pattern and runs the loop until c->on_watch accepts a
 * message or timeout_s passes; returns whether one was accepted. */
static bool watch(struct ctl *c, const char *pattern, double timeout_s,
                  bool (*fn)(struct ctl *, const struct mosquitto_message *))
{
    double deadline = now_s() + timeout_s;

    connect_broker(c, now_s() + c->timeout_s);
    snprintf(c->res_topic, sizeof c->res_topic, "%s", pattern);
    c->on_watch = fn;
    if (mosquitto_subscribe_v5(c->mosq, NULL, pattern, 1, 0, NULL) != MOSQ_ERR_SUCCESS)
        die(EXIT_FAIL, "cannot subscribe to %s", pattern);
    return run_until(c, &c->watched, deadline);
}

static double parse_timeout(int argc, char **argv, double dflt)
{
    for (int i = 0; i < argc; i++) {
        char *end;
        double t;
        if (strcmp(argv[i], "--timeout") != 0 || i + 1 == argc)
            die(EXIT_USAGE, "unexpected '%s'\n%s", argv[i], usage);
        t = strtod(argv[i + 1], &end);
        if (*end || !(t > 0 && t <= 86400))
            die(EXIT_USAGE, "--timeout: '%s' is not a number of seconds up to 86400",
                argv[i + 1]);
        return t;
    }
    return dflt;
}

static json_t *watched_json;

static bool accept_event(struct ctl *c, const struct mosquitto_message *msg)
{
    json_error_t jerr;

    (void)c;
    watched_json = json_loadb(msg->payload, (size_t)msg->payloadlen, 0, &jerr);
    return watched_json != NULL;
}

static int cmd_event_wait(struct ctl *c, const char *system, const char *type, double timeout)
{
    char topic[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};

    if (cfm_topic_build(topic, sizeof topic, CFM_TOPIC_EVENT, system, type, NULL, &why) != CFM_OK)
        die(EXIT_USAGE, "event wait: %s", why.text);
    if (!watch(c, topic, timeout, accept_event))
        die(EXIT_FAIL, "no %s event on %s within %g s", type, system, timeout);
    if (c->json)
        print_json(watched_json);
    else {
        char *payload = json_dumps(json_object_get(watched_json, "payload"), JSON_COMPACT);
        printf("event %s on %s (id %s, from %s): %s\n", type, system, str(watched_json, "id"),
               str(watched_json, "origin"), payload ? payload : "{}");
        free(payload);
    }
    json_decref(watched_json);
    return 0;
}

static bool run_ended(struct ctl *c, const struct mosquitto_message *msg)
{
    const char *state;

    (void)c;
    json_decref(watched_json);
    watched_json = json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL);
    state = json_string_value(json_object_get(watched_json, "state"));
    return state && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                     strcmp(state, "cancelled") == 0);
}

static int cmd_runs_wait(struct ctl *c, const char *id, double timeout)
{
    char pattern[CFM_MAX_TOPIC + 1];
    const char *state;
    int rc;

    if (!cfm_id_valid(id))
        die(EXIT_USAGE, "runs wait: '%s' is not a run id", id);
    snprintf(pattern, sizeof pattern, CFM_TOPIC_ROOT "/sys/+/run/%s", id);
    if (!watch(c, pattern, timeout, run_ended))
        die(EXIT_FAIL, "run %s did not end within %g s (last state: %s)", id, timeout,
            str(watched_json, "state"));
    state = str(watched_json, "state");
    rc = strcmp(state, "succeeded") == 0 ? 0 : EXIT_FAIL;
    if (c->json)
        print_json(watched_json);
    else if (rc == 0)
        printf("run %s succeeded in %lld ms\n", id,
               (long long)json_integer_value(json_object_get(watched_json, "duration_ms")));
    else
        fprintf(stderr, "cfmctl: run %s %s: %s\n", id, state, str(watched_json, "error"));
    json_decref(watched_json);
    return rc;
}

static void print_runs(json_t *arr)
{
    size_t i;
    json_t *o;

    printf("%-28s %-10s %-14s %-10s %-10s %-24s %s\n", "RUN", "SYSTEM", "PROCEDURE", "SITE",
           "STATE", "STARTED", "DETAIL");
    json_array_foreach(arr, i, o) {
        const char *detail = str(o, "state")[0] == 'w' ? str(o, "waiting_on") : str(o, "error");
        printf("%-28s %-10s %-14s %-10s %-10s %-24s %s\n", str(o, "id"), str(o, "system"),
               str(o, "procedure"), str(o, "site"), str(o, "state"), str(o, "started"), detail);
    }
}

static int cmd_runs_list(struct ctl *c, int argc, char **argv)
{
    json_t *args = json_object(), *res;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--system") == 0 && i + 1 < argc)
            json_object_set_new(args, "system", json_string(argv[++i]));
        else
            die(EXIT_USAGE, "runs list: unexpected '%s'\n%s", argv[i], usage);
    }
    res = request(c, "runs.list", args);
    if (c->json)
        print_json(res);
    else
        print_runs(res);
    json_decref(res);
    return 0;
}

static int cmd_runs_show(struct ctl *c, const char *id)
{
    json_t *res = request(c, "runs.show", json_pack("{s:s}", "id", id)), *line;
    size_t i;

    if (c->json) {
        print_json(res);
    } else {
        printf("run        %s\nsystem     %s\nprocedure  %s\nsite       %s\nstate      %s\n",
               str(res, "id"), str(res, "system"), str(res, "procedure"), str(res, "site"),
               str(res, "state"));
        printf("event      %s (id %s)\nstarted    %s\nended      %s\n", str(res, "event_type"),
               str(json_object_get(res, "event"), "id"), str(res, "started"), str(res, "ended"));
        if (json_object_get(res, "waiting_on"))
            printf("waiting on %s\n", str(res, "waiting_on"));
        if (json_object_get(res, "error"))
            printf("error      %s\n", str(res, "error"));
        if (json_object_get(res, "traceback"))
            printf("%s\n", str(res, "traceback"));
        printf("log:\n");
        json_array_foreach(json_object_get(res, "log"), i, line)
            printf("  %s %-5s %s\n", str(line, "time"), str(line, "level"), str(line, "text"));
    }
    json_decref(res);
    return 0;
}

/* Sends op about run id to the manager of the site that runs it (from the
 * run's record): a fresh connection to that site. Returns the answer. */
static json_t *at_run_site(struct ctl *c, const char *id, const char *op, json_t *args,
                           char *site, size_t site_len)
{
    json_t *run = request(c, "runs.show", json_pack("{s:s}", "id", id)), *res;
    struct ctl other;

    snprintf(site, site_len, "%s", str(run, "site"));
    json_decref(run);
    other = *c;
    other.mosq = NULL;
    other.connected = other.subscribed = other.answered = false;
    other.answer = NULL;
    other.site = site;
    res = request(&other, op, args);
    if (other.mosq) {
        mosquitto_disconnect(other.mosq);
        mosquitto_destroy(other.mosq);
    }
    free(other.answer);
    return res;
}

static int cmd_runs_cancel(struct ctl *c, const char *id)
{
    char site[CFM_MAX_ID + 1];
    json_t *res = at_run_site(c, id, "runs.cancel", json_pack("{s:s}", "id", id), site,
                              sizeof site);

    printf("run %s cancelled at %s\n", id, site);
    json_decref(res);
    return 0;
}

static int cmd_runs_resume(struct ctl *c, const char *id, bool force)
{
    char site[CFM_MAX_ID + 1];
    json_t *res = at_run_site(c, id, "runs.resume",
                              json_pack("{s:s, s:b}", "id", id, "force", force), site,
                              sizeof site);

    printf("run %s resumed at %s%s\n", id, site, force ? " (forced)" : "");
    json_decref(res);
    return 0;
}

static int cmd_procedure_check(const char *path)
{
    struct cfm_why why = {{0}};
    size_t len;
    char *text = read_file(path, &len);
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

    if (cfm_engine_check_text(name, text, len, &why) != CFM_OK) {
        free(text);
        die(EXIT_FAIL, "%s", why.text);
    }
    free(text);
    printf("%s: ok\n", path);
    return 0;
}

static void parse_broker(struct ctl *c, const char *text)
{
    struct cfm_why why = {{0}};

    if (cfm_parse_hostport(text, c->host, sizeof c->host, &c->port, "-b", &why) != CFM_OK)
        die(EXIT_USAGE, "%s", why.text);
}

static void read_password(struct ctl *c, const char *path)
{
    struct cfm_why why = {{0}};

    if (cfm_read_secret(path, c->password, sizeof c->password, "-P", &why) != CFM_OK)
        die(EXIT_USAGE, "%s", why.text);
}

int main(int argc, char **argv)
{
    struct ctl c;
    int i, rc = EXIT_USAGE;
    const char *env;

    memset(&c, 0, sizeof c);
    snprintf(c.host, sizeof c.host, "127.0.0.1");
    c.port = 1883;
    c.timeout_s = 5;
    c.site = getenv("CFM_SITE");
    if ((env = getenv("CFM_BROKER")) && *env)
        parse_broker(&c, env);
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--json") == 0) {
            c.json = true;
            continue;
        }
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (!val)
            die(EXIT_USAGE, "%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "-b") == 0)
            parse_broker(&c, val);
        else if (strcmp(opt, "-s") == 0)
            c.site = val;
        else if (strcmp(opt, "-u") == 0)
            c.user = val;
        else if (strcmp(opt, "-P") == 0)
            read_password(&c, val);
        else if (strcmp(opt, "-t") == 0) {
            char *end;
            c.timeout_s = strtod(val, &end);
            if (*end || !(c.timeout_s > 0 && c.timeout_s <= 3600))
                die(EXIT_USAGE, "-t: '%s' is not a number of seconds from 0 to 3600", val);
        } else
            die(EXIT_USAGE, "unknown option %s\n%s", opt, usage);
    }
    argc -= i;
    argv += i;
    mosquitto_lib_init();
#define IS(n, a, b) (argc >= (n) && strcmp(argv[0], a) == 0 && strcmp(argv[1], b) == 0)
    if (IS(3, "system", "load") && argc == 3)
        rc = cmd_system_load(&c, argv[2]);
    else if (IS(2, "system", "list") && argc == 2)
        rc = cmd_system_list(&c);
    else if (IS(3, "system", "show") && argc == 3)
        rc = cmd_system_show(&c, argv[2]);
    else if (IS(2, "objects", "list"))
        rc = cmd_objects_list(&c, argc - 2, argv + 2);
    else if (IS(2, "vms", "list"))
        rc = cmd_vms_list(&c, argc - 2, argv + 2);
    else if (IS(2, "sites", "list") && argc == 2)
        rc = cmd_sites_list(&c);
    else if (IS(4, "event", "publish") && argc <= 5)
        rc = cmd_event_publish(&c, argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    else if (IS(4, "event", "wait"))
        rc = cmd_event_wait(&c, argv[2], argv[3], parse_timeout(argc - 4, argv + 4, 60));
    else if (IS(2, "runs", "list"))
        rc = cmd_runs_list(&c, argc - 2, argv + 2);
    else if (IS(3, "runs", "show") && argc == 3)
        rc = cmd_runs_show(&c, argv[2]);
    else if (IS(3, "runs", "wait"))
        rc = cmd_runs_wait(&c, argv[2], parse_timeout(argc - 3, argv + 3, 300));
    else if (IS(3, "runs", "cancel") && argc == 3)
        rc = cmd_runs_cancel(&c, argv[2]);
    else if (IS(3, "runs", "resume") && argc == 3)
        rc = cmd_runs_resume(&c, argv[2], false);
    else if (IS(3, "runs", "resume") && argc == 4 && strcmp(argv[3], "--force") == 0)
        rc = cmd_runs_resume(&c, argv[2], true);
    else if (IS(3, "procedure", "check") && argc == 3)
        rc = cmd_procedure_check(argv[2]);
    else if (argc == 1 && strcmp(argv[0], "ping") == 0)
        rc = cmd_ping(&c);
    else
        die(EXIT_USAGE, "unknown or incomplete command\n%s", usage);
#undef IS
    if (c.mosq) {
        mosquitto_disconnect(c.mosq);
        mosquitto_loop(c.mosq, 100, 1);
        mosquitto_destroy(c.mosq);
    }
    free(c.answer);
    mosquitto_lib_cleanup();
    return rc;
}
