/* The standard mnemo workload through the C ABI, on the memory backend and on a SQLite file,
 * each figure printed next to its floor (measured in the same run by bench_floors).
 *
 * Build and run through the top-level Makefile: `make bench` (MNEMO_BENCH_QUICK=1 for a
 * short smoke run). By hand:
 *
 *   cargo build --release && cargo build --release --example bench_floors
 *   ln -sf libmnemo.so target/release/libmnemo.so.0
 *   cc -std=c11 -Wall -Wextra -Werror -pedantic -O2 -Iinclude benches/abi_bench.c \
 *      -o target/bench/abi_bench -Ltarget/release -Wl,-rpath,$PWD/target/release -lmnemo -lpthread
 *   target/release/examples/bench_floors /tmp > floors.txt
 *   target/bench/abi_bench --floors floors.txt
 *
 * Options (each also has a default; MNEMO_BENCH_QUICK=1 or --quick shrinks them all):
 *   --floors FILE        floors from bench_floors ("-": stdin); without it, no ratios
 *   --dir DIR            where the SQLite files go (a fresh temp dir inside; default $TMPDIR or /tmp)
 *   --results FILE       also write machine-readable "result <backend> <name> <value>" lines
 *   --commits N          single-key commits on the memory backend (default 100000)
 *   --sqlite-commits N   single-key durable commits on SQLite (default 10000)
 *   --chunks N           chunks each commit run is reported in (default 10)
 *   --txns N             transactions of 100 operations (default 100: they fill the
 *                        10,000-key store that mnemo_db_get_all reads)
 *   --open-entries N     entries in the SQLite file whose open time is measured (default 100000)
 *   --open-fill commits|txns   fill it with single-key durable commits (default) or with
 *                        100-operation transactions (N/100 entries holding N keys; faster)
 *   --scan-keys N        keys of the store paged by mnemo_db_scan and read by a cursor
 *                        (default 100000, written in transactions of 1000 sets)
 *   --inserts N          mnemo_db_insert calls on the memory backend, each followed by a
 *                        mnemo_db_set (default 10000; SQLite makes a tenth of them, durable);
 *                        as many mnemo_db_set_path calls, each followed by a mnemo_db_set
 *   --history-changes N  changes of the key whose mnemo_db_history is timed (default 1000)
 *   --only memory|sqlite run one backend
 *   --quick              the smoke-run sizes
 *
 * Every mnemo status is checked: a failure prints the call and message and exits 1.
 * Each backend runs in a forked child so its peak RSS (ru_maxrss) is its own. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROGRAM "abi_bench"
#include "bench_util.h"
#include "mnemo.h"

/* Threads of the concurrent-commit phase. */
#define CONCURRENT_THREADS 8

/* Prints a row for a timed phase from its samples, and records its median and p99. */
static void row_samples(const char *backend, const char *phase, const char *key, samples *s,
                        double ops_per_sample, const char *note) {
    double med = quantile(s, 0.5), p99 = quantile(s, 0.99);
    row(backend, phase, s->n, med, p99, med > 0 ? ops_per_sample * 1e9 / med : 0, note);
    if (key) {
        char name[128];
        snprintf(name, sizeof name, "%s_median_ns", key);
        result(backend, name, med);
        snprintf(name, sizeof name, "%s_p99_ns", key);
        result(backend, name, p99);
    }
}

/* ------------------------------------------------------------------------ floors ---- */

typedef struct {
    double sign, verify, sign_hash, sha256, argon2, argon2_first, write_fsync, overwrite_fsync;
} floors_t;

static floors_t floors;

static void read_floors(const char *path) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) die("cannot open floors file %s: %s", path, strerror(errno));
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char name[64];
        double v;
        if (sscanf(line, "floor %63s %lf", name, &v) != 2) continue;
        if (strcmp(name, "sign_ns") == 0) floors.sign = v;
        else if (strcmp(name, "verify_ns") == 0) floors.verify = v;
        else if (strcmp(name, "sign_hash_ns") == 0) floors.sign_hash = v;
        else if (strcmp(name, "sha256_284b_ns") == 0) floors.sha256 = v;
        else if (strcmp(name, "argon2_ns") == 0) floors.argon2 = v;
        else if (strcmp(name, "argon2_first_call_ns") == 0) floors.argon2_first = v;
        else if (strcmp(name, "write_fsync_ns") == 0) floors.write_fsync = v;
        else if (strcmp(name, "overwrite_fsync_ns") == 0) floors.overwrite_fsync = v;
    }
    if (f != stdin) fclose(f);
    if (floors.sign_hash <= 0 || floors.argon2 <= 0 || floors.write_fsync <= 0)
        die("floors file %s lacks sign_hash_ns, argon2_ns or write_fsync_ns", path);
}

/* A floor row, if that floor was given. */
static void floor_row(const char *phase, double ns, const char *note) {
    if (ns > 0) row("floor", phase, 0, ns, 0, 1e9 / ns, note);
}

static void print_floors(void) {
    if (floors.sign_hash <= 0) return;
    floor_row("ed25519 sign (220 B)", floors.sign, NULL);
    floor_row("ed25519 verify (220 B)", floors.verify, NULL);
    floor_row("sign + sha256 (single-key commit crypto)", floors.sign_hash, NULL);
    floor_row("argon2id m=19456 KiB t=2 p=1 (default), warm", floors.argon2, NULL);
    floor_row("argon2id, first call in a process", floors.argon2_first,
              "not a floor: fresh memory, page faults");
    /* Seen on a shared 2-core VM: with both cores saturated by other processes, every
     * fsync-bound call takes one scheduler tick (4 ms at HZ=250). */
    floor_row("4 KiB write + fsync (bench dir), appending", floors.write_fsync,
              floors.write_fsync > 2e6
                  ? "over 2 ms: machine busy? SQLite ratios of this run unreliable"
                  : NULL);
    floor_row("4 KiB overwrite + fsync (file not growing)", floors.overwrite_fsync, NULL);
}

