/*
 * exec.c - one command on the loop. The agent never waits for a command: it
 * spawns it (uv_spawn), reads its stdout and stderr through pipes as they
 * fill, and is told of its exit by libuv, so pings and other requests are
 * answered while any number of commands run.
 *
 * A command starts a session of its own (UV_PROCESS_DETACHED, so setsid):
 * its process group id is its pid, and a timeout kills the whole group with
 * kill(-pid, SIGKILL), grandchildren included. Of each stream the first
 * max_output bytes are kept and the rest is read and dropped, so a chatty
 * command never blocks on a full pipe. A command that exits while something
 * it started in the background still holds its pipes gets EXIT_DRAIN_MS
 * more for its output; then the pipes are closed and the answer goes out
 * (the background process lives on: a command may start a service).
 *
 * Lifetime: the struct owns its handles (process, two or three pipes, one
 * timer); it is freed in the close callback of the last one, right after
 * the done callback, so nothing of it outlives the loop.
 */
#include "exec.h"

#include "bounds.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__linux__) && __has_include(<linux/close_range.h>)
#include <linux/close_range.h>
#endif

#include "files.h"
#include "text.h"
#include "util.h"

#define EXIT_DRAIN_MS 500
#define READ_CHUNK (64u << 10)
#define BASE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define BASE_ENV 4

struct stream {
    uv_pipe_t pipe; /* first: the handle's address is the stream's */
    struct cfm_agent_exec *x;
    char *buf;
    size_t len, cap;
    bool truncated;
    bool open;
};

struct cfm_agent_exec {
    uv_process_t proc;
    uv_timer_t timer; /* the timeout, then the drain after exit */
    uv_pipe_t in;
    uv_write_t write_req;
    struct stream out, err;
    bool in_open;
    int handles; /* handles not yet closed */
    bool exited, timed_out;
    const char *abort_reason;
    int64_t exit_status;
    int term_signal;
    uint64_t started_ns, duration_ms;
    size_t max_output;
    char *stdin_data;
    size_t stdin_len;
    cfm_agent_exec_done done;
    void *arg;
    char chunk[READ_CHUNK];
};

/* What a request asks for, checked; strings borrowed from the request. */
struct request {
    char **argv;
    const char *shell_argv[4];
    char cwd[PATH_MAX];
    char **env;
    size_t nenv;
    uint64_t timeout_ms;
    size_t max_output;
    const json_t *stdin_text;
};

static void finish(struct cfm_agent_exec *x)
{
    json_t *result = NULL, *out = NULL, *err = NULL;

    if (x->done && !x->abort_reason) {
        out = cfm_agent_text_json(x->out.buf ? x->out.buf : "", x->out.len);
        err = cfm_agent_text_json(x->err.buf ? x->err.buf : "", x->err.len);
        if (out && err)
            result = json_pack(
                "{s:o, s:o, s:O, s:O, s:b, s:b, s:b, s:I}", "code",
                x->exited && !x->term_signal ? json_integer(x->exit_status) : json_null(),
                "signal", x->term_signal ? json_integer(x->term_signal) : json_null(), "stdout",
                out, "stderr", err, "stdout_truncated", x->out.truncated, "stderr_truncated",
                x->err.truncated, "timed_out", x->timed_out, "duration_ms",
                (json_int_t)x->duration_ms);
        x->done(x->arg, result, result ? NULL : "out of memory building the result");
    } else if (x->done) {
        x->done(x->arg, NULL, x->abort_reason);
    }
    json_decref(result);
    json_decref(out);
    json_decref(err);
    free(x->out.buf);
    free(x->err.buf);
    free(x->stdin_data);
    free(x);
}

static void on_closed(uv_handle_t *h)
{
    struct cfm_agent_exec *x = h->data;

    if (--x->handles == 0)
        finish(x);
}

static void close_handle(struct cfm_agent_exec *x, uv_handle_t *h)
{
    h->data = x;
    if (!uv_is_closing(h))
        uv_close(h, on_closed);
}

static void close_stream(struct stream *s)
{
    if (!s->open)
        return;
    s->open = false;
    close_handle(s->x, (uv_handle_t *)&s->pipe);
}

/* Everything is over once the process exited and both outputs are closed. */
static void check_over(struct cfm_agent_exec *x)
{
    if (!x->exited || x->out.open || x->err.open)
        return;
    uv_timer_stop(&x->timer);
    close_handle(x, (uv_handle_t *)&x->timer);
    if (x->in_open) {
        x->in_open = false;
        close_handle(x, (uv_handle_t *)&x->in);
    }
}

