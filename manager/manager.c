/*
 * manager.c - wiring and routing. The manager owns one store, one bus and
 * one replica on the loop; every message that arrives is parsed once
 * (cfm_topic_parse) and handed to the module that owns its topic. Anything
 * malformed is logged and dropped here or in that module: input never stops
 * the manager.
 *
 * This file starts and stops the manager and holds the bus's callbacks;
 * membership (which systems this site subscribes to) is in membership.c,
 * the runs events start and the engine's hooks in manager_runs.c, and
 * struct cfm_manager in manager_int.h.
 */
#include "manager.h"

#include <limits.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 8))
#include <malloc.h>
#define HAVE_MALLOC_TRIM 1
#endif
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "agentc.h"
#include "api.h"
#include "driver.h"
#include "bus.h"
#include "ctlsrv.h"
#include "engine.h"
#include "failpoint.h"
#include "journal.h"
#include "health.h"
#include "id.h"
#include "log.h"
#include "manager_int.h"
#include "policy.h"
#include "replica.h"
#include "store.h"
#include "sync.h"
#include "topic.h"

#define STOP_GRACE_MS 2000
#define BRIDGE_STATE_PREFIX "$SYS/broker/connection/"
/* broker-config/'s bridges announce links here (notification_topic). */
#define CFM_BRIDGE_PREFIX CFM_TOPIC_ROOT "/bridge/"
#define SESSION_EXPIRY_S (7u * 24 * 3600)
/* Unacknowledged publishes (each held by libmosquitto) that make a burst
 * worth giving memory back after: see on_trim_timer. */
#define TRIM_BACKLOG 1000

static void publish_json(struct cfm_manager *m, const char *topic, json_t *json, bool retain,
                         int *mid)
{
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    struct cfm_bus_msg msg = {.topic = topic, .qos = 1, .retain = retain};

    if (!text) {
        cfm_error("manager", "cannot encode a message for %s", topic);
        return;
    }
    msg.payload = text;
    msg.len = strlen(text);
    cfm_bus_publish(m->bus, &msg, mid);
    free(text);
}

static void handle_ctl(struct cfm_manager *m, const struct cfm_bus_msg *msg)
{
    struct cfm_ctl_ctx ctx = {.st = m->store, .replica = m->replica, .engine = m->engine,
                              .site = m->cfg.site};
    struct cfm_bus_msg res = {.qos = 1};
    char *text;
    json_t *reply;

    if (!msg->response_topic) {
        cfm_warn("ctl", "dropped a request without an MQTT 5 response topic");
        return;
    }
    /* Answers go to cfmctl's own topics or outside cfm/v1 entirely: never
     * to a model, event or status topic, where they would pose as data. */
    if (strlen(msg->response_topic) > CFM_MAX_TOPIC || strpbrk(msg->response_topic, "+#") ||
        (strncmp(msg->response_topic, CFM_TOPIC_ROOT "/", strlen(CFM_TOPIC_ROOT) + 1) == 0 &&
         strncmp(msg->response_topic, CFM_TOPIC_ROOT "/ctl/res/",
                 strlen(CFM_TOPIC_ROOT "/ctl/res/")) != 0)) {
        cfm_warn("ctl", "dropped a request with an invalid response topic (use "
                 CFM_TOPIC_ROOT "/ctl/res/<client> or a topic outside " CFM_TOPIC_ROOT ")");
        return;
    }
    reply = cfm_ctlsrv_handle(&ctx, msg->payload, msg->len);
    text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    if (!text) {
        cfm_error("ctl", "cannot encode a response");
        return;
    }
    if (strlen(text) > CFM_MAX_CTL_RESPONSE) {
        free(text);
        text = strdup("{\"ok\":false,\"error\":\"the answer is too large; narrow the query\"}");
        if (!text)
            return;
    }
    res.topic = msg->response_topic;
    res.payload = text;
    res.len = strlen(text);
    res.correlation = msg->correlation;
    res.correlation_len = msg->correlation_len;
    cfm_bus_publish(m->bus, &res, NULL);
    free(text);
}


