/*
 * text.h - bytes from commands and files made safe for JSON answers: UTF-8
 * checking and repair, and base64 (OpenSSL's EVP_EncodeBlock/DecodeBlock);
 * and the integer fields of a request, checked.
 */
#ifndef CFM_AGENT_TEXT_H
#define CFM_AGENT_TEXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* True when s[0..len) is well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF). NUL bytes are valid UTF-8. */
bool cfm_agent_text_utf8_valid(const char *s, size_t len);

/* Returns a new JSON string holding s[0..len) with every byte that is not
 * part of a well-formed UTF-8 sequence replaced by U+FFFD, or NULL when out
 * of memory. s may hold NUL bytes (they become "\u0000"). */
json_t *cfm_agent_text_json(const char *s, size_t len);

/* Returns a new JSON string holding the base64 of data[0..len), or NULL
 * when out of memory or len is too large to encode. */
json_t *cfm_agent_text_b64_json(const void *data, size_t len);

/* Decodes base64 text (line breaks allowed, '=' padding required) into a new
 * buffer *out (the caller frees it) of *outlen bytes. CFM_EINVAL with why
 * when text is not base64. */
enum cfm_err cfm_agent_text_b64_decode(const char *text, size_t len, unsigned char **out,
                                       size_t *outlen, struct cfm_why *why);

/* The integer field name of request req, from min to max, in *out; def when
 * it is absent. CFM_EINVAL with why naming the field and the range. */
enum cfm_err cfm_agent_req_int(const json_t *req, const char *name, json_int_t def,
                               json_int_t min, json_int_t max, json_int_t *out,
                               struct cfm_why *why);

#endif
