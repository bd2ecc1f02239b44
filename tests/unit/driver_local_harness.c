/*
 * driver_local_harness.c - what the local driver's tests share
 * (test_driver_local_procs.c, test_driver_local_resources.c): each test
 * has its own libuv loop and temporary state directory, and the real
 * cfm-agent (CFM_AGENT_PATH) for its VMs. The agents are given a closed
 * loopback port as their broker: they keep retrying, which is all a driver
 * test needs. Waits are the loop run until a condition or a deadline;
 * teardown kills every agent recorded in a vm.json, even when the test
 * failed.
 */
#include "driver_local_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct cfm_driver_ops *ops = &cfm_driver_local_ops;

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

void dlh_on_event(void *arg, const struct cfm_vm_info *vm)
{
    struct dlh_fx *fx = arg;

    fx->events++;
    fx->event = *vm;
    uv_stop(&fx->loop); /* let dlh_run_until look at once */
}

void dlh_keep_answer(enum cfm_err err, const struct cfm_vm_info *vm, const char *why,
                     enum cfm_err *err_out, struct cfm_vm_info *vm_out, char why_out[CFM_WHY_MAX])
{
    *err_out = err;
    memset(vm_out, 0, sizeof *vm_out);
    if (vm)
        *vm_out = *vm;
    snprintf(why_out, CFM_WHY_MAX, "%s", why ? why : "");
}

void dlh_on_vm(void *arg, enum cfm_err err, const struct cfm_vm_info *vm, const char *why)
{
    struct dlh_fx *fx = arg;

    fx->answers++;
    dlh_keep_answer(err, vm, why, &fx->err, &fx->vm, fx->why);
    uv_stop(&fx->loop);
}

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

bool dlh_run_until(struct dlh_fx *fx, const int *count, int want, uint64_t ms)
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

enum cfm_err dlh_answer(struct dlh_fx *fx, enum cfm_err call)
{
    assert_int_equal(call, CFM_OK);
    assert_int_equal(fx->answers, 0);
    assert_true(dlh_run_until(fx, &fx->answers, 1, WAIT_MS));
    fx->answers = 0;
    return fx->err;
}

enum cfm_err dlh_open_driver(struct dlh_fx *fx, const char *config_text, struct cfm_why *why)
{
    struct cfm_driver_env env = {
        .loop = &fx->loop,
        .site = "site-a",
        .state_dir = fx->dir,
        .broker_host = "127.0.0.1",
        .broker_port = fx->port,
        .agent_path = CFM_AGENT_PATH,
        .on_event = dlh_on_event,
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

void dlh_open_ok(struct dlh_fx *fx, const char *config_text)
{
    struct cfm_why why = {""};

    fx->d = NULL;
    if (dlh_open_driver(fx, config_text, &why) != CFM_OK)
        fail_msg("open: %s", why.text);
}

void dlh_close_driver(struct dlh_fx *fx)
{
    if (fx->d) {
        ops->close(fx->d);
        fx->d = NULL;
        uv_run(&fx->loop, UV_RUN_DEFAULT);
    }
}

enum cfm_err dlh_run_vm(struct dlh_fx *fx, const char *key, const char *cls, int cpu, int mem)
{
    struct cfm_vm_spec spec = {.key = key, .system = "shop", .vm_class = cls,
                               .image = "local", .cpu = cpu, .memory_mb = mem};

    return dlh_answer(fx, ops->run(fx->d, &spec, dlh_on_vm, fx));
}

void dlh_run_ok(struct dlh_fx *fx, const char *key, struct cfm_vm_info *out)
{
    if (dlh_run_vm(fx, key, "web", 1, 512) != CFM_OK)
        fail_msg("run %s: %s", key, fx->why);
    assert_int_equal(fx->vm.state, CFM_VM_RUNNING);
    *out = fx->vm;
}

enum cfm_err dlh_terminate(struct dlh_fx *fx, const char *id)
{
    return dlh_answer(fx, ops->terminate(fx->d, id, "t-1", dlh_on_vm, fx));
}

enum cfm_err dlh_describe(struct dlh_fx *fx, const char *id)
{
    return dlh_answer(fx, ops->describe(fx->d, id, dlh_on_vm, fx));
}

json_t *dlh_read_vm_json(const struct dlh_fx *fx, const char *id)
{
    char path[PATH_MAX];

    PATHF(path, "%s/vms/%s/vm.json", fx->dir, id);
    return json_load_file(path, 0, NULL);
}

int dlh_vm_pid(const struct dlh_fx *fx, const char *id)
{
    json_t *j = dlh_read_vm_json(fx, id);
    int pid = (int)json_integer_value(json_object_get(j, "pid"));

    json_decref(j);
    return pid;
}

/* Kills (and reaps, when ours) every agent a vm.json names. */
static void kill_all(const struct dlh_fx *fx)
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
        pid = dlh_vm_pid(fx, e->d_name);
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

int dlh_setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    struct dlh_fx *fx = calloc(1, sizeof *fx);

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

int dlh_teardown(void **state)
{
    struct dlh_fx *fx = *state;
    int rc;

    dlh_close_driver(fx);
    kill_all(fx);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&fx->loop);
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return rc == 0 ? 0 : -1;
}

bool dlh_absent(const char *path)
{
    struct stat st;

    return lstat(path, &st) != 0 && errno == ENOENT;
}

void dlh_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

void dlh_assert_text(const char *path, const char *want)
{
    char buf[256] = "";
    FILE *f = fopen(path, "r");

    if (!f)
        fail_msg("cannot read '%s': %s", path, strerror(errno));
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, want);
}
