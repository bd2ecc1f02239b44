/*
 * test_driver_local_procs.c - the local cloud driver's VMs as processes:
 * runs (one at a time and many in flight on the thread pool), keys,
 * capacity, terminate (and SIGKILL for an agent that ignores SIGTERM), an
 * agent that dies or cannot start, and a manager restart that re-adopts
 * its agents or finds a run cut short. Real cfm-agent processes on a real
 * loop (driver_local_harness.h); what they are is read from /proc.
 */
#include "driver_local_harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct cfm_driver_ops *ops = &cfm_driver_local_ops;

static void on_list(void *arg, const struct cfm_vm_info *vms, size_t n)
{
    struct dlh_fx *fx = arg;

    fx->lists++;
    fx->nlist = n < 16 ? n : 16;
    for (size_t i = 0; i < fx->nlist; i++)
        fx->list[i] = vms[i];
    uv_stop(&fx->loop);
}

static void list_vms(struct dlh_fx *fx)
{
    fx->lists = 0;
    assert_int_equal(ops->list(fx->d, on_list, fx), CFM_OK);
    assert_int_equal(fx->lists, 0);
    assert_true(dlh_run_until(fx, &fx->lists, 1, WAIT_MS));
}

/* Alive and not a zombie. */
static bool alive(int pid)
{
    char path[64], buf[512];
    const char *close_paren;
    ssize_t n;
    int fd;

    if (pid <= 1 || kill(pid, 0) != 0)
        return false;
    PATHF(path, "/proc/%d/stat", pid);
    if ((fd = open(path, O_RDONLY)) < 0)
        return false;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z';
}

/* True while a process that is not a zombie is in process group pgid. */
static bool group_alive(int pgid)
{
    char path[PATH_MAX], buf[512];
    struct dirent *e;
    bool found = false;
    DIR *dp = opendir("/proc");

    assert_non_null(dp);
    while (!found && (e = readdir(dp))) {
        const char *p;
        char state;
        int pgrp;
        ssize_t n;
        int fd;
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        PATHF(path, "/proc/%s/stat", e->d_name);
        if ((fd = open(path, O_RDONLY)) < 0)
            continue;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        /* pid (comm) state ppid pgrp ... ; comm may hold spaces */
        if (!(p = strrchr(buf, ')')) || sscanf(p + 1, " %c %*d %d", &state, &pgrp) != 2)
            continue;
        found = pgrp == pgid && state != 'Z';
    }
    closedir(dp);
    return found;
}

static bool environ_has(int pid, const char *var)
{
    char path[64], buf[65536];
    size_t len = 0;
    ssize_t n;
    int fd;

    PATHF(path, "/proc/%d/environ", pid);
    if ((fd = open(path, O_RDONLY)) < 0)
        return false;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
        if (strcmp(buf + i, var) == 0)
            return true;
    return false;
}

/* The kernel lets posix_spawn return once the child's exec has replaced its
 * memory, and publishes the new command line and environment a moment
 * later (until then /proc/<pid>/cmdline and environ read empty): polled, up
 * to WAIT_MS. */
static bool environ_soon_has(int pid, const char *var)
{
    uint64_t start = uv_hrtime();

    while (!environ_has(pid, var) && alive(pid) &&
           uv_hrtime() - start < (uint64_t)WAIT_MS * 1000000)
        uv_sleep(1);
    return environ_has(pid, var);
}

static int count_vm_dirs(const struct dlh_fx *fx)
{
    char path[PATH_MAX];
    struct dirent *e;
    int dirs = 0;
    DIR *dp;

    PATHF(path, "%s/vms", fx->dir);
    assert_non_null(dp = opendir(path));
    while ((e = readdir(dp)))
        dirs += e->d_name[0] != '.';
    closedir(dp);
    return dirs;
}

/* One call among several in flight: its own answer, counted in fx->answers
 * too so that dlh_run_until can wait for all of them. */
struct call {
    struct dlh_fx *fx;
    int answers;
    enum cfm_err err;
    struct cfm_vm_info vm;
    char why[CFM_WHY_MAX];
    int order; /* fx->answers when it was answered: 1 for the first */
};

static void on_call(void *arg, enum cfm_err err, const struct cfm_vm_info *vm, const char *why)
{
    struct call *c = arg;

    c->answers++;
    dlh_keep_answer(err, vm, why, &c->err, &c->vm, c->why);
    c->order = ++c->fx->answers;
    uv_stop(&c->fx->loop);
}