/* "1.83x <what>" if the floor is known, else "". */
static const char *ratio(char *buf, size_t size, double value, double floor, const char *what) {
    if (floor <= 0 || value <= 0) snprintf(buf, size, "%s", "");
    else snprintf(buf, size, "%.2fx %s", value / floor, what);
    return buf;
}

/* ------------------------------------------------------------------------ config ---- */

typedef struct {
    bool quick;
    const char *dir;
    size_t mem_commits, sql_commits, chunks, txns, open_entries, samples_slow, samples_fast;
    size_t scan_keys, inserts, history_changes;
    bool open_fill_txns;
    bool run_memory, run_sqlite;
} config_t;

static config_t cfg;
static char workdir[4096];

static void parse_args(int argc, char **argv, const char **floors_path, const char **results_path) {
    const char *q = getenv("MNEMO_BENCH_QUICK");
    cfg.quick = q && *q && strcmp(q, "0") != 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) cfg.quick = true;
    const char *tmp = getenv("TMPDIR");
    cfg.dir = tmp && *tmp ? tmp : "/tmp";
    cfg.mem_commits = cfg.quick ? 10000 : 100000;
    cfg.sql_commits = cfg.quick ? 1000 : 10000;
    cfg.chunks = 10;
    cfg.txns = 100;
    cfg.open_entries = cfg.quick ? 10000 : 100000;
    cfg.open_fill_txns = cfg.quick;
    cfg.samples_slow = cfg.quick ? 3 : 9;  /* Argon2-bound and fsync-bound one-off phases */
    cfg.samples_fast = cfg.quick ? 5 : 21; /* cheap one-off phases */
    cfg.scan_keys = cfg.quick ? 10000 : 100000;
    cfg.inserts = cfg.quick ? 1000 : 10000;
    cfg.history_changes = cfg.quick ? 100 : 1000;
    cfg.run_memory = cfg.run_sqlite = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() \
    do { if (!v) die("%s needs a value", a); i++; } while (0)
        if (strcmp(a, "--quick") == 0) continue;
        else if (strcmp(a, "--floors") == 0) { NEED_VALUE(); *floors_path = v; }
        else if (strcmp(a, "--results") == 0) { NEED_VALUE(); *results_path = v; }
        else if (strcmp(a, "--dir") == 0) { NEED_VALUE(); cfg.dir = v; }
        else if (strcmp(a, "--commits") == 0) { NEED_VALUE(); cfg.mem_commits = parse_count(a, v); }
        else if (strcmp(a, "--sqlite-commits") == 0) { NEED_VALUE(); cfg.sql_commits = parse_count(a, v); }
        else if (strcmp(a, "--chunks") == 0) { NEED_VALUE(); cfg.chunks = parse_count(a, v); }
        else if (strcmp(a, "--txns") == 0) { NEED_VALUE(); cfg.txns = parse_count(a, v); }
        else if (strcmp(a, "--open-entries") == 0) { NEED_VALUE(); cfg.open_entries = parse_count(a, v); }
        else if (strcmp(a, "--scan-keys") == 0) { NEED_VALUE(); cfg.scan_keys = parse_count(a, v); }
        else if (strcmp(a, "--inserts") == 0) { NEED_VALUE(); cfg.inserts = parse_count(a, v); }
        else if (strcmp(a, "--history-changes") == 0) { NEED_VALUE(); cfg.history_changes = parse_count(a, v); }
        else if (strcmp(a, "--open-fill") == 0) {
            NEED_VALUE();
            if (strcmp(v, "commits") == 0) cfg.open_fill_txns = false;
            else if (strcmp(v, "txns") == 0) cfg.open_fill_txns = true;
            else die("--open-fill is 'commits' or 'txns', got '%s'", v);
        } else if (strcmp(a, "--only") == 0) {
            NEED_VALUE();
            cfg.run_memory = strcmp(v, "memory") == 0;
            cfg.run_sqlite = strcmp(v, "sqlite") == 0;
            if (!cfg.run_memory && !cfg.run_sqlite) die("--only is 'memory' or 'sqlite'");
        } else {
            die("unknown argument '%s' (see the comment at the top of benches/abi_bench.c)", a);
        }
#undef NEED_VALUE
    }
    if (cfg.chunks > cfg.mem_commits || cfg.chunks > cfg.sql_commits)
        die("--chunks must not exceed the commit counts");
}

/* ------------------------------------------------------------------------ helpers --- */

static const char *PASSWORD = "correct horse battery staple";

static void path_in_workdir(char *buf, size_t size, const char *name) {
    int n = snprintf(buf, size, "%s/%s", workdir, name);
    if (n < 0 || (size_t)n >= size) die("path too long");
}

static void sqlite_url(char *buf, size_t size, const char *name) {
    char path[4200];
    path_in_workdir(path, sizeof path, name);
    int n = snprintf(buf, size, "sqlite:%s", path);
    if (n < 0 || (size_t)n >= size) die("url too long");
}

/* Removes a SQLite file and its companions. */
static void remove_db_files(const char *name) {
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char path[4300], base[4200];
        path_in_workdir(base, sizeof base, name);
        snprintf(path, sizeof path, "%s%s", base, suffixes[i]);
        if (unlink(path) != 0 && errno != ENOENT) die("unlink %s: %s", path, strerror(errno));
    }
}

/* Bytes of a SQLite file plus its WAL (if any). */
static long long file_bytes(const char *name) {
    char base[4200], wal[4300];
    path_in_workdir(base, sizeof base, name);
    snprintf(wal, sizeof wal, "%s-wal", base);
    struct stat st;
    long long total = 0;
    if (stat(base, &st) != 0) die("stat %s: %s", base, strerror(errno));
    total += (long long)st.st_size;
    if (stat(wal, &st) == 0) total += (long long)st.st_size;
    return total;
}

static mnemo_instance *open_instance(const char *url) {
    mnemo_backend *backend = NULL;
    mnemo_instance *inst = NULL;
    CHECK(mnemo_backend_open(url, &backend));
    CHECK(mnemo_instance_open(backend, &inst)); /* consumes backend */
    return inst;
}

