/*
 * local_procs.c - the agent processes behind the local driver's VMs:
 * noticing their deaths, and terminating them. (They are started by
 * local_spawn.c, on libuv's thread pool.)
 *
 * An agent runs in a session and process group of its own, so it does not
 * die with the manager. Our children's deaths come from SIGCHLD (a
 * uv_signal_t) and waitpid on their pids only, never waitpid(-1), so
 * libuv's own children are left to libuv; re-adopted agents (not our
 * children) are checked by a 1-second poll: kill(pid, 0) and
 * /proc/<pid>/cmdline naming "--vm <vm-id>". A death not asked for makes
 * the VM FAILED, reported through on_event. Terminate is SIGTERM to the
 * process group, a 100 ms check, SIGKILL after 3 s, and an answer once the
 * process is gone (or given up on, logged, 7 s later).
 *
 * A VM whose agent is being spawned is PENDING and not yet our child: the
 * reaper and the poll pass over it, and a terminate waits in its waiters
 * until the spawn is done (cfm_local__after_spawn starts it then). An agent
 * that exited before its pid was known here is reaped then too.
 *
 * The one thing to know: a pid is signalled only while it is still the
 * VM's agent (our child, or a process whose command line names the VM),
 * never a pid reused by someone else, never 0 or 1.
 */
#include "driver_local_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define TERM_TICK_MS 100           /* a terminating VM: check it is gone */
#define TERM_KILL_MS 3000          /* SIGKILL after this long */
#define TERM_GIVE_UP_MS 10000      /* then give up waiting (logged) */

/* True when pid's command line has "--vm" followed by id. A zombie's (or
 * a process's still in its exec) reads empty: false; *empty says so. */
static bool cmdline_read(int pid, const char *id, bool *empty)
{
    char path[64], buf[LOCAL_MAX_CMDLINE];
    const char *prev = "";
    size_t len = 0;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return false;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    *empty = len == 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
        if (strcmp(prev, "--vm") == 0 && strcmp(buf + i, id) == 0)
            return true;
        prev = buf + i;
    }
    return false;
}

#define EXEC_WAIT_TRIES 50 /* 1 ms each: a process caught inside its exec */

/* pid's command line names VM id. A process that has just been spawned
 * may still be inside its exec, its command line not yet readable (the
 * kernel lets posix_spawn return before then): that is waited for, a
 * millisecond at a time, up to 50; a zombie's stays empty and is not, nor
 * a kernel thread's (one that reused the agent's pid). */
static bool cmdline_names(int pid, const char *id)
{
    bool empty = false;

    for (int i = 0; i < EXEC_WAIT_TRIES; i++) {
        if (cmdline_read(pid, id, &empty))
            return true;
        if (!empty || cfm_pid_zombie(pid) || cfm_pid_kthread(pid) || kill(pid, 0) != 0)
            return false;
        uv_sleep(1);
    }
    return false;
}

/* True when pid is alive and is a cfm-agent for this VM: its command line
 * has "--vm" followed by the VM's id. A reused pid, or a zombie (whose
 * command line is empty), is not. */
static bool agent_alive(const struct cfm_local_vm *vm)
{
    if (vm->pid <= 1 || (kill(vm->pid, 0) != 0 && errno != EPERM))
        return false;
    return cmdline_names(vm->pid, vm->info.id);
}

/* The pid of a live cfm-agent for vm, looked for among every process by
 * its command line; 0 when there is none. */
static int find_agent(const struct cfm_local_vm *vm)
{
    struct dirent *e;
    int found = 0;
    DIR *dp = opendir("/proc");

    if (!dp) {
        cfm_warn("driver", "%s: cannot read /proc: %s", vm->info.id, strerror(errno));
        return 0;
    }
    while (!found && (e = readdir(dp))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        bool empty; /* kernel threads' too: not waited for in a scan */
        if (*end == '\0' && pid > 1 && pid <= INT_MAX &&
            cmdline_read((int)pid, vm->info.id, &empty))
            found = (int)pid;
    }
    closedir(dp);
    return found;
}

/* Signals the VM's process group; for a process we did not spawn, only
 * after checking the pid is still its agent (never a stranger's group). */
static void signal_group(struct cfm_local_vm *vm, int sig)
{
    if (vm->pid <= 1 || (!vm->child && !agent_alive(vm)))
        return;
    if (kill(-vm->pid, sig) != 0 && kill(vm->pid, sig) != 0 && errno != ESRCH)
        cfm_warn("driver", "%s: cannot signal pid %d: %s", vm->info.id, vm->pid,
                 strerror(errno));
}

static void mark_failed(struct cfm_local_vm *vm, const char *reason)
{
    struct cfm_driver *d = vm->d;
    struct cfm_local_reply *r = cfm_local__reply_new(LOCAL_REPLY_EVENT, NULL);

    vm->info.state = CFM_VM_FAILED;
    cfm_local__vm_save_or_log(d, vm);
    cfm_warn("driver", "%s (system %s) failed: %s", vm->info.id, vm->info.system, reason);
    if (!r) {
        cfm_error("driver", "%s: out of memory, its failure is not reported as an event",
                  vm->info.id);
        return;
    }
    r->vm = vm;
    cfm_local__reply_push(d, r);
}

