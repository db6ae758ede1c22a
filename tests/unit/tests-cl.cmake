# Unit tests of cl/ and of the relight op; both run on the real OpenCL
# platform (PoCL's CPU device when there is no GPU).
pfs_unit_test(test_cl pfs_cl PkgConfig::XXHASH)
pfs_unit_test(test_relight pfs_ops)
pfs_unit_test(test_reframe pfs_ops)
# PoCL and LLVM keep process-lifetime allocations that LeakSanitizer reports
# at exit; suppress those (and only those) in sanitizer builds.
if(PFS_SANITIZE)
  foreach(t test_cl test_relight test_reframe)
    set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
                 "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_LIST_DIR}/../lsan.supp")
  endforeach()
endif()
