/*
 * test_template.c - unit tests of the template language (template.c): every
 * rule of docs/templates.md with the exact text it renders, and every
 * refusal with the message and line a user will read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "bounds.h"
#include "template.h"

#define BIG_OUT ((size_t)1 << 20)

/* Parses JSON text that the test itself wrote (NULL stays NULL). */
static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *v;

    if (!text)
        return NULL;
    v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return v;
}

static void expect_len(const char *tmpl, size_t len, const char *vars, const char *want,
                       size_t want_len)
{
    json_t *v = J(vars);
    struct cfm_why why = {{0}};
    char *out = NULL;
    size_t out_len = 12345;
    enum cfm_err err = cfm_template_render(tmpl, len, v, BIG_OUT, &out, &out_len, &why);

    if (err != CFM_OK)
        fail_msg("render of '%s' failed: %s", tmpl, why.text);
    assert_non_null(out);
    assert_int_equal(out_len, want_len);
    assert_memory_equal(out, want, want_len);
    assert_int_equal(out[out_len], '\0');
    free(out);
    json_decref(v);
}

/* Renders tmpl with vars (JSON text, or NULL) and checks the exact output. */
static void expect(const char *tmpl, const char *vars, const char *want)
{
    expect_len(tmpl, strlen(tmpl), vars, want, strlen(want));
}

/* Renders tmpl with vars, capped at max_out, and checks the error and its text. */
static void expect_fail_cap(const char *tmpl, const char *vars, size_t max_out,
                            enum cfm_err want, const char *msg)
{
    json_t *v = J(vars);
    struct cfm_why why = {{0}};
    char *out = (char *)"untouched";
    size_t out_len = 12345;
    enum cfm_err err = cfm_template_render(tmpl, strlen(tmpl), v, max_out, &out, &out_len, &why);

    assert_int_equal(err, want);
    assert_null(out);
    assert_int_equal(out_len, 0);
    assert_string_equal(why.text, msg);
    json_decref(v);
}

static void expect_fail(const char *tmpl, const char *vars, const char *msg)
{
    expect_fail_cap(tmpl, vars, BIG_OUT, CFM_EINVAL, msg);
}

/* ---- the lb-conf example of examples/web3tier.json ------------------------ */

static void test_lb_conf_example(void **state)
{
    (void)state;
    expect("# written by cfm\n{{#web}}server {{name}} {{address}}:8080\n{{/web}}",
           "{\"web\":[{\"name\":\"web-1\",\"address\":\"10.0.0.11\"},"
           "{\"name\":\"web-2\",\"address\":\"10.0.0.12\"}]}",
           "# written by cfm\nserver web-1 10.0.0.11:8080\nserver web-2 10.0.0.12:8080\n");
    /* no instance yet: just the header line */
    expect("# written by cfm\n{{#web}}server {{name}} {{address}}:8080\n{{/web}}", "{\"web\":[]}",
           "# written by cfm\n");
}

/* ---- variables --------------------------------------------------------------- */

static void test_plain_text(void **state)
{
    (void)state;
    expect("", NULL, "");
    expect("no tags at all\n", "{}", "no tags at all\n");
    expect("single { and } and }} are text", "{}", "single { and } and }} are text");
    expect("{{a}}}", "{\"a\":\"x\"}", "x}");
}

static void test_strings_as_is(void **state)
{
    (void)state;
    expect("Hello {{who}}!", "{\"who\":\"world\"}", "Hello world!");
    /* no HTML escaping: these are config files */
    expect("{{s}}", "{\"s\":\"<a href=\\\"x\\\">&amp;'</a>\"}", "<a href=\"x\">&amp;'</a>");
    expect("[{{s}}]", "{\"s\":\"two\\nlines\"}", "[two\nlines]");
    expect("{{ who }}|{{\twho\n}}", "{\"who\":\"me\"}", "me|me");
    expect("{{é}}", "{\"é\":\"utf-8 key\"}", "utf-8 key");
}

static void test_synonyms(void **state)
{
    (void)state;
    expect("{{{s}}} {{&s}} {{& s }} {{{ s }}}", "{\"s\":\"<&>\"}", "<&> <&> <&> <&>");
}

