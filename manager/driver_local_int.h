/*
 * driver_local_int.h - what the files of the local driver share; not for
 * other modules (they see cfm_driver_local_ops in driver.h only).
 *
 *   driver_local.c     the ops, the answer queue, open and close
 *   local_config.c     the site config's "driver" object and the env
 *   local_records.c    vm.json: atomic writes, bounded reads, re-reading
 *   local_vms.c        run: lookups, ids, keys, capacity, private IPs
 *   local_spawn.c      run's blocking half, on libuv's thread pool
 *   local_procs.c      agent processes: exit, poll, terminate
 *   local_volumes.c    volumes: directories moved in and out of disks
 *   local_addresses.c  public addresses: the pool and addresses.json
 *
 * Everything runs on the driver's loop thread, except the work function of
 * local_spawn.c, which runs on libuv's thread pool and touches only its own
 * job (struct cfm_local_spawn); nothing here locks.
 */
#ifndef CFM_DRIVER_LOCAL_INT_H
#define CFM_DRIVER_LOCAL_INT_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "driver.h"
#include "err.h"

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
#define LOCAL_MAX_WAITERS 64       /* terminate (or repeated run) calls waiting on one VM */
#define LOCAL_ERRLEN 128           /* an errno's text (cfm_local__strerror) */
#define LOCAL_MAX_VOLUMES ((int)(sizeof(((struct cfm_vm_info *)0)->volumes) / \
                                 sizeof(((struct cfm_vm_info *)0)->volumes[0])))

enum cfm_local_reply_kind { LOCAL_REPLY_VM, LOCAL_REPLY_LIST, LOCAL_REPLY_EVENT };

/* One answer or event, delivered from the loop (driver_local.c). */
struct cfm_local_reply {
    struct cfm_local_reply *next;
    enum cfm_local_reply_kind kind;
    cfm_driver_vm_cb vm_cb;
    cfm_driver_list_cb list_cb;
    void *arg;
    enum cfm_err err;
    struct cfm_local_vm *vm;      /* LOCAL_REPLY_VM (on success), LOCAL_REPLY_EVENT */
    struct cfm_vm_info *snap;     /* owned, may be NULL: answered instead of vm's state at
                                   * delivery (a run: the VM as it was when it started) */
    struct cfm_vm_info *list;     /* LOCAL_REPLY_LIST: owned snapshot */
    size_t nlist;
    struct cfm_why why;
};

struct cfm_local_spawn;

/* One VM. Never freed while the driver is open (its id and key stay
 * answerable); freed when the driver closes and its handles are closed
 * (and its spawn, if one is in flight, has come back). */
struct cfm_local_vm {
    struct cfm_vm_info info;
    struct cfm_driver *d;
    char created[CFM_TIME_LEN];
    int pid;                /* the agent's pid (and process group); 0 if none */
    bool child;             /* our child: SIGCHLD and waitpid report its exit */
    bool terminating;       /* SIGTERM sent, waiting for the process to go */
    bool killed;            /* SIGKILL sent */
    bool timer_open;        /* term_timer initialised */
    bool discarded;         /* not in d->vms (spawn failed): free once handles close */
    struct cfm_local_spawn *spawn; /* run's blocking half in flight (PENDING); else NULL */
    int handles;            /* embedded handles not yet closed */
    uint64_t term_start;    /* uv_now() when terminate began */
    struct cfm_local_reply *waiters; /* terminate calls answered when the process is gone
                                      * (while spawning: once it has started, then gone) */
    size_t nwaiters;
    uv_timer_t term_timer;
};

/* A public address, bound to (system, address id) for good. */
struct cfm_local_addr {
    char system[CFM_MAX_ID + 1];
    char address[CFM_MAX_ID + 1];
    char ip[CFM_MAX_IP];
};

struct cfm_driver {
    uv_loop_t *loop;
    char site[CFM_MAX_ID + 1];
    char state_dir[PATH_MAX];      /* realpath'd */
    char broker[300];              /* HOST:PORT or [V6]:PORT */
    char agent_path[PATH_MAX];
    cfm_driver_event_cb on_event;
    void *arg;
    int cap_cpu, cap_memory_mb;
    char net[16];                  /* the private /24: "127.77.5" */
    int last_host;                 /* the host part handed out last */
    char (*pool)[CFM_MAX_IP];
    size_t npool;
    char **agent_args;
    size_t nargs;
    struct cfm_local_vm **vms;
    size_t nvms, capvms;
    struct cfm_local_addr *addrs;
    size_t naddrs, capaddrs;
    struct cfm_local_reply *head, *tail; /* the answer queue */
    uv_timer_t reply_timer, poll_timer;
    uv_signal_t sigchld;           /* our agents' exits */
    int handles;                   /* of the timers and sigchld, not yet closed */
    size_t live_vms;               /* struct cfm_local_vm not yet freed */
    bool timers_open;
    bool closing;
};

