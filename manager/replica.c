/*
 * replica.c - local writes through the outbox, and the last-writer-wins
 * merge of objects from other sites.
 *
 * Ordering: the Lamport clock lives in memory and in the store's meta table;
 * a local write takes clock+1, a received object raises the clock to its
 * version, both persisted in the transaction of the write. The outbox row
 * of a write is published after its transaction commits; the broker's
 * PUBACK for that message id removes the row. Rows still present at start
 * (the manager died before the PUBACK) are published again: receivers apply
 * objects idempotently, so a duplicate is harmless and a loss impossible.
 */
#include "replica.h"

#include "failpoint.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* Tombstones are retained this long by brokers (MQTT 5 message expiry). */
#define TOMBSTONE_EXPIRY_S (7u * 24 * 3600)
/* A peer's version further ahead of our clock than this is refused: it
 * would push every clock of the federation towards CFM_MAX_VERSION. */
#define MAX_CLOCK_JUMP ((uint64_t)1 << 32)
/* Levels of cfm_replica_begin inside each other that keep their own
 * messages on rollback; deeper ones roll back with the deepest kept. */
#define REPLICA_MAX_NEST 32
/* MQTT message ids are 16 bits: one slot each. */
#define MID_SLOTS 65536

struct cfm_replica {
    struct cfm_store *st;
    struct cfm_bus *bus;
    char site[CFM_MAX_ID + 1];
    uint64_t clock;
    cfm_replica_system_fn on_system;
    void *arg;
    int64_t *inflight;  /* mid -> outbox seq; 0 = free */
    size_t pending;
    /* Messages committed inside an enclosing transaction (cfm_replica_begin):
     * sent when it commits, dropped when it rolls back. */
    struct cfm_outmsg *deferred;
    size_t ndeferred, cap_deferred;
    /* ndeferred when each open level began: an inner rollback drops the
     * messages of its level only, as the store undoes its writes only. */
    size_t marks[REPLICA_MAX_NEST];
    size_t nmarks;              /* open levels (marks beyond the array: none) */
    /* Outbox rows the broker acknowledged, deleted in the next transaction
     * (or by cfm_replica_flush_acks) rather than one commit each. */
    int64_t *acked;
    size_t nacked, cap_acked;
};

static void publish_row(struct cfm_replica *r, const struct cfm_outmsg *m)
{
    struct cfm_bus_msg msg = {
        .topic = m->topic,
        .payload = m->payload,
        .len = m->len,
        .qos = m->qos,
        .retain = m->retain,
        .expiry_s = m->expiry_s,
    };
    int mid = 0;

    if (cfm_bus_publish(r->bus, &msg, &mid) != CFM_OK) {
        /* Stays in the outbox; the next start sends it. */
        cfm_error("replica", "cannot queue %s; kept in the outbox", m->topic);
        return;
    }
    if (m->qos == 0 || mid <= 0 || mid >= MID_SLOTS) {
        cfm_store_outbox_remove(r->st, m->seq);
        return;
    }
    if (r->inflight[mid] == 0)
        r->pending++;
    r->inflight[mid] = m->seq;
}

/* Drops the deferred messages from the from-th on. */
static void drop_deferred(struct cfm_replica *r, size_t from)
{
    for (size_t i = from; i < r->ndeferred; i++) {
        free((char *)r->deferred[i].topic);
        free((void *)r->deferred[i].payload);
    }
    if (from < r->ndeferred)
        r->ndeferred = from;
}

/* Deletes the acknowledged rows (inside the caller's transaction, if any). */
static void delete_acked(struct cfm_replica *r)
{
    size_t i;

    for (i = 0; i < r->nacked; i++)
        if (cfm_store_outbox_remove(r->st, r->acked[i]) != CFM_OK)
            break;
    if (i < r->nacked)
        cfm_error("replica", "cannot remove %zu acknowledged outbox message(s); they are "
                  "re-sent at the next start", r->nacked - i);
    r->nacked = 0;
}

/* Sends a message whose outbox row is written: now, or when the enclosing
 * transaction commits (the row may yet be rolled back). */
