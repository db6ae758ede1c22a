# Unit tests of wire and object removal: real frames, real flows, the
# OpenCL path on the real platform (PoCL's CPU device without a GPU).
pfs_unit_test(test_remove pfs_engine)
if(PFS_SANITIZE)
  set_property(TEST test_remove APPEND PROPERTY ENVIRONMENT
               "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_LIST_DIR}/../lsan.supp")
endif()
