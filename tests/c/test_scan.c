/* Ordered scans and generated keys through the C ABI: pages with `after` and `limit`,
 * prefix isolation, the cursor, bad and hostile arguments, mnemo_db_insert. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "sides.h"

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
    EXPECT_OK(mnemo_instance_create_user(f.instance, "sam", NULL));
    EXPECT_OK(mnemo_instance_login(f.instance, "sam", NULL, &f.user));
    EXPECT_OK(mnemo_user_create_db(f.user, "scans", &f.db));
    return f;
}

static void close_fixture(fixture *f) {
    mnemo_db_free(f->db);
    if (f->user) EXPECT_OK(mnemo_user_logout(f->user));
    mnemo_instance_free(f->instance);
}

/* Appends `text` to the growing string `buf` of capacity `cap`. */
static void append(char *buf, size_t cap, const char *text) {
    size_t used = strlen(buf);
    size_t add = strlen(text);
    if (used + add < cap) memcpy(buf + used, text, add + 1);
}

/* Sets "k000" .. "k<n-1>" to {"n":i} in store "s", in a scrambled order, in one commit. */
static void set_numbered(mnemo_database *db, int n) {
    mnemo_txn *txn = NULL;
    EXPECT_OK(mnemo_db_begin(db, &txn));
    for (int j = 0; j < n; j++) {
        int i = (j * 7) % n; /* 7 is prime to the counts used: every i once */
        char key[16], value[32];
        snprintf(key, sizeof key, "k%03d", i);
        snprintf(value, sizeof value, "{\"n\": %d}", i);
        EXPECT_OK(mnemo_txn_set(txn, "s", key, value));
    }
    EXPECT_OK(mnemo_txn_commit(txn, NULL));
}

/* The JSON page mnemo_db_scan should give for keys k<from> .. k<to-1>. */
static char *expected_page(int from, int to) {
    size_t cap = 64 + (size_t)(to - from) * 32;
    char *buf = (char *)malloc(cap);
    buf[0] = '\0';
    append(buf, cap, "[");
    for (int i = from; i < to; i++) {
        char pair[48];
        snprintf(pair, sizeof pair, "%s[\"k%03d\",{\"n\":%d}]", i > from ? "," : "", i, i);
        append(buf, cap, pair);
    }
    append(buf, cap, "]");
    return buf;
}

/* The key of the last pair of a page of plain ASCII keys (NULL for "[]"). */
static char *last_key(const char *page) {
    const char *at = NULL;
    for (const char *p = strstr(page, "[\""); p; p = strstr(p + 1, "[\"")) at = p;
    if (!at) return NULL;
    at += 2;
    size_t len = (size_t)(strchr(at, '"') - at);
    char *key = (char *)malloc(len + 1);
    memcpy(key, at, len);
    key[len] = '\0';
    return key;
}

static void test_pages_with_after_and_limit(void) {
    fixture f = open_fixture();
    set_numbered(f.db, 250);
    char *after = NULL;
    int from = 0, pages = 0;
    for (;;) {
        char *page = NULL;
        EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, after, 100, &page));
        if (!page) break;
        int to = from + 100 > 250 ? 250 : from + 100;
        char *want = expected_page(from, to);
        CHECK(strcmp(page, want) == 0);
        if (strcmp(page, want) != 0) fprintf(stderr, "  page %d: got %.80s...\n", pages, page);
        free(want);
        free(after);
        after = last_key(page);
        mnemo_string_free(page);
        pages++;
        if (!after || to == 250) break;
        from = to;
    }
    CHECK(pages == 3);
    CHECK(after != NULL && strcmp(after, "k249") == 0);
    /* After the last key: an empty page. */
    char *page = NULL;
    EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, after, 100, &page));
    EXPECT_STR(page, "[]");
    free(after);
    /* No limit: all 250 in one page. */
    EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, NULL, 0, &page));
    char *want = expected_page(0, 250);
    CHECK(page != NULL && strcmp(page, want) == 0);
    mnemo_string_free(page);
    free(want);
    /* Deleted keys are not returned, and do not count towards the limit. */
    EXPECT_OK(mnemo_db_delete(f.db, "s", "k001"));
    EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, NULL, 2, &page));
    EXPECT_STR(page, "[[\"k000\",{\"n\":0}],[\"k002\",{\"n\":2}]]");
    close_fixture(&f);
}

