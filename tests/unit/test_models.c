/*
 * test_models.c - unit tests of the models library's pure parts: the ID rule
 * (id.c), the kinds (kind.c), the body schemas (schema.c) and the object
 * envelope (obj.c); and of what util.c reads of a process in /proc. Error
 * texts are compared whole: they are what an operator reads, and the field
 * path in them is part of the contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

#include "id.h"
#include "util.h"
#include "kind.h"
#include "obj.h"
#include "schema.h"

#define ALLOWED "(allowed: letters, digits, '_', '.', '-')"
#define KNOWN_KINDS                                                                      \
    "BusinessSystem, BusinessSystemElement, BusinessSystemElementInstance, "             \
    "ConfigTemplate, VMClass, VMInstance, Site, Volume, Address, ProcedureRun"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);

    if (!j)
        fail_msg("bad test JSON at %d:%d: %s: %s", jerr.line, jerr.column, jerr.text, text);
    return j;
}

/* A string of n copies of c, built in a static buffer (n < 2048). */
static const char *repeat(char c, size_t n)
{
    static char buf[2048];

    assert_true(n < sizeof buf);
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* ---- id.c ---------------------------------------------------------------- */

static void test_id_valid(void **state)
{
    (void)state;
    assert_true(cfm_id_valid("a"));
    assert_true(cfm_id_valid("Site_A-1.2"));
    assert_true(cfm_id_valid(repeat('x', CFM_MAX_ID)));
    assert_false(cfm_id_valid(repeat('x', CFM_MAX_ID + 1)));
    assert_false(cfm_id_valid(NULL));
    assert_false(cfm_id_valid(""));
    assert_false(cfm_id_valid("a/b"));
    assert_false(cfm_id_valid("a+b"));
    assert_false(cfm_id_valid("a#b"));
    assert_false(cfm_id_valid("a b"));
    assert_false(cfm_id_valid("caf\xc3\xa9"));
    assert_false(cfm_id_valid("a\n"));
}

static void expect_id(const char *s, const char *what, const char *msg)
{
    struct cfm_why why = {{0}};
    enum cfm_err err = cfm_id_check(s, what, &why);

    if (!msg) {
        assert_int_equal(err, CFM_OK);
        return;
    }
    assert_int_equal(err, CFM_EINVAL);
    assert_string_equal(why.text, msg);
}

static void test_id_check_messages(void **state)
{
    (void)state;
    expect_id("shop", "system id", NULL);
    expect_id("a/b", "system id", "system id 'a/b' contains '/' " ALLOWED);
    expect_id("a+b", "site id", "site id 'a+b' contains '+' " ALLOWED);
    expect_id("#", "site id", "site id '#' contains '#' " ALLOWED);
    expect_id("", "object id", "object id is empty");
    expect_id(NULL, "site id", "site id is missing");
    expect_id(repeat('x', 65), "site id",
              "site id 'xxxxxxxxxxxxxxxx\xe2\x80\xa6' is longer than 64 characters");
    expect_id("a\x01", "site id", "site id 'a\\x01' contains '\\x01' " ALLOWED);
    expect_id("\x1b[31m", "site id", "site id '\\x1b[31m' contains '\\x1b' " ALLOWED);
    expect_id("caf\xc3\xa9", "site id", "site id 'caf\\xc3\\xa9' contains '\\xc3' " ALLOWED);
    expect_id("x y", NULL, "id 'x y' contains ' ' " ALLOWED);
    assert_int_equal(cfm_id_check("a/b", "site id", NULL), CFM_EINVAL); /* why may be NULL */
}

static void test_id_checkn_nul(void **state)
{
    struct cfm_why why;

    (void)state;
    assert_int_equal(cfm_models__id_checkn("a\0b", 3, "object id", &why), CFM_EINVAL);
    assert_string_equal(why.text, "object id 'a\\x00b' contains '\\x00' " ALLOWED);
}

static void test_quote(void **state)
{
    char buf[64], tiny[10];

    (void)state;
    assert_string_equal(cfm_quote(buf, sizeof buf, "plain", 5, 64), "plain");
    assert_string_equal(cfm_quote(buf, sizeof buf, "abcdef", 6, 3),
                        "abc\xe2\x80\xa6");
    assert_string_equal(cfm_quote(buf, sizeof buf, "\t\x7f\xff", 3, 64),
                        "\\x09\\x7f\\xff");
    /* A small buffer cuts at a whole character and still says so. */
    assert_string_equal(cfm_quote(tiny, sizeof tiny, "\x01\x02\x03", 3, 64),
                        "\\x01\xe2\x80\xa6");
    assert_string_equal(cfm_quote(tiny, sizeof tiny, NULL, 0, 64), "");
}

/* ---- util.c: what /proc/<pid>/stat says of a process ---------------------- */

static void test_pid_zombie(void **state)
{
    int tries = 0;
    pid_t pid;

    (void)state;
    assert_false(cfm_pid_zombie(getpid()));
    assert_false(cfm_pid_zombie(INT_MAX)); /* above any pid_max: no such process */
    assert_true((pid = fork()) >= 0);
    if (pid == 0)
        _exit(0);
    /* Exited and not waited for: a zombie, once the kernel says so. */
    while (!cfm_pid_zombie(pid) && tries++ < 10000)
        usleep(1000);
    assert_true(cfm_pid_zombie(pid));
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_false(cfm_pid_zombie(pid));
}

static void test_pid_kthread(void **state)
{
    char buf[64] = "";
    FILE *f = fopen("/proc/2/stat", "r");

    (void)state;
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        fclose(f);
    }
    /* kthreadd is pid 2 in the kernel's own pid namespace; in a container's
     * pid 2 is a process of its own, or none. */
    if (strncmp(buf, "2 (kthreadd) ", 13) != 0) {
        print_message("skipped: /proc/2/stat is not kthreadd's ('%s')\n", buf);
        skip();
    }
    assert_true(cfm_pid_kthread(2));
    assert_false(cfm_pid_kthread(getpid()));
    assert_false(cfm_pid_kthread(INT_MAX));
}

/* ---- kind.c -------------------------------------------------------------- */