static long peak_rss_kib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) die("getrusage: %s", strerror(errno));
    return ru.ru_maxrss; /* KiB on Linux */
}

/* The value of single-key commit i: with the key and the framing, the entry's signed bytes
 * come to about 220 bytes, as in bench_floors. */
static void commit_value(char *buf, size_t size, size_t i) {
    snprintf(buf, size, "{\"n\":%zu,\"text\":\"the quick brown fox\"}", i);
}

static void commit_key(char *buf, size_t size, size_t i) {
    snprintf(buf, size, "k%07zu", i);
}

/* `count` single-key commits into store "bench", keys k0000000.., reported per chunk.
 * Returns the per-commit samples (all chunks). */
static samples commit_run(const char *backend, const char *label, mnemo_database *db,
                          size_t count, size_t chunks, bool print_chunks) {
    samples all = samples_new(count), chunk = samples_new(count / chunks + 1);
    size_t per_chunk = count / chunks;
    double first_rate = 0, last_rate = 0, min_rate = 0, max_rate = 0;
    char key[32], value[96];
    size_t i = 0;
    for (size_t c = 0; c < chunks; c++) {
        size_t end = c + 1 == chunks ? count : i + per_chunk;
        samples_clear(&chunk);
        uint64_t chunk_start = now_ns();
        for (; i < end; i++) {
            commit_key(key, sizeof key, i);
            commit_value(value, sizeof value, i);
            uint64_t t0 = now_ns();
            CHECK(mnemo_db_set(db, "bench", key, value));
            uint64_t dt = now_ns() - t0;
            samples_push(&chunk, dt);
            samples_push(&all, dt);
        }
        double secs = (double)(now_ns() - chunk_start) / 1e9;
        double rate = (double)chunk.n / secs;
        if (c == 0) first_rate = min_rate = max_rate = rate;
        last_rate = rate;
        if (rate < min_rate) min_rate = rate;
        if (rate > max_rate) max_rate = rate;
        if (print_chunks) {
            char phase[96];
            snprintf(phase, sizeof phase, "%s chunk %zu (commits %zu..%zu)", label, c + 1,
                     i - chunk.n + 1, i);
            double med = quantile(&chunk, 0.5), p99 = quantile(&chunk, 0.99);
            char note[96] = "";
            if (strcmp(backend, "memory") == 0)
                ratio(note, sizeof note, med, floors.sign_hash, "sign+hash");
            else
                ratio(note, sizeof note, med, floors.write_fsync, "write+fsync");
            row(backend, phase, chunk.n, med, p99, rate, note);
            char name[64];
            snprintf(name, sizeof name, "%s_chunk%zu_rate", label, c + 1);
            result(backend, name, rate);
        }
    }
    if (print_chunks) {
        char text[64], note[128];
        snprintf(text, sizeof text, "%.2f", last_rate / first_rate);
        snprintf(note, sizeof note, "last/first chunk rate; min/max %.2f", min_rate / max_rate);
        char phase[64];
        snprintf(phase, sizeof phase, "%s flatness", label);
        row_text(backend, phase, text, note);
    }
    samples_free(&chunk);
    return all;
}

/* ------------------------------------------------------------ concurrent commits --- */

/* One committing thread: `count` durable single-key commits into `db`, keys from `first`. */
typedef struct {
    mnemo_database *db;
    size_t first, count;
} committer;

static void *committer_main(void *arg) {
    committer *c = arg;
    char key[32], value[96];
    for (size_t i = c->first; i < c->first + c->count; i++) {
        commit_key(key, sizeof key, i);
        commit_value(value, sizeof value, i);
        CHECK(mnemo_db_set(c->db, "concurrent", key, value));
    }
    return NULL;
}

/* Runs `threads` threads at once, thread t committing `per_thread` keys into dbs[t % ndbs]
 * (keys from *next_key on, so no run repeats a key); returns the wall-clock nanoseconds. */
