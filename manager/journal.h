/*
 * journal.h - durable procedure runs, the manager's side: a run's row and
 * its journal of API calls in the store, and the runs restored from them
 * when the manager starts (docs/procedures.md, Durability; the engine's
 * side is engine_replay.c).
 */
#ifndef CFM_JOURNAL_H
#define CFM_JOURNAL_H

#include "engine.h"
#include "err.h"
#include "store.h"

/* Engine host callbacks: a new run began; an entry of its journal; the run
 * ended (its row and journal go, unless it is resumable: then they stay,
 * marked "changed", for `cfmctl runs resume --force`). */
void cfm_journal_on_start(struct cfm_store *st, struct cfm_run *run);
void cfm_journal_put(struct cfm_store *st, struct cfm_run *run,
                     const struct cfm_journal_entry *entry);
void cfm_journal_on_end(struct cfm_store *st, struct cfm_run *run);

/* Restores every run left active in the store. Returns how many. */
size_t cfm_journal_restore_all(struct cfm_store *st, struct cfm_engine *e);

/* Replays run id again (an operator's `runs resume`): refused unless it is
 * held in the store and not active; a run whose procedure changed needs
 * force. */
enum cfm_err cfm_journal_resume(struct cfm_store *st, struct cfm_engine *e, const char *id,
                                bool force, struct cfm_why *why);

#endif
