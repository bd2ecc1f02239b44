/*
 * httpwait.h - the http_get request as the agent serves it: one GET
 * (httpget.c), or, with "retry_for_ms", the same GET made again until it
 * answers 2xx or 3xx or that time is over -- waiting for a service that is
 * starting, from inside the VM, without a round trip to the manager per
 * try.
 */
#ifndef CFM_AGENT_HTTPWAIT_H
#define CFM_AGENT_HTTPWAIT_H

#include <jansson.h>
#include <uv.h>

#include "err.h"
#include "httpget.h"

#define CFM_AGENT_HTTP_MAX_RETRY_MS 600000 /* ten minutes */
#define CFM_AGENT_HTTP_FIRST_PAUSE_MS 1    /* between the first two tries */
#define CFM_AGENT_HTTP_MAX_PAUSE_MS 50     /* the pause doubles up to this */

struct cfm_agent_httpwait;

/* Starts the GET req describes: {"url", "timeout_ms", "max_body"} as
 * cfm_agent_http_start takes them, and "retry_for_ms" (0 to
 * CFM_AGENT_HTTP_MAX_RETRY_MS, default 0: one try). With retry_for_ms, a try
 * that gets no 2xx/3xx answer (refused, no answer, 503, ...) is made again
 * after a pause of 1 ms, doubling to 50 ms, as long as the next try starts
 * within retry_for_ms of the first; each try has its own timeout_ms. The
 * result is the last try's, with "attempts" (the tries made) and
 * "duration_ms" over all of them. done, *out and why as for
 * cfm_agent_http_start (done is never called before this returns). */
enum cfm_err cfm_agent_httpwait_start(uv_loop_t *loop, const json_t *req,
                                      cfm_agent_http_done done, void *arg,
                                      struct cfm_agent_httpwait **out, struct cfm_why *why);

/* Stops it (the agent is stopping): a try in flight is aborted (its result
 * says CFM_AGENT_HTTP_STOPPED), a pause ends with the last try's result and
 * that error. Safe to call more than once until done is called. */
void cfm_agent_httpwait_abort(struct cfm_agent_httpwait *w);

#endif
