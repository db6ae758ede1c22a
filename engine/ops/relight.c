/*
 * relight.c - exposure, white balance and ASC CDL in scene-linear light,
 * optionally inside a soft-edged window.
 */
#include "engine/op.h"

static const char *const window_shapes[] = {"none", "ellipse", "rect", NULL};

static const struct pfs_param_desc relight_params[] = {
    {.name = "exposure", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -16, .max = 16,
     .def = {0}, .keyframable = true, .unit = "stops",
     .help = "exposure change in stops (+1 doubles the light)"},
    {.name = "temperature.from", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1667,
     .max = 25000, .def = {6500}, .keyframable = true, .unit = "K",
     .help = "colour temperature of the light the plate was shot under"},
    {.name = "temperature.to", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 1667,
     .max = 25000, .def = {6500}, .keyframable = true, .unit = "K",
     .help = "colour temperature the plate should look lit by"},
    {.name = "cdl.slope", .type = PFS_PARAM_VEC, .ncomp = 3, .min = 0, .max = 100,
     .def = {1, 1, 1}, .keyframable = true, .help = "ASC CDL slope per channel (R, G, B)"},
    {.name = "cdl.offset", .type = PFS_PARAM_VEC, .ncomp = 3, .min = -10, .max = 10,
     .def = {0, 0, 0}, .keyframable = true, .help = "ASC CDL offset per channel (R, G, B)"},
    {.name = "cdl.power", .type = PFS_PARAM_VEC, .ncomp = 3, .min = 0.01, .max = 100,
     .def = {1, 1, 1}, .keyframable = true, .help = "ASC CDL power per channel (R, G, B)"},
    {.name = "cdl.saturation", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 100,
     .def = {1}, .keyframable = true, .help = "ASC CDL saturation (Rec.709 luma weights)"},
    {.name = "window.shape", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = window_shapes,
     .def = {0}, .help = "limit the correction to an ellipse or a rectangle"},
    {.name = "window.center", .type = PFS_PARAM_VEC, .ncomp = 2, .min = -1e6, .max = 1e6,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "window centre [x, y] in display-window pixels"},
    {.name = "window.size", .type = PFS_PARAM_VEC, .ncomp = 2, .min = 0, .max = 1e6,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "window full width and height [w, h] in pixels"},
    {.name = "window.feather", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 1e5,
     .def = {0}, .keyframable = true, .unit = "px",
     .help = "width of the soft edge, centred on the window's outline"},
    {.name = "window.invert", .type = PFS_PARAM_BOOL, .ncomp = 1, .def = {0},
     .help = "correct outside the window instead of inside"},
};

const struct pfs_op_desc pfs_op_relight = {
    .name = "relight",
    .summary = "exposure, white balance and ASC CDL in scene-linear light, "
               "optionally inside a soft window",
    .params = relight_params,
    .nparams = sizeof relight_params / sizeof relight_params[0],
    .kind = PFS_OP_COLOUR,
};
