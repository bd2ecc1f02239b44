/*
 * local_vms.c - making VMs: run and what it decides before an agent is
 * spawned (the key, the spec, capacity, a private IP, a VM id and its
 * directory), and the lookups the other files answer from.
 *
 * A key makes one VM, ever: run with a key that already made a VM answers
 * that VM, whatever its state (terminated too, and after a restart, since
 * the key is in vm.json), and refuses a key reused for another system or
 * VM class. A new VM is admitted when the pending and running VMs plus it
 * fit the site's capacity; it gets the lowest free .2-.254 of the private
 * /24 and the id "vm-" + 10 random hex digits.
 *
 * What blocks (the VM's directory, its records, the agent's posix_spawn) is
 * done on libuv's thread pool by local_spawn.c; run decides everything
 * first, on the loop, and puts the VM in d->vms as PENDING at once, so the
 * capacity, the addresses and the key of a VM being spawned are seen by
 * the runs that come while it is.
 *
 * The one thing to know: a run that cannot start its agent leaves nothing
 * behind (no record, no directory), so the same key may try again.
 */
#include "driver_local_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "id.h"
#include "log.h"
#include "util.h"

/* ---- lookups ---------------------------------------------------------------- */

static struct cfm_local_vm *find_id(struct cfm_driver *d, const char *id)
{
    for (size_t i = 0; id && i < d->nvms; i++)
        if (strcmp(d->vms[i]->info.id, id) == 0)
            return d->vms[i];
    return NULL;
}

static struct cfm_local_vm *find_key(struct cfm_driver *d, const char *key)
{
    for (size_t i = 0; i < d->nvms; i++)
        if (strcmp(d->vms[i]->info.key, key) == 0)
            return d->vms[i];
    return NULL;
}

bool cfm_local__holds_resources(const struct cfm_local_vm *vm)
{
    return vm->info.state != CFM_VM_TERMINATED;
}

static bool counts_for_capacity(const struct cfm_local_vm *vm)
{
    return vm->info.state == CFM_VM_RUNNING || vm->info.state == CFM_VM_PENDING;
}

/* Parses 1-3 decimal digits ending the string; 0 when it is not that. */
static int atoi_host(const char *s)
{
    int v = 0, n = 0;

    for (; *s >= '0' && *s <= '9' && n < 4; s++, n++)
        v = v * 10 + (*s - '0');
    return *s || n == 0 || n > 3 ? 0 : v;
}

/* The host number of ip in the private /24, or 0. */
static int host_of(const struct cfm_driver *d, const char *ip)
{
    size_t n = strlen(d->net);

    if (strncmp(ip, d->net, n) != 0 || ip[n] != '.')
        return 0;
    return atoi_host(ip + n + 1);
}

/* A free .2-.254 of the private /24, handed out in turn after the last one
 * any VM record holds (terminated ones included) rather than the lowest:
 * an address just freed is not given out again at once, while what the
 * VM that had it left behind (a service still shutting down) may hold it. */
static bool alloc_private_ip(struct cfm_driver *d, char out[CFM_MAX_IP])
{
    /* The last handed out counts even when its VM is gone: a terminated
     * record no longer holds its address. */
    int last = d->last_host > 1 ? d->last_host : 1;

    for (size_t i = 0; i < d->nvms; i++) {
        int h = host_of(d, d->vms[i]->info.private_ip);
        if (h > last)
            last = h;
    }
    for (int k = 1; k <= 253; k++) {
        int host = 2 + (last - 2 + k + 253) % 253;
        bool used = false;
        snprintf(out, CFM_MAX_IP, "%s.%d", d->net, host);
        for (size_t i = 0; i < d->nvms && !used; i++)
            used = cfm_local__holds_resources(d->vms[i]) &&
                   strcmp(d->vms[i]->info.private_ip, out) == 0;
        if (!used)
            return true;
    }
    return false;
}

enum cfm_err cfm_local__check_key(const char *key, struct cfm_why *why)
{
    return key ? cfm_id_check(key, "key", why) : CFM_OK;
}

enum cfm_err cfm_local__find_vm(struct cfm_driver *d, const char *vm_id,
                                struct cfm_local_vm **out, struct cfm_why *why)
{
    if (!vm_id || !(*out = find_id(d, vm_id)))
        return cfm_why_set(why, CFM_ENOTFOUND, "no VM '%.64s' at site %s",
                           vm_id ? vm_id : "(null)", d->site);
    return CFM_OK;
}

enum cfm_err cfm_local__op_target(struct cfm_driver *d, const char *vm_id, const char *key,
                                  const char *id, const char *what, struct cfm_local_vm **out,
                                  struct cfm_why *why)
{
    enum cfm_err err;