/* The process is gone (or given up on): free what the VM held, record it
 * TERMINATED and answer every terminate call waiting for it. */
static void finish_terminate(struct cfm_local_vm *vm)
{
    struct cfm_driver *d = vm->d;

    cfm_local__release_volumes(vm);
    vm->info.nvolumes = 0;
    vm->info.private_ip[0] = vm->info.public_ip[0] = vm->info.address_id[0] = '\0';
    vm->info.state = CFM_VM_TERMINATED;
    vm->terminating = vm->killed = false;
    vm->pid = 0;
    if (vm->timer_open)
        uv_timer_stop(&vm->term_timer);
    cfm_local__vm_save_or_log(d, vm);
    cfm_info("driver", "%s (system %s) terminated", vm->info.id, vm->info.system);
    while (vm->waiters) {
        struct cfm_local_reply *r = vm->waiters;
        vm->waiters = r->next;
        r->vm = vm;
        cfm_local__reply_push(d, r);
    }
    vm->nwaiters = 0;
}

/* Our child vm's agent exited with wait status st (reaped). */
static void child_exited(struct cfm_local_vm *vm, int st)
{
    char reason[96];

    vm->child = false;
    if (vm->info.state == CFM_VM_TERMINATED || vm->info.state == CFM_VM_FAILED)
        return;
    if (vm->terminating) {
        finish_terminate(vm);
        return;
    }
    if (WIFSIGNALED(st))
        snprintf(reason, sizeof reason, "its agent (pid %d) was killed by signal %d", vm->pid,
                 WTERMSIG(st));
    else
        snprintf(reason, sizeof reason, "its agent (pid %d) exited with status %d", vm->pid,
                 WEXITSTATUS(st));
    mark_failed(vm, reason);
}

/* Reaps vm's agent if it is our child and has exited. A VM whose spawn is
 * in flight is no child yet (its pid is unknown here): passed over. */
static void reap(struct cfm_local_vm *vm)
{
    int st = 0;
    pid_t got;

    if (!vm->child || vm->pid <= 1)
        return;
    do
        got = waitpid(vm->pid, &st, WNOHANG);
    while (got < 0 && errno == EINTR);
    if (got == vm->pid)
        child_exited(vm, st);
    else if (got < 0 && errno == ECHILD)
        vm->child = false; /* not ours to wait for: the poll watches it */
}

/* Reaps every child of ours that exited (signals coalesce: all are asked). */
static void reap_children(struct cfm_driver *d)
{
    for (size_t i = 0; i < d->nvms; i++)
        reap(d->vms[i]);
}

void cfm_local__on_sigchld(uv_signal_t *s, int signum)
{
    (void)signum;
    reap_children(s->data);
}

static void on_term_tick(uv_timer_t *t)
{
    struct cfm_local_vm *vm = t->data;
    uint64_t elapsed = uv_now(t->loop) - vm->term_start;

    if (!vm->child && !agent_alive(vm)) {
        finish_terminate(vm);
    } else if (elapsed >= TERM_GIVE_UP_MS) {
        cfm_error("driver", "%s: pid %d still there %d ms after SIGKILL; recorded terminated",
                  vm->info.id, vm->pid, TERM_GIVE_UP_MS - TERM_KILL_MS);
        finish_terminate(vm);
    } else if (elapsed >= TERM_KILL_MS && !vm->killed) {
        cfm_warn("driver", "%s: pid %d ignored SIGTERM for %d ms: SIGKILL", vm->info.id,
                 vm->pid, TERM_KILL_MS);
        signal_group(vm, SIGKILL);
        vm->killed = true;
    }
}

/* SIGTERM to the VM's process group, then watch it go (on_term_tick). */
static void start_terminate(struct cfm_local_vm *vm)
{
    struct cfm_driver *d = vm->d;

    if (!vm->timer_open) {
        uv_timer_init(d->loop, &vm->term_timer);
        vm->term_timer.data = vm;
        vm->timer_open = true;
        vm->handles++;
    }
    vm->terminating = true;
    vm->killed = false;
    vm->term_start = uv_now(d->loop);
    cfm_local__vm_save_or_log(d, vm);
    signal_group(vm, SIGTERM);
    uv_timer_start(&vm->term_timer, on_term_tick, TERM_TICK_MS, TERM_TICK_MS);
}

void cfm_local__on_poll(uv_timer_t *t)
{
    struct cfm_driver *d = t->data;

    reap_children(d);
    for (size_t i = 0; i < d->nvms; i++) {
        struct cfm_local_vm *vm = d->vms[i];
        char reason[96];
        /* Not RUNNING: failed, terminated, or PENDING (being spawned). */
        if (vm->info.state != CFM_VM_RUNNING || vm->child || vm->terminating ||
            agent_alive(vm))
            continue;
        snprintf(reason, sizeof reason, "its agent (pid %d) is gone", vm->pid);
        mark_failed(vm, reason);
    }
}