/* A bridge of our broker (re)connected: whatever crossed it while it was
 * down may be lost, so compare notes again (mosquitto's bridge
 * notifications: "1" up, "0" down, on $SYS/broker/connection/<id>/state). */
/* The peer site behind a bridge notification topic: broker-config names it
 * (cfm/v1/bridge/<local>/<peer>/state); mosquitto's default topic carries
 * the connection name, by convention "<local>-to-<peer>". "" if unknown. */
static void bridge_peer(const char *topic, char peer[CFM_MAX_ID + 1])
{
    char name[CFM_MAX_TOPIC + 1];
    const char *p, *end;

    peer[0] = '\0';
    if (strncmp(topic, CFM_BRIDGE_PREFIX, strlen(CFM_BRIDGE_PREFIX)) == 0) {
        p = strchr(topic + strlen(CFM_BRIDGE_PREFIX), '/');
        end = p ? strchr(p + 1, '/') : NULL;
        if (p && end && end - p - 1 <= CFM_MAX_ID)
            snprintf(peer, CFM_MAX_ID + 1, "%.*s", (int)(end - p - 1), p + 1);
    } else {
        snprintf(name, sizeof name, "%s", topic + strlen(BRIDGE_STATE_PREFIX));
        if ((end = strrchr(name, '/')))
            name[end - name] = '\0';
        for (p = strstr(name, "-to-"); p && strstr(p + 4, "-to-"); p = strstr(p + 4, "-to-"))
            ;
        if (p)
            snprintf(peer, CFM_MAX_ID + 1, "%s", p + 4);
    }
    if (!cfm_id_valid(peer))
        peer[0] = '\0';
}

static void on_bridge_state(struct cfm_manager *m, const struct cfm_bus_msg *msg)
{
    struct cfm_store_filter systems = {.kind = CFM_KIND_BUSINESS_SYSTEM};
    char peer[CFM_MAX_ID + 1];
    bool up;

    if (msg->len != 1 || (((const char *)msg->payload)[0] != '1' &&
                          ((const char *)msg->payload)[0] != '0'))
        return;
    up = ((const char *)msg->payload)[0] == '1';
    bridge_peer(msg->topic, peer);
    if (peer[0] && strcmp(peer, m->cfg.site) != 0)
        cfm_health_on_link(m->store, peer, up);
    if (!up || msg->retain)
        return;
    cfm_info("manager", "bridge up (%s); re-announcing digests", msg->topic);
    cfm_store_each(m->store, &systems, cfm_manager__announce_member, m);
}

/* The objects and events from other sites, and the answers and statuses
 * of agents, that arrive in one read of the bus (everything a wake-up of
 * the socket brought) are handled in one transaction, each in a savepoint
 * of its own (a bad one undoes only itself), and so are the turns of the
 * runs they resumed or started, taken at the read's end
 * (cfm_engine_run_ready). A commit writes the WAL frames of every page it
 * touched: a commit per object wrote each B-tree page many times over
 * (10,000 objects from a load arrive in a few hundred reads), an event
 * hop paid two commits (the event's and the turn's), and so did a call to
 * an agent (the answer's and the next turn's). The read's PUBACKs leave
 * after this commit (the bus writes at the end of the read), so a crash
 * before it makes the broker deliver the read again, and nothing it
 * brought was acknowledged unstored. Anything else (a request, a digest)
 * first commits what came before it: what it answers is on disk when it
 * does. */
