/*
 * policy.c - the DR policy with a witness. Once a second, for every system
 * this site is the standby of and whose description has policies.dr, the
 * primary's offline time (health.c: its Last Will, or the bridge to it
 * going down) is compared with after_offline_s. Past it, a vote request
 * goes to the witness site's manager as a cfmctl-style request
 * (witness.vote, MQTT 5 response topic and correlation data = the system
 * id); a vote that agrees makes this site publish dr for itself, once per
 * outage. Without a witness the policy never acts: deciding alone is what
 * the witness exists to prevent.
 */
#include "policy.h"

#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "health.h"
#include "kind.h"
#include "log.h"
#include "obj.h"
#include "topic.h"
#include "util.h"

#define TICK_MS 1000
#define VOTE_TIMEOUT_MS 5000
#define MAX_TRACKED 256

/* What the policy remembers of one system. */
struct track {
    char system[CFM_MAX_ID + 1];
    int64_t asked_ms;   /* a vote request is out since then; 0 = none */
    bool triggered;     /* dr published for the current outage */
};

struct cfm_policy {
    uv_timer_t timer;
    struct cfm_store *st;
    struct cfm_bus *bus;
    const struct cfm_publisher *events;
    char site[CFM_MAX_ID + 1];
    char res_topic[CFM_MAX_TOPIC + 1];
    struct track tracks[MAX_TRACKED];
    size_t ntracks;
};

static struct track *track_of(struct cfm_policy *p, const char *system)
{
    for (size_t i = 0; i < p->ntracks; i++)
        if (strcmp(p->tracks[i].system, system) == 0)
            return &p->tracks[i];
    if (p->ntracks == MAX_TRACKED)
        return NULL;
    memset(&p->tracks[p->ntracks], 0, sizeof p->tracks[0]);
    snprintf(p->tracks[p->ntracks].system, sizeof p->tracks[0].system, "%s", system);
    return &p->tracks[p->ntracks++];
}

static void ask_witness(struct cfm_policy *p, struct track *t, const char *witness,
                        const char *primary, json_int_t after)
{
    char topic[CFM_MAX_TOPIC + 1];
    json_t *req = json_pack("{s:s, s:{s:s, s:s, s:I, s:s}}", "op", "witness.vote", "args",
                            "primary", primary, "candidate", p->site, "after_offline_s", after,
                            "system", t->system);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    struct cfm_bus_msg m = {.qos = 1};

    json_decref(req);
    if (!text || cfm_topic_build(topic, sizeof topic, CFM_TOPIC_CTL_REQ, witness, NULL, NULL,
                                 NULL) != CFM_OK) {
        free(text);
        return;
    }
    m.topic = topic;
    m.payload = text;
    m.len = strlen(text);
    m.response_topic = p->res_topic;
    m.correlation = t->system;
    m.correlation_len = strlen(t->system);
    if (cfm_bus_publish(p->bus, &m, NULL) == CFM_OK) {
        t->asked_ms = cfm_time_ms();
        cfm_info("policy", "%s: %s offline past %lld s; asking the witness %s", t->system,
                 primary, (long long)after, witness);
    }
    free(text);
}

static bool check_system(void *arg, const struct cfm_obj *sys)
{
    struct cfm_policy *p = arg;
    json_t *dr = json_object_get(json_object_get(sys->body, "policies"), "dr");
    const char *standby = json_string_value(json_object_get(sys->body, "standby"));
    const char *primary = json_string_value(json_object_get(sys->body, "primary"));
    const char *witness = json_string_value(json_object_get(dr, "witness"));
    json_int_t after = json_integer_value(json_object_get(dr, "after_offline_s"));
    struct track *t;
    int64_t offline;

    if (!dr || !standby || !primary || strcmp(standby, p->site) != 0 || after < 1)
        return true;
    if (!(t = track_of(p, sys->id)))
        return true;
    offline = cfm_health_offline_ms(p->st, primary);
    if (offline < 0) {
        t->triggered = false; /* the primary is back: a later outage counts anew */
        t->asked_ms = 0;
        return true;
    }
    if (t->triggered || offline < after * 1000)
        return true;
    if (!witness) {
        cfm_warn("policy", "%s: %s offline past %lld s, but the dr policy names no witness: not "
                 "acting alone", sys->id, primary, (long long)after);
        t->triggered = true; /* said once per outage */
        return true;
    }
    if (t->asked_ms && cfm_time_ms() - t->asked_ms < VOTE_TIMEOUT_MS)
        return true; /* a vote is out */
    if (t->asked_ms)
        cfm_warn("policy", "%s: the witness %s did not answer; asking again", sys->id, witness);
    ask_witness(p, t, witness, primary, after);
    return true;
}

