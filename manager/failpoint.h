/*
 * failpoint.h - crash injection for the durability tests.
 *
 * With CFM_FAILPOINT=CALL:N:PHASE in its environment, the manager kills
 * itself with SIGKILL the N-th time (counting from 1) an API call named
 * CALL (run_vm, put_file, publish_cloud_event, cfm.save, wait_cloud_event,
 * sleep, ...) reaches PHASE:
 *
 *   sent       the call's effect was requested (driver, agent, bus) and
 *              nothing of its result is journaled
 *   done       the result is known, the model changes are about to be
 *              written with the journal entry
 *   journaled  the journal entry is committed (the kill comes right after
 *              the commit of the transaction that wrote it)
 *
 * and apply_object:N:done, the N-th object from another site applied, in
 * the transaction of the bus read it came in, not yet committed; and
 * event:N:done, the N-th event from the bus marked as seen and handed to
 * its runs, not yet committed (the broker has no PUBACK for it yet).
 *
 * Without the variable every failpoint is one comparison.
 */
#ifndef CFM_FAILPOINT_H
#define CFM_FAILPOINT_H

#include <stdbool.h>

/* Reads CFM_FAILPOINT; a malformed value is logged and ignored. in_txn
 * tells whether a store transaction is open (a "journaled" failpoint
 * reached inside one waits for cfm_failpoint_committed()). */
void cfm_failpoint_init(bool (*in_txn)(void *arg), void *arg);

/* The outermost transaction committed. */
void cfm_failpoint_committed(void);

/* what: the call ("run_vm small": its first word names it). */
void cfm_failpoint(const char *what, const char *phase);

#endif
