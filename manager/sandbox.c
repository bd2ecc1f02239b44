/*
 * sandbox.c - the engine's Lua state: an allocator that charges every byte
 * to the run executing (or owning) it, and the allow-list that is the only
 * library a procedure sees.
 *
 * Like Redis's script_lua.c, the sandbox is built from an allow-list, not by
 * deleting dangerous functions: each run's globals fall back (__index) to a
 * shared base table holding copies of the safe functions and read-only
 * proxies of the safe libraries. There is no io, os.execute, package,
 * debug, coroutine, dofile, loadfile, collectgarbage or rawset; load takes
 * text only; require reads only procedures_dir/lib; string.dump is removed
 * from the real string table (strings' metatable points at it).
 *
 * The allocator puts an 8-byte header before each block naming the account
 * it is charged to, so a block allocated by one run and freed during
 * another's garbage collection is credited back to the right run. The
 * block's size is not kept: Lua passes it back (osize) whenever it frees or
 * resizes a block. Blocks are 8-byte aligned, which is all Lua's objects
 * (LUAI_MAXALIGN) and the userdata of cfm need.
 */
#include "engine_int.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "digest.h"
#include "log.h"
#include "luajson.h"

#define HDR 8
#define TOTAL_LIMIT ((size_t)2 << 30)
#define SCRIPT_MAX (1u << 20)
#define ENV_PREFIX "local _ENV = ...; "

struct hdr {
    struct cfm_acct *acct;
};

_Static_assert(sizeof(struct hdr) <= HDR, "allocation header too large");

void cfm_engine__acct_release(struct cfm_acct *a)
{
    if (a && a->dead && a->used == 0)
        free(a);
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct cfm_engine *e = ud;
    struct hdr *h = ptr ? (struct hdr *)((char *)ptr - HDR) : NULL;
    struct cfm_acct *a;
    size_t old = h ? osize : 0; /* without a block, osize is the kind of object */
    char *nb;

    if (nsize == 0) {
        if (h) {
            a = h->acct;
            a->used -= old;
            e->total -= old;
            free(h);
            cfm_engine__acct_release(a);
        }
        return NULL;
    }
    a = h ? h->acct : e->cur;
    if (nsize > old) {
        if (a->limit && a->used + (nsize - old) > a->limit)
            return NULL;
        if (e->total + (nsize - old) > e->total_limit)
            return NULL;
    }
    if (nsize > SIZE_MAX - HDR)
        return NULL;
    nb = realloc(h, HDR + nsize);
    if (!nb)
        return NULL;
    h = (struct hdr *)nb;
    h->acct = a;
    a->used = a->used - old + nsize;
    e->total = e->total - old + nsize;
    return nb + HDR;
}

lua_State *cfm_engine__new_state(struct cfm_engine *e)
{
    e->global.limit = 0;
    e->cur = &e->global;
    e->total_limit = TOTAL_LIMIT;
    return lua_newstate(l_alloc, e);
}

struct cfm_fiber *cfm_engine__fiber_of(lua_State *L)
{
    return *(struct cfm_fiber **)lua_getextraspace(L);
}

/* --- read-only library proxies ------------------------------------- */

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to change a read-only library table (field '%s')",
                      lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* The iterator pairs() returns for a proxy: next() over the library table
 * held as an upvalue, so the table itself never reaches the run (it is
 * shared by every run; handing it out would let one run change it). */
static int proxy_next(lua_State *L)
{
    lua_settop(L, 2);
    if (lua_next(L, lua_upvalueindex(1)))
        return 2;
    lua_pushnil(L);
    return 1;
}

static int proxy_pairs(lua_State *L)
{
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_pushcclosure(L, proxy_next, 1);
    lua_pushvalue(L, 1); /* the state: the proxy, not the library table */
    lua_pushnil(L);
    return 3;
}

/* Pops a table and pushes a read-only proxy of it. */
static void make_proxy(lua_State *L)
{
    lua_newtable(L);            /* proxy */
    lua_createtable(L, 0, 4);   /* its metatable */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, proxy_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
}

/* Pushes a copy of global library lib holding only the names in keep
 * (NULL: all of them), as a read-only proxy. */
static void copy_lib(lua_State *L, const char *lib, const char *const *keep)
{
    lua_getglobal(L, lib);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        bool ok = keep == NULL;
        for (const char *const *k = keep; k && *k && !ok; k++)
            ok = lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), *k) == 0;
        if (ok) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_remove(L, -2);
}

