#!/bin/sh
# The MoE layer of examples/llm_layer on this machine (issue 16, items 1
# and 2, and the real-machine check of "What it must show"): one decode
# step of a layer with d_model 1024, 8 experts top-2, ffn 2048 (batch 1),
# in five modes, run interleaved:
#   serial      the experts as before (--serial-experts: each expert TDM_RW
#               on y and unguarded, so they run one after another);
#   acc         as now (guarded by the router, accumulating into y with
#               TDM_ACC) on the default daemon (dmda; the cores and, where
#               present, PoCL);
#   acc_capped  the same client on a daemon with the llm policy (its MoE
#               split decides per layer which experts go to the cores and
#               which to the accelerator) and the accelerator's memory
#               capped below the experts' bytes ([devices] mem_cap CAP on
#               clcpu and gpu: 64 MiB against the experts' 192 MiB);
#   acc_eager   the same cap with the eager policy, which ignores costs:
#               the experts land on the cores and the accelerator alike,
#               evicting each other's weights there (where the llm split,
#               predicting PoCL slower, sends none to it);
#   direct      no daemon: build/bench/moe_direct (tests/bench/moe_direct.c),
#               the same layer's kernels (the daemon's CPU kernels) called
#               in one process, the routed experts on two threads (one per
#               core for top-2), checked against the same reference.
#
# Each daemon mode runs on a private tandemd of its own, all up at once,
# with a fresh copy of the calibration cache, so that its moe_expert cost
# model learns from that mode's tasks only; ROUNDS x RUNS runs of STEPS
# steps per mode, the five modes back to back each time.
#   BENCH moe_layer_step_ms <median> ms mode=M stat=median runs=..
#     the median over runs of each run's median step latency
#   BENCH moe_layer_step_ms <min> ms mode=M stat=min
#     the least step latency seen (the least disturbed by other load)
#   BENCH moe_layer_speedup <ratio> ratio stat=paired_median|min over=serial mode=acc|acc_capped|acc_eager
#     serial over the mode: the median over back-to-back pairs of runs, and
#     the ratio of the least step latencies
#   BENCH moe_layer_over_direct <ratio> ratio stat=paired_median|min mode=acc|acc_capped|acc_eager
#     the mode over direct, the same way (1.0: nothing over calling the
#     kernels directly)
#   BENCH moe_layer_expert_tasks <n> tasks mode=M device=D
#     where the routed experts ran: the moe_expert tasks each device ran over
#     the mode's timed runs (status JSON; skipped experts do not run)
#   BENCH moe_layer_accel_evictions <n> evictions mode=M device=D
#     replicas the accelerator's memory budget evicted (status JSON)
#   BENCH moe_split_layers <n> layers mode=acc_capped on_cpu=.. on_accel=..
#     the llm policy's split (tandemctl moe): splits made, and the routed
#     experts it sent to the cores and to the accelerator
#   BENCH moe_split_decide_us <us> us stat=max mode=acc_capped
#     the longest split decision (moe_split_plan) the llm policy made
#   BENCH moe_dispatch_overhead_us <us> us stat=median|p90 mode=M path=P n=..
#     the per-layer dispatch overhead, from a task trace (tandemctl trace)
#     of one more run of STEPS steps per guarded mode (tests/bench/
#     moe_dispatch.py says how): path=same_worker from the router's end to
#     a routed expert's start on the router's worker (the completion, the
#     guards, the routed features, the policy's release and split and the
#     dispatch, all on that worker); path=other_worker the same for an
#     expert on another, idle, worker (plus waking it); path=merge from the
#     last expert's end to the next task's start (the TDM_ACC sum);
#     mode=direct: moe_direct's count of the same (from topk_router's return
#     to an expert's start on its own thread, and on its helper thread,
#     woken as the daemon's workers are: a 50 us spin, then asleep)
#   BENCH moe_expert_model_err_pct <pct> pct mode=.. stat=ewma|median32 device=..
#     moe_expert's cost model after the runs: its recent relative error
#     (EWMA, and the median of the last 32 that tandemctl models shows)
#   BENCH moe_layer_loadavg <1-minute load average> load when=start|end
# Timings on a shared machine are noisy; nothing here is pass/fail, except
# that every run must pass the example's own reference check.
#
# Usage: BUILD=build sh tests/bench/moe_layer.sh
set -u
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-2}
RUNS=${RUNS:-3}
STEPS=${STEPS:-40}
CAP=${CAP:-64MiB} # acc_capped: the accelerator's memory budget
SHAPE="--d-model 1024 --d-ff 2048 --experts 8 --top-k 2 --kv-cap 256 --prompt 16"
CACHE=$(cd "$BUILD" && pwd)/state # the calibration cache
HERE=$(dirname "$0")
DAEMON_MODES="serial acc acc_capped acc_eager"
MODES="$DAEMON_MODES direct"
status=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tandem-moe-layer.XXXXXX") || exit 1
daemon_pids=""
cleanup() {
	for p in $daemon_pids; do kill "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_daemon MODE [CONFIG]: a tandemd for that mode on $tmp/MODE/sock; its
# pid in $tmp/MODE/pid, its moe_expert models before any run in
# $tmp/MODE/models0.
start_daemon() {
	dir="$tmp/$1"
	mkdir -p "$dir/state"
	[ -d "$CACHE" ] && cp -r "$CACHE/." "$dir/state/"
	config=""
	[ -n "${2:-}" ] && config="--config $2"
	# shellcheck disable=SC2086
	XDG_STATE_HOME="$dir/state" "$BUILD/bin/tandemd" $config --socket "$dir/sock" \
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

# run_mode MODE OUT: one run of MODE, its output in OUT; non-zero when it
# failed (the reference check included).
run_mode() {
	case "$1" in
	direct)
		# shellcheck disable=SC2086
		"$BUILD/bench/moe_direct" --steps "$STEPS" $SHAPE >"$2" 2>&1 ;;
	serial)
		# shellcheck disable=SC2086
		"$BUILD/bin/llm_layer" --socket "$tmp/$1/sock" --steps "$STEPS" $SHAPE \
			--serial-experts >"$2" 2>&1 ;;
	*)
		# shellcheck disable=SC2086
		"$BUILD/bin/llm_layer" --socket "$tmp/$1/sock" --steps "$STEPS" $SHAPE >"$2" 2>&1 ;;
	esac
}

