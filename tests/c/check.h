/* A tiny test harness for the C tests: counts checks and prints "N passed, N failed". */
#ifndef MNEMO_TEST_CHECK_H
#define MNEMO_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "mnemo.h"

static int checks_passed = 0;
static int checks_failed = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            checks_passed++;                                                          \
        } else {                                                                      \
            checks_failed++;                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

/* Checks that a call returns `want`; on a failure status, also that a message is set. */
#define EXPECT(call, want)                                                              \
    do {                                                                                \
        mnemo_status got_ = (call);                                                     \
        const char *msg_ = mnemo_last_error_message();                                  \
        if (got_ == (want) && (got_ == MNEMO_STATUS_OK) == (msg_ == NULL)) {            \
            checks_passed++;                                                            \
        } else {                                                                        \
            checks_failed++;                                                            \
            fprintf(stderr, "%s:%d: %s\n  returned %s, expected %s (message: %s)\n",    \
                    __FILE__, __LINE__, #call, mnemo_status_str(got_),                  \
                    mnemo_status_str(want), msg_ ? msg_ : "none");                      \
        }                                                                               \
    } while (0)

#define EXPECT_OK(call) EXPECT(call, MNEMO_STATUS_OK)

/* Checks that an owned string equals `want`, then frees it. */
#define EXPECT_STR(owned, want)                                                         \
    do {                                                                                \
        CHECK((owned) != NULL && strcmp((owned), (want)) == 0);                         \
        if ((owned) && strcmp((owned), (want)) != 0)                                    \
            fprintf(stderr, "  got '%s', expected '%s'\n", (owned), (want));            \
        mnemo_string_free(owned);                                                       \
        (owned) = NULL;                                                                 \
    } while (0)

static int report(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, checks_passed, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

#endif
