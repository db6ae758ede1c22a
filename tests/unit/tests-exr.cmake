pfs_unit_test(test_exr pfs_exr)
