/*
 * template.c - the template language of ConfigTemplate bodies and of the
 * procedures' render(template, vars): mustache's variables, sections,
 * inverted sections and comments, without HTML escaping, partials or
 * delimiter changes (docs/templates.md).
 *
 * Rendering is two passes. parse() checks the whole template and turns it
 * into a flat array of nodes (text, variable, section open, section close),
 * each open linked to its close, so syntax errors are reported whatever the
 * data and with the line of the tag. The standalone-line rule is applied
 * there, by trimming the text around such tags. render() then walks the
 * array with an explicit stack of at most CFM_TEMPLATE_MAX_DEPTH frames
 * (no recursion): a section over an array jumps back from its close to its
 * first node once per element.
 *
 * The one thing to know: data can make a small template expensive (nested
 * sections over arrays multiply), so besides the output cap every node
 * visited counts against CFM_TEMPLATE_MAX_STEPS. Names in messages go
 * through cfm_quote, as the template comes from users.
 */
#include "template.h"
#include "util.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "schema.h"

#define SHOW_MAX 64 /* bytes of a name or tag quoted in a message */

enum node_type { N_TEXT, N_VAR, N_SECTION, N_INVERTED, N_CLOSE };

struct node {
    enum node_type type;
    size_t off, len; /* N_TEXT: the bytes of the template; tags: the name */
    size_t other;    /* N_SECTION/N_INVERTED: index of the close; N_CLOSE: of the open */
    size_t line;     /* where the tag starts, for messages */
};

struct parser {
    const char *src;
    size_t len;
    struct node *nodes; /* owned, grown by add_node */
    size_t n, cap;
    size_t line, counted; /* line number of byte `counted` */
    struct cfm_why *why;
};

/* Output under construction, never longer than max. */
struct out {
    char *data; /* owned; NUL-terminated once render ends */
    size_t len, cap, max;
};

/* One open section while rendering: the context it pushed. */
struct frame {
    size_t open;        /* index of the N_SECTION node */
    const json_t *list; /* the array iterated, or NULL */
    size_t index;       /* current element of list */
    const json_t *ctx;  /* the value pushed on the context stack */
};

/* ---- parsing --------------------------------------------------------------- */

/* The line of byte pos; pos never goes backwards between calls. */
static size_t line_at(struct parser *p, size_t pos)
{
    const char *nl;

    assert(pos >= p->counted);
    while ((nl = memchr(p->src + p->counted, '\n', pos - p->counted)) != NULL) {
        p->line++;
        p->counted = (size_t)(nl - p->src) + 1;
    }
    p->counted = pos;
    return p->line;
}

/* Index of the first "{{" (or "}}") at or after from, or len. */
static size_t find_pair(const char *s, size_t from, size_t len, char c)
{
    const char *hit;

    while (from + 1 < len && (hit = memchr(s + from, c, len - from - 1)) != NULL) {
        size_t i = (size_t)(hit - s);
        if (s[i + 1] == c)
            return i;
        from = i + 1;
    }
    return len;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static enum cfm_err add_node(struct parser *p, enum node_type type, size_t off, size_t len,
                             size_t line)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        struct node *grown;

        if (cap > SIZE_MAX / sizeof *grown)
            return cfm_why_set(p->why, CFM_ENOMEM, "template has too many tags");
        grown = realloc(p->nodes, cap * sizeof *grown);
        if (!grown)
            return cfm_why_set(p->why, CFM_ENOMEM, "out of memory parsing template");
        p->nodes = grown;
        p->cap = cap;
    }
    p->nodes[p->n].type = type;
    p->nodes[p->n].off = off;
    p->nodes[p->n].len = len;
    p->nodes[p->n].other = 0;
    p->nodes[p->n].line = line;
    p->n++;
    return CFM_OK;
}

static const char *quote(char *buf, size_t size, const char *s, size_t len)
{
    return cfm_quote(buf, size, s, len, SHOW_MAX);
}

/* Checks a name: 1..CFM_TEMPLATE_MAX_NAME bytes, no blanks, control bytes or
 * braces, and "." or dot-separated non-empty parts. */
