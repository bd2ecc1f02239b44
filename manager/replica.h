/*
 * replica.h - model replication: local writes and the merge of writes from
 * other sites (docs/federation.md).
 *
 * A local write bumps the Lamport clock, stores the object and queues its
 * retained message in the outbox, all in one SQLite transaction; the message
 * leaves the outbox when the broker acknowledges it. A remote write is kept
 * when its (version, origin) is greater than the stored one, so every site
 * ends with the same winner whatever the order of arrival.
 */
#ifndef CFM_REPLICA_H
#define CFM_REPLICA_H

#include <stddef.h>

#include "bus.h"
#include "err.h"
#include "obj.h"
#include "store.h"
#include "sysdesc.h"
#include "topic.h"

struct cfm_replica;

/* Called after a BusinessSystem object changed (locally or from a peer), so
 * the manager can renew its subscriptions. obj is borrowed. */
typedef void (*cfm_replica_system_fn)(void *arg, const struct cfm_obj *obj);

/* Creates the replica of site over st and bus (both borrowed, outliving it),
 * loading the clock and queueing every message left in the outbox by an
 * earlier run. *out is freed with cfm_replica_free(). */
enum cfm_err cfm_replica_new(struct cfm_store *st, struct cfm_bus *bus, const char *site,
                             cfm_replica_system_fn on_system, void *arg,
                             struct cfm_replica **out, struct cfm_why *why);

/* NULL is allowed. */
void cfm_replica_free(struct cfm_replica *r);

/* Writes objs (borrowed; each one's version, origin and updated are set on
 * return) in one transaction: all or nothing. */
enum cfm_err cfm_replica_write(struct cfm_replica *r, struct cfm_obj *const *objs, size_t n,
                               struct cfm_why *why);

struct cfm_load_result {
    size_t created, updated, deleted, unchanged;
};

/* Applies a system description: objects whose content changed are written,
 * identical ones left alone, declared objects the description no longer has
 * are deleted; runtime kinds are not touched. One transaction. Refused when
 * this site is not among the system's sites. */
enum cfm_err cfm_replica_load(struct cfm_replica *r, const struct cfm_sysdesc *desc,
                              struct cfm_load_result *res, struct cfm_why *why);

/* A retained object message arrived on topic t (parsed, type CFM_TOPIC_OBJ).
 * Invalid input is dropped with a logged reason and never applied. */
void cfm_replica_on_obj(struct cfm_replica *r, const struct cfm_topic *t, const void *payload,
                        size_t len);

/* Publishes text (len bytes) on topic, QoS 1, through the outbox: it is
 * committed before it is sent and re-sent after a crash until the broker
 * acknowledges it. */
enum cfm_err cfm_replica_publish(struct cfm_replica *r, const char *topic, const char *text,
                                 size_t len, bool retain);

/* Makes one transaction of the writes and publishes until the matching
 * commit (nestable): their messages are sent only once it has committed,
 * and dropped with a rollback. */
enum cfm_err cfm_replica_begin(struct cfm_replica *r);
enum cfm_err cfm_replica_commit(struct cfm_replica *r);
void cfm_replica_rollback(struct cfm_replica *r);

/* The broker acknowledged publish mid. Its outbox row is deleted at once
 * inside a transaction; otherwise with the next transaction that begins
 * (cfm_replica_begin), or by cfm_replica_flush_acks: a DELETE joins a
 * commit that happens anyway. A crash in between sends the message again
 * at the next start, which receivers take as the duplicate it is. */
void cfm_replica_on_ack(struct cfm_replica *r, int mid, bool ok);

/* Deletes the acknowledged rows still kept, in a transaction of their own
 * (nothing inside a transaction: the next begin takes them). For a timer
 * shortly after acknowledgements; cfm_replica_acks_kept says whether rows
 * wait. */
void cfm_replica_flush_acks(struct cfm_replica *r);
bool cfm_replica_acks_kept(const struct cfm_replica *r);

/* Messages waiting for an acknowledgement (for status and tests). */
size_t cfm_replica_pending(const struct cfm_replica *r);

#endif
