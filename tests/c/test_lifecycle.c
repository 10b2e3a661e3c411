/* Tests of what a user lets go of, through the C ABI: forgetting a database (its storage
 * reclaimed when no user keeps it), removing a key, choosing the default key. */
#define _POSIX_C_SOURCE 200809L /* pthreads under -std=c11 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"

static const char BAD_UTF8[] = "\xff\xfe";
static const char UNKNOWN_DB[] = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
static const char MARKER[] = "\"marker-3f8a61c2-only-here\"";

static mnemo_instance *open_url(const char *url) {
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    EXPECT_OK(mnemo_backend_open(url, &backend));
    EXPECT_OK(mnemo_instance_open(backend, &instance));
    return instance;
}

/* Whether the file at `path` (or its WAL) holds `needle`. */
static int file_holds(const char *path, const char *needle) {
    char wal[200];
    const char *paths[2] = {path, wal};
    size_t n = strlen(needle);
    snprintf(wal, sizeof wal, "%s-wal", path);
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *data = (char *)malloc(size > 0 ? (size_t)size : 1);
        size_t got = fread(data, 1, size > 0 ? (size_t)size : 0, f);
        fclose(f);
        int found = 0;
        for (size_t at = 0; !found && got >= n && at <= got - n; at++)
            found = memcmp(data + at, needle, n) == 0;
        free(data);
        if (found) return 1;
    }
    return 0;
}

static void remove_files(const char *path) {
    char other[200];
    remove(path);
    snprintf(other, sizeof other, "%s-wal", path);
    remove(other);
    snprintf(other, sizeof other, "%s-shm", path);
    remove(other);
}