static uint64_t concurrent_run(mnemo_database **dbs, size_t ndbs, size_t threads,
                               size_t per_thread, size_t *next_key) {
    pthread_t ids[CONCURRENT_THREADS];
    committer jobs[CONCURRENT_THREADS];
    if (threads > CONCURRENT_THREADS) die("at most %d threads", CONCURRENT_THREADS);
    uint64_t t0 = now_ns();
    for (size_t t = 0; t < threads; t++) {
        jobs[t] = (committer){dbs[t % ndbs], *next_key, per_thread};
        *next_key += per_thread;
        int err = pthread_create(&ids[t], NULL, committer_main, &jobs[t]);
        if (err) die("pthread_create: %s", strerror(err));
    }
    for (size_t t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    return now_ns() - t0;
}

/* Durable commits from CONCURRENT_THREADS threads at once against one thread making as many
 * commits alone, in alternating rounds so noise falls on both: once with a database per
 * thread, once with every thread on one database (each commit's parent is the commit
 * before it, which may still be waiting in the shared transaction). The aggregate rate is
 * what group commit raises. */
static void concurrent_commits(const char *backend, mnemo_user *user) {
    enum { ROUNDS = 3 };
    size_t per_thread = cfg.quick ? 25 : 250, total = per_thread * CONCURRENT_THREADS;
    mnemo_database *dbs[CONCURRENT_THREADS];
    char name[64], phase[96], note[128];
    for (size_t t = 0; t < CONCURRENT_THREADS; t++) {
        snprintf(name, sizeof name, "concurrent%zu", t);
        CHECK(mnemo_user_create_db(user, name, &dbs[t]));
    }
    size_t next_key = 0;
    for (size_t ndbs = CONCURRENT_THREADS; ndbs >= 1; ndbs = ndbs == 1 ? 0 : 1) {
        uint64_t alone = 0, together = 0;
        for (size_t r = 0; r < ROUNDS; r++) {
            alone += concurrent_run(dbs, 1, 1, total, &next_key);
            together += concurrent_run(dbs, ndbs, CONCURRENT_THREADS, per_thread, &next_key);
        }
        double commits = (double)(total * ROUNDS);
        double rate = commits / ((double)together / 1e9), one = commits / ((double)alone / 1e9);
        snprintf(phase, sizeof phase, "%d threads, %s: durable commits", CONCURRENT_THREADS,
                 ndbs == 1 ? "one database" : "a database each");
        snprintf(note, sizeof note, "aggregate rate %.2fx one thread's (%.0f/s), alternating",
                 rate / one, one);
        row(backend, phase, total * ROUNDS, (double)together / commits, 0, rate, note);
        result(backend, ndbs == 1 ? "concurrent_one_db_vs_one" : "concurrent_dbs_vs_one",
               rate / one);
    }
    for (size_t t = 0; t < CONCURRENT_THREADS; t++) mnemo_db_free(dbs[t]);
}

/* Reads every key k0..k(count-1) back; checks a few values. */
static void read_back(const char *backend, mnemo_database *db, size_t count, const char *label,
                      const char *key_prefix) {
    samples s = samples_new(count);
    char key[32], want[96];
    uint64_t start = now_ns();
    for (size_t i = 0; i < count; i++) {
        char *out = NULL;
        commit_key(key, sizeof key, i);
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_get(db, "bench", key, &out));
        samples_push(&s, now_ns() - t0);
        if (i % 997 == 0) {
            commit_value(want, sizeof want, i);
            if (strcmp(out, want) != 0) die("read %s: got %s, want %s", key, out, want);
        }
        mnemo_string_free(out);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    double med = quantile(&s, 0.5), p99 = quantile(&s, 0.99);
    char phase[96], name[64];
    snprintf(phase, sizeof phase, "%s (%zu keys)", label, count);
    row(backend, phase, s.n, med, p99, (double)count / secs, NULL);
    snprintf(name, sizeof name, "%s_median_ns", key_prefix);
    result(backend, name, med);
    snprintf(name, sizeof name, "%s_p99_ns", key_prefix);
    result(backend, name, p99);
    samples_free(&s);
}

/* cfg.txns transactions of 100 sets each into store "ga" (keys g0000000..), then
 * mnemo_db_get_all on it. */
static void transactions_and_get_all(const char *backend, mnemo_database *db) {
    const size_t ops = 100;
    samples s = samples_new(cfg.txns);
    char key[32], value[32];
    uint64_t start = now_ns();
    for (size_t t = 0; t < cfg.txns; t++) {
        mnemo_txn *txn = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_begin(db, &txn));
        for (size_t o = 0; o < ops; o++) {
            snprintf(key, sizeof key, "g%07zu", t * ops + o);
            snprintf(value, sizeof value, "%zu", t * ops + o);
            CHECK(mnemo_txn_set(txn, "ga", key, value));
        }
        CHECK(mnemo_txn_commit(txn, NULL)); /* frees txn */
        samples_push(&s, now_ns() - t0);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    double med = quantile(&s, 0.5), p99 = quantile(&s, 0.99);
    char phase[64], note[96];
    snprintf(phase, sizeof phase, "transaction of %zu sets (per txn; rate=ops)", ops);
    snprintf(note, sizeof note, "%.0f ops/s overall", (double)(cfg.txns * ops) / secs);
    row(backend, phase, s.n, med, p99, (double)ops * 1e9 / med, note);
    result(backend, "txn100_median_ns", med);
    result(backend, "txn100_p99_ns", p99);
    samples_free(&s);

    size_t keys = cfg.txns * ops;
    samples g = samples_new(16);
    size_t runs = cfg.samples_fast;
    for (size_t r = 0; r < runs; r++) {
        char *out = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_get_all(db, "ga", &out));
        samples_push(&g, now_ns() - t0);
        if (r == 0) {
            size_t found = 0;
            for (const char *p = out; (p = strstr(p, "\"g")) != NULL; p += 2) found++;
            if (found != keys) die("get_all returned %zu keys, expected %zu", found, keys);
        }
        mnemo_string_free(out);
    }
    snprintf(phase, sizeof phase, "get_all on a %zu-key store", keys);
    med = quantile(&g, 0.5);
    snprintf(note, sizeof note, "%.0f ns per key", med / (double)keys);
    row(backend, phase, g.n, med, quantile(&g, 0.99), 0, note);
    result(backend, "get_all_median_ns", med);
    samples_free(&g);
}

/* The ordered reads and generated keys, each next to a plain get or set timed alternately
 * with it (same state, same moment): cfg.scan_keys keys in store "scan" (s0000000..,
 * written in transactions of 1000 sets), paged through by mnemo_db_scan 100 at a time, each
 * page followed by a mnemo_db_get of one key of the store, and read by a cursor; then
 * mnemo_db_insert into store "ins", each followed by a mnemo_db_set of a new key. */
