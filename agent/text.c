/*
 * text.c - command output and file contents as JSON text. An answer is a
 * JSON document, and JSON strings are Unicode: bytes that are not UTF-8
 * (binary output, a command cut mid-character at its output cap) must be
 * repaired or encoded before jansson accepts them. Output is repaired
 * (each bad byte becomes U+FFFD, as a terminal would show it); file
 * contents are sent as base64 instead so they round-trip exactly.
 */
#include "text.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

/* Length of the well-formed UTF-8 sequence at s (at most len bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n, i;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

bool cfm_agent_text_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, n;

    while (i < len) {
        if ((n = utf8_seq(p + i, len - i)) == 0)
            return false;
        i += n;
    }
    return true;
}

json_t *cfm_agent_text_json(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    char *fixed;
    size_t i = 0, o = 0, n;
    json_t *j;

    if (cfm_agent_text_utf8_valid(s, len))
        return json_stringn(s, len);
    /* Each bad byte grows to three: check before allocating. */
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    fixed = malloc(len * 3 + 1);
    if (!fixed)
        return NULL;
    while (i < len) {
        if ((n = utf8_seq(p + i, len - i)) == 0) {
            memcpy(fixed + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(fixed + o, p + i, n);
        o += n;
        i += n;
    }
    j = json_stringn(fixed, o);
    free(fixed);
    return j;
}

json_t *cfm_agent_text_b64_json(const void *data, size_t len)
{
    unsigned char *buf;
    size_t need;
    json_t *j;
    int n;

    if (len > (size_t)INT_MAX / 4 * 3 - 3)
        return NULL;
    need = (len + 2) / 3 * 4 + 1;
    buf = malloc(need);
    if (!buf)
        return NULL;
    n = EVP_EncodeBlock(buf, data, (int)len);
    j = n < 0 ? NULL : json_stringn((const char *)buf, (size_t)n);
    free(buf);
    return j;
}

enum cfm_err cfm_agent_text_b64_decode(const char *text, size_t len, unsigned char **out,
                                       size_t *outlen, struct cfm_why *why)
{
    enum cfm_err err = CFM_EINVAL;
    unsigned char *packed = NULL, *data = NULL;
    size_t n = 0, pad = 0;
    int got;

    *out = NULL;
    *outlen = 0;
    if (len > INT_MAX)
        return cfm_why_set(why, CFM_ETOOBIG, "content_b64 is too long");
    /* EVP_DecodeBlock takes one block of text: drop the line breaks. */
    packed = malloc(len + 1);
    data = malloc(len / 4 * 3 + 1);
    if (!packed || !data) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < len; i++)
        if (text[i] != '\n' && text[i] != '\r')
            packed[n++] = (unsigned char)text[i];
    if (n % 4 != 0) {
        cfm_why_set(why, CFM_EINVAL,
                    "content_b64 is not base64 (length %zu is not a multiple of 4)", n);
        goto out;
    }
    if (n > 0 && packed[n - 1] == '=')
        pad++;
    if (n > 1 && packed[n - 2] == '=')
        pad++;
    /* EVP_DecodeBlock reads '=' as zero bits anywhere: allow it only as padding. */
    if (memchr(packed, '=', n - pad)) {
        cfm_why_set(why, CFM_EINVAL, "content_b64 is not base64 ('=' before the end)");
        goto out;
    }
    got = n ? EVP_DecodeBlock(data, packed, (int)n) : 0;
    if (got < 0 || (size_t)got < pad) {
        cfm_why_set(why, CFM_EINVAL, "content_b64 is not base64");
        goto out;
    }
    *out = data;
    *outlen = (size_t)got - pad;
    data = NULL;
    err = CFM_OK;
out:
    free(packed);
    free(data);
    return err;
}

enum cfm_err cfm_agent_req_int(const json_t *req, const char *name, json_int_t def,
                               json_int_t min, json_int_t max, json_int_t *out,
                               struct cfm_why *why)
{
    const json_t *v = json_object_get(req, name);

    if (!v) {
        *out = def;
        return CFM_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return cfm_why_set(why, CFM_EINVAL, "%s must be an integer from %lld to %lld", name,
                           (long long)min, (long long)max);
    *out = json_integer_value(v);
    return CFM_OK;
}
