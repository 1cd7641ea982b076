#!/bin/sh
# dos_probe_ms / dos_rss_mb: what a misbehaving client or local user costs
# the others (issue 12). Runs the attack tests, which start their own
# daemons, and shows the figures they measure while each attack runs:
#
#   BENCH dos_probe_ms <worst probe> ms attack=<name>  the slowest of a
#       victim client's small graph and a `tandemctl status`, in ms
#   BENCH dos_rss_mb <peak> MB attack=pending          daemon RSS while a
#       client submits without ever reaping
#   BENCH slow_consumer_rss_mb <growth> MB attack=pending|slow_reader
#   BENCH slow_consumer_other_p99_us <p99> us attack=..  a client that never
#       reads its completions or its control replies: the daemon's memory
#       growth, and another client's graphs (back to back) meanwhile, with
#       that client's figures alone beside them
#   BENCH refused_conn_per_s <rate> conn/s              connections of a uid
#       not allowed turned away per second (two processes as nobody)
#   BENCH refused_flood_other_p99_us <p99> us          an allowed client's
#       graphs meanwhile
#
# The tests assert the bounds (1 s per probe, 64 MiB of growth); here the
# figures are what matters. Attacks that need a second uid run only as root.
#
# Usage: BUILD=build sh tests/bench/dos_probe.sh
set -u
BUILD=${BUILD:-build}
status=0
for t in test_dos test_models test_runtime_bounds; do
	[ -x "$BUILD/tests/$t" ] || continue
	out=$("$BUILD/tests/$t" 2>&1) || status=1
	printf '%s\n' "$out" | grep -E '^(BENCH (dos|slow_consumer|refused)_|# .*(SIGTERM|flood|tenant|uid attacker))'
done
exit $status
