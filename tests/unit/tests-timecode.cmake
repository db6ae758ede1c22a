pfs_unit_test(test_timecode pfs_clip)