static void test_kind_names(void **state)
{
    static const struct {
        const char *name;
        enum cfm_kind kind;
        bool declared;
    } kinds[] = {
        {"BusinessSystem", CFM_KIND_BUSINESS_SYSTEM, true},
        {"BusinessSystemElement", CFM_KIND_ELEMENT, true},
        {"BusinessSystemElementInstance", CFM_KIND_ELEMENT_INSTANCE, false},
        {"ConfigTemplate", CFM_KIND_CONFIG_TEMPLATE, true},
        {"VMClass", CFM_KIND_VM_CLASS, true},
        {"VMInstance", CFM_KIND_VM_INSTANCE, false},
        {"Site", CFM_KIND_SITE, true},
        {"Volume", CFM_KIND_VOLUME, true},
        {"Address", CFM_KIND_ADDRESS, true},
        {"ProcedureRun", CFM_KIND_PROCEDURE_RUN, false},
    };
    enum cfm_kind kind;
    size_t i;

    (void)state;
    assert_int_equal(sizeof kinds / sizeof kinds[0], CFM_KIND__COUNT);
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        assert_string_equal(cfm_kind_name(kinds[i].kind), kinds[i].name);
        assert_int_equal(cfm_kind_parse(kinds[i].name, &kind, NULL), CFM_OK);
        assert_int_equal(kind, kinds[i].kind);
        assert_int_equal(cfm_kind_declared(kinds[i].kind), kinds[i].declared);
    }
    assert_string_equal(cfm_kind_name(CFM_KIND__COUNT), "?");
    assert_string_equal(cfm_kind_name((enum cfm_kind)-1), "?");
    assert_false(cfm_kind_declared(CFM_KIND__COUNT));
}

static void test_kind_parse_unknown(void **state)
{
    struct cfm_why why;
    enum cfm_kind kind = CFM_KIND_SITE;

    (void)state;
    assert_int_equal(cfm_kind_parse("Foo", &kind, &why), CFM_EINVAL);
    assert_string_equal(why.text, "unknown kind 'Foo' (known: " KNOWN_KINDS ")");
    assert_int_equal(kind, CFM_KIND_SITE); /* untouched on failure */
    assert_int_equal(cfm_kind_parse("vmclass", &kind, &why), CFM_EINVAL); /* exact case */
    assert_int_equal(cfm_kind_parse("VMClass ", &kind, &why), CFM_EINVAL);
    assert_int_equal(cfm_kind_parse("", &kind, &why), CFM_EINVAL);
    assert_string_equal(why.text, "unknown kind '' (known: " KNOWN_KINDS ")");
    assert_int_equal(cfm_kind_parse("\x1b]0;x", &kind, &why), CFM_EINVAL);
    assert_string_equal(why.text, "unknown kind '\\x1b]0;x' (known: " KNOWN_KINDS ")");
    assert_int_equal(cfm_kind_parse(NULL, &kind, &why), CFM_EINVAL);
}

/* ---- schema.c, through cfm_obj_validate_body ------------------------------- */

struct body_case {
    enum cfm_kind kind;
    const char *body;
    const char *msg; /* NULL: valid */
};

#define BS CFM_KIND_BUSINESS_SYSTEM
#define VMC CFM_KIND_VM_CLASS
#define EL CFM_KIND_ELEMENT
#define CT CFM_KIND_CONFIG_TEMPLATE
#define SYS_AB "\"sites\":[\"a\",\"b\"],\"primary\":\"a\""
#define VM_OK "\"image\":\"i\",\"cpu\":1,\"memory_mb\":1"
#define PROC(p) "{" SYS_AB ",\"procedures\":{\"deploy\":" p "}}"
#define SCRIPT_RULE                                                                      \
    "must be a Lua file name like 'deploy.lua' (letters, digits, '_', '.', '-'; ending " \
    "in '.lua'; not starting with '.'; at most 255 bytes)"

