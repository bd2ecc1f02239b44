/*
 * test_topic.c - unit tests of the wire edges of the models library: the
 * topic builder and parser (topic.c), cloud events (event.c) and the time and
 * UUID helpers they rely on (util.c). These are the first code every byte
 * from the network meets, so each refusal is checked with the reason an
 * operator will read in the log.
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

#include "event.h"
#include "topic.h"
#include "util.h"

#define ALLOWED "(allowed: letters, digits, '_', '.', '-')"

/* A string of n copies of c in a static buffer; one at a time. */
static const char *repeat(char c, size_t n)
{
    static char buf[4096];

    assert_true(n < sizeof buf);
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* snprintf that fails the test instead of truncating. */
static void fmt(char *buf, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt(char *buf, size_t size, const char *format, ...)
{
    va_list ap;
    int n;

    va_start(ap, format);
    n = vsnprintf(buf, size, format, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < size);
}

/* ---- topic.c: building ----------------------------------------------------- */

static void expect_build(enum cfm_topic_type type, const char *a, const char *b, const char *c,
                         const char *want)
{
    char buf[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};

    assert_int_equal(cfm_topic_build(buf, sizeof buf, type, a, b, c, &why), CFM_OK);
    assert_string_equal(buf, want);
}

static void test_build_every_type(void **state)
{
    (void)state;
    expect_build(CFM_TOPIC_SITE_STATUS, "site-a", NULL, NULL, "cfm/v1/site/site-a/status");
    expect_build(CFM_TOPIC_CTL_REQ, "site-a", NULL, NULL, "cfm/v1/site/site-a/ctl/req");
    expect_build(CFM_TOPIC_EVENT, "shop", "dr", NULL, "cfm/v1/sys/shop/event/dr");
    expect_build(CFM_TOPIC_OBJ, "shop", "VMClass", "small", "cfm/v1/sys/shop/obj/VMClass/small");
    expect_build(CFM_TOPIC_SYNC, "shop", NULL, NULL, "cfm/v1/sys/shop/sync");
    expect_build(CFM_TOPIC_RUN, "shop", "run-1", NULL, "cfm/v1/sys/shop/run/run-1");
    expect_build(CFM_TOPIC_AGENT_REQ, "vm-1", NULL, NULL, "cfm/v1/agent/vm-1/req");
    expect_build(CFM_TOPIC_AGENT_RES, "vm-1", "r.7", NULL, "cfm/v1/agent/vm-1/res/r.7");
    expect_build(CFM_TOPIC_AGENT_STATUS, "vm-1", NULL, NULL, "cfm/v1/agent/vm-1/status");
    expect_build(CFM_TOPIC_CTL_RES, "cfmctl-0a1b", NULL, NULL, "cfm/v1/ctl/res/cfmctl-0a1b");
    /* Parts a pattern does not use are ignored, whatever they hold. */
    expect_build(CFM_TOPIC_SYNC, "shop", "a/b", "#", "cfm/v1/sys/shop/sync");
    /* The longest ID is a valid level. */
    {
        char want[CFM_MAX_TOPIC + 1];
        fmt(want, sizeof want, "cfm/v1/sys/shop/event/%s", repeat('e', CFM_MAX_ID));
        expect_build(CFM_TOPIC_EVENT, "shop", repeat('e', CFM_MAX_ID), NULL, want);
    }
}

static void expect_build_refused(enum cfm_topic_type type, const char *a, const char *b,
                                 const char *c, const char *msg)
{
    char buf[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};

    assert_int_equal(cfm_topic_build(buf, sizeof buf, type, a, b, c, &why), CFM_EINVAL);
    assert_string_equal(why.text, msg);
}

static void test_build_refuses_bad_levels(void **state)
{
    char msg[CFM_WHY_MAX];

    (void)state;
    expect_build_refused(CFM_TOPIC_EVENT, "shop", "a/b", NULL,
                         "topic level 'a/b' contains '/' " ALLOWED);
    expect_build_refused(CFM_TOPIC_EVENT, "sh+p", "dr", NULL,
                         "topic level 'sh+p' contains '+' " ALLOWED);
    expect_build_refused(CFM_TOPIC_OBJ, "shop", "VMClass", "#",
                         "topic level '#' contains '#' " ALLOWED);
    expect_build_refused(CFM_TOPIC_SITE_STATUS, "", NULL, NULL, "topic level is empty");
    expect_build_refused(CFM_TOPIC_OBJ, "shop", "VMClass", NULL, "topic level is missing");
    expect_build_refused(CFM_TOPIC_SITE_STATUS, "a b", NULL, NULL,
                         "topic level 'a b' contains ' ' " ALLOWED);
    fmt(msg, sizeof msg, "topic level '%s\xe2\x80\xa6' is longer than 64 characters",
             repeat('x', 16));
    expect_build_refused(CFM_TOPIC_CTL_REQ, repeat('x', CFM_MAX_ID + 1), NULL, NULL, msg);
    expect_build_refused((enum cfm_topic_type)99, "a", NULL, NULL, "unknown topic type 99");
}

static void test_build_buffer_too_small(void **state)
{
    const char *want = "cfm/v1/sys/shop/obj/VMClass/small";
    char buf[64];
    struct cfm_why why = {{0}};

    (void)state;
    /* Exactly enough (the NUL included) works; one byte less does not. */
    assert_int_equal(cfm_topic_build(buf, strlen(want) + 1, CFM_TOPIC_OBJ, "shop", "VMClass",
                                     "small", &why),
                     CFM_OK);
    assert_string_equal(buf, want);
    assert_int_equal(cfm_topic_build(buf, strlen(want), CFM_TOPIC_OBJ, "shop", "VMClass",
                                     "small", &why),
                     CFM_ETOOBIG);
    assert_string_equal(why.text, "topic longer than 32 bytes");
    /* Too small for the root itself. */
    assert_int_equal(cfm_topic_build(buf, 4, CFM_TOPIC_SYNC, "shop", NULL, NULL, &why),
                     CFM_ETOOBIG);
    assert_string_equal(why.text, "topic buffer too small");
    /* why may be NULL. */
    assert_int_equal(cfm_topic_build(buf, 4, CFM_TOPIC_SYNC, "shop", NULL, NULL, NULL),
                     CFM_ETOOBIG);
    assert_int_equal(cfm_topic_build(buf, sizeof buf, CFM_TOPIC_SYNC, "a/b", NULL, NULL, NULL),
                     CFM_EINVAL);
}

/* ---- topic.c: parsing ------------------------------------------------------ */

static void expect_parse(const char *topic, enum cfm_topic_type type, const char *site,
                         const char *system, const char *name, const char *id)
{
    struct cfm_topic t;
    struct cfm_why why = {{0}};

    assert_int_equal(cfm_topic_parse(topic, &t, &why), CFM_OK);
    assert_int_equal(t.type, type);
    assert_string_equal(t.site, site);
    assert_string_equal(t.system, system);
    assert_string_equal(t.name, name);
    assert_string_equal(t.id, id);
}

static void test_parse_every_type(void **state)
{
    (void)state;
    expect_parse("cfm/v1/site/site-a/status", CFM_TOPIC_SITE_STATUS, "site-a", "", "", "");
    expect_parse("cfm/v1/site/site-a/ctl/req", CFM_TOPIC_CTL_REQ, "site-a", "", "", "");
    expect_parse("cfm/v1/sys/shop/event/dr", CFM_TOPIC_EVENT, "", "shop", "dr", "");
    expect_parse("cfm/v1/sys/shop/obj/VMClass/small", CFM_TOPIC_OBJ, "", "shop", "VMClass",
                 "small");
    expect_parse("cfm/v1/sys/shop/sync", CFM_TOPIC_SYNC, "", "shop", "", "");
    expect_parse("cfm/v1/sys/shop/run/run-1", CFM_TOPIC_RUN, "", "shop", "", "run-1");
    expect_parse("cfm/v1/agent/vm-1/req", CFM_TOPIC_AGENT_REQ, "", "", "vm-1", "");
    expect_parse("cfm/v1/agent/vm-1/res/r.7", CFM_TOPIC_AGENT_RES, "", "", "vm-1", "r.7");
    expect_parse("cfm/v1/agent/vm-1/status", CFM_TOPIC_AGENT_STATUS, "", "", "vm-1", "");
    expect_parse("cfm/v1/ctl/res/cfmctl-0a1b", CFM_TOPIC_CTL_RES, "", "", "cfmctl-0a1b", "");
    /* A literal of one pattern may be an ID of another: "status" as a site. */
    expect_parse("cfm/v1/site/status/status", CFM_TOPIC_SITE_STATUS, "status", "", "", "");
    expect_parse("cfm/v1/sys/sys/obj/obj/obj", CFM_TOPIC_OBJ, "", "sys", "obj", "obj");
    expect_parse("cfm/v1/sys/shop/event/" "0123456789012345678901234567890123456789"
                 "012345678901234567890123",
                 CFM_TOPIC_EVENT, "", "shop",
                 "0123456789012345678901234567890123456789012345678901234567890123", "");
}

/* Builds every type from parts, parses the result and builds it again. */
static void test_round_trip(void **state)
{
    static const struct {
        enum cfm_topic_type type;
        const char *a, *b, *c;
    } cases[] = {
        {CFM_TOPIC_SITE_STATUS, "Site_A-1.2", NULL, NULL},
        {CFM_TOPIC_CTL_REQ, "s", NULL, NULL},
        {CFM_TOPIC_EVENT, "shop", "scale_out", NULL},
        {CFM_TOPIC_OBJ, "shop", "BusinessSystemElement", "web"},
        {CFM_TOPIC_SYNC, "shop.eu", NULL, NULL},
        {CFM_TOPIC_RUN, "shop", "9f1c-00", NULL},
        {CFM_TOPIC_AGENT_REQ, "vm-1", NULL, NULL},
        {CFM_TOPIC_AGENT_RES, "vm-1", "42", NULL},
        {CFM_TOPIC_AGENT_STATUS, "vm.2", NULL, NULL},
        {CFM_TOPIC_CTL_RES, "cfmctl-1", NULL, NULL},
    };
    char first[CFM_MAX_TOPIC + 1], second[CFM_MAX_TOPIC + 1];
    struct cfm_topic t;
    struct cfm_why why = {{0}};
    const char *parts[3];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cfm_topic_build(first, sizeof first, cases[i].type, cases[i].a,
                                         cases[i].b, cases[i].c, &why),
                         CFM_OK);
        assert_int_equal(cfm_topic_parse(first, &t, &why), CFM_OK);
        assert_int_equal(t.type, cases[i].type);
        /* Put the parsed fields back in topic order. */
        switch (t.type) {
        case CFM_TOPIC_SITE_STATUS:
        case CFM_TOPIC_CTL_REQ:
            parts[0] = t.site, parts[1] = NULL, parts[2] = NULL;
            break;
        case CFM_TOPIC_AGENT_REQ:
        case CFM_TOPIC_AGENT_STATUS:
        case CFM_TOPIC_CTL_RES:
            parts[0] = t.name, parts[1] = NULL, parts[2] = NULL;
            break;
        case CFM_TOPIC_AGENT_RES:
            parts[0] = t.name, parts[1] = t.id, parts[2] = NULL;
            break;
        case CFM_TOPIC_RUN:
            parts[0] = t.system, parts[1] = t.id, parts[2] = NULL;
            break;
        case CFM_TOPIC_SYNC:
            parts[0] = t.system, parts[1] = NULL, parts[2] = NULL;
            break;
        default:
            parts[0] = t.system, parts[1] = t.name, parts[2] = t.id;
            break;
        }
        assert_string_equal(parts[0], cases[i].a);
        if (cases[i].b)
            assert_string_equal(parts[1], cases[i].b);
        if (cases[i].c)
            assert_string_equal(parts[2], cases[i].c);
        assert_int_equal(cfm_topic_build(second, sizeof second, t.type, parts[0], parts[1],
                                         parts[2], &why),
                         CFM_OK);
        assert_string_equal(first, second);
    }
}

