/*
 * main.c - cfm-svc, the services of the example web 3-tier system
 * (examples/services/README.md): a web server, a load balancer and a tiny
 * key-value database, one mode per process, each an HTTP/1.1 server.
 *
 * This file owns the process: the command line, the listening sockets, the
 * signals, the --watch lifecycle and the single-threaded poll() loop that
 * drives every connection (conn.c) of the mode (modes.c). The one thing a
 * reader must know: the service lives only as long as the process named by
 * --watch (on a local-driver VM, the VM's cfm-agent; "--watch parent" names
 * the process that started it), so killing a VM kills
 * its services although they run in sessions of their own. Exit status: 0
 * on SIGTERM/SIGINT or when the watched process is gone, 2 for a bad
 * command line, 1 for a failure at start-up.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "svc.h"

#define WATCH_MS 500
#define BACKLOG 128
#define ACCEPT_PAUSE_MS 100 /* after EMFILE: do not spin on a full fd table */
#define BIND_WAIT_MS 5000   /* an address still held: its holder may be going */
#define BIND_RETRY_MS 50

static const char usage[] =
    "usage: cfm-svc web --listen IP:PORT --name NAME [--db IP:PORT] --watch PID\n"
    "       cfm-svc lb  --listen IP:PORT --backends FILE --watch PID\n"
    "       cfm-svc db  --listen IP:PORT --data DIR [--replicate-to IP:PORT]\n"
    "                   [--sync-from IP:PORT] --watch PID\n"
    "       common: [--name NAME] [--pidfile FILE]; --listen up to 4 times\n"
    "The services of the example web 3-tier system; see examples/services/README.md.\n"
    "Each exits when the process --watch names is gone (\"--watch parent\": the process\n"
    "that started it), and on SIGTERM.\n";

static int signal_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_signal;

