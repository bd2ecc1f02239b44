/*
 * test_sysdesc.c - unit tests of sysdesc.c: the shipped example parses into
 * the expected objects in a deterministic order, and every refusal (syntax,
 * limits, kinds, IDs, bodies, references, cycles) names where it happened.
 * The source tree is found through $CFM_SRC, else CFM_SRC_DIR from the build.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sysdesc.h"

#ifndef CFM_SRC_DIR
#define CFM_SRC_DIR "../.."
#endif

#define ALLOWED "(allowed: letters, digits, '_', '.', '-')"
#define HEAD "{\"id\":\"shop\",\"sites\":[\"a\",\"b\"],\"primary\":\"a\","

/* Reads a file of the source tree into a new buffer; *len gets its size. */
static char *read_src(const char *rel, size_t *len)
{
    const char *src = getenv("CFM_SRC");
    char path[4096];
    FILE *f;
    char *buf;
    long size;

    snprintf(path, sizeof path, "%s/%s", src && *src ? src : CFM_SRC_DIR, rel);
    f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size > 0 && size <= (long)CFM_MAX_PAYLOAD);
    rewind(f);
    buf = malloc((size_t)size);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static struct cfm_sysdesc *must_parse(const char *text)
{
    struct cfm_why why = {{0}};
    struct cfm_sysdesc *d = NULL;

    if (cfm_sysdesc_parse(text, strlen(text), &d, &why) != CFM_OK)
        fail_msg("parse failed: %s\n  in: %s", why.text, text);
    return d;
}

static void expect_err(const char *text, enum cfm_err want, const char *msg)
{
    struct cfm_why why = {{0}};
    struct cfm_sysdesc *d = (struct cfm_sysdesc *)1;
    enum cfm_err err = cfm_sysdesc_parse(text, strlen(text), &d, &why);

    if (err != want || strcmp(why.text, msg) != 0)
        fail_msg("\n  in:   %s\n  want: %s (%s)\n  got:  %s (%s)", text, msg,
                 cfm_strerror(want), why.text, cfm_strerror(err));
    assert_null(d);
}

static void expect_invalid(const char *text, const char *msg)
{
    expect_err(text, CFM_EINVAL, msg);
}

static void expect_obj(const struct cfm_sysdesc *d, size_t i, enum cfm_kind kind,
                       const char *id)
{
    const struct cfm_obj *o;

    assert_true(i < d->count);
    o = d->objs[i];
    if (o->kind != kind || strcmp(o->id, id) != 0)
        fail_msg("objs[%zu] is %s %s, want %s %s", i, cfm_kind_name(o->kind), o->id,
                 cfm_kind_name(kind), id);
    assert_string_equal(o->system, d->id);
    assert_int_equal(o->version, 0);
    assert_string_equal(o->origin, "");
    assert_string_equal(o->updated, "");
    assert_false(o->deleted);
    assert_true(json_is_object(o->body));
    assert_int_equal(cfm_obj_validate_body(o->kind, o->body, NULL), CFM_OK);
}