static void expect_parse_refused(const char *topic, const char *msg)
{
    struct cfm_topic t;
    struct cfm_why why = {{0}};

    memset(&t, 'z', sizeof t);
    assert_int_equal(cfm_topic_parse(topic, &t, &why), CFM_EINVAL);
    if (msg)
        assert_string_equal(why.text, msg);
    /* Nothing of a refused topic is left behind. */
    assert_string_equal(t.site, "");
    assert_string_equal(t.system, "");
    assert_string_equal(t.name, "");
    assert_string_equal(t.id, "");
}

static void test_parse_refuses(void **state)
{
    char topic[2 * CFM_MAX_TOPIC];
    char msg[CFM_WHY_MAX];

    (void)state;
    /* Wrong root. */
    expect_parse_refused("cfm/v2/site/a/status", "topic 'cfm/v2/site/a/status' is not a cfm/v1 topic");
    expect_parse_refused("cfx/v1/site/a/status", "topic 'cfx/v1/site/a/status' is not a cfm/v1 topic");
    expect_parse_refused("/cfm/v1/site/a/status", "topic '/cfm/v1/site/a/status' is not a cfm/v1 topic");
    expect_parse_refused("CFM/v1/site/a/status", NULL);
    expect_parse_refused("", "topic '' is not a cfm/v1 topic");
    expect_parse_refused("cfm/v1", "topic 'cfm/v1' is not a cfm/v1 topic");
    expect_parse_refused(NULL, "topic missing or longer than 512 bytes");
    /* Too few, too many levels, unknown literals. */
    expect_parse_refused("cfm/v1/site", "topic 'cfm/v1/site' matches no cfm/v1 topic");
    expect_parse_refused("cfm/v1/site/a", "topic 'cfm/v1/site/a' matches no cfm/v1 topic");
    expect_parse_refused("cfm/v1/site/a/status/x",
                         "topic 'cfm/v1/site/a/status/x' matches no cfm/v1 topic");
    expect_parse_refused("cfm/v1/sys/shop/obj/VMClass",
                         "topic 'cfm/v1/sys/shop/obj/VMClass' matches no cfm/v1 topic");
    expect_parse_refused("cfm/v1/sys/shop/obj/VMClass/small/x",
                         "topic 'cfm/v1/sys/shop/obj/VMClass/small/x' is not a cfm/v1 topic");
    expect_parse_refused("cfm/v1/a/b/c/d/e/f/g/h", NULL);
    expect_parse_refused("cfm/v1/site/a/stat", "topic 'cfm/v1/site/a/stat' matches no cfm/v1 topic");
    expect_parse_refused("cfm/v1/sys/shop/events/dr",
                         "topic 'cfm/v1/sys/shop/events/dr' matches no cfm/v1 topic");
    expect_parse_refused("cfm/v1/site/a/status/", "topic 'cfm/v1/site/a/status/' matches no cfm/v1 topic");
    /* Bad ID levels. */
    expect_parse_refused("cfm/v1/site/a+b/status", "topic level 'a+b' contains '+' " ALLOWED);
    expect_parse_refused("cfm/v1/site/#/status", "topic level '#' contains '#' " ALLOWED);
    expect_parse_refused("cfm/v1/site/+/status", "topic level '+' contains '+' " ALLOWED);
    expect_parse_refused("cfm/v1/site//status", "topic level is empty");
    expect_parse_refused("cfm/v1/sys/shop/obj/VMClass/", "topic level is empty");
    expect_parse_refused("cfm/v1/sys/shop/event/d r", "topic level 'd r' contains ' ' " ALLOWED);
    expect_parse_refused("cfm/v1/sys/shop/event/d\x1b", "topic level 'd\\x1b' contains '\\x1b' " ALLOWED);
    expect_parse_refused("cfm/v1/sys/sh\xc3\xa9/sync", "topic level 'sh\\xc3\\xa9' contains '\\xc3' " ALLOWED);
    /* A '/' inside an ID cannot be told from a level: too many levels. */
    expect_parse_refused("cfm/v1/sys/shop/obj/VMClass/a/b", NULL);
    /* A level over 64 characters, in any position. */
    fmt(topic, sizeof topic, "cfm/v1/site/%s/status", repeat('s', CFM_MAX_ID + 1));
    fmt(msg, sizeof msg, "topic '%.128s' is not a cfm/v1 topic", topic);
    expect_parse_refused(topic, msg);
    fmt(topic, sizeof topic, "cfm/v1/sys/shop/obj/VMClass/%s", repeat('i', CFM_MAX_ID + 1));
    expect_parse_refused(topic, NULL);
    fmt(topic, sizeof topic, "cfm/v1/%s/a/status", repeat('r', 200));
    expect_parse_refused(topic, NULL);
    /* Longer than the topic limit. */
    fmt(topic, sizeof topic, "cfm/v1/sys/shop/event/%s", repeat('e', CFM_MAX_TOPIC));
    expect_parse_refused(topic, "topic missing or longer than 512 bytes");
    /* why may be NULL. */
    {
        struct cfm_topic t;
        assert_int_equal(cfm_topic_parse("cfm/v1/site/a/b/c/d", &t, NULL), CFM_EINVAL);
        assert_int_equal(cfm_topic_parse("cfm/v1/site/a/status", &t, NULL), CFM_OK);
    }
}

