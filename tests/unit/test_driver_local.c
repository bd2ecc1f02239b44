/*
 * test_driver_local.c - the local cloud driver with a real libuv loop and
 * real cfm-agent processes (CFM_AGENT_PATH), each test in its own temporary
 * state directory. The agents are given a closed loopback port as their
 * broker: they keep retrying, which is all a driver test needs. Waits are
 * the loop run until a condition or a deadline; teardown kills every agent
 * recorded in a vm.json, even when the test failed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "driver.h"

#define WAIT_MS 10000 /* the most any answer may take (terminate: 3 s + SIGKILL) */
#define FAIL_MS 3500  /* kill -9 noticed within this (poll is 1 s) */

/* Formats a path, failing the test if it does not fit. */
#define PATHF(buf, ...) assert_true(snprintf(buf, sizeof buf, __VA_ARGS__) < (int)sizeof buf)

static const struct cfm_driver_ops *ops = &cfm_driver_local_ops;

struct fx {
    char dir[PATH_MAX];
    int port;
    uv_loop_t loop;
    struct cfm_driver *d;
    int answers;
    enum cfm_err err;
    struct cfm_vm_info vm;
    char why[CFM_WHY_MAX];
    int events;
    struct cfm_vm_info event;
    int lists;
    struct cfm_vm_info list[16];
    size_t nlist;
};

/* ---- harness -------------------------------------------------------------- */

static int closed_port(void)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = 1;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void on_event(void *arg, const struct cfm_vm_info *vm)
{
    struct fx *fx = arg;

    fx->events++;
    fx->event = *vm;
    uv_stop(&fx->loop); /* let run_until look at once */
}

/* Keeps an answer (vm NULL on error) in *err_out, *vm_out and why_out. */
static void keep_answer(enum cfm_err err, const struct cfm_vm_info *vm, const char *why,
                        enum cfm_err *err_out, struct cfm_vm_info *vm_out,
                        char why_out[CFM_WHY_MAX])
{
    *err_out = err;
    memset(vm_out, 0, sizeof *vm_out);
    if (vm)
        *vm_out = *vm;
    snprintf(why_out, CFM_WHY_MAX, "%s", why ? why : "");
}

static void on_vm(void *arg, enum cfm_err err, const struct cfm_vm_info *vm, const char *why)
{
    struct fx *fx = arg;

    fx->answers++;
    keep_answer(err, vm, why, &fx->err, &fx->vm, fx->why);
    uv_stop(&fx->loop);
}

static void on_list(void *arg, const struct cfm_vm_info *vms, size_t n)
{
    struct fx *fx = arg;

    fx->lists++;
    fx->nlist = n < 16 ? n : 16;
    for (size_t i = 0; i < fx->nlist; i++)
        fx->list[i] = vms[i];
    uv_stop(&fx->loop);
}

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until *count reaches want, or ms pass. The callbacks call
 * uv_stop, so UV_RUN_ONCE does not then block until the next timer. */
static bool run_until(struct fx *fx, const int *count, int want, uint64_t ms)
{
    bool late = false;
    uv_timer_t t;

    uv_timer_init(&fx->loop, &t);
    t.data = &late;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (*count < want && !late)
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    return *count >= want;
}

/* Waits for the answer of the call just made; never given inside the call. */
static enum cfm_err answer(struct fx *fx, enum cfm_err call)
{
    assert_int_equal(call, CFM_OK);
    assert_int_equal(fx->answers, 0);
    assert_true(run_until(fx, &fx->answers, 1, WAIT_MS));
    fx->answers = 0;
    return fx->err;
}

static enum cfm_err open_driver(struct fx *fx, const char *config_text, struct cfm_why *why)
{
    struct cfm_driver_env env = {
        .loop = &fx->loop,
        .site = "site-a",
        .state_dir = fx->dir,
        .broker_host = "127.0.0.1",
        .broker_port = fx->port,
        .agent_path = CFM_AGENT_PATH,
        .on_event = on_event,
        .arg = fx,
    };
    json_t *config = config_text ? json_loads(config_text, 0, NULL) : NULL;
    enum cfm_err err;

    if (config_text)
        assert_non_null(config);
    err = ops->open(&env, config, &fx->d, why);
    json_decref(config);
    return err;
}

static void open_ok(struct fx *fx, const char *config_text)
{
    struct cfm_why why = {""};

    fx->d = NULL;
    if (open_driver(fx, config_text, &why) != CFM_OK)
        fail_msg("open: %s", why.text);
}

/* Closes the driver and lets its handles close (a manager stopping). */
static void close_driver(struct fx *fx)
{
    if (fx->d) {
        ops->close(fx->d);
        fx->d = NULL;
        uv_run(&fx->loop, UV_RUN_DEFAULT);
    }
}

static enum cfm_err run_vm(struct fx *fx, const char *key, const char *cls, int cpu, int mem)
{
    struct cfm_vm_spec spec = {.key = key, .system = "shop", .vm_class = cls,
                               .image = "local", .cpu = cpu, .memory_mb = mem};

