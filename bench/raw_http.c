/*
 * raw_http.c - cfm-bench-raw http: asks IP:PORT for PATH (HTTP/1.0 GET)
 * every few milliseconds until it answers 2xx, and prints the wall-clock
 * time (epoch seconds) of that first answer: when a recovered service
 * first answers. One process that sleeps between tries, so the watching
 * costs the machine under test almost nothing (a shell loop of connects,
 * curls and sleeps started a process every try, during the recovery it
 * timed).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "raw_common.h"

/* One GET; true when the status line says 2xx. */
static bool http_ok(const struct sockaddr_in *sa, const char *path)
{
    struct timeval tv = {.tv_sec = 1};
    char req[600], buf[64];
    size_t got = 0;
    bool ok = false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        raw_die("http: socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nConnection: close\r\n\r\n", path);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0 &&
        send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req)) {
        /* "HTTP/1.x 2.." */
        while (got < 12) {
            ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        buf[got] = '\0';
        ok = got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && buf[9] == '2';
    }
    close(fd);
    return ok;
}

int raw_http(int argc, char **argv)
{
    const char *addr = NULL, *path = "/";
    int port = 0, every_ms = 10;
    double timeout_s = 60, deadline;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timespec pause, wall;
    long tries = 0;
    const struct raw_opt opts[] = {
        RAW_OPT_TEXT("--addr", &addr),
        RAW_OPT_PORT("--port", &port),
        RAW_OPT_TEXT("--path", &path),
        RAW_OPT_INT("--every-ms", &every_ms, 1, 1000),
        RAW_OPT_SECONDS("--timeout", &timeout_s),
        {0},
    };

    raw_parse_opts("http", argc, argv, opts, NULL);
    if (!addr || !port)
        raw_die("http needs --addr and --port\n%s", raw_usage);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        raw_die("http: --addr %s: not an IPv4 address", addr);
    if (path[0] != '/' || strlen(path) > 500 || strpbrk(path, " \r\n"))
        raw_die("http: --path must start with / and hold at most 500 bytes, no spaces");
    sa.sin_port = htons((uint16_t)port);
    pause.tv_sec = every_ms / 1000;
    pause.tv_nsec = (long)(every_ms % 1000) * 1000000L;
    deadline = raw_now_s() + timeout_s;
    for (;;) {
        tries++;
        if (http_ok(&sa, path))
            break;
        if (raw_now_s() >= deadline)
            raw_die("http: http://%s:%d%s did not answer 2xx within %g s (%ld tries)", addr,
                    port, path, timeout_s, tries);
        nanosleep(&pause, NULL);
    }
    clock_gettime(CLOCK_REALTIME, &wall);
    printf("http: first_epoch_s=%lld.%06ld tries=%ld\n", (long long)wall.tv_sec,
           wall.tv_nsec / 1000, tries);
    return 0;
}