static void scans_and_inserts(const char *backend, mnemo_database *db, bool sqlite) {
    const size_t page = 100, per_txn = 1000;
    size_t keys = cfg.scan_keys;
    char key[32], value[96], phase[96], note[160];
    for (size_t done = 0; done < keys;) {
        mnemo_txn *txn = NULL;
        CHECK(mnemo_db_begin(db, &txn));
        for (size_t o = 0; o < per_txn && done < keys; o++, done++) {
            snprintf(key, sizeof key, "s%07zu", done);
            commit_value(value, sizeof value, done);
            CHECK(mnemo_txn_set(txn, "scan", key, value));
        }
        CHECK(mnemo_txn_commit(txn, NULL));
    }

    /* Every page of the store, each timed; the pages' keys are checked to follow on. */
    samples pages = samples_new(keys / page + 2), gets = samples_new(keys / page + 2);
    char after[32] = "";
    size_t seen = 0;
    for (;;) {
        char *out = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_scan(db, "scan", NULL, after[0] ? after : NULL, page, &out));
        uint64_t dt = now_ns() - t0;
        size_t found = 0;
        const char *last = NULL;
        for (const char *p = out; (p = strstr(p, "[\"s")) != NULL; p += 3, found++) last = p + 2;
        if (found == 0) {
            mnemo_string_free(out);
            break;
        }
        samples_push(&pages, dt);
        snprintf(key, sizeof key, "s%07zu", seen);
        if (strncmp(out + 3, key, 8) != 0) die("scan page starts at %.8s, want %s", out + 3, key);
        memcpy(after, last, 8);
        after[8] = '\0';
        seen += found;
        mnemo_string_free(out);
        snprintf(key, sizeof key, "s%07zu", (seen * 7919) % keys);
        t0 = now_ns();
        CHECK(mnemo_db_get(db, "scan", key, &out));
        samples_push(&gets, now_ns() - t0);
        mnemo_string_free(out);
    }
    if (seen != keys) die("the scan pages held %zu keys, want %zu", seen, keys);
    double get_ns = quantile(&gets, 0.5);
    snprintf(phase, sizeof phase, "get, alternating with the scan pages");
    row_samples(backend, phase, "scan_get", &gets, 1, NULL);
    double med = quantile(&pages, 0.5);
    snprintf(phase, sizeof phase, "scan page of %zu, %zu-key store (per page)", page, keys);
    snprintf(note, sizeof note, "%.0f ns/key; page %.1fx get, per key %.2fx get", med / (double)page,
             med / get_ns, med / (double)page / get_ns);
    row_samples(backend, phase, "scan_page100", &pages, 1, note);
    result(backend, "scan_per_key_ns", med / (double)page);
    samples_free(&pages);
    samples_free(&gets);

    /* A cursor over the whole store, each mnemo_cursor_next timed (every 256th reads a page). */
    samples steps = samples_new(keys + 1);
    mnemo_cursor *cursor = NULL;
    CHECK(mnemo_db_cursor(db, "scan", NULL, NULL, &cursor));
    seen = 0;
    for (;;) {
        char *k = NULL, *v = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_cursor_next(cursor, &k, &v));
        uint64_t dt = now_ns() - t0;
        if (!k) break;
        samples_push(&steps, dt);
        if (seen % 9973 == 0) {
            snprintf(key, sizeof key, "s%07zu", seen);
            if (strcmp(k, key) != 0) die("cursor gave %s, want %s", k, key);
        }
        seen++;
        mnemo_string_free(k);
        mnemo_string_free(v);
    }
    mnemo_cursor_free(cursor);
    if (seen != keys) die("the cursor gave %zu keys, want %zu", seen, keys);
    double mean = 0;
    for (size_t i = 0; i < steps.n; i++) mean += (double)steps.v[i];
    mean /= (double)steps.n;
    med = quantile(&steps, 0.5);
    snprintf(phase, sizeof phase, "cursor over the %zu-key store (per key)", keys);
    snprintf(note, sizeof note, "mean %.0f ns incl. page reads; %.2fx get", mean, mean / get_ns);
    row_samples(backend, phase, "cursor_next", &steps, 1, note);
    samples_free(&steps);

    /* Inserts: each one signed commit, like a set. */
    size_t inserts = sqlite ? cfg.inserts / 10 : cfg.inserts;
    if (inserts == 0) inserts = 1;
    samples ins = samples_new(inserts), sets = samples_new(inserts);
    char previous[40] = "";
    for (size_t i = 0; i < inserts; i++) {
        char *out = NULL;
        commit_value(value, sizeof value, i);
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_insert(db, "ins", value, &out));
        samples_push(&ins, now_ns() - t0);
        if (strcmp(out, previous) <= 0) die("insert key %s does not follow %s", out, previous);
        snprintf(previous, sizeof previous, "%s", out);
        mnemo_string_free(out);
        snprintf(key, sizeof key, "p%07zu", i);
        t0 = now_ns();
        CHECK(mnemo_db_set(db, "ins", key, value));
        samples_push(&sets, now_ns() - t0);
    }
    double set_ns = quantile(&sets, 0.5);
    row_samples(backend, "single-key set, alternating with the inserts", "insert_set", &sets, 1, NULL);
    med = quantile(&ins, 0.5);
    snprintf(phase, sizeof phase, "insert (generated key), per op");
    snprintf(note, sizeof note, "%.2fx single-key set", med / set_ns);
    row_samples(backend, phase, "insert", &ins, 1, note);
    samples_free(&ins);
    samples_free(&sets);
}

/* Nested documents and history, each next to the plain operation timed alternately with it:
 * mnemo_db_set_path on fields of one document (50 fields, in store "doc") against a
 * mnemo_db_set of a new key; mnemo_db_get_path of one field against a mnemo_db_get of the
 * whole document; and mnemo_db_history of a key changed cfg.history_changes times, whole and
 * newest 10, against a get. */