static void test_forget_db(void) {
    char path[128], url[160];
    snprintf(path, sizeof path, "/tmp/mnemo-c-lifecycle-%ld.db", (long)clock());
    snprintf(url, sizeof url, "sqlite:%s", path);
    remove_files(path);
    mnemo_instance *instance = open_url(url);
    mnemo_user *alice = NULL;
    mnemo_database *gone = NULL, *kept = NULL, *other = NULL;
    char *gone_id = NULL, *text = NULL;
    EXPECT_OK(mnemo_instance_create_user(instance, "alice", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT_OK(mnemo_user_create_db(alice, "gone", &gone));
    EXPECT_OK(mnemo_user_create_db(alice, "kept", &kept));
    EXPECT_OK(mnemo_db_id(gone, &gone_id));
    EXPECT_OK(mnemo_db_set(gone, "s", "k", MARKER));
    EXPECT_OK(mnemo_db_set(kept, "s", "k", "\"stays\""));
    CHECK(file_holds(path, "marker-3f8a61c2"));

    /* Bad arguments change nothing. */
    EXPECT(mnemo_user_forget_db(NULL, gone_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_forget_db(alice, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_forget_db(alice, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_forget_db(alice, "sha256:nothex"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_forget_db(alice, UNKNOWN_DB), MNEMO_STATUS_NOT_FOUND);

    EXPECT_OK(mnemo_user_forget_db(alice, gone_id));
    EXPECT(mnemo_user_forget_db(alice, gone_id), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_user_list_dbs(alice, &text));
    CHECK(text && !strstr(text, gone_id) && strstr(text, "\"kept\""));
    mnemo_string_free(text);
    text = NULL;
    EXPECT(mnemo_user_load_db(alice, gone_id, &other), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_find_db(alice, "gone", &other), MNEMO_STATUS_NOT_FOUND);
    CHECK(other == NULL);
    /* Nobody kept it: its data left the file; the handle still open fails cleanly. */
    CHECK(!file_holds(path, "marker-3f8a61c2"));
    EXPECT(mnemo_db_get(gone, "s", "k", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_db_set(gone, "s", "k", "1"), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_get(kept, "s", "k", &text));
    EXPECT_STR(text, "\"stays\"");

    mnemo_db_free(gone);
    mnemo_db_free(kept);
    EXPECT_OK(mnemo_user_logout(alice));
    mnemo_instance_free(instance);
    /* After reopening, it is still gone. */
    instance = open_url(url);
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT(mnemo_user_load_db(alice, gone_id, &other), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_user_find_db(alice, "kept", &other));
    mnemo_db_free(other);
    EXPECT_OK(mnemo_user_logout(alice));
    mnemo_instance_free(instance);
    mnemo_string_free(gone_id);
    remove_files(path);
}

static void test_a_database_another_user_keeps_stays(void) {
    mnemo_instance *instance = open_url("memory:");
    mnemo_user *alice = NULL, *bob = NULL;
    mnemo_database *db = NULL, *bobs = NULL;
    char *id = NULL, *bob_key = NULL, *text = NULL;
    EXPECT_OK(mnemo_instance_create_user(instance, "alice", NULL));
    EXPECT_OK(mnemo_instance_create_user(instance, "bob", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT_OK(mnemo_instance_login(instance, "bob", NULL, &bob));
    EXPECT_OK(mnemo_user_create_db(alice, "shared", &db));
    EXPECT_OK(mnemo_db_id(db, &id));
    EXPECT_OK(mnemo_user_add_private_key(bob, NULL, &bob_key));
    EXPECT_OK(mnemo_db_grant(db, bob_key, "write"));
    EXPECT_OK(mnemo_db_set(db, "s", "k", "1"));
    EXPECT_OK(mnemo_user_load_db(bob, id, &bobs));

    EXPECT_OK(mnemo_user_forget_db(alice, id));
    EXPECT_OK(mnemo_user_list_dbs(alice, &text));
    EXPECT_STR(text, "[]");
    EXPECT_OK(mnemo_db_get(bobs, "s", "k", &text));
    EXPECT_STR(text, "1");
    EXPECT_OK(mnemo_db_set(db, "s", "k", "2"));
    /* Once the last user forgets it, every handle on it answers NOT_FOUND. */
    EXPECT_OK(mnemo_user_forget_db(bob, id));
    EXPECT(mnemo_db_get(bobs, "s", "k", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_db_get(db, "s", "k", &text), MNEMO_STATUS_NOT_FOUND);

    mnemo_db_free(db);
    mnemo_db_free(bobs);
    mnemo_string_free(id);
    mnemo_string_free(bob_key);
    EXPECT_OK(mnemo_user_logout(alice));
    EXPECT_OK(mnemo_user_logout(bob));
    mnemo_instance_free(instance);
}

static void test_keys(void) {
    char path[128], url[160];
    snprintf(path, sizeof path, "/tmp/mnemo-c-lifecycle-keys-%ld.db", (long)clock());
    snprintf(url, sizeof url, "sqlite:%s", path);
    remove_files(path);
    mnemo_instance *instance = open_url(url);
    mnemo_user *alice = NULL;
    mnemo_database *db = NULL;
    char *first = NULL, *second = NULL, *text = NULL, *id = NULL;
    const char *stranger = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    EXPECT_OK(mnemo_instance_create_user(instance, "alice", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT_OK(mnemo_user_create_db(alice, "d", &db));
    EXPECT_OK(mnemo_db_id(db, &id));
    EXPECT_OK(mnemo_user_get_signing_key(alice, id, &first));
    EXPECT_OK(mnemo_user_add_private_key(alice, "second", &second));

    EXPECT(mnemo_user_remove_key(alice, first), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_remove_key(alice, stranger), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_set_default_key(alice, stranger), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_remove_key(NULL, second), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_remove_key(alice, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_remove_key(alice, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_remove_key(alice, "ed25519:nope"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_set_default_key(NULL, second), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_set_default_key(alice, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_set_default_key(alice, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_set_default_key(alice, "rsa:AAAA"), MNEMO_STATUS_INVALID_ARGUMENT);

    EXPECT_OK(mnemo_user_set_default_key(alice, second));
    EXPECT_OK(mnemo_user_remove_key(alice, first));
    EXPECT(mnemo_user_remove_key(alice, first), MNEMO_STATUS_NOT_FOUND);
    /* The handle that signed with the removed key no longer writes. */
    CHECK(mnemo_db_set(db, "s", "k", "1") != MNEMO_STATUS_OK);
    mnemo_db_free(db);
    EXPECT_OK(mnemo_user_logout(alice));
    mnemo_instance_free(instance);

    /* Both changes hold after reopening. */
    instance = open_url(url);
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT_OK(mnemo_user_list_keys(alice, &text));
    CHECK(text && !strstr(text, first) && strstr(text, second) && strstr(text, "\"default\":true"));
    mnemo_string_free(text);
    db = NULL;
    EXPECT_OK(mnemo_user_create_db(alice, "later", &db));
    mnemo_string_free(id);
    id = NULL;
    EXPECT_OK(mnemo_db_id(db, &id));
    EXPECT_OK(mnemo_user_get_signing_key(alice, id, &text));
    EXPECT_STR(text, second);
    mnemo_db_free(db);
    EXPECT_OK(mnemo_user_logout(alice));
    mnemo_instance_free(instance);
    mnemo_string_free(first);
    mnemo_string_free(second);
    mnemo_string_free(id);
    remove_files(path);
}

/* What the pthread key's destructor saw, for the main thread to check after the join. */
typedef struct exit_calls {
    mnemo_instance *instance;
    mnemo_status logout;
    mnemo_status wrong_login;
    int message_was_null;
} exit_calls;

static pthread_key_t session_key;
static exit_calls at_exit;

/* Runs as the thread exits, after Rust's own thread-locals were destroyed (glibc runs
 * thread_local destructors before pthread key destructors): mnemo must still answer with
 * statuses, not abort the process. */
static void end_session_at_thread_exit(void *user) {
    mnemo_user *session = NULL;
    at_exit.logout = mnemo_user_logout((mnemo_user *)user);
    at_exit.wrong_login = mnemo_instance_login(at_exit.instance, "nobody", NULL, &session);
    at_exit.message_was_null = mnemo_last_error_message() == NULL;
}

static void *log_in_and_exit(void *unused) {
    (void)unused;
    mnemo_user *user = NULL;
    mnemo_user *none = NULL;
    /* A failure first, so this thread's last-error slot exists and is destroyed at exit. */
    EXPECT(mnemo_instance_login(at_exit.instance, "nobody", NULL, &none), MNEMO_STATUS_AUTH_FAILED);
    EXPECT_OK(mnemo_instance_login(at_exit.instance, "kim", NULL, &user));
    CHECK(pthread_setspecific(session_key, user) == 0);
    return NULL;
}

static void test_a_session_ended_by_a_thread_exit_destructor(void) {
    pthread_t thread;
    at_exit.instance = open_url("memory:");
    at_exit.logout = at_exit.wrong_login = -1;
    EXPECT_OK(mnemo_instance_create_user(at_exit.instance, "kim", NULL));
    CHECK(pthread_key_create(&session_key, end_session_at_thread_exit) == 0);
    CHECK(pthread_create(&thread, NULL, log_in_and_exit, NULL) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(at_exit.logout == MNEMO_STATUS_OK);
    CHECK(at_exit.wrong_login == MNEMO_STATUS_AUTH_FAILED);
    CHECK(at_exit.message_was_null); /* the slot is gone: no message, and no abort */
    pthread_key_delete(session_key);
    mnemo_instance_free(at_exit.instance);
}

int main(void) {
    test_forget_db();
    test_a_session_ended_by_a_thread_exit_destructor();
    test_a_database_another_user_keeps_stays();
    test_keys();
    return report("c lifecycle");
}