static enum cfm_err check_name(struct parser *p, size_t tag, size_t tag_end, size_t off,
                               size_t len, size_t line)
{
    char shown[4 * SHOW_MAX + 8], bad[8];
    size_t i;

    if (len == 0)
        return cfm_why_set(p->why, CFM_EINVAL, "line %zu: empty name in tag '%s'", line,
                           quote(shown, sizeof shown, p->src + tag, tag_end - tag));
    if (len > CFM_TEMPLATE_MAX_NAME)
        return cfm_why_set(p->why, CFM_EINVAL, "line %zu: name longer than %d bytes", line,
                           CFM_TEMPLATE_MAX_NAME);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p->src[off + i];
        if (c <= 0x20 || c == 0x7f || c == '{' || c == '}')
            return cfm_why_set(p->why, CFM_EINVAL, "line %zu: name '%s' contains '%s'", line,
                               quote(shown, sizeof shown, p->src + off, len),
                               quote(bad, sizeof bad, p->src + off + i, 1));
    }
    if (len == 1 && p->src[off] == '.')
        return CFM_OK;
    for (i = 0; i < len; i++) {
        bool starts = i == 0 || p->src[off + i - 1] == '.';
        bool ends = i == len - 1 || p->src[off + i + 1] == '.';
        if (p->src[off + i] == '.' && (starts || ends))
            return cfm_why_set(p->why, CFM_EINVAL, "line %zu: name '%s' has an empty part", line,
                               quote(shown, sizeof shown, p->src + off, len));
    }
    return CFM_OK;
}

/* A standalone tag is alone on its line but for blanks: returns true and the
 * start of the line and the byte after its newline (or len). */
static bool standalone(const struct parser *p, size_t tag, size_t tag_end, size_t *line_start,
                       size_t *line_end)
{
    size_t b = tag, e = tag_end;

    while (b > 0 && is_blank(p->src[b - 1]))
        b--;
    if (b > 0 && p->src[b - 1] != '\n')
        return false;
    while (e < p->len && is_blank(p->src[e]))
        e++;
    if (e < p->len && p->src[e] == '\n')
        e++;
    else if (e + 1 < p->len && p->src[e] == '\r' && p->src[e + 1] == '\n')
        e += 2;
    else if (e < p->len)
        return false;
    *line_start = b;
    *line_end = e;
    return true;
}

/* Turns p->src into p->nodes, or fails with the line of the first error. */
static enum cfm_err parse(struct parser *p)
{
    size_t open[CFM_TEMPLATE_MAX_DEPTH];
    size_t depth = 0, pos = 0, text = 0;
    char shown[4 * SHOW_MAX + 8], shown2[4 * SHOW_MAX + 8];
    enum cfm_err err;

    for (;;) {
        size_t tag = find_pair(p->src, pos, p->len, '{');
        size_t line, name, name_end, close, tag_end, text_end, ls, le;
        enum node_type type = N_VAR;
        bool comment = false;
        char sigil;

        if (tag == p->len)
            break;
        line = line_at(p, tag);
        name = tag + 2;
        sigil = name < p->len ? p->src[name] : '\0';
        if (sigil == '#' || sigil == '^' || sigil == '/' || sigil == '!' || sigil == '{' ||
            sigil == '&')
            name++;
        if (sigil == '>' || sigil == '=')
            return cfm_why_set(p->why, CFM_EINVAL,
                               "line %zu: '{{%c' is not supported (no partials or delimiter "
                               "changes)",
                               line, sigil);
        close = find_pair(p->src, name, p->len, '}');
        /* "{{a ... {{b}}": the first tag never closed (comments may hold "{{") */
        if (close == p->len || (sigil != '!' && find_pair(p->src, name, close, '{') < close))
            return cfm_why_set(p->why, CFM_EINVAL, "line %zu: unclosed tag '{{'", line);
        tag_end = close + 2;
        if (sigil == '{') {
            if (tag_end == p->len || p->src[tag_end] != '}')
                return cfm_why_set(p->why, CFM_EINVAL, "line %zu: '%s' must close with '}}}'",
                                   line, quote(shown, sizeof shown, p->src + tag, tag_end - tag));
            tag_end++;
        }
        switch (sigil) {
        case '#': type = N_SECTION; break;
        case '^': type = N_INVERTED; break;
        case '/': type = N_CLOSE; break;
        case '!': comment = true; break;
        default: break;
        }

        text_end = tag;
        pos = tag_end;
        if ((comment || type != N_VAR) && standalone(p, tag, tag_end, &ls, &le)) {
            text_end = ls;
            pos = le;
        }
        if (text_end > text && (err = add_node(p, N_TEXT, text, text_end - text, line)) != CFM_OK)
            return err;
        text = pos;
        if (comment)
            continue;

        name_end = close;
        while (name < name_end && is_space(p->src[name]))
            name++;
        while (name_end > name && is_space(p->src[name_end - 1]))
            name_end--;
        if ((err = check_name(p, tag, tag_end, name, name_end - name, line)) != CFM_OK)
            return err;
        if ((err = add_node(p, type, name, name_end - name, line)) != CFM_OK)
            return err;

        if (type == N_SECTION || type == N_INVERTED) {
            if (depth == CFM_TEMPLATE_MAX_DEPTH)
                return cfm_why_set(p->why, CFM_EINVAL, "line %zu: sections nested deeper than %d",
                                   line, CFM_TEMPLATE_MAX_DEPTH);
            open[depth++] = p->n - 1;
        } else if (type == N_CLOSE) {
            const struct node *o;

            quote(shown, sizeof shown, p->src + name, name_end - name);
            if (depth == 0)
                return cfm_why_set(p->why, CFM_EINVAL, "line %zu: '{{/%s}}' closes no open section",
                                   line, shown);
            o = &p->nodes[open[depth - 1]];
            if (o->len != name_end - name || memcmp(p->src + o->off, p->src + name, o->len) != 0)
                return cfm_why_set(p->why, CFM_EINVAL, "line %zu: '{{/%s}}' closes section '%s'",
                                   line, shown,
                                   quote(shown2, sizeof shown2, p->src + o->off, o->len));
            p->nodes[open[depth - 1]].other = p->n - 1;
            p->nodes[p->n - 1].other = open[depth - 1];
            depth--;
        }
    }
    if (depth > 0) {
        const struct node *o = &p->nodes[open[depth - 1]];
        return cfm_why_set(p->why, CFM_EINVAL, "line %zu: unclosed section '%s'", o->line,
                           quote(shown, sizeof shown, p->src + o->off, o->len));
    }
    if (p->len > text)
        return add_node(p, N_TEXT, text, p->len - text, p->line);
    return CFM_OK;
}

