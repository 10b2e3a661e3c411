/* Tests of the database engine through the C ABI: deletes, stores, tips, transactions,
 * grants and revocations, subscriptions. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthreads under -std=c11 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"

static const char BAD_UTF8[] = "\xff\xfe";

typedef struct fixture {
    mnemo_instance *instance;
    mnemo_user *user;
    mnemo_database *db;
} fixture;

static fixture open_fixture(void) {
    fixture f = {NULL, NULL, NULL};
    mnemo_backend *backend = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &f.instance));
    EXPECT_OK(mnemo_instance_create_user(f.instance, "erin", NULL));
    EXPECT_OK(mnemo_instance_login(f.instance, "erin", NULL, &f.user));
    EXPECT_OK(mnemo_user_create_db(f.user, "engine", &f.db));
    return f;
}

static void close_fixture(fixture *f) {
    mnemo_db_free(f->db);
    if (f->user) EXPECT_OK(mnemo_user_logout(f->user));
    mnemo_instance_free(f->instance);
}

/* A syntactically valid key that is not ours: another instance's device id. */
static char *foreign_key(void) {
    mnemo_backend *backend = NULL;
    mnemo_instance *other = NULL;
    char *key = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &other));
    EXPECT_OK(mnemo_instance_device_id(other, &key));
    mnemo_instance_free(other);
    return key;
}

/* Our own key, read from the database's "_settings" (the only auth entry at creation). */
static char *own_key(mnemo_database *db) {
    char *all = NULL;
    EXPECT_OK(mnemo_db_get_all(db, "_settings", &all));
    const char *at = all ? strstr(all, "\"auth/") : NULL;
    char *key = NULL;
    if (at) {
        size_t len = strlen("ed25519:") + 43;
        key = (char *)malloc(len + 1);
        memcpy(key, at + 6, len);
        key[len] = '\0';
    }
    CHECK(key != NULL);
    mnemo_string_free(all);
    return key;
}

