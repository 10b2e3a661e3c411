/* mnemo on PostgreSQL through the C ABI, against plain one-row INSERT transactions on the
 * same server in the same run:
 *
 * 1. Durable single-key commits (mnemo_db_set) against one-row INSERTs, each its own
 *    transaction, in alternating batches (so noise from other processes falls on both
 *    alike). The INSERTs come from examples/pg_baseline.rs, a child process speaking the
 *    driver mnemo's backend uses; this program tells it when to run each batch.
 * 2. Processes: one process committing for a fixed time against N processes (default 4),
 *    each with its own instance, user and mnemo database on the same PostgreSQL database,
 *    committing for the same time at once (aggregate rate); rounds alternate which goes
 *    first. The same for the plain INSERTs, to show what the server and machine allow.
 *
 * Build and run through the top-level Makefile (`make bench`, which starts a private
 * cluster: scripts/bench-postgres). By hand, with a server at URL (tables are created in
 * its database; use a scratch database):
 *
 *   cargo build --release --lib --example pg_baseline
 *   ln -sf libmnemo.so target/release/libmnemo.so.0
 *   cc -std=c11 -Wall -Wextra -Werror -pedantic -O2 -Iinclude benches/pg_bench.c \
 *      -o target/bench/pg_bench -Ltarget/release -Wl,-rpath,$PWD/target/release -lmnemo
 *   target/bench/pg_bench --url 'postgres://postgres@127.0.0.1:5432/scratch?sslmode=disable' \
 *      --baseline target/release/examples/pg_baseline
 *
 * Options (MNEMO_BENCH_QUICK=1 or --quick shrinks the defaults):
 *   --url URL         the server (required); mnemo and the baseline both connect to it
 *   --baseline PATH   the pg_baseline program (required)
 *   --commits N       commits, and as many INSERTs, in part 1 (default 2000; quick 200)
 *   --batch N         commits per batch in part 1 (default 50)
 *   --procs N         processes of part 2 (default 4)
 *   --window-ms N     how long each process commits in a part 2 round (default 2000; quick 500)
 *   --rounds N        rounds of part 2 (default 3; quick 1)
 *   --results FILE    also write machine-readable "result pg <name> <value>" lines
 *
 * Rows are printed in abi_bench's table format (backend, phase, n, median, p99, rate, note).
 * Every mnemo status is checked: a failure prints the call and message and exits 1. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROGRAM "pg_bench"
#include "bench_util.h"
#include "mnemo.h"

#define BACKEND "pg"

/* ------------------------------------------------------------------------ config ---- */

static struct {
    const char *url, *baseline;
    size_t commits, batch, procs, window_ms, rounds;
    bool quick;
} cfg;

static void parse_args(int argc, char **argv, const char **results_path) {
    const char *q = getenv("MNEMO_BENCH_QUICK");
    cfg.quick = q && *q && strcmp(q, "0") != 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) cfg.quick = true;
    cfg.commits = cfg.quick ? 200 : 2000;
    cfg.batch = 50;
    cfg.procs = 4;
    cfg.window_ms = cfg.quick ? 500 : 2000;
    cfg.rounds = cfg.quick ? 1 : 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) continue;
        if (!v) die("%s needs a value (or is unknown: see the top of benches/pg_bench.c)", a);
        i++;
        if (strcmp(a, "--url") == 0) cfg.url = v;
        else if (strcmp(a, "--baseline") == 0) cfg.baseline = v;
        else if (strcmp(a, "--results") == 0) *results_path = v;
        else if (strcmp(a, "--commits") == 0) cfg.commits = parse_count(a, v);
        else if (strcmp(a, "--batch") == 0) cfg.batch = parse_count(a, v);
        else if (strcmp(a, "--procs") == 0) cfg.procs = parse_count(a, v);
        else if (strcmp(a, "--window-ms") == 0) cfg.window_ms = parse_count(a, v);
        else if (strcmp(a, "--rounds") == 0) cfg.rounds = parse_count(a, v);
        else die("unknown argument '%s' (see the top of benches/pg_bench.c)", a);
    }
    if (!cfg.url || !cfg.baseline) die("--url and --baseline are required");
}

/* ----------------------------------------------------------------------- workers ---- */

/* A child process answering commands on a pipe, one line each (pg_baseline's protocol):
 * "run MS" -> "count C ELAPSED_NS", and for the baseline "insert N" -> "ns T1 .. TN". */