static void test_numbers_and_booleans(void **state)
{
    (void)state;
    expect("{{i}} {{n}} {{z}} {{big}}",
           "{\"i\":8080,\"n\":-42,\"z\":0,\"big\":9223372036854775807}",
           "8080 -42 0 9223372036854775807");
    expect("{{a}} {{b}} {{c}} {{d}}", "{\"a\":0.5,\"b\":0.1,\"c\":2.0,\"d\":-1.25}",
           "0.5 0.1 2 -1.25");
    expect("{{a}} {{b}} {{c}}", "{\"a\":3.141592653589793,\"b\":1e300,\"c\":1.5e-7}",
           "3.141592653589793 1e+300 1.5e-07");
    expect("{{a}} {{b}}", "{\"a\":0.30000000000000004,\"b\":100000.0}",
           "0.30000000000000004 100000");
    expect("{{a}} {{b}} {{c}} {{d}} {{e}}", "{\"a\":1e16,\"b\":1e17,\"c\":0.0001,\"d\":0.00001,"
           "\"e\":-0.0}", "10000000000000000 1e+17 0.0001 1e-05 -0");
    expect("{{t}}/{{f}}", "{\"t\":true,\"f\":false}", "true/false");
}

static void test_null_and_missing(void **state)
{
    (void)state;
    expect("[{{n}}][{{missing}}][{{a.b}}]", "{\"n\":null}", "[][][]");
    expect("[{{x}}]", NULL, "[]");
}

static void test_objects_and_arrays_as_json(void **state)
{
    (void)state;
    expect("{{o}}", "{\"o\":{\"b\":1,\"a\":[true,null,\"s\"]}}",
           "{\"b\":1,\"a\":[true,null,\"s\"]}");
    expect("{{a}} {{e}} {{eo}}", "{\"a\":[1,2.5,\"x\"],\"e\":[],\"eo\":{}}", "[1,2.5,\"x\"] [] {}");
    expect("{{.}}", "{\"k\":\"v\"}", "{\"k\":\"v\"}");
}

static void test_embedded_nul(void **state)
{
    json_t *v = json_pack("{s:s%}", "s", "a\0b", (size_t)3);
    char *out = NULL;
    size_t out_len = 0;

    (void)state;
    expect_len("x\0{{y}}z", 8, "{\"y\":\"Y\"}", "x\0Yz", 4);
    assert_int_equal(cfm_template_render("<{{s}}>", 7, v, BIG_OUT, &out, &out_len, NULL), CFM_OK);
    assert_int_equal(out_len, 5);
    assert_memory_equal(out, "<a\0b>", 6);
    free(out);
    json_decref(v);
}

/* ---- names ----------------------------------------------------------------- */

static void test_dotted_names(void **state)
{
    (void)state;
    expect("{{a.b.c}}", "{\"a\":{\"b\":{\"c\":\"deep\"}}}", "deep");
    expect("{{a.b}}", "{\"a\":{\"b\":{\"c\":1}}}", "{\"c\":1}");
    expect("{{vm.cpu}} {{vm.memory_mb}}", "{\"vm\":{\"cpu\":2,\"memory_mb\":512}}", "2 512");
    /* through a value that is not an object: empty */
    expect("[{{a.b}}][{{s.length}}]", "{\"a\":[1],\"s\":\"text\"}", "[][]");
    /* the first part is looked up in the stack, the rest inside it only:
     * a.c is missing in the inner a, and the outer c is not used */
    expect("{{#x}}[{{a.b}}][{{a.c}}]{{/x}}",
           "{\"c\":\"outer\",\"a\":{\"b\":\"o\",\"c\":\"oc\"},\"x\":{\"a\":{\"b\":\"in\"}}}",
           "[in][]");
    /* a dotted section */
    expect("{{#a.list}}{{.}},{{/a.list}}", "{\"a\":{\"list\":[1,2,3]}}", "1,2,3,");
}