/* ---- util.c ---------------------------------------------------------------- */

static void expect_time(const char *text, int64_t want)
{
    int64_t ms = -1;

    assert_int_equal(cfm_time_parse(text, &ms), CFM_OK);
    assert_int_equal(ms, want);
}

static void test_time_round_trip(void **state)
{
    char buf[CFM_TIME_LEN];
    int64_t before, after, ms;

    (void)state;
    for (int i = 0; i < 50; i++) {
        before = cfm_time_ms();
        cfm_time_now(buf);
        after = cfm_time_ms();
        /* "2026-11-22T10:00:00.123Z": 24 bytes, milliseconds, UTC. */
        assert_int_equal(strlen(buf), 24);
        assert_int_equal(buf[10], 'T');
        assert_int_equal(buf[19], '.');
        assert_int_equal(buf[23], 'Z');
        assert_int_equal(cfm_time_parse(buf, &ms), CFM_OK);
        assert_true(ms >= before && ms <= after);
    }
}

static void test_time_parse_values(void **state)
{
    (void)state;
    expect_time("1970-01-01T00:00:00Z", 0);
    expect_time("1970-01-01T00:00:01Z", 1000);
    expect_time("2000-01-01T00:00:00.123Z", INT64_C(946684800123));
    expect_time("2026-11-22T10:00:00Z", INT64_C(1795341600000));
    expect_time("2026-11-22T10:00:00.000Z", INT64_C(1795341600000));
    /* A fraction is a fraction of a second, not a count of milliseconds. */
    expect_time("2026-11-22T10:00:00.5Z", INT64_C(1795341600500));
    expect_time("2026-11-22T10:00:00.05Z", INT64_C(1795341600050));
    expect_time("2026-11-22T10:00:00.999Z", INT64_C(1795341600999));
    /* Digits past milliseconds are dropped, not rounded. */
    expect_time("2026-11-22T10:00:00.123999Z", INT64_C(1795341600123));
    expect_time("2024-02-29T23:59:59.001Z", INT64_C(1709251199001));
}

