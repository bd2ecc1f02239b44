/*
 * cfgutil.c - broker addresses and secret files, parsed once for the
 * manager, the agent and cfmctl.
 */
#include "cfgutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum cfm_err cfm_parse_hostport(const char *text, char *host, size_t hostcap, int *port,
                                const char *field, struct cfm_why *why)
{
    const char *start = text, *colon = strrchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    char *end;
    long v;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || (close[1] != '\0' && close[1] != ':'))
            return cfm_why_set(why, CFM_ECONFIG, "%s: '%.64s' is not HOST:PORT", field, text);
        start = text + 1;
        n = (size_t)(close - start);
        colon = close[1] == ':' ? close + 1 : NULL;
    }
    if (n == 0 || n >= hostcap)
        return cfm_why_set(why, CFM_ECONFIG, "%s: '%.64s' is not HOST:PORT", field, text);
    if (colon) {
        errno = 0;
        v = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || v < 1 || v > 65535)
            return cfm_why_set(why, CFM_ECONFIG, "%s: '%.16s' is not a port from 1 to 65535",
                               field, colon + 1);
        *port = (int)v;
    }
    memcpy(host, start, n);
    host[n] = '\0';
    return CFM_OK;
}

enum cfm_err cfm_read_secret(const char *path, char *out, size_t cap, const char *field,
                             struct cfm_why *why)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (!f)
        return cfm_why_set(why, CFM_ECONFIG, "%s: cannot open '%s': %s", field, path,
                           strerror(errno));
    n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    if (strpbrk(out, "\r\n"))
        *strpbrk(out, "\r\n") = '\0';
    if (!out[0])
        return cfm_why_set(why, CFM_ECONFIG, "%s: '%s' is empty", field, path);
    return CFM_OK;
}