static void test_current_item(void **state)
{
    (void)state;
    expect("{{#names}}<{{.}}>{{/names}}", "{\"names\":[\"a\",\"b\",\"c\"]}", "<a><b><c>");
    expect("{{#ports}}{{ . }} {{/ports}}", "{\"ports\":[80,443]}", "80 443 ");
    expect("{{#port}}listen {{.}}{{/port}}", "{\"port\":8080}", "listen 8080");
    expect("{{#rows}}{{.}};{{/rows}}", "{\"rows\":[[1,2],{\"a\":1}]}", "[1,2];{\"a\":1};");
}

/* ---- sections -------------------------------------------------------------- */

static void test_section_values(void **state)
{
    (void)state;
    /* truthy: rendered once (array: once per element) */
    expect("{{#v}}yes{{/v}}", "{\"v\":true}", "yes");
    expect("{{#v}}yes{{/v}}", "{\"v\":\"x\"}", "yes");
    expect("{{#v}}yes{{/v}}", "{\"v\":7}", "yes");
    expect("{{#v}}yes{{/v}}", "{\"v\":-0.5}", "yes");
    expect("{{#v}}yes{{/v}}", "{\"v\":{}}", "yes");
    expect("{{#v}}yes{{/v}}", "{\"v\":[0,false,null]}", "yesyesyes");
    /* falsy: skipped */
    expect("{{#v}}yes{{/v}}", "{\"v\":false}", "");
    expect("{{#v}}yes{{/v}}", "{\"v\":null}", "");
    expect("{{#v}}yes{{/v}}", "{}", "");
    expect("{{#v}}yes{{/v}}", "{\"v\":[]}", "");
    expect("{{#v}}yes{{/v}}", "{\"v\":\"\"}", "");
    expect("{{#v}}yes{{/v}}", "{\"v\":0}", "");
    expect("{{#v}}yes{{/v}}", "{\"v\":0.0}", "");
    expect("a{{#v}}{{/v}}b", "{\"v\":[1,2]}", "ab");
}

static void test_section_object_pushed(void **state)
{
    (void)state;
    expect("{{#db}}{{host}}:{{port}}{{/db}}", "{\"db\":{\"host\":\"db-1\",\"port\":5432}}",
           "db-1:5432");
    expect("{{#items}}{{id}}={{v}} {{/items}}",
           "{\"items\":[{\"id\":\"a\",\"v\":1},{\"id\":\"b\",\"v\":2.5}]}", "a=1 b=2.5 ");
}

static void test_nested_sections_fall_back(void **state)
{
    (void)state;
    /* vm names come from the inner scope, site from the middle one, domain
     * from the top; 'name' of the site is shadowed inside vms */
    expect("{{#sites}}{{name}}:{{#vms}} {{name}}.{{site}}.{{domain}}{{/vms}};{{/sites}}",
           "{\"domain\":\"example.org\",\"sites\":["
           "{\"name\":\"A\",\"site\":\"a\",\"vms\":[{\"name\":\"v1\"},{\"name\":\"v2\"}]},"
           "{\"name\":\"B\",\"site\":\"b\",\"vms\":[{\"name\":\"v3\",\"site\":\"own\"}]}]}",
           "A: v1.a.example.org v2.a.example.org;B: v3.own.example.org;");
    /* a section named like an outer one iterates the innermost */
    expect("{{#a}}{{#a}}{{.}}{{/a}}{{/a}}", "{\"a\":{\"a\":[1,2]}}", "12");
    /* the same array twice, nested: a product */
    expect("{{#x}}{{#y}}{{.}}{{/y}}|{{/x}}", "{\"x\":[1,2],\"y\":[\"a\",\"b\"]}", "ab|ab|");
    /* a scalar pushed does not hide outer names */
    expect("{{#on}}{{name}}{{/on}}", "{\"on\":true,\"name\":\"n\"}", "n");
}

