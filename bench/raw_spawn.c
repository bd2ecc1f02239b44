/*
 * raw_spawn.c - the children of cfm-bench-raw (startup's command, agents'
 * cfm-agents): each dies with this process (PR_SET_PDEATHSIG), so nothing
 * outlives a killed benchmark, and is always reaped.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "raw_common.h"

pid_t raw_spawn(char **cmd, const char *dir, const char *log, char *env)
{
    pid_t parent = getpid(), pid = fork();

    if (pid < 0)
        raw_die("fork: %s", strerror(errno));
    if (pid > 0)
        return pid;
    /* The child: dies with us, runs in dir, logs to the file. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    if (dir && chdir(dir) != 0)
        _exit(127);
    if (log && (!freopen(log, "a", stdout) || dup2(fileno(stdout), STDERR_FILENO) < 0))
        _exit(127);
    if (env && putenv(env) != 0)
        _exit(127);
    execvp(cmd[0], cmd);
    fprintf(stderr, "cfm-bench-raw: %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
}

void raw_stop_child(pid_t pid)
{
    double deadline = raw_now_s() + STOP_TIMEOUT_S;
    struct timespec slice = {0, 10 * 1000 * 1000};
    int status;

    kill(pid, SIGTERM);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (raw_now_s() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return;
        }
        nanosleep(&slice, NULL);
    }
}