static void test_time_parse_refuses(void **state)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "2026-11-22",
        "2026-11-22T10:00",
        "2026-11-22T10:00:00",        /* no zone */
        "2026-11-22T10:00:00z",
        "2026-11-22T10:00:00.Z",      /* a dot without digits */
        "2026-11-22T10:00:00.5",
        "2026-11-22T10:00:00ZZ",
        "2026-11-22T10:00:00Z ",
        "2026-11-22T10:00:00+01:00",  /* UTC only */
        "2026-11-22T10:00:00.5+00:00",
        "2026-11-22 10:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-22T25:00:00Z",
        "2026-11-22T10:61:00Z",
        "2026-11-22T10:00:00.-5Z",
        "2026-11-22T10:00:00.5xZ",
        "yesterday at noon",
    };
    int64_t ms = 42;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cfm_time_parse(bad[i], &ms) != CFM_EINVAL)
            fail_msg("cfm_time_parse accepted '%s'", bad[i]);
        assert_int_equal(ms, 42); /* untouched on failure */
    }
    assert_int_equal(cfm_time_parse(NULL, &ms), CFM_EINVAL);
}

static bool uuid_shape(const char *u)
{
    if (strlen(u) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = u[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    /* Version 4, variant 10xx. */
    return u[14] == '4' && strchr("89ab", u[19]) != NULL;
}

static void test_uuid(void **state)
{
    char a[CFM_UUID_LEN], b[CFM_UUID_LEN];

    (void)state;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(cfm_uuid(a), CFM_OK);
        assert_int_equal(cfm_uuid(b), CFM_OK);
        if (!uuid_shape(a))
            fail_msg("not a v4 UUID: '%s'", a);
        assert_true(uuid_shape(b));
        assert_string_not_equal(a, b);
    }
}

/* ---- event.c ----------------------------------------------------------------- */

static const char *str(json_t *ev, const char *key)
{
    const char *s = json_string_value(json_object_get(ev, key));

    if (!s)
        fail_msg("event field '%s' missing or not a string", key);
    return s;
}

/* Parses text as an event of (shop, dr) from site-a; fails the test unless
 * it is accepted. Returns a new reference. */
static json_t *accept(const char *text, size_t len)
{
    struct cfm_why why = {{0}};
    json_t *ev = NULL;

    if (cfm_event_parse(text, len, "shop", "dr", "site-a", &ev, &why) != CFM_OK)
        fail_msg("event refused: %s: %.*s", why.text, (int)len, text ? text : "");
    assert_non_null(ev);
    assert_int_equal(json_object_size(ev), 6);
    assert_string_equal(str(ev, "system"), "shop");
    assert_string_equal(str(ev, "type"), "dr");
    assert_true(json_is_object(json_object_get(ev, "payload")));
    return ev;
}

/* Checks the fields the parser completes: a fresh id, this origin, now. */
static void assert_completed(json_t *ev, int64_t before, int64_t after)
{
    int64_t ms;

    assert_true(uuid_shape(str(ev, "id")));
    assert_string_equal(str(ev, "origin"), "site-a");
    assert_int_equal(cfm_time_parse(str(ev, "time"), &ms), CFM_OK);
    assert_true(ms >= before && ms <= after);
}

static void test_event_completes_empty(void **state)
{
    static const char *const texts[] = {"{}", "", " { } ", "{\"payload\":{}}"};
    int64_t before, after;
    json_t *ev, *other;

    (void)state;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        before = cfm_time_ms();
        ev = accept(texts[i], strlen(texts[i]));
        after = cfm_time_ms();
        assert_completed(ev, before, after);
        assert_int_equal(json_object_size(json_object_get(ev, "payload")), 0);
        /* Each completion is a new event: a new id. */
        other = accept(texts[i], strlen(texts[i]));
        assert_string_not_equal(str(ev, "id"), str(other, "id"));
        json_decref(other);
        json_decref(ev);
    }
    /* An empty payload need not point anywhere. */
    ev = accept(NULL, 0);
    assert_true(uuid_shape(str(ev, "id")));
    json_decref(ev);
}

