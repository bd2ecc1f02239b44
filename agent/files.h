/*
 * files.h - the VM's disk as the agent sees it: request paths confined to
 * one root directory, files written atomically and read with a size cap.
 */
#ifndef CFM_AGENT_FILES_H
#define CFM_AGENT_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define CFM_AGENT_MAX_FILE (1u << 20) /* put_file and get_file contents */
#define CFM_AGENT_PATH_SHOWN 128      /* bytes of a request path quoted in a message */

/* How cfm_agent_files_resolve treats the path. */
enum cfm_agent_files_use {
    CFM_AGENT_FILES_WRITE, /* a file to write: missing parent directories are created
                              (0755); the last component is not followed */
    CFM_AGENT_FILES_READ,  /* an existing file: resolved completely, symlinks included */
    CFM_AGENT_FILES_DIR,   /* an existing directory, the root itself allowed (a cwd) */
};

/* Confines path (untrusted: len bytes, may hold NULs, "/" at the start means
 * the root) to root, which must be absolute and already resolved (realpath).
 * Refuses NUL bytes, ".." components and any path whose existing part
 * resolves outside root ("path 'x' escapes the VM's disk"). On success writes
 * the absolute path to use into out (outlen bytes, PATH_MAX is enough). */
enum cfm_err cfm_agent_files_resolve(const char *root, const char *path, size_t len,
                                     enum cfm_agent_files_use use, char *out, size_t outlen,
                                     struct cfm_why *why);

/* True when the absolute resolved path p is root or lies below it. */
bool cfm_agent_files_inside(const char *root, const char *p);

/* Writes data[0..len) to the absolute path (whose directory exists)
 * atomically: a temporary file ".<name>.tmp-<uuid>" beside it, fsync,
 * fchmod(mode), rename over path, fsync of the directory. Readers see the
 * old file or the new one, never a part; no temporary file is left on error.
 * shown names the file in messages. */
enum cfm_err cfm_agent_files_write(const char *path, const void *data, size_t len,
                                   unsigned mode, const char *shown, struct cfm_why *why);

/* Reads the regular file at path (absolute) if it holds at most max bytes.
 * On success *data is a new buffer (the caller frees it; NUL-terminated for
 * convenience, not counted in *len) and *mode its permission bits. */
enum cfm_err cfm_agent_files_read(const char *path, size_t max, char **data, size_t *len,
                                  unsigned *mode, const char *shown, struct cfm_why *why);

/* Writes a printable quotation of the request path p (len bytes) into buf,
 * for messages. Returns buf. */
char *cfm_agent_files_shown(char *buf, size_t size, const char *p, size_t len);

#endif
