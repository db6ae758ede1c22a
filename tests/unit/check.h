/*
 * check.h - the assertions of the unit tests: plain ctest programs, no
 * framework. A failed CHECK prints file:line and the expression and makes
 * the program exit 1 at the end; fatal REQUIRE stops at once.
 */
#ifndef PFS_CHECK_H
#define PFS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            check_failures++;                                                \
        }                                                                    \
    } while (0)

#define CHECKF(cond, ...)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            check_failures++;                                                \
        }                                                                    \
    } while (0)

#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define RUN(test)                                                            \
    do {                                                                     \
        int before_ = check_failures;                                        \
        test();                                                              \
        fprintf(stderr, "%s %s\n", check_failures == before_ ? "ok  " : "FAIL", \
                #test);                                                      \
    } while (0)

#define CHECK_DONE() (check_failures ? 1 : 0)

#endif
