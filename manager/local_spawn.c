/*
 * local_spawn.c - the blocking half of the local driver's run, done on
 * libuv's thread pool (uv_queue_work), so that the loop stays free while
 * agents start, and the runs of a recovery start theirs side by side.
 *
 * run (local_vms.c) decides everything on the loop (key, capacity, private
 * IP, VM id) and puts the VM in d->vms as PENDING; then it queues a job
 * (struct cfm_local_spawn) that holds its own copies of all the worker
 * needs: the VM's directory and log paths, its record, the agent's argv
 * and environment (environ is read on the loop). The worker (on_work, a
 * pool thread) makes the VM's directory and disk, writes the PENDING
 * record, posix_spawns the agent and writes the RUNNING record with its
 * pid; when a step fails it removes what it made, so a failed run leaves
 * nothing behind and its key may try again. It reads and writes the job
 * only: never d, never the VM struct, and it does not log (cfm_log reads a
 * level that SIGHUP changes on the loop) nor call strerror(3). on_done
 * (back on the loop) applies the result: the VM is RUNNING as our child,
 * or it leaves d->vms; then the run, and any run with the same key that
 * came meanwhile, is answered, and a terminate that came meanwhile starts.
 *
 * posix_spawn from a pool thread: glibc's clone(CLONE_VM | CLONE_VFORK)
 * suspends only the calling thread until the child has exec'd; the child's
 * signal mask and dispositions are set explicitly, whatever the thread's,
 * and it closes every descriptor above 2 before its exec (glibc's closefrom
 * action): a descriptor the loop holds without close-on-exec at that moment
 * (libmosquitto's socket has none; a procedure file being read) does not
 * leak into the agent.
 *
 * Lifetimes: the job is created and queued by cfm_local__spawn_start, is
 * vm->spawn while queued or running, and is freed by on_done, which libuv
 * always calls (with UV_ECANCELED when close cancelled it before it ran).
 * A VM whose spawn is in flight is not freed, not even by close (on_done
 * frees it then), so the driver, which waits for every VM (live_vms), is
 * not freed before every on_done has run.
 *
 * The one thing to know: from the queueing to on_done, the VM's directory
 * and records are the worker's; the loop writes neither (terminate waits,
 * attach and associate refuse, the reaper and the poll pass over a VM that
 * is PENDING and not yet our child).
 */
#include "driver_local_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

extern char **environ;

#define STATUS_INTERVAL "2" /* agents' --status-interval */
#define MAX_ARGV (10 + LOCAL_MAX_AGENT_ARGS)

struct cfm_local_spawn {
    uv_work_t work;                 /* work.data: the job */
    /* The loop's. */
    struct cfm_local_vm *vm;        /* whose run this is */
    struct cfm_local_reply *runs;   /* the run calls on_done answers, first one first */
    size_t nruns;
    /* The worker's: copied on the loop before the job is queued. */
    char dir[PATH_MAX];             /* <state_dir>/vms/<vm-id> */
    char log[PATH_MAX];             /* dir/agent.log */
    struct cfm_vm_info info;        /* the record: PENDING, RUNNING once started */
    char created[CFM_TIME_LEN];
    char **argv, **envp;            /* each one allocation: the pointers, then the strings */
    /* The worker's answer, read by on_done. */
    enum cfm_err err;
    struct cfm_why why;
    struct cfm_why note;            /* to log: a record not written, a file not removed */
    int pid;
};

/* ---- the job, on the loop ------------------------------------------------- */

/* The n strings of src (borrowed) copied into one new allocation: the
 * NULL-ended array of pointers, then the strings. free() it. NULL when out
 * of memory. */
static char **pack_strings(const char *const *src, size_t n)
{
    size_t bytes = (n + 1) * sizeof(char *);
    char **out;
    char *p;

    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(src[i]) + 1;
        if (len > SIZE_MAX - bytes)
            return NULL;
        bytes += len;
    }
    if (!(out = malloc(bytes)))
        return NULL;
    p = (char *)(out + n + 1);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(src[i]) + 1;
        memcpy(p, src[i], len);
        out[i] = p;
        p += len;
    }
    out[n] = NULL;
    return out;
}

/* The environment of an agent, copied: ours, with CFM_VM_IP set to ipvar
 * ("CFM_VM_IP=<ip>"). free() it; NULL when out of memory. */
static char **agent_env(const char *ipvar)
{
    size_t n = 0, k = 0;
    const char **env;
    char **out;

    while (environ[n] && n < LOCAL_MAX_ENV)
        n++;
    if (environ[n])
        cfm_warn("driver", "more than %d environment variables: the rest are not passed to agents",
                 LOCAL_MAX_ENV);
    if (!(env = calloc(n + 1, sizeof *env)))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CFM_VM_IP=", 10) != 0)
            env[k++] = environ[i];
    env[k++] = ipvar;
    out = pack_strings(env, k);
    free(env);
    return out;
}

