/*
 * raw_common.h - what the files of cfm-bench-raw share (see raw_main.c):
 * the limits, the option tables, timing and statistics, the threaded MQTT
 * clients and the children, and one entry point per mode.
 */
#ifndef CFM_BENCH_RAW_COMMON_H
#define CFM_BENCH_RAW_COMMON_H

#include <mosquitto.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define MAX_COUNT 1000000
#define MAX_SIZE (1u << 20)   /* CFM_MAX_PAYLOAD: the largest message cfm sends */
#define MAX_TOPIC 512
#define KEEPALIVE_S 30
#define CONNECT_TIMEOUT_S 10.0
#define STOP_TIMEOUT_S 5.0

/* raw_main.c */
extern const char raw_usage[];

/* --- raw_args.c: errors and options ---------------------------------------- */

void raw_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
long raw_parse_long(const char *text, const char *what, long min, long max);
double raw_parse_seconds(const char *text, const char *what);
/* Dies unless prefix is a topic that leaves room for "/<n>", without wildcards. */
void raw_check_prefix(const char *prefix);

enum raw_kind { RAW_TEXT, RAW_INT, RAW_LONG, RAW_SECONDS };

/* One "OPTION VALUE" of a mode: where its value goes (a const char *, int,
 * long or double), its range, and for a repeatable option the array's
 * count, size and what "at most SIZE ..." calls its values. */
struct raw_opt {
    const char *name;
    enum raw_kind kind;
    void *to;
    long min, max;
    int *n, max_n;
    const char *many;
};

#define RAW_OPT_TEXT(name_, p) {.name = (name_), .kind = RAW_TEXT, .to = (const char **){(p)}}
#define RAW_OPT_TEXTS(name_, arr, np, size, many_)                                            \
    {.name = (name_), .kind = RAW_TEXT, .to = (const char **){(arr)}, .n = (np),              \
     .max_n = (size), .many = (many_)}
#define RAW_OPT_INT(name_, p, lo, hi)                                                         \
    {.name = (name_), .kind = RAW_INT, .to = (int *){(p)}, .min = (lo), .max = (hi)}
#define RAW_OPT_PORT(name_, p) RAW_OPT_INT(name_, p, 1, 65535)
#define RAW_OPT_PORTS(name_, arr, np, size, many_)                                            \
    {.name = (name_), .kind = RAW_INT, .to = (int *){(arr)}, .min = 1, .max = 65535,          \
     .n = (np), .max_n = (size), .many = (many_)}
#define RAW_OPT_LONG(name_, p, lo, hi)                                                        \
    {.name = (name_), .kind = RAW_LONG, .to = (long *){(p)}, .min = (lo), .max = (hi)}
#define RAW_OPT_SECONDS(name_, p) {.name = (name_), .kind = RAW_SECONDS, .to = (double *){(p)}}

/* Reads mode's "OPTION VALUE" pairs into the variables of opts (ended by
 * {0}); dies on an unknown option or a bad value. With rest, "--" ends the
 * options and *rest is what follows it (NULL when there is no "--"). */
void raw_parse_opts(const char *mode, int argc, char **argv, const struct raw_opt *opts,
                    char ***rest);

/* --- raw_stats.c: time and figures ------------------------------------------- */

/* Monotonic seconds. */
double raw_now_s(void);
/* Prints " NAME_p50_us=.. NAME_p99_us=.. NAME_max_us=.." of n samples. */
void raw_print_pcts(const char *name, const double *samples, long n);
/* Prints the line "MODE: COUNT=n median_UNIT=.. min_UNIT=.. max_UNIT=..
 * samples=a,b,..." with that many decimals. */
void raw_print_samples(const char *mode, const char *count, const char *unit, int decimals,
                       const double *samples, int n);

/* --- raw_client.c: threaded MQTT clients ------------------------------------- */

/* One mutex guards what the clients' network threads share with the main
 * thread; raw_notify() (lock held) wakes the waits below. */
void raw_lock(void);
void raw_unlock(void);
void raw_notify(void);
/* Waits (lock held) for a change, at most until the deadline (monotonic). */
void raw_wait_change(double deadline);
/* Waits (lock held) until *flag or the deadline; returns *flag. */
bool raw_wait_flag(const bool *flag, double deadline);

/* A client with its network thread. Mode state that its callbacks need
 * goes in a struct with this one first (the callbacks' arg is both). */
struct raw_client {
    struct mosquitto *mosq;
    char name[32];
    int port;
    bool connected, subscribed;
};

/* A new MQTT 5 client "cfm-bench-NAME-PID" with TCP_NODELAY; dies on failure. */
struct mosquitto *raw_mosq_new(const char *name, void *obj);
/* Connects c (clean session) and starts its network thread; dies on failure. */
void raw_client_start(struct raw_client *c, const char *name, int port);
/* Subscribes at qos and waits for the SUBACK; dies on failure. */
void raw_client_subscribe(struct raw_client *c, const char *pattern, int qos);
void raw_client_stop(struct raw_client *c);
/* A copy of a message's payload as a C string (free() it). */
char *raw_payload_text(const struct mosquitto_message *msg);

/* --- raw_spawn.c: children ----------------------------------------------------- */

/* Starts cmd (searched in PATH) in a child that dies with this process:
 * in dir when given, its output appended to log when given, with env
 * ("NAME=value") added when given. Reap it with raw_stop_child(). */
pid_t raw_spawn(char **cmd, const char *dir, const char *log, char *env);
/* SIGTERM, then SIGKILL after STOP_TIMEOUT_S; always reaps the child. */
void raw_stop_child(pid_t pid);

/* --- the modes (raw_<mode>.c): argc/argv after the mode's name ------------------ */

int raw_relay(int argc, char **argv);
int raw_startup(int argc, char **argv);
int raw_pub(int argc, char **argv);
int raw_pingpong(int argc, char **argv);
int raw_hops(int argc, char **argv);
int raw_ask(int argc, char **argv);
int raw_agents(int argc, char **argv);
int raw_http(int argc, char **argv);

#endif
