/*
 * sysdesc.c - parsing a system description file into model objects.
 *
 * Three passes over one jansson tree: shape (kinds, IDs, counts, every body
 * through schema.c), then references between the objects of the file, then
 * dependency cycles among elements. Nothing is kept unless all three pass, so
 * a file is accepted whole or refused whole. Bodies are not copied: each
 * object takes a reference to its subtree of the parsed document, which is
 * released at the end, leaving every object the sole owner of its body.
 * Objects are sorted by (kind enum order, id) so the same file always gives
 * the same list; references are resolved by binary search in that list.
 */
#include "sysdesc.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "id.h"
#include "schema.h"

#define WHERE_LEN 160 /* "objects.<Kind>.<id>" and a field name fit */

/* Index of (kind, id) in the sorted list, or -1. */
static long find_obj(struct cfm_obj **list, size_t n, enum cfm_kind kind, const char *id)
{
    struct cfm_obj key = {.kind = kind};
    struct cfm_obj *pkey = &key, **hit;

    snprintf(key.id, sizeof key.id, "%s", id);
    hit = bsearch(&pkey, list, n, sizeof *list, cfm_obj_cmp_kind_id);
    return hit ? (long)(hit - list) : -1;
}

/* Pass 1 for objects: counts them, checking each kind key and map shape. */
static enum cfm_err count_objects(const json_t *objects, size_t *count, struct cfm_why *why)
{
    const char *name;
    const json_t *map;
    enum cfm_kind kind;
    enum cfm_err err;

    *count = 0;
    json_object_foreach((json_t *)objects, name, map) {
        if ((err = cfm_kind_parse(name, &kind, why)))
            return cfm_why_prefix(why, err, "objects");
        if (kind == CFM_KIND_BUSINESS_SYSTEM)
            return cfm_why_set(why, CFM_EINVAL,
                               "objects.BusinessSystem: the BusinessSystem is described by "
                               "the top-level fields, not inside objects");
        if (!cfm_kind_declared(kind))
            return cfm_why_set(why, CFM_EINVAL,
                               "objects.%s: runtime kind %s cannot be declared in a system "
                               "description", name, name);
        if (!json_is_object(map))
            return cfm_why_set(why, CFM_EINVAL, "objects.%s: must be an object mapping ids "
                               "to bodies", name);
        *count += json_object_size(map);
    }
    if (*count + 1 > CFM_MAX_OBJECTS) /* + 1: the BusinessSystem */
        return cfm_why_set(why, CFM_ETOOBIG, "objects: the file holds %zu objects with the "
                           "BusinessSystem; the limit is %d", *count + 1, CFM_MAX_OBJECTS);
    return CFM_OK;
}

/* Pass 1 for one object: its ID and body; appends it to list. */
static enum cfm_err add_object(const char *system, enum cfm_kind kind, const char *id,
                               json_t *body, struct cfm_obj **list, size_t *n,
                               struct cfm_why *why)
{
    const char *kname = cfm_kind_name(kind);
    char what[CFM_MAX_ID + 8], where[WHERE_LEN];
    enum cfm_err err;

    snprintf(what, sizeof what, "%s id", kname);
    if ((err = cfm_id_check(id, what, why)))
        return cfm_why_prefix(why, err, "objects.%s", kname);
    snprintf(where, sizeof where, "objects.%s.%s", kname, id);
    if ((err = cfm_models__check_body(kind, id, body, where, why)))
        return err;
    list[*n] = cfm_obj_new(kind, system, id, json_incref(body));
    if (!list[*n])
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    (*n)++;
    return CFM_OK;
}

static enum cfm_err check_ref(struct cfm_obj **list, size_t n, const struct cfm_obj *el,
                              const char *field, const json_t *arr, size_t i,
                              enum cfm_kind kind, const char *ref, struct cfm_why *why)
{
    char idx[32] = "";

    if (find_obj(list, n, kind, ref) >= 0)
        return CFM_OK;
    if (arr)
        snprintf(idx, sizeof idx, "[%zu]", i);
    return cfm_why_set(why, CFM_EINVAL, "objects.%s.%s.%s%s: %s '%s' is not defined in this file",
                       cfm_kind_name(el->kind), el->id, field, idx, cfm_kind_name(kind), ref);
}

/* Pass 2: every reference of an element names an object of the file. Bodies
 * are valid by now, so every reference is a well-formed ID. */