static void paths_and_history(const char *backend, mnemo_database *db, bool sqlite) {
    char key[32], pointer[32], value[96], phase[96], note[160];
    size_t writes = sqlite ? cfg.inserts / 10 : cfg.inserts;
    if (writes == 0) writes = 1;
    samples paths = samples_new(writes), sets = samples_new(writes);
    for (size_t i = 0; i < writes; i++) {
        commit_value(value, sizeof value, i);
        snprintf(pointer, sizeof pointer, "/f%zu", i % 50);
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_set_path(db, "doc", "d1", pointer, value));
        samples_push(&paths, now_ns() - t0);
        snprintf(key, sizeof key, "q%07zu", i);
        t0 = now_ns();
        CHECK(mnemo_db_set(db, "doc", key, value));
        samples_push(&sets, now_ns() - t0);
    }
    double set_ns = quantile(&sets, 0.5);
    row_samples(backend, "single-key set, alternating with set_path", "path_set", &sets, 1, NULL);
    double med = quantile(&paths, 0.5);
    snprintf(note, sizeof note, "%.2fx single-key set", med / set_ns);
    row_samples(backend, "set_path, one field of a 50-field document", "set_path", &paths, 1, note);
    samples_free(&paths);
    samples_free(&sets);

    size_t reads = cfg.samples_fast * 10;
    samples parts = samples_new(reads), wholes = samples_new(reads);
    for (size_t i = 0; i < reads; i++) {
        char *out = NULL;
        snprintf(pointer, sizeof pointer, "/f%zu", i % 50);
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_get_path(db, "doc", "d1", pointer, &out));
        samples_push(&parts, now_ns() - t0);
        mnemo_string_free(out);
        t0 = now_ns();
        CHECK(mnemo_db_get(db, "doc", "d1", &out));
        samples_push(&wholes, now_ns() - t0);
        mnemo_string_free(out);
    }
    double get_ns = quantile(&wholes, 0.5);
    row_samples(backend, "get of the 50-field document, alternating", "doc_get", &wholes, 1, NULL);
    med = quantile(&parts, 0.5);
    snprintf(note, sizeof note, "%.2fx get of the whole document", med / get_ns);
    row_samples(backend, "get_path, one field of it", "get_path", &parts, 1, note);
    samples_free(&parts);
    samples_free(&wholes);

    size_t changes = cfg.history_changes;
    for (size_t i = 0; i < changes; i++) {
        commit_value(value, sizeof value, i);
        CHECK(mnemo_db_set(db, "hist", "h", value));
    }
    size_t rounds = cfg.samples_slow;
    samples all = samples_new(rounds), newest = samples_new(rounds), gets = samples_new(rounds);
    for (size_t i = 0; i < rounds; i++) {
        char *out = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_db_history(db, "hist", "h", 0, &out));
        samples_push(&all, now_ns() - t0);
        size_t listed = 0;
        for (const char *p = out; (p = strstr(p, "\"entry\"")) != NULL; p++) listed++;
        if (listed != changes) die("history listed %zu changes, want %zu", listed, changes);
        mnemo_string_free(out);
        t0 = now_ns();
        CHECK(mnemo_db_history(db, "hist", "h", 10, &out));
        samples_push(&newest, now_ns() - t0);
        mnemo_string_free(out);
        t0 = now_ns();
        CHECK(mnemo_db_get(db, "hist", "h", &out));
        samples_push(&gets, now_ns() - t0);
        mnemo_string_free(out);
    }
    get_ns = quantile(&gets, 0.5);
    row_samples(backend, "get, alternating with history", "history_get", &gets, 1, NULL);
    med = quantile(&all, 0.5);
    snprintf(phase, sizeof phase, "history of a key with %zu changes, all", changes);
    snprintf(note, sizeof note, "%.0f ns per change; %.0fx get", med / (double)changes, med / get_ns);
    row_samples(backend, phase, "history_all", &all, 1, note);
    med = quantile(&newest, 0.5);
    snprintf(note, sizeof note, "%.0fx get", med / get_ns);
    row_samples(backend, "history, newest 10 of them", "history_10", &newest, 1, note);
    samples_free(&all);
    samples_free(&newest);
    samples_free(&gets);
}

/* ------------------------------------------------------------------------ phases ---- */

