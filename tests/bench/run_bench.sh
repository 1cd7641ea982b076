#!/bin/sh
# Runs every benchmark binary it is given, one after the other, shows their
# output, then prints the ratios computed from the BENCH lines they printed:
#
#   BENCH ratio_<name> <tandem/StarPU> ratio [core=.. doorbell=..]
#   BENCH roundtrip_over_floor_p50 <tandem/ping-pong> ratio core=.. doorbell=..
#
# A benchmark that fails (or runs past BENCH_TIMEOUT seconds) is reported as
# "bench: X failed"; the others still run, and the script exits 1 at the end.
#
# Usage: BUILD=build sh tests/bench/run_bench.sh build/bench/bench_X ...

BUILD=${BUILD:-build}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
export BUILD

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench-run.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
: >"$tmp/all"
failed=0

if command -v timeout >/dev/null 2>&1; then
	limit="timeout $BENCH_TIMEOUT"
else
	limit=""
fi

echo "BENCH machine_cores $(nproc) cores"

for b in "$@"; do
	name=$(basename "$b")
	echo "== $name"
	# The exit status of the benchmark, not of tee.
	{
		$limit "$b" 2>&1
		echo $? >"$tmp/rc"
	} | tee "$tmp/out"
	rc=$(cat "$tmp/rc")
	grep '^BENCH ' "$tmp/out" >>"$tmp/all"
	if [ "$rc" != 0 ]; then
		echo "bench: $name failed (exit $rc)"
		failed=1
	fi
done

echo "== ratios"
awk '
function keys(   i) {
	core = ""; bell = ""
	for (i = 5; i <= NF; i++) {
		if ($i ~ /^core=/) core = substr($i, 6)
		else if ($i ~ /^doorbell=/) bell = substr($i, 10)
	}
}
function id(name, c, b) { return c == "" && b == "" ? name : name "|" c "|" b }
function num(v) { return v >= 1000 ? sprintf("%.0f", v) : sprintf("%.4g", v) }
# Prints BENCH out (a/b) for the figures named a and b, if both exist.
function ratio(out, a, b, k) {
	if (!(a in val) || !(b in val)) {
		miss = !(a in val) ? a : b
		gsub(/\|/, " ", miss)
		printf "bench: no %s%s: no figure %s\n", out, k == "" ? "" : " (" k ")", miss
		return
	}
	if (val[b] + 0 == 0) {
		printf "bench: no %s%s: %s is 0\n", out, k == "" ? "" : " (" k ")", b
		return
	}
	printf "BENCH %s %s ratio%s\n", out, num(val[a] / val[b]), k == "" ? "" : " " k
}
$1 == "BENCH" { keys(); val[id($2, core, bell)] = $3 }
END {
	n = split("batch_noop_us_per_task batch_noop_tasks_per_s chain_us_per_task " \
		"idle_cpu_percent", plain, " ")
	for (i = 1; i <= n; i++)
		ratio("ratio_" plain[i], plain[i], "starpu_" plain[i], "")
	split("same cross", cores, " ")
	split("block spin", bells, " ")
	for (c = 1; c <= 2; c++) {
		for (b = 1; b <= 2; b++) {
			k = "core=" cores[c] " doorbell=" bells[b]
			rt50 = id("roundtrip_p50_us", cores[c], bells[b])
			rt99 = id("roundtrip_p99_us", cores[c], bells[b])
			floor50 = id("pingpong_floor_p50_us", cores[c], bells[b])
			# A combination neither side ran (one core only) is no error.
			if (!(rt50 in val) && !(floor50 in val))
				continue
			ratio("ratio_roundtrip_p50_us", rt50, "starpu_roundtrip_p50_us", k)
			ratio("ratio_roundtrip_p99_us", rt99, "starpu_roundtrip_p99_us", k)
			ratio("roundtrip_over_floor_p50", rt50, floor50, k)
		}
	}
}' "$tmp/all"

exit $failed
