#!/bin/sh
# examples/llm_serve on this machine (issue 15, items 7 and 9), each run
# against a private tandemd of its own:
#
#  1. KV that does not fit the accelerator: a 4-layer model serving the
#     Azure conv trace (../shared/benchmarks/llm-traces, lengths scaled by
#     0.1; a generated trace when absent) with [devices] mem_cap on the
#     OpenCL device (PoCL) below weights + KV. Two devices sets: the cores
#     and PoCL (the daemon places), and PoCL alone (everything on the capped
#     device). Each twice: KV-on-device-only (--kv-budget = what the cap
#     leaves beside the weights: requests queue) and unbounded (every
#     request admitted; the daemon evicts and refetches whole KV buffers).
#     BENCH llm_serve_tok_s, llm_ttft_*, llm_tpot_*, llm_kv_queued,
#     llm_check_max_rel_err with keys devices=.. kv=..
#  2. Two clients at once with [clients] weights 1:2 (root and nobody;
#     root only), all their requests arriving at once, over the same fixed
#     window: each one's device time (BENCH llm_device_ms client=w1|w2) and
#     BENCH llm_share_ratio (w2 over w1; 2 is the configured share) with
#     over=window (all device time) and over=both_backlogged (only the
#     device time of each client's tasks while the other client had a task
#     queued or running: what weighted fair queueing promises, see
#     docs/llm.md "Two clients").
#
# Timings on a shared machine are noisy; nothing here is a pass/fail test,
# except that every run must finish and pass its reference check.
#
# Usage: BUILD=build sh tests/bench/llm_serve.sh
set -u
BUILD=${BUILD:-build}
SERVE="$BUILD/bin/llm_serve"
TANDEMD="$BUILD/bin/tandemd"
TRACES=${TDM_LLM_TRACES:-../shared/benchmarks/llm-traces}
SHARE_SECONDS=${SHARE_SECONDS:-8}
PARTS=${PARTS:-1 2} # which parts to run
# Part 2 on the cores only: device time is then the same currency on every
# device (a task that dmda sends to the slower PoCL device takes longer
# there, which would count as more share for less work).
SHARE_DEVICES=${SHARE_DEVICES:-'["cpu"]'}
SHARE_SUB=${SHARE_SUB:-4} # sub-batches per client: more independent work in flight
# Heavier than part 1's model, so that the devices, not the round trips,
# are what the two clients contend for.
SHARE_MODEL=${SHARE_MODEL:-"--layers 4 --d-model 512 --heads 8 --kv-heads 4 --head-dim 64 --d-ff 1536 --vocab 1024"}
XDG_STATE_HOME=$(cd "$BUILD" && pwd)/state # the calibration cache
export XDG_STATE_HOME
status=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tandem-llm-serve.XXXXXX") || exit 1
chmod 0755 "$tmp" # the second client of part 2 runs as nobody
daemon_pid=""
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_daemon NAME TOML: tandemd on $tmp/NAME.sock with that configuration.
start_daemon() {
	printf '%s\n' "$2" >"$tmp/$1.toml"
	sock="$tmp/$1.sock"
	"$TANDEMD" --config "$tmp/$1.toml" --socket "$sock" 2>"$tmp/$1.log" &
	daemon_pid=$!
	i=0
	while [ ! -S "$sock" ]; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 "$daemon_pid" 2>/dev/null; then
			echo "llm_serve.sh: tandemd ($1) did not start:"
			cat "$tmp/$1.log"
			daemon_pid=""
			return 1
		fi
		sleep 0.1
	done
}

stop_daemon() {
	kill "$daemon_pid" 2>/dev/null
	wait "$daemon_pid" 2>/dev/null
	daemon_pid=""
}

MODEL="--layers 4 --d-model 256 --heads 8 --kv-heads 4 --head-dim 32 --d-ff 512 --vocab 512"
if [ -r "$TRACES/AzureLLMInferenceTrace_conv_2023.csv" ]; then
	TRACE="$TRACES/AzureLLMInferenceTrace_conv_2023.csv"
else
	echo "llm_serve.sh: $TRACES not found: a generated trace instead of Azure conv"
	TRACE="$tmp/generated.csv"
	"$SERVE" --gen-trace 400 >"$TRACE"
