#!/bin/sh
# Reliability figures operators ask for (issue 17 item 8), from the
# integration tests that assert them, run longer than in `make test`:
#
#   kill_*         test_kill with KILL_CYCLES (1000) clients SIGKILLed at
#                  random points, on the plain build and under ASan+UBSan
#                  (build/san-address-undefined, when built): descriptors,
#                  shared memory and RSS of the daemon before and after,
#                  the time taken, and what the sanitizers reported
#                  (BENCH kill_asan_reports: lines of AddressSanitizer,
#                  LeakSanitizer or UBSan reports in the run's output, 0
#                  when the test passed)
#   restart_*      test_restart: the daemon SIGKILLed under 10 blocked
#                  clients, started again; detection and reconnection times
#
# (The slow consumer's and the refused connections' figures come from
# test_dos, through dos_probe.sh.)
#
# The tests assert the bounds; here the figures are what matters.
#
# Usage: BUILD=build sh tests/bench/kill_probe.sh
set -u
BUILD=${BUILD:-build}
KILL_CYCLES=${KILL_CYCLES:-1000}
SAN=${SAN_BUILD:-build/san-address-undefined}
status=0
# What the sanitizer flavours of `make test` use (tests/run_tests.sh).
LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export LSAN_OPTIONS

# kills <build dir> <flavour>
kills() {
	out=$(BUILD=$1 TDMT_KILLS=$KILL_CYCLES "$1/tests/test_kill" 2>&1) || {
		status=1
		printf '%s\n' "$out" | grep -E '^(ERROR|\[  (ERROR|FAILED))|died|Sanitizer|warn|error' |
			head -n 40
	}
	printf '%s\n' "$out" | grep -E '^BENCH kill_'
	if [ "$2" = asan ]; then
		n=$(printf '%s\n' "$out" |
			grep -cE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:')
		echo "BENCH kill_asan_reports $n count flavour=asan cycles=$KILL_CYCLES"
	fi
}

kills "$BUILD" plain
if [ -x "$SAN/tests/test_kill" ] && [ -x "$SAN/bin/tandemd" ]; then
	kills "$SAN" asan
else
	echo "kill_probe: no ASan build in $SAN (make SANITIZE=address,undefined): skipped"
fi

out=$("$BUILD/tests/test_restart" 2>&1) || status=1
printf '%s\n' "$out" | grep -E '^BENCH restart_'

exit $status