static const struct body_case body_cases[] = {
    /* BusinessSystem */
    {BS, "{\"sites\":[\"a\"],\"primary\":\"a\"}", NULL},
    {BS, "{\"name\":\"Shop\",\"description\":\"d\"," SYS_AB ",\"standby\":\"b\","
         "\"procedures\":{\"deploy\":{\"script\":\"deploy.lua\",\"run_at\":\"primary\","
         "\"timeout_s\":60},\"dr\":{\"script\":\"dr.lua\",\"run_at\":\"target\"},"
         "\"x\":{\"script\":\"x-1_y.lua\",\"run_at\":\"b\"},\"y\":{\"script\":\"y.lua\","
         "\"run_at\":\"all\"}},\"policies\":{\"dr\":{\"after_offline_s\":30,"
         "\"witness\":\"c\"},\"scale\":{\"anything\":[1,{\"x\":2}]}}}", NULL},
    {BS, "{\"primary\":\"a\"}", "sites: is required (an array of 1 to 64 site ids)"},
    {BS, "{\"sites\":[],\"primary\":\"a\"}", "sites: must be an array of 1 to 64 site ids"},
    {BS, "{\"sites\":\"a\",\"primary\":\"a\"}", "sites: must be an array of 1 to 64 site ids"},
    {BS, "{\"sites\":[\"a\",\"a\"],\"primary\":\"a\"}", "sites[1]: site id 'a' is listed twice"},
    {BS, "{\"sites\":[\"a\",\"x/y\"],\"primary\":\"a\"}",
     "sites[1]: site id 'x/y' contains '/' " ALLOWED},
    {BS, "{\"sites\":[1],\"primary\":\"a\"}", "sites[0]: must be a string, the site id"},
    {BS, "{\"sites\":[\"a\"]}", "primary: is required (a string, the site id)"},
    {BS, "{\"sites\":[\"a\"],\"primary\":7}", "primary: must be a string, the site id"},
    {BS, "{\"sites\":[\"a\"],\"primary\":\"b\"}", "primary: site 'b' is not in sites"},
    {BS, "{\"sites\":[\"a\"],\"primary\":\"\"}", "primary: site id is empty"},
    {BS, "{" SYS_AB ",\"standby\":\"c\"}", "standby: site 'c' is not in sites"},
    {BS, "{" SYS_AB ",\"standby\":\"a\"}", "standby: must differ from primary 'a'"},
    {BS, "{" SYS_AB ",\"owner\":\"x\"}",
     "unknown field 'owner' (known: name, description, sites, primary, standby, procedures, "
     "policies)"},
    {BS, "{" SYS_AB ",\"name\":1}", "name: must be a string"},
    {BS, "{" SYS_AB ",\"procedures\":[]}", "procedures: must be an object"},
    {BS, "{" SYS_AB ",\"procedures\":{\"a b\":{\"script\":\"x.lua\"}}}",
     "procedures: event type 'a b' contains ' ' " ALLOWED},
    {BS, PROC("\"deploy.lua\""), "procedures.deploy: must be an object"},
    {BS, PROC("{}"), "procedures.deploy.script: is required (a string)"},
    {BS, PROC("{\"script\":\"deploy.sh\"}"), "procedures.deploy.script: " SCRIPT_RULE},
    {BS, PROC("{\"script\":\"../deploy.lua\"}"), "procedures.deploy.script: " SCRIPT_RULE},
    {BS, PROC("{\"script\":\"lib/deploy.lua\"}"), "procedures.deploy.script: " SCRIPT_RULE},
    {BS, PROC("{\"script\":\".deploy.lua\"}"), "procedures.deploy.script: " SCRIPT_RULE},
    {BS, PROC("{\"script\":\".lua\"}"), "procedures.deploy.script: " SCRIPT_RULE},
    {BS, PROC("{\"script\":\"de ploy.lua\"}"), "procedures.deploy.script: " SCRIPT_RULE},
    {BS, PROC("{\"script\":\"deploy.lua\",\"run_at\":\"c\"}"),
     "procedures.deploy.run_at: 'c' is not primary, standby, target, origin, all or a site "
     "in sites"},
    {BS, PROC("{\"script\":\"deploy.lua\",\"run_at\":\"Primary\"}"),
     "procedures.deploy.run_at: 'Primary' is not primary, standby, target, origin, all or a "
     "site in sites"},
    {BS, PROC("{\"script\":\"deploy.lua\",\"run_at\":1}"),
     "procedures.deploy.run_at: must be a string"},
    {BS, PROC("{\"script\":\"deploy.lua\",\"timeout_s\":0}"),
     "procedures.deploy.timeout_s: must be an integer from 1 to 86400"},
    {BS, PROC("{\"script\":\"deploy.lua\",\"timeout_s\":86401}"),
     "procedures.deploy.timeout_s: must be an integer from 1 to 86400"},
    {BS, PROC("{\"script\":\"deploy.lua\",\"timeout_s\":86400}"), NULL},
    {BS, PROC("{\"script\":\"deploy.lua\",\"when\":\"now\"}"),
     "procedures.deploy: unknown field 'when' (known: script, run_at, timeout_s)"},
    {BS, "{" SYS_AB ",\"policies\":{\"dr\":{}}}",
     "policies.dr.after_offline_s: is required (an integer from 1 to 86400)"},
    {BS, "{" SYS_AB ",\"policies\":{\"dr\":{\"after_offline_s\":0}}}",
     "policies.dr.after_offline_s: must be an integer from 1 to 86400"},
    {BS, "{" SYS_AB ",\"policies\":{\"dr\":{\"after_offline_s\":5,\"witness\":\"a\"}}}",
     "policies.dr.witness: the witness must not be the primary site 'a'"},
    {BS, "{" SYS_AB ",\"policies\":{\"dr\":{\"after_offline_s\":5,\"witness\":\"b\"}}}", NULL},
    {BS, "{" SYS_AB ",\"policies\":{\"dr\":{\"after_offline_s\":5,\"witness\":\"c/d\"}}}",
     "policies.dr.witness: site id 'c/d' contains '/' " ALLOWED},
    {BS, "{" SYS_AB ",\"policies\":{\"dr\":{\"after_offline_s\":5,\"quorum\":2}}}",
     "policies.dr: unknown field 'quorum' (known: after_offline_s, witness)"},
    {BS, "{" SYS_AB ",\"policies\":{\"scale\":1}}", "policies.scale: must be an object"},
    {BS, "{" SYS_AB ",\"policies\":{\"a+b\":{}}}",
     "policies: policy name 'a+b' contains '+' " ALLOWED},

    /* VMClass */
    {VMC, "{" VM_OK "}", NULL},
    {VMC, "{\"image\":\"ami-1\",\"cpu\":1024,\"memory_mb\":16777216,\"disk_gb\":65536,"
          "\"instance_type\":\"t3.small\",\"description\":\"d\",\"sites\":{\"site-b\":"
          "{\"image\":\"ami-2\",\"cpu\":2,\"memory_mb\":1024,\"disk_gb\":5,"
          "\"instance_type\":\"m5\"},\"site-c\":{}}}", NULL},
    {VMC, "{}", "image: is required (a string of 1 to 256 bytes)"},
    {VMC, "{\"image\":\"\",\"cpu\":1,\"memory_mb\":1}",
     "image: must be a string of 1 to 256 bytes"},
    {VMC, "{\"image\":\"i\",\"memory_mb\":1}", "cpu: is required (an integer from 1 to 1024)"},
    {VMC, "{\"image\":\"i\",\"cpu\":0,\"memory_mb\":1}", "cpu: must be an integer from 1 to 1024"},
    {VMC, "{\"image\":\"i\",\"cpu\":1025,\"memory_mb\":1}",
     "cpu: must be an integer from 1 to 1024"},
    {VMC, "{\"image\":\"i\",\"cpu\":\"2\",\"memory_mb\":1}",
     "cpu: must be an integer from 1 to 1024"},
    {VMC, "{\"image\":\"i\",\"cpu\":1.5,\"memory_mb\":1}",
     "cpu: must be an integer from 1 to 1024"},
    {VMC, "{\"image\":\"i\",\"cpu\":1}", "memory_mb: is required (an integer from 1 to 16777216)"},
    {VMC, "{\"image\":\"i\",\"cpu\":1,\"memory_mb\":16777217}",
     "memory_mb: must be an integer from 1 to 16777216"},
    {VMC, "{" VM_OK ",\"disk_gb\":0}", "disk_gb: must be an integer from 1 to 65536"},
    {VMC, "{" VM_OK ",\"instance_type\":false}", "instance_type: must be a string"},
    {VMC, "{\"image\":\"i\",\"cpus\":1,\"memory_mb\":1}",
     "unknown field 'cpus' (known: image, cpu, memory_mb, disk_gb, instance_type, sites, "
     "description)"},
    {VMC, "{" VM_OK ",\"sites\":[]}", "sites: must be an object"},
    {VMC, "{" VM_OK ",\"sites\":{\"x/y\":{}}}", "sites: site id 'x/y' contains '/' " ALLOWED},
    {VMC, "{" VM_OK ",\"sites\":{\"site-b\":1024}}", "sites.site-b: must be an object"},
    {VMC, "{" VM_OK ",\"sites\":{\"site-b\":{\"cpu\":0}}}",
     "sites.site-b.cpu: must be an integer from 1 to 1024"},
    {VMC, "{" VM_OK ",\"sites\":{\"site-b\":{\"count\":2}}}",
     "sites.site-b: unknown field 'count' (known: image, cpu, memory_mb, disk_gb, "
     "instance_type)"},

    /* BusinessSystemElement */
    {EL, "{\"vm_class\":\"small\"}", NULL},
    {EL, "{\"vm_class\":\"small\",\"count\":2,\"min\":1,\"max\":8,\"depends_on\":[\"db\","
         "\"cache\"],\"config_templates\":[\"lb-conf\"],\"volumes\":[\"v1\",\"v2\"],"
         "\"address\":\"pub\",\"description\":\"d\",\"service\":{\"start\":\"s\",\"log\":\"s.log\","
         "\"stop\":\"t\",\"health\":{\"http\":\"/health?x=1\",\"port\":8080,"
         "\"timeout_s\":600}}}", NULL},
    {EL, "{\"vm_class\":\"s\",\"count\":0,\"min\":0,\"max\":0}", NULL},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":1}}}", NULL},
    {EL, "{}", "vm_class: is required (a string, the VMClass id)"},
    {EL, "{\"vm_class\":\"a#b\"}", "vm_class: VMClass id 'a#b' contains '#' " ALLOWED},
    {EL, "{\"vm_class\":\"s\",\"count\":-1}", "count: must be an integer from 0 to 1000"},
    {EL, "{\"vm_class\":\"s\",\"count\":1001}", "count: must be an integer from 0 to 1000"},
    {EL, "{\"vm_class\":\"s\",\"min\":1001}", "min: must be an integer from 0 to 1000"},
    {EL, "{\"vm_class\":\"s\",\"max\":true}", "max: must be an integer from 0 to 1000"},
    {EL, "{\"vm_class\":\"s\",\"count\":4,\"min\":5,\"max\":3}",
     "min: 5 is greater than max 3"},
    {EL, "{\"vm_class\":\"s\",\"count\":1,\"min\":2,\"max\":4}", "count: 1 is below min 2"},
    {EL, "{\"vm_class\":\"s\",\"count\":9,\"min\":2,\"max\":8}", "count: 9 is above max 8"},
    {EL, "{\"vm_class\":\"s\",\"min\":2}", "min: 2 is above count, which defaults to 1"},
    {EL, "{\"vm_class\":\"s\",\"max\":0}", "max: 0 is below count, which defaults to 1"},
    {EL, "{\"vm_class\":\"s\",\"min\":1,\"max\":1}", NULL},
    {EL, "{\"vm_class\":\"s\",\"depends_on\":\"db\"}",
     "depends_on: must be an array of at most 10000 BusinessSystemElement ids"},
    {EL, "{\"vm_class\":\"s\",\"depends_on\":[\"db\",\"db\"]}",
     "depends_on[1]: BusinessSystemElement id 'db' is listed twice"},
    {EL, "{\"vm_class\":\"s\",\"depends_on\":[\"\"]}",
     "depends_on[0]: BusinessSystemElement id is empty"},
    {EL, "{\"vm_class\":\"s\",\"config_templates\":[\"a\",\"b c\"]}",
     "config_templates[1]: ConfigTemplate id 'b c' contains ' ' " ALLOWED},
    {EL, "{\"vm_class\":\"s\",\"volumes\":[{}]}", "volumes[0]: must be a string, the Volume id"},
    {EL, "{\"vm_class\":\"s\",\"volumes\":[\"v\",\"v\"]}",
     "volumes[1]: Volume id 'v' is listed twice"},
    {EL, "{\"vm_class\":\"s\",\"address\":[\"pub\"]}",
     "address: must be a string, the Address id"},
    {EL, "{\"vm_class\":\"s\",\"service\":\"web\"}", "service: must be an object"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"restart\":\"x\"}}",
     "service: unknown field 'restart' (known: start, stop, health, log)"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"log\":\"\"}}",
     "service.log: must be a string of 1 to 1024 bytes"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"log\":\"../web.log\"}}",
     "service.log: must not contain a '..' component"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"log\":\"logs/w\\nx\"}}",
     "service.log: must not contain control characters"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"start\":1}}", "service.start: must be a string"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"http\":\"/h\"}}}",
     "service.health.port: is required (an integer from 1 to 65535)"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":65536}}}",
     "service.health.port: must be an integer from 1 to 65535"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":80,\"http\":\"health\"}}}",
     "service.health.http: must be a path starting with '/'"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":80,\"http\":\"/a b\"}}}",
     "service.health.http: must not contain spaces or control characters"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":80,\"http\":\"/a\\r\\nX: y\"}}}",
     "service.health.http: must not contain spaces or control characters"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":80,\"timeout_s\":0}}}",
     "service.health.timeout_s: must be an integer from 1 to 600"},
    {EL, "{\"vm_class\":\"s\",\"service\":{\"health\":{\"port\":80,\"https\":\"/\"}}}",
     "service.health: unknown field 'https' (known: http, port, timeout_s)"},
    {EL, "{\"vm_class\":\"s\",\"cpu\":1}",
     "unknown field 'cpu' (known: vm_class, count, min, max, depends_on, config_templates, "
     "volumes, address, service, placement, description)"},
    {EL, "{\"vm_class\":\"s\",\"placement\":\"standby\"}", NULL},
    {EL, "{\"vm_class\":\"s\",\"placement\":\"primary\"}", NULL},
    {EL, "{\"vm_class\":\"s\",\"placement\":\"elsewhere\"}",
     "placement: must be \"primary\" or \"standby\""},

    /* ConfigTemplate */
    {CT, "{\"path\":\"/etc/x.conf\",\"template\":\"\"}", NULL},
    {CT, "{\"path\":\"/etc/..x/y..\",\"template\":\"t\",\"mode\":\"644\",\"description\":"
         "\"d\"}", NULL},
    {CT, "{\"path\":\"/x\",\"template\":\"t\",\"mode\":\"0755\"}", NULL},
    {CT, "{\"template\":\"t\"}", "path: is required (a string of 1 to 1024 bytes)"},
    {CT, "{\"path\":\"\",\"template\":\"t\"}", "path: must be a string of 1 to 1024 bytes"},
    {CT, "{\"path\":\"etc/x\",\"template\":\"t\"}",
     "path: must be an absolute path (starting with '/')"},
    {CT, "{\"path\":\"/etc/../shadow\",\"template\":\"t\"}",
     "path: must not contain a '..' component"},
    {CT, "{\"path\":\"/etc/..\",\"template\":\"t\"}", "path: must not contain a '..' component"},
    {CT, "{\"path\":\"/..\",\"template\":\"t\"}", "path: must not contain a '..' component"},
    {CT, "{\"path\":\"/etc/x\\n\",\"template\":\"t\"}",
     "path: must not contain control characters"},
    {CT, "{\"path\":\"/x\"}", "template: is required (a string)"},
    {CT, "{\"path\":\"/x\",\"template\":[\"t\"]}", "template: must be a string"},
    {CT, "{\"path\":\"/x\",\"template\":\"t\",\"mode\":\"0999\"}",
     "mode: must be 3 or 4 octal digits like \"0644\""},
    {CT, "{\"path\":\"/x\",\"template\":\"t\",\"mode\":\"64\"}",
     "mode: must be 3 or 4 octal digits like \"0644\""},
    {CT, "{\"path\":\"/x\",\"template\":\"t\",\"mode\":\"00644\"}",
     "mode: must be 3 or 4 octal digits like \"0644\""},
    {CT, "{\"path\":\"/x\",\"template\":\"t\",\"mode\":420}", "mode: must be a string"},
    {CT, "{\"path\":\"/x\",\"template\":\"t\",\"owner\":\"root\"}",
     "unknown field 'owner' (known: path, template, mode, description)"},

    /* Volume, Address, Site */
    {CFM_KIND_VOLUME, "{\"size_mb\":1}", NULL},
    {CFM_KIND_VOLUME, "{\"size_mb\":16777216,\"replicated\":false,\"description\":\"d\"}", NULL},
    {CFM_KIND_VOLUME, "{}", "size_mb: is required (an integer from 1 to 16777216)"},
    {CFM_KIND_VOLUME, "{\"size_mb\":0}", "size_mb: must be an integer from 1 to 16777216"},
    {CFM_KIND_VOLUME, "{\"size_mb\":1,\"replicated\":\"yes\"}",
     "replicated: must be true or false"},
    {CFM_KIND_VOLUME, "{\"size_mb\":1,\"size_gb\":1}",
     "unknown field 'size_gb' (known: size_mb, replicated, description)"},
    {CFM_KIND_ADDRESS, "{}", NULL},
    {CFM_KIND_ADDRESS, "{\"pool\":\"public\",\"description\":\"d\"}", NULL},
    {CFM_KIND_ADDRESS, "{\"pool\":\"pub lic\"}", "pool: pool id 'pub lic' contains ' ' " ALLOWED},
    {CFM_KIND_ADDRESS, "{\"ip\":\"1.2.3.4\"}", "unknown field 'ip' (known: pool, description)"},
    {CFM_KIND_SITE, "{}", NULL},
    {CFM_KIND_SITE, "{\"name\":\"A\",\"region\":\"eu\",\"driver\":\"local\",\"description\":"
                    "\"d\",\"capacity\":{\"cpu\":0,\"memory_mb\":65536}}", NULL},
    {CFM_KIND_SITE, "{\"capacity\":{\"cpu\":-1}}", "capacity.cpu: must be an integer >= 0"},
    {CFM_KIND_SITE, "{\"capacity\":{\"disk\":1}}",
     "capacity: unknown field 'disk' (known: cpu, memory_mb)"},
    {CFM_KIND_SITE, "{\"capacity\":[]}", "capacity: must be an object"},
    {CFM_KIND_SITE, "{\"region\":1}", "region: must be a string"},

    /* runtime kinds: listed fields checked, others allowed */
    {CFM_KIND_ELEMENT_INSTANCE, "{\"element\":\"web\",\"extra\":[1]}", NULL},
    {CFM_KIND_ELEMENT_INSTANCE, "{\"element\":\"web\",\"site\":\"a\",\"vm\":\"vm-1\","
                                "\"state\":\"up\"}", NULL},
    {CFM_KIND_ELEMENT_INSTANCE, "{}",
     "element: is required (a string, the BusinessSystemElement id)"},
    {CFM_KIND_ELEMENT_INSTANCE, "{\"element\":\"web\",\"site\":\"a/b\"}",
     "site: site id 'a/b' contains '/' " ALLOWED},
    {CFM_KIND_ELEMENT_INSTANCE, "{\"element\":\"web\",\"vm\":\"\"}", "vm: VMInstance id is empty"},
    {CFM_KIND_ELEMENT_INSTANCE, "{\"element\":\"web\",\"state\":3}", "state: must be a string"},
    {CFM_KIND_VM_INSTANCE, "{\"vm_class\":\"small\",\"site\":\"a\",\"state\":\"running\","
                           "\"ip\":\"127.77.0.2\"}", NULL},
    {CFM_KIND_VM_INSTANCE, "{\"vm_class\":\"small\",\"site\":\"a\"}",
     "state: is required (a string)"},
    {CFM_KIND_VM_INSTANCE, "{\"vm_class\":\"small\",\"state\":\"x\"}",
     "site: is required (a string, the site id)"},
    {CFM_KIND_VM_INSTANCE, "{\"site\":\"a\",\"state\":\"x\"}",
     "vm_class: is required (a string, the VMClass id)"},
    {CFM_KIND_PROCEDURE_RUN, "{\"procedure\":\"deploy\",\"state\":\"running\",\"journal\":[]}",
     NULL},
    {CFM_KIND_PROCEDURE_RUN, "{\"procedure\":\"deploy\",\"state\":1}", "state: must be a string"},
    {CFM_KIND_PROCEDURE_RUN, "{\"state\":\"done\"}", "procedure: is required (a string)"},
};