static void flush_read(struct cfm_manager *m)
{
    struct cfm_store_filter systems = {.kind = CFM_KIND_BUSINESS_SYSTEM};
    bool turn = m->read_turn;

    if (!m->read_batch)
        return;
    m->read_batch = m->read_turn = false;
    if (cfm_replica_commit(m->replica) == CFM_OK)
        return;
    if (turn) {
        /* As cfm_manager__on_batch: the runs went on believing calls that
         * are now undone. */
        cfm_error("engine", "cannot commit a read and the turns it resumed (see the store's "
                            "error above); stopping: the runs resume from their journals and "
                            "the broker delivers the read again at the next start");
        fflush(stderr);
        _exit(3);
    }
    /* Lost here. The read's PUBACKs still go out (libmosquitto's queue
     * cannot be taken back, and dropping the connection would publish our
     * Last Will): objects are still at their origins, so compare notes
     * again; its events are gone, and the log says so. */
    cfm_error("replica", "cannot commit the objects and events of a read (see the store's "
                         "error); its events are lost; asking the peers again for the objects");
    cfm_store_each(m->store, &systems, cfm_manager__announce_member, m);
}

static void batch_read(struct cfm_manager *m)
{
    if (!m->reading || m->read_batch || cfm_store_in_txn(m->store))
        return;
    if (cfm_replica_begin(m->replica) != CFM_OK) {
        cfm_replica_rollback(m->replica);
        return; /* each object and event then commits on its own */
    }
    m->read_batch = true;
}

static void on_read(void *arg, bool begin)
{
    struct cfm_manager *m = arg;

    m->reading = begin;
    if (begin)
        return;
    /* The runs this read made due take their turn inside its transaction
     * (or, without one, in a transaction of their own, as from the loop's
     * idle phase). */
    if (m->engine && cfm_engine_run_ready(m->engine) && m->read_batch)
        m->read_turn = true;
    flush_read(m);
}

static void on_message(void *arg, const struct cfm_bus_msg *msg)
{
    struct cfm_manager *m = arg;
    struct cfm_topic t;
    struct cfm_why why = {{0}};

    if (strncmp(msg->topic, BRIDGE_STATE_PREFIX, strlen(BRIDGE_STATE_PREFIX)) == 0 ||
        strncmp(msg->topic, CFM_BRIDGE_PREFIX, strlen(CFM_BRIDGE_PREFIX)) == 0) {
        flush_read(m);
        on_bridge_state(m, msg);
        return;
    }
    if (cfm_topic_parse(msg->topic, &t, &why) != CFM_OK) {
        cfm_warn("manager", "dropped a message: %s", why.text);
        return;
    }
    if (t.type == CFM_TOPIC_OBJ || t.type == CFM_TOPIC_EVENT || t.type == CFM_TOPIC_AGENT_RES ||
        t.type == CFM_TOPIC_AGENT_STATUS)
        batch_read(m);
    else
        flush_read(m);
    switch (t.type) {
    case CFM_TOPIC_CTL_REQ:
        if (strcmp(t.site, m->cfg.site) == 0)
            handle_ctl(m, msg);
        break;
    case CFM_TOPIC_SITE_STATUS:
        /* Bridges re-send retained messages when they reconnect, so a stale
         * "offline" of this very site can come back while it runs: answer
         * it with the truth. */
        if (cfm_health_on_status(m->store, t.site, msg->payload, msg->len) == 0 &&
            strcmp(t.site, m->cfg.site) == 0 && !m->stopping && cfm_bus_connected(m->bus)) {
            json_t *status = cfm_health_status(m->cfg.site, "online");
            cfm_info("health", "a stale offline status of this site arrived; republishing");
            publish_json(m, m->status_topic, status, true, NULL);
            json_decref(status);
        }
        break;
    case CFM_TOPIC_OBJ:
        /* BusinessSystem objects of every system arrive (membership);
         * everything else only for systems this site belongs to. */
        if (strcmp(t.name, "BusinessSystem") == 0 || cfm_manager__member_of(m, t.system))
            cfm_replica_on_obj(m->replica, &t, msg->payload, msg->len);
        else
            cfm_info("replica", "dropped %s/%s/%s: site %s is not a member of system %s",
                     t.system, t.name, t.id, m->cfg.site, t.system);
        break;
    case CFM_TOPIC_EVENT:
        cfm_manager__handle_event(m, &t, msg);
        break;
    case CFM_TOPIC_AGENT_STATUS:
    case CFM_TOPIC_AGENT_RES:
        cfm_agentc_on_message(m->api.agentc, &t, msg->payload, msg->len);
        break;
    case CFM_TOPIC_CTL_RES:
        /* Answers to this manager's own requests (witness votes). */
        if (m->policy && strcmp(msg->topic, cfm_policy_response_topic(m->policy)) == 0)
            cfm_policy_on_vote(m->policy, msg->correlation, msg->correlation_len, msg->payload,
                               msg->len);
        break;
    case CFM_TOPIC_SYNC:
        if (cfm_manager__member_of(m, t.system))
            cfm_sync_on_digest(m->sync, t.system, msg->payload, msg->len);
        break;
    default:
        break; /* sync, runs and agents: handled by later modules */
    }
}


