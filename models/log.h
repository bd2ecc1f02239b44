/*
 * log.h - the manager's log: one line per record on stderr,
 * "2026-11-22T10:00:00.123Z WARN  bus: message", filtered by level.
 */
#ifndef CFM_LOG_H
#define CFM_LOG_H

#include <stdbool.h>
#include "err.h"

enum cfm_log_level { CFM_LOG_DEBUG, CFM_LOG_INFO, CFM_LOG_WARN, CFM_LOG_ERROR };

/* Sets the lowest level written (default INFO). */
void cfm_log_set_level(enum cfm_log_level level);

/* Parses "debug" | "info" | "warn" | "error". */
enum cfm_err cfm_log_parse_level(const char *name, enum cfm_log_level *out);

/* Writes one record if level is enabled. module names the writer ("bus"). */
void cfm_log(enum cfm_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cfm_debug(mod, ...) cfm_log(CFM_LOG_DEBUG, mod, __VA_ARGS__)
#define cfm_info(mod, ...)  cfm_log(CFM_LOG_INFO, mod, __VA_ARGS__)
#define cfm_warn(mod, ...)  cfm_log(CFM_LOG_WARN, mod, __VA_ARGS__)
#define cfm_error(mod, ...) cfm_log(CFM_LOG_ERROR, mod, __VA_ARGS__)

#endif