static void test_body_cases(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof body_cases / sizeof body_cases[0]; i++) {
        const struct body_case *bc = &body_cases[i];
        struct cfm_why why = {{0}};
        json_t *body = parse(bc->body);
        enum cfm_err err = cfm_obj_validate_body(bc->kind, body, &why);

        json_decref(body);
        if (!bc->msg && err != CFM_OK)
            fail_msg("case %zu (%s %s): unexpected error: %s", i, cfm_kind_name(bc->kind),
                     bc->body, why.text);
        if (bc->msg && (err != CFM_EINVAL || strcmp(why.text, bc->msg) != 0))
            fail_msg("case %zu (%s %s):\n  want: %s\n  got:  %s (%s)", i,
                     cfm_kind_name(bc->kind), bc->body, bc->msg, why.text, cfm_strerror(err));
    }
}

static void expect_body(enum cfm_kind kind, json_t *body, const char *msg)
{
    struct cfm_why why = {{0}};
    enum cfm_err err = cfm_obj_validate_body(kind, body, &why);

    json_decref(body);
    if (!msg) {
        if (err != CFM_OK)
            fail_msg("unexpected error: %s", why.text);
        return;
    }
    assert_int_equal(err, CFM_EINVAL);
    assert_string_equal(why.text, msg);
}

