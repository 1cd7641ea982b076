#!/bin/sh
# Whether two tandemd builds simulate the same schedules: a speed change to
# the engine, the policies, placement or the simulator must leave every
# simulated result as it was. For every policy on machine x workload pairs
# (the machines of machines/, tiled factorisations, random and layered DAGs,
# and STG and WfCommons graphs from ../shared/benchmarks when present),
# runs `tandemd --simulate --json --trace-out` with both builds and compares
# the JSON (decision time dropped: wall clock) and every trace (each task's
# device, start and end).
#
# Prints one line per differing pair and, at the end,
#   BENCH sim_same_pairs N pairs differ=D policies=P
# Exit status 1 when any pair differs.
#
# The 55,000-task random DAG is there for the simulator's lookahead, which
# starts above 32 MiB of task records (sim/sim.c, AHEAD_MIN_BYTES).
#
# Usage: sh tests/bench/sim_same.sh OLD_TANDEMD NEW_TANDEMD
set -u
[ $# -eq 2 ] || { echo "usage: $0 OLD_TANDEMD NEW_TANDEMD" >&2; exit 2; }
old=$1
new=$2
policies=$("$new" --list-policies | tr '\n' ',' | sed 's/,$//')
data=../shared/benchmarks
dir=$(mktemp -d "${TMPDIR:-/tmp}/tandem-simsame.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT

pairs="h100:cholesky:12 a10:cholesky:10 rtx4090:lu:8 t4-xeon:qr:8 laptop-npu:cholesky:8
h100:lu:10 t4-xeon:cholesky:12
h100:random:n=3000,seed=3 a10:random:n=1000,ccr=2,seed=5
t4-xeon:random:n=2000,ccr=0.1,out=5,seed=7 laptop-npu:random:n=500,seed=9
rtx4090:layered:n=300,p=0.1,costs=bimodal,seed=2
h100:layered:n=500,p=0.2,costs=uniform,seed=4,ccr=1
h100:random:n=55000,seed=11"
for f in stg/rand300/rand0001.stg stg/app/fpppp.stg stg/app/robot.stg stg/app/sparse.stg \
	stg/rand100/rand0002.stg wfcommons/blast-chameleon-small-001.json \
	wfcommons/cycles-chameleon-1l-1c-9p-001.json; do
	if [ -f "$data/$f" ]; then
		pairs="$pairs h100:$data/$f a10:$data/$f"
	else
		echo "sim_same: $data/$f absent: skipped"
	fi
done

n=0
bad=0
for p in $pairs; do
	m=${p%%:*}
	w=${p#*:}
	n=$((n + 1))
	for b in old new; do
		eval bin=\$$b
		"$bin" --simulate -m "$m" -w "$w" -p "$policies" --json \
			--trace-out "$dir/$b.$n.json" 2>"$dir/$b.$n.err" |
			grep -v '"decision_us_per_task"' >"$dir/$b.$n.out"
	done
	same=1
	cmp -s "$dir/old.$n.out" "$dir/new.$n.out" || same=0
	cmp -s "$dir/old.$n.err" "$dir/new.$n.err" || same=0
	for t in "$dir"/old."$n".*.json; do
		[ -f "$t" ] || continue
		cmp -s "$t" "$dir/new.${t#"$dir"/old.}" || same=0
	done
	if [ $same = 0 ]; then
		bad=$((bad + 1))
		echo "sim_same: differs: -m $m -w $w"
	fi
done
echo "BENCH sim_same_pairs $n pairs differ=$bad policies=$policies"
[ $bad = 0 ]