typedef struct {
    pid_t pid;
    FILE *to, *from;
    const char *what;
} worker;

static char *line_buf;
static size_t line_cap;

/* This process's ends of the pipes to its workers: a new worker closes its copies, or an
 * earlier worker would never see the end of its input. */
static int parent_fds[64];
static size_t parent_fd_count;

/* The worker's next line (without its newline); dies at end of file. */
static char *read_line(worker *w) {
    ssize_t n = getline(&line_buf, &line_cap, w->from);
    if (n <= 0) die("%s (pid %ld) stopped answering", w->what, (long)w->pid);
    if (line_buf[n - 1] == '\n') line_buf[n - 1] = '\0';
    return line_buf;
}

static void send_line(worker *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(w->to, fmt, ap);
    va_end(ap);
    fputc('\n', w->to);
    if (fflush(w->to) != 0) die("writing to %s: %s", w->what, strerror(errno));
}

static void expect_ready(worker *w) {
    const char *line = read_line(w);
    if (strcmp(line, "ready") != 0) die("%s said '%s', expected 'ready'", w->what, line);
}

/* Forks a child with its stdin and stdout on pipes to the parent. In the child, `serve`
 * runs with the pipes as stdin/stdout and the child exits with its return value. */
static worker spawn(const char *what, int (*serve)(void)) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    if (results) fflush(results);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        if (dup2(down[0], STDIN_FILENO) < 0 || dup2(up[1], STDOUT_FILENO) < 0)
            die("dup2: %s", strerror(errno));
        close(down[0]);
        close(down[1]);
        close(up[0]);
        close(up[1]);
        for (size_t i = 0; i < parent_fd_count; i++) close(parent_fds[i]);
        parent_fd_count = 0;
        results = NULL;
        fflush(stdout);
        _exit(serve());
    }
    close(down[0]);
    close(up[1]);
    if (parent_fd_count + 2 > sizeof parent_fds / sizeof *parent_fds) die("too many workers");
    parent_fds[parent_fd_count++] = down[1];
    parent_fds[parent_fd_count++] = up[0];
    worker w = {pid, fdopen(down[1], "w"), fdopen(up[0], "r"), what};
    if (!w.to || !w.from) die("fdopen: %s", strerror(errno));
    expect_ready(&w);
    return w;
}

/* Closes the worker's stdin (it exits) and checks that it exited 0. */
static void finish(worker *w) {
    for (size_t i = 0; i < parent_fd_count; i++) {
        if (parent_fds[i] == fileno(w->to) || parent_fds[i] == fileno(w->from))
            parent_fds[i--] = parent_fds[--parent_fd_count];
    }
    fclose(w->to);
    fclose(w->from);
    int status = 0;
    if (waitpid(w->pid, &status, 0) < 0) die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("%s failed", w->what);
}

static int exec_baseline(void) {
    execl(cfg.baseline, cfg.baseline, cfg.url, (char *)NULL);
    fprintf(stderr, "pg_bench: cannot run %s: %s\n", cfg.baseline, strerror(errno));
    return 127;
}

static worker spawn_baseline(void) { return spawn("pg_baseline", exec_baseline); }

/* ------------------------------------------------------------------ mnemo worker ---- */

typedef struct {
    mnemo_instance *inst;
    mnemo_user *user;
    mnemo_database *db;
    size_t next;
} session;

/* An instance on the URL, a new passwordless user (named after the process and the clock,
 * so runs and processes never meet) and a new database of theirs. */
static session open_session(void) {
    session s = {NULL, NULL, NULL, 0};
    mnemo_backend *backend = NULL;
    CHECK(mnemo_backend_open(cfg.url, &backend));
    CHECK(mnemo_instance_open(backend, &s.inst)); /* consumes backend */
    char name[64];
    snprintf(name, sizeof name, "pg_bench-%ld-%" PRIu64, (long)getpid(), now_ns());
    CHECK(mnemo_instance_create_user(s.inst, name, NULL));
    CHECK(mnemo_instance_login(s.inst, name, NULL, &s.user));
    CHECK(mnemo_user_create_db(s.user, "bench", &s.db));
    return s;
}

static void close_session(session *s) {
    mnemo_db_free(s->db);
    CHECK(mnemo_user_logout(s->user));
    mnemo_instance_free(s->inst);
}

