/*
 * util.c - time stamps (RFC 3339, UTC, milliseconds) and random UUIDs
 * (OpenSSL's RAND_bytes, so no hand-rolled randomness).
 */
#include "util.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

enum cfm_err cfm_time_parse(const char *text, int64_t *out_ms)
{
    struct tm tm;
    int frac = 0, consumed = 0;
    const char *rest;

    if (!text)
        return CFM_EINVAL;
    memset(&tm, 0, sizeof tm);
    rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return CFM_EINVAL;
    if (*rest == '.') {
        /* ".5" is 500 ms: scale the first three digits, ignore the rest. */
        int scale = 100;
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, consumed++) {
            frac += (*rest - '0') * scale;
            scale /= 10;
        }
        if (consumed == 0)
            return CFM_EINVAL;
    }
    if (strcmp(rest, "Z") != 0)
        return CFM_EINVAL;
    *out_ms = (int64_t)timegm(&tm) * 1000 + frac;
    return CFM_OK;
}

enum cfm_err cfm_uuid(char out[CFM_UUID_LEN])
{
    unsigned char b[16];

    if (RAND_bytes(b, sizeof b) != 1)
        return CFM_EIO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, CFM_UUID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return CFM_OK;
}
