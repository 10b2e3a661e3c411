/* What the C benchmarks (abi_bench.c, pg_bench.c) share: failing on a status, timing,
 * samples and their quantiles, and the table they print (backend, phase, n, median, p99,
 * rate, note), which benches/median_of_runs.py reads. Define BENCH_PROGRAM (the name
 * messages start with) before including it. Functions are static inline: each program uses
 * some of them. */
#ifndef MNEMO_BENCH_UTIL_H
#define MNEMO_BENCH_UTIL_H

#ifndef BENCH_PROGRAM
#error "define BENCH_PROGRAM before including bench_util.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mnemo.h"

/* ---------------------------------------------------------------- failure handling -- */

static inline void fail_status(const char *call, mnemo_status s, const char *file, int line) {
    const char *msg = mnemo_last_error_message();
    fprintf(stderr, BENCH_PROGRAM ": %s:%d: %s returned %s: %s\n", file, line, call,
            mnemo_status_str(s), msg ? msg : "(no message)");
    exit(1);
}

/* Aborts unless `call` returns `want`. */
#define EXPECT(call, want)                                                   \
    do {                                                                     \
        mnemo_status s_ = (call);                                            \
        if (s_ != (want)) fail_status(#call, s_, __FILE__, __LINE__);        \
    } while (0)
#define CHECK(call) EXPECT(call, MNEMO_STATUS_OK)

static inline void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, BENCH_PROGRAM ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

/* ------------------------------------------------------------------------ timing ---- */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime: %s", strerror(errno));
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Measurements (times in ns, or rates); `samples s = {0}` is an empty set too. */
typedef struct {
    double *v;
    size_t n, cap;
    bool sorted;
} samples;

static inline samples samples_new(size_t cap) {
    samples s = {xmalloc((cap ? cap : 1) * sizeof(double)), 0, cap ? cap : 1, false};
    return s;
}

static inline void samples_push(samples *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        double *v = realloc(s->v, s->cap * sizeof(double));
        if (!v) die("out of memory");
        s->v = v;
    }
    s->v[s->n++] = x;
    s->sorted = false;
}

static inline void samples_clear(samples *s) {
    s->n = 0;
    s->sorted = false;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank quantile (q = 0.5: median; 0.99: p99, which is the maximum below 100 samples). */
static inline double quantile(samples *s, double q) {
    if (s->n == 0) return 0.0;
    if (!s->sorted) {
        qsort(s->v, s->n, sizeof(double), cmp_double);
        s->sorted = true;
    }
    size_t rank = (size_t)(q * (double)s->n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > s->n) rank = s->n;
    return s->v[rank - 1];
}

static inline void samples_free(samples *s) {
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* ------------------------------------------------------------------------ output ---- */

static FILE *results; /* optional machine-readable copy */

static inline void fmt_time(char *buf, size_t size, double ns) {
    if (ns <= 0) snprintf(buf, size, "-");
    else if (ns < 1e3) snprintf(buf, size, "%.0f ns", ns);
    else if (ns < 1e6) snprintf(buf, size, "%.1f us", ns / 1e3);
    else if (ns < 1e9) snprintf(buf, size, "%.2f ms", ns / 1e6);
    else snprintf(buf, size, "%.2f s", ns / 1e9);
}

static inline void fmt_rate(char *buf, size_t size, double per_s) {
    if (per_s <= 0) snprintf(buf, size, "-");
    else if (per_s >= 1e6) snprintf(buf, size, "%.2fM/s", per_s / 1e6);
    else if (per_s >= 1e4) snprintf(buf, size, "%.1fk/s", per_s / 1e3);
    else snprintf(buf, size, "%.0f/s", per_s);
}

static inline void header(void) {
    printf("%-7s %-44s %8s %10s %10s %10s  %s\n", "backend", "phase", "n", "median", "p99",
           "rate", "vs floor");
    printf("%-7s %-44s %8s %10s %10s %10s  %s\n", "-------", "-----", "-", "------", "---",
           "----", "--------");
}

/* One table row. `rate` <= 0 prints "-"; `note` may be NULL. */
static inline void row(const char *backend, const char *phase, size_t n, double median_ns, double p99_ns,
                double rate, const char *note) {
    char med[32], p99[32], r[32];
    fmt_time(med, sizeof med, median_ns);
    fmt_time(p99, sizeof p99, p99_ns);
    fmt_rate(r, sizeof r, rate);
    printf("%-7s %-44s %8zu %10s %10s %10s  %s\n", backend, phase, n, med, p99, r,
           note ? note : "");
    fflush(stdout);
}

/* A row that is a plain value (size, ratio): printed in the median column's place. */
static inline void row_text(const char *backend, const char *phase, const char *text, const char *note) {
    printf("%-7s %-44s %8s %10s %10s %10s  %s\n", backend, phase, "", text, "", "",
           note ? note : "");
    fflush(stdout);
}

static inline void result(const char *backend, const char *name, double value) {
    if (results) {
        fprintf(results, "result %s %s %.0f\n", backend, name, value);
        fflush(results);
    }
}

static inline size_t parse_count(const char *flag, const char *v) {
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || !end || *end || n == 0) die("%s needs a positive integer, got '%s'", flag, v);
    return (size_t)n;
}

#endif