static void send_row(struct cfm_replica *r, const struct cfm_outmsg *m)
{
    struct cfm_outmsg *d;

    if (!cfm_store_in_txn(r->st)) {
        publish_row(r, m);
        return;
    }
    if (r->ndeferred == r->cap_deferred) {
        size_t cap = r->cap_deferred ? 2 * r->cap_deferred : 8;
        struct cfm_outmsg *p = realloc(r->deferred, cap * sizeof *p);
        if (!p)
            return; /* stays in the outbox: the next start sends it */
        r->deferred = p;
        r->cap_deferred = cap;
    }
    d = &r->deferred[r->ndeferred];
    *d = *m;
    d->topic = strdup(m->topic);
    d->payload = malloc(m->len ? m->len : 1);
    if (!d->topic || !d->payload) {
        free((char *)d->topic);
        free((void *)d->payload);
        return;
    }
    memcpy((void *)d->payload, m->payload, m->len);
    r->ndeferred++;
}

enum cfm_err cfm_replica_begin(struct cfm_replica *r)
{
    bool outermost = !cfm_store_in_txn(r->st);
    enum cfm_err err = cfm_store_begin(r->st);

    if (r->nmarks < REPLICA_MAX_NEST)
        r->marks[r->nmarks] = r->ndeferred;
    r->nmarks++;
    /* Acknowledged rows go with the first transaction that comes. */
    if (err == CFM_OK && outermost && r->nacked)
        delete_acked(r);
    return err;
}

enum cfm_err cfm_replica_commit(struct cfm_replica *r)
{
    enum cfm_err err = cfm_store_commit(r->st);

    if (r->nmarks > 0)
        r->nmarks--;
    if (cfm_store_in_txn(r->st))
        return err; /* the level's messages wait for the outermost commit */
    cfm_failpoint_committed();
    for (size_t i = 0; err == CFM_OK && i < r->ndeferred; i++)
        publish_row(r, &r->deferred[i]);
    drop_deferred(r, 0);
    return err;
}

void cfm_replica_rollback(struct cfm_replica *r)
{
    size_t level;

    cfm_store_rollback(r->st);
    if (r->nmarks > 0)
        r->nmarks--;
    level = r->nmarks < REPLICA_MAX_NEST ? r->nmarks : REPLICA_MAX_NEST - 1;
    /* The outermost level drops every message; an inner one its own. */
    drop_deferred(r, cfm_store_in_txn(r->st) ? r->marks[level] : 0);
}

bool cfm_replica_acks_kept(const struct cfm_replica *r)
{
    return r->nacked > 0;
}

void cfm_replica_flush_acks(struct cfm_replica *r)
{
    if (!r->nacked || cfm_store_in_txn(r->st))
        return;
    if (cfm_store_begin(r->st) != CFM_OK) {
        cfm_store_rollback(r->st);
        return;
    }
    delete_acked(r);
    cfm_store_commit(r->st);
}

static bool republish(void *arg, const struct cfm_outmsg *m)
{
    publish_row(arg, m);
    return true;
}

enum cfm_err cfm_replica_new(struct cfm_store *st, struct cfm_bus *bus, const char *site,
                             cfm_replica_system_fn on_system, void *arg,
                             struct cfm_replica **out, struct cfm_why *why)
{
    struct cfm_replica *r = calloc(1, sizeof *r);

