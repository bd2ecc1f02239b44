/*
 * log.c - one line per record on stderr, with UTC time and level. Lines are
 * written with a single fputs so records of concurrent processes sharing a
 * terminal do not interleave within a line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static enum cfm_log_level min_level = CFM_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void cfm_log_set_level(enum cfm_log_level level)
{
    min_level = level;
}

enum cfm_err cfm_log_parse_level(const char *name, enum cfm_log_level *out)
{
    static const char *const lower[] = {"debug", "info", "warn", "error"};

    for (size_t i = 0; i < sizeof lower / sizeof lower[0]; i++) {
        if (name && strcmp(name, lower[i]) == 0) {
            *out = (enum cfm_log_level)i;
            return CFM_OK;
        }
    }
    return CFM_EINVAL;
}

void cfm_log(enum cfm_log_level level, const char *module, const char *fmt, ...)
{
    char line[2048];
    char now[CFM_TIME_LEN];
    va_list ap;
    int n;

    if (level < min_level)
        return;
    cfm_time_now(now);
    n = snprintf(line, sizeof line, "%s %-5s %s: ", now, level_names[level], module);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* Keep the newline even when the message was truncated. */
    size_t len = strlen(line);
    if (len == sizeof line - 1)
        len--;
    line[len] = '\n';
    line[len + 1] = '\0';
    fputs(line, stderr);
}
