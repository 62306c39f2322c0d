#!/bin/sh
# Runs every fuzz target for SECONDS (default 600, the hardening issue's figure) with the
# committed seeds; new inputs go to corpus/TARGET, crashes to artifacts/TARGET.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-"chardev_options qmp_json telnet_filter websocket_frames mux_escape migration_load hmp_line_editor web_head tls_input"}
for t in $targets; do
    mkdir -p "corpus/$t"
    seeds="seeds/$t"
    [ "$t" = migration_load ] && seeds=../qevm/tests/fixtures
    cargo +nightly fuzz run "$t" "corpus/$t" "$seeds" -- \
        -max_total_time="$secs" -timeout=10 -max_len=131072 -print_final_stats=1
done
