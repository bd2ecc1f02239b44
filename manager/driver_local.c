/*
 * driver_local.c - the "local" cloud: a VM is a cfm-agent process on this
 * machine (docs/drivers.md). This file holds its ops table, the queue every
 * answer goes through, and open/close; the rest is in the local_*.c files
 * named in driver_local_int.h.
 *
 * Each VM has a directory <state_dir>/vms/<vm-id>/ holding its record
 * (vm.json, written atomically), its disk (disk/, the agent's --root) and
 * its agent's output (agent.log). Its private IP is a loopback address of
 * the site's /24 (127.77.x by default), given to the agent as CFM_VM_IP;
 * public addresses come from a pool and stay bound to (system, address id)
 * in addresses.json. A volume is a directory that lives inside the disk of
 * the VM it is attached to (disk/volumes/<id>/) and at its home,
 * <state_dir>/volumes/<system>/<id>/, while detached.
 *
 * Agents are spawned detached (posix_spawn, their own session and process
 * group), on libuv's thread pool with the rest of what blocks in a run
 * (local_spawn.c): a VM never keeps the loop alive and outlives the
 * manager. Open re-adopts the VMs of vm.json files: a running one whose pid
 * is still a cfm-agent for that VM (by /proc/<pid>/cmdline) is watched by a
 * 1-second poll; the others are FAILED. Our own children are reaped on
 * SIGCHLD (an unref'd uv_signal_t).
 *
 * The one thing to know: no callback ever runs inside a driver call. Every
 * answer and event goes through one queue drained by a zero-timeout timer,
 * so callers may call the driver (or close it) from any callback. The
 * driver is freed once its handles are closed and every VM is freed, which
 * for a VM being spawned is when its work has come back from the pool.
 */
#include "driver_local_int.h"

#include <signal.h>
#include <stdlib.h>

#include "log.h"

#define POLL_MS 1000 /* re-adopted VMs: liveness poll */

/* ---- the answer queue -------------------------------------------------- */

struct cfm_local_reply *cfm_local__reply_new(enum cfm_local_reply_kind kind, void *arg)
{
    struct cfm_local_reply *r = calloc(1, sizeof *r);

    if (r) {
        r->kind = kind;
        r->arg = arg;
    }
    return r;
}

static void free_replies(struct cfm_local_reply *r)
{
    while (r) {
        struct cfm_local_reply *next = r->next;
        free(r->list);
        free(r->snap);
        free(r);
        r = next;
    }
}

static void on_reply(uv_timer_t *t)
{
    struct cfm_driver *d = t->data;
    struct cfm_vm_info snap;
    struct cfm_local_reply *r;

    /* A callback may call the driver (queueing more) or close it. */
    while (!d->closing && (r = d->head)) {
        d->head = r->next;
        if (!d->head)
            d->tail = NULL;
        switch (r->kind) {
        case LOCAL_REPLY_VM:
            if (r->err == CFM_OK) {
                snap = r->snap ? *r->snap : r->vm->info;
                r->vm_cb(r->arg, CFM_OK, &snap, "");
            } else {
                r->vm_cb(r->arg, r->err, NULL, r->why.text);
            }
            break;
        case LOCAL_REPLY_LIST: r->list_cb(r->arg, r->list, r->nlist); break;
        case LOCAL_REPLY_EVENT:
            snap = r->vm->info;
            if (d->on_event)
                d->on_event(d->arg, &snap);
            break;
        }
        free(r->list);
        free(r->snap);
        free(r);
    }
}

void cfm_local__reply_push(struct cfm_driver *d, struct cfm_local_reply *r)
{
    r->next = NULL;
    if (d->tail)
        d->tail->next = r;
    else
        d->head = r;
    d->tail = r;
    /* Cannot fail: the timer is initialised and on_reply is set. */
    uv_timer_start(&d->reply_timer, on_reply, 0, 0);
}

/* ---- lifetime ------------------------------------------------------------ */

void cfm_local__free_vm(struct cfm_local_vm *vm)
{
    struct cfm_driver *d = vm->d;

    free_replies(vm->waiters);
    free(vm);
    d->live_vms--;
}

static void free_driver_now(struct cfm_driver *d)
{
    for (size_t i = 0; i < d->nargs; i++)
        free(d->agent_args[i]);
    free(d->agent_args);
    free(d->pool);
    free(d->addrs);
    free(d->vms);
    free(d);
}