static void test_inverted_sections(void **state)
{
    (void)state;
    expect("{{^v}}none{{/v}}", "{\"v\":false}", "none");
    expect("{{^v}}none{{/v}}", "{\"v\":null}", "none");
    expect("{{^v}}none{{/v}}", "{}", "none");
    expect("{{^v}}none{{/v}}", "{\"v\":[]}", "none");
    expect("{{^v}}none{{/v}}", "{\"v\":\"\"}", "none");
    expect("{{^v}}none{{/v}}", "{\"v\":0}", "none");
    expect("{{^v}}none{{/v}}", "{\"v\":true}", "");
    expect("{{^v}}none{{/v}}", "{\"v\":[1,2]}", "");
    expect("{{^v}}none{{/v}}", "{\"v\":{}}", "");
    expect("{{^v}}none{{/v}}", "{\"v\":\"x\"}", "");
    expect("{{^v}}none{{/v}}", "{\"v\":1}", "");
    /* the usual pair, and an inverted section pushes nothing */
    expect("{{#web}}{{.}} {{/web}}{{^web}}no web{{/web}}", "{\"web\":[]}", "no web");
    expect("{{#web}}{{.}} {{/web}}{{^web}}no web{{/web}}", "{\"web\":[\"w1\"]}", "w1 ");
    expect("{{#web}}server {{.}}\n{{/web}}\n{{^web}}# no web server yet\n{{/web}}\n",
           "{\"web\":[]}", "# no web server yet\n");
    expect("{{#web}}server {{.}}\n{{/web}}\n{{^web}}# no web server yet\n{{/web}}\n",
           "{\"web\":[\"w1\",\"w2\"]}", "server w1\nserver w2\n");
    expect("{{#l}}{{^skip}}{{n}}{{/skip}}{{/l}}",
           "{\"l\":[{\"n\":1},{\"n\":2,\"skip\":true},{\"n\":3}]}", "13");
}

static void test_comments(void **state)
{
    (void)state;
    expect("a{{! a comment }}b", "{}", "ab");
    expect("a{{!}}b", "{}", "ab");
    expect("a{{! {{x}} inside }}b", "{\"x\":1}", "a inside }}b");
    expect("a{{! multi\nline\ncomment }}b{{x}}", "{\"x\":1}", "ab1");
}

/* ---- standalone lines ------------------------------------------------------ */

static void test_standalone_lines(void **state)
{
    (void)state;
    expect("upstream {\n{{#web}}\n  server {{.}};\n{{/web}}\n}\n", "{\"web\":[\"w1\",\"w2\"]}",
           "upstream {\n  server w1;\n  server w2;\n}\n");
    /* the example of docs/templates.md: indented tags */
    expect("upstream web {\n  {{#web}}\n  server {{.}};\n  {{/web}}\n}\n",
           "{\"web\":[\"w1\",\"w2\"]}", "upstream web {\n  server w1;\n  server w2;\n}\n");
    /* indented with spaces and tabs, trailing blanks too */
    expect("a\n  {{#s}}  \n\tb\n \t{{/s}}\t\nc\n", "{\"s\":true}", "a\n\tb\nc\n");
    /* inverted sections and comments */
    expect("a\n{{^s}}\nnone\n{{/s}}\n  {{! note }}\nz\n", "{}", "a\nnone\nz\n");
    /* multi-line standalone comment */
    expect("Begin.\n{{!\nSomething's going on here\n}}\nEnd.\n", "{}", "Begin.\nEnd.\n");
    /* first line, last line without newline, CRLF */
    expect("{{#s}}\nx\n{{/s}}", "{\"s\":1}", "x\n");
    expect("a\r\n{{#s}}\r\nb\r\n{{/s}}\r\nc", "{\"s\":1}", "a\r\nb\r\nc");
    expect("  {{! only }}  ", "{}", "");
    /* a skipped section leaves no blank line */
    expect("a\n{{#s}}\nb\n{{/s}}\nc\n", "{}", "a\nc\n");
}

static void test_not_standalone(void **state)
{
    (void)state;
    /* text before or after the tag */
    expect("a {{#s}}\nb\n{{/s}} c\n", "{\"s\":1}", "a \nb\n c\n");
    /* two tags on one line */
    expect("{{#s}}{{/s}}\nx\n", "{\"s\":1}", "\nx\n");
    expect("{{#s}}x{{/s}}\n", "{\"s\":1}", "x\n");
    /* variables are never standalone */
    expect("a\n  {{v}}  \nb\n", "{\"v\":\"\"}", "a\n    \nb\n");
    expect("a\n{{{v}}}\nb", "{}", "a\n\nb");
    /* a lone CR is not a line end */
    expect("{{#s}}\rx{{/s}}", "{\"s\":1}", "\rx");
}

