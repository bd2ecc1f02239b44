/*
 * driver_local.c - the "local" cloud: a VM is a cfm-agent process on this
 * machine (docs/drivers.md).
 *
 * Each VM has a directory <state_dir>/vms/<vm-id>/ holding its record
 * (vm.json, written atomically), its disk (disk/, the agent's --root) and
 * its agent's output (agent.log). Its private IP is a loopback address of
 * the site's /24 (127.77.x by default), given to the agent as CFM_VM_IP;
 * public addresses come from a pool and stay bound to (system, address id)
 * in addresses.json. Volumes are directories under <state_dir>/volumes/,
 * linked into the disk as disk/volumes/<id>.
 *
 * Agents are spawned detached (their own session and process group) and
 * their process handles unref'd: a VM never keeps the loop alive and
 * outlives the manager. Open() re-adopts the VMs of vm.json files: a
 * running one whose pid is still a cfm-agent for that VM (by
 * /proc/<pid>/cmdline) is watched by a 1-second poll; the others are
 * FAILED. Our own children are watched by libuv's exit callback.
 *
 * The one thing to know: no callback ever runs inside a driver call. Every
 * answer and event goes through one queue drained by a zero-timeout timer,
 * so callers may call the driver (or close it) from any callback.
 */
#include "driver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "id.h"
#include "log.h"
#include "util.h"

extern char **environ;

#define LOCAL_MAX_VMS 10000        /* VM records kept, terminated ones included */
#define LOCAL_MAX_POOL 1024        /* public addresses in the pool */
#define LOCAL_MAX_ADDRS 4096       /* (system, address) bindings kept */
#define LOCAL_MAX_AGENT_ARGS 32    /* extra agent arguments */
#define LOCAL_MAX_ARG 1024         /* bytes of one extra agent argument */
#define LOCAL_MAX_CPU 4096         /* capacity and VM sizes */
#define LOCAL_MAX_MEMORY_MB (1 << 24)
#define LOCAL_MAX_ENV 4096         /* environment variables passed on */
#define LOCAL_MAX_RECORD (64u << 10) /* bytes of a vm.json or addresses.json */
#define LOCAL_MAX_CMDLINE 8192     /* bytes of /proc/<pid>/cmdline read */
#define LOCAL_MAX_WAITERS 64       /* terminate calls waiting on one VM */
#define LOCAL_MAX_VOLUMES ((int)(sizeof(((struct cfm_vm_info *)0)->volumes) / \
                                 sizeof(((struct cfm_vm_info *)0)->volumes[0])))
#define DEFAULT_CPU 16
#define DEFAULT_MEMORY_MB 16384
#define DEFAULT_POOL 50
#define POLL_MS 1000               /* re-adopted VMs: liveness poll */
#define TERM_TICK_MS 100           /* a terminating VM: check it is gone */
#define TERM_KILL_MS 3000          /* SIGKILL after this long */
#define TERM_GIVE_UP_MS 10000      /* then give up waiting (logged) */
#define STATUS_INTERVAL "2"        /* agents' --status-interval */

enum reply_kind { REPLY_VM, REPLY_LIST, REPLY_EVENT };

/* One answer or event, delivered from the loop by on_reply. */
struct reply {
    struct reply *next;
    enum reply_kind kind;
    cfm_driver_vm_cb vm_cb;
    cfm_driver_list_cb list_cb;
    void *arg;
    enum cfm_err err;
    struct lvm *vm;               /* REPLY_VM (on success), REPLY_EVENT */
    struct cfm_vm_info *list;     /* REPLY_LIST: owned snapshot */
    size_t nlist;
    struct cfm_why why;
};

/* One VM. Never freed while the driver is open (its id and key stay
 * answerable); freed when the driver closes and its handles are closed. */
struct lvm {
    struct cfm_vm_info info;
    struct cfm_driver *d;
    char created[CFM_TIME_LEN];
    int pid;                /* the agent's pid (and process group); 0 if none */
    bool child;             /* proc is live: we spawned it, libuv reports its exit */
    bool terminating;       /* SIGTERM sent, waiting for the process to go */
    bool killed;            /* SIGKILL sent */
    bool timer_open;        /* term_timer initialised */
    bool discarded;         /* not in d->vms (spawn failed): free once handles close */
    int handles;            /* embedded handles not yet closed */
    uint64_t term_start;    /* uv_now() when terminate began */
    struct reply *waiters;  /* terminate calls answered when the process is gone */
    size_t nwaiters;
    uv_process_t proc;
    uv_timer_t term_timer;
};

/* A public address, bound to (system, address id) for good. */
struct laddr {
    char system[CFM_MAX_ID + 1];
    char address[CFM_MAX_ID + 1];
    char ip[CFM_MAX_IP];
};

struct cfm_driver {
    uv_loop_t *loop;
    char site[CFM_MAX_ID + 1];
    char state_dir[PATH_MAX];
    char broker[300];              /* HOST:PORT or [V6]:PORT */
    char agent_path[PATH_MAX];
    cfm_driver_event_cb on_event;
    void *arg;
    int cap_cpu, cap_memory_mb;
    char net[16];                  /* the private /24: "127.77.5" */
    char (*pool)[CFM_MAX_IP];
    size_t npool;
    char **agent_args;
    size_t nargs;
    struct lvm **vms;
    size_t nvms, capvms;
    struct laddr *addrs;
    size_t naddrs, capaddrs;
    struct reply *head, *tail;     /* the answer queue */
    uv_timer_t reply_timer, poll_timer;
    int handles;                   /* of the two timers, not yet closed */
    size_t live_vms;               /* struct lvm not yet freed */
    bool timers_open;
    bool closing;
};

/* ---- small helpers ---------------------------------------------------- */

