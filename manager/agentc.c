/*
 * agentc.c - pending agent requests and online-waits, each with its own
 * timeout timer; answers matched by (vm, id). The last status of every
 * agent seen is kept so a wait for an agent already online returns at once.
 */
#include "agentc.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define MAX_ANSWER (64u << 20)

struct pending {
    uv_timer_t timer;
    struct cfm_agentc *a;
    char vm[CFM_MAX_ID + 1];
    char id[CFM_MAX_ID + 1];    /* "" for an online-wait */
    cfm_agentc_cb cb;
    void *arg;
    bool done;
    bool ready;                 /* an online-wait for an agent already online */
    struct pending *next;
};

struct online {
    char vm[CFM_MAX_ID + 1];
    bool up;
    struct online *next;
};

struct cfm_agentc {
    uv_loop_t *loop;
    struct cfm_bus *bus;
    struct pending *pending;
    struct online *agents;
    bool closing;
};

enum cfm_err cfm_agentc_new(uv_loop_t *loop, struct cfm_bus *bus, struct cfm_agentc **out)
{
    struct cfm_agentc *a = calloc(1, sizeof *a);

    *out = NULL;
    if (!a)
        return CFM_ENOMEM;
    a->loop = loop;
    a->bus = bus;
    *out = a;
    return CFM_OK;
}

static void on_pending_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Unlinks p, calls its callback once, and closes its timer. */
static void finish(struct pending *p, enum cfm_err err, const json_t *answer, const char *why)
{
    struct cfm_agentc *a = p->a;

    for (struct pending **q = &a->pending; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            break;
        }
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_pending_closed);
    if (!p->done) {
        p->done = true;
        p->cb(p->arg, err, answer, why);
    }
}

static void on_timeout(uv_timer_t *t)
{
    struct pending *p = t->data;
    char why[256];

    if (p->ready) {
        finish(p, CFM_OK, NULL, NULL);
        return;
    }
    if (p->id[0])
        snprintf(why, sizeof why, "the agent of %s did not answer request %s in time", p->vm,
                 p->id);
    else
        snprintf(why, sizeof why, "the agent of %s did not come online in time", p->vm);
    finish(p, CFM_ETIMEOUT, NULL, why);
}

static struct pending *add_pending(struct cfm_agentc *a, const char *vm, const char *id,
                                   double timeout_s, cfm_agentc_cb cb, void *arg)
{
    struct pending *p = calloc(1, sizeof *p);

    if (!p)
        return NULL;
    p->a = a;
    snprintf(p->vm, sizeof p->vm, "%s", vm);
    snprintf(p->id, sizeof p->id, "%s", id ? id : "");
    p->cb = cb;
    p->arg = arg;
    uv_timer_init(a->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timeout, (uint64_t)(timeout_s * 1000.0), 0);
    p->next = a->pending;
    a->pending = p;
    return p;
}

static struct online *find_agent(struct cfm_agentc *a, const char *vm, bool create)
{
    struct online *o;

    for (o = a->agents; o; o = o->next)
        if (strcmp(o->vm, vm) == 0)
            return o;
    if (!create || !(o = calloc(1, sizeof *o)))
        return NULL;
    snprintf(o->vm, sizeof o->vm, "%s", vm);
    o->next = a->agents;
    a->agents = o;
    return o;
}

enum cfm_err cfm_agentc_request(struct cfm_agentc *a, const char *vm, const char *id,
                                json_t *req, double timeout_s, cfm_agentc_cb cb, void *arg)
{
    char topic[CFM_MAX_TOPIC + 1], res_topic[CFM_MAX_TOPIC + 1];
    struct cfm_bus_msg m = {.qos = 1};
    struct cfm_why why = {{0}};
    enum cfm_err err;
    char *text = NULL;

    if (a->closing) {
        err = CFM_EINVAL;
        goto out;
    }
    if ((err = cfm_topic_build(topic, sizeof topic, CFM_TOPIC_AGENT_REQ, vm, NULL, NULL, &why)) !=
            CFM_OK ||
        (err = cfm_topic_build(res_topic, sizeof res_topic, CFM_TOPIC_AGENT_RES, vm, id, NULL,
                               &why)) != CFM_OK)
        goto out;
    json_object_set_new(req, "id", json_string(id));
    text = json_dumps(req, JSON_COMPACT);
    if (!text || !add_pending(a, vm, id, timeout_s, cb, arg)) {
        err = CFM_ENOMEM;
        goto out;
    }
    m.topic = topic;
    m.payload = text;
    m.len = strlen(text);
    err = cfm_bus_publish(a->bus, &m, NULL);
out:
    free(text);
    json_decref(req);
    return err;
}

enum cfm_err cfm_agentc_wait_online(struct cfm_agentc *a, const char *vm, double timeout_s,
                                    cfm_agentc_cb cb, void *arg)
{
    struct online *o = find_agent(a, vm, false);
    bool up = o && o->up;
    struct pending *p;

    if (a->closing)
        return CFM_EINVAL;
    /* Already online: answered from the loop (a zero timer), not from inside this call. */
    if (!(p = add_pending(a, vm, NULL, up ? 0 : timeout_s, cb, arg)))
        return CFM_ENOMEM;
    p->ready = up;
    return CFM_OK;
}

void cfm_agentc_on_message(struct cfm_agentc *a, const struct cfm_topic *t, const void *payload,
                           size_t len)
{
    json_t *msg;
    struct pending *p, *next;

    if (len > MAX_ANSWER) {
        cfm_warn("agentc", "dropped a %zu-byte message from agent %s", len, t->name);
        return;
    }
    msg = json_loadb(payload, len, 0, NULL);
    if (!json_is_object(msg)) {
        if (len)
            cfm_warn("agentc", "dropped a malformed message from agent %s", t->name);
        json_decref(msg);
        return;
    }
    if (t->type == CFM_TOPIC_AGENT_STATUS) {
        const char *state = json_string_value(json_object_get(msg, "state"));
        struct online *o = find_agent(a, t->name, true);
        if (o)
            o->up = state && strcmp(state, "online") == 0;
        for (p = a->pending; o && o->up && p; p = next) {
            next = p->next;
            if (!p->id[0] && strcmp(p->vm, t->name) == 0)
                finish(p, CFM_OK, msg, NULL);
        }
    } else if (t->type == CFM_TOPIC_AGENT_RES) {
        for (p = a->pending; p; p = next) {
            next = p->next;
            if (p->id[0] && strcmp(p->vm, t->name) == 0 && strcmp(p->id, t->id) == 0) {
                finish(p, CFM_OK, msg, NULL);
                break;
            }
        }
    }
    json_decref(msg);
}

void cfm_agentc_close(struct cfm_agentc *a)
{
    if (!a)
        return;
    a->closing = true;
    while (a->pending)
        finish(a->pending, CFM_EINVAL, NULL, "the manager is stopping");
    while (a->agents) {
        struct online *o = a->agents;
        a->agents = o->next;
        free(o);
    }
    free(a);
}