static void maybe_free_driver(struct cfm_driver *d)
{
    if (d->closing && d->handles == 0 && d->live_vms == 0)
        free_driver_now(d);
}

void cfm_local__drop_vm(struct cfm_local_vm *vm)
{
    struct cfm_driver *d = vm->d;

    cfm_local__free_vm(vm);
    maybe_free_driver(d);
}

void cfm_local__on_vm_handle_closed(uv_handle_t *h)
{
    struct cfm_local_vm *vm = h->data;

    if (--vm->handles == 0 && (vm->d->closing || vm->discarded))
        cfm_local__drop_vm(vm);
}

/* ---- the ops ---------------------------------------------------------------- */

/* A LOCAL_REPLY_VM for cb, or NULL (then *err says why: no cb, or no memory). */
static struct cfm_local_reply *vm_reply(cfm_driver_vm_cb cb, void *arg, enum cfm_err *err)
{
    struct cfm_local_reply *r;

    *err = cb ? CFM_ENOMEM : CFM_EINVAL;
    if (!cb || !(r = cfm_local__reply_new(LOCAL_REPLY_VM, arg)))
        return NULL;
    r->vm_cb = cb;
    *err = CFM_OK;
    return r;
}

/* attach, detach, associate, disassociate: op's answer, queued for cb. */
static enum cfm_err queue_vm_op(struct cfm_driver *d, cfm_local_vm_op op, const char *vm_id,
                                const char *what, const char *key, cfm_driver_vm_cb cb,
                                void *arg)
{
    enum cfm_err err;
    struct cfm_local_reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = op(d, vm_id, what, key, &r->vm, &r->why);
    cfm_local__reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_run(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                              cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct cfm_local_reply *r = vm_reply(cb, arg, &err);
    bool wait;

    if (!r)
        return err;
    r->err = cfm_local__run(d, spec, r, &wait);
    if (!wait)
        cfm_local__reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_describe(struct cfm_driver *d, const char *vm_id, cfm_driver_vm_cb cb,
                                   void *arg)
{
    enum cfm_err err;
    struct cfm_local_reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = cfm_local__find_vm(d, vm_id, &r->vm, &r->why);
    cfm_local__reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_attach(struct cfm_driver *d, const char *vm_id, const char *volume_id,
                                 const char *key, cfm_driver_vm_cb cb, void *arg)
{
    return queue_vm_op(d, cfm_local__attach, vm_id, volume_id, key, cb, arg);
}

static enum cfm_err local_detach(struct cfm_driver *d, const char *vm_id, const char *volume_id,
                                 const char *key, cfm_driver_vm_cb cb, void *arg)
{
    return queue_vm_op(d, cfm_local__detach, vm_id, volume_id, key, cb, arg);
}

static enum cfm_err local_associate(struct cfm_driver *d, const char *vm_id,
                                    const char *address_id, const char *key,
                                    cfm_driver_vm_cb cb, void *arg)
{
    return queue_vm_op(d, cfm_local__associate, vm_id, address_id, key, cb, arg);
}

static enum cfm_err local_disassociate(struct cfm_driver *d, const char *vm_id,
                                       const char *address_id, const char *key,
                                       cfm_driver_vm_cb cb, void *arg)
{
    return queue_vm_op(d, cfm_local__disassociate, vm_id, address_id, key, cb, arg);
}

static enum cfm_err local_terminate(struct cfm_driver *d, const char *vm_id, const char *key,
                                    cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct cfm_local_reply *r = vm_reply(cb, arg, &err);
    bool wait;

    if (!r)
        return err;
    r->err = cfm_local__terminate(d, vm_id, key, r, &wait);
    if (!wait)
        cfm_local__reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_list(struct cfm_driver *d, cfm_driver_list_cb cb, void *arg)
{
    struct cfm_local_reply *r;

    if (!cb)
        return CFM_EINVAL;
    if (!(r = cfm_local__reply_new(LOCAL_REPLY_LIST, arg)))
        return CFM_ENOMEM;
    r->list_cb = cb;
    if (d->nvms > 0 && !(r->list = calloc(d->nvms, sizeof *r->list))) {
        free(r);
        return CFM_ENOMEM;
    }
    for (size_t i = 0; i < d->nvms; i++)
        r->list[i] = d->vms[i]->info;
    r->nlist = d->nvms;
    cfm_local__reply_push(d, r);
    return CFM_OK;
}

/* ---- open and close ------------------------------------------------------------ */

static void on_driver_timer_closed(uv_handle_t *h)
{
    struct cfm_driver *d = h->data;

    d->handles--;
    maybe_free_driver(d);
}

/* Stops watching and frees once every handle is closed and every spawn
 * has come back; VMs keep running and queued answers are dropped (no
 * callback runs after close). */
static void local_close(struct cfm_driver *d)
{
    if (!d || d->closing)
        return;
    d->closing = true;
    free_replies(d->head);
    d->head = d->tail = NULL;
    for (size_t i = 0; i < d->nvms; i++) {
        struct cfm_local_vm *vm = d->vms[i];
        free_replies(vm->waiters);
        vm->waiters = NULL;
        vm->child = false; /* runs on, unwatched, as after a manager exit */
        if (vm->timer_open) {
            vm->timer_open = false;
            uv_close((uv_handle_t *)&vm->term_timer, cfm_local__on_vm_handle_closed);
        }
        if (vm->spawn)
            cfm_local__spawn_abandon(vm); /* freed when its work comes back */
        else if (vm->handles == 0)
            cfm_local__free_vm(vm);
    }
    d->nvms = 0;
    if (d->timers_open) {
        uv_close((uv_handle_t *)&d->reply_timer, on_driver_timer_closed);
        uv_close((uv_handle_t *)&d->poll_timer, on_driver_timer_closed);
        uv_close((uv_handle_t *)&d->sigchld, on_driver_timer_closed);
    }
    maybe_free_driver(d);
}

/* Checks the config, reads what the state directory holds and re-adopts it:
 * agents still there run on, the others are FAILED (reported from the loop,
 * after open returned), and every volume is put where its record says. */
static enum cfm_err local_open(const struct cfm_driver_env *env, const json_t *config,
                               struct cfm_driver **out, struct cfm_why *why)
{
    struct cfm_driver *d;
    enum cfm_err err;

    if (!env || !out)
        return cfm_why_set(why, CFM_EINVAL, "no environment");
    if (!(d = calloc(1, sizeof *d)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if ((err = cfm_local__parse_env(d, env, why)) != CFM_OK ||
        (err = cfm_local__parse_config(d, config, why)) != CFM_OK ||
        (err = cfm_local__addrs_load(d, why)) != CFM_OK ||
        (err = cfm_local__load_vms(d, why)) != CFM_OK) {
        for (size_t i = 0; i < d->nvms; i++)
            free(d->vms[i]);
        free_driver_now(d);
        return err;
    }
    uv_timer_init(d->loop, &d->reply_timer);
    uv_timer_init(d->loop, &d->poll_timer);
    uv_signal_init(d->loop, &d->sigchld);
    d->reply_timer.data = d->poll_timer.data = d->sigchld.data = d;
    d->handles = 3;
    d->timers_open = true;
    uv_timer_start(&d->poll_timer, cfm_local__on_poll, POLL_MS, POLL_MS);
    uv_unref((uv_handle_t *)&d->poll_timer); /* watching is not work */
    uv_signal_start(&d->sigchld, cfm_local__on_sigchld, SIGCHLD);
    uv_unref((uv_handle_t *)&d->sigchld);
    for (size_t i = 0; i < d->nvms;) {
        if (cfm_local__readopt(d->vms[i]))
            i++;
        else
            cfm_local__discard(d->vms[i]); /* a run cut short: nothing kept */
    }
    cfm_local__settle_volumes(d);
    cfm_info("driver", "local driver of site %s: %zu VMs known, net %s.0/24, capacity %d CPU "
                       "and %d MiB, %zu public addresses",
             d->site, d->nvms, d->net, d->cap_cpu, d->cap_memory_mb, d->npool);
    *out = d;
    return CFM_OK;
}

const struct cfm_driver_ops cfm_driver_local_ops = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .run = local_run,
    .describe = local_describe,
    .terminate = local_terminate,
    .list = local_list,
    .attach_volume = local_attach,
    .detach_volume = local_detach,
    .associate_address = local_associate,
    .disassociate_address = local_disassociate,
};
