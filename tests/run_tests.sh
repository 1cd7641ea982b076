#!/bin/sh
# Runs each test binary, counts cmocka's per-test results (a binary that
# dies without its summary counts as one failure), and ends with the line
# "N passed, N failed". A shell test (*.sh) prints TAP lines instead, each
# "ok - ..." or "not ok - ..." counting as one test ("ok - ... # SKIP why"
# as none).

# Third-party leaks and races (PoCL's, see the files) are not ours to
# report; the daemons the tests start inherit these.
LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
TSAN_OPTIONS="suppressions=$(pwd)/tests/tsan.supp${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
export LSAN_OPTIONS TSAN_OPTIONS
BUILD=${BUILD:-build}
export BUILD
passed=0
failed=0
failed_bins=""
log=$(mktemp)
for t in "$@"; do
	name=$(basename "$t")
	printf '== %s\n' "$name"
	case "$name" in
	replay_*) TDM_CORPUS_DIR="tests/fuzz/corpus/${name#replay_}" "$t" "tests/fuzz/corpus/${name#replay_}" >"$log" 2>&1 ;;
	*.sh) sh "$t" >"$log" 2>&1 ;;
	*) "$t" >"$log" 2>&1 ;;
	esac
	rc=$?
	case "$name" in
	replay_*) grep -v '^\[ *\(RUN\|OK\) *\]' "$log" ;; # one line per input is too much
	*) cat "$log" ;;
	esac
	case "$name" in
	*.sh) # shell tests print TAP: one "ok - ..." or "not ok - ..." per check
		p=$(grep '^ok ' "$log" | grep -vc '# SKIP')
		f=$(grep -c '^not ok ' "$log") ;;
	*)
		p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
		f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}') ;;
	esac
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # crashed or failed before cmocka could summarise
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	[ "$f" -ne 0 ] && failed_bins="$failed_bins $name"
done
rm -f "$log"
[ -n "$failed_bins" ] && echo "failed:$failed_bins"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
