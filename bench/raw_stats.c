/*
 * raw_stats.c - cfm-bench-raw's clock and figures: percentiles of latency
 * samples, and the median/min/max lines of the timed modes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raw_common.h"

double raw_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A sorted copy of n samples (free() it). */
static double *sorted_copy(const double *samples, long n)
{
    double *sorted = malloc((size_t)(n > 0 ? n : 1) * sizeof *sorted);

    if (!sorted)
        raw_die("out of memory");
    memcpy(sorted, samples, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    return sorted;
}

/* The value at percentile p (0-100, nearest rank) of n sorted samples. */
static double pct(const double *sorted, long n, double p)
{
    long rank = (long)(p / 100.0 * (double)n + 0.999999);

    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

void raw_print_pcts(const char *name, const double *samples, long n)
{
    double *sorted = sorted_copy(samples, n);

    printf(" %s_p50_us=%.0f %s_p99_us=%.0f %s_max_us=%.0f", name, pct(sorted, n, 50), name,
           pct(sorted, n, 99), name, sorted[n - 1]);
    free(sorted);
}

void raw_print_samples(const char *mode, const char *count, const char *unit, int decimals,
                       const double *samples, int n)
{
    double *sorted = sorted_copy(samples, n);

    printf("%s: %s=%d median_%s=%.*f min_%s=%.*f max_%s=%.*f samples=", mode, count, n, unit,
           decimals, n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2, unit,
           decimals, sorted[0], unit, decimals, sorted[n - 1]);
    for (int i = 0; i < n; i++)
        printf("%s%.*f", i ? "," : "", decimals, samples[i]);
    printf("\n");
    free(sorted);
}