static void test_event_keeps_payload(void **state)
{
    const char *text = "{\"payload\":{\"target_site\":\"site-b\",\"n\":[1,{\"x\":null}]}}";
    json_t *ev, *want;
    int64_t before, after;

    (void)state;
    before = cfm_time_ms();
    ev = accept(text, strlen(text));
    after = cfm_time_ms();
    assert_completed(ev, before, after);
    want = json_loads("{\"target_site\":\"site-b\",\"n\":[1,{\"x\":null}]}", 0, NULL);
    assert_true(json_equal(json_object_get(ev, "payload"), want));
    json_decref(want);
    json_decref(ev);
}

static void test_event_keeps_given_fields(void **state)
{
    const char *text = "{\"id\":\"9f1c-1\",\"type\":\"dr\",\"system\":\"shop\","
                       "\"origin\":\"site-b\",\"time\":\"2026-11-22T10:00:00Z\","
                       "\"payload\":{\"k\":\"v\"}}";
    /* The text need not be NUL-terminated: only len bytes count. */
    char buf[512];
    size_t len = strlen(text);
    json_t *ev;

    (void)state;
    memcpy(buf, text, len);
    memcpy(buf + len, "garbage", 8);
    ev = accept(buf, len);
    assert_string_equal(str(ev, "id"), "9f1c-1");
    assert_string_equal(str(ev, "origin"), "site-b");
    assert_string_equal(str(ev, "time"), "2026-11-22T10:00:00Z");
    assert_string_equal(str(json_object_get(ev, "payload"), "k"), "v");
    json_decref(ev);

    /* Only some of them: the rest completed. */
    text = "{\"id\":\"e1\",\"time\":\"2026-11-22T10:00:00.5Z\"}";
    ev = accept(text, strlen(text));
    assert_string_equal(str(ev, "id"), "e1");
    assert_string_equal(str(ev, "origin"), "site-a");
    assert_string_equal(str(ev, "time"), "2026-11-22T10:00:00.5Z");
    json_decref(ev);
}

