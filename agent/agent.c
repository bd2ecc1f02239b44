/*
 * agent.c - the agent's protocol: one MQTT connection (cfmbus, client id
 * agent-<vm>, Last Will "offline" on its status topic), requests in on
 * cfm/v1/agent/<vm>/req, answers out on cfm/v1/agent/<vm>/res/<id>, and a
 * retained status with load figures on connect and every few seconds.
 *
 * Every request goes through the same gate before it runs: its id must be
 * valid (else it cannot be answered and is dropped with a log line), a
 * request whose id is running already is dropped (its answer will be
 * published when it finishes, on the same topic), and one whose id was
 * answered gets that answer again (answers.c). Only then is the op run:
 * ping, put_file and get_file at once; exec (exec.c, with a running mark
 * kept on disk until its answer is stored) and http_get (httpwait.c,
 * httpget.c) on the loop, as a `struct running` each until their answer is out.
 *
 * Nothing a request carries can stop the agent: every failure is an
 * answer {"ok": false, "error": "..."} or, without an id, a log line.
 */
#include "agent.h"

#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "answers.h"
#include "bus.h"
#include "exec.h"
#include "fileops.h"
#include "files.h"
#include "httpwait.h"
#include "id.h"
#include "load.h"
#include "log.h"
#include "topic.h"
#include "util.h"

#define KEEPALIVE_S 10
#define SESSION_EXPIRY_S (24u * 3600) /* requests sent while we are away wait a day */
#define STOP_GRACE_MS 2000
#define VM_PROCS 64 /* processes of the VM watched by pid while stopping */
#define SNIFF_BYTES 4096 /* where an id is looked for in a request too big to parse */
#define KNOWN_OPS "exec, put_file, get_file, http_get, ping"

/* A request in flight on the loop: a command (exec) or an HTTP GET
 * (http_get), exactly one of the two pointers set. */
struct running {
    struct running *next;
    struct cfm_agent *agent;
    struct cfm_agent_exec *exec;
    struct cfm_agent_httpwait *http;
    const char *op; /* "exec" or "http_get" */
    char id[CFM_MAX_ID + 1];
};

struct cfm_agent {
    uv_loop_t *loop;
    struct cfm_agent_config cfg;
    struct cfm_bus *bus;
    struct cfm_agent_answers *answers;
    uv_timer_t status_timer;
    uv_timer_t stop_timer;
    uv_timer_t procs_timer; /* stopping: are the VM's processes gone yet? */
    int procs[VM_PROCS];    /* ... the ones it signalled, watched */
    unsigned nprocs;
    bool procs_gone;
    struct running *running;
    unsigned nrunning; /* requests in the running list */
    unsigned ncommands; /* ... of them exec */
    bool stopping, offline_done, closed;
    int stop_mid;
    void (*on_stopped)(void *arg);
    void *stopped_arg;
    char req_topic[CFM_MAX_TOPIC + 1];
    char status_topic[CFM_MAX_TOPIC + 1];
    char will[CFM_MAX_ID + 64];
};

static void publish(struct cfm_agent *a, const char *topic, const char *text, size_t len,
                    bool retain, int *mid)
{
    struct cfm_bus_msg msg = {.topic = topic, .payload = text, .len = len, .qos = 1,
                              .retain = retain};

    if (cfm_bus_publish(a->bus, &msg, mid) != CFM_OK)
        cfm_error("agent", "cannot publish on %s", topic);
}

