/*
 * test_agent_files.c - unit tests of the agent's disk: path confinement
 * (files.c) on a real temporary directory with real symbolic links, the
 * atomic write and the capped read, the put_file/get_file requests
 * (fileops.c), the text helpers they rely on (text.c) and the answers kept
 * on disk for repeated request ids (answers.c). Error texts are
 * compared whole: they are what a procedure author reads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "answers.h"
#include "fileops.h"
#include "files.h"
#include "text.h"

/* A temporary directory holding "disk" (the VM's root) and "outside". */
struct fixture {
    char top[PATH_MAX];
    char root[PATH_MAX];
    char outside[PATH_MAX];
    char state[PATH_MAX];
};

static void path_of(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

    assert_true(n > 0 && n < PATH_MAX);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    char tmpl[PATH_MAX];
    const char *tmp = getenv("TMPDIR");

    assert_non_null(fx);
    snprintf(tmpl, sizeof tmpl, "%s/cfm-agent-files.XXXXXX", tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(tmpl));
    assert_non_null(realpath(tmpl, fx->top)); /* the root must be resolved */
    path_of(fx->root, fx->top, "disk");
    path_of(fx->outside, fx->top, "outside");
    path_of(fx->state, fx->root, ".cfm-agent");
    assert_int_equal(mkdir(fx->root, 0755), 0);
    assert_int_equal(mkdir(fx->outside, 0755), 0);
    assert_int_equal(mkdir(fx->state, 0700), 0);
    *state = fx;
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    nftw(fx->top, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static int by_name(const void *l, const void *r)
{
    return strcmp(*(char *const *)l, *(char *const *)r);
}

/* Names in dir (other than . and ..), sorted, joined with ','. */
static const char *listing(const char *dir)
{
    static char buf[1024];
    char *names[64];
    struct dirent *de;
    DIR *d = opendir(dir);
    size_t n = 0, o = 0;

    assert_non_null(d);
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        assert_true(n < 64);
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", i ? "," : "", names[i]);
        assert_true(o < sizeof buf);
        free(names[i]);
    }
    return buf;
}

static enum cfm_err resolve(const struct fixture *fx, const char *path,
                            enum cfm_agent_files_use use, char *out, struct cfm_why *why)
{
    return cfm_agent_files_resolve(fx->root, path, strlen(path), use, out, PATH_MAX, why);
}

/* ---- confinement --------------------------------------------------------- */

static void test_dotdot_refused(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX];
    struct cfm_why why = {{0}};

    assert_int_equal(resolve(fx, "a/../../outside/x", CFM_AGENT_FILES_WRITE, out, &why),
                     CFM_EINVAL);
    assert_string_equal(why.text,
                        "path 'a/../../outside/x' escapes the VM's disk ('..' is not allowed)");
    assert_int_equal(resolve(fx, "..", CFM_AGENT_FILES_DIR, out, &why), CFM_EINVAL);
    /* Nothing was created on the way. */
    assert_string_equal(listing(fx->root), ".cfm-agent");
}

static void test_absolute_is_relative_to_root(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX], want[PATH_MAX];
    struct cfm_why why = {{0}};

    assert_int_equal(resolve(fx, "/etc//./x.conf", CFM_AGENT_FILES_WRITE, out, &why), CFM_OK);
    path_of(want, fx->root, "etc/x.conf");
    assert_string_equal(out, want);
    /* An absolute path naming a real place outside is still inside the disk. */
    path_of(want, fx->outside, "f");
    assert_int_equal(resolve(fx, want, CFM_AGENT_FILES_WRITE, out, &why), CFM_OK);
    assert_true(strncmp(out, fx->root, strlen(fx->root)) == 0);
    assert_int_equal(resolve(fx, "/", CFM_AGENT_FILES_WRITE, out, &why), CFM_EINVAL);
    assert_string_equal(why.text, "path '/' names no file");
    assert_int_equal(resolve(fx, "", CFM_AGENT_FILES_DIR, out, &why), CFM_OK);
    assert_string_equal(out, fx->root);
}

