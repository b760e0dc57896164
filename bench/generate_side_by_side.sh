#!/usr/bin/env bash
# Side-by-side prompt evaluation and decoding: llama.cpp's llama-bench versus
# `docent bench generate`, same GGUF file, 2 threads: a ~1,000-token prompt
# (`llama-bench -p 1000`), then 128 tokens decoded after it (`-n 128 -d 1000`).
# The two alternate ROUNDS times (default 5) so that a noisy neighbour hits
# both; the rounds, their medians' ratios and the CPU are printed as JSON.
# docent runs with the configured precision (DOCENT__GENERATE__PREFILL_PRECISION
# overrides it: f32, bf16, int8, auto).
#
# llama.cpp is not part of docent. Build llama-bench once from the
# llama-cpp-python sdist (it vendors llama.cpp), outside the repository:
#   (apt-get install cmake ninja-build; pip prepares the sdist's metadata with
#   its build backend, so give it one: python3 -m venv /tmp/lcpp/v &&
#   /tmp/lcpp/v/bin/pip install scikit-build-core)
#   /tmp/lcpp/v/bin/pip download --no-deps --no-binary :all: --no-build-isolation llama-cpp-python==0.3.36 -d /tmp/lcpp
#   (cd /tmp/lcpp && tar xzf llama_cpp_python-0.3.36.tar.gz)
#   cd /tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp
#   cmake -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release && cmake --build build --target llama-bench
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
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for model in "$@"; do
  ours_pp=() ours_tg=() theirs_pp=() theirs_tg=() precision=""
  for _ in $(seq "$rounds"); do
    report=$(./target/release/docent bench generate --model "$model" --runs 3 --decode-tokens 128 --prompt-tokens 1000)
    ours_pp+=("$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["median_prompt_tok_per_s"])')")
    ours_tg+=("$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["median_decode_tok_per_s"])')")
    precision=$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["prefill_precision"])')
    theirs_pp+=("$("$LLAMA_BENCH" -m "$models_dir/$model/model.gguf" -t 2 -p 1000 -n 0 -r 3 -o json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')")
    theirs_tg+=("$("$LLAMA_BENCH" -m "$models_dir/$model/model.gguf" -t 2 -p 0 -n 128 -d 1000 -r 3 -o json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')")
  done
  python3 - "$model" "$precision" "${ours_pp[*]}" "${theirs_pp[*]}" "${ours_tg[*]}" "${theirs_tg[*]}" <<'PY'
import json, statistics, sys
model, precision = sys.argv[1], sys.argv[2]
ours_pp, theirs_pp, ours_tg, theirs_tg = ([float(x) for x in a.split()] for a in sys.argv[3:7])
m = statistics.median
print(json.dumps({"model": model, "docent_prefill_precision": precision,
    "docent_prompt_tok_per_s": [round(x, 1) for x in ours_pp],
    "llama_cpp_prompt_tok_per_s": [round(x, 1) for x in theirs_pp],
    "ratio_prompt_docent_over_llama_cpp": round(m(ours_pp) / m(theirs_pp), 3),
    "docent_decode_tok_per_s": [round(x, 1) for x in ours_tg],
    "llama_cpp_decode_tok_per_s": [round(x, 1) for x in theirs_tg],
    "ratio_decode_docent_over_llama_cpp": round(m(ours_tg) / m(theirs_tg), 3)}))
PY
done
