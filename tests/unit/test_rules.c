/*
 * test_rules.c - the rules module: loading, validation messages with their
 * exact positions, matching, keyframes, canonical text and hashes, the
 * dailies checks and `platefs check`.
 *
 * Every test writes its rule files into a fresh mkdtemp directory and, where
 * the dailies matter, builds a tree of empty files beside it. Diagnostics are
 * collected as "name:line:col: error: msg" (name without the directory) and
 * compared as whole strings, so a message or a position that drifts fails.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "check.h"
#include "engine/colour.h"
#include "rules/rules.h"

/* ---- fixtures ------------------------------------------------------------- */

static char *make_dir(void)
{
    char tmpl[] = "/tmp/pfs-rules-XXXXXX";
    char *d = mkdtemp(tmpl);
    REQUIRE(d);
    return strdup(d);
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* Make parent folders for dailies paths like "A001/x.exr". */
    for (char *p = path + strlen(dir) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

static void touch_frames(const char *dailies, const char *fmt, int first, int last)
{
    for (int i = first; i <= last; i++) {
        char name[512];
        snprintf(name, sizeof name, fmt, i);
        write_file(dailies, name, "");
    }
}

#define MAXDIAG 64
struct diags {
    int n;
    char line[MAXDIAG][1200];
};

static void collect(void *ud, enum pfs_diag_severity sev, const char *file, int line, int col,
                    const char *msg)
{
    struct diags *d = ud;
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (d->n < MAXDIAG)
        snprintf(d->line[d->n++], sizeof d->line[0], "%s:%d:%d: %s: %s", base, line, col,
                 sev == PFS_DIAG_ERROR ? "error" : "warning", msg);
}

static const struct pfs_op_desc *const *test_ops(void);

static int load(const char *rules, const char *dailies, struct diags *d,
                struct pfs_ruleset **rs)
{
    memset(d, 0, sizeof *d);
    struct pfs_rules_opts o = {.rules_dir = rules,
                               .dailies_root = dailies,
                               .report = collect,
                               .report_ud = d,
                               .ops = test_ops()};
    pfs_error err = {0};
    int rc = pfs_rules_load(&o, rs, &err);
    CHECK((rc == 0) == (*rs != NULL));
    return rc;
}

static bool has(const struct diags *d, const char *want)
{
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->line[i], want))
            return true;
    fprintf(stderr, "  missing diagnostic: %s\n  got %d:\n", want, d->n);
    for (int i = 0; i < d->n; i++)
        fprintf(stderr, "    %s\n", d->line[i]);
    return false;
}

