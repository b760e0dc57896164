#!/usr/bin/env bash
# Everything the Qdrant backend must show, against a running cluster. Opt-in:
# CI runs only the embedded half of the contract suite.
#
#   bench/cluster_check.sh http://127.0.0.1:6334[,http://127.0.0.1:6344,...]
#
# Give every node's gRPC URL, comma-separated, so docent can fail over
# between them. Steps (each prints a JSON or test summary; logs go to $OUT):
#   1. the contract suite's server half (cargo test --release --test contract)
#   2. eval retrieval --mode all on SQuAD dev, embedded vs the cluster, with
#      1 shard and with $SHARDS shards (replication factor $REPLICAS)
#   3. migration round trip embedded -> cluster -> a fresh embedded copy,
#      checked with `docent store verify`, then a migration killed with -9
#      midway, resumed, and verified
#   4. failover (only with QDRANT_DEV=path/to/qdrant-dev, which can kill and
#      start nodes): `docent bench http --url` searches through `docent
#      serve` while node $NODE is killed and restarted, and an ingest across
#      the same kill, rerun and compared with a clean ingest
#   5. bench/store_bench.sh at $CHUNKS synthetic chunks, embedded vs cluster
#
# Optional: SQUAD (default ../shared/data/squad/squad2-dev.json), SHARDS (3),
# REPLICAS (2), NODE (2), CHUNKS (100000), OUT (a temp folder), SKIP (steps to
# skip, e.g. "1 5"), QDRANT_STORAGE (node storage glob, for store_bench's
# disk and memory figures). Needs `cargo build --release` and pulled models.
set -euo pipefail
cd "$(dirname "$0")/.."
url="${1:?usage: bench/cluster_check.sh GRPC_URL[,GRPC_URL...]}"
first="${url%%,*}"
squad="${SQUAD:-../shared/data/squad/squad2-dev.json}"
shards="${SHARDS:-3}"
replicas="${REPLICAS:-2}"
node="${NODE:-2}"
chunks="${CHUNKS:-100000}"
out="${OUT:-$(mktemp -d)}"
skip=" ${SKIP:-} "
docent="$PWD/target/release/docent"
mkdir -p "$out"
echo "# cluster check at $url on $(lscpu | sed -n 's/^Model name: *//p'); logs in $out" >&2
rest="${first/:6334/:6333}"   # the REST port, for cleaning up scratch collections
drop_collection() { curl -fs -X DELETE "$rest/collections/$1" > /dev/null || true; }
run() { case "$skip" in *" $1 "*) echo "# step $1: skipped" >&2; return 1 ;; esac; echo "# step $1: $2" >&2; }
# docent against the cluster; $1 = shards
cluster() {
  env DOCENT__RERANK__MODEL="" DOCENT__STORE__KIND=qdrant DOCENT__STORE__QDRANT__URL="$url" \
    DOCENT__STORE__QDRANT__SHARD_NUMBER="$1" DOCENT__STORE__QDRANT__REPLICATION_FACTOR="$replicas" \
    DOCENT__STORE__QDRANT__COLLECTION_PREFIX="check${1}s_" "${@:2}"
}
summary() { python3 -c "
import json,sys
a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]))
for m in a['modes']:
    x,y=a['modes'][m]['ndcg@10'],b['modes'][m]['ndcg@10']
    print(f'{m:8} nDCG@10 embedded {x:.4f}  cluster {y:.4f}  diff {y-x:+.4f}', '' if abs(y-x)<=0.005 else '(beyond 0.005)')
" "$@"; }

if run 1 "contract suite, server half"; then
  DOCENT_TEST_QDRANT_URL="$first" cargo test --release -p docent-store --test contract 2>&1 \
    | tee "$out/contract.log" | grep -E "^test result|FAILED|panicked" >&2
fi

if run 2 "eval retrieval, embedded vs cluster"; then
  DOCENT__RERANK__MODEL="" "$docent" --data-dir "$out/eval-embedded" eval retrieval \
    --squad "$squad" --mode all --json > "$out/eval-embedded.json"
  for s in 1 "$shards"; do
    cluster "$s" "$docent" --data-dir "$out/eval-cluster-$s" eval retrieval \
      --squad "$squad" --mode all --json > "$out/eval-cluster-$s.json"
    echo "## $s shard(s), replication factor $replicas" >&2
    summary "$out/eval-embedded.json" "$out/eval-cluster-$s.json" >&2
  done
