/* Hearing about changes through the C ABI: watchers (mnemo_db_watch, a bounded queue with a
 * pollable descriptor), subscriptions freed without waiting for their callbacks, and
 * mnemo_db_flush_notifications. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, poll, pthreads under -std=c11 */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "sides.h"

#define CAPACITY 1024 /* the documented queue capacity of mnemo_db_watch */

typedef struct fixture {
    mnemo_instance *instance;
    mnemo_user *user;
    mnemo_database *db;
    char *db_id;
} fixture;

static fixture open_fixture(void) {
    fixture f = {NULL, NULL, NULL, NULL};
    mnemo_backend *backend = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &f.instance));
    EXPECT_OK(mnemo_instance_create_user(f.instance, "erin", NULL));
    EXPECT_OK(mnemo_instance_login(f.instance, "erin", NULL, &f.user));
    EXPECT_OK(mnemo_user_create_db(f.user, "events", &f.db));
    EXPECT_OK(mnemo_db_id(f.db, &f.db_id));
    return f;
}

static void close_fixture(fixture *f) {
    mnemo_string_free(f->db_id);
    mnemo_db_free(f->db);
    EXPECT_OK(mnemo_user_logout(f->user));
    mnemo_instance_free(f->instance);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

/* One commit; returns its entry id (owned). */
static char *commit(mnemo_database *db, const char *value) {
    mnemo_txn *txn = NULL;
    char *entry = NULL;
    EXPECT_OK(mnemo_db_begin(db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "s", "k", value));
    EXPECT_OK(mnemo_txn_commit(txn, &entry));
    return entry;
}

/* Takes the next event (waiting up to timeout_ms) and checks it is the change `entry`,
 * from `origin` ("local" or "sync"). */
static void expect_change(mnemo_events *events, uint32_t timeout_ms, const char *db_id,
                          const char *entry, const char *origin) {
    char want[320];
    char *json = NULL;
    int local = strcmp(origin, "local") == 0;
    snprintf(want, sizeof want, "{\"db\":\"%s\",\"entry\":\"%s\",\"origin\":\"%s\",\"remote\":%s}",
             db_id, entry, origin, local ? "false" : "true");
    EXPECT_OK(mnemo_events_next(events, timeout_ms, &json));
    EXPECT_STR(json, want);
}

/* Whether the descriptor is readable within timeout_ms. */
static int readable(int fd, int timeout_ms) {
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    int n = poll(&p, 1, timeout_ms);
    return n == 1 && (p.revents & POLLIN) != 0;
}

static void test_watch_next_and_timeout(void) {
    fixture f = open_fixture();
    mnemo_events *events = NULL;
    char *json = (char *)"sentinel";
    char *before = commit(f.db, "0"); /* before the watch: never seen */
    EXPECT_OK(mnemo_db_watch(f.db, &events));
    CHECK(events != NULL);

    /* Nothing pending: timeout 0 polls, a timeout waits about that long; OK with NULL. */
    EXPECT_OK(mnemo_events_next(events, 0, &json));
    CHECK(json == NULL);
    double start = now_ms();
    json = (char *)"sentinel";
    EXPECT_OK(mnemo_events_next(events, 100, &json));
    double waited = now_ms() - start;
    CHECK(json == NULL);
    CHECK(waited >= 95.0 && waited < 5000.0);

    char *a = commit(f.db, "1");
    char *b = commit(f.db, "2");
    CHECK(strcmp(a, before) != 0);
    expect_change(events, 0, f.db_id, a, "local");
    expect_change(events, 0, f.db_id, b, "local");
    EXPECT_OK(mnemo_events_next(events, 0, &json));
    CHECK(json == NULL);

    mnemo_string_free(before);
    mnemo_string_free(a);
    mnemo_string_free(b);
    mnemo_events_free(events);
    mnemo_events_free(NULL);
    close_fixture(&f);
}

typedef struct delayed_commit {
    mnemo_database *db;
    char *entry;
} delayed_commit;

static void *commit_later(void *arg) {
    delayed_commit *d = (delayed_commit *)arg;
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    d->entry = commit(d->db, "\"later\"");
    return NULL;
}

static void test_descriptor(void) {
    fixture f = open_fixture();
    mnemo_events *events = NULL;
    int fd = -1;
    EXPECT_OK(mnemo_db_watch(f.db, &events));
    EXPECT_OK(mnemo_events_fd(events, &fd));
    CHECK(fd >= 0);
    int again = -1;
    EXPECT_OK(mnemo_events_fd(events, &again));
    CHECK(again == fd); /* one descriptor per watcher, valid until mnemo_events_free */

    /* Not readable before a commit; readable after; not again once the queue is empty. */
    CHECK(!readable(fd, 0));
    char *a = commit(f.db, "1");
    CHECK(readable(fd, 0));
    char *b = commit(f.db, "2");
    expect_change(events, 0, f.db_id, a, "local");
    CHECK(readable(fd, 0)); /* one still pending */
    expect_change(events, 0, f.db_id, b, "local");
    CHECK(!readable(fd, 0));

    /* poll wakes when a commit arrives from another thread. */
    delayed_commit d = {f.db, NULL};
    pthread_t writer;
    CHECK(pthread_create(&writer, NULL, commit_later, &d) == 0);
    CHECK(readable(fd, 10000));
    pthread_join(writer, NULL);
    expect_change(events, 0, f.db_id, d.entry, "local");
    CHECK(!readable(fd, 0));

    /* A blocking next wakes the same way. */
    mnemo_string_free(d.entry);
    d.entry = NULL;
    CHECK(pthread_create(&writer, NULL, commit_later, &d) == 0);
    char *json = NULL;
    EXPECT_OK(mnemo_events_next(events, 10000, &json));
    pthread_join(writer, NULL);
    CHECK(json != NULL && d.entry != NULL && strstr(json, d.entry) != NULL);
    mnemo_string_free(json);

    mnemo_string_free(a);
    mnemo_string_free(b);
    mnemo_string_free(d.entry);
    mnemo_events_free(events);
    close_fixture(&f);
}

static void test_overflow_is_reported(void) {
    fixture f = open_fixture();
    mnemo_events *events = NULL;
    EXPECT_OK(mnemo_db_watch(f.db, &events));
    char **ids = (char **)calloc(CAPACITY + 3, sizeof(char *));
    for (int i = 0; i < CAPACITY + 3; i++) ids[i] = commit(f.db, "1");
    for (int i = 0; i < CAPACITY; i++) expect_change(events, 0, f.db_id, ids[i], "local");
    char *json = NULL;
    EXPECT_OK(mnemo_events_next(events, 0, &json));
    EXPECT_STR(json, "{\"overflow\":3}");
    EXPECT_OK(mnemo_events_next(events, 0, &json));
    CHECK(json == NULL);
    /* The watch goes on. */
    char *later = commit(f.db, "2");
    expect_change(events, 0, f.db_id, later, "local");
    for (int i = 0; i < CAPACITY + 3; i++) mnemo_string_free(ids[i]);
    free(ids);
    mnemo_string_free(later);
    mnemo_events_free(events);
    close_fixture(&f);
}

static void test_free_with_pending_events_and_after_the_database(void) {
    fixture f = open_fixture();
    mnemo_events *first = NULL, *second = NULL;
    EXPECT_OK(mnemo_db_watch(f.db, &first));
    EXPECT_OK(mnemo_db_watch(f.db, &second));
    for (int i = 0; i < 5; i++) mnemo_string_free(commit(f.db, "1"));
    mnemo_events_free(first); /* pending events go with it (valgrind checks) */
    /* A watcher outlives its database handle; the other watcher still has its events. */
    mnemo_db_free(f.db);
    f.db = NULL;
    char *json = NULL;
    EXPECT_OK(mnemo_events_next(second, 0, &json));
    CHECK(json != NULL && strstr(json, "\"remote\":false") != NULL);
    mnemo_string_free(json);
    mnemo_events_free(second);
    close_fixture(&f);
}

static void test_bad_arguments(void) {
    fixture f = open_fixture();
    mnemo_events *events = (mnemo_events *)&f; /* a sentinel: must come back NULL */
    EXPECT(mnemo_db_watch(NULL, &events), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(events == NULL);
    EXPECT(mnemo_db_watch(f.db, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_db_watch(f.db, &events));
    char *json = (char *)"sentinel";
    EXPECT(mnemo_events_next(NULL, 0, &json), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(json == NULL);
    EXPECT(mnemo_events_next(events, 0, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    int fd = 42;
    EXPECT(mnemo_events_fd(NULL, &fd), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(fd == -1);
    EXPECT(mnemo_events_fd(events, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_flush_notifications(NULL, 0), MNEMO_STATUS_INVALID_ARGUMENT);
    mnemo_events_free(events);
    close_fixture(&f);
}

/* --- the instance's bound on watchers ------------------------------------------------ */

/* The instance's live watchers, as "watchers" of mnemo_instance_stats. */
static long watchers_live(mnemo_instance *instance) {
    char *json = NULL;
    EXPECT_OK(mnemo_instance_stats(instance, &json));
    const char *at = json ? strstr(json, "\"watchers\":") : NULL;
    CHECK(at != NULL);
    long n = at ? strtol(at + strlen("\"watchers\":"), NULL, 10) : -1;
    mnemo_string_free(json);
    return n;
}

/* A watch refused BUSY, its handle NULL, with a message naming the limit and its value. */
static void expect_refused(mnemo_database *db, const char *named) {
    mnemo_events *events = (mnemo_events *)db; /* a sentinel: must come back NULL */
    EXPECT(mnemo_db_watch(db, &events), MNEMO_STATUS_BUSY);
    const char *message = mnemo_last_error_message();
    CHECK(message != NULL && strstr(message, named) != NULL);
    if (message && !strstr(message, named)) fprintf(stderr, "  message: %s\n", message);
    CHECK(events == NULL);
}

static void test_watchers_past_the_instance_limit_are_refused(void) {
    fixture f = open_fixture();
    char *json = NULL;
    EXPECT_OK(mnemo_instance_limits(f.instance, &json));
    CHECK(json != NULL && strstr(json, "\"watchers\":1024") != NULL);
    mnemo_string_free(json);
    CHECK(watchers_live(f.instance) == 0);

    EXPECT_OK(mnemo_instance_set_limits(f.instance, "{\"watchers\": 2}"));
    mnemo_database *other = NULL;
    EXPECT_OK(mnemo_user_create_db(f.user, "other", &other));
    mnemo_events *first = NULL, *second = NULL, *third = NULL;
    EXPECT_OK(mnemo_db_watch(f.db, &first));
    EXPECT_OK(mnemo_db_watch(other, &second)); /* another database, the same count */
    CHECK(watchers_live(f.instance) == 2);
    expect_refused(f.db, "limit watchers (2)");
    expect_refused(other, "limit watchers (2)");
    CHECK(watchers_live(f.instance) == 2);
    mnemo_events_free(first);
    CHECK(watchers_live(f.instance) == 1);
    EXPECT_OK(mnemo_db_watch(f.db, &third));
    CHECK(watchers_live(f.instance) == 2);

    /* Lowered below the number live: those stay and hear; new ones wait for room. */
    EXPECT_OK(mnemo_instance_set_limits(f.instance, "{\"watchers\": 1}"));
    expect_refused(other, "limit watchers (1)");
    char *entry = commit(f.db, "1");
    expect_change(third, 0, f.db_id, entry, "local");
    mnemo_string_free(entry);
    mnemo_events_free(second);
    expect_refused(other, "limit watchers (1)");
    mnemo_events_free(third);
    CHECK(watchers_live(f.instance) == 0);
    EXPECT_OK(mnemo_db_watch(other, &first));
    mnemo_events_free(first);

    /* 0 refuses every watch; past the bound, nothing changes. */
    EXPECT_OK(mnemo_instance_set_limits(f.instance, "{\"watchers\": 0}"));
    expect_refused(f.db, "limit watchers (0)");
    EXPECT(mnemo_instance_set_limits(f.instance, "{\"watchers\": 1048577}"),
           MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_instance_limits(f.instance, &json));
    CHECK(json != NULL && strstr(json, "\"watchers\":0") != NULL);
    mnemo_string_free(json);
    EXPECT_OK(mnemo_instance_set_limits(f.instance, "{\"watchers\": 1048576}"));
    CHECK(watchers_live(f.instance) == 0);
    mnemo_db_free(other);
    close_fixture(&f);
}

/* --- remote changes, from a second instance through sync --------------------------- */

static void test_remote_changes(void) {
    side a = open_side("alice"), b = open_side("bob");
    char *addr = NULL, *db_id = NULL;
    mnemo_database *db = NULL, *copy = NULL;
    mnemo_events *events = NULL;
    EXPECT_OK(mnemo_sync_listen(a.sync, "127.0.0.1:0", &addr));
    EXPECT_OK(mnemo_user_create_db(a.user, "shared", &db));
    EXPECT_OK(mnemo_db_id(db, &db_id));
    char *bob_key = default_key(b.user);
    EXPECT_OK(mnemo_db_grant(db, bob_key, "read"));
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    EXPECT_OK(mnemo_user_load_db(b.user, db_id, &copy));
    EXPECT_OK(mnemo_db_watch(copy, &events));

    char *entry = commit(db, "\"from alice\"");
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    expect_change(events, 0, db_id, entry, "sync");
    char *json = NULL;
    EXPECT_OK(mnemo_events_next(events, 0, &json));
    CHECK(json == NULL);

    mnemo_events_free(events);
    mnemo_string_free(entry);
    mnemo_db_free(copy);
    mnemo_db_free(db);
    free(bob_key);
    mnemo_string_free(db_id);
    mnemo_string_free(addr);
    close_side(&b);
    close_side(&a);
}

/* --- subscriptions: free never blocks; flush waits for callbacks ------------------ */

/* A callback that records each call and, while `blocking`, waits until released. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int blocking;
    int calls;
    int remote_calls;
    int destroyed;
    int freed;
    pthread_t callback_thread;
    pthread_t destroy_thread;
    mnemo_database *db;
    mnemo_status flush_inside; /* what mnemo_db_flush_notifications gave inside a call */
} gate;

static void gate_init(gate *g, mnemo_database *db) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->changed, NULL);
    g->db = db;
    g->flush_inside = MNEMO_STATUS_OK;
}

static void gate_destroy(gate *g) {
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->changed);
}

static void on_change(void *user_data, const char *db_id, const char *entry_id, int32_t remote) {
    gate *g = (gate *)user_data;
    (void)db_id;
    (void)entry_id;
    pthread_mutex_lock(&g->lock);
    g->calls++;
    if (remote) g->remote_calls++;
    g->callback_thread = pthread_self();
    pthread_cond_broadcast(&g->changed);
    while (g->blocking) pthread_cond_wait(&g->changed, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void on_change_flushing(void *user_data, const char *db_id, const char *entry_id, int32_t remote) {
    gate *g = (gate *)user_data;
    mnemo_status s = mnemo_db_flush_notifications(g->db, 10000);
    pthread_mutex_lock(&g->lock);
    g->flush_inside = s;
    pthread_mutex_unlock(&g->lock);
    on_change(user_data, db_id, entry_id, remote);
}

static void on_destroy(void *user_data) {
    gate *g = (gate *)user_data;
    pthread_mutex_lock(&g->lock);
    g->destroyed++;
    g->destroy_thread = pthread_self();
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
}

/* Waits until *field reaches want (or 10 s pass); returns the value seen. */
static int wait_until(gate *g, const int *field, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&g->lock);
    while (*field < want && pthread_cond_timedwait(&g->changed, &g->lock, &deadline) == 0) {
    }
    int seen = *field;
    pthread_mutex_unlock(&g->lock);
    return seen;
}

static void release(gate *g) {
    pthread_mutex_lock(&g->lock);
    g->blocking = 0;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
}

typedef struct freeing {
    mnemo_subscription *sub;
    gate *g;
} freeing;

static void *free_subscription(void *arg) {
    freeing *fr = (freeing *)arg;
    mnemo_subscription_free(fr->sub);
    pthread_mutex_lock(&fr->g->lock);
    fr->g->freed = 1;
    pthread_cond_broadcast(&fr->g->changed);
    pthread_mutex_unlock(&fr->g->lock);
    return NULL;
}

static void test_free_never_blocks_and_queued_calls_are_delivered(void) {
    fixture f = open_fixture();
    gate g;
    gate_init(&g, f.db);
    g.blocking = 1;
    mnemo_subscription *sub = NULL;
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &g, on_destroy, &sub));
    mnemo_string_free(commit(f.db, "1"));
    mnemo_string_free(commit(f.db, "2")); /* queued behind the blocked call */
    CHECK(wait_until(&g, &g.calls, 1) == 1);

    /* Free from another thread while the callback blocks: it returns anyway. */
    freeing fr = {sub, &g};
    pthread_t freer;
    CHECK(pthread_create(&freer, NULL, free_subscription, &fr) == 0);
    CHECK(wait_until(&g, &g.freed, 1) == 1);
    pthread_join(freer, NULL);
    pthread_mutex_lock(&g.lock);
    CHECK(g.destroyed == 0 && g.calls == 1);
    pthread_mutex_unlock(&g.lock);

    /* While the callback blocks, a flush times out with BUSY. */
    EXPECT(mnemo_db_flush_notifications(f.db, 50), MNEMO_STATUS_BUSY);
    mnemo_string_free(commit(f.db, "3")); /* after the free: never delivered */
    release(&g);
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    pthread_mutex_lock(&g.lock);
    CHECK(g.calls == 2);       /* the queued one was delivered, the later one not */
    CHECK(g.destroyed == 1);   /* once, after the last call */
    CHECK(g.remote_calls == 0);
    CHECK(pthread_equal(g.destroy_thread, g.callback_thread)); /* on the library thread */
    CHECK(!pthread_equal(g.destroy_thread, pthread_self()));
    pthread_mutex_unlock(&g.lock);
    gate_destroy(&g);
    close_fixture(&f);
}

/* mnemo_subscription_cancel: the call under way finishes, the queued ones are dropped,
 * destroy runs once after the last call (here on the library thread). */
static void test_cancel_drops_what_is_queued(void) {
    fixture f = open_fixture();
    gate g;
    gate_init(&g, f.db);
    g.blocking = 1;
    mnemo_subscription *sub = NULL;
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &g, on_destroy, &sub));
    for (int i = 0; i < 5; i++) mnemo_string_free(commit(f.db, "1")); /* 4 queued behind */
    CHECK(wait_until(&g, &g.calls, 1) == 1);
    mnemo_subscription_cancel(sub); /* returns while the first call blocks */
    pthread_mutex_lock(&g.lock);
    CHECK(g.destroyed == 0 && g.calls == 1);
    pthread_mutex_unlock(&g.lock);
    release(&g);
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    pthread_mutex_lock(&g.lock);
    CHECK(g.calls == 1);     /* the four queued were dropped */
    CHECK(g.destroyed == 1); /* once, after the call under way */
    CHECK(pthread_equal(g.destroy_thread, g.callback_thread));
    pthread_mutex_unlock(&g.lock);
    gate_destroy(&g);

    /* With nothing under way: destroy before it returns, on the calling thread. */
    gate_init(&g, f.db);
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &g, on_destroy, &sub));
    mnemo_subscription_cancel(sub);
    CHECK(g.destroyed == 1 && g.calls == 0 && pthread_equal(g.destroy_thread, pthread_self()));
    mnemo_subscription_cancel(NULL); /* a no-op */
    gate_destroy(&g);

    /* Queued but not under way (the library thread busy with another subscription's
     * callback): destroyed before it returns too, never called. */
    gate busy, queued;
    gate_init(&busy, f.db);
    gate_init(&queued, f.db);
    busy.blocking = 1;
    mnemo_subscription *first = NULL, *second = NULL;
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &busy, on_destroy, &first));
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &queued, on_destroy, &second));
    for (int i = 0; i < 3; i++) mnemo_string_free(commit(f.db, "2"));
    CHECK(wait_until(&busy, &busy.calls, 1) == 1);
    mnemo_subscription_cancel(second);
    CHECK(queued.destroyed == 1 && queued.calls == 0);
    CHECK(pthread_equal(queued.destroy_thread, pthread_self()));
    release(&busy);
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    CHECK(queued.calls == 0 && queued.destroyed == 1 && busy.calls == 3);
    mnemo_subscription_free(first);
    gate_destroy(&busy);
    gate_destroy(&queued);
    close_fixture(&f);
}