static void keep(struct stream *s, size_t max, const char *p, size_t n)
{
    size_t room = max - s->len;

    if (n > room) {
        s->truncated = true;
        n = room;
    }
    if (n == 0)
        return;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        char *grown;
        while (cap < s->len + n)
            cap = cap > max / 2 ? max : cap * 2;
        if (!(grown = realloc(s->buf, cap))) {
            s->truncated = true; /* keep what we have rather than fail */
            return;
        }
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct stream *s = (struct stream *)h;

    (void)suggested;
    /* One chunk per exec serves both pipes: libuv hands it back in the
     * read callback that follows at once. */
    *buf = uv_buf_init(s->x->chunk, sizeof s->x->chunk);
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    struct stream *s = (struct stream *)h;

    if (n > 0)
        keep(s, s->x->max_output, buf->base, (size_t)n);
    if (n < 0) { /* UV_EOF, or the pipe failed: either way no more output */
        close_stream(s);
        check_over(s->x);
    }
}

static void on_timer(uv_timer_t *t);

static void on_proc_exit(uv_process_t *proc, int64_t status, int term_signal)
{
    struct cfm_agent_exec *x = (struct cfm_agent_exec *)proc;

    x->exited = true;
    x->exit_status = status;
    x->term_signal = term_signal;
    x->duration_ms = (uv_hrtime() - x->started_ns) / 1000000u;
    close_handle(x, (uv_handle_t *)&x->proc);
    uv_timer_stop(&x->timer);
    if (x->out.open || x->err.open)
        uv_timer_start(&x->timer, on_timer, EXIT_DRAIN_MS, 0);
    check_over(x);
}

static void on_timer(uv_timer_t *t)
{
    struct cfm_agent_exec *x = t->data;

    if (x->exited) { /* the drain is over: stop waiting for background output */
        close_stream(&x->out);
        close_stream(&x->err);
        check_over(x);
        return;
    }
    x->timed_out = true;
    uv_kill(-x->proc.pid, SIGKILL);
}

static void on_written(uv_write_t *req, int status)
{
    struct cfm_agent_exec *x = req->data;

    (void)status; /* EPIPE: the command did not read its input, which is its right */
    if (x->in_open) {
        x->in_open = false;
        close_handle(x, (uv_handle_t *)&x->in);
    }
}

void cfm_agent_exec_abort(struct cfm_agent_exec *x, const char *reason)
{
    if (!x->abort_reason) {
        x->abort_reason = reason;
        if (!x->exited) {
            uv_kill(-x->proc.pid, SIGKILL);
            return; /* the exit follows at once */
        }
    } else if (!x->exited) {
        /* Asked again: stop waiting for an exit that does not come (a
         * process stuck in the kernel); it is left unreaped. */
        x->exited = true;
        close_handle(x, (uv_handle_t *)&x->proc);
    }
    close_stream(&x->out);
    close_stream(&x->err);
    check_over(x);
}

/* Sets close-on-exec on every descriptor above stderr. libmosquitto opens
 * its socket (and a socket pair) without it: a command, or a daemon it
 * leaves behind, holding the broker connection would keep the broker from
 * seeing the agent die, and its Last Will would come late. */
static void cloexec_all(void)
{
    struct dirent *de;
    DIR *d;

#if defined(SYS_close_range) && defined(CLOSE_RANGE_CLOEXEC)
    if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0)
        return;
#endif
    if (!(d = opendir("/proc/self/fd")))
        return;
    while ((de = readdir(d))) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        int flags;
        if (*end || fd <= 2 || fd > INT_MAX || fd == dirfd(d) ||
            (flags = fcntl((int)fd, F_GETFD)) < 0)
            continue;
        fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
    }
    closedir(d);
}

