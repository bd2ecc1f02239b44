/*
 * fileops.c - put_file and get_file: checks the fields of a request, then
 * leaves the disk to files.c. Contents travel as JSON strings when they are
 * UTF-8 text without NUL bytes, and as base64 ("content_b64") otherwise, so
 * any file round-trips byte for byte. A mode is an octal string ("0644"),
 * as chmod takes it.
 */
#include "fileops.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"
#include "text.h"

#define DEFAULT_MODE 0644u
#define MAX_MODE 07777u

/* The "path" field of req: its bytes (path, len) and a quoted form. */
static enum cfm_err get_path(const char *op, const json_t *req, const char **path, size_t *len,
                             char *shown, size_t size, struct cfm_why *why)
{
    const json_t *v = json_object_get(req, "path");

    if (!json_is_string(v))
        return cfm_why_set(why, CFM_EINVAL, "%s needs \"path\" (a string)", op);
    *path = json_string_value(v);
    *len = json_string_length(v);
    cfm_agent_files_shown(shown, size, *path, *len);
    return CFM_OK;
}

static enum cfm_err parse_mode(const json_t *v, unsigned *mode, struct cfm_why *why)
{
    const char *s = json_string_value(v);
    unsigned m = 0;
    size_t i;

    if (!v) {
        *mode = DEFAULT_MODE;
        return CFM_OK;
    }
    for (i = 0; s && s[i] >= '0' && s[i] <= '7' && i < 5; i++)
        m = m * 8 + (unsigned)(s[i] - '0');
    if (!s || i == 0 || s[i] != '\0' || m > MAX_MODE)
        return cfm_why_set(why, CFM_EINVAL,
                           "mode must be an octal string from \"0000\" to \"7777\", like \"0644\"");
    *mode = m;
    return CFM_OK;
}

json_t *cfm_agent_op_put_file(const char *root, const char *state_dir, const json_t *req,
                              struct cfm_why *why)
{
    char shown[4 * CFM_AGENT_PATH_SHOWN + 8], abs[PATH_MAX];
    const json_t *text = json_object_get(req, "content");
    const json_t *b64 = json_object_get(req, "content_b64");
    unsigned char *decoded = NULL;
    const char *path = NULL, *data;
    size_t pathlen = 0, len;
    unsigned mode = DEFAULT_MODE;
    json_t *result = NULL;

    if (get_path("put_file", req, &path, &pathlen, shown, sizeof shown, why) != CFM_OK ||
        parse_mode(json_object_get(req, "mode"), &mode, why) != CFM_OK)
        return NULL;
    if ((text && b64) || (!text && !b64) || (text && !json_is_string(text)) ||
        (b64 && !json_is_string(b64))) {
        cfm_why_set(why, CFM_EINVAL,
                    "put_file needs one of \"content\" or \"content_b64\" (a string)");
        return NULL;
    }
    if (text) {
        data = json_string_value(text);
        len = json_string_length(text);
    } else {
        if (cfm_agent_text_b64_decode(json_string_value(b64), json_string_length(b64), &decoded,
                                      &len, why) != CFM_OK)
            return NULL;
        data = (const char *)decoded;
    }
    if (len > CFM_AGENT_MAX_FILE) {
        cfm_why_set(why, CFM_ETOOBIG, "content of %zu bytes is over the %u-byte limit", len,
                    CFM_AGENT_MAX_FILE);
        goto out;
    }
    if (cfm_agent_files_resolve(root, path, pathlen, CFM_AGENT_FILES_WRITE, abs, sizeof abs,
                                why) != CFM_OK)
        goto out;
    if (cfm_agent_files_inside(state_dir, abs)) {
        cfm_why_set(why, CFM_EINVAL, "path '%s' is the agent's own state", shown);
        goto out;
    }
    if (cfm_agent_files_write(abs, data, len, mode, shown, why) != CFM_OK)
        goto out;
    result = json_pack("{s:s%, s:I}", "path", path, pathlen, "size", (json_int_t)len);
    if (!result)
        cfm_why_set(why, CFM_ENOMEM, "out of memory");
out:
    free(decoded);
    return result;
}

json_t *cfm_agent_op_get_file(const char *root, const json_t *req, struct cfm_why *why)
{
    char shown[4 * CFM_AGENT_PATH_SHOWN + 8], abs[PATH_MAX], mode_text[8];
    const char *path = NULL;
    char *data = NULL;
    size_t pathlen = 0, len;
    unsigned mode;
    json_t *result = NULL, *content;
    bool plain;

    if (get_path("get_file", req, &path, &pathlen, shown, sizeof shown, why) != CFM_OK ||
        cfm_agent_files_resolve(root, path, pathlen, CFM_AGENT_FILES_READ, abs, sizeof abs,
                                why) != CFM_OK ||
        cfm_agent_files_read(abs, CFM_AGENT_MAX_FILE, &data, &len, &mode, shown, why) != CFM_OK)
        return NULL;
    plain = !memchr(data, '\0', len) && cfm_agent_text_utf8_valid(data, len);
    content = plain ? json_stringn(data, len) : cfm_agent_text_b64_json(data, len);
    snprintf(mode_text, sizeof mode_text, "%04o", mode);
    result = json_pack("{s:s%, s:I, s:s, s:o*}", "path", path, pathlen, "size", (json_int_t)len,
                       "mode", mode_text, plain ? "content" : "content_b64", content);
    if (!result || !content) {
        json_decref(result);
        result = NULL;
        cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    free(data);
    return result;
}
