/*
 * engine_timer.c - every timer of the engine (run deadlines, sleeps, wait
 * timeouts) in one binary heap behind one uv_timer_t.
 *
 * A uv_timer_t is 152 bytes and, for a wait, its own allocation closed
 * through the loop; with 10,000 runs waiting that was ~3 MB for timers that
 * almost never fire. A node here is 32 bytes inside the run or fiber that
 * owns it, and the heap holds pointers to the armed ones. Due times are the
 * loop's clock (uv_now) in ms, as libuv's own; nodes due at the same time
 * fire in the order they were started, as libuv's timers do, and a node
 * started from a callback with nothing left to wait fires in the same pass.
 */
#include "engine_int.h"

#include <stdlib.h>

static bool earlier(const struct cfm_tnode *a, const struct cfm_tnode *b)
{
    return a->due != b->due ? a->due < b->due : a->seq < b->seq;
}

/* Slots are 1-based in the nodes (0: not armed), 0-based in the array. */
static void place(struct cfm_engine *e, size_t i, struct cfm_tnode *t)
{
    e->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(struct cfm_engine *e, size_t i)
{
    struct cfm_tnode *t = e->heap[i];

    while (i > 0 && earlier(t, e->heap[(i - 1) / 2])) {
        place(e, i, e->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(e, i, t);
}

static void sift_down(struct cfm_engine *e, size_t i)
{
    struct cfm_tnode *t = e->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->nheap)
            break;
        if (c + 1 < e->nheap && earlier(e->heap[c + 1], e->heap[c]))
            c++;
        if (!earlier(e->heap[c], t))
            break;
        place(e, i, e->heap[c]);
        i = c;
    }
    place(e, i, t);
}

static void on_timer(uv_timer_t *h);

/* Arms the loop's timer for the earliest node, unless on_timer will. */
static void rearm(struct cfm_engine *e)
{
    uint64_t now, due;

    if (e->in_timers)
        return;
    if (e->nheap == 0) {
        uv_timer_stop(&e->timer);
        e->armed = false;
        return;
    }
    due = e->heap[0]->due;
    if (e->armed && due == e->armed_due)
        return;
    now = uv_now(e->loop);
    uv_timer_start(&e->timer, on_timer, due > now ? due - now : 0, 0);
    e->armed = true;
    e->armed_due = due;
}

static void on_timer(uv_timer_t *h)
{
    struct cfm_engine *e = h->data;
    uint64_t now = uv_now(e->loop);

    e->armed = false;
    e->in_timers = true;
    while (e->nheap && e->heap[0]->due <= now) {
        struct cfm_tnode *t = e->heap[0];
        cfm_engine__timer_stop(e, t);
        t->cb(t);
    }
    e->in_timers = false;
    rearm(e);
}

bool cfm_engine__timer_start(struct cfm_engine *e, struct cfm_tnode *t, uint64_t ms,
                             void (*cb)(struct cfm_tnode *t))
{
    cfm_engine__timer_stop(e, t);
    if (e->nheap == e->capheap) {
        size_t cap = e->capheap ? 2 * e->capheap : 64;
        struct cfm_tnode **p = realloc(e->heap, cap * sizeof *p);
        if (!p)
            return false;
        e->heap = p;
        e->capheap = cap;
    }
    /* At least ms from now: the loop's clock is read afresh (a turn taken at
     * the end of a long bus read would otherwise start from the time the
     * read began), and it counts whole milliseconds, so one more keeps a
     * timer from firing up to a millisecond early. */
    uv_update_time(e->loop);
    t->due = uv_now(e->loop) + ms + 1;
    if (t->due <= ms)
        t->due = UINT64_MAX; /* never, in practice */
    t->seq = ++e->tseq;
    t->cb = cb;
    e->heap[e->nheap] = t;
    sift_up(e, e->nheap++);
    rearm(e);
    return true;
}

void cfm_engine__timer_stop(struct cfm_engine *e, struct cfm_tnode *t)
{
    size_t i;
    struct cfm_tnode *last;

    if (!t->slot)
        return;
    i = t->slot - 1;
    t->slot = 0;
    last = e->heap[--e->nheap];
    if (last != t) {
        place(e, i, last);
        if (i > 0 && earlier(last, e->heap[(i - 1) / 2]))
            sift_up(e, i);
        else
            sift_down(e, i);
    }
    if (i == 0)
        rearm(e);
}