static void on_connection(void *arg, bool up)
{
    struct cfm_manager *m = arg;
    struct cfm_store_filter systems = {.kind = CFM_KIND_BUSINESS_SYSTEM};
    json_t *status;

    if (!up || m->stopping)
        return;
    status = cfm_health_status(m->cfg.site, "online");
    publish_json(m, m->status_topic, status, true, NULL);
    json_decref(status);
    /* After any (re)connect: compare notes with the peers of every system. */
    cfm_store_each(m->store, &systems, cfm_manager__announce_member, m);
}


/* The cfm-agent binary that local VMs run: the driver config's
 * "agent_path", else the one beside this cfm-manager. */
static void agent_path(const struct cfm_manager *m, char *buf, size_t len)
{
    const char *cfgd = json_string_value(json_object_get(m->cfg.driver, "agent_path"));
    char self[PATH_MAX];
    ssize_t n;
    char *slash;

    if (cfgd) {
        snprintf(buf, len, "%s", cfgd);
        return;
    }
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(buf, len, "%s/cfm-agent", n > 0 ? self : ".");
}

static void close_all(struct cfm_manager *m)
{
    cfm_policy_close(m->policy);
    m->policy = NULL;
    cfm_engine_close(m->engine);
    m->engine = NULL;
    cfm_agentc_close(m->api.agentc);
    m->api.agentc = NULL;
    if (m->api.driver)
        m->api.driver_ops->close(m->api.driver);
    m->api.driver = NULL;
    cfm_bus_close(m->bus);
    m->bus = NULL;
    uv_close((uv_handle_t *)&m->sig_term, NULL);
    uv_close((uv_handle_t *)&m->sig_int, NULL);
    uv_close((uv_handle_t *)&m->sig_hup, NULL);
    uv_close((uv_handle_t *)&m->stop_timer, NULL);
    uv_close((uv_handle_t *)&m->record_timer, NULL);
    uv_close((uv_handle_t *)&m->ack_timer, NULL);
    uv_close((uv_handle_t *)&m->trim_timer, NULL);
    uv_close((uv_handle_t *)&m->dedup_timer, NULL);
    uv_close((uv_handle_t *)&m->history_timer, NULL);
}

/* glibc gives memory back to the system only from the top of its heap. A
 * burst of publishes (thousands of runs started by a burst of events, each
 * record held by libmosquitto until the broker acknowledges it; a large
 * system load) leaves megabytes free under the small blocks allocated
 * meanwhile that outlive it (the runs themselves): free, but resident for
 * good. Once such a backlog has drained, malloc_trim() returns the heap's
 * whole free pages, wherever they are; it takes a few milliseconds, once
 * per burst (docs/performance.md, "Memory of a waiting run"). */
static void on_trim_timer(uv_timer_t *t)
{
    (void)t;
#ifdef HAVE_MALLOC_TRIM
    malloc_trim(0);
    cfm_debug("manager", "a backlog of publishes drained: free heap pages returned");
#endif
}