loadavg() {
	printf "BENCH moe_layer_loadavg %s load when=%s\n" "$(cut -d' ' -f1 /proc/loadavg)" "$1"
}

for policy in llm eager; do
	printf '[engine]\npolicy = "%s"\n[devices]\nmem_cap = { clcpu = "%s", gpu = "%s" }\n' \
		"$policy" "$CAP" "$CAP" >"$tmp/$policy.toml"
done
loadavg start
# The daemons up at once, the modes' runs alternating, so that the load
# other programs put on the machine falls on all alike.
start_daemon serial
start_daemon acc
start_daemon acc_capped "$tmp/llm.toml"
start_daemon acc_eager "$tmp/eager.toml"
mkdir -p "$tmp/direct"
n=0
for round in $(seq "$ROUNDS"); do
	for run in $(seq "$RUNS"); do
		n=$((n + 1))
		for mode in $MODES; do
			out="$tmp/$mode/run$n"
			if ! run_mode "$mode" "$out"; then
				echo "moe_layer.sh: $mode run failed:"
				cat "$out"
				status=1
			fi
			sed -n 's/.*median \([0-9.]*\) us, min \([0-9.]*\) us.*/\1 \2/p' "$out" |
				sed "s/^/$mode $n /" >>"$tmp/steps"
		done
	done
done
# Where the timed runs' experts ran: moe_expert tasks per device, and the
# llm policy's split.
for mode in $DAEMON_MODES; do
	"$BUILD/bin/tandemctl" --socket "$tmp/$mode/sock" --json status 2>/dev/null |
		python3 -c '
import json, sys
doc = json.load(sys.stdin)
for d in doc.get("devices", []):
    print("BENCH moe_layer_expert_tasks %d tasks mode=%s device=%s" %
          (d.get("kernels", {}).get("moe_expert", 0), sys.argv[1], d["name"]))
    if "mem_cap" in d:
        print("BENCH moe_layer_accel_evictions %d evictions mode=%s device=%s mem_cap=%d" %
              (d.get("evictions", 0), sys.argv[1], d["name"], d["mem_cap"]))
moe = doc.get("moe")
if moe:
    print("BENCH moe_split_layers %d layers mode=%s on_cpu=%d on_accel=%d" %
          (moe["splits"], sys.argv[1], sum(l["on_cpu"] for l in moe["layers"]),
           sum(l["on_accel"] for l in moe["layers"])))
    print("BENCH moe_split_decide_us %.1f us stat=max mode=%s" %
          (moe["decide_ns_max"] / 1e3, sys.argv[1]))
