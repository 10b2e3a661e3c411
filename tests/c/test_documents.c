/* Tests of nested documents and history through the C ABI: path writes and reads, two
 * devices editing different fields of one object concurrently, a key's history. */
#include <stdlib.h>

#include "check.h"
#include "sides.h"

static const char BAD_UTF8[] = "\xff\xfe";

static void test_paths(void) {
    side a = open_side("paula");
    mnemo_database *db = NULL;
    char *text = NULL;
    EXPECT_OK(mnemo_user_create_db(a.user, "paths", &db));

    EXPECT_OK(mnemo_db_set_path(db, "people", "p1", "/address/city", "\"Oslo\""));
    EXPECT_OK(mnemo_db_get(db, "people", "p1", &text));
    EXPECT_STR(text, "{\"address\":{\"city\":\"Oslo\"}}");
    EXPECT_OK(mnemo_db_set_path(db, "people", "p1", "/tags", "[\"a\"]"));
    EXPECT_OK(mnemo_db_set_path(db, "people", "p1", "/tags/-", "\"b\""));
    EXPECT_OK(mnemo_db_get_path(db, "people", "p1", "/tags/1", &text));
    EXPECT_STR(text, "\"b\"");
    EXPECT_OK(mnemo_db_get_path(db, "people", "p1", "/address", &text));
    EXPECT_STR(text, "{\"city\":\"Oslo\"}");
    EXPECT_OK(mnemo_db_get_path(db, "people", "p1", "", &text));
    EXPECT_STR(text, "{\"address\":{\"city\":\"Oslo\"},\"tags\":[\"a\",\"b\"]}");

    /* Absent paths and keys, bad pointers, bad arguments. */
    EXPECT(mnemo_db_get_path(db, "people", "p1", "/address/zip", &text), MNEMO_STATUS_NOT_FOUND);
    CHECK(text == NULL);
    EXPECT(mnemo_db_get_path(db, "people", "nobody", "/a", &text), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_db_get_path(db, "people", "p1", "address", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_path(db, "people", "p1", "/~2", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set_path(db, "people", "p1", "/a~", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set_path(db, "people", "p1", "/a", "{"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set_path(db, "_settings", "name", "/a", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set_path(db, "people", "p1", BAD_UTF8, "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set_path(NULL, "people", "p1", "/a", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_set_path(db, "people", "p1", NULL, "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_path(db, "people", "p1", "/a", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_path(db, "people", "p1", NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    /* A token into an array that neither indexes nor appends to it would replace it. */
    EXPECT(mnemo_db_set_path(db, "people", "p1", "/tags/9", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(mnemo_last_error_message(), "'/tags' is an array of 2 elements") != NULL);
    EXPECT(mnemo_db_set_path(db, "people", "p1", "/tags/x", "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    /* 33 tokens is one too many. */
    char deep[128] = "";
    for (int i = 0; i < 33; i++) strcat(deep, "/a");
    EXPECT(mnemo_db_set_path(db, "people", "p1", deep, "1"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_db_get(db, "people", "p1", &text));
    EXPECT_STR(text, "{\"address\":{\"city\":\"Oslo\"},\"tags\":[\"a\",\"b\"]}");

    /* In a transaction, path writes build on the value set in it. */
    mnemo_txn *txn = NULL;
    EXPECT_OK(mnemo_db_begin(db, &txn));
    EXPECT_OK(mnemo_txn_set(txn, "people", "p2", "{\"name\":\"Ola\"}"));
    EXPECT_OK(mnemo_txn_set_path(txn, "people", "p2", "/age", "40"));
    EXPECT(mnemo_txn_set_path(txn, "people", "p2", "bad", "40"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_txn_commit(txn, &text));
    mnemo_string_free(text);
    text = NULL;
    EXPECT_OK(mnemo_db_get(db, "people", "p2", &text));
    EXPECT_STR(text, "{\"age\":40,\"name\":\"Ola\"}");
    EXPECT_OK(mnemo_db_verify(db));

    mnemo_db_free(db);
    close_side(&a);
}

static void test_concurrent_fields_merge(void) {
    side a = open_side("alice"), b = open_side("bob");
    char *addr = NULL, *peer = NULL, *db_id = NULL, *text = NULL;
    mnemo_database *db = NULL, *copy = NULL;
    EXPECT_OK(mnemo_sync_listen(a.sync, "127.0.0.1:0", &addr));
    EXPECT_OK(mnemo_sync_connect(b.sync, addr, &peer));
    EXPECT_OK(mnemo_user_create_db(a.user, "shared", &db));
    EXPECT_OK(mnemo_db_id(db, &db_id));
    char *bob_key = default_key(b.user);
    EXPECT_OK(mnemo_db_grant(db, bob_key, "write"));
    EXPECT_OK(mnemo_db_set(db, "people", "p1", "{\"name\":\"Ann\",\"address\":{\"city\":\"Bergen\"}}"));
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    EXPECT_OK(mnemo_user_load_db(b.user, db_id, &copy));

    /* Concurrent: Alice moves Ann, Bob renames her; neither has seen the other's change. */
    EXPECT_OK(mnemo_db_set_path(db, "people", "p1", "/address/city", "\"Oslo\""));
    EXPECT_OK(mnemo_db_set_path(copy, "people", "p1", "/name", "\"Anne\""));
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    const char *merged = "{\"address\":{\"city\":\"Oslo\"},\"name\":\"Anne\"}";
    EXPECT_OK(mnemo_db_get(db, "people", "p1", &text));
    EXPECT_STR(text, merged);
    EXPECT_OK(mnemo_db_get(copy, "people", "p1", &text));
    EXPECT_STR(text, merged);

    /* History on Bob's side: the two path writes and the first set, newest first. */
    EXPECT_OK(mnemo_db_history(copy, "people", "p1", 0, &text));
    CHECK(text && text[0] == '[' && strstr(text, "\"patch\":{\"/name\":\"Anne\"}") &&
          strstr(text, "\"patch\":{\"/address/city\":\"Oslo\"}") &&
          strstr(text, "\"value\":{\"address\":{\"city\":\"Bergen\"},\"name\":\"Ann\"}"));
    CHECK(text && strstr(text, "\"value\":{") > strstr(text, "\"patch\""));
    mnemo_string_free(text);
    text = NULL;

    free(bob_key);
    mnemo_string_free(addr);
    mnemo_string_free(peer);
    mnemo_string_free(db_id);
    mnemo_db_free(copy);
    mnemo_db_free(db);
    close_side(&b);
    close_side(&a);
}

static void test_history(void) {
    side a = open_side("hanna");
    mnemo_database *db = NULL;
    char *text = NULL, *key = default_key(a.user);
    EXPECT_OK(mnemo_user_create_db(a.user, "history", &db));
    EXPECT_OK(mnemo_db_set(db, "s", "k", "1"));
    EXPECT_OK(mnemo_db_set(db, "s", "k", "2"));
    EXPECT_OK(mnemo_db_delete(db, "s", "k"));
    EXPECT_OK(mnemo_db_set(db, "s", "k", "\"back\""));
    EXPECT_OK(mnemo_db_set(db, "s", "other", "0"));

    EXPECT_OK(mnemo_db_history(db, "s", "k", 0, &text));
    /* Four changes, newest first: "back" (height 4), the delete, 2, 1. */
    const char *back = text ? strstr(text, "\"value\":\"back\"") : NULL;
    const char *deleted = text ? strstr(text, "\"deleted\":true") : NULL;
    const char *two = text ? strstr(text, "\"value\":2") : NULL;
    const char *one = text ? strstr(text, "\"value\":1") : NULL;
    CHECK(back && deleted && two && one && back < deleted && deleted < two && two < one);
    CHECK(text && strstr(text, "\"height\":4") && strstr(text, "\"height\":1"));
    CHECK(text && key && strstr(text, key));
    int objects = 0;
    for (const char *p = text; p && *p; p++) objects += *p == '{';
    CHECK(objects == 4);
    mnemo_string_free(text);
    text = NULL;

    EXPECT_OK(mnemo_db_history(db, "s", "k", 1, &text));
    CHECK(text && strstr(text, "back") && !strstr(text, "deleted"));
    mnemo_string_free(text);
    text = NULL;
    EXPECT_OK(mnemo_db_history(db, "s", "never", 0, &text));
    EXPECT_STR(text, "[]");
    EXPECT(mnemo_db_history(db, "s", "", 0, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_history(db, NULL, "k", 0, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_history(NULL, "s", "k", 0, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_history(db, "s", "k", 0, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    free(key);
    mnemo_db_free(db);
    close_side(&a);
}

int main(void) {
    test_paths();
    test_concurrent_fields_merge();
    test_history();
    return report("test_documents");
}