static void note_backlog(struct cfm_manager *m)
{
    size_t pending = cfm_replica_pending(m->replica);

    if (pending > m->backlog_peak)
        m->backlog_peak = pending;
    if (m->backlog_peak >= TRIM_BACKLOG && pending <= TRIM_BACKLOG / 100) {
        m->backlog_peak = 0;
        uv_timer_start(&m->trim_timer, on_trim_timer, 0, 0); /* not inside the bus's read */
    }
}

#define ACK_MS 20

static void on_ack_timer(uv_timer_t *t)
{
    struct cfm_manager *m = t->data;

    cfm_replica_flush_acks(m->replica);
}

static void on_ack(void *arg, int mid, bool ok)
{
    struct cfm_manager *m = arg;

    if (m->stopping && mid == m->stop_mid) {
        cfm_info("manager", "offline status delivered; stopping");
        close_all(m);
        return;
    }
    cfm_replica_on_ack(m->replica, mid, ok);
    if (!m->ack_timer.data)
        return; /* still starting: the timers are not there yet */
    if (cfm_replica_acks_kept(m->replica) && !uv_is_active((uv_handle_t *)&m->ack_timer))
        uv_timer_start(&m->ack_timer, on_ack_timer, ACK_MS, 0);
    note_backlog(m);
}

static void on_stop_timeout(uv_timer_t *t)
{
    struct cfm_manager *m = t->data;

    cfm_warn("manager", "the broker did not acknowledge the offline status; stopping anyway");
    close_all(m);
}

void cfm_manager_stop(struct cfm_manager *m)
{
    json_t *status;

    if (m->stopping)
        return;
    m->stopping = true;
    cfm_info("manager", "stopping site %s", m->cfg.site);
    if (!cfm_bus_connected(m->bus)) {
        close_all(m);
        return;
    }
    status = cfm_health_status(m->cfg.site, "offline");
    m->stop_mid = -1;
    publish_json(m, m->status_topic, status, true, &m->stop_mid);
    json_decref(status);
    uv_timer_start(&m->stop_timer, on_stop_timeout, STOP_GRACE_MS, 0);
}

static void reload_config(struct cfm_manager *m)
{
    struct cfm_config next;
    struct cfm_why why = {{0}};

    if (cfm_config_from_args(m->argc, m->argv, &next, &why) != CFM_OK) {
        cfm_error("manager", "SIGHUP: configuration not reloaded: %s", why.text);
        cfm_config_free(&next); /* a failure after the driver was read leaves it in next */
        return;
    }
    cfm_log_set_level(next.log_level);
    m->cfg.log_level = next.log_level;
    if (strcmp(next.site, m->cfg.site) != 0 || strcmp(next.state_dir, m->cfg.state_dir) != 0 ||
        strcmp(next.broker_host, m->cfg.broker_host) != 0 ||
        next.broker_port != m->cfg.broker_port)
        cfm_warn("manager", "SIGHUP: site, state_dir and broker changes need a restart");
    memcpy(m->cfg.procedures_dir, next.procedures_dir, sizeof m->cfg.procedures_dir);
    cfm_info("manager", "SIGHUP: configuration reloaded");
    cfm_config_free(&next);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct cfm_manager *m = s->data;

    if (signum == SIGHUP)
        reload_config(m);
    else
        cfm_manager_stop(m);
}

