/*
 * raw_args.c - cfm-bench-raw's errors and command lines: every mode reads
 * "OPTION VALUE" pairs through one table of its options.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

void raw_die(const char *fmt, ...)
{
    va_list ap;

    fputs("cfm-bench-raw: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

long raw_parse_long(const char *text, const char *what, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        raw_die("%s: '%s' is not a number from %ld to %ld", what, text, min, max);
    return v;
}

double raw_parse_seconds(const char *text, const char *what)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (errno || end == text || *end || !(v > 0 && v <= 3600))
        raw_die("%s: '%s' is not a number of seconds from 0 to 3600", what, text);
    return v;
}

void raw_check_prefix(const char *prefix)
{
    if (strlen(prefix) > MAX_TOPIC - 16 || strpbrk(prefix, "+#"))
        raw_die("--prefix: a topic of at most %d characters without wildcards", MAX_TOPIC - 16);
}

/* Stores val as o says (the next element of a repeatable option's array). */
static void set_opt(const struct raw_opt *o, const char *val)
{
    int k = 0;

    if (o->n) {
        if (*o->n == o->max_n)
            raw_die("at most %d %s", o->max_n, o->many);
        k = (*o->n)++;
    }
    switch (o->kind) {
    case RAW_TEXT:
        ((const char **)o->to)[k] = val;
        break;
    case RAW_INT:
        ((int *)o->to)[k] = (int)raw_parse_long(val, o->name, o->min, o->max);
        break;
    case RAW_LONG:
        ((long *)o->to)[k] = raw_parse_long(val, o->name, o->min, o->max);
        break;
    case RAW_SECONDS:
        ((double *)o->to)[k] = raw_parse_seconds(val, o->name);
        break;
    }
}

void raw_parse_opts(const char *mode, int argc, char **argv, const struct raw_opt *opts,
                    char ***rest)
{
    if (rest)
        *rest = NULL;
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        const struct raw_opt *o = opts;

        if (rest && strcmp(opt, "--") == 0) {
            *rest = argv + i + 1;
            return;
        }
        if (!val)
            raw_die("%s needs a value\n%s", opt, raw_usage);
        i++;
        while (o->name && strcmp(opt, o->name) != 0)
            o++;
        if (!o->name)
            raw_die("%s: unknown option %s\n%s", mode, opt, raw_usage);
        set_opt(o, val);
    }
}
