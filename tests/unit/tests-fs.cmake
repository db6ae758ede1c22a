pfs_unit_test(test_fs pfs_fs)
