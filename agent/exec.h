/*
 * exec.h - the exec request: one command run on the loop (posix_spawn) with a
 * timeout and a cap on the output it keeps.
 */
#ifndef CFM_AGENT_EXEC_H
#define CFM_AGENT_EXEC_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "err.h"

#define CFM_AGENT_DEFAULT_TIMEOUT_S 60
#define CFM_AGENT_MAX_TIMEOUT_S 3600
#define CFM_AGENT_DEFAULT_OUTPUT (1u << 20) /* bytes kept of each stream */
#define CFM_AGENT_MAX_OUTPUT (4u << 20)
#define CFM_AGENT_MAX_ARGS 1024
#define CFM_AGENT_MAX_ENV 256

struct cfm_agent_exec;

/* Called once, after the command ended and every handle of it closed: with
 * result (borrowed; {"code","signal","stdout","stderr","stdout_truncated",
 * "stderr_truncated","timed_out","duration_ms"}) or, when it was aborted,
 * with result NULL and error saying why. The exec is freed after the call. */
typedef void (*cfm_agent_exec_done)(void *arg, const json_t *result, const char *error);

/* Starts the command req describes ({"argv": [...]} or {"shell": "..."},
 * "cwd", "env", "timeout_s", "stdin", "max_output"; req borrowed) in its
 * own process group, in root (resolved), with a minimal environment naming
 * vm. On CFM_OK the command runs and done will be called; *out (may be
 * NULL) lets the caller abort it. Otherwise why names what was wrong with
 * the request or why it could not start, and done is never called. */
enum cfm_err cfm_agent_exec_start(uv_loop_t *loop, const char *vm, const char *root,
                                  const json_t *req, cfm_agent_exec_done done, void *arg,
                                  struct cfm_agent_exec **out, struct cfm_why *why);

/* Kills the command's whole process group and stops waiting for its output;
 * done is then called with error reason (a static string, borrowed). Called
 * again, it also stops waiting for the command's exit. */
void cfm_agent_exec_abort(struct cfm_agent_exec *x, const char *reason);

/* Stops watching the detached commands still running (the agent stops and
 * leaves them running: a real VM's services outlive its agent); each one's
 * handles close and its memory goes. */
void cfm_agent_exec_forget_detached(void);

/* Sends sig to every process of VM vm (those whose environment carries
 * CFM_VM=<vm>: commands and what they left running, e.g. services), so a
 * VM's processes stop with its agent; sig 0 sends nothing. Returns how
 * many there are (a process that has exited and awaits its parent's wait
 * has no environment left, and does not count), and the pids of the first
 * max of them in pids (may be NULL when max is 0). A scan reads every
 * process's environment: a millisecond or two. */
unsigned cfm_agent_exec_kill_vm(const char *vm, int sig, int *pids, unsigned max);

/* True when process pid is gone: no such process, or a zombie. */
bool cfm_agent_exec_pid_gone(int pid);

#endif
