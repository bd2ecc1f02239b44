/*
 * sync.c - digests and the answers to them.
 *
 * A digest lists, for every object of a system (tombstones included), the
 * key "<Kind>/<id>" and its [version, origin]:
 *
 *   {"from": "site-a", "system": "shop", "reply": true,
 *    "after": null, "until": null,
 *    "objects": {"VMClass/small": [7, "site-a"], ...}}
 *
 * Keys are visited in (kind, id) order, which is also the byte order of the
 * "<Kind>/<id>" strings, so a system too large for one message is sent as
 * consecutive chunks, each covering the keys in (after, until] (null = open
 * end). A receiver compares the chunk's range with its own objects: what it
 * holds newer, or what the sender lacks, it publishes again on the object's
 * topic (retained, QoS 1; receivers merge by version, so repeats are
 * harmless); if it finds itself behind and the digest asked for a reply, it
 * publishes its own digest (with "reply": false, so two sites never bounce
 * digests forever).
 */
#include "sync.h"

#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "id.h"
#include "kind.h"
#include "log.h"
#include "obj.h"
#include "topic.h"

#define KEY_MAX (CFM_MAX_ID * 2 + 2)
/* Leave room under CFM_MAX_PAYLOAD for the envelope of a chunk. */
#define CHUNK_BYTES (CFM_MAX_PAYLOAD - 4096)
#define TOMBSTONE_EXPIRY_S (7u * 24 * 3600)

struct cfm_sync {
    struct cfm_store *st;
    struct cfm_bus *bus;
    char site[CFM_MAX_ID + 1];
    struct cfm_sync_stats stats;
};

enum cfm_err cfm_sync_new(struct cfm_store *st, struct cfm_bus *bus, const char *site,
                          struct cfm_sync **out)
{
    struct cfm_sync *s = calloc(1, sizeof *s);

    *out = NULL;
    if (!s)
        return CFM_ENOMEM;
    s->st = st;
    s->bus = bus;
    snprintf(s->site, sizeof s->site, "%s", site);
    *out = s;
    return CFM_OK;
}

void cfm_sync_free(struct cfm_sync *s)
{
    free(s);
}

void cfm_sync_stats(const struct cfm_sync *s, struct cfm_sync_stats *out)
{
    *out = s->stats;
}

static void make_key(char key[KEY_MAX], enum cfm_kind kind, const char *id)
{
    snprintf(key, KEY_MAX, "%s/%s", cfm_kind_name(kind), id);
}

/* --- sending digests ------------------------------------------------- */

struct chunker {
    struct cfm_sync *s;
    const char *system;
    bool reply;
    char topic[CFM_MAX_TOPIC + 1];
    json_t *objects;      /* the chunk being filled */
    size_t bytes;         /* its estimated size */
    char after[KEY_MAX];  /* "" = from the start */
    char last[KEY_MAX];
};

static void send_chunk(struct chunker *c, bool final)
{
    json_t *msg = json_pack("{s:s, s:s, s:b, s:s?, s:s?, s:O}", "from", c->s->site, "system",
                            c->system, "reply", c->reply, "after", c->after[0] ? c->after : NULL,
                            "until", final ? NULL : c->last, "objects", c->objects);
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    struct cfm_bus_msg m = {.topic = c->topic, .qos = 1};

    json_decref(msg);
    if (!text) {
        cfm_error("sync", "cannot encode the digest of %s", c->system);
        return;
    }
    m.payload = text;
    m.len = strlen(text);
    if (cfm_bus_publish(c->s->bus, &m, NULL) == CFM_OK)
        c->s->stats.digests_sent++;
    free(text);
    json_object_clear(c->objects);
    c->bytes = 0;
    memcpy(c->after, c->last, sizeof c->after);
}

static bool add_entry(void *arg, const struct cfm_store_version *v)
{
    struct chunker *c = arg;
    char key[KEY_MAX];

    make_key(key, v->kind, v->id);
    if (c->bytes > CHUNK_BYTES)
        send_chunk(c, false);
    json_object_set_new(c->objects, key, json_pack("[I, s]", (json_int_t)v->version, v->origin));
    c->bytes += strlen(key) + strlen(v->origin) + 28;
    memcpy(c->last, key, sizeof c->last);
    return true;
}

static void send_digest(struct cfm_sync *s, const char *system, bool reply)
{
    struct chunker c;

    memset(&c, 0, sizeof c);
    c.s = s;
    c.system = system;
    c.reply = reply;
    if (cfm_topic_build(c.topic, sizeof c.topic, CFM_TOPIC_SYNC, system, NULL, NULL, NULL) !=
            CFM_OK ||
        !(c.objects = json_object()))
        return;
    if (cfm_store_versions(s->st, system, add_entry, &c) != CFM_OK)
        cfm_error("sync", "cannot read the objects of %s", system);
    else
        send_chunk(&c, true);
    json_decref(c.objects);
}

void cfm_sync_announce(struct cfm_sync *s, const char *system)
{
    cfm_debug("sync", "announcing the digest of %s", system);
    send_digest(s, system, true);
}

/* --- answering digests ------------------------------------------------ */

struct answer {
    struct cfm_sync *s;
    const char *system;
    json_t *theirs;     /* borrowed: the digest's objects */
    const char *after, *until;
    size_t in_range;    /* our keys in the chunk's range */
    size_t matched;     /* theirs we also hold, at least as new */
    size_t sent;
};