static void test_event_new(void **state)
{
    json_t *ev, *payload = json_pack("{s:s}", "target_site", "site-b");
    json_t *again = NULL;
    struct cfm_why why = {{0}};
    char *text;

    (void)state;
    ev = cfm_event_new("shop", "dr", "site-a", payload);
    assert_non_null(ev);
    assert_true(uuid_shape(str(ev, "id")));
    assert_string_equal(str(ev, "system"), "shop");
    assert_string_equal(str(ev, "type"), "dr");
    assert_string_equal(str(ev, "origin"), "site-a");
    assert_string_equal(str(json_object_get(ev, "payload"), "target_site"), "site-b");
    /* What cfm_event_new writes, cfm_event_parse takes back unchanged. */
    text = json_dumps(ev, JSON_COMPACT);
    assert_int_equal(cfm_event_parse(text, strlen(text), "shop", "dr", "site-z", &again, &why),
                     CFM_OK);
    assert_true(json_equal(ev, again));
    free(text);
    json_decref(again);
    json_decref(ev);

    ev = cfm_event_new("shop", "deploy", "site-a", NULL);
    assert_non_null(ev);
    assert_true(json_is_object(json_object_get(ev, "payload")));
    assert_int_equal(json_object_size(json_object_get(ev, "payload")), 0);
    json_decref(ev);
}

