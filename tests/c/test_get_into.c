/* Tests of mnemo_db_get_into, the read into a caller's buffer: values that fit, fit exactly
 * or do not fit, length queries, failures (which leave "" and a length of 0), reads after
 * logout and after a revoke, and threads each with their own buffer.
 * Compiled as C11 (dynamic and static link) and as C++17, run plainly and under valgrind. */
#include <pthread.h>
#include <stdlib.h>

#include "check.h"

static const char BAD_UTF8[] = "\xff\xfe";

struct fixture {
    mnemo_instance *instance;
    mnemo_user *user;
    mnemo_database *db;
};

static struct fixture open_fixture(const char *username) {
    struct fixture f = {NULL, NULL, NULL};
    mnemo_backend *backend = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &f.instance));
    EXPECT_OK(mnemo_instance_create_user(f.instance, username, NULL));
    EXPECT_OK(mnemo_instance_login(f.instance, username, NULL, &f.user));
    EXPECT_OK(mnemo_user_create_db(f.user, "notes", &f.db));
    return f;
}

static void close_fixture(struct fixture *f) {
    mnemo_db_free(f->db);
    if (f->user) EXPECT_OK(mnemo_user_logout(f->user));
    mnemo_instance_free(f->instance);
}

/* Whether bytes [from, to) of buf are all 'x' (what the tests fill buffers with). */
static int untouched(const char *buf, size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        if (buf[i] != 'x') return 0;
    return 1;
}

/* The length of `buf`'s string, or `cap` when it has no NUL within `cap` bytes. */
static size_t bounded_len(const char *buf, size_t cap) {
    const char *nul = (const char *)memchr(buf, '\0', cap);
    return nul ? (size_t)(nul - buf) : cap;
}

