#!/bin/bash
# The whole test suite, as a newcomer and CI run it (as root, on Debian):
# installs what the tests need, then format, lints and every test.
# Tests capture real packets in network namespaces, so they need root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (the tests make network namespaces and capture packets)" >&2; exit 2; }

# A run from a clean clone took at most 9 GB of disk (build, virtualenvs, storage
# servers' data: measured 2026-12-07); a full disk fails tests midway with
# "No space left on device".
mkdir -p target
free_gb=$(( $(df --output=avail -k target | tail -1) / 1024 / 1024 ))
if [ "$free_gb" -lt 12 ]; then
  echo "scripts/test.sh: only $free_gb GB free on the disk of $PWD/target; a clean run takes up to 9 GB (cargo clean, or free space elsewhere)" >&2
fi

# What the tests use besides cargo: ip (namespaces), tcpdump (the cross-check),
# python3 (frame injection and socket traffic in namespaces), setpriv (the
# missing-capability test), PostgreSQL (the store runs its suite on it too),
# tshark/capinfos and trafgen (the benchmark), curl (early answers over HTTP/1.1
# and HTTP/2, crates/controller/tests/early_answers.rs), npm (installs Azurite, the
# Azure Blob server the storage tests start), g++ (libFuzzer, built for fuzz/),
# systemd (systemd-analyze verify/security on the agent's unit, tests/service.rs),
# binutils (objcopy strips the binary scripts/package.sh packages and the one the
# controller serves to agent installs, readelf checks them; the package is built
# with dpkg's dpkg-deb and installed by tests/package.rs), curl and unshare/nsenter
# (the agent installer run on a test host, tests/install.rs), prometheus (scrapes a
# controller during a capture, tests/metrics.rs), prometheus-alertmanager (with
# prometheus: the alert that triggers a capture, tests/alerts.rs; each test starts
# its own in a network namespace, so the packages' own services are not wanted),
# chromium, chromium-driver and libnss3-tools (the web console driven in a real
# browser through WebDriver, its CA trusted with certutil: tests/console.rs),
# libpcap0.8 (bpfExpression filters: netwatch loads libpcap's compiler at run
# time where an expression is compiled; its tests compile expressions).
need=(iproute2 tcpdump tshark netsniff-ng python3 python3-venv util-linux procps time postgresql g++ curl systemd binutils prometheus prometheus-alertmanager chromium chromium-driver libnss3-tools libpcap0.8)
command -v npm >/dev/null || need+=(nodejs npm)
. scripts/test-deps.sh
install_debs "${need[@]}"
for unit in prometheus prometheus-alertmanager prometheus-node-exporter; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done

# Python packages (Azure's SDK, moto, ...) in a virtualenv of their own, made again
# only when the requirements change; tests find its Python in NETWATCH_TEST_PYTHON.
# Azure's CLI gets a virtualenv of its own: it pins its own azure-core.
# The storage servers the storage tests start (crates/testkit/src/servers.rs):
# moto from the virtualenv, Azurite from npm (NETWATCH_TEST_MOTO, NETWATCH_TEST_AZURITE).
install_storage_servers
venv target/test-az-venv scripts/test-az-requirements.txt
# Schemathesis too (it pins its own hypothesis and jsonschema): crates/netwatch/tests/schemathesis.rs.
venv target/test-schemathesis-venv scripts/test-schemathesis-requirements.txt
export NETWATCH_TEST_SCHEMATHESIS=$PWD/target/test-schemathesis-venv/bin/schemathesis
export NETWATCH_TEST_PYTHON=$PWD/target/test-venv/bin/python
export NETWATCH_TEST_AZ_PYTHON=$PWD/target/test-az-venv/bin/python NETWATCH_TEST_AZ=$PWD/target/test-az-venv/bin/az

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-deny >/dev/null; then cargo deny check licenses bans sources; fi
# Each crate builds alone: the workspace cannot hide a missing dependency.
for crate in netwatch-api netwatch-bpf netwatch-capture netwatch-storage netwatch-controller netwatch-agent netwatch-cli; do cargo check -q -p "$crate" --locked; done
# The upgrade test's newer agent (crates/netwatch/tests/install.rs): the same
# sources built with the next minor version; `cargo test` then builds the
# binary again with its own version (only the netwatch crate is rebuilt).
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IFS=. read -r major minor _ <<<"$version"
NETWATCH_BUILD_VERSION="$major.$((minor + 1)).0" cargo build -q --locked -p netwatch --bin netwatch
mkdir -p target/upgrade-test
cp target/debug/netwatch target/upgrade-test/netwatch-next
export NETWATCH_TEST_NEXT_AGENT=$PWD/target/upgrade-test/netwatch-next
# Upload protocol 1 (crates/netwatch/tests/upload_protocol.rs): netwatch as of the last
# commit before protocol 2, from this repository's history, built once into its own
# target directory (target/old-netwatch) so it never touches this build's binary.
old_commit=1ee7b2da205d4e072f5d53726657e6cb503001b3
if [ ! -x target/old-netwatch/netwatch ] || [ "$(cat target/old-netwatch/commit 2>/dev/null)" != "$old_commit" ]; then
  git cat-file -e "$old_commit^{commit}" 2>/dev/null \
    || { echo "commit $old_commit (upload protocol 1) is not in this clone: fetch the whole history (git fetch --unshallow)" >&2; exit 1; }
  rm -rf target/old-netwatch && mkdir -p target/old-netwatch/src
  git archive "$old_commit" | tar -x -C target/old-netwatch/src
  CARGO_TARGET_DIR=$PWD/target/old-netwatch/target cargo build -q --locked \
    --manifest-path target/old-netwatch/src/Cargo.toml -p netwatch --bin netwatch
  cp target/old-netwatch/target/debug/netwatch target/old-netwatch/netwatch
  echo "$old_commit" > target/old-netwatch/commit
  rm -rf target/old-netwatch/target target/old-netwatch/src
fi
export NETWATCH_TEST_OLD_NETWATCH=$PWD/target/old-netwatch/netwatch
log=$(mktemp)
eval "$(scripts/test-postgres.sh start)"
trap 'rm -f "$log"; scripts/test-postgres.sh stop "$PG_TEST_DIR"' EXIT
# The fault scenarios (crates/netwatch/tests/faults.rs, agent_faults.rs) each write a row here.
rm -rf target/tmp/fault-table target/tmp/schemathesis
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if compgen -G 'target/tmp/schemathesis/*.txt' >/dev/null; then
  echo; cat target/tmp/schemathesis/*.txt
fi
if compgen -G 'target/tmp/fault-table/*.md' >/dev/null; then
  echo; echo "## Fault table (crates/netwatch/tests/faults.rs, agent_faults.rs)"
  echo "| scenario | packets sent | packets in storage | lost | shown |"
  echo "| --- | --- | --- | --- | --- |"
  cat target/tmp/fault-table/*.md
  echo
fi
# The fuzz targets (fuzz/, README "Fuzzing"), 30 s each: one line per target.
set +e
FUZZ_SECONDS=${FUZZ_SECONDS:-30} scripts/fuzz.sh
fuzz_status=$?
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" != 0 ] || status=$fuzz_status
exit "$status"
