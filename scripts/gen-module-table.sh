#!/usr/bin/env bash
# Regenerate the compact derived tables of the Debian packages, one per architecture:
# data/debian-modules.json (linux-image-cloud-amd64) and data/debian-modules-arm64.json
# (linux-image-cloud-arm64; sizes include the PLT room arm64 reserves). Per module: bytes per
# memory type as the kernel's layout_sections() computes them, per-CPU bytes,
# symbol/function/relocation counts, depends=. Fetches the datasets first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-dataset.sh
node dist/src/cli/main.js dataset table --out data/debian-modules.json
scripts/fetch-dataset.sh --arch arm64 --flavour cloud
node dist/src/cli/main.js dataset table --arch arm64 --flavour cloud --out data/debian-modules-arm64.json
