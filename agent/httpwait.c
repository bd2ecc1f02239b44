/*
 * httpwait.c - http_get with "retry_for_ms": the GET of httpget.c made
 * again, after a short pause, until it answers 2xx/3xx or the time is
 * over. A procedure waiting for a service it just started asks once and
 * the agent polls on its own loop: a try against a port nobody listens on
 * yet costs a refused connection on the VM, not a request and an answer
 * through the broker and a journal entry at the manager, and the service
 * is seen up within a millisecond or two instead of at the procedure's
 * next poll.
 *
 * Lifetime: the struct owns its timer (the pause) and at most one try in
 * flight. It ends by closing the timer; done is called from the close
 * callback, so never from inside start or abort, and the struct is freed
 * right after.
 */
#include "httpwait.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "text.h"

struct cfm_agent_httpwait {
    uv_loop_t *loop;
    uv_timer_t timer;
    json_t *req;                /* the request, for every try */
    struct cfm_agent_http *try; /* the try in flight, or NULL during a pause */
    json_t *last;               /* the last try's result */
    const char *error;          /* set when there is no result to give (out of memory) */
    uint64_t started_ms, retry_for_ms, pause_ms;
    unsigned attempts;
    bool stopping, over;
    cfm_agent_http_done done;
    void *arg;
};

static bool answered_ok(const json_t *result)
{
    json_int_t status = json_integer_value(json_object_get(result, "status"));

    return status >= 200 && status < 400;
}

static void on_closed(uv_handle_t *hd)
{
    struct cfm_agent_httpwait *w = hd->data;

    w->done(w->arg, w->error ? NULL : w->last, w->error);
    json_decref(w->last);
    json_decref(w->req);
    free(w);
}

/* The end: the last result, with the tries and the whole duration when
 * retrying, goes to done once the timer is closed. */
static void conclude(struct cfm_agent_httpwait *w)
{
    if (w->over)
        return;
    w->over = true;
    if (w->last && w->retry_for_ms > 0 &&
        (json_object_set_new(w->last, "attempts", json_integer(w->attempts)) != 0 ||
         json_object_set_new(w->last, "duration_ms",
                             json_integer((json_int_t)(uv_now(w->loop) - w->started_ms))) != 0))
        w->error = "out of memory building the result";
    if (!w->last && !w->error)
        w->error = "out of memory building the result";
    uv_close((uv_handle_t *)&w->timer, on_closed);
}

static void on_pause(uv_timer_t *t);

static void on_try(void *arg, const json_t *result, const char *error)
{
    struct cfm_agent_httpwait *w = arg;
    uint64_t now = uv_now(w->loop);

    w->try = NULL;
    json_decref(w->last);
    w->last = result ? json_incref((json_t *)result) : NULL;
    if (!result) {
        w->error = error;
        conclude(w);
        return;
    }
    if (w->stopping || answered_ok(result) ||
        now + w->pause_ms > w->started_ms + w->retry_for_ms) {
        conclude(w);
        return;
    }
    uv_timer_start(&w->timer, on_pause, w->pause_ms, 0);
    w->pause_ms = w->pause_ms * 2 < CFM_AGENT_HTTP_MAX_PAUSE_MS ? w->pause_ms * 2
                                                                : CFM_AGENT_HTTP_MAX_PAUSE_MS;
}

/* The next try, after a pause. The request was checked by the first try,
 * so it starts unless memory is short. */
static void on_pause(uv_timer_t *t)
{
    struct cfm_agent_httpwait *w = t->data;
    struct cfm_why why = {{0}};

    w->attempts++;
    if (cfm_agent_http_start(w->loop, w->req, on_try, w, &w->try, &why) != CFM_OK) {
        json_decref(w->last);
        w->last = json_pack("{s:i, s:s}", "status", 0, "error", why.text);
        conclude(w);
    }
}

enum cfm_err cfm_agent_httpwait_start(uv_loop_t *loop, const json_t *req,
                                      cfm_agent_http_done done, void *arg,
                                      struct cfm_agent_httpwait **out, struct cfm_why *why)
{
    struct cfm_agent_httpwait *w;
    json_int_t retry_for_ms = 0;
    enum cfm_err err;

    if (out)
        *out = NULL;
    if ((err = cfm_agent_req_int(req, "retry_for_ms", 0, 0, CFM_AGENT_HTTP_MAX_RETRY_MS,
                                 &retry_for_ms, why)) != CFM_OK)
        return err;
    if (!(w = calloc(1, sizeof *w)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    w->loop = loop;
    w->req = json_incref((json_t *)req);
    w->retry_for_ms = (uint64_t)retry_for_ms;
    w->pause_ms = CFM_AGENT_HTTP_FIRST_PAUSE_MS;
    w->done = done;
    w->arg = arg;
    uv_update_time(loop);
    w->started_ms = uv_now(loop);
    w->attempts = 1;
    if ((err = cfm_agent_http_start(loop, req, on_try, w, &w->try, why)) != CFM_OK) {
        json_decref(w->req);
        free(w);
        return err;
    }
    uv_timer_init(loop, &w->timer); /* cannot fail */
    w->timer.data = w;
    if (out)
        *out = w;
    return CFM_OK;
}

void cfm_agent_httpwait_abort(struct cfm_agent_httpwait *w)
{
    if (w->over || w->stopping)
        return;
    w->stopping = true;
    if (w->try) {
        cfm_agent_http_abort(w->try); /* its end concludes */
        return;
    }
    uv_timer_stop(&w->timer);
    if (w->last && json_object_set_new(w->last, "error", json_string(CFM_AGENT_HTTP_STOPPED)))
        w->error = "out of memory building the result";
    conclude(w);
}
