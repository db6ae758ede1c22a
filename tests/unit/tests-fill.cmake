# Unit test of engine/fill: membrane, spatial fill (against OpenCV's Telea,
# run through /usr/bin/python3 and python3-opencv), blend and grain.
pfs_unit_test(test_fill pfs_ops pfs_exr)