/* Formats a path into out (PATH_MAX bytes); false when it does not fit. */
static bool pathf(char out[PATH_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool pathf(char out[PATH_MAX], const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    return n >= 0 && n < PATH_MAX;
}

static bool copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;

    if (!src || n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* Grows *arr (of elem-sized items) to hold need items; false on overflow or
 * out of memory (then *arr is unchanged). */
static bool grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t n = *cap ? *cap : 8;
    void *p;

    if (need <= *cap)
        return true;
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return false;
        n *= 2;
    }
    if (n > SIZE_MAX / elem)
        return false;
    p = realloc(*arr, n * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = n;
    return true;
}

static bool mkdir_ok(const char *path, mode_t mode)
{
    return mkdir(path, mode) == 0 || errno == EEXIST;
}

/* Writes text to dir/name through a temporary file, fsync and rename, so a
 * reader (or a crash) sees the old record or the new one, never a part. */
static enum cfm_err write_atomic(const char *dir, const char *name, const char *text,
                                 struct cfm_why *why)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    size_t len = strlen(text), off = 0;
    enum cfm_err err = CFM_EIO;
    int fd = -1, dfd = -1, saved = 0;

    if (!pathf(tmp, "%s/.%s.tmp", dir, name) || !pathf(path, "%s/%s", dir, name))
        return cfm_why_set(why, CFM_EIO, "path of %s in '%s' is too long", name, dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto out;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        off += (size_t)n;
    }
    if (fsync(fd) != 0)
        goto out;
    if (close(fd) != 0) {
        fd = -1;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto out;
    /* The rename is durable once the directory is synced; a failure here
     * leaves a correct file that a crash might roll back, so it is logged. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        cfm_warn("driver", "cannot sync directory '%s': %s", dir, strerror(errno));
    err = CFM_OK;
out:
    if (err != CFM_OK) {
        saved = errno;
        unlink(tmp);
        cfm_why_set(why, err, "cannot write '%s': %s", path, strerror(saved));
    }
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    return err;
}

/* Loads a JSON record of at most LOCAL_MAX_RECORD bytes; NULL with why. */
static json_t *read_record(const char *path, struct cfm_why *why)
{
    json_error_t jerr;
    struct stat st;
    json_t *j;

    if (stat(path, &st) != 0) {
        cfm_why_set(why, CFM_EIO, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (st.st_size > (off_t)LOCAL_MAX_RECORD) {
        cfm_why_set(why, CFM_ETOOBIG, "'%s' is over %u bytes", path, LOCAL_MAX_RECORD);
        return NULL;
    }
    j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        cfm_why_set(why, CFM_EIO, "'%s' is not a JSON object: %s", path,
                    j ? "wrong type" : jerr.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Parses n dotted decimal octets ("127.77.5" for n = 3) into out. */
static bool parse_octets(const char *text, int n, unsigned out[4])
{
    const char *p = text;

    for (int i = 0; i < n; i++) {
        unsigned v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            v = v * 10 + (unsigned)(*p++ - '0');
            digits++;
        }
        if (digits == 0 || v > 255 || (digits > 1 && p[-digits] == '0'))
            return false;
        out[i] = v;
        if (i < n - 1 && *p++ != '.')
            return false;
    }
    return *p == '\0';
}

/* ---- the answer queue -------------------------------------------------- */

static struct reply *reply_new(enum reply_kind kind, void *arg)
{
    struct reply *r = calloc(1, sizeof *r);

    if (r) {
        r->kind = kind;
        r->arg = arg;
    }
    return r;
}

static void free_replies(struct reply *r)
{
    while (r) {
        struct reply *next = r->next;
        free(r->list);
        free(r);
        r = next;
    }
}

static void on_reply(uv_timer_t *t)
{
    struct cfm_driver *d = t->data;
    struct cfm_vm_info snap;
    struct reply *r;

    /* A callback may call the driver (queueing more) or close it. */
    while (!d->closing && (r = d->head)) {
        d->head = r->next;
        if (!d->head)
            d->tail = NULL;
        switch (r->kind) {
        case REPLY_VM:
            if (r->err == CFM_OK) {
                snap = r->vm->info;
                r->vm_cb(r->arg, CFM_OK, &snap, "");
            } else {
                r->vm_cb(r->arg, r->err, NULL, r->why.text);
            }
            break;
        case REPLY_LIST: r->list_cb(r->arg, r->list, r->nlist); break;
        case REPLY_EVENT:
            snap = r->vm->info;
            if (d->on_event)
                d->on_event(d->arg, &snap);
            break;
        }
        free(r->list);
        free(r);
    }
}

static void reply_push(struct cfm_driver *d, struct reply *r)
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

/* ---- records ------------------------------------------------------------ */

static enum cfm_err vm_save(struct cfm_driver *d, struct lvm *vm, struct cfm_why *why)
{
    char dir[PATH_MAX];
    enum cfm_err err;
    json_t *vols = json_array(), *rec;
    char *text;

    for (int i = 0; vols && i < vm->info.nvolumes; i++)
        json_array_append_new(vols, json_string(vm->info.volumes[i]));
    rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:o, s:i, s:s, s:b, s:s}",
                    "id", vm->info.id, "key", vm->info.key, "system", vm->info.system,
                    "vm_class", vm->info.vm_class, "cpu", vm->info.cpu, "memory_mb",
                    vm->info.memory_mb, "private_ip", vm->info.private_ip, "public_ip",
                    vm->info.public_ip, "address_id", vm->info.address_id, "volumes", vols,
                    "pid", vm->pid, "state", cfm_vm_state_name(vm->info.state), "terminating",
                    vm->terminating, "created", vm->created);
    text = rec ? json_dumps(rec, JSON_INDENT(2)) : NULL;
    json_decref(rec);
    if (!text)
        return cfm_why_set(why, CFM_ENOMEM, "cannot encode the record of %s", vm->info.id);
    if (!pathf(dir, "%s/vms/%s", d->state_dir, vm->info.id))
        err = cfm_why_set(why, CFM_EIO, "state_dir: too long");
    else
        err = write_atomic(dir, "vm.json", text, why);
    free(text);
    return err;
}

/* Saves, and logs (rather than fails) when the disk refuses: the VM's state
 * in memory is the truth until the next save succeeds. */
static void vm_save_or_log(struct cfm_driver *d, struct lvm *vm)
{
    struct cfm_why why = {""};

    if (vm_save(d, vm, &why) != CFM_OK)
        cfm_error("driver", "%s: %s", vm->info.id, why.text);
}

static bool parse_state(const char *name, enum cfm_vm_state *out)
{
    for (int s = CFM_VM_PENDING; s <= CFM_VM_TERMINATED; s++) {
        if (name && strcmp(name, cfm_vm_state_name((enum cfm_vm_state)s)) == 0) {
            *out = (enum cfm_vm_state)s;
            return true;
        }
    }
    return false;
}

/* Loads <state_dir>/vms/<id>/vm.json into a new struct lvm. */
static enum cfm_err vm_load(struct cfm_driver *d, const char *id, struct lvm **out,
                            struct cfm_why *why)
{
    const char *rid, *key, *sys, *cls, *pip, *pub, *aid, *state, *created;
    enum cfm_err err = CFM_EIO;
    char path[PATH_MAX];
    json_error_t jerr;
    json_t *rec = NULL, *vols, *v;
    struct lvm *vm = NULL;
    int terminating = 0, cpu = 0, memory_mb = 0, pid = 0;
    size_t i;

    if (!pathf(path, "%s/vms/%s/vm.json", d->state_dir, id))
        return cfm_why_set(why, CFM_EIO, "path too long");
    if (!(rec = read_record(path, why)))
        goto out;
    if (json_unpack_ex(rec, &jerr, 0,
                       "{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:o, s:i, s:s, s?b, s:s}",
                       "id", &rid, "key", &key, "system", &sys, "vm_class", &cls, "cpu", &cpu,
                       "memory_mb", &memory_mb, "private_ip", &pip, "public_ip", &pub,
                       "address_id", &aid, "volumes", &vols, "pid", &pid, "state", &state,
                       "terminating", &terminating, "created", &created) != 0) {
        cfm_why_set(why, CFM_EIO, "'%s': %s", path, jerr.text);
        goto out;
    }
    if (!(vm = calloc(1, sizeof *vm))) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    vm->d = d;
    vm->info.cpu = cpu;
    vm->info.memory_mb = memory_mb;
    vm->pid = pid;
    vm->terminating = terminating;
    if (strcmp(rid, id) != 0 || !copy_bounded(vm->info.id, sizeof vm->info.id, rid) ||
        !cfm_id_valid(key) || !copy_bounded(vm->info.key, sizeof vm->info.key, key) ||
        !cfm_id_valid(sys) || !copy_bounded(vm->info.system, sizeof vm->info.system, sys) ||
        !cfm_id_valid(cls) || !copy_bounded(vm->info.vm_class, sizeof vm->info.vm_class, cls) ||
        !copy_bounded(vm->info.private_ip, sizeof vm->info.private_ip, pip) ||
        !copy_bounded(vm->info.public_ip, sizeof vm->info.public_ip, pub) ||
        (aid[0] && !cfm_id_valid(aid)) ||
        !copy_bounded(vm->info.address_id, sizeof vm->info.address_id, aid) ||
        !copy_bounded(vm->created, sizeof vm->created, created) ||
        !parse_state(state, &vm->info.state) || !json_is_array(vols) ||
        json_array_size(vols) > (size_t)LOCAL_MAX_VOLUMES || vm->pid < 0 ||
        vm->info.cpu < 1 || vm->info.memory_mb < 1) {
        cfm_why_set(why, CFM_EIO, "'%s': a field is missing, too long or malformed", path);
        goto out;
    }
    json_array_foreach(vols, i, v) {
        if (!cfm_id_valid(json_string_value(v))) {
            cfm_why_set(why, CFM_EIO, "'%s': volumes[%zu] is not an id", path, i);
            goto out;
        }
        memcpy(vm->info.volumes[i], json_string_value(v), strlen(json_string_value(v)) + 1);
    }
    vm->info.nvolumes = (int)json_array_size(vols);
    if (!pathf(vm->info.disk, "%s/vms/%s/disk", d->state_dir, id)) {
        cfm_why_set(why, CFM_EIO, "path too long");
        goto out;
    }
    *out = vm;
    vm = NULL;
    err = CFM_OK;
out:
    free(vm);
    json_decref(rec);
    return err;
}

static enum cfm_err addrs_save(struct cfm_driver *d, struct cfm_why *why)
{
    json_t *arr = json_array(), *rec;
    enum cfm_err err;
    char *text;

    for (size_t i = 0; arr && i < d->naddrs; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "system", d->addrs[i].system,
                                             "address", d->addrs[i].address, "ip",
                                             d->addrs[i].ip));
    rec = json_pack("{s:o}", "addresses", arr);
    text = rec ? json_dumps(rec, JSON_INDENT(2)) : NULL;
    json_decref(rec);
    if (!text)
        return cfm_why_set(why, CFM_ENOMEM, "cannot encode addresses.json");
    err = write_atomic(d->state_dir, "addresses.json", text, why);
    free(text);
    return err;
}

static enum cfm_err addrs_load(struct cfm_driver *d, struct cfm_why *why)
{
    char path[PATH_MAX];
    json_t *rec, *arr, *v;
    size_t i;

    if (!pathf(path, "%s/addresses.json", d->state_dir))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: too long");
    if (access(path, F_OK) != 0)
        return CFM_OK;
    if (!(rec = read_record(path, why)))
        return CFM_ECONFIG;
    arr = json_object_get(rec, "addresses");
    json_array_foreach(arr, i, v) {
        struct laddr a;
        if (d->naddrs >= LOCAL_MAX_ADDRS) {
            cfm_error("driver", "'%s': more than %d addresses, the rest ignored", path,
                      LOCAL_MAX_ADDRS);
            break;
        }
        if (!cfm_id_valid(json_string_value(json_object_get(v, "system"))) ||
            !cfm_id_valid(json_string_value(json_object_get(v, "address"))) ||
            !copy_bounded(a.ip, sizeof a.ip, json_string_value(json_object_get(v, "ip")))) {
            cfm_warn("driver", "'%s': addresses[%zu] is malformed, ignored", path, i);
            continue;
        }
        memcpy(a.system, json_string_value(json_object_get(v, "system")),
               strlen(json_string_value(json_object_get(v, "system"))) + 1);
        memcpy(a.address, json_string_value(json_object_get(v, "address")),
               strlen(json_string_value(json_object_get(v, "address"))) + 1);
        if (!grow((void **)&d->addrs, &d->capaddrs, d->naddrs + 1, sizeof *d->addrs)) {
            json_decref(rec);
            return cfm_why_set(why, CFM_ENOMEM, "out of memory");
        }
        d->addrs[d->naddrs++] = a;
    }
    json_decref(rec);
    return CFM_OK;
}

/* ---- processes ------------------------------------------------------------ */

/* True when pid is alive and is a cfm-agent for this VM: its command line
 * has "--vm" followed by the VM's id. A reused pid, or a zombie (whose
 * command line is empty), is not. */
static bool agent_alive(const struct lvm *vm)
{
    char path[64], buf[LOCAL_MAX_CMDLINE];
    const char *prev = "";
    size_t len = 0;
    ssize_t n;
    int fd;

    if (vm->pid <= 1 || (kill(vm->pid, 0) != 0 && errno != EPERM))
        return false;
    snprintf(path, sizeof path, "/proc/%d/cmdline", vm->pid);
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
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
        if (strcmp(prev, "--vm") == 0 && strcmp(buf + i, vm->info.id) == 0)
            return true;
        prev = buf + i;
    }
    return false;
}

/* Signals the VM's process group; for a process we did not spawn, only
 * after checking the pid is still its agent (never a stranger's group). */
static void signal_group(struct lvm *vm, int sig)
{
    if (vm->pid <= 1 || (!vm->child && !agent_alive(vm)))
        return;
    if (kill(-vm->pid, sig) != 0 && kill(vm->pid, sig) != 0 && errno != ESRCH)
        cfm_warn("driver", "%s: cannot signal pid %d: %s", vm->info.id, vm->pid,
                 strerror(errno));
}

static void free_vm(struct lvm *vm)
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

static void on_vm_handle_closed(uv_handle_t *h)
{
    struct lvm *vm = h->data;
    struct cfm_driver *d = vm->d;

    if (--vm->handles == 0 && (d->closing || vm->discarded)) {
        free_vm(vm);
        maybe_free_driver(d);
    }
}

static void mark_failed(struct lvm *vm, const char *reason)
{
    struct cfm_driver *d = vm->d;
    struct reply *r = reply_new(REPLY_EVENT, NULL);

    vm->info.state = CFM_VM_FAILED;
    vm_save_or_log(d, vm);
    cfm_warn("driver", "%s (system %s) failed: %s", vm->info.id, vm->info.system, reason);
    if (!r) {
        cfm_error("driver", "%s: out of memory, its failure is not reported as an event",
                  vm->info.id);
        return;
    }
    r->vm = vm;
    reply_push(d, r);
}

static void unlink_volume(struct lvm *vm, const char *volume)
{
    char link[PATH_MAX];
    struct stat st;

    if (!pathf(link, "%s/volumes/%s", vm->info.disk, volume))
        return;
    if (lstat(link, &st) != 0)
        return; /* already gone */
    if (!S_ISLNK(st.st_mode))
        cfm_warn("driver", "%s: '%s' is no longer a link, left as it is", vm->info.id, link);
    else if (unlink(link) != 0)
        cfm_warn("driver", "%s: cannot remove '%s': %s", vm->info.id, link, strerror(errno));
}

/* The process is gone (or given up on): free what the VM held, record it
 * TERMINATED and answer every terminate call waiting for it. */
static void finish_terminate(struct lvm *vm)
{
    struct cfm_driver *d = vm->d;

    for (int i = 0; i < vm->info.nvolumes; i++)
        unlink_volume(vm, vm->info.volumes[i]);
    vm->info.nvolumes = 0;
    vm->info.private_ip[0] = vm->info.public_ip[0] = vm->info.address_id[0] = '\0';
    vm->info.state = CFM_VM_TERMINATED;
    vm->terminating = vm->killed = false;
    vm->pid = 0;
    if (vm->timer_open)
        uv_timer_stop(&vm->term_timer);
    vm_save_or_log(d, vm);
    cfm_info("driver", "%s (system %s) terminated", vm->info.id, vm->info.system);
    while (vm->waiters) {
        struct reply *r = vm->waiters;
        vm->waiters = r->next;
        r->vm = vm;
        reply_push(d, r);
    }
    vm->nwaiters = 0;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct lvm *vm = p->data;
    char reason[96];

    vm->child = false;
    uv_close((uv_handle_t *)p, on_vm_handle_closed);
    if (vm->info.state == CFM_VM_TERMINATED || vm->info.state == CFM_VM_FAILED)
        return;
    if (vm->terminating) {
        finish_terminate(vm);
        return;
    }
    if (sig)
        snprintf(reason, sizeof reason, "its agent (pid %d) was killed by signal %d", vm->pid,
                 sig);
    else
        snprintf(reason, sizeof reason, "its agent (pid %d) exited with status %lld", vm->pid,
                 (long long)status);
    mark_failed(vm, reason);
}

static void on_term_tick(uv_timer_t *t)
{
    struct lvm *vm = t->data;
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
static void start_terminate(struct lvm *vm)
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
    vm_save_or_log(d, vm);
    signal_group(vm, SIGTERM);
    uv_timer_start(&vm->term_timer, on_term_tick, TERM_TICK_MS, TERM_TICK_MS);
}

static void on_poll(uv_timer_t *t)
{
    struct cfm_driver *d = t->data;

    for (size_t i = 0; i < d->nvms; i++) {
        struct lvm *vm = d->vms[i];
        char reason[96];
        if (vm->info.state != CFM_VM_RUNNING || vm->child || vm->terminating ||
            agent_alive(vm))
            continue;
        snprintf(reason, sizeof reason, "its agent (pid %d) is gone", vm->pid);
        mark_failed(vm, reason);
    }
}

/* The environment of an agent: ours, with CFM_VM_IP set to ip (one entry,
 * written into ipvar). Returns a new array (free() it; the strings are
 * borrowed), or NULL. */
static char **agent_env(char *ipvar)
{
    size_t n = 0, k = 0;
    char **env;

    while (environ[n] && n < LOCAL_MAX_ENV)
        n++;
    if (environ[n])
        cfm_warn("driver", "more than %d environment variables: the rest are not passed to agents",
                 LOCAL_MAX_ENV);
    if (!(env = calloc(n + 2, sizeof *env)))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CFM_VM_IP=", 10) != 0)
            env[k++] = environ[i];
    env[k++] = ipvar;
    env[k] = NULL;
    return env;
}

static enum cfm_err spawn_agent(struct cfm_driver *d, struct lvm *vm, struct cfm_why *why)
{
    char dir[PATH_MAX], logpath[PATH_MAX], ipvar[CFM_MAX_IP + 16];
    char *args[10 + LOCAL_MAX_AGENT_ARGS + 1];
    uv_process_options_t o;
    uv_stdio_container_t stdio[3];
    enum cfm_err err = CFM_EIO;
    char **env = NULL;
    size_t a = 0;
    int fd = -1, rc;

    if (!pathf(dir, "%s/vms/%s", d->state_dir, vm->info.id) ||
        !pathf(logpath, "%s/agent.log", dir))
        return cfm_why_set(why, CFM_EIO, "state_dir: too long");
    snprintf(ipvar, sizeof ipvar, "CFM_VM_IP=%s", vm->info.private_ip);
    if (!(env = agent_env(ipvar))) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        cfm_why_set(why, CFM_EIO, "cannot open '%s': %s", logpath, strerror(errno));
        goto out;
    }
    args[a++] = d->agent_path;
    args[a++] = "--vm";
    args[a++] = vm->info.id;
    args[a++] = "--broker";
    args[a++] = d->broker;
    args[a++] = "--root";
    args[a++] = vm->info.disk;
    args[a++] = "--status-interval";
    args[a++] = STATUS_INTERVAL;
    for (size_t i = 0; i < d->nargs; i++)
        args[a++] = d->agent_args[i];
    args[a] = NULL;
    memset(&o, 0, sizeof o);
    memset(stdio, 0, sizeof stdio);
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = stdio[2].flags = UV_INHERIT_FD;
    stdio[1].data.fd = stdio[2].data.fd = fd;
    o.file = d->agent_path;
    o.args = args;
    o.env = env;
    o.cwd = dir;
    o.flags = UV_PROCESS_DETACHED;
    o.exit_cb = on_exit_cb;
    o.stdio = stdio;
    o.stdio_count = 3;
    vm->proc.data = vm;
    rc = uv_spawn(d->loop, &vm->proc, &o);
    vm->handles++; /* initialised even when the spawn failed */
    if (rc != 0) {
        uv_close((uv_handle_t *)&vm->proc, on_vm_handle_closed);
        cfm_why_set(why, CFM_EIO, "cannot start '%s': %s", d->agent_path, uv_strerror(rc));
        goto out;
    }
    /* The VM must neither keep the loop alive nor die with the manager. */
    uv_unref((uv_handle_t *)&vm->proc);
    vm->child = true;
    vm->pid = vm->proc.pid;
    err = CFM_OK;
out:
    if (fd >= 0)
        close(fd);
    free(env);
    return err;
}

/* ---- lookups ---------------------------------------------------------------- */

static struct lvm *find_id(struct cfm_driver *d, const char *id)
{
    for (size_t i = 0; id && i < d->nvms; i++)
        if (strcmp(d->vms[i]->info.id, id) == 0)
            return d->vms[i];
    return NULL;
}

static struct lvm *find_key(struct cfm_driver *d, const char *key)
{
    for (size_t i = 0; i < d->nvms; i++)
        if (strcmp(d->vms[i]->info.key, key) == 0)
            return d->vms[i];
    return NULL;
}

static bool holds_resources(const struct lvm *vm)
{
    return vm->info.state != CFM_VM_TERMINATED;
}

static bool counts_for_capacity(const struct lvm *vm)
{
    return vm->info.state == CFM_VM_RUNNING || vm->info.state == CFM_VM_PENDING;
}

/* The lowest .2-.254 of the private /24 no live VM holds. */
static bool alloc_private_ip(struct cfm_driver *d, char out[CFM_MAX_IP])
{
    for (int host = 2; host <= 254; host++) {
        bool used = false;
        snprintf(out, CFM_MAX_IP, "%s.%d", d->net, host);
        for (size_t i = 0; i < d->nvms && !used; i++)
            used = holds_resources(d->vms[i]) && strcmp(d->vms[i]->info.private_ip, out) == 0;
        if (!used)
            return true;
    }
    return false;
}

/* A valid key is optional for the naturally idempotent calls. */
static enum cfm_err check_key(const char *key, struct cfm_why *why)
{
    return key ? cfm_id_check(key, "key", why) : CFM_OK;
}

static enum cfm_err find_vm(struct cfm_driver *d, const char *vm_id, struct lvm **out,
                            struct cfm_why *why)
{
    if (!vm_id || !(*out = find_id(d, vm_id)))
        return cfm_why_set(why, CFM_ENOTFOUND, "no VM '%.64s' at site %s",
                           vm_id ? vm_id : "(null)", d->site);
    return CFM_OK;
}

/* ---- run ------------------------------------------------------------------ */

static void remove_vm_dir(struct cfm_driver *d, const char *id)
{
    static const char *const files[] = {"vm.json", "agent.log", "disk", ""};
    char path[PATH_MAX];

    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!pathf(path, "%s/vms/%s/%s", d->state_dir, id, files[i]))
            continue;
        if (remove(path) != 0 && errno != ENOENT)
            cfm_warn("driver", "cannot remove '%s': %s", path, strerror(errno));
    }
}

