#!/usr/bin/env bash
# Camera clips as EXR sequences: each clip reads back byte for byte and
# beside it as "<clip>.frames/"; the frame count equals ffprobe's; every
# frame's pixels, read by ffmpeg as an EXR sequence through the mount, match
# ffmpeg's own decode of the clip (clipcmp.py states the tolerance); rules
# correct clip frames and the results are cached; colour, timecode and
# numbering reach the headers.
. "$(dirname "$0")/lib.sh"

cp "$PFS_SOURCE_DIR/tests/data/video/dog_2997_audio_tmcd.mp4" "$DAILIES/A002/A002C011.mp4"
cp "$PFS_SOURCE_DIR/tests/data/video/walk_fullrange.mkv" "$DAILIES/A002/A002C012.mkv"
# Derived clips, short and small: ProRes 422 HQ in MOV with a start
# timecode, DNxHR HQ in MXF, 10-bit H.265 in MP4.
mkdir -p "$DAILIES/B001"
src=$DAILIES/A002/A002C007.mp4
enc() { ffmpeg -v error -y -i "$src" -frames:v 36 -vf scale=640:360 -an "$@"; }
enc -c:v prores_ks -profile:v 3 -pix_fmt yuv422p10le -timecode 01:00:00:00 "$DAILIES/B001/B001C001.mov"
enc -c:v dnxhd -profile:v dnxhr_hq -pix_fmt yuv422p "$DAILIES/B001/B001C002.mxf"
have_x265=0
encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null)
if grep -q libx265 <<<"$encoders"; then
    enc -c:v libx265 -pix_fmt yuv420p10le -x265-params log-level=error "$DAILIES/B001/B001C003.mp4"
    have_x265=1
fi
# The hand-held clip of the shared footage (its licence keeps it out of the
# repository): tested where the footage is, skipped elsewhere (CI).
footage=${PFS_FOOTAGE_DIR:-$PFS_SOURCE_DIR/../shared/footage}
handheld=$footage/video/imageio_cockatoo_yuv420.mp4
if [ -f "$handheld" ]; then
    cp "$handheld" "$DAILIES/B001/B001C004.mp4"
else
    echo "no shared footage at $footage: the hand-held clip is not tested"
fi
cat >"$RULES/B001C001.yaml" <<'YAML'
shot: B001C001
match: B001/B001C001.mov
source:
  first_frame: timecode
YAML

mount_fs

count() {
    ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
        -of csv=p=0 "$1"
}

# The clip itself, untouched, and its frames directory beside it.
cmp "$DAILIES/A002/A002C007.mp4" "$MNT/A002/A002C007.mp4" || fail "the clip does not read back byte for byte"
ls "$MNT/A002" | grep -qx 'A002C007.mp4.frames' || fail "no frames directory beside the clip: $(ls "$MNT/A002")"
[ -d "$MNT/A002/A002C007.mp4.frames" ] || fail "A002C007.mp4.frames is not a directory"

# Frame counts and names, for every clip.
check_count() { # clip-in-dailies frames-dir first-name last-name
    local want got
    want=$(count "$DAILIES/$1")
    got=$(ls "$MNT/$2" | wc -l)
    [ "$got" = "$want" ] || fail "$1: $got frames listed, ffprobe counts $want"
    [ "$(ls "$MNT/$2" | head -1)" = "$3" ] || fail "$2: first frame is $(ls "$MNT/$2" | head -1), want $3"
    [ "$(ls "$MNT/$2" | tail -1)" = "$4" ] || fail "$2: last frame is $(ls "$MNT/$2" | tail -1), want $4"
}
check_count A002/A002C007.mp4 A002/A002C007.mp4.frames A002C007.1001.exr A002C007.1247.exr
check_count A002/A002C011.mp4 A002/A002C011.mp4.frames A002C011.1001.exr A002C011.1289.exr
check_count A002/A002C012.mkv A002/A002C012.mkv.frames A002C012.1001.exr A002C012.1089.exr
# Numbered from the start timecode, 01:00:00:00 at 24 fps.
check_count B001/B001C001.mov B001/B001C001.mov.frames B001C001.86400.exr B001C001.86435.exr
check_count B001/B001C002.mxf B001/B001C002.mxf.frames B001C002.1001.exr B001C002.1036.exr

