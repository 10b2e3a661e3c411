/* The owner's side of mnemo's two-process sync flow, driven line by line on stdin.
 *
 * It opens an instance, creates (or finds) user "alice" (passwordless) and her database
 * "shared", enables sync, listens on 127.0.0.1 (any free port) and prints, flushed:
 *
 *     ADDR 127.0.0.1:40123
 *     DB sha256:<64 hex digits>
 *
 * Then it reads one command per line and answers each with exactly one line:
 *
 *     GRANT <pubkey> <permission>   grant a key on "shared"      -> OK
 *     SET <store> <key> <json>      set a value (rest of line)   -> OK
 *     GET <store> <key>             read a value                 -> <json> or NOTFOUND
 *     ALL <store>                   mnemo_db_get_all             -> {"key":value,...}
 *     TIPS                          mnemo_db_tips                -> ["sha256:...",...]
 *     QUIT                          (or end of input)            -> exits with status 0
 *
 * A command that fails answers "ERR <MNEMO_STATUS_NAME> <message>" and the peer goes on;
 * a failure while setting up exits with status 1. Peers that the owner granted sync with it
 * (mnemo_sync_db / mnemo_sync_track against ADDR and DB), e.g. the Python example
 * bindings/python/examples/sync_peer.py, whose docstring shows the two terminals.
 *
 * Usage: sync_peer [BACKEND_URL]   (default "memory:"; e.g. "sqlite:/tmp/alice.db" keeps
 *                                   alice and "shared" across runs)
 * Build: make -C bindings/c   (gives target/c-examples/sync_peer) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnemo.h"

#define LINE_MAX_BYTES (1024 * 1024)

/* Setup: prints the failed call with its status and message, then exits. */
static void check(mnemo_status status, const char *what) {
    if (status != MNEMO_STATUS_OK) {
        const char *detail = mnemo_last_error_message();
        fprintf(stderr, "%s failed: %s (%s)\n", what, mnemo_status_str(status),
                detail ? detail : "no detail");
        exit(1);
    }
}