static enum cfm_err check_refs(struct cfm_obj **list, size_t n, const struct cfm_obj *el,
                               struct cfm_why *why)
{
    static const struct {
        const char *field;
        enum cfm_kind kind;
    } refs[] = {
        {"vm_class", CFM_KIND_VM_CLASS},         {"depends_on", CFM_KIND_ELEMENT},
        {"config_templates", CFM_KIND_CONFIG_TEMPLATE}, {"volumes", CFM_KIND_VOLUME},
        {"address", CFM_KIND_ADDRESS},
    };
    enum cfm_err err;
    const json_t *v, *item;
    size_t r, i;

    for (r = 0; r < sizeof refs / sizeof refs[0]; r++) {
        v = json_object_get(el->body, refs[r].field);
        if (json_is_string(v) &&
            (err = check_ref(list, n, el, refs[r].field, NULL, 0, refs[r].kind,
                             json_string_value(v), why)))
            return err;
        json_array_foreach(v, i, item)
            if ((err = check_ref(list, n, el, refs[r].field, v, i, refs[r].kind,
                                 json_string_value(item), why)))
                return err;
    }
    return CFM_OK;
}

/* Writes "a -> b -> a" for the cycle stack[from..top] closing on stack[from]. */
static void cycle_text(struct cfm_obj **els, const size_t *stack, size_t from, size_t top,
                       char *buf, size_t size)
{
    size_t o = 0, i;
    int w;

    buf[0] = '\0';
    for (i = from; i <= top + 1 && o < size; i++) {
        w = snprintf(buf + o, size - o, "%s%s", i > from ? " -> " : "",
                     els[i <= top ? stack[i] : stack[from]]->id);
        o = w < 0 ? size : o + (size_t)w;
    }
}

/* Pass 3: depth-first search over depends_on without recursion (a file may
 * hold thousands of elements); a dependency on a node still on the path is a
 * cycle. els[0..m) are the elements, sorted, so the result is deterministic. */
static enum cfm_err check_cycles(struct cfm_obj **els, size_t m, struct cfm_why *why)
{
    enum cfm_err err = CFM_ENOMEM;
    unsigned char *state = calloc(m ? m : 1, 1); /* 0 new, 1 on the path, 2 done */
    size_t *stack = calloc(m ? m : 1, sizeof *stack);
    size_t *next = calloc(m ? m : 1, sizeof *next);
    size_t s, sp, top, d, pos;
    const json_t *deps;
    char text[CFM_WHY_MAX];

    if (!state || !stack || !next) {
        cfm_why_set(why, err, "out of memory");
        goto out;
    }
    for (s = 0; s < m; s++) {
        if (state[s])
            continue;
        sp = 0;
        stack[sp] = s;
        next[sp++] = 0;
        state[s] = 1;
        while (sp > 0) {
            top = stack[sp - 1];
            deps = json_object_get(els[top]->body, "depends_on");
            if (next[sp - 1] >= json_array_size(deps)) {
                state[top] = 2;
                sp--;
                continue;
            }
            d = (size_t)find_obj(els, m, CFM_KIND_ELEMENT,
                                 json_string_value(json_array_get(deps, next[sp - 1]++)));
            if (state[d] == 2)
                continue;
            if (state[d] == 1) {
                for (pos = 0; stack[pos] != d; pos++)
                    ;
                cycle_text(els, stack, pos, sp - 1, text, sizeof text);
                err = cfm_why_set(why, CFM_EINVAL,
                                  "objects.BusinessSystemElement: dependency cycle %s", text);
                goto out;
            }
            state[d] = 1;
            stack[sp] = d;
            next[sp++] = 0;
        }
    }
    err = CFM_OK;
out:
    free(state);
    free(stack);
    free(next);
    return err;
}

static enum cfm_err parse_json(const char *text, size_t len, json_t **root, struct cfm_why *why)
{
    json_error_t jerr;
    char shown[4 * sizeof jerr.text + 8];

