pfs_unit_test(test_engine pfs_engine)