' "$mode"
done
# The dispatch overhead: one more run per guarded mode, under a task trace.
for mode in acc acc_capped acc_eager; do
	: >"$tmp/$mode/trace.log"
	"$BUILD/bin/tandemctl" --socket "$tmp/$mode/sock" trace -o "$tmp/$mode/trace" \
		--seconds 600 >"$tmp/$mode/trace.log" 2>&1 &
	tracer=$!
	i=0 # the recording is on before the run's first graph
	while ! grep -q recording "$tmp/$mode/trace.log" && [ $i -lt 100 ]; do
		i=$((i + 1))
		sleep 0.1
	done
	if ! run_mode "$mode" "$tmp/$mode/traced"; then
		echo "moe_layer.sh: $mode traced run failed:"
		cat "$tmp/$mode/traced"
		status=1
	fi
	kill -INT "$tracer" 2>/dev/null
	wait "$tracer"
	python3 "$HERE/moe_dispatch.py" "$mode" "$tmp/$mode/trace" || status=1
done
# The same without a daemon: moe_direct's own count, from topk_router's
# return to an expert's start on its thread and on its helper thread.
if run_mode direct "$tmp/direct/traced"; then
	sed -n 's/^expert start after the router: same_thread median \([0-9.]*\) us p90 \([0-9.]*\) us n \([0-9]*\), other_thread median \([0-9.]*\) us p90 \([0-9.]*\) us n \([0-9]*\)$/\1 \2 \3 \4 \5 \6/p' \
		"$tmp/direct/traced" | awk '{
		printf "BENCH moe_dispatch_overhead_us %s us stat=median mode=direct path=same_worker n=%s\n", $1, $3
		printf "BENCH moe_dispatch_overhead_us %s us stat=p90 mode=direct path=same_worker n=%s\n", $2, $3
		printf "BENCH moe_dispatch_overhead_us %s us stat=median mode=direct path=other_worker n=%s\n", $4, $6
		printf "BENCH moe_dispatch_overhead_us %s us stat=p90 mode=direct path=other_worker n=%s\n", $5, $6
	}'
else
	echo "moe_layer.sh: direct run failed:"
	cat "$tmp/direct/traced"
	status=1
fi
for mode in $DAEMON_MODES; do
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
loadavg end

awk '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
# pairs NUM DEN: the median over back-to-back runs of NUM over DEN; np the pairs
function pairs(num, den,   i, k) {
	np = 0
	for (i = 1; i <= runs; i++)
		if (((num, i) in at) && ((den, i) in at) && at[den, i] > 0)
			r[++np] = at[num, i] / at[den, i]
	return np ? median(r, np) : 0
}
{ n[$1]++; med[$1, n[$1]] = $3; at[$1, $2] = $3; if ($2 > runs) runs = $2
  if (!($1 in lo) || $4 < lo[$1]) lo[$1] = $4 }
END {
	split("serial acc acc_capped acc_eager direct", order, " ")
	for (o = 1; o <= 5; o++) {
		m = order[o]
		if (!(m in n))
			continue
		for (i = 1; i <= n[m]; i++) v[i] = med[m, i]
		printf "BENCH moe_layer_step_ms %.3f ms mode=%s stat=median runs=%d d_model=1024 experts=8 top_k=2 ffn=2048\n", median(v, n[m]) / 1000, m, n[m]
		printf "BENCH moe_layer_step_ms %.3f ms mode=%s stat=min runs=%d\n", lo[m] / 1000, m, n[m]
	}
	for (o = 2; o <= 4; o++) {
		m = order[o]
		p = pairs("serial", m)
		if (np)
			printf "BENCH moe_layer_speedup %.2f ratio stat=paired_median pairs=%d over=serial mode=%s\n", p, np, m
		if (("serial" in lo) && (m in lo) && lo[m] > 0)
			printf "BENCH moe_layer_speedup %.2f ratio stat=min over=serial mode=%s\n", lo["serial"] / lo[m], m
		p = pairs(m, "direct")
		if (np)
			printf "BENCH moe_layer_over_direct %.2f ratio stat=paired_median pairs=%d mode=%s\n", p, np, m
		if (("direct" in lo) && (m in lo) && lo["direct"] > 0)
			printf "BENCH moe_layer_over_direct %.2f ratio stat=min mode=%s\n", lo[m] / lo["direct"], m
	}
}' "$tmp/steps"
[ -s "$tmp/models" ] && awk '{
	printf "BENCH moe_expert_model_err_pct %.1f pct mode=%s stat=ewma device=%s new_samples=%s\n", $4, $1, $2, $3
	printf "BENCH moe_expert_model_err_pct %.1f pct mode=%s stat=median32 device=%s new_samples=%s\n", $5, $1, $2, $3
}' "$tmp/models"
exit $status
