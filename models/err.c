/*
 * err.c - the error domain's strings and the why-buffer helpers.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const err_text[] = {
#define X(code, text) text,
    CFM_ERRORS(X)
#undef X
};

const char *cfm_strerror(enum cfm_err err)
{
    if ((size_t)err >= sizeof err_text / sizeof err_text[0])
        return "unknown error";
    return err_text[err];
}

enum cfm_err cfm_why_set(struct cfm_why *why, enum cfm_err err, const char *fmt, ...)
{
    va_list ap;

    if (!why)
        return err;
    va_start(ap, fmt);
    vsnprintf(why->text, sizeof why->text, fmt, ap);
    va_end(ap);
    return err;
}

enum cfm_err cfm_why_prefix(struct cfm_why *why, enum cfm_err err, const char *fmt, ...)
{
    char prefix[CFM_WHY_MAX];
    char rest[CFM_WHY_MAX];
    va_list ap;

    if (!why)
        return err;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(rest, why->text, sizeof rest);
    rest[sizeof rest - 1] = '\0';
    /* Truncation keeps the start of the path, which is what a reader needs. */
    if (snprintf(why->text, sizeof why->text, "%s: %s", prefix, rest) < 0)
        why->text[0] = '\0';
    return err;
}