    *out = NULL;
    if (!r || !(r->inflight = calloc(MID_SLOTS, sizeof *r->inflight))) {
        free(r);
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    r->st = st;
    r->bus = bus;
    r->on_system = on_system;
    r->arg = arg;
    snprintf(r->site, sizeof r->site, "%s", site);
    if (cfm_store_clock_get(st, &r->clock) != CFM_OK ||
        cfm_store_outbox_each(st, republish, r) != CFM_OK) {
        cfm_replica_free(r);
        return cfm_why_set(why, CFM_ESTORE, "cannot read the clock or the outbox");
    }
    if (r->pending)
        cfm_info("replica", "re-sending %zu message(s) left in the outbox", r->pending);
    *out = r;
    return CFM_OK;
}

void cfm_replica_free(struct cfm_replica *r)
{
    if (!r)
        return;
    cfm_replica_flush_acks(r);
    drop_deferred(r, 0);
    free(r->deferred);
    free(r->acked);
    free(r->inflight);
    free(r);
}

size_t cfm_replica_pending(const struct cfm_replica *r)
{
    return r->pending;
}

void cfm_replica_on_ack(struct cfm_replica *r, int mid, bool ok)
{
    int64_t seq;

    if (mid <= 0 || mid >= MID_SLOTS || !(seq = r->inflight[mid]))
        return;
    r->inflight[mid] = 0;
    r->pending--;
    if (!ok) {
        /* Refused by the broker (ACL): retrying cannot help; keep the row so
         * an operator sees it after fixing the ACL and restarting. */
        cfm_error("replica", "outbox message %lld refused by the broker; kept for a restart",
                  (long long)seq);
        return;
    }
    if (cfm_store_in_txn(r->st)) {
        if (cfm_store_outbox_remove(r->st, seq) != CFM_OK)
            cfm_error("replica", "cannot remove acknowledged outbox message %lld",
                      (long long)seq);
        return;
    }
    if (r->nacked == r->cap_acked) {
        size_t cap = r->cap_acked ? 2 * r->cap_acked : 64;
        int64_t *p = realloc(r->acked, cap * sizeof *p);
        if (!p) {
            cfm_store_outbox_remove(r->st, seq); /* at once, then */
            return;
        }
        r->acked = p;
        r->cap_acked = cap;
    }
    r->acked[r->nacked++] = seq;
}

/* A message queued in the outbox by the current transaction, published
 * once the transaction has committed. */
struct queued {
    struct cfm_outmsg msg;
    char topic[CFM_MAX_TOPIC + 1];
    char *text;
};

/* Serializes obj and appends its message to the outbox (inside a transaction). */
static enum cfm_err queue_obj(struct cfm_replica *r, const struct cfm_obj *obj, struct queued *q)
{
    json_t *json;
    enum cfm_err err;

    err = cfm_topic_build(q->topic, sizeof q->topic, CFM_TOPIC_OBJ, obj->system,
                          cfm_kind_name(obj->kind), obj->id, NULL);
    if (err != CFM_OK)
        return err;
    json = cfm_obj_to_json(obj);
    q->text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (!q->text)
        return CFM_ENOMEM;
    memset(&q->msg, 0, sizeof q->msg);
    q->msg.topic = q->topic;
    q->msg.payload = q->text;
    q->msg.len = strlen(q->text);
    q->msg.qos = 1;
    q->msg.retain = true;
    q->msg.expiry_s = obj->deleted ? TOMBSTONE_EXPIRY_S : 0;
    if (q->msg.len > CFM_MAX_PAYLOAD)
        return CFM_ETOOBIG;
    return cfm_store_outbox_add(r->st, &q->msg, &q->msg.seq);
}

enum cfm_err cfm_replica_write(struct cfm_replica *r, struct cfm_obj *const *objs, size_t n,
                               struct cfm_why *why)
{
    char now[CFM_TIME_LEN];
    uint64_t clock = r->clock;
    struct queued *q = NULL;
    enum cfm_err err;

