/*
 * failpoint.c - crash injection (failpoint.h).
 */
#include "failpoint.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static struct {
    bool armed;
    char call[64];
    char phase[16];
    long nth;
    long hits;
    uv_loop_t *loop;
    uv_timer_t timer;
} fp;

static void die(const char *why)
{
    cfm_warn("failpoint", "CFM_FAILPOINT %s:%ld:%s reached (%s): SIGKILL", fp.call, fp.nth,
             fp.phase, why);
    fflush(stderr);
    raise(SIGKILL);
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    die("after the commit");
}

void cfm_failpoint_init(uv_loop_t *loop)
{
    const char *v = getenv("CFM_FAILPOINT");
    char phase[16];
    int n = 0;

    fp.armed = false;
    if (!v || !*v)
        return;
    if (sscanf(v, "%63[^:]:%ld:%15s%n", fp.call, &fp.nth, phase, &n) != 3 ||
        (size_t)n != strlen(v) || fp.nth < 1 ||
        (strcmp(phase, "sent") && strcmp(phase, "done") && strcmp(phase, "journaled"))) {
        cfm_error("failpoint", "CFM_FAILPOINT '%s' ignored: expected CALL:N:sent|done|journaled",
                  v);
        return;
    }
    snprintf(fp.phase, sizeof fp.phase, "%s", phase);
    fp.loop = loop;
    fp.hits = 0;
    fp.armed = true;
    cfm_warn("failpoint", "armed: SIGKILL at %s number %ld, phase %s", fp.call, fp.nth,
             fp.phase);
}

void cfm_failpoint(const char *what, const char *phase)
{
    size_t len;

    if (!fp.armed || strcmp(phase, fp.phase) != 0)
        return;
    len = strcspn(what, " ");
    if (len != strlen(fp.call) || strncmp(what, fp.call, len) != 0 || ++fp.hits != fp.nth)
        return;
    fp.armed = false;
    if (strcmp(phase, "journaled") != 0 || !fp.loop) {
        die(what);
        return;
    }
    /* Timers run first in the next loop turn: after this turn's commit,
     * before any fiber resumes. */
    uv_timer_init(fp.loop, &fp.timer);
    uv_timer_start(&fp.timer, on_timer, 0, 0);
}
