#!/usr/bin/env bash
# Installs what KvFetcher needs on a fresh Debian machine that has the .NET SDK: native libraries from Debian
# packages (apt-get, as root or through sudo) and the NuGet packages (dotnet restore). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: OpenBLAS (the engine benchmark's reference); libx265 and libavcodec with what builds the video
# codec's shim (native/kvfvideo); redis-server for the Redis store's tests and benchmark; prometheus for promtool,
# which checks both servers' /metrics in the tests.
packages=(libopenblas0 libx265-dev libavcodec-dev pkg-config gcc make redis-server prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi

# The video codec's shim over libx265 / libavcodec: native/kvfvideo/build/libkvfvideo.so (KvFetcher.Codecs copies it).
make -s -C native/kvfvideo >&2

dotnet restore KvFetcher.slnx --verbosity quiet >&2