fi

# A corpus of SQuAD paragraphs as files (names with spaces on purpose).
corpus="$out/corpus"
if [ ! -d "$corpus" ]; then
  mkdir -p "$corpus"
  python3 - "$squad" "$corpus" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
for article in data["data"]:
    for i, p in enumerate(article["paragraphs"]):
        name = article["title"].replace("/", "_")
        open(f"{sys.argv[2]}/{name} {i:03d}.txt", "w").write(p["context"])
EOF
fi

if run 3 "migration round trip and a killed migration"; then
  a="$out/roundtrip-a" b="$out/roundtrip-b"
  rm -rf "$a" "$b"
  drop_collection check1s_rt; drop_collection checkkill_rt
  DOCENT__RERANK__MODEL="" "$docent" --data-dir "$a" ingest "$corpus" --collection rt --json > "$out/rt-ingest.json"
  cluster 1 "$docent" --data-dir "$a" store migrate --from embedded --to qdrant --collection rt --json > "$out/rt-to-cluster.json"
  cluster 1 "$docent" --data-dir "$a" store verify --from embedded --to qdrant --collection rt --json > "$out/rt-verify-a.json" \
    || echo "embedded and cluster differ: see $out/rt-verify-a.json" >&2
  # The fresh copy starts from the cluster's catalogue, which docent keeps
  # beside its data (catalogue-qdrant.redb).
  mkdir -p "$b/collections/rt"
  cp "$a/collections/rt/catalogue-qdrant.redb" "$b/collections/rt/"
  cluster 1 "$docent" --data-dir "$b" store migrate --from qdrant --to embedded --collection rt --json > "$out/rt-back.json"
  cluster 1 "$docent" --data-dir "$b" store verify --from qdrant --to embedded --collection rt --json > "$out/rt-verify-b.json" \
    || echo "cluster and fresh embedded copy differ: see $out/rt-verify-b.json" >&2
  # Killed midway: one point per page, so the copy takes several seconds.
  k="$out/killed"
  rm -rf "$k"; cp -r "$a" "$k"; rm -f "$k/collections/rt/catalogue-qdrant.redb"
  cluster 1 env DOCENT__STORE__QDRANT__COLLECTION_PREFIX=checkkill_ "$docent" --data-dir "$k" \
    store migrate --from embedded --to qdrant --collection rt --batch 1 > "$out/killed-1.log" 2>&1 &
  pid=$!
  # $! is the shell running `cluster`; kill docent itself.
  sleep "${KILL_AFTER:-1.5}"; pkill -9 -f -- "--data-dir $k store migrate" || true
  wait "$pid" 2>/dev/null || true
  echo "killed after: $(cat "$k"/collections/rt/migrate-*.json 2>/dev/null | tr -d '\n ')" >&2
  cluster 1 env DOCENT__STORE__QDRANT__COLLECTION_PREFIX=checkkill_ "$docent" --data-dir "$k" \
    store migrate --from embedded --to qdrant --collection rt --json > "$out/killed-resumed.json"
  cluster 1 env DOCENT__STORE__QDRANT__COLLECTION_PREFIX=checkkill_ "$docent" --data-dir "$k" \
    store verify --from embedded --to qdrant --collection rt --json > "$out/killed-verify.json" \
    || echo "resumed migration differs: see $out/killed-verify.json" >&2
  python3 - "$out" <<'EOF' >&2
import json, sys
o = sys.argv[1]
for name in ["rt-verify-a", "rt-verify-b", "killed-verify"]:
    r = json.load(open(f"{o}/{name}.json"))
    p = r["points"]
    tops = ", ".join(f"{m} {t['identical_lists']} (equivalent {t['equivalent_lists']})/{r['queries']}" for m, t in r["top10"].items())
    print(f"{name}: points {p['source_points']}/{p['target_points']} differing {p['differing']}, "
          f"catalogue {r['catalogue']['source_records']}/{r['catalogue']['target_records']} differing {r['catalogue']['differing']}, "
          f"identical top-10: {tops}; identical={r['identical']}")
print("resumed:", json.load(open(f"{o}/killed-resumed.json"))["resumed"])
EOF
fi