static void test_symlink_escape(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX], link[PATH_MAX], secret[PATH_MAX];
    struct cfm_why why = {{0}};

    path_of(link, fx->root, "link");
    assert_int_equal(symlink(fx->outside, link), 0);
    path_of(secret, fx->outside, "secret");
    write_file(secret, "s3cret");

    assert_int_equal(resolve(fx, "link/new/x", CFM_AGENT_FILES_WRITE, out, &why), CFM_EINVAL);
    assert_string_equal(why.text, "path 'link/new/x' escapes the VM's disk");
    assert_string_equal(listing(fx->outside), "secret"); /* no mkdir outside */
    assert_int_equal(resolve(fx, "link/secret", CFM_AGENT_FILES_READ, out, &why), CFM_EINVAL);
    assert_string_equal(why.text, "path 'link/secret' escapes the VM's disk");
    assert_int_equal(resolve(fx, "link", CFM_AGENT_FILES_DIR, out, &why), CFM_EINVAL);
    assert_string_equal(why.text, "path 'link' escapes the VM's disk");

    /* A link to a file outside: reading through it is refused, writing
     * replaces the link and leaves the outside file alone. */
    path_of(link, fx->root, "f");
    assert_int_equal(symlink(secret, link), 0);
    assert_int_equal(resolve(fx, "f", CFM_AGENT_FILES_READ, out, &why), CFM_EINVAL);
    assert_int_equal(resolve(fx, "f", CFM_AGENT_FILES_WRITE, out, &why), CFM_OK);
    assert_string_equal(out, link);
    assert_int_equal(cfm_agent_files_write(out, "mine", 4, 0644, "f", &why), CFM_OK);
    char *data;
    size_t len;
    unsigned mode;
    assert_int_equal(cfm_agent_files_read(secret, 100, &data, &len, &mode, "s", &why), CFM_OK);
    assert_string_equal(data, "s3cret");
    free(data);

    /* A link that stays inside is fine. */
    char sub[PATH_MAX];
    path_of(sub, fx->root, "sub");
    assert_int_equal(mkdir(sub, 0755), 0);
    path_of(link, fx->root, "in");
    assert_int_equal(symlink("sub", link), 0);
    assert_int_equal(resolve(fx, "in/x", CFM_AGENT_FILES_WRITE, out, &why), CFM_OK);
    path_of(link, sub, "x");
    assert_string_equal(out, link);
}

static void test_nul_refused(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX];
    struct cfm_why why = {{0}};

    assert_int_equal(cfm_agent_files_resolve(fx->root, "a\0b", 3, CFM_AGENT_FILES_WRITE, out,
                                             sizeof out, &why),
                     CFM_EINVAL);
    assert_string_equal(why.text, "path 'a\\x00b' contains a NUL byte");
}

static void test_missing_and_not_dir(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX], f[PATH_MAX];
    struct cfm_why why = {{0}};

    assert_int_equal(resolve(fx, "nope", CFM_AGENT_FILES_READ, out, &why), CFM_ENOTFOUND);
    assert_string_equal(why.text, "path 'nope' does not exist");
    path_of(f, fx->root, "plain");
    write_file(f, "x");
    assert_int_equal(resolve(fx, "plain/x", CFM_AGENT_FILES_WRITE, out, &why), CFM_EINVAL);
    assert_string_equal(why.text, "path 'plain/x': 'plain' is not a directory");
    assert_int_equal(resolve(fx, "plain", CFM_AGENT_FILES_DIR, out, &why), CFM_EINVAL);
    assert_string_equal(why.text, "path 'plain' is not a directory");
}

/* ---- atomic write and read ----------------------------------------------- */

static void test_atomic_write(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX], dir[PATH_MAX];
    struct cfm_why why = {{0}};
    struct stat st;
    char *data;
    size_t len;
    unsigned mode;

    umask(022);
    assert_int_equal(resolve(fx, "a/b/c.txt", CFM_AGENT_FILES_WRITE, out, &why), CFM_OK);
    path_of(dir, fx->root, "a/b");
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(cfm_agent_files_write(out, "one\n", 4, 0640, "a/b/c.txt", &why), CFM_OK);
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_string_equal(listing(dir), "c.txt"); /* no temporary file left */

    /* Replacing: a new inode, renamed over the old one. */
    ino_t before = st.st_ino;
    assert_int_equal(cfm_agent_files_write(out, "two", 3, 0755, "a/b/c.txt", &why), CFM_OK);
    assert_int_equal(stat(out, &st), 0);
    assert_true(st.st_ino != before);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_string_equal(listing(dir), "c.txt");
    assert_int_equal(cfm_agent_files_read(out, 100, &data, &len, &mode, "c", &why), CFM_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "two", 3);
    assert_int_equal(mode, 0755);
    free(data);

    /* Binary content with NULs round-trips. */
    assert_int_equal(cfm_agent_files_write(out, "a\0b", 3, 0600, "c", &why), CFM_OK);
    assert_int_equal(cfm_agent_files_read(out, 100, &data, &len, &mode, "c", &why), CFM_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "a\0b", 3);
    free(data);
}