/* ---- errors ---------------------------------------------------------------- */

static void test_error_unclosed_section(void **state)
{
    (void)state;
    expect_fail("a\nb\n{{#web}}\nserver\n", "{}", "line 3: unclosed section 'web'");
    expect_fail("{{#a}}\n{{^b}}\n{{/b}}\n{{#c}}x", "{}", "line 4: unclosed section 'c'");
    expect_fail("{{#a}}{{#b}}{{/b}}", "{}", "line 1: unclosed section 'a'");
}

static void test_error_mismatched_close(void **state)
{
    (void)state;
    expect_fail("1\n2\n3\n{{#web}}\n5\n6\n{{/db}}\n", "{}",
                "line 7: '{{/db}}' closes section 'web'");
    expect_fail("{{#a}}{{#b}}\n{{/a}}{{/b}}", "{}", "line 2: '{{/a}}' closes section 'b'");
    expect_fail("ok\n{{/web}}", "{}", "line 2: '{{/web}}' closes no open section");
    expect_fail("{{#a}}{{/a}}{{/a}}", "{}", "line 1: '{{/a}}' closes no open section");
}

static void test_error_unclosed_tag(void **state)
{
    (void)state;
    expect_fail("a\nb {{name\n", "{}", "line 2: unclosed tag '{{'");
    expect_fail("{{", "{}", "line 1: unclosed tag '{{'");
    expect_fail("x {{a}", "{}", "line 1: unclosed tag '{{'");
    expect_fail("\n\n{{! never closed", "{}", "line 3: unclosed tag '{{'");
    expect_fail("{{a\nb {{c}}", "{}", "line 1: unclosed tag '{{'");
    expect_fail("{{{a}} b", "{}", "line 1: '{{{a}}' must close with '}}}'");
    expect_fail("{{{a}}", "{}", "line 1: '{{{a}}' must close with '}}}'");
}

static void test_error_names(void **state)
{
    (void)state;
    expect_fail("{{}}", "{}", "line 1: empty name in tag '{{}}'");
    expect_fail("\n{{# }}{{/}}", "{}", "line 2: empty name in tag '{{# }}'");
    expect_fail("{{{ }}}", "{}", "line 1: empty name in tag '{{{ }}}'");
    expect_fail("{{&}}", "{}", "line 1: empty name in tag '{{&}}'");
    expect_fail("{{a b}}", "{}", "line 1: name 'a b' contains ' '");
    expect_fail("{{a\tb}}", "{}", "line 1: name 'a\\x09b' contains '\\x09'");
    expect_fail("{{a}b}}", "{}", "line 1: name 'a}b' contains '}'");
    expect_fail("{{a..b}}", "{}", "line 1: name 'a..b' has an empty part");
    expect_fail("{{.a}}", "{}", "line 1: name '.a' has an empty part");
    expect_fail("{{#a.}}{{/a.}}", "{}", "line 1: name 'a.' has an empty part");
    expect_fail("{{..}}", "{}", "line 1: name '..' has an empty part");
    expect_fail("{{> part}}", "{}",
                "line 1: '{{>' is not supported (no partials or delimiter changes)");
    expect_fail("{{=<% %>=}}", "{}",
                "line 1: '{{=' is not supported (no partials or delimiter changes)");
}