/* The agent's command line, copied:
 *   <agent_path> --vm <id> --broker <HOST:PORT> --root <disk>
 *                --status-interval 2 --stop-vm-processes [agent_args...] */
static char **agent_argv(const struct cfm_driver *d, const struct cfm_local_vm *vm)
{
    const char *args[MAX_ARGV];
    size_t a = 0;

    args[a++] = d->agent_path;
    args[a++] = "--vm";
    args[a++] = vm->info.id;
    args[a++] = "--broker";
    args[a++] = d->broker;
    args[a++] = "--root";
    args[a++] = vm->info.disk;
    args[a++] = "--status-interval";
    args[a++] = STATUS_INTERVAL;
    args[a++] = "--stop-vm-processes"; /* the agent is the VM */
    for (size_t i = 0; i < d->nargs && a < MAX_ARGV; i++)
        args[a++] = d->agent_args[i];
    return pack_strings(args, a);
}

/* Frees the run calls waiting on job, unanswered (the driver closes). */
static void drop_runs(struct cfm_local_spawn *job)
{
    while (job->runs) {
        struct cfm_local_reply *r = job->runs;
        job->runs = r->next;
        free(r);
    }
    job->nruns = 0;
}

static void free_job(struct cfm_local_spawn *job)
{
    if (!job)
        return;
    drop_runs(job);
    free(job->argv);
    free(job->envp);
    free(job);
}

/* ---- the worker, on a pool thread ----------------------------------------- */

/* Removes what a failed spawn made: the new directory and all in it. */
static void undo(struct cfm_local_spawn *job)
{
    cfm_local__remove_vm_dir(job->dir, &job->note);
}

/* posix_spawn of the agent, in the child in order: stdin from /dev/null,
 * stdout and stderr appended to agent.log, every other descriptor closed,
 * the VM's directory as cwd; a session of its own; no signal blocked or
 * ignored (the manager's own dispositions are not the agent's). */
static enum cfm_err spawn_agent(struct cfm_local_spawn *job)
{
    posix_spawn_file_actions_t fa;
    char ebuf[LOCAL_ERRLEN];
    pid_t pid;
    int rc;

    if ((rc = posix_spawn_file_actions_init(&fa)) == 0) {
        if ((rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) == 0 &&
            (rc = posix_spawn_file_actions_addopen(&fa, 1, job->log,
                                                   O_WRONLY | O_CREAT | O_APPEND, 0644)) == 0 &&
            (rc = posix_spawn_file_actions_adddup2(&fa, 1, 2)) == 0 &&
            (rc = cfm_spawn_session(&pid, job->argv[0], &fa, job->dir, job->argv,
                                    job->envp)) == 0)
            job->pid = pid;
        posix_spawn_file_actions_destroy(&fa);
    }
    if (rc != 0)
        return cfm_why_set(&job->why, CFM_EIO, "cannot start '%s': %s", job->argv[0],
                           cfm_local__strerror(rc, ebuf));
    return CFM_OK;
}

static void on_work(uv_work_t *w)
{
    struct cfm_local_spawn *job = w->data;
    char ebuf[LOCAL_ERRLEN];

    /* A directory that exists is another's (a stray one whose record did
     * not read): never reused, never removed. */
    if (mkdir(job->dir, 0755) != 0) {
        job->err = cfm_why_set(&job->why, CFM_EIO, "cannot create '%s': %s", job->dir,
                               cfm_local__strerror(errno, ebuf));
        return;
    }
    if (mkdir(job->info.disk, 0755) != 0) {
        job->err = cfm_why_set(&job->why, CFM_EIO, "cannot create the disk of %s: %s",
                               job->info.id, cfm_local__strerror(errno, ebuf));
        undo(job);
        return;
    }
    if ((job->err = cfm_local__vm_write(job->dir, &job->info, job->created, 0, false,
                                        &job->why)) != CFM_OK ||
        (job->err = spawn_agent(job)) != CFM_OK) {
        undo(job);
        return;
    }
    /* Started: a RUNNING record that cannot be written is logged, not a
     * failure (the record in memory is the truth until the next save). */
    job->info.state = CFM_VM_RUNNING;
    cfm_local__vm_write(job->dir, &job->info, job->created, job->pid, false, &job->note);
}

/* ---- back on the loop --------------------------------------------------- */

/* Queues the answer of every run waiting on job: vm (NULL on failure) as it
 * is now, RUNNING, even if its agent's exit is reaped before the answer is
 * delivered (then a FAILED event follows it, as when the loop spawned).
 * Without memory for that snapshot, the VM as it is at delivery. */
