#!/usr/bin/env bash
# Store backends side by side: ingest throughput, index build, and search
# p50/p99 with concurrent clients (dense, keyword, hybrid) on the same
# synthetic chunks (random unit 384-d vectors, ~60-word English-like texts),
# embedded qdrant-edge versus a Qdrant server or cluster. Also the peak
# memory and disk the collection takes. Each run uses a scratch collection
# and deletes it afterwards.
#
# Usage (from the repository root, after `cargo build --release`):
#   bench/store_bench.sh [CHUNKS]                               # embedded only
#   QDRANT_URL=http://host:6334 bench/store_bench.sh [CHUNKS]   # both
# Optional:
#   QDRANT_API_KEY, QUERIES (per mode, default 400), CLIENTS (default 8),
#   SHARDS and REPLICAS (of the server's scratch collection, default 1 and 1),
#   QDRANT_STORAGE: the server nodes' storage folders (a shell glob, e.g.
#     "$HOME/.cache/qdrant-dev/run/node*/storage") and QDRANT_PROCESS (a
#     pgrep -f pattern, default "qdrant --uri"): when set, the server's disk
#     and resident memory are sampled every 2 s and their growth reported.
# Memory and disk are the growth over the value before the run, so divide
# by CHUNKS/100000 for "per 100k chunks".
set -euo pipefail
cd "$(dirname "$0")/.."
chunks="${1:-100000}"
queries="${QUERIES:-400}"
clients="${CLIENTS:-8}"
docent=./target/release/docent
scratch="$(mktemp -d)"
sampler=""
trap '[ -n "$sampler" ] && kill "$sampler" 2>/dev/null; rm -rf "$scratch"' EXIT

# Sum of resident KiB of processes matching $1 (a pgrep -f pattern).
rss_kib() {
  local total=0 pid kb
  for pid in $(pgrep -f -- "$1" || true); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# Bytes under the folders of the glob $1.
disk_bytes() {
  # shellcheck disable=SC2086
  du -sbc $1 2>/dev/null | awk 'END {print $1+0}'
}

# Samples memory (pattern $1) and disk (glob $2) into $3 every 2 s: one
# "rss_kib disk_bytes" line each.
sample() {
  while true; do
    echo "$(rss_kib "$1") $(disk_bytes "$2")" >> "$3"
    sleep 2
  done
}

# Prints the growth of the peaks over the first sample, as JSON.
growth() {
  awk 'NR == 1 {r0 = $1; d0 = $2} {if ($1 > r) r = $1; if ($2 > d) d = $2}
       END {printf "{\"peak_rss_growth_mib\": %.1f, \"peak_disk_growth_mib\": %.1f}\n", (r - r0) / 1024, (d - d0) / 1048576}' "$1"
}

echo "# embedded, $chunks chunks, $clients clients ($(lscpu | sed -n 's/^Model name: *//p'))" >&2
: > "$scratch/embedded.samples"
sample "$docent --data-dir $scratch bench store" "$scratch/bench_store_*" "$scratch/embedded.samples" &
sampler=$!
"$docent" --data-dir "$scratch" bench store --backend embedded --chunks "$chunks" \
  --queries "$queries" --clients "$clients"
kill "$sampler"; sampler=""
echo "# embedded footprint (docent process; folder):" >&2
growth "$scratch/embedded.samples"

if [ -n "${QDRANT_URL:-}" ]; then
  echo "# qdrant at $QDRANT_URL, $chunks chunks, shards ${SHARDS:-1}, replicas ${REPLICAS:-1}, $clients clients" >&2
  if [ -n "${QDRANT_STORAGE:-}" ]; then
    : > "$scratch/server.samples"
    sample "${QDRANT_PROCESS:-qdrant --uri}" "$QDRANT_STORAGE" "$scratch/server.samples" &
    sampler=$!
  fi
  DOCENT__STORE__QDRANT__URL="$QDRANT_URL" \
  DOCENT__STORE__QDRANT__API_KEY="${QDRANT_API_KEY:-}" \
  DOCENT__STORE__QDRANT__SHARD_NUMBER="${SHARDS:-1}" \
  DOCENT__STORE__QDRANT__REPLICATION_FACTOR="${REPLICAS:-1}" \
    "$docent" --data-dir "$scratch" bench store --backend qdrant --chunks "$chunks" \
      --queries "$queries" --clients "$clients"
  if [ -n "$sampler" ]; then
    kill "$sampler"; sampler=""
    echo "# server footprint (all nodes, every replica):" >&2
    growth "$scratch/server.samples"
  fi
else
  echo "# qdrant: skipped (set QDRANT_URL=http://host:6334 to measure a server)" >&2
fi