# Sizes are exact before anything is read, and listing rendered nothing.
for f in "$MNT"/B001/B001C002.mxf.frames/*.exr; do
    [ "$(stat -c %s "$f")" = "$(wc -c <"$f")" ] || fail "$f: stat and read disagree"
done

# Every frame of every clip against ffmpeg's own decode, converted by
# clipcmp.py's own reference of the documented conversion. Tolerances, in
# 8-bit code values of R'G'B' over every pixel: mean 0.02, max 0.1, and
# every frame above 75 dB PSNR. All that remains is the half-float rounding
# of the linear values (measured: mean about 0.01, max 0.06). A frame off
# by one, a wrong matrix, range or chroma siting is off by whole codes.
cmpclip() { # clip frames-pattern first width height [matrix range]
    "$PY" "$PFS_SOURCE_DIR/tests/integration/clipcmp.py" --clip "$DAILIES/$1" \
        --pattern "$MNT/$2" --start "$3" --width "$4" --height "$5" \
        --matrix "${6:-bt709}" --range "${7:-tv}" --count "$(count "$DAILIES/$1")" \
        --max-mean 0.02 --max-diff 0.1 --min-psnr 75 || fail "$1: pixels differ from ffmpeg's decode"
}
# A002C007's frames 1001-1048 are corrected by its rule: compare from 1049.
mkdir -p "$WORK/uncorrected"
mv "$RULES/A002C007.yaml" "$WORK/uncorrected/"
sleep 1.5 # the rule watcher reloads; a changed rule set drops cached pages
cmpclip A002/A002C007.mp4 'A002/A002C007.mp4.frames/A002C007.%04d.exr' 1001 1280 720
cmpclip A002/A002C011.mp4 'A002/A002C011.mp4.frames/A002C011.%04d.exr' 1001 1280 720
cmpclip A002/A002C012.mkv 'A002/A002C012.mkv.frames/A002C012.%04d.exr' 1001 640 480 bt601 pc
cmpclip B001/B001C001.mov 'B001/B001C001.mov.frames/B001C001.%05d.exr' 86400 640 360
cmpclip B001/B001C002.mxf 'B001/B001C002.mxf.frames/B001C002.%04d.exr' 1001 640 360
if [ -f "$DAILIES/B001/B001C004.mp4" ]; then
    check_count B001/B001C004.mp4 B001/B001C004.mp4.frames B001C004.1001.exr B001C004.1280.exr
    cmpclip B001/B001C004.mp4 'B001/B001C004.mp4.frames/B001C004.%04d.exr' 1001 1280 720
fi
if [ $have_x265 = 1 ]; then
    cmpclip B001/B001C003.mp4 'B001/B001C003.mp4.frames/B001C003.%04d.exr' 1001 640 360
else
    echo "no libx265 encoder: the 10-bit H.265 clip is not tested"
fi
mv "$WORK/uncorrected/A002C007.yaml" "$RULES/"
sleep 1.5

# Headers: colour, chromaticities, timecode of that frame, frame rate,
# provenance.
hdr=$(exrheader "$MNT/B001/B001C001.mov.frames/B001C001.86405.exr")
for want in 'platefs/source (type string): "B001/B001C001.mov"' \
    'platefs/frame (type string): "86405"' 'platefs/sourceFrame (type string): "5"' \
    'platefs/colour (type string): "matrix=bt709 range=limited transfer=rec709 primaries=bt709"' \
    'chromaticities' 'red   (0.64 0.33)' 'time 01:00:00:05' 'framesPerSecond (type rational): 24/1' \
    'platefs/shot (type string): "B001C001"'; do
    grep -qF "$want" <<<"$hdr" || fail "B001C001 frame header lacks '$want': $hdr"
done
hdr=$(exrheader "$MNT/A002/A002C011.mp4.frames/A002C011.1290.exr" 2>&1 || true)
grep -q "No such file" <<<"$hdr" || fail "a frame past the end exists: $hdr"
hdr=$(exrheader "$MNT/A002/A002C011.mp4.frames/A002C011.1031.exr")
grep -qF 'framesPerSecond (type rational): 30000/1001' <<<"$hdr" || fail "29.97 rate not carried: $hdr"
grep -qF 'time 00:00:01:00' <<<"$hdr" || fail "frame 30 of a 00:00:00:00 clip is not at 00:00:01:00: $hdr"
grep -q 'platefs/shot' <<<"$hdr" && fail "a clip no rule owns carries a shot: $hdr"

# The rule corrects frames 1001-1048 of A002C007 by half a stop: frame
# 1010 reads 2^0.5 brighter than the same picture uncorrected, and frame
# 1049 is outside the range.
avg() { oiiotool --stats "$1" | awk '/Stats Avg/ { print $3 + $4 + $5 }'; }
hdr=$(exrheader "$MNT/A002/A002C007.mp4.frames/A002C007.1010.exr")
grep -q 'platefs/op1 (type string): "relight exposure=0.5' <<<"$hdr" || fail "frame 1010 is not corrected: $hdr"
exrheader "$MNT/A002/A002C007.mp4.frames/A002C007.1049.exr" | grep -q 'platefs/op' &&
    fail "frame 1049 is outside the rule's frames but carries ops"
corrected=$(avg "$MNT/A002/A002C007.mp4.frames/A002C007.1010.exr")
cat "$MNT/A002/A002C007.mp4.frames/A002C007.1010.exr" >/dev/null
mv "$RULES/A002C007.yaml" "$WORK/uncorrected/"
sleep 1.5
plain=$(avg "$MNT/A002/A002C007.mp4.frames/A002C007.1010.exr")
"$PY" -c "import sys; r = $corrected / $plain; sys.exit(0 if abs(r - 2 ** 0.5) < 0.01 else 1)" ||
    fail "frame 1010: corrected/uncorrected average is $corrected/$plain, want sqrt(2)"

# Cached: reading it again after putting the rule back renders nothing (it
# comes from memory or the store).
mv "$WORK/uncorrected/A002C007.yaml" "$RULES/"
sleep 2.5
before=$(cache_stat renders)
cat "$MNT/A002/A002C007.mp4.frames/A002C007.1010.exr" >/dev/null
sleep 2.5 # counters are flushed every 2 s
[ "$(cache_stat renders)" = "$before" ] || fail "re-reading a cached clip frame rendered it again"

# A rule naming the footage's log encoding: the frames are converted with
# it and say so.
cat >"$RULES/B001C002.yaml" <<'YAML'
shot: B001C002
match: B001/B001C002.mxf
source:
  colour: {transfer: logc3, primaries: awg3}
YAML
sleep 1.5
hdr=$(exrheader "$MNT/B001/B001C002.mxf.frames/B001C002.1010.exr")
for want in 'platefs/colour (type string): "matrix=bt709 range=limited transfer=logc3 primaries=awg3"' \
    'red   (0.684 0.313)' 'platefs/shot (type string): "B001C002"'; do
    grep -qF "$want" <<<"$hdr" || fail "B001C002 with a LogC3 rule lacks '$want': $hdr"
done

# The mount refuses writes into a frames directory like anywhere else.
touch "$MNT/A002/A002C007.mp4.frames/x.exr" 2>/dev/null && fail "created a file in a frames directory"
unmount_fs
echo "ok: clips read as EXR sequences"