static void answer_runs(struct cfm_driver *d, struct cfm_local_spawn *job,
                        struct cfm_local_vm *vm)
{
    while (job->runs) {
        struct cfm_local_reply *r = job->runs;
        job->runs = r->next;
        r->err = job->err;
        r->vm = vm;
        if (job->err != CFM_OK)
            r->why = job->why;
        else if ((r->snap = malloc(sizeof *r->snap)))
            *r->snap = vm->info;
        cfm_local__reply_push(d, r);
    }
}

/* A terminate that waited for a spawn that failed: there is no VM. */
static void answer_terminates(struct cfm_driver *d, struct cfm_local_vm *vm)
{
    while (vm->waiters) {
        struct cfm_local_reply *r = vm->waiters;
        vm->waiters = r->next;
        r->vm = NULL;
        r->err = cfm_why_set(&r->why, CFM_ENOTFOUND,
                             "no VM '%s' at site %s: its agent could not be started",
                             vm->info.id, d->site);
        cfm_local__reply_push(d, r);
    }
    vm->nwaiters = 0;
}

static void on_done(uv_work_t *w, int status)
{
    struct cfm_local_spawn *job = w->data;
    struct cfm_local_vm *vm = job->vm;
    struct cfm_driver *d = vm->d;

    vm->spawn = NULL;
    if (status == UV_ECANCELED) /* only close cancels: nothing was made */
        job->err = cfm_why_set(&job->why, CFM_EIO, "the driver closed before it started");
    if (job->note.text[0])
        cfm_error("driver", "%s: %s", vm->info.id, job->note.text);
    if (d->closing) {
        /* Not in d->vms any more, and nobody to answer; a started agent runs
         * on, recorded RUNNING: the next open re-adopts it. */
        if (job->err == CFM_OK)
            cfm_info("driver", "%s: agent started as pid %d while the driver closed; "
                               "left running",
                     vm->info.id, job->pid);
        free_job(job);
        cfm_local__drop_vm(vm);
        return;
    }
    if (job->err == CFM_OK) {
        cfm_local__agent_started(vm, job->pid);
        answer_runs(d, job, vm);
        free_job(job);
        cfm_local__after_spawn(vm);
        return;
    }
    /* Nothing was made (the worker removed it): the same key may try again. */
    cfm_error("driver", "run %s (key %s): %s", vm->info.id, vm->info.key, job->why.text);
    answer_runs(d, job, NULL);
    answer_terminates(d, vm);
    free_job(job);
    cfm_local__discard(vm);
}

enum cfm_err cfm_local__spawn_start(struct cfm_driver *d, struct cfm_local_vm *vm,
                                    struct cfm_local_reply *r, struct cfm_why *why)
{
    char ipvar[CFM_MAX_IP + 16];
    struct cfm_local_spawn *job = calloc(1, sizeof *job);
    enum cfm_err err;
    int rc;

    if (!job)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if (!cfm_local__pathf(job->dir, "%s/vms/%s", d->state_dir, vm->info.id) ||
        !cfm_local__pathf(job->log, "%s/agent.log", job->dir)) {
        err = cfm_why_set(why, CFM_EIO, "state_dir: too long");
        goto fail;
    }
    job->info = vm->info;
    memcpy(job->created, vm->created, sizeof job->created);
    snprintf(ipvar, sizeof ipvar, "CFM_VM_IP=%s", vm->info.private_ip);
    if (!(job->argv = agent_argv(d, vm)) || !(job->envp = agent_env(ipvar))) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto fail;
    }
    job->vm = vm;
    job->work.data = job;
    if ((rc = uv_queue_work(d->loop, &job->work, on_work, on_done)) != 0) {
        err = cfm_why_set(why, CFM_EIO, "cannot queue the spawn: %s", uv_strerror(rc));
        goto fail;
    }
    r->next = NULL;
    job->runs = r;
    job->nruns = 1;
    vm->spawn = job;
    return CFM_OK;
fail:
    free_job(job);
    return err;
}

enum cfm_err cfm_local__spawn_join(struct cfm_local_vm *vm, struct cfm_local_reply *r)
{
    struct cfm_local_spawn *job = vm->spawn;
    struct cfm_local_reply **tail = &job->runs;

    if (job->nruns >= LOCAL_MAX_WAITERS)
        return CFM_ETOOBIG;
    while (*tail)
        tail = &(*tail)->next;
    r->next = NULL;
    *tail = r;
    job->nruns++;
    return CFM_OK;
}

void cfm_local__spawn_abandon(struct cfm_local_vm *vm)
{
    struct cfm_local_spawn *job = vm->spawn;

    drop_runs(job); /* no callback runs after close */
    /* Not yet started: it never will (on_done gets UV_ECANCELED). Running
     * (UV_EBUSY): it finishes, and on_done leaves its agent running. */
    uv_cancel((uv_req_t *)&job->work);
}