/* --- functions of the base library ---------------------------------- */

static struct cfm_run *need_run(lua_State *L)
{
    struct cfm_fiber *f = cfm_engine__fiber_of(L);

    if (!f)
        luaL_error(L, "not inside a procedure run");
    return f->run;
}

static int l_print(lua_State *L)
{
    struct cfm_run *r = need_run(L);
    luaL_Buffer b;
    int n = lua_gettop(L);

    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    cfm_run_log(r, "info", lua_tostring(L, -1));
    return 0;
}

/* load(chunk [, chunkname [, mode [, env]]]): text chunks only. */
static int l_load(lua_State *L)
{
    struct cfm_run *r = need_run(L);
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");

    if (!s || lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "load: only strings can be loaded in a procedure");
    if (strcmp(mode, "t") != 0)
        return luaL_error(L, "load: binary chunks are not allowed (mode must be \"t\")");
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnoneornil(L, 4))
        lua_pushvalue(L, 4);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    return 1;
}

static bool module_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 128 || name[0] == '.' || name[n - 1] == '.' || strstr(name, ".."))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.'))
            return false;
    return true;
}

/* Reads path (at most SCRIPT_MAX) and compiles it with the _ENV prefix
 * under chunkname; pushes the function, or returns an error with why.
 * hash (CFM_SHA256_HEX_LEN + 1 bytes, may be NULL) gets the SHA-256 of the
 * file's text. */
static int compile_file(lua_State *L, const char *path, const char *chunkname, char *hash,
                        struct cfm_why *why)
{
    FILE *f = fopen(path, "rb");
    size_t pre = strlen(ENV_PREFIX), n;
    char *buf;
    int rc;