static void test_write_over_directory_leaves_nothing(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX], d[PATH_MAX];
    struct cfm_why why = {{0}};

    path_of(d, fx->root, "d");
    assert_int_equal(mkdir(d, 0755), 0);
    assert_int_equal(resolve(fx, "d", CFM_AGENT_FILES_WRITE, out, &why), CFM_OK);
    assert_int_equal(cfm_agent_files_write(out, "x", 1, 0644, "d", &why), CFM_EIO);
    assert_string_equal(why.text, "path 'd': cannot replace it: Is a directory");
    assert_string_equal(listing(fx->root), ".cfm-agent,d");
}

static void test_read_limits(void **state)
{
    struct fixture *fx = *state;
    char f[PATH_MAX];
    struct cfm_why why = {{0}};
    char *data = NULL;
    size_t len;
    unsigned mode;

    path_of(f, fx->root, "big");
    write_file(f, "0123456789x");
    assert_int_equal(cfm_agent_files_read(f, 10, &data, &len, &mode, "big", &why),
                     CFM_ETOOBIG);
    assert_string_equal(why.text, "path 'big' is 11 bytes, over the 10-byte limit");
    assert_null(data);
    assert_int_equal(cfm_agent_files_read(f, 11, &data, &len, &mode, "big", &why), CFM_OK);
    assert_int_equal(len, 11);
    free(data);

    assert_int_equal(cfm_agent_files_read(fx->root, 10, &data, &len, &mode, "dir", &why),
                     CFM_EINVAL);
    assert_string_equal(why.text, "path 'dir' is not a regular file");
    path_of(f, fx->root, "fifo");
    assert_int_equal(mkfifo(f, 0600), 0);
    assert_int_equal(cfm_agent_files_read(f, 10, &data, &len, &mode, "fifo", &why),
                     CFM_EINVAL); /* and did not block */
    assert_string_equal(why.text, "path 'fifo' is not a regular file");
}

/* ---- put_file and get_file ----------------------------------------------- */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);

    if (!j)
        fail_msg("bad test JSON: %s: %s", jerr.text, text);
    return j;
}

static void test_put_get_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct cfm_why why = {{0}};
    json_t *req, *res;
    char f[PATH_MAX];
    struct stat st;

    req = parse("{\"path\": \"/etc/app/x.conf\", \"content\": \"k=v\\n\", \"mode\": \"0600\"}");
    res = cfm_agent_op_put_file(fx->root, fx->state, req, &why);
    assert_non_null(res);
    assert_int_equal(json_integer_value(json_object_get(res, "size")), 4);
    json_decref(res);
    json_decref(req);
    path_of(f, fx->root, "etc/app/x.conf");
    assert_int_equal(stat(f, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    req = parse("{\"path\": \"etc/app/x.conf\"}");
    res = cfm_agent_op_get_file(fx->root, req, &why);
    assert_non_null(res);
    assert_string_equal(json_string_value(json_object_get(res, "content")), "k=v\n");
    assert_string_equal(json_string_value(json_object_get(res, "mode")), "0600");
    json_decref(res);
    json_decref(req);

    /* Binary: base64 both ways ("AP8=" is 00 ff). */
    req = parse("{\"path\": \"bin\", \"content_b64\": \"AP8=\"}");
    res = cfm_agent_op_put_file(fx->root, fx->state, req, &why);
    assert_non_null(res);
    json_decref(res);
    json_decref(req);
    req = parse("{\"path\": \"bin\"}");
    res = cfm_agent_op_get_file(fx->root, req, &why);
    assert_non_null(res);
    assert_null(json_object_get(res, "content"));
    assert_string_equal(json_string_value(json_object_get(res, "content_b64")), "AP8=");
    assert_string_equal(json_string_value(json_object_get(res, "mode")), "0644");
    json_decref(res);
    json_decref(req);
}

static void expect_put_error(const struct fixture *fx, const char *json, const char *error)
{
    struct cfm_why why = {{0}};
    json_t *req = parse(json);
    json_t *res = cfm_agent_op_put_file(fx->root, fx->state, req, &why);

    assert_null(res);
    assert_string_equal(why.text, error);
    json_decref(req);
}

static void test_put_errors(void **state)
{
    struct fixture *fx = *state;
    char *big = malloc(CFM_AGENT_MAX_FILE + 64);
    size_t o;

    assert_non_null(big);
    expect_put_error(fx, "{\"path\": \"x\"}",
                     "put_file needs one of \"content\" or \"content_b64\" (a string)");
    expect_put_error(fx, "{\"path\": 1, \"content\": \"\"}", "put_file needs \"path\" (a string)");
    expect_put_error(fx, "{\"path\": \"x\", \"content\": \"\", \"mode\": \"0999\"}",
                     "mode must be an octal string from \"0000\" to \"7777\", like \"0644\"");
    expect_put_error(fx, "{\"path\": \"x\", \"content\": \"\", \"mode\": 420}",
                     "mode must be an octal string from \"0000\" to \"7777\", like \"0644\"");
    expect_put_error(fx, "{\"path\": \"x\", \"content_b64\": \"A=A=\"}",
                     "content_b64 is not base64 ('=' before the end)");
    expect_put_error(fx, "{\"path\": \"x\", \"content_b64\": \"abc\"}",
                     "content_b64 is not base64 (length 3 is not a multiple of 4)");
    expect_put_error(fx, "{\"path\": \".cfm-agent/answers/x.json\", \"content\": \"{}\"}",
                     "path '.cfm-agent/answers/x.json' is the agent's own state");
    o = (size_t)snprintf(big, 64, "{\"path\": \"big\", \"content\": \"");
    memset(big + o, 'x', CFM_AGENT_MAX_FILE + 1);
    memcpy(big + o + CFM_AGENT_MAX_FILE + 1, "\"}", 3);
    expect_put_error(fx, big, "content of 1048577 bytes is over the 1048576-byte limit");
    free(big);
    assert_string_equal(listing(fx->root), ".cfm-agent");
}

static void test_get_too_big(void **state)
{
    struct fixture *fx = *state;
    struct cfm_why why = {{0}};
    char f[PATH_MAX];
    json_t *req, *res;
    FILE *fp;

    path_of(f, fx->root, "huge");
    fp = fopen(f, "w");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, CFM_AGENT_MAX_FILE, SEEK_SET), 0);
    assert_int_equal(fputc('x', fp), 'x');
    assert_int_equal(fclose(fp), 0);
    req = parse("{\"path\": \"huge\"}");
    res = cfm_agent_op_get_file(fx->root, req, &why);
    assert_null(res);
    assert_string_equal(why.text, "path 'huge' is 1048577 bytes, over the 1048576-byte limit");
    json_decref(req);
}

