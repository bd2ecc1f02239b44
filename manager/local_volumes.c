/*
 * local_volumes.c - volumes of the local driver. A volume is a directory
 * that moves, with one rename(), between its home and the disk of the VM it
 * is attached to:
 *
 *   detached   <state_dir>/volumes/<system>/<volume-id>/
 *   attached   <state_dir>/vms/<vm-id>/disk/volumes/<volume-id>/
 *
 * Attached, it is a plain directory of the VM's disk, which the agent
 * serves like any other (put_file, get_file, an exec cwd); a link out of the
 * disk would be refused by the agent's realpath check. Both places lie
 * under state_dir, so a move is atomic on one filesystem. A volume is on
 * one VM at a time; a FAILED VM lets go of it and its data follows the
 * volume to the next VM (what heal and DR need).
 *
 * The one thing to know: the vm.json records name every place the data may
 * be. A volume is recorded on a VM before it moves into that VM's disk and
 * stays recorded until it has moved out, so after a crash it is in the disk
 * of a VM recording it, or at its home; open (cfm_local__settle_volumes)
 * puts it back where the records say.
 */
#include "driver_local_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define DISK_MODE 0755 /* <disk>/volumes and a new volume */
#define HOME_MODE 0700 /* <state_dir>/volumes/<system>, like volumes/ itself */