    if (!f) {
        cfm_why_set(why, errno == ENOENT ? CFM_ENOTFOUND : CFM_EIO, "%s: %s", chunkname + 1,
                    strerror(errno));
        return errno == ENOENT ? CFM_ENOTFOUND : CFM_EIO;
    }
    buf = malloc(pre + SCRIPT_MAX + 1);
    if (!buf) {
        fclose(f);
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    memcpy(buf, ENV_PREFIX, pre);
    n = fread(buf + pre, 1, SCRIPT_MAX + 1, f);
    fclose(f);
    if (n > SCRIPT_MAX) {
        free(buf);
        return cfm_why_set(why, CFM_ETOOBIG, "%s: larger than %u bytes", chunkname + 1,
                           SCRIPT_MAX);
    }
    if (hash)
        cfm_sha256_hex(buf + pre, n, hash);
    rc = luaL_loadbufferx(L, buf, pre + n, chunkname, "t");
    free(buf);
    if (rc != LUA_OK) {
        cfm_why_set(why, CFM_EINVAL, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return CFM_EINVAL;
    }
    return CFM_OK;
}

static int l_require(lua_State *L)
{
    struct cfm_run *r = need_run(L);
    const char *name = luaL_checkstring(L, 1);
    char path[4096 + 256], chunk[300], hash[65], what[160];
    struct cfm_why why = {{0}};
    uint64_t seq;
    int nres;

    if (!module_name_ok(name))
        return luaL_error(L, "require: '%s' is not a module name (letters, digits, '_', '.')",
                          name);
    if (r->modules_ref == LUA_NOREF) { /* most runs require nothing */
        lua_newtable(L);
        lua_pushvalue(L, -1);
        r->modules_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->modules_ref);
    }
    if (lua_getfield(L, -1, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    snprintf(chunk, sizeof chunk, "@lib/%s.lua", name);
    for (char *p = chunk + 5; *p && p < chunk + strlen(chunk) - 4; p++)
        if (*p == '.')
            *p = '/';
    if (snprintf(path, sizeof path, "%s/%s", r->e->procedures_dir, chunk + 1) >=
        (int)sizeof path)
        return luaL_error(L, "require '%s': path too long", name);
    if (!r->e->procedures_dir[0] || compile_file(L, path, chunk, hash, &why) != CFM_OK)
        return luaL_error(L, "require '%s': %s", name,
                          why.text[0] ? why.text : "no procedures directory");
    /* The module's hash is journaled: a replay refuses a changed module. */
    snprintf(what, sizeof what, "require %s", name);
    nres = cfm_engine_call_replay(L, what, &seq);
    if (nres < 0) {
        json_t *res = json_pack("[s]", hash);
        cfm_engine_call_record(L, seq, what, res, NULL);
        json_decref(res);
    } else {
        const char *then = nres > 0 ? lua_tostring(L, -nres) : NULL;
        if (!then || strcmp(then, hash) != 0) {
            if (!r->replay || !r->replay->force) {
                r->resumable = true;
                return cfm_engine__diverge(
                    L, r,
                    "%s changed since the run began (sha256 %.12s then, %.12s now): not "
                    "replayed against different code; `cfmctl runs resume %s --force` "
                    "replays it against the new text",
                    chunk + 1, then ? then : "?", hash, r->id);
            }
            cfm_warn("engine", "run %s: %s changed since the run began; replaying against "
                     "the new text as the operator forced", r->id, chunk + 1);
        }
        lua_pop(L, nres);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, name);
    return 1;
}

/* --- determinism: pairs, clocks ------------------------------------- */

/* A key of a table being sorted for pairs(). */
struct skey {
    int rank;          /* numbers, strings, booleans, then the rest */
    lua_Number n;
    const char *s;     /* anchored by the keys table */
    size_t len;
    lua_Integer idx;   /* in the keys table: next() order, the last resort */
};

static int cmp_skey(const void *pa, const void *pb)
{
    const struct skey *a = pa, *b = pb;
    int c;

    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->rank == 0 && a->n != b->n)
        return a->n < b->n ? -1 : 1;
    if (a->rank == 1) {
        c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
        if (c != 0)
            return c;
        if (a->len != b->len)
            return a->len < b->len ? -1 : 1;
    }
    if (a->rank == 2 && a->n != b->n)
        return a->n < b->n ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* The iterator of sorted_pairs: upvalues (sorted keys, table, position). */
static int sorted_next(lua_State *L)
{
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(3));

    for (;;) {
        if (lua_rawgeti(L, lua_upvalueindex(1), ++i) == LUA_TNIL)
            return 1;
        lua_pushvalue(L, -1);
        if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
            break;
        lua_pop(L, 2); /* removed while iterating */
    }
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(3));
    return 2;
}

/* pairs(t): like Lua's, but in a deterministic order (numbers ascending,
 * then strings bytewise, then false, true, then other keys in next()
 * order), so a run replayed in another process (another string hash seed)
 * walks tables as it did the first time. __pairs is honoured. */
static int sorted_pairs(lua_State *L)
{
    lua_Integer n = 0;
    struct skey *ks;

    if (luaL_getmetafield(L, 1, "__pairs") != LUA_TNIL) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 3);
        return 3;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L); /* 2: keys in next() order */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, 2, ++n);
    }
    ks = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *ks, 0); /* 3: collected */
    for (lua_Integer i = 1; i <= n; i++) {
        struct skey *k = &ks[i - 1];
        int t = lua_rawgeti(L, 2, i);
        memset(k, 0, sizeof *k);
        k->idx = i;
        if (t == LUA_TNUMBER) {
            k->rank = 0;
            k->n = lua_tonumber(L, -1);
        } else if (t == LUA_TSTRING) {
            k->rank = 1;
            k->s = lua_tolstring(L, -1, &k->len);
        } else if (t == LUA_TBOOLEAN) {
            k->rank = 2;
            k->n = lua_toboolean(L, -1);
        } else {
            k->rank = 3;
        }
        lua_pop(L, 1);
    }
    if (n > 1)
        qsort(ks, (size_t)n, sizeof *ks, cmp_skey);
    lua_createtable(L, (int)n, 0); /* 4: sorted keys */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, ks[i - 1].idx);
        lua_rawseti(L, 4, i);
    }
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, sorted_next, 3);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* The wall clock in seconds, journaled: a replay sees the time the first
 * execution saw. */
static lua_Integer journaled_time(lua_State *L)
{
    uint64_t seq;
    lua_Integer t;
    json_t *res;

    if (cfm_engine_call_replay(L, "os.time", &seq) >= 0) {
        t = lua_tointeger(L, -1);
        lua_pop(L, 1);
        return t;
    }
    t = (lua_Integer)time(NULL);
    res = json_pack("[I]", (json_int_t)t);
    cfm_engine_call_record(L, seq, "os.time", res, NULL);
    json_decref(res);
    return t;
}