/* ---- rendering ------------------------------------------------------------- */

static enum cfm_err out_add(struct out *o, const char *s, size_t n, struct cfm_why *why)
{
    if (n > o->max - o->len)
        return cfm_why_set(why, CFM_ETOOBIG, "rendered output exceeds %zu bytes", o->max);
    if (o->len + n + 1 > o->cap) {
        size_t need = o->len + n + 1; /* cannot wrap: max < SIZE_MAX */
        size_t cap = o->cap ? o->cap : 256;
        char *grown;

        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > o->max + 1)
            cap = o->max + 1;
        grown = realloc(o->data, cap);
        if (!grown)
            return cfm_why_set(why, CFM_ENOMEM, "out of memory rendering template");
        o->data = grown;
        o->cap = cap;
    }
    if (n > 0)
        memcpy(o->data + o->len, s, n);
    o->len += n;
    return CFM_OK;
}

/* The fewest significant digits (at most 17) that read back as the same
 * double, written as %.17g would place them: positional for exponents -4 to
 * 16 (100000, 0.25, 2), scientific beyond (1e+300, 1.5e-07). */
static void format_real(char *buf, size_t size, double v)
{
    int prec, exp10;
    const char *e;

    for (prec = 1; prec < 17; prec++) {
        snprintf(buf, size, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    snprintf(buf, size, "%.*e", prec - 1, v);
    e = strchr(buf, 'e');
    exp10 = e ? (int)strtol(e + 1, NULL, 10) : 0;
    if (exp10 >= -4 && exp10 < 17)
        snprintf(buf, size, "%.*f", prec - 1 - exp10 > 0 ? prec - 1 - exp10 : 0, v);
    else
        snprintf(buf, size, "%.*g", prec, v);
}

static enum cfm_err out_value(struct out *o, const json_t *v, const struct node *nd,
                              const char *src, struct cfm_why *why)
{
    char num[352], shown[4 * SHOW_MAX + 8]; /* num: any double in %f is < 340 bytes */
    char *dumped;
    enum cfm_err err;

    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_STRING:
        return out_add(o, json_string_value(v), json_string_length(v), why);
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return out_add(o, num, strlen(num), why);
    case JSON_REAL:
        format_real(num, sizeof num, json_real_value(v));
        return out_add(o, num, strlen(num), why);
    case JSON_TRUE:
        return out_add(o, "true", 4, why);
    case JSON_FALSE:
        return out_add(o, "false", 5, why);
    case JSON_NULL:
        return CFM_OK;
    case JSON_OBJECT:
    case JSON_ARRAY:
        break;
    }
    dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!dumped)
        return cfm_why_set(why, CFM_EINVAL, "line %zu: cannot write '%s' as JSON", nd->line,
                           quote(shown, sizeof shown, src + nd->off, nd->len));
    err = out_add(o, dumped, strlen(dumped), why);
    free(dumped);
    return err;
}

/* Mustache's falsy values: missing, null, false, 0, "", []. */
static bool truthy(const json_t *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT: return true;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0.0;
    case JSON_TRUE: return true;
    case JSON_FALSE:
    case JSON_NULL: return false;
    }
    return false;
}

