#!/bin/sh
# sim_error_pct: how far the simulator's makespan is from a real run's.
#
# Starts tandemd (this machine's CPU cores and PoCL device, policy dmda),
# warms its cost models with one run of each example, then records a real
# run of each with `tandemctl trace`, exports the calibrated machine with
# `tandemctl calibrate --export`, replays each trace with
# `tandemd --simulate -p dmda` on that machine and prints
#
#   BENCH sim_real_ms / sim_predicted_ms   (ms, workload=...)
#   BENCH sim_error_pct                    |predicted - real| / real, in %
#
# Usage: BUILD=build sh tests/bench/sim_fidelity.sh
set -u
BUILD=${BUILD:-build}
dir=$(mktemp -d "${TMPDIR:-/tmp}/tandem-fidelity.XXXXXX") || exit 1
sock="$dir/tandemd.sock"
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid"; fi
	[ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$dir/tandemd.toml" <<TOML
[daemon]
log_level = "warn"
state_dir = "$dir/state"
[engine]
policy = "dmda"
TOML
"$BUILD/bin/tandemd" -c "$dir/tandemd.toml" --socket "$sock" 2>"$dir/tandemd.log" &
pid=$!
i=0
until "$BUILD/bin/tandemctl" --socket "$sock" status >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "sim_fidelity: tandemd did not start:"; cat "$dir/tandemd.log"; exit 1
	fi
	sleep 0.05
done

chol() { "$BUILD/bin/cholesky" --socket "$sock" --tiles 10 --nb 384 >"$dir/out" 2>&1; }
llm() { "$BUILD/bin/llm_layer" --socket "$sock" --steps 8 >"$dir/out" 2>&1; }

status=0
for w in chol llm; do
	# Twice untraced: the models learn every size the run uses.
	$w && $w || { echo "sim_fidelity: $w failed:"; cat "$dir/out"; exit 1; }
	"$BUILD/bin/tandemctl" --socket "$sock" trace -o "$dir/$w.trace" --chrome "$dir/$w.json" \
		>"$dir/trace.out" 2>&1 &
	tpid=$!
	sleep 0.3
	$w || { echo "sim_fidelity: $w failed:"; cat "$dir/out"; exit 1; }
	kill -INT "$tpid"
	wait "$tpid" || { echo "sim_fidelity: tandemctl trace failed:"; cat "$dir/trace.out"; exit 1; }
done
"$BUILD/bin/tandemctl" --socket "$sock" calibrate --export -o "$dir/here.toml" || exit 1

for w in chol llm; do
	name=$([ $w = chol ] && echo cholesky-10x384 || echo llm_layer-8steps)
	"$BUILD/bin/tandemd" --simulate -m "$dir/here.toml" -w "$dir/$w.trace" -p dmda \
		>"$dir/sim.out" 2>&1 || { echo "sim_fidelity: simulate failed:"; cat "$dir/sim.out"; status=1; continue; }
	cat "$dir/sim.out"
	awk -v name="$name" '
		/^recorded run:/ { real = $4 }
		$1 == "dmda" && pred == "" { pred = $2 }
		END {
			if (real <= 0 || pred == "") { print "sim_fidelity: no figures for " name; exit 1 }
			err = (pred - real) / real * 100; if (err < 0) err = -err
			printf "BENCH sim_real_ms %.3f ms workload=%s\n", real, name
			printf "BENCH sim_predicted_ms %.3f ms workload=%s policy=dmda\n", pred, name
			printf "BENCH sim_error_pct %.2f pct workload=%s\n", err, name
		}' "$dir/sim.out" || status=1
done
exit $status