    return answer(fx, ops->run(fx->d, &spec, on_vm, fx));
}

static void run_ok(struct fx *fx, const char *key, struct cfm_vm_info *out)
{
    if (run_vm(fx, key, "web", 1, 512) != CFM_OK)
        fail_msg("run %s: %s", key, fx->why);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
    *out = fx->vm;
}

static enum cfm_err terminate(struct fx *fx, const char *id)
{
    return answer(fx, ops->terminate(fx->d, id, "t-1", on_vm, fx));
}

static enum cfm_err describe(struct fx *fx, const char *id)
{
    return answer(fx, ops->describe(fx->d, id, on_vm, fx));
}

static void list_vms(struct fx *fx)
{
    fx->lists = 0;
    assert_int_equal(ops->list(fx->d, on_list, fx), CFM_OK);
    assert_int_equal(fx->lists, 0);
    assert_true(run_until(fx, &fx->lists, 1, WAIT_MS));
}

static json_t *read_vm_json(const struct fx *fx, const char *id)
{
    char path[PATH_MAX];

    PATHF(path, "%s/vms/%s/vm.json", fx->dir, id);
    return json_load_file(path, 0, NULL);
}

static int vm_pid(const struct fx *fx, const char *id)
{
    json_t *j = read_vm_json(fx, id);
    int pid = (int)json_integer_value(json_object_get(j, "pid"));

    json_decref(j);
    return pid;
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

/* Kills (and reaps, when ours) every agent a vm.json names. */
static void kill_all(const struct fx *fx)
{
    char path[PATH_MAX];
    struct dirent *e;
    DIR *dp;

    PATHF(path, "%s/vms", fx->dir);
    if (!(dp = opendir(path)))
        return;
    while ((e = readdir(dp))) {
        int pid;
        if (e->d_name[0] == '.')
            continue;
        pid = vm_pid(fx, e->d_name);
        if (pid <= 1)
            continue;
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        for (int i = 0; i < 200 && waitpid(pid, NULL, WNOHANG) == 0; i++)
            usleep(10000); /* teardown only: reaping a killed child */
    }
    closedir(dp);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    struct fx *fx = calloc(1, sizeof *fx);

    assert_non_null(fx);
    if (!tmp || !*tmp)
        tmp = "/tmp";
    assert_true(snprintf(fx->dir, sizeof fx->dir, "%s/cfm-drv-XXXXXX", tmp) <
                (int)sizeof fx->dir);
    assert_non_null(mkdtemp(fx->dir));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->port = closed_port();
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    int rc;

    close_driver(fx);
    kill_all(fx);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&fx->loop);
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static int count_vm_dirs(const struct fx *fx)
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
 * too so that run_until can wait for all of them. */
struct call {
    struct fx *fx;
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
    keep_answer(err, vm, why, &c->err, &c->vm, c->why);
    c->order = ++c->fx->answers;
    uv_stop(&c->fx->loop);
}

static enum cfm_err start_run(struct fx *fx, struct call *c, const char *key, const char *cls)
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
    struct fx *fx = *state;
    struct cfm_vm_info vm[3];
    char path[PATH_MAX], var[64];
    struct stat st;

    open_ok(fx, "{\"type\": \"local\", \"private_net\": \"127.77.5\"}");
    run_ok(fx, "k-1", &vm[0]);
    run_ok(fx, "k-2", &vm[1]);
    run_ok(fx, "k-3", &vm[2]);
    for (int i = 0; i < 3; i++) {
        int pid = vm_pid(fx, vm[i].id);
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
            assert_int_not_equal(pid, vm_pid(fx, vm[k].id));
        }
    }
    assert_int_equal(describe(fx, vm[1].id), CFM_OK);
    assert_string_equal(fx->vm.private_ip, vm[1].private_ip);
    assert_int_equal(fx->events, 0);
}

static void test_same_key(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a, b;

    open_ok(fx, NULL);
    run_ok(fx, "run-1.3", &a);
    run_ok(fx, "run-1.3", &b);
    assert_string_equal(a.id, b.id);
    assert_string_equal(a.private_ip, b.private_ip);
    assert_int_equal(vm_pid(fx, a.id), vm_pid(fx, b.id));
    assert_int_equal(count_vm_dirs(fx), 1);
    /* The same key for something else is refused, as EC2 does. */
    assert_int_equal(run_vm(fx, "run-1.3", "db", 1, 512), CFM_EINVAL);
    assert_non_null(strstr(fx->why, a.id));
    /* Terminated, the key still answers the same VM. */
    assert_int_equal(terminate(fx, a.id), CFM_OK);
    assert_int_equal(run_vm(fx, "run-1.3", "web", 1, 512), CFM_OK);
    assert_string_equal(fx->vm.id, a.id);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    /* Bad specs name the field. */
    assert_int_equal(run_vm(fx, "k-x", "web", 0, 512), CFM_EINVAL);
    assert_non_null(strstr(fx->why, "cpu"));
    assert_int_equal(run_vm(fx, "bad/key", "web", 1, 512), CFM_EINVAL);
    assert_non_null(strstr(fx->why, "key"));
}