/* Loads one file and expects exactly this one diagnostic. */
static void expect_one(const char *yaml, const char *dailies, const char *want)
{
    char *dir = make_dir();
    write_file(dir, "bad.yaml", yaml);
    struct diags d;
    struct pfs_ruleset *rs;
    int rc = load(dir, dailies, &d, &rs);
    CHECKF(rc == EINVAL, "rc %d for %s", rc, want);
    CHECK(rs == NULL);
    CHECKF(d.n == 1 && has(&d, want), "%d diagnostics, want: %s", d.n, want);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

/* An op of the tests' own: a required parameter, a 2-vector with a unit, an
 * enum, a bool, a non-keyframable number and a cross-parameter check. */
static const char *const tweak_modes[] = {"fast", "best", NULL};
static int tweak_validate(const pfs_pvec *v, pfs_error *err)
{
    if (v[0][0] > v[1][0])
        return pfs_error_set(err, EINVAL, "\"lo\" (%g) must not be above \"hi\" (%g)", v[0][0],
                             v[1][0]);
    return 0;
}
static const struct pfs_param_desc tweak_params[] = {
    {.name = "lo", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 100, .def = {0},
     .keyframable = true},
    {.name = "hi", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 100, .def = {100},
     .keyframable = true},
    {.name = "center", .type = PFS_PARAM_VEC, .ncomp = 2, .min = -1000, .max = 1000,
     .def = {0, 0}, .keyframable = true, .unit = "px"},
    {.name = "mode", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = tweak_modes, .def = {1}},
    {.name = "flip", .type = PFS_PARAM_BOOL, .ncomp = 1, .def = {0}},
    {.name = "width", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1, .max = 50,
     .required = true, .unit = "px", .help = "stroke width"},
};
static const struct pfs_op_desc tweak_op = {
    .name = "tweak",
    .params = tweak_params,
    .nparams = sizeof tweak_params / sizeof tweak_params[0],
    .validate = tweak_validate,
};

/* A local op that says where it paints: a square of `radius` around `at`. */
static const struct pfs_param_desc paint_params[] = {
    {.name = "at", .type = PFS_PARAM_VEC, .ncomp = 2, .min = -1e4, .max = 1e4,
     .def = {0, 0}, .keyframable = true, .unit = "px"},
    {.name = "radius", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 1e4,
     .def = {10}, .keyframable = true, .unit = "px"},
};
static bool paint_extent(const pfs_pvec *vals, double box[4])
{
    box[0] = vals[0][0] - vals[1][0];
    box[1] = vals[0][1] - vals[1][0];
    box[2] = vals[0][0] + vals[1][0];
    box[3] = vals[0][1] + vals[1][0];
    return true;
}
static const struct pfs_op_desc paint_op = {
    .name = "paint",
    .params = paint_params,
    .nparams = 2,
    .kind = PFS_OP_LOCAL_SYNTH,
    .extent = paint_extent,
};
/* A local op that may change any pixel. */
static const struct pfs_op_desc smear_op = {.name = "smear", .kind = PFS_OP_LOCAL_SYNTH};
/* An op with advice. */
static const struct pfs_param_desc zoom_params[] = {
    {.name = "scale", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0.5, .max = 4,
     .def = {1}, .keyframable = true},
};
static void zoom_advise(const pfs_pvec *vals, char *msg, size_t size)
{
    if (vals[0][0] > 1.2)
        snprintf(msg, size, "zoom: %g is a lot", vals[0][0]);
}
static const struct pfs_op_desc zoom_op = {
    .name = "zoom",
    .params = zoom_params,
    .nparams = 1,
    .kind = PFS_OP_GEOMETRY,
    .advise = zoom_advise,
};

/* An op that compares with a reference frame. */
static const struct pfs_param_desc compare_params[] = {
    {.name = "frame", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -1, .max = 1e9,
     .def = {-1}},
};
static int compare_reference(const pfs_pvec *vals)
{
    return (int)vals[0][0];
}
static const struct pfs_op_desc compare_op = {
    .name = "compare",
    .params = compare_params,
    .nparams = 1,
    .reference = compare_reference,
};

/* A wire removal of the tests' own: it reads two frames either side, so it
 * must lead the ops; its path is a list of points (at least 2), its anchors
 * another (optional, constant), and it says where it paints: the path's box
 * widened by the width. Its check reads the points through pfs_op_points. */
static const struct pfs_param_desc wire_params[] = {
    {.name = "path", .type = PFS_PARAM_POINTS, .ncomp = 2, .min = 0, .max = 4096,
     .required = true, .keyframable = true, .unit = "px", .help = "the wire's centre line"},
    {.name = "width", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1, .max = 100, .def = {6},
     .keyframable = true, .unit = "px"},
    {.name = "anchors", .type = PFS_PARAM_POINTS, .ncomp = 1, .min = -10, .max = 10},
};
static int wire_validate(const pfs_pvec *v, pfs_error *err)
{
    const double(*xy)[2];
    int n = pfs_op_points(v, 0, &xy);
    for (int i = 1; i < n; i++)
        if (xy[i][0] == xy[i - 1][0] && xy[i][1] == xy[i - 1][1])
            return pfs_error_set(err, EINVAL, "the path repeats point %d (%g, %g)", i + 1,
                                 xy[i][0], xy[i][1]);
    return 0;
}
static bool wire_extent(const pfs_pvec *v, double box[4])
{
    const double(*xy)[2];
    int n = pfs_op_points(v, 0, &xy);
    if (n == 0)
        return false;
    box[0] = box[2] = xy[0][0];
    box[1] = box[3] = xy[0][1];
    for (int i = 1; i < n; i++) {
        box[0] = fmin(box[0], xy[i][0]);
        box[1] = fmin(box[1], xy[i][1]);
        box[2] = fmax(box[2], xy[i][0]);
        box[3] = fmax(box[3], xy[i][1]);
    }
    box[0] -= v[1][0];
    box[1] -= v[1][0];
    box[2] += v[1][0];
    box[3] += v[1][0];
    return true;
}
static const struct pfs_op_desc wire_op = {
    .name = "wire",
    .params = wire_params,
    .nparams = 3,
    .reads_before = 2,
    .reads_after = 2,
    .kind = PFS_OP_LOCAL_SYNTH,
    .validate = wire_validate,
    .extent = wire_extent,
};

/* An object removal whose shape is a group: a polygon (points) or an
 * ellipse, keyed as a whole; shape.mode is not keyframable. */
static const char *const cutout_modes[] = {"fill", "clone", NULL};
static const struct pfs_param_desc cutout_params[] = {
    {.name = "shape.polygon", .type = PFS_PARAM_POINTS, .ncomp = 3, .min = -100, .max = 5000,
     .keyframable = true, .unit = "px"},
    {.name = "shape.ellipse", .type = PFS_PARAM_VEC, .ncomp = 4, .min = -1e4, .max = 1e4,
     .keyframable = true, .unit = "px", .help = "[cx, cy, rx, ry]"},
    {.name = "shape.mode", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = cutout_modes},
    {.name = "feather", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 100,
     .def = {2}, .keyframable = true, .unit = "px"},
};
static const struct pfs_op_desc cutout_op = {
    .name = "cutout",
    .params = cutout_params,
    .nparams = 4,
    .reads_before = 1,
    .kind = PFS_OP_LOCAL_SYNTH,
};

static const struct pfs_op_desc *const *test_ops(void)
{
    static const struct pfs_op_desc *reg[9];
    reg[7] = &cutout_op;
    reg[6] = &wire_op;
    reg[5] = &compare_op;
    reg[0] = pfs_op_find("relight");
    reg[1] = &tweak_op;
    reg[2] = &paint_op;
    reg[3] = &smear_op;
    reg[4] = &zoom_op;
    return reg;
}

static const char *sample_yaml =
    "# A001C003: the practical ran warm and a third of a stop under.\n"
    "shot: A001C003\n"
    "match: [\"A001/A001C003.*.exr\"]\n"
    "frames: 1001-1008\n"
    "ops:\n"
    "  - op: relight\n"
    "    exposure: {1001: 0.25, 1008: 0.4}   # stops, ramps over the shot\n"
    "    temperature: {from: 4300, to: 5600}\n"
    "    cdl:\n"
    "      saturation: 1.05\n";

/* Loads one rule file without dailies and returns its only shot's hash. */
static void hash_of(const char *yaml, char out[33])
{
    char *dir = make_dir();
    write_file(dir, "s.yaml", yaml);
    struct diags d;
    struct pfs_ruleset *rs;
    out[0] = '\0';
    if (load(dir, NULL, &d, &rs) == 0) {
        REQUIRE(pfs_ruleset_shot_count(rs) == 1);
        snprintf(out, 33, "%s", pfs_shot_hash(pfs_ruleset_shot(rs, 0)));
    } else {
        for (int i = 0; i < d.n; i++)
            fprintf(stderr, "  %s\n", d.line[i]);
    }
    CHECK(strlen(out) == 32);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

/* Resolves the single shot of a one-file rule set at frame. */
static struct pfs_frame_ops *resolve_one(const char *yaml, int frame)
{
    char *dir = make_dir();
    write_file(dir, "s.yaml", yaml);
    struct diags d;
    struct pfs_ruleset *rs;
    struct pfs_frame_ops *fo = NULL;
    if (load(dir, NULL, &d, &rs) == 0) {
        pfs_error err;
        CHECK(pfs_shot_resolve(pfs_ruleset_shot(rs, 0), frame, &fo, &err) == 0);
    } else {
        for (int i = 0; i < d.n; i++)
            fprintf(stderr, "  %s\n", d.line[i]);
    }
    REQUIRE(fo);
    pfs_ruleset_unref(rs); /* resolved values must outlive the set */
    rm_rf(dir);
    free(dir);
    return fo;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_valid_load_and_match(void)
{
    char *rules = make_dir(), *dailies = make_dir();
    write_file(rules, "A001C003.yaml", sample_yaml);
    write_file(rules, "B002.yml",
               "shot: B002C001\n"
               "match:\n"
               "  - B002/*.exr\n"
               "  - B002/extra/B002C001_[0-9]*.EXR\n");
    /* Editor leftovers and hidden files are not rule files, whatever they hold. */
    write_file(rules, ".#A001C003.yaml", "garbage: [");
    write_file(rules, "A001C003.yaml~", "garbage: [");
    write_file(rules, ".A001C003.yaml.swp", "garbage: [");
    write_file(rules, "notes.txt", "not yaml at all: [");
    touch_frames(dailies, "A001/A001C003.%d.exr", 1000, 1010);
    write_file(dailies, "A001/A001_camera_report.txt", "");
    touch_frames(dailies, "B002/B002C001.%04d.exr", 1, 3);
    touch_frames(dailies, "B002/extra/B002C001_%d.EXR", 7, 7);
    write_file(dailies, ".hidden/A001C003.1001.exr", "");

    struct diags d;
    struct pfs_ruleset *rs;
    /* B002.yml has no ops: an error, so first check the whole set is refused. */
    CHECK(load(rules, dailies, &d, &rs) == EINVAL);
    CHECK(has(&d, "B002.yml:1:1: error: missing \"ops\": list the operations, like "
                  "ops: [{op: relight, exposure: 0.3}]"));
    CHECK(d.n == 1);

    write_file(rules, "B002.yml",
               "shot: B002C001\n"
               "match:\n"
               "  - B002/*.exr\n"
               "  - B002/extra/B002C001_[0-9]*.EXR\n"
               "ops: [{op: tweak, width: 2}]\n");
    REQUIRE(load(rules, dailies, &d, &rs) == 0);
    CHECKF(d.n == 0, "%d diagnostics, first: %s", d.n, d.n ? d.line[0] : "");
    REQUIRE(pfs_ruleset_shot_count(rs) == 2);
    /* Sorted by file name. */
    CHECK(!strcmp(pfs_shot_file(pfs_ruleset_shot(rs, 0)), "A001C003.yaml"));
    CHECK(!strcmp(pfs_shot_name(pfs_ruleset_shot(rs, 0)), "A001C003"));
    CHECK(!strcmp(pfs_shot_file(pfs_ruleset_shot(rs, 1)), "B002.yml"));
    CHECK(pfs_ruleset_shot(rs, 2) == NULL);

    int frame = -1;
    const struct pfs_shot *s = pfs_rules_match(rs, "A001/A001C003.1042.exr", &frame);
    CHECK(s == NULL); /* outside frames: 1001-1008 */
    s = pfs_rules_match(rs, "A001/A001C003.1001.exr", &frame);
    CHECK(s == pfs_ruleset_shot(rs, 0) && frame == 1001);
    s = pfs_rules_match(rs, "A001/A001C003.1008.exr", &frame);
    CHECK(s == pfs_ruleset_shot(rs, 0) && frame == 1008);
    CHECK(pfs_rules_match(rs, "A001/A001C003.1000.exr", &frame) == NULL);
    CHECK(pfs_rules_match(rs, "A001/A001C003.1009.exr", &frame) == NULL);
    CHECK(pfs_rules_match(rs, "A001/A001_camera_report.txt", &frame) == NULL);
    CHECK(pfs_rules_match(rs, "A001/A001C003.1001.exr.txt", &frame) == NULL);
    CHECK(pfs_rules_match(rs, "A001/A001C003.1001.mov", &frame) == NULL);
    /* FNM_PATHNAME: '*' never crosses a folder. */
    CHECK(pfs_rules_match(rs, "B002/extra/B002C001.0001.exr", &frame) == NULL);
    s = pfs_rules_match(rs, "B002/B002C001.0002.exr", &frame);
    CHECK(s == pfs_ruleset_shot(rs, 1) && frame == 2);
    s = pfs_rules_match(rs, "B002/B002C001.0000123.exr", &frame);
    CHECK(s == pfs_ruleset_shot(rs, 1) && frame == 123);
    s = pfs_rules_match(rs, "B002/extra/B002C001_7.EXR", &frame);
    CHECK(s == pfs_ruleset_shot(rs, 1) && frame == 7);
    CHECK(pfs_rules_match(rs, "B002/nodigits.exr", &frame) == NULL);
    CHECK(pfs_rules_match(rs, "B002/.exr", &frame) == NULL);

    /* The set outlives its loader's reference while someone holds it. */
    struct pfs_ruleset *held = pfs_ruleset_ref(rs);
    pfs_ruleset_unref(rs);
    CHECK(!strcmp(pfs_shot_name(pfs_ruleset_shot(held, 1)), "B002C001"));
    pfs_ruleset_unref(held);
    rm_rf(rules);
    rm_rf(dailies);
    free(rules);
    free(dailies);
}

static void test_canonical_sample(void)
{
    struct pfs_frame_ops *fo = resolve_one(sample_yaml, 1001);
    const char *want = "relight exposure=0.25 temperature.from=4300 temperature.to=5600 "
                       "cdl.slope=1,1,1 cdl.offset=0,0,0 cdl.power=1,1,1 cdl.saturation=1.05 "
                       "window.shape=none window.center=0,0 window.size=0,0 "
                       "window.feather=0 window.invert=false tint.from=0 tint.to=0 "
                       "window.angle=0 match.frame=-1 match.model=gain";
    CHECKF(!strcmp(fo->canonical, want), "got %s", fo->canonical);
    /* The header's line leaves the defaults out. */
    CHECKF(!strcmp(fo->ops[0].text, "relight exposure=0.25 temperature.from=4300 "
                                    "temperature.to=5600 cdl.saturation=1.05"),
           "got %s", fo->ops[0].text);
    REQUIRE(fo->nops == 1);
    CHECK(fo->ops[0].desc == pfs_op_find("relight"));
    CHECK(fo->ops[0].vals[0][0] == 0.25);
    CHECK(fo->ops[0].vals[1][0] == 4300 && fo->ops[0].vals[2][0] == 5600);
    CHECK(fo->ops[0].vals[6][0] == 1.05);

    XXH128_hash_t h = XXH3_128bits(want, strlen(want));
    char hex[33];
    snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    CHECKF(!strcmp(fo->hash, hex), "hash %s, want %s", fo->hash, hex);
    pfs_frame_ops_free(fo);

    fo = resolve_one(sample_yaml, 1008);
    CHECK(strstr(fo->canonical, "relight exposure=0.4 temperature.from=4300 ") == fo->canonical);
    pfs_frame_ops_free(fo);
    /* Between keys: the shortest text that reads back as exactly the value. */
    fo = resolve_one(sample_yaml, 1004);
    double mid = 0.25 + (0.4 - 0.25) * (3.0 / 7.0);
    CHECK(fo->ops[0].vals[0][0] == mid);
    CHECKF(strstr(fo->canonical, "relight exposure=0.3142857142857143 ") == fo->canonical,
           "got %s", fo->canonical);
    CHECK(strtod("0.3142857142857143", NULL) == mid);
    pfs_frame_ops_free(fo);
}

static void test_keyframes(void)
{
    const char *yaml = "shot: K\n"
                       "match: k/*.exr\n"
                       "ops:\n"
                       "  - op: relight\n"
                       "    exposure: {1004: 1, 1000: 0, 1008: -1}\n"
                       "    cdl: {slope: {1000: [1, 2, 3], 1010: [2, 4, 8]}}\n"
                       "    window.center: [10, 20]\n"
                       "  - op: tweak\n"
                       "    width: 3\n"
                       "    center: {2000: [0, 100]}\n";
    static const struct {
        int frame;
        double exposure, slope[3];
    } at[] = {
        {990, 0, {1, 2, 3}},      {1000, 0, {1, 2, 3}},       {1001, 0.25, {1.1, 2.2, 3.5}},
        {1002, 0.5, {1.2, 2.4, 4}}, {1004, 1, {1.4, 2.8, 5}}, {1006, 0, {1.6, 3.2, 6}},
        {1008, -1, {1.8, 3.6, 7}}, {1010, -1, {2, 4, 8}},     {5000, -1, {2, 4, 8}},
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        struct pfs_frame_ops *fo = resolve_one(yaml, at[i].frame);
        REQUIRE(fo->nops == 2);
        const pfs_pvec *v = fo->ops[0].vals;
        CHECKF(v[0][0] == at[i].exposure, "frame %d exposure %.17g", at[i].frame, v[0][0]);
        for (int c = 0; c < 3; c++)
            CHECKF(fabs(v[3][c] - at[i].slope[c]) < 1e-12, "frame %d slope[%d] %.17g",
                   at[i].frame, c, v[3][c]);
        CHECK(v[8][0] == 10 && v[8][1] == 20);
        /* A single key holds everywhere. */
        const pfs_pvec *t = fo->ops[1].vals;
        CHECK(t[2][0] == 0 && t[2][1] == 100);
        CHECK(t[5][0] == 3 && t[3][0] == 1 && t[1][0] == 100);
        pfs_frame_ops_free(fo);
    }
    /* Exact at the keys, exact linear mid-way between them. */
    struct pfs_frame_ops *fo = resolve_one(yaml, 1005);
    CHECK(fo->ops[0].vals[3][0] == 1.5 && fo->ops[0].vals[3][1] == 3 &&
          fo->ops[0].vals[3][2] == 5.5);
    CHECK(fo->ops[0].vals[0][0] == 0.5);
    CHECKF(strstr(fo->canonical, "cdl.slope=1.5,3,5.5 ") != NULL, "%s", fo->canonical);
    CHECKF(strstr(fo->canonical, "\ntweak lo=0 hi=100 center=0,100 mode=best flip=false "
                                 "width=3") != NULL, "%s", fo->canonical);
    pfs_frame_ops_free(fo);
}

static void test_hash_stability(void)
{
    char base[33], same1[33], same2[33], same3[33], changed[33], reverted[33], other[33];
    hash_of(sample_yaml, base);
    /* Comments, blank lines, flow vs block style, key order, dotted keys. */
    hash_of("ops:\n"
            "- cdl.saturation: 1.050\n"
            "  temperature:\n"
            "    to: 5600   # daylight\n"
            "    from: 4.3e3\n"
            "  exposure:\n"
            "    1008: 0.40\n"
            "    1001: 0.25\n"
            "  op: relight\n"
            "\n"
            "frames: \"1001 - 1008\"\n"
            "match: A001/A001C003.*.exr\n"
            "shot: A001C003\n",
            same1);
    CHECKF(!strcmp(base, same1), "%s vs %s", base, same1);
    /* Writing a default explicitly is the same rule. */
    hash_of("shot: A001C003\n"
            "match: [\"A001/A001C003.*.exr\"]\n"
            "frames: 1001-1008\n"
            "ops:\n"
            "  - {op: relight, exposure: {1001: 0.25, 1008: 0.4},\n"
            "     temperature: {from: 4300, to: 5600}, cdl: {saturation: 1.05,\n"
            "     slope: [1, 1, 1]}, window: {shape: none, invert: false}}\n",
            same2);
    CHECKF(!strcmp(base, same2), "%s vs %s", base, same2);
    /* Any value change changes it; putting it back restores it. */
    char *edited = strdup(sample_yaml);
    char *p = strstr(edited, "0.4}");
    REQUIRE(p);
    p[2] = '5';
    hash_of(edited, changed);
    CHECK(strcmp(base, changed) != 0);
    p[2] = '4';
    hash_of(edited, reverted);
    CHECK(!strcmp(base, reverted));
    free(edited);
    hash_of("shot: A001C003\nmatch: [\"A001/A001C003.*.exr\"]\nframes: 1001-1009\nops:\n"
            "  - op: relight\n    exposure: {1001: 0.25, 1008: 0.4}\n"
            "    temperature: {from: 4300, to: 5600}\n    cdl:\n      saturation: 1.05\n",
            other);
    CHECK(strcmp(base, other) != 0);
    /* Protect regions are part of the shot. */
    hash_of("shot: A001C003\nmatch: [\"A001/A001C003.*.exr\"]\nframes: 1001-1008\n"
            "protect: [{rect: [1, 2, 3, 4]}]\nops:\n"
            "  - op: relight\n    exposure: {1001: 0.25, 1008: 0.4}\n"
            "    temperature: {from: 4300, to: 5600}\n    cdl:\n      saturation: 1.05\n",
            same3);
    CHECK(strcmp(base, same3) != 0);
}

static void test_protect(void)
{
    char *dir = make_dir();
    write_file(dir, "p.yaml",
               "shot: P\n"
               "match: p/*.exr\n"
               "protect:\n"
               "  - rect: [700, 120, 1180, 1080]\n"
               "    frames: 1001-1060\n"
               "  - ellipse: [100, 200, 30, 40]\n"
               "  - {frames: 1050, rect: [0, 0, 10, 10]}\n"
               "ops: []\n");
    struct diags d;
    struct pfs_ruleset *rs;
    REQUIRE(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 1 && has(&d, "p.yaml:8:6: warning: \"ops\" is empty: the matched frames pass "
                              "through unchanged"));
    const struct pfs_shot *s = pfs_ruleset_shot(rs, 0);
    struct pfs_protect_region r[4];
    CHECK(pfs_shot_protect_at(s, 1000, r, 4) == 1);
    CHECK(r[0].shape == PFS_PROTECT_ELLIPSE && r[0].x0 == 70 && r[0].y0 == 160 &&
          r[0].x1 == 130 && r[0].y1 == 240);
    CHECK(pfs_shot_protect_at(s, 1050, r, 4) == 3);
    CHECK(r[0].shape == PFS_PROTECT_RECT && r[0].x0 == 700 && r[0].y0 == 120 &&
          r[0].x1 == 1180 && r[0].y1 == 1080);
    CHECK(r[2].shape == PFS_PROTECT_RECT && r[2].x1 == 10);
    CHECK(pfs_shot_protect_at(s, 1050, r, 1) == 3); /* count, though only one filled */
    CHECK(pfs_shot_protect_at(s, 1061, r, 4) == 1);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

static void test_protect_keyframes(void)
{
    char *dir = make_dir();
    write_file(dir, "p.yaml",
               "shot: P\n"
               "match: p/*.exr\n"
               "protect:\n"
               "  - rect: {1001: [100, 100, 200, 200], 1011: [200, 100, 300, 220]}\n"
               "  - ellipse: {1001: [500, 500, 10, 20], 1003: [510, 500, 10, 20]}\n"
               "ops: [{op: relight}]\n");
    struct diags d;
    struct pfs_ruleset *rs;
    REQUIRE(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 0);
    const struct pfs_shot *s = pfs_ruleset_shot(rs, 0);
    struct pfs_protect_region r[2];
    REQUIRE(pfs_shot_protect_at(s, 1000, r, 2) == 2);
    CHECK(r[0].x0 == 100 && r[0].x1 == 200 && r[0].y1 == 200);
    REQUIRE(pfs_shot_protect_at(s, 1006, r, 2) == 2);
    CHECK(r[0].x0 == 150 && r[0].x1 == 250 && r[0].y1 == 210);
    CHECK(r[1].shape == PFS_PROTECT_ELLIPSE && r[1].x0 == 500 && r[1].x1 == 520 &&
          r[1].y0 == 480 && r[1].y1 == 520);
    REQUIRE(pfs_shot_protect_at(s, 2000, r, 2) == 2);
    CHECK(r[0].x0 == 200 && r[0].x1 == 300);
    char h1[33];
    snprintf(h1, sizeof h1, "%s", pfs_shot_hash(s));
    pfs_ruleset_unref(rs);
    /* A moved key is a different shot. */
    write_file(dir, "p.yaml",
               "shot: P\n"
               "match: p/*.exr\n"
               "protect:\n"
               "  - rect: {1001: [100, 100, 200, 200], 1011: [201, 100, 300, 220]}\n"
               "  - ellipse: {1001: [500, 500, 10, 20], 1003: [510, 500, 10, 20]}\n"
               "ops: [{op: relight}]\n");
    REQUIRE(load(dir, NULL, &d, &rs) == 0);
    CHECK(strcmp(h1, pfs_shot_hash(pfs_ruleset_shot(rs, 0))) != 0);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

/* Local ops are refused where they reach a protected region, naming the
 * frames; colour and geometry ops are not. */
static void test_protect_refusal(void)
{
    /* The paint square moves right 10 px a frame and meets the protected
     * rectangle (x 300..400) from frame 1016 (box 290..310) to 1025; the
     * rectangle is protected from 1001 to 1020 only. */
    expect_one("shot: S\nmatch: s/*.exr\nframes: 1001-1030\n"
               "protect:\n  - rect: [300, 0, 400, 100]\n    frames: 1001-1020\n"
               "ops:\n  - op: paint\n    at: {1001: [150, 50], 1031: [450, 50]}\n",
               NULL,
               "bad.yaml:8:5: error: paint would move or synthesise pixels inside the "
               "protected region at line 5 at frames 1016-1020; protected regions "
               "(performances) may be touched only by colour ops and whole-frame geometry: "
               "move or shrink the shape, or narrow the region's frames");
    /* An ellipse: the square's corner stays outside the ellipse's curve. */
    char *dir = make_dir();
    write_file(dir, "ok.yaml",
               "shot: S\nmatch: s/*.exr\n"
               "protect: [{ellipse: [100, 100, 50, 50]}]\n"
               "ops:\n  - op: paint\n    at: [150, 150]\n    radius: 10\n"
               "  - op: relight\n    exposure: 1\n  - op: zoom\n    scale: 1.1\n");
    struct diags d;
    struct pfs_ruleset *rs;
    CHECK(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 0);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
    /* Moved 10 px closer it reaches the curve. */
    expect_one("shot: S\nmatch: s/*.exr\n"
               "protect: [{ellipse: [100, 100, 50, 50]}]\n"
               "ops:\n  - op: paint\n    at: [140, 140]\n    radius: 10\n",
               NULL,
               "bad.yaml:5:5: error: paint would move or synthesise pixels inside the "
               "protected region at line 3 in every frame; protected regions (performances) "
               "may be touched only by colour ops and whole-frame geometry: move or shrink "
               "the shape, or narrow the region's frames");
    /* An op that does not say where it works is refused wherever a region is. */
    expect_one("shot: S\nmatch: s/*.exr\nframes: 1001-1100\n"
               "protect:\n  - rect: [0, 0, 10, 10]\n    frames: 1040-1050\n"
               "  - rect: [0, 0, 10, 10]\n    frames: 1200-1300\n"
               "ops:\n  - op: smear\n",
               NULL,
               "bad.yaml:10:5: error: smear moves or synthesises pixels inside the protected "
               "region at line 5 at frames 1040-1050; protected regions (performances) may be "
               "touched only by colour ops and whole-frame geometry: move or shrink the op's "
               "frames, or narrow the region's frames");
}

static void test_advice(void)
{
    char *dir = make_dir();
    write_file(dir, "z.yaml",
               "shot: Z\nmatch: z/*.exr\n"
               "ops:\n  - op: zoom\n    scale: {1001: 1.0, 1040: 1.1, 1050: 1.3, 1060: 1.4}\n");
    struct diags d;
    struct pfs_ruleset *rs;
    CHECK(load(dir, NULL, &d, &rs) == 0); /* a warning never stops a load */
    CHECK(d.n == 1 && has(&d, "z.yaml:4:5: warning: zoom: 1.3 is a lot (at frame 1050)"));
    pfs_ruleset_unref(rs);
    write_file(dir, "z.yaml",
               "shot: Z\nmatch: z/*.exr\nops:\n  - op: zoom\n    scale: 1.25\n");
    CHECK(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 1 && has(&d, "z.yaml:4:5: warning: zoom: 1.25 is a lot"));
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

/* A reference frame must be one of the sequence's files, in the shot's
 * range or not. */
static void test_reference_check(void)
{
    char *dailies = make_dir();
    touch_frames(dailies, "s/s.%04d.exr", 1001, 1020);
    expect_one("shot: S\nmatch: s/*.exr\nframes: 1010-1020\nops:\n"
               "  - op: compare\n    frame: 1021\n",
               dailies,
               "bad.yaml:5:5: error: compare: reference frame 1021 is not a frame of this "
               "shot's files (they are numbered 1001-1020)");
    char *dir = make_dir();
    write_file(dir, "ok.yaml", "shot: S\nmatch: s/*.exr\nframes: 1010-1020\nops:\n"
                               "  - op: compare\n    frame: 1001\n");
    struct diags d;
    struct pfs_ruleset *rs;
    CHECK(load(dir, dailies, &d, &rs) == 0);
    CHECK(d.n == 0);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
    rm_rf(dailies);
    free(dailies);
}

#define HEAD "shot: S\nmatch: s/*.exr\n"

static void test_errors_schema(void)
{
    expect_one(HEAD "fames: 1001-1002\nops: [{op: relight}]\n",
               NULL, "bad.yaml:3:1: error: unknown key \"fames\"; did you mean \"frames\"? A "
                     "rule file takes: shot, match, frames, protect, ops, source");
    expect_one(HEAD "exposure: 1\nops: [{op: relight}]\n", NULL,
               "bad.yaml:3:1: error: unknown key \"exposure\"; a rule file takes: shot, match, "
               "frames, protect, ops, source (op parameters go inside an item of ops)");
    expect_one(HEAD "ops:\n  - op: relight\nshot: T\n", NULL,
               "bad.yaml:5:1: error: duplicate key \"shot\" (first at line 1); each key may "
               "appear once");
    expect_one(HEAD "ops:\n  - op: relight\n    exposure: 1\n    exposure: 2\n", NULL,
               "bad.yaml:6:5: error: duplicate key \"exposure\" (first at line 5); each key "
               "may appear once");
    expect_one("match: s/*.exr\nops: [{op: relight}]\n", NULL,
               "bad.yaml:1:1: error: missing \"shot\": name the shot, like shot: A012C003");
    expect_one(HEAD "frames: 1120-1001\nops: [{op: relight}]\n", NULL,
               "bad.yaml:3:9: error: \"frames\": the range 1120-1001 ends before it starts; "
               "write 1001-1120");
    expect_one(HEAD "frames: [1001, 1120]\nops: [{op: relight}]\n", NULL,
               "bad.yaml:3:9: error: \"frames\" must be a frame range like 1001-1120 or one "
               "frame number, got a list of 2 numbers");
    expect_one("shot: S\nmatch: /s/*.exr\nops: [{op: relight}]\n", NULL,
               "bad.yaml:2:8: error: glob \"/s/*.exr\" starts with '/': globs are relative to "
               "the dailies root, write \"s/*.exr\"");
    expect_one("shot: [S]\nmatch: s/*.exr\nops: [{op: relight}]\n", NULL,
               "bad.yaml:1:7: error: \"shot\" must be the shot name, like A012C003, got a list");
    expect_one(HEAD "protect:\n  - rect: [1, 2, 3]\nops: [{op: relight}]\n", NULL,
               "bad.yaml:4:11: error: protect: \"rect\" must be a list of 4 numbers [x0, y0, x1, "
               "y1] in pixels or keyframes {frame: [...]}, got a list of 3 numbers");
    /* YAML syntax: libyaml's own words, at its 1-based position. */
    expect_one(HEAD "ops:\n  - op: relight\n   exposure: 1\n", NULL,
               "bad.yaml:5:4: error: YAML syntax error: did not find expected '-' indicator "
               "while parsing a block collection (line 4)");
    expect_one(HEAD "ops: [{op: relight}\n", NULL,
               "bad.yaml:4:1: error: YAML syntax error: did not find expected ',' or ']' "
               "while parsing a flow sequence (line 3)");
    expect_one(HEAD "ops: [{op: relight}]\n---\nshot: T\n", NULL,
               "bad.yaml:4:1: error: a rule file holds one YAML document; put each shot in "
               "its own file");
    expect_one("", NULL, "bad.yaml:0:0: error: the rule file is empty; it needs at least shot, "
                         "match and ops");
}

static void test_errors_params(void)
{
    expect_one(HEAD "ops:\n  - op: relite\n", NULL,
               "bad.yaml:4:9: error: unknown op \"relite\"; did you mean \"relight\"? known ops: "
               "relight, tweak, paint, smear, zoom, compare, wire, cutout");
    expect_one(HEAD "ops:\n  - op: blur\n", NULL,
               "bad.yaml:4:9: error: unknown op \"blur\"; known ops: relight, tweak, paint, "
               "smear, zoom, compare, wire, cutout");
    expect_one(HEAD "ops:\n  - exposure: 1\n", NULL,
               "bad.yaml:4:5: error: this op has no \"op:\" key naming the operation");
    expect_one(HEAD "ops:\n  - op: relight\n    exposure: [1, 2]\n", NULL,
               "bad.yaml:5:15: error: relight: \"exposure\" must be a number of stops or "
               "keyframes {frame: value}, got a list of 2 numbers");
    expect_one(HEAD "ops:\n  - op: relight\n    exposure: \"0.3\"\n", NULL,
               "bad.yaml:5:15: error: relight: \"exposure\" must be a number of stops or "
               "keyframes {frame: value}, got \"0.3\"");
    expect_one(HEAD "ops:\n  - op: relight\n    exposure: 40\n", NULL,
               "bad.yaml:5:15: error: relight: exposure: 40 stops is out of range -16..16");
    expect_one(HEAD "ops:\n  - op: relight\n    exposure: {1001: 0, 1010: -17.5}\n", NULL,
               "bad.yaml:5:31: error: relight: exposure at frame 1010: -17.5 stops is out of "
               "range -16..16");
    expect_one(HEAD "ops:\n  - op: relight\n    temperature: {from: 100}\n", NULL,
               "bad.yaml:5:25: error: relight: temperature.from: 100 K is out of range "
               "1667..25000");
    expect_one(HEAD "ops:\n  - op: relight\n    temperature: 4300\n", NULL,
               "bad.yaml:5:18: error: relight: \"temperature\" is a group of parameters "
               "(temperature.from, temperature.to); write temperature: {...: value}, got 4300");
    expect_one(HEAD "ops:\n  - op: relight\n    exposur: 1\n", NULL,
               "bad.yaml:5:5: error: relight: unknown parameter \"exposur\"; did you mean "
               "\"exposure\"? relight takes: exposure, temperature.from, temperature.to, "
               "cdl.slope, cdl.offset, cdl.power, cdl.saturation, window.shape, window.center, "
               "window.size, window.feather, window.invert, tint.from, tint.to, window.angle, match.frame, match.model");
    expect_one(HEAD "ops:\n  - op: relight\n    cdl: {slop: [1, 1, 1]}\n", NULL,
               "bad.yaml:5:11: error: relight: unknown parameter \"cdl.slop\"; did you mean "
               "\"cdl.slope\"? relight takes: exposure, temperature.from, temperature.to, "
               "cdl.slope, cdl.offset, cdl.power, cdl.saturation, window.shape, window.center, "
               "window.size, window.feather, window.invert, tint.from, tint.to, window.angle, match.frame, match.model");
    expect_one(HEAD "ops:\n  - op: relight\n    cdl: {slope: [1, 1]}\n", NULL,
               "bad.yaml:5:18: error: relight: \"cdl.slope\" must be a list of 3 numbers "
               "[a, b, c] or keyframes {frame: [...]}, got a list of 2 numbers");
    expect_one(HEAD "ops:\n  - op: relight\n    cdl: {power: [1, 0, 1]}\n", NULL,
               "bad.yaml:5:22: error: relight: cdl.power: 0 (component 2 of 3) is out of range "
               "0.01..100");
    expect_one(HEAD "ops:\n  - op: relight\n    window: {shape: circle}\n", NULL,
               "bad.yaml:5:21: error: relight: \"window.shape\" must be one of none, ellipse, "
               "rect, gradient; got \"circle\"");
    expect_one(HEAD "ops:\n  - op: relight\n    window: {invert: yes}\n", NULL,
               "bad.yaml:5:22: error: relight: \"window.invert\" must be true or false, got "
               "\"yes\"");
    expect_one(HEAD "ops:\n  - op: relight\n    window: {shape: {1001: rect}}\n", NULL,
               "bad.yaml:5:21: error: relight: \"window.shape\" cannot be keyframed; give one "
               "value for the whole shot");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: {1001: 2, 1002: 3}\n", NULL,
               "bad.yaml:5:12: error: tweak: \"width\" cannot be keyframed; give one value for "
               "the whole shot");
    expect_one(HEAD "ops:\n  - op: tweak\n    lo: 5\n", NULL,
               "bad.yaml:4:5: error: tweak: missing required parameter \"width\" (stroke "
               "width)");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    lo: {1001: 0, 1001: 1}\n", NULL,
               "bad.yaml:6:19: error: tweak: \"lo\": frame 1001 is keyed twice (first at line "
               "6)");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    lo: {1001: 0, 01001: 1}\n", NULL,
               "bad.yaml:6:19: error: tweak: \"lo\": frame 1001 is keyed twice (first at line "
               "6)");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    lo: {}\n", NULL,
               "bad.yaml:6:9: error: tweak: \"lo\": keyframes {frame: value} need at least one "
               "frame");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    lo: {first: 1}\n", NULL,
               "bad.yaml:6:10: error: tweak: \"lo\": keyframes are {frame: value} with whole "
               "frame numbers, got \"first\" as a frame");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    center: {1001: [1, 2, 3]}\n", NULL,
               "bad.yaml:6:20: error: tweak: \"center\" at frame 1001 must be a list of 2 "
               "numbers [a, b] in pixels, got a list of 3 numbers");
    /* The op's own check runs at every keyed frame and names the frame. */
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    lo: {1001: 10, 1010: 60}\n"
                    "    hi: {1005: 50}\n", NULL,
               "bad.yaml:4:5: error: tweak: \"lo\" (60) must not be above \"hi\" (50) (at frame "
               "1010)");
    expect_one(HEAD "ops:\n  - op: tweak\n    width: 2\n    lo: 70\n    hi: 50\n", NULL,
               "bad.yaml:4:5: error: tweak: \"lo\" (70) must not be above \"hi\" (50)");
}

