/*
 * util.c - time stamps (RFC 3339, UTC, milliseconds), random UUIDs
 * (the kernel's generator, getrandom(2): no hand-rolled randomness) and
 * what /proc/<pid>/stat says of a process (zombie, kernel thread), the
 * posix_spawn of a child in a session of its own, and FNV-1a digests.
 *
 * Why not OpenSSL's RAND_bytes: its first call in a process sets up
 * OpenSSL's generator (reads openssl.cnf, loads the default provider,
 * seeds a DRBG from getrandom) and cost 3-4 ms of CPU here; every agent
 * paid it when it wrote its first answer, ten of them at once in a
 * recovery's critical path. getrandom(2) is the source that DRBG reads.
 */
/* POSIX_SPAWN_SETSID, posix_spawn_file_actions_addchdir_np and
 * _addclosefrom_np (glibc). */
#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int64_t cfm_time_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cfm_time_format(int64_t ms, char buf[CFM_TIME_LEN])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    if (snprintf(buf, CFM_TIME_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(ms % 1000)) >= CFM_TIME_LEN)
        buf[CFM_TIME_LEN - 1] = '\0'; /* cannot happen before the year 10^14 */
}

void cfm_time_now(char buf[CFM_TIME_LEN])
{
    cfm_time_format(cfm_time_ms(), buf);
}

/* Reads exactly n digits at *p, advancing it. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return false;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return true;
}

enum cfm_err cfm_time_parse(const char *text, int64_t *out_ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, mon, day, hour, min, sec, frac = 0, scale = 100;
    const char *p = text;
    struct tm tm;

    /* Exactly YYYY-MM-DDTHH:MM:SS[.fff...]Z, as cfm_time_now writes it. */
    if (!p || !digits(&p, 4, &year) || *p++ != '-' || !digits(&p, 2, &mon) || *p++ != '-' ||
        !digits(&p, 2, &day) || *p++ != 'T' || !digits(&p, 2, &hour) || *p++ != ':' ||
        !digits(&p, 2, &min) || *p++ != ':' || !digits(&p, 2, &sec))
        return CFM_EINVAL;
    if (*p == '.') {
        const char *start = ++p;
        for (; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
        if (p == start)
            return CFM_EINVAL;
    }
    if (strcmp(p, "Z") != 0 || year < 1970 || mon < 1 || mon > 12 || day < 1 ||
        day > mdays[mon - 1] || hour > 23 || min > 59 || sec > 59)
        return CFM_EINVAL;
    if (mon == 2 && day == 29 && !((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
        return CFM_EINVAL;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    *out_ms = (int64_t)timegm(&tm) * 1000 + frac;
    return CFM_OK;
}

enum cfm_err cfm_uuid(char out[CFM_UUID_LEN])
{
    unsigned char b[16];
    size_t got = 0;

    /* 16 bytes come in one call once the kernel's pool is ready (it blocks
     * until then, early at boot only); a signal may still cut it short. */
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0 && errno != EINTR)
            return CFM_EIO;
        if (n > 0)
            got += (size_t)n;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, CFM_UUID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return CFM_OK;
}

#define PF_KTHREAD 0x00200000u /* a kernel thread: linux/sched.h, not in libc's headers */

/* Reads /proc/<pid>/stat into buf (size bytes) and returns what follows
 * its comm field, from the state on ("S ppid pgrp ..."); NULL when pid is
 * gone. comm may hold anything, spaces and ')' too: it ends at the last ')'. */
static const char *pid_stat(int pid, char *buf, size_t size)
{
    char path[64];
    const char *paren;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return NULL;
    n = read(fd, buf, size - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' ? paren + 2 : NULL;
}

bool cfm_pid_zombie(int pid)
{
    char buf[256];
    const char *rest = pid_stat(pid, buf, sizeof buf);

    return rest && rest[0] == 'Z';
}

bool cfm_pid_kthread(int pid)
{
    char buf[256];
    const char *rest = pid_stat(pid, buf, sizeof buf);
    unsigned flags;

    /* state ppid pgrp session tty_nr tpgid flags: fields 3 to 9 */
    return rest && sscanf(rest, "%*c %*d %*d %*d %*d %*d %u", &flags) == 1 &&
           (flags & PF_KTHREAD) != 0;
}

int cfm_spawn_session(pid_t *pid, const char *file, posix_spawn_file_actions_t *fa,
                      const char *cwd, char *const argv[], char *const envp[])
{
    posix_spawnattr_t attr;
    sigset_t none, all;
    int rc;

    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if ((rc = posix_spawn_file_actions_addclosefrom_np(fa, 3)) != 0 ||
        (rc = posix_spawn_file_actions_addchdir_np(fa, cwd)) != 0 ||
        (rc = posix_spawnattr_init(&attr)) != 0)
        return rc;
    if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF)) == 0 &&
        (rc = posix_spawnattr_setsigmask(&attr, &none)) == 0 &&
        (rc = posix_spawnattr_setsigdefault(&attr, &all)) == 0)
        rc = posix_spawn(pid, file, fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    return rc;
}

uint64_t cfm_fnv1a64(const void *p, size_t len)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
