#!/bin/sh
# The house's arrows point one way (README "How it is built"): a file may
# include headers of its own room and of the rooms below it, never above.
# Each room has a rank; an #include "room/..." of a higher rank is a
# violation. As ranks are a total order, no cycle between rooms is possible
# once there is none. Prints each violation and exits 1; run by
# `make format-check` (CI) and `make test`.
#
#   daemon > sim > workload > engine > policies > placement > profiler >
#   graph > backends > common > include
#
# client/ sees include/ only, and the header-only files of common/ (a
# common/X.h without a common/X.c or X.cpp, which includes no room's header
# itself: libtandem then links nothing of the daemon); tools/ include/,
# the client library and the same header-only files of common/, except
# the StarPU converter (tools/starpu*), which writes machine descriptions
# and sits with the simulator; examples/ are clients: include/, their own
# headers (examples/llm_common.h, included by its bare name) and the
# workload room's readers (workload/, e.g. examples/llm_serve.c's trace
# reader); tests/ may use anything.
cd "$(dirname "$0")/.." || exit 2
rank() {
	case "$1" in
	include) echo 0 ;; common) echo 1 ;; backends) echo 2 ;; graph) echo 3 ;;
	profiler) echo 4 ;; placement) echo 5 ;; policies) echo 6 ;; engine) echo 7 ;;
	workload) echo 8 ;; sim) echo 9 ;; daemon) echo 10 ;;
	*) echo "" ;;
	esac
}
# A header of common/ that a client may include (see above).
header_only() {
	[ -f "$1" ] && [ ! -e "${1%.h}.c" ] && [ ! -e "${1%.h}.cpp" ] &&
		! grep -q '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[a-z_]*/' "$1"
}
bad=0
for f in $(git ls-files '*.c' '*.h' '*.cpp' '*.cu'); do
	room=${f%%/*}
	case "$room" in tests) continue ;; esac
	for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z_]*\)\/.*/\1/p' "$f" | sort -u); do
		[ "$inc" = "$room" ] && continue
		[ "$inc" = tandem ] && continue # include/tandem/*.h, via -Iinclude
		case "$room" in
		examples)
			[ "$inc" = workload ] ||
				{ echo "$f: examples/ includes $inc/, not a client's header"; bad=1; }
			continue ;;
		client)
			if [ "$inc" = common ]; then
				for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\(common\/[^"]*\)".*/\1/p' "$f"); do
					header_only "$h" ||
						{ echo "$f: client/ includes $h, not a header-only file of common/"; bad=1; }
				done
			elif [ "$inc" != client ]; then
				echo "$f: client/ includes $inc/"; bad=1
			fi
			continue ;;
		tools)
			case "$f" in
			tools/starpu*) ;; # checked as a room of the simulator's rank, below
			*)
				case "$inc" in include | client) continue ;; esac
				if [ "$inc" = common ]; then # as client/: header-only files
					for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\(common\/[^"]*\)".*/\1/p' "$f"); do
						header_only "$h" ||
							{ echo "$f: tools/ includes $h, not a header-only file of common/"; bad=1; }
					done
					continue
				fi
				echo "$f: tools/ includes $inc/"; bad=1; continue ;;
			esac ;;
		esac
		r=$(rank "$room"); i=$(rank "$inc")
		case "$f" in tools/starpu*) r=$(rank sim) ;; esac
		if [ -z "$r" ] || [ -z "$i" ]; then
			echo "$f: unknown room in #include \"$inc/...\" (room $room)"; bad=1
		elif [ "$i" -gt "$r" ]; then
			echo "$f: $room/ includes $inc/, a room above it"; bad=1
		fi
	done
done
[ $bad -eq 0 ] && echo "rooms: every #include points down"
exit $bad
