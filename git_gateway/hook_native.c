/* Slipway's git hook (pre-receive) as a small native program: git_gateway/hook_script.sh in C.
 *
 * The git gateway compiles this file (git_gateway/hook_native.py) into the hooks directory its
 * own receive-pack runs with, where a C compiler exists; elsewhere that directory holds the bash
 * hook. A hook process starts on every push: bash takes ~2 ms to start, this program ~0.3 ms.
 * It does exactly what hook_script.sh does, with the same wire format (git_gateway/hook_wire.py,
 * docs/ARCHITECTURE.md "Hook callback"), the same messages and exit codes, and hands whatever
 * it does not do itself (an https or malformed callback URL, a server it cannot connect to, a
 * value with a line break) to the Python program beside it (slipway-hook.py) before anything
 * was sent. The phase is the file's name. The marker below lets hooks.installed() know it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char MARKER[] __attribute__((used)) = "# slipway-hook (native)";

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { fputs("slipway: out of memory\n", stderr); exit(1); }
        b->p = p; b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static const char *phase, *here;
static struct buf raw;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

/* The Python program, same input (the hook's stdin as bash's here-string gives it: without
 * its last newline, plus one): it says what went wrong. Nothing was sent yet. */
static void python_hook(void) {
    char prog[4096];
    if (snprintf(prog, sizeof prog, "%s/slipway-hook.py", here) >= (int)sizeof prog) {
        say("slipway: hook path too long"); exit(1);
    }
    size_t n = raw.n;
    if (n && raw.p[n - 1] == '\n') n--;
    int fd[2];
    if (pipe(fd) != 0) { say("slipway: cannot start the hook program"); exit(1); }
    pid_t pid = fork();
    if (pid < 0) { say("slipway: cannot start the hook program"); exit(1); }
    if (pid == 0) {                         /* the writer: the input, then a newline */
        close(fd[0]);
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(fd[1], raw.p + off, n - off);
            if (w <= 0) { if (w < 0 && errno == EINTR) continue; _exit(0); }
            off += (size_t)w;
        }
        (void)!write(fd[1], "\n", 1);
        _exit(0);
    }
    close(fd[1]);
    if (dup2(fd[0], 0) < 0) { say("slipway: cannot start the hook program"); exit(1); }
    close(fd[0]);
    char *argv[] = {prog, (char *)phase, NULL};
    execv(prog, argv);
    say("slipway: cannot run %s: %s", prog, strerror(errno));
    exit(1);
}

static int has_break(const char *s) { return strpbrk(s, "\r\n") != NULL; }
static const char *env(const char *name) { const char *v = getenv(name); return v ? v : ""; }
static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++) if (*s < '0' || *s > '9') return 0;
    return 1;
}

static char shown[8192];
static double timeout_s = 60;

static void failed(const char *why) {       /* sent, but no usable answer */
    if (strcmp(phase, "pre-receive") == 0) {
        say("slipway: the Slipway server is unavailable, try again (tried %s: %s)", shown, why);
        exit(1);
    }
    say("slipway: the push was stored but the Slipway server at %s could not be told (%s); no job "
        "was started yet; a job this push reserved starts within a minute (slipway job list)",
        shown, why);
    exit(0);
}

/* Reading the answer: a line at a time, each read waiting at most timeout_s (bash's read -t). */
static int sock = -1;
static char rbuf[65536];
static size_t rlen, rpos;
static int reof;

static int fill(void) {                     /* 1: more data, 0: end, -1: timed out */
    if (reof) return 0;
    struct pollfd p = {sock, POLLIN, 0};
    int ms = timeout_s * 1000 > 2147483647.0 ? 2147483647 : (int)(timeout_s * 1000);
    int r;
    do { r = poll(&p, 1, ms); } while (r < 0 && errno == EINTR);
    if (r == 0) return -1;
    ssize_t got;
    do { got = recv(sock, rbuf, sizeof rbuf, 0); } while (got < 0 && errno == EINTR);
    if (got <= 0) { reof = 1; return 0; }
    rlen = (size_t)got; rpos = 0;
    return 1;
}

/* One line without its newline into *line. 1: a line (ended by \n), 2: a last line without a
 * newline, 0: nothing more, -1: timed out. */