fi
# The first requests of the trace, lengths / 10 (prompts <= 96, outputs <= 48),
# arrivals 10 times faster than recorded.
LOAD="--trace $TRACE --len-scale 0.1 --max-context 96 --max-gen 48
      --time-scale 0.1 --max-batch 16 --check-every 8"
# Weights 9.5 MiB and activations 0.8 MiB (the prefill's 96 rows, the
# step's 16): the cap leaves 1.5 MiB beside them for the KV, which peaks
# near 8 MiB when every request is admitted.
CAP=${CAP:-12MiB}
KV_DEVICE_ONLY=1536K

part1() {
	echo "== part 1: KV beyond the accelerator's mem_cap ($CAP on clcpu0)"
	for devs in ${PART1_DEVS:-cores+pocl pocl}; do
		case $devs in
		cores+pocl) include='[]' nreq=128 ;;
		pocl) include='["clcpu"]' nreq=32 ;; # everything on PoCL: slow
		esac
		for kv in ${PART1_KV:-device_only unbounded tiers}; do
			# tiers: every request admitted, the llm policy decides
			# each KV buffer's tier and where its attention runs.
			policy=dmda
			[ $kv = tiers ] && policy=llm
			start_daemon "cap-$devs-$kv" "[engine]
policy = \"$policy\"
[devices]
include = $include
mem_cap = { clcpu = \"$CAP\" }" || {
				status=1
				continue
			}
			budget=""
			[ $kv = device_only ] && budget="--kv-budget $KV_DEVICE_ONLY"
			keys="devices=$devs kv=$kv mem_cap=$CAP policy=$policy"
			echo "-- $keys"
			# shellcheck disable=SC2086
			"$SERVE" --socket "$sock" $MODEL $LOAD --max-requests $nreq $budget \
				--keys "$keys" >"$tmp/out" 2>&1 || status=1
			cat "$tmp/out"
			# What the capped device held and moved (the daemon's own counters).
			"$BUILD/bin/tandemctl" --socket "$sock" status --json >"$tmp/status.json" &&
				/usr/bin/python3 - "$tmp/status.json" "$keys" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for d in doc["devices"]:
    if d["kind"] != "clcpu":
        continue
    keys = sys.argv[2] + " device=" + d["name"]
    print("BENCH llm_accel_tasks %d tasks %s" % (d["tasks_run"], keys))
    print("BENCH llm_accel_h2d_mib %.1f MiB %s" % (d["bytes_h2d"] / 2**20, keys))
    print("BENCH llm_accel_d2h_mib %.1f MiB %s" % (d["bytes_d2h"] / 2**20, keys))
    print("BENCH llm_accel_evictions %d evictions %s" % (d["evictions"], keys))
PY
			stop_daemon
		done
	done
}

