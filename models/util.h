/*
 * util.h - small helpers every part of cfm uses: time stamps, random IDs,
 * what /proc says of a process, how a child process starts, a digest.
 */
#ifndef CFM_UTIL_H
#define CFM_UTIL_H

#include <spawn.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include "err.h"
#include "bounds.h"

/* Writes the current UTC time as RFC 3339 with milliseconds
 * ("2026-11-22T10:00:00.123Z") into buf of CFM_TIME_LEN bytes. */
void cfm_time_now(char buf[CFM_TIME_LEN]);

/* Writes ms (milliseconds since the epoch) as RFC 3339 UTC with
 * milliseconds into buf of CFM_TIME_LEN bytes. */
void cfm_time_format(int64_t ms, char buf[CFM_TIME_LEN]);

/* Milliseconds since the Unix epoch (wall clock). */
int64_t cfm_time_ms(void);

/* Parses an RFC 3339 UTC time as written by cfm_time_now (fraction optional)
 * into milliseconds since the epoch. Returns CFM_EINVAL if malformed. */
enum cfm_err cfm_time_parse(const char *text, int64_t *out_ms);

/* Writes into buf (size bytes, size >= 8) at most max bytes of s (len bytes,
 * may hold NULs) with every byte outside printable ASCII shown as \xNN, and
 * "…" when s was cut. Returns buf. Lets messages quote untrusted text. */
char *cfm_quote(char *buf, size_t size, const char *s, size_t len, size_t max);

#define CFM_UUID_LEN 37
/* Writes a random (version 4) UUID in lowercase hex with dashes. Returns
 * CFM_EIO when no randomness could be had. */
enum cfm_err cfm_uuid(char out[CFM_UUID_LEN]);

/* True when process pid is a zombie: exited, not yet waited for by its
 * parent (state Z in /proc/<pid>/stat). False when it is not, or is gone. */
bool cfm_pid_zombie(int pid);

/* True when pid is a kernel thread (PF_KTHREAD in field 9, the flags, of
 * /proc/<pid>/stat); its command line reads empty forever. False when it is
 * not, or is gone. */
bool cfm_pid_kthread(int pid);

/* FNV-1a, 64 bits, of len bytes at p: a digest to tell texts apart, not
 * to resist anyone choosing them. */
uint64_t cfm_fnv1a64(const void *p, size_t len);

/* posix_spawn of file (argv, envp) in a session of its own (its process
 * group id is its pid, so kill(-pid, sig) reaches all it starts), in cwd,
 * with no signal blocked and every signal's action the default whatever
 * the caller's (the agent ignores SIGPIPE, its commands must not), and no
 * descriptor but the 0-2 that fa sets up: fa holds the caller's actions
 * for those (initialised and destroyed by the caller; this appends closing
 * every other one and the chdir). 0 or an errno value. */
int cfm_spawn_session(pid_t *pid, const char *file, posix_spawn_file_actions_t *fa,
                      const char *cwd, char *const argv[], char *const envp[]);

#endif