static void test_body_lengths(void **state)
{
    json_t *b;
    char path[2100]; /* room for all repeat() can return */
    size_t i;

    (void)state;
    expect_body(VMC, json_pack("{s:s, s:i, s:i}", "image", repeat('i', 256), "cpu", 1,
                               "memory_mb", 1), NULL);
    expect_body(VMC, json_pack("{s:s, s:i, s:i}", "image", repeat('i', 257), "cpu", 1,
                               "memory_mb", 1), "image: must be a string of 1 to 256 bytes");
    snprintf(path, sizeof path, "/%s", repeat('p', 1023));
    expect_body(CT, json_pack("{s:s, s:s}", "path", path, "template", ""), NULL);
    snprintf(path, sizeof path, "/%s", repeat('p', 1024));
    expect_body(CT, json_pack("{s:s, s:s}", "path", path, "template", ""),
                "path: must be a string of 1 to 1024 bytes");
    snprintf(path, sizeof path, "%s.lua", repeat('s', 251));
    expect_body(BS, json_pack("{s:[s], s:s, s:{s:{s:s}}}", "sites", "a", "primary", "a",
                              "procedures", "deploy", "script", path), NULL);
    snprintf(path, sizeof path, "%s.lua", repeat('s', 252));
    expect_body(BS, json_pack("{s:[s], s:s, s:{s:{s:s}}}", "sites", "a", "primary", "a",
                              "procedures", "deploy", "script", path),
                "procedures.deploy.script: " SCRIPT_RULE);

    /* 64 sites are allowed, 65 are not. */
    b = json_pack("{s:[], s:s}", "sites", "primary", "s0");
    for (i = 0; i < 65; i++) {
        snprintf(path, sizeof path, "s%zu", i);
        json_array_append_new(json_object_get(b, "sites"), json_string(path));
        if (i == 63)
            expect_body(BS, json_deep_copy(b), NULL);
    }
    expect_body(BS, b, "sites: must be an array of 1 to 64 site ids");
}