static void test_example_web3tier(void **state)
{
    struct cfm_why why = {{0}};
    struct cfm_sysdesc *d = NULL;
    size_t len;
    char *text = read_src("examples/web3tier.json", &len);
    const json_t *b;

    (void)state;
    if (cfm_sysdesc_parse(text, len, &d, &why) != CFM_OK)
        fail_msg("examples/web3tier.json: %s", why.text);
    free(text);
    assert_string_equal(d->id, "shop");
    assert_int_equal(d->count, 10);
    expect_obj(d, 0, CFM_KIND_BUSINESS_SYSTEM, "shop");
    expect_obj(d, 1, CFM_KIND_ELEMENT, "db");
    expect_obj(d, 2, CFM_KIND_ELEMENT, "db-replica");
    expect_obj(d, 3, CFM_KIND_ELEMENT, "lb");
    expect_obj(d, 4, CFM_KIND_ELEMENT, "web");
    expect_obj(d, 5, CFM_KIND_CONFIG_TEMPLATE, "lb-conf");
    expect_obj(d, 6, CFM_KIND_VM_CLASS, "medium");
    expect_obj(d, 7, CFM_KIND_VM_CLASS, "small");
    expect_obj(d, 8, CFM_KIND_VOLUME, "db-data");
    expect_obj(d, 9, CFM_KIND_ADDRESS, "shop-public");

    /* The BusinessSystem is the top level without id and objects. */
    b = d->objs[0]->body;
    assert_null(json_object_get(b, "id"));
    assert_null(json_object_get(b, "objects"));
    assert_string_equal(json_string_value(json_object_get(b, "primary")), "site-a");
    assert_string_equal(json_string_value(json_object_get(b, "standby")), "site-b");
    assert_int_equal(json_array_size(json_object_get(b, "sites")), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(b, "procedures"), "dr"), "run_at")),
                        "target");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(b, "procedures"), "vm_failed"),
                            "script")),
                        "heal.lua");
    assert_int_equal(json_object_size(json_object_get(b, "procedures")), 9);
    assert_string_equal(json_string_value(json_object_get(d->objs[2]->body, "placement")),
                        "standby");

    /* A few bodies, as written. */
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(d->objs[6]->body, "sites"), "site-b"),
                         "memory_mb")),
                     1024);
    assert_int_equal(json_integer_value(json_object_get(d->objs[4]->body, "count")), 2);
    assert_string_equal(json_string_value(json_object_get(d->objs[3]->body, "address")),
                        "shop-public");
    assert_true(json_is_true(json_object_get(d->objs[8]->body, "replicated")));
    assert_non_null(strstr(json_string_value(json_object_get(d->objs[5]->body, "template")),
                           "{{#web}}server {{name}} {{address}}:8080\n{{/web}}"));
    for (len = 0; len < d->count; len++)
        assert_non_null(json_object_get(d->objs[len]->body, "description"));
    cfm_sysdesc_free(d);
    cfm_sysdesc_free(NULL);
}

/* The same system written in another order gives the same list. */
static void test_deterministic(void **state)
{
    struct cfm_sysdesc *a = must_parse(
        HEAD "\"objects\":{\"VMClass\":{\"z\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":1},"
             "\"a\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":1}},\"Volume\":{\"v\":"
             "{\"size_mb\":1}},\"BusinessSystemElement\":{\"y\":{\"vm_class\":\"a\"},"
             "\"x\":{\"vm_class\":\"z\",\"volumes\":[\"v\"]}}}}");
    struct cfm_sysdesc *b = must_parse(
        "{\"objects\":{\"BusinessSystemElement\":{\"x\":{\"volumes\":[\"v\"],\"vm_class\":\"z\"},"
        "\"y\":{\"vm_class\":\"a\"}},\"Volume\":{\"v\":{\"size_mb\":1}},\"VMClass\":{\"a\":"
        "{\"image\":\"i\",\"cpu\":1,\"memory_mb\":1},\"z\":{\"memory_mb\":1,\"image\":\"i\","
        "\"cpu\":1}}},\"primary\":\"a\",\"sites\":[\"a\",\"b\"],\"id\":\"shop\"}");
    size_t i;

    (void)state;
    assert_int_equal(a->count, 6);
    assert_int_equal(b->count, 6);
    for (i = 0; i < a->count; i++)
        assert_true(cfm_obj_same_content(a->objs[i], b->objs[i]));
    expect_obj(a, 1, CFM_KIND_ELEMENT, "x");
    expect_obj(a, 2, CFM_KIND_ELEMENT, "y");
    expect_obj(a, 3, CFM_KIND_VM_CLASS, "a");
    expect_obj(a, 4, CFM_KIND_VM_CLASS, "z");
    expect_obj(a, 5, CFM_KIND_VOLUME, "v");
    cfm_sysdesc_free(a);
    cfm_sysdesc_free(b);
}

