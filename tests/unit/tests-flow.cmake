# Unit tests of dense optical flow (engine/flow.c, cl/flow.cl): the C
# reference and the OpenCL path on the real device, on a sample frame.
pfs_unit_test(test_flow pfs_ops pfs_exr)
# PoCL and LLVM keep process-lifetime allocations that LeakSanitizer reports
# at exit; suppress those (and only those) in sanitizer builds.
if(PFS_SANITIZE)
  set_property(TEST test_flow APPEND PROPERTY ENVIRONMENT
               "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_LIST_DIR}/../lsan.supp")
endif()
