#!/bin/sh
# make demo: start tandemd on a private socket with the embedded default
# configuration, run the blocked-GEMM client, show the daemon's status, stop.
# Calibration and learned cost models are kept in $BUILD/state (so a second
# demo starts from what the first one learned).
set -eu
BUILD=${BUILD:-build}
dir=$(mktemp -d /tmp/tandem-demo.XXXXXX)
sock="$dir/tandemd.sock"
cleanup() {
	if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

XDG_STATE_HOME=$(cd "$BUILD" && pwd)/state
export XDG_STATE_HOME
echo "== starting tandemd on $sock (embedded default configuration; calibrates the devices"
echo "   the first time, state in $XDG_STATE_HOME/tandem)"
"$BUILD/bin/tandemd" --socket "$sock" 2>"$dir/tandemd.log" &
pid=$!
i=0
until "$BUILD/bin/tandemctl" --socket "$sock" status >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "tandemd did not start:"; cat "$dir/tandemd.log"; exit 1
	fi
	sleep 0.05
done

echo "== running examples/blocked_gemm.c (R = 2 AxB + 1 in 128x128 tiles)"
"$BUILD/bin/blocked_gemm" "$sock" 384 128

echo "== running examples/llm_layer.c (a LLaMA-shaped decoder layer with MoE, 8 decode steps,"
echo "   one task graph per step, checked against plain loops in the client)"
"$BUILD/bin/llm_layer" --socket "$sock" --steps 8 --hold-ms 1500 &
llm=$!
sleep 1
echo "== tandemctl status (while llm_layer still holds its buffers)"
"$BUILD/bin/tandemctl" --socket "$sock" status
wait "$llm"

echo "== tandemctl models (what the daemon learned of each kernel on each device)"
"$BUILD/bin/tandemctl" --socket "$sock" models

echo "== recording examples/cholesky.c with tandemctl trace, exporting this machine, and"
echo "   replaying the trace with tandemd --simulate (every policy)"
"$BUILD/bin/tandemctl" --socket "$sock" trace -o "$dir/cholesky.trace" &
tr=$!
sleep 0.3
"$BUILD/bin/cholesky" --socket "$sock" --tiles 6 --nb 256
kill -INT "$tr"
wait "$tr"
"$BUILD/bin/tandemctl" --socket "$sock" calibrate --export -o "$dir/here.toml"
"$BUILD/bin/tandemd" --simulate -m "$dir/here.toml" -w "$dir/cholesky.trace"

echo "== tandemd --simulate: tiled Cholesky (1540 tasks) on the described H100 server"
"$BUILD/bin/tandemd" --simulate -m machines/h100.toml -w cholesky:20:960 -p eager,dmda,heft,peft

echo "== stopping tandemd (SIGTERM drains, exits 0)"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
echo "== tandemd log"
cat "$dir/tandemd.log"
echo "== tandemd exited with status $rc"
exit $rc