static void publish_status(struct cfm_agent *a)
{
    char now[CFM_TIME_LEN];
    json_t *status;
    char *text;

    cfm_time_now(now);
    status = json_pack("{s:s, s:s, s:I, s:s, s:o}", "state", "online", "vm", a->cfg.vm, "pid",
                       (json_int_t)getpid(), "time", now, "load",
                       cfm_agent_load_figures(a->ncommands));
    /* /proc/loadavg has two decimals: print no more than needed. */
    text = status ? json_dumps(status, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    if (text)
        publish(a, a->status_topic, text, strlen(text), true, NULL);
    else
        cfm_error("agent", "cannot build the status message");
    free(text);
    json_decref(status);
}

/* Publishes an answer already stored (or that could not be stored). */
static void publish_answer(struct cfm_agent *a, const char *id, const char *text, size_t len)
{
    char topic[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};

    if (cfm_topic_build(topic, sizeof topic, CFM_TOPIC_AGENT_RES, a->cfg.vm, id, NULL, &why) !=
        CFM_OK) {
        cfm_error("agent", "no answer topic for %s: %s", id, why.text);
        return;
    }
    publish(a, topic, text, len, false, NULL);
}

/* Answers id with result (borrowed) or error, keeping the answer for
 * repeats: on disk, except an http_get's (kept in memory only: a GET changes
 * nothing and may be made again after a restart, and a health check polled
 * every few seconds should not write and fsync a file each time). */
static void answer(struct cfm_agent *a, const char *id, const char *op, const json_t *result,
                   const char *error)
{
    struct cfm_why why = {{0}};
    size_t len;
    char *text = cfm_agent_answer_text(id, result, error, &len);

    if (!text) {
        cfm_error("agent", "request %s: out of memory building the answer", id);
        return;
    }
    if (result)
        cfm_info("agent", "request %s (%s): ok", id, op);
    else
        cfm_info("agent", "request %s (%s): %s", id, op, error);
    if (cfm_agent_answers_put(a->answers, id, text, len, strcmp(op, "http_get") != 0, &why) !=
        CFM_OK)
        cfm_error("agent", "request %s: the answer is not on disk: %s", id, why.text);
    publish_answer(a, id, text, len);
    free(text);
}

/* Publishes the stored answer of id again; false when there is none. */
static bool replay(struct cfm_agent *a, const char *id)
{
    char *text;
    size_t len;
    enum cfm_err err = cfm_agent_answers_get(a->answers, id, &text, &len);

    if (err == CFM_ENOTFOUND)
        return false;
    if (err == CFM_OK) {
        cfm_info("agent", "request %s was answered before: answering the same", id);
        publish_answer(a, id, text, len);
    } else {
        cfm_error("agent", "request %s was answered before, but the answer is lost: dropped "
                           "rather than run again", id);
    }
    free(text);
    return true;
}

static struct running *find_running(struct cfm_agent *a, const char *id)
{
    for (struct running *r = a->running; r; r = r->next)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

static void maybe_finish(struct cfm_agent *a);

/* The end of a running request: its answer, and it leaves the list. */
static void on_done(void *arg, const json_t *result, const char *error)
{
    struct running *r = arg, **pp;
    struct cfm_agent *a = r->agent;

    answer(a, r->id, r->op, result, error);
    for (pp = &a->running; *pp != r; pp = &(*pp)->next)
        ;
    *pp = r->next;
    a->nrunning--;
    if (r->exec)
        a->ncommands--;
    free(r);
    if (a->stopping)
        maybe_finish(a);
}

/* Stops a running request: its done callback follows. */
static void abort_running(struct running *r)
{
    if (r->exec)
        cfm_agent_exec_abort(r->exec, CFM_AGENT_INTERRUPTED);
    else
        cfm_agent_httpwait_abort(r->http);
}

/* Starts op (exec or http_get) on the loop; its answer comes from on_done.
 * A command gets a running mark on disk, so a crash during it is answered
 * "outcome unknown" rather than run again; a GET changes nothing and is
 * simply made again when asked again after a crash. */
static void start_running(struct cfm_agent *a, const char *id, const char *op,
                          const json_t *req)
{
    bool exec = strcmp(op, "exec") == 0;
    struct cfm_why why = {{0}};
    struct running *r;
    enum cfm_err err;

    if (exec && a->ncommands >= CFM_AGENT_MAX_RUNNING) {
        cfm_why_set(&why, CFM_ETOOBIG, "%d commands are running already (the most at once)",
                    CFM_AGENT_MAX_RUNNING);
        answer(a, id, op, NULL, why.text);
        return;
    }
    if (!exec && a->nrunning - a->ncommands >= CFM_AGENT_MAX_GETS) {
        cfm_why_set(&why, CFM_ETOOBIG, "%d HTTP requests are in flight already (the most at once)",
                    CFM_AGENT_MAX_GETS);
        answer(a, id, op, NULL, why.text);
        return;
    }
    if (!(r = calloc(1, sizeof *r))) {
        answer(a, id, op, NULL, "out of memory");
        return;
    }
    r->agent = a;
    r->op = exec ? "exec" : "http_get";
    memcpy(r->id, id, strlen(id) + 1);
    if (exec)
        err = cfm_agent_answers_mark_running(a->answers, id, &why) == CFM_OK
                  ? cfm_agent_exec_start(a->loop, a->cfg.vm, a->cfg.root, req, on_done, r,
                                         &r->exec, &why)
                  : CFM_EIO;
    else
        err = cfm_agent_httpwait_start(a->loop, req, on_done, r, &r->http, &why);
    if (err != CFM_OK) {
        free(r);
        answer(a, id, op, NULL, why.text); /* also clears a running mark */
        return;
    }
    r->next = a->running;
    a->running = r;
    a->nrunning++;
    if (exec)
        a->ncommands++;
    cfm_debug("agent", "request %s: %s started (%u running)", id, r->op, a->nrunning);
}

static void run(struct cfm_agent *a, const char *id, const json_t *req)
{
    const json_t *opv = json_object_get(req, "op");
    const char *op = json_string_value(opv);
    struct cfm_why why = {{0}};
    char shown[64], now[CFM_TIME_LEN];
    json_t *result = NULL;

    if (!op) {
        answer(a, id, "?", NULL, "the request needs \"op\" (one of " KNOWN_OPS ")");
        return;
    }
    if (strcmp(op, "exec") == 0 || strcmp(op, "http_get") == 0) {
        start_running(a, id, op, req);
        return;
    }
    if (strcmp(op, "ping") == 0) {
        cfm_time_now(now);
        result = json_pack("{s:s, s:s, s:I}", "vm", a->cfg.vm, "time", now, "pid",
                           (json_int_t)getpid());
        if (!result)
            cfm_why_set(&why, CFM_ENOMEM, "out of memory");
    } else if (strcmp(op, "put_file") == 0) {
        result = cfm_agent_op_put_file(a->cfg.root, a->cfg.state_dir, req, &why);
    } else if (strcmp(op, "get_file") == 0) {
        result = cfm_agent_op_get_file(a->cfg.root, req, &why);
    } else {
        cfm_why_set(&why, CFM_EINVAL, "unknown op '%s' (known: " KNOWN_OPS ")",
                    cfm_agent_files_shown(shown, sizeof shown, op, strlen(op)));
        op = "?";
    }
    answer(a, id, op, result, result ? NULL : why.text);
    json_decref(result);
}

/* Finds "id": "<id>" at the top of a request that cannot be parsed
 * (too big, or not JSON), so it can still be answered. */
static bool sniff_id(const char *p, size_t len, char id[CFM_MAX_ID + 1])
{
    size_t n = len < SNIFF_BYTES ? len : SNIFF_BYTES;

    for (size_t i = 0; i + 4 <= n; i++) {
        size_t j = i, k = i + 4, start;
        if (memcmp(p + i, "\"id\"", 4) != 0)
            continue;
        while (j > 0 && isspace((unsigned char)p[j - 1]))
            j--;
        if (j == 0 || (p[j - 1] != '{' && p[j - 1] != ','))
            continue; /* inside a string, not a key */
        while (k < n && isspace((unsigned char)p[k]))
            k++;
        if (k >= n || p[k++] != ':')
            continue;
        while (k < n && isspace((unsigned char)p[k]))
            k++;
        if (k >= n || p[k++] != '"')
            continue;
        for (start = k; k < n && k - start <= CFM_MAX_ID && p[k] != '"'; k++)
            ;
        if (k >= n || p[k] != '"' || k - start > CFM_MAX_ID)
            return false;
        memcpy(id, p + start, k - start);
        id[k - start] = '\0';
        return cfm_id_valid(id);
    }
    return false;
}

/* A request that cannot be parsed: answered if its id can be found. */
static void refuse(struct cfm_agent *a, const char *payload, size_t len, const char *reason)
{
    char id[CFM_MAX_ID + 1];

    if (!sniff_id(payload, len, id)) {
        cfm_warn("agent", "dropped a request of %zu bytes with no id to answer: %s", len, reason);
        return;
    }
    if (!find_running(a, id) && !replay(a, id))
        answer(a, id, "?", NULL, reason);
}

static void on_request(struct cfm_agent *a, const char *payload, size_t len)
{
    char id[CFM_MAX_ID + 1], reason[CFM_WHY_MAX];
    struct cfm_why why = {{0}};
    json_error_t jerr;
    const json_t *idv;
    json_t *req;

    if (len > CFM_MAX_PAYLOAD) {
        snprintf(reason, sizeof reason, "the request of %zu bytes is over the %u-byte limit", len,
                 CFM_MAX_PAYLOAD);
        refuse(a, payload, len, reason);
        return;
    }
    req = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(req)) {
        snprintf(reason, sizeof reason, "the request is not a JSON object%s%s",
                 req ? "" : ": ", req ? "" : jerr.text);
        refuse(a, payload, len, reason);
        json_decref(req);
        return;
    }
    idv = json_object_get(req, "id");
    if (!json_is_string(idv) || strlen(json_string_value(idv)) != json_string_length(idv)) {
        cfm_warn("agent", "dropped a request without a string \"id\": it cannot be answered");
        goto out;
    }
    if (cfm_id_check(json_string_value(idv), "request id", &why) != CFM_OK) {
        cfm_warn("agent", "dropped a request: %s", why.text);
        goto out;
    }
    memcpy(id, json_string_value(idv), json_string_length(idv) + 1);
    if (find_running(a, id))
        cfm_info("agent", "request %s is running already: its answer will follow", id);
    else if (!replay(a, id))
        run(a, id, req);
out:
    json_decref(req);
}

static void on_message(void *arg, const struct cfm_bus_msg *msg)
{
    struct cfm_agent *a = arg;

    if (strcmp(msg->topic, a->req_topic) != 0)
        return;
    if (a->stopping) {
        cfm_info("agent", "stopping: a request is left for after the restart");
        return;
    }
    on_request(a, msg->payload, msg->len);
}

static void on_connection(void *arg, bool up)
{
    struct cfm_agent *a = arg;

    if (up && !a->stopping)
        publish_status(a);
}

static void on_status_timer(uv_timer_t *t)
{
    struct cfm_agent *a = t->data;

    /* While away, skip: a queued status would be stale when it arrives. */
    if (cfm_bus_connected(a->bus))
        publish_status(a);
}

static void maybe_finish(struct cfm_agent *a)
{
    if (a->closed || !a->offline_done || a->nrunning > 0 || !a->procs_gone)
        return;
    a->closed = true;
    cfm_agent_exec_forget_detached();
    cfm_bus_close(a->bus);
    a->bus = NULL;
    uv_close((uv_handle_t *)&a->status_timer, NULL);
    uv_close((uv_handle_t *)&a->stop_timer, NULL);
    uv_close((uv_handle_t *)&a->procs_timer, NULL);
    cfm_info("agent", "vm %s stopped", a->cfg.vm);
    if (a->on_stopped)
        a->on_stopped(a->stopped_arg);
}

static void on_ack(void *arg, int mid, bool ok)
{
    struct cfm_agent *a = arg;

    (void)ok;
    if (a->stopping && mid == a->stop_mid) {
        a->offline_done = true;
        maybe_finish(a);
    }
}

/* SIGTERMs the VM's processes and watches them by pid; false when there
 * are none. */
static bool signal_vm_processes(struct cfm_agent *a)
{
    unsigned n = cfm_agent_exec_kill_vm(a->cfg.vm, SIGTERM, a->procs, VM_PROCS);

    a->nprocs = n < VM_PROCS ? n : VM_PROCS;
    return n > 0;
}

/* Stopping with stop_vm_processes: every millisecond, are the processes
 * signalled gone (a kill(0) each)? When they are, one more scan of /proc
 * for any the VM started meanwhile, which get SIGTERM in turn. */
static void on_procs_tick(uv_timer_t *t)
{
    struct cfm_agent *a = t->data;
    unsigned k = 0;

    for (unsigned i = 0; i < a->nprocs; i++)
        if (!cfm_agent_exec_pid_gone(a->procs[i]))
            a->procs[k++] = a->procs[i];
    a->nprocs = k;
    if (k == 0 && !signal_vm_processes(a)) {
        a->procs_gone = true;
        maybe_finish(a);
        return;
    }
    uv_timer_start(&a->procs_timer, on_procs_tick, 1, 0);
}

static void on_stop_timeout(uv_timer_t *t)
{
    struct cfm_agent *a = t->data;
    unsigned left;

    if (!a->offline_done)
        cfm_warn("agent", "the broker did not take the offline status in time; stopping anyway");
    if (a->ncommands)
        cfm_warn("agent", "%u killed commands have not exited; stopping anyway", a->ncommands);
    for (struct running *r = a->running; r; r = r->next)
        abort_running(r);
    if (!a->procs_gone && (left = cfm_agent_exec_kill_vm(a->cfg.vm, SIGKILL, NULL, 0)) > 0)
        cfm_warn("agent", "%u processes of vm %s ignored SIGTERM for %d ms: SIGKILL", left,
                 a->cfg.vm, STOP_GRACE_MS);
    uv_timer_stop(&a->procs_timer);
    a->procs_gone = true;
    a->offline_done = true;
    maybe_finish(a);
}

void cfm_agent_stop(struct cfm_agent *a)
{
    if (a->stopping)
        return;
    a->stopping = true;
    cfm_info("agent", "stopping vm %s (%u commands, %u HTTP requests running)", a->cfg.vm,
             a->ncommands, a->nrunning - a->ncommands);
    uv_timer_stop(&a->status_timer);
    for (struct running *r = a->running; r; r = r->next)
        abort_running(r);
    /* The agent that is its VM takes the VM's processes (its services)
     * with it, and exits once they are gone: whoever stopped the VM may
     * hand its volumes to another at once. */
    a->procs_gone = !a->cfg.stop_vm_processes || !signal_vm_processes(a);
    if (!a->procs_gone)
        uv_timer_start(&a->procs_timer, on_procs_tick, 1, 0);
    if (cfm_bus_connected(a->bus)) {
        a->stop_mid = -1;
        publish(a, a->status_topic, a->will, strlen(a->will), true, &a->stop_mid);
    } else {
        a->offline_done = true;
    }
    /* Also bounds the wait for killed commands whose exit is slow to come. */
    uv_timer_start(&a->stop_timer, on_stop_timeout, STOP_GRACE_MS, 0);
    maybe_finish(a);
}

enum cfm_err cfm_agent_start(uv_loop_t *loop, const struct cfm_agent_config *cfg,
                             void (*on_stopped)(void *arg), void *arg, struct cfm_agent **out,
                             struct cfm_why *why)
{
    char dir[PATH_MAX], client_id[CFM_MAX_ID + 8];
    struct cfm_bus_callbacks cb = {0};
    struct cfm_bus_opts opts = {0};
    struct cfm_agent *a;
    enum cfm_err err;
    int n;

    *out = NULL;
    if (!(a = calloc(1, sizeof *a)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    a->loop = loop;
    a->cfg = *cfg;
    a->on_stopped = on_stopped;
    a->stopped_arg = arg;
    n = snprintf(dir, sizeof dir, "%s/answers", a->cfg.state_dir);
    if (n < 0 || (size_t)n >= sizeof dir) {
        err = cfm_why_set(why, CFM_ECONFIG, "--state-dir: too long");
        goto fail;
    }
    if ((err = cfm_agent_answers_open(dir, CFM_AGENT_ANSWERS_KEPT, &a->answers, why)) != CFM_OK)
        goto fail;
    if ((err = cfm_topic_build(a->req_topic, sizeof a->req_topic, CFM_TOPIC_AGENT_REQ, cfg->vm,
                               NULL, NULL, why)) != CFM_OK ||
        (err = cfm_topic_build(a->status_topic, sizeof a->status_topic, CFM_TOPIC_AGENT_STATUS,
                               cfg->vm, NULL, NULL, why)) != CFM_OK)
        goto fail;
    snprintf(a->will, sizeof a->will, "{\"state\":\"offline\",\"vm\":\"%s\"}", cfg->vm);
    snprintf(client_id, sizeof client_id, "agent-%s", cfg->vm);
    opts.client_id = client_id;
    opts.host = a->cfg.broker_host;
    opts.port = a->cfg.broker_port;
    opts.username = a->cfg.username[0] ? a->cfg.username : NULL;
    opts.password = a->cfg.password[0] ? a->cfg.password : NULL;
    opts.keepalive_s = KEEPALIVE_S;
    opts.session_expiry_s = SESSION_EXPIRY_S;
    opts.will_topic = a->status_topic;
    opts.will_payload = a->will;
    cb.arg = a;
    cb.on_connection = on_connection;
    cb.on_message = on_message;
    cb.on_ack = on_ack;
    if ((err = cfm_bus_start(loop, &opts, &cb, &a->bus, why)) != CFM_OK)
        goto fail;
    if ((err = cfm_bus_subscribe(a->bus, a->req_topic)) != CFM_OK) {
        cfm_why_set(why, err, "cannot subscribe to %s", a->req_topic);
        cfm_bus_close(a->bus);
        uv_run(loop, UV_RUN_DEFAULT); /* let the bus close its handles */
        goto fail;
    }
    uv_timer_init(loop, &a->status_timer);
    uv_timer_init(loop, &a->stop_timer);
    uv_timer_init(loop, &a->procs_timer);
    a->status_timer.data = a->stop_timer.data = a->procs_timer.data = a;
    uv_timer_start(&a->status_timer, on_status_timer, cfg->status_interval_s * 1000u,
                   cfg->status_interval_s * 1000u);
    cfm_info("agent", "vm %s started (broker %s:%d, disk %s)", cfg->vm, cfg->broker_host,
             cfg->broker_port, cfg->root);
    *out = a;
    return CFM_OK;
fail:
    cfm_agent_answers_free(a->answers);
    free(a);
    return err;
}

void cfm_agent_free(struct cfm_agent *a)
{
    if (!a)
        return;
    cfm_agent_answers_free(a->answers);
    free(a);
}
