/*
 * kind.c - names and the declared/runtime split of the model kinds, all
 * generated from the CFM_KINDS X-macro in kind.h so that adding a kind is a
 * one-line change there. The enum order is also the order in which a system
 * description lists its objects (sysdesc.c sorts by it).
 */
#include "kind.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#include "bounds.h"
#include "schema.h"

static const char *const kind_names[CFM_KIND__COUNT] = {
#define X(k, name, declared) name,
    CFM_KINDS(X)
#undef X
};

static const bool kind_declared[CFM_KIND__COUNT] = {
#define X(k, name, declared) declared,
    CFM_KINDS(X)
#undef X
};

/* "BusinessSystem, BusinessSystemElement, ..." for messages. */
#define KNOWN_KINDS_LEN 256
static void known_kinds(char *buf, size_t size)
{
    size_t o = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; i < CFM_KIND__COUNT; i++) {
        int n = snprintf(buf + o, size - o, "%s%s", i ? ", " : "", kind_names[i]);

        if (n < 0 || (size_t)n >= size - o)
            return; /* cut; the table fits the buffer, so this does not happen */
        o += (size_t)n;
    }
}

const char *cfm_kind_name(enum cfm_kind kind)
{
    if ((unsigned)kind >= CFM_KIND__COUNT)
        return "?";
    return kind_names[kind];
}

enum cfm_err cfm_kind_parse(const char *name, enum cfm_kind *out, struct cfm_why *why)
{
    char known[KNOWN_KINDS_LEN];
    char shown[4 * CFM_MAX_ID + 8];
    int i;

    for (i = 0; name && i < CFM_KIND__COUNT; i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            if (out)
                *out = (enum cfm_kind)i;
            return CFM_OK;
        }
    }
    /* The list of known kinds is built only for the message (a hot path). */
    known_kinds(known, sizeof known);
    if (!name)
        return cfm_why_set(why, CFM_EINVAL, "kind is missing (known: %s)", known);
    return cfm_why_set(why, CFM_EINVAL, "unknown kind '%s' (known: %s)",
                       cfm_quote(shown, sizeof shown, name,
                                         strnlen(name, CFM_MAX_ID + 1), CFM_MAX_ID),
                       known);
}

bool cfm_kind_declared(enum cfm_kind kind)
{
    if ((unsigned)kind >= CFM_KIND__COUNT)
        return false;
    return kind_declared[kind];
}
