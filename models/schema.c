/*
 * schema.c - the body schema of every kind, as tables of fields checked by
 * one small engine, plus the few checks a table cannot say (a primary site
 * that must be in sites, min <= count <= max, a procedure's script name).
 *
 * Every error names the field by its path ("procedures.dr.run_at",
 * "depends_on[1]"), built while descending; a path holds only field names
 * from the tables and keys already checked as IDs, and any untrusted text in
 * a message goes through cfm_quote. Declared kinds refuse unknown
 * fields at every level; runtime kinds check their listed fields only, so
 * procedures may add their own. docs/models.md describes the same schemas
 * for people: keep the two in step.
 */
#include "schema.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "id.h"
#include "bounds.h"

#define NO_MAX     ((json_int_t)-1) /* an integer field without an upper bound */
#define SCRIPT_MAX 255              /* a procedure's file name, like NAME_MAX */
#define PATH_MAX_LEN 1024           /* ConfigTemplate path and health http path */
#define SHOW_MAX   64               /* bytes of untrusted text quoted in a message */
#define ID_CHARS   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

struct vctx {
    struct cfm_why *why;
    const json_t *root; /* the whole body: its sites, primary, count */
    const char *self;   /* the object's own ID, or NULL */
    char path[CFM_WHY_MAX];
    size_t len;
};

enum ftype { F_STR, F_ID, F_INT, F_BOOL, F_IDS, F_OBJ };

/* A further check of a value already of its field's type. */
typedef enum cfm_err check_fn(struct vctx *c, const json_t *v);

struct schema;

struct field {
    const char *name;
    enum ftype type;
    bool required;
    json_int_t min, max;       /* F_INT: value; F_STR: bytes (max 0: none); F_IDS: entries */
    const char *what;          /* F_ID, F_IDS: what the ID names; F_OBJ: its keys, if a map */
    const struct schema *sub;  /* F_OBJ: the object's schema (of each value, if a map) */
    check_fn *check;
};

struct schema {
    const struct field *fields;
    size_t count;
    bool strict;     /* refuse fields not in the table */
    check_fn *after; /* cross-field checks on the object once every field is valid */
};

#define F_STRING(n, req, lo, hi) {.name = n, .type = F_STR, .required = req, .min = lo, .max = hi}
#define F_TEXT(n, req)           F_STRING(n, req, 0, 0)
#define F_INTEGER(n, req, lo, hi) {.name = n, .type = F_INT, .required = req, .min = lo, .max = hi}
#define F_BOOLEAN(n, req)        {.name = n, .type = F_BOOL, .required = req}
#define F_IDENT(n, req, w, chk)  {.name = n, .type = F_ID, .required = req, .what = w, .check = chk}
#define F_IDLIST(n, req, lo, hi, w) \
    {.name = n, .type = F_IDS, .required = req, .min = lo, .max = hi, .what = w}
#define F_OBJECT(n, req, s)      {.name = n, .type = F_OBJ, .required = req, .sub = s}
#define F_MAP(n, req, keys, s)   {.name = n, .type = F_OBJ, .required = req, .what = keys, .sub = s}
#define SCHEMA(f, strict, after) {f, sizeof f / sizeof f[0], strict, after}

/* ---- messages and paths ------------------------------------------------ */