static void test_body_nul_bytes(void **state)
{
    (void)state;
    expect_body(VMC, json_pack("{s:s#, s:i, s:i}", "image", "a\0b", (int)3, "cpu", 1,
                               "memory_mb", 1), "image: must not contain NUL bytes");
    expect_body(EL, json_pack("{s:s#}", "vm_class", "a\0b", (int)3),
                "vm_class: VMClass id 'a\\x00b' contains '\\x00' " ALLOWED);
}

/* {"x": [[[ ... ]]]}: the body is level 1, each array one more. */
static json_t *nested(size_t levels)
{
    json_t *v = json_array(), *outer;
    size_t i;

    for (i = 2; i < levels; i++) {
        outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    return json_pack("{s:s, s:s, s:o}", "procedure", "p", "state", "s", "x", v);
}

static void test_body_whole(void **state)
{
    json_t *big;
    char msg[128];

    (void)state;
    expect_body(VMC, json_string("x"), "body: must be a JSON object");
    expect_body(VMC, json_array(), "body: must be a JSON object");
    assert_int_equal(cfm_obj_validate_body(VMC, NULL, NULL), CFM_EINVAL);
    big = json_object();
    assert_int_equal(cfm_obj_validate_body(CFM_KIND__COUNT, big, NULL), CFM_EINVAL);
    json_decref(big);
    expect_body(CFM_KIND_PROCEDURE_RUN, nested(CFM_MAX_JSON_DEPTH), NULL);
    expect_body(CFM_KIND_PROCEDURE_RUN, nested(CFM_MAX_JSON_DEPTH + 1),
                "body: nests deeper than 32 levels");

    /* Exactly at the size limit passes; one byte over does not. The body is
     * {"procedure":"p","state":"s","x":"..."}: 36 bytes around x's text. */
    big = json_pack("{s:s, s:s, s:s}", "procedure", "p", "state", "s", "x", "");
    {
        size_t fill = CFM_MAX_BODY - 36;
        char *text = malloc(fill + 2);

        assert_non_null(text);
        memset(text, 'x', fill + 1);
        json_object_set_new(big, "x", json_stringn(text, fill));
        assert_int_equal(json_dumpb(big, NULL, 0, JSON_COMPACT), CFM_MAX_BODY);
        expect_body(CFM_KIND_PROCEDURE_RUN, json_deep_copy(big), NULL);
        json_object_set_new(big, "x", json_stringn(text, fill + 1));
        free(text);
    }
    snprintf(msg, sizeof msg, "body: is %u bytes as compact JSON; the limit is %u",
             CFM_MAX_BODY + 1, CFM_MAX_BODY);
    expect_body(CFM_KIND_PROCEDURE_RUN, big, msg);
}

/* ---- obj.c --------------------------------------------------------------- */

static struct cfm_obj *must_from(const char *text)
{
    struct cfm_why why = {{0}};
    struct cfm_obj *obj = NULL;
    json_t *j = parse(text);
    enum cfm_err err = cfm_obj_from_json(j, &obj, &why);

    json_decref(j);
    if (err != CFM_OK)
        fail_msg("from_json(%s): %s", text, why.text);
    return obj;
}

static void expect_from(const char *text, const char *msg)
{
    struct cfm_why why = {{0}};
    struct cfm_obj *obj = (struct cfm_obj *)1;
    json_t *j = parse(text);
    enum cfm_err err = cfm_obj_from_json(j, &obj, &why);

    json_decref(j);
    assert_int_equal(err, CFM_EINVAL);
    assert_null(obj);
    assert_string_equal(why.text, msg);
}

#define ENV(rest) "{\"kind\":\"VMClass\",\"id\":\"small\",\"system\":\"shop\"" rest "}"
#define VMB ",\"body\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":256}"

static void test_obj_new_free(void **state)
{
    struct cfm_obj *o;

    (void)state;
    o = cfm_obj_new(CFM_KIND_SITE, "shop", "site-a", NULL);
    assert_non_null(o);
    assert_int_equal(o->kind, CFM_KIND_SITE);
    assert_string_equal(o->system, "shop");
    assert_string_equal(o->id, "site-a");
    assert_int_equal(o->version, 0);
    assert_string_equal(o->origin, "");
    assert_string_equal(o->updated, "");
    assert_false(o->deleted);
    assert_true(json_is_object(o->body));
    assert_int_equal(json_object_size(o->body), 0);
    cfm_obj_free(o);
    cfm_obj_free(NULL);

    /* Invalid input: NULL, and the body is released (ASan checks the leak). */
    assert_null(cfm_obj_new(CFM_KIND_SITE, "a/b", "x", json_object()));
    assert_null(cfm_obj_new(CFM_KIND_SITE, "shop", "", json_object()));
    assert_null(cfm_obj_new(CFM_KIND_SITE, NULL, "x", json_object()));
    assert_null(cfm_obj_new(CFM_KIND_SITE, "shop", repeat('x', 65), json_object()));
    assert_null(cfm_obj_new(CFM_KIND__COUNT, "shop", "x", json_object()));
    assert_null(cfm_obj_new(CFM_KIND_SITE, "shop", "x", json_array()));
    o = cfm_obj_new(CFM_KIND_SITE, repeat('s', 64), "x", NULL);
    assert_non_null(o);
    assert_int_equal(strlen(o->system), 64);
    cfm_obj_free(o);
}

static void test_obj_dup(void **state)
{
    struct cfm_obj *o = must_from(ENV(",\"version\":7,\"origin\":\"site-a\",\"updated\":"
                                      "\"2026-11-22T10:00:00.000Z\"" VMB));
    struct cfm_obj *d = cfm_obj_dup(o);

    (void)state;
    assert_non_null(d);
    assert_int_equal(d->version, 7);
    assert_string_equal(d->origin, "site-a");
    assert_string_equal(d->updated, "2026-11-22T10:00:00.000Z");
    assert_true(cfm_obj_same_content(o, d));
    assert_int_equal(cfm_obj_cmp_version(o, d), 0);
    assert_ptr_not_equal(o->body, d->body);
    json_object_set_new(d->body, "cpu", json_integer(2)); /* deep: o is untouched */
    assert_int_equal(json_integer_value(json_object_get(o->body, "cpu")), 1);
    assert_null(cfm_obj_dup(NULL));
    cfm_obj_free(o);
    cfm_obj_free(d);
}

static void test_obj_json_round_trip(void **state)
{
    struct cfm_obj *o = must_from(ENV(",\"version\":9007199254740991,\"origin\":\"site-b\","
                                      "\"updated\":\"2026-11-22T10:00:00.123Z\","
                                      "\"deleted\":false" VMB));
    struct cfm_obj *back = NULL;
    json_t *j = cfm_obj_to_json(o);
    static const char *const keys[] = {"kind",   "id",      "system",  "version",
                                       "origin", "updated", "deleted", "body"};
    size_t i;

    (void)state;
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 8);
    for (i = 0; i < 8; i++)
        assert_non_null(json_object_get(j, keys[i]));
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "VMClass");
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 9007199254740991LL);
    assert_true(json_is_false(json_object_get(j, "deleted")));
    assert_ptr_not_equal(json_object_get(j, "body"), o->body); /* a copy */
    assert_int_equal(cfm_obj_from_json(j, &back, NULL), CFM_OK);
    assert_int_equal(back->kind, o->kind);
    assert_string_equal(back->id, "small");
    assert_string_equal(back->system, "shop");
    assert_int_equal(back->version, 9007199254740991ULL);
    assert_string_equal(back->origin, "site-b");
    assert_string_equal(back->updated, "2026-11-22T10:00:00.123Z");
    assert_false(back->deleted);
    assert_true(json_equal(back->body, o->body));
    assert_ptr_not_equal(back->body, json_object_get(j, "body")); /* owns its own */
    json_decref(j);
    cfm_obj_free(back);
    cfm_obj_free(o);
}