if [ -n "${QDRANT_DEV:-}" ] && run 4 "failover: kill node $node and start it again"; then
  serve_dir="$out/serve"
  rm -rf "$serve_dir"
  drop_collection "check${shards}s_fo"
  cluster "$shards" "$docent" --data-dir "$serve_dir" ingest "$corpus" --collection fo > "$out/fo-ingest.log" 2>&1
  cluster "$shards" "$docent" --data-dir "$serve_dir" serve --bind 127.0.0.1:18091 --collection fo > "$out/serve.log" 2>&1 &
  # $! is the shell running `cluster`: stop the server by its command line.
  stop_serve() { pkill -f -- "--data-dir $serve_dir serve" 2>/dev/null || true; }
  trap stop_serve EXIT
  for _ in $(seq 120); do curl -fs 127.0.0.1:18091/readyz >/dev/null && break; sleep 0.5; done
  "$docent" bench http --url http://127.0.0.1:18091 --clients 8 --seconds 60 --squad "$squad" > "$out/failover.json" &
  bench=$!
  sleep 15; "$QDRANT_DEV" kill "$node"; sleep 3
  curl -s 127.0.0.1:18091/readyz > "$out/readyz-down.json"
  sleep 17; "$QDRANT_DEV" start "$node" > /dev/null; sleep 10
  curl -s 127.0.0.1:18091/readyz > "$out/readyz-up.json"
  wait "$bench"
  stop_serve
  python3 - "$out" <<'EOF' >&2
import json, sys
o = sys.argv[1]
r = json.load(open(f"{o}/failover.json"))
print(f"searches: {r['requests']} by status {r['by_status']}, 429/503 without Retry-After {r['errors_without_retry_after']}, "
      f"ok p50 {r['ok_p50_ms']:.1f} ms p99 {r['ok_p99_ms']:.1f} ms, longest client gap {r['longest_client_gap_secs']:.2f} s")
for name in ["readyz-down", "readyz-up"]:
    h = json.load(open(f"{o}/{name}.json"))
    print(name, h.get("status"), h.get("store", {}).get("replicas"), [n["url"] for n in h.get("store", {}).get("nodes", []) if not n["up"]])
EOF
  # An ingest across the kill, rerun, against a clean ingest.
  rm -rf "$out/ik-clean" "$out/ik-kill"
  drop_collection ikclean_default; drop_collection ikkill_default
  cluster "$shards" env DOCENT__STORE__QDRANT__COLLECTION_PREFIX=ikclean_ "$docent" --data-dir "$out/ik-clean" ingest "$corpus" --json > "$out/ik-clean.json" 2>/dev/null
  cluster "$shards" env DOCENT__STORE__QDRANT__COLLECTION_PREFIX=ikkill_ "$docent" --data-dir "$out/ik-kill" ingest "$corpus" --json > "$out/ik-kill.json" 2> "$out/ik-kill.log" &
  ingest=$!
  sleep 6; "$QDRANT_DEV" kill "$node"; sleep 10; "$QDRANT_DEV" start "$node" > /dev/null
  status=0; wait "$ingest" || status=$?
  echo "ingest across the kill: exit $status, $(grep -c WARN "$out/ik-kill.log" || true) warnings" >&2
  cluster "$shards" env DOCENT__STORE__QDRANT__COLLECTION_PREFIX=ikkill_ "$docent" --data-dir "$out/ik-kill" ingest "$corpus" --json > "$out/ik-rerun.json" 2>/dev/null
  python3 - "$rest" <<'EOF' >&2
import json, sys, urllib.request
rest = sys.argv[1]
def ids(collection):
    out, offset = [], None
    while True:
        body = {"limit": 1000, "with_payload": False, "with_vector": False}
        if offset is not None:
            body["offset"] = offset
        req = urllib.request.Request(f"{rest}/collections/{collection}/points/scroll",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        res = json.load(urllib.request.urlopen(req))["result"]
        out += [p["id"] for p in res["points"]]
        offset = res.get("next_page_offset")
        if offset is None:
            return sorted(out)
a, b = ids("ikclean_default"), ids("ikkill_default")
print(f"chunk ids: clean {len(a)}, killed+rerun {len(b)}, identical {a == b}")
EOF
fi

if run 5 "store_bench at $chunks chunks"; then
  QDRANT_URL="$url" SHARDS="$shards" REPLICAS="$replicas" bench/store_bench.sh "$chunks" | tee "$out/store_bench.json"
fi
