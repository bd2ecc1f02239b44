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
    "       cfm-bench-raw pub --port PORT --topic TOPIC --message TEXT\n";

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
    else {
        fputs(usage, stderr);
        rc = 2;
    }
    mosquitto_lib_cleanup();
    return rc;
}
