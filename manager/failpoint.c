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
    bool pending;              /* reached inside a transaction: die at its commit */
    bool (*in_txn)(void *);
    void *txn_arg;
} fp;

static void die(const char *why)
{
    cfm_warn("failpoint", "CFM_FAILPOINT %s:%ld:%s reached (%s): SIGKILL", fp.call, fp.nth,
             fp.phase, why);
    fflush(stderr);
    raise(SIGKILL);
}

void cfm_failpoint_init(bool (*in_txn)(void *arg), void *arg)
{
    const char *v = getenv("CFM_FAILPOINT");
    char phase[16];
    int n = 0;

    fp.armed = false;
    fp.in_txn = in_txn;
    fp.txn_arg = arg;
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
    if (strcmp(phase, "journaled") == 0 && fp.in_txn && fp.in_txn(fp.txn_arg)) {
        fp.pending = true; /* the entry is written, not yet committed */
        return;
    }
    die(what);
}

void cfm_failpoint_committed(void)
{
    if (fp.pending)
        die("after the commit");
}
