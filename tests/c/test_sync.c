/* Tests of sync through the C ABI: two instances in one process talking over loopback. */
#include <stdlib.h>

#include "check.h"
#include "sides.h"

static const char BAD_UTF8[] = "\xff\xfe";

static void test_sync_round_trip(void) {
    side a = open_side("alice"), b = open_side("bob");
    char *addr = NULL, *peer = NULL, *device = NULL, *db_id = NULL, *text = NULL, *tips_a = NULL, *tips_b = NULL;
    mnemo_database *db = NULL, *copy = NULL;

    EXPECT_OK(mnemo_sync_listen(a.sync, "127.0.0.1:0", &addr));
    CHECK(addr && strncmp(addr, "127.0.0.1:", 10) == 0);
    EXPECT_OK(mnemo_sync_connect(b.sync, addr, &peer));
    EXPECT_OK(mnemo_instance_device_id(a.instance, &device));
    CHECK(peer && device && strcmp(peer, device) == 0);

    /* A second listener, stopped: its port is refused, then taken again. */
    char *second = NULL, *again = NULL, *refused = NULL;
    EXPECT_OK(mnemo_sync_listen(a.sync, "127.0.0.1:0", &second));
    EXPECT_OK(mnemo_sync_unlisten(a.sync, second));
    EXPECT(mnemo_sync_connect(b.sync, second, &refused), MNEMO_STATUS_NETWORK);
    CHECK(refused == NULL);
    EXPECT(mnemo_sync_unlisten(a.sync, second), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_sync_unlisten(a.sync, "nowhere"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_unlisten(a.sync, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_unlisten(NULL, second), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_sync_listen(a.sync, second, &again));
    CHECK(again && strcmp(again, second) == 0);
    EXPECT_OK(mnemo_sync_unlisten(a.sync, again));
    mnemo_string_free(second);
    mnemo_string_free(again);

    EXPECT_OK(mnemo_user_create_db(a.user, "shared", &db));
    EXPECT_OK(mnemo_db_id(db, &db_id));
    EXPECT_OK(mnemo_db_set(db, "notes", "first", "\"from alice\""));

    /* Without a grant: refused, and nothing of the database reaches Bob. */
    EXPECT(mnemo_sync_db(b.sync, b.user, addr, db_id), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_user_load_db(b.user, db_id, &copy), MNEMO_STATUS_NOT_FOUND);

    char *bob_key = default_key(b.user);
    EXPECT_OK(mnemo_db_grant(db, bob_key, "write"));
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    EXPECT_OK(mnemo_user_load_db(b.user, db_id, &copy));
    EXPECT_OK(mnemo_db_get(copy, "notes", "first", &text));
    EXPECT_STR(text, "\"from alice\"");

    /* Edits on both sides, one round: identical state and tips. */
    EXPECT_OK(mnemo_db_set(db, "notes", "a", "1"));
    EXPECT_OK(mnemo_db_set(copy, "notes", "b", "2"));
    EXPECT_OK(mnemo_db_set(db, "notes", "same", "\"alice\""));
    EXPECT_OK(mnemo_db_set(copy, "notes", "same", "\"bob\""));
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    char *all_a = NULL, *all_b = NULL;
    EXPECT_OK(mnemo_db_get_all(db, "notes", &all_a));
    EXPECT_OK(mnemo_db_get_all(copy, "notes", &all_b));
    CHECK(all_a && all_b && strcmp(all_a, all_b) == 0);
    EXPECT_OK(mnemo_db_tips(db, &tips_a));
    EXPECT_OK(mnemo_db_tips(copy, &tips_b));
    CHECK(tips_a && tips_b && strcmp(tips_a, tips_b) == 0);
    mnemo_string_free(all_a);
    mnemo_string_free(all_b);
    mnemo_string_free(tips_a);
    mnemo_string_free(tips_b);

    /* Tracking: a local commit is pushed in the background; flush waits for it. */
    EXPECT_OK(mnemo_sync_track(b.sync, b.user, addr, db_id));
    EXPECT_OK(mnemo_sync_track(b.sync, b.user, addr, db_id)); /* again: nothing changes */
    EXPECT_OK(mnemo_db_set(copy, "notes", "tracked", "true"));
    EXPECT_OK(mnemo_sync_flush(b.sync, 10000));
    EXPECT_OK(mnemo_db_get(db, "notes", "tracked", &text));
    EXPECT_STR(text, "true");
    /* The track is listed, with the peer it syncs with and no error since it pushed. */
    EXPECT_OK(mnemo_sync_tracks(b.sync, b.user, &text));
    CHECK(text && text[0] == '[' && strstr(text, db_id) != NULL && strstr(text, addr) != NULL);
    CHECK(text && strstr(text, "\"running\":true") != NULL);
    CHECK(text && strstr(text, "\"last_error\":null") != NULL);
    mnemo_string_free(text);
    text = NULL;
    EXPECT(mnemo_sync_tracks(b.sync, b.user, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_tracks(b.sync, a.user, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(text == NULL);
    /* Untracking stops it and forgets it; a second time there is nothing to untrack. */
    EXPECT_OK(mnemo_sync_untrack(b.sync, b.user, addr, db_id));
    EXPECT(mnemo_sync_untrack(b.sync, b.user, addr, db_id), MNEMO_STATUS_NOT_FOUND);
    EXPECT(mnemo_sync_untrack(b.sync, b.user, "nonsense", db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_untrack(NULL, b.user, addr, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_sync_tracks(b.sync, b.user, &text));
    EXPECT_STR(text, "[]");

    /* Bad input. */
    EXPECT(mnemo_sync_listen(NULL, "127.0.0.1:0", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_listen(a.sync, NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_listen(a.sync, "127.0.0.1:0", NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_listen(a.sync, BAD_UTF8, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_listen(a.sync, "not an address", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_listen(a.sync, "127.0.0.1:99999", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_connect(b.sync, "127.0.0.1", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_connect(b.sync, "127.0.0.1:0", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_connect(b.sync, "", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_listen(a.sync, "192.0.2.1:0", &text), MNEMO_STATUS_NETWORK); /* not ours */
    EXPECT(mnemo_sync_connect(NULL, addr, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_connect(b.sync, NULL, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_connect(b.sync, addr, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_connect(b.sync, "127.0.0.1:1", &text), MNEMO_STATUS_NETWORK);
    EXPECT(mnemo_sync_db(NULL, b.user, addr, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_db(b.sync, NULL, addr, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_db(b.sync, b.user, NULL, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_db(b.sync, b.user, addr, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_db(b.sync, b.user, addr, "sha256:nope"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_db(b.sync, b.user, "127.0.0.1:1", db_id), MNEMO_STATUS_NETWORK);
    EXPECT(mnemo_sync_track(NULL, b.user, addr, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_track(b.sync, NULL, addr, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_track(b.sync, b.user, NULL, db_id), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_track(b.sync, b.user, addr, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_flush(NULL, 10), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(text == NULL);

    free(bob_key);
    mnemo_string_free(addr);
    mnemo_string_free(peer);
    mnemo_string_free(device);
    mnemo_string_free(db_id);
    mnemo_db_free(copy);
    mnemo_db_free(db);
    close_side(&b);
    close_side(&a);
}

/* The id in a one-request JSON list: the value of its "id". */
static char *first_request_id(const char *json) {
    const char *at = json ? strstr(json, "\"id\":\"") : NULL;
    if (!at) return NULL;
    at += strlen("\"id\":\"");
    size_t len = (size_t)(strchr(at, '"') - at);
    char *id = (char *)malloc(len + 1);
    memcpy(id, at, len);
    id[len] = '\0';
    return id;
}

/* Sharing by ticket: share, ask, list, approve, join, write back; a rejection stays;
 * a tampered ticket is refused; bad arguments. */
static void test_ticket_flow(void) {
    side a = open_side("alice"), b = open_side("bob"), c = open_side("carol");
    char *addr = NULL, *ticket = NULL, *request = NULL, *json = NULL, *db_id = NULL, *text = NULL;
    mnemo_database *db = NULL, *copy = NULL;
    EXPECT_OK(mnemo_sync_listen(a.sync, "127.0.0.1:0", &addr));
    EXPECT_OK(mnemo_user_create_db(a.user, "shared", &db));
    EXPECT_OK(mnemo_db_id(db, &db_id));
    EXPECT_OK(mnemo_db_set(db, "notes", "hello", "\"from alice\""));
    EXPECT_OK(mnemo_sync_share(a.sync, db_id, &ticket));
    CHECK(ticket && strncmp(ticket, "mnemo:", 6) == 0);

    EXPECT(mnemo_sync_join(b.sync, b.user, ticket), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT_OK(mnemo_sync_request_access(b.sync, b.user, ticket, "write", &request));
    CHECK(request && strncmp(request, "req-", 4) == 0);
    EXPECT_OK(mnemo_sync_list_requests(a.sync, a.user, &json));
    char *listed = first_request_id(json);
    CHECK(listed && request && strcmp(listed, request) == 0);
    CHECK(json && strstr(json, "\"permission\":\"write\"") != NULL);
    free(listed);
    mnemo_string_free(json);
    EXPECT_OK(mnemo_sync_list_requests(b.sync, b.user, &json));
    EXPECT_STR(json, "[]");

    EXPECT_OK(mnemo_sync_approve(a.sync, a.user, request));
    EXPECT(mnemo_sync_approve(a.sync, a.user, request), MNEMO_STATUS_NOT_FOUND);
    EXPECT_OK(mnemo_sync_join(b.sync, b.user, ticket));
    EXPECT_OK(mnemo_user_load_db(b.user, db_id, &copy));
    EXPECT_OK(mnemo_db_get(copy, "notes", "hello", &text));
    EXPECT_STR(text, "\"from alice\"");
    EXPECT_OK(mnemo_db_set(copy, "notes", "reply", "\"from bob\""));
    EXPECT_OK(mnemo_sync_db(b.sync, b.user, addr, db_id));
    EXPECT_OK(mnemo_db_get(db, "notes", "reply", &text));
    EXPECT_STR(text, "\"from bob\"");

    /* Carol is rejected, and stays refused. */
    char *carol_request = NULL;
    EXPECT_OK(mnemo_sync_request_access(c.sync, c.user, ticket, "read", &carol_request));
    EXPECT_OK(mnemo_sync_reject(a.sync, a.user, carol_request));
    EXPECT(mnemo_sync_join(c.sync, c.user, ticket), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_sync_request_access(c.sync, c.user, ticket, "read", &text), MNEMO_STATUS_PERMISSION_DENIED);
    CHECK(text == NULL);
    EXPECT(mnemo_sync_reject(a.sync, a.user, carol_request), MNEMO_STATUS_NOT_FOUND);

    /* A ticket with one character changed is refused before any connection. */
    char *tampered = (char *)malloc(strlen(ticket) + 1);
    strcpy(tampered, ticket);
    tampered[20] = tampered[20] == 'A' ? 'B' : 'A';
    EXPECT(mnemo_sync_request_access(c.sync, c.user, tampered, "read", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_join(c.sync, c.user, tampered), MNEMO_STATUS_INVALID_ARGUMENT);
    free(tampered);

    /* Auto-approval: on, then off. */
    EXPECT_OK(mnemo_sync_auto_approve(a.sync, a.user, db_id, "read"));
    EXPECT_OK(mnemo_sync_auto_approve(a.sync, a.user, db_id, NULL));
    EXPECT(mnemo_sync_auto_approve(b.sync, b.user, db_id, "read"), MNEMO_STATUS_PERMISSION_DENIED);
    EXPECT(mnemo_sync_auto_approve(a.sync, a.user, db_id, "owner"), MNEMO_STATUS_INVALID_ARGUMENT);

    /* Bad arguments. */
    EXPECT(mnemo_sync_share(a.sync, "sha256:nope", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_share(b.sync, db_id, &text), MNEMO_STATUS_INVALID_ARGUMENT); /* not listening */
    EXPECT(mnemo_sync_share(NULL, db_id, &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_advertise(a.sync, "nonsense"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_request_access(b.sync, b.user, ticket, "owner", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_request_access(b.sync, b.user, "mnemo:", "read", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_request_access(b.sync, NULL, ticket, "read", &text), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_list_requests(a.sync, a.user, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_approve(a.sync, a.user, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_join(b.sync, b.user, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(text == NULL);

    mnemo_string_free(addr);
    mnemo_string_free(ticket);
    mnemo_string_free(request);
    mnemo_string_free(carol_request);
    mnemo_string_free(json);
    mnemo_string_free(db_id);
    mnemo_db_free(copy);
    mnemo_db_free(db);
    close_side(&c);
    close_side(&b);
    close_side(&a);
}

/* The sync engine's and the instance's limits: read, changed, and refused all or nothing. */
static void test_limits(void) {
    side a = open_side("alice");
    char *json = NULL;

    EXPECT_OK(mnemo_sync_limits(a.sync, &json));
    CHECK(json && strstr(json, "\"max_connections\":256,") != NULL);
    CHECK(json && strstr(json, "\"round_deadline_ms\":600000,") != NULL);
    CHECK(json && strstr(json, "\"max_received_bytes\":134217728}") != NULL);
    CHECK(json && strstr(json, "\"max_access_requests_per_database\":64,"
                               "\"max_access_requests\":1024,") != NULL);
    mnemo_string_free(json);
    json = NULL;

    EXPECT_OK(mnemo_sync_set_limits(a.sync, "{\"max_connections\": 8, \"idle_timeout_ms\": 5000}"));
    EXPECT_OK(mnemo_sync_limits(a.sync, &json));
    CHECK(json && strstr(json, "\"max_connections\":8,") != NULL);
    CHECK(json && strstr(json, "\"idle_timeout_ms\":5000,") != NULL);
    mnemo_string_free(json);
    json = NULL;

    /* Refused, changing nothing: out of bounds (with a valid one), unknown, not numbers. */
    EXPECT(mnemo_sync_set_limits(a.sync, "{\"max_connections\": 9, \"idle_timeout_ms\": 0}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(a.sync, "{\"max_conections\": 9}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(a.sync, "{\"max_access_requests\": 65537}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(a.sync, "{\"max_connections\": -9}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(a.sync, "[9]"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(a.sync, BAD_UTF8), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(a.sync, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_set_limits(NULL, "{}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_sync_limits(NULL, &json), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(json == NULL);
    EXPECT(mnemo_sync_limits(a.sync, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT_OK(mnemo_sync_limits(a.sync, &json));
    CHECK(json && strstr(json, "\"max_connections\":8,") != NULL);
    CHECK(json && strstr(json, "\"idle_timeout_ms\":5000,") != NULL);
    mnemo_string_free(json);
    json = NULL;

    /* The instance's own limits, read and changed the same way. */
    EXPECT_OK(mnemo_instance_limits(a.instance, &json));
    EXPECT_STR(json, "{\"idle_databases_kept\":256,\"queued_notifications\":65536,"
                     "\"waiting_entries_per_database\":100000,"
                     "\"waiting_bytes_per_database\":16777216,"
                     "\"waiting_bytes\":67108864,\"waiting_time_ms\":600000,"
                     "\"other_processes_poll_ms\":200,\"watchers\":1024}");
    EXPECT_OK(mnemo_instance_set_limits(
        a.instance, "{\"idle_databases_kept\": 0, \"waiting_time_ms\": 1000}"));
    EXPECT(mnemo_instance_set_limits(a.instance, "{\"idle_databases_kept\": 1, \"queued_notifications\": 0}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_set_limits(a.instance, "{\"max_connections\": 1}"), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_set_limits(a.instance, "{\"waiting_time_ms\": 0}"),
           MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_set_limits(a.instance, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_limits(NULL, &json), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(json == NULL);
    EXPECT_OK(mnemo_instance_limits(a.instance, &json));
    EXPECT_STR(json, "{\"idle_databases_kept\":0,\"queued_notifications\":65536,"
                     "\"waiting_entries_per_database\":100000,"
                     "\"waiting_bytes_per_database\":16777216,"
                     "\"waiting_bytes\":67108864,\"waiting_time_ms\":1000,"
                     "\"other_processes_poll_ms\":200,\"watchers\":1024}");

    /* What each holds now. */
    EXPECT_OK(mnemo_sync_stats(a.sync, &json));
    EXPECT_STR(json, "{\"listeners\":0,\"open_connections\":0,\"requests_in_flight\":0,"
                     "\"watches\":0,\"tracks\":0,\"requests_refused_busy\":0,"
                     "\"connections_refused\":0}");
    EXPECT_OK(mnemo_instance_stats(a.instance, &json));
    CHECK(json && strstr(json, "\"notifications_queued\":0,\"waiting_entry_bytes\":0,"
                               "\"databases_polled\":0,\"storage_connections\":0,"
                               "\"password_derivations\":0,\"scrubs_pending\":0,"
                               "\"watchers\":0}") != NULL);
    mnemo_string_free(json);
    json = NULL;
    EXPECT(mnemo_sync_stats(NULL, &json), MNEMO_STATUS_INVALID_ARGUMENT);
    EXPECT(mnemo_instance_stats(a.instance, NULL), MNEMO_STATUS_INVALID_ARGUMENT);
    CHECK(json == NULL);

    close_side(&a);
}

int main(void) {
    test_sync_round_trip();
    test_ticket_flow();
    test_limits();
    return report("c sync");
}