static void test_minimal(void **state)
{
    struct cfm_sysdesc *d;

    (void)state;
    d = must_parse("{\"id\":\"tiny\",\"sites\":[\"a\"],\"primary\":\"a\"}");
    assert_int_equal(d->count, 1);
    assert_string_equal(d->id, "tiny");
    expect_obj(d, 0, CFM_KIND_BUSINESS_SYSTEM, "tiny");
    assert_int_equal(json_object_size(d->objs[0]->body), 2);
    cfm_sysdesc_free(d);
    d = must_parse(HEAD "\"objects\":{\"Site\":{},\"Volume\":{}}}");
    assert_int_equal(d->count, 1);
    cfm_sysdesc_free(d);
    /* Site objects and VMClass site overrides need not be in sites. */
    d = must_parse(HEAD "\"objects\":{\"Site\":{\"elsewhere\":{\"region\":\"r\"}},"
                        "\"VMClass\":{\"s\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":1,"
                        "\"sites\":{\"zz\":{\"cpu\":2}}}}}}");
    assert_int_equal(d->count, 3);
    expect_obj(d, 1, CFM_KIND_VM_CLASS, "s");
    expect_obj(d, 2, CFM_KIND_SITE, "elsewhere");
    cfm_sysdesc_free(d);
}

static void test_syntax(void **state)
{
    struct cfm_why why = {{0}};
    struct cfm_sysdesc *d = NULL;
    const char trailing[] = "{\"id\":\"x\",\"sites\":[\"a\"],\"primary\":\"a\"}GARBAGE";
    size_t i;

    (void)state;
    expect_invalid("{\n  \"id\": \"shop\",\n  oops\n}",
                   "line 3, column 6: string or '}' expected near 'oops'");
    expect_invalid("{\"id\":\"a\",\"id\":\"b\"}",
                   "line 1, column 14: duplicate object key near '\"id\"'");
    expect_invalid("", "line 1, column 0: '[' or '{' expected near end of file");
    expect_invalid("{\"id\":\"\xff\"}", "line 1, column 7: unable to decode byte 0xff near '\"'");
    /* Control characters from the input are shown escaped. */
    assert_int_equal(cfm_sysdesc_parse("{\x01}", 3, &d, &why), CFM_EINVAL);
    for (i = 0; why.text[i]; i++)
        assert_true((unsigned char)why.text[i] >= 0x20);
    assert_non_null(strstr(why.text, "\\x01"));
    /* len bounds the input: what follows is never read. */
    assert_int_equal(cfm_sysdesc_parse(trailing, strlen(trailing) - 7, &d, &why), CFM_OK);
    cfm_sysdesc_free(d);
    assert_int_equal(cfm_sysdesc_parse(NULL, 0, &d, NULL), CFM_EINVAL);
}

static void test_too_big(void **state)
{
    size_t n = CFM_MAX_PAYLOAD + 1;
    char *text = malloc(n);
    struct cfm_why why;
    struct cfm_sysdesc *d = NULL;

    (void)state;
    assert_non_null(text);
    memset(text, ' ', n);
    assert_int_equal(cfm_sysdesc_parse(text, n, &d, &why), CFM_ETOOBIG);
    assert_string_equal(why.text, "system description is 1048577 bytes; the limit is 1048576");
    assert_null(d);
    free(text);
}

/* A file of n Volumes (plus the BusinessSystem). */
static char *many_volumes(size_t n)
{
    size_t size = 64 + n * 32, o;
    char *text = malloc(size);
    size_t i;

    assert_non_null(text);
    o = (size_t)snprintf(text, size, HEAD "\"objects\":{\"Volume\":{");
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(text + o, size - o, "%s\"v%zu\":{\"size_mb\":1}", i ? "," : "", i);
    snprintf(text + o, size - o, "}}}");
    return text;
}

static void test_object_limit(void **state)
{
    char *text = many_volumes(CFM_MAX_OBJECTS - 1);
    struct cfm_sysdesc *d = must_parse(text);

    (void)state;
    assert_int_equal(d->count, CFM_MAX_OBJECTS);
    cfm_sysdesc_free(d);
    free(text);
    text = many_volumes(CFM_MAX_OBJECTS);
    expect_err(text, CFM_ETOOBIG,
               "objects: the file holds 10001 objects with the BusinessSystem; the limit is "
               "10000");
    free(text);
}