static void test_prefix_isolation(void) {
    fixture f = open_fixture();
    const char *keys[] = {"users", "user0", "user/b", "user", "user/a", "usea", "user/"};
    for (int i = 0; i < 7; i++) {
        char value[8];
        snprintf(value, sizeof value, "%d", i);
        EXPECT_OK(mnemo_db_set(f.db, "s", keys[i], value));
    }
    EXPECT_OK(mnemo_db_set(f.db, "other", "user/c", "9"));
    char *page = NULL;
    EXPECT_OK(mnemo_db_scan(f.db, "s", "user/", NULL, 0, &page));
    EXPECT_STR(page, "[[\"user/\",6],[\"user/a\",4],[\"user/b\",2]]");
    EXPECT_OK(mnemo_db_scan(f.db, "s", "users", NULL, 0, &page));
    EXPECT_STR(page, "[[\"users\",0]]");
    EXPECT_OK(mnemo_db_scan(f.db, "s", "user0", NULL, 0, &page));
    EXPECT_STR(page, "[[\"user0\",1]]");
    EXPECT_OK(mnemo_db_scan(f.db, "s", "user/", "user/", 1, &page));
    EXPECT_STR(page, "[[\"user/a\",4]]");
    EXPECT_OK(mnemo_db_scan(f.db, "s", "user/", "user/b", 0, &page));
    EXPECT_STR(page, "[]");
    const char *all = "[[\"usea\",5],[\"user\",3],[\"user/\",6],[\"user/a\",4],[\"user/b\",2],"
                      "[\"user0\",1],[\"users\",0]]";
    EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, NULL, 0, &page));
    EXPECT_STR(page, all);
    EXPECT_OK(mnemo_db_scan(f.db, "s", "", NULL, 0, &page));
    EXPECT_STR(page, all);
    EXPECT_OK(mnemo_db_scan(f.db, "other", "user", NULL, 0, &page));
    EXPECT_STR(page, "[[\"user/c\",9]]");
    EXPECT_OK(mnemo_db_scan(f.db, "none", NULL, NULL, 0, &page));
    EXPECT_STR(page, "[]");
    close_fixture(&f);
}

/* Keys with a quote and a non-ASCII letter, values that JSON-escape: 600 of them, so the
 * cursor reads three pages. */
static void test_cursor_yields_every_key_once_in_order(void) {
    fixture f = open_fixture();
    mnemo_txn *txn = NULL;
    EXPECT_OK(mnemo_db_begin(f.db, &txn));
    for (int j = 0; j < 600; j++) {
        int i = (j * 7) % 600;
        char key[32], value[48];
        snprintf(key, sizeof key, "q\"\xc3\xa9%03d", i);
        snprintf(value, sizeof value, "\"say \\\"hi\\\" %d\"", i);
        EXPECT_OK(mnemo_txn_set(txn, "s", key, value));
    }
    EXPECT_OK(mnemo_db_set(f.db, "s", "r", "true")); /* another prefix */
    EXPECT_OK(mnemo_txn_commit(txn, NULL));

    mnemo_cursor *cursor = NULL;
    EXPECT_OK(mnemo_db_cursor(f.db, "s", "q", NULL, &cursor));
    /* The cursor holds its own reference: it outlives the database handle. */
    mnemo_db_free(f.db);
    f.db = NULL;
    int seen = 0, in_order = 1, exact = 1;
    for (;;) {
        char *key = (char *)"sentinel", *value = (char *)"sentinel";
        mnemo_status st = mnemo_cursor_next(cursor, &key, &value);
        CHECK(st == MNEMO_STATUS_OK);
        if (st != MNEMO_STATUS_OK) break;
        if (!key) {
            CHECK(value == NULL);
            break;
        }
        char want_key[32], want_value[48];
        snprintf(want_key, sizeof want_key, "q\"\xc3\xa9%03d", seen);
        snprintf(want_value, sizeof want_value, "\"say \\\"hi\\\" %d\"", seen);
        if (strcmp(key, want_key) != 0 || strcmp(value, want_value) != 0) {
            if (exact) fprintf(stderr, "  cursor gave %s = %s, expected %s = %s\n", key, value, want_key, want_value);
            exact = 0;
        }
        in_order &= seen < 600;
        mnemo_string_free(key);
        mnemo_string_free(value);
        seen++;
    }
    CHECK(seen == 600);
    CHECK(in_order);
    CHECK(exact);
    /* At the end it stays at the end. */
    char *key = NULL, *value = NULL;
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    CHECK(key == NULL && value == NULL);
    mnemo_cursor_free(cursor);

    /* With `after`, from the middle of a page. */
    EXPECT_OK(mnemo_user_find_db(f.user, "scans", &f.db));
    EXPECT_OK(mnemo_db_cursor(f.db, "s", NULL, "q\"\xc3\xa9" "598", &cursor));
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    EXPECT_STR(key, "q\"\xc3\xa9" "599");
    EXPECT_STR(value, "\"say \\\"hi\\\" 599\"");
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    EXPECT_STR(key, "r");
    EXPECT_STR(value, "true");
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    CHECK(key == NULL && value == NULL);
    mnemo_cursor_free(cursor);
    close_fixture(&f);
}