part2() {
	echo "== part 2: two clients, weights 1:2 (devices: $SHARE_DEVICES)"
	if [ "$(id -u)" != 0 ]; then
		echo "llm_serve.sh: part 2 needs root (a second uid for the second weight): skipped"
		return
	fi
	start_daemon share "[daemon]
allowed_uids = [65534]
[clients]
weights = { 0 = 1, 65534 = 2 }
[devices]
include = $SHARE_DEVICES" || {
		status=1
		return
	}
	start=$(($(date +%s) + 3))
	# Short prompts, long outputs (decode steps are where the batch's
	# attentions run side by side); more requests than the window can serve.
	SHARE="$SHARE_MODEL --time-scale 0 --max-requests 50000 --max-context 4 --len-scale 4
	       --max-gen 64 --max-batch 32 --sub-batches $SHARE_SUB --check-every 200
	       --duration $SHARE_SECONDS --start-at $start --quiet"
	: >"$tmp/w2.log"
	chmod 666 "$tmp/w2.log"
	# shellcheck disable=SC2086
	"$SERVE" --socket "$sock" $SHARE --task-log "$tmp/w1.log" --keys "client=w1 weight=1" \
		>"$tmp/w1" 2>&1 &
	p1=$!
	# shellcheck disable=SC2086
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$SERVE" --socket "$sock" $SHARE --task-log "$tmp/w2.log" \
		--keys "client=w2 weight=2" >"$tmp/w2" 2>&1 &
	p2=$!
	wait $p1 || status=1
	wait $p2 || status=1
	stop_daemon
	cat "$tmp/w1" "$tmp/w2"
	awk -v secs="$SHARE_SECONDS" -v devs="$SHARE_DEVICES" '$1 == "BENCH" && $2 == "llm_device_ms" {
		for (i = 5; i <= NF; i++) if ($i ~ /^client=/) ms[substr($i, 8)] = $3
	}
	END {
		if (!("w1" in ms) || !("w2" in ms) || ms["w1"] == 0) {
			print "llm_serve.sh: no device time for one of the clients"
			exit 1
		}
		printf "BENCH llm_share_ratio %.3f ratio weights=1:2 over=window seconds=%s w1_ms=%s w2_ms=%s devices=%s\n",
			ms["w2"] / ms["w1"], secs, ms["w1"], ms["w2"], devs
	}' "$tmp/w1" "$tmp/w2" || status=1
	both=$(contended_ms "$tmp/w1.log" "$tmp/w2.log")
	awk -v both="$both" -v secs="$SHARE_SECONDS" -v devs="$SHARE_DEVICES" 'BEGIN {
		split(both, v, " ")
		if (v[1] <= 0) { print "llm_serve.sh: no device time while both were backlogged"; exit 1 }
		printf "BENCH llm_share_ratio %.3f ratio weights=1:2 over=both_backlogged seconds=%s w1_ms=%.1f w2_ms=%.1f both_ms=%.1f predicted_ratio=%.3f devices=%s\n",
			v[2] / v[1], secs, v[1], v[2], v[3], (v[4] > 0 ? v[5] / v[4] : 0), devs
	}' || status=1
}

# Logs $1 and $2 (lines: queued start end, ns): the periods when both
# clients were backlogged (each had a task ready and waiting for a device:
# [queued, start) of one of its tasks), and the device time each got
# within them. Prints: ms of $1, ms of $2, ms both were backlogged, and
# the predicted ms of those runs for $1 and $2 (what the fair queue counts).
contended_ms() {
	for f in "$1" "$2"; do
		sort -n "$f" | awk '{ print $1, $2 }' >"$f.wait"
		sort -k2,2n "$f" | awk '{ print $2, $3, $4 }' >"$f.runs"
	done
	awk '
	# union of one file of [b, e) sorted by b, into arrays ub/ue of name
	function add(which, x, y) {
		if (n[which] && x <= ue[which, n[which]]) {
			if (y > ue[which, n[which]]) ue[which, n[which]] = y
			return
		}
		n[which]++; ub[which, n[which]] = x; ue[which, n[which]] = y
	}
	FILENAME == ARGV[1] { if ($2 > $1) add(1, $1, $2); next }
	FILENAME == ARGV[2] { if ($2 > $1) add(2, $1, $2); next }
	FILENAME == ARGV[3] && !done {
		# both backlogged: the intersection of the two unions
		i = 1; j = 1
		while (i <= n[1] && j <= n[2]) {
			lo = ub[1, i] > ub[2, j] ? ub[1, i] : ub[2, j]
			hi = ue[1, i] < ue[2, j] ? ue[1, i] : ue[2, j]
			if (hi > lo) { m++; cb[m] = lo; ce[m] = hi; total += hi - lo }
			if (ue[1, i] < ue[2, j]) i++; else j++
		}
		done = 1
	}
	{ # runs [start, end) by start, of ARGV[3] then ARGV[4]
		f = FILENAME == ARGV[3] ? 1 : 2
		if (f != last) { k0 = 0; last = f }
		while (k0 < m && ce[k0 + 1] <= $1) k0++
		for (k = k0 + 1; k <= m && cb[k] < $2; k++) {
			lo = cb[k] > $1 ? cb[k] : $1; hi = ce[k] < $2 ? ce[k] : $2
			if (hi > lo) { got[f] += hi - lo; pred[f] += $3 * (hi - lo) / ($2 - $1) }
		}
	}
	END {
		printf "%.1f %.1f %.1f %.1f %.1f\n", got[1] / 1e6, got[2] / 1e6, total / 1e6,
			pred[1] / 1e6, pred[2] / 1e6
	}
	' "$1.wait" "$2.wait" "$1.runs" "$2.runs"
}

for part in $PARTS; do
	part$part
done
exit $status
