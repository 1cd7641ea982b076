#!/bin/sh
# The GPU check: runs from an unpacked bundle (make gpu-bundle; README "On a
# GPU") on a machine with CUDA but none of tandem's other libraries, within
# GPU_CHECK_BUDGET seconds (default 450, under 8 minutes): the CUDA unit and
# integration tests, the device benches, the LLM examples on CUDA. Every
# step's output goes to $OUT (else ./gpu-check-out): <step>.log, bench.txt
# (the BENCH lines) and summary.txt, one line per step:
#   step NAME pass|fail|timeout|skipped rc=N s=SECONDS [passed=N failed=N] [why]
# Exit status 0 when no step failed or timed out.
# Where no GPU is usable the CUDA plugin steps aside (summary's "cuda:" line
# says why) and the rest still runs on the CPU and OpenCL devices.
# GPU_CHECK_STEPS="name ...": run only these steps (the others are listed
# as skipped).
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-./gpu-check-out}
BUDGET=${GPU_CHECK_BUDGET:-450}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
summary=$OUT/summary.txt
: >"$summary"
: >"$OUT/bench.txt"

# The bundle's libraries first, then CUDA's own (cuBLAS) where it usually is.
cuda_libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
	[ -d "$d" ] && cuda_libs="$cuda_libs:$d"
done
LD_LIBRARY_PATH="$here/lib$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The tests find tandemd, the plugin and their state under $BUILD.
BUILD=$here
TANDEM_LIB=$here/lib/libtandem.so
export LD_LIBRARY_PATH BUILD TANDEM_LIB
unset TANDEM_SOCKET

start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
note() { printf '%s\n' "$*" >>"$summary"; }

selected() {
	[ -z "${GPU_CHECK_STEPS:-}" ] && return 0
	case " $GPU_CHECK_STEPS " in *" $1 "*) return 0 ;; esac
	return 1
}

# step NAME TIMEOUT CMD...: runs CMD with its output in NAME.log, under
# TIMEOUT seconds or what is left of the budget, and writes its line.
step() {
	name=$1 limit=$2
	shift 2
	if ! selected "$name"; then
		note "step $name skipped rc=- s=0 (not selected)"
		return 0
	fi
	rest=$(left)
	if [ "$rest" -lt 10 ]; then
		note "step $name skipped rc=- s=0 (budget spent)"
		return 0
	fi
	[ "$limit" -gt $((rest - 5)) ] && limit=$((rest - 5))
	t0=$(date +%s)
	timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
	rc=$?
	secs=$(($(date +%s) - t0))
	grep '^BENCH ' "$OUT/$name.log" >>"$OUT/bench.txt"
	counts=""
	if grep -q '^\[==========\]' "$OUT/$name.log"; then
		p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$OUT/$name.log" | awk '{s+=$1} END {print s+0}')
		f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$OUT/$name.log" | awk '{s+=$1} END {print s+0}')
		counts=" passed=$p failed=$f"
	fi
	case $rc in
	0) st=pass ;;
	124 | 137) st=timeout ;;
	*) st=fail ;;
	esac
	note "step $name $st rc=$rc s=$secs$counts"
	echo "gpu-check: $name: $st ($secs s)"
}

