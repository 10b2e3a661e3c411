/* A/B comparison of two builds of libmnemo in one process: both libraries are loaded with
 * dlopen (each keeps its own state), and each workload runs in short batches alternating
 * A and B, so that a shared, noisy machine slows both alike. Prints, per workload, the
 * median per-operation time of each build over the rounds and the ratio B/A.
 *
 * Run through scripts/bench-ab (it builds the two revisions); by hand:
 *   cc -std=c11 -O2 -Iinclude benches/ab_bench.c -o ab_bench -ldl
 *   ./ab_bench A/libmnemo.so B/libmnemo.so [--rounds N] [--dir DIR] [--quick]
 *
 * Workloads: memory single-key commit, memory get, memory 100-set transaction, memory
 * passwordless login, SQLite durable single-key commit, SQLite get, SQLite reopen
 * (backend + instance open and free), and reopen followed by a passwordless login. Every
 * status is checked. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700

#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mnemo.h"

/* The functions used, resolved from one library. */
typedef struct {
    const char *path;
    void *handle;
    mnemo_status (*backend_open)(const char *, mnemo_backend **);
    mnemo_status (*instance_open)(mnemo_backend *, mnemo_instance **);
    void (*instance_free)(mnemo_instance *);
    mnemo_status (*create_user)(mnemo_instance *, const char *, const char *);
    mnemo_status (*login)(mnemo_instance *, const char *, const char *, mnemo_user **);
    mnemo_status (*logout)(mnemo_user *);
    mnemo_status (*create_db)(mnemo_user *, const char *, mnemo_database **);
    void (*db_free)(mnemo_database *);
    mnemo_status (*db_set)(mnemo_database *, const char *, const char *, const char *);
    mnemo_status (*db_get)(mnemo_database *, const char *, const char *, char **);
    mnemo_status (*db_begin)(mnemo_database *, mnemo_txn **);
    mnemo_status (*txn_set)(mnemo_txn *, const char *, const char *, const char *);
    mnemo_status (*txn_commit)(mnemo_txn *, char **);
    void (*string_free)(char *);
    const char *(*last_error)(void);
} lib_t;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ab_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *sym(lib_t *l, const char *name) {
    void *p = dlsym(l->handle, name);
    if (!p) die("%s: no symbol %s", l->path, name);
    return p;
}

static void load(lib_t *l, const char *path) {
    l->path = path;
    l->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!l->handle) die("cannot load %s: %s", path, dlerror());
    *(void **)&l->backend_open = sym(l, "mnemo_backend_open");
    *(void **)&l->instance_open = sym(l, "mnemo_instance_open");
    *(void **)&l->instance_free = sym(l, "mnemo_instance_free");
    *(void **)&l->create_user = sym(l, "mnemo_instance_create_user");
    *(void **)&l->login = sym(l, "mnemo_instance_login");
    *(void **)&l->logout = sym(l, "mnemo_user_logout");
    *(void **)&l->create_db = sym(l, "mnemo_user_create_db");
    *(void **)&l->db_free = sym(l, "mnemo_db_free");
    *(void **)&l->db_set = sym(l, "mnemo_db_set");
    *(void **)&l->db_get = sym(l, "mnemo_db_get");
    *(void **)&l->db_begin = sym(l, "mnemo_db_begin");
    *(void **)&l->txn_set = sym(l, "mnemo_txn_set");
    *(void **)&l->txn_commit = sym(l, "mnemo_txn_commit");
    *(void **)&l->string_free = sym(l, "mnemo_string_free");
    *(void **)&l->last_error = sym(l, "mnemo_last_error_message");
}

static void check(lib_t *l, mnemo_status s, const char *what) {
    if (s != MNEMO_STATUS_OK) {
        const char *m = l->last_error();
        die("%s: %s failed with %d: %s", l->path, what, (int)s, m ? m : "(no message)");
    }
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* One build's open instance, user and database on one backend. */
typedef struct {
    lib_t *lib;
    mnemo_instance *inst;
    mnemo_user *user;
    mnemo_database *db;
    char url[512];
    long next_key;
} env_t;

static void env_open(env_t *e, lib_t *lib, const char *url) {
    memset(e, 0, sizeof *e);
    e->lib = lib;
    snprintf(e->url, sizeof e->url, "%s", url);
    mnemo_backend *b = NULL;
    check(lib, lib->backend_open(url, &b), "backend_open");
    check(lib, lib->instance_open(b, &e->inst), "instance_open");
    check(lib, lib->create_user(e->inst, "bench", NULL), "create_user");
    check(lib, lib->login(e->inst, "bench", NULL, &e->user), "login");
    check(lib, lib->create_db(e->user, "bench", &e->db), "create_db");
}

static void env_close(env_t *e) {
    e->lib->db_free(e->db);
    check(e->lib, e->lib->logout(e->user), "logout");
    e->lib->instance_free(e->inst);
}

static void put(env_t *e, long i) {
    char key[32];
    snprintf(key, sizeof key, "k%ld", i);
    check(e->lib, e->lib->db_set(e->db, "s", key, "{\"n\":1}"), "db_set");
}

/* Each workload runs `n` operations and returns nanoseconds per operation. */
typedef double (*workload_fn)(env_t *e, long n);

static double w_commit(env_t *e, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) put(e, e->next_key++);
    return (now_ns() - t0) / (double)n;
}

static double w_get(env_t *e, long n) {
    if (e->next_key == 0) put(e, e->next_key++);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        char key[32], *out = NULL;
        snprintf(key, sizeof key, "k%ld", i % e->next_key);
        check(e->lib, e->lib->db_get(e->db, "s", key, &out), "db_get");
        e->lib->string_free(out);
    }
    return (now_ns() - t0) / (double)n;
}

