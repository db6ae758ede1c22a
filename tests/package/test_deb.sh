#!/usr/bin/env bash
# The Debian package builds from this tree, installs the binary, the docs
# and the sample dailies, and declares the libraries it links as depends.
set -euo pipefail
: "${PFS_BUILD_DIR:?}"
out=$(mktemp -d /tmp/platefs-deb.XXXXXX)
trap 'rm -rf "$out"' EXIT
(cd "$PFS_BUILD_DIR" && cpack -G DEB -B "$out" >/dev/null)
deb=$(ls "$out"/platefs_*.deb)
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/platefs ./usr/share/doc/platefs/README.md ./usr/share/doc/platefs/rules.md \
    ./usr/share/doc/platefs/examples/rules/A001C003.yaml \
    ./usr/share/doc/platefs/examples/dailies/A001/A001C003.1001.exr; do
    grep -q " $f\$" <<<"$contents" || { echo "FAIL: $f missing from the package"; exit 1; }
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in fuse3 libfuse3 liblmdb libopenexr libyaml libxxhash; do
    grep -q "$lib" <<<"$depends" || { echo "FAIL: Depends lacks $lib: $depends"; exit 1; }
done
dpkg-deb -x "$deb" "$out/root"
"$out/root/usr/bin/platefs" version | grep -q "platefs 0" || { echo "FAIL: packaged binary"; exit 1; }
echo "package ok: $(basename "$deb")"
