#!/bin/bash
# The fuzz targets of fuzz/ (cargo-fuzz, libFuzzer), each for a bounded time:
#   scripts/fuzz.sh [TARGET…]        all targets when none is named
# FUZZ_SECONDS   seconds per target (default 60)
# FUZZ_TARGET_DIR where they build (default target/fuzz; not the workspace's
#                target dir: the instrumented build would evict the normal one)
# Works on stable Rust: RUSTC_BOOTSTRAP=1 and no sanitizer (`-s none`), so the
# machine's one toolchain does; debug assertions are on (overflow panics).
# Each target starts from fuzz/corpus/TARGET (the committed seeds, read only)
# and target/fuzz-corpus/TARGET (what earlier runs found, kept). Prints one
# line per target; a crash fails the script, its input kept under
# target/fuzz-artifacts/TARGET/ (replay: the target's binary with that file).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
target_dir=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(filter arm_request pcap_repair)

# cargo-fuzz itself, pinned, built once into target/tools.
cargo_fuzz=$PWD/target/tools/bin/cargo-fuzz
if [ ! -x "$cargo_fuzz" ] || [ "$("$cargo_fuzz" --version)" != "cargo-fuzz 0.13.2" ]; then
  cargo install --locked --root target/tools cargo-fuzz --version 0.13.2
fi

export RUSTC_BOOTSTRAP=1
# cargo-fuzz has no --locked: check fuzz/Cargo.lock is current first.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
mkdir -p target/fuzz-logs
if ! "$cargo_fuzz" build --fuzz-dir fuzz --target-dir "$target_dir" -s none --debug-assertions >target/fuzz-logs/build.log 2>&1; then
  tail -40 target/fuzz-logs/build.log >&2
  echo "fuzz: build failed; log target/fuzz-logs/build.log" >&2
  exit 1
fi
bin_dir=$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release

failed=()
for t in "${targets[@]}"; do
  corpus=target/fuzz-corpus/$t artifacts=target/fuzz-artifacts/$t log=target/fuzz-logs/$t.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  set +e
  "$bin_dir/$t" "$corpus" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  status=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  inputs=$(find "$corpus" -type f | wc -l)
  crashes=$(grep -c '^artifact_prefix=.*Test unit written to' "$log" || true)
  echo "fuzz $t: ${execs:-0} executions in ${seconds} s, corpus $inputs inputs, $crashes crashes"
  if [ "$status" != 0 ]; then
    failed+=("$t")
    grep -E -A12 "panicked at|==ERROR|ERROR: libFuzzer" "$log" | head -40 >&2 || tail -40 "$log" >&2
    grep -o 'Test unit written to .*' "$log" | sed "s|^|fuzz $t: |" >&2 || true
    echo "fuzz $t: exit status $status; log $log" >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
