#!/usr/bin/env bash
# Random access into clips is exact: frames read in a shuffled order equal
# the frames read in order, on a long-GOP H.264 clip and on an open-GOP one.
# Sequential reads reuse an open decoder. Listing and stat of a clip's
# frames after the first index build open no media, even after a remount.
# A truncated clip lists the frames it has; a clip with corrupt packets
# gives EIO for the frames that cannot be decoded, with a log line naming
# the clip and frame, and everything else keeps working.
. "$(dirname "$0")/lib.sh"

rm -f "$RULES"/*.yaml # uncorrected frames: decoding is what is under test
mkdir -p "$DAILIES/C001"
src=$DAILIES/A002/A002C007.mp4
# Open GOP: non-IDR keyframes whose leading B-frames reference the GOP before.
ffmpeg -v error -i "$src" -frames:v 72 -vf scale=640:360 -an -c:v libx264 \
    -x264-params open_gop=1:keyint=12:min-keyint=12:bframes=3:scenecut=0 "$DAILIES/C001/C001C001.mkv"
# Faststart, then cut: the index in front survives, the tail of the data does not.
ffmpeg -v error -i "$src" -c copy -movflags +faststart "$WORK/faststart.mp4"
head -c $(( $(stat -c %s "$WORK/faststart.mp4") * 6 / 10 )) "$WORK/faststart.mp4" >"$DAILIES/C001/C001C002.mp4"
# Corrupt packets: 32 KiB of zeros in the middle of the picture data.
cp "$WORK/faststart.mp4" "$DAILIES/C001/C001C003.mp4"
dd if=/dev/zero of="$DAILIES/C001/C001C003.mp4" bs=1 count=32768 conv=notrunc status=none \
    seek=$(( $(stat -c %s "$WORK/faststart.mp4") / 2 ))

mount_fs

# Sequential pass first (fresh decoders, in order), kept as the reference.
frames_of() { ls "$MNT/$1" | sed "s|^|$MNT/$1/|"; }
md5_frames() { for f in "$@"; do echo "$(basename "$f") $(md5sum <"$f" | cut -d' ' -f1)"; done | sort; }
for clip in A002/A002C007.mp4.frames C001/C001C001.mkv.frames; do
    mapfile -t all < <(frames_of "$clip")
    md5_frames "${all[@]}" >"$WORK/linear.$(dirname "$clip")"
done
unmount_fs
# In-order reads continue an open decoder: a handful of seeks (readahead
# threads may each start one), not one per frame.
seeks=$(sed -n 's/.*clip decoders: \([0-9]*\) frames, \([0-9]*\) seeks.*/\2/p' "$LOG" | tail -1)
decoded=$(sed -n 's/.*clip decoders: \([0-9]*\) frames.*/\1/p' "$LOG" | tail -1)
[ -n "$seeks" ] || fail "no decoder statistics in the log"
echo "sequential pass: $decoded frames decoded with $seeks seeks"
[ "$decoded" -ge 319 ] && [ "$seeks" -le 12 ] || fail "$decoded frames took $seeks seeks"

# A second mount with an empty cache reads the same frames in a shuffled
# order: every byte must be the same.
rm -rf "$CACHE"
mount_fs
for clip in A002/A002C007.mp4.frames C001/C001C001.mkv.frames; do
    mapfile -t all < <(frames_of "$clip" | shuf --random-source=<(yes))
    md5_frames "${all[@]}" >"$WORK/shuffled.$(dirname "$clip")"
    diff "$WORK/linear.$(dirname "$clip")" "$WORK/shuffled.$(dirname "$clip")" >&2 ||
        fail "$clip: frames read in a shuffled order differ from the same frames read in order"
done

# The damaged clips: listing works; every frame either reads whole or
# fails with EIO and a log line naming the clip and the frame. Frames
# before the damage equal the intact clip's. (Damage the decoder itself
# cannot see, such as a slice whose tail decodes to plausible pictures,
# reads as the decoder gives it, as in any player.)
check_damaged() { # clip-dir stem frames-that-must-equal-the-intact-clip's
    local good=0 bad=0 i=0 n f name a b
    n=$(ls "$MNT/$1" | wc -l)
    for f in $(frames_of "$1"); do
        name=$(basename "$f")
        if cat "$f" >"$WORK/frame.exr" 2>"$WORK/err"; then
            good=$((good + 1))
            # Every third frame, and the last ones before the damage.
            if [ $i -lt "$3" ] && { [ $((i % 3)) = 0 ] || [ $i -ge $(($3 - 4)) ]; }; then
                a=$(ffmpeg -v error -i "$WORK/frame.exr" -f rawvideo -pix_fmt gbrpf32le - | md5sum)
                b=$(ffmpeg -v error -i "$MNT/A002/A002C007.mp4.frames/${name/$2/A002C007}" -f rawvideo -pix_fmt gbrpf32le - | md5sum)
                [ "$a" = "$b" ] || fail "$name of $1 differs from the intact clip's"
            fi
        else
            [ $i -ge "$3" ] || fail "$name of $1 lies before the damage but failed: $(cat "$WORK/err")"
            grep -q "Input/output error" "$WORK/err" || fail "$name: $(cat "$WORK/err")"
            bad=$((bad + 1))
            grep -q "$2.mp4: frame $i " "$LOG" || fail "no log line names frame $i of $1"
        fi
        i=$((i + 1))
    done
    echo "$1: $n frames listed, $good read, $bad failed with EIO"
    DAMAGED_BAD=$bad
}
check_damaged C001/C001C002.mp4.frames C001C002 1000
n=$(ls "$MNT/C001/C001C002.mp4.frames" | wc -l)
[ "$n" -gt 100 ] && [ "$n" -lt 247 ] || fail "the truncated clip lists $n frames"
# The zeros start inside the packet of frame 96 (decode order 94).
check_damaged C001/C001C003.mp4.frames C001C003 94
[ "$DAMAGED_BAD" -gt 0 ] || fail "no frame of the corrupted clip failed"
cmp "$DAILIES/A002/A002C007.mp4" "$MNT/A002/A002C007.mp4" || fail "the mount stopped serving after the damaged clip"
unmount_fs

# Listing opens no media once the index is stored: the clip's bytes are
# overwritten with zeros (same size, same mtime, so the same identity); a
# fresh mount still lists and stats every frame from the stored index.
stamp=$(stat -c %y "$DAILIES/C001/C001C001.mkv")
size=$(stat -c %s "$DAILIES/C001/C001C001.mkv")
head -c "$size" /dev/zero >"$DAILIES/C001/C001C001.mkv"
touch -d "$stamp" "$DAILIES/C001/C001C001.mkv"
: >"$LOG"
mount_fs
got=$(ls -l "$MNT/C001/C001C001.mkv.frames" | grep -c '\.exr$')
[ "$got" = 72 ] || fail "after a remount the zeroed clip lists $got frames (want 72 from the stored index)"
grep -q "C001C001.mkv: indexed" "$LOG" && fail "the clip was indexed again"
unmount_fs
echo "ok: exact random access, damaged clips, stored indexes"