static void bench_backend(const char *backend, bool sqlite) {
    char url[4300], name[64], note[128];
    size_t slow = cfg.samples_slow, fast = cfg.samples_fast;

    /* Instance create: open of a new backend, which creates the device identity. */
    samples s = samples_new(32);
    for (size_t i = 0; i < fast; i++) {
        if (sqlite) {
            snprintf(name, sizeof name, "create-%zu.db", i);
            sqlite_url(url, sizeof url, name);
        } else {
            snprintf(url, sizeof url, "memory:");
        }
        uint64_t t0 = now_ns();
        mnemo_instance *inst = open_instance(url);
        samples_push(&s, now_ns() - t0);
        mnemo_instance_free(inst);
        if (sqlite) remove_db_files(name);
    }
    row_samples(backend, "instance create (open a new backend)", "instance_create", &s, 1, NULL);

    if (sqlite) sqlite_url(url, sizeof url, "main.db");
    else snprintf(url, sizeof url, "memory:");
    mnemo_instance *inst = open_instance(url);

    /* Users: the first one created becomes the admin (not timed). */
    CHECK(mnemo_instance_create_user(inst, "admin", NULL));
    samples_clear(&s);
    for (size_t i = 0; i < slow; i++) {
        snprintf(name, sizeof name, "free%zu", i);
        uint64_t t0 = now_ns();
        CHECK(mnemo_instance_create_user(inst, name, NULL));
        samples_push(&s, now_ns() - t0);
    }
    row_samples(backend, "create passwordless user", "create_user_nopw", &s, 1, NULL);
    samples_clear(&s);
    for (size_t i = 0; i < slow; i++) {
        snprintf(name, sizeof name, "pw%zu", i);
        uint64_t t0 = now_ns();
        CHECK(mnemo_instance_create_user(inst, name, PASSWORD));
        samples_push(&s, now_ns() - t0);
    }
    row_samples(backend, "create password user", "create_user_pw", &s, 1,
                ratio(note, sizeof note, quantile(&s, 0.5), floors.argon2, "argon2id"));

    /* Logins. */
    samples_clear(&s);
    for (size_t i = 0; i < slow; i++) {
        mnemo_user *u = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_instance_login(inst, "free0", NULL, &u));
        samples_push(&s, now_ns() - t0);
        CHECK(mnemo_user_logout(u));
    }
    row_samples(backend, "login passwordless", "login_nopw", &s, 1, NULL);

    samples_clear(&s);
    for (size_t i = 0; i < slow; i++) {
        mnemo_user *u = NULL;
        uint64_t t0 = now_ns();
        CHECK(mnemo_instance_login(inst, "pw0", PASSWORD, &u));
        samples_push(&s, now_ns() - t0);
        CHECK(mnemo_user_logout(u));
    }
    double right = quantile(&s, 0.5);
    row_samples(backend, "login right password", "login_pw", &s, 1,
                ratio(note, sizeof note, right, floors.argon2, "argon2id"));

    samples_clear(&s);
    for (size_t i = 0; i < slow; i++) {
        mnemo_user *u = NULL;
        uint64_t t0 = now_ns();
        EXPECT(mnemo_instance_login(inst, "pw0", "wrong password", &u), MNEMO_STATUS_AUTH_FAILED);
        samples_push(&s, now_ns() - t0);
    }
    double wrong = quantile(&s, 0.5);
    snprintf(note, sizeof note, "%.2fx right-password login; %.2fx argon2id", wrong / right,
             floors.argon2 > 0 ? wrong / floors.argon2 : 0.0);
    row_samples(backend, "login wrong password", "login_wrong", &s, 1, note);

    samples_clear(&s);
    for (size_t i = 0; i < slow; i++) {
        mnemo_user *u = NULL;
        snprintf(name, sizeof name, "nobody%zu", i);
        uint64_t t0 = now_ns();
        EXPECT(mnemo_instance_login(inst, name, PASSWORD, &u), MNEMO_STATUS_AUTH_FAILED);
        samples_push(&s, now_ns() - t0);
    }
    double unknown = quantile(&s, 0.5);
    snprintf(note, sizeof note, "%.2fx right-password login; %.2fx argon2id", unknown / right,
             floors.argon2 > 0 ? unknown / floors.argon2 : 0.0);
    row_samples(backend, "login unknown user", "login_unknown", &s, 1, note);

    /* The workload runs as the password user. */
    mnemo_user *user = NULL;
    CHECK(mnemo_instance_login(inst, "pw0", PASSWORD, &user));

    samples_clear(&s);
    mnemo_database *db = NULL;
    for (size_t i = 0; i < fast; i++) {
        mnemo_database *d = NULL;
        snprintf(name, sizeof name, "db%zu", i);
        uint64_t t0 = now_ns();
        CHECK(mnemo_user_create_db(user, name, &d));
        samples_push(&s, now_ns() - t0);
        if (i + 1 == fast) db = d;
        else mnemo_db_free(d);
    }
    row_samples(backend, "database create", "db_create", &s, 1, NULL);
    samples_free(&s);

    /* Single-key commits, reported per chunk. */
    size_t commits = sqlite ? cfg.sql_commits : cfg.mem_commits;
    samples all = commit_run(backend, "commit", db, commits, cfg.chunks, true);
    double med = quantile(&all, 0.5);
    if (sqlite) {
        /* Against plain SQLite: bench_durable's row, measured alternating. */
        double rate = 1e9 / med, fsync_rate = floors.write_fsync > 0 ? 1e9 / floors.write_fsync : 0;
        if (fsync_rate > 0)
            snprintf(note, sizeof note, "rate %.2fx write+fsync rate (%.2fx its time)",
                     rate / fsync_rate, med / floors.write_fsync);
        else
            note[0] = '\0';
    } else {
        ratio(note, sizeof note, med, floors.sign_hash, "sign+hash");
    }
    snprintf(name, sizeof name, "single-key commit, all %zu", commits);
    row_samples(backend, name, "commit", &all, 1, note);
    samples_free(&all);

    read_back(backend, db, commits, "read every key back", "get");
    transactions_and_get_all(backend, db);
    scans_and_inserts(backend, db, sqlite);
    paths_and_history(backend, db, sqlite);
    if (sqlite) concurrent_commits(backend, user);

    mnemo_db_free(db);
    CHECK(mnemo_user_logout(user));
    mnemo_instance_free(inst);
    if (sqlite) {
        char text[64];
        long long bytes = file_bytes("main.db");
        snprintf(text, sizeof text, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
        snprintf(note, sizeof note, "%zu commits + %zu keys in txns + %zu scanned, users, dbs",
                 commits, cfg.txns * 100, cfg.scan_keys);
        row_text(backend, "file size after this workload", text, note);
        result(backend, "main_file_bytes", (double)bytes);
        remove_db_files("main.db");
    }
}

/* Open time of an instance over an empty file and over one holding cfg.open_entries entries
 * (or keys, with --open-fill txns), reopened after closing; and the file size. */