static void test_obj_defaults(void **state)
{
    struct cfm_obj *o = must_from(ENV(VMB));

    (void)state;
    assert_int_equal(o->version, 0);
    assert_string_equal(o->origin, "");
    assert_string_equal(o->updated, "");
    assert_false(o->deleted);
    cfm_obj_free(o);
    o = must_from(ENV(",\"origin\":\"\",\"updated\":\"\",\"version\":0" VMB));
    assert_string_equal(o->origin, "");
    cfm_obj_free(o);
}

static void test_obj_from_json_errors(void **state)
{
    struct cfm_why why;
    struct cfm_obj *o = NULL;
    json_t *j;

    (void)state;
    expect_from("[]", "must be a JSON object");
    expect_from("{\"id\":\"x\",\"system\":\"s\",\"body\":{}}", "kind: is required (a string)");
    expect_from("{\"kind\":3,\"id\":\"x\",\"system\":\"s\",\"body\":{}}", "kind: must be a string");
    expect_from("{\"kind\":\"Foo\",\"id\":\"x\",\"system\":\"s\",\"body\":{}}",
                "kind: unknown kind 'Foo' (known: " KNOWN_KINDS ")");
    expect_from("{\"kind\":\"Site\",\"system\":\"s\",\"body\":{}}",
                "id: is required (a string, the object id)");
    expect_from("{\"kind\":\"Site\",\"id\":\"\",\"system\":\"s\",\"body\":{}}",
                "id: object id is empty");
    expect_from("{\"kind\":\"Site\",\"id\":[],\"system\":\"s\",\"body\":{}}",
                "id: must be a string");
    expect_from("{\"kind\":\"Site\",\"id\":\"x\",\"body\":{}}",
                "system: is required (a string, the system id)");
    expect_from("{\"kind\":\"Site\",\"id\":\"x\",\"system\":\"a/b\",\"body\":{}}",
                "system: system id 'a/b' contains '/' " ALLOWED);
    expect_from(ENV(",\"version\":-1" VMB), "version: must be an integer from 0 to "
                                            "9007199254740991");
    expect_from(ENV(",\"version\":9007199254740992" VMB),
                "version: must be an integer from 0 to 9007199254740991");
    expect_from(ENV(",\"version\":1.0" VMB), "version: must be an integer from 0 to "
                                             "9007199254740991");
    expect_from(ENV(",\"version\":\"3\"" VMB), "version: must be an integer from 0 to "
                                               "9007199254740991");
    expect_from(ENV(",\"origin\":\"x y\"" VMB), "origin: site id 'x y' contains ' ' " ALLOWED);
    expect_from(ENV(",\"origin\":null" VMB), "origin: must be a string");
    expect_from(ENV(",\"updated\":\"2026-11-22T10:00:00.123456+00:00\"" VMB),
                "updated: must be a time of at most 31 bytes");
    expect_from(ENV(",\"updated\":5" VMB), "updated: must be a string");
    expect_from(ENV(",\"deleted\":\"no\"" VMB), "deleted: must be true or false");
    expect_from(ENV(""), "body: is required (a JSON object)");
    expect_from(ENV(",\"body\":[]"), "body: must be a JSON object");
    expect_from(ENV(",\"body\":{\"image\":\"i\",\"cpu\":0,\"memory_mb\":1}"),
                "body.cpu: must be an integer from 1 to 1024");
    expect_from(ENV(",\"body\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":1,\"sites\":"
                    "{\"b\":{\"cpu\":0}}}"),
                "body.sites.b.cpu: must be an integer from 1 to 1024");
    expect_from(ENV(",\"body\":{\"cpus\":1}"),
                "body: unknown field 'cpus' (known: image, cpu, memory_mb, disk_gb, "
                "instance_type, sites, description)");
    expect_from(ENV(",\"extra\":1" VMB),
                "unknown field 'extra' (known: kind, id, system, version, origin, updated, "
                "deleted, body)");
    expect_from("{\"kind\":\"BusinessSystemElement\",\"id\":\"web\",\"system\":\"shop\","
                "\"body\":{\"vm_class\":\"small\",\"depends_on\":[\"db\",\"web\"]}}",
                "body.depends_on[1]: element 'web' cannot depend on itself");

    /* 31 bytes of updated are allowed. */
    cfm_obj_free(must_from(ENV(",\"updated\":\"2026-11-22T10:00:00.12345+00:00\"" VMB)));

    /* Embedded NULs, possible in JSON built in memory. */
    j = json_pack("{s:s, s:s#, s:s, s:{}}", "kind", "Site", "id", "a\0b", (int)3, "system",
                  "shop", "body");
    assert_int_equal(cfm_obj_from_json(j, &o, &why), CFM_EINVAL);
    assert_string_equal(why.text, "id: object id 'a\\x00b' contains '\\x00' " ALLOWED);
    json_decref(j);
    j = json_pack("{s:s#, s:s, s:s, s:{}}", "kind", "Site\0x", (int)6, "id", "a", "system",
                  "shop", "body");
    assert_int_equal(cfm_obj_from_json(j, &o, &why), CFM_EINVAL);
    assert_string_equal(why.text, "kind: must not contain NUL bytes");
    json_decref(j);
    assert_int_equal(cfm_obj_from_json(NULL, &o, NULL), CFM_EINVAL);
    assert_null(o);
}

