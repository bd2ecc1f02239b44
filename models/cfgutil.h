/*
 * cfgutil.h - what the manager, the agent and cfmctl all read from their
 * command lines and configuration: a broker address and a secret file.
 */
#ifndef CFM_CFGUTIL_H
#define CFM_CFGUTIL_H

#include <stddef.h>

#include "err.h"

/* Parses HOST, HOST:PORT or [V6]:PORT into host (hostcap bytes) and *port
 * (left as it is when text names no port). On failure CFM_ECONFIG with why
 * naming field ("--broker: 'x:99999' is not a port from 1 to 65535"). */
enum cfm_err cfm_parse_hostport(const char *text, char *host, size_t hostcap, int *port,
                                const char *field, struct cfm_why *why);

/* Reads the first line of the file at path (a password) into out (cap
 * bytes), without its line end. An unreadable or empty file is CFM_ECONFIG
 * with why naming field. */
enum cfm_err cfm_read_secret(const char *path, char *out, size_t cap, const char *field,
                             struct cfm_why *why);

#endif
