/*
 * local_config.c - the local driver's settings: the site config's "driver"
 * object (capacity, private_net, public_pool, agent_args) and what the
 * manager passes at open (struct cfm_driver_env).
 *
 * Everything is checked before the driver starts; a bad value is refused
 * with CFM_ECONFIG and a why naming the field
 * ("driver.public_pool[2]: must be an IPv4 address in 127.0.0.0/8").
 * Defaults derive from the site's name and state directory: its private
 * /24 is 127.77.<1 + (FNV-1a(site) ^ 31 * FNV-1a(state_dir)) % 250>, its
 * pool 127.78.<the same>.1-50, so sites on one host rarely overlap (set
 * private_net where they must not).
 */
#include "driver_local_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "id.h"

#define DEFAULT_CPU 16
#define DEFAULT_MEMORY_MB 16384
#define DEFAULT_POOL 50

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

enum cfm_err cfm_local__parse_config(struct cfm_driver *d, const json_t *config,
                                     struct cfm_why *why)
{
    unsigned o[4];
    enum cfm_err err;
    const json_t *v;
    const char *k;

    d->cap_cpu = DEFAULT_CPU;
    d->cap_memory_mb = DEFAULT_MEMORY_MB;
    /* The state dir too: two managers of one site name on one host (tests
     * running side by side) get different nets. */
    snprintf(d->net, sizeof d->net, "127.77.%u",
             1 + (fnv1a(d->site) ^ (fnv1a(d->state_dir) * 31u)) % 250);
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

enum cfm_err cfm_local__parse_env(struct cfm_driver *d, const struct cfm_driver_env *env,
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
    if (!cfm_local__copy_bounded(d->agent_path, sizeof d->agent_path, agent))
        return cfm_why_set(why, CFM_ECONFIG, "agent_path: too long");
    if (strchr(agent, '/') && access(agent, X_OK) != 0)
        return cfm_why_set(why, CFM_ECONFIG, "agent_path: '%s' is not executable: %s", agent,
                           strerror(errno));
    if (!env->state_dir || !realpath(env->state_dir, d->state_dir))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: '%s': %s",
                           env->state_dir ? env->state_dir : "(null)",
                           env->state_dir ? strerror(errno) : "missing");
    if (!cfm_local__pathf(dir, "%s/vms", d->state_dir) || !cfm_local__mkdir_ok(dir, 0700) ||
        !cfm_local__pathf(dir, "%s/volumes", d->state_dir) || !cfm_local__mkdir_ok(dir, 0700))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: cannot create '%s': %s", dir,
                           strerror(errno));
    d->loop = env->loop;
    d->on_event = env->on_event;
    d->arg = env->arg;
    return CFM_OK;
}
