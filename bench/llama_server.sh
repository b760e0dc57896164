#!/usr/bin/env bash
# Starts llama.cpp's llama-server on the GGUF docent pulls, as the
# OpenAI-compatible server of `generate.kind = "openai"` and of the opt-in
# test tests/remote_generation.rs (DOCENT_TEST_OPENAI_URL).
#
# llama.cpp is not part of docent. Build llama-server once from the
# llama-cpp-python sdist on PyPI (it vendors llama.cpp), outside the
# repository, the same way bench/generate_side_by_side.sh builds llama-bench
# (cmake and ninja come from PyPI: pip install cmake ninja):
#   cd /tmp/lcpp && curl -sLO <sdist URL of llama-cpp-python==0.3.36 from https://pypi.org/simple/llama-cpp-python/>
#   tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36/vendor/llama.cpp
#   cmake -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
#   cmake --build build --target llama-server
#
# Usage: LLAMA_SERVER=/path/to/llama-server bench/llama_server.sh start|stop|status [MODEL]
#   MODEL defaults to qwen2.5-0.5b-instruct (from $DOCENT_MODELS_DIR or
#   ~/.cache/docent/models); PORT defaults to 8081, SLOTS (parallel
#   answers) to 2, THREADS to 2. The server's log goes to $LOG
#   (default /tmp/llama-server-$PORT.log). `start` returns once the server
#   answers /health, and prints DOCENT_TEST_OPENAI_URL.
set -euo pipefail
cmd=${1:-start}
model=${2:-qwen2.5-0.5b-instruct}
port=${PORT:-8081}
log=${LOG:-/tmp/llama-server-$port.log}
pidfile=/tmp/llama-server-$port.pid
models_dir=${DOCENT_MODELS_DIR:-$HOME/.cache/docent/models}
case "$cmd" in
  start)
    : "${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary (see the comment at the top)}"
    gguf="$models_dir/$model/model.gguf"
    [ -f "$gguf" ] || { echo "no $gguf: run \`docent models pull $model\` first" >&2; exit 1; }
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "already running (pid $(cat "$pidfile"))" >&2
    else
      # --alias: the model name docent sends; -c: context per slot times slots.
      nohup "$LLAMA_SERVER" -m "$gguf" --alias "$model" --host 127.0.0.1 --port "$port" \
        -t "${THREADS:-2}" -np "${SLOTS:-2}" -c $((8192 * ${SLOTS:-2})) >"$log" 2>&1 &
      echo $! >"$pidfile"
    fi
    for _ in $(seq 120); do
      if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then
        echo "DOCENT_TEST_OPENAI_URL=http://127.0.0.1:$port/v1"
        exit 0
      fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "llama-server exited; see $log" >&2; tail -20 "$log" >&2; exit 1; }
      sleep 1
    done
    echo "llama-server did not become healthy in 120 s; see $log" >&2
    exit 1
    ;;
  stop)
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
  status)
    curl -sf "http://127.0.0.1:$port/health" && echo || { echo "not running on $port"; exit 1; }
    ;;
  *) echo "usage: $0 start|stop|status [MODEL]" >&2; exit 2 ;;
esac