    if (n == 0)
        return CFM_OK;
    if (!(q = calloc(n, sizeof *q)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if ((err = cfm_store_begin(r->st)) != CFM_OK) {
        cfm_why_set(why, err, "cannot begin a transaction");
        goto out;
    }
    cfm_time_now(now);
    for (size_t i = 0; i < n; i++) {
        struct cfm_obj *obj = objs[i];
        if (clock + 1 >= CFM_MAX_VERSION) {
            err = cfm_why_set(why, CFM_EINVAL, "the clock is exhausted");
            goto out;
        }
        obj->version = ++clock;
        snprintf(obj->origin, sizeof obj->origin, "%s", r->site);
        memcpy(obj->updated, now, sizeof obj->updated);
        if ((err = cfm_store_put(r->st, obj)) != CFM_OK ||
            (err = queue_obj(r, obj, &q[i])) != CFM_OK) {
            cfm_why_set(why, err, "cannot store %s %s: %s", cfm_kind_name(obj->kind), obj->id,
                        cfm_strerror(err));
            goto out;
        }
    }
    if ((err = cfm_store_clock_set(r->st, clock)) != CFM_OK ||
        (err = cfm_store_commit(r->st)) != CFM_OK) {
        cfm_why_set(why, err, "cannot commit the write");
        goto out;
    }
    r->clock = clock;
    /* The rows are durable now (or will be with the enclosing transaction); send them. */
    for (size_t i = 0; i < n; i++)
        send_row(r, &q[i].msg);
    for (size_t i = 0; i < n; i++)
        if (objs[i]->kind == CFM_KIND_BUSINESS_SYSTEM && r->on_system)
            r->on_system(r->arg, objs[i]);
out:
    if (err != CFM_OK)
        cfm_store_rollback(r->st);
    for (size_t i = 0; i < n; i++)
        free(q[i].text);
    free(q);
    return err;
}

enum cfm_err cfm_replica_publish(struct cfm_replica *r, const char *topic, const char *text,
                                 size_t len, bool retain)
{
    struct cfm_outmsg m = {.topic = topic, .payload = text, .len = len, .qos = 1,
                           .retain = retain};
    enum cfm_err err;

    if (len > CFM_MAX_PAYLOAD)
        return CFM_ETOOBIG;
    err = cfm_store_outbox_add(r->st, &m, &m.seq);
    if (err == CFM_OK)
        send_row(r, &m);
    return err;
}

/* --- loading a system description ----------------------------------- */

struct stored_list {
    struct cfm_obj **objs;
    size_t n, cap;
    bool nomem;
};

static bool collect(void *arg, const struct cfm_obj *obj)
{
    struct stored_list *l = arg;

    if (!cfm_kind_declared(obj->kind))
        return true;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct cfm_obj **grown = realloc(l->objs, cap * sizeof *grown);
        if (!grown) {
            l->nomem = true;
            return false;
        }
        l->objs = grown;
        l->cap = cap;
    }
    if (!(l->objs[l->n] = cfm_obj_dup(obj))) {
        l->nomem = true;
        return false;
    }
    l->n++;
    return true;
}

/* The index of want's stored object in l (sorted by cfm_obj_cmp_kind_id), or -1:
 * a system of 10,000 objects is 10,000 lookups, which a scan made
 * quadratic (a tenth of a second at the site that loads it). */
static ptrdiff_t find(const struct stored_list *l, const struct cfm_obj *want)
{
    struct cfm_obj *const *hit;

    if (!l->n)
        return -1; /* no array at all: bsearch must not see NULL */
    hit = bsearch(&want, l->objs, l->n, sizeof *l->objs, cfm_obj_cmp_kind_id);
    return hit ? hit - l->objs : -1;
}

static bool site_listed(const struct cfm_obj *sys, const char *site)
{
    json_t *sites = json_object_get(sys->body, "sites");
    size_t i;
    json_t *v;

    json_array_foreach(sites, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), site) == 0)
            return true;
    return false;
}

enum cfm_err cfm_replica_load(struct cfm_replica *r, const struct cfm_sysdesc *desc,
                              struct cfm_load_result *res, struct cfm_why *why)
{
    struct cfm_store_filter f = {.system = desc->id, .kind = -1, .include_deleted = true};
    struct stored_list stored = {0};
    struct cfm_obj **writes = NULL;
    bool *matched = NULL;
    size_t nwrites = 0;
    enum cfm_err err;

    memset(res, 0, sizeof *res);
    if (!site_listed(desc->objs[0], r->site))
        return cfm_why_set(why, CFM_EINVAL,
                           "this site (%s) is not among the sites of system %s; load it at one "
                           "of them",
                           r->site, desc->id);
    err = cfm_store_each(r->st, &f, collect, &stored);
    if (err != CFM_OK || stored.nomem) {
        err = cfm_why_set(why, stored.nomem ? CFM_ENOMEM : err, "cannot read system %s",
                          desc->id);
        goto out;
    }
    writes = calloc(desc->count + stored.n, sizeof *writes);
    matched = calloc(stored.n + 1, sizeof *matched);
    if (!writes || !matched) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    if (stored.n > 1)
        qsort(stored.objs, stored.n, sizeof *stored.objs, cfm_obj_cmp_kind_id);
    for (size_t i = 0; i < desc->count; i++) {
        ptrdiff_t k = find(&stored, desc->objs[i]);
        struct cfm_obj *old = k >= 0 ? stored.objs[k] : NULL;
        if (old && !old->deleted && cfm_obj_same_content(old, desc->objs[i])) {
            res->unchanged++;
        } else {
            if (old && !old->deleted)
                res->updated++;
            else
                res->created++;
            writes[nwrites++] = desc->objs[i];
        }
        if (old)
            matched[k] = true; /* not a deletion candidate */
    }
    for (size_t i = 0; i < stored.n; i++) {
        struct cfm_obj *old = stored.objs[i];
        if (matched[i] || old->deleted)
            continue;
        old->deleted = true;
        json_decref(old->body);
        old->body = json_object();
        writes[nwrites++] = old;
        res->deleted++;
    }
    err = cfm_replica_write(r, writes, nwrites, why);
out:
    for (size_t i = 0; i < stored.n; i++)
        cfm_obj_free(stored.objs[i]);
    free(stored.objs);
    free(writes);
    free(matched);
    return err;
}

