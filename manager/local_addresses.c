/*
 * local_addresses.c - public addresses of the local driver: a pool of
 * loopback IPs (127.78.x.1-50 by default), each bound for good to a
 * (system, address id) the first time that id is associated.
 *
 * The bindings are <state_dir>/addresses.json, rewritten atomically when
 * one is added, so (system, address id) means the same IP after restarts
 * and whatever the pool becomes. Which VM holds an address is in the VMs'
 * records (vm.json: public_ip, address_id). Associating an address another
 * VM of the system holds moves it, as DR and failback need: both records
 * are rewritten. A VM holds at most one public address.
 */
#include "driver_local_int.h"

#include <string.h>
#include <unistd.h>

#include "id.h"
#include "log.h"

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
    err = cfm_local__write_atomic(d->state_dir, "addresses.json", text, true, why);
    free(text);
    return err;
}

enum cfm_err cfm_local__addrs_load(struct cfm_driver *d, struct cfm_why *why)
{
    char path[PATH_MAX];
    json_t *rec, *arr, *v;
    size_t i;

    if (!cfm_local__pathf(path, "%s/addresses.json", d->state_dir))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: too long");
    if (access(path, F_OK) != 0)
        return CFM_OK;
    if (!(rec = cfm_local__read_record(path, why)))
        return CFM_ECONFIG;
    arr = json_object_get(rec, "addresses");
    json_array_foreach(arr, i, v) {
        const char *sys = json_string_value(json_object_get(v, "system"));
        const char *aid = json_string_value(json_object_get(v, "address"));
        const char *ip = json_string_value(json_object_get(v, "ip"));
        struct cfm_local_addr a;
        if (d->naddrs >= LOCAL_MAX_ADDRS) {
            cfm_error("driver", "'%s': more than %d addresses, the rest ignored", path,
                      LOCAL_MAX_ADDRS);
            break;
        }
        if (!cfm_id_valid(sys) || !cfm_id_valid(aid) ||
            !cfm_local__copy_bounded(a.ip, sizeof a.ip, ip)) {
            cfm_warn("driver", "'%s': addresses[%zu] is malformed, ignored", path, i);
            continue;
        }
        memcpy(a.system, sys, strlen(sys) + 1);
        memcpy(a.address, aid, strlen(aid) + 1);
        if (!cfm_local__grow((void **)&d->addrs, &d->capaddrs, d->naddrs + 1, sizeof *d->addrs)) {
            json_decref(rec);
            return cfm_why_set(why, CFM_ENOMEM, "out of memory");
        }
        d->addrs[d->naddrs++] = a;
    }
    json_decref(rec);
    return CFM_OK;
}

/* The public IP bound to (system, address), binding a free one of the pool
 * the first time. */
static enum cfm_err public_ip(struct cfm_driver *d, const char *system, const char *address,
                              const char **ip, struct cfm_why *why)
{
    struct cfm_local_addr *a;
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
    if (!cfm_local__grow((void **)&d->addrs, &d->capaddrs, d->naddrs + 1, sizeof *d->addrs))
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

enum cfm_err cfm_local__associate(struct cfm_driver *d, const char *vm_id, const char *address,
                                  const char *key, struct cfm_local_vm **out,
                                  struct cfm_why *why)
{
    const char *ip = NULL;
    enum cfm_err err;
    struct cfm_local_vm *vm;

    if ((err = cfm_local__op_target(d, vm_id, key, address, "address id", &vm, why)) != CFM_OK)
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
        struct cfm_local_vm *o = d->vms[i];
        if (o == vm || !cfm_local__holds_resources(o) ||
            strcmp(o->info.system, vm->info.system) != 0 ||
            strcmp(o->info.address_id, address) != 0)
            continue;
        o->info.address_id[0] = o->info.public_ip[0] = '\0';
        cfm_local__vm_save_or_log(d, o);
        cfm_info("driver", "address %s (%s) moved from %s to %s", address, ip, o->info.id, vm_id);
    }
    memcpy(vm->info.address_id, address, strlen(address) + 1);
    memcpy(vm->info.public_ip, ip, strlen(ip) + 1);
    cfm_info("driver", "%s: address %s (%s) associated", vm_id, address, ip);
    return cfm_local__vm_save(d, vm, why);
}

enum cfm_err cfm_local__disassociate(struct cfm_driver *d, const char *vm_id,
                                     const char *address, const char *key,
                                     struct cfm_local_vm **out, struct cfm_why *why)
{
    enum cfm_err err;
    struct cfm_local_vm *vm;

    if ((err = cfm_local__op_target(d, vm_id, key, address, "address id", &vm, why)) != CFM_OK)
        return err;
    *out = vm;
    if (strcmp(vm->info.address_id, address) != 0)
        return CFM_OK; /* not (or no longer) here: nothing to undo */
    vm->info.address_id[0] = vm->info.public_ip[0] = '\0';
    cfm_info("driver", "%s: address %s disassociated", vm_id, address);
    return cfm_local__vm_save(d, vm, why);
}
