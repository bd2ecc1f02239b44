/*
 * local_records.c - what the local driver keeps on disk about its VMs, and
 * the small file and buffer helpers every file of the driver uses.
 *
 * Each VM's record is <state_dir>/vms/<vm-id>/vm.json, rewritten whole
 * through a temporary file and a rename (cfm_local__write_atomic), so a
 * reader or a crashed manager sees the old record or the new one, never a
 * part. VM records are not fsync'd: a local VM is a process of this
 * machine, so its record has to outlive the manager, not the machine (the
 * page cache does that), and a machine that crashed took every VM with it
 * (a record lost with them is logged at the next start and its VM not
 * adopted, as a record that does not read). Two fsyncs per save cost the
 * recovery of 10 VMs a fifth of its time (docs/performance.md). The
 * addresses record, which outlives the VMs, is fsync'd. Records are read back bounded
 * (LOCAL_MAX_RECORD) and checked field by field: a record that does not
 * read is logged and its VM not adopted, never half-adopted.
 *
 * A new VM's first two records are written by the spawn worker on libuv's
 * thread pool (local_spawn.c), through cfm_local__vm_write on its own copy
 * of the record: jansson keeps no shared mutable state but its hash seed,
 * which it sets once with atomic builtins, and the non-durable write
 * neither logs nor calls strerror(3).
 *
 * The one thing to know: the record in memory is the truth while the
 * driver runs; a save that fails is logged (cfm_local__vm_save_or_log) and
 * the next save writes the whole record again.
 */
#include "driver_local_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "id.h"
#include "log.h"

/* ---- small helpers ---------------------------------------------------- */

bool cfm_local__pathf(char out[PATH_MAX], const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    return n >= 0 && n < PATH_MAX;
}

bool cfm_local__copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;

    if (!src || n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* Grows *arr (of elem-sized items) to hold need items; false on overflow or
 * out of memory (then *arr is unchanged). */
bool cfm_local__grow(void **arr, size_t *cap, size_t need, size_t elem)
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

bool cfm_local__mkdir_ok(const char *path, mode_t mode)
{
    return mkdir(path, mode) == 0 || errno == EEXIST;
}

/* strerror(3) may return a buffer shared by every thread; the XSI
 * strerror_r writes into ours (this file has no _GNU_SOURCE). */
const char *cfm_local__strerror(int errnum, char buf[LOCAL_ERRLEN])
{
    if (strerror_r(errnum, buf, LOCAL_ERRLEN) != 0)
        snprintf(buf, LOCAL_ERRLEN, "error %d", errnum);
    return buf;
}

bool cfm_local__remove_vm_dir(const char *dir, struct cfm_why *why)
{
    /* What an agent that ran leaves (a line in agent.log, its .cfm-agent in
     * the disk) is not a run's leftover: refused before anything is gone,
     * so the disk goes first (rmdir refuses one that is not empty). */
    static const char *const entries[] = {"disk", "agent.log", ".vm.json.tmp", "vm.json", ""};
    char path[PATH_MAX], ebuf[LOCAL_ERRLEN];
    struct stat st;

    if (!cfm_local__pathf(path, "%s/agent.log", dir) ||
        (lstat(path, &st) == 0 && st.st_size > 0)) {
        cfm_why_set(why, CFM_EIO, "'%s' is not empty: an agent ran", path);
        return false;
    }
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        if (!cfm_local__pathf(path, "%s/%s", dir, entries[i])) {
            cfm_why_set(why, CFM_EIO, "path in '%s' is too long", dir);
            return false;
        }
        if (remove(path) != 0 && errno != ENOENT) {
            cfm_why_set(why, CFM_EIO, "cannot remove '%s': %s", path,
                        cfm_local__strerror(errno, ebuf));
            return false;
        }
    }
    return true;
}

/* Writes text to dir/name through a temporary file and a rename, so a
 * reader (or a crash) sees the old record or the new one, never a part;
 * durable: fsync'd too, file and directory. Not durable, it may run on the
 * thread pool (the spawn worker): it then neither logs nor uses strerror. */
enum cfm_err cfm_local__write_atomic(const char *dir, const char *name, const char *text,
                                     bool durable, struct cfm_why *why)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    size_t len = strlen(text), off = 0;
    enum cfm_err err = CFM_EIO;
    int fd = -1, dfd = -1, saved = 0;
    char ebuf[LOCAL_ERRLEN];

    if (!cfm_local__pathf(tmp, "%s/.%s.tmp", dir, name) ||
        !cfm_local__pathf(path, "%s/%s", dir, name))
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
    if (durable && fsync(fd) != 0)
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
    if (durable) {
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            cfm_warn("driver", "cannot sync directory '%s': %s", dir, strerror(errno));
    }
    err = CFM_OK;
out:
    if (err != CFM_OK) {
        saved = errno;
        unlink(tmp);
        cfm_why_set(why, err, "cannot write '%s': %s", path, cfm_local__strerror(saved, ebuf));
    }
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    return err;
}

/* Loads a JSON record of at most LOCAL_MAX_RECORD bytes; NULL with why. */
json_t *cfm_local__read_record(const char *path, struct cfm_why *why)
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

/* ---- vm.json ------------------------------------------------------------ */

enum cfm_err cfm_local__vm_write(const char *dir, const struct cfm_vm_info *info,
                                 const char *created, int pid, bool terminating,
                                 struct cfm_why *why)
{
    enum cfm_err err;
    json_t *vols = json_array(), *rec;
    char *text;