static void test_name_length(void **state)
{
    char tmpl[2 * CFM_TEMPLATE_MAX_NAME + 64], key[CFM_TEMPLATE_MAX_NAME + 2];
    json_t *v;
    char *out = NULL, *vars;
    struct cfm_why why = {{0}};

    (void)state;
    memset(key, 'k', CFM_TEMPLATE_MAX_NAME);
    key[CFM_TEMPLATE_MAX_NAME] = '\0';
    v = json_pack("{s:s}", key, "long ok");
    vars = json_dumps(v, 0);
    snprintf(tmpl, sizeof tmpl, "{{ %s }}", key);
    expect(tmpl, vars, "long ok");
    snprintf(tmpl, sizeof tmpl, "\n{{#%s}}{{/%s}}", key, key);
    expect(tmpl, vars, "\n");
    key[CFM_TEMPLATE_MAX_NAME] = 'k';
    key[CFM_TEMPLATE_MAX_NAME + 1] = '\0';
    snprintf(tmpl, sizeof tmpl, "\n{{%s}}", key);
    assert_int_equal(cfm_template_render(tmpl, strlen(tmpl), v, BIG_OUT, &out, NULL, &why),
                     CFM_EINVAL);
    assert_null(out);
    assert_string_equal(why.text, "line 2: name longer than 256 bytes");
    free(vars);
    json_decref(v);
}

/* n sections opened inside each other, then closed, around "x". */
static char *nested(size_t n)
{
    size_t cap = n * 14 + 2, o = 0, i;
    char *t = malloc(cap);

    assert_non_null(t);
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(t + o, cap - o, "{{#s}}\n");
    o += (size_t)snprintf(t + o, cap - o, "x");
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(t + o, cap - o, "{{/s}}");
    return t;
}

static void test_nesting_depth(void **state)
{
    char *t = nested(CFM_TEMPLATE_MAX_DEPTH);

    (void)state;
    expect(t, "{\"s\":true}", "x");
    free(t);
    t = nested(CFM_TEMPLATE_MAX_DEPTH + 1);
    expect_fail(t, "{\"s\":true}", "line 33: sections nested deeper than 32");
    free(t);
    /* inverted sections count too */
    expect_fail("{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}"
                "{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}"
                "{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{^b}}",
                "{}", "line 1: sections nested deeper than 32");
}

static void test_errors_do_not_depend_on_data(void **state)
{
    (void)state;
    /* a section that would be skipped is still checked */
    expect_fail("{{#never}}{{a b}}{{/never}}", "{}", "line 1: name 'a b' contains ' '");
    expect_fail("{{^always}}{{/x}}", "{\"always\":true}",
                "line 1: '{{/x}}' closes section 'always'");
}

static void test_quoted_in_messages(void **state)
{
    (void)state;
    /* control bytes reach the message as \xNN, never raw */
    expect_fail("{{#a\x1b[31m}}", "{}", "line 1: name 'a\\x1b[31m' contains '\\x1b'");
    expect_fail("{{#\xc3\xa9}}", "{}", "line 1: unclosed section '\\xc3\\xa9'");
}

/* ---- bounds and arguments ---------------------------------------------------- */

static void test_output_cap(void **state)
{
    char *out = NULL;
    size_t out_len = 0;
    json_t *v = J("{\"w\":[\"aa\",\"bb\",\"cc\"]}");

    (void)state;
    /* exactly at the cap is fine */
    assert_int_equal(cfm_template_render("{{#w}}{{.}}{{/w}}", 17, v, 6, &out, &out_len, NULL),
                     CFM_OK);
    assert_int_equal(out_len, 6);
    assert_string_equal(out, "aabbcc");
    free(out);
    expect_fail_cap("{{#w}}{{.}}{{/w}}", "{\"w\":[\"aa\",\"bb\",\"cc\"]}", 5, CFM_ETOOBIG,
                    "rendered output exceeds 5 bytes");
    expect_fail_cap("12345678901", "{}", 10, CFM_ETOOBIG, "rendered output exceeds 10 bytes");
    expect_fail_cap("{{o}}", "{\"o\":{\"k\":\"vvvvvvvvvv\"}}", 8, CFM_ETOOBIG,
                    "rendered output exceeds 8 bytes");
    expect_fail_cap("x", "{}", 0, CFM_ETOOBIG, "rendered output exceeds 0 bytes");
    /* empty output fits a cap of 0 */
    assert_int_equal(cfm_template_render("{{#w}}{{/w}}{{n}}", 17, v, 0, &out, &out_len, NULL),
                     CFM_OK);
    assert_int_equal(out_len, 0);
    assert_string_equal(out, "");
    free(out);
    json_decref(v);
}

