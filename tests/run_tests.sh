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

# The pytest suites (python/tests: the Python binding; tests/gpu: the GPU
# check bundle), counted like the binaries from pytest's JUnit XML; a
# pytest that dies without writing it counts as one failure. Skipped with
# a message where Debian's python3-numpy or python3-pytest is missing, and
# in sanitizer flavours (an instrumented libtandem.so cannot be loaded into
# an uninstrumented Python). /usr/bin/python3: Debian's, which sees
# Debian's packages. TDM_PYTEST=0 leaves them out.
PYTHON=${PYTHON:-/usr/bin/python3}
pytest_dirs=""
for d in python/tests tests/gpu; do
	[ -d "$d" ] && pytest_dirs="$pytest_dirs $d"
done
if [ -n "$pytest_dirs" ] && [ "${TDM_PYTEST:-1}" != 0 ]; then
	printf '== pytest%s\n' "$pytest_dirs"
	case "$BUILD" in
	*san-*) echo "pytest: skipped in the sanitizer flavour ($BUILD)" ;;
	*)
		if ! "$PYTHON" -c 'import numpy, pytest' 2>/dev/null; then
			echo "pytest: skipped: $PYTHON lacks numpy or pytest (python3-numpy, python3-pytest)"
		else
			xml=$(mktemp)
			# shellcheck disable=SC2086
			PYTHONDONTWRITEBYTECODE=1 timeout 900 "$PYTHON" -m pytest -q -p no:cacheprovider \
				--junitxml="$xml" $pytest_dirs
			rc=$?
			counts=$(sed -n 's/.*<testsuite \([^>]*\)>.*/\1/p' "$xml" | head -n 1)
			num() { printf '%s\n' "$counts" | sed -n "s/.*$1=\"\([0-9]*\)\".*/\1/p"; }
			t=$(num tests) e=$(num errors) f=$(num failures) s=$(num skipped)
			if [ -z "$t" ]; then
				p=0 f=1 # died before writing its report
			else
				f=$((f + e))
				p=$((t - f - s))
				[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
			fi
			rm -f "$xml"
			passed=$((passed + p))
			failed=$((failed + f))
			[ "$f" -ne 0 ] && failed_bins="$failed_bins pytest"
		fi
		;;
	esac
fi
[ -n "$failed_bins" ] && echo "failed:$failed_bins"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
