#!/usr/bin/env bash
# Regenerate data/debian-modules.json, the compact derived table of the default Debian package
# (per module: bytes per memory type as the kernel's layout_sections() computes them, per-CPU
# bytes, symbol/function/relocation counts, depends=). Fetches the dataset first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-dataset.sh
node dist/src/cli/main.js dataset table --out data/debian-modules.json
