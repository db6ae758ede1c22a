pfs_unit_test(test_clip pfs_clip)
