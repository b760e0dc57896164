#!/usr/bin/env bash
# Store backends side by side: ingest throughput and search p50/p99 (dense,
# keyword, hybrid) on the same synthetic chunks (random unit 384-d vectors,
# ~60-word English-like texts), embedded qdrant-edge versus a Qdrant server.
# Each run uses a scratch collection and deletes it afterwards.
#
# Usage (from the repository root, after `cargo build --release`):
#   bench/store_bench.sh [CHUNKS]                       # embedded only
#   QDRANT_URL=http://host:6334 bench/store_bench.sh [CHUNKS]   # both
# Optional: QDRANT_API_KEY, QUERIES (per mode, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
chunks="${1:-100000}"
queries="${QUERIES:-200}"
docent=./target/release/docent
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "# embedded, $chunks chunks" >&2
"$docent" --data-dir "$scratch" bench store --backend embedded --chunks "$chunks" --queries "$queries"

if [ -n "${QDRANT_URL:-}" ]; then
  echo "# qdrant at $QDRANT_URL, $chunks chunks" >&2
  DOCENT__STORE__QDRANT__URL="$QDRANT_URL" \
  DOCENT__STORE__QDRANT__API_KEY="${QDRANT_API_KEY:-}" \
    "$docent" --data-dir "$scratch" bench store --backend qdrant --chunks "$chunks" --queries "$queries"
else
  echo "# qdrant: skipped (set QDRANT_URL=http://host:6334 to measure a server)" >&2
fi