void cfm_local__agent_started(struct cfm_local_vm *vm, int pid)
{
    vm->pid = pid;
    vm->child = true;
    vm->info.state = CFM_VM_RUNNING;
    cfm_info("driver", "%s (system %s, class %s, key %s) running as pid %d at %s", vm->info.id,
             vm->info.system, vm->info.vm_class, vm->info.key, vm->pid, vm->info.private_ip);
}

void cfm_local__after_spawn(struct cfm_local_vm *vm)
{
    if (vm->nwaiters > 0 && !vm->terminating) {
        cfm_info("driver", "%s: terminating now that it started (SIGTERM to process group %d)",
                 vm->info.id, vm->pid);
        start_terminate(vm);
    }
    reap(vm);
}

/* Returns CFM_OK with *wait set when r must wait for the process to go. */
enum cfm_err cfm_local__terminate(struct cfm_driver *d, const char *vm_id, const char *key,
                                  struct cfm_local_reply *r, bool *wait)
{
    enum cfm_err err;
    struct cfm_local_vm *vm;

    *wait = false;
    if ((err = cfm_local__check_key(key, &r->why)) != CFM_OK ||
        (err = cfm_local__find_vm(d, vm_id, &vm, &r->why)) != CFM_OK)
        return err;
    r->vm = vm;
    if (vm->info.state == CFM_VM_TERMINATED)
        return CFM_OK;
    /* Being spawned: waits, so that the agent is not lost (the spawn's end
     * starts the terminate, cfm_local__after_spawn). */
    if (!vm->spawn &&
        (vm->info.state != CFM_VM_RUNNING || (!vm->child && !agent_alive(vm)))) {
        finish_terminate(vm); /* nothing left to stop */
        return CFM_OK;
    }
    if (vm->nwaiters >= LOCAL_MAX_WAITERS)
        return cfm_why_set(&r->why, CFM_ETOOBIG, "%s: %d terminate calls already wait for it",
                           vm_id, LOCAL_MAX_WAITERS);
    if (vm->spawn) {
        cfm_info("driver", "%s: terminate waits for its agent to start", vm_id);
    } else if (!vm->terminating) {
        cfm_info("driver", "%s: terminating (SIGTERM to process group %d)", vm_id, vm->pid);
        start_terminate(vm);
    }
    r->next = vm->waiters;
    vm->waiters = r;
    vm->nwaiters++;
    *wait = true;
    return CFM_OK;
}

/* A PENDING record without a pid: the manager stopped while the run was
 * spawning its agent (the record is written before the spawn, the pid just
 * after). An agent for it that runs is adopted; when there is none, the
 * run never started anything: its directory goes, so its key may run
 * again (the run had not answered, so nothing else knows the VM). */
static bool readopt_pending(struct cfm_local_vm *vm)
{
    struct cfm_why why = {""};
    char dir[PATH_MAX];
    int pid = find_agent(vm);

    if (pid > 0) {
        vm->pid = pid;
        vm->info.state = CFM_VM_RUNNING;
        cfm_local__vm_save_or_log(vm->d, vm);
        cfm_info("driver", "%s (system %s) re-adopted: pid %d, found by its command line (the "
                           "manager stopped before recording it)",
                 vm->info.id, vm->info.system, pid);
        return true;
    }
    if (cfm_local__pathf(dir, "%s/vms/%s", vm->d->state_dir, vm->info.id) &&
        cfm_local__remove_vm_dir(dir, &why)) {
        cfm_info("driver", "%s (key %s) removed: the manager stopped before its agent started",
                 vm->info.id, vm->info.key);
        return false;
    }
    cfm_warn("driver", "%s: %s", vm->info.id, why.text);
    mark_failed(vm, "the manager stopped before its agent started");
    return true;
}

/* A re-adopted VM: is its agent still there? */
bool cfm_local__readopt(struct cfm_local_vm *vm)
{
    char reason[96];

    if (vm->info.state != CFM_VM_RUNNING && vm->info.state != CFM_VM_PENDING)
        return true;
    if (vm->info.state == CFM_VM_PENDING && vm->pid == 0 && !vm->terminating)
        return readopt_pending(vm);
    if (agent_alive(vm)) {
        vm->info.state = CFM_VM_RUNNING;
        cfm_info("driver", "%s (system %s) re-adopted: pid %d at %s", vm->info.id,
                 vm->info.system, vm->pid, vm->info.private_ip);
        if (vm->terminating)
            start_terminate(vm); /* the manager stopped in the middle */
        return true;
    }
    if (vm->terminating) {
        finish_terminate(vm);
        return true;
    }
    snprintf(reason, sizeof reason, "its agent (pid %d) is gone", vm->pid);
    mark_failed(vm, reason); /* reported from the loop, after open returns */
    return true;
}