    for (int i = 0; vols && i < info->nvolumes; i++)
        json_array_append_new(vols, json_string(info->volumes[i]));
    rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:o, s:i, s:s, s:b, s:s}",
                    "id", info->id, "key", info->key, "system", info->system, "vm_class",
                    info->vm_class, "cpu", info->cpu, "memory_mb", info->memory_mb,
                    "private_ip", info->private_ip, "public_ip", info->public_ip,
                    "address_id", info->address_id, "volumes", vols, "pid", pid, "state",
                    cfm_vm_state_name(info->state), "terminating", terminating, "created",
                    created);
    text = rec ? json_dumps(rec, JSON_INDENT(2)) : NULL;
    json_decref(rec);
    if (!text)
        return cfm_why_set(why, CFM_ENOMEM, "cannot encode the record of %s", info->id);
    err = cfm_local__write_atomic(dir, "vm.json", text, false, why);
    free(text);
    return err;
}

enum cfm_err cfm_local__vm_save(struct cfm_driver *d, struct cfm_local_vm *vm,
                                struct cfm_why *why)
{
    char dir[PATH_MAX];

    if (!cfm_local__pathf(dir, "%s/vms/%s", d->state_dir, vm->info.id))
        return cfm_why_set(why, CFM_EIO, "state_dir: too long");
    return cfm_local__vm_write(dir, &vm->info, vm->created, vm->pid, vm->terminating, why);
}

/* Saves, and logs (rather than fails) when the disk refuses: the VM's state
 * in memory is the truth until the next save succeeds. */
void cfm_local__vm_save_or_log(struct cfm_driver *d, struct cfm_local_vm *vm)
{
    struct cfm_why why = {""};

    if (cfm_local__vm_save(d, vm, &why) != CFM_OK)
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

/* Into an array member of a struct cfm_local_vm, bounded by its size. */
#define COPY(member, src) cfm_local__copy_bounded(member, sizeof member, src)

/* Loads <state_dir>/vms/<id>/vm.json into a new struct cfm_local_vm. */
static enum cfm_err vm_load(struct cfm_driver *d, const char *id, struct cfm_local_vm **out,
                            struct cfm_why *why)
{
    const char *rid, *key, *sys, *cls, *pip, *pub, *aid, *state, *created;
    enum cfm_err err = CFM_EIO;
    char path[PATH_MAX];
    json_error_t jerr;
    json_t *rec = NULL, *vols, *v;
    struct cfm_local_vm *vm = NULL;
    int terminating = 0, cpu = 0, memory_mb = 0, pid = 0;
    size_t i;

    if (!cfm_local__pathf(path, "%s/vms/%s/vm.json", d->state_dir, id))
        return cfm_why_set(why, CFM_EIO, "path too long");
    if (!(rec = cfm_local__read_record(path, why)))
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
    if (strcmp(rid, id) != 0 || !COPY(vm->info.id, rid) || !cfm_id_valid(key) ||
        !COPY(vm->info.key, key) || !cfm_id_valid(sys) || !COPY(vm->info.system, sys) ||
        !cfm_id_valid(cls) || !COPY(vm->info.vm_class, cls) ||
        !COPY(vm->info.private_ip, pip) || !COPY(vm->info.public_ip, pub) ||
        (aid[0] && !cfm_id_valid(aid)) || !COPY(vm->info.address_id, aid) ||
        !COPY(vm->created, created) ||
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
    if (!cfm_local__pathf(vm->info.disk, "%s/vms/%s/disk", d->state_dir, id)) {
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

/* A VM directory without a record is a run the manager stopped in before
 * its first record (its agent is spawned after it): removed, with its empty
 * disk. True when it was that and is gone. */
static bool cut_short(struct cfm_driver *d, const char *id)
{
    struct cfm_why why = {""};
    char dir[PATH_MAX], path[PATH_MAX];
    struct stat st;

    if (!cfm_local__pathf(dir, "%s/vms/%s", d->state_dir, id) ||
        !cfm_local__pathf(path, "%s/vm.json", dir) || lstat(path, &st) == 0 ||
        errno != ENOENT)
        return false;
    if (!cfm_local__remove_vm_dir(dir, &why)) {
        cfm_warn("driver", "%s has no vm.json and is kept: %s", dir, why.text);
        return false;
    }
    cfm_info("driver", "removed %s: a run cut short before its first record", dir);
    return true;
}

enum cfm_err cfm_local__load_vms(struct cfm_driver *d, struct cfm_why *why)
{
    struct cfm_why skip = {""};
    char dir[PATH_MAX];
    struct cfm_local_vm *vm = NULL;
    struct dirent *e;
    DIR *dp;

    if (!cfm_local__pathf(dir, "%s/vms", d->state_dir) || !(dp = opendir(dir)))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: cannot read '%s/vms'", d->state_dir);
    while ((e = readdir(dp))) {
        if (strncmp(e->d_name, "vm-", 3) != 0 || !cfm_id_valid(e->d_name))
            continue;
        if (d->nvms >= LOCAL_MAX_VMS) {
            cfm_error("driver", "more than %d VMs under '%s': the rest are not adopted",
                      LOCAL_MAX_VMS, dir);
            break;
        }
        if (cut_short(d, e->d_name))
            continue;
        if (vm_load(d, e->d_name, &vm, &skip) != CFM_OK) {
            cfm_error("driver", "VM %s not adopted: %s", e->d_name, skip.text);
            continue;
        }
        if (!cfm_local__grow((void **)&d->vms, &d->capvms, d->nvms + 1, sizeof *d->vms)) {
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

