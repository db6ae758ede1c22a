pfs_unit_test(test_colour pfs_colour)
