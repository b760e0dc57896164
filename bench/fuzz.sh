#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (fuzz/, cargo-fuzz + libFuzzer) for
# N seconds each, one at a time, and prints one summary line per target.
#
#   bench/fuzz.sh [SECONDS] [TARGET...]     # default 600 s, every target
#
# Each run starts from the committed seeds (fuzz/seeds/<target>/), copied
# into the ignored fuzz/corpus/<target>/, which libFuzzer grows and keeps
# between runs. Crashes, timeouts and out-of-memory inputs land in
# fuzz/artifacts/<target>/. Everything runs under `nice -n 19` so other
# builds on the machine get the CPU first. Logs: $OUT (a temp folder).
#
# Bounds: -rss_limit_mb=2048 (no input may need more than 2 GiB),
# -timeout=10 (no input may take more than 10 s), -max_len=65536.
# The chunker target needs the embedder's tokenizer.json: pulled models
# (all-MiniLM-L6-v2) or DOCENT_FUZZ_TOKENIZER=path.
#
# Needs `cargo install cargo-fuzz`. It builds on stable Rust with
# `-s none` (no sanitizer: ASan needs nightly's -Z flags).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
out="${OUT:-$(mktemp -d)}"
flags=(-O -a -s none)

nice -n 19 cargo fuzz build "${flags[@]}" >"$out/build.log" 2>&1 || {
    tail -20 "$out/build.log"
    exit 1
}
echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p'), ${seconds}s per target, logs in $out"
printf '%-18s %8s %12s %8s %6s %7s %7s %7s %s\n' target seconds execs exec/s cov ft corpus rss_mb result
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
    log="$out/$target.log"
    set +e
    nice -n 19 cargo fuzz run "${flags[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corpus=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    if [ $rc -eq 0 ]; then
        result=ok
    else
        status=1
        result="FAILED ($(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]*' "$log" | head -1)); see $log and artifacts/$target/"
    fi
    printf '%-18s %8s %12s %8s %6s %7s %7s %7s %s\n' "$target" "$seconds" "${execs:-?}" \
        "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "${rss:-?}" "$result"
done
exit $status