/* os.time([t]): with a table, Lua's conversion; without, journaled. */
static int l_os_time(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, lua_gettop(L) - 1, 1);
        return 1;
    }
    need_run(L);
    lua_pushinteger(L, journaled_time(L));
    return 1;
}

/* os.date([fmt [, t]]): Lua's, with a journaled time when t is absent. */
static int l_os_date(lua_State *L)
{
    lua_settop(L, 2);
    if (lua_isnil(L, 2)) {
        need_run(L);
        lua_pushinteger(L, journaled_time(L));
        lua_replace(L, 2);
    }
    if (lua_isnil(L, 1)) {
        lua_pushliteral(L, "%c");
        lua_replace(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* os.clock(): the manager's CPU time, journaled. */
static int l_os_clock(lua_State *L)
{
    uint64_t seq;
    double c;
    json_t *res;
    int n;

    need_run(L);
    if ((n = cfm_engine_call_replay(L, "os.clock", &seq)) >= 0)
        return n;
    c = (double)clock() / (double)CLOCKS_PER_SEC;
    res = json_pack("[f]", c);
    cfm_engine_call_record(L, seq, "os.clock", res, NULL);
    json_decref(res);
    lua_pushnumber(L, c);
    return 1;
}

/* xoshiro128-style generator seeded per run, so math.random is the same
 * sequence every time a run is replayed. */
static uint64_t next_random(struct cfm_run *r)
{
    uint64_t s0 = r->rng[0], s1 = r->rng[1], result = s0 + s1;

    s1 ^= s0;
    r->rng[0] = ((s0 << 55) | (s0 >> 9)) ^ s1 ^ (s1 << 14);
    r->rng[1] = (s1 << 36) | (s1 >> 28);
    return result;
}

static int l_random(lua_State *L)
{
    struct cfm_run *r = need_run(L);
    uint64_t x = next_random(r);
    lua_Integer lo = 1, hi;

    switch (lua_gettop(L)) {
    case 0:
        lua_pushnumber(L, (double)(x >> 11) * (1.0 / 9007199254740992.0));
        return 1;
    case 1:
        hi = luaL_checkinteger(L, 1);
        break;
    default:
        lo = luaL_checkinteger(L, 1);
        hi = luaL_checkinteger(L, 2);
        break;
    }
    luaL_argcheck(L, lo <= hi, lua_gettop(L), "interval is empty");
    lua_pushinteger(L, lo + (lua_Integer)(x % ((uint64_t)(hi - lo) + 1)));
    return 1;
}

void cfm_engine__open_base(struct cfm_engine *e)
{
    static const char *const base_fns[] = {
        "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
        "tostring", "type", "xpcall", "rawequal", "rawlen", "rawget", "setmetatable",
        "getmetatable", NULL};
    static const char *const os_keep[] = {"time", "clock", "date", NULL};
    static const char *const libs[] = {"string", "table", "utf8", NULL};
    lua_State *L = e->L;

    luaL_openlibs(L);
    /* Strings' metatable __index is the real string table: drop dump there,
     * and hide the metatable itself. */
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    lua_newtable(L); /* base */
    for (const char *const *f = base_fns; *f; f++) {
        lua_getglobal(L, *f);
        lua_setfield(L, -2, *f);
    }
    for (const char *const *lib = libs; *lib; lib++) {
        copy_lib(L, *lib, NULL);
        make_proxy(L);
        lua_setfield(L, -2, *lib);
    }
    copy_lib(L, "os", os_keep);
    lua_getfield(L, -1, "time");
    lua_pushcclosure(L, l_os_time, 1);
    lua_setfield(L, -2, "time");
    lua_getfield(L, -1, "date");
    lua_pushcclosure(L, l_os_date, 1);
    lua_setfield(L, -2, "date");
    lua_pushcfunction(L, l_os_clock);
    lua_setfield(L, -2, "clock");
    make_proxy(L);
    lua_setfield(L, -2, "os");
    lua_pushcfunction(L, sorted_pairs);
    lua_setfield(L, -2, "pairs");
    copy_lib(L, "math", NULL);
    lua_pushnil(L);
    lua_setfield(L, -2, "randomseed");
    lua_pushcfunction(L, l_random);
    lua_setfield(L, -2, "random");
    make_proxy(L);
    lua_setfield(L, -2, "math");
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "unpack");
    lua_setfield(L, -3, "unpack");
    lua_pop(L, 1);

    static const luaL_Reg engine_fns[] = {
        {"print", l_print},
        {"load", l_load},
        {"require", l_require},
        {"async", cfm_engine__l_async},
        {"wait", cfm_engine__l_wait},
        {"sleep", cfm_engine__l_sleep},
        {"wait_cloud_event", cfm_engine__l_wait_cloud_event},
        {"log", cfm_engine__l_log},
        {NULL, NULL},
    };
    luaL_setfuncs(L, engine_fns, 0);
    if (e->host.open_api)
        e->host.open_api(e->host.arg, L);
    e->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, 0, 2); /* metatable of every run's globals */
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->base_ref);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "sandbox");
    lua_setfield(L, -2, "__metatable");
    e->env_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static bool script_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 5 || n > 255 || s[0] == '.' || strcmp(s + n - 4, ".lua") != 0)
        return false;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '\\')
            return false;
    return true;
}