static void bench_open(void) {
    const char *backend = "sqlite";
    char url[4300], text[64], note[160], phase[96];
    size_t runs = cfg.samples_fast;

    /* Empty: the instance exists (device identity), nothing else. */
    char empty_url[4300];
    sqlite_url(empty_url, sizeof empty_url, "empty.db");
    mnemo_instance_free(open_instance(empty_url));
    long long empty_bytes = file_bytes("empty.db");

    /* Full. */
    sqlite_url(url, sizeof url, "full.db");
    mnemo_instance *inst = open_instance(url);
    CHECK(mnemo_instance_create_user(inst, "filler", NULL));
    mnemo_user *user = NULL;
    mnemo_database *db = NULL;
    CHECK(mnemo_instance_login(inst, "filler", NULL, &user));
    CHECK(mnemo_user_create_db(user, "full", &db));
    size_t n = cfg.open_entries, entries, keys;
    uint64_t t0 = now_ns();
    if (cfg.open_fill_txns) {
        char key[32], value[96];
        size_t done = 0;
        while (done < n) {
            mnemo_txn *txn = NULL;
            CHECK(mnemo_db_begin(db, &txn));
            for (size_t o = 0; o < 100 && done < n; o++, done++) {
                commit_key(key, sizeof key, done);
                commit_value(value, sizeof value, done);
                CHECK(mnemo_txn_set(txn, "bench", key, value));
            }
            CHECK(mnemo_txn_commit(txn, NULL));
        }
        entries = (n + 99) / 100;
        keys = n;
    } else {
        /* Durable single-key commits, reported per chunk: the flatness of a long SQLite run. */
        printf("%-7s (filling full.db: %zu durable single-key commits)\n", backend, n);
        samples all = commit_run("sqlite", "fill", db, n, cfg.chunks, true);
        snprintf(phase, sizeof phase, "fill: single-key commit, all %zu", n);
        double med = quantile(&all, 0.5);
        snprintf(note, sizeof note, "rate %.2fx write+fsync rate",
                 floors.write_fsync > 0 ? floors.write_fsync / med : 0.0);
        row_samples(backend, phase, "fill_commit", &all, 1, floors.write_fsync > 0 ? note : NULL);
        samples_free(&all);
        entries = keys = n;
    }
    double fill_s = (double)(now_ns() - t0) / 1e9;
    mnemo_db_free(db);
    CHECK(mnemo_user_logout(user));
    mnemo_instance_free(inst);

    /* Reopens of the empty and the full file, interleaved (alternating which goes first) so
     * that noise from other processes falls on both alike. */
    samples s = samples_new(32), e = samples_new(32);
    for (size_t i = 0; i < runs; i++) {
        for (int k = 0; k < 2; k++) {
            bool full_now = (k == 0) == (i % 2 == 0);
            uint64_t a = now_ns();
            inst = open_instance(full_now ? url : empty_url);
            samples_push(full_now ? &s : &e, now_ns() - a);
            mnemo_instance_free(inst);
        }
    }
    double empty = quantile(&e, 0.5);
    row_samples(backend, "reopen instance, empty file", "open_empty", &e, 1, NULL);
    samples_free(&e);
    remove_db_files("empty.db");
    snprintf(phase, sizeof phase, "reopen instance, %zu entries/%zu keys", entries, keys);
    double full = quantile(&s, 0.5);
    snprintf(note, sizeof note, "%.2fx empty file (filled in %.1f s by %s)", full / empty,
             fill_s, cfg.open_fill_txns ? "100-op txns" : "single-key commits");
    row_samples(backend, phase, "open_full", &s, 1, note);

    /* First read after a reopen: login, find the database, read one key. */
    samples_clear(&s);
    for (size_t i = 0; i < runs; i++) {
        char *out = NULL;
        uint64_t a = now_ns();
        inst = open_instance(url);
        CHECK(mnemo_instance_login(inst, "filler", NULL, &user));
        CHECK(mnemo_user_find_db(user, "full", &db));
        CHECK(mnemo_db_get(db, "bench", "k0000042", &out));
        samples_push(&s, now_ns() - a);
        mnemo_string_free(out);
        mnemo_db_free(db);
        CHECK(mnemo_user_logout(user));
        mnemo_instance_free(inst);
    }
    row_samples(backend, "reopen + login + find_db + first get (full)", "open_first_read", &s, 1,
                NULL);
    samples_free(&s);

    /* Every key of the full file, after a reopen. */
    inst = open_instance(url);
    CHECK(mnemo_instance_login(inst, "filler", NULL, &user));
    CHECK(mnemo_user_find_db(user, "full", &db));
    read_back(backend, db, keys, "after reopen, read every key", "get_full");
    mnemo_db_free(db);
    CHECK(mnemo_user_logout(user));
    mnemo_instance_free(inst);

    long long bytes = file_bytes("full.db");
    double per10k = (double)(bytes - empty_bytes) * 10000.0 / (double)entries;
    snprintf(text, sizeof text, "%.2f MiB", per10k / (1024.0 * 1024.0));
    snprintf(note, sizeof note, "%.0f B/entry; file %.1f MiB for %zu entries (%zu keys); empty %lld B",
             (double)(bytes - empty_bytes) / (double)entries, (double)bytes / (1024.0 * 1024.0),
             entries, keys, empty_bytes);
    row_text(backend,
             entries == keys ? "file size per 10,000 entries" : "file size per 10,000 entries of 100 ops",
             text, note);
    if (entries != keys) {
        snprintf(text, sizeof text, "%.2f MiB", (double)(bytes - empty_bytes) * 10000.0 /
                                                    (double)keys / (1024.0 * 1024.0));
        row_text(backend, "file size per 10,000 keys", text, "(keys written in 100-op txns)");
    }
    result(backend, "full_file_bytes", (double)bytes);
    result(backend, "bytes_per_10k_entries", per10k);
    remove_db_files("full.db");
}

/* Runs `fn` in a child process so its peak RSS is its own; exits on the child's failure. */
static void in_child(const char *backend, void (*fn)(void)) {
    fflush(stdout);
    if (results) fflush(results);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        fn();
        char text[32];
        long kib = peak_rss_kib();
        snprintf(text, sizeof text, "%.1f MiB", (double)kib / 1024.0);
        row_text(backend, "peak RSS (ru_maxrss, this backend's process)", text, NULL);
        result(backend, "peak_rss_kib", (double)kib);
        fflush(stdout);
        if (results) fflush(results);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the %s benchmark failed", backend);
}

static void run_memory(void) { bench_backend("memory", false); }
static void run_sqlite(void) {
    bench_backend("sqlite", true);
    bench_open();
}

int main(int argc, char **argv) {
    const char *floors_path = NULL, *results_path = NULL;
    parse_args(argc, argv, &floors_path, &results_path);
    if (floors_path) read_floors(floors_path);
    if (results_path) {
        results = fopen(results_path, "w");
        if (!results) die("cannot write %s: %s", results_path, strerror(errno));
    }
    if (mnemo_version_number() != MNEMO_VERSION_NUMBER)
        die("library %s does not match header %s", mnemo_version(), MNEMO_VERSION_STRING);

    int n = snprintf(workdir, sizeof workdir, "%s/mnemo-bench-XXXXXX", cfg.dir);
    if (n < 0 || (size_t)n >= sizeof workdir) die("--dir too long");
    if (!mkdtemp(workdir)) die("mkdtemp %s: %s", workdir, strerror(errno));

    printf("mnemo %s abi_bench%s: memory %zu commits, sqlite %zu commits, %zu chunks each; "
           "open test %zu %s; SQLite files in %s\n",
           mnemo_version(), cfg.quick ? " (quick)" : "", cfg.mem_commits, cfg.sql_commits,
           cfg.chunks, cfg.open_entries, cfg.open_fill_txns ? "keys in 100-op txns" : "single-key commits",
           workdir);
    header();
    print_floors();
    if (cfg.run_memory) in_child("memory", run_memory);
    if (cfg.run_sqlite) in_child("sqlite", run_sqlite);
    if (rmdir(workdir) != 0) die("rmdir %s: %s", workdir, strerror(errno));
    if (results) fclose(results);
    return 0;
}