int64_t cfm_svc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cfm_svc_log(const struct cfm_svc *svc, const char *fmt, ...)
{
    struct timespec ts;
    struct tm tm;
    char when[32];
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (!gmtime_r(&ts.tv_sec, &tm) || strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(when, sizeof when, "?");
    fprintf(stderr, "%s.%03ldZ %s %s: ", when, ts.tv_nsec / 1000000, svc->mode_name, svc->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

bool cfm_svc_parse_addr(const char *text, struct cfm_svc_addr *addr)
{
    char host[CFM_SVC_MAX_ADDR + 1];
    const char *port, *end;
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr->sa;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr->sa;
    size_t n = strlen(text);
    bool v6;
    int w;

    if (n == 0 || n > CFM_SVC_MAX_ADDR)
        return false;
    if (text[0] == '[') {
        end = strchr(text, ']');
        if (!end || end[1] != ':')
            return false;
        port = end + 2;
        text++;
    } else {
        end = strrchr(text, ':');
        if (!end || strchr(text, ':') != end)
            return false;
        port = end + 1;
    }
    n = (size_t)(end - text);
    if (n == 0 || strlen(port) == 0 || strlen(port) > 5 ||
        strspn(port, "0123456789") != strlen(port) || strtol(port, NULL, 10) < 1 ||
        strtol(port, NULL, 10) > 65535)
        return false;
    memcpy(host, text, n);
    host[n] = '\0';
    /* inet_pton, not getaddrinfo: the address is numeric, and cfm-svc is
     * linked statically (CMakeLists.txt), where getaddrinfo would need the
     * shared libraries of the glibc it was built with. */
    memset(&addr->sa, 0, sizeof addr->sa);
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)strtol(port, NULL, 10));
        addr->len = sizeof *sin;
        v6 = false;
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)strtol(port, NULL, 10));
        addr->len = sizeof *sin6;
        v6 = true;
    } else {
        return false;
    }
    w = snprintf(addr->text, sizeof addr->text, "%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 port);
    return w > 0 && (size_t)w < sizeof addr->text;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= CFM_SVC_MAX_NAME &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* One line naming the flag, exit status 2; text "" for a missing flag. */
static void bad_flag(const char *flag, const char *text, const char *what)
{
    if (*text)
        fprintf(stderr, "cfm-svc: %s: '%s' %s\n", flag, text, what);
    else
        fprintf(stderr, "cfm-svc: %s %s\n", flag, what);
    exit(2);
}

static void parse_args(struct cfm_svc *svc, int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"db", required_argument, NULL, 'd'},
                                         {"backends", required_argument, NULL, 'b'},
                                         {"data", required_argument, NULL, 'D'},
                                         {"replicate-to", required_argument, NULL, 'r'},
                                         {"sync-from", required_argument, NULL, 's'},
                                         {"watch", required_argument, NULL, 'w'},
                                         {"pidfile", required_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int opt;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    svc->mode_name = argv[1];
    if (strcmp(argv[1], "web") == 0)
        svc->mode = CFM_SVC_WEB;
    else if (strcmp(argv[1], "lb") == 0)
        svc->mode = CFM_SVC_LB;
    else if (strcmp(argv[1], "db") == 0)
        svc->mode = CFM_SVC_DB;
    else
        bad_flag("mode", argv[1], "is not one of web, lb, db");
    /* getopt sees the mode as the program's name */
    while ((opt = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
        char *end;
        long v;

        switch (opt) {
        case 'l':
            if (svc->nlisten == CFM_SVC_MAX_LISTEN)
                bad_flag("--listen", optarg, "is one too many (at most 4 addresses)");
            if (!cfm_svc_parse_addr(optarg, &svc->listen[svc->nlisten++]))
                bad_flag("--listen", optarg, "is not IP:PORT (numeric, port 1 to 65535)");
            break;
        case 'n':
            if (!valid_name(optarg))
                bad_flag("--name", optarg, "is not [A-Za-z0-9_.-]{1,64}");
            svc->name = optarg;
            break;
        case 'd':
            if (!cfm_svc_parse_addr(optarg, &svc->db))
                bad_flag("--db", optarg, "is not IP:PORT (numeric, port 1 to 65535)");
            svc->has_db = true;
            break;
        case 'b': svc->backends_path = optarg; break;
        case 'D': svc->data_path = optarg; break;
        case 's':
            if (!cfm_svc_parse_addr(optarg, &svc->sync_from))
                bad_flag("--sync-from", optarg, "is not IP:PORT (numeric, port 1 to 65535)");
            svc->has_sync = true;
            break;
        case 'r':
            if (!cfm_svc_parse_addr(optarg, &svc->replica))
                bad_flag("--replicate-to", optarg, "is not IP:PORT (numeric, port 1 to 65535)");
            svc->has_replica = true;
            break;
        case 'w':
            if (strcmp(optarg, "parent") == 0) {
                /* The process that started this one: on a local VM, the
                 * agent of a detached start (run_agent_command's detach). */
                svc->watch = getppid();
                if (svc->watch <= 1)
                    bad_flag("--watch", optarg, "names no live parent (orphaned already)");
                break;
            }
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > INT_MAX)
                bad_flag("--watch", optarg, "is not a process id");
            svc->watch = (pid_t)v;
            break;
        case 'p': svc->pidfile = optarg; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: fputs(usage, stderr); exit(2);
        }
    }
    if (optind < argc - 1)
        bad_flag("argument", argv[optind + 1], "is not expected");
    if (svc->nlisten == 0)
        bad_flag("--listen", "", "is required");
    if (!svc->watch)
        bad_flag("--watch", "", "is required: the service lives as long as that process");
    if (svc->mode == CFM_SVC_WEB && !svc->name)
        bad_flag("--name", "", "is required for web");
    if ((svc->mode == CFM_SVC_LB) != (svc->backends_path != NULL))
        bad_flag("--backends", svc->backends_path ? svc->backends_path : "",
                 svc->backends_path ? "is for lb only" : "is required for lb");
    if ((svc->mode == CFM_SVC_DB) != (svc->data_path != NULL))
        bad_flag("--data", svc->data_path ? svc->data_path : "",
                 svc->data_path ? "is for db only" : "is required for db");
    if (svc->mode != CFM_SVC_WEB && svc->has_db)
        bad_flag("--db", svc->db.text, "is for web only");
    if (svc->mode != CFM_SVC_DB && svc->has_sync)
        bad_flag("--sync-from", svc->sync_from.text, "is for db only");
    if (svc->mode != CFM_SVC_DB && svc->has_replica)
        bad_flag("--replicate-to", svc->replica.text, "is for db only");
    if ((svc->backends_path && !*svc->backends_path) || (svc->data_path && !*svc->data_path))
        bad_flag(svc->backends_path ? "--backends" : "--data", "", "must not be empty");
    if (!svc->name)
        svc->name = svc->mode_name;
}

/* Gone, or a zombie nobody reaped yet: either way the owner is dead. */
static bool watched_alive(pid_t pid)
{
    char path[64], stat[512];
    FILE *f;
    size_t n;
    char *paren;

    if (kill(pid, 0) != 0 && errno == ESRCH)
        return false;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (!f)
        return true; /* no /proc here: kill(pid, 0) has the last word */
    n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    paren = strrchr(stat, ')');
    return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

static void on_signal(int sig)
{
    int saved = errno;

    stop_signal = sig;
    if (write(signal_pipe[1], "x", 1) < 0) {
        /* the pipe is full: a wake-up is already pending */
    }
    errno = saved;
}

static bool set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 &&
           fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
}

static bool setup_signals(void)
{
    struct sigaction sa = {0};

    if (pipe(signal_pipe) != 0 || !set_flags(signal_pipe[0]) || !set_flags(signal_pipe[1]))
        return false;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return false;
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL) == 0;
}

