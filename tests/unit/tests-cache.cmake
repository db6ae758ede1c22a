pfs_unit_test(test_cache pfs_cache)
