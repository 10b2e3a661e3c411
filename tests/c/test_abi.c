/* Tests of the C ABI: every exported function, its conventions, and bad input.
 * Compiled as C11 (dynamic and static link) and as C++17, run plainly and under valgrind. */
#include <stdlib.h>
#include <time.h>

#include "check.h"

static const char BAD_UTF8[] = "\xff\xfe";
static const char *PASSWORD = "correct horse battery staple";

static mnemo_instance *open_memory_instance(void) {
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &instance));
    return instance;
}

static void test_library(void) {
    CHECK(strcmp(mnemo_version(), MNEMO_VERSION_STRING) == 0);
    CHECK(mnemo_version_number() == MNEMO_VERSION_NUMBER);
    CHECK(MNEMO_VERSION_NUMBER == MNEMO_VERSION_MAJOR * 1000000 + MNEMO_VERSION_MINOR * 1000 +
                                      MNEMO_VERSION_PATCH);
    CHECK(strcmp(mnemo_status_str(MNEMO_STATUS_OK), "MNEMO_STATUS_OK") == 0);
    CHECK(strcmp(mnemo_status_str(MNEMO_STATUS_INVALID_ARGUMENT), "MNEMO_STATUS_INVALID_ARGUMENT") == 0);
    CHECK(strcmp(mnemo_status_str(MNEMO_STATUS_INTERNAL), "MNEMO_STATUS_INTERNAL") == 0);
    CHECK(strcmp(mnemo_status_str(MNEMO_STATUS_BUSY), "MNEMO_STATUS_BUSY") == 0);
    CHECK(strcmp(mnemo_status_str(-1), "MNEMO_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(mnemo_status_str(12345), "MNEMO_STATUS_UNKNOWN") == 0);
    /* Stable values, from API.md. */
    CHECK(MNEMO_STATUS_NOT_FOUND == 2 && MNEMO_STATUS_AUTH_FAILED == 4 && MNEMO_STATUS_LOGGED_OUT == 6 &&
          MNEMO_STATUS_STORAGE == 9 && MNEMO_STATUS_INTERNAL == 11 && MNEMO_STATUS_BUSY == 12);
    mnemo_string_free(NULL);
    mnemo_backend_free(NULL);
    mnemo_instance_free(NULL);
    mnemo_db_free(NULL);
    mnemo_sync_free(NULL);
}

static void test_backend(void) {
    mnemo_backend *backend = (mnemo_backend *)&backend; /* non-NULL garbage: must be cleared */
    EXPECT(mnemo_backend_open(NULL, &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(backend == NULL);
    EXPECT(mnemo_backend_open("memory:", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_backend_open("nosuch:thing", &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_backend_open("memory", &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_backend_open("memory:extra", &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_backend_open(BAD_UTF8, &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_backend_open("", &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(backend == NULL);
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    CHECK(backend != NULL);
    mnemo_backend_free(backend);
}

/* The SQLite backend: a file that survives the instance, refused paths, bad URLs. */
/* Debug builds (the ones the tests use) panic inside mnemo_backend_open for this URL: the
 * panic must come back as MNEMO_STATUS_INTERNAL with its message, and the library must go
 * on working. */
static void test_panic_inside_an_exported_function(void) {
    mnemo_backend *backend = (mnemo_backend *)&backend;
    EXPECT(mnemo_backend_open("mnemo-test:panic", &backend), MNEMO_STATUS_INTERNAL);
    CHECK(backend == NULL);
    CHECK(mnemo_last_error_message() && strstr(mnemo_last_error_message(), "forced panic") != NULL);
    mnemo_instance *instance = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &instance));
    EXPECT_OK(mnemo_instance_create_user(instance, "after-panic", NULL));
    mnemo_instance_free(instance);
}

static void test_sqlite_backend(void) {
    char path[128], url[160];
    snprintf(path, sizeof path, "/tmp/mnemo-c-test-%ld.db", (long)clock());
    snprintf(url, sizeof url, "sqlite:%s", path);
    remove(path);
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    mnemo_user *user = NULL;
    mnemo_database *db = NULL;
    char *id1 = NULL, *id2 = NULL, *value = NULL, *db_id = NULL;

    EXPECT(mnemo_backend_open("sqlite:", &backend), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_backend_open("sqlite:/tmp", &backend), MNEMO_STATUS_STORAGE);
    EXPECT(mnemo_backend_open("sqlite:/nonexistent-dir/x.db", &backend), MNEMO_STATUS_STORAGE);
    EXPECT(mnemo_backend_open("postgres://nobody@127.0.0.1:1/none", &backend), MNEMO_STATUS_STORAGE);

    EXPECT_OK(mnemo_backend_open(url, &backend));
    EXPECT_OK(mnemo_instance_open(backend, &instance));
    EXPECT_OK(mnemo_instance_device_id(instance, &id1));
    EXPECT_OK(mnemo_instance_create_user(instance, "keeper", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "keeper", NULL, &user));
    EXPECT_OK(mnemo_user_create_db(user, "kept", &db));
    EXPECT_OK(mnemo_db_set(db, "s", "k", "\"stays\""));
    EXPECT_OK(mnemo_db_id(db, &db_id));
    mnemo_db_free(db);
    EXPECT_OK(mnemo_user_logout(user));
    mnemo_instance_free(instance);

    EXPECT_OK(mnemo_backend_open(url, &backend));
    EXPECT_OK(mnemo_instance_open(backend, &instance));
    EXPECT_OK(mnemo_instance_device_id(instance, &id2));
    CHECK(id1 && id2 && strcmp(id1, id2) == 0);
    EXPECT_OK(mnemo_instance_login(instance, "keeper", NULL, &user));
    EXPECT_OK(mnemo_user_load_db(user, db_id, &db));
    EXPECT_OK(mnemo_db_get(db, "s", "k", &value));
    EXPECT_STR(value, "\"stays\"");
    mnemo_db_free(db);
    EXPECT_OK(mnemo_user_logout(user));
    mnemo_instance_free(instance);
    mnemo_string_free(id1);
    mnemo_string_free(id2);
    mnemo_string_free(db_id);
    remove(path);
}

static void test_instance_open(void) {
    mnemo_instance *instance = (mnemo_instance *)&instance; /* garbage: must be cleared */
    mnemo_backend *backend = NULL;
    EXPECT(mnemo_instance_open(NULL, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(instance == NULL);
    /* A NULL out still consumes the backend: valgrind would report it otherwise. */
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open(backend, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    instance = open_memory_instance();
    char *id1 = NULL, *id2 = NULL;
    EXPECT_OK(mnemo_instance_device_id(instance, &id1));
    EXPECT_OK(mnemo_instance_device_id(instance, &id2));
    CHECK(id1 && strncmp(id1, "ed25519:", 8) == 0 && strlen(id1) == 8 + 43);
    CHECK(id1 && id2 && strcmp(id1, id2) == 0);
    mnemo_string_free(id2);
    EXPECT(mnemo_instance_device_id(NULL, &id2), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_device_id(instance, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* Another instance has another identity. */
    mnemo_instance *other = open_memory_instance();
    EXPECT_OK(mnemo_instance_device_id(other, &id2));
    CHECK(id1 && id2 && strcmp(id1, id2) != 0);
    mnemo_string_free(id1);
    mnemo_string_free(id2);
    mnemo_instance_free(other);
    mnemo_instance_free(instance);
}

static void test_users(void) {
    mnemo_instance *instance = open_memory_instance();
    char *json = NULL;
    char long_name[66];
    memset(long_name, 'x', 65);
    long_name[65] = '\0';

    EXPECT_OK(mnemo_instance_list_users(instance, &json));
    EXPECT_STR(json, "[]");

    EXPECT_OK(mnemo_instance_create_user(instance, "alice", PASSWORD));
    EXPECT_OK(mnemo_instance_create_user(instance, "bob", NULL));
    EXPECT(mnemo_instance_create_user(instance, "alice", NULL), MNEMO_STATUS_ALREADY_EXISTS);
    EXPECT(mnemo_instance_create_user(instance, "bob", "other"), MNEMO_STATUS_ALREADY_EXISTS);
    EXPECT(mnemo_instance_create_user(instance, "", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(instance, long_name, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(instance, "tab\tname", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(instance, "carol", ""), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(instance, NULL, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(instance, BAD_UTF8, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(instance, "carol", BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_create_user(NULL, "carol", NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* None of the failures added anyone. */
    EXPECT_OK(mnemo_instance_list_users(instance, &json));
    EXPECT_STR(json, "[\"alice\",\"bob\"]");
    EXPECT(mnemo_instance_list_users(NULL, &json), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_list_users(instance, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    mnemo_user *user = (mnemo_user *)&json;
    EXPECT(mnemo_instance_login(instance, "alice", "wrong password", &user), MNEMO_STATUS_AUTH_FAILED);
    CHECK(user == NULL);
    EXPECT(mnemo_instance_login(instance, "nobody", PASSWORD, &user), MNEMO_STATUS_AUTH_FAILED);
    EXPECT(mnemo_instance_login(instance, "alice", NULL, &user), MNEMO_STATUS_AUTH_FAILED);
    EXPECT(mnemo_instance_login(instance, "bob", "unexpected", &user), MNEMO_STATUS_AUTH_FAILED);
    EXPECT(mnemo_instance_login(instance, NULL, NULL, &user), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_login(instance, BAD_UTF8, NULL, &user), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_login(instance, "alice", BAD_UTF8, &user), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_login(instance, "bob", NULL, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_login(NULL, "bob", NULL, &user), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(user == NULL);

    EXPECT_OK(mnemo_instance_login(instance, "alice", PASSWORD, &user));
    CHECK(user != NULL);
    EXPECT_OK(mnemo_user_logout(user));
    EXPECT_OK(mnemo_instance_login(instance, "bob", NULL, &user));
    EXPECT_OK(mnemo_user_logout(user));
    EXPECT(mnemo_user_logout(NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    mnemo_instance_free(instance);
}

static void test_databases(void) {
    mnemo_instance *instance = open_memory_instance();
    mnemo_user *user = NULL;
    mnemo_database *db = NULL;
    char *text = NULL;

    EXPECT_OK(mnemo_instance_create_user(instance, "dana", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "dana", NULL, &user));

    EXPECT(mnemo_user_create_db(user, "", &db), MNEMO_STATUS_INVALID_ARGUMENT);
    char long_name[257];
    memset(long_name, 'n', 256);
    long_name[256] = '\0';
    EXPECT(mnemo_user_create_db(user, long_name, &db), MNEMO_STATUS_INVALID_ARGUMENT);
    long_name[255] = '\0';
    EXPECT_OK(mnemo_user_create_db(user, long_name, &db));
    mnemo_db_free(db);
    db = NULL;
    EXPECT(mnemo_user_create_db(user, NULL, &db), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_create_db(user, BAD_UTF8, &db), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_create_db(user, "notes", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_create_db(NULL, "notes", &db), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    EXPECT_OK(mnemo_user_create_db(user, "notes", &db));

    EXPECT_OK(mnemo_db_id(db, &text));
    CHECK(text && strncmp(text, "sha256:", 7) == 0 && strlen(text) == 7 + 64);
    mnemo_string_free(text);
    text = NULL;
    EXPECT(mnemo_db_id(NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_id(db, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* Two databases of the same name are two databases. */
    mnemo_database *twin = NULL;
    char *id1 = NULL, *id2 = NULL;
    EXPECT_OK(mnemo_user_create_db(user, "notes", &twin));
    EXPECT_OK(mnemo_db_id(db, &id1));
    EXPECT_OK(mnemo_db_id(twin, &id2));
    CHECK(id1 && id2 && strcmp(id1, id2) != 0);
    mnemo_string_free(id1);
    mnemo_string_free(id2);

    EXPECT(mnemo_db_get(db, "todo", "milk", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_set(db, "todo", "milk", " { \"qty\" : 2, \"done\" : false } "));
    EXPECT_OK(mnemo_db_get(db, "todo", "milk", &text));
    EXPECT_STR(text, "{\"done\":false,\"qty\":2}");
    EXPECT_OK(mnemo_db_set(db, "todo", "milk", "true"));
    EXPECT_OK(mnemo_db_get(db, "todo", "milk", &text));
    EXPECT_STR(text, "true");
    EXPECT(mnemo_db_get(twin, "todo", "milk", &text), MNEMO_STATUS_NOT_FOUND);

    /* Every JSON kind, and UTF-8 in keys and values. */
    EXPECT_OK(mnemo_db_set(db, "kinds", "null", "null"));
    EXPECT_OK(mnemo_db_set(db, "kinds", "number", "-1.5e3"));
    EXPECT_OK(mnemo_db_set(db, "kinds", "string", "\"h\\u00e9llo \\ud83d\\ude00\""));
    EXPECT_OK(mnemo_db_set(db, "kinds", "array", "[1, [2], {}]"));
    EXPECT_OK(mnemo_db_set(db, "kinds", "cl\xc3\xa9", "\"v\xc3\xa4lue\""));
    EXPECT_OK(mnemo_db_get(db, "kinds", "null", &text));
    EXPECT_STR(text, "null");
    EXPECT_OK(mnemo_db_get(db, "kinds", "number", &text));
    EXPECT_STR(text, "-1.5e3");
    EXPECT_OK(mnemo_db_get(db, "kinds", "string", &text));
    EXPECT_STR(text, "\"h\xc3\xa9llo \xf0\x9f\x98\x80\"");
    EXPECT_OK(mnemo_db_get(db, "kinds", "array", &text));
    EXPECT_STR(text, "[1,[2],{}]");
    EXPECT_OK(mnemo_db_get(db, "kinds", "cl\xc3\xa9", &text));
    EXPECT_STR(text, "\"v\xc3\xa4lue\"");

    /* Bad input stores nothing and leaves the old value. */
    EXPECT(mnemo_db_set(db, "todo", "milk", "{not json"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", "milk", ""), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", "milk", "1 2"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "_settings", "name", "\"hijack\""), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "_anything", "k", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "", "k", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", "", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, BAD_UTF8, "k", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", BAD_UTF8, "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", "milk", BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(NULL, "todo", "milk", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, NULL, "milk", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", NULL, "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set(db, "todo", "milk", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_db_get(db, "todo", "milk", &text));
    EXPECT_STR(text, "true");
    EXPECT(mnemo_db_get(db, "todo", "", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get(db, BAD_UTF8, "milk", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get(db, "todo", BAD_UTF8, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get(NULL, "todo", "milk", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get(db, NULL, "milk", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get(db, "todo", NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get(db, "todo", "milk", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(text == NULL);

    /* After logout the database stays readable but refuses writes. */
    EXPECT_OK(mnemo_user_logout(user));
    EXPECT(mnemo_db_set(db, "todo", "eggs", "1"), MNEMO_STATUS_LOGGED_OUT);
    EXPECT(mnemo_db_get(db, "todo", "eggs", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_get(db, "todo", "milk", &text));
    EXPECT_STR(text, "true");

    mnemo_db_free(twin);
    mnemo_db_free(db);
    mnemo_instance_free(instance);
}

static void test_sync_handles(void) {
    mnemo_instance *instance = open_memory_instance();
    mnemo_sync *sync = NULL, *again = NULL;
    EXPECT(mnemo_instance_sync(instance, &sync), MNEMO_STATUS_SYNC_DISABLED);
    CHECK(sync == NULL);
    EXPECT(mnemo_instance_enable_sync(NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_instance_enable_sync(instance));
    EXPECT_OK(mnemo_instance_enable_sync(instance));
    EXPECT_OK(mnemo_instance_sync(instance, &sync));
    EXPECT_OK(mnemo_instance_sync(instance, &again));
    CHECK(sync != NULL && again != NULL && sync != again);
    mnemo_sync_free(sync);
    EXPECT(mnemo_instance_sync(NULL, &sync), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_sync(instance, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(sync == NULL);
    /* A reference outlives the instance handle. */
    mnemo_instance_free(instance);
    mnemo_sync_free(again);
}

int main(void) {
    test_library();
    test_backend();
    test_panic_inside_an_exported_function();
    test_sqlite_backend();
    test_instance_open();
    test_users();
    test_databases();
    test_sync_handles();
    return report("c abi");
}
