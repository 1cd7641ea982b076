#!/bin/sh
# The MoE layer of examples/llm_layer on this machine (issue 16, items 1
# and 2): one decode step of a layer with d_model 1024, 8 experts top-2,
# ffn 2048 (batch 1), with the experts as before (--serial-experts: each
# expert TDM_RW on y and unguarded, so they run one after another) and as
# now (guarded by the router, accumulating into y with TDM_ACC).
#
# Each mode runs on a private tandemd of its own (the default devices: the
# cores and, where present, PoCL), both up at once, with a fresh copy of
# the calibration cache, so that its moe_expert cost model learns from that
# mode's tasks only; ROUNDS x RUNS runs of STEPS steps per mode, a serial
# run and an acc run back to back each time.
#   BENCH moe_layer_step_ms <median> ms mode=serial|acc stat=median runs=..
#     the median over runs of each run's median step latency
#   BENCH moe_layer_step_ms <min> ms mode=.. stat=min
#     the least step latency seen (the least disturbed by other load)
#   BENCH moe_layer_speedup <ratio> ratio stat=paired_median|min
#     serial over acc: the median over back-to-back pairs of runs, and the
#     ratio of the least step latencies
#   BENCH moe_expert_model_err_pct <pct> pct mode=.. stat=ewma|median32 device=..
#     moe_expert's cost model after the runs: its recent relative error
#     (EWMA, and the median of the last 32 that tandemctl models shows)
# Timings on a shared machine are noisy; nothing here is pass/fail, except
# that every run must pass the example's own reference check.
#
# Usage: BUILD=build sh tests/bench/moe_layer.sh
set -u
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-2}
RUNS=${RUNS:-3}
STEPS=${STEPS:-40}
SHAPE="--d-model 1024 --d-ff 2048 --experts 8 --top-k 2 --kv-cap 256 --prompt 16"
CACHE=$(cd "$BUILD" && pwd)/state # the calibration cache
status=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tandem-moe-layer.XXXXXX") || exit 1
daemon_pids=""
cleanup() {
	for p in $daemon_pids; do kill "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_daemon MODE: a tandemd for that mode on $tmp/MODE/sock; its pid in
# $tmp/MODE/pid, its moe_expert models before any run in $tmp/MODE/models0.
start_daemon() {
	dir="$tmp/$1"
	mkdir -p "$dir/state"
	[ -d "$CACHE" ] && cp -r "$CACHE/." "$dir/state/"
	XDG_STATE_HOME="$dir/state" "$BUILD/bin/tandemd" --socket "$dir/sock" \
		--log-level warn 2>"$dir/log" &
	echo $! >"$dir/pid"
	daemon_pids="$daemon_pids $!"
	i=0
	while [ ! -S "$dir/sock" ]; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
			echo "moe_layer.sh: tandemd did not start:"
			cat "$dir/log"
			exit 1
		fi
		sleep 0.1
	done
	"$BUILD/bin/tandemctl" --socket "$dir/sock" --json models >"$dir/models0" 2>/dev/null
}

# Both daemons up at once, the modes' runs alternating, so that the load
# other programs put on the machine falls on both alike.
daemon_pids=""
start_daemon serial
start_daemon acc
n=0
for round in $(seq "$ROUNDS"); do
	for run in $(seq "$RUNS"); do
		n=$((n + 1))
		for mode in serial acc; do
			extra=""
			[ "$mode" = serial ] && extra="--serial-experts"
			out="$tmp/$mode/run$n"
			# shellcheck disable=SC2086
			if ! "$BUILD/bin/llm_layer" --socket "$tmp/$mode/sock" --steps "$STEPS" $SHAPE \
				$extra >"$out" 2>&1; then
				echo "moe_layer.sh: llm_layer ($mode) failed:"
				cat "$out"
				status=1
			fi
			sed -n 's/.*median \([0-9.]*\) us, min \([0-9.]*\) us.*/\1 \2/p' "$out" |
				sed "s/^/$mode $n /" >>"$tmp/steps"
		done
	done
done
for mode in serial acc; do
	# moe_expert's models: the relative error as an EWMA (what issue 16
	# quotes) and the median of the last 32, on the devices that ran it
	# (samples beyond those the calibration cache held).
	"$BUILD/bin/tandemctl" --socket "$tmp/$mode/sock" --json models 2>/dev/null |
		python3 -c '
import json, sys
def moe(doc):
    return {m["kernel"] + m["device"]: m for m in doc.get("models", []) if m["kernel"] == "moe_expert"}
try:
    before = moe(json.load(open(sys.argv[2])))
except (OSError, ValueError):
    before = {}
for key, m in moe(json.load(sys.stdin)).items():
    new = m["samples"] - before.get(key, {}).get("samples", 0)
    if new > 0:
        print(sys.argv[1], m["device"], new,
              m.get("recent_err_pct", -1), m.get("recent_median_err_pct", -1))
' "$mode" "$tmp/$mode/models0" >>"$tmp/models"
done
for p in $daemon_pids; do
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
done
daemon_pids=""

awk '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ n[$1]++; med[$1, n[$1]] = $3; at[$1, $2] = $3; if (!($1 in lo) || $4 < lo[$1]) lo[$1] = $4 }
END {
	for (m in n) {
		for (i = 1; i <= n[m]; i++) v[i] = med[m, i]
		mm[m] = median(v, n[m]) / 1000
		printf "BENCH moe_layer_step_ms %.3f ms mode=%s stat=median runs=%d d_model=1024 experts=8 top_k=2 ffn=2048\n", mm[m], m, n[m]
		printf "BENCH moe_layer_step_ms %.3f ms mode=%s stat=min runs=%d\n", lo[m] / 1000, m, n[m]
	}
	# each pair of back-to-back runs: serial over acc
	np = 0
	for (i = 1; i <= n["serial"]; i++)
		if ((("serial", i) in at) && (("acc", i) in at) && at["acc", i] > 0)
			r[++np] = at["serial", i] / at["acc", i]
	if (np)
		printf "BENCH moe_layer_speedup %.2f ratio stat=paired_median pairs=%d over=serial\n", median(r, np), np
	if (("serial" in lo) && ("acc" in lo) && lo["acc"] > 0)
		printf "BENCH moe_layer_speedup %.2f ratio stat=min over=serial\n", lo["serial"] / lo["acc"]
}' "$tmp/steps"
[ -s "$tmp/models" ] && awk '{
	printf "BENCH moe_expert_model_err_pct %.1f pct mode=%s stat=ewma device=%s new_samples=%s\n", $4, $1, $2, $3
	printf "BENCH moe_expert_model_err_pct %.1f pct mode=%s stat=median32 device=%s new_samples=%s\n", $5, $1, $2, $3
}' "$tmp/models"
exit $status