/* The answer of an effectful op: the VM in *out (borrowed from d) or an
 * error with why. */
typedef enum cfm_err (*cfm_local_vm_op)(struct cfm_driver *d, const char *vm_id,
                                        const char *what, const char *key,
                                        struct cfm_local_vm **out, struct cfm_why *why);

/* ---- driver_local.c: the queue and the lifetime of VMs ---- */

/* A new, zeroed reply, or NULL when out of memory. */
struct cfm_local_reply *cfm_local__reply_new(enum cfm_local_reply_kind kind, void *arg);
/* Queues r (ownership passes to the queue); delivered from the loop. */
void cfm_local__reply_push(struct cfm_driver *d, struct cfm_local_reply *r);
/* Frees vm and what it owns (its waiting replies); its handles must be closed. */
void cfm_local__free_vm(struct cfm_local_vm *vm);
/* Close callback of a VM's embedded handles: frees the VM after the last. */
void cfm_local__on_vm_handle_closed(uv_handle_t *h);
/* Frees vm, which is in no list and has no handle open, and then the driver
 * if it is closing and vm was the last thing it waited for. */
void cfm_local__drop_vm(struct cfm_local_vm *vm);

/* ---- local_config.c ---- */

/* Checks env and copies what d needs (state_dir realpath'd, vms/ and
 * volumes/ created). CFM_ECONFIG with why naming the field. */
enum cfm_err cfm_local__parse_env(struct cfm_driver *d, const struct cfm_driver_env *env,
                                  struct cfm_why *why);
/* Applies the site config's "driver" object (borrowed, may be NULL) over
 * the defaults; d->pool and d->agent_args are allocated into d. */
enum cfm_err cfm_local__parse_config(struct cfm_driver *d, const json_t *config,
                                     struct cfm_why *why);

/* ---- local_records.c ---- */