/* "." and ".." are IDs, but no name for a directory of its own. */
static bool dir_name_ok(const char *s)
{
    return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int volume_index(const struct cfm_local_vm *vm, const char *volume)
{
    for (int i = 0; i < vm->info.nvolumes; i++)
        if (strcmp(vm->info.volumes[i], volume) == 0)
            return i;
    return -1;
}

/* Forgets volume i of vm; its data is the caller's business. */
static void unrecord(struct cfm_local_vm *vm, int i)
{
    for (int k = i; k < vm->info.nvolumes - 1; k++)
        memcpy(vm->info.volumes[k], vm->info.volumes[k + 1], sizeof vm->info.volumes[k]);
    vm->info.nvolumes--;
}

/* Another VM of vm's system, not terminated, that records volume. */
static bool also_holds(const struct cfm_local_vm *o, const struct cfm_local_vm *vm,
                       const char *volume)
{
    return o != vm && cfm_local__holds_resources(o) &&
           strcmp(o->info.system, vm->info.system) == 0 && volume_index(o, volume) >= 0;
}

/* Where vm's volumes are while attached: <disk>/volumes. */
static bool disk_dir(const struct cfm_local_vm *vm, char out[PATH_MAX])
{
    return cfm_local__pathf(out, "%s/volumes", vm->info.disk);
}

/* Where the volumes of system are while detached; false for a system whose
 * id is no directory name. */
static bool home_dir(const struct cfm_driver *d, const char *system, char out[PATH_MAX])
{
    return dir_name_ok(system) && cfm_local__pathf(out, "%s/volumes/%s", d->state_dir, system);
}

/* dir/name is a directory itself, not a link to one. */
static bool has_dir(const char *dir, const char *name)
{
    char path[PATH_MAX];
    struct stat st;

    return cfm_local__pathf(path, "%s/%s", dir, name) && lstat(path, &st) == 0 &&
           S_ISDIR(st.st_mode);
}

/* Opens dir, which must be a directory and not a link, after creating it
 * with mode when mode is not 0. -1 with errno set. */
static int open_dir(const char *dir, mode_t mode)
{
    if (mode && !cfm_local__mkdir_ok(dir, mode))
        return -1;
    return open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Moves the directory from/name to to/name (to created with to_mode) with
 * one rename, and syncs both parents. Neither parent may be a link and the
 * entry moved must be a directory itself: what runs on a VM may replace
 * anything in its disk by a link, and the driver never moves what a link
 * points to, nor into it. CFM_ENOTFOUND when there is no from/name. */
static enum cfm_err move_dir(const char *from, const char *to, mode_t to_mode, const char *name,
                             struct cfm_why *why)
{
    enum cfm_err err = CFM_EIO;
    int ffd = -1, tfd = -1;
    struct stat st;

    if (!dir_name_ok(name))
        return cfm_why_set(why, CFM_EINVAL, "'%s' is not a volume's name", name);
    if ((ffd = open_dir(from, 0)) < 0 || fstatat(ffd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            err = CFM_ENOTFOUND;
        cfm_why_set(why, err, "cannot find '%s/%s': %s", from, name, strerror(errno));
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        cfm_why_set(why, err, "'%s/%s' is not a directory", from, name);
        goto out;
    }
    if ((tfd = open_dir(to, to_mode)) < 0) {
        cfm_why_set(why, err, "'%s' is not a directory: %s", to, strerror(errno));
        goto out;
    }
    if (renameat(ffd, name, tfd, name) != 0) {
        if (errno == ENOTEMPTY || errno == EEXIST)
            cfm_why_set(why, err, "cannot move '%s/%s': '%s/%s' is in the way", from, name, to,
                        name);
        else
            cfm_why_set(why, err, "cannot move '%s/%s' to '%s': %s", from, name, to,
                        strerror(errno));
        goto out;
    }
    /* The move is durable once both directories are; a failure to sync
     * leaves a correct tree that a crash might roll back, so it is logged. */
    if (fsync(tfd) != 0 || fsync(ffd) != 0)
        cfm_warn("driver", "cannot sync '%s' or '%s': %s", from, to, strerror(errno));
    err = CFM_OK;
out:
    if (ffd >= 0)
        close(ffd);
    if (tfd >= 0)
        close(tfd);
    return err;
}

/* Moves volume from vm's disk to its home. Nothing to move is fine: the data
 * is at home already (an earlier move was cut short), or gone (logged). */
static enum cfm_err move_home(struct cfm_driver *d, const struct cfm_local_vm *vm,
                              const char *volume, struct cfm_why *why)
{
    char from[PATH_MAX], to[PATH_MAX];
    enum cfm_err err;

    if (!disk_dir(vm, from) || !home_dir(d, vm->info.system, to))
        return cfm_why_set(why, CFM_EIO, "no home for volume %s of system %s", volume,
                           vm->info.system);
    err = move_dir(from, to, HOME_MODE, volume, why);
    if (err != CFM_ENOTFOUND)
        return err;
    if (!has_dir(to, volume))
        cfm_warn("driver", "%s: volume %s is neither in '%s' nor in '%s'", vm->info.id, volume,
                 from, to);
    return CFM_OK;
}

enum cfm_err cfm_local__attach(struct cfm_driver *d, const char *vm_id, const char *volume,
                               const char *key, struct cfm_local_vm **out,
                               struct cfm_why *why)
{
    char from[PATH_MAX] = "", to[PATH_MAX], path[PATH_MAX];
    const struct cfm_local_vm *holder = NULL;
    struct cfm_local_vm *vm;
    enum cfm_err err;

    if ((err = cfm_local__op_target(d, vm_id, key, volume, "volume id", &vm, why)) != CFM_OK)
        return err;
    if (!dir_name_ok(volume))
        return cfm_why_set(why, CFM_EINVAL, "volume id '%s' cannot name a directory", volume);
    if (vm->info.state == CFM_VM_TERMINATED)
        return cfm_why_set(why, CFM_EINVAL, "%s is terminated", vm_id);
    *out = vm;
    if (volume_index(vm, volume) >= 0)
        return CFM_OK;
    /* A volume is on one VM at a time; a failed VM lets go of it, and the
     * data comes from its disk. */
    for (size_t i = 0; i < d->nvms; i++) {
        struct cfm_local_vm *o = d->vms[i];
        if (!also_holds(o, vm, volume))
            continue;
        if (o->info.state != CFM_VM_FAILED)
            return cfm_why_set(why, CFM_EINVAL, "volume %s is attached to %s", volume,
                               o->info.id);
        holder = o;
        if (!from[0] && !(disk_dir(o, from) && has_dir(from, volume)))
            from[0] = '\0';
    }
    if (vm->info.nvolumes >= LOCAL_MAX_VOLUMES)
        return cfm_why_set(why, CFM_ETOOBIG, "%s has %d volumes, the most a VM can have", vm_id,
                           LOCAL_MAX_VOLUMES);
    if (!disk_dir(vm, to) || (!from[0] && !home_dir(d, vm->info.system, from)) ||
        !cfm_local__pathf(path, "%s/%s", from, volume))
        return cfm_why_set(why, CFM_EIO, "no home for volume %s of system %s", volume,
                           vm->info.system);
    if (!has_dir(from, volume)) {
        /* Neither in a failed VM's disk nor at home: new, unless a VM
         * held it (then its data is lost, and not silently replaced). */
        if (holder)
            return cfm_why_set(why, CFM_EIO, "volume %s: its data is neither in the disk of "
                               "%s nor in '%s'", volume, holder->info.id, path);
        if (!cfm_local__mkdir_ok(from, HOME_MODE) || mkdir(path, DISK_MODE) != 0)
            return cfm_why_set(why, CFM_EIO, "cannot create volume %s in '%s': %s", volume,
                               from, strerror(errno));
    }
    /* Recorded first: the record always names the disk the data is in. */
    memcpy(vm->info.volumes[vm->info.nvolumes++], volume, strlen(volume) + 1);
    if ((err = cfm_local__vm_save(d, vm, why)) != CFM_OK ||
        (err = move_dir(from, to, DISK_MODE, volume, why)) != CFM_OK) {
        vm->info.nvolumes--;
        cfm_local__vm_save_or_log(d, vm);
        return err == CFM_ENOTFOUND ? CFM_EIO : err;
    }
    for (size_t i = 0; i < d->nvms; i++) {
        struct cfm_local_vm *o = d->vms[i];
        if (!also_holds(o, vm, volume))
            continue;
        unrecord(o, volume_index(o, volume));
        cfm_local__vm_save_or_log(d, o);
        cfm_info("driver", "volume %s moved from failed %s to %s", volume, o->info.id, vm_id);
    }
    cfm_info("driver", "%s: volume %s attached", vm_id, volume);
    return CFM_OK;
}

enum cfm_err cfm_local__detach(struct cfm_driver *d, const char *vm_id, const char *volume,
                               const char *key, struct cfm_local_vm **out,
                               struct cfm_why *why)
{
    struct cfm_local_vm *vm;
    enum cfm_err err;
    int i;

    if ((err = cfm_local__op_target(d, vm_id, key, volume, "volume id", &vm, why)) != CFM_OK)
        return err;
    *out = vm;
    if ((i = volume_index(vm, volume)) < 0)
        return CFM_OK;
    /* Moved out first: the record is dropped once the disk no longer holds it. */
    if ((err = move_home(d, vm, volume, why)) != CFM_OK)
        return err;
    unrecord(vm, i);
    cfm_info("driver", "%s: volume %s detached", vm_id, volume);
    return cfm_local__vm_save(d, vm, why);
}

void cfm_local__release_volumes(struct cfm_local_vm *vm)
{
    struct cfm_why why = {""};

    for (int i = 0; i < vm->info.nvolumes; i++)
        if (move_home(vm->d, vm, vm->info.volumes[i], &why) != CFM_OK)
            cfm_error("driver", "%s: volume %s stays in its disk: %s", vm->info.id,
                      vm->info.volumes[i], why.text);
}

/* Volume k of vm after a restart: true when vm keeps it (put in its disk
 * if it was at home), false when another VM recording it holds its data
 * (then vm forgets it). */
static bool settle_one(struct cfm_driver *d, struct cfm_local_vm *vm, int k)
{
    const char *volume = vm->info.volumes[k];
    char here[PATH_MAX], there[PATH_MAX], home[PATH_MAX];
    struct cfm_why why = {""};
    bool in_here;

    if (!disk_dir(vm, here))
        return true;
    in_here = has_dir(here, volume);
    for (size_t i = 0; i < d->nvms; i++) {
        struct cfm_local_vm *o = d->vms[i];
        if (!also_holds(o, vm, volume))
            continue;
        if (in_here) {
            cfm_warn("driver", "volume %s was recorded on %s and %s: it stays on %s, whose "
                     "disk holds it", volume, vm->info.id, o->info.id, vm->info.id);
            unrecord(o, volume_index(o, volume));
            cfm_local__vm_save_or_log(d, o);
        } else if (disk_dir(o, there) && has_dir(there, volume)) {
            cfm_warn("driver", "volume %s was recorded on %s and %s: it stays on %s, whose "
                     "disk holds it", volume, vm->info.id, o->info.id, o->info.id);
            unrecord(vm, k);
            cfm_local__vm_save_or_log(d, vm);
            return false;
        }
    }
    if (in_here || !home_dir(d, vm->info.system, home))
        return true;
    switch (move_dir(home, here, DISK_MODE, volume, &why)) {
    case CFM_OK:
        cfm_info("driver", "%s: volume %s moved back into its disk (a move was cut short)",
                 vm->info.id, volume);
        break;
    case CFM_ENOTFOUND:
        cfm_error("driver", "%s: volume %s is neither in '%s' nor in '%s'", vm->info.id, volume,
                  here, home);
        break;
    default: cfm_error("driver", "%s: volume %s: %s", vm->info.id, volume, why.text); break;
    }
    return true;
}

void cfm_local__settle_volumes(struct cfm_driver *d)
{
    for (size_t i = 0; i < d->nvms; i++) {
        struct cfm_local_vm *vm = d->vms[i];
        for (int k = 0; cfm_local__holds_resources(vm) && k < vm->info.nvolumes;)
            if (settle_one(d, vm, k))
                k++;
    }
}