static enum cfm_err start_run(struct dlh_fx *fx, struct call *c, const char *key, const char *cls)
{
    struct cfm_vm_spec spec = {.key = key, .system = "shop", .vm_class = cls,
                               .image = "local", .cpu = 1, .memory_mb = 512};

    memset(c, 0, sizeof *c);
    c->fx = fx;
    return ops->run(fx->d, &spec, on_call, c);
}

/* The pids of the live (not zombie) processes whose command line has
 * "--vm <id>": the agents of VM id. */
static int agents_of(const char *id, int *pid)
{
    char path[PATH_MAX], buf[8192];
    const char *prev;
    struct dirent *e;
    int n = 0;
    DIR *dp = opendir("/proc");

    assert_non_null(dp);
    while ((e = readdir(dp))) {
        size_t len = 0;
        ssize_t got;
        int fd, p;
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        p = (int)strtol(e->d_name, NULL, 10);
        PATHF(path, "/proc/%d/cmdline", p);
        if ((fd = open(path, O_RDONLY)) < 0)
            continue;
        while (len < sizeof buf - 1 && (got = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
            len += (size_t)got;
        close(fd);
        buf[len] = '\0';
        prev = "";
        for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
            if (strcmp(prev, "--vm") == 0 && strcmp(buf + i, id) == 0 && alive(p)) {
                if (pid)
                    *pid = p;
                n++;
                break;
            }
            prev = buf + i;
        }
    }
    closedir(dp);
    return n;
}

/* True when a descriptor of pid is open on path. */
static bool has_fd_on(int pid, const char *path)
{
    char dir[64], fdpath[PATH_MAX], target[PATH_MAX];
    struct dirent *e;
    bool found = false;
    DIR *dp;

    PATHF(dir, "/proc/%d/fd", pid);
    if (!(dp = opendir(dir)))
        return false;
    while (!found && (e = readdir(dp))) {
        ssize_t n;
        if (e->d_name[0] == '.')
            continue;
        PATHF(fdpath, "%s/%s", dir, e->d_name);
        if ((n = readlink(fdpath, target, sizeof target - 1)) <= 0)
            continue;
        target[n] = '\0';
        found = strcmp(target, path) == 0;
    }
    closedir(dp);
    return found;
}

/* agents_of(id) once its command line is published (see environ_soon_has):
 * waits up to WAIT_MS for at least one agent. */
static int agents_soon_of(const char *id, int *pid)
{
    uint64_t start = uv_hrtime();

    while (agents_of(id, pid) == 0 && uv_hrtime() - start < (uint64_t)WAIT_MS * 1000000)
        uv_sleep(1);
    return agents_of(id, pid);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_registry(void **state)
{
    (void)state;
    assert_ptr_equal(cfm_driver_find("local"), &cfm_driver_local_ops);
    assert_null(cfm_driver_find("ec2"));
    assert_null(cfm_driver_find(NULL));
    assert_string_equal(cfm_driver_names(), "local");
    assert_string_equal(cfm_vm_state_name(CFM_VM_PENDING), "pending");
    assert_string_equal(cfm_vm_state_name(CFM_VM_RUNNING), "running");
    assert_string_equal(cfm_vm_state_name(CFM_VM_FAILED), "failed");
    assert_string_equal(cfm_vm_state_name(CFM_VM_TERMINATED), "terminated");
}

static void test_run_three(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info vm[3];
    char path[PATH_MAX], var[64];
    struct stat st;

    dlh_open_ok(fx, "{\"type\": \"local\", \"private_net\": \"127.77.5\"}");
    dlh_run_ok(fx, "k-1", &vm[0]);
    dlh_run_ok(fx, "k-2", &vm[1]);
    dlh_run_ok(fx, "k-3", &vm[2]);
    for (int i = 0; i < 3; i++) {
        int pid = dlh_vm_pid(fx, vm[i].id);
        char ip[CFM_MAX_IP];
        assert_int_equal(strncmp(vm[i].id, "vm-", 3), 0);
        assert_int_equal(strlen(vm[i].id), 13);
        snprintf(ip, sizeof ip, "127.77.5.%d", i + 2);
        assert_string_equal(vm[i].private_ip, ip);
        assert_string_equal(vm[i].system, "shop");
        assert_string_equal(vm[i].vm_class, "web");
        assert_string_equal(vm[i].public_ip, "");
        assert_true(alive(pid));
        assert_int_equal(getpgid(pid), pid); /* its own process group */
        snprintf(var, sizeof var, "CFM_VM_IP=%s", ip);
        assert_true(environ_soon_has(pid, var));
        assert_int_equal(stat(vm[i].disk, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        PATHF(path, "%s/vms/%s/agent.log", fx->dir, vm[i].id);
        assert_int_equal(stat(path, &st), 0);
        for (int k = 0; k < i; k++) {
            assert_string_not_equal(vm[i].id, vm[k].id);
            assert_int_not_equal(pid, dlh_vm_pid(fx, vm[k].id));
        }
    }
    assert_int_equal(dlh_describe(fx, vm[1].id), CFM_OK);
    assert_string_equal(fx->vm.private_ip, vm[1].private_ip);
    assert_int_equal(fx->events, 0);
}

static void test_same_key(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a, b;

    dlh_open_ok(fx, NULL);
    dlh_run_ok(fx, "run-1.3", &a);
    dlh_run_ok(fx, "run-1.3", &b);
    assert_string_equal(a.id, b.id);
    assert_string_equal(a.private_ip, b.private_ip);
    assert_int_equal(dlh_vm_pid(fx, a.id), dlh_vm_pid(fx, b.id));
    assert_int_equal(count_vm_dirs(fx), 1);
    /* The same key for something else is refused, as EC2 does. */
    assert_int_equal(dlh_run_vm(fx, "run-1.3", "db", 1, 512), CFM_EINVAL);
    assert_non_null(strstr(fx->why, a.id));
    /* Terminated, the key still answers the same VM. */
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_int_equal(dlh_run_vm(fx, "run-1.3", "web", 1, 512), CFM_OK);
    assert_string_equal(fx->vm.id, a.id);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    /* Bad specs name the field. */
    assert_int_equal(dlh_run_vm(fx, "k-x", "web", 0, 512), CFM_EINVAL);
    assert_non_null(strstr(fx->why, "cpu"));
    assert_int_equal(dlh_run_vm(fx, "bad/key", "web", 1, 512), CFM_EINVAL);
    assert_non_null(strstr(fx->why, "key"));
}

static void test_capacity(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a;

    dlh_open_ok(fx, "{\"capacity\": {\"cpu\": 4, \"memory_mb\": 4096}}");
    assert_int_equal(dlh_run_vm(fx, "k-1", "big", 2, 1024), CFM_OK);
    a = fx->vm;
    assert_int_equal(dlh_run_vm(fx, "k-2", "big", 2, 1024), CFM_OK);
    assert_int_equal(dlh_run_vm(fx, "k-3", "big", 2, 1024), CFM_ETOOBIG);
    assert_string_equal(fx->why, "site site-a has no capacity for VM class big (needs 2 CPU and "
                                 "1024 MiB; free: 0 CPU and 2048 MiB)");
    assert_int_equal(dlh_run_vm(fx, "k-4", "huge", 1, 4096), CFM_ETOOBIG);
    assert_non_null(strstr(fx->why, "VM class huge"));
    /* Nothing was made for the refused keys; terminating frees capacity. */
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_int_equal(dlh_run_vm(fx, "k-3", "big", 2, 1024), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
}

static void test_terminate(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a, b, c;
    int pid;

    dlh_open_ok(fx, "{\"private_net\": \"127.77.9\"}");
    dlh_run_ok(fx, "k-1", &a);
    dlh_run_ok(fx, "k-2", &b);
    pid = dlh_vm_pid(fx, a.id);
    assert_true(alive(pid));
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_string_equal(fx->vm.private_ip, "");
    assert_false(alive(pid));
    assert_false(group_alive(pid));
    assert_true(alive(dlh_vm_pid(fx, b.id)));
    /* Idempotent, and recorded. */
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    {
        json_t *j = dlh_read_vm_json(fx, a.id);
        assert_string_equal(json_string_value(json_object_get(j, "state")), "terminated");
        json_decref(j);
    }
    /* The disk is kept; the address is free again, but not handed out at
     * once: the next VM gets the next address in turn. */
    assert_int_equal(access(a.disk, F_OK), 0);
    dlh_run_ok(fx, "k-3", &c);
    assert_string_equal(c.private_ip, "127.77.9.4");
    assert_string_not_equal(c.id, a.id);
    /* Nor when the VM that had the highest address goes: .4 is not handed
     * out again to the next VM, which gets .5. */
    assert_int_equal(dlh_terminate(fx, c.id), CFM_OK);
    dlh_run_ok(fx, "k-4", &c);
    assert_string_equal(c.private_ip, "127.77.9.5");
    assert_int_equal(fx->events, 0); /* a terminate is not a failure */
}

static void test_terminate_stubborn(void **state)
{
    struct dlh_fx *fx = *state;
    char script[PATH_MAX], ready[PATH_MAX];
    struct cfm_why why = {""};
    struct cfm_vm_info a;
    uint64_t start;
    FILE *f;
    int pid;
    struct cfm_driver_env env = {
        .loop = &fx->loop, .site = "site-a", .state_dir = fx->dir,
        .broker_host = "127.0.0.1", .broker_port = fx->port,
        .agent_path = script, .on_event = dlh_on_event, .arg = fx,
    };

    /* An "agent" that ignores SIGTERM, with a child in its group; it says
     * so in a file once the trap is set (a SIGTERM before would kill it). */
    PATHF(script, "%s/stubborn.sh", fx->dir);
    PATHF(ready, "%s/stubborn.ready", fx->dir);
    assert_non_null(f = fopen(script, "w"));
    fprintf(f, "#!/bin/sh\ntrap '' TERM\nsleep 600 &\n: > '%s'\nwhile :; do sleep 1; done\n",
            ready);
    fclose(f);
    assert_int_equal(chmod(script, 0755), 0);
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_OK);
    dlh_run_ok(fx, "k-1", &a);
    start = uv_hrtime();
    while (access(ready, F_OK) != 0 && uv_hrtime() - start < (uint64_t)WAIT_MS * 1000000)
        uv_sleep(1);
    assert_int_equal(access(ready, F_OK), 0);
    pid = dlh_vm_pid(fx, a.id);
    assert_true(group_alive(pid));
    start = uv_now(&fx->loop);
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_true(uv_now(&fx->loop) - start >= 2900); /* SIGKILL came after 3 s */
    assert_false(alive(pid));
    /* The SIGKILL went to the whole group; the agent's exit ends the
     * terminate, its child dies as soon as it is scheduled. */
    start = uv_hrtime();
    while (group_alive(pid) && uv_hrtime() - start < (uint64_t)WAIT_MS * 1000000)
        uv_sleep(1);
    assert_false(group_alive(pid));
    assert_int_equal(fx->events, 0);
}

/* ---- runs in flight: the spawn is on libuv's thread pool ---------------- */

#define NRUNS 8 /* more than libuv's 4 pool threads */

static void test_runs_at_once(void **state)
{
    struct dlh_fx *fx = *state;
    struct call c[NRUNS];
    int pid[NRUNS];
    char marker[PATH_MAX];
    int fd;

    /* A descriptor of ours without close-on-exec (libmosquitto's socket is
     * one), open while the agents start. */
    PATHF(marker, "%s/marker", fx->dir);
    assert_true((fd = open(marker, O_WRONLY | O_CREAT, 0644)) >= 0);
    dlh_open_ok(fx, "{\"private_net\": \"127.77.6\"}");
    for (int i = 0; i < NRUNS; i++) {
        char key[16];
        snprintf(key, sizeof key, "p-%d", i);
        assert_int_equal(start_run(fx, &c[i], key, "web"), CFM_OK);
    }
    /* Admitted at once, each with its own address, PENDING while spawned
     * (list takes its snapshot when called). */
    list_vms(fx);
    assert_int_equal(fx->nlist, NRUNS);
    for (int i = 0; i < NRUNS; i++) {
        char ip[CFM_MAX_IP];
        snprintf(ip, sizeof ip, "127.77.6.%d", i + 2);
        assert_int_equal(fx->list[i].state, CFM_VM_PENDING);
        assert_string_equal(fx->list[i].private_ip, ip);
    }
    assert_true(dlh_run_until(fx, &fx->answers, NRUNS, WAIT_MS));
    for (int i = 0; i < NRUNS; i++) {
        assert_int_equal(c[i].answers, 1);
        if (c[i].err != CFM_OK)
            fail_msg("run p-%d: %s", i, c[i].why);
        assert_int_equal(c[i].vm.state, CFM_VM_RUNNING);
        assert_string_equal(c[i].vm.id, fx->list[i].id);
        assert_string_equal(c[i].vm.private_ip, fx->list[i].private_ip);
        pid[i] = dlh_vm_pid(fx, c[i].vm.id);
        assert_true(alive(pid[i]));
        assert_int_equal(agents_soon_of(c[i].vm.id, NULL), 1);
        assert_false(has_fd_on(pid[i], marker)); /* inherits only 0, 1 and 2 */
        for (int k = 0; k < i; k++) {
            assert_string_not_equal(c[i].vm.id, c[k].vm.id);
            assert_int_not_equal(pid[i], pid[k]);
        }
    }
    close(fd);
    assert_int_equal(count_vm_dirs(fx), NRUNS);
    list_vms(fx);
    for (int i = 0; i < NRUNS; i++)
        assert_int_equal(fx->list[i].state, CFM_VM_RUNNING);
    assert_int_equal(fx->events, 0);
}

/* A run whose VM is terminated (and attached to) before the run answered:
 * the list that comes first gives the id, and its callback, which runs
 * before the run's answer (answers come in order), makes the calls. */
struct midway {
    struct dlh_fx *fx;
    const char *key;
    struct call run, term, attach;
    enum cfm_err term_call;
    bool seen_pending;
};

static void on_list_midway(void *arg, const struct cfm_vm_info *vms, size_t n)
{
    struct midway *m = arg;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(vms[i].key, m->key) != 0)
            continue;
        m->seen_pending = vms[i].state == CFM_VM_PENDING && m->run.answers == 0;
        m->term_call = ops->terminate(m->fx->d, vms[i].id, "t-1", on_call, &m->term);
        assert_int_equal(ops->attach_volume(m->fx->d, vms[i].id, "data", "v-1", on_call,
                                            &m->attach),
                         CFM_OK);
    }
    m->fx->lists++;
}

static void run_terminate_midway(struct dlh_fx *fx, struct midway *m, const char *key)
{
    memset(m, 0, sizeof *m);
    m->fx = m->term.fx = m->attach.fx = fx;
    m->key = key;
    m->term_call = CFM_EINVAL;
    fx->answers = fx->lists = 0;
    assert_int_equal(start_run(fx, &m->run, key, "web"), CFM_OK);
    m->run.fx = fx;
    assert_int_equal(ops->list(fx->d, on_list_midway, m), CFM_OK);
    assert_true(dlh_run_until(fx, &fx->answers, 3, WAIT_MS));
    fx->answers = 0;
    assert_int_equal(fx->lists, 1);
    assert_true(m->seen_pending);
    assert_int_equal(m->term_call, CFM_OK);
    /* Its disk is the spawn's until the run answers. */
    assert_int_equal(m->attach.err, CFM_EINVAL);
    assert_non_null(strstr(m->attach.why, "still starting"));
}

static void test_terminate_while_spawning(void **state)
{
    struct dlh_fx *fx = *state;
    struct midway m;
    json_t *j;

    dlh_open_ok(fx, NULL);
    run_terminate_midway(fx, &m, "k-1");
    if (m.run.err != CFM_OK)
        fail_msg("run: %s", m.run.why);
    assert_int_equal(m.run.vm.state, CFM_VM_RUNNING);
    /* The terminate waited for the agent to start, then ended it. */
    if (m.term.err != CFM_OK)
        fail_msg("terminate: %s", m.term.why);
    assert_true(m.run.order < m.term.order);
    assert_int_equal(m.term.vm.state, CFM_VM_TERMINATED);
    assert_string_equal(m.term.vm.id, m.run.vm.id);
    assert_int_equal(agents_of(m.run.vm.id, NULL), 0);
    j = dlh_read_vm_json(fx, m.run.vm.id);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "terminated");
    json_decref(j);
    assert_int_equal(dlh_describe(fx, m.run.vm.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(fx->events, 0);
}

static void test_same_key_while_spawning(void **state)
{
    struct dlh_fx *fx = *state;
    struct call a, b, other;
    int pid = 0;

    dlh_open_ok(fx, NULL);
    assert_int_equal(start_run(fx, &a, "run-2.1", "web"), CFM_OK);
    assert_int_equal(start_run(fx, &b, "run-2.1", "web"), CFM_OK);
    assert_int_equal(start_run(fx, &other, "run-2.1", "db"), CFM_OK);
    assert_true(dlh_run_until(fx, &fx->answers, 3, WAIT_MS));
    /* Refused at once; the two others get the one VM, in order. */
    assert_int_equal(other.err, CFM_EINVAL);
    assert_int_equal(other.order, 1);
    if (a.err != CFM_OK || b.err != CFM_OK)
        fail_msg("runs: '%s', '%s'", a.why, b.why);
    assert_true(a.order < b.order);
    assert_string_equal(a.vm.id, b.vm.id);
    assert_string_equal(a.vm.private_ip, b.vm.private_ip);
    assert_int_equal(a.vm.state, CFM_VM_RUNNING);
    assert_int_equal(b.vm.state, CFM_VM_RUNNING);
    assert_int_equal(count_vm_dirs(fx), 1);
    assert_int_equal(agents_soon_of(a.vm.id, &pid), 1);
    assert_int_equal(pid, dlh_vm_pid(fx, a.vm.id));
    list_vms(fx);
    assert_int_equal(fx->nlist, 1);
}

static void test_close_while_spawning(void **state)
{
    struct dlh_fx *fx = *state;
    struct call c[NRUNS];
    int n;

    dlh_open_ok(fx, NULL);
    for (int i = 0; i < NRUNS; i++) {
        char key[16];
        snprintf(key, sizeof key, "c-%d", i);
        assert_int_equal(start_run(fx, &c[i], key, "web"), CFM_OK);
    }
    /* Closed with every spawn queued or running: the loop runs until each
     * has come back and the driver is freed; nothing is answered. */
    ops->close(fx->d);
    fx->d = NULL;
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_alive(&fx->loop), 0);
    assert_int_equal(fx->answers, 0);
    /* A spawn cancelled before it began left nothing; one that was under
     * way started its agent, recorded RUNNING, and the next open adopts it. */
    n = count_vm_dirs(fx);
    assert_true(n <= NRUNS);
    {
        char path[PATH_MAX];
        struct dirent *e;
        DIR *dp;
        PATHF(path, "%s/vms", fx->dir);
        assert_non_null(dp = opendir(path));
        while ((e = readdir(dp))) /* started: its command line shows (open checks it) */
            if (e->d_name[0] != '.')
                assert_int_equal(agents_soon_of(e->d_name, NULL), 1);
        closedir(dp);
    }
    dlh_open_ok(fx, NULL);
    list_vms(fx);
    assert_int_equal((int)fx->nlist, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(fx->list[i].state, CFM_VM_RUNNING);
        assert_int_equal(agents_of(fx->list[i].id, NULL), 1);
    }
    assert_int_equal(fx->events, 0);
}

static void test_spawn_failure(void **state)
{
    struct dlh_fx *fx = *state;
    struct midway m;
    char script[PATH_MAX];
    struct cfm_why why = {""};
    FILE *f;
    struct cfm_driver_env env = {
        .loop = &fx->loop, .site = "site-a", .state_dir = fx->dir,
        .broker_host = "127.0.0.1", .broker_port = fx->port,
        .agent_path = script, .on_event = dlh_on_event, .arg = fx,
    };

    PATHF(script, "%s/agent.sh", fx->dir);
    assert_non_null(f = fopen(script, "w"));
    fprintf(f, "#!/bin/sh\nexec '%s' \"$@\"\n", CFM_AGENT_PATH);
    fclose(f);
    assert_int_equal(chmod(script, 0755), 0);
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_OK);
    /* The agent cannot be started: an error, and nothing left behind. */
    assert_int_equal(chmod(script, 0644), 0);
    assert_int_equal(dlh_run_vm(fx, "k-1", "web", 1, 512), CFM_EIO);
    assert_non_null(strstr(fx->why, "cannot start"));
    assert_int_equal(count_vm_dirs(fx), 0);
    /* Also for a terminate that waited for it: there is no VM. */
    run_terminate_midway(fx, &m, "k-1");
    assert_int_equal(m.run.err, CFM_EIO);
    assert_int_equal(m.term.err, CFM_ENOTFOUND);
    assert_non_null(strstr(m.term.why, "could not be started"));
    assert_int_equal(count_vm_dirs(fx), 0);
    list_vms(fx);
    assert_int_equal(fx->nlist, 0);
    /* So the same key may try again. */
    assert_int_equal(chmod(script, 0755), 0);
    assert_int_equal(dlh_run_vm(fx, "k-1", "web", 1, 512), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
    assert_string_equal(fx->vm.private_ip + strlen(fx->vm.private_ip) - 2, ".2");
    assert_int_equal(count_vm_dirs(fx), 1);
}

static void test_kill9_child(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a;
    json_t *j;
    int pid;

    dlh_open_ok(fx, NULL);
    dlh_run_ok(fx, "k-1", &a);
    pid = dlh_vm_pid(fx, a.id);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(dlh_run_until(fx, &fx->events, 1, FAIL_MS));
    assert_string_equal(fx->event.id, a.id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    j = dlh_read_vm_json(fx, a.id);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "failed");
    json_decref(j);
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_FAILED);
    /* Terminating a failed VM frees what it held at once. */
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(fx->events, 1);
}

static void test_agent_exits(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a;

    /* An agent that refuses its command line exits at once: FAILED. */
    dlh_open_ok(fx, "{\"agent_args\": [\"--no-such-flag\"]}");
    dlh_run_ok(fx, "k-1", &a);
    assert_true(dlh_run_until(fx, &fx->events, 1, FAIL_MS));
    assert_string_equal(fx->event.id, a.id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
}

static void test_restart_readopt(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info vm[4];
    int pid[4];

    dlh_open_ok(fx, NULL);
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "k-%d", i);
        dlh_run_ok(fx, key, &vm[i]);
        pid[i] = dlh_vm_pid(fx, vm[i].id);
    }
    /* The manager stops: its VMs do not. One dies while it is away. */
    dlh_close_driver(fx);
    for (int i = 0; i < 4; i++)
        assert_true(alive(pid[i]));
    assert_int_equal(kill(pid[3], SIGKILL), 0);
    assert_int_equal(waitpid(pid[3], NULL, 0), pid[3]);

    dlh_open_ok(fx, NULL);
    assert_int_equal(fx->events, 0); /* reported from the loop, not inside open */
    assert_true(dlh_run_until(fx, &fx->events, 1, WAIT_MS));
    assert_string_equal(fx->event.id, vm[3].id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    list_vms(fx);
    assert_int_equal(fx->nlist, 4);
    for (size_t k = 0; k < fx->nlist; k++) {
        for (int i = 0; i < 4; i++) {
            if (strcmp(fx->list[k].id, vm[i].id) != 0)
                continue;
            assert_int_equal(fx->list[k].state, i == 3 ? CFM_VM_FAILED : CFM_VM_RUNNING);
            assert_string_equal(fx->list[k].private_ip, vm[i].private_ip);
            assert_string_equal(fx->list[k].key, vm[i].key);
            assert_int_equal(dlh_vm_pid(fx, vm[i].id), pid[i]);
            assert_true(i == 3 || alive(pid[i])); /* the same processes */
        }
    }
    /* The same key still answers the re-adopted VM. */
    dlh_run_ok(fx, "k-1", &vm[1]);
    assert_int_equal(dlh_vm_pid(fx, vm[1].id), pid[1]);

    /* A re-adopted VM killed from outside is found by polling. */
    assert_int_equal(kill(pid[0], SIGKILL), 0);
    assert_true(dlh_run_until(fx, &fx->events, 2, FAIL_MS));
    assert_string_equal(fx->event.id, vm[0].id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    assert_int_equal(waitpid(pid[0], NULL, WNOHANG), pid[0]); /* it was a zombie */

    /* And one is terminated although it is not our child. */
    assert_int_equal(dlh_terminate(fx, vm[1].id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(waitpid(pid[1], NULL, WNOHANG), pid[1]); /* it had exited */
    assert_true(alive(pid[2]));
    assert_int_equal(fx->events, 2);
}

static void test_unknown_vm(void **state)
{
    struct dlh_fx *fx = *state;

    dlh_open_ok(fx, NULL);
    assert_int_equal(dlh_describe(fx, "vm-0000000000"), CFM_ENOTFOUND);
    assert_non_null(strstr(fx->why, "vm-0000000000"));
    assert_int_equal(dlh_terminate(fx, "vm-0000000000"), CFM_ENOTFOUND);
    assert_int_equal(dlh_answer(fx, ops->attach_volume(fx->d, "vm-0", "v", "k", dlh_on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(dlh_answer(fx, ops->detach_volume(fx->d, "vm-0", "v", "k", dlh_on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(dlh_answer(fx, ops->associate_address(fx->d, "vm-0", "a", "k", dlh_on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(
        dlh_answer(fx, ops->disassociate_address(fx->d, "vm-0", "a", "k", dlh_on_vm, fx)),
        CFM_ENOTFOUND);
    assert_int_equal(dlh_answer(fx, ops->describe(fx->d, NULL, dlh_on_vm, fx)), CFM_ENOTFOUND);
    assert_int_equal(ops->describe(fx->d, "vm-0", NULL, fx), CFM_EINVAL); /* no callback */
    list_vms(fx);
    assert_int_equal(fx->nlist, 0);
}

/* Writes the record a run leaves when the manager stops after writing it
 * and before its agent's pid: PENDING, no pid; with a disk, empty unless
 * file is given. */
static void write_pending(const struct dlh_fx *fx, const char *id, const char *key,
                          const char *file)
{
    char path[PATH_MAX];
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:[], s:i, s:s, s:b, s:s}",
                          "id", id, "key", key, "system", "shop", "vm_class", "web", "cpu", 1,
                          "memory_mb", 512, "private_ip", "127.77.1.9", "public_ip", "",
                          "address_id", "", "volumes", "pid", 0, "state", "pending",
                          "terminating", 0, "created", "2026-11-22T10:00:00.123Z");

    assert_non_null(j);
    PATHF(path, "%s/vms/%s", fx->dir, id);
    assert_int_equal(mkdir(path, 0755), 0);
    PATHF(path, "%s/vms/%s/disk", fx->dir, id);
    assert_int_equal(mkdir(path, 0755), 0);
    if (file) {
        PATHF(path, "%s/vms/%s/disk/%s", fx->dir, id, file);
        dlh_write_text(path, "x\n");
    }
    PATHF(path, "%s/vms/%s/vm.json", fx->dir, id);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
}

/* The manager stopped while runs were spawning their agents (the spawn is
 * on the thread pool, so a stop can come at any step of it). */
static void test_restart_cut_short(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a, c;
    char path[PATH_MAX];
    json_t *j;
    int pid;

    dlh_open_ok(fx, NULL);
    dlh_run_ok(fx, "k-1", &a);
    pid = dlh_vm_pid(fx, a.id);
    assert_int_equal(agents_soon_of(a.id, NULL), 1);
    dlh_close_driver(fx);
    /* a: its agent started, its pid not recorded. */
    j = dlh_read_vm_json(fx, a.id);
    json_object_set_new(j, "state", json_string("pending"));
    json_object_set_new(j, "pid", json_integer(0));
    PATHF(path, "%s/vms/%s/vm.json", fx->dir, a.id);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
    /* b: recorded, no agent started. */
    write_pending(fx, "vm-00000000bb", "k-2", NULL);
    /* d: the same, but something in its disk: not a run's leftover. */
    write_pending(fx, "vm-00000000dd", "k-4", "mine");
    /* f: the same, but its agent.log has lines: an agent ran. */
    write_pending(fx, "vm-00000000ff", "k-6", NULL);
    PATHF(path, "%s/vms/vm-00000000ff/agent.log", fx->dir);
    dlh_write_text(path, "agent: started\n");
    /* e: not even recorded: a directory and its empty disk. */
    PATHF(path, "%s/vms/vm-00000000ee", fx->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    PATHF(path, "%s/vms/vm-00000000ee/disk", fx->dir);
    assert_int_equal(mkdir(path, 0755), 0);

    dlh_open_ok(fx, NULL);
    /* a's agent is found by its command line and adopted, its pid recorded. */
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
    assert_int_equal(dlh_vm_pid(fx, a.id), pid);
    dlh_run_ok(fx, "k-1", &c);
    assert_string_equal(c.id, a.id);
    /* b and e leave nothing; b's key makes a new VM. */
    assert_int_equal(dlh_describe(fx, "vm-00000000bb"), CFM_ENOTFOUND);
    PATHF(path, "%s/vms/vm-00000000bb", fx->dir);
    assert_true(dlh_absent(path));
    PATHF(path, "%s/vms/vm-00000000ee", fx->dir);
    assert_true(dlh_absent(path));
    dlh_run_ok(fx, "k-2", &c);
    assert_string_not_equal(c.id, "vm-00000000bb");
    /* d and f are kept, FAILED, as any VM whose agent is gone. */
    assert_true(dlh_run_until(fx, &fx->events, 2, WAIT_MS));
    assert_int_equal(dlh_describe(fx, "vm-00000000dd"), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_FAILED);
    assert_int_equal(dlh_describe(fx, "vm-00000000ff"), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_FAILED);
    PATHF(path, "%s/vms/vm-00000000dd/disk/mine", fx->dir);
    dlh_assert_text(path, "x\n");
    assert_int_equal(count_vm_dirs(fx), 4);
    assert_int_equal(fx->events, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, dlh_setup, dlh_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_registry),          T(test_run_three),     T(test_same_key),
        T(test_capacity),          T(test_terminate),     T(test_terminate_stubborn),
        T(test_spawn_failure),     T(test_runs_at_once),  T(test_terminate_while_spawning),
        T(test_same_key_while_spawning),                  T(test_close_while_spawning),
        T(test_kill9_child),       T(test_agent_exits),
        T(test_restart_readopt),   T(test_restart_cut_short),
        T(test_unknown_vm),
    };

    /* An agent's death must not stop the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