/* Without opts.ops the registry of the build is what rule files may name. */
static void test_default_registry(void)
{
    char *dir = make_dir();
    write_file(dir, "bad.yaml", HEAD "ops:\n  - op: relite\n");
    struct diags d = {0};
    struct pfs_rules_opts o = {.rules_dir = dir, .report = collect, .report_ud = &d};
    struct pfs_ruleset *rs;
    pfs_error err = {0};
    CHECK(pfs_rules_load(&o, &rs, &err) == EINVAL && rs == NULL);
    CHECKF(d.n == 1 && !strncmp(d.line[0], "bad.yaml:4:9: error: unknown op \"relite\"; did you "
                                           "mean \"relight\"? known ops: ", 76) &&
               strstr(d.line[0] + 76, "relight"),
           "%s", d.line[0]);
    CHECKF(err.code == EINVAL && strstr(err.msg, ": 1 error in the rule files; no rules loaded"),
           "%s", err.msg);

    /* Nested groups holding keyframes; the log sink as reporter. */
    write_file(dir, "bad.yaml", HEAD "ops:\n  - op: relight\n"
                                "    temperature: {from: {1001: 4300, 1011: 5300}}\n");
    o.report = NULL;
    REQUIRE(pfs_rules_load(&o, &rs, &err) == 0);
    struct pfs_frame_ops *fo;
    REQUIRE(pfs_shot_resolve(pfs_ruleset_shot(rs, 0), 1006, &fo, &err) == 0);
    CHECK(fo->ops[0].vals[1][0] == 4800 && fo->ops[0].vals[2][0] == 6500);
    pfs_frame_ops_free(fo);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

static void test_all_errors_reported(void)
{
    char *dir = make_dir();
    write_file(dir, "a.yaml",
               "shot: A\n"
               "match: a/*.exr\n"
               "colour: red\n"
               "ops:\n"
               "  - op: relight\n"
               "    exposure: 40\n"
               "    window: {shape: circle}\n"
               "  - op: nope\n");
    write_file(dir, "b.yaml", "shot: B\nmatch: [b/*.exr\nops: []\n");
    write_file(dir, "c.yaml", "shot: C\nmatch: c/*.exr\nops: [{op: tweak, width: 2}]\n");
    struct diags d;
    struct pfs_ruleset *rs;
    CHECK(load(dir, NULL, &d, &rs) == EINVAL);
    CHECK(rs == NULL);
    CHECKF(d.n == 5, "%d diagnostics", d.n);
    CHECK(!strncmp(d.line[0], "a.yaml:3:1: error: unknown key \"colour\"", 39));
    CHECK(!strncmp(d.line[1], "a.yaml:6:15: error: relight: exposure: 40 stops", 47));
    CHECK(!strncmp(d.line[2], "a.yaml:7:21: error: relight: \"window.shape\"", 43));
    CHECK(!strncmp(d.line[3], "a.yaml:8:9: error: unknown op \"nope\"", 36));
    CHECKF(!strncmp(d.line[4], "b.yaml:3:4: error: YAML syntax error:", 37), "%s", d.line[4]);

    /* Two files naming the same shot. */
    write_file(dir, "a.yaml", "shot: C\nmatch: a/*.exr\nops: []\n");
    unlink(strcat(strcpy((char[512]){0}, dir), "/b.yaml"));
    CHECK(load(dir, NULL, &d, &rs) == EINVAL);
    CHECK(has(&d, "c.yaml:1:7: error: shot \"C\" is already defined in a.yaml; each shot has "
                  "one rule file"));
    rm_rf(dir);
    free(dir);
}

static void test_dailies_checks(void)
{
    char *dailies = make_dir();
    touch_frames(dailies, "A001/A001C003.%d.exr", 1001, 1008);
    write_file(dailies, "A001/A001_camera_report.txt", "");

    char *dir = make_dir();
    struct diags d;
    struct pfs_ruleset *rs;
    char want[1200];
    write_file(dir, "s.yaml", "shot: S\nmatch:\n  - A001/A001C003.*.exr\n  - A001/A001C004.*.exr\n"
                              "ops: [{op: relight}]\n");
    CHECK(load(dir, dailies, &d, &rs) == EINVAL);
    snprintf(want, sizeof want, "s.yaml:4:5: error: \"A001/A001C004.*.exr\" matches no file in "
                                "%s; check the folder and the clip name (globs are relative to "
                                "the dailies root)", dailies);
    CHECK(d.n == 1 && has(&d, want));

    /* A frame claimed by two files: reported at the second file's glob. */
    write_file(dir, "s.yaml", "shot: S\nmatch: A001/A001C003.*.exr\nops: [{op: relight}]\n");
    write_file(dir, "t.yaml", "shot: T\nframes: 1005-1020\nmatch:\n  - A001/*.txt\n"
                              "  - A001/*.exr\nops: [{op: relight}]\n");
    CHECK(load(dir, dailies, &d, &rs) == EINVAL);
    CHECKF(d.n == 2, "%d", d.n);
    CHECK(has(&d, "t.yaml:5:5: error: A001/A001C003.1005.exr is matched by both s.yaml (shot "
                  "S) and t.yaml (shot T) (and 3 more frames); a frame or a clip can belong to "
                  "one rule file only: narrow a glob or the frames: range"));
    CHECK(has(&d, "t.yaml:4:5: warning: \"A001/*.txt\" matches 1 file but no .exr frame in "
                  "1005-1020; only .exr frames are corrected"));

    /* Split by frame ranges, the same glob is fine. */
    write_file(dir, "s.yaml", "shot: S\nframes: 1001-1004\nmatch: A001/A001C003.*.exr\n"
                              "ops: [{op: relight}]\n");
    write_file(dir, "t.yaml", "shot: T\nframes: 1005-1020\nmatch: A001/*.exr\n"
                              "ops: [{op: relight}]\n");
    CHECK(load(dir, dailies, &d, &rs) == 0);
    CHECK(d.n == 0);
    int frame;
    CHECK(pfs_rules_match(rs, "A001/A001C003.1004.exr", &frame) == pfs_ruleset_shot(rs, 0));
    CHECK(pfs_rules_match(rs, "A001/A001C003.1005.exr", &frame) == pfs_ruleset_shot(rs, 1));
    pfs_ruleset_unref(rs);

    /* pfs_rules_check: listing on success, diagnostics and 1 on failure. */
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    CHECK(pfs_rules_check(dir, dailies, out) == 0);
    fclose(out);
    char expect[4096];
    snprintf(expect, sizeof expect,
             "%s/s.yaml: shot S: 4 files, frames 1001-1004\n"
             "    A001/A001C003.*.exr: 4 frames\n"
             "%s/t.yaml: shot T: 4 files, frames 1005-1008\n"
             "    A001/*.exr: 4 frames\n"
             "2 shots, rules are valid\n",
             dir, dir);
    CHECKF(!strcmp(buf, expect), "got:\n%s", buf);
    free(buf);

    write_file(dir, "t.yaml", "shot: T\nframes: 1005-1020\nmatch: A001/*.exr\n"
                              "ops: [{op: relight, exposure: 99}]\n");
    out = open_memstream(&buf, &len);
    CHECK(pfs_rules_check(dir, dailies, out) == 1);
    fclose(out);
    snprintf(expect, sizeof expect,
             "%s/t.yaml:4:31: error: relight: exposure: 99 stops is out of range -16..16\n"
             "%s: 1 error in the rule files; no rules loaded\n",
             dir, dir);
    CHECKF(!strcmp(buf, expect), "got:\n%s", buf);
    free(buf);

    out = open_memstream(&buf, &len);
    CHECK(pfs_rules_check("/nonexistent/rules", NULL, out) == 1);
    fclose(out);
    CHECKF(!strcmp(buf, "/nonexistent/rules: cannot read the rules directory: No such file or "
                        "directory\n"), "got %s", buf);
    free(buf);
    struct pfs_rules_opts o = {.rules_dir = "/nonexistent/rules"};
    pfs_error err;
    CHECK(pfs_rules_load(&o, &rs, &err) == ENOENT && rs == NULL);

    rm_rf(dir);
    rm_rf(dailies);
    free(dir);
    free(dailies);
}

static void test_samples(void)
{
    const char *src = getenv("PFS_SOURCE_DIR");
    REQUIRE(src);
    char rules[1024], dailies[1024];
    snprintf(rules, sizeof rules, "%s/samples/rules", src);
    snprintf(dailies, sizeof dailies, "%s/samples/dailies", src);
    struct pfs_rules_opts o = {.rules_dir = rules, .dailies_root = dailies};
    struct pfs_ruleset *rs;
    pfs_error err = {0};
    REQUIRE(pfs_rules_load(&o, &rs, &err) == 0);
    CHECK(pfs_ruleset_shot_count(rs) == 2);
    const struct pfs_shot *clip = pfs_rules_match_clip(rs, "A002/A002C007.mp4");
    CHECK(clip && !strcmp(pfs_shot_name(clip), "A002C007"));
    CHECK(clip && pfs_shot_has_frame(clip, 1048) && !pfs_shot_has_frame(clip, 1049));
    int frame = 0;
    const struct pfs_shot *s = pfs_rules_match(rs, "A001/A001C003.1003.exr", &frame);
    CHECK(s && frame == 1003 && !strcmp(pfs_shot_name(s), "A001C003"));
    CHECK(pfs_rules_match(rs, "A001/A001_camera_report.txt", &frame) == NULL);
    char h[33];
    hash_of(sample_yaml, h);
    CHECK(s && !strcmp(pfs_shot_hash(s), h));
    pfs_ruleset_unref(rs);

    FILE *out = tmpfile();
    CHECK(pfs_rules_check(rules, dailies, out) == 0);
    fclose(out);
}

/* Clips: a glob naming a clip gives the shot the whole clip, `source:` sets
 * numbering and colour, and both reach the hash. */
static void test_clip_rules(void)
{
    char *dailies = make_dir();
    write_file(dailies, "A002/A002C007.mov", "");
    write_file(dailies, "A002/A002C008.MXF", "");
    char *dir = make_dir();
    struct diags d;
    struct pfs_ruleset *rs;

    write_file(dir, "s.yaml", "shot: S\nmatch: A002/A002C007.mov\nframes: 1001-1010\n"
                              "source:\n  first_frame: timecode\n"
                              "  colour: {transfer: logc3, primaries: awg3, range: full}\n"
                              "ops: [{op: relight}]\n");
    /* A rule may only say how a clip reads: no ops needed. */
    write_file(dir, "t.yaml", "shot: T\nmatch: A002/*.MXF\nsource: {first_frame: 1}\n");
    REQUIRE(load(dir, dailies, &d, &rs) == 0);
    CHECKF(d.n == 0, "%d diagnostics", d.n);
    const struct pfs_shot *s = pfs_rules_match_clip(rs, "A002/A002C007.mov");
    const struct pfs_shot *t = pfs_rules_match_clip(rs, "A002/A002C008.MXF");
    REQUIRE(s && t);
    CHECK(!strcmp(pfs_shot_name(s), "S") && !strcmp(pfs_shot_name(t), "T"));
    const struct pfs_clip_source *ss = pfs_shot_source(s), *ts = pfs_shot_source(t);
    CHECK(ss->first_from_timecode && ss->transfer == PFS_TRANSFER_LOGC3 &&
          ss->primaries == PFS_PRIMARIES_AWG3 && ss->range == PFS_RANGE_FULL &&
          ss->matrix == -1);
    CHECK(!ts->first_from_timecode && ts->first_frame == 1 && ts->transfer == -1);
    CHECK(pfs_shot_has_frame(s, 1010) && !pfs_shot_has_frame(s, 1011));
    CHECK(pfs_shot_has_frame(t, 7));
    /* Clip frames are not EXR files of the dailies: no EXR match. */
    int frame;
    CHECK(pfs_rules_match(rs, "A002/A002C007.mov", &frame) == NULL);
    CHECK(pfs_rules_match_clip(rs, "A002/A002C009.mov") == NULL);
    CHECK(pfs_clip_source_default()->first_frame == PFS_CLIP_FIRST_FRAME);
    pfs_ruleset_unref(rs);
    FILE *out = tmpfile();
    CHECK(pfs_rules_check(dir, dailies, out) == 0);
    rewind(out);
    char text[2048] = "";
    CHECK(fread(text, 1, sizeof text - 1, out) > 0);
    fclose(out);
    CHECKF(strstr(text, "shot S: 1 clip\n") && strstr(text, "A002/A002C007.mov: 1 clip, 0 frames"),
           "%s", text);

    /* One clip, two rule files: an error even with disjoint frame ranges. */
    write_file(dir, "t.yaml", "shot: T\nframes: 2000-2010\nmatch: A002/*.mov\n"
                              "ops: [{op: relight}]\n");
    CHECK(load(dir, dailies, &d, &rs) == EINVAL);
    CHECK(has(&d, "t.yaml:3:8: error: A002/A002C007.mov is matched by both s.yaml (shot S) "
                  "and t.yaml (shot T); a frame or a clip can belong to one rule file only: "
                  "narrow a glob or the frames: range"));
    rm_rf(dir);
    free(dir);
    rm_rf(dailies);
    free(dailies);

    expect_one("shot: S\nmatch: x\nsource: {colour: {transfer: log-c}}\n", NULL,
               "bad.yaml:3:29: error: colour: transfer \"log-c\" is not one platefs knows; use "
               "one of: rec709, bt1886, srgb, linear, gamma22, gamma28, logc3, slog3");
    expect_one("shot: S\nmatch: x\nsource: {first_frame: -3}\n", NULL,
               "bad.yaml:3:23: error: source: \"first_frame\" is the number of the clip's first "
               "frame (like 1001) or \"timecode\" to number frames from the clip's start "
               "timecode, got -3");
    expect_one("shot: S\nmatch: x\nsource: {frist_frame: 1}\n", NULL,
               "bad.yaml:3:10: error: source: unknown key \"frist_frame\"; it takes first_frame "
               "and colour");
    expect_one("shot: S\nmatch: x\n", NULL,
               "bad.yaml:1:1: error: missing \"ops\": list the operations, like ops: [{op: "
               "relight, exposure: 0.3}]");

    /* The source settings change the hash; writing the defaults does too
     * (the rule then says something), reordering does not. */
    char h1[33], h2[33], h3[33], h4[33];
    hash_of("shot: S\nmatch: x\nops: [{op: relight}]\n", h1);
    hash_of("shot: S\nmatch: x\nsource: {first_frame: 1001}\nops: [{op: relight}]\n", h2);
    hash_of("shot: S\nmatch: x\nsource: {colour: {transfer: slog3, range: full}}\n"
            "ops: [{op: relight}]\n", h3);
    hash_of("shot: S\nmatch: x\nsource: {colour: {range: full, transfer: slog3}}\n"
            "ops: [{op: relight}]\n", h4);
    CHECK(strcmp(h1, h2) != 0 && strcmp(h2, h3) != 0 && strcmp(h3, h4) == 0);
}

/* No timing is asserted; this proves 10,000 files load and the conflict
 * report stays one line per pair of files. */
static void test_many_files(void)
{
    char *dir = make_dir(), *dailies = make_dir();
    for (int c = 0; c < 10; c++) {
        char fmt[64], name[64], yaml[256];
        snprintf(fmt, sizeof fmt, "R%02d/R%02dC001.%%04d.exr", c, c);
        touch_frames(dailies, fmt, 1, 1000);
        snprintf(name, sizeof name, "R%02d.yaml", c);
        snprintf(yaml, sizeof yaml,
                 "shot: R%02d\nmatch: [R%02d/R%02dC001.*.exr, R%02d/*.exr]\n"
                 "ops: [{op: relight, exposure: 0.1}]\n", c, c, c, c);
        write_file(dir, name, yaml);
    }
    struct diags d;
    struct pfs_ruleset *rs;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(load(dir, dailies, &d, &rs) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "  10 shots x 10,000 files: %.1f ms\n",
            (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    int frame;
    CHECK(pfs_rules_match(rs, "R07/R07C001.0999.exr", &frame) == pfs_ruleset_shot(rs, 7) &&
          frame == 999);
    pfs_ruleset_unref(rs);

    write_file(dir, "Z.yaml", "shot: Z\nmatch: \"R0[0-2]/*.exr\"\nops: []\n");
    CHECK(load(dir, dailies, &d, &rs) == EINVAL);
    CHECKF(d.n == 4, "%d", d.n); /* the empty-ops warning, three conflicts */
    CHECK(has(&d, "Z.yaml:2:8: error: R02/R02C001.0001.exr is matched by both R02.yaml (shot "
                  "R02) and Z.yaml (shot Z) (and 999 more frames); a frame or a clip can belong "
                  "to one rule file only: narrow a glob or the frames: range"));
    rm_rf(dir);
    rm_rf(dailies);
    free(dir);
    free(dailies);
}

/* ---- points, keyed groups, op frames, ordering ----------------------------- */

static const char *wire_yaml = "shot: W\n"
                               "match: w/*.exr\n"
                               "ops:\n"
                               "  - op: wire\n"
                               "    path: [[812, 0], [840, 540], [846, 1079]]\n"
                               "    anchors: [[1, -2]]\n"
                               "  - op: relight\n"
                               "    exposure: 0.5\n";

static void test_points(void)
{
    struct pfs_frame_ops *fo = resolve_one(wire_yaml, 1001);
    REQUIRE(fo->nops == 2);
    const pfs_pvec *v = fo->ops[0].vals;
    const double(*xy)[2];
    /* The layout of engine/op.h: {count, first}, the points after the table. */
    CHECK(v[0][0] == 3 && v[0][1] == 3 && v[1][0] == 6 && v[2][0] == 1 && v[2][1] == 5);
    REQUIRE(pfs_op_points(v, 0, &xy) == 3);
    CHECK(xy[0][0] == 812 && xy[0][1] == 0 && xy[1][0] == 840 && xy[1][1] == 540 &&
          xy[2][0] == 846 && xy[2][1] == 1079);
    REQUIRE(pfs_op_points(v, 2, &xy) == 1);
    CHECK(xy[0][0] == 1 && xy[0][1] == -2);
    const char *want = "wire path=[[812,0],[840,540],[846,1079]] width=6 anchors=[[1,-2]]\n"
                       "relight exposure=0.5 ";
    CHECKF(!strncmp(fo->canonical, want, strlen(want)), "got %s", fo->canonical);
    CHECKF(!strcmp(fo->ops[0].text, "wire path=[[812,0],[840,540],[846,1079]] anchors=[[1,-2]]"),
           "got %s", fo->ops[0].text);
    XXH128_hash_t h = XXH3_128bits(fo->canonical, strlen(fo->canonical));
    char hex[33];
    snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    CHECK(!strcmp(fo->hash, hex));
    pfs_frame_ops_free(fo);

    /* Not written: no points, "[]" in the canonical text, left out of the
     * header's line. Keyframes move point by point and hold outside. */
    const char *keyed = "shot: W\nmatch: w/*.exr\nops:\n  - op: wire\n"
                        "    path: {1011: [[10, 0], [20, 30.5]], 1001: [[0, 0], [10, 10]]}\n"
                        "    width: {1001: 2, 1011: 4}\n";
    static const struct {
        int frame;
        double p[2][2], width;
    } at[] = {
        {990, {{0, 0}, {10, 10}}, 2},   {1001, {{0, 0}, {10, 10}}, 2},
        {1006, {{5, 0}, {15, 20.25}}, 3}, {1011, {{10, 0}, {20, 30.5}}, 4},
        {2000, {{10, 0}, {20, 30.5}}, 4},
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        fo = resolve_one(keyed, at[i].frame);
        REQUIRE(fo->nops == 1);
        v = fo->ops[0].vals;
        REQUIRE(pfs_op_points(v, 0, &xy) == 2);
        for (int k = 0; k < 2; k++)
            CHECKF(xy[k][0] == at[i].p[k][0] && xy[k][1] == at[i].p[k][1],
                   "frame %d point %d: %g, %g", at[i].frame, k, xy[k][0], xy[k][1]);
        CHECK(v[1][0] == at[i].width);
        CHECK(pfs_op_points(v, 2, &xy) == 0 && xy == NULL);
        pfs_frame_ops_free(fo);
    }
    fo = resolve_one(keyed, 1006);
    CHECKF(!strcmp(fo->canonical, "wire path=[[5,0],[15,20.25]] width=3 anchors=[]"), "got %s",
           fo->canonical);
    CHECKF(!strcmp(fo->ops[0].text, "wire path=[[5,0],[15,20.25]] width=3"), "got %s",
           fo->ops[0].text);
    pfs_frame_ops_free(fo);

    /* The hash is of the points' meaning, not their spelling. */
    char h1[33], h2[33], h3[33];
    hash_of(wire_yaml, h1);
    hash_of("shot: W\nmatch: w/*.exr\nops:\n  - op: wire\n    anchors:\n      - [1.0, -2]\n"
            "    path:\n      - [8.12e2, 0]\n      - [840, 540.0]\n      - [846, 1079]\n"
            "  - {op: relight, exposure: 0.5}\n",
            h2);
    CHECKF(!strcmp(h1, h2), "%s vs %s", h1, h2);
    hash_of("shot: W\nmatch: w/*.exr\nops:\n  - op: wire\n"
            "    path: [[812, 0], [840, 541], [846, 1079]]\n    anchors: [[1, -2]]\n"
            "  - op: relight\n    exposure: 0.5\n",
            h3);
    CHECK(strcmp(h1, h3) != 0);

    /* 64 points load, 65 do not. */
    char big[4096], *p = big;
    p += sprintf(p, HEAD "ops:\n  - op: wire\n    path: [");
    for (int i = 0; i < PFS_PARAM_MAX_POINTS; i++)
        p += sprintf(p, "%s[%d, %d]", i ? ", " : "", i, i);
    sprintf(p, "]\n");
    hash_of(big, h1);
    sprintf(p, ", [1, 1]]\n");
    expect_one(big, NULL,
               "bad.yaml:5:11: error: wire: \"path\" has 65 points; a list of points holds at "
               "most 64");

    expect_one(HEAD "ops:\n  - op: wire\n"
                    "    path: {1001: [[0, 0], [1, 1], [2, 2]], 1060: [[0, 0], [1, 1], [2, 2], "
                    "[3, 3]]}\n",
               NULL,
               "bad.yaml:5:44: error: wire: path: the key at frame 1060 has 4 points but the one "
               "at frame 1001 has 3; keyframes of a path need the same number of points");
    expect_one(HEAD "ops:\n  - op: wire\n    path: [[1, 2]]\n", NULL,
               "bad.yaml:5:11: error: wire: \"path\" needs at least 2 points, got 1");
    expect_one(HEAD "ops:\n  - op: wire\n    path: [[1, 2], [5000, 3]]\n", NULL,
               "bad.yaml:5:21: error: wire: path: 5000 px (point 2, x) is out of range 0..4096");
    expect_one(HEAD "ops:\n  - op: wire\n    path: {1001: [[1, 2], [3, -1]]}\n", NULL,
               "bad.yaml:5:31: error: wire: path at frame 1001: -1 px (point 2, y) is out of "
               "range 0..4096");
    expect_one(HEAD "ops:\n  - op: wire\n    path: [812, 0, 840, 540]\n", NULL,
               "bad.yaml:5:11: error: wire: \"path\" must be a list of points [[x, y], ...] in "
               "pixels or keyframes {frame: [[x, y], ...]}, got a list of 4 numbers; write each "
               "point as its own [x, y], like [[812, 0], [840, 540]]");
    expect_one(HEAD "ops:\n  - op: wire\n    path: [[1, 2], [3]]\n", NULL,
               "bad.yaml:5:20: error: wire: \"path\": point 2 must be [x, y] in pixels, got a "
               "list of 1 number");
    expect_one(HEAD "ops:\n  - op: wire\n    path: none\n", NULL,
               "bad.yaml:5:11: error: wire: \"path\" must be a list of points [[x, y], ...] in "
               "pixels or keyframes {frame: [[x, y], ...]}, got \"none\"");
    expect_one(HEAD "ops:\n  - op: wire\n    width: 3\n", NULL,
               "bad.yaml:4:5: error: wire: missing required parameter \"path\" (the wire's "
               "centre line)");
    expect_one(HEAD "ops:\n  - op: wire\n    path: [[1, 2], [3, 4]]\n"
                    "    anchors: {1001: [[1, 1]]}\n",
               NULL,
               "bad.yaml:6:14: error: wire: \"anchors\" cannot be keyframed; give one value for "
               "the whole shot");
    /* The op's own check sees the points, at every keyed frame. */
    expect_one(HEAD "ops:\n  - op: wire\n    path: {1001: [[1, 2], [3, 4]], 1011: [[1, 2], "
                    "[1, 2]]}\n",
               NULL, "bad.yaml:4:5: error: wire: the path repeats point 2 (1, 2) (at frame 1011)");
}

static void test_keyed_groups(void)
{
    const char *member = "shot: C\nmatch: c/*.exr\nops:\n  - op: cutout\n"
                         "    shape:\n"
                         "      polygon:\n"
                         "        1001: [[0, 0], [100, 0], [50, 80]]\n"
                         "        1041: [[10, 0], [110, 0], [60, 90]]\n"
                         "      ellipse: {1041: [5, 5, 9, 9], 1001: [1, 1, 1, 1]}\n"
                         "    feather: 4\n";
    const char *group = "shot: C\nmatch: c/*.exr\nops:\n  - op: cutout\n"
                        "    feather: 4\n"
                        "    shape:\n"
                        "      1041: {ellipse: [5, 5, 9, 9], polygon: [[10, 0], [110, 0], "
                        "[60, 90]]}\n"
                        "      1001: {polygon: [[0, 0], [100, 0], [50, 80]], ellipse: [1, 1, 1, "
                        "1]}\n";
    const char *dotted = "shot: C\nmatch: c/*.exr\nops:\n  - op: cutout\n"
                         "    shape.ellipse: {1001: [1, 1, 1, 1], 1041: [5, 5, 9, 9]}\n"
                         "    shape.polygon: {1001: [[0, 0], [100, 0], [50, 80]], 1041: [[10, "
                         "0], [110, 0], [60, 90]]}\n"
                         "    feather: 4\n";
    char h1[33], h2[33], h3[33];
    hash_of(member, h1);
    hash_of(group, h2);
    hash_of(dotted, h3);
    CHECKF(!strcmp(h1, h2) && !strcmp(h1, h3), "%s %s %s", h1, h2, h3);
    struct pfs_frame_ops *a = resolve_one(member, 1021), *b = resolve_one(group, 1021);
    const char *want = "cutout shape.polygon=[[5,0],[105,0],[55,85]] shape.ellipse=3,3,5,5 "
                       "shape.mode=fill feather=4";
    CHECKF(!strcmp(a->canonical, want), "got %s", a->canonical);
    CHECKF(!strcmp(b->canonical, want), "got %s", b->canonical);
    CHECK(!strcmp(a->hash, b->hash));
    pfs_frame_ops_free(a);
    pfs_frame_ops_free(b);

    expect_one(HEAD "ops:\n  - op: cutout\n    shape:\n"
                    "      1001: {polygon: [[0, 0], [1, 0], [0, 1]]}\n"
                    "      1040: {ellipse: [5, 5, 2, 2]}\n",
               NULL,
               "bad.yaml:7:7: error: cutout: shape: the key at frame 1040 gives ellipse but the "
               "one at frame 1001 gives polygon; a shape keeps its kind across keys");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape:\n"
                    "      1001: {polygon: [[0, 0], [1, 0], [0, 1]], ellipse: [1, 1, 1, 1]}\n"
                    "      1040: {polygon: [[0, 0], [1, 0], [0, 1]]}\n",
               NULL,
               "bad.yaml:7:7: error: cutout: shape: the key at frame 1040 gives polygon but the "
               "one at frame 1001 gives polygon, ellipse; a shape keeps its kind across keys");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape:\n"
                    "      1001: {polygon: [[0, 0], [1, 0], [0, 1]]}\n"
                    "      1040: {polygon: [[0, 0], [1, 0], [0, 1], [1, 1]]}\n",
               NULL,
               "bad.yaml:7:7: error: cutout: shape.polygon: the key at frame 1040 has 4 points "
               "but the one at frame 1001 has 3; keyframes of a polygon need the same number of "
               "points");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape: {1001: {polgon: [[0, 0], [1, 0], [0, 1]]}}\n",
               NULL,
               "bad.yaml:5:20: error: cutout: unknown parameter \"shape.polgon\"; did you mean "
               "\"shape.polygon\"? cutout takes: shape.polygon, shape.ellipse, shape.mode, "
               "feather");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape: {1001: {mode: clone}}\n", NULL,
               "bad.yaml:5:26: error: cutout: \"shape.mode\" cannot be keyframed; give one value "
               "for the whole shot");
    /* Values are checked, and pointed at, where they are written. */
    expect_one(HEAD "ops:\n  - op: cutout\n    shape: {1001: {ellipse: [1, 2, 3]}}\n", NULL,
               "bad.yaml:5:29: error: cutout: \"shape.ellipse\" at frame 1001 must be a list of 4 "
               "numbers [cx, cy, rx, ry] in pixels, got a list of 3 numbers");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape: {1001: [1, 2]}\n", NULL,
               "bad.yaml:5:19: error: cutout: \"shape\" at frame 1001 must be a mapping of its "
               "parameters (shape.polygon, shape.ellipse, shape.mode), got a list of 2 numbers");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape: {1001: {ellipse: [1, 1, 1, 1]}, "
                    "ellipse: [1, 1, 1, 1]}\n",
               NULL,
               "bad.yaml:5:44: error: cutout: \"shape\": keyframes are {frame: {parameter: "
               "value}} with whole frame numbers, got \"ellipse\" as a frame");
    expect_one(HEAD "ops:\n  - op: cutout\n    shape: {1001: {ellipse: [1, 1, 1, 1]}}\n"
                    "    shape.ellipse: [2, 2, 2, 2]\n",
               NULL,
               "bad.yaml:6:5: error: cutout: \"shape.ellipse\" is set twice (first at line 5)");
}

