/*
 * raw_agents.c - cfm-bench-raw agents: starts COUNT cfm-agent processes at
 * once and times until every one has published its online status: the
 * baseline of a DR (what starting that many local VMs costs without a
 * manager).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raw_common.h"

#define MAX_AGENTS 1000

struct agents {
    char prefix[64];     /* "cfm/v1/agent/benchvm-<pid>-" */
    long count, online;
    unsigned char seen[MAX_AGENTS];
    bool done;
    double done_at, first_at;
};

static struct agents ag;

static void on_agents_message(struct mosquitto *m, void *arg,
                              const struct mosquitto_message *msg, const mosquitto_property *p)
{
    double at = raw_now_s();
    size_t plen = strlen(ag.prefix);
    char *text, *end;
    long i;

    (void)m;
    (void)arg;
    (void)p;
    if (strncmp(msg->topic, ag.prefix, plen) != 0)
        return;
    i = strtol(msg->topic + plen, &end, 10);
    if (strcmp(end, "/status") != 0 || i < 0 || i >= ag.count)
        return;
    text = raw_payload_text(msg);
    raw_lock();
    if (strstr(text, "\"online\"") && !ag.seen[i]) {
        ag.seen[i] = 1;
        if (!ag.online++)
            ag.first_at = at;
        if (ag.online == ag.count) {
            ag.done = true;
            ag.done_at = at;
            raw_notify();
        }
    }
    raw_unlock();
    free(text);
}

int raw_agents(int argc, char **argv)
{
    struct raw_client w = {0};
    const char *agent = NULL, *dir = NULL, *net = "127.77.251";
    double timeout_s = 60, t0;
    static pid_t pids[MAX_AGENTS];
    char broker[32];
    int port = 0;
    const struct raw_opt opts[] = {
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_LONG("--count", &ag.count, 1, 250),
        RAW_OPT_TEXT("--agent", &agent),
        RAW_OPT_TEXT("--dir", &dir),
        RAW_OPT_TEXT("--net", &net),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("agents", argc, argv, opts, NULL);
    if (!port || !ag.count || !agent || !dir)
        raw_die("agents needs --port, --count, --agent and --dir\n%s", raw_usage);
    snprintf(ag.prefix, sizeof ag.prefix, "cfm/v1/agent/benchvm-%ld-", (long)getpid());
    snprintf(broker, sizeof broker, "127.0.0.1:%d", port);

    raw_client_start(&w, "agents", port);
    mosquitto_message_v5_callback_set(w.mosq, on_agents_message);
    raw_client_subscribe(&w, "cfm/v1/agent/+/status", 1);

    /* Every agent started at once, as a procedure's parallel run_vm calls
     * do (the driver spawns each in its own directory with CFM_VM_IP). */
    t0 = raw_now_s();
    for (long i = 0; i < ag.count; i++) {
        char vm[48], root[4096], log[4200], ip[48];
        char *cmd[] = {(char *)agent, "--vm", vm, "--broker", broker, "--root", root,
                       "--status-interval", "2", NULL};
        snprintf(vm, sizeof vm, "benchvm-%ld-%ld", (long)getpid(), i);
        if ((size_t)snprintf(root, sizeof root, "%s/%s", dir, vm) >= sizeof root)
            raw_die("--dir: too long");
        if (mkdir(root, 0700) != 0 && errno != EEXIST)
            raw_die("mkdir %s: %s", root, strerror(errno));
        snprintf(log, sizeof log, "%s/agent.log", root);
        snprintf(ip, sizeof ip, "CFM_VM_IP=%s.%ld", net, i + 2);
        pids[i] = raw_spawn(cmd, root, log, ip);
    }
    raw_lock();
    if (!raw_wait_flag(&ag.done, t0 + timeout_s)) {
        long online = ag.online;
        raw_unlock();
        for (long i = 0; i < ag.count; i++)
            kill(pids[i], SIGKILL);
        raw_die("agents: %ld of %ld online within %g s", online, ag.count, timeout_s);
    }
    raw_unlock();
    printf("agents: count=%ld first=%.3f seconds=%.3f\n", ag.count, ag.first_at - t0,
           ag.done_at - t0);
    fflush(stdout);
    for (long i = 0; i < ag.count; i++)
        kill(pids[i], SIGTERM);
    for (long i = 0; i < ag.count; i++)
        raw_stop_child(pids[i]); /* SIGTERM again, reaped; SIGKILL after a while */
    /* Their last retained statuses ("offline") stay on the broker, under
     * this process's own IDs. */
    raw_client_stop(&w);
    return 0;
}