/* Refused with CFM_EINVAL (or err) and exactly msg (or a message starting with
 * prefix when msg ends in '*'); *out stays NULL. */
static void expect_event_refused_len(const char *text, size_t len, enum cfm_err err,
                                     const char *msg)
{
    struct cfm_why why = {{0}};
    json_t *ev = (json_t *)&why; /* must be reset to NULL */
    size_t n = strlen(msg);

    if (cfm_event_parse(text, len, "shop", "dr", "site-a", &ev, &why) != err)
        fail_msg("event not refused with %d: %.200s (why: %s)", (int)err, text, why.text);
    assert_null(ev);
    if (n && msg[n - 1] == '*') {
        if (strncmp(why.text, msg, n - 1) != 0)
            fail_msg("expected '%s', got '%s'", msg, why.text);
    } else {
        assert_string_equal(why.text, msg);
    }
}

static void expect_event_refused(const char *text, const char *msg)
{
    expect_event_refused_len(text, strlen(text), CFM_EINVAL, msg);
}

static void test_event_refuses(void **state)
{
    char text[512];

    (void)state;
    /* Not JSON, or not an object. */
    expect_event_refused("{", "event is not JSON: line 1, column 1: *");
    expect_event_refused("{\"payload\":}", "event is not JSON: line 1, column 12: *");
    expect_event_refused("{\"id\":\"a\",}", "event is not JSON: *");
    expect_event_refused("nonsense", "event is not JSON: *");
    expect_event_refused("{}{}", "event is not JSON: *");
    expect_event_refused("\"dr\"", "event is not JSON: *");
    expect_event_refused("42", "event is not JSON: *");
    expect_event_refused("[]", "event must be a JSON object");
    expect_event_refused("[{\"payload\":{}}]", "event must be a JSON object");
    expect_event_refused("{\"id\":\"a\",\"id\":\"b\"}", "event is not JSON: line 1, column *");
    expect_event_refused_len("{}\0", 3, CFM_EINVAL, "event is not JSON: *");
    /* Unknown fields. */
    expect_event_refused("{\"target_site\":\"site-b\"}",
                         "unknown event field 'target_site' (known: id, type, system, origin, "
                         "time, payload)");
    expect_event_refused("{\"payload\":{},\"Payload\":{}}",
                         "unknown event field 'Payload' (known: id, type, system, origin, "
                         "time, payload)");
    /* system and type must be the topic's. */
    expect_event_refused("{\"system\":\"other\"}",
                         "event field 'system' is 'other' but the topic says 'shop'");
    expect_event_refused("{\"type\":\"scale_out\"}",
                         "event field 'type' is 'scale_out' but the topic says 'dr'");
    expect_event_refused("{\"system\":\"SHOP\"}",
                         "event field 'system' is 'SHOP' but the topic says 'shop'");
    expect_event_refused("{\"system\":7}", "event field 'system' must be a string");
    expect_event_refused("{\"type\":null}", "event field 'type' must be a string");
    /* id and origin are IDs. */
    expect_event_refused("{\"id\":\"a/b\"}", "event id 'a/b' contains '/' " ALLOWED);
    expect_event_refused("{\"id\":\"a+b\"}", "event id 'a+b' contains '+' " ALLOWED);
    expect_event_refused("{\"id\":\"#\"}", "event id '#' contains '#' " ALLOWED);
    expect_event_refused("{\"id\":\"\"}", "event id is empty");
    expect_event_refused("{\"id\":42}", "event field 'id' must be a string");
    fmt(text, sizeof text, "{\"id\":\"%s\"}", repeat('i', CFM_MAX_ID + 1));
    expect_event_refused(text, "event id 'iiiiiiiiiiiiiiii\xe2\x80\xa6' is longer than 64 "
                               "characters");
    expect_event_refused("{\"origin\":\"site a\"}", "event origin 'site a' contains ' ' " ALLOWED);
    expect_event_refused("{\"origin\":\"\"}", "event origin is empty");
    expect_event_refused("{\"origin\":true}", "event field 'origin' must be a string");
    /* time is RFC 3339 UTC. */
    expect_event_refused("{\"time\":\"yesterday\"}",
                         "event time 'yesterday' is not RFC 3339 UTC");
    expect_event_refused("{\"time\":\"2026-11-22T10:00:00\"}",
                         "event time '2026-11-22T10:00:00' is not RFC 3339 UTC");
    expect_event_refused("{\"time\":\"2026-11-22T10:00:00+02:00\"}",
                         "event time '2026-11-22T10:00:00+02:00' is not RFC 3339 UTC");
    expect_event_refused("{\"time\":\"\"}", "event time '' is not RFC 3339 UTC");
    expect_event_refused("{\"time\":1795341600}", "event field 'time' must be a string");
    /* payload is an object. */
    expect_event_refused("{\"payload\":[]}", "event payload must be a JSON object");
    expect_event_refused("{\"payload\":\"site-b\"}", "event payload must be a JSON object");
    expect_event_refused("{\"payload\":null}", "event payload must be a JSON object");
    expect_event_refused("{\"payload\":1}", "event payload must be a JSON object");
}