static void test_free_with_nothing_queued_destroys_on_the_calling_thread(void) {
    fixture f = open_fixture();
    gate g;
    gate_init(&g, f.db);
    mnemo_subscription *sub = NULL;
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &g, on_destroy, &sub));
    mnemo_string_free(commit(f.db, "1"));
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    CHECK(g.calls == 1); /* flush returned: the callback ran */
    mnemo_subscription_free(sub);
    CHECK(g.destroyed == 1 && pthread_equal(g.destroy_thread, pthread_self()));
    gate_destroy(&g);
    close_fixture(&f);
}

static void test_flush_from_inside_a_callback_is_refused(void) {
    fixture f = open_fixture();
    gate g;
    gate_init(&g, f.db);
    mnemo_subscription *sub = NULL;
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change_flushing, &g, on_destroy, &sub));
    mnemo_string_free(commit(f.db, "1"));
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    CHECK(g.calls == 1 && g.flush_inside == MNEMO_STATUS_BUSY);
    mnemo_subscription_free(sub);
    CHECK(g.destroyed == 1);
    /* Once everything ran, a flush that does not wait succeeds. */
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 0));
    gate_destroy(&g);
    close_fixture(&f);
}

/* Two instances whose callbacks each free the other's last handle, both at once: each free
 * waits for the other instance's callbacks, one of which is that other free. Before, both
 * notification threads waited for each other for good. */