/* Binds fd to addr. An address in use is waited for, up to BIND_WAIT_MS:
 * a VM's address is given to the next VM as soon as the VM is gone, and
 * the service the old VM ran may take a moment longer to let go of it (it
 * is stopping, or notices its --watch process is gone within WATCH_MS). */
static int bind_waiting(const struct cfm_svc *svc, int fd, const struct cfm_svc_addr *addr)
{
    int64_t until = cfm_svc_now_ms() + BIND_WAIT_MS;
    bool said = false;

    while (bind(fd, (const struct sockaddr *)&addr->sa, addr->len) != 0) {
        if (errno != EADDRINUSE || stop_signal || cfm_svc_now_ms() >= until)
            return -1;
        if (!said)
            cfm_svc_log(svc, "%s is in use; waiting up to %d ms for it", addr->text,
                        BIND_WAIT_MS);
        said = true;
        poll(NULL, 0, BIND_RETRY_MS);
    }
    if (said)
        cfm_svc_log(svc, "%s is free now", addr->text);
    return 0;
}

static int open_listener(const struct cfm_svc *svc, const struct cfm_svc_addr *addr)
{
    int one = 1, fd = socket(addr->sa.ss_family, SOCK_STREAM, 0);

    if (fd < 0 || !set_flags(fd) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind_waiting(svc, fd, addr) != 0 || listen(fd, BACKLOG) != 0) {
        cfm_svc_log(svc, "cannot listen on %s: %s", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Written to FILE.tmp and renamed, so a reader never sees half a pid. */
static bool write_pidfile(const struct cfm_svc *svc)
{
    char tmp[PATH_MAX];
    FILE *f;
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", svc->pidfile);
    bool ok;

    if (n < 0 || (size_t)n >= sizeof tmp || !(f = fopen(tmp, "w"))) {
        cfm_svc_log(svc, "cannot write --pidfile %s: %s", svc->pidfile,
                    n < 0 || (size_t)n >= sizeof tmp ? "path too long" : strerror(errno));
        return false;
    }
    ok = fprintf(f, "%ld\n", (long)getpid()) > 0;
    ok = (fclose(f) == 0) && ok && rename(tmp, svc->pidfile) == 0;
    if (!ok) {
        cfm_svc_log(svc, "cannot write --pidfile %s: %s", svc->pidfile, strerror(errno));
        unlink(tmp);
    }
    return ok;
}

struct loop {
    struct cfm_svc *svc;
    int lfd[CFM_SVC_MAX_LISTEN];
    size_t nlisten;
    struct cfm_svc_conn *conns[CFM_SVC_MAX_CONNS];
    size_t nconns;
    int64_t accept_paused_until;
};

static void accept_all(struct loop *l, int lfd)
{
    while (l->nconns < CFM_SVC_MAX_CONNS) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept(lfd, (struct sockaddr *)&peer, &len);
        struct cfm_svc_conn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                cfm_svc_log(l->svc, "accept: %s", strerror(errno));
                l->accept_paused_until = cfm_svc_now_ms() + ACCEPT_PAUSE_MS;
            }
            return;
        }
        if (!set_flags(fd)) {
            close(fd);
            continue;
        }
        c = cfm_svc_conn_new(fd, (struct sockaddr *)&peer, len);
        if (!c) {
            cfm_svc_log(l->svc, "out of memory for a connection");
            return;
        }
        l->conns[l->nconns++] = c;
    }
}