static bool in_range(const struct answer *a, const char *key)
{
    return (!a->after || strcmp(key, a->after) > 0) && (!a->until || strcmp(key, a->until) <= 0);
}

static void send_object(struct answer *a, const struct cfm_store_version *v)
{
    char topic[CFM_MAX_TOPIC + 1];
    struct cfm_obj *obj = NULL;
    struct cfm_bus_msg m = {.topic = topic, .qos = 1, .retain = true};
    json_t *json;
    char *text;

    if (cfm_store_get(a->s->st, a->system, v->kind, v->id, &obj) != CFM_OK)
        return;
    if (cfm_topic_build(topic, sizeof topic, CFM_TOPIC_OBJ, a->system, cfm_kind_name(v->kind),
                        v->id, NULL) == CFM_OK &&
        (json = cfm_obj_to_json(obj))) {
        text = json_dumps(json, JSON_COMPACT);
        json_decref(json);
        if (text) {
            m.payload = text;
            m.len = strlen(text);
            m.expiry_s = obj->deleted ? TOMBSTONE_EXPIRY_S : 0;
            if (cfm_bus_publish(a->s->bus, &m, NULL) == CFM_OK)
                a->sent++;
            free(text);
        }
    }
    cfm_obj_free(obj);
}

static bool compare_ours(void *arg, const struct cfm_store_version *v)
{
    struct answer *a = arg;
    char key[KEY_MAX];
    json_t *d;

    make_key(key, v->kind, v->id);
    if (!in_range(a, key))
        return true;
    a->in_range++;
    d = json_object_get(a->theirs, key);
    if (d) {
        uint64_t dv = (uint64_t)json_integer_value(json_array_get(d, 0));
        const char *dorigin = json_string_value(json_array_get(d, 1));
        int cmp = v->version != dv ? (v->version > dv ? 1 : -1) : strcmp(v->origin, dorigin);
        if (cmp >= 0)
            a->matched++;
        if (cmp <= 0)
            return true;
    }
    send_object(a, v); /* they lack it or hold an older write */
    return true;
}

/* Checks the shape of a digest; returns NULL when it is fine, else why not. */
static const char *check_digest(json_t *msg, const char *system)
{
    json_t *objects = json_object_get(msg, "objects");
    const char *key, *from = json_string_value(json_object_get(msg, "from"));
    json_t *v;

    if (!json_is_object(msg))
        return "not a JSON object";
    if (!cfm_id_valid(from))
        return "'from' is not a site ID";
    if (!json_is_string(json_object_get(msg, "system")) ||
        strcmp(json_string_value(json_object_get(msg, "system")), system) != 0)
        return "'system' does not match the topic";
    if (!json_is_object(objects))
        return "'objects' must be an object";
    for (const char *const *f = (const char *const[]){"after", "until", NULL}; *f; f++) {
        json_t *b = json_object_get(msg, *f);
        if (b && !json_is_null(b) && (!json_is_string(b) || json_string_length(b) >= KEY_MAX))
            return "'after'/'until' must be null or a key";
    }
    json_object_foreach(objects, key, v) {
        json_int_t ver = json_integer_value(json_array_get(v, 0));
        if (!json_is_array(v) || json_array_size(v) != 2 ||
            !json_is_integer(json_array_get(v, 0)) || ver < 0 ||
            (uint64_t)ver >= CFM_MAX_VERSION ||
            !cfm_id_valid(json_string_value(json_array_get(v, 1))))
            return "an entry is not [version, origin]";
    }
    return NULL;
}

void cfm_sync_on_digest(struct cfm_sync *s, const char *system, const void *payload, size_t len)
{
    struct answer a;
    json_error_t jerr;
    json_t *msg = NULL;
    const char *bad, *from;

    if (len > CFM_MAX_PAYLOAD) {
        cfm_warn("sync", "dropped a digest of %s: %zu bytes is over the limit", system, len);
        return;
    }
    msg = json_loadb(payload, len, 0, &jerr);
    if (!msg) {
        cfm_warn("sync", "dropped a digest of %s: not JSON: %s", system, jerr.text);
        return;
    }
    if ((bad = check_digest(msg, system))) {
        cfm_warn("sync", "dropped a digest of %s: %s", system, bad);
        goto out;
    }
    from = json_string_value(json_object_get(msg, "from"));
    if (strcmp(from, s->site) == 0)
        goto out; /* our own */
    s->stats.digests_received++;
    memset(&a, 0, sizeof a);
    a.s = s;
    a.system = system;
    a.theirs = json_object_get(msg, "objects");
    a.after = json_string_value(json_object_get(msg, "after"));
    a.until = json_string_value(json_object_get(msg, "until"));
    if (cfm_store_versions(s->st, system, compare_ours, &a) != CFM_OK) {
        cfm_error("sync", "cannot read the objects of %s", system);
        goto out;
    }
    s->stats.objects_sent += a.sent;
    if (a.sent)
        cfm_info("sync", "%s: sent %zu object(s) newer than %s's", system, a.sent, from);
    /* Behind: they list keys we lack or hold older. Ask for them with our digest. */
    if (a.matched < json_object_size(a.theirs) &&
        json_is_true(json_object_get(msg, "reply"))) {
        cfm_info("sync", "%s: %s holds %zu object(s) newer than ours; answering with our digest",
                 system, from, json_object_size(a.theirs) - a.matched);
        send_digest(s, system, false);
    }
out:
    json_decref(msg);
}
