/* A fixture shared by the C tests that sync: one instance on memory with one passwordless
 * user logged in and sync enabled (a "side"), and that user's default key. Include after
 * check.h. Functions are static inline, so a test that uses only some of them compiles
 * without warnings. */
#ifndef MNEMO_TEST_SIDES_H
#define MNEMO_TEST_SIDES_H

#include <stdlib.h>
#include <string.h>

typedef struct side {
    mnemo_instance *instance;
    mnemo_user *user;
    mnemo_sync *sync;
} side;

static inline side open_side(const char *name) {
    side s = {NULL, NULL, NULL};
    mnemo_backend *backend = NULL;
    EXPECT_OK(mnemo_backend_open("memory:", &backend));
    EXPECT_OK(mnemo_instance_open(backend, &s.instance));
    EXPECT_OK(mnemo_instance_create_user(s.instance, name, NULL));
    EXPECT_OK(mnemo_instance_login(s.instance, name, NULL, &s.user));
    EXPECT_OK(mnemo_instance_enable_sync(s.instance));
    EXPECT_OK(mnemo_instance_sync(s.instance, &s.sync));
    return s;
}

static inline void close_side(side *s) {
    mnemo_sync_free(s->sync);
    EXPECT_OK(mnemo_user_logout(s->user));
    mnemo_instance_free(s->instance);
}

/* The user's default key (the first "pubkey" of mnemo_user_list_keys: it has one), owned:
 * free() it. */
static inline char *default_key(mnemo_user *user) {
    char *json = NULL;
    EXPECT_OK(mnemo_user_list_keys(user, &json));
    const char *at = json ? strstr(json, "\"pubkey\":\"") : NULL;
    char *key = NULL;
    if (at) {
        at += strlen("\"pubkey\":\"");
        size_t len = (size_t)(strchr(at, '"') - at);
        key = (char *)malloc(len + 1);
        memcpy(key, at, len);
        key[len] = '\0';
    }
    mnemo_string_free(json);
    return key;
}

#endif