static void test_obj_tombstone(void **state)
{
    struct cfm_obj *t, *live;
    json_t *j;

    (void)state;
    /* A tombstone's body is {} and is not checked against the kind. */
    t = must_from(ENV(",\"version\":4,\"origin\":\"site-a\",\"deleted\":true,\"body\":{}"));
    assert_true(t->deleted);
    assert_int_equal(json_object_size(t->body), 0);
    j = cfm_obj_to_json(t);
    assert_true(json_is_true(json_object_get(j, "deleted")));
    assert_int_equal(json_object_size(json_object_get(j, "body")), 0);
    json_decref(j);
    expect_from(ENV(",\"deleted\":true" VMB), "body: a tombstone's body must be {}");
    expect_from(ENV(",\"deleted\":true,\"body\":[]"), "body: a tombstone's body must be {}");
    expect_from(ENV(",\"deleted\":true"), "body: is required (a JSON object)");

    /* A live object and its tombstone differ in content; the later write wins. */
    live = must_from(ENV(",\"version\":3,\"origin\":\"site-a\"" VMB));
    assert_false(cfm_obj_same_content(live, t));
    assert_true(cfm_obj_cmp_version(t, live) > 0);
    cfm_obj_free(live);
    cfm_obj_free(t);
}

static struct cfm_obj *versioned(uint64_t version, const char *origin)
{
    struct cfm_obj *o = cfm_obj_new(CFM_KIND_SITE, "shop", "a", NULL);

    assert_non_null(o);
    o->version = version;
    snprintf(o->origin, sizeof o->origin, "%s", origin);
    return o;
}

static void test_obj_cmp_version(void **state)
{
    struct cfm_obj *v1a = versioned(1, "site-a"), *v2a = versioned(2, "site-a");
    struct cfm_obj *v2b = versioned(2, "site-b"), *v1z = versioned(1, "site-z");
    struct cfm_obj *v0 = versioned(0, ""), *v2a2 = versioned(2, "site-a");
    struct cfm_obj *big = versioned(CFM_MAX_VERSION - 1, "");

    (void)state;
    assert_int_equal(cfm_obj_cmp_version(v1a, v2a), -1);
    assert_int_equal(cfm_obj_cmp_version(v2a, v1a), 1);
    assert_int_equal(cfm_obj_cmp_version(v2a, v2b), -1); /* tie broken by origin */
    assert_int_equal(cfm_obj_cmp_version(v2b, v2a), 1);
    assert_int_equal(cfm_obj_cmp_version(v1z, v2a), -1); /* version first */
    assert_int_equal(cfm_obj_cmp_version(v2a, v2a2), 0);
    assert_int_equal(cfm_obj_cmp_version(v0, v1a), -1);
    assert_int_equal(cfm_obj_cmp_version(big, v2b), 1);
    cfm_obj_free(v1a);
    cfm_obj_free(v2a);
    cfm_obj_free(v2b);
    cfm_obj_free(v1z);
    cfm_obj_free(v0);
    cfm_obj_free(v2a2);
    cfm_obj_free(big);
}

static void test_obj_same_content(void **state)
{
    struct cfm_obj *a = must_from(ENV(",\"version\":1,\"origin\":\"site-a\","
                                      "\"body\":{\"image\":\"i\",\"cpu\":1,\"memory_mb\":2}"));
    struct cfm_obj *b = must_from(ENV(",\"version\":5,\"origin\":\"site-b\",\"updated\":\"x\","
                                      "\"body\":{\"memory_mb\":2,\"cpu\":1,\"image\":\"i\"}"));
    struct cfm_obj *c;

    (void)state;
    assert_true(cfm_obj_same_content(a, b)); /* envelope stamps and key order ignored */
    c = cfm_obj_dup(b);
    json_object_set_new(c->body, "cpu", json_integer(2));
    assert_false(cfm_obj_same_content(a, c));
    cfm_obj_free(c);
    c = cfm_obj_dup(b);
    snprintf(c->id, sizeof c->id, "medium");
    assert_false(cfm_obj_same_content(a, c));
    cfm_obj_free(c);
    c = cfm_obj_dup(b);
    snprintf(c->system, sizeof c->system, "other");
    assert_false(cfm_obj_same_content(a, c));
    cfm_obj_free(c);
    c = cfm_obj_dup(b);
    c->kind = CFM_KIND_SITE;
    assert_false(cfm_obj_same_content(a, c));
    cfm_obj_free(c);
    c = cfm_obj_dup(b);
    c->deleted = true;
    assert_false(cfm_obj_same_content(a, c));
    cfm_obj_free(c);
    assert_false(cfm_obj_same_content(a, NULL));
    assert_true(cfm_obj_same_content(NULL, NULL));
    cfm_obj_free(a);
    cfm_obj_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_id_check_messages),
        cmocka_unit_test(test_id_checkn_nul),
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_pid_zombie),
        cmocka_unit_test(test_pid_kthread),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_kind_parse_unknown),
        cmocka_unit_test(test_body_cases),
        cmocka_unit_test(test_body_lengths),
        cmocka_unit_test(test_body_nul_bytes),
        cmocka_unit_test(test_body_whole),
        cmocka_unit_test(test_obj_new_free),
        cmocka_unit_test(test_obj_dup),
        cmocka_unit_test(test_obj_json_round_trip),
        cmocka_unit_test(test_obj_defaults),
        cmocka_unit_test(test_obj_from_json_errors),
        cmocka_unit_test(test_obj_tombstone),
        cmocka_unit_test(test_obj_cmp_version),
        cmocka_unit_test(test_obj_same_content),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
