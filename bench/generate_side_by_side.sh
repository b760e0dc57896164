#!/usr/bin/env bash
# Side-by-side decoding speed: llama.cpp's llama-bench versus
# `docent bench generate`, same GGUF file, 2 threads, 128 tokens decoded after
# a ~1,000-token prompt. The two alternate ROUNDS times (default 5) so that a
# noisy neighbour hits both; the medians of the rounds and their ratio are
# printed as JSON.
#
# llama.cpp is not part of docent. Build llama-bench once from the
# llama-cpp-python sdist (it vendors llama.cpp), outside the repository:
#   pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcpp
#   (cd /tmp/lcpp && tar xzf llama_cpp_python-0.3.36.tar.gz)
#   cd /tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp
#   cmake -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build --target llama-bench
# Usage: LLAMA_BENCH=/path/to/llama-bench bench/generate_side_by_side.sh [MODEL...]
#   (from the repository root, after `cargo build --release`; MODEL defaults
#   to smollm2-135m-instruct and qwen2.5-0.5b-instruct)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (see the comment at the top)}"
rounds=${ROUNDS:-5}
models_dir=${DOCENT_MODELS_DIR:-$HOME/.cache/docent/models}
[ $# -gt 0 ] || set -- smollm2-135m-instruct qwen2.5-0.5b-instruct
export CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=2
for model in "$@"; do
  ours=() theirs=()
  for _ in $(seq "$rounds"); do
    ours+=("$(./target/release/docent bench generate --model "$model" --runs 3 --decode-tokens 128 \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["median_decode_tok_per_s"])')")
    theirs+=("$("$LLAMA_BENCH" -m "$models_dir/$model/model.gguf" -t 2 -p 0 -n 128 -d 1000 -r 3 -o json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')")
  done
  python3 - "$model" "${ours[*]}" "${theirs[*]}" <<'PY'
import json, statistics, sys
model, ours, theirs = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
print(json.dumps({"model": model,
    "docent_decode_tok_per_s": [round(x, 1) for x in ours],
    "llama_cpp_decode_tok_per_s": [round(x, 1) for x in theirs],
    "median_docent": round(statistics.median(ours), 1),
    "median_llama_cpp": round(statistics.median(theirs), 1),
    "ratio_docent_over_llama_cpp": round(statistics.median(ours) / statistics.median(theirs), 3)}))
PY
done