static enum cfm_err new_vm_id(struct cfm_driver *d, char id[CFM_MAX_ID + 1], struct cfm_why *why)
{
    char uuid[CFM_UUID_LEN], hex[11], dir[PATH_MAX];

    for (int attempt = 0; attempt < 16; attempt++) {
        size_t k = 0;
        if (cfm_uuid(uuid) != CFM_OK)
            return cfm_why_set(why, CFM_EIO, "no randomness for a VM id");
        for (size_t i = 0; uuid[i] && k < 10; i++)
            if (uuid[i] != '-')
                hex[k++] = uuid[i];
        hex[k] = '\0';
        snprintf(id, CFM_MAX_ID + 1, "vm-%s", hex);
        if (find_id(d, id))
            continue;
        if (!pathf(dir, "%s/vms/%s", d->state_dir, id))
            return cfm_why_set(why, CFM_EIO, "state_dir: too long");
        if (mkdir(dir, 0755) == 0)
            return CFM_OK;
        if (errno != EEXIST)
            return cfm_why_set(why, CFM_EIO, "cannot create '%s': %s", dir, strerror(errno));
    }
    return cfm_why_set(why, CFM_EIO, "no unused VM id after 16 attempts");
}

static enum cfm_err check_spec(const struct cfm_vm_spec *spec, struct cfm_why *why)
{
    enum cfm_err err;