/* A JSON string that can become a C string: no NUL inside. */
static const char *c_string(const json_t *v)
{
    const char *s = json_string_value(v);

    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

static enum cfm_err add_env(struct request *r, const char *key, const char *value,
                            struct cfm_why *why)
{
    size_t klen = strlen(key), i;
    char *entry = malloc(klen + strlen(value) + 2);

    if (!entry)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    memcpy(entry, key, klen);
    entry[klen] = '=';
    memcpy(entry + klen + 1, value, strlen(value) + 1);
    for (i = 0; i < r->nenv; i++)
        if (strncmp(r->env[i], entry, klen + 1) == 0)
            break;
    if (i < r->nenv)
        free(r->env[i]); /* the request's value wins over the base one */
    else
        r->nenv++;
    r->env[i] = entry;
    return CFM_OK;
}

static enum cfm_err parse_env(struct request *r, const char *vm, const char *root,
                              const json_t *env, struct cfm_why *why)
{
    const char *key;
    json_t *v;
    enum cfm_err err;

    if (env && (!json_is_object(env) || json_object_size(env) > CFM_AGENT_MAX_ENV))
        return cfm_why_set(why, CFM_EINVAL, "env must be an object of at most %d strings",
                           CFM_AGENT_MAX_ENV);
    r->env = calloc(BASE_ENV + json_object_size(env) + 1, sizeof *r->env);
    if (!r->env)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if ((err = add_env(r, "PATH", BASE_PATH, why)) != CFM_OK ||
        (err = add_env(r, "HOME", root, why)) != CFM_OK ||
        (err = add_env(r, "CFM_VM", vm, why)) != CFM_OK ||
        (err = add_env(r, "CFM_ROOT", root, why)) != CFM_OK)
        return err;
    json_object_foreach((json_t *)env, key, v) {
        if (!*key || strchr(key, '=') || strlen(key) > 255)
            return cfm_why_set(why, CFM_EINVAL, "env: '%.64s' is not a variable name", key);
        if (!c_string(v))
            return cfm_why_set(why, CFM_EINVAL, "env.%.64s must be a string without NUL bytes",
                               key);
        if ((err = add_env(r, key, json_string_value(v), why)) != CFM_OK)
            return err;
    }
    return CFM_OK;
}

static enum cfm_err parse_request(struct request *r, const char *vm, const char *root,
                                  const json_t *req, struct cfm_why *why)
{
    const json_t *argv = json_object_get(req, "argv"), *shell = json_object_get(req, "shell");
    const json_t *cwd = json_object_get(req, "cwd");
    json_int_t timeout_s = 0, max_output = 0;
    enum cfm_err err;
    size_t i;

    if (!!argv == !!shell)
        return cfm_why_set(why, CFM_EINVAL,
                           "exec needs one of \"argv\" (an array of strings) or \"shell\" (a "
                           "string)");
    if (argv) {
        if (!json_is_array(argv) || json_array_size(argv) == 0 ||
            json_array_size(argv) > CFM_AGENT_MAX_ARGS)
            return cfm_why_set(why, CFM_EINVAL, "argv must be an array of 1 to %d strings",
                               CFM_AGENT_MAX_ARGS);
        r->argv = calloc(json_array_size(argv) + 1, sizeof *r->argv);
        if (!r->argv)
            return cfm_why_set(why, CFM_ENOMEM, "out of memory");
        for (i = 0; i < json_array_size(argv); i++) {
            const char *s = c_string(json_array_get(argv, i));
            if (!s || (i == 0 && !*s))
                return cfm_why_set(why, CFM_EINVAL,
                                   "argv[%zu] must be a string without NUL bytes%s", i,
                                   i == 0 ? ", not empty" : "");
            r->argv[i] = (char *)s; /* libuv does not write to it */
        }
    } else {
        if (!c_string(shell))
            return cfm_why_set(why, CFM_EINVAL, "shell must be a string without NUL bytes");
        r->shell_argv[0] = "/bin/sh";
        r->shell_argv[1] = "-c";
        r->shell_argv[2] = c_string(shell);
    }
    if (cwd && !json_is_string(cwd))
        return cfm_why_set(why, CFM_EINVAL, "cwd must be a string");
    if ((err = cfm_agent_files_resolve(root, cwd ? json_string_value(cwd) : "",
                                       cwd ? json_string_length(cwd) : 0, CFM_AGENT_FILES_DIR,
                                       r->cwd, sizeof r->cwd, why)) != CFM_OK)
        return cfm_why_prefix(why, err, "cwd");
    if ((err = cfm_agent_req_int(req, "timeout_s", CFM_AGENT_DEFAULT_TIMEOUT_S, 1,
                       CFM_AGENT_MAX_TIMEOUT_S, &timeout_s, why)) != CFM_OK ||
        (err = cfm_agent_req_int(req, "max_output", CFM_AGENT_DEFAULT_OUTPUT, 0, CFM_AGENT_MAX_OUTPUT,
                       &max_output, why)) != CFM_OK)
        return err;
    r->timeout_ms = (uint64_t)timeout_s * 1000u;
    r->max_output = (size_t)max_output;
    r->stdin_text = json_object_get(req, "stdin");
    if (r->stdin_text && !json_is_string(r->stdin_text))
        return cfm_why_set(why, CFM_EINVAL, "stdin must be a string");
    return parse_env(r, vm, root, json_object_get(req, "env"), why);
}

static void free_request(struct request *r)
{
    for (size_t i = 0; r->env && i < r->nenv; i++)
        free(r->env[i]);
    free(r->env);
    free(r->argv);
}

static void init_stream(uv_loop_t *loop, struct cfm_agent_exec *x, struct stream *s)
{
    uv_pipe_init(loop, &s->pipe, 0);
    s->x = x;
    s->open = true;
    x->handles++;
}

/* Every process a command of this VM started carries CFM_VM=<vm> in its
 * environment (commands get it, their children inherit it): those are
 * the VM's processes, found by their environment rather than by process
 * group ids, which the system may have given to someone else since. */
bool cfm_agent_exec_pid_gone(int pid)
{
    return (kill((pid_t)pid, 0) != 0 && errno == ESRCH) || cfm_pid_zombie(pid);
}

unsigned cfm_agent_exec_kill_vm(const char *vm, int sig, int *pids, unsigned max)
{
    char want[CFM_MAX_ID + 16], path[64], env[65536];
    unsigned found = 0;
    size_t wlen;
    struct dirent *d;
    DIR *proc = opendir("/proc");

    if (!proc)
        return 0;
    wlen = (size_t)snprintf(want, sizeof want, "CFM_VM=%s", vm) + 1; /* with its NUL */
    while ((d = readdir(proc))) {
        char *end;
        long pid = strtol(d->d_name, &end, 10);
        ssize_t n;
        int fd;

        if (*end || pid <= 1 || pid == (long)getpid())
            continue;
        snprintf(path, sizeof path, "/proc/%ld/environ", pid);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        n = read(fd, env, sizeof env);
        close(fd);
        for (ssize_t i = 0; n > 0 && i + (ssize_t)wlen <= n; i++) {
            if ((i == 0 || env[i - 1] == '\0') && memcmp(env + i, want, wlen) == 0) {
                if (sig)
                    kill((pid_t)pid, sig);
                if (found < max)
                    pids[found] = (int)pid;
                found++;
                break;
            }
        }
    }
    closedir(proc);
    return found;
}

enum cfm_err cfm_agent_exec_start(uv_loop_t *loop, const char *vm, const char *root,
                                  const json_t *req, cfm_agent_exec_done done, void *arg,
                                  struct cfm_agent_exec **out, struct cfm_why *why)
{
    struct request r;
    struct cfm_agent_exec *x = NULL;
    uv_process_options_t o;
    uv_stdio_container_t stdio[3];
    enum cfm_err err;
    uv_buf_t buf;
    int rc;

    if (out)
        *out = NULL;
    memset(&r, 0, sizeof r);
    if ((err = parse_request(&r, vm, root, req, why)) != CFM_OK)
        goto out;
    if (!(x = calloc(1, sizeof *x))) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    x->max_output = r.max_output;
    if (r.stdin_text) {
        x->stdin_len = json_string_length(r.stdin_text);
        if (!(x->stdin_data = malloc(x->stdin_len + 1))) {
            free(x);
            x = NULL;
            err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(x->stdin_data, json_string_value(r.stdin_text), x->stdin_len);
        uv_pipe_init(loop, &x->in, 0);
        x->in_open = true;
        x->handles++;
    }
    init_stream(loop, x, &x->out);
    init_stream(loop, x, &x->err);
    uv_timer_init(loop, &x->timer);
    x->timer.data = x;
    x->handles++;
    memset(stdio, 0, sizeof stdio);
    stdio[0].flags = r.stdin_text ? UV_CREATE_PIPE | UV_READABLE_PIPE : UV_IGNORE;
    stdio[0].data.stream = (uv_stream_t *)&x->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&x->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&x->err.pipe;
    memset(&o, 0, sizeof o);
    o.exit_cb = on_proc_exit;
    o.args = r.argv ? r.argv : (char **)r.shell_argv;
    o.file = o.args[0];
    o.env = r.env;
    o.cwd = r.cwd;
    o.flags = UV_PROCESS_DETACHED; /* setsid: a group of its own, killed whole */
    o.stdio = stdio;
    o.stdio_count = 3;
    cloexec_all();
    x->started_ns = uv_hrtime();
    x->handles++; /* the process handle: closed even when the spawn fails */
    rc = uv_spawn(loop, &x->proc, &o);
    if (rc != 0) {
        err = cfm_why_set(why, CFM_EINVAL, "cannot run '%.128s': %s", o.file, uv_strerror(rc));
        /* done stays NULL: the handles close and free x without a call. */
        x->exited = true;
        close_handle(x, (uv_handle_t *)&x->proc);
        close_stream(&x->out);
        close_stream(&x->err);
        check_over(x);
        x = NULL;
        goto out;
    }
    x->done = done;
    x->arg = arg;
    uv_read_start((uv_stream_t *)&x->out.pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&x->err.pipe, on_alloc, on_read);
    uv_timer_start(&x->timer, on_timer, r.timeout_ms, 0);
    if (x->in_open) {
        buf = uv_buf_init(x->stdin_data, (unsigned)x->stdin_len);
        x->write_req.data = x;
        if (x->stdin_len == 0 ||
            uv_write(&x->write_req, (uv_stream_t *)&x->in, &buf, 1, on_written) != 0) {
            x->in_open = false;
            close_handle(x, (uv_handle_t *)&x->in);
        }
    }
    if (out)
        *out = x;
    err = CFM_OK;
out:
    free_request(&r);
    return err;
}
