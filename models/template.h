/*
 * template.h - a small mustache-like template language over jansson values,
 * for ConfigTemplate bodies and the procedures' render(template, vars).
 * docs/templates.md is the language reference.
 */
#ifndef CFM_TEMPLATE_H
#define CFM_TEMPLATE_H

#include <stddef.h>
#include <jansson.h>

#include "err.h"

#define CFM_TEMPLATE_MAX_DEPTH 32        /* sections open inside each other */
#define CFM_TEMPLATE_MAX_NAME  256       /* bytes of one name, dots included */
#define CFM_TEMPLATE_MAX_STEPS 10000000u /* template elements visited in one render */

/* Renders tmpl (len bytes, may hold NULs; at most CFM_MAX_PAYLOAD) with vars
 * (borrowed; a JSON object, or NULL for no variables). On success *out is a
 * new NUL-terminated string (the caller free()s it) and *out_len (if not
 * NULL) its length. On failure *out is NULL and the result is CFM_EINVAL
 * (syntax, with the line: "line 3: unclosed section 'web'"), CFM_ETOOBIG
 * (output over max_out bytes, a template over CFM_MAX_PAYLOAD, more than
 * CFM_TEMPLATE_MAX_STEPS steps) or CFM_ENOMEM, with why (may be NULL). */
enum cfm_err cfm_template_render(const char *tmpl, size_t len, const json_t *vars,
                                 size_t max_out, char **out, size_t *out_len,
                                 struct cfm_why *why);

#endif