static void test_delete_and_get_all(void) {
    fixture f = open_fixture();
    char *text = NULL;
    EXPECT_OK(mnemo_db_get_all(f.db, "todo", &text));
    EXPECT_STR(text, "{}");
    EXPECT_OK(mnemo_db_set(f.db, "todo", "b", "2"));
    EXPECT_OK(mnemo_db_set(f.db, "todo", "a", "{\"x\": [1]}"));
    EXPECT_OK(mnemo_db_set(f.db, "other", "c", "3"));
    EXPECT_OK(mnemo_db_get_all(f.db, "todo", &text));
    EXPECT_STR(text, "{\"a\":{\"x\":[1]},\"b\":2}");

    EXPECT_OK(mnemo_db_delete(f.db, "todo", "a"));
    EXPECT(mnemo_db_get(f.db, "todo", "a", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_db_delete(f.db, "todo", "a"), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_db_delete(f.db, "todo", "never"), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_get_all(f.db, "todo", &text));
    EXPECT_STR(text, "{\"b\":2}");
    /* A deleted key can be set again. */
    EXPECT_OK(mnemo_db_set(f.db, "todo", "a", "1"));
    EXPECT_OK(mnemo_db_get(f.db, "todo", "a", &text));
    EXPECT_STR(text, "1");

    EXPECT(mnemo_db_delete(f.db, "_settings", "name"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_delete(f.db, "", "a"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_delete(f.db, "todo", ""), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_delete(f.db, "todo", BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_delete(NULL, "todo", "a"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_delete(f.db, NULL, "a"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_delete(f.db, "todo", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_all(f.db, "", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_all(f.db, BAD_UTF8, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_all(NULL, "todo", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_all(f.db, NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_all(f.db, "todo", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(text == NULL);

    /* The settings store is readable and names the database. */
    EXPECT_OK(mnemo_db_get(f.db, "_settings", "name", &text));
    EXPECT_STR(text, "\"engine\"");
    close_fixture(&f);
}

static void test_tips(void) {
    fixture f = open_fixture();
    char *tips = NULL, *entry = NULL;
    mnemo_txn *txn = NULL;
    EXPECT_OK(mnemo_db_tips(f.db, &tips));
    CHECK(tips && strlen(tips) == 2 + 2 + 71); /* ["sha256:<64>"] */
    mnemo_string_free(tips);
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "s", "k", "1"));
    EXPECT_OK(mnemo_txn_commit(txn, &entry));
    CHECK(entry && strncmp(entry, "sha256:", 7) == 0);
    /* In a linear history the only tip is the last commit. */
    EXPECT_OK(mnemo_db_tips(f.db, &tips));
    CHECK(tips && entry && strstr(tips, entry) != NULL && strlen(tips) == 2 + 2 + 71);
    mnemo_string_free(tips);
    mnemo_string_free(entry);
    tips = NULL;
    EXPECT(mnemo_db_tips(NULL, &tips), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_tips(f.db, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    close_fixture(&f);
}

/* A database whose storage agrees with its signed entries verifies; a damaged one gives
 * MNEMO_STATUS_CORRUPT (tested from Python, which can edit a file with sqlite3). */
static void test_verify(void) {
    fixture f = open_fixture();
    EXPECT_OK(mnemo_db_verify(f.db));
    EXPECT_OK(mnemo_db_set(f.db, "todo", "a", "1"));
    EXPECT_OK(mnemo_db_set(f.db, "todo", "b", "[2]"));
    EXPECT_OK(mnemo_db_delete(f.db, "todo", "a"));
    EXPECT_OK(mnemo_db_verify(f.db));
    EXPECT(mnemo_db_verify(NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    close_fixture(&f);
}

static void test_transactions(void) {
    fixture f = open_fixture();
    char *text = NULL, *tips_before = NULL, *tips_after = NULL;
    mnemo_txn *txn = NULL;

    /* Two stores, one commit: both visible together. */
    EXPECT_OK(mnemo_db_set(f.db, "accounts", "old", "true"));
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "accounts", "alice", "90"));
    EXPECT_OK(mnemo_txn_set(txn, "ledger", "t1", "{\"from\":\"alice\",\"amount\":10}"));
    EXPECT_OK(mnemo_txn_delete(txn, "accounts", "old"));
    EXPECT(mnemo_db_get(f.db, "accounts", "alice", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_txn_commit(txn, NULL));
    EXPECT_OK(mnemo_db_get(f.db, "accounts", "alice", &text));
    EXPECT_STR(text, "90");
    EXPECT_OK(mnemo_db_get(f.db, "ledger", "t1", &text));
    EXPECT_STR(text, "{\"amount\":10,\"from\":\"alice\"}");
    EXPECT(mnemo_db_get(f.db, "accounts", "old", &text), MNEMO_STATUS_NOT_FOUND);

    /* Abort leaves nothing, and so does a bad operation in the middle. */
    EXPECT_OK(mnemo_db_tips(f.db, &tips_before));
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "accounts", "bob", "1"));
    EXPECT(mnemo_txn_set(txn, "ledger", "t2", "{broken"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(txn, "_settings", "name", "\"x\""), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(txn, "ledger", "", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(txn, BAD_UTF8, "k", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(txn, NULL, "k", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(txn, "s", NULL, "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(txn, "s", "k", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_set(NULL, "s", "k", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_delete(txn, "accounts", "nobody"), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_txn_delete(txn, NULL, "k"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_delete(txn, "s", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_txn_delete(NULL, "s", "k"), MNEMO_STATUS_INVALID_ARGUMENT);
    mnemo_txn_abort(txn);
    mnemo_txn_abort(NULL);
    EXPECT(mnemo_db_get(f.db, "accounts", "bob", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_tips(f.db, &tips_after));
    CHECK(tips_before && tips_after && strcmp(tips_before, tips_after) == 0);
    mnemo_string_free(tips_before);
    mnemo_string_free(tips_after);

    /* A key set earlier in the transaction may be deleted in it. */
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "accounts", "tmp", "1"));
    EXPECT_OK(mnemo_txn_delete(txn, "accounts", "tmp"));
    EXPECT_OK(mnemo_txn_commit(txn, NULL));
    EXPECT(mnemo_db_get(f.db, "accounts", "tmp", &text), MNEMO_STATUS_NOT_FOUND);

    /* An empty transaction commits nothing; commit frees the handle either way. */
    char *entry = (char *)&text;
    EXPECT_OK(mnemo_db_tips(f.db, &tips_before));
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT(mnemo_txn_commit(txn, &entry), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(entry == NULL);
    EXPECT_OK(mnemo_db_tips(f.db, &tips_after));
    CHECK(tips_before && tips_after && strcmp(tips_before, tips_after) == 0);
    mnemo_string_free(tips_before);
    mnemo_string_free(tips_after);
    EXPECT(mnemo_txn_commit(NULL, &entry), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_begin(NULL, &txn), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_begin(f.db, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* A transaction committed after logout is refused and stores nothing. */
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "accounts", "late", "1"));
    EXPECT_OK(mnemo_user_logout(f.user));
    f.user = NULL;
    EXPECT(mnemo_txn_commit(txn, NULL), MNEMO_STATUS_LOGGED_OUT);
    EXPECT(mnemo_db_get(f.db, "accounts", "late", &text), MNEMO_STATUS_NOT_FOUND);
    close_fixture(&f);
}

static void test_grant_and_revoke(void) {
    fixture f = open_fixture();
    char *other = foreign_key();
    char *mine = own_key(f.db);
    char *text = NULL;

    EXPECT(mnemo_db_revoke(f.db, other), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_grant(f.db, other, "write"));
    EXPECT_OK(mnemo_db_grant(f.db, other, "read"));
    EXPECT_OK(mnemo_db_revoke(f.db, other));
    EXPECT(mnemo_db_revoke(f.db, other), MNEMO_STATUS_NOT_FOUND);

    EXPECT(mnemo_db_grant(f.db, other, "owner"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(f.db, "ed25519:short", "read"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(f.db, "not a key", "read"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(f.db, BAD_UTF8, "read"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(f.db, other, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(f.db, NULL, "read"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(f.db, other, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_grant(NULL, other, "read"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_revoke(f.db, "nope"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_revoke(f.db, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_revoke(NULL, other), MNEMO_STATUS_INVALID_ARGUMENT);

    /* No admin changes its own grant: the creator (the most senior admin) is never demoted
     * or revoked, so the database always keeps an admin, even with a second admin. */
    EXPECT(mnemo_db_grant(f.db, mine, "write"), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_db_revoke(f.db, mine), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT_OK(mnemo_db_set(f.db, "s", "k", "1"));
    EXPECT_OK(mnemo_db_grant(f.db, other, "admin"));
    EXPECT(mnemo_db_grant(f.db, mine, "read"), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT_OK(mnemo_db_set(f.db, "s", "k", "2"));
    EXPECT_OK(mnemo_db_get(f.db, "s", "k", &text));
    EXPECT_STR(text, "2");
    free(mine);
    mnemo_string_free(other);
    close_fixture(&f);
}

/* Counts callback calls; the test thread waits on the condition variable. */
typedef struct counter {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int calls;
    int remote_calls;
    int destroyed;
    char last_entry[80];
    char db_id[80];
} counter;

static void on_change(void *user_data, const char *db_id, const char *entry_id, int32_t remote) {
    counter *c = (counter *)user_data;
    pthread_mutex_lock(&c->lock);
    c->calls++;
    if (remote) c->remote_calls++;
    snprintf(c->last_entry, sizeof c->last_entry, "%s", entry_id);
    snprintf(c->db_id, sizeof c->db_id, "%s", db_id);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

static void on_destroy(void *user_data) {
    counter *c = (counter *)user_data;
    pthread_mutex_lock(&c->lock);
    c->destroyed++;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

/* Waits until `calls` reaches `want` (or 10 s pass); returns the count seen. */
static int wait_for_calls(counter *c, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&c->lock);
    while (c->calls < want && pthread_cond_timedwait(&c->changed, &c->lock, &deadline) == 0) {
    }
    int seen = c->calls;
    pthread_mutex_unlock(&c->lock);
    return seen;
}

static void test_subscriptions(void) {
    fixture f = open_fixture();
    counter c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.changed, NULL);
    mnemo_subscription *sub = NULL;
    char *entry = NULL, *db_id = NULL;
    mnemo_txn *txn = NULL;

    EXPECT(mnemo_db_subscribe(f.db, NULL, &c, on_destroy, &sub), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_subscribe(NULL, on_change, &c, on_destroy, &sub), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_subscribe(f.db, on_change, &c, on_destroy, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(c.destroyed == 0 && sub == NULL);

    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &c, on_destroy, &sub));
    EXPECT_OK(mnemo_db_set(f.db, "s", "a", "1"));
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "s", "b", "2"));
    EXPECT_OK(mnemo_txn_set(txn, "t", "c", "3"));
    EXPECT_OK(mnemo_txn_commit(txn, &entry));
    CHECK(wait_for_calls(&c, 2) == 2);
    EXPECT_OK(mnemo_db_id(f.db, &db_id));
    pthread_mutex_lock(&c.lock);
    CHECK(entry && strcmp(c.last_entry, entry) == 0);
    CHECK(db_id && strcmp(c.db_id, db_id) == 0);
    CHECK(c.remote_calls == 0);
    pthread_mutex_unlock(&c.lock);

    /* Failed commits notify nothing; after free, nothing at all, and destroy ran once: in
     * this thread, since the flush saw every callback finish (none queued or running). */
    EXPECT(mnemo_db_set(f.db, "s", "a", "{bad"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    mnemo_subscription_free(sub);
    mnemo_subscription_free(NULL);
    CHECK(c.destroyed == 1);
    EXPECT_OK(mnemo_db_set(f.db, "s", "a", "4"));
    /* A second subscription sees the next commit; the first still saw exactly 2. */
    counter d;
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.lock, NULL);
    pthread_cond_init(&d.changed, NULL);
    EXPECT_OK(mnemo_db_subscribe(f.db, on_change, &d, NULL, &sub));
    EXPECT_OK(mnemo_db_set(f.db, "s", "a", "5"));
    CHECK(wait_for_calls(&d, 1) == 1);
    EXPECT_OK(mnemo_db_flush_notifications(f.db, 10000));
    mnemo_subscription_free(sub);
    CHECK(c.calls == 2 && c.destroyed == 1 && d.destroyed == 0);

    /* A subscription that fails after the NULL checks (here: the database was forgotten)
     * leaves user_data with the caller: destroy never runs, so freeing it is safe. */
    EXPECT_OK(mnemo_user_forget_db(f.user, db_id));
    sub = NULL;
    EXPECT(mnemo_db_subscribe(f.db, on_change, &d, on_destroy, &sub), MNEMO_STATUS_NOT_FOUND);
    CHECK(sub == NULL && d.destroyed == 0 && d.calls == 1);

    mnemo_string_free(entry);
    mnemo_string_free(db_id);
    close_fixture(&f);
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.changed);
    pthread_mutex_destroy(&d.lock);
    pthread_cond_destroy(&d.changed);
}

int main(void) {
    test_delete_and_get_all();
    test_tips();
    test_verify();
    test_transactions();
    test_grant_and_revoke();
    test_subscriptions();
    return report("c engine");
}