/* Fills buf with {"payload":{"k":"xx...x"}} of exactly len bytes. */
static void fill_event(char *buf, size_t len)
{
    static const char head[] = "{\"payload\":{\"k\":\"";
    static const char tail[] = "\"}}";

    assert_true(len > sizeof head + sizeof tail);
    memcpy(buf, head, sizeof head - 1);
    memset(buf + sizeof head - 1, 'x', len - (sizeof head - 1) - (sizeof tail - 1));
    memcpy(buf + len - (sizeof tail - 1), tail, sizeof tail - 1);
}

static void test_event_size_limit(void **state)
{
    char *text = malloc(CFM_MAX_PAYLOAD + 1);
    char msg[CFM_WHY_MAX];
    json_t *ev;

    (void)state;
    assert_non_null(text);
    /* One byte over the limit: refused before it is parsed. */
    fill_event(text, CFM_MAX_PAYLOAD + 1);
    fmt(msg, sizeof msg, "event is %u bytes; the limit is %u", CFM_MAX_PAYLOAD + 1,
             CFM_MAX_PAYLOAD);
    expect_event_refused_len(text, CFM_MAX_PAYLOAD + 1, CFM_ETOOBIG, msg);
    /* Far over it, even when it is not JSON at all. */
    memset(text, '{', CFM_MAX_PAYLOAD + 1);
    expect_event_refused_len(text, CFM_MAX_PAYLOAD + 1, CFM_ETOOBIG, msg);
    /* Exactly at the limit: accepted whole. */
    fill_event(text, CFM_MAX_PAYLOAD);
    ev = accept(text, CFM_MAX_PAYLOAD);
    assert_int_equal(strlen(str(json_object_get(ev, "payload"), "k")),
                     CFM_MAX_PAYLOAD - strlen("{\"payload\":{\"k\":\"\"}}"));
    json_decref(ev);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_every_type),
        cmocka_unit_test(test_build_refuses_bad_levels),
        cmocka_unit_test(test_build_buffer_too_small),
        cmocka_unit_test(test_parse_every_type),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_time_round_trip),
        cmocka_unit_test(test_time_parse_values),
        cmocka_unit_test(test_time_parse_refuses),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_event_completes_empty),
        cmocka_unit_test(test_event_keeps_payload),
        cmocka_unit_test(test_event_keeps_given_fields),
        cmocka_unit_test(test_event_new),
        cmocka_unit_test(test_event_refuses),
        cmocka_unit_test(test_event_size_limit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