static const char *frames_yaml = "shot: F\n"
                                 "match: f/*.exr\n"
                                 "frames: 1001-1100\n"
                                 "ops:\n"
                                 "  - op: wire\n"
                                 "    frames: 1001-1040\n"
                                 "    path: [[10, 10], [20, 20]]\n"
                                 "  - op: relight\n"
                                 "    exposure: 0.5\n";

static void test_op_frames(void)
{
    char *dir = make_dir();
    write_file(dir, "f.yaml", frames_yaml);
    struct diags d;
    struct pfs_ruleset *rs;
    REQUIRE(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 0);
    const struct pfs_shot *s = pfs_ruleset_shot(rs, 0);
    struct pfs_frame_ops *in, *out, *all;
    pfs_error err;
    REQUIRE(pfs_shot_resolve(s, 1040, &in, &err) == 0);
    REQUIRE(pfs_shot_resolve(s, 1041, &out, &err) == 0);
    REQUIRE(pfs_shot_resolve_all(s, 1041, &all, &err) == 0);
    REQUIRE(in->nops == 2 && out->nops == 1 && all->nops == 2);
    CHECK(in->ops[0].desc == &wire_op && in->ops[0].index == 0 && in->ops[0].in_range);
    CHECK(in->ops[1].index == 1 && in->ops[1].in_range);
    CHECK(out->ops[0].desc == pfs_op_find("relight") && out->ops[0].index == 1 &&
          out->ops[0].in_range);
    const char *both = "wire path=[[10,10],[20,20]] width=6 anchors=[]\nrelight ";
    CHECKF(strncmp(in->canonical, both, strlen(both)) == 0, "got %s", in->canonical);
    CHECK(strncmp(out->canonical, "relight exposure=0.5 ", 21) == 0);
    CHECK(strcmp(in->hash, out->hash) != 0);
    /* Every op, with its values, whatever its range; canonical and hash
     * those of the ops in force. */
    CHECK(all->ops[0].desc == &wire_op && all->ops[0].index == 0 && !all->ops[0].in_range);
    CHECK(all->ops[1].index == 1 && all->ops[1].in_range);
    const double(*xy)[2];
    CHECK(pfs_op_points(all->ops[0].vals, 0, &xy) == 2 && xy[1][0] == 20);
    CHECK(!strcmp(all->ops[0].text, "wire path=[[10,10],[20,20]]"));
    CHECK(!strcmp(all->canonical, out->canonical) && !strcmp(all->hash, out->hash));
    pfs_frame_ops_free(all);
    REQUIRE(pfs_shot_resolve_all(s, 1040, &all, &err) == 0);
    CHECK(all->nops == 2 && all->ops[0].in_range && all->ops[1].in_range);
    CHECK(!strcmp(all->canonical, in->canonical) && !strcmp(all->hash, in->hash));
    pfs_frame_ops_free(all);
    pfs_frame_ops_free(in);
    pfs_frame_ops_free(out);

    /* The frame outside the op's range is the frame of the shot without it. */
    struct pfs_frame_ops *plain = resolve_one("shot: F\nmatch: f/*.exr\nops:\n  - op: relight\n"
                                              "    exposure: 0.5\n", 1041);
    REQUIRE(pfs_shot_resolve(s, 1041, &out, &err) == 0);
    CHECK(!strcmp(plain->canonical, out->canonical) && !strcmp(plain->hash, out->hash));
    pfs_frame_ops_free(plain);
    pfs_frame_ops_free(out);

    /* The op's range is part of the shot's hash. */
    char h1[33], h2[33], h3[33];
    snprintf(h1, sizeof h1, "%s", pfs_shot_hash(s));
    pfs_ruleset_unref(rs);
    char *edited = strdup(frames_yaml);
    char *p = strstr(edited, "1001-1040");
    REQUIRE(p);
    p[8] = '1';
    hash_of(edited, h2);
    CHECK(strcmp(h1, h2) != 0);
    p[8] = '0';
    hash_of(edited, h3);
    CHECK(!strcmp(h1, h3));
    free(edited);
    hash_of("shot: F\nmatch: f/*.exr\nframes: 1001-1100\nops:\n  - op: wire\n"
            "    path: [[10, 10], [20, 20]]\n  - op: relight\n    exposure: 0.5\n",
            h2);
    CHECK(strcmp(h1, h2) != 0);

    /* Protected regions: only the frames where the op is in force count.
     * The paint square meets the rectangle at frames 1016-1020. */
    write_file(dir, "f.yaml",
               "shot: S\nmatch: s/*.exr\nframes: 1001-1030\n"
               "protect:\n  - rect: [300, 0, 400, 100]\n    frames: 1001-1020\n"
               "ops:\n  - op: paint\n    frames: 1001-1015\n"
               "    at: {1001: [150, 50], 1031: [450, 50]}\n");
    CHECK(load(dir, NULL, &d, &rs) == 0 && d.n == 0);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
    expect_one("shot: S\nmatch: s/*.exr\nframes: 1001-1030\n"
               "protect:\n  - rect: [300, 0, 400, 100]\n    frames: 1001-1020\n"
               "ops:\n  - op: paint\n    frames: 1001-1017\n"
               "    at: {1001: [150, 50], 1031: [450, 50]}\n",
               NULL,
               "bad.yaml:8:5: error: paint would move or synthesise pixels inside the "
               "protected region at line 5 at frames 1016-1017; protected regions "
               "(performances) may be touched only by colour ops and whole-frame geometry: "
               "move or shrink the shape, or narrow the region's frames");
    /* Without a shot range too; an op that may change any pixel. */
    expect_one("shot: S\nmatch: s/*.exr\n"
               "protect:\n  - rect: [0, 0, 10, 10]\n    frames: 1040-1050\n"
               "ops:\n  - op: smear\n    frames: 1045-1200\n",
               NULL,
               "bad.yaml:7:5: error: smear moves or synthesises pixels inside the protected "
               "region at line 4 at frames 1045-1050; protected regions (performances) may be "
               "touched only by colour ops and whole-frame geometry: move or shrink the op's "
               "frames, or narrow the region's frames");
    dir = make_dir();
    write_file(dir, "f.yaml",
               "shot: S\nmatch: s/*.exr\n"
               "protect:\n  - rect: [0, 0, 10, 10]\n    frames: 1040-1050\n"
               "ops:\n  - op: smear\n    frames: 1051-1200\n");
    CHECK(load(dir, NULL, &d, &rs) == 0 && d.n == 0);
    pfs_ruleset_unref(rs);

    /* Advice too: 1.3 at frame 1050 is outside the op's frames, and the
     * value at the range's end (1.14) is fine... */
    write_file(dir, "f.yaml",
               "shot: Z\nmatch: z/*.exr\n"
               "ops:\n  - op: zoom\n    frames: 1001-1042\n"
               "    scale: {1001: 1.0, 1040: 1.1, 1050: 1.3, 1060: 1.4}\n");
    CHECK(load(dir, NULL, &d, &rs) == 0 && d.n == 0);
    pfs_ruleset_unref(rs);
    /* ... until the range reaches where it is not. */
    write_file(dir, "f.yaml",
               "shot: Z\nmatch: z/*.exr\n"
               "ops:\n  - op: zoom\n    frames: 1001-1048\n"
               "    scale: {1001: 1.0, 1040: 1.1, 1050: 1.3, 1060: 1.4}\n");
    CHECK(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 1 && has(&d, "f.yaml:4:5: warning: zoom: 1.26 is a lot (at frame 1048)"));
    pfs_ruleset_unref(rs);
    /* An op whose range misses the shot's never runs: said, not refused. */
    write_file(dir, "f.yaml",
               "shot: F\nmatch: f/*.exr\nframes: 1001-1100\n"
               "ops:\n  - op: relight\n    frames: 2000-2010\n");
    CHECK(load(dir, NULL, &d, &rs) == 0);
    CHECK(d.n == 1 && has(&d, "f.yaml:6:13: warning: relight: its frames 2000-2010 lie outside "
                              "the shot's frames 1001-1100, so it never runs"));
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);

    expect_one(HEAD "ops:\n  - op: relight\n    frames: 1040-1001\n", NULL,
               "bad.yaml:5:13: error: relight: \"frames\": the range 1040-1001 ends before it "
               "starts; write 1001-1040");
    expect_one(HEAD "ops:\n  - op: relight\n    frames: [1001, 1040]\n", NULL,
               "bad.yaml:5:13: error: relight: \"frames\" must be a frame range like 1001-1120 or "
               "one frame number, got a list of 2 numbers");
}