static void test_top_level(void **state)
{
    (void)state;
    expect_invalid("[]", "a system description must be a JSON object");
    expect_invalid("{\"sites\":[\"a\"],\"primary\":\"a\"}",
                   "id: is required (a string, the system id)");
    expect_invalid("{\"id\":5}", "id: must be a string, the system id");
    expect_invalid("{\"id\":\"a/b\"}", "id: system id 'a/b' contains '/' " ALLOWED);
    expect_invalid("{\"id\":\"\"}", "id: system id is empty");
    expect_invalid("{\"id\":\"shop\",\"primary\":\"a\"}",
                   "sites: is required (an array of 1 to 64 site ids)");
    expect_invalid(HEAD "\"standby\":\"a\"}", "standby: must differ from primary 'a'");
    expect_invalid(HEAD "\"procedures\":{\"deploy\":{\"script\":\"deploy.sh\"}}}",
                   "procedures.deploy.script: must be a Lua file name like 'deploy.lua' "
                   "(letters, digits, '_', '.', '-'; ending in '.lua'; not starting with '.'; "
                   "at most 255 bytes)");
    expect_invalid(HEAD "\"owner\":\"me\"}",
                   "unknown field 'owner' (known: name, description, sites, primary, standby, "
                   "procedures, policies)");
}

static void test_objects_shape(void **state)
{
    (void)state;
    expect_invalid(HEAD "\"objects\":[]}", "objects: must be an object mapping kinds to objects");
    expect_invalid(HEAD "\"objects\":{\"Foo\":{}}}",
                   "objects: unknown kind 'Foo' (known: BusinessSystem, BusinessSystemElement, "
                   "BusinessSystemElementInstance, ConfigTemplate, VMClass, VMInstance, Site, "
                   "Volume, Address, ProcedureRun)");
    expect_invalid(HEAD "\"objects\":{\"VMInstance\":{}}}",
                   "objects.VMInstance: runtime kind VMInstance cannot be declared in a system "
                   "description");
    expect_invalid(HEAD "\"objects\":{\"ProcedureRun\":{\"r\":{}}}}",
                   "objects.ProcedureRun: runtime kind ProcedureRun cannot be declared in a "
                   "system description");
    expect_invalid(HEAD "\"objects\":{\"BusinessSystemElementInstance\":{}}}",
                   "objects.BusinessSystemElementInstance: runtime kind "
                   "BusinessSystemElementInstance cannot be declared in a system description");
    expect_invalid(HEAD "\"objects\":{\"BusinessSystem\":{}}}",
                   "objects.BusinessSystem: the BusinessSystem is described by the top-level "
                   "fields, not inside objects");
    expect_invalid(HEAD "\"objects\":{\"VMClass\":[]}}",
                   "objects.VMClass: must be an object mapping ids to bodies");
    expect_invalid(HEAD "\"objects\":{\"VMClass\":{\"a b\":{}}}}",
                   "objects.VMClass: VMClass id 'a b' contains ' ' " ALLOWED);
    expect_invalid(HEAD "\"objects\":{\"Volume\":{\"v\":{\"size_mb\":1},\"v\":{}}}}",
                   "line 1, column 87: duplicate object key near '\"v\"'");
}

