/*
 * id.c - the one ID rule of cfm, [A-Za-z0-9_.-]{1,64}, and the safe quoting
 * of untrusted text in error messages.
 *
 * IDs become MQTT topic levels and SQLite keys, so this is the only place
 * that decides what an ID is. Messages quote the offending ID through
 * cfm_quote: an ID comes from the network or a file and may hold
 * control characters or escape sequences that must not reach a terminal or a
 * log line as they are.
 */
#include "id.h"
#include "util.h"

#include <string.h>

#include "bounds.h"
#include "schema.h"

#define ID_ALLOWED "(allowed: letters, digits, '_', '.', '-')"
#define LONG_ID_SHOWN 16 /* bytes of an over-long ID quoted in its message */

static bool id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

char *cfm_quote(char *buf, size_t size, const char *s, size_t len, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    static const char ellipsis[] = "\xe2\x80\xa6"; /* U+2026 */
    size_t i, o = 0;
    bool cut = len > max;

    if (!buf || size == 0)
        return buf;
    if (cut)
        len = max;
    for (i = 0; s && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = c >= 0x20 && c < 0x7f;
        size_t need = plain ? 1 : 4;

        if (o + need + sizeof ellipsis > size) { /* keep room for "…" and NUL */
            cut = true;
            break;
        }
        if (plain) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 0xf];
        }
    }
    if (cut && o + sizeof ellipsis <= size) {
        memcpy(buf + o, ellipsis, sizeof ellipsis - 1);
        o += sizeof ellipsis - 1;
    }
    buf[o < size ? o : size - 1] = '\0';
    return buf;
}

enum cfm_err cfm_models__id_checkn(const char *s, size_t len, const char *what,
                                   struct cfm_why *why)
{
    char shown[4 * CFM_MAX_ID + 8];
    char bad[8];
    size_t i;

    if (!what)
        what = "id";
    if (!s)
        return cfm_why_set(why, CFM_EINVAL, "%s is missing", what);
    if (len == 0)
        return cfm_why_set(why, CFM_EINVAL, "%s is empty", what);
    if (len > CFM_MAX_ID)
        return cfm_why_set(why, CFM_EINVAL, "%s '%s' is longer than %d characters", what,
                           cfm_quote(shown, sizeof shown, s, len, LONG_ID_SHOWN),
                           CFM_MAX_ID);
    for (i = 0; i < len; i++) {
        if (id_char((unsigned char)s[i]))
            continue;
        return cfm_why_set(why, CFM_EINVAL, "%s '%s' contains '%s' " ID_ALLOWED, what,
                           cfm_quote(shown, sizeof shown, s, len, CFM_MAX_ID),
                           cfm_quote(bad, sizeof bad, s + i, 1, 1));
    }
    return CFM_OK;
}

bool cfm_id_valid(const char *s)
{
    size_t i;

    if (!s)
        return false;
    for (i = 0; i <= CFM_MAX_ID && s[i]; i++)
        if (!id_char((unsigned char)s[i]))
            return false;
    return i >= 1 && i <= CFM_MAX_ID;
}

enum cfm_err cfm_id_check(const char *s, const char *what, struct cfm_why *why)
{
    /* Bounded: a string longer than the limit is refused without being read
     * to its end. */
    return cfm_models__id_checkn(s, s ? strnlen(s, CFM_MAX_ID + 1) : 0, what, why);
}
