#!/usr/bin/env bash
# deps.sh - installs what platefs needs to build, run and test on Debian 12.
# Does nothing when everything is already installed.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libfuse3-dev fuse3
    libopenexr-dev openexr
    ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd clinfo
    liblmdb-dev lmdb-utils
    libyaml-dev libxxhash-dev
    libavformat-dev libavcodec-dev libavutil-dev libswscale-dev ffmpeg
    openimageio-tools python3 python3-numpy python3-opencv procps util-linux
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