static void test_object_bodies(void **state)
{
    (void)state;
    expect_invalid(HEAD "\"objects\":{\"VMClass\":{\"small\":[]}}}",
                   "objects.VMClass.small: must be a JSON object");
    expect_invalid(HEAD "\"objects\":{\"VMClass\":{\"small\":{\"image\":\"i\",\"cpu\":0,"
                        "\"memory_mb\":1}}}}",
                   "objects.VMClass.small.cpu: must be an integer from 1 to 1024");
    expect_invalid(HEAD "\"objects\":{\"VMClass\":{\"small\":{\"image\":\"i\",\"cpus\":1,"
                        "\"memory_mb\":1}}}}",
                   "objects.VMClass.small: unknown field 'cpus' (known: image, cpu, memory_mb, "
                   "disk_gb, instance_type, sites, description)");
    expect_invalid(HEAD "\"objects\":{\"VMClass\":{\"small\":{\"image\":\"i\",\"cpu\":1,"
                        "\"memory_mb\":1,\"sites\":{\"b\":{\"cpu\":2000}}}}}}",
                   "objects.VMClass.small.sites.b.cpu: must be an integer from 1 to 1024");
    expect_invalid(HEAD "\"objects\":{\"BusinessSystemElement\":{\"web\":{}}}}",
                   "objects.BusinessSystemElement.web.vm_class: is required (a string, the "
                   "VMClass id)");
    expect_invalid(HEAD "\"objects\":{\"ConfigTemplate\":{\"c\":{\"path\":\"/a/../b\","
                        "\"template\":\"\"}}}}",
                   "objects.ConfigTemplate.c.path: must not contain a '..' component");
}

#define VMS "\"VMClass\":{\"small\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":1}}"
#define ELS(els) HEAD "\"objects\":{" VMS ",\"BusinessSystemElement\":{" els "}}}"

static void test_references(void **state)
{
    struct cfm_sysdesc *d;

    (void)state;
    expect_invalid(ELS("\"web\":{\"vm_class\":\"large\"}"),
                   "objects.BusinessSystemElement.web.vm_class: VMClass 'large' is not defined "
                   "in this file");
    expect_invalid(HEAD "\"objects\":{\"BusinessSystemElement\":{\"web\":{\"vm_class\":"
                        "\"small\"}}}}",
                   "objects.BusinessSystemElement.web.vm_class: VMClass 'small' is not defined "
                   "in this file");
    expect_invalid(ELS("\"web\":{\"vm_class\":\"small\",\"depends_on\":[\"db\"]}"),
                   "objects.BusinessSystemElement.web.depends_on[0]: BusinessSystemElement 'db' "
                   "is not defined in this file");
    expect_invalid(ELS("\"web\":{\"vm_class\":\"small\",\"config_templates\":[\"c\"]}"),
                   "objects.BusinessSystemElement.web.config_templates[0]: ConfigTemplate 'c' "
                   "is not defined in this file");
    expect_invalid(ELS("\"db\":{\"vm_class\":\"small\",\"volumes\":[\"data\"]}"),
                   "objects.BusinessSystemElement.db.volumes[0]: Volume 'data' is not defined "
                   "in this file");
    expect_invalid(ELS("\"lb\":{\"vm_class\":\"small\",\"address\":\"pub\"}"),
                   "objects.BusinessSystemElement.lb.address: Address 'pub' is not defined in "
                   "this file");
    /* A reference to an object of another kind with that id does not count. */
    expect_invalid(HEAD "\"objects\":{" VMS ",\"Volume\":{\"pub\":{\"size_mb\":1}},"
                        "\"BusinessSystemElement\":{\"lb\":{\"vm_class\":\"small\","
                        "\"address\":\"pub\"}}}}",
                   "objects.BusinessSystemElement.lb.address: Address 'pub' is not defined in "
                   "this file");
    d = must_parse(HEAD "\"objects\":{" VMS ",\"Volume\":{\"data\":{\"size_mb\":1}},"
                        "\"Address\":{\"pub\":{}},\"ConfigTemplate\":{\"c\":{\"path\":\"/c\","
                        "\"template\":\"t\"}},\"BusinessSystemElement\":{\"db\":{\"vm_class\":"
                        "\"small\",\"volumes\":[\"data\"]},\"lb\":{\"vm_class\":\"small\","
                        "\"address\":\"pub\",\"config_templates\":[\"c\"],\"depends_on\":"
                        "[\"db\"]}}}}");
    assert_int_equal(d->count, 7);
    cfm_sysdesc_free(d);
}

