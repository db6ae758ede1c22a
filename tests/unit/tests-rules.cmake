pfs_unit_test(test_rules pfs_rules)
