#!/bin/bash
# Upload benchmark (issue 5): a real capture of BENCH_GIB GiB (and BENCH_SMALL_GIB) made by
# a real `netwatch agent` on lo, uploaded to each kind of storage account (a local
# directory, Azurite = Azure Blob, moto = S3, fake-gcs-server = GCS) on 127.0.0.1, timed from the file closed to
# `uploadState` Succeeded, against a plain copy of the same file to the same server (cp +
# fsync; one `curl -T` PUT), with the agent's VmRSS sampled throughout. Prints figures;
# asserts nothing. Needs root (the agent opens a packet socket).
# crates/netwatch/benches/upload.rs says what is measured and how.
#
#   scripts/bench-upload.sh                                   # 0.5 and 2 GiB, all four kinds
#   BENCH_GIB=0.25 BENCH_SMALL_GIB=0 scripts/bench-upload.sh  # a quick look
#
# Settings (environment): BENCH_GIB (2), BENCH_SMALL_GIB (0.5; 0: none), BENCH_ACCOUNTS
# (local,azureblob,s3,gcs), BENCH_PART_MIB (the accounts' part_size; default netwatch's 8 MiB),
# BENCH_POLL_MS (50: status polls and VmRSS samples), BENCH_SEND_MBPS (300: pace of the
# traffic), BENCH_PORT (7411: the UDP port captured), BENCH_UPLOAD_DEADLINE_S (900),
# BENCH_DEADLINE_S (3600: the benchmark's own bound), BENCH_KEEP=1 (keep the data and the
# logs), CARGO_TARGET_DIR, TMPDIR (where the files go: the disk needs about 3 × BENCH_GIB).
# Azurite, moto, fake-gcs-server: NETWATCH_TEST_AZURITE, NETWATCH_TEST_MOTO, NETWATCH_TEST_FAKE_GCS when set, else installed
# under target/ as scripts/test.sh does (scripts/test-deps.sh).
# Everything it starts runs in its own process group, killed when the script ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root: the agent opens a packet socket" >&2; exit 2; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export NETWATCH_BIN=${NETWATCH_BIN:-$TARGET/release/netwatch}
export BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-3600}

cd "$ROOT"
if [ ! -x "${NETWATCH_TEST_AZURITE:-}" ] || [ ! -x "${NETWATCH_TEST_MOTO:-}" ] || [ ! -x "${NETWATCH_TEST_FAKE_GCS:-}" ]; then
  echo "NETWATCH_TEST_AZURITE / NETWATCH_TEST_MOTO / NETWATCH_TEST_FAKE_GCS unset or missing: installing Azurite, moto and fake-gcs-server under target/"
  . scripts/test-deps.sh
  need=(python3 python3-venv curl)
  command -v npm >/dev/null || need+=(nodejs npm)
  install_debs "${need[@]}"
  install_storage_servers
fi
command -v curl >/dev/null || { echo "curl is needed for the plain copies: apt-get install curl" >&2; exit 2; }

cargo build --release --locked -q -p netwatch
cargo bench --locked -q -p netwatch --bench upload --no-run

# Every file of the run (captures, storage, Azurite's and moto's data) in one directory,
# removed at the end even when a process was killed before cleaning up its own.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/netwatch-bench-upload.XXXXXX")
export TMPDIR=$WORK
echo "## netwatch $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(nproc) CPUs; files in $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}'))"
# The benchmark in a process group of its own (job control: its group id is its pid), so
# whatever it started (controller, agent, Azurite, moto, curl) goes with it, even when it
# is killed. `timeout` bounds the whole run a minute past the benchmark's own deadline.
set -m
timeout --kill-after=10 $((BENCH_DEADLINE_S + 60)) \
  cargo bench --locked -q -p netwatch --bench upload &
BENCH=$!
set +m
cleanup() {
  kill -TERM -- "-$BENCH" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-$BENCH" 2>/dev/null || true
  if [ "${BENCH_KEEP:-}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait "$BENCH"
