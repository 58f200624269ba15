#!/bin/bash
# One capture over a whole scale set (issue 13): `netwatch up --no-agent` and
# BENCH_AGENTS simulated hosts (`netwatch agent --simulate`) joined to one scale set
# with one reusable key, all on 127.0.0.1; creates `targetType: AzureVMSS` captures
# through the REST API and times PUT → monitor `Succeeded` (every connected host
# reported Running), checking each with queryStatus. Prints figures; asserts nothing.
# crates/netwatch/benches/fleet_create.rs says what is measured and how.
#
#   scripts/bench-fleet.sh                                  # 30 captures, 1,000 hosts
#   BENCH_CAPTURES=10 BENCH_AGENTS=200 scripts/bench-fleet.sh   # a quicker look
#
# Settings (environment): BENCH_CAPTURES (30), BENCH_AGENTS (1000), BENCH_POLL_US
# (1000), BENCH_DEADLINE_S (900), CARGO_TARGET_DIR. Everything it starts runs in its own
# process group, killed when the script ends.
set -euo pipefail
export BENCH_TARGET=fleet_create BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-900}
exec "$(dirname "$0")/bench-create.sh"