/* ---- answers ------------------------------------------------------------ */

static void put_answer(struct cfm_agent_answers *a, const char *id, const char *error)
{
    struct cfm_why why = {{0}};
    size_t len;
    char *text = cfm_agent_answer_text(id, NULL, error, &len);

    assert_non_null(text);
    assert_int_equal(cfm_agent_answers_put(a, id, text, len, true, &why), CFM_OK);
    free(text);
}

static void expect_answer(struct cfm_agent_answers *a, const char *id, const char *want)
{
    char *text;
    size_t len;

    assert_int_equal(cfm_agent_answers_get(a, id, &text, &len), CFM_OK);
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    free(text);
}

static void test_answers_kept_and_bounded(void **state)
{
    struct fixture *fx = *state;
    struct cfm_agent_answers *a = NULL;
    struct cfm_why why = {{0}};
    char dir[PATH_MAX], path[PATH_MAX], id[8];
    char *text;
    size_t len;

    path_of(dir, fx->state, "answers/deeper");
    assert_int_equal(cfm_agent_answers_open(dir, 3, &a, &why), CFM_OK);
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof id, "a%d", i);
        put_answer(a, id, "no");
    }
    assert_string_equal(listing(dir), "a3.json,a4.json,a5.json");
    assert_int_equal(cfm_agent_answers_get(a, "a2", &text, &len), CFM_ENOTFOUND);
    expect_answer(a, "a5", "{\"id\":\"a5\",\"ok\":false,\"error\":\"no\"}");
    /* A command running when the agent died, and a write a crash cut short. */
    assert_int_equal(cfm_agent_answers_mark_running(a, "r1", &why), CFM_OK);
    cfm_agent_answers_free(a);
    path_of(path, dir, ".a6.json.tmp-1234");
    write_file(path, "{");

    assert_int_equal(cfm_agent_answers_open(dir, 3, &a, &why), CFM_OK);
    expect_answer(a, "a5", "{\"id\":\"a5\",\"ok\":false,\"error\":\"no\"}"); /* from disk */
    expect_answer(a, "r1",
                  "{\"id\":\"r1\",\"ok\":false,\"error\":\"" CFM_AGENT_INTERRUPTED "\"}");
    assert_int_equal(cfm_agent_answers_get(a, "a3", &text, &len), CFM_ENOTFOUND); /* evicted */
    cfm_agent_answers_free(a);
    /* a3 made room for r1; the mark and the temporary file are gone. */
    assert_string_equal(listing(dir), "a4.json,a5.json,r1.json");
}