# ---- what machine is this -------------------------------------------------------
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	uname -a
	nproc
	[ -f "$here/MANIFEST" ] && cat "$here/MANIFEST"
	if command -v nvidia-smi >/dev/null 2>&1; then
		nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv
	else
		echo "no nvidia-smi"
	fi
	echo "missing libraries (ldd):"
	for f in "$here"/bin/* "$here"/lib/*.so* "$here"/tests/test_* "$here"/bench/*; do
		ldd "$f" 2>/dev/null | grep 'not found' | sed "s|^|  $(basename "$f"): |"
	done
} >"$OUT/machine.txt" 2>&1
note "bundle: $here"
note "budget: $BUDGET s"
if command -v nvidia-smi >/dev/null 2>&1; then
	note "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 1)"
else
	note "gpu: no nvidia-smi"
fi
missing=$(grep -c 'not found' "$OUT/machine.txt")
note "libraries missing: $missing (machine.txt)"

# ---- the daemon and the LLM examples on it ------------------------------------------
sockdir=$(mktemp -d /tmp/tdmgpu.XXXXXX)
daemon_pid=""
stop_daemon() {
	[ -n "$daemon_pid" ] || return 0
	kill "$daemon_pid" 2>/dev/null
	i=0
	while kill -0 "$daemon_pid" 2>/dev/null && [ $i -lt 150 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -9 "$daemon_pid" 2>/dev/null
	wait "$daemon_pid" 2>/dev/null
	daemon_pid=""
}
trap 'stop_daemon; rm -rf "$sockdir"' EXIT INT TERM
# start_daemon NAME CONFIG-TEXT: tandemd on its own socket, log NAME.log;
# up to 90 s for it to listen (a first calibration, a busy machine).
start_daemon() {
	printf '%s\n' "$2" >"$sockdir/$1.toml"
	XDG_STATE_HOME=$OUT/state "$here/bin/tandemd" --config "$sockdir/$1.toml" \
		--socket "$sockdir/tandemd.sock" >"$OUT/$1.log" 2>&1 &
	daemon_pid=$!
	t0=$(date +%s)
	while [ $(($(date +%s) - t0)) -lt 90 ]; do
		"$here/bin/tandemctl" --socket "$sockdir/tandemd.sock" status >/dev/null 2>&1 && return 0
		kill -0 "$daemon_pid" 2>/dev/null || break
		sleep 0.2
	done
	stop_daemon
	return 1
}
# daemon_failed NAME STEP...: the steps that needed it count as failed.
daemon_failed() {
	d=$1
	shift
	for n in "$@"; do
		selected "$n" && note "step $n fail rc=- s=0 (tandemd did not start, see $d.log)"
	done
	return 0
}
sock=$sockdir/tandemd.sock
# A decode layer big enough for a GPU to matter (276 MiB of experts).
LLM_BIG="--d-model 1024 --d-ff 2816 --heads 16 --kv-heads 4 --head-dim 64 --experts 8 --prompt 256 --kv-cap 512 --steps 16"

daemon_steps="llm_layer_moe llm_layer_dense decoder_layer_py llm_layer_cuda_only"
want_daemon=false
for n in $daemon_steps; do selected "$n" && want_daemon=true; done
if ! $want_daemon; then
	for n in $daemon_steps; do note "step $n skipped rc=- s=0 (not selected)"; done
elif ! start_daemon daemon "[daemon]
log_level = \"info\""; then
	# shellcheck disable=SC2086 # a list of names
	daemon_failed daemon $daemon_steps
else
	"$here/bin/tandemctl" --socket "$sock" devices >"$OUT/devices.txt" 2>&1
	cuda_line=$(grep -o 'cuda: .*' "$OUT/daemon.log" | head -n 1 | sed 's/^cuda: //')
	cuda_devs=$(grep -o 'device [0-9]*: cuda[0-9]*' "$OUT/daemon.log" | sed 's/.*: //' | tr '\n' ' ')
	note "cuda: ${cuda_devs:+devices $cuda_devs}${cuda_line:-no note}"
	# shellcheck disable=SC2086 # LLM_BIG: a list of options
	step llm_layer_moe 60 "$here/bin/llm_layer" --socket "$sock" $LLM_BIG
	# shellcheck disable=SC2086
	step llm_layer_dense 60 "$here/bin/llm_layer" --socket "$sock" --dense $LLM_BIG
	if ! selected decoder_layer_py || python3 -c 'import numpy' 2>/dev/null; then
		step decoder_layer_py 60 python3 "$here/examples/python/decoder_layer.py" --socket "$sock" --steps 8
	else
		note "step decoder_layer_py skipped rc=- s=0 (no python3 with numpy)"
	fi
	"$here/bin/tandemctl" --socket "$sock" status >"$OUT/status-after.txt" 2>&1
	stop_daemon
	# The same layer on the GPU alone: every task on CUDA.
	if ! selected llm_layer_cuda_only; then
		note "step llm_layer_cuda_only skipped rc=- s=0 (not selected)"
	elif [ -z "$cuda_devs" ]; then
		note "step llm_layer_cuda_only skipped rc=- s=0 (no CUDA device)"
	elif start_daemon daemon-gpu-only "[devices]
include = [\"cuda0\"]"; then
		# shellcheck disable=SC2086
		step llm_layer_cuda_only 60 "$here/bin/llm_layer" --socket "$sock" $LLM_BIG
		stop_daemon
	else
		daemon_failed daemon-gpu-only llm_layer_cuda_only
	fi
fi

# ---- tests and benches ------------------------------------------------------------------
# The CUDA unit tests first, then the device benches, then the other tests
# the bundle carries (make gpu-bundle chose them), each as one step.
step test_cuda_loader 60 "$here/tests/test_cuda_loader"
step test_backend_kernels 90 "$here/tests/test_backend_kernels"
for b in "$here"/bench/bench_*; do
	step "$(basename "$b")" 120 "$b"
done
for t in "$here"/tests/test_*; do
	case $(basename "$t") in test_cuda_loader | test_backend_kernels) continue ;; esac
	step "$(basename "$t")" 90 "$t"
done

note "bench lines: $(wc -l <"$OUT/bench.txt") (bench.txt)"
note "total: $(($(date +%s) - start)) s"
fails=$(grep -c '^step .* \(fail\|timeout\) ' "$summary")
note "result: $fails step(s) failed or timed out"
echo "gpu-check: summary in $summary"
cat "$summary"
[ "$fails" -eq 0 ]