static enum cfm_err fail(struct vctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum cfm_err fail(struct vctx *c, const char *fmt, ...)
{
    char msg[CFM_WHY_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->len)
        return cfm_why_set(c->why, CFM_EINVAL, "%s: %s", c->path, msg);
    return cfm_why_set(c->why, CFM_EINVAL, "%s", msg);
}

/* Appends ".key" (or "[i]" when key is NULL); returns the length to restore. */
static size_t push(struct vctx *c, const char *key, size_t i)
{
    size_t old = c->len;
    int n;

    if (key)
        n = snprintf(c->path + old, sizeof c->path - old, "%s%s", old ? "." : "", key);
    else
        n = snprintf(c->path + old, sizeof c->path - old, "[%zu]", i);
    if (n < 0 || (size_t)n >= sizeof c->path - old)
        c->len = strlen(c->path); /* cut: the start of a path is what matters */
    else
        c->len = old + (size_t)n;
    return old;
}

static void pop(struct vctx *c, size_t old)
{
    c->len = old;
    c->path[old] = '\0';
}

static const char *quote_json(char *buf, size_t size, const json_t *s)
{
    return cfm_quote(buf, size, json_string_value(s), json_string_length(s), SHOW_MAX);
}

/* What a field must be, for "is required (...)" and "must be ...". */
static void describe(const struct field *f, char *buf, size_t size)
{
    long long lo = (long long)f->min, hi = (long long)f->max;

    switch (f->type) {
    case F_STR:
        if (f->max)
            snprintf(buf, size, "a string of %lld to %lld bytes", lo, hi);
        else
            snprintf(buf, size, "a string");
        break;
    case F_ID:
        snprintf(buf, size, "a string, the %s", f->what);
        break;
    case F_INT:
        if (f->max == NO_MAX)
            snprintf(buf, size, "an integer >= %lld", lo);
        else
            snprintf(buf, size, "an integer from %lld to %lld", lo, hi);
        break;
    case F_BOOL:
        snprintf(buf, size, "true or false");
        break;
    case F_IDS:
        if (f->min)
            snprintf(buf, size, "an array of %lld to %lld %ss", lo, hi, f->what);
        else
            snprintf(buf, size, "an array of at most %lld %ss", hi, f->what);
        break;
    case F_OBJ:
        snprintf(buf, size, "an object");
        break;
    }
}

/* ---- the engine -------------------------------------------------------- */

static enum cfm_err check_fields(struct vctx *c, const json_t *obj, const struct schema *s);

static enum cfm_err check_id_value(struct vctx *c, const json_t *v, const char *what)
{
    struct cfm_why why;

    if (cfm_models__id_checkn(json_string_value(v), json_string_length(v), what, &why))
        return fail(c, "%s", why.text);
    return CFM_OK;
}

/* Every entry an ID, none twice (a jansson object serves as the hash set). */
static enum cfm_err check_id_list(struct vctx *c, const struct field *f, const json_t *v)
{
    enum cfm_err err = CFM_OK;
    json_t *seen = json_object();
    const json_t *item;
    size_t i, old;
    char shown[4 * CFM_MAX_ID + 8];

    if (!seen)
        return cfm_why_set(c->why, CFM_ENOMEM, "out of memory");
    json_array_foreach(v, i, item) {
        old = push(c, NULL, i);
        if (!json_is_string(item)) {
            err = fail(c, "must be a string, the %s", f->what);
            goto out;
        }
        if ((err = check_id_value(c, item, f->what)))
            goto out;
        if (json_object_get(seen, json_string_value(item))) {
            err = fail(c, "%s '%s' is listed twice", f->what, quote_json(shown, sizeof shown, item));
            goto out;
        }
        if (json_object_set_new(seen, json_string_value(item), json_true())) {
            err = cfm_why_set(c->why, CFM_ENOMEM, "out of memory");
            goto out;
        }
        pop(c, old);
    }
out:
    json_decref(seen);
    return err;
}

/* Checks every key of map as an ID and every value as an object of s. */
static enum cfm_err check_map(struct vctx *c, const json_t *map, const char *what,
                              const struct schema *s)
{
    const char *key;
    const json_t *v;
    enum cfm_err err;
    struct cfm_why why;
    size_t old;

    json_object_foreach((json_t *)map, key, v) {
        if (cfm_id_check(key, what, &why))
            return fail(c, "%s", why.text);
        old = push(c, key, 0);
        if (!json_is_object(v))
            return fail(c, "must be an object");
        if (s && (err = check_fields(c, v, s)))
            return err;
        pop(c, old);
    }
    return CFM_OK;
}

static enum cfm_err check_value(struct vctx *c, const struct field *f, const json_t *v)
{
    char want[128];
    enum cfm_err err = CFM_OK;
    bool ok = true;

    describe(f, want, sizeof want);
    switch (f->type) {
    case F_STR:
        ok = json_is_string(v) &&
             (!f->max || (json_string_length(v) >= (size_t)f->min &&
                          json_string_length(v) <= (size_t)f->max));
        if (ok && strlen(json_string_value(v)) != json_string_length(v))
            return fail(c, "must not contain NUL bytes");
        break;
    case F_ID:
        if ((ok = json_is_string(v)))
            err = check_id_value(c, v, f->what);
        break;
    case F_INT:
        ok = json_is_integer(v) && json_integer_value(v) >= f->min &&
             (f->max == NO_MAX || json_integer_value(v) <= f->max);
        break;
    case F_BOOL:
        ok = json_is_boolean(v);
        break;
    case F_IDS:
        ok = json_is_array(v) && json_array_size(v) >= (size_t)f->min &&
             json_array_size(v) <= (size_t)f->max;
        if (ok)
            err = check_id_list(c, f, v);
        break;
    case F_OBJ:
        if ((ok = json_is_object(v)) && f->what)
            err = check_map(c, v, f->what, f->sub);
        else if (ok && f->sub)
            err = check_fields(c, v, f->sub);
        break;
    }
    if (!ok)
        return fail(c, "must be %s", want);
    if (err)
        return err;
    return f->check ? f->check(c, v) : CFM_OK;
}

static void known_fields(const struct schema *s, char *buf, size_t size)
{
    size_t i, o = 0;
    int n;

    buf[0] = '\0';
    for (i = 0; i < s->count && o < size; i++) {
        n = snprintf(buf + o, size - o, "%s%s", i ? ", " : "", s->fields[i].name);
        o = n < 0 ? size : o + (size_t)n;
    }
}

static enum cfm_err check_fields(struct vctx *c, const json_t *obj, const struct schema *s)
{
    char shown[4 * SHOW_MAX + 8], known[256], want[128];
    const struct field *f;
    const char *key;
    const json_t *v;
    enum cfm_err err;
    size_t i, old;

    json_object_foreach((json_t *)obj, key, v) {
        for (i = 0; i < s->count && strcmp(key, s->fields[i].name); i++)
            ;
        if (i < s->count || !s->strict)
            continue;
        known_fields(s, known, sizeof known);
        return fail(c, "unknown field '%s' (known: %s)",
                    cfm_quote(shown, sizeof shown, key, strlen(key), SHOW_MAX), known);
    }
    for (f = s->fields; f < s->fields + s->count; f++) {
        v = json_object_get(obj, f->name);
        old = push(c, f->name, 0);
        if (!v && f->required) {
            describe(f, want, sizeof want);
            return fail(c, "is required (%s)", want);
        }
        if (v && (err = check_value(c, f, v)))
            return err;
        pop(c, old);
    }
    return s->after ? s->after(c, obj) : CFM_OK;
}

static bool in_sites(const json_t *root, const char *site)
{
    const json_t *sites = json_object_get(root, "sites"), *s;
    size_t i;

    json_array_foreach(sites, i, s)
        if (json_is_string(s) && strcmp(json_string_value(s), site) == 0)
            return true;
    return false;
}

static const char *primary_of(const json_t *root)
{
    return json_string_value(json_object_get(root, "primary"));
}

/* ---- BusinessSystem ---------------------------------------------------- */

static enum cfm_err check_in_sites(struct vctx *c, const json_t *v)
{
    if (!in_sites(c->root, json_string_value(v)))
        return fail(c, "site '%s' is not in sites", json_string_value(v));
    return CFM_OK;
}

static enum cfm_err check_standby(struct vctx *c, const json_t *v)
{
    const char *primary = primary_of(c->root);

    if (primary && strcmp(primary, json_string_value(v)) == 0)
        return fail(c, "must differ from primary '%s'", primary);
    return check_in_sites(c, v);
}

static enum cfm_err check_script(struct vctx *c, const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (n <= 4 || n > SCRIPT_MAX || s[0] == '.' || strcmp(s + n - 4, ".lua") != 0 ||
        strspn(s, ID_CHARS) != n)
        return fail(c, "must be a Lua file name like 'deploy.lua' (letters, digits, '_', '.', "
                       "'-'; ending in '.lua'; not starting with '.'; at most %d bytes)",
                    SCRIPT_MAX);
    return CFM_OK;
}

static enum cfm_err check_run_at(struct vctx *c, const json_t *v)
{
    static const char *const where[] = {"primary", "standby", "target", "origin", "all"};
    const char *s = json_string_value(v);
    char shown[4 * SHOW_MAX + 8];
    size_t i;

    for (i = 0; i < sizeof where / sizeof where[0]; i++)
        if (strcmp(s, where[i]) == 0)
            return CFM_OK;
    if (cfm_id_valid(s) && in_sites(c->root, s))
        return CFM_OK;
    return fail(c, "'%s' is not primary, standby, target, origin, all or a site in sites",
                quote_json(shown, sizeof shown, v));
}

static const struct field procedure_fields[] = {
    {.name = "script", .type = F_STR, .required = true, .check = check_script},
    {.name = "run_at", .type = F_STR, .check = check_run_at},
    F_INTEGER("timeout_s", false, 1, 86400),
};
static const struct schema procedure_schema = SCHEMA(procedure_fields, true, NULL);

static enum cfm_err check_witness(struct vctx *c, const json_t *v)
{
    const char *primary = primary_of(c->root);

    if (primary && strcmp(primary, json_string_value(v)) == 0)
        return fail(c, "the witness must not be the primary site '%s'", primary);
    return CFM_OK;
}

static const struct field dr_fields[] = {
    F_INTEGER("after_offline_s", true, 1, 86400),
    F_IDENT("witness", false, "site id", check_witness),
};
static const struct schema dr_schema = SCHEMA(dr_fields, true, NULL);

/* Policies are any objects by name; the ones cfm acts on have a schema. */
static enum cfm_err check_policies(struct vctx *c, const json_t *v)
{
    const json_t *dr = json_object_get(v, "dr");
    enum cfm_err err;
    size_t old;

    if (!dr)
        return CFM_OK;
    old = push(c, "dr", 0);
    if ((err = check_fields(c, dr, &dr_schema)))
        return err;
    pop(c, old);
    return CFM_OK;
}

static const struct field system_fields[] = {
    F_TEXT("name", false),
    F_TEXT("description", false),
    F_IDLIST("sites", true, 1, 64, "site id"),
    F_IDENT("primary", true, "site id", check_in_sites),
    F_IDENT("standby", false, "site id", check_standby),
    F_MAP("procedures", false, "event type", &procedure_schema),
    {.name = "policies", .type = F_OBJ, .what = "policy name", .check = check_policies},
};

/* ---- VMClass ----------------------------------------------------------- */

static const struct field vm_override_fields[] = {
    F_STRING("image", false, 1, 256),
    F_INTEGER("cpu", false, 1, 1024),
    F_INTEGER("memory_mb", false, 1, 16777216),
    F_INTEGER("disk_gb", false, 1, 65536),
    F_TEXT("instance_type", false),
};
static const struct schema vm_override_schema = SCHEMA(vm_override_fields, true, NULL);

static const struct field vm_class_fields[] = {
    F_STRING("image", true, 1, 256),
    F_INTEGER("cpu", true, 1, 1024),
    F_INTEGER("memory_mb", true, 1, 16777216),
    F_INTEGER("disk_gb", false, 1, 65536),
    F_TEXT("instance_type", false),
    F_MAP("sites", false, "site id", &vm_override_schema),
    F_TEXT("description", false),
};

/* ---- BusinessSystemElement --------------------------------------------- */

static enum cfm_err check_http(struct vctx *c, const json_t *v)
{
    const char *s = json_string_value(v);
    size_t i;

    if (s[0] != '/')
        return fail(c, "must be a path starting with '/'");
    for (i = 0; s[i]; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
            return fail(c, "must not contain spaces or control characters");
    return CFM_OK;
}

static const struct field health_fields[] = {
    {.name = "http", .type = F_STR, .min = 1, .max = PATH_MAX_LEN, .check = check_http},
    F_INTEGER("port", true, 1, 65535),
    F_INTEGER("timeout_s", false, 1, 600),
};
static const struct schema health_schema = SCHEMA(health_fields, true, NULL);

/* A path on a VM: no control characters, no ".." component. */
static enum cfm_err check_vm_path(struct vctx *c, const json_t *v)
{
    const char *s = json_string_value(v), *p;

    for (size_t i = 0; s[i]; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail(c, "must not contain control characters");
    for (p = s; (p = strstr(p, "..")); p += 2)
        if ((p == s || p[-1] == '/') && (p[2] == '/' || p[2] == '\0'))
            return fail(c, "must not contain a '..' component");
    return CFM_OK;
}

static const struct field service_fields[] = {
    F_TEXT("start", false),
    F_TEXT("stop", false),
    F_OBJECT("health", false, &health_schema),
    {.name = "log", .type = F_STR, .min = 1, .max = PATH_MAX_LEN, .check = check_vm_path},
};
static const struct schema service_schema = SCHEMA(service_fields, true, NULL);

static enum cfm_err check_not_self(struct vctx *c, const json_t *v)
{
    const json_t *item;
    size_t i;

    json_array_foreach(v, i, item) {
        if (c->self && strcmp(json_string_value(item), c->self) == 0) {
            push(c, NULL, i);
            return fail(c, "element '%s' cannot depend on itself", c->self);
        }
    }
    return CFM_OK;
}

/* min <= max, and min <= count <= max for the count in effect (default 1). */
static enum cfm_err check_counts(struct vctx *c, const json_t *el)
{
    const json_t *jcount = json_object_get(el, "count");
    const json_t *jmin = json_object_get(el, "min"), *jmax = json_object_get(el, "max");
    long long count = jcount ? (long long)json_integer_value(jcount) : 1;
    long long lo = (long long)json_integer_value(jmin), hi = (long long)json_integer_value(jmax);

    if (jmin && jmax && lo > hi) {
        push(c, "min", 0);
        return fail(c, "%lld is greater than max %lld", lo, hi);
    }
    if (jmin && count < lo) {
        push(c, jcount ? "count" : "min", 0);
        if (jcount)
            return fail(c, "%lld is below min %lld", count, lo);
        return fail(c, "%lld is above count, which defaults to 1", lo);
    }
    if (jmax && count > hi) {
        push(c, jcount ? "count" : "max", 0);
        if (jcount)
            return fail(c, "%lld is above max %lld", count, hi);
        return fail(c, "%lld is below count, which defaults to 1", hi);
    }
    return CFM_OK;
}

/* Where deploy starts the element: the system's primary site (the
 * default) or its standby site (a warm standby, e.g. a database replica). */
static enum cfm_err check_placement(struct vctx *c, const json_t *v)
{
    const char *s = json_string_value(v);

    if (strcmp(s, "primary") != 0 && strcmp(s, "standby") != 0)
        return fail(c, "must be \"primary\" or \"standby\"");
    return CFM_OK;
}

static const struct field element_fields[] = {
    F_IDENT("vm_class", true, "VMClass id", NULL),
    F_INTEGER("count", false, 0, 1000),
    F_INTEGER("min", false, 0, 1000),
    F_INTEGER("max", false, 0, 1000),
    {.name = "depends_on", .type = F_IDS, .max = CFM_MAX_OBJECTS,
     .what = "BusinessSystemElement id", .check = check_not_self},
    F_IDLIST("config_templates", false, 0, CFM_MAX_OBJECTS, "ConfigTemplate id"),
    F_IDLIST("volumes", false, 0, CFM_MAX_OBJECTS, "Volume id"),
    F_IDENT("address", false, "Address id", NULL),
    F_OBJECT("service", false, &service_schema),
    {.name = "placement", .type = F_STR, .min = 1, .max = 16, .check = check_placement},
    F_TEXT("description", false),
};

/* ---- ConfigTemplate, Volume, Address, Site ----------------------------- */

static enum cfm_err check_file_path(struct vctx *c, const json_t *v)
{
    if (json_string_value(v)[0] != '/')
        return fail(c, "must be an absolute path (starting with '/')");
    return check_vm_path(c, v);
}

static enum cfm_err check_mode(struct vctx *c, const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (n < 3 || n > 4 || strspn(s, "01234567") != n)
        return fail(c, "must be 3 or 4 octal digits like \"0644\"");
    return CFM_OK;
}

static const struct field template_fields[] = {
    {.name = "path", .type = F_STR, .required = true, .min = 1, .max = PATH_MAX_LEN,
     .check = check_file_path},
    F_TEXT("template", true),
    {.name = "mode", .type = F_STR, .check = check_mode},
    F_TEXT("description", false),
};

static const struct field volume_fields[] = {
    F_INTEGER("size_mb", true, 1, 16777216),
    F_BOOLEAN("replicated", false),
    F_TEXT("description", false),
};

static const struct field address_fields[] = {
    F_IDENT("pool", false, "pool id", NULL),
    F_TEXT("description", false),
};

static const struct field capacity_fields[] = {
    F_INTEGER("cpu", false, 0, NO_MAX),
    F_INTEGER("memory_mb", false, 0, NO_MAX),
};
static const struct schema capacity_schema = SCHEMA(capacity_fields, true, NULL);

static const struct field site_fields[] = {
    F_TEXT("name", false),
    F_TEXT("region", false),
    F_TEXT("driver", false),
    F_OBJECT("capacity", false, &capacity_schema),
    F_TEXT("description", false),
};

/* ---- runtime kinds: listed fields only, others allowed ------------------ */

static const struct field element_instance_fields[] = {
    F_IDENT("element", true, "BusinessSystemElement id", NULL),
    F_IDENT("site", false, "site id", NULL),
    F_IDENT("vm", false, "VMInstance id", NULL),
    F_TEXT("state", false),
};

static const struct field vm_instance_fields[] = {
    F_IDENT("vm_class", true, "VMClass id", NULL),
    F_IDENT("site", true, "site id", NULL),
    F_TEXT("state", true),
};

static const struct field procedure_run_fields[] = {
    F_TEXT("procedure", true),
    F_TEXT("state", true),
};

static const struct schema kind_schemas[CFM_KIND__COUNT] = {
    [CFM_KIND_BUSINESS_SYSTEM] = SCHEMA(system_fields, true, NULL),
    [CFM_KIND_ELEMENT] = SCHEMA(element_fields, true, check_counts),
    [CFM_KIND_ELEMENT_INSTANCE] = SCHEMA(element_instance_fields, false, NULL),
    [CFM_KIND_CONFIG_TEMPLATE] = SCHEMA(template_fields, true, NULL),
    [CFM_KIND_VM_CLASS] = SCHEMA(vm_class_fields, true, NULL),
    [CFM_KIND_VM_INSTANCE] = SCHEMA(vm_instance_fields, false, NULL),
    [CFM_KIND_SITE] = SCHEMA(site_fields, true, NULL),
    [CFM_KIND_VOLUME] = SCHEMA(volume_fields, true, NULL),
    [CFM_KIND_ADDRESS] = SCHEMA(address_fields, true, NULL),
    [CFM_KIND_PROCEDURE_RUN] = SCHEMA(procedure_run_fields, false, NULL),
};

/* ---- the body as a whole ----------------------------------------------- */

/* True when v nests containers deeper than CFM_MAX_JSON_DEPTH; v is at level.
 * Stops descending at the limit, so the recursion is bounded. */
static bool too_deep(const json_t *v, size_t level)
{
    const json_t *child;
    const char *key;
    size_t i;

    if (!json_is_object(v) && !json_is_array(v))
        return false;
    if (level > CFM_MAX_JSON_DEPTH)
        return true;
    if (json_is_array(v)) {
        json_array_foreach(v, i, child)
            if (too_deep(child, level + 1))
                return true;
        return false;
    }
    json_object_foreach((json_t *)v, key, child)
        if (too_deep(child, level + 1))
            return true;
    return false;
}

enum cfm_err cfm_models__check_body(enum cfm_kind kind, const char *id, const json_t *body,
                                    const char *prefix, struct cfm_why *why)
{
    struct vctx c = {.why = why, .root = body, .self = id};
    const char *label = prefix && prefix[0] ? prefix : "body";
    size_t size;

    if ((unsigned)kind >= CFM_KIND__COUNT)
        return cfm_why_set(why, CFM_EINVAL, "%s: unknown kind %d", label, (int)kind);
    if (!json_is_object(body))
        return cfm_why_set(why, CFM_EINVAL, "%s: must be a JSON object", label);
    if (too_deep(body, 1))
        return cfm_why_set(why, CFM_EINVAL, "%s: nests deeper than %d levels", label,
                           CFM_MAX_JSON_DEPTH);
    size = json_dumpb(body, NULL, 0, JSON_COMPACT);
    if (size == 0)
        return cfm_why_set(why, CFM_EINVAL, "%s: cannot be written as JSON", label);
    if (size > CFM_MAX_BODY)
        return cfm_why_set(why, CFM_EINVAL, "%s: is %zu bytes as compact JSON; the limit is %u",
                           label, size, CFM_MAX_BODY);
    if (prefix && prefix[0])
        push(&c, prefix, 0);
    return check_fields(&c, body, &kind_schemas[kind]);
}
