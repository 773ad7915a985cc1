#!/usr/bin/env bash
# Fetch and index the default Debian kernel-module dataset (linux-image-*-cloud-amd64; the download
# and extracted sizes are printed, as measured) into the execmem cache ($EXECMEM_CACHE_DIR, $XDG_CACHE_HOME/execmem
# or ~/.cache/execmem). Idempotent: a second run only re-reads the index. Needs apt-get and
# dpkg-deb (Debian/Ubuntu); runs 'apt-get update' once if the package is unknown to apt.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/src/cli/main.js ] || npx tsc -p .
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
# A download can fail transiently: try three times, a few seconds apart, then fail loudly.
for attempt in 1 2 3; do
  if node dist/src/cli/main.js --quiet dataset fetch "$@"; then exit 0; fi
  echo "fetch-dataset: attempt $attempt failed" >&2
  sleep $((attempt * 5))
done
exit 1