static void test_cursor_over_an_empty_store(void) {
    fixture f = open_fixture();
    mnemo_cursor *cursor = NULL;
    EXPECT_OK(mnemo_db_cursor(f.db, "empty", NULL, NULL, &cursor));
    CHECK(cursor != NULL);
    char *key = (char *)"sentinel", *value = (char *)"sentinel";
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    CHECK(key == NULL && value == NULL);
    mnemo_cursor_free(cursor);
    /* A prefix nothing has. */
    EXPECT_OK(mnemo_db_set(f.db, "s", "a", "1"));
    EXPECT_OK(mnemo_db_cursor(f.db, "s", "b", NULL, &cursor));
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    CHECK(key == NULL && value == NULL);
    mnemo_cursor_free(cursor);
    close_fixture(&f);
}

/* A cursor made while its user could read stops handing out keys, even those of the page it
 * holds, once that read is revoked (before: the rest of the page, and for a short store every
 * key then the end, never the refusal). */
static void test_cursor_stops_once_read_is_revoked(void) {
    fixture f = open_fixture();
    set_numbered(f.db, 5);
    mnemo_user *reader = NULL;
    mnemo_database *readers_view = NULL;
    mnemo_cursor *cursor = NULL;
    char *db_id = NULL, *key = NULL, *value = NULL;
    EXPECT_OK(mnemo_instance_create_user(f.instance, "reader", NULL));
    EXPECT_OK(mnemo_instance_login(f.instance, "reader", NULL, &reader));
    char *reader_key = default_key(reader);
    EXPECT_OK(mnemo_db_id(f.db, &db_id));
    EXPECT_OK(mnemo_db_grant(f.db, reader_key, "read"));
    EXPECT_OK(mnemo_user_load_db(reader, db_id, &readers_view));
    EXPECT_OK(mnemo_db_cursor(readers_view, "s", NULL, NULL, &cursor));
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    EXPECT_STR(key, "k000");
    mnemo_string_free(key);
    mnemo_string_free(value);
    EXPECT_OK(mnemo_db_revoke(f.db, reader_key));
    for (int again = 0; again < 2; again++) {
        key = value = (char *)"sentinel";
        EXPECT(mnemo_cursor_next(cursor, &key, &value), MNEMO_STATUS_PERMISSION_DENIED);
        CHECK(key == NULL && value == NULL);
    }
    mnemo_cursor_free(cursor);
    mnemo_db_free(readers_view);
    EXPECT_OK(mnemo_user_logout(reader));
    free(reader_key);
    mnemo_string_free(db_id);
    close_fixture(&f);
}

