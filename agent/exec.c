/*
 * exec.c - one command on the loop. The agent never waits for a command: it
 * starts it (posix_spawn), reads its stdout and stderr through pipes as
 * they fill, and learns of its exit from a pidfd of its own (pidfd_open,
 * Linux 5.3; readable once the command has exited, watched by a uv_poll_t;
 * then waitpid(WNOHANG) reaps it), so pings and other requests are
 * answered while any number of commands run. Without pidfds (an older
 * kernel) a 10 ms timer asks waitpid instead. Not SIGCHLD: a uv_signal_t
 * per command would have every exit write a message per running command
 * into libuv's signal pipe, which drops what does not fit.
 *
 * Why posix_spawn and not uv_spawn: libuv (1.44) forks. A fork copies the
 * agent's page tables and write-protects its memory, and the agent then
 * takes a page fault for each page it writes until the child has exec'd;
 * in a virtual machine whose page tables trap to the hypervisor that cost
 * 2-3 ms of CPU per command, and a recovery starts a service on every VM
 * at once. glibc's posix_spawn starts the child with CLONE_VM | CLONE_VFORK:
 * no copy, nothing write-protected (docs/performance.md, "Session 6").
 *
 * A command starts a session of its own (POSIX_SPAWN_SETSID): its process
 * group id is its pid, and a timeout kills the whole group with
 * kill(-pid, SIGKILL), grandchildren included. In the child, before the
 * exec: stdin from /dev/null (or the request's stdin through a pipe),
 * stdout and stderr to their pipes, every other descriptor closed (so
 * libmosquitto's socket, opened without close-on-exec, never reaches a
 * command or a daemon it leaves behind), the request's cwd, no signal
 * blocked and every disposition the default (the agent ignores SIGPIPE;
 * its commands must not). Of each stream the first
 * max_output bytes are kept and the rest is read and dropped, so a chatty
 * command never blocks on a full pipe. A command that exits while something
 * it started in the background still holds its pipes gets EXIT_DRAIN_MS
 * more for its output; then the pipes are closed and the answer goes out
 * (the background process lives on: a command may start a service).
 *
 * A detached command ("detach": true: a service to start) gets no pipes:
 * stdin is /dev/null, stdout and stderr go to its "log" file (appended) or
 * to /dev/null, and it is answered as soon as it runs (a timer of 0 ms, so
 * the answer never comes from inside cfm_agent_exec_start), with its pid.
 * The agent still reaps it when it ends, and says nothing then. A command
 * line of plain words so started costs one process, where "sh -c 'svc
 * ... >log 2>&1 &'" costs three (the shell, its fork, the service):
 * docs/performance.md, "Session 8".
 *
 * Lifetime: the struct owns its handles (process, two or three pipes, one
 * timer); it is freed in the close callback of the last one, right after
 * the done callback, so nothing of it outlives the loop. A detached
 * command's struct lives on after its answer (done is then NULL) until
 * the command has ended.
 */
/* pipe2 (glibc). */
#define _GNU_SOURCE
#include "exec.h"

#include "bounds.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "files.h"
#include "text.h"
#include "util.h"

#define EXIT_DRAIN_MS 500
#define GONE_TICK_MS 10
#define DETACHED_TICK_MS 1000 /* a detached command, without pidfds: it may run for days */
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
    union {
        uv_poll_t poll;  /* on pidfd */
        uv_timer_t tick; /* without one: waitpid every GONE_TICK_MS */
    } gone;              /* the command's end; x->handles counts it from the spawn on */
    int pidfd;           /* -1 when none */
    pid_t pid;
    uv_timer_t timer; /* the timeout, then the drain after exit */
    uv_pipe_t in;
    uv_write_t write_req;
    struct stream out, err;
    bool in_open;
    int handles; /* handles not yet closed */
    bool exited, timed_out;
    bool detached; /* answered once it runs; reaped when it ends */
    struct cfm_agent_exec *next_detached, **prev_detached; /* in detached_list */
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
    bool detach;
    char log[PATH_MAX]; /* detach: where stdout and stderr go; "" = /dev/null */
};

/* The detached commands whose end is still watched: let go of at the
 * agent's stop (cfm_agent_exec_forget_detached). One agent a process. */
static struct cfm_agent_exec *detached_list;