    if ((err = cfm_local__check_key(key, why)) != CFM_OK ||
        (err = cfm_local__find_vm(d, vm_id, out, why)) != CFM_OK)
        return err;
    /* Its records and disk are the spawn worker's until the run answers
     * (which is where a caller learns its id). */
    if ((*out)->spawn)
        return cfm_why_set(why, CFM_EINVAL, "%s is still starting (its run has not answered)",
                           (*out)->info.id);
    return cfm_id_check(id, what, why);
}

/* ---- run ------------------------------------------------------------------ */

/* A random "vm-" + 10 hex digits that no VM of d has. Its directory is made
 * by the spawn worker, which fails rather than reuse one that exists (a
 * stray directory whose record did not read: one chance in 2^40 a run). */
static enum cfm_err new_vm_id(struct cfm_driver *d, char id[CFM_MAX_ID + 1], struct cfm_why *why)
{
    char uuid[CFM_UUID_LEN], hex[11];

    for (int attempt = 0; attempt < 16; attempt++) {
        size_t k = 0;
        if (cfm_uuid(uuid) != CFM_OK)
            return cfm_why_set(why, CFM_EIO, "no randomness for a VM id");
        for (size_t i = 0; uuid[i] && k < 10; i++)
            if (uuid[i] != '-')
                hex[k++] = uuid[i];
        hex[k] = '\0';
        snprintf(id, CFM_MAX_ID + 1, "vm-%s", hex);
        if (!find_id(d, id))
            return CFM_OK;
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

/* The VM spec->key made: answered now, or with its spawn when that is in
 * flight (*wait). */
static enum cfm_err same_key(struct cfm_local_vm *vm, const struct cfm_vm_spec *spec,
                             struct cfm_local_reply *r, bool *wait)
{
    if (strcmp(vm->info.system, spec->system) != 0 ||
        strcmp(vm->info.vm_class, spec->vm_class) != 0)
        return cfm_why_set(&r->why, CFM_EINVAL,
                           "key %s already made %s (system %s, VM class %s)", spec->key,
                           vm->info.id, vm->info.system, vm->info.vm_class);
    if (vm->spawn) {
        if (cfm_local__spawn_join(vm, r) != CFM_OK)
            return cfm_why_set(&r->why, CFM_ETOOBIG, "%s: %d run calls already wait for it",
                               vm->info.id, LOCAL_MAX_WAITERS);
        *wait = true;
        return CFM_OK;
    }
    r->vm = vm;
    return CFM_OK;
}

/* Admits a new VM for spec: capacity, a private IP, an id; the VM is made
 * PENDING in d->vms at once, so the next run sees what it holds. */
static enum cfm_err admit(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                          struct cfm_local_vm **out, struct cfm_why *why)
{
    char ip[CFM_MAX_IP];
    int64_t used_cpu = 0, used_mem = 0; /* re-adopted VMs may exceed a shrunk capacity */
    int free_cpu, free_mem;
    enum cfm_err err;
    struct cfm_local_vm *vm;

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
    if (!cfm_local__grow((void **)&d->vms, &d->capvms, d->nvms + 1, sizeof *d->vms) ||
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
        cfm_local__free_vm(vm);
        return err;
    }
    if (!cfm_local__pathf(vm->info.disk, "%s/vms/%s/disk", d->state_dir, vm->info.id)) {
        cfm_local__free_vm(vm);
        return cfm_why_set(why, CFM_EIO, "state_dir: too long");
    }
    d->vms[d->nvms++] = vm;
    d->last_host = host_of(d, ip); /* the next VM gets the next address */
    *out = vm;
    return CFM_OK;
}

void cfm_local__discard(struct cfm_local_vm *vm)
{
    struct cfm_driver *d = vm->d;
    int host = host_of(d, vm->info.private_ip);

    for (size_t i = 0; i < d->nvms; i++) {
        if (d->vms[i] == vm) {
            memmove(d->vms + i, d->vms + i + 1, (d->nvms - i - 1) * sizeof *d->vms);
            d->nvms--;
            break;
        }
    }
    /* Nothing was made: its address is handed out again, unless a later
     * run has taken the next one meanwhile. */
    if (host > 0 && d->last_host == host)
        d->last_host = host - 1;
    vm->discarded = true;
    if (vm->handles == 0)
        cfm_local__drop_vm(vm);
}

enum cfm_err cfm_local__run(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                            struct cfm_local_reply *r, bool *wait)
{
    enum cfm_err err;
    struct cfm_local_vm *vm;

    *wait = false;
    if ((err = check_spec(spec, &r->why)) != CFM_OK)
        return err;
    if ((vm = find_key(d, spec->key)))
        return same_key(vm, spec, r, wait);
    if ((err = admit(d, spec, &vm, &r->why)) != CFM_OK)
        return err;
    if ((err = cfm_local__spawn_start(d, vm, r, &r->why)) != CFM_OK) {
        cfm_error("driver", "run %s (key %s): %s", vm->info.id, spec->key, r->why.text);
        cfm_local__discard(vm);
        return err;
    }
    *wait = true;
    return CFM_OK;
}