static void test_bad_arguments(void) {
    fixture f = open_fixture();
    EXPECT_OK(mnemo_db_set(f.db, "s", "k", "1"));
    char *page = (char *)"sentinel";
    EXPECT(mnemo_db_scan(NULL, "s", NULL, NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(page == NULL);
    EXPECT(mnemo_db_scan(f.db, NULL, NULL, NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_scan(f.db, "s", NULL, NULL, 0, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_scan(f.db, BAD_UTF8, NULL, NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_scan(f.db, "s", BAD_UTF8, NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_scan(f.db, "s", NULL, BAD_UTF8, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_scan(f.db, "", NULL, NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_scan(f.db, "s", NULL, "", 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(page == NULL);
    /* Reserved stores may be read. */
    EXPECT_OK(mnemo_db_scan(f.db, "_settings", "name", NULL, 0, &page));
    EXPECT_STR(page, "[[\"name\",\"scans\"]]");

    mnemo_cursor *cursor = (mnemo_cursor *)&page; /* a sentinel: must be cleared */
    EXPECT(mnemo_db_cursor(NULL, "s", NULL, NULL, &cursor), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(cursor == NULL);
    EXPECT(mnemo_db_cursor(f.db, NULL, NULL, NULL, &cursor), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_cursor(f.db, "s", NULL, NULL, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_cursor(f.db, "s", BAD_UTF8, NULL, &cursor), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_cursor(f.db, "s", NULL, BAD_UTF8, &cursor), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(cursor == NULL);

    char *key = (char *)"sentinel", *value = (char *)"sentinel";
    EXPECT(mnemo_cursor_next(NULL, &key, &value), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(key == NULL && value == NULL);
    EXPECT_OK(mnemo_db_cursor(f.db, "s", NULL, NULL, &cursor));
    value = (char *)"sentinel";
    EXPECT(mnemo_cursor_next(cursor, NULL, &value), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(value == NULL);
    key = (char *)"sentinel";
    EXPECT(mnemo_cursor_next(cursor, &key, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(key == NULL);
    /* The refused calls did not move the cursor. */
    EXPECT_OK(mnemo_cursor_next(cursor, &key, &value));
    EXPECT_STR(key, "k");
    EXPECT_STR(value, "1");
    mnemo_cursor_free(cursor);
    mnemo_cursor_free(NULL);
    close_fixture(&f);
}

static void test_hostile_arguments(void) {
    fixture f = open_fixture();
    set_numbered(f.db, 10);
    char *page = NULL;
    /* A huge limit is no limit. */
    EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, NULL, SIZE_MAX, &page));
    char *want = expected_page(0, 10);
    CHECK(page != NULL && strcmp(page, want) == 0);
    free(want);
    mnemo_string_free(page);
    /* After beyond every key: U+10FFFF, the greatest character. */
    EXPECT_OK(mnemo_db_scan(f.db, "s", NULL, "\xf4\x8f\xbf\xbf", 5, &page));
    EXPECT_STR(page, "[]");
    EXPECT_OK(mnemo_db_scan(f.db, "s", "\xf4\x8f\xbf\xbf", NULL, 5, &page));
    EXPECT_STR(page, "[]");
    /* Prefixes: 4096 bytes (a key's maximum) match nothing here; 5000 are refused. */
    char *prefix = (char *)malloc(5001);
    memset(prefix, 'k', 5000);
    prefix[5000] = '\0';
    EXPECT(mnemo_db_scan(f.db, "s", prefix, NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(page == NULL);
    mnemo_cursor *cursor = NULL;
    EXPECT(mnemo_db_cursor(f.db, "s", prefix, NULL, &cursor), MNEMO_STATUS_INVALID_ARGUMENT);
    prefix[4096] = '\0';
    EXPECT_OK(mnemo_db_scan(f.db, "s", prefix, NULL, 0, &page));
    EXPECT_STR(page, "[]");
    /* An `after` longer than any key is refused like a key. */
    prefix[4096] = 'k';
    EXPECT(mnemo_db_scan(f.db, "s", NULL, prefix, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    free(prefix);
    /* Invalid UTF-8 after valid bytes. */
    EXPECT(mnemo_db_scan(f.db, "s", "k\xc3", NULL, 0, &page), MNEMO_STATUS_INVALID_ARGUMENT);
    close_fixture(&f);
}

static void test_inserts(void) {
    fixture f = open_fixture();
    char *keys[50];
    for (int i = 0; i < 50; i++) {
        char value[16];
        snprintf(value, sizeof value, "%d", i);
        keys[i] = NULL;
        EXPECT_OK(mnemo_db_insert(f.db, "log", value, &keys[i]));
    }
    int shaped = 1, increasing = 1;
    for (int i = 0; i < 50; i++) {
        if (!keys[i] || strlen(keys[i]) != 32 || strspn(keys[i], "0123456789abcdef") != 32) shaped = 0;
        if (i > 0 && keys[i] && keys[i - 1] && strcmp(keys[i - 1], keys[i]) >= 0) increasing = 0;
    }
    CHECK(shaped);
    CHECK(increasing); /* strictly: so also unique */
    /* A scan gives them back in insertion order, each with its value. */
    char *page = NULL;
    EXPECT_OK(mnemo_db_scan(f.db, "log", NULL, NULL, 0, &page));
    size_t cap = 50 * 48 + 8;
    char *want = (char *)malloc(cap);
    want[0] = '\0';
    append(want, cap, "[");
    for (int i = 0; i < 50; i++) {
        char pair[64];
        snprintf(pair, sizeof pair, "%s[\"%s\",%d]", i ? "," : "", keys[i] ? keys[i] : "", i);
        append(want, cap, pair);
    }
    append(want, cap, "]");
    CHECK(page != NULL && strcmp(page, want) == 0);
    free(want);
    mnemo_string_free(page);
    char *got = NULL;
    EXPECT_OK(mnemo_db_get(f.db, "log", keys[49], &got));
    EXPECT_STR(got, "49");
    for (int i = 0; i < 50; i++) mnemo_string_free(keys[i]);

    char *key = (char *)"sentinel";
    EXPECT(mnemo_db_insert(f.db, "log", "{not json", &key), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(key == NULL);
    EXPECT(mnemo_db_insert(f.db, "_settings", "1", &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_insert(NULL, "log", "1", &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_insert(f.db, NULL, "1", &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_insert(f.db, "log", NULL, &key), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_insert(f.db, "log", "1", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_insert(f.db, "log", BAD_UTF8, &key), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(key == NULL);
    /* Nothing was stored by the refused calls. */
    EXPECT_OK(mnemo_db_scan(f.db, "log", NULL, NULL, 0, &page));
    CHECK(page != NULL && strlen(page) > 2 && strstr(page, "],[") != NULL);
    size_t pairs = 0;
    for (const char *p = page; p && (p = strstr(p, "[\"")) != NULL; p++) pairs++;
    CHECK(pairs == 50);
    mnemo_string_free(page);
    close_fixture(&f);
}

/* Twelve values of 1 MiB: the cursor reads them a few at a time (a page holds about 4 MiB,
 * not 256 such values) and still yields every one, whole and in order. */
static void test_cursor_yields_every_large_value(void) {
    fixture f = open_fixture();
    enum { COUNT = 12, SIZE = 1 << 20 };
    char *value = (char *)malloc(SIZE + 3);
    CHECK(value != NULL);
    if (!value) return;
    for (int i = 0; i < COUNT; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%02d", i);
        value[0] = '"';
        memset(value + 1, 'a' + i, SIZE);
        value[SIZE + 1] = '"';
        value[SIZE + 2] = '\0';
        EXPECT_OK(mnemo_db_set(f.db, "big", key, value));
    }
    free(value);
    mnemo_cursor *cursor = NULL;
    EXPECT_OK(mnemo_db_cursor(f.db, "big", NULL, NULL, &cursor));
    int seen = 0, exact = 1;
    for (;;) {
        char *key = NULL, *found = NULL;
        mnemo_status st = mnemo_cursor_next(cursor, &key, &found);
        CHECK(st == MNEMO_STATUS_OK);
        if (st != MNEMO_STATUS_OK || !key) break;
        char want_key[16];
        snprintf(want_key, sizeof want_key, "k%02d", seen);
        size_t length = strlen(found);
        exact &= strcmp(key, want_key) == 0 && length == SIZE + 2 && found[1] == 'a' + seen &&
                 found[SIZE] == 'a' + seen;
        mnemo_string_free(key);
        mnemo_string_free(found);
        seen++;
    }
    CHECK(seen == COUNT);
    CHECK(exact);
    mnemo_cursor_free(cursor);
    close_fixture(&f);
}

int main(void) {
    test_pages_with_after_and_limit();
    test_prefix_isolation();
    test_cursor_yields_every_key_once_in_order();
    test_cursor_yields_every_large_value();
    test_cursor_over_an_empty_store();
    test_cursor_stops_once_read_is_revoked();
    test_bad_arguments();
    test_hostile_arguments();
    test_inserts();
    return report("test_scan");
}
