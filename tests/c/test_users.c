/* Tests of accounts and user sessions through the C ABI: databases a user tracks, keys,
 * signing keys, passwords, and administration. */
#include <stdlib.h>

#include "check.h"

static const char BAD_UTF8[] = "\xff\xfe";
static const char UNKNOWN_DB[] = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

static mnemo_instance *open_instance(void) {
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open_with_argon2(backend, 19456, 2, 1, &instance));
    return instance;
}

/* The value of `"field":"` in a JSON text, copied (the tests' JSON is simple). */
static char *json_string_after(const char *json, const char *field) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", field);
    const char *at = json ? strstr(json, pattern) : NULL;
    if (!at) return NULL;
    at += strlen(pattern);
    size_t len = (size_t)(strchr(at, '"') - at);
    char *out = (char *)malloc(len + 1);
    memcpy(out, at, len);
    out[len] = '\0';
    return out;
}

static void test_argon2_options(void) {
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open_with_argon2(backend, 1024, 2, 1, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open_with_argon2(backend, 19456, 1, 1, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open_with_argon2(backend, 19456, 2, 0, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_open_with_argon2(NULL, 19456, 2, 1, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open_with_argon2(backend, 19456, 2, 1, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(instance == NULL);
    /* Above the maximum: a login would exhaust memory or take minutes. */
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open_with_argon2(backend, 4294967295u, 2, 1, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT(mnemo_instance_open_with_argon2(backend, 19456, 4294967295u, 1, &instance), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open_with_argon2(backend, 32768, 3, 1, &instance));
    mnemo_instance_free(instance);
}

static void test_databases_of_a_user(void) {
    mnemo_instance *instance = open_instance();
    mnemo_user *alice = NULL;
    mnemo_database *first = NULL, *second = NULL, *todo = NULL, *found = NULL;
    char *text = NULL, *id1 = NULL, *id2 = NULL;

    EXPECT_OK(mnemo_instance_create_user(instance, "alice", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT_OK(mnemo_user_list_dbs(alice, &text));
    EXPECT_STR(text, "[]");

    EXPECT_OK(mnemo_user_create_db(alice, "notes", &first));
    EXPECT_OK(mnemo_user_create_db(alice, "todo", &todo));
    EXPECT_OK(mnemo_user_create_db(alice, "notes", &second));
    EXPECT_OK(mnemo_db_id(first, &id1));
    EXPECT_OK(mnemo_db_id(second, &id2));
    EXPECT_OK(mnemo_db_set(first, "s", "which", "\"first\""));

    EXPECT_OK(mnemo_user_list_dbs(alice, &text));
    CHECK(text && strstr(text, id1) && strstr(text, id2) && strstr(text, "\"todo\""));
    CHECK(text && strstr(text, "\"notes\"") < strstr(text, "\"todo\""));
    mnemo_string_free(text);

    /* Same name twice: the one tracked first. */
    EXPECT_OK(mnemo_user_find_db(alice, "notes", &found));
    EXPECT_OK(mnemo_db_get(found, "s", "which", &text));
    EXPECT_STR(text, "\"first\"");
    mnemo_db_free(found);
    EXPECT(mnemo_user_find_db(alice, "missing", &found), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_find_db(alice, "", &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_find_db(alice, NULL, &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_find_db(alice, BAD_UTF8, &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_find_db(NULL, "notes", &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_find_db(alice, "notes", NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    EXPECT_OK(mnemo_user_load_db(alice, id2, &found));
    EXPECT(mnemo_db_get(found, "s", "which", &text), MNEMO_STATUS_NOT_FOUND);
    mnemo_db_free(found);
    found = NULL;
    EXPECT(mnemo_user_load_db(alice, UNKNOWN_DB, &found), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_load_db(alice, "sha256:xyz", &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_load_db(alice, BAD_UTF8, &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_load_db(alice, NULL, &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_load_db(NULL, id1, &found), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_load_db(alice, id1, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(found == NULL);
    EXPECT(mnemo_user_list_dbs(NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_list_dbs(alice, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* Another session of the same user sees the same tracked databases. */
    mnemo_user *again = NULL;
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &again));
    EXPECT_OK(mnemo_user_find_db(again, "todo", &found));
    mnemo_db_free(found);
    EXPECT_OK(mnemo_user_logout(again));

    mnemo_string_free(id1);
    mnemo_string_free(id2);
    mnemo_db_free(first);
    mnemo_db_free(second);
    mnemo_db_free(todo);
    EXPECT_OK(mnemo_user_logout(alice));
    mnemo_instance_free(instance);
}

static void test_keys_and_sharing(void) {
    mnemo_instance *instance = open_instance();
    mnemo_user *alice = NULL, *bob = NULL;
    mnemo_database *shared = NULL, *bobs_view = NULL;
    char *text = NULL, *db_id = NULL, *key = NULL, *bob_key = NULL, *laptop = NULL;

    EXPECT_OK(mnemo_instance_create_user(instance, "alice", NULL));
    EXPECT_OK(mnemo_instance_create_user(instance, "bob", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "alice", NULL, &alice));
    EXPECT_OK(mnemo_instance_login(instance, "bob", NULL, &bob));

    EXPECT_OK(mnemo_user_list_keys(alice, &text));
    CHECK(text && strstr(text, "\"default\":true") && !strstr(text, "\"default\":false"));
    char *default_key = json_string_after(text, "pubkey");
    mnemo_string_free(text);

    EXPECT_OK(mnemo_user_add_private_key(alice, "laptop", &laptop));
    CHECK(laptop && strncmp(laptop, "ed25519:", 8) == 0);
    EXPECT_OK(mnemo_user_add_private_key(alice, NULL, &key));
    mnemo_string_free(key);
    char long_name[300];
    memset(long_name, 'n', 299);
    long_name[299] = '\0';
    EXPECT(mnemo_user_add_private_key(alice, long_name, &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_add_private_key(alice, BAD_UTF8, &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_add_private_key(NULL, "x", &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_add_private_key(alice, "x", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_user_list_keys(alice, &text));
    CHECK(text && laptop && strstr(text, laptop) && strstr(text, "\"name\":\"laptop\"") && strstr(text, "\"name\":null"));
    mnemo_string_free(text);
    EXPECT(mnemo_user_list_keys(NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_list_keys(alice, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* The creator signs with the default key. */
    EXPECT_OK(mnemo_user_create_db(alice, "shared", &shared));
    EXPECT_OK(mnemo_db_id(shared, &db_id));
    EXPECT_OK(mnemo_user_get_signing_key(alice, db_id, &key));
    EXPECT_STR(key, default_key ? default_key : "?");
    EXPECT(mnemo_user_get_signing_key(alice, UNKNOWN_DB, &key), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_get_signing_key(alice, "nope", &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_get_signing_key(alice, NULL, &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_get_signing_key(NULL, db_id, &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_get_signing_key(alice, db_id, NULL), MNEMO_STATUS_INVALID_ARGUMENT);

    /* Bob has no permission: no signing key, and the database does not open for him (the
     * same answer as for a database this instance does not hold). */
    EXPECT(mnemo_user_get_signing_key(bob, db_id, &key), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_load_db(bob, db_id, &bobs_view), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_load_db(bob, UNKNOWN_DB, &bobs_view), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_db_set(shared, "s", "k", "1"));

    /* Alice grants Bob's key write: then Bob signs with it and can write. */
    EXPECT_OK(mnemo_user_list_keys(bob, &text));
    bob_key = json_string_after(text, "pubkey");
    mnemo_string_free(text);
    EXPECT_OK(mnemo_db_grant(shared, bob_key, "write"));
    EXPECT_OK(mnemo_user_get_signing_key(bob, db_id, &key));
    EXPECT_STR(key, bob_key ? bob_key : "?");
    EXPECT_OK(mnemo_user_load_db(bob, db_id, &bobs_view));
    EXPECT_OK(mnemo_db_set(bobs_view, "s", "k", "3"));
    EXPECT(mnemo_db_grant(bobs_view, laptop, "read"), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT_OK(mnemo_db_get(shared, "s", "k", &text));
    EXPECT_STR(text, "3");
    /* Bob sees it in his list now. */
    EXPECT_OK(mnemo_user_list_dbs(bob, &text));
    CHECK(text && strstr(text, db_id));
    mnemo_string_free(text);

    mnemo_db_free(bobs_view);
    mnemo_db_free(shared);
    free(default_key);
    free(bob_key);
    mnemo_string_free(laptop);
    mnemo_string_free(db_id);
    EXPECT_OK(mnemo_user_logout(alice));
    EXPECT_OK(mnemo_user_logout(bob));
    mnemo_instance_free(instance);
}

static void test_passwords(void) {
    mnemo_instance *instance = open_instance();
    mnemo_user *user = NULL;
    mnemo_database *db = NULL;
    char *text = NULL;

    EXPECT_OK(mnemo_instance_create_user(instance, "carol", "first secret"));
    EXPECT_OK(mnemo_instance_login(instance, "carol", "first secret", &user));
    EXPECT_OK(mnemo_user_create_db(user, "diary", &db));
    EXPECT_OK(mnemo_db_set(db, "days", "monday", "\"rain\""));
    EXPECT(mnemo_user_change_password(user, "wrong", "second secret"), MNEMO_STATUS_AUTH_FAILED);
    EXPECT(mnemo_user_change_password(user, NULL, "second secret"), MNEMO_STATUS_AUTH_FAILED);
    EXPECT(mnemo_user_change_password(user, "first secret", ""), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_change_password(user, BAD_UTF8, "x"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_change_password(NULL, "first secret", "x"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_user_change_password(user, "first secret", "second secret"));
    EXPECT_OK(mnemo_user_logout(user));
    mnemo_db_free(db);

    EXPECT(mnemo_instance_login(instance, "carol", "first secret", &user), MNEMO_STATUS_AUTH_FAILED);
    EXPECT_OK(mnemo_instance_login(instance, "carol", "second secret", &user));
    /* Keys still work: the database is still hers to write. */
    EXPECT_OK(mnemo_user_find_db(user, "diary", &db));
    EXPECT_OK(mnemo_db_set(db, "days", "tuesday", "\"sun\""));
    EXPECT_OK(mnemo_db_get(db, "days", "monday", &text));
    EXPECT_STR(text, "\"rain\"");
    /* Dropping the password makes the account passwordless. */
    EXPECT_OK(mnemo_user_change_password(user, "second secret", NULL));
    EXPECT_OK(mnemo_user_logout(user));
    EXPECT(mnemo_instance_login(instance, "carol", "second secret", &user), MNEMO_STATUS_AUTH_FAILED);
    EXPECT_OK(mnemo_instance_login(instance, "carol", NULL, &user));
    EXPECT_OK(mnemo_user_logout(user));
    mnemo_db_free(db);
    mnemo_instance_free(instance);
}

static void test_administration(void) {
    mnemo_instance *instance = open_instance();
    mnemo_user *admin = NULL, *bob = NULL;
    char *text = NULL;

    EXPECT_OK(mnemo_instance_create_user(instance, "root", NULL));
    EXPECT_OK(mnemo_instance_create_user(instance, "bob", "bob's pw"));
    EXPECT_OK(mnemo_instance_login(instance, "root", NULL, &admin));
    EXPECT_OK(mnemo_instance_login(instance, "bob", "bob's pw", &bob));

    EXPECT_OK(mnemo_user_admin_list_users(admin, &text));
    EXPECT_STR(text, "[{\"admin\":false,\"status\":\"active\",\"username\":\"bob\"},"
                     "{\"admin\":true,\"status\":\"active\",\"username\":\"root\"}]");
    EXPECT(mnemo_user_admin_list_users(bob, &text), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_user_admin_disable(bob, "root"), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_user_admin_delete(bob, "root"), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_user_admin_disable(admin, "root"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_delete(admin, "root"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_disable(admin, "nobody"), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_user_admin_disable(admin, ""), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(mnemo_last_error_message(), "username") != NULL);
    EXPECT_OK(mnemo_user_admin_enable(admin, "root")); /* already enabled: nothing changes */
    EXPECT(mnemo_user_admin_disable(admin, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_disable(NULL, "bob"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_enable(admin, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_delete(admin, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_list_users(admin, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_user_admin_list_users(NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_user_logout(bob));

    /* Disabled: the right password is refused (and a wrong one still says AUTH_FAILED). */
    EXPECT_OK(mnemo_user_admin_disable(admin, "bob"));
    EXPECT(mnemo_instance_login(instance, "bob", "bob's pw", &bob), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_instance_login(instance, "bob", "guess", &bob), MNEMO_STATUS_AUTH_FAILED);
    EXPECT_OK(mnemo_user_admin_enable(admin, "bob"));
    EXPECT_OK(mnemo_instance_login(instance, "bob", "bob's pw", &bob));
    EXPECT_OK(mnemo_user_logout(bob));

    /* Deleted: gone, and the name is free again. A session still open can no longer change
     * the account. */
    EXPECT_OK(mnemo_instance_login(instance, "bob", "bob's pw", &bob));
    EXPECT_OK(mnemo_user_admin_delete(admin, "bob"));
    mnemo_database *late = NULL;
    EXPECT(mnemo_user_create_db(bob, "late", &late), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_user_add_private_key(bob, NULL, &text), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT_OK(mnemo_user_logout(bob));
    EXPECT(mnemo_instance_login(instance, "bob", "bob's pw", &bob), MNEMO_STATUS_AUTH_FAILED);
    EXPECT(mnemo_user_admin_delete(admin, "bob"), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_instance_list_users(instance, &text));
    EXPECT_STR(text, "[\"root\"]");
    EXPECT_OK(mnemo_instance_create_user(instance, "bob", NULL));
    EXPECT_OK(mnemo_instance_login(instance, "bob", NULL, &bob));
    EXPECT_OK(mnemo_user_logout(bob));
    EXPECT_OK(mnemo_user_logout(admin));
    mnemo_instance_free(instance);
}

int main(void) {
    test_argon2_options();
    test_databases_of_a_user();
    test_keys_and_sharing();
    test_passwords();
    test_administration();
    return report("c users");
}