static void test_cycles(void **state)
{
    struct cfm_sysdesc *d;

    (void)state;
    expect_invalid(ELS("\"web\":{\"vm_class\":\"small\",\"depends_on\":[\"app\"]},"
                       "\"app\":{\"vm_class\":\"small\",\"depends_on\":[\"web\"]}"),
                   "objects.BusinessSystemElement: dependency cycle app -> web -> app");
    expect_invalid(ELS("\"a\":{\"vm_class\":\"small\",\"depends_on\":[\"b\"]},"
                       "\"b\":{\"vm_class\":\"small\",\"depends_on\":[\"c\"]},"
                       "\"c\":{\"vm_class\":\"small\",\"depends_on\":[\"a\"]},"
                       "\"x\":{\"vm_class\":\"small\",\"depends_on\":[\"a\"]}"),
                   "objects.BusinessSystemElement: dependency cycle a -> b -> c -> a");
    /* The search starts outside the cycle; only the cycle is named. */
    expect_invalid(ELS("\"front\":{\"vm_class\":\"small\",\"depends_on\":[\"m1\"]},"
                       "\"m1\":{\"vm_class\":\"small\",\"depends_on\":[\"m2\"]},"
                       "\"m2\":{\"vm_class\":\"small\",\"depends_on\":[\"m1\"]}"),
                   "objects.BusinessSystemElement: dependency cycle m1 -> m2 -> m1");
    expect_invalid(ELS("\"web\":{\"vm_class\":\"small\",\"depends_on\":[\"web\"]}"),
                   "objects.BusinessSystemElement.web.depends_on[0]: element 'web' cannot "
                   "depend on itself");
    /* A diamond is not a cycle. */
    d = must_parse(ELS("\"a\":{\"vm_class\":\"small\",\"depends_on\":[\"b\",\"c\"]},"
                       "\"b\":{\"vm_class\":\"small\",\"depends_on\":[\"d\"]},"
                       "\"c\":{\"vm_class\":\"small\",\"depends_on\":[\"d\"]},"
                       "\"d\":{\"vm_class\":\"small\"}"));
    assert_int_equal(d->count, 6);
    cfm_sysdesc_free(d);
}

/* e0 -> e1 -> ... -> e(n-1), and -> e0 again when ring. */
static char *chain(size_t n, bool ring)
{
    size_t size = 256 + n * 64, o, i;
    char *text = malloc(size);

    assert_non_null(text);
    o = (size_t)snprintf(text, size, HEAD "\"objects\":{" VMS ",\"BusinessSystemElement\":{");
    for (i = 0; i < n; i++) {
        o += (size_t)snprintf(text + o, size - o, "%s\"e%zu\":{\"vm_class\":\"small\"", i ? "," : "", i);
        if (i + 1 < n || ring)
            o += (size_t)snprintf(text + o, size - o, ",\"depends_on\":[\"e%zu\"]", (i + 1) % n);
        o += (size_t)snprintf(text + o, size - o, "}");
    }
    snprintf(text + o, size - o, "}}}");
    return text;
}

/* A long chain: the cycle search must not recurse once per element, and a
 * long cycle's text is cut to the size of a message. */
static void test_long_chain(void **state)
{
    struct cfm_why why = {{0}};
    struct cfm_sysdesc *d = NULL;
    char *text = chain(5000, false);

    (void)state;
    d = must_parse(text);
    assert_int_equal(d->count, 5002);
    cfm_sysdesc_free(d);
    free(text);
    text = chain(5000, true);
    assert_int_equal(cfm_sysdesc_parse(text, strlen(text), &d, &why), CFM_EINVAL);
    assert_null(d);
    assert_memory_equal(why.text, "objects.BusinessSystemElement: dependency cycle e0 -> e1 -> e2 -> ",
                        strlen("objects.BusinessSystemElement: dependency cycle e0 -> e1 -> e2 -> "));
    assert_int_equal(strlen(why.text), CFM_WHY_MAX - 1);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_web3tier),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_object_limit),
        cmocka_unit_test(test_top_level),
        cmocka_unit_test(test_objects_shape),
        cmocka_unit_test(test_object_bodies),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_cycles),
        cmocka_unit_test(test_long_chain),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
