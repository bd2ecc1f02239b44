/*
 * raw_broker.c - cfm-bench-raw, the baselines of the benchmarks: what plain
 * libmosquitto clients get from the same brokers, in the same run, without
 * a cfm-manager in the path.
 *
 *   relay    a publisher on one broker sends COUNT QoS 1 retained messages
 *            of SIZE bytes; subscribers on other (bridged) brokers count
 *            them. Prints the time from the first publish until every
 *            subscriber holds all of them.
 *   startup  subscribes to a topic, then starts a command RUNS times and
 *            prints how long each took from fork() until a fresh (not
 *            retained) message containing MATCH arrived on the topic.
 *   pub      connects, publishes one retained QoS 1 message, waits for the
 *            PUBACK and exits: the "plain client" that startup times as the
 *            baseline of a manager's start.
 *   pingpong two clients (on one broker, or on two bridged ones) bounce a
 *            QoS 1 message: "ping" publishes, "pong" answers from its
 *            message callback, "ping" sends the next when the answer is
 *            in. Prints p50/p99 of the round trip and of a hop (half a
 *            round trip), in microseconds: the baseline of event_hop.
 *   hops     watches the ping/pong events of two cfm procedures (payload
 *            {"n": i}) on a broker and prints the same figures for them,
 *            from the arrival times of ping i, pong i and ping i+1.
 *   ask      for each key: optionally publishes a "prepare" message and
 *            waits for a "ready" message, then publishes a message and
 *            times until a matching answer arrives ({k} in texts stands for
 *            the key). Prints the median and the samples in microseconds.
 *   agents   starts COUNT cfm-agent processes at once and times until every
 *            one has published its online status: the baseline of a DR
 *            (what starting that many local VMs costs without a manager).
 *
 * Every client speaks MQTT 5 with libmosquitto's defaults, as the manager
 * does, so the two figures differ only by what cfm adds. The clients of
 * relay and startup run libmosquitto's own network threads; counters are
 * shared under one mutex and the main thread waits on a condition with a
 * deadline. Every wait is bounded; a child started by startup dies with
 * this process (PR_SET_PDEATHSIG), so nothing outlives a killed benchmark.
 */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SUBS 8
#define MAX_COUNT 1000000
#define MAX_SIZE (1u << 20)   /* CFM_MAX_PAYLOAD: the largest message cfm sends */
#define MAX_RUNS 100
#define MAX_TOPIC 512
#define KEEPALIVE_S 30
#define CONNECT_TIMEOUT_S 10.0
#define STOP_TIMEOUT_S 5.0

static const char usage[] =
    "usage: cfm-bench-raw relay --pub PORT --sub PORT [--sub PORT...] --count N --size BYTES\n"
    "                           --prefix TOPIC [--timeout SECONDS]\n"
    "       cfm-bench-raw startup --port PORT --topic TOPIC --match TEXT [--runs N]\n"
    "                           [--log FILE] [--timeout SECONDS] -- COMMAND [ARG...]\n"
    "       cfm-bench-raw pub --port PORT --topic TOPIC --message TEXT\n"
    "       cfm-bench-raw pingpong --port PORT [--port2 PORT] --count N [--warmup N]\n"
    "                           --size BYTES --prefix TOPIC [--timeout SECONDS]\n"
    "       cfm-bench-raw hops --port PORT --prefix TOPIC --count N [--skip N]\n"
    "                           [--ready FILE] [--timeout SECONDS]\n"
    "       cfm-bench-raw ask --port PORT --keys K,K,... --send-topic TOPIC --send TEXT\n"
    "                           --expect-topic FILTER --expect TEXT [--expect TEXT...]\n"
    "                           [--prepare-topic TOPIC --prepare TEXT --ready-topic FILTER\n"
    "                           --ready TEXT...] [--gap-ms MS] [--timeout SECONDS]\n"
    "       cfm-bench-raw agents --port PORT --count N --agent PATH --dir DIR\n"
    "                           [--net A.B.C] [--timeout SECONDS]\n";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("cfm-bench-raw: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long parse_long(const char *text, const char *what, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        die("%s: '%s' is not a number from %ld to %ld", what, text, min, max);
    return v;
}

static double parse_seconds(const char *text, const char *what)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (errno || end == text || *end || !(v > 0 && v <= 3600))
        die("%s: '%s' is not a number of seconds from 0 to 3600", what, text);
    return v;
}

/* --- shared state of the threaded clients -------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;

/* Waits (lock held) for a change, at most until the deadline (monotonic
 * seconds) and at most 100 ms: the condition uses CLOCK_REALTIME, and a
 * short slice keeps a clock step from stretching the wait. */
static void wait_change(double deadline)
{
    double left = deadline - now_s();
    struct timespec ts;

    if (left <= 0)
        return;
    if (left > 0.1)
        left = 0.1;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(left * 1e9);
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&changed, &lock, &ts);
}

/* Waits (lock held) until *flag or the deadline; returns *flag. */
static bool wait_flag(const bool *flag, double deadline)
{
    while (!*flag && now_s() < deadline)
        wait_change(deadline);
    return *flag;
}