static void finish(struct cfm_agent_exec *x)
{
    json_t *result = NULL, *out = NULL, *err = NULL;

    if (x->prev_detached) { /* out of detached_list */
        *x->prev_detached = x->next_detached;
        if (x->next_detached)
            x->next_detached->prev_detached = x->prev_detached;
    }

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

    if (h == (uv_handle_t *)&x->gone && x->pidfd >= 0) {
        close(x->pidfd); /* only now: the poll handle watched it until closed */
        x->pidfd = -1;
    }

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

/* Reaps the command if it has exited, and goes on as for an exit. */
static void reap(struct cfm_agent_exec *x)
{
    pid_t got;
    int st = 0;

    if (x->exited)
        return;
    do
        got = waitpid(x->pid, &st, WNOHANG);
    while (got < 0 && errno == EINTR);
    if (got != x->pid)
        return;
    x->exited = true;
    x->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    x->term_signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    x->duration_ms = (uv_hrtime() - x->started_ns) / 1000000u;
    close_handle(x, (uv_handle_t *)&x->gone);
    uv_timer_stop(&x->timer);
    if (x->out.open || x->err.open)
        uv_timer_start(&x->timer, on_timer, EXIT_DRAIN_MS, 0);
    check_over(x);
}

#ifdef SYS_pidfd_open
static void on_gone_poll(uv_poll_t *h, int status, int events)
{
    (void)status; /* an error on a pidfd: ask waitpid all the same */
    (void)events;
    reap(h->data);
}
#endif

static void on_gone_tick(uv_timer_t *t)
{
    reap(t->data);
}

/* Watches for the end of the command just spawned: its pidfd when the
 * kernel has them, else a tick. Cannot fail. */
static void watch_gone(uv_loop_t *loop, struct cfm_agent_exec *x)
{
    uint64_t tick = x->detached ? DETACHED_TICK_MS : GONE_TICK_MS;

#ifdef SYS_pidfd_open
    x->pidfd = (int)syscall(SYS_pidfd_open, x->pid, 0);
    if (x->pidfd >= 0 && uv_poll_init(loop, &x->gone.poll, x->pidfd) == 0) {
        x->gone.poll.data = x;
        x->handles++;
        uv_poll_start(&x->gone.poll, UV_READABLE, on_gone_poll);
        return;
    }
    if (x->pidfd >= 0)
        close(x->pidfd);
    x->pidfd = -1;
#endif
    uv_timer_init(loop, &x->gone.tick);
    x->gone.tick.data = x;
    x->handles++;
    uv_timer_start(&x->gone.tick, on_gone_tick, tick, tick);
}

/* A detached command runs: its answer. From here on nobody waits for it. */
static void on_detached(uv_timer_t *t)
{
    struct cfm_agent_exec *x = t->data;
    json_t *result = json_pack("{s:i, s:n, s:s, s:s, s:b, s:b, s:b, s:I, s:I, s:b}", "code", 0,
                               "signal", "stdout", "", "stderr", "", "stdout_truncated", 0,
                               "stderr_truncated", 0, "timed_out", 0, "duration_ms",
                               (json_int_t)0, "pid", (json_int_t)x->pid, "detached", 1);

    if (x->done)
        x->done(x->arg, result, result ? NULL : "out of memory building the result");
    x->done = NULL;
    json_decref(result);
    close_handle(x, (uv_handle_t *)&x->timer);
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
    kill(-x->pid, SIGKILL);
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
            kill(-x->pid, SIGKILL);
            return; /* the exit follows at once */
        }
    } else if (!x->exited) {
        /* Asked again: stop waiting for an exit that does not come (a
         * process stuck in the kernel); it is left unreaped. */
        x->exited = true;
        close_handle(x, (uv_handle_t *)&x->gone);
    }
    close_stream(&x->out);
    close_stream(&x->err);
    check_over(x);
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

/* "detach" (a boolean) and "log" (a file of the disk; only with detach).
 * A detached command runs on after its answer, so nothing that needs its
 * end applies: stdin, timeout_s, max_output. */
static enum cfm_err parse_detach(struct request *r, const char *root, const json_t *req,
                                 struct cfm_why *why)
{
    static const char *const not_detached[] = {"stdin", "timeout_s", "max_output"};
    const json_t *detach = json_object_get(req, "detach"), *log = json_object_get(req, "log");
    enum cfm_err err;