static double w_txn100(env_t *e, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        mnemo_txn *t = NULL;
        check(e->lib, e->lib->db_begin(e->db, &t), "db_begin");
        for (int j = 0; j < 100; j++) {
            char key[32];
            snprintf(key, sizeof key, "t%ld", e->next_key++);
            check(e->lib, e->lib->txn_set(t, "s", key, "{\"n\":2}"), "txn_set");
        }
        check(e->lib, e->lib->txn_commit(t, NULL), "txn_commit");
    }
    return (now_ns() - t0) / (double)n;
}

static double w_login(env_t *e, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        mnemo_user *u = NULL;
        check(e->lib, e->lib->login(e->inst, "bench", NULL, &u), "login");
        check(e->lib, e->lib->logout(u), "logout");
    }
    return (now_ns() - t0) / (double)n;
}

static double w_reopen(env_t *e, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        mnemo_backend *b = NULL;
        mnemo_instance *inst = NULL;
        check(e->lib, e->lib->backend_open(e->url, &b), "backend_open (reopen)");
        check(e->lib, e->lib->instance_open(b, &inst), "instance_open (reopen)");
        e->lib->instance_free(inst);
    }
    return (now_ns() - t0) / (double)n;
}

/* A restarted process's first steps: open the backend and instance, log in. */
static double w_reopen_login(env_t *e, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        mnemo_backend *b = NULL;
        mnemo_instance *inst = NULL;
        mnemo_user *u = NULL;
        check(e->lib, e->lib->backend_open(e->url, &b), "backend_open (reopen)");
        check(e->lib, e->lib->instance_open(b, &inst), "instance_open (reopen)");
        check(e->lib, e->lib->login(inst, "bench", NULL, &u), "login (reopen)");
        check(e->lib, e->lib->logout(u), "logout (reopen)");
        e->lib->instance_free(inst);
    }
    return (now_ns() - t0) / (double)n;
}

typedef struct {
    const char *name;
    int sqlite; /* 0: memory backend, 1: a SQLite file */
    workload_fn fn;
    long batch;
} workload_t;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void show(const char *name, double a, double b) {
    const char *unit = "ns";
    double scale = 1;
    if (a >= 1e6) { unit = "ms"; scale = 1e6; }
    else if (a >= 1e3) { unit = "us"; scale = 1e3; }
    printf("%-36s %10.2f %s %10.2f %s %8.2fx\n", name, a / scale, unit, b / scale, unit, b / a);
}

int main(int argc, char **argv) {
    if (argc < 3) die("usage: ab_bench A/libmnemo.so B/libmnemo.so [--rounds N] [--dir DIR] [--quick]");
    int rounds = 15, quick = 0;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else die("unknown option %s", argv[i]);
    }
    if (quick) rounds = 3;
    if (rounds < 1 || rounds > 1000) die("--rounds is 1 to 1000");
    lib_t libs[2];
    load(&libs[0], argv[1]);
    load(&libs[1], argv[2]);

    const workload_t workloads[] = {
        {"memory single-key commit", 0, w_commit, quick ? 200 : 2000},
        {"memory get", 0, w_get, quick ? 2000 : 20000},
        {"memory transaction of 100 sets", 0, w_txn100, quick ? 5 : 50},
        {"memory login, passwordless", 0, w_login, quick ? 50 : 500},
        {"sqlite durable single-key commit", 1, w_commit, quick ? 20 : 200},
        {"sqlite get", 1, w_get, quick ? 2000 : 20000},
        {"sqlite reopen instance", 1, w_reopen, quick ? 5 : 50},
        {"sqlite reopen + login, passwordless", 1, w_reopen_login, quick ? 5 : 50},
    };
    const int nw = (int)(sizeof workloads / sizeof workloads[0]);

    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/mnemo-ab-XXXXXX", dir);
    if (!mkdtemp(tmpl)) die("cannot create a temp dir in %s", dir);
    env_t envs[2][2]; /* [lib][sqlite] */
    for (int l = 0; l < 2; l++) {
        char url[600];
        env_open(&envs[l][0], &libs[l], "memory:");
        snprintf(url, sizeof url, "sqlite:%s/%c.db", tmpl, 'a' + l);
        env_open(&envs[l][1], &libs[l], url);
    }

    printf("A = %s\nB = %s\n%d rounds, each a batch of A then B (order alternating)\n\n", argv[1],
           argv[2], rounds);
    printf("%-36s %13s %13s %9s\n", "workload (median per operation)", "A", "B", "B/A");
    double *times = malloc(sizeof(double) * (size_t)rounds * 2);
    if (!times) die("out of memory");
    for (int w = 0; w < nw; w++) {
        const workload_t *wl = &workloads[w];
        /* One warm-up batch each. */
        for (int l = 0; l < 2; l++) wl->fn(&envs[l][wl->sqlite], wl->batch);
        for (int r = 0; r < rounds; r++) {
            for (int k = 0; k < 2; k++) {
                int l = (r % 2) ? 1 - k : k;
                times[l * rounds + r] = wl->fn(&envs[l][wl->sqlite], wl->batch);
            }
        }
        show(wl->name, median(times, rounds), median(times + rounds, rounds));
        fflush(stdout);
    }
    free(times);
    for (int l = 0; l < 2; l++) {
        env_close(&envs[l][0]);
        env_close(&envs[l][1]);
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    if (system(cmd) != 0) fprintf(stderr, "ab_bench: could not remove %s\n", tmpl);
    return 0;
}
