#!/bin/sh
# The MoE layer of examples/llm_layer on this machine (issue 16, items 1
# and 2): one decode step of a layer with d_model 1024, 8 experts top-2,
# ffn 2048 (batch 1), with the experts as before (--serial-experts: each
# expert TDM_RW on y and unguarded, so they run one after another) and as
# now (guarded by the router, accumulating into y with TDM_ACC).
#
# Each mode runs on a private tandemd of its own (the default devices: the
# cores and, where present, PoCL), with a fresh copy of the calibration
# cache, so that its moe_expert cost model learns from that mode's tasks
# only; ROUNDS rounds of RUNS runs of STEPS steps, the modes alternating.
#   BENCH moe_layer_step_ms <median> ms mode=serial|acc stat=median runs=..
#     the median over runs of each run's median step latency
#   BENCH moe_layer_step_ms <min> ms mode=.. stat=min
#     the least step latency seen (the least disturbed by other load)
#   BENCH moe_layer_speedup <ratio> ratio stat=median|min   (serial / acc)
#   BENCH moe_expert_model_err_pct <pct> pct mode=.. stat=ewma|median32 device=..
#     moe_expert's cost model after each round: its recent relative error
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
daemon_pid=""
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for round in $(seq "$ROUNDS"); do
	for mode in serial acc; do
		dir="$tmp/$mode.$round"
		mkdir -p "$dir/state"
		[ -d "$CACHE" ] && cp -r "$CACHE/." "$dir/state/"
		sock="$dir/sock"
		XDG_STATE_HOME="$dir/state" "$BUILD/bin/tandemd" --socket "$sock" \
			--log-level warn 2>"$dir/log" &
		daemon_pid=$!
		i=0
		while [ ! -S "$sock" ]; do
			i=$((i + 1))
			if [ $i -gt 600 ] || ! kill -0 "$daemon_pid" 2>/dev/null; then
				echo "moe_layer.sh: tandemd did not start:"
				cat "$dir/log"
				exit 1
			fi
			sleep 0.1
		done
		"$BUILD/bin/tandemctl" --socket "$sock" --json models >"$dir/models0" 2>/dev/null
		extra=""
		[ "$mode" = serial ] && extra="--serial-experts"
		for run in $(seq "$RUNS"); do
			# shellcheck disable=SC2086
			if ! "$BUILD/bin/llm_layer" --socket "$sock" --steps "$STEPS" $SHAPE $extra \
				>"$dir/run$run" 2>&1; then
				echo "moe_layer.sh: llm_layer ($mode) failed:"
				cat "$dir/run$run"
				status=1
			fi
			sed -n 's/.*median \([0-9.]*\) us, min \([0-9.]*\) us.*/\1 \2/p' "$dir/run$run" |
				sed "s/^/$mode /" >>"$tmp/steps"
		done
		# moe_expert's models: the relative error as an EWMA (what issue 16
		# quotes) and the median of the last 32, on the devices that ran it
		# in this round (samples beyond those the calibration cache held).
		"$BUILD/bin/tandemctl" --socket "$sock" --json models 2>/dev/null |
			python3 -c '
import json, sys
def moe(doc):
    return {m["device"]: m for m in doc.get("models", []) if m["kernel"] == "moe_expert"}
try:
    before = moe(json.load(open(sys.argv[3])))
except (OSError, ValueError):
    before = {}
for dev, m in moe(json.load(sys.stdin)).items():
    new = m["samples"] - before.get(dev, {}).get("samples", 0)
    if new > 0:
        print(sys.argv[1], sys.argv[2], dev, new,
              m.get("recent_err_pct", -1), m.get("recent_median_err_pct", -1))
' "$mode" "$round" "$dir/models0" >>"$tmp/models"
		kill "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
		daemon_pid=""
	done
done

awk '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ n[$1]++; med[$1, n[$1]] = $2; if (!($1 in lo) || $3 < lo[$1]) lo[$1] = $3 }
END {
	for (m in n) {
		for (i = 1; i <= n[m]; i++) v[i] = med[m, i]
		mm[m] = median(v, n[m]) / 1000
		printf "BENCH moe_layer_step_ms %.3f ms mode=%s stat=median runs=%d d_model=1024 experts=8 top_k=2 ffn=2048\n", mm[m], m, n[m]
		printf "BENCH moe_layer_step_ms %.3f ms mode=%s stat=min runs=%d\n", lo[m] / 1000, m, n[m]
	}
	if (("serial" in mm) && ("acc" in mm) && mm["acc"] > 0) {
		printf "BENCH moe_layer_speedup %.2f ratio stat=median over=serial\n", mm["serial"] / mm["acc"]
		printf "BENCH moe_layer_speedup %.2f ratio stat=min over=serial\n", lo["serial"] / lo["acc"]
	}
}' "$tmp/steps"
[ -s "$tmp/models" ] && awk '{
	printf "BENCH moe_expert_model_err_pct %.1f pct mode=%s stat=ewma device=%s round=%s new_samples=%s\n", $5, $1, $3, $2, $4
	printf "BENCH moe_expert_model_err_pct %.1f pct mode=%s stat=median32 device=%s round=%s new_samples=%s\n", $6, $1, $3, $2, $4
}' "$tmp/models"
exit $status