    if (!spec)
        return cfm_why_set(why, CFM_EINVAL, "no VM spec");
    if ((err = cfm_id_check(spec->key, "key", why)) != CFM_OK ||
        (err = cfm_id_check(spec->system, "system", why)) != CFM_OK ||
        (err = cfm_id_check(spec->vm_class, "vm_class", why)) != CFM_OK)
        return err;
    if (spec->cpu < 1 || spec->cpu > LOCAL_MAX_CPU)
        return cfm_why_set(why, CFM_EINVAL, "cpu: must be from 1 to %d", LOCAL_MAX_CPU);
    if (spec->memory_mb < 1 || spec->memory_mb > LOCAL_MAX_MEMORY_MB)
        return cfm_why_set(why, CFM_EINVAL, "memory_mb: must be from 1 to %d",
                           LOCAL_MAX_MEMORY_MB);
    return CFM_OK;
}

static enum cfm_err do_run(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                           struct lvm **out, struct cfm_why *why)
{
    char ip[CFM_MAX_IP];
    int64_t used_cpu = 0, used_mem = 0; /* re-adopted VMs may exceed a shrunk capacity */
    int free_cpu, free_mem;
    enum cfm_err err;
    struct lvm *vm;

    if ((err = check_spec(spec, why)) != CFM_OK)
        return err;
    if ((vm = find_key(d, spec->key))) {
        if (strcmp(vm->info.system, spec->system) != 0 ||
            strcmp(vm->info.vm_class, spec->vm_class) != 0)
            return cfm_why_set(why, CFM_EINVAL,
                               "key %s already made %s (system %s, VM class %s)", spec->key,
                               vm->info.id, vm->info.system, vm->info.vm_class);
        *out = vm;
        return CFM_OK;
    }
    if (d->nvms >= LOCAL_MAX_VMS)
        return cfm_why_set(why, CFM_ETOOBIG,
                           "site %s keeps %d VM records, the most it can (remove directories "
                           "of terminated VMs under %s/vms)",
                           d->site, LOCAL_MAX_VMS, d->state_dir);
    for (size_t i = 0; i < d->nvms; i++) {
        if (counts_for_capacity(d->vms[i])) {
            used_cpu += d->vms[i]->info.cpu;
            used_mem += d->vms[i]->info.memory_mb;
        }
    }
    free_cpu = used_cpu < d->cap_cpu ? d->cap_cpu - (int)used_cpu : 0;
    free_mem = used_mem < d->cap_memory_mb ? d->cap_memory_mb - (int)used_mem : 0;
    if (spec->cpu > free_cpu || spec->memory_mb > free_mem)
        return cfm_why_set(why, CFM_ETOOBIG,
                           "site %s has no capacity for VM class %s (needs %d CPU and %d MiB; "
                           "free: %d CPU and %d MiB)",
                           d->site, spec->vm_class, spec->cpu, spec->memory_mb, free_cpu,
                           free_mem);
    if (!alloc_private_ip(d, ip))
        return cfm_why_set(why, CFM_ETOOBIG, "site %s has no free private address in %s.0/24",
                           d->site, d->net);
    if (!grow((void **)&d->vms, &d->capvms, d->nvms + 1, sizeof *d->vms) ||
        !(vm = calloc(1, sizeof *vm)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    vm->d = d;
    d->live_vms++;
    memcpy(vm->info.key, spec->key, strlen(spec->key) + 1);
    memcpy(vm->info.system, spec->system, strlen(spec->system) + 1);
    memcpy(vm->info.vm_class, spec->vm_class, strlen(spec->vm_class) + 1);
    memcpy(vm->info.private_ip, ip, sizeof ip);
    vm->info.cpu = spec->cpu;
    vm->info.memory_mb = spec->memory_mb;
    vm->info.state = CFM_VM_PENDING;
    cfm_time_now(vm->created);
    if ((err = new_vm_id(d, vm->info.id, why)) != CFM_OK) {
        free_vm(vm);
        return err;
    }
    if (!pathf(vm->info.disk, "%s/vms/%s/disk", d->state_dir, vm->info.id) ||
        !mkdir_ok(vm->info.disk, 0755) ||
        (err = vm_save(d, vm, why)) != CFM_OK) {
        if (err == CFM_OK)
            err = cfm_why_set(why, CFM_EIO, "cannot create the disk of %s: %s", vm->info.id,
                              strerror(errno));
        remove_vm_dir(d, vm->info.id);
        free_vm(vm);
        return err;
    }
    d->vms[d->nvms++] = vm;
    if ((err = spawn_agent(d, vm, why)) != CFM_OK) {
        /* Nothing was made: the same key may try again. */
        cfm_error("driver", "run %s (key %s): %s", vm->info.id, spec->key, why->text);
        d->nvms--;
        remove_vm_dir(d, vm->info.id);
        vm->discarded = true;
        if (vm->handles == 0)
            free_vm(vm);
        return err;
    }
    vm->info.state = CFM_VM_RUNNING;
    vm_save_or_log(d, vm);
    cfm_info("driver", "%s (system %s, class %s, key %s) running as pid %d at %s", vm->info.id,
             vm->info.system, vm->info.vm_class, vm->info.key, vm->pid, vm->info.private_ip);
    *out = vm;
    return CFM_OK;
}

/* ---- terminate, volumes, addresses ------------------------------------------ */

/* Returns CFM_OK with *wait set when r must wait for the process to go. */
static enum cfm_err do_terminate(struct cfm_driver *d, const char *vm_id, const char *key,
                                 struct reply *r, bool *wait)
{
    enum cfm_err err;
    struct lvm *vm;

    *wait = false;
    if ((err = check_key(key, &r->why)) != CFM_OK ||
        (err = find_vm(d, vm_id, &vm, &r->why)) != CFM_OK)
        return err;
    r->vm = vm;
    if (vm->info.state == CFM_VM_TERMINATED)
        return CFM_OK;
    if (vm->info.state != CFM_VM_RUNNING || (!vm->child && !agent_alive(vm))) {
        finish_terminate(vm); /* nothing left to stop */
        return CFM_OK;
    }
    if (vm->nwaiters >= LOCAL_MAX_WAITERS)
        return cfm_why_set(&r->why, CFM_ETOOBIG, "%s: %d terminate calls already wait for it",
                           vm_id, LOCAL_MAX_WAITERS);
    if (!vm->terminating) {
        cfm_info("driver", "%s: terminating (SIGTERM to process group %d)", vm_id, vm->pid);
        start_terminate(vm);
    }
    r->next = vm->waiters;
    vm->waiters = r;
    vm->nwaiters++;
    *wait = true;
    return CFM_OK;
}

/* Links <disk>/volumes/<volume> to target, replacing a stale link. */
static enum cfm_err link_volume(struct lvm *vm, const char *volume, const char *target,
                                struct cfm_why *why)
{
    char dir[PATH_MAX], link[PATH_MAX], cur[PATH_MAX];
    struct stat st;
    ssize_t n;

    if (!pathf(dir, "%s/volumes", vm->info.disk) || !pathf(link, "%s/%s", dir, volume))
        return cfm_why_set(why, CFM_EIO, "path too long");
    if (!mkdir_ok(dir, 0755) || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cfm_why_set(why, CFM_EIO, "'%s' is not a directory", dir);
    if (lstat(link, &st) == 0) {
        if (!S_ISLNK(st.st_mode))
            return cfm_why_set(why, CFM_EIO, "cannot attach %s: '%s' exists and is not a link",
                               volume, link);
        n = readlink(link, cur, sizeof cur - 1);
        if (n >= 0 && (size_t)n < sizeof cur - 1) {
            cur[n] = '\0';
            if (strcmp(cur, target) == 0)
                return CFM_OK;
        }
        unlink(link);
    }
    if (symlink(target, link) != 0)
        return cfm_why_set(why, CFM_EIO, "cannot link '%s': %s", link, strerror(errno));
    return CFM_OK;
}

static int volume_index(const struct lvm *vm, const char *volume)
{
    for (int i = 0; i < vm->info.nvolumes; i++)
        if (strcmp(vm->info.volumes[i], volume) == 0)
            return i;
    return -1;
}

static void drop_volume(struct lvm *vm, int i)
{
    unlink_volume(vm, vm->info.volumes[i]);
    for (int k = i; k < vm->info.nvolumes - 1; k++)
        memcpy(vm->info.volumes[k], vm->info.volumes[k + 1], sizeof vm->info.volumes[k]);
    vm->info.nvolumes--;
}

static enum cfm_err do_attach(struct cfm_driver *d, const char *vm_id, const char *volume,
                              const char *key, struct lvm **out, struct cfm_why *why)
{
    char target[PATH_MAX];
    enum cfm_err err;
    struct lvm *vm;

    if ((err = check_key(key, why)) != CFM_OK || (err = find_vm(d, vm_id, &vm, why)) != CFM_OK ||
        (err = cfm_id_check(volume, "volume id", why)) != CFM_OK)
        return err;
    if (vm->info.state == CFM_VM_TERMINATED)
        return cfm_why_set(why, CFM_EINVAL, "%s is terminated", vm_id);
    *out = vm;
    if (volume_index(vm, volume) >= 0)
        return CFM_OK;
    /* A volume is on one VM at a time; a failed VM lets go of it. */
    for (size_t i = 0; i < d->nvms; i++) {
        struct lvm *o = d->vms[i];
        int k;
        if (o == vm || !holds_resources(o) || strcmp(o->info.system, vm->info.system) != 0 ||
            (k = volume_index(o, volume)) < 0)
            continue;
        if (o->info.state != CFM_VM_FAILED)
            return cfm_why_set(why, CFM_EINVAL, "volume %s is attached to %s", volume,
                               o->info.id);
        drop_volume(o, k);
        vm_save_or_log(d, o);
    }
    if (vm->info.nvolumes >= LOCAL_MAX_VOLUMES)
        return cfm_why_set(why, CFM_ETOOBIG, "%s has %d volumes, the most a VM can have", vm_id,
                           LOCAL_MAX_VOLUMES);
    if (!pathf(target, "%s/volumes/%s.%s", d->state_dir, vm->info.system, volume))
        return cfm_why_set(why, CFM_EIO, "state_dir: too long");
    if (!mkdir_ok(target, 0755))
        return cfm_why_set(why, CFM_EIO, "cannot create '%s': %s", target, strerror(errno));
    if ((err = link_volume(vm, volume, target, why)) != CFM_OK)
        return err;
    memcpy(vm->info.volumes[vm->info.nvolumes++], volume, strlen(volume) + 1);
    if ((err = vm_save(d, vm, why)) != CFM_OK) {
        drop_volume(vm, vm->info.nvolumes - 1);
        return err;
    }
    cfm_info("driver", "%s: volume %s attached", vm_id, volume);
    return CFM_OK;
}

static enum cfm_err do_detach(struct cfm_driver *d, const char *vm_id, const char *volume,
                              const char *key, struct lvm **out, struct cfm_why *why)
{
    enum cfm_err err;
    struct lvm *vm;
    int i;

    if ((err = check_key(key, why)) != CFM_OK || (err = find_vm(d, vm_id, &vm, why)) != CFM_OK ||
        (err = cfm_id_check(volume, "volume id", why)) != CFM_OK)
        return err;
    *out = vm;
    if ((i = volume_index(vm, volume)) < 0)
        return CFM_OK;
    drop_volume(vm, i);
    cfm_info("driver", "%s: volume %s detached", vm_id, volume);
    return vm_save(d, vm, why);
}

/* The public IP bound to (system, address), binding a free one of the pool
 * the first time. */
static enum cfm_err public_ip(struct cfm_driver *d, const char *system, const char *address,
                              const char **ip, struct cfm_why *why)
{
    struct laddr *a;
    enum cfm_err err;
    size_t p, i;

    for (i = 0; i < d->naddrs; i++) {
        if (strcmp(d->addrs[i].system, system) == 0 && strcmp(d->addrs[i].address, address) == 0) {
            *ip = d->addrs[i].ip;
            return CFM_OK;
        }
    }
    for (p = 0; p < d->npool; p++) {
        for (i = 0; i < d->naddrs && strcmp(d->addrs[i].ip, d->pool[p]) != 0; i++)
            ;
        if (i == d->naddrs)
            break;
    }
    if (p == d->npool || d->naddrs >= LOCAL_MAX_ADDRS)
        return cfm_why_set(why, CFM_ETOOBIG,
                           "site %s has no free public address (all %zu of its pool are bound)",
                           d->site, d->npool);
    if (!grow((void **)&d->addrs, &d->capaddrs, d->naddrs + 1, sizeof *d->addrs))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    a = &d->addrs[d->naddrs++];
    memcpy(a->system, system, strlen(system) + 1);
    memcpy(a->address, address, strlen(address) + 1);
    memcpy(a->ip, d->pool[p], sizeof a->ip);
    if ((err = addrs_save(d, why)) != CFM_OK) {
        d->naddrs--;
        return err;
    }
    *ip = a->ip;
    return CFM_OK;
}

static enum cfm_err do_associate(struct cfm_driver *d, const char *vm_id, const char *address,
                                 const char *key, struct lvm **out, struct cfm_why *why)
{
    const char *ip = NULL;
    enum cfm_err err;
    struct lvm *vm;

    if ((err = check_key(key, why)) != CFM_OK || (err = find_vm(d, vm_id, &vm, why)) != CFM_OK ||
        (err = cfm_id_check(address, "address id", why)) != CFM_OK)
        return err;
    if (vm->info.state == CFM_VM_TERMINATED)
        return cfm_why_set(why, CFM_EINVAL, "%s is terminated", vm_id);
    *out = vm;
    if (strcmp(vm->info.address_id, address) == 0)
        return CFM_OK;
    if ((err = public_ip(d, vm->info.system, address, &ip, why)) != CFM_OK)
        return err;
    /* Moving an address is what DR and failback do. */
    for (size_t i = 0; i < d->nvms; i++) {
        struct lvm *o = d->vms[i];
        if (o == vm || !holds_resources(o) || strcmp(o->info.system, vm->info.system) != 0 ||
            strcmp(o->info.address_id, address) != 0)
            continue;
        o->info.address_id[0] = o->info.public_ip[0] = '\0';
        vm_save_or_log(d, o);
        cfm_info("driver", "address %s (%s) moved from %s to %s", address, ip, o->info.id, vm_id);
    }
    memcpy(vm->info.address_id, address, strlen(address) + 1);
    memcpy(vm->info.public_ip, ip, strlen(ip) + 1);
    cfm_info("driver", "%s: address %s (%s) associated", vm_id, address, ip);
    return vm_save(d, vm, why);
}

static enum cfm_err do_disassociate(struct cfm_driver *d, const char *vm_id,
                                    const char *address, const char *key, struct lvm **out,
                                    struct cfm_why *why)
{
    enum cfm_err err;
    struct lvm *vm;

    if ((err = check_key(key, why)) != CFM_OK || (err = find_vm(d, vm_id, &vm, why)) != CFM_OK ||
        (err = cfm_id_check(address, "address id", why)) != CFM_OK)
        return err;
    *out = vm;
    if (strcmp(vm->info.address_id, address) != 0)
        return CFM_OK; /* not (or no longer) here: nothing to undo */
    vm->info.address_id[0] = vm->info.public_ip[0] = '\0';
    cfm_info("driver", "%s: address %s disassociated", vm_id, address);
    return vm_save(d, vm, why);
}

/* ---- the ops ---------------------------------------------------------------- */

/* A REPLY_VM for cb, or NULL (then *err says why: no cb, or no memory). */
static struct reply *vm_reply(cfm_driver_vm_cb cb, void *arg, enum cfm_err *err)
{
    struct reply *r;

    *err = cb ? CFM_ENOMEM : CFM_EINVAL;
    if (!cb || !(r = reply_new(REPLY_VM, arg)))
        return NULL;
    r->vm_cb = cb;
    *err = CFM_OK;
    return r;
}

static enum cfm_err local_run(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                              cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = do_run(d, spec, &r->vm, &r->why);
    reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_describe(struct cfm_driver *d, const char *vm_id, cfm_driver_vm_cb cb,
                                   void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = find_vm(d, vm_id, &r->vm, &r->why);
    reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_attach(struct cfm_driver *d, const char *vm_id, const char *volume_id,
                                 const char *key, cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = do_attach(d, vm_id, volume_id, key, &r->vm, &r->why);
    reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_detach(struct cfm_driver *d, const char *vm_id, const char *volume_id,
                                 const char *key, cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = do_detach(d, vm_id, volume_id, key, &r->vm, &r->why);
    reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_associate(struct cfm_driver *d, const char *vm_id,
                                    const char *address_id, const char *key,
                                    cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = do_associate(d, vm_id, address_id, key, &r->vm, &r->why);
    reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_disassociate(struct cfm_driver *d, const char *vm_id,
                                       const char *address_id, const char *key,
                                       cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);

    if (!r)
        return err;
    r->err = do_disassociate(d, vm_id, address_id, key, &r->vm, &r->why);
    reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_terminate(struct cfm_driver *d, const char *vm_id, const char *key,
                                    cfm_driver_vm_cb cb, void *arg)
{
    enum cfm_err err;
    struct reply *r = vm_reply(cb, arg, &err);
    bool wait;

    if (!r)
        return err;
    r->err = do_terminate(d, vm_id, key, r, &wait);
    if (!wait)
        reply_push(d, r);
    return CFM_OK;
}

static enum cfm_err local_list(struct cfm_driver *d, cfm_driver_list_cb cb, void *arg)
{
    struct reply *r;

    if (!cb)
        return CFM_EINVAL;
    if (!(r = reply_new(REPLY_LIST, arg)))
        return CFM_ENOMEM;
    r->list_cb = cb;
    if (d->nvms > 0 && !(r->list = calloc(d->nvms, sizeof *r->list))) {
        free(r);
        return CFM_ENOMEM;
    }
    for (size_t i = 0; i < d->nvms; i++)
        r->list[i] = d->vms[i]->info;
    r->nlist = d->nvms;
    reply_push(d, r);
    return CFM_OK;
}

static void on_driver_timer_closed(uv_handle_t *h)
{
    struct cfm_driver *d = h->data;

    d->handles--;
    maybe_free_driver(d);
}

/* Stops watching and frees once every handle is closed; VMs keep running
 * and queued answers are dropped (no callback runs after close). */
static void local_close(struct cfm_driver *d)
{
    if (!d || d->closing)
        return;
    d->closing = true;
    free_replies(d->head);
    d->head = d->tail = NULL;
    for (size_t i = 0; i < d->nvms; i++) {
        struct lvm *vm = d->vms[i];
        free_replies(vm->waiters);
        vm->waiters = NULL;
        if (vm->child) {
            vm->child = false;
            uv_close((uv_handle_t *)&vm->proc, on_vm_handle_closed);
        }
        if (vm->timer_open) {
            vm->timer_open = false;
            uv_close((uv_handle_t *)&vm->term_timer, on_vm_handle_closed);
        }
        if (vm->handles == 0)
            free_vm(vm);
    }
    d->nvms = 0;
    if (d->timers_open) {
        uv_close((uv_handle_t *)&d->reply_timer, on_driver_timer_closed);
        uv_close((uv_handle_t *)&d->poll_timer, on_driver_timer_closed);
    }
    maybe_free_driver(d);
}

/* ---- open: config and re-adoption --------------------------------------------- */

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static enum cfm_err parse_capacity(struct cfm_driver *d, const json_t *cap, struct cfm_why *why)
{
    const char *k;
    json_t *v;

    if (!json_is_object(cap))
        return cfm_why_set(why, CFM_ECONFIG,
                           "driver.capacity: must be {\"cpu\": N, \"memory_mb\": M}");
    json_object_foreach((json_t *)cap, k, v) {
        json_int_t n = json_integer_value(v);
        if (strcmp(k, "cpu") == 0) {
            if (!json_is_integer(v) || n < 1 || n > LOCAL_MAX_CPU)
                return cfm_why_set(why, CFM_ECONFIG,
                                   "driver.capacity.cpu: must be an integer from 1 to %d",
                                   LOCAL_MAX_CPU);
            d->cap_cpu = (int)n;
        } else if (strcmp(k, "memory_mb") == 0) {
            if (!json_is_integer(v) || n < 1 || n > LOCAL_MAX_MEMORY_MB)
                return cfm_why_set(why, CFM_ECONFIG,
                                   "driver.capacity.memory_mb: must be an integer from 1 to %d",
                                   LOCAL_MAX_MEMORY_MB);
            d->cap_memory_mb = (int)n;
        } else {
            return cfm_why_set(why, CFM_ECONFIG,
                               "driver.capacity: unknown field '%.64s' (known: cpu, memory_mb)",
                               k);
        }
    }
    return CFM_OK;
}

static enum cfm_err parse_pool(struct cfm_driver *d, const json_t *pool, struct cfm_why *why)
{
    unsigned o[4], net[4];
    json_t *v;
    size_t i;

    if (!json_is_array(pool) || json_array_size(pool) > LOCAL_MAX_POOL)
        return cfm_why_set(why, CFM_ECONFIG,
                           "driver.public_pool: must be an array of at most %d IPv4 addresses",
                           LOCAL_MAX_POOL);
    parse_octets(d->net, 3, net);
    if (json_array_size(pool) > 0 && !(d->pool = calloc(json_array_size(pool), sizeof *d->pool)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    json_array_foreach(pool, i, v) {
        const char *s = json_string_value(v);
        if (!s || !parse_octets(s, 4, o) || o[0] != 127)
            return cfm_why_set(why, CFM_ECONFIG,
                               "driver.public_pool[%zu]: must be an IPv4 address in "
                               "127.0.0.0/8",
                               i);
        if (o[1] == net[1] && o[2] == net[2])
            return cfm_why_set(why, CFM_ECONFIG,
                               "driver.public_pool[%zu]: %s is inside private_net %s.0/24", i,
                               s, d->net);
        snprintf(d->pool[i], CFM_MAX_IP, "%u.%u.%u.%u", o[0], o[1], o[2], o[3]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(d->pool[k], d->pool[i]) == 0)
                return cfm_why_set(why, CFM_ECONFIG,
                                   "driver.public_pool[%zu]: %s is listed twice", i, s);
    }
    d->npool = json_array_size(pool);
    return CFM_OK;
}

static enum cfm_err parse_agent_args(struct cfm_driver *d, const json_t *args,
                                     struct cfm_why *why)
{
    static const char *const reserved[] = {"--vm", "--broker", "--root"};
    json_t *v;
    size_t i;

    if (!json_is_array(args) || json_array_size(args) > LOCAL_MAX_AGENT_ARGS)
        return cfm_why_set(why, CFM_ECONFIG,
                           "driver.agent_args: must be an array of at most %d strings",
                           LOCAL_MAX_AGENT_ARGS);
    if (json_array_size(args) > 0 &&
        !(d->agent_args = calloc(json_array_size(args), sizeof *d->agent_args)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    json_array_foreach(args, i, v) {
        const char *s = json_string_value(v);
        size_t n = s ? strlen(s) : 0;
        if (!s || n == 0 || n > LOCAL_MAX_ARG || n != json_string_length(v))
            return cfm_why_set(why, CFM_ECONFIG,
                               "driver.agent_args[%zu]: must be a string of 1 to %d bytes "
                               "without NUL",
                               i, LOCAL_MAX_ARG);
        for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++) {
            size_t rn = strlen(reserved[k]);
            if (strncmp(s, reserved[k], rn) == 0 && (s[rn] == '\0' || s[rn] == '='))
                return cfm_why_set(why, CFM_ECONFIG,
                                   "driver.agent_args[%zu]: %s is set by the driver", i,
                                   reserved[k]);
        }
        if (!(d->agent_args[i] = strdup(s)))
            return cfm_why_set(why, CFM_ENOMEM, "out of memory");
        d->nargs = i + 1;
    }
    return CFM_OK;
}

static enum cfm_err parse_config(struct cfm_driver *d, const json_t *config, struct cfm_why *why)
{
    unsigned o[4];
    enum cfm_err err;
    const json_t *v;
    const char *k;

    d->cap_cpu = DEFAULT_CPU;
    d->cap_memory_mb = DEFAULT_MEMORY_MB;
    snprintf(d->net, sizeof d->net, "127.77.%u", 1 + fnv1a(d->site) % 250);
    if (config && !json_is_object(config))
        return cfm_why_set(why, CFM_ECONFIG, "driver: must be an object");
    json_object_foreach((json_t *)config, k, v) {
        if (strcmp(k, "type") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "local") != 0)
                return cfm_why_set(why, CFM_ECONFIG, "driver.type: must be \"local\"");
        } else if (strcmp(k, "capacity") == 0) {
            if ((err = parse_capacity(d, v, why)) != CFM_OK)
                return err;
        } else if (strcmp(k, "private_net") == 0) {
            if (!json_is_string(v) || !parse_octets(json_string_value(v), 3, o) || o[0] != 127)
                return cfm_why_set(why, CFM_ECONFIG,
                                   "driver.private_net: must be a /24 prefix in 127.0.0.0/8, "
                                   "like \"127.77.5\"");
            snprintf(d->net, sizeof d->net, "%u.%u.%u", o[0], o[1], o[2]);
        } else if (strcmp(k, "public_pool") != 0 && strcmp(k, "agent_args") != 0) {
            return cfm_why_set(why, CFM_ECONFIG,
                               "driver: unknown field '%.64s' (known: type, capacity, "
                               "private_net, public_pool, agent_args)",
                               k);
        }
    }
    /* The pool is checked against the private net, so after it. */
    if ((v = json_object_get(config, "public_pool"))) {
        if ((err = parse_pool(d, v, why)) != CFM_OK)
            return err;
    } else {
        unsigned third;
        parse_octets(d->net, 3, o);
        third = o[1] == 78 ? (o[2] + 1) % 256 : o[2];
        if (!(d->pool = calloc(DEFAULT_POOL, sizeof *d->pool)))
            return cfm_why_set(why, CFM_ENOMEM, "out of memory");
        for (int i = 0; i < DEFAULT_POOL; i++)
            snprintf(d->pool[i], CFM_MAX_IP, "127.78.%u.%d", third, i + 1);
        d->npool = DEFAULT_POOL;
    }
    if ((v = json_object_get(config, "agent_args")) &&
        (err = parse_agent_args(d, v, why)) != CFM_OK)
        return err;
    return CFM_OK;
}

static enum cfm_err parse_env(struct cfm_driver *d, const struct cfm_driver_env *env,
                              struct cfm_why *why)
{
    const char *agent = env->agent_path && env->agent_path[0] ? env->agent_path : "cfm-agent";
    char dir[PATH_MAX];
    int n;

    if (!env->loop)
        return cfm_why_set(why, CFM_ECONFIG, "loop: missing");
    if (cfm_id_check(env->site, "site", why) != CFM_OK)
        return CFM_ECONFIG;
    memcpy(d->site, env->site, strlen(env->site) + 1);
    if (!env->broker_host || !env->broker_host[0] || strlen(env->broker_host) > 255)
        return cfm_why_set(why, CFM_ECONFIG, "broker_host: must be 1 to 255 characters");
    if (env->broker_port < 1 || env->broker_port > 65535)
        return cfm_why_set(why, CFM_ECONFIG, "broker_port: must be from 1 to 65535");
    n = snprintf(d->broker, sizeof d->broker, strchr(env->broker_host, ':') ? "[%s]:%d" : "%s:%d",
                 env->broker_host, env->broker_port);
    if (n < 0 || (size_t)n >= sizeof d->broker)
        return cfm_why_set(why, CFM_ECONFIG, "broker_host: too long");
    if (!copy_bounded(d->agent_path, sizeof d->agent_path, agent))
        return cfm_why_set(why, CFM_ECONFIG, "agent_path: too long");
    if (strchr(agent, '/') && access(agent, X_OK) != 0)
        return cfm_why_set(why, CFM_ECONFIG, "agent_path: '%s' is not executable: %s", agent,
                           strerror(errno));
    if (!env->state_dir || !realpath(env->state_dir, d->state_dir))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: '%s': %s",
                           env->state_dir ? env->state_dir : "(null)",
                           env->state_dir ? strerror(errno) : "missing");
    if (!pathf(dir, "%s/vms", d->state_dir) || !mkdir_ok(dir, 0700) ||
        !pathf(dir, "%s/volumes", d->state_dir) || !mkdir_ok(dir, 0700))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: cannot create '%s': %s", dir,
                           strerror(errno));
    d->loop = env->loop;
    d->on_event = env->on_event;
    d->arg = env->arg;
    return CFM_OK;
}

static enum cfm_err load_vms(struct cfm_driver *d, struct cfm_why *why)
{
    struct cfm_why skip = {""};
    char dir[PATH_MAX];
    struct lvm *vm = NULL;
    struct dirent *e;
    DIR *dp;

    if (!pathf(dir, "%s/vms", d->state_dir) || !(dp = opendir(dir)))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: cannot read '%s/vms'", d->state_dir);
    while ((e = readdir(dp))) {
        if (strncmp(e->d_name, "vm-", 3) != 0 || !cfm_id_valid(e->d_name))
            continue;
        if (d->nvms >= LOCAL_MAX_VMS) {
            cfm_error("driver", "more than %d VMs under '%s': the rest are not adopted",
                      LOCAL_MAX_VMS, dir);
            break;
        }
        if (vm_load(d, e->d_name, &vm, &skip) != CFM_OK) {
            cfm_error("driver", "VM %s not adopted: %s", e->d_name, skip.text);
            continue;
        }
        if (!grow((void **)&d->vms, &d->capvms, d->nvms + 1, sizeof *d->vms)) {
            free(vm);
            closedir(dp);
            return cfm_why_set(why, CFM_ENOMEM, "out of memory");
        }
        d->live_vms++;
        d->vms[d->nvms++] = vm;
    }
    closedir(dp);
    return CFM_OK;
}

/* A re-adopted VM: is its agent still there? */
static void readopt(struct lvm *vm)
{
    char reason[96];

    if (vm->info.state != CFM_VM_RUNNING && vm->info.state != CFM_VM_PENDING)
        return;
    if (agent_alive(vm)) {
        vm->info.state = CFM_VM_RUNNING;
        cfm_info("driver", "%s (system %s) re-adopted: pid %d at %s", vm->info.id,
                 vm->info.system, vm->pid, vm->info.private_ip);
        if (vm->terminating)
            start_terminate(vm); /* the manager stopped in the middle */
        return;
    }
    if (vm->terminating) {
        finish_terminate(vm);
        return;
    }
    if (vm->pid > 0)
        snprintf(reason, sizeof reason, "its agent (pid %d) is gone", vm->pid);
    else
        snprintf(reason, sizeof reason, "the manager stopped before its agent started");
    mark_failed(vm, reason); /* reported from the loop, after open returns */
}

static enum cfm_err local_open(const struct cfm_driver_env *env, const json_t *config,
                               struct cfm_driver **out, struct cfm_why *why)
{
    struct cfm_driver *d;
    enum cfm_err err;

    if (!env || !out)
        return cfm_why_set(why, CFM_EINVAL, "no environment");
    if (!(d = calloc(1, sizeof *d)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if ((err = parse_env(d, env, why)) != CFM_OK ||
        (err = parse_config(d, config, why)) != CFM_OK || (err = addrs_load(d, why)) != CFM_OK ||
        (err = load_vms(d, why)) != CFM_OK) {
        for (size_t i = 0; i < d->nvms; i++)
            free(d->vms[i]);
        free_driver_now(d);
        return err;
    }
    uv_timer_init(d->loop, &d->reply_timer);
    uv_timer_init(d->loop, &d->poll_timer);
    d->reply_timer.data = d->poll_timer.data = d;
    d->handles = 2;
    d->timers_open = true;
    uv_timer_start(&d->poll_timer, on_poll, POLL_MS, POLL_MS);
    uv_unref((uv_handle_t *)&d->poll_timer); /* watching is not work */
    for (size_t i = 0; i < d->nvms; i++)
        readopt(d->vms[i]);
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