/* One poll round: events, accepts, deadlines, and the closed swept away. */
static bool loop_once(struct loop *l, int64_t next_watch)
{
    struct pollfd pfd[1 + CFM_SVC_MAX_LISTEN + 2 * CFM_SVC_MAX_CONNS];
    int cli[CFM_SVC_MAX_CONNS], up[CFM_SVC_MAX_CONNS];
    nfds_t np = 0;
    int64_t now = cfm_svc_now_ms(), wake = next_watch;
    int listen_at[CFM_SVC_MAX_LISTEN], timeout;
    size_t i, nconns = l->nconns;

    pfd[np++] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
    for (i = 0; i < l->nlisten; i++) {
        listen_at[i] = -1;
        if (l->nconns < CFM_SVC_MAX_CONNS && now >= l->accept_paused_until) {
            listen_at[i] = (int)np;
            pfd[np++] = (struct pollfd){.fd = l->lfd[i], .events = POLLIN};
        }
    }
    if (now < l->accept_paused_until && l->accept_paused_until < wake) {
        wake = l->accept_paused_until;
    }
    if (l->svc->mode == CFM_SVC_LB && l->svc->backends_checked_ms + 1000 < wake)
        wake = l->svc->backends_checked_ms + 1000;
    for (i = 0; i < nconns; i++) {
        struct cfm_svc_conn *c = l->conns[i];
        short up_ev, ev = cfm_svc_conn_events(c, &up_ev);

        cli[i] = up[i] = -1;
        if (ev) {
            cli[i] = (int)np;
            pfd[np++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        if (up_ev) {
            up[i] = (int)np;
            pfd[np++] = (struct pollfd){.fd = c->up_fd, .events = up_ev};
        }
        if (c->deadline_ms < wake)
            wake = c->deadline_ms;
        if (c->expires_ms < wake)
            wake = c->expires_ms;
    }
    timeout = wake <= now ? 0 : (int)(wake - now);
    if (poll(pfd, np, timeout) < 0 && errno != EINTR) {
        cfm_svc_log(l->svc, "poll: %s", strerror(errno));
        return false;
    }
    if (stop_signal)
        return false;
    for (i = 0; i < nconns; i++)
        cfm_svc_conn_ready(l->svc, l->conns[i], cli[i] >= 0 ? pfd[cli[i]].revents : 0,
                           up[i] >= 0 ? pfd[up[i]].revents : 0);
    for (i = 0; i < l->nlisten; i++)
        if (listen_at[i] >= 0 && pfd[listen_at[i]].revents)
            accept_all(l, l->lfd[i]);
    now = cfm_svc_now_ms();
    for (i = 0; i < l->nconns; i++)
        cfm_svc_conn_tick(l->svc, l->conns[i], now);
    for (i = 0; i < l->nconns;) {
        if (l->conns[i]->state == CFM_SVC_CLOSED) {
            cfm_svc_conn_free(l->conns[i]);
            l->conns[i] = l->conns[--l->nconns];
        } else {
            i++;
        }
    }
    if (l->svc->mode == CFM_SVC_LB)
        cfm_svc_lb_refresh(l->svc, false);
    return true;
}

/* Returns the exit status. */
static int run(struct loop *l)
{
    struct cfm_svc *svc = l->svc;
    int64_t next_watch = cfm_svc_now_ms() + WATCH_MS;
    const char *why = NULL;
    int status = 0;

    for (;;) {
        if (!loop_once(l, next_watch)) {
            why = stop_signal ? (stop_signal == SIGTERM ? "SIGTERM" : "SIGINT") : "a poll failure";
            status = stop_signal ? 0 : 1;
            break;
        }
        if (cfm_svc_now_ms() >= next_watch) {
            if (!watched_alive(svc->watch)) {
                why = "the watched process is gone";
                break;
            }
            next_watch = cfm_svc_now_ms() + WATCH_MS;
        }
    }
    cfm_svc_log(svc, "stopping: %s (pid %ld watched)", why, (long)svc->watch);
    for (size_t i = 0; i < l->nconns; i++)
        cfm_svc_conn_free(l->conns[i]);
    return status;
}

int main(int argc, char **argv)
{
    struct cfm_svc svc = {.data_fd = -1};
    struct loop l = {.svc = &svc};
    char addrs[CFM_SVC_MAX_LISTEN * (CFM_SVC_MAX_ADDR + 1)] = "";
    size_t len = 0;
    int status = 1;

    parse_args(&svc, argc, argv);
    if (!watched_alive(svc.watch)) {
        fprintf(stderr, "cfm-svc: --watch: no process %ld\n", (long)svc.watch);
        return 2;
    }
    if (!setup_signals()) {
        cfm_svc_log(&svc, "cannot set up signals: %s", strerror(errno));
        return 1;
    }
    if (!cfm_svc_start_mode(&svc))
        goto out;
    for (; l.nlisten < svc.nlisten; l.nlisten++) {
        const struct cfm_svc_addr *a = &svc.listen[l.nlisten];
        int n;

        l.lfd[l.nlisten] = open_listener(&svc, a);
        if (l.lfd[l.nlisten] < 0)
            goto out;
        n = snprintf(addrs + len, sizeof addrs - len, "%s%s", len ? " " : "", a->text);
        if (n > 0 && (size_t)n < sizeof addrs - len) /* always: sized for 4 addresses */
            len += (size_t)n;
    }
    if (svc.pidfile && !write_pidfile(&svc))
        goto out;
    cfm_svc_log(&svc, "listening on %s, pid %ld, living as long as pid %ld", addrs,
                (long)getpid(), (long)svc.watch);
    status = run(&l);
    if (svc.pidfile && unlink(svc.pidfile) != 0)
        cfm_svc_log(&svc, "cannot remove --pidfile %s: %s", svc.pidfile, strerror(errno));
out:
    for (size_t i = 0; i < l.nlisten; i++)
        close(l.lfd[i]);
    cfm_svc_stop_mode(&svc);
    for (int i = 0; i < 2; i++)
        if (signal_pipe[i] >= 0)
            close(signal_pipe[i]);
    return status;
}