/* One durable single-key commit of a new key, with a value of about the baseline's size. */
static void commit_one(session *s) {
    char key[32], value[96];
    snprintf(key, sizeof key, "k%07zu", s->next);
    snprintf(value, sizeof value, "{\"n\":%zu,\"text\":\"the quick brown fox\"}", s->next);
    s->next++;
    CHECK(mnemo_db_set(s->db, "bench", key, value));
}

/* A part-2 worker: answers "run MS" with its commits of that window, until end of input. */
static int serve_mnemo(void) {
    session s = open_session();
    commit_one(&s); /* warm: the first commit loads the database's state */
    printf("ready\n");
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        unsigned long ms = 0;
        if (sscanf(line, "run %lu", &ms) != 1) die("mnemo worker: bad command '%s'", line);
        uint64_t start = now_ns(), window = (uint64_t)ms * 1000000u, elapsed = 0;
        size_t count = 0;
        while ((elapsed = now_ns() - start) < window) {
            commit_one(&s);
            count++;
        }
        printf("count %zu %" PRIu64 "\n", count, now_ns() - start);
        fflush(stdout);
    }
    free(line);
    close_session(&s);
    return 0;
}

/* ------------------------------------------------------------------------- parts ---- */

/* Part 1, in its own process (like the part-2 workers, so the parent holds no instance):
 * batches of mnemo commits and of baseline INSERTs, alternating which goes first. */
static int commits_against_inserts(void) {
    session s = open_session();
    worker base = spawn_baseline();
    samples mnemo = {0}, plain = {0};
    uint64_t mnemo_total = 0, plain_total = 0;
    /* Warm-up, not counted: first statements, caches. */
    for (int i = 0; i < 10; i++) commit_one(&s);
    send_line(&base, "insert 10");
    read_line(&base);
    size_t batches = (cfg.commits + cfg.batch - 1) / cfg.batch;
    for (size_t b = 0; b < batches; b++) {
        size_t n = b + 1 == batches ? cfg.commits - b * cfg.batch : cfg.batch;
        for (int turn = 0; turn < 2; turn++) {
            if ((turn == 0) == (b % 2 == 0)) {
                for (size_t i = 0; i < n; i++) {
                    uint64_t t0 = now_ns();
                    commit_one(&s);
                    uint64_t dt = now_ns() - t0;
                    samples_push(&mnemo, (double)dt);
                    mnemo_total += dt;
                }
            } else {
                send_line(&base, "insert %zu", n);
                char *line = read_line(&base), *p = line + 2, *end = NULL;
                if (strncmp(line, "ns", 2) != 0) die("pg_baseline said '%s'", line);
                for (size_t i = 0; i < n; i++, p = end) {
                    errno = 0;
                    unsigned long long ns = strtoull(p, &end, 10);
                    if (errno || end == p) die("pg_baseline gave %zu of %zu times", i, n);
                    samples_push(&plain, (double)ns);
                    plain_total += ns;
                }
            }
        }
    }
    finish(&base);
    close_session(&s);

    char note[160];
    double plain_med = quantile(&plain, 0.5), mnemo_med = quantile(&mnemo, 0.5);
    snprintf(note, sizeof note, "baseline; batches of %zu alternating with mnemo's", cfg.batch);
    row(BACKEND, "plain INSERT, one-row transaction", plain.n, plain_med, quantile(&plain, 0.99),
        1e9 / plain_med, note);
    double ratio = plain_med / mnemo_med;
    snprintf(note, sizeof note, "%.2fx plain INSERT rate (target >= 0.7); overall %.2fx", ratio,
             (double)plain_total / (double)mnemo_total);
    row(BACKEND, "durable single-key commit (mnemo_db_set)", mnemo.n, mnemo_med, quantile(&mnemo, 0.99),
        1e9 / mnemo_med, note);
    result(BACKEND, "insert_median_ns", plain_med);
    result(BACKEND, "commit_median_ns", mnemo_med);
    result(BACKEND, "commit_vs_insert_rate_x1000", ratio * 1000);
    free(plain.v);
    free(mnemo.v);
    return 0;
}

/* One window of `n` workers running at once: their summed commits over the longest
 * worker's elapsed time; `per_op` gets each worker's mean time per commit. */
