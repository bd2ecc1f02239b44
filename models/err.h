/*
 * err.h - the one error domain of cfm.
 *
 * Every function that can fail returns enum cfm_err; foreign codes (sqlite3,
 * mosquitto, uv, curl) are translated at the module edge. The human detail
 * (which field, which file position) travels in a struct cfm_why that the
 * caller provides, so errors can name exactly what was wrong.
 */
#ifndef CFM_ERR_H
#define CFM_ERR_H

#include <stddef.h>

#define CFM_ERRORS(X)                                        \
    X(CFM_OK,        "ok")                                   \
    X(CFM_EINVAL,    "invalid argument")                     \
    X(CFM_ENOTFOUND, "not found")                            \
    X(CFM_ESTORE,    "store error")                          \
    X(CFM_EBUS,      "broker error")                         \
    X(CFM_ETIMEOUT,  "timed out")                            \
    X(CFM_ENOMEM,    "out of memory")                        \
    X(CFM_ETOOBIG,   "too large")                            \
    X(CFM_EIO,       "i/o error")                            \
    X(CFM_ESTALE,    "older than what is stored")            \
    X(CFM_ECONFIG,   "configuration error")

enum cfm_err {
#define X(code, text) code,
    CFM_ERRORS(X)
#undef X
};

/* Returns a static string describing err; never NULL. */
const char *cfm_strerror(enum cfm_err err);

#define CFM_WHY_MAX 512

/* The detail of an error, written by the callee for a human to read. */
struct cfm_why {
    char text[CFM_WHY_MAX];
};

/* Formats the reason into why (truncated to CFM_WHY_MAX); why may be NULL.
 * Returns err so callers can write: return cfm_why_set(why, CFM_EINVAL, ...). */
enum cfm_err cfm_why_set(struct cfm_why *why, enum cfm_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing reason (for nesting context such as a
 * field path); why may be NULL. Returns err. */
enum cfm_err cfm_why_prefix(struct cfm_why *why, enum cfm_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