/* Prints one reply line and flushes it, so that a pipe sees it at once. */
static void reply(const char *text) {
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* Commands: replies "ERR <status> <message>" (message on one line) unless the call
 * succeeded; returns whether it did. */
static int ok(mnemo_status status) {
    if (status == MNEMO_STATUS_OK) return 1;
    const char *detail = mnemo_last_error_message();
    printf("ERR %s ", mnemo_status_str(status));
    for (const char *c = detail ? detail : "no detail"; *c; c++) putchar(*c == '\n' ? ' ' : *c);
    putchar('\n');
    fflush(stdout);
    return 0;
}

/* Splits the next space-separated word off *rest (NULL when there is none). */
static char *word(char **rest) {
    char *s = *rest;
    while (*s == ' ') s++;
    if (*s == '\0') {
        *rest = s;
        return NULL;
    }
    char *end = strchr(s, ' ');
    if (end) {
        *end = '\0';
        *rest = end + 1;
    } else {
        *rest = s + strlen(s);
    }
    return s;
}

/* Replies with an owned string from mnemo (one line: mnemo's JSON has no newline). */
static void reply_owned(char *s) {
    reply(s);
    mnemo_string_free(s);
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "memory:";
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    mnemo_user *alice = NULL;
    mnemo_database *shared = NULL;
    mnemo_sync *sync = NULL;
    char *addr = NULL, *db_id = NULL;

    if (argc > 2) {
        fprintf(stderr, "usage: %s [BACKEND_URL]\n", argv[0]);
        return 2;
    }
    check(mnemo_backend_open(url, &backend), "mnemo_backend_open");
    check(mnemo_instance_open(backend, &instance), "mnemo_instance_open"); /* consumes backend */

    mnemo_status created = mnemo_instance_create_user(instance, "alice", NULL);
    if (created != MNEMO_STATUS_ALREADY_EXISTS) check(created, "mnemo_instance_create_user");
    check(mnemo_instance_login(instance, "alice", NULL, &alice), "mnemo_instance_login");
    mnemo_status found = mnemo_user_find_db(alice, "shared", &shared);
    if (found == MNEMO_STATUS_NOT_FOUND) {
        check(mnemo_user_create_db(alice, "shared", &shared), "mnemo_user_create_db");
    } else {
        check(found, "mnemo_user_find_db");
    }
    check(mnemo_db_id(shared, &db_id), "mnemo_db_id");

    check(mnemo_instance_enable_sync(instance), "mnemo_instance_enable_sync");
    check(mnemo_instance_sync(instance, &sync), "mnemo_instance_sync");
    check(mnemo_sync_listen(sync, "127.0.0.1:0", &addr), "mnemo_sync_listen");
    printf("ADDR %s\nDB %s\n", addr, db_id);
    fflush(stdout);

    char *line = malloc(LINE_MAX_BYTES);
    if (!line) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    while (fgets(line, LINE_MAX_BYTES, stdin)) {
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] != '\n' && !feof(stdin)) {
            reply("ERR MNEMO_STATUS_INVALID_ARGUMENT line too long");
            int c;
            while ((c = getchar()) != EOF && c != '\n') {
            }
            continue;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        char *rest = line;
        char *cmd = word(&rest);
        char *out = NULL;
        if (cmd == NULL) {
            reply("ERR MNEMO_STATUS_INVALID_ARGUMENT empty command");
        } else if (strcmp(cmd, "QUIT") == 0) {
            break;
        } else if (strcmp(cmd, "GRANT") == 0) {
            char *pubkey = word(&rest), *permission = word(&rest);
            if (!pubkey || !permission) {
                reply("ERR MNEMO_STATUS_INVALID_ARGUMENT usage: GRANT <pubkey> <permission>");
            } else if (ok(mnemo_db_grant(shared, pubkey, permission))) {
                reply("OK");
            }
        } else if (strcmp(cmd, "SET") == 0) {
            char *store = word(&rest), *key = word(&rest);
            while (*rest == ' ') rest++;
            if (!store || !key || *rest == '\0') {
                reply("ERR MNEMO_STATUS_INVALID_ARGUMENT usage: SET <store> <key> <json>");
            } else if (ok(mnemo_db_set(shared, store, key, rest))) {
                reply("OK");
            }
        } else if (strcmp(cmd, "GET") == 0) {
            char *store = word(&rest), *key = word(&rest);
            if (!store || !key) {
                reply("ERR MNEMO_STATUS_INVALID_ARGUMENT usage: GET <store> <key>");
            } else {
                mnemo_status status = mnemo_db_get(shared, store, key, &out);
                if (status == MNEMO_STATUS_NOT_FOUND) {
                    reply("NOTFOUND");
                } else if (ok(status)) {
                    reply_owned(out);
                }
            }
        } else if (strcmp(cmd, "ALL") == 0) {
            char *store = word(&rest);
            if (!store) {
                reply("ERR MNEMO_STATUS_INVALID_ARGUMENT usage: ALL <store>");
            } else if (ok(mnemo_db_get_all(shared, store, &out))) {
                reply_owned(out);
            }
        } else if (strcmp(cmd, "TIPS") == 0) {
            if (ok(mnemo_db_tips(shared, &out))) reply_owned(out);
        } else {
            printf("ERR MNEMO_STATUS_INVALID_ARGUMENT unknown command %s\n", cmd);
            fflush(stdout);
        }
    }
    free(line);

    mnemo_sync_free(sync); /* the instance still holds the engine until it is freed */
    mnemo_string_free(addr);
    mnemo_string_free(db_id);
    mnemo_db_free(shared);
    check(mnemo_user_logout(alice), "mnemo_user_logout"); /* frees alice */
    mnemo_instance_free(instance);
    return 0;
}
