/* The whole mnemo flow from C: open an instance, create a user, log in, create a
 * database, write and read a value, log out, enable sync. Every status is checked.
 * Run it again on the same file: the user and the database are found, not recreated.
 *
 * Usage: quickstart [BACKEND_URL]   (default "sqlite:quickstart.db") */
#include <stdio.h>
#include <stdlib.h>

#include "mnemo.h"

/* Prints the failed call with its status and message, then exits. */
static void check(mnemo_status status, const char *what) {
    if (status != MNEMO_STATUS_OK) {
        const char *detail = mnemo_last_error_message();
        fprintf(stderr, "%s failed: %s (%s)\n", what, mnemo_status_str(status),
                detail ? detail : "no detail");
        exit(1);
    }
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "sqlite:quickstart.db";
    mnemo_backend *backend = NULL;
    mnemo_instance *instance = NULL;
    mnemo_user *alice = NULL;
    mnemo_database *notes = NULL;
    mnemo_sync *sync = NULL;
    char *device_id = NULL, *db_id = NULL, *value = NULL;

    printf("mnemo %s (header %s)\n", mnemo_version(), MNEMO_VERSION_STRING);

    check(mnemo_backend_open(url, &backend), "mnemo_backend_open");
    check(mnemo_instance_open(backend, &instance), "mnemo_instance_open"); /* consumes backend */
    check(mnemo_instance_device_id(instance, &device_id), "mnemo_instance_device_id");
    printf("instance on %s, device id %s\n", url, device_id);

    mnemo_status created = mnemo_instance_create_user(instance, "alice", "correct horse battery staple");
    if (created == MNEMO_STATUS_ALREADY_EXISTS) {
        printf("user alice exists already\n");
    } else {
        check(created, "mnemo_instance_create_user");
        printf("created user alice\n");
    }
    check(mnemo_instance_login(instance, "alice", "correct horse battery staple", &alice),
          "mnemo_instance_login");
    printf("logged in as alice\n");

    mnemo_status found = mnemo_user_find_db(alice, "notes", &notes);
    if (found == MNEMO_STATUS_NOT_FOUND) {
        check(mnemo_user_create_db(alice, "notes", &notes), "mnemo_user_create_db");
        printf("created database notes");
    } else {
        check(found, "mnemo_user_find_db");
        printf("found database notes");
    }
    check(mnemo_db_id(notes, &db_id), "mnemo_db_id");
    printf(", id %s\n", db_id);

    check(mnemo_db_set(notes, "todo", "milk", "{\"done\": false, \"qty\": 2}"), "mnemo_db_set");
    printf("wrote todo/milk = {\"done\": false, \"qty\": 2}\n");
    check(mnemo_db_get(notes, "todo", "milk", &value), "mnemo_db_get");
    printf("read  todo/milk = %s\n", value);

    check(mnemo_user_logout(alice), "mnemo_user_logout"); /* frees alice */
    printf("logged out\n");

    check(mnemo_instance_enable_sync(instance), "mnemo_instance_enable_sync");
    check(mnemo_instance_sync(instance, &sync), "mnemo_instance_sync");
    printf("sync enabled\n");

    mnemo_sync_free(sync);
    mnemo_string_free(value);
    mnemo_string_free(db_id);
    mnemo_string_free(device_id);
    mnemo_db_free(notes);
    mnemo_instance_free(instance);
    return 0;
}