static void on_tick(uv_timer_t *timer)
{
    struct cfm_policy *p = timer->data;
    struct cfm_store_filter f = {.kind = CFM_KIND_BUSINESS_SYSTEM};

    if (cfm_bus_connected(p->bus))
        cfm_store_each(p->st, &f, check_system, p);
}

static void publish_dr(struct cfm_policy *p, struct track *t, const char *reason)
{
    json_t *ev = cfm_event_new(t->system, "dr", p->site,
                               json_pack("{s:s, s:s}", "target_site", p->site, "reason", reason));

    if (ev && cfm_publish_event(p->events, ev) == CFM_OK) {
        t->triggered = true;
        cfm_warn("policy", "%s: publishing dr to %s: %s", t->system, p->site, reason);
    }
    json_decref(ev);
}

void cfm_policy_on_vote(struct cfm_policy *p, const void *correlation, size_t correlation_len,
                        const void *payload, size_t len)
{
    char system[CFM_MAX_ID + 1];
    json_t *res, *result;
    struct track *t;
    char reason[384];

    if (!correlation || correlation_len == 0 || correlation_len > CFM_MAX_ID)
        return;
    snprintf(system, sizeof system, "%.*s", (int)correlation_len, (const char *)correlation);
    if (!(t = track_of(p, system)) || !t->asked_ms || t->triggered)
        return;
    t->asked_ms = 0;
    res = json_loadb(payload, len, 0, NULL);
    result = json_object_get(res, "result");
    if (!json_is_true(json_object_get(res, "ok"))) {
        cfm_warn("policy", "%s: the witness refused the vote request: %s", system,
                 json_string_value(json_object_get(res, "error")) ?
                 json_string_value(json_object_get(res, "error")) : "(no reason)");
    } else if (!json_is_true(json_object_get(result, "agree"))) {
        cfm_info("policy", "%s: the witness %s disagrees: %s; not taking over", system,
                 json_string_value(json_object_get(result, "witness")),
                 json_string_value(json_object_get(result, "reason")));
    } else {
        snprintf(reason, sizeof reason, "policy: the witness %s agrees (%s)",
                 json_string_value(json_object_get(result, "witness")),
                 json_string_value(json_object_get(result, "reason")));
        publish_dr(p, t, reason);
    }
    json_decref(res);
}

enum cfm_err cfm_policy_new(uv_loop_t *loop, struct cfm_store *st, struct cfm_bus *bus,
                            const struct cfm_publisher *events, const char *site,
                            struct cfm_policy **out)
{
    struct cfm_policy *p = calloc(1, sizeof *p);
    char client[CFM_MAX_ID + 8];

    *out = NULL;
    if (!p)
        return CFM_ENOMEM;
    p->st = st;
    p->bus = bus;
    p->events = events;
    snprintf(p->site, sizeof p->site, "%s", site);
    snprintf(client, sizeof client, "cfm-%s", site);
    cfm_topic_build(p->res_topic, sizeof p->res_topic, CFM_TOPIC_CTL_RES, client, NULL, NULL,
                    NULL);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_tick, TICK_MS, TICK_MS);
    *out = p;
    return CFM_OK;
}

const char *cfm_policy_response_topic(const struct cfm_policy *p)
{
    return p->res_topic;
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void cfm_policy_close(struct cfm_policy *p)
{
    if (!p)
        return;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_closed);
}
