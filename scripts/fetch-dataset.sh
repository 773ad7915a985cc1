#!/usr/bin/env bash
# Fetch and index a Debian kernel-module dataset into the execmem cache ($EXECMEM_CACHE_DIR,
# $XDG_CACHE_HOME/execmem or ~/.cache/execmem); the download and extracted sizes are printed, as
# measured. Default: linux-image-*-cloud-amd64. Arguments go to `execmem dataset fetch`, e.g.
#   scripts/fetch-dataset.sh --arch arm64 --flavour cloud     # linux-image-cloud-arm64:arm64
#   scripts/fetch-dataset.sh --flavour generic                # the full linux-image-amd64
# Idempotent: a second run only re-reads the index. Needs apt-get and dpkg-deb (Debian/Ubuntu);
# for a foreign architecture it runs 'dpkg --add-architecture ARCH' (as root), and it runs
# 'apt-get update' once if the meta-package is unknown to apt.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/src/cli/main.js ] || npx tsc -p .
arch=amd64
flavour=cloud
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --flavour) flavour="$2"; shift 2 ;;
    *) shift ;;
  esac
done
[ "$arch" = x86_64 ] && arch=amd64
[ "$arch" = aarch64 ] && arch=arm64
host=$(dpkg --print-architecture)
meta="linux-image-$flavour-$arch"
[ "$flavour" = generic ] && meta="linux-image-$arch"
if [ "$arch" != "$host" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
    apt-get update -qq
  fi
  meta="$meta:$arch"
fi
if ! apt-cache show "$meta" >/dev/null 2>&1; then
  apt-get update -qq
fi
# A download can fail transiently: try three times, a few seconds apart, then fail loudly.
for attempt in 1 2 3; do
  if node dist/src/cli/main.js --quiet dataset fetch "${args[@]}"; then exit 0; fi
  echo "fetch-dataset: attempt $attempt failed" >&2
  sleep $((attempt * 5))
done
exit 1
