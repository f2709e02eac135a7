#!/usr/bin/env bash
# Builds what `KvFetcher.NvdecBench run` needs on the GPU machine (which has no dotnet, libx265 or libavcodec) into
# .nvdec-carry/ (git-ignored through .git/info/exclude; keep it, with the tracked tree, under the device's 64 MiB):
#   bin.tar.xz  the NativeAOT publish, a self-contained libkvfvideo.so (kvfvideo.c linked statically against an
#               HEVC-decoder-only libavcodec 5.1 built from Debian's ffmpeg source, and libx265) and libnuma.so.1
#   data/       real-KV streams of the bundled model (`prepare`), checked here with the CPU decoder
# Then, on the device:  cd .nvdec-carry && tar xJf bin.tar.xz && cd bin &&
#   LD_LIBRARY_PATH=. ./KvFetcher.NvdecBench run --data ../data --json $OUT/nvdec.json --tune
# Needs: dotnet, gcc, nasm, xz, apt-get source access (deb-src), libx265-dev, libnuma1.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${NVDEC_WORK:-/tmp/nvdec-carry-build}"
plan="${NVDEC_PLAN:-256x1:12,10,8,4;1024x1:8,4}"
mkdir -p "$work"

# 1. libavcodec with only the HEVC decoder and parser, static and position-independent.
if [ ! -f "$work/ffmin/lib/libavcodec.a" ]; then
    (cd "$work" && apt-get source --download-only ffmpeg >/dev/null && tar xf ffmpeg_*.orig.tar.xz)
    (cd "$work"/ffmpeg-*/ && ./configure --prefix="$work/ffmin" --disable-everything --disable-programs --disable-doc \
        --disable-network --disable-autodetect --enable-pic --enable-static --disable-shared --enable-decoder=hevc \
        --enable-parser=hevc --disable-avdevice --disable-avformat --disable-swscale --disable-swresample \
        --disable-postproc --disable-avfilter >/dev/null && make -j"$(nproc)" >/dev/null && make install >/dev/null)
fi

# 2. The shim, exporting only kvf_* (the version script also lets the non-PIC inline assembly link).
mkdir -p "$work/stage/bin"
printf '{ global: kvf_*; local: *; };\n' > "$work/kvf.map"
gcc -O2 -std=c11 -fPIC -fvisibility=hidden -I"$work/ffmin/include" -shared -Wl,--no-undefined \
    -Wl,--version-script="$work/kvf.map" -Wl,-Bsymbolic -o "$work/stage/bin/libkvfvideo.so" "$repo/native/kvfvideo/kvfvideo.c" \
    "$work/ffmin/lib/libavcodec.a" "$work/ffmin/lib/libavutil.a" /usr/lib/x86_64-linux-gnu/libx265.a -lstdc++ \
    /usr/lib/x86_64-linux-gnu/libnuma.so.1 -lm -lpthread -ldl 2> >(grep -v 'relocation\|DT_TEXTREL' >&2)
strip "$work/stage/bin/libkvfvideo.so"
cp -L /usr/lib/x86_64-linux-gnu/libnuma.so.1 "$work/stage/bin/"

# 3. The runner, NativeAOT.
dotnet publish "$repo/bench/KvFetcher.NvdecBench" -r linux-x64 -p:PublishAot=true -c Release --artifacts-path "$work/aot" > "$work/publish.log" ||
    { tail -30 "$work/publish.log"; exit 1; }
cp "$work/aot/publish/KvFetcher.NvdecBench/release_linux-x64/KvFetcher.NvdecBench" "$work/stage/bin/"

# 4. The streams (prepare runs the JIT build, with the repository's own libkvfvideo); NVDEC_SKIP_PREPARE=1 skips
#    them (the `reuse` mode needs none: it stores its own chunks on the device, with the carried libkvfvideo).
mkdir -p "$repo/.nvdec-carry"
if [ -z "${NVDEC_SKIP_PREPARE:-}" ]; then
rm -rf "$repo/.nvdec-carry/data"
dotnet run --project "$repo/bench/KvFetcher.NvdecBench" -c Release --artifacts-path "$work/jit" -- \
    prepare --out "$repo/.nvdec-carry/data" --repo "$repo" --plan "$plan"
fi
tar cJf "$repo/.nvdec-carry/bin.tar.xz" -C "$work/stage" bin
du -sh "$repo/.nvdec-carry"