enum cfm_err cfm_manager_start(uv_loop_t *loop, struct cfm_config *cfg, int argc, char **argv,
                               struct cfm_manager **out, struct cfm_why *why)
{
    struct cfm_store_filter systems = {.kind = CFM_KIND_BUSINESS_SYSTEM};
    struct cfm_bus_callbacks cb;
    struct cfm_bus_opts opts;
    char path[PATH_MAX + 32], client_id[CFM_MAX_ID + 8], topic[CFM_MAX_TOPIC + 1];
    struct cfm_manager *m;
    enum cfm_err err;

    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m || !(m->looped = json_array())) {
        free(m);
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    m->loop = loop;
    m->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    m->argc = argc;
    m->argv = argv;
    cfm_log_set_level(m->cfg.log_level);

    snprintf(path, sizeof path, "%s/cfm.db", m->cfg.state_dir);
    if ((err = cfm_store_open(path, &m->store, why)) != CFM_OK)
        goto fail;

    cfm_topic_build(m->status_topic, sizeof m->status_topic, CFM_TOPIC_SITE_STATUS, m->cfg.site,
                    NULL, NULL, NULL);
    snprintf(m->will, sizeof m->will, "{\"state\":\"offline\",\"site\":\"%s\"}", m->cfg.site);
    snprintf(client_id, sizeof client_id, "cfm-%s", m->cfg.site);
    memset(&opts, 0, sizeof opts);
    opts.client_id = client_id;
    opts.host = m->cfg.broker_host;
    opts.port = m->cfg.broker_port;
    opts.username = m->cfg.username[0] ? m->cfg.username : NULL;
    opts.password = m->cfg.password[0] ? m->cfg.password : NULL;
    opts.keepalive_s = 10;
    opts.session_expiry_s = SESSION_EXPIRY_S;
    opts.will_topic = m->status_topic;
    opts.will_payload = m->will;
    memset(&cb, 0, sizeof cb);
    cb.arg = m;
    cb.on_connection = on_connection;
    cb.on_message = on_message;
    cb.on_ack = on_ack;
    cb.on_read = on_read;
    if ((err = cfm_bus_start(loop, &opts, &cb, &m->bus, why)) != CFM_OK)
        goto fail;
    if ((err = cfm_replica_new(m->store, m->bus, m->cfg.site, cfm_manager__on_system, m,
                               &m->replica, why)) != CFM_OK ||
        (err = cfm_sync_new(m->store, m->bus, m->cfg.site, &m->sync)) != CFM_OK)
        goto fail;
    {
        struct cfm_engine_opts eopts = {.procedures_dir = m->cfg.procedures_dir[0]
                                                              ? m->cfg.procedures_dir
                                                              : NULL};
        struct cfm_engine_host host = {.arg = &m->api,
                                       .on_start = cfm_manager__on_run_start,
                                       .on_state = cfm_manager__on_run_state,
                                       .journal = cfm_manager__on_journal,
                                       .open_api = cfm_manager__open_api,
                                       .batch = cfm_manager__on_batch};
        const char *dtype = json_string_value(json_object_get(m->cfg.driver, "type"));
        char agent[PATH_MAX + 16];
        struct cfm_driver_env denv = {.loop = loop, .site = m->cfg.site,
                                      .state_dir = m->cfg.state_dir,
                                      .broker_host = m->cfg.broker_host,
                                      .broker_port = m->cfg.broker_port,
                                      .agent_path = agent,
                                      .on_event = cfm_manager__on_driver_event, .arg = m};
        m->api.st = m->store;
        m->api.replica = m->replica;
        m->events = (struct cfm_publisher){.replica = m->replica,
                                           .loopback = cfm_manager__loopback, .arg = m};
        m->api.events = &m->events;
        m->api.bus = m->bus;
        m->api.site = m->cfg.site;
        agent_path(m, agent, sizeof agent);
        snprintf(m->bin_dir, sizeof m->bin_dir, "%s", agent);
        if (strrchr(m->bin_dir, '/'))
            *strrchr(m->bin_dir, '/') = '\0';
        m->api.bin_dir = m->bin_dir;
        m->api.driver_ops = cfm_driver_find(dtype ? dtype : "local");
        if (!m->api.driver_ops) {
            err = cfm_why_set(why, CFM_ECONFIG, "driver.type: unknown driver '%s' (known: %s)",
                              dtype, cfm_driver_names());
            goto fail;
        }
        {
            /* agent_path is the manager's key, not the driver's. */
            json_t *dcfg = json_deep_copy(m->cfg.driver);
            json_object_del(dcfg, "agent_path");
            err = m->api.driver_ops->open(&denv, dcfg, &m->api.driver, why);
            json_decref(dcfg);
            if (err != CFM_OK)
                goto fail;
        }
        if ((err = cfm_agentc_new(loop, m->bus, &m->api.agentc)) != CFM_OK)
            goto fail;
        if ((err = cfm_policy_new(loop, m->store, m->bus, &m->events, m->cfg.site,
                                  &m->policy)) != CFM_OK)
            goto fail;
        if ((err = cfm_engine_new(loop, &eopts, &host, &m->engine, why)) != CFM_OK)
            goto fail;
        m->api.engine = m->engine;
        cfm_failpoint_init(cfm_manager__store_in_txn, m->store);
    }

    cfm_topic_build(topic, sizeof topic, CFM_TOPIC_CTL_REQ, m->cfg.site, NULL, NULL, NULL);
    cfm_bus_subscribe(m->bus, topic);
    cfm_bus_subscribe(m->bus, CFM_TOPIC_ROOT "/site/+/status");
    cfm_bus_subscribe(m->bus, CFM_TOPIC_ROOT "/sys/+/obj/BusinessSystem/+");
    cfm_bus_subscribe(m->bus, BRIDGE_STATE_PREFIX "+/state");
    cfm_bus_subscribe(m->bus, CFM_BRIDGE_PREFIX "+/+/state");
    cfm_bus_subscribe(m->bus, CFM_TOPIC_ROOT "/agent/+/status");
    cfm_bus_subscribe(m->bus, CFM_TOPIC_ROOT "/agent/+/res/+");
    cfm_bus_subscribe(m->bus, cfm_policy_response_topic(m->policy));
    cfm_store_each(m->store, &systems, cfm_manager__subscribe_member, m);

    uv_signal_init(loop, &m->sig_term);
    uv_signal_init(loop, &m->sig_int);
    uv_signal_init(loop, &m->sig_hup);
    uv_timer_init(loop, &m->stop_timer);
    uv_timer_init(loop, &m->record_timer);
    uv_timer_init(loop, &m->ack_timer);
    uv_timer_init(loop, &m->trim_timer);
    uv_timer_init(loop, &m->dedup_timer);
    uv_timer_init(loop, &m->history_timer);
    m->sig_term.data = m->sig_int.data = m->sig_hup.data = m->stop_timer.data = m;
    m->record_timer.data = m->ack_timer.data = m->trim_timer.data = m->dedup_timer.data = m;
    m->history_timer.data = m;
    /* Before any message arrives: events held by the broker for this
     * session while we were down find their runs waiting again. */
    cfm_journal_restore_all(m->store, m->engine);
    uv_signal_start(&m->sig_term, on_signal, SIGTERM);
    uv_signal_start(&m->sig_int, on_signal, SIGINT);
    uv_signal_start(&m->sig_hup, on_signal, SIGHUP);
    cfm_manager__start_forgetting(m);
    cfm_manager__start_run_history(m);
    cfm_info("manager", "site %s started (broker %s:%d, state %s)", m->cfg.site,
             m->cfg.broker_host, m->cfg.broker_port, m->cfg.state_dir);
    *out = m;
    return CFM_OK;
fail:
    cfm_manager__forget_systems(m);
    cfm_policy_close(m->policy);
    cfm_engine_close(m->engine);
    cfm_agentc_close(m->api.agentc);
    if (m->api.driver)
        m->api.driver_ops->close(m->api.driver);
    if (m->bus) {
        /* Let libuv close the bus handles before the caller closes the loop. */
        cfm_bus_close(m->bus);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    cfm_sync_free(m->sync);
    cfm_replica_free(m->replica);
    cfm_store_close(m->store);
    cfm_config_free(&m->cfg);
    json_decref(m->looped);
    free(m);
    return err;
}

void cfm_manager_free(struct cfm_manager *m)
{
    if (!m)
        return;
    cfm_manager__forget_systems(m);
    cfm_sync_free(m->sync);
    cfm_replica_free(m->replica);
    cfm_store_close(m->store);
    cfm_config_free(&m->cfg);
    free(m->waiting);
    json_decref(m->looped);
    free(m);
}