    if (len > CFM_MAX_PAYLOAD)
        return cfm_why_set(why, CFM_ETOOBIG, "system description is %zu bytes; the limit is %u",
                           len, CFM_MAX_PAYLOAD);
    *root = json_loadb(text ? text : "", text ? len : 0, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return cfm_why_set(why, CFM_EINVAL, "line %d, column %d: %s", jerr.line, jerr.column,
                           cfm_quote(shown, sizeof shown, jerr.text,
                                             strnlen(jerr.text, sizeof jerr.text),
                                             sizeof jerr.text));
    if (!json_is_object(*root))
        return cfm_why_set(why, CFM_EINVAL, "a system description must be a JSON object");
    return CFM_OK;
}

enum cfm_err cfm_sysdesc_parse(const char *text, size_t len, struct cfm_sysdesc **out,
                               struct cfm_why *why)
{
    enum cfm_err err;
    json_t *root = NULL, *sysbody = NULL, *objects, *map, *body, *v;
    struct cfm_obj **list = NULL, *sys = NULL;
    struct cfm_sysdesc *desc = NULL;
    const char *key, *id, *name;
    enum cfm_kind kind;
    size_t n = 0, count = 0, i, e0;

    if (out)
        *out = NULL;
    if ((err = parse_json(text, len, &root, why)))
        goto out;
    v = json_object_get(root, "id");
    if (!v) {
        err = cfm_why_set(why, CFM_EINVAL, "id: is required (a string, the system id)");
        goto out;
    }
    if (!json_is_string(v)) {
        err = cfm_why_set(why, CFM_EINVAL, "id: must be a string, the system id");
        goto out;
    }
    if ((err = cfm_models__id_checkn(json_string_value(v), json_string_length(v), "system id",
                                     why))) {
        err = cfm_why_prefix(why, err, "id");
        goto out;
    }
    id = json_string_value(v);
    objects = json_object_get(root, "objects");
    if (objects && !json_is_object(objects)) {
        err = cfm_why_set(why, CFM_EINVAL, "objects: must be an object mapping kinds to "
                          "objects");
        goto out;
    }
    if (objects && (err = count_objects(objects, &count, why)))
        goto out;

    /* The BusinessSystem: every top-level field but id and objects. */
    if (!(sysbody = json_object())) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "id") && strcmp(key, "objects") && json_object_set(sysbody, key, v)) {
            err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
            goto out;
        }
    }
    if ((err = cfm_models__check_body(CFM_KIND_BUSINESS_SYSTEM, id, sysbody, "", why)))
        goto out;
    sys = cfm_obj_new(CFM_KIND_BUSINESS_SYSTEM, id, id, sysbody);
    sysbody = NULL; /* taken by cfm_obj_new, even on failure */
    list = calloc(count ? count : 1, sizeof *list);
    if (!sys || !list) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }

    /* Pass 1: every object's ID and body, in file order. */
    json_object_foreach(objects, name, map) {
        if ((err = cfm_kind_parse(name, &kind, why)))
            goto out;
        json_object_foreach(map, key, body)
            if ((err = add_object(id, kind, key, body, list, &n, why)))
                goto out;
    }
    qsort(list, n, sizeof *list, cfm_obj_cmp_kind_id);

    /* Passes 2 and 3: references, then cycles among the (contiguous) elements. */
    for (e0 = 0; e0 < n && list[e0]->kind != CFM_KIND_ELEMENT; e0++)
        ;
    for (i = e0; i < n && list[i]->kind == CFM_KIND_ELEMENT; i++)
        if ((err = check_refs(list, n, list[i], why)))
            goto out;
    if ((err = check_cycles(list + e0, i - e0, why)))
        goto out;

    desc = calloc(1, sizeof *desc);
    if (!desc || !(desc->objs = calloc(n + 1, sizeof *desc->objs))) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(desc->id, sizeof desc->id, "%s", id);
    desc->objs[0] = sys;
    sys = NULL;
    for (i = 0; i < n; i++)
        desc->objs[i + 1] = list[i];
    desc->count = n + 1;
    n = 0;
    if (out) {
        *out = desc;
        desc = NULL;
    }
    err = CFM_OK;
out:
    for (i = 0; i < n; i++)
        cfm_obj_free(list[i]);
    free(list);
    cfm_obj_free(sys);
    cfm_sysdesc_free(desc);
    json_decref(sysbody);
    json_decref(root);
    return err;
}

void cfm_sysdesc_free(struct cfm_sysdesc *desc)
{
    size_t i;

    if (!desc)
        return;
    for (i = 0; desc->objs && i < desc->count; i++)
        cfm_obj_free(desc->objs[i]);
    free(desc->objs);
    free(desc);
}
