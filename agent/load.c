/*
 * load.c - load figures from Linux's /proc: the load averages and the count
 * of scheduling entities (threads included) from /proc/loadavg, memory from
 * /proc/meminfo. Both are tiny files the kernel writes on read, so reading
 * them every few seconds on the loop costs nothing. Elsewhere, the load
 * averages come from getloadavg and the other figures are null.
 */
#include "load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_LEN 256

static json_t *int_or_null(long long v)
{
    return v < 0 ? json_null() : json_integer((json_int_t)v);
}

/* Fills load[3] and *procs from /proc/loadavg ("0.10 0.20 0.30 2/345 678"). */
static void read_loadavg(double load[3], long long *procs)
{
    FILE *f = fopen("/proc/loadavg", "re");
    long long running, total;

    if (f && fscanf(f, "%lf %lf %lf %lld/%lld", &load[0], &load[1], &load[2], &running,
                    &total) == 5) {
        *procs = total;
    } else if (getloadavg(load, 3) != 3) {
        load[0] = load[1] = load[2] = -1;
    }
    if (f)
        fclose(f);
}

/* Fills *total and *available (kB) from /proc/meminfo. */
static void read_meminfo(long long *total, long long *available)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[LINE_MAX_LEN];
    long long v;

    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %lld kB", &v) == 1)
            *total = v;
        else if (sscanf(line, "MemAvailable: %lld kB", &v) == 1)
            *available = v;
        if (*total >= 0 && *available >= 0)
            break;
    }
    if (f)
        fclose(f);
}

json_t *cfm_agent_load_figures(unsigned running)
{
    double load[3] = {-1, -1, -1};
    long long procs = -1, total = -1, available = -1;

    read_loadavg(load, &procs);
    read_meminfo(&total, &available);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:I}",
                     "load1", load[0] < 0 ? json_null() : json_real(load[0]),
                     "load5", load[1] < 0 ? json_null() : json_real(load[1]),
                     "load15", load[2] < 0 ? json_null() : json_real(load[2]),
                     "mem_total_kb", int_or_null(total),
                     "mem_available_kb", int_or_null(available),
                     "procs", int_or_null(procs),
                     "running_commands", (json_int_t)running);
}