/* Resolves the name of nd: its first part in the innermost context that is an
 * object holding it, the other parts inside that value only. Borrowed, or NULL. */
static const json_t *lookup(const char *src, const struct node *nd, const json_t *vars,
                            const struct frame *frames, size_t nframes)
{
    const char *name = src + nd->off, *dot;
    size_t part, rest = nd->len;
    const json_t *v = NULL;
    size_t i;

    if (nd->len == 1 && name[0] == '.')
        return nframes ? frames[nframes - 1].ctx : vars;
    dot = memchr(name, '.', rest);
    part = dot ? (size_t)(dot - name) : rest;
    for (i = nframes + 1; i-- > 0;) {
        const json_t *ctx = i ? frames[i - 1].ctx : vars;
        if (json_is_object(ctx) && (v = json_object_getn(ctx, name, part)) != NULL)
            break;
    }
    while (v && part < rest) {
        name += part + 1;
        rest -= part + 1;
        dot = memchr(name, '.', rest);
        part = dot ? (size_t)(dot - name) : rest;
        v = json_is_object(v) ? json_object_getn(v, name, part) : NULL;
    }
    return v;
}

static enum cfm_err render(const struct parser *p, const json_t *vars, struct out *o,
                           struct cfm_why *why)
{
    struct frame frames[CFM_TEMPLATE_MAX_DEPTH];
    size_t nframes = 0, i = 0, steps = 0;
    enum cfm_err err;

    while (i < p->n) {
        const struct node *nd = &p->nodes[i];
        const json_t *v;
        struct frame *f;

        if (++steps > CFM_TEMPLATE_MAX_STEPS)
            return cfm_why_set(why, CFM_ETOOBIG,
                               "rendering takes more than %u steps (sections repeat too often)",
                               CFM_TEMPLATE_MAX_STEPS);
        switch (nd->type) {
        case N_TEXT:
            if ((err = out_add(o, p->src + nd->off, nd->len, why)) != CFM_OK)
                return err;
            i++;
            break;
        case N_VAR:
            v = lookup(p->src, nd, vars, frames, nframes);
            if ((err = out_value(o, v, nd, p->src, why)) != CFM_OK)
                return err;
            i++;
            break;
        case N_INVERTED:
            v = lookup(p->src, nd, vars, frames, nframes);
            i = truthy(v) ? nd->other + 1 : i + 1;
            break;
        case N_SECTION:
            v = lookup(p->src, nd, vars, frames, nframes);
            if (!truthy(v)) {
                i = nd->other + 1;
                break;
            }
            assert(nframes < CFM_TEMPLATE_MAX_DEPTH); /* parse() bounds the nesting */
            f = &frames[nframes++];
            f->open = i;
            f->list = json_is_array(v) ? v : NULL;
            f->index = 0;
            f->ctx = f->list ? json_array_get(v, 0) : v;
            i++;
            break;
        case N_CLOSE:
            if (p->nodes[nd->other].type == N_INVERTED) {
                i++;
                break;
            }
            assert(nframes > 0 && frames[nframes - 1].open == nd->other);
            f = &frames[nframes - 1];
            if (f->list && ++f->index < json_array_size(f->list)) {
                f->ctx = json_array_get(f->list, f->index);
                i = nd->other + 1;
            } else {
                nframes--;
                i++;
            }
            break;
        }
    }
    return CFM_OK;
}

enum cfm_err cfm_template_render(const char *tmpl, size_t len, const json_t *vars,
                                 size_t max_out, char **out, size_t *out_len,
                                 struct cfm_why *why)
{
    struct parser p = {tmpl, len, NULL, 0, 0, 1, 0, why};
    struct out o = {NULL, 0, 0, max_out < SIZE_MAX ? max_out : SIZE_MAX - 1};
    enum cfm_err err;

    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!out || (!tmpl && len > 0))
        return cfm_why_set(why, CFM_EINVAL, "template render needs a template and an output");
    if (vars && !json_is_object(vars))
        return cfm_why_set(why, CFM_EINVAL, "template variables must be a JSON object");
    if (len > CFM_MAX_PAYLOAD)
        return cfm_why_set(why, CFM_ETOOBIG, "template is longer than %u bytes", CFM_MAX_PAYLOAD);
    if ((err = parse(&p)) != CFM_OK)
        goto out;
    if ((err = render(&p, vars, &o, why)) != CFM_OK)
        goto out;
    if ((err = out_add(&o, "", 0, why)) != CFM_OK) /* make room for the NUL */
        goto out;
    o.data[o.len] = '\0';
    *out = o.data;
    o.data = NULL;
    if (out_len)
        *out_len = o.len;
out:
    free(o.data);
    free(p.nodes);
    return err;
}