/* An answer kept in memory only (an http_get's): answered again while the
 * agent runs, no file, gone after a restart; the first forgotten when the
 * memory budget is passed. */
static void test_answers_in_memory_only(void **state)
{
    struct fixture *fx = *state;
    struct cfm_agent_answers *a = NULL;
    struct cfm_why why = {{0}};
    char dir[PATH_MAX];
    char *text, *big;
    size_t len, big_len = CFM_AGENT_ANSWERS_MEM / 2 + 1;

    path_of(dir, fx->state, "answers");
    assert_int_equal(cfm_agent_answers_open(dir, 100, &a, &why), CFM_OK);
    assert_int_equal(cfm_agent_answers_put(a, "g1", "{\"id\":\"g1\"}", 11, false, &why), CFM_OK);
    put_answer(a, "c1", "no");
    expect_answer(a, "g1", "{\"id\":\"g1\"}");
    assert_string_equal(listing(dir), "c1.json");
    /* Two answers of over half the budget each: g1 and g2 go, c1 stays. */
    assert_non_null(big = malloc(big_len));
    memset(big, 'x', big_len);
    assert_int_equal(cfm_agent_answers_put(a, "g2", big, big_len, false, &why), CFM_OK);
    assert_int_equal(cfm_agent_answers_put(a, "g3", big, big_len, false, &why), CFM_OK);
    free(big);
    assert_int_equal(cfm_agent_answers_get(a, "g1", &text, &len), CFM_ENOTFOUND);
    assert_int_equal(cfm_agent_answers_get(a, "g2", &text, &len), CFM_ENOTFOUND);
    assert_int_equal(cfm_agent_answers_get(a, "g3", &text, &len), CFM_OK);
    free(text);
    expect_answer(a, "c1", "{\"id\":\"c1\",\"ok\":false,\"error\":\"no\"}");
    cfm_agent_answers_free(a);
    assert_int_equal(cfm_agent_answers_open(dir, 100, &a, &why), CFM_OK);
    assert_int_equal(cfm_agent_answers_get(a, "g3", &text, &len), CFM_ENOTFOUND);
    expect_answer(a, "c1", "{\"id\":\"c1\",\"ok\":false,\"error\":\"no\"}");
    cfm_agent_answers_free(a);
}

static void test_answer_text(void **state)
{
    json_t *result = json_pack("{s:i}", "code", 0);
    size_t len;
    char *text;

    (void)state;
    text = cfm_agent_answer_text("x", result, NULL, &len);
    assert_string_equal(text, "{\"id\":\"x\",\"ok\":true,\"code\":0}");
    free(text);
    text = cfm_agent_answer_text("x", NULL, "bad \xff byte", &len);
    assert_string_equal(text, "{\"id\":\"x\",\"ok\":false,\"error\":\"bad \xef\xbf\xbd byte\"}");
    assert_int_equal(len, strlen(text));
    free(text);
    json_decref(result);
}

/* ---- text ----------------------------------------------------------------- */

static void test_utf8(void **state)
{
    json_t *j;

    (void)state;
    assert_true(cfm_agent_text_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    assert_false(cfm_agent_text_utf8_valid("\xc3", 1));             /* cut */
    assert_false(cfm_agent_text_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(cfm_agent_text_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(cfm_agent_text_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(cfm_agent_text_utf8_valid("\xff", 1));
    j = cfm_agent_text_json("a\xff" "b\xc3", 4);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "a\xef\xbf\xbd" "b\xef\xbf\xbd");
    json_decref(j);
}

static void test_b64(void **state)
{
    unsigned char *out;
    size_t len;
    struct cfm_why why = {{0}};
    json_t *j;

    (void)state;
    j = cfm_agent_text_b64_json("hello", 5);
    assert_string_equal(json_string_value(j), "aGVsbG8=");
    json_decref(j);
    assert_int_equal(cfm_agent_text_b64_decode("aGVs\nbG8=", 9, &out, &len, &why), CFM_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "hello", 5);
    free(out);
    assert_int_equal(cfm_agent_text_b64_decode("", 0, &out, &len, &why), CFM_OK);
    assert_int_equal(len, 0);
    free(out);
    assert_int_equal(cfm_agent_text_b64_decode("a!b=", 4, &out, &len, &why), CFM_EINVAL);
    assert_string_equal(why.text, "content_b64 is not base64");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dotdot_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_is_relative_to_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_escape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_not_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_over_directory_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answers_kept_and_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answers_in_memory_only, setup, teardown),
        cmocka_unit_test(test_answer_text),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_b64),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