static void test_ordering(void)
{
    expect_one(HEAD "ops:\n  - op: relight\n    exposure: 1\n  - op: zoom\n"
                    "  - op: wire\n    path: [[1, 1], [2, 2]]\n",
               NULL,
               "bad.yaml:7:5: error: wire reads neighbouring frames, so it must come before "
               "relight (line 4) in ops: it fills holes from the plates as shot");
    /* Reported along with the other problems of the file. */
    char *dir = make_dir();
    write_file(dir, "o.yaml", HEAD "ops:\n  - op: zoom\n    scale: 9\n"
                              "  - op: cutout\n    shape: {polygon: [[0, 0], [1, 0], [0, 1]]}\n");
    struct diags d;
    struct pfs_ruleset *rs;
    CHECK(load(dir, NULL, &d, &rs) == EINVAL);
    CHECKF(d.n == 2, "%d", d.n);
    CHECK(has(&d, "o.yaml:5:12: error: zoom: scale: 9 is out of range 0.5..4"));
    CHECK(has(&d, "o.yaml:6:5: error: cutout reads neighbouring frames, so it must come before "
                  "zoom (line 4) in ops: it fills holes from the plates as shot"));
    /* Neighbour-reading ops first, in any order among themselves. */
    write_file(dir, "o.yaml", HEAD "ops:\n  - op: cutout\n  - op: wire\n"
                              "    path: [[1, 1], [2, 2]]\n  - op: relight\n  - op: paint\n");
    CHECK(load(dir, NULL, &d, &rs) == 0 && d.n == 0);
    pfs_ruleset_unref(rs);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    RUN(test_valid_load_and_match);
    RUN(test_canonical_sample);
    RUN(test_keyframes);
    RUN(test_hash_stability);
    RUN(test_protect);
    RUN(test_protect_keyframes);
    RUN(test_protect_refusal);
    RUN(test_advice);
    RUN(test_reference_check);
    RUN(test_errors_schema);
    RUN(test_errors_params);
    RUN(test_default_registry);
    RUN(test_all_errors_reported);
    RUN(test_dailies_checks);
    RUN(test_samples);
    RUN(test_clip_rules);
    RUN(test_many_files);
    RUN(test_points);
    RUN(test_keyed_groups);
    RUN(test_op_frames);
    RUN(test_ordering);
    return CHECK_DONE();
}