struct client {
    struct mosquitto *mosq;
    char name[32];
    int port;
    bool connected, subscribed;
    /* relay subscribers */
    const char *prefix;
    size_t prefix_len;
    unsigned char *seen;     /* one byte per message index: duplicates count once */
    long count, want;
    bool done;
    double done_at;
    /* startup subscriber */
    const char *match;
    double armed_at;         /* 0 = not waiting */
    double hit_at;
    bool hit;
};

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
                       const mosquitto_property *p)
{
    struct client *c = arg;

    (void)m;
    (void)flags;
    (void)p;
    if (rc != 0)
        die("%s: the broker on port %d refused the connection: %s", c->name, c->port,
            mosquitto_reason_string(rc));
    pthread_mutex_lock(&lock);
    c->connected = true;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *qos,
                         const mosquitto_property *p)
{
    struct client *c = arg;

    (void)m;
    (void)mid;
    (void)p;
    if (n < 1 || qos[0] >= 0x80)
        die("%s: the broker refused the subscription", c->name);
    pthread_mutex_lock(&lock);
    c->subscribed = true;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

/* relay: counts each message index once. */
static void on_relay_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                             const mosquitto_property *p)
{
    struct client *c = arg;
    const char *tail;
    char *end;
    long i;

    (void)m;
    (void)p;
    if (strncmp(msg->topic, c->prefix, c->prefix_len) != 0 || msg->topic[c->prefix_len] != '/')
        return;
    tail = msg->topic + c->prefix_len + 1;
    errno = 0;
    i = strtol(tail, &end, 10);
    if (errno || end == tail || *end || i < 0 || i >= c->want)
        return;
    pthread_mutex_lock(&lock);
    if (!c->seen[i]) {
        c->seen[i] = 1;
        if (++c->count == c->want) {
            c->done = true;
            c->done_at = now_s();
            pthread_cond_broadcast(&changed);
        }
    }
    pthread_mutex_unlock(&lock);
}

/* startup: a fresh message containing the match, while armed. */
static void on_startup_message(struct mosquitto *m, void *arg,
                               const struct mosquitto_message *msg, const mosquitto_property *p)
{
    struct client *c = arg;
    double at = now_s();
    char *text;

    (void)m;
    (void)p;
    if (msg->retain || msg->payloadlen <= 0)
        return; /* retained: published before we asked */
    text = malloc((size_t)msg->payloadlen + 1);
    if (!text)
        die("out of memory");
    memcpy(text, msg->payload, (size_t)msg->payloadlen);
    text[msg->payloadlen] = '\0';
    pthread_mutex_lock(&lock);
    if (c->armed_at > 0 && !c->hit && strstr(text, c->match)) {
        c->hit = true;
        c->hit_at = at;
        pthread_cond_broadcast(&changed);
    }
    pthread_mutex_unlock(&lock);
    free(text);
}

/* Connects c (MQTT 5, clean session) and starts its network thread; c owns
 * the client until client_stop(). Dies on any failure. */