/* --- objects from other sites -------------------------------------- */

void cfm_replica_on_obj(struct cfm_replica *r, const struct cfm_topic *t, const void *payload,
                        size_t len)
{
    struct cfm_why why = {{0}};
    struct cfm_obj *in = NULL, *cur = NULL;
    json_error_t jerr;
    json_t *json = NULL;
    enum cfm_err err;

    if (len == 0)
        return; /* a cleared retained message: nothing to apply */
    if (len > CFM_MAX_PAYLOAD) {
        cfm_warn("replica", "dropped %s/%s/%s: %zu bytes is over the limit", t->system, t->name,
                 t->id, len);
        return;
    }
    json = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json) {
        cfm_warn("replica", "dropped %s/%s/%s: not JSON: %s", t->system, t->name, t->id,
                 jerr.text);
        goto out;
    }
    if (cfm_obj_from_json(json, &in, &why) != CFM_OK) {
        cfm_warn("replica", "dropped %s/%s/%s: %s", t->system, t->name, t->id, why.text);
        goto out;
    }
    if (strcmp(in->system, t->system) != 0 || strcmp(cfm_kind_name(in->kind), t->name) != 0 ||
        strcmp(in->id, t->id) != 0) {
        cfm_warn("replica", "dropped %s/%s/%s: the payload names %s/%s/%s", t->system, t->name,
                 t->id, in->system, cfm_kind_name(in->kind), in->id);
        goto out;
    }
    if (in->version == 0 || !in->origin[0]) {
        cfm_warn("replica", "dropped %s/%s/%s: a replicated object needs a version and origin",
                 t->system, t->name, t->id);
        goto out;
    }
    if (in->version > r->clock + MAX_CLOCK_JUMP) {
        cfm_warn("replica", "dropped %s/%s/%s: version %llu is absurdly far ahead of this site's "
                 "clock %llu", t->system, t->name, t->id, (unsigned long long)in->version,
                 (unsigned long long)r->clock);
        goto out;
    }
    err = cfm_store_get(r->st, in->system, in->kind, in->id, &cur);
    if (err == CFM_OK && cfm_obj_cmp_version(in, cur) <= 0)
        goto out; /* already have it, or something newer: idempotent */
    if (err != CFM_OK && err != CFM_ENOTFOUND)
        goto out;
    if (cfm_store_begin(r->st) != CFM_OK)
        goto out;
    if (cfm_store_put(r->st, in) != CFM_OK ||
        (in->version > r->clock && cfm_store_clock_set(r->st, in->version) != CFM_OK) ||
        cfm_store_commit(r->st) != CFM_OK) {
        cfm_store_rollback(r->st);
        cfm_error("replica", "cannot apply %s/%s/%s", t->system, t->name, t->id);
        goto out;
    }
    if (in->version > r->clock)
        r->clock = in->version;
    cfm_failpoint("apply_object", "done"); /* applied; the read's transaction is still open */
    cfm_debug("replica", "applied %s/%s/%s v%llu from %s", t->system, t->name, t->id,
              (unsigned long long)in->version, in->origin);
    if (in->kind == CFM_KIND_BUSINESS_SYSTEM && r->on_system)
        r->on_system(r->arg, in);
out:
    cfm_obj_free(cur);
    cfm_obj_free(in);
    json_decref(json);
}