static double run_window(worker *ws, size_t n, samples *per_op, size_t *total) {
    for (size_t i = 0; i < n; i++) send_line(&ws[i], "run %zu", cfg.window_ms);
    size_t count_sum = 0;
    uint64_t longest = 0;
    for (size_t i = 0; i < n; i++) {
        size_t count = 0;
        uint64_t elapsed = 0;
        const char *line = read_line(&ws[i]);
        if (sscanf(line, "count %zu %" SCNu64, &count, &elapsed) != 2 || count == 0)
            die("%s said '%s'", ws[i].what, line);
        samples_push(per_op, (double)elapsed / (double)count);
        count_sum += count;
        if (elapsed > longest) longest = elapsed;
    }
    *total += count_sum;
    return (double)count_sum * 1e9 / (double)longest;
}

/* Part 2 for one kind of worker: rounds of one worker alone and all of them at once,
 * alternating which goes first. Prints two rows: the single rate and the aggregate's. */
static void processes(worker *ws, const char *what, const char *detail, const char *key,
                        const char *target) {
    samples single = {0}, many = {0}, single_op = {0}, many_op = {0};
    size_t single_n = 0, many_n = 0;
    for (size_t r = 0; r < cfg.rounds; r++) {
        for (int turn = 0; turn < 2; turn++) {
            if ((turn == 0) == (r % 2 == 0))
                samples_push(&single, run_window(ws, 1, &single_op, &single_n));
            else
                samples_push(&many, run_window(ws, cfg.procs, &many_op, &many_n));
        }
    }
    double one = quantile(&single, 0.5), all = quantile(&many, 0.5), ratio = all / one;
    char phase[96], note[160];
    snprintf(phase, sizeof phase, "%s, 1 process", what);
    snprintf(note, sizeof note, "%s; %zu rounds of %zu ms, alternating with %zu processes",
             detail, cfg.rounds, cfg.window_ms, cfg.procs);
    row(BACKEND, phase, single_n, quantile(&single_op, 0.5), 0, one, note);
    snprintf(phase, sizeof phase, "%s, %zu processes, aggregate", what, cfg.procs);
    snprintf(note, sizeof note, "%.2fx 1 process%s", ratio, target);
    row(BACKEND, phase, many_n, quantile(&many_op, 0.5), 0, all, note);
    char name[64];
    snprintf(name, sizeof name, "%s_1proc_rate", key);
    result(BACKEND, name, one);
    snprintf(name, sizeof name, "%s_%zuproc_rate", key, cfg.procs);
    result(BACKEND, name, all);
    free(single.v);
    free(many.v);
    free(single_op.v);
    free(many_op.v);
}

/* Runs `fn` in a forked child (its output goes where ours does); dies if it fails. */
static void in_child(int (*fn)(void)) {
    fflush(stdout);
    if (results) fflush(results);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        int status = fn();
        fflush(stdout);
        if (results) fflush(results);
        _exit(status);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("part 1 failed");
}

static void processes_part(void) {
    worker *ws = calloc(cfg.procs, sizeof(worker));
    if (!ws) die("out of memory");
    /* One at a time, so instances do not race to set up the same server. */
    for (size_t i = 0; i < cfg.procs; i++) ws[i] = spawn("mnemo worker", serve_mnemo);
    char target[64];
    snprintf(target, sizeof target, " (target >= 2.5 for %zu)", cfg.procs);
    processes(ws, "durable commits", "each process its own instance, user and db", "commit",
              cfg.procs == 4 ? target : "");
    for (size_t i = 0; i < cfg.procs; i++) finish(&ws[i]);
    for (size_t i = 0; i < cfg.procs; i++) ws[i] = spawn_baseline();
    processes(ws, "plain INSERTs", "baseline: one-row INSERT transactions", "insert", "");
    for (size_t i = 0; i < cfg.procs; i++) finish(&ws[i]);
    free(ws);
}

int main(int argc, char **argv) {
    const char *results_path = NULL;
    parse_args(argc, argv, &results_path);
    if (results_path) {
        results = fopen(results_path, "w");
        if (!results) die("cannot write %s: %s", results_path, strerror(errno));
    }
    if (mnemo_version_number() != MNEMO_VERSION_NUMBER)
        die("library %s does not match header %s", mnemo_version(), MNEMO_VERSION_STRING);
    printf("mnemo %s pg_bench%s: %zu commits and INSERTs in batches of %zu; 1 vs %zu processes, "
           "%zu rounds of %zu ms\n",
           mnemo_version(), cfg.quick ? " (quick)" : "", cfg.commits, cfg.batch, cfg.procs,
           cfg.rounds, cfg.window_ms);
    in_child(commits_against_inserts);
    processes_part();
    free(line_buf);
    if (results) fclose(results);
    return 0;
}