static void test_capacity(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a;

    open_ok(fx, "{\"capacity\": {\"cpu\": 4, \"memory_mb\": 4096}}");
    assert_int_equal(run_vm(fx, "k-1", "big", 2, 1024), CFM_OK);
    a = fx->vm;
    assert_int_equal(run_vm(fx, "k-2", "big", 2, 1024), CFM_OK);
    assert_int_equal(run_vm(fx, "k-3", "big", 2, 1024), CFM_ETOOBIG);
    assert_string_equal(fx->why, "site site-a has no capacity for VM class big (needs 2 CPU and "
                                 "1024 MiB; free: 0 CPU and 2048 MiB)");
    assert_int_equal(run_vm(fx, "k-4", "huge", 1, 4096), CFM_ETOOBIG);
    assert_non_null(strstr(fx->why, "VM class huge"));
    /* Nothing was made for the refused keys; terminating frees capacity. */
    assert_int_equal(terminate(fx, a.id), CFM_OK);
    assert_int_equal(run_vm(fx, "k-3", "big", 2, 1024), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
}

static void test_terminate(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a, b, c;
    int pid;

    open_ok(fx, "{\"private_net\": \"127.77.9\"}");
    run_ok(fx, "k-1", &a);
    run_ok(fx, "k-2", &b);
    pid = vm_pid(fx, a.id);
    assert_true(alive(pid));
    assert_int_equal(terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_string_equal(fx->vm.private_ip, "");
    assert_false(alive(pid));
    assert_false(group_alive(pid));
    assert_true(alive(vm_pid(fx, b.id)));
    /* Idempotent, and recorded. */
    assert_int_equal(terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    {
        json_t *j = read_vm_json(fx, a.id);
        assert_string_equal(json_string_value(json_object_get(j, "state")), "terminated");
        json_decref(j);
    }
    /* The disk is kept; the address is free again, but not handed out at
     * once: the next VM gets the next address in turn. */
    assert_int_equal(access(a.disk, F_OK), 0);
    run_ok(fx, "k-3", &c);
    assert_string_equal(c.private_ip, "127.77.9.4");
    assert_string_not_equal(c.id, a.id);
    /* Nor when the VM that had the highest address goes: .4 is not handed
     * out again to the next VM, which gets .5. */
    assert_int_equal(terminate(fx, c.id), CFM_OK);
    run_ok(fx, "k-4", &c);
    assert_string_equal(c.private_ip, "127.77.9.5");
    assert_int_equal(fx->events, 0); /* a terminate is not a failure */
}

static void test_terminate_stubborn(void **state)
{
    struct fx *fx = *state;
    char script[PATH_MAX], ready[PATH_MAX];
    struct cfm_why why = {""};
    struct cfm_vm_info a;
    uint64_t start;
    FILE *f;
    int pid;
    struct cfm_driver_env env = {
        .loop = &fx->loop, .site = "site-a", .state_dir = fx->dir,
        .broker_host = "127.0.0.1", .broker_port = fx->port,
        .agent_path = script, .on_event = on_event, .arg = fx,
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
    run_ok(fx, "k-1", &a);
    start = uv_hrtime();
    while (access(ready, F_OK) != 0 && uv_hrtime() - start < (uint64_t)WAIT_MS * 1000000)
        uv_sleep(1);
    assert_int_equal(access(ready, F_OK), 0);
    pid = vm_pid(fx, a.id);
    assert_true(group_alive(pid));
    start = uv_now(&fx->loop);
    assert_int_equal(terminate(fx, a.id), CFM_OK);
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
    struct fx *fx = *state;
    struct call c[NRUNS];
    int pid[NRUNS];
    char marker[PATH_MAX];
    int fd;

    /* A descriptor of ours without close-on-exec (libmosquitto's socket is
     * one), open while the agents start. */
    PATHF(marker, "%s/marker", fx->dir);
    assert_true((fd = open(marker, O_WRONLY | O_CREAT, 0644)) >= 0);
    open_ok(fx, "{\"private_net\": \"127.77.6\"}");
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
    assert_true(run_until(fx, &fx->answers, NRUNS, WAIT_MS));
    for (int i = 0; i < NRUNS; i++) {
        assert_int_equal(c[i].answers, 1);
        if (c[i].err != CFM_OK)
            fail_msg("run p-%d: %s", i, c[i].why);
        assert_int_equal(c[i].vm.state, CFM_VM_RUNNING);
        assert_string_equal(c[i].vm.id, fx->list[i].id);
        assert_string_equal(c[i].vm.private_ip, fx->list[i].private_ip);
        pid[i] = vm_pid(fx, c[i].vm.id);
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
    struct fx *fx;
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

static void run_terminate_midway(struct fx *fx, struct midway *m, const char *key)
{
    memset(m, 0, sizeof *m);
    m->fx = m->term.fx = m->attach.fx = fx;
    m->key = key;
    m->term_call = CFM_EINVAL;
    fx->answers = fx->lists = 0;
    assert_int_equal(start_run(fx, &m->run, key, "web"), CFM_OK);
    m->run.fx = fx;
    assert_int_equal(ops->list(fx->d, on_list_midway, m), CFM_OK);
    assert_true(run_until(fx, &fx->answers, 3, WAIT_MS));
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
    struct fx *fx = *state;
    struct midway m;
    json_t *j;

    open_ok(fx, NULL);
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
    j = read_vm_json(fx, m.run.vm.id);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "terminated");
    json_decref(j);
    assert_int_equal(describe(fx, m.run.vm.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(fx->events, 0);
}

static void test_same_key_while_spawning(void **state)
{
    struct fx *fx = *state;
    struct call a, b, other;
    int pid = 0;

    open_ok(fx, NULL);
    assert_int_equal(start_run(fx, &a, "run-2.1", "web"), CFM_OK);
    assert_int_equal(start_run(fx, &b, "run-2.1", "web"), CFM_OK);
    assert_int_equal(start_run(fx, &other, "run-2.1", "db"), CFM_OK);
    assert_true(run_until(fx, &fx->answers, 3, WAIT_MS));
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
    assert_int_equal(pid, vm_pid(fx, a.vm.id));
    list_vms(fx);
    assert_int_equal(fx->nlist, 1);
}

static void test_close_while_spawning(void **state)
{
    struct fx *fx = *state;
    struct call c[NRUNS];
    int n;

    open_ok(fx, NULL);
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
    open_ok(fx, NULL);
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
    struct fx *fx = *state;
    struct midway m;
    char script[PATH_MAX];
    struct cfm_why why = {""};
    FILE *f;
    struct cfm_driver_env env = {
        .loop = &fx->loop, .site = "site-a", .state_dir = fx->dir,
        .broker_host = "127.0.0.1", .broker_port = fx->port,
        .agent_path = script, .on_event = on_event, .arg = fx,
    };

    PATHF(script, "%s/agent.sh", fx->dir);
    assert_non_null(f = fopen(script, "w"));
    fprintf(f, "#!/bin/sh\nexec '%s' \"$@\"\n", CFM_AGENT_PATH);
    fclose(f);
    assert_int_equal(chmod(script, 0755), 0);
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_OK);
    /* The agent cannot be started: an error, and nothing left behind. */
    assert_int_equal(chmod(script, 0644), 0);
    assert_int_equal(run_vm(fx, "k-1", "web", 1, 512), CFM_EIO);
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
    assert_int_equal(run_vm(fx, "k-1", "web", 1, 512), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
    assert_string_equal(fx->vm.private_ip + strlen(fx->vm.private_ip) - 2, ".2");
    assert_int_equal(count_vm_dirs(fx), 1);
}

static void test_kill9_child(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a;
    json_t *j;
    int pid;

    open_ok(fx, NULL);
    run_ok(fx, "k-1", &a);
    pid = vm_pid(fx, a.id);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(run_until(fx, &fx->events, 1, FAIL_MS));
    assert_string_equal(fx->event.id, a.id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    j = read_vm_json(fx, a.id);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "failed");
    json_decref(j);
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_FAILED);
    /* Terminating a failed VM frees what it held at once. */
    assert_int_equal(terminate(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(fx->events, 1);
}

static void test_agent_exits(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a;

    /* An agent that refuses its command line exits at once: FAILED. */
    open_ok(fx, "{\"agent_args\": [\"--no-such-flag\"]}");
    run_ok(fx, "k-1", &a);
    assert_true(run_until(fx, &fx->events, 1, FAIL_MS));
    assert_string_equal(fx->event.id, a.id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
}

static void test_restart_readopt(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info vm[4];
    int pid[4];

    open_ok(fx, NULL);
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "k-%d", i);
        run_ok(fx, key, &vm[i]);
        pid[i] = vm_pid(fx, vm[i].id);
    }
    /* The manager stops: its VMs do not. One dies while it is away. */
    close_driver(fx);
    for (int i = 0; i < 4; i++)
        assert_true(alive(pid[i]));
    assert_int_equal(kill(pid[3], SIGKILL), 0);
    assert_int_equal(waitpid(pid[3], NULL, 0), pid[3]);

    open_ok(fx, NULL);
    assert_int_equal(fx->events, 0); /* reported from the loop, not inside open */
    assert_true(run_until(fx, &fx->events, 1, WAIT_MS));
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
            assert_int_equal(vm_pid(fx, vm[i].id), pid[i]);
            assert_true(i == 3 || alive(pid[i])); /* the same processes */
        }
    }
    /* The same key still answers the re-adopted VM. */
    run_ok(fx, "k-1", &vm[1]);
    assert_int_equal(vm_pid(fx, vm[1].id), pid[1]);

    /* A re-adopted VM killed from outside is found by polling. */
    assert_int_equal(kill(pid[0], SIGKILL), 0);
    assert_true(run_until(fx, &fx->events, 2, FAIL_MS));
    assert_string_equal(fx->event.id, vm[0].id);
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    assert_int_equal(waitpid(pid[0], NULL, WNOHANG), pid[0]); /* it was a zombie */

    /* And one is terminated although it is not our child. */
    assert_int_equal(terminate(fx, vm[1].id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_TERMINATED);
    assert_int_equal(waitpid(pid[1], NULL, WNOHANG), pid[1]); /* it had exited */
    assert_true(alive(pid[2]));
    assert_int_equal(fx->events, 2);
}

/* A directory itself, not a link to one. */
static bool is_dir(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool absent(const char *path)
{
    struct stat st;

    return lstat(path, &st) != 0 && errno == ENOENT;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void assert_text(const char *path, const char *want)
{
    char buf[256] = "";
    FILE *f = fopen(path, "r");

    if (!f)
        fail_msg("cannot read '%s': %s", path, strerror(errno));
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, want);
}

static enum cfm_err attach(struct fx *fx, const char *id, const char *volume)
{
    return answer(fx, ops->attach_volume(fx->d, id, volume, "v-1", on_vm, fx));
}

static enum cfm_err detach(struct fx *fx, const char *id, const char *volume)
{
    return answer(fx, ops->detach_volume(fx->d, id, volume, "v-2", on_vm, fx));
}

static void test_volumes(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a, b;
    char in_a[PATH_MAX], in_b[PATH_MAX], home[PATH_MAX], file[PATH_MAX];

    open_ok(fx, NULL);
    run_ok(fx, "k-1", &a);
    run_ok(fx, "k-2", &b);
    PATHF(in_a, "%s/volumes/data", a.disk);
    PATHF(in_b, "%s/volumes/data", b.disk);
    PATHF(home, "%s/volumes/shop/data", fx->dir);
    assert_int_equal(attach(fx, a.id, "data"), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 1);
    assert_string_equal(fx->vm.volumes[0], "data");
    /* Attached, the volume is a directory of the VM's disk, not a link out. */
    assert_true(is_dir(in_a));
    assert_true(absent(home));
    PATHF(file, "%s/hello", in_a);
    write_text(file, "hi\n");
    /* Idempotent. */
    assert_int_equal(attach(fx, a.id, "data"), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 1);
    {
        json_t *j = read_vm_json(fx, a.id);
        assert_int_equal(json_array_size(json_object_get(j, "volumes")), 1);
        json_decref(j);
    }
    /* One VM at a time. */
    assert_int_equal(attach(fx, b.id, "data"), CFM_EINVAL);
    assert_non_null(strstr(fx->why, a.id));
    /* Detach moves it out of the disk to its home, data and all; twice is fine. */
    assert_int_equal(detach(fx, a.id, "data"), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_true(absent(in_a));
    assert_true(is_dir(home));
    PATHF(file, "%s/hello", home);
    assert_text(file, "hi\n");
    assert_int_equal(detach(fx, a.id, "data"), CFM_OK);
    /* Now b may have it, with what a wrote; terminating b moves it home. */
    assert_int_equal(attach(fx, b.id, "data"), CFM_OK);
    assert_true(absent(home));
    PATHF(file, "%s/hello", in_b);
    assert_text(file, "hi\n");
    assert_int_equal(terminate(fx, b.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_true(absent(in_b));
    PATHF(file, "%s/hello", home);
    assert_text(file, "hi\n");
    assert_int_equal(attach(fx, b.id, "data"), CFM_EINVAL);
    assert_int_equal(attach(fx, a.id, "a/b"), CFM_EINVAL);
    assert_int_equal(attach(fx, a.id, ".."), CFM_EINVAL);
    /* Something of the VM's own in the way is not overwritten. */
    PATHF(file, "%s/volumes/data/mine", a.disk);
    assert_int_equal(mkdir(in_a, 0755), 0);
    write_text(file, "mine\n");
    assert_int_equal(attach(fx, a.id, "data"), CFM_EIO);
    assert_non_null(strstr(fx->why, "in the way"));
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_text(file, "mine\n");
    PATHF(file, "%s/hello", home);
    assert_text(file, "hi\n");
}

/* Adds volume to the volumes of the VM's vm.json (the driver is closed). */
static void record_volume(const struct fx *fx, const char *id, const char *volume)
{
    char path[PATH_MAX];
    json_t *j = read_vm_json(fx, id);

    assert_non_null(j);
    assert_int_equal(json_array_append_new(json_object_get(j, "volumes"), json_string(volume)),
                     0);
    PATHF(path, "%s/vms/%s/vm.json", fx->dir, id);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
}

/* Heal and DR: the data of a FAILED VM's volume follows the volume to the
 * next VM. IDs with dots do not collide. A restart puts a volume back where
 * its record says, after a move that was cut short. */
static void test_volume_heal(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_spec spec = {.key = "k-3", .system = "shop.db", .vm_class = "web",
                               .image = "local", .cpu = 1, .memory_mb = 512};
    struct cfm_vm_info a, b, c;
    char in_a[PATH_MAX], in_b[PATH_MAX], home[PATH_MAX], file[PATH_MAX];
    json_t *j;

    open_ok(fx, NULL);
    run_ok(fx, "k-1", &a);
    run_ok(fx, "k-2", &b);
    assert_int_equal(answer(fx, ops->run(fx->d, &spec, on_vm, fx)), CFM_OK);
    c = fx->vm;
    /* (shop, db.data) and (shop.db, data) are two volumes. */
    assert_int_equal(attach(fx, a.id, "db.data"), CFM_OK);
    assert_int_equal(attach(fx, c.id, "data"), CFM_OK);
    PATHF(in_a, "%s/volumes/db.data", a.disk);
    PATHF(in_b, "%s/volumes/db.data", b.disk);
    PATHF(file, "%s/row", in_a);
    write_text(file, "of shop\n");
    PATHF(file, "%s/volumes/data/row", c.disk);
    write_text(file, "of shop.db\n");

    /* a dies: attaching its volume to b moves the data from a's disk. */
    assert_int_equal(kill(vm_pid(fx, a.id), SIGKILL), 0);
    assert_true(run_until(fx, &fx->events, 1, FAIL_MS));
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    assert_int_equal(fx->event.nvolumes, 1); /* a failed VM still holds its volumes */
    assert_int_equal(attach(fx, b.id, "db.data"), CFM_OK);
    assert_true(absent(in_a));
    PATHF(file, "%s/row", in_b);
    assert_text(file, "of shop\n");
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    j = read_vm_json(fx, a.id);
    assert_int_equal(json_array_size(json_object_get(j, "volumes")), 0);
    json_decref(j);
    assert_int_equal(detach(fx, c.id, "data"), CFM_OK);
    PATHF(file, "%s/volumes/shop.db/data/row", fx->dir);
    assert_text(file, "of shop.db\n");

    /* Stopped after moving b's volume out but before recording it: the
     * record wins, and the volume goes back into b's disk. */
    close_driver(fx);
    PATHF(home, "%s/volumes/shop", fx->dir);
    assert_true(mkdir(home, 0700) == 0 || errno == EEXIST);
    PATHF(home, "%s/volumes/shop/db.data", fx->dir);
    assert_int_equal(rename(in_b, home), 0);
    open_ok(fx, NULL);
    assert_true(absent(home));
    PATHF(file, "%s/row", in_b);
    assert_text(file, "of shop\n");

    /* Stopped after recording the volume on b but before dropping it from
     * failed a: it stays with b, whose disk holds it. */
    close_driver(fx);
    record_volume(fx, a.id, "db.data");
    open_ok(fx, NULL);
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_int_equal(describe(fx, b.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 1);
    assert_text(file, "of shop\n");
    j = read_vm_json(fx, a.id);
    assert_int_equal(json_array_size(json_object_get(j, "volumes")), 0);
    json_decref(j);

    /* b dies and its volume's data is lost: not silently replaced by an
     * empty volume; detached from b, the id makes a new one. */
    assert_int_equal(kill(vm_pid(fx, b.id), SIGKILL), 0);
    assert_true(run_until(fx, &fx->events, 2, FAIL_MS));
    assert_int_equal(unlink(file), 0);
    assert_int_equal(rmdir(in_b), 0);
    run_ok(fx, "k-4", &c);
    assert_int_equal(attach(fx, c.id, "db.data"), CFM_EIO);
    assert_non_null(strstr(fx->why, "neither in the disk of"));
    assert_int_equal(detach(fx, b.id, "db.data"), CFM_OK);
    assert_int_equal(attach(fx, c.id, "db.data"), CFM_OK);
    PATHF(file, "%s/volumes/db.data", c.disk);
    assert_true(is_dir(file));
    assert_int_equal(fx->events, 2);
}

static void test_addresses(void **state)
{
    struct fx *fx = *state;
    static const char config[] = "{\"public_pool\": [\"127.78.9.1\", \"127.78.9.2\"]}";
    struct cfm_vm_info a, b;
    json_t *j;

    open_ok(fx, config);
    run_ok(fx, "k-1", &a);
    run_ok(fx, "k-2", &b);
    assert_int_equal(
        answer(fx, ops->associate_address(fx->d, a.id, "web-ip", "a-1", on_vm, fx)), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    assert_string_equal(fx->vm.address_id, "web-ip");
    assert_int_equal(
        answer(fx, ops->associate_address(fx->d, a.id, "web-ip", "a-1", on_vm, fx)), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    /* Moving it to b (what DR does) takes it from a. */
    assert_int_equal(
        answer(fx, ops->associate_address(fx->d, b.id, "web-ip", "a-2", on_vm, fx)), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "");
    assert_string_equal(fx->vm.address_id, "");
    j = read_vm_json(fx, a.id);
    assert_string_equal(json_string_value(json_object_get(j, "public_ip")), "");
    json_decref(j);
    j = read_vm_json(fx, b.id);
    assert_string_equal(json_string_value(json_object_get(j, "address_id")), "web-ip");
    json_decref(j);
    /* A second address, then the pool is exhausted. */
    assert_int_equal(
        answer(fx, ops->associate_address(fx->d, a.id, "db-ip", "a-3", on_vm, fx)), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.2");
    assert_int_equal(
        answer(fx, ops->associate_address(fx->d, a.id, "x-ip", "a-4", on_vm, fx)), CFM_ETOOBIG);
    assert_non_null(strstr(fx->why, "no free public address"));
    /* Disassociate, twice. */
    assert_int_equal(
        answer(fx, ops->disassociate_address(fx->d, b.id, "web-ip", "a-5", on_vm, fx)), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "");
    assert_int_equal(
        answer(fx, ops->disassociate_address(fx->d, b.id, "web-ip", "a-5", on_vm, fx)), CFM_OK);
    /* The binding of (system, address) to its IP survives a restart. */
    close_driver(fx);
    open_ok(fx, config);
    assert_int_equal(
        answer(fx, ops->associate_address(fx->d, a.id, "web-ip", "a-6", on_vm, fx)), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    /* Terminating frees the public address of the VM. */
    assert_int_equal(terminate(fx, a.id), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "");
    assert_string_equal(fx->vm.address_id, "");
}

static void test_unknown_vm(void **state)
{
    struct fx *fx = *state;

    open_ok(fx, NULL);
    assert_int_equal(describe(fx, "vm-0000000000"), CFM_ENOTFOUND);
    assert_non_null(strstr(fx->why, "vm-0000000000"));
    assert_int_equal(terminate(fx, "vm-0000000000"), CFM_ENOTFOUND);
    assert_int_equal(answer(fx, ops->attach_volume(fx->d, "vm-0", "v", "k", on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(answer(fx, ops->detach_volume(fx->d, "vm-0", "v", "k", on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(answer(fx, ops->associate_address(fx->d, "vm-0", "a", "k", on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(answer(fx, ops->disassociate_address(fx->d, "vm-0", "a", "k", on_vm, fx)),
                     CFM_ENOTFOUND);
    assert_int_equal(answer(fx, ops->describe(fx->d, NULL, on_vm, fx)), CFM_ENOTFOUND);
    assert_int_equal(ops->describe(fx->d, "vm-0", NULL, fx), CFM_EINVAL); /* no callback */
    list_vms(fx);
    assert_int_equal(fx->nlist, 0);
}

static void test_bad_config(void **state)
{
    static const struct {
        const char *config, *field;
    } cases[] = {
        {"[]", "driver: must be an object"},
        {"{\"type\": \"ec2\"}", "driver.type"},
        {"{\"bogus\": 1}", "driver: unknown field 'bogus'"},
        {"{\"capacity\": 4}", "driver.capacity"},
        {"{\"capacity\": {\"cpu\": 0}}", "driver.capacity.cpu"},
        {"{\"capacity\": {\"cpu\": \"4\"}}", "driver.capacity.cpu"},
        {"{\"capacity\": {\"memory_mb\": -1}}", "driver.capacity.memory_mb"},
        {"{\"capacity\": {\"cpus\": 4}}", "driver.capacity: unknown field 'cpus'"},
        {"{\"private_net\": \"10.0.0\"}", "driver.private_net"},
        {"{\"private_net\": \"127.77.256\"}", "driver.private_net"},
        {"{\"private_net\": \"127.77.5.0\"}", "driver.private_net"},
        {"{\"public_pool\": \"127.78.1.1\"}", "driver.public_pool"},
        {"{\"public_pool\": [\"127.78.1.300\"]}", "driver.public_pool[0]"},
        {"{\"public_pool\": [\"127.78.1.1\", \"127.78.1.1\"]}", "driver.public_pool[1]"},
        {"{\"private_net\": \"127.77.5\", \"public_pool\": [\"127.77.5.9\"]}",
         "driver.public_pool[0]"},
        {"{\"agent_args\": [\"--vm\"]}", "driver.agent_args[0]"},
        {"{\"agent_args\": [\"--log-level=debug\", \"--root=/\"]}", "driver.agent_args[1]"},
        {"{\"agent_args\": [7]}", "driver.agent_args[0]"},
    };
    struct fx *fx = *state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfm_why why = {""};
        fx->d = NULL;
        assert_int_equal(open_driver(fx, cases[i].config, &why), CFM_ECONFIG);
        assert_null(fx->d);
        if (!strstr(why.text, cases[i].field))
            fail_msg("config %s: why '%s' does not name '%s'", cases[i].config, why.text,
                     cases[i].field);
    }
    /* What is fine is fine. */
    open_ok(fx, "{\"type\": \"local\", \"capacity\": {\"cpu\": 2, \"memory_mb\": 2048}, "
                "\"private_net\": \"127.77.5\", \"public_pool\": [\"127.78.5.1\"], "
                "\"agent_args\": [\"--log-level\", \"debug\"]}");
    close_driver(fx);
}

static void test_bad_env(void **state)
{
    struct fx *fx = *state;
    struct cfm_driver_env env = {
        .loop = &fx->loop, .site = "site-a", .state_dir = fx->dir,
        .broker_host = "127.0.0.1", .broker_port = fx->port,
        .agent_path = "/nonexistent/cfm-agent",
    };
    struct cfm_why why = {""};

    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_ECONFIG);
    assert_non_null(strstr(why.text, "agent_path"));
    env.agent_path = CFM_AGENT_PATH;
    env.site = "a/b";
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_ECONFIG);
    assert_non_null(strstr(why.text, "site"));
    env.site = "site-a";
    env.state_dir = "/nonexistent/state";
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_ECONFIG);
    assert_non_null(strstr(why.text, "state_dir"));
    fx->d = NULL;
}

/* Writes the record a run leaves when the manager stops after writing it
 * and before its agent's pid: PENDING, no pid; with a disk, empty unless
 * file is given. */
static void write_pending(const struct fx *fx, const char *id, const char *key, const char *file)
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
        write_text(path, "x\n");
    }
    PATHF(path, "%s/vms/%s/vm.json", fx->dir, id);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
}

/* The manager stopped while runs were spawning their agents (the spawn is
 * on the thread pool, so a stop can come at any step of it). */
static void test_restart_cut_short(void **state)
{
    struct fx *fx = *state;
    struct cfm_vm_info a, c;
    char path[PATH_MAX];
    json_t *j;
    int pid;

    open_ok(fx, NULL);
    run_ok(fx, "k-1", &a);
    pid = vm_pid(fx, a.id);
    assert_int_equal(agents_soon_of(a.id, NULL), 1);
    close_driver(fx);
    /* a: its agent started, its pid not recorded. */
    j = read_vm_json(fx, a.id);
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
    write_text(path, "agent: started\n");
    /* e: not even recorded: a directory and its empty disk. */
    PATHF(path, "%s/vms/vm-00000000ee", fx->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    PATHF(path, "%s/vms/vm-00000000ee/disk", fx->dir);
    assert_int_equal(mkdir(path, 0755), 0);

    open_ok(fx, NULL);
    /* a's agent is found by its command line and adopted, its pid recorded. */
    assert_int_equal(describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
    assert_int_equal(vm_pid(fx, a.id), pid);
    run_ok(fx, "k-1", &c);
    assert_string_equal(c.id, a.id);
    /* b and e leave nothing; b's key makes a new VM. */
    assert_int_equal(describe(fx, "vm-00000000bb"), CFM_ENOTFOUND);
    PATHF(path, "%s/vms/vm-00000000bb", fx->dir);
    assert_true(absent(path));
    PATHF(path, "%s/vms/vm-00000000ee", fx->dir);
    assert_true(absent(path));
    run_ok(fx, "k-2", &c);
    assert_string_not_equal(c.id, "vm-00000000bb");
    /* d and f are kept, FAILED, as any VM whose agent is gone. */
    assert_true(run_until(fx, &fx->events, 2, WAIT_MS));
    assert_int_equal(describe(fx, "vm-00000000dd"), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_FAILED);
    assert_int_equal(describe(fx, "vm-00000000ff"), CFM_OK);
    assert_int_equal(fx->vm.state, CFM_VM_FAILED);
    PATHF(path, "%s/vms/vm-00000000dd/disk/mine", fx->dir);
    assert_text(path, "x\n");
    assert_int_equal(count_vm_dirs(fx), 4);
    assert_int_equal(fx->events, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_registry),          T(test_run_three),     T(test_same_key),
        T(test_capacity),          T(test_terminate),     T(test_terminate_stubborn),
        T(test_spawn_failure),     T(test_runs_at_once),  T(test_terminate_while_spawning),
        T(test_same_key_while_spawning),                  T(test_close_while_spawning),
        T(test_kill9_child),       T(test_agent_exits),
        T(test_restart_readopt),   T(test_restart_cut_short),
        T(test_volumes),           T(test_volume_heal),
        T(test_addresses),         T(test_unknown_vm),    T(test_bad_config),
        T(test_bad_env),
    };

    /* An agent's death must not stop the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