    if (detach && !json_is_boolean(detach))
        return cfm_why_set(why, CFM_EINVAL, "detach must be true or false");
    r->detach = json_is_true(detach);
    if (log && !r->detach)
        return cfm_why_set(why, CFM_EINVAL, "log goes with \"detach\": true (a command waited "
                                            "for answers with its output)");
    if (!r->detach)
        return CFM_OK;
    for (size_t i = 0; i < sizeof not_detached / sizeof not_detached[0]; i++)
        if (json_object_get(req, not_detached[i]))
            return cfm_why_set(why, CFM_EINVAL,
                               "%s does not go with \"detach\": true (a detached command "
                               "runs on after its answer)", not_detached[i]);
    if (!log)
        return CFM_OK;
    if (!json_is_string(log) || json_string_length(log) == 0)
        return cfm_why_set(why, CFM_EINVAL, "log must be a file's path");
    if ((err = cfm_agent_files_resolve(root, json_string_value(log), json_string_length(log),
                                       CFM_AGENT_FILES_WRITE, r->log, sizeof r->log, why)) !=
        CFM_OK)
        return cfm_why_prefix(why, err, "log");
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
    if ((err = parse_detach(r, root, req, why)) != CFM_OK)
        return err;
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

/* An executable regular file (execvp passes over anything else). */
static bool runnable(const char *path)
{
    struct stat st;

    if (stat(path, &st) != 0)
        return false;
    if (!S_ISREG(st.st_mode)) {
        errno = EACCES;
        return false;
    }
    return access(path, X_OK) == 0;
}

/* The program name names, found as execvp would find it with the
 * command's own PATH (from env, not the agent's) and cwd: a name with a
 * '/' is taken as it is, another is looked for in each directory of PATH
 * (an empty entry being the command's cwd). false (errno set: ENOENT, or
 * EACCES when only something not executable was found) when there is none. */
static bool find_program(const char *name, char *const *env, const char *cwd, char *out,
                         size_t size)
{
    const char *path = BASE_PATH, *dir, *end;
    int err = ENOENT;

    if (strchr(name, '/')) {
        if (strlen(name) >= size) {
            errno = ENAMETOOLONG;
            return false;
        }
        memcpy(out, name, strlen(name) + 1);
        return true;
    }
    for (size_t i = 0; env[i]; i++)
        if (strncmp(env[i], "PATH=", 5) == 0)
            path = env[i] + 5;
    for (dir = path;; dir = end + 1) {
        int n;
        end = strchr(dir, ':');
        if (!end)
            end = dir + strlen(dir);
        n = end == dir ? snprintf(out, size, "%s/%s", cwd, name)
                       : snprintf(out, size, "%.*s/%s", (int)(end - dir), dir, name);
        if (n > 0 && (size_t)n < size) {
            if (runnable(out))
                return true;
            if (errno == EACCES)
                err = EACCES;
        }
        if (!*end)
            break;
    }
    errno = err;
    return false;
}

/* A pipe whose two ends are close-on-exec and above stderr (a descriptor
 * 0-2 would be one the child's dup2 overwrites). 0 or an errno value. */
static int pipe_above_stderr(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return errno;
    for (int i = 0; i < 2; i++) {
        if (fds[i] <= 2) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            int e = errno;
            close(fds[i]);
            if (moved < 0) {
                close(fds[1 - i]);
                return e;
            }
            fds[i] = moved;
        }
    }
    return 0;
}

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* posix_spawn of the command (see the top of the file): pipes[0..5] are
 * stdin's (or -1, -1), stdout's and stderr's, read end first; the child's
 * ends are closed here whatever the outcome. 0 or an errno value. */
static int spawn_command(char *const *argv, char *const *env, const char *cwd, int pipes[6],
                         pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    char file[PATH_MAX];
    int rc;

    if (!find_program(argv[0], env, cwd, file, sizeof file))
        rc = errno;
    else if ((rc = posix_spawn_file_actions_init(&fa)) == 0) {
        if ((rc = pipes[0] >= 0 ? posix_spawn_file_actions_adddup2(&fa, pipes[0], 0)
                                : posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
                                                                   O_RDONLY, 0)) == 0 &&
            (rc = posix_spawn_file_actions_adddup2(&fa, pipes[3], 1)) == 0 &&
            (rc = posix_spawn_file_actions_adddup2(&fa, pipes[5], 2)) == 0)
            rc = cfm_spawn_session(pid, file, &fa, cwd, argv, env);
        posix_spawn_file_actions_destroy(&fa);
    }
    close_fds(&pipes[0], 1);
    close_fds(&pipes[3], 1);
    close_fds(&pipes[5], 1);
    return rc;
}

/* posix_spawn of a detached command: stdin from /dev/null, stdout and
 * stderr appended to log (not followed if a link) or to /dev/null. 0 or an
 * errno value. */