static void client_start(struct client *c, const char *name, int port)
{
    int rc;

    snprintf(c->name, sizeof c->name, "%s", name);
    c->port = port;
    {
        char id[64];
        snprintf(id, sizeof id, "cfm-bench-%s-%ld", name, (long)getpid());
        c->mosq = mosquitto_new(id, true, c);
    }
    if (!c->mosq)
        die("cannot create an MQTT client");
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
    rc = mosquitto_connect_bind_v5(c->mosq, "127.0.0.1", port, KEEPALIVE_S, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        die("%s: cannot connect to 127.0.0.1:%d: %s", name, port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    if ((rc = mosquitto_loop_start(c->mosq)) != MOSQ_ERR_SUCCESS)
        die("%s: cannot start the network thread: %s", name, mosquitto_strerror(rc));
    pthread_mutex_lock(&lock);
    if (!wait_flag(&c->connected, now_s() + CONNECT_TIMEOUT_S))
        die("%s: no CONNACK from port %d within %g s", name, port, CONNECT_TIMEOUT_S);
    pthread_mutex_unlock(&lock);
}

static void client_subscribe(struct client *c, const char *pattern)
{
    int rc = mosquitto_subscribe_v5(c->mosq, NULL, pattern, 1, 0, NULL);

    if (rc != MOSQ_ERR_SUCCESS)
        die("%s: subscribe %s: %s", c->name, pattern, mosquitto_strerror(rc));
    pthread_mutex_lock(&lock);
    if (!wait_flag(&c->subscribed, now_s() + CONNECT_TIMEOUT_S))
        die("%s: no SUBACK for %s within %g s", c->name, pattern, CONNECT_TIMEOUT_S);
    pthread_mutex_unlock(&lock);
}

static void client_stop(struct client *c)
{
    mosquitto_disconnect_v5(c->mosq, 0, NULL);
    mosquitto_loop_stop(c->mosq, false);
    mosquitto_destroy(c->mosq);
    c->mosq = NULL;
}

/* --- relay ---------------------------------------------------------------- */

static int cmd_relay(int argc, char **argv)
{
    struct client pub = {0}, subs[MAX_SUBS] = {{0}};
    int pub_port = 0, sub_ports[MAX_SUBS], nsubs = 0;
    long count = 0, size = 0;
    const char *prefix = NULL;
    double timeout_s = 60, t0, deadline, last = 0;
    char topic[MAX_TOPIC], *payload;
    bool all;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--pub") == 0)
            pub_port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--sub") == 0) {
            if (nsubs == MAX_SUBS)
                die("at most %d subscribers", MAX_SUBS);
            sub_ports[nsubs++] = (int)parse_long(val, opt, 1, 65535);
        } else if (strcmp(opt, "--count") == 0)
            count = parse_long(val, opt, 1, MAX_COUNT);
        else if (strcmp(opt, "--size") == 0)
            size = parse_long(val, opt, 1, MAX_SIZE);
        else if (strcmp(opt, "--prefix") == 0)
            prefix = val;
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_seconds(val, opt);
        else
            die("relay: unknown option %s\n%s", opt, usage);
    }
    if (!pub_port || !nsubs || !count || !size || !prefix)
        die("relay needs --pub, --sub, --count, --size and --prefix\n%s", usage);
    if (strlen(prefix) > MAX_TOPIC - 16 || strpbrk(prefix, "+#"))
        die("--prefix: a topic of at most %d characters without wildcards", MAX_TOPIC - 16);

    payload = malloc((size_t)size);
    if (!payload)
        die("out of memory");
    memset(payload, 'x', (size_t)size);
    for (int s = 0; s < nsubs; s++) {
        char name[16];
        subs[s].prefix = prefix;
        subs[s].prefix_len = strlen(prefix);
        subs[s].want = count;
        subs[s].seen = calloc((size_t)count, 1);
        if (!subs[s].seen)
            die("out of memory");
        snprintf(name, sizeof name, "sub%d", s + 1);
        client_start(&subs[s], name, sub_ports[s]);
        mosquitto_message_v5_callback_set(subs[s].mosq, on_relay_message);
        snprintf(topic, sizeof topic, "%s/#", prefix);
        client_subscribe(&subs[s], topic);
    }
    client_start(&pub, "pub", pub_port);

    /* Everything queued at once, as a manager does after committing a load:
     * libmosquitto sends as many as the broker's receive maximum allows. */
    t0 = now_s();
    for (long i = 0; i < count; i++) {
        int rc;
        snprintf(topic, sizeof topic, "%s/%ld", prefix, i);
        rc = mosquitto_publish_v5(pub.mosq, NULL, topic, (int)size, payload, 1, true, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            die("publish %s: %s", topic, mosquitto_strerror(rc));
    }
    deadline = t0 + timeout_s;
    pthread_mutex_lock(&lock);
    for (;;) {
        all = true;
        for (int s = 0; s < nsubs; s++)
            all = all && subs[s].done;
        if (all || now_s() >= deadline)
            break;
        wait_change(deadline);
    }
    pthread_mutex_unlock(&lock);
    if (!all) {
        for (int s = 0; s < nsubs; s++)
            fprintf(stderr, "cfm-bench-raw: sub%d (port %d) has %ld of %ld\n", s + 1,
                    sub_ports[s], subs[s].count, count);
        die("relay: not every subscriber had all %ld messages within %g s", count, timeout_s);
    }
    printf("relay: count=%ld size=%ld", count, size);
    for (int s = 0; s < nsubs; s++) {
        printf(" sub%d=%.3f", s + 1, subs[s].done_at - t0);
        if (subs[s].done_at > last)
            last = subs[s].done_at;
    }
    {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru); /* every client thread of this process */
        printf(" clients_cpu=%.2f",
               (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    }
    printf(" seconds=%.3f\n", last - t0);
    fflush(stdout);
    client_stop(&pub);
    for (int s = 0; s < nsubs; s++) {
        client_stop(&subs[s]);
        free(subs[s].seen);
    }
    free(payload);
    return 0;
}

/* --- startup -------------------------------------------------------------- */

/* Starts cmd (its output appended to log, when given); the caller reaps
 * the child with stop_child(). */
static pid_t spawn(char **cmd, const char *log)
{
    pid_t parent = getpid(), pid = fork();

    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid > 0)
        return pid;
    /* The child: dies with us, logs to the file. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    if (log && !freopen(log, "a", stdout))
        _exit(127);
    if (log && dup2(fileno(stdout), STDERR_FILENO) < 0)
        _exit(127);
    execvp(cmd[0], cmd);
    fprintf(stderr, "cfm-bench-raw: %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
}

/* SIGTERM, then SIGKILL after STOP_TIMEOUT_S; always reaps the child. */
static void stop_child(pid_t pid)
{
    double deadline = now_s() + STOP_TIMEOUT_S;
    struct timespec slice = {0, 10 * 1000 * 1000};
    int status;

    kill(pid, SIGTERM);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_s() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return;
        }
        nanosleep(&slice, NULL);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_startup(int argc, char **argv)
{
    struct client sub = {0};
    const char *topic = NULL, *match = NULL, *log = NULL;
    double timeout_s = 10, samples[MAX_RUNS], sorted[MAX_RUNS];
    int port = 0, runs = 5, i;
    char **cmd = NULL;

    for (i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--") == 0) {
            cmd = argv + i + 1;
            break;
        }
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--port") == 0)
            port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--topic") == 0)
            topic = val;
        else if (strcmp(opt, "--match") == 0)
            match = val;
        else if (strcmp(opt, "--runs") == 0)
            runs = (int)parse_long(val, opt, 1, MAX_RUNS);
        else if (strcmp(opt, "--log") == 0)
            log = val;
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_seconds(val, opt);
        else
            die("startup: unknown option %s\n%s", opt, usage);
    }
    if (!port || !topic || !match || !cmd || !cmd[0])
        die("startup needs --port, --topic, --match and -- COMMAND\n%s", usage);

    sub.match = match;
    client_start(&sub, "watch", port);
    mosquitto_message_v5_callback_set(sub.mosq, on_startup_message);
    client_subscribe(&sub, topic);
    for (int r = 0; r < runs; r++) {
        pid_t pid;
        bool ok;

        pthread_mutex_lock(&lock);
        sub.hit = false;
        sub.armed_at = now_s();
        pthread_mutex_unlock(&lock);
        pid = spawn(cmd, log);
        pthread_mutex_lock(&lock);
        ok = wait_flag(&sub.hit, sub.armed_at + timeout_s);
        samples[r] = (sub.hit_at - sub.armed_at) * 1000;
        sub.armed_at = 0;
        pthread_mutex_unlock(&lock);
        stop_child(pid);
        if (!ok) {
            client_stop(&sub);
            die("startup: no fresh message containing '%s' on %s within %g s of starting %s",
                match, topic, timeout_s, cmd[0]);
        }
    }
    client_stop(&sub);
    memcpy(sorted, samples, (size_t)runs * sizeof *samples);
    qsort(sorted, (size_t)runs, sizeof *sorted, cmp_double);
    printf("startup: runs=%d median_ms=%.1f min_ms=%.1f max_ms=%.1f samples=", runs,
           runs % 2 ? sorted[runs / 2] : (sorted[runs / 2 - 1] + sorted[runs / 2]) / 2,
           sorted[0], sorted[runs - 1]);
    for (i = 0; i < runs; i++)
        printf("%s%.1f", i ? "," : "", samples[i]);
    printf("\n");
    return 0;
}

/* --- pub ------------------------------------------------------------------ */

struct one_pub {
    int mid;
    int connect_rc;     /* -1 until the CONNACK */
    bool acked;
};

static void on_pub_connect(struct mosquitto *m, void *arg, int rc, int flags,
                           const mosquitto_property *p)
{
    (void)m;
    (void)flags;
    (void)p;
    ((struct one_pub *)arg)->connect_rc = rc;
}

static void on_pub_publish(struct mosquitto *m, void *arg, int mid, int reason,
                           const mosquitto_property *p)
{
    struct one_pub *o = arg;

    (void)m;
    (void)p;
    if (mid == o->mid && reason < 0x80)
        o->acked = true;
}

static int cmd_pub(int argc, char **argv)
{
    struct one_pub o = {.connect_rc = -1};
    const char *topic = NULL, *message = NULL;
    double deadline = now_s() + CONNECT_TIMEOUT_S;
    struct mosquitto *mosq;
    char id[48];
    int port = 0, rc;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--port") == 0)
            port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--topic") == 0)
            topic = val;
        else if (strcmp(opt, "--message") == 0)
            message = val;
        else
            die("pub: unknown option %s\n%s", opt, usage);
    }
    if (!port || !topic || !message)
        die("pub needs --port, --topic and --message\n%s", usage);
    snprintf(id, sizeof id, "cfm-bench-pub-%ld", (long)getpid());
    if (!(mosq = mosquitto_new(id, true, &o)))
        die("cannot create an MQTT client");
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(mosq, on_pub_connect);
    mosquitto_publish_v5_callback_set(mosq, on_pub_publish);
    rc = mosquitto_connect_bind_v5(mosq, "127.0.0.1", port, KEEPALIVE_S, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        die("pub: cannot connect to 127.0.0.1:%d: %s", port, mosquitto_strerror(rc));
    while (o.connect_rc < 0 && now_s() < deadline)
        if ((rc = mosquitto_loop(mosq, 100, 1)) != MOSQ_ERR_SUCCESS)
            die("pub: lost the broker: %s", mosquitto_strerror(rc));
    if (o.connect_rc != 0)
        die("pub: no CONNACK, or refused");
    rc = mosquitto_publish_v5(mosq, &o.mid, topic, (int)strlen(message), message, 1, true, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        die("pub: publish %s: %s", topic, mosquitto_strerror(rc));
    while (!o.acked && now_s() < deadline)
        if ((rc = mosquitto_loop(mosq, 100, 1)) != MOSQ_ERR_SUCCESS)
            die("pub: lost the broker: %s", mosquitto_strerror(rc));
    if (!o.acked)
        die("pub: no PUBACK within %g s", CONNECT_TIMEOUT_S);
    mosquitto_disconnect_v5(mosq, 0, NULL);
    mosquitto_destroy(mosq);
    return 0;
}

/* --- shared by the latency modes ------------------------------------------ */

/* The value at percentile p (0-100, nearest rank) of n sorted samples. */
static double pct(const double *sorted, long n, double p)
{
    long rank = (long)(p / 100.0 * (double)n + 0.999999);

    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* Sorts a copy of n samples and prints " NAME_p50_us=.. NAME_p99_us=..". */
static void print_pcts(const char *name, const double *samples, long n)
{
    double *sorted = malloc((size_t)(n > 0 ? n : 1) * sizeof *sorted);

    if (!sorted)
        die("out of memory");
    memcpy(sorted, samples, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    printf(" %s_p50_us=%.0f %s_p99_us=%.0f %s_max_us=%.0f", name, pct(sorted, n, 50), name,
           pct(sorted, n, 99), name, sorted[n - 1]);
    free(sorted);
}

/* A copy of a message's payload as a C string (free() it). */
static char *payload_text(const struct mosquitto_message *msg)
{
    char *text = malloc((size_t)(msg->payloadlen > 0 ? msg->payloadlen : 0) + 1);

    if (!text)
        die("out of memory");
    if (msg->payloadlen > 0)
        memcpy(text, msg->payload, (size_t)msg->payloadlen);
    text[msg->payloadlen > 0 ? msg->payloadlen : 0] = '\0';
    return text;
}

/* --- pingpong --------------------------------------------------------------- */

struct pingpong {
    char pong_topic[MAX_TOPIC];
    long want;        /* the sequence number "ping" waits for */
    bool got;
    double got_at;
};

static struct pingpong pp;

/* "pong": every ping goes straight back, from the network thread. */
static void on_pong_side(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                         const mosquitto_property *p)
{
    int rc;

    (void)arg;
    (void)p;
    rc = mosquitto_publish_v5(m, NULL, pp.pong_topic, msg->payloadlen, msg->payload, 1, false,
                              NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        die("pong: publish: %s", mosquitto_strerror(rc));
}

/* "ping": the answer carries the sequence number first. */
static void on_ping_side(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                         const mosquitto_property *p)
{
    double at = now_s();
    char head[24];
    size_t n = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;

    (void)m;
    (void)arg;
    (void)p;
    if (n >= sizeof head)
        n = sizeof head - 1;
    memcpy(head, msg->payload, n);
    head[n] = '\0';
    pthread_mutex_lock(&lock);
    if (strtol(head, NULL, 10) == pp.want && !pp.got) {
        pp.got = true;
        pp.got_at = at;
        pthread_cond_broadcast(&changed);
    }
    pthread_mutex_unlock(&lock);
}

static int cmd_pingpong(int argc, char **argv)
{
    struct client ping = {0}, pong = {0};
    int port = 0, port2 = 0;
    long count = 0, warmup = 20, size = 0;
    const char *prefix = NULL;
    double timeout_s = 60, deadline, *rtt, *hop, t_start;
    char topic[MAX_TOPIC], *payload;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--port") == 0)
            port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--port2") == 0)
            port2 = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--count") == 0)
            count = parse_long(val, opt, 1, MAX_COUNT);
        else if (strcmp(opt, "--warmup") == 0)
            warmup = parse_long(val, opt, 0, MAX_COUNT);
        else if (strcmp(opt, "--size") == 0)
            size = parse_long(val, opt, 24, MAX_SIZE);
        else if (strcmp(opt, "--prefix") == 0)
            prefix = val;
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_seconds(val, opt);
        else
            die("pingpong: unknown option %s\n%s", opt, usage);
    }
    if (!port || !count || !size || !prefix)
        die("pingpong needs --port, --count, --size and --prefix\n%s", usage);
    if (strlen(prefix) > MAX_TOPIC - 16 || strpbrk(prefix, "+#"))
        die("--prefix: a topic of at most %d characters without wildcards", MAX_TOPIC - 16);
    if (!port2)
        port2 = port;
    snprintf(pp.pong_topic, sizeof pp.pong_topic, "%s/pong", prefix);
    payload = malloc((size_t)size);
    rtt = calloc((size_t)count, sizeof *rtt);
    hop = calloc((size_t)count, sizeof *hop);
    if (!payload || !rtt || !hop)
        die("out of memory");
    memset(payload, 'x', (size_t)size);

    client_start(&pong, "pong", port2);
    mosquitto_message_v5_callback_set(pong.mosq, on_pong_side);
    snprintf(topic, sizeof topic, "%s/ping", prefix);
    client_subscribe(&pong, topic);
    client_start(&ping, "ping", port);
    mosquitto_message_v5_callback_set(ping.mosq, on_ping_side);
    client_subscribe(&ping, pp.pong_topic);

    t_start = now_s();
    deadline = t_start + timeout_s;
    for (long i = 0; i < warmup + count; i++) {
        double t0;
        int rc, n = snprintf(payload, (size_t)size, "%ld ", i);
        payload[n] = 'x'; /* the number, a blank, then padding */
        pthread_mutex_lock(&lock);
        pp.want = i;
        pp.got = false;
        pthread_mutex_unlock(&lock);
        t0 = now_s();
        rc = mosquitto_publish_v5(ping.mosq, NULL, topic, (int)size, payload, 1, false, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            die("ping: publish: %s", mosquitto_strerror(rc));
        pthread_mutex_lock(&lock);
        if (!wait_flag(&pp.got, deadline))
            die("pingpong: no answer to ping %ld within the %g s of the run", i, timeout_s);
        if (i >= warmup) {
            rtt[i - warmup] = (pp.got_at - t0) * 1e6;
            hop[i - warmup] = rtt[i - warmup] / 2;
        }
        pthread_mutex_unlock(&lock);
    }
    printf("pingpong: count=%ld size=%ld bridged=%s", count, size, port2 != port ? "yes" : "no");
    print_pcts("rtt", rtt, count);
    print_pcts("hop", hop, count);
    printf(" seconds=%.3f\n", now_s() - t_start);
    fflush(stdout);
    client_stop(&ping);
    client_stop(&pong);
    free(payload);
    free(rtt);
    free(hop);
    return 0;
}

/* --- hops ------------------------------------------------------------------- */

struct hops {
    size_t prefix_len;
    long count;
    double *ping_at, *pong_at;  /* index n, 1..count; 0 = not seen */
    long pongs;
    int ping_size;              /* bytes of the first ping seen */
    bool done;
};

static struct hops hw;

/* The number of "n" inside the event's "payload" object, or -1. */
static long event_n(const char *text)
{
    const char *p = strstr(text, "\"payload\"");

    if (!p || !(p = strstr(p, "\"n\"")))
        return -1;
    p += 3;
    while (*p == ' ' || *p == ':')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    return strtol(p, NULL, 10);
}

static void on_hops_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                            const mosquitto_property *p)
{
    double at = now_s();
    const char *type = msg->topic + hw.prefix_len;
    char *text;
    long n;

    (void)m;
    (void)arg;
    (void)p;
    if (msg->retain || strlen(msg->topic) <= hw.prefix_len)
        return;
    text = payload_text(msg);
    n = event_n(text);
    free(text);
    if (n < 1 || n > hw.count)
        return;
    pthread_mutex_lock(&lock);
    if (strcmp(type, "/ping") == 0 && !hw.ping_at[n]) {
        hw.ping_at[n] = at;
        if (!hw.ping_size)
            hw.ping_size = msg->payloadlen;
    } else if (strcmp(type, "/pong") == 0 && !hw.pong_at[n]) {
        hw.pong_at[n] = at;
        if (++hw.pongs == hw.count) {
            hw.done = true;
            pthread_cond_broadcast(&changed);
        }
    }
    pthread_mutex_unlock(&lock);
}

static int cmd_hops(int argc, char **argv)
{
    struct client w = {0};
    const char *prefix = NULL, *ready = NULL;
    double timeout_s = 120, deadline, *cycle, *half, *ab, *ba;
    long skip = 0, m = 0;
    char topic[MAX_TOPIC];
    int port = 0;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--port") == 0)
            port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--prefix") == 0)
            prefix = val;
        else if (strcmp(opt, "--count") == 0)
            hw.count = parse_long(val, opt, 3, MAX_COUNT);
        else if (strcmp(opt, "--skip") == 0)
            skip = parse_long(val, opt, 0, MAX_COUNT);
        else if (strcmp(opt, "--ready") == 0)
            ready = val;
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_seconds(val, opt);
        else
            die("hops: unknown option %s\n%s", opt, usage);
    }
    if (!port || !prefix || !hw.count)
        die("hops needs --port, --prefix and --count\n%s", usage);
    if (skip > hw.count - 3)
        die("--skip must leave at least 2 round trips of --count");
    if (strlen(prefix) > MAX_TOPIC - 16 || strpbrk(prefix, "+#"))
        die("--prefix: a topic of at most %d characters without wildcards", MAX_TOPIC - 16);
    hw.prefix_len = strlen(prefix);
    hw.ping_at = calloc((size_t)hw.count + 1, sizeof *hw.ping_at);
    hw.pong_at = calloc((size_t)hw.count + 1, sizeof *hw.pong_at);
    cycle = calloc((size_t)hw.count, sizeof *cycle);
    half = calloc((size_t)hw.count, sizeof *half);
    ab = calloc((size_t)hw.count, sizeof *ab);
    ba = calloc((size_t)hw.count, sizeof *ba);
    if (!hw.ping_at || !hw.pong_at || !cycle || !half || !ab || !ba)
        die("out of memory");

    client_start(&w, "hops", port);
    mosquitto_message_v5_callback_set(w.mosq, on_hops_message);
    snprintf(topic, sizeof topic, "%s/+", prefix);
    client_subscribe(&w, topic);
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (!f || fputs("ready\n", f) == EOF || fclose(f) != 0)
            die("--ready %s: %s", ready, strerror(errno));
    }
    deadline = now_s() + timeout_s;
    pthread_mutex_lock(&lock);
    if (!wait_flag(&hw.done, deadline))
        die("hops: %ld of %ld pongs within %g s", hw.pongs, hw.count, timeout_s);
    /* Round trip i: ping i -> pong i (A to B) -> ping i+1 (B to A). */
    for (long n = skip + 1; n < hw.count; n++) {
        if (!hw.ping_at[n] || !hw.ping_at[n + 1])
            die("hops: ping %ld or %ld was not seen", n, n + 1);
        cycle[m] = (hw.ping_at[n + 1] - hw.ping_at[n]) * 1e6;
        half[m] = cycle[m] / 2;
        ab[m] = (hw.pong_at[n] - hw.ping_at[n]) * 1e6;
        ba[m] = (hw.ping_at[n + 1] - hw.pong_at[n]) * 1e6;
        m++;
    }
    pthread_mutex_unlock(&lock);
    printf("hops: count=%ld size=%d", m, hw.ping_size);
    print_pcts("rtt", cycle, m);
    print_pcts("hop", half, m);
    print_pcts("ab", ab, m);
    print_pcts("ba", ba, m);
    printf(" seconds=%.3f\n", (hw.ping_at[hw.count] - hw.ping_at[skip + 1]));
    fflush(stdout);
    client_stop(&w);
    free(hw.ping_at);
    free(hw.pong_at);
    free(cycle);
    free(half);
    free(ab);
    free(ba);
    return 0;
}

/* --- ask -------------------------------------------------------------------- */

#define MAX_MATCH 4
#define MAX_KEYS 1000

struct matcher {
    char filter[MAX_TOPIC];
    const char *templates[MAX_MATCH];
    char texts[MAX_MATCH][MAX_TOPIC];  /* the templates with the key put in */
    int n;
    bool armed, hit;
    double hit_at;
};

static struct matcher ask_ready, ask_expect;

/* Writes tmpl with every "{k}" replaced by key into out. */
static void put_key(char *out, size_t len, const char *tmpl, const char *key)
{
    size_t o = 0;

    for (const char *p = tmpl; *p && o + 1 < len;) {
        if (strncmp(p, "{k}", 3) == 0) {
            o += (size_t)snprintf(out + o, len - o, "%s", key);
            p += 3;
        } else {
            out[o++] = *p++;
        }
    }
    if (o >= len)
        die("text too long: %s", tmpl);
    out[o] = '\0';
}

static void arm(struct matcher *mt, const char *key)
{
    for (int i = 0; i < mt->n; i++)
        put_key(mt->texts[i], sizeof mt->texts[i], mt->templates[i], key);
    mt->hit = false;
    mt->armed = true;
}

static void try_match(struct matcher *mt, const struct mosquitto_message *msg, const char *text,
                      double at)
{
    bool ok = false;

    if (!mt->armed || mt->hit || !mt->filter[0])
        return;
    if (mosquitto_topic_matches_sub(mt->filter, msg->topic, &ok) != MOSQ_ERR_SUCCESS || !ok)
        return;
    for (int i = 0; i < mt->n; i++)
        if (!strstr(text, mt->texts[i]))
            return;
    mt->hit = true;
    mt->hit_at = at;
    mt->armed = false;
    pthread_cond_broadcast(&changed);
}

static void on_ask_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                           const mosquitto_property *p)
{
    double at = now_s();
    char *text = payload_text(msg);

    (void)m;
    (void)arg;
    (void)p;
    pthread_mutex_lock(&lock);
    try_match(&ask_ready, msg, text, at);
    try_match(&ask_expect, msg, text, at);
    pthread_mutex_unlock(&lock);
    free(text);
}

static void publish_text(struct client *c, const char *topic, const char *text)
{
    int rc = mosquitto_publish_v5(c->mosq, NULL, topic, (int)strlen(text), text, 1, false, NULL);

    if (rc != MOSQ_ERR_SUCCESS)
        die("publish %s: %s", topic, mosquitto_strerror(rc));
}

static int cmd_ask(int argc, char **argv)
{
    struct client c = {0};
    const char *send_topic = NULL, *send = NULL, *prep_topic = NULL, *prep = NULL;
    char *keys[MAX_KEYS], *list = NULL, text[4096], topic[MAX_TOPIC];
    double timeout_s = 30, samples[MAX_KEYS], sorted[MAX_KEYS];
    long gap_ms = 0;
    int port = 0, nkeys = 0;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--port") == 0)
            port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--keys") == 0) {
            if (!(list = strdup(val)))
                die("out of memory");
        } else if (strcmp(opt, "--send-topic") == 0)
            send_topic = val;
        else if (strcmp(opt, "--send") == 0)
            send = val;
        else if (strcmp(opt, "--expect-topic") == 0)
            snprintf(ask_expect.filter, sizeof ask_expect.filter, "%s", val);
        else if (strcmp(opt, "--expect") == 0 || strcmp(opt, "--ready") == 0) {
            struct matcher *mt = opt[2] == 'e' ? &ask_expect : &ask_ready;
            if (mt->n == MAX_MATCH)
                die("at most %d %s texts", MAX_MATCH, opt);
            mt->templates[mt->n++] = val;
        } else if (strcmp(opt, "--prepare-topic") == 0)
            prep_topic = val;
        else if (strcmp(opt, "--prepare") == 0)
            prep = val;
        else if (strcmp(opt, "--ready-topic") == 0)
            snprintf(ask_ready.filter, sizeof ask_ready.filter, "%s", val);
        else if (strcmp(opt, "--gap-ms") == 0)
            gap_ms = parse_long(val, opt, 0, 60000);
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_seconds(val, opt);
        else
            die("ask: unknown option %s\n%s", opt, usage);
    }
    if (!port || !list || !send_topic || !send || !ask_expect.filter[0] || !ask_expect.n)
        die("ask needs --port, --keys, --send-topic, --send, --expect-topic and --expect\n%s",
            usage);
    if (!prep != !prep_topic || (prep && (!ask_ready.filter[0] || !ask_ready.n)))
        die("--prepare needs --prepare-topic, --ready-topic and --ready\n%s", usage);
    for (char *save = NULL, *k = strtok_r(list, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        if (nkeys == MAX_KEYS)
            die("at most %d keys", MAX_KEYS);
        keys[nkeys++] = k;
    }
    if (!nkeys)
        die("--keys: none given");

    client_start(&c, "ask", port);
    mosquitto_message_v5_callback_set(c.mosq, on_ask_message);
    client_subscribe(&c, ask_expect.filter);
    if (prep) {
        pthread_mutex_lock(&lock);
        c.subscribed = false; /* the next SUBACK is the second subscription's */
        pthread_mutex_unlock(&lock);
        client_subscribe(&c, ask_ready.filter);
    }
    for (int k = 0; k < nkeys; k++) {
        struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
        double t0;
        if (prep) {
            pthread_mutex_lock(&lock);
            arm(&ask_ready, keys[k]);
            pthread_mutex_unlock(&lock);
            put_key(topic, sizeof topic, prep_topic, keys[k]);
            put_key(text, sizeof text, prep, keys[k]);
            publish_text(&c, topic, text);
            pthread_mutex_lock(&lock);
            if (!wait_flag(&ask_ready.hit, now_s() + timeout_s))
                die("ask: key %s: no ready message on %s within %g s", keys[k],
                    ask_ready.filter, timeout_s);
            pthread_mutex_unlock(&lock);
        }
        if (gap_ms)
            nanosleep(&gap, NULL);
        put_key(topic, sizeof topic, send_topic, keys[k]);
        put_key(text, sizeof text, send, keys[k]);
        pthread_mutex_lock(&lock);
        arm(&ask_expect, keys[k]);
        pthread_mutex_unlock(&lock);
        t0 = now_s();
        publish_text(&c, topic, text);
        pthread_mutex_lock(&lock);
        if (!wait_flag(&ask_expect.hit, t0 + timeout_s))
            die("ask: key %s: no answer on %s within %g s", keys[k], ask_expect.filter,
                timeout_s);
        samples[k] = (ask_expect.hit_at - t0) * 1e6;
        pthread_mutex_unlock(&lock);
    }
    client_stop(&c);
    memcpy(sorted, samples, (size_t)nkeys * sizeof *samples);
    qsort(sorted, (size_t)nkeys, sizeof *sorted, cmp_double);
    printf("ask: count=%d median_us=%.0f min_us=%.0f max_us=%.0f samples=", nkeys,
           nkeys % 2 ? sorted[nkeys / 2] : (sorted[nkeys / 2 - 1] + sorted[nkeys / 2]) / 2,
           sorted[0], sorted[nkeys - 1]);
    for (int k = 0; k < nkeys; k++)
        printf("%s%.0f", k ? "," : "", samples[k]);
    printf("\n");
    free(list);
    return 0;
}