typedef struct crossing {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int entered;  /* callbacks that began */
    int released; /* set once each instance's own handle is its last */
    int returned; /* callbacks that freed the other instance and returned */
    mnemo_instance *instances[2];
} crossing;

static crossing cross;

static void free_the_other(void *user_data, const char *db_id, const char *entry_id, int32_t remote) {
    int mine = *(const int *)user_data;
    (void)db_id;
    (void)entry_id;
    (void)remote;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&cross.lock);
    cross.entered++;
    pthread_cond_broadcast(&cross.changed);
    /* Both callbacks run, and each instance's handle is its last, before either frees: the
     * two frees overlap, and each waits for the other instance's callbacks. */
    while ((cross.entered < 2 || !cross.released) &&
           pthread_cond_timedwait(&cross.changed, &cross.lock, &deadline) == 0) {
    }
    mnemo_instance *other = cross.instances[1 - mine];
    cross.instances[1 - mine] = NULL;
    pthread_mutex_unlock(&cross.lock);
    mnemo_instance_free(other);
    pthread_mutex_lock(&cross.lock);
    cross.returned++;
    pthread_cond_broadcast(&cross.changed);
    pthread_mutex_unlock(&cross.lock);
}

static void test_two_instances_freeing_each_other_from_callbacks(void) {
    static const int which[2] = {0, 1};
    memset(&cross, 0, sizeof cross);
    pthread_mutex_init(&cross.lock, NULL);
    pthread_cond_init(&cross.changed, NULL);
    fixture f[2] = {open_fixture(), open_fixture()};
    mnemo_subscription *subs[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        cross.instances[i] = f[i].instance;
        EXPECT_OK(mnemo_db_subscribe(f[i].db, free_the_other, (void *)&which[i], NULL, &subs[i]));
    }
    for (int i = 0; i < 2; i++) {
        mnemo_string_free(commit(f[i].db, "1"));
        /* The instance's own handle is its last once the database and user go. */
        mnemo_string_free(f[i].db_id);
        mnemo_db_free(f[i].db);
        EXPECT_OK(mnemo_user_logout(f[i].user));
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&cross.lock);
    cross.released = 1;
    pthread_cond_broadcast(&cross.changed);
    while (cross.returned < 2 && pthread_cond_timedwait(&cross.changed, &cross.lock, &deadline) == 0) {
    }
    int returned = cross.returned;
    pthread_mutex_unlock(&cross.lock);
    CHECK(returned == 2);
    if (returned != 2) {
        /* The notification threads wait for each other: nothing can be freed. */
        exit(report("c events"));
    }
    for (int i = 0; i < 2; i++) mnemo_subscription_free(subs[i]);
    pthread_mutex_destroy(&cross.lock);
    pthread_cond_destroy(&cross.changed);
}

int main(void) {
    test_watch_next_and_timeout();
    test_descriptor();
    test_overflow_is_reported();
    test_free_with_pending_events_and_after_the_database();
    test_bad_arguments();
    test_watchers_past_the_instance_limit_are_refused();
    test_remote_changes();
    test_free_never_blocks_and_queued_calls_are_delivered();
    test_free_with_nothing_queued_destroys_on_the_calling_thread();
    test_cancel_drops_what_is_queued();
    test_flush_from_inside_a_callback_is_refused();
    test_two_instances_freeing_each_other_from_callbacks();
    return report("c events");
}
