/*
 * gen_system.c - cfm-bench-gen: the large system descriptions of the
 * benchmarks, made from an example (examples/web3tier.json) so they keep
 * its shape as the example grows.
 *
 * It reads the example with jansson (so its formatting does not matter),
 * replaces its "sites", prefixes every "description" (the system's and each
 * object's) with a mark, so a new mark changes every object, and adds
 * Address objects addr-00001, ... until the system holds --total objects
 * (the BusinessSystem included, as CFM_MAX_OBJECTS counts them). Each added
 * body is about 70 bytes, like the example's own Address. The output is
 * compact JSON: 10,000 objects then fit in one `cfmctl system load`
 * (CFM_MAX_PAYLOAD, 1 MiB, once escaped into the request), which this tool
 * checks, roughly, with the size of the file plus one byte per quote.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOTAL 10000              /* CFM_MAX_OBJECTS */
#define MAX_REQUEST (1u << 20)       /* CFM_MAX_PAYLOAD */
#define REQUEST_ENVELOPE 4096        /* {"op": ..., "args": {"file": ...}} */
#define MAX_SITES 16
#define MAX_TEXT 256

static const char usage[] =
    "usage: cfm-bench-gen --in EXAMPLE --out FILE --sites SITE,SITE,... --mark MARK\n"
    "                     [--total OBJECTS]\n";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("cfm-bench-gen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* Prefixes body's "description" with mark (adds one when there is none);
 * body is borrowed. */
static void mark_description(json_t *body, const char *mark)
{
    const char *old = json_string_value(json_object_get(body, "description"));
    char text[MAX_TEXT * 4];
    int n;

    n = old ? snprintf(text, sizeof text, "%s %s", mark, old)
            : snprintf(text, sizeof text, "%s", mark);
    if (n < 0 || (size_t)n >= sizeof text)
        die("a description longer than %zu bytes", sizeof text - 1);
    if (json_object_set_new(body, "description", json_string(text)) != 0)
        die("out of memory");
}

/* Returns a new reference: the comma-separated list as a JSON array. */
static json_t *sites_array(const char *list)
{
    json_t *arr = json_array();
    const char *p = list;
    int n = 0;

    while (arr && *p) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len > 64 || ++n > MAX_SITES)
            die("--sites: at most %d site IDs of 1 to 64 characters, comma-separated",
                MAX_SITES);
        json_array_append_new(arr, json_stringn(p, len));
        p += len + (p[len] == ',');
    }
    if (!arr || n == 0)
        die("--sites: no site given");
    return arr;
}

int main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *sites = NULL, *mark = NULL;
    long total = 0;
    json_error_t jerr;
    json_t *sys, *objects, *map, *body, *addresses;
    const char *kind, *id;
    size_t count = 1, quotes = 0;
    char *text;
    FILE *f;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--in") == 0)
            in = val;
        else if (strcmp(opt, "--out") == 0)
            out = val;
        else if (strcmp(opt, "--sites") == 0)
            sites = val;
        else if (strcmp(opt, "--mark") == 0)
            mark = val;
        else if (strcmp(opt, "--total") == 0) {
            char *end;
            errno = 0;
            total = strtol(val, &end, 10);
            if (errno || end == val || *end || total < 0 || total > MAX_TOTAL)
                die("--total: '%s' is not a number from 0 to %d", val, MAX_TOTAL);
        } else
            die("unknown option %s\n%s", opt, usage);
    }
    if (!in || !out || !sites || !mark)
        die("needs --in, --out, --sites and --mark\n%s", usage);
    if (strlen(mark) > MAX_TEXT || strpbrk(mark, "\"\\"))
        die("--mark: at most %d characters, no quote or backslash", MAX_TEXT);

    sys = json_load_file(in, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(sys))
        die("%s: line %d: %s", in, jerr.line, sys ? "not a JSON object" : jerr.text);
    objects = json_object_get(sys, "objects");
    if (!json_is_object(objects))
        die("%s: no \"objects\"", in);
    json_object_set_new(sys, "sites", sites_array(sites));
    mark_description(sys, mark);
    json_object_foreach(objects, kind, map) {
        json_object_foreach(map, id, body) {
            mark_description(body, mark);
            count++;
        }
    }

    addresses = json_object_get(objects, "Address");
    if (!addresses) {
        addresses = json_object();
        json_object_set_new(objects, "Address", addresses);
    }
    if (total && (size_t)total < count)
        die("%s already holds %zu objects; --total %ld is fewer", in, count, total);
    for (long n = 1; total && count < (size_t)total; n++) {
        char key[32], desc[MAX_TEXT + 64];
        snprintf(key, sizeof key, "addr-%05ld", n);
        if (json_object_get(addresses, key))
            continue;
        snprintf(desc, sizeof desc, "%s address %05ld of the shop web tier", mark, n);
        json_object_set_new(addresses, key,
                            json_pack("{s:s, s:s}", "description", desc, "pool", "public"));
        count++;
    }

    text = json_dumps(sys, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        die("out of memory");
    for (const char *p = text; *p; p++)
        quotes += *p == '"' || *p == '\\';
    if (strlen(text) + quotes + REQUEST_ENVELOPE > MAX_REQUEST)
        die("the description is %zu bytes (%zu once escaped): over the %u of one request",
            strlen(text), strlen(text) + quotes, MAX_REQUEST);
    f = fopen(out, "w");
    if (!f || fputs(text, f) == EOF || fputc('\n', f) == EOF || fclose(f) != 0)
        die("%s: %s", out, strerror(errno));
    printf("%zu\n", count);
    free(text);
    json_decref(sys);
    return 0;
}