/* Formats a path into out (PATH_MAX bytes); false when it does not fit. */
bool cfm_local__pathf(char out[PATH_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Copies src (borrowed) into dst of cap bytes; false when NULL or too long. */
bool cfm_local__copy_bounded(char *dst, size_t cap, const char *src);
/* Grows *arr (of elem-sized items) to hold need items; false on overflow or
 * out of memory (then *arr is unchanged). */
bool cfm_local__grow(void **arr, size_t *cap, size_t need, size_t elem);
/* mkdir that accepts an existing entry (the caller checks what it is). */
bool cfm_local__mkdir_ok(const char *path, mode_t mode);
/* The text of errnum, in buf; unlike strerror(3), for any thread. */
const char *cfm_local__strerror(int errnum, char buf[LOCAL_ERRLEN]);
/* Writes text to dir/name through a temporary file and a rename, so a
 * reader or a crashed manager sees the old text or the new one; with
 * durable, also fsync'd (file, then directory) so a crash of the machine
 * does too. */
enum cfm_err cfm_local__write_atomic(const char *dir, const char *name, const char *text,
                                     bool durable, struct cfm_why *why);
/* Removes a VM directory holding no more than a run makes before its agent
 * has run (an empty disk/, an empty agent.log, vm.json and its temporary
 * file), and the directory; anything more is refused before anything is
 * removed. For any thread (it does not log): false with why otherwise. */
bool cfm_local__remove_vm_dir(const char *dir, struct cfm_why *why);
/* Loads a JSON object of at most LOCAL_MAX_RECORD bytes: a new reference,
 * or NULL with why. */
json_t *cfm_local__read_record(const char *path, struct cfm_why *why);
/* Writes <dir>/vm.json atomically from what the record holds: info,
 * created, pid and terminating (all borrowed). Touches nothing else, so the
 * spawn worker calls it on its own copies. */
enum cfm_err cfm_local__vm_write(const char *dir, const struct cfm_vm_info *info,
                                 const char *created, int pid, bool terminating,
                                 struct cfm_why *why);
/* Writes vm's vm.json atomically. */
enum cfm_err cfm_local__vm_save(struct cfm_driver *d, struct cfm_local_vm *vm,
                                struct cfm_why *why);
/* Saves, and logs (rather than fails) when the disk refuses: the VM's state
 * in memory is the truth until the next save succeeds. */
void cfm_local__vm_save_or_log(struct cfm_driver *d, struct cfm_local_vm *vm);
/* Reads the vm.json of every <state_dir>/vms/vm-<id>/ into d->vms
 * (unreadable ones are logged and skipped). */
enum cfm_err cfm_local__load_vms(struct cfm_driver *d, struct cfm_why *why);

/* ---- local_vms.c ---- */

/* The VM vm_id (borrowed from d), or CFM_ENOTFOUND with why. */
enum cfm_err cfm_local__find_vm(struct cfm_driver *d, const char *vm_id,
                                struct cfm_local_vm **out, struct cfm_why *why);
/* A key is optional for the naturally idempotent calls; if given, an ID. */
enum cfm_err cfm_local__check_key(const char *key, struct cfm_why *why);
/* The checks an effectful call on a VM starts with, in this order: the key
 * (optional), the VM (borrowed into *out), and the id it names (what:
 * "volume id", "address id"). */
enum cfm_err cfm_local__op_target(struct cfm_driver *d, const char *vm_id, const char *key,
                                  const char *id, const char *what, struct cfm_local_vm **out,
                                  struct cfm_why *why);
/* Not terminated: the VM still holds its IP, volumes and address. */
bool cfm_local__holds_resources(const struct cfm_local_vm *vm);
/* run (spec borrowed): answers r now (*wait false: an error, or the VM
 * spec->key made) or once a new VM's agent has started (*wait true: r is
 * then owned by the VM's spawn, local_spawn.c). */
enum cfm_err cfm_local__run(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                            struct cfm_local_reply *r, bool *wait);
/* vm (in d->vms, PENDING) leaves d->vms and is discarded: freed now, or
 * once its handles are closed. */
void cfm_local__discard(struct cfm_local_vm *vm);

/* ---- local_spawn.c ---- */

/* Queues the blocking half of vm's run on libuv's thread pool: its
 * directory, disk and PENDING record, posix_spawn of its agent, its RUNNING
 * record. vm is PENDING in d->vms; r (owned from then on) is answered when
 * the work is done. On error nothing was queued, r is the caller's. */
enum cfm_err cfm_local__spawn_start(struct cfm_driver *d, struct cfm_local_vm *vm,
                                    struct cfm_local_reply *r, struct cfm_why *why);
/* A run with the key of vm, whose spawn is in flight: r (owned from then on,
 * on CFM_OK) is answered with the first run's answer. */
enum cfm_err cfm_local__spawn_join(struct cfm_local_vm *vm, struct cfm_local_reply *r);
/* The driver closes: the spawn of vm is cancelled if not yet started, and
 * its answers are dropped; vm is freed when the work comes back. */
void cfm_local__spawn_abandon(struct cfm_local_vm *vm);

/* ---- local_procs.c ---- */

/* A pending VM's agent was started as our child pid: vm is RUNNING. */
void cfm_local__agent_started(struct cfm_local_vm *vm, int pid);
/* After the answers of a spawn were queued: a terminate that waited for it
 * starts now, and an agent that already exited is reaped (its SIGCHLD came
 * before its pid was known). */
void cfm_local__after_spawn(struct cfm_local_vm *vm);
/* terminate: answers r now (*wait false) or, once the process is gone,
 * from the VM's waiters (*wait true; r is then owned by the VM). */
enum cfm_err cfm_local__terminate(struct cfm_driver *d, const char *vm_id, const char *key,
                                  struct cfm_local_reply *r, bool *wait);
/* A VM read back at open: running again, FAILED, or terminated again.
 * False for a run cut short before its agent started (PENDING, no pid,
 * no agent found): its directory is removed and the caller discards it. */
bool cfm_local__readopt(struct cfm_local_vm *vm);
/* The poll timer: finds re-adopted agents that died (and children whose
 * SIGCHLD was missed). */
void cfm_local__on_poll(uv_timer_t *t);
/* SIGCHLD: reaps the agents we spawned that exited. */
void cfm_local__on_sigchld(uv_signal_t *s, int signum);

/* ---- local_volumes.c ---- */

enum cfm_err cfm_local__attach(struct cfm_driver *d, const char *vm_id, const char *volume,
                               const char *key, struct cfm_local_vm **out,
                               struct cfm_why *why);
enum cfm_err cfm_local__detach(struct cfm_driver *d, const char *vm_id, const char *volume,
                               const char *key, struct cfm_local_vm **out,
                               struct cfm_why *why);
/* A terminating VM lets go of its volumes: each goes back to its home. */
void cfm_local__release_volumes(struct cfm_local_vm *vm);
/* At open, after re-adoption: every volume recorded on a VM is put in that
 * VM's disk; a volume recorded on two VMs stays with the one holding it. */
void cfm_local__settle_volumes(struct cfm_driver *d);

/* ---- local_addresses.c ---- */

/* Reads <state_dir>/addresses.json (absent: no bindings yet). */
enum cfm_err cfm_local__addrs_load(struct cfm_driver *d, struct cfm_why *why);
enum cfm_err cfm_local__associate(struct cfm_driver *d, const char *vm_id, const char *address,
                                  const char *key, struct cfm_local_vm **out,
                                  struct cfm_why *why);
enum cfm_err cfm_local__disassociate(struct cfm_driver *d, const char *vm_id,
                                     const char *address, const char *key,
                                     struct cfm_local_vm **out, struct cfm_why *why);

#endif
