/*
 * raw_main.c - cfm-bench-raw, the baselines of the benchmarks: what plain
 * libmosquitto clients get from the same brokers, in the same run, without
 * a cfm-manager in the path. One mode a file (raw_<mode>.c):
 *
 *   relay    COUNT retained messages through bridges to other brokers.
 *   startup  how long a command takes to publish a fresh message.
 *   pub      one retained message: the plain client that startup times.
 *   pingpong two clients bouncing a QoS 1 message: event_hop's baseline.
 *   hops     the same figures for the ping/pong events of cfm procedures.
 *   ask      publish, then time until the matching answer, per key.
 *   agents   COUNT cfm-agents started at once, until all are online.
 *   http     when an HTTP service first answers (no MQTT: a poller).
 *
 * Every client speaks MQTT 5 with libmosquitto's defaults, as the manager
 * does, so the two figures differ only by what cfm adds. The clients run
 * libmosquitto's own network threads (raw_client.c); counters are shared
 * under one mutex and the main thread waits on a condition with a
 * deadline. Every wait is bounded; a child this tool starts dies with this
 * process (raw_spawn.c), so nothing outlives a killed benchmark.
 */
#include <stdio.h>
#include <string.h>

#include "raw_common.h"

const char raw_usage[] =
    "usage: cfm-bench-raw relay --pub PORT --sub PORT [--sub PORT...] --count N --size BYTES\n"
    "                           --prefix TOPIC [--timeout SECONDS]\n"
    "       cfm-bench-raw startup --port PORT --topic TOPIC --match TEXT [--runs N]\n"
    "                           [--log FILE] [--timeout SECONDS] -- COMMAND [ARG...]\n"
    "       cfm-bench-raw pub --port PORT --topic TOPIC --message TEXT\n"
    "       cfm-bench-raw pingpong --port PORT [--port2 PORT] --count N [--warmup N]\n"
    "                           --size BYTES --prefix TOPIC [--timeout SECONDS]\n"
    "       cfm-bench-raw hops --port PORT --prefix TOPIC --count N [--skip N]\n"
    "                           [--ready FILE] [--samples FILE] [--timeout SECONDS]\n"
    "       cfm-bench-raw ask --port PORT --keys K,K,... --send-topic TOPIC --send TEXT\n"
    "                           --expect-topic FILTER --expect TEXT [--expect TEXT...]\n"
    "                           [--prepare-topic TOPIC --prepare TEXT --ready-topic FILTER\n"
    "                           --ready TEXT...] [--gap-ms MS] [--timeout SECONDS]\n"
    "       cfm-bench-raw agents --port PORT --count N --agent PATH --dir DIR\n"
    "                           [--net A.B.C] [--timeout SECONDS]\n"
    "       cfm-bench-raw http --addr IP --port PORT [--path PATH] [--every-ms MS]\n"
    "                           [--timeout SECONDS]\n";

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} modes[] = {
    {"relay", raw_relay},       {"startup", raw_startup}, {"pub", raw_pub},
    {"pingpong", raw_pingpong}, {"hops", raw_hops},       {"ask", raw_ask},
    {"agents", raw_agents},     {"http", raw_http},
};

int main(int argc, char **argv)
{
    size_t i = 0;
    int rc;

    if (argc < 2) {
        fputs(raw_usage, stderr);
        return 2;
    }
    mosquitto_lib_init();
    while (i < sizeof modes / sizeof *modes && strcmp(argv[1], modes[i].name) != 0)
        i++;
    if (i < sizeof modes / sizeof *modes) {
        rc = modes[i].run(argc - 2, argv + 2);
    } else {
        fputs(raw_usage, stderr);
        rc = 2;
    }
    mosquitto_lib_cleanup();
    return rc;
}