static void test_fits_exactly_or_not(void) {
    struct fixture f = open_fixture("ann");
    char buf[64];
    size_t len = 99;

    /* "\"hello\"" is 7 bytes: it needs 8 with its NUL. */
    EXPECT_OK(mnemo_db_set(f.db, "s", "k", " \"hello\" "));
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(mnemo_db_get_into(f.db, "s", "k", buf, sizeof buf, &len));
    CHECK(len == 7 && strcmp(buf, "\"hello\"") == 0 && untouched(buf, 8, sizeof buf));

    /* Exact fit: cap == len + 1. */
    memset(buf, 'x', sizeof buf);
    len = 99;
    EXPECT_OK(mnemo_db_get_into(f.db, "s", "k", buf, 8, &len));
    CHECK(len == 7 && strcmp(buf, "\"hello\"") == 0 && untouched(buf, 8, sizeof buf));

    /* One byte short (no room for the NUL): "" and the length, nothing past buf[0]. */
    memset(buf, 'x', sizeof buf);
    len = 99;
    EXPECT(mnemo_db_get_into(f.db, "s", "k", buf, 7, &len), MNEMO_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == 7 && buf[0] == '\0' && untouched(buf, 1, sizeof buf));
    CHECK(strstr(mnemo_last_error_message(), "8 bytes") != NULL);
    memset(buf, 'x', sizeof buf);
    EXPECT(mnemo_db_get_into(f.db, "s", "k", buf, 1, &len), MNEMO_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == 7 && buf[0] == '\0' && untouched(buf, 1, sizeof buf));

    /* Length queries: NULL with 0, or a buffer with 0 (not touched at all). */
    len = 99;
    EXPECT(mnemo_db_get_into(f.db, "s", "k", NULL, 0, &len), MNEMO_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == 7);
    memset(buf, 'x', sizeof buf);
    len = 99;
    EXPECT(mnemo_db_get_into(f.db, "s", "k", buf, 0, &len), MNEMO_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == 7 && untouched(buf, 0, sizeof buf));
    /* NULL with a capacity is a caller's bug, refused. */
    len = 99;
    EXPECT(mnemo_db_get_into(f.db, "s", "k", NULL, 8, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(len == 0);

    /* The empty JSON string, and the shortest values. */
    EXPECT_OK(mnemo_db_set(f.db, "s", "empty", "\"\""));
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(mnemo_db_get_into(f.db, "s", "empty", buf, 3, &len));
    CHECK(len == 2 && strcmp(buf, "\"\"") == 0 && untouched(buf, 3, sizeof buf));
    EXPECT(mnemo_db_get_into(f.db, "s", "empty", buf, 2, &len), MNEMO_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == 2 && buf[0] == '\0');
    EXPECT_OK(mnemo_db_set(f.db, "s", "one", "1"));
    EXPECT_OK(mnemo_db_get_into(f.db, "s", "one", buf, 2, &len));
    CHECK(len == 1 && strcmp(buf, "1") == 0);

    /* UTF-8 in key and value: lengths are bytes. */
    EXPECT_OK(mnemo_db_set(f.db, "s", "cl\xc3\xa9", "\"v\xc3\xa4lue \xf0\x9f\x98\x80\""));
    EXPECT_OK(mnemo_db_get_into(f.db, "s", "cl\xc3\xa9", buf, sizeof buf, &len));
    CHECK(len == 13 && strcmp(buf, "\"v\xc3\xa4lue \xf0\x9f\x98\x80\"") == 0);

    close_fixture(&f);
}

/* A value of 1 MiB: the length query, then a buffer of that size; the same bytes as
 * mnemo_db_get returns. */
static void test_large_value(void) {
    struct fixture f = open_fixture("ben");
    const size_t n = (size_t)1 << 20;
    char *json = (char *)malloc(n + 3);
    char *got = NULL;
    char small[256];
    size_t len = 0;
    CHECK(json != NULL);
    if (!json) return;
    json[0] = '"';
    for (size_t i = 0; i < n; i++) json[1 + i] = (char)('a' + i % 26);
    json[n + 1] = '"';
    json[n + 2] = '\0';
    EXPECT_OK(mnemo_db_set(f.db, "big", "k", json));

    memset(small, 'x', sizeof small);
    EXPECT(mnemo_db_get_into(f.db, "big", "k", small, sizeof small, &len), MNEMO_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == n + 2 && small[0] == '\0' && untouched(small, 1, sizeof small));
    char *buf = (char *)malloc(len + 1);
    CHECK(buf != NULL);
    if (buf) {
        size_t again = 0;
        EXPECT_OK(mnemo_db_get_into(f.db, "big", "k", buf, len + 1, &again));
        CHECK(again == len && bounded_len(buf, len + 1) == len && memcmp(buf, json, len + 1) == 0);
        EXPECT_OK(mnemo_db_get(f.db, "big", "k", &got));
        CHECK(got != NULL && strcmp(got, buf) == 0);
        mnemo_string_free(got);
        free(buf);
    }
    free(json);
    close_fixture(&f);
}

/* Every failure leaves "" in the buffer and 0 in the length. */
static void test_failures(void) {
    struct fixture f = open_fixture("cat");
    char buf[32];
    size_t len = 99;
#define EXPECT_CLEARED(call, want)                                                      \
    do {                                                                              \
        memset(buf, 'x', sizeof buf);                                                 \
        len = 99;                                                                     \
        EXPECT(call, want);                                                           \
        CHECK(buf[0] == '\0' && untouched(buf, 1, sizeof buf));                       \
    } while (0)

    EXPECT_OK(mnemo_db_set(f.db, "s", "k", "1"));
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "s", "missing", buf, sizeof buf, &len), MNEMO_STATUS_NOT_FOUND);
    CHECK(len == 0);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "nostore", "k", buf, sizeof buf, &len), MNEMO_STATUS_NOT_FOUND);
    CHECK(len == 0);
    /* A deleted key. */
    EXPECT_OK(mnemo_db_set(f.db, "s", "gone", "\"soon\""));
    EXPECT_OK(mnemo_db_delete(f.db, "s", "gone"));
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "s", "gone", buf, sizeof buf, &len), MNEMO_STATUS_NOT_FOUND);
    CHECK(len == 0);
    EXPECT(mnemo_db_get_into(f.db, "s", "gone", NULL, 0, &len), MNEMO_STATUS_NOT_FOUND);
    CHECK(len == 0);
    /* Bad arguments. */
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "s", BAD_UTF8, buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(len == 0);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, BAD_UTF8, "k", buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "s", "", buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "", "k", buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_CLEARED(mnemo_db_get_into(NULL, "s", "k", buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(len == 0);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, NULL, "k", buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "s", NULL, buf, sizeof buf, &len), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_CLEARED(mnemo_db_get_into(f.db, "s", "k", buf, sizeof buf, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_db_get_into(f.db, "s", "k", NULL, 0, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
#undef EXPECT_CLEARED

    /* After logout the database stays readable. */
    EXPECT_OK(mnemo_user_logout(f.user));
    f.user = NULL;
    EXPECT(mnemo_db_set(f.db, "s", "k", "2"), MNEMO_STATUS_LOGGED_OUT);
    EXPECT_OK(mnemo_db_get_into(f.db, "s", "k", buf, sizeof buf, &len));
    CHECK(len == 1 && strcmp(buf, "1") == 0);
    close_fixture(&f);
}

/* The text of the first "pubkey" member of a JSON list of keys, copied into `out`. */
static int first_pubkey(const char *json, char *out, size_t cap) {
    const char *p = json ? strstr(json, "\"pubkey\":\"") : NULL;
    if (!p) return 0;
    p += strlen("\"pubkey\":\"");
    const char *end = strchr(p, '"');
    if (!end || (size_t)(end - p) >= cap) return 0;
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return 1;
}

/* A reader whose read grant is revoked gets PERMISSION_DENIED, and "" in its buffer. */
static void test_revoked_reader(void) {
    struct fixture f = open_fixture("dee");
    mnemo_user *eve = NULL;
    mnemo_database *eves_view = NULL;
    char *text = NULL, *db_id = NULL;
    char eve_key[256], buf[32];
    size_t len = 0;
    EXPECT_OK(mnemo_db_set(f.db, "s", "k", "\"shared\""));
    EXPECT_OK(mnemo_instance_create_user(f.instance, "eve", NULL));
    EXPECT_OK(mnemo_instance_login(f.instance, "eve", NULL, &eve));
    EXPECT_OK(mnemo_user_list_keys(eve, &text));
    CHECK(first_pubkey(text, eve_key, sizeof eve_key));
    mnemo_string_free(text);
    EXPECT_OK(mnemo_db_id(f.db, &db_id));
    EXPECT_OK(mnemo_db_grant(f.db, eve_key, "read"));
    EXPECT_OK(mnemo_user_load_db(eve, db_id, &eves_view));
    EXPECT_OK(mnemo_db_get_into(eves_view, "s", "k", buf, sizeof buf, &len));
    CHECK(len == 8 && strcmp(buf, "\"shared\"") == 0);
    EXPECT_OK(mnemo_db_revoke(f.db, eve_key));
    memset(buf, 'x', sizeof buf);
    EXPECT(mnemo_db_get_into(eves_view, "s", "k", buf, sizeof buf, &len), MNEMO_STATUS_PERMISSION_DENIED);
    CHECK(len == 0 && buf[0] == '\0' && untouched(buf, 1, sizeof buf));
    mnemo_db_free(eves_view);
    mnemo_string_free(db_id);
    EXPECT_OK(mnemo_user_logout(eve));
    close_fixture(&f);
}

/* Threads reading one handle at once, each with its own buffer, while values change size:
 * each read is a whole value that was written, or BUFFER_TOO_SMALL with its length. */
#define READERS 4
#define ROUNDS 200

struct reader {
    mnemo_database *db;
    int bad;
    int reads;
};

static void *read_loop(void *arg) {
    struct reader *r = (struct reader *)arg;
    char buf[16];
    for (int i = 0; i < ROUNDS; i++) {
        size_t len = 0;
        mnemo_status st = mnemo_db_get_into(r->db, "s", "k", buf, sizeof buf, &len);
        if (st == MNEMO_STATUS_OK) {
            /* A number of 1 to 15 digits, all ones, whole. */
            if (len == 0 || len >= sizeof buf || strlen(buf) != len || strspn(buf, "1") != len) r->bad++;
        } else if (st == MNEMO_STATUS_BUFFER_TOO_SMALL) {
            if (len < sizeof buf || buf[0] != '\0') r->bad++;
        } else {
            r->bad++;
        }
        r->reads++;
    }
    return NULL;
}

static void test_threads(void) {
    struct fixture f = open_fixture("fay");
    pthread_t threads[READERS];
    struct reader readers[READERS];
    char value[40];
    EXPECT_OK(mnemo_db_set(f.db, "s", "k", "1"));
    for (int i = 0; i < READERS; i++) {
        readers[i].db = f.db;
        readers[i].bad = 0;
        readers[i].reads = 0;
        CHECK(pthread_create(&threads[i], NULL, read_loop, &readers[i]) == 0);
    }
    /* Numbers of 1 to 30 digits: up to 15 fit the readers' 16 bytes, longer ones do not. */
    for (int i = 1; i <= 30; i++) {
        memset(value, '1', (size_t)i);
        value[i] = '\0';
        EXPECT_OK(mnemo_db_set(f.db, "s", "k", value));
    }
    for (int i = 0; i < READERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(readers[i].bad == 0 && readers[i].reads == ROUNDS);
    }
    close_fixture(&f);
}

int main(void) {
    test_fits_exactly_or_not();
    test_large_value();
    test_failures();
    test_revoked_reader();
    test_threads();
    return report("test_get_into");
}
