/*
 * test_timecode.c - engine/timecode: frame timecodes and the EXR packing,
 * against libavutil's own timecode strings and hand-packed values.
 */
#include <errno.h>
#include <libavutil/timecode.h>
#include <string.h>

#include "check.h"
#include "engine/timecode.h"

/* The text must equal libavutil's for the same frame. */
static void check_against_libavutil(const char *start, int num, int den)
{
    struct pfs_timecode tc;
    pfs_error err = {0};
    REQUIRE(pfs_timecode_parse(start, num, den, &tc, &err) == 0);
    AVTimecode ref;
    REQUIRE(av_timecode_init_from_string(&ref, (AVRational){num, den}, start, NULL) == 0);
    for (int64_t i = 0; i < 200000; i += 997) {
        char mine[16], theirs[AV_TIMECODE_STR_SIZE];
        uint32_t packed;
        pfs_timecode_at(&tc, i, mine, &packed);
        av_timecode_make_string(&ref, theirs, (int)i);
        CHECKF(!strcmp(mine, theirs), "%s at %d/%d + %lld: %s, libavutil %s", start, num, den,
               (long long)i, mine, theirs);
    }
}

static void test_strings(void)
{
    check_against_libavutil("01:00:00:00", 24, 1);
    check_against_libavutil("00:59:59:23", 24000, 1001);
    check_against_libavutil("00:00:00;00", 30000, 1001);
    check_against_libavutil("10:00:00;00", 60000, 1001);
    check_against_libavutil("00:00:00:00", 25, 1);
}

static void test_packing(void)
{
    struct pfs_timecode tc;
    pfs_error err = {0};
    char text[16];
    uint32_t p;
    REQUIRE(pfs_timecode_parse("01:00:00:00", 24, 1, &tc, &err) == 0);
    CHECK(tc.start == 86400 && tc.fps == 24 && !tc.drop);
    pfs_timecode_at(&tc, 5, text, &p);
    CHECK(!strcmp(text, "01:00:00:05"));
    CHECK(p == 0x01000005u);
    pfs_timecode_at(&tc, 24 * 3600 * 22 + 24 * 59 * 60 + 24 * 59 + 23, text, &p);
    CHECKF(!strcmp(text, "23:59:59:23") && p == 0x23595923u, "%s %08x", text, p);
    pfs_timecode_at(&tc, 24 * 3600 * 23, text, &p); /* wraps at 24 hours */
    CHECK(!strcmp(text, "00:00:00:00") && p == 0);

    /* Drop-frame: the flag bit, and 00:01:00;02 follows 00:00:59;29. */
    REQUIRE(pfs_timecode_parse("00:00:59;29", 30000, 1001, &tc, &err) == 0);
    CHECK(tc.drop);
    pfs_timecode_at(&tc, 1, text, &p);
    CHECKF(!strcmp(text, "00:01:00;02") && p == (0x00010002u | 1u << 6), "%s %08x", text, p);

    /* Above 30 fps the frame field holds pairs, the field bit the second. */
    REQUIRE(pfs_timecode_parse("00:00:01:00", 50, 1, &tc, &err) == 0);
    pfs_timecode_at(&tc, 7, text, &p);
    CHECKF(!strcmp(text, "00:00:01:07") && p == (0x00000103u | 1u << 15), "%s %08x", text, p);

    CHECK(pfs_timecode_parse("01:00:00:30", 24, 1, &tc, &err) == EINVAL);
    CHECK(strstr(err.msg, "01:00:00:30") != NULL);
    CHECK(pfs_timecode_parse("soon", 24, 1, &tc, &err) == EINVAL);
}

int main(void)
{
    RUN(test_strings);
    RUN(test_packing);
    return CHECK_DONE();
}