/* Pushes the compiled script (cached by name, size and mtime in the
 * registry), a function taking the run's globals as its argument. */
int cfm_engine__load_script(struct cfm_engine *e, lua_State *L, const char *script,
                            char *hash, struct cfm_why *why)
{
    char path[4096 + 256], chunk[260], stamp[96];
    struct stat sb;
    int err;

    if (!script_name_ok(script))
        return cfm_why_set(why, CFM_EINVAL, "'%s' is not a procedure file name (NAME.lua)",
                           script);
    if (!e->procedures_dir[0])
        return cfm_why_set(why, CFM_ENOTFOUND,
                           "this site has no procedures directory (--procedures DIR)");
    snprintf(path, sizeof path, "%s/%s", e->procedures_dir, script);
    if (stat(path, &sb) != 0)
        return cfm_why_set(why, CFM_ENOTFOUND, "procedure %s not found in %s", script,
                           e->procedures_dir);
    snprintf(stamp, sizeof stamp, "%lld:%lld:%lld.%09ld", (long long)sb.st_ino,
             (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, (long)sb.st_mtim.tv_nsec);
    lua_getfield(L, LUA_REGISTRYINDEX, "cfm.scripts");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "cfm.scripts");
    }
    if (lua_getfield(L, -1, script) == LUA_TTABLE) {
        lua_getfield(L, -1, "stamp");
        if (lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), stamp) == 0) {
            lua_getfield(L, -2, "hash");
            snprintf(hash, 65, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
            lua_pop(L, 1);
            lua_getfield(L, -2, "fn");
            lua_replace(L, -4);
            lua_pop(L, 2);
            return CFM_OK;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    snprintf(chunk, sizeof chunk, "@%s", script);
    if ((err = compile_file(L, path, chunk, hash, why)) != CFM_OK) {
        lua_pop(L, 1);
        return err;
    }
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "fn");
    lua_pushstring(L, hash);
    lua_setfield(L, -2, "hash");
    lua_pushstring(L, stamp);
    lua_setfield(L, -2, "stamp");
    lua_setfield(L, -3, script);
    lua_remove(L, -2);
    return CFM_OK;
}

enum cfm_err cfm_engine_check_text(const char *name, const char *text, size_t len,
                                   struct cfm_why *why)
{
    size_t pre = strlen(ENV_PREFIX);
    char chunk[260];
    lua_State *L;
    char *buf;
    enum cfm_err err = CFM_OK;

    if (len > SCRIPT_MAX)
        return cfm_why_set(why, CFM_ETOOBIG, "%s: larger than %u bytes", name, SCRIPT_MAX);
    L = luaL_newstate();
    buf = malloc(pre + len + 1);
    if (!L || !buf) {
        free(buf);
        if (L)
            lua_close(L);
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    memcpy(buf, ENV_PREFIX, pre);
    memcpy(buf + pre, text, len);
    snprintf(chunk, sizeof chunk, "@%s", name);
    if (luaL_loadbufferx(L, buf, pre + len, chunk, "t") != LUA_OK)
        err = cfm_why_set(why, CFM_EINVAL, "%s", lua_tostring(L, -1));
    free(buf);
    lua_close(L);
    return err;
}