static int read_line(struct buf *line) {
    line->n = 0;
    puts_(line, "");
    for (;;) {
        if (rpos >= rlen) {
            int f = fill();
            if (f < 0) return -1;
            if (f == 0) return line->n ? 2 : 0;
        }
        char *nl = memchr(rbuf + rpos, '\n', rlen - rpos);
        size_t take = nl ? (size_t)(nl - (rbuf + rpos)) : rlen - rpos;
        put(line, rbuf + rpos, take);
        rpos += take + (nl ? 1 : 0);
        if (nl) return 1;
    }
}

static void strip_cr(struct buf *line) {
    if (line->n && line->p[line->n - 1] == '\r') line->p[--line->n] = 0;
}

int main(int argc, char **argv) {
    (void)argc;
    static char self[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    char *slash = strrchr(self, '/');
    phase = slash ? slash + 1 : self;
    if (slash) { *slash = 0; here = self; } else here = ".";

    char chunk[65536];
    for (;;) {
        ssize_t got = read(0, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        put(&raw, chunk, (size_t)got);
    }
    puts_(&raw, "");

    const char *url = env("SLIPWAY_HOOK_URL");
    if (!*url || strncmp(url, "http://", 7) != 0) python_hook();
    const char *rest = url + 7;
    const char *sl = strchr(rest, '/');
    size_t hp_len = sl ? (size_t)(sl - rest) : strlen(rest);
    if (hp_len >= 1024 || strlen(rest) >= 3000) python_hook();
    char hostport[1024], path[3072], host[1024], port[64];
    memcpy(hostport, rest, hp_len); hostport[hp_len] = 0;
    snprintf(path, sizeof path, "%s", sl ? sl : "/");
    char *at = strrchr(hostport, '@');      /* user:password@ is never sent nor shown */
    if (at) memmove(hostport, at + 1, strlen(at + 1) + 1);
    if (hostport[0] == '[') {               /* [v6 address]:port */
        char *close_ = strchr(hostport, ']');
        if (!close_) python_hook();
        size_t hl = (size_t)(close_ - hostport - 1);
        memcpy(host, hostport + 1, hl); host[hl] = 0;
        const char *pp = close_ + 1;
        if (*pp == ':') pp++;
        snprintf(port, sizeof port, "%s", pp);
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon) {
            size_t hl = (size_t)(colon - hostport);
            memcpy(host, hostport, hl); host[hl] = 0;
            snprintf(port, sizeof port, "%s", colon + 1);
        } else {
            snprintf(host, sizeof host, "%s", hostport);
            port[0] = 0;
        }
    }
    if (!port[0]) snprintf(port, sizeof port, "80");
    if (!host[0] || !all_digits(port) || strpbrk(path, " \t\n\r\v\f")) python_hook();
    snprintf(shown, sizeof shown, "http://%s%s", hostport, path);
    const char *t = env("SLIPWAY_HOOK_TIMEOUT");
    if (*t) {                               /* digits, or digits.digits */
        const char *q = t; int ok = 1, dot = 0, digits = 0;
        for (; *q; q++) {
            if (*q >= '0' && *q <= '9') digits++;
            else if (*q == '.' && !dot && digits) { dot = 1; digits = 0; }
            else { ok = 0; break; }
        }
        timeout_s = ok && digits ? strtod(t, NULL) : 60;
    }

    int pre = strcmp(phase, "pre-receive") == 0;
    struct buf body = {0};
    puts_(&body, "slipway-hook 1\nphase "); puts_(&body, phase);
    puts_(&body, "\nrepo "); puts_(&body, env("SLIPWAY_REPO"));
    puts_(&body, "\npusher "); puts_(&body, env("SLIPWAY_PUSHER"));
    const char *isjob = env("SLIPWAY_PUSHER_IS_JOB");
    puts_(&body, "\npusher-is-job "); puts_(&body, *isjob ? isjob : "0"); puts_(&body, "\n");
    const char *quarantine = env("GIT_QUARANTINE_PATH");
    if (pre && *quarantine) {
        puts_(&body, "quarantine "); puts_(&body, quarantine); puts_(&body, "\n");
    }
    const char *count_s = env("GIT_PUSH_OPTION_COUNT");
    long count = all_digits(count_s) && strlen(count_s) < 9 ? strtol(count_s, NULL, 10) : 0;
    for (long i = 0; i < count; i++) {
        char name[64];
        snprintf(name, sizeof name, "GIT_PUSH_OPTION_%ld", i);
        const char *value = env(name);
        char *copy = strdup(value);
        if (!copy) { say("slipway: out of memory"); exit(1); }
        if (has_break(copy)) {
            say("slipway: push option %ld has a line break; push options are one line each", i + 1);
            if (pre) exit(1);
            for (char *c = copy; *c; c++) if (*c == '\n' || *c == '\r') *c = ' ';
        }
        puts_(&body, "option "); puts_(&body, copy); puts_(&body, "\n");
        free(copy);
    }
    if (has_break(env("SLIPWAY_REPO")) || has_break(env("SLIPWAY_PUSHER")) ||
        has_break(quarantine) || has_break(env("SLIPWAY_HOOK_SECRET")))
        python_hook();
    for (char *line = raw.p, *end = raw.p + raw.n; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (len && line[len - 1] == '\r') len--;
        if (len) { puts_(&body, "update "); put(&body, line, len); puts_(&body, "\n"); }
        line += (nl ? (size_t)(nl - line) + 1 : (size_t)(end - line));
    }

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) python_hook();
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        sock = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (sock < 0) continue;
        if (connect(sock, a->ai_addr, a->ai_addrlen) == 0) break;
        close(sock);
        sock = -1;
    }
    freeaddrinfo(ai);
    if (sock < 0) python_hook();            /* nothing sent yet */

    struct buf req = {0};
    char len_s[32];
    snprintf(len_s, sizeof len_s, "%zu", body.n);
    puts_(&req, "POST "); puts_(&req, path); puts_(&req, " HTTP/1.0\r\nHost: ");
    puts_(&req, hostport); puts_(&req, "\r\nContent-Type: text/x-slipway-hook\r\nContent-Length: ");
    puts_(&req, len_s); puts_(&req, "\r\nAccept: text/plain\r\nX-Slipway-Hook-Secret: ");
    puts_(&req, env("SLIPWAY_HOOK_SECRET"));
    puts_(&req, "\r\nUser-Agent: slipway-hook\r\nConnection: close\r\n\r\n");
    put(&req, body.p, body.n);
    for (size_t off = 0; off < req.n;) {
        ssize_t w = send(sock, req.p + off, req.n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) failed("the connection was closed while sending");
        off += (size_t)w;
    }

    struct buf line = {0};
    int r = read_line(&line);
    if (r < 0 || r == 0) failed("timed out");
    /* "HTTP/1.0 200 OK": the second space-separated word, all digits */
    char status[16] = "";
    {
        char *s = line.p;
        while (*s == ' ') s++;
        while (*s && *s != ' ') s++;
        while (*s == ' ') s++;
        size_t k = 0;
        while (s[k] && s[k] != ' ' && k + 1 < sizeof status) { status[k] = s[k]; k++; }
        status[k] = 0;
        if (s[k] && s[k] != ' ') status[0] = 'x';  /* too long: not a status */
        if (status[0] && status[strlen(status) - 1] == '\r') status[strlen(status) - 1] = 0;
    }
    if (!all_digits(status)) failed("the Slipway server sent a malformed HTTP reply");
    while ((r = read_line(&line)) == 1) {   /* the headers */
        strip_cr(&line);
        if (line.n == 0) break;
    }
    r = read_line(&line);
    if (r > 0) strip_cr(&line); else line.n = 0, line.p[0] = 0;
    int ok = strcmp(line.p, "ok") == 0;
    if (!ok && strcmp(line.p, "refused") != 0) {
        char why[64];
        snprintf(why, sizeof why, "HTTP %s from the Slipway server", status);
        failed(why);
    }
    struct buf msg = {0};
    while ((r = read_line(&msg)) > 0)
        if (msg.n) say("%s", msg.p);
    close(sock);
    if (pre && (!ok || strtol(status, NULL, 10) >= 400)) return 1;
    return 0;
}
