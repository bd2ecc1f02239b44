/*
 * obj.c - the model object envelope: creating, copying and freeing objects,
 * their JSON form, and the two comparisons replication relies on (which write
 * wins, and whether two writes say the same thing).
 *
 * The body schemas live in schema.c; this file checks the envelope and hands
 * the body over with the path prefix "body". An object always owns its body,
 * which is always a JSON object: from_json and to_json copy bodies deeply, so
 * no caller ever shares a body with an object.
 */
#include "obj.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#include "id.h"
#include "schema.h"

#define ENVELOPE_KEYS "kind, id, system, version, origin, updated, deleted, body"
#define SHOW_MAX 64

static void copy_id(char dst[CFM_MAX_ID + 1], const char *src)
{
    size_t n = strnlen(src, CFM_MAX_ID);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

struct cfm_obj *cfm_obj_new(enum cfm_kind kind, const char *system, const char *id,
                            json_t *body)
{
    struct cfm_obj *obj = NULL;

    if (!body)
        body = json_object();
    if (!body || !json_is_object(body) || (unsigned)kind >= CFM_KIND__COUNT ||
        !cfm_id_valid(system) || !cfm_id_valid(id))
        goto out;
    obj = calloc(1, sizeof *obj);
    if (!obj)
        goto out;
    obj->kind = kind;
    copy_id(obj->system, system);
    copy_id(obj->id, id);
    obj->body = body;
    return obj;
out:
    json_decref(body);
    return NULL;
}

struct cfm_obj *cfm_obj_dup(const struct cfm_obj *obj)
{
    struct cfm_obj *copy;

    if (!obj)
        return NULL;
    copy = cfm_obj_new(obj->kind, obj->system, obj->id, json_deep_copy(obj->body));
    if (!copy)
        return NULL;
    copy->version = obj->version;
    memcpy(copy->origin, obj->origin, sizeof copy->origin);
    memcpy(copy->updated, obj->updated, sizeof copy->updated);
    copy->deleted = obj->deleted;
    return copy;
}

void cfm_obj_free(struct cfm_obj *obj)
{
    if (!obj)
        return;
    json_decref(obj->body);
    free(obj);
}

json_t *cfm_obj_to_json(const struct cfm_obj *obj)
{
    json_t *json = json_object();

    if (!obj || !json)
        goto fail;
    if (json_object_set_new(json, "kind", json_string(cfm_kind_name(obj->kind))) ||
        json_object_set_new(json, "id", json_string(obj->id)) ||
        json_object_set_new(json, "system", json_string(obj->system)) ||
        json_object_set_new(json, "version", json_integer((json_int_t)obj->version)) ||
        json_object_set_new(json, "origin", json_string(obj->origin)) ||
        json_object_set_new(json, "updated", json_string(obj->updated)) ||
        json_object_set_new(json, "deleted", json_boolean(obj->deleted)) ||
        json_object_set_new(json, "body",
                            obj->body ? json_deep_copy(obj->body) : json_object()))
        goto fail;
    return json;
fail:
    json_decref(json);
    return NULL;
}

/* Reads an optional string member: NULL when absent, else it must be a
 * string without NUL bytes (jansson can hold them; C strings cannot). */
static enum cfm_err get_string(const json_t *json, const char *key, const char **out,
                               size_t *len, struct cfm_why *why)
{
    const json_t *v = json_object_get(json, key);

    *out = NULL;
    *len = 0;
    if (!v)
        return CFM_OK;
    if (!json_is_string(v))
        return cfm_why_set(why, CFM_EINVAL, "%s: must be a string", key);
    *out = json_string_value(v);
    *len = json_string_length(v);
    return CFM_OK;
}

/* A required or optional ID member; "" is accepted when allow_empty. */
static enum cfm_err get_id(const json_t *json, const char *key, const char *what,
                           bool allow_empty, const char **out, struct cfm_why *why)
{
    enum cfm_err err;
    size_t len;

    if ((err = get_string(json, key, out, &len, why)))
        return err;
    if (!*out && !allow_empty)
        return cfm_why_set(why, CFM_EINVAL, "%s: is required (a string, the %s)", key, what);
    if (!*out || (allow_empty && len == 0))
        return CFM_OK;
    if ((err = cfm_models__id_checkn(*out, len, what, why)))
        return cfm_why_prefix(why, err, "%s", key);
    return CFM_OK;
}

static enum cfm_err check_keys(const json_t *json, struct cfm_why *why)
{
    static const char *const keys[] = {"kind",    "id",      "system",  "version",
                                       "origin",  "updated", "deleted", "body"};
    char shown[4 * SHOW_MAX + 8];
    const char *key;
    const json_t *v;
    size_t i;

    json_object_foreach((json_t *)json, key, v) {
        for (i = 0; i < sizeof keys / sizeof keys[0] && strcmp(key, keys[i]); i++)
            ;
        if (i == sizeof keys / sizeof keys[0])
            return cfm_why_set(why, CFM_EINVAL, "unknown field '%s' (known: " ENVELOPE_KEYS ")",
                               cfm_quote(shown, sizeof shown, key, strlen(key),
                                                 SHOW_MAX));
    }
    return CFM_OK;
}

enum cfm_err cfm_obj_from_json(const json_t *json, struct cfm_obj **out, struct cfm_why *why)
{
    enum cfm_err err = CFM_EINVAL;
    const char *kind_name, *id, *system, *origin, *updated;
    const json_t *v, *body, *deleted;
    enum cfm_kind kind;
    struct cfm_obj *obj = NULL;
    size_t len;

    if (out)
        *out = NULL;
    if (!json_is_object(json)) {
        err = cfm_why_set(why, CFM_EINVAL, "must be a JSON object");
        goto out;
    }
    if ((err = check_keys(json, why)))
        goto out;
    if ((err = get_string(json, "kind", &kind_name, &len, why)))
        goto out;
    if (!kind_name) {
        err = cfm_why_set(why, CFM_EINVAL, "kind: is required (a string)");
        goto out;
    }
    if (strlen(kind_name) != len) {
        err = cfm_why_set(why, CFM_EINVAL, "kind: must not contain NUL bytes");
        goto out;
    }
    if ((err = cfm_kind_parse(kind_name, &kind, why))) {
        err = cfm_why_prefix(why, err, "kind");
        goto out;
    }
    if ((err = get_id(json, "id", "object id", false, &id, why)) ||
        (err = get_id(json, "system", "system id", false, &system, why)))
        goto out;
    v = json_object_get(json, "version");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 0 ||
              (uint64_t)json_integer_value(v) >= CFM_MAX_VERSION)) {
        err = cfm_why_set(why, CFM_EINVAL, "version: must be an integer from 0 to %llu",
                          (unsigned long long)(CFM_MAX_VERSION - 1));
        goto out;
    }
    if ((err = get_id(json, "origin", "site id", true, &origin, why)))
        goto out;
    if ((err = get_string(json, "updated", &updated, &len, why)))
        goto out;
    if (updated && (len >= CFM_TIME_LEN || strlen(updated) != len)) {
        err = cfm_why_set(why, CFM_EINVAL, "updated: must be a time of at most %d bytes",
                          CFM_TIME_LEN - 1);
        goto out;
    }
    deleted = json_object_get(json, "deleted");
    if (deleted && !json_is_boolean(deleted)) {
        err = cfm_why_set(why, CFM_EINVAL, "deleted: must be true or false");
        goto out;
    }
    body = json_object_get(json, "body");
    if (!body) {
        err = cfm_why_set(why, CFM_EINVAL, "body: is required (a JSON object)");
        goto out;
    }
    if (json_is_true(deleted)) {
        if (!json_is_object(body) || json_object_size(body) != 0) {
            err = cfm_why_set(why, CFM_EINVAL, "body: a tombstone's body must be {}");
            goto out;
        }
    } else if ((err = cfm_models__check_body(kind, id, body, "body", why))) {
        goto out;
    }
    obj = cfm_obj_new(kind, system, id, json_deep_copy(body));
    if (!obj) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    v = json_object_get(json, "version");
    obj->version = v ? (uint64_t)json_integer_value(v) : 0;
    if (origin)
        copy_id(obj->origin, origin);
    if (updated)
        memcpy(obj->updated, updated, strlen(updated) + 1);
    obj->deleted = json_is_true(deleted);
    if (out) {
        *out = obj;
        obj = NULL;
    }
    err = CFM_OK;
out:
    cfm_obj_free(obj);
    return err;
}

enum cfm_err cfm_obj_validate_body(enum cfm_kind kind, const json_t *body, struct cfm_why *why)
{
    return cfm_models__check_body(kind, NULL, body, "", why);
}

int cfm_obj_cmp_kind_id(const void *pa, const void *pb)
{
    const struct cfm_obj *a = *(const struct cfm_obj *const *)pa;
    const struct cfm_obj *b = *(const struct cfm_obj *const *)pb;

    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    return strcmp(a->id, b->id);
}

int cfm_obj_cmp_version(const struct cfm_obj *a, const struct cfm_obj *b)
{
    int c;

    if (a->version != b->version)
        return a->version < b->version ? -1 : 1;
    c = strcmp(a->origin, b->origin);
    return (c > 0) - (c < 0);
}

bool cfm_obj_same_content(const struct cfm_obj *a, const struct cfm_obj *b)
{
    if (!a || !b)
        return a == b;
    return a->kind == b->kind && strcmp(a->system, b->system) == 0 &&
           strcmp(a->id, b->id) == 0 && a->deleted == b->deleted &&
           json_equal(a->body, b->body);
}