static int spawn_detached(char *const *argv, char *const *env, const char *cwd, const char *log,
                          pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    char file[PATH_MAX];
    int rc;

    if (!find_program(argv[0], env, cwd, file, sizeof file))
        return errno;
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return rc;
    if ((rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) == 0 &&
        (rc = posix_spawn_file_actions_addopen(
             &fa, 1, *log ? log : "/dev/null",
             *log ? O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW : O_WRONLY, 0644)) == 0 &&
        (rc = posix_spawn_file_actions_adddup2(&fa, 1, 2)) == 0)
        rc = cfm_spawn_session(pid, file, &fa, cwd, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* Starts a detached command (see the top of the file). */
static enum cfm_err start_detached(uv_loop_t *loop, const struct request *r, char *const *argv,
                                   cfm_agent_exec_done done, void *arg,
                                   struct cfm_agent_exec **out, struct cfm_why *why)
{
    struct cfm_agent_exec *x = calloc(1, sizeof *x);
    pid_t pid;
    int rc;

    if (!x)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if ((rc = spawn_detached(argv, r->env, r->cwd, r->log, &pid)) != 0) {
        free(x);
        return cfm_why_set(why, CFM_EINVAL, "cannot run '%.128s': %s", argv[0],
                           uv_strerror(uv_translate_sys_error(rc)));
    }
    x->pidfd = -1;
    x->pid = pid;
    x->detached = true;
    x->started_ns = uv_hrtime();
    x->done = done;
    x->arg = arg;
    uv_timer_init(loop, &x->timer);
    x->timer.data = x;
    x->handles++;
    watch_gone(loop, x);
    uv_timer_start(&x->timer, on_detached, 0, 0);
    x->next_detached = detached_list;
    if (detached_list)
        detached_list->prev_detached = &x->next_detached;
    x->prev_detached = &detached_list;
    detached_list = x;
    if (out)
        *out = x;
    return CFM_OK;
}

void cfm_agent_exec_forget_detached(void)
{
    for (struct cfm_agent_exec *x = detached_list; x; x = x->next_detached) {
        if (x->exited)
            continue;
        x->exited = true; /* not waited for: it lives on, an orphan once the agent is gone */
        close_handle(x, (uv_handle_t *)&x->gone);
        check_over(x);
    }
}

/* Gives the agent's ends of the pipes (stdin's write end, the read ends
 * of stdout and stderr) to x's pipe handles; each is -1 in pipes once its
 * handle owns it. 0 or an errno value (libuv's errors are -errno). */
static int open_ends(struct cfm_agent_exec *x, int pipes[6])
{
    int rc;

    if (x->in_open) {
        if ((rc = uv_pipe_open(&x->in, pipes[1])) != 0)
            return -rc;
        pipes[1] = -1;
    }
    if ((rc = uv_pipe_open(&x->out.pipe, pipes[2])) != 0)
        return -rc;
    pipes[2] = -1;
    if ((rc = uv_pipe_open(&x->err.pipe, pipes[4])) != 0)
        return -rc;
    pipes[4] = -1;
    return 0;
}

enum cfm_err cfm_agent_exec_start(uv_loop_t *loop, const char *vm, const char *root,
                                  const json_t *req, cfm_agent_exec_done done, void *arg,
                                  struct cfm_agent_exec **out, struct cfm_why *why)
{
    struct request r;
    struct cfm_agent_exec *x = NULL;
    char *const *argv;
    enum cfm_err err;
    uv_buf_t buf;
    int pipes[6] = {-1, -1, -1, -1, -1, -1}, rc;

    if (out)
        *out = NULL;
    memset(&r, 0, sizeof r);
    if ((err = parse_request(&r, vm, root, req, why)) != CFM_OK)
        goto out;
    argv = r.argv ? r.argv : (char *const *)r.shell_argv;
    if (r.detach) {
        err = start_detached(loop, &r, argv, done, arg, out, why);
        goto out;
    }
    if ((r.stdin_text && (rc = pipe_above_stderr(&pipes[0])) != 0) ||
        (rc = pipe_above_stderr(&pipes[2])) != 0 || (rc = pipe_above_stderr(&pipes[4])) != 0) {
        close_fds(pipes, 6);
        err = cfm_why_set(why, CFM_EIO, "cannot run '%.128s': %s", argv[0],
                          uv_strerror(uv_translate_sys_error(rc)));
        goto out;
    }
    if (!(x = calloc(1, sizeof *x))) {
        close_fds(pipes, 6);
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    x->pidfd = -1;
    x->max_output = r.max_output;
    if (r.stdin_text) {
        x->stdin_len = json_string_length(r.stdin_text);
        if (!(x->stdin_data = malloc(x->stdin_len + 1))) {
            free(x);
            x = NULL;
            close_fds(pipes, 6);
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
    /* The agent's ends now belong to the handles (closed with them). */
    if ((rc = open_ends(x, pipes)) == 0) {
        x->started_ns = uv_hrtime();
        rc = spawn_command(argv, r.env, r.cwd, pipes, &x->pid);
    }
    if (rc != 0) {
        err = cfm_why_set(why, CFM_EINVAL, "cannot run '%.128s': %s", argv[0],
                          uv_strerror(uv_translate_sys_error(rc)));
        close_fds(pipes, 6);
        /* done stays NULL: the handles close and free x without a call. */
        x->exited = true;
        if (x->in_open) {
            x->in_open = false;
            close_handle(x, (uv_handle_t *)&x->in);
        }
        close_stream(&x->out);
        close_stream(&x->err);
        check_over(x);
        x = NULL;
        goto out;
    }
    watch_gone(loop, x);
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