static void test_template_too_long(void **state)
{
    size_t len = CFM_MAX_PAYLOAD + 1;
    char *t = malloc(len);
    char *out = NULL;
    struct cfm_why why = {{0}};

    (void)state;
    assert_non_null(t);
    memset(t, 'x', len);
    assert_int_equal(cfm_template_render(t, len, NULL, SIZE_MAX, &out, NULL, &why), CFM_ETOOBIG);
    assert_null(out);
    assert_string_equal(why.text, "template is longer than 1048576 bytes");
    /* at the limit it renders */
    assert_int_equal(cfm_template_render(t, len - 1, NULL, SIZE_MAX, &out, NULL, &why), CFM_OK);
    assert_int_equal(strlen(out), len - 1);
    free(out);
    free(t);
}

static void test_step_bound(void **state)
{
    json_t *v = json_object();
    json_t *a = json_array();
    char *out = NULL;
    struct cfm_why why = {{0}};
    const char *t = "{{#a}}{{#a}}{{#a}}{{#a}}{{#a}}{{/a}}{{/a}}{{/a}}{{/a}}{{/a}}";
    int i;

    (void)state;
    for (i = 0; i < 100; i++)
        json_array_append_new(a, json_integer(i));
    json_object_set_new(v, "a", a);
    /* 100^5 iterations that write nothing: refused, not run for hours */
    assert_int_equal(cfm_template_render(t, strlen(t), v, BIG_OUT, &out, NULL, &why), CFM_ETOOBIG);
    assert_null(out);
    assert_string_equal(why.text,
                        "rendering takes more than 10000000 steps (sections repeat too often)");
    /* 100^3 is fine */
    t = "{{#a}}{{#a}}{{#a}}{{/a}}{{/a}}{{/a}}";
    assert_int_equal(cfm_template_render(t, strlen(t), v, BIG_OUT, &out, NULL, &why), CFM_OK);
    assert_string_equal(out, "");
    free(out);
    json_decref(v);
}

static void test_bad_arguments(void **state)
{
    struct cfm_why why = {{0}};
    char *out = NULL;
    json_t *arr = json_array();

    (void)state;
    assert_int_equal(cfm_template_render("x", 1, arr, 10, &out, NULL, &why), CFM_EINVAL);
    assert_string_equal(why.text, "template variables must be a JSON object");
    assert_null(out);
    assert_int_equal(cfm_template_render(NULL, 1, NULL, 10, &out, NULL, &why), CFM_EINVAL);
    assert_int_equal(cfm_template_render("x", 1, NULL, 10, NULL, NULL, &why), CFM_EINVAL);
    /* an empty template may be NULL; why may be NULL */
    assert_int_equal(cfm_template_render(NULL, 0, NULL, 10, &out, NULL, NULL), CFM_OK);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(cfm_template_render("{{", 2, NULL, 10, &out, NULL, NULL), CFM_EINVAL);
    assert_null(out);
    json_decref(arr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lb_conf_example),
        cmocka_unit_test(test_plain_text),
        cmocka_unit_test(test_strings_as_is),
        cmocka_unit_test(test_synonyms),
        cmocka_unit_test(test_numbers_and_booleans),
        cmocka_unit_test(test_null_and_missing),
        cmocka_unit_test(test_objects_and_arrays_as_json),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_dotted_names),
        cmocka_unit_test(test_current_item),
        cmocka_unit_test(test_section_values),
        cmocka_unit_test(test_section_object_pushed),
        cmocka_unit_test(test_nested_sections_fall_back),
        cmocka_unit_test(test_inverted_sections),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_standalone_lines),
        cmocka_unit_test(test_not_standalone),
        cmocka_unit_test(test_error_unclosed_section),
        cmocka_unit_test(test_error_mismatched_close),
        cmocka_unit_test(test_error_unclosed_tag),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_name_length),
        cmocka_unit_test(test_nesting_depth),
        cmocka_unit_test(test_errors_do_not_depend_on_data),
        cmocka_unit_test(test_quoted_in_messages),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_template_too_long),
        cmocka_unit_test(test_step_bound),
        cmocka_unit_test(test_bad_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
