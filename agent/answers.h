/*
 * answers.h - the answers an agent gave, kept by request id so a repeated
 * request is answered again instead of run again, across restarts too.
 */
#ifndef CFM_AGENT_ANSWERS_H
#define CFM_AGENT_ANSWERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define CFM_AGENT_ANSWERS_KEPT 1000       /* answers kept, newest first */
#define CFM_AGENT_ANSWERS_DISK (256u << 20) /* bytes of answers kept on disk */
#define CFM_AGENT_ANSWERS_MEM (8u << 20)  /* bytes of answer text also kept in memory */
#define CFM_AGENT_MAX_ANSWER (64u << 20)  /* one answer read back from disk */
#define CFM_AGENT_INTERRUPTED \
    "the agent stopped while this request was running; its outcome is unknown"

struct cfm_agent_answers;

/* Opens the answers kept in dir (created with its parents if missing, 0700):
 * keeps the newest keep (CFM_AGENT_ANSWERS_KEPT; tests use less), removes
 * the rest and any temporary file a crash left, and answers every request that was running
 * when the agent last stopped (see mark_running) with CFM_AGENT_INTERRUPTED.
 * On success *out is released with cfm_agent_answers_free(). */
enum cfm_err cfm_agent_answers_open(const char *dir, size_t keep,
                                    struct cfm_agent_answers **out, struct cfm_why *why);

/* Frees the in-memory index (the files stay); NULL is allowed. */
void cfm_agent_answers_free(struct cfm_agent_answers *a);

/* Looks up the answer to id. CFM_OK: *text is a new NUL-terminated buffer
 * of *len bytes (the caller frees it). CFM_ENOTFOUND when id has none. */
enum cfm_err cfm_agent_answers_get(struct cfm_agent_answers *a, const char *id, char **text,
                                   size_t *len);

/* Keeps text (copied) as the answer to id, in memory and, when durable, on
 * disk (written atomically); clears id's running mark, and forgets the
 * oldest answers over the bounds. On a disk error the answer is still kept
 * in memory and why says what failed. An answer kept in memory only by
 * choice (not durable: its request changes nothing and may be made again)
 * is gone after a restart, and is the first forgotten when memory is short. */
enum cfm_err cfm_agent_answers_put(struct cfm_agent_answers *a, const char *id,
                                   const char *text, size_t len, bool durable,
                                   struct cfm_why *why);

/* Marks id as running on disk, so that an agent restarted after a crash
 * answers it with CFM_AGENT_INTERRUPTED instead of running it again. */
enum cfm_err cfm_agent_answers_mark_running(struct cfm_agent_answers *a, const char *id,
                                            struct cfm_why *why);

/* Returns the text of the answer {"id", "ok": true, ...result} when result
 * is not NULL (borrowed), else {"id", "ok": false, "error": error}, as a new
 * buffer (the caller frees it) of *len bytes; NULL when out of memory.
 * error may be any bytes: it is made valid UTF-8. */
char *cfm_agent_answer_text(const char *id, const json_t *result, const char *error,
                            size_t *len);

#endif