/* --- agents ----------------------------------------------------------------- */

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
    double at = now_s();
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
    text = payload_text(msg);
    pthread_mutex_lock(&lock);
    if (strstr(text, "\"online\"") && !ag.seen[i]) {
        ag.seen[i] = 1;
        if (!ag.online++)
            ag.first_at = at;
        if (ag.online == ag.count) {
            ag.done = true;
            ag.done_at = at;
            pthread_cond_broadcast(&changed);
        }
    }
    pthread_mutex_unlock(&lock);
    free(text);
}

static int cmd_agents(int argc, char **argv)
{
    struct client w = {0};
    const char *agent = NULL, *dir = NULL, *net = "127.77.251";
    double timeout_s = 60, t0;
    static pid_t pids[MAX_AGENTS];
    char broker[32];
    int port = 0;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--port") == 0)
            port = (int)parse_long(val, opt, 1, 65535);
        else if (strcmp(opt, "--count") == 0)
            ag.count = parse_long(val, opt, 1, 250);
        else if (strcmp(opt, "--agent") == 0)
            agent = val;
        else if (strcmp(opt, "--dir") == 0)
            dir = val;
        else if (strcmp(opt, "--net") == 0)
            net = val;
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_seconds(val, opt);
        else
            die("agents: unknown option %s\n%s", opt, usage);
    }
    if (!port || !ag.count || !agent || !dir)
        die("agents needs --port, --count, --agent and --dir\n%s", usage);
    snprintf(ag.prefix, sizeof ag.prefix, "cfm/v1/agent/benchvm-%ld-", (long)getpid());
    snprintf(broker, sizeof broker, "127.0.0.1:%d", port);

    client_start(&w, "agents", port);
    mosquitto_message_v5_callback_set(w.mosq, on_agents_message);
    client_subscribe(&w, "cfm/v1/agent/+/status");

    /* Every agent started at once, as a procedure's parallel run_vm calls
     * do (the driver spawns each in its own directory with CFM_VM_IP). */
    t0 = now_s();
    for (long i = 0; i < ag.count; i++) {
        char vm[48], root[4096], ip[48];
        char *cmd[] = {(char *)agent, "--vm", vm, "--broker", broker, "--root", root,
                       "--status-interval", "2", NULL};
        pid_t parent = getpid(), pid;
        snprintf(vm, sizeof vm, "benchvm-%ld-%ld", (long)parent, i);
        if ((size_t)snprintf(root, sizeof root, "%s/%s", dir, vm) >= sizeof root)
            die("--dir: too long");
        if (mkdir(root, 0700) != 0 && errno != EEXIST)
            die("mkdir %s: %s", root, strerror(errno));
        snprintf(ip, sizeof ip, "CFM_VM_IP=%s.%ld", net, i + 2);
        if ((pid = fork()) < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            char log[4200];
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(127);
            snprintf(log, sizeof log, "%s/agent.log", root);
            if (chdir(root) != 0 || !freopen(log, "a", stdout) ||
                dup2(fileno(stdout), STDERR_FILENO) < 0 || putenv(ip) != 0)
                _exit(127);
            execv(agent, cmd);
            fprintf(stderr, "cfm-bench-raw: %s: %s\n", agent, strerror(errno));
            _exit(127);
        }
        pids[i] = pid;
    }
    pthread_mutex_lock(&lock);
    if (!wait_flag(&ag.done, t0 + timeout_s)) {
        long online = ag.online;
        pthread_mutex_unlock(&lock);
        for (long i = 0; i < ag.count; i++)
            kill(pids[i], SIGKILL);
        die("agents: %ld of %ld online within %g s", online, ag.count, timeout_s);
    }
    pthread_mutex_unlock(&lock);
    printf("agents: count=%ld first=%.3f seconds=%.3f\n", ag.count, ag.first_at - t0,
           ag.done_at - t0);
    fflush(stdout);
    for (long i = 0; i < ag.count; i++)
        kill(pids[i], SIGTERM);
    for (long i = 0; i < ag.count; i++)
        stop_child(pids[i]); /* SIGTERM again, reaped; SIGKILL after a while */
    /* Their last retained statuses ("offline") stay on the broker, under
     * this process's own IDs. */
    client_stop(&w);
    return 0;
}

int main(int argc, char **argv)
{
    int rc;

    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    mosquitto_lib_init();
    if (strcmp(argv[1], "relay") == 0)
        rc = cmd_relay(argc - 2, argv + 2);
    else if (strcmp(argv[1], "startup") == 0)
        rc = cmd_startup(argc - 2, argv + 2);
    else if (strcmp(argv[1], "pub") == 0)
        rc = cmd_pub(argc - 2, argv + 2);
    else if (strcmp(argv[1], "pingpong") == 0)
        rc = cmd_pingpong(argc - 2, argv + 2);
    else if (strcmp(argv[1], "hops") == 0)
        rc = cmd_hops(argc - 2, argv + 2);
    else if (strcmp(argv[1], "ask") == 0)
        rc = cmd_ask(argc - 2, argv + 2);
    else if (strcmp(argv[1], "agents") == 0)
        rc = cmd_agents(argc - 2, argv + 2);
    else {
        fputs(usage, stderr);
        rc = 2;
    }
    mosquitto_lib_cleanup();
    return rc;
}
