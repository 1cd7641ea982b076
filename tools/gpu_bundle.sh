#!/bin/sh
# Packs the GPU check bundle (make gpu-bundle; README "On a GPU"):
#   tools/gpu_bundle.sh OUT.tar.gz FILE...
# FILEs: the binaries of the build in $BUILD (default build) to carry, by
# where they are: bin/, lib/, tests/ or bench/ (the Makefile's
# GPU_BUNDLE_FILES, built first). A GPU machine lent for a few minutes has CUDA but none
# of tandem's other libraries, so the bundle carries them: every library
# that ldd resolves for a bundled binary, except glibc's, the compiler's
# runtime and CUDA's own, is taken from its Debian package (apt-get
# download, cached in $BUILD/gpu-bundle/debs; dpkg-deb -x) into lib/.
# Exit status 3: a package could not be downloaded.
set -eu
out=${1:?usage: gpu_bundle.sh OUT.tar.gz FILE...}
shift
BUILD=${BUILD:-build}
work=$BUILD/gpu-bundle
top=tandem-gpu-check
stage=$work/$top
debs=$work/debs

[ -f "$BUILD/lib/tandem-cuda.so" ] || {
	echo "gpu-bundle: no $BUILD/lib/tandem-cuda.so (nvcc not found at build time)" >&2
	exit 1
}
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/tests" "$stage/bench" "$stage/examples/python" \
	"$stage/python" "$debs"
for f in "$@"; do
	dir=$(basename "$(dirname "$f")")
	case $dir in
	bin | lib | tests | bench) cp "$f" "$stage/$dir/" ;;
	*)
		echo "gpu-bundle: $f: not under bin/, lib/, tests/ or bench/" >&2
		exit 1
		;;
	esac
done
cp -r python/tandem "$stage/python/"
find "$stage/python" -name __pycache__ -prune -exec rm -rf {} +
cp examples/python/decoder_layer.py "$stage/examples/python/"
cp tools/run-gpu-check.sh "$stage/"

# Libraries a bare CUDA machine has: glibc's, the compiler runtime's, the
# driver's and CUDA toolkit's own (cuBLAS comes from the machine's CUDA).
is_base() {
	case $1 in
	linux-vdso.so.* | ld-linux*.so.* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | \
		librt.so.* | libresolv.so.* | libutil.so.* | libgcc_s.so.* | libstdc++.so.* | \
		libcuda.so.* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnvidia-*) return 0 ;;
	esac
	return 1
}

# soname and resolved path of every library the bundled ELF files need.
need=$work/need.txt
: >"$need"
for f in "$stage"/bin/* "$stage"/lib/*.so "$stage"/tests/test_* "$stage"/bench/*; do
	ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' >>"$need"
done
sort -u "$need" -o "$need"

manifest=$stage/MANIFEST
{
	echo "tandem GPU check bundle"
	echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
	# shellcheck disable=SC1091
	echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(. /etc/os-release && echo "$PRETTY_NAME")"
	echo "needs: glibc >= $(objdump -T "$stage"/bin/* "$stage"/lib/*.so "$stage"/tests/test_* "$stage"/bench/* 2>/dev/null |
		grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1), the CUDA driver, cuBLAS $(ldd "$stage/lib/tandem-cuda.so" | awk '/libcublas.so/ {print $1}')"
	echo "libraries (soname <- Debian package):"
} >"$manifest"

while read -r soname path; do
	is_base "$soname" && continue
	real=$(readlink -f "$path")
	# "pkg:arch: path" (or "pkg: path" for a package of one architecture)
	owner() { dpkg -S "$1" 2>/dev/null | head -n 1 | sed 's/: .*//'; }
	pkg=$(owner "$real")
	if [ -z "$pkg" ]; then
		# /lib is /usr/lib on Debian 12: dpkg knows one spelling.
		alt=$(echo "$real" | sed 's|^/usr/lib/|/lib/|; t; s|^/lib/|/usr/lib/|')
		pkg=$(owner "$alt")
		real_in_pkg=$alt
	else
		real_in_pkg=$real
	fi
	[ -n "$pkg" ] || {
		echo "gpu-bundle: $soname ($real) belongs to no Debian package" >&2
		exit 1
	}
	arch=$(dpkg-query -W -f='${Architecture}' "$pkg")
	ver=$(dpkg-query -W -f='${Version}' "$pkg")
	pkgname=${pkg%%:*}
	# apt-get download's file name: name_version_arch.deb, ':' as %3a.
	deb=$debs/${pkgname}_$(echo "$ver" | sed 's/:/%3a/')_$arch.deb
	note=""
	if [ ! -f "$deb" ] &&
		! (cd "$debs" && apt-get download -q "$pkgname:$arch=$ver" >/dev/null 2>&1); then
		# Debian's archive keeps only the newest point release of a
		# stable package: a security update removes the installed one.
		# The newest has the same soname (stable's ABI promise); the
		# manifest says which was taken.
		deb=$(ls -t "$debs/${pkgname}_"*"_$arch.deb" 2>/dev/null | head -n 1)
		if [ -z "$deb" ]; then
			(cd "$debs" && apt-get download -q "$pkgname:$arch" >/dev/null 2>&1) || {
				echo "gpu-bundle: cannot download $pkg=$ver nor a newer $pkgname (apt-get update first?)" >&2
				exit 3
			}
			deb=$(ls -t "$debs/${pkgname}_"*"_$arch.deb" 2>/dev/null | head -n 1)
		fi
		note=" (installed $ver is no longer in the archive)"
	fi
	x=$work/x/$(basename "$deb" .deb)
	[ -d "$x" ] || { mkdir -p "$x" && dpkg-deb -x "$deb" "$x"; }
	src=$x$real_in_pkg
	[ -f "$src" ] || src=$x$(echo "$real_in_pkg" | sed 's|^/usr/lib/|/lib/|; t; s|^/lib/|/usr/lib/|')
	[ -f "$src" ] || {
		echo "gpu-bundle: $real_in_pkg not in $(basename "$deb")" >&2
		exit 1
	}
	cp "$src" "$stage/lib/$soname"
	echo "  $soname <- $(basename "$deb")$note" >>"$manifest"
done <"$need"

# Every bundled binary resolves every library from lib/ or the base set.
unresolved=$(for f in "$stage"/bin/* "$stage"/tests/test_* "$stage"/bench/*; do
	LD_LIBRARY_PATH=$stage/lib ldd "$f" | awk '$2 == "=>" && $3 != "not" { print $1, $3 }'
done | sort -u | while read -r soname path; do
	is_base "$soname" || case $path in "$stage"/lib/*) ;; *) echo "$soname ($path)" ;; esac
done)
[ -z "$unresolved" ] || {
	echo "gpu-bundle: not from the bundle: $unresolved" >&2
	exit 1
}

tar -C "$work" -czf "$out.tmp" "$top"
mv "$out.tmp" "$out"
size=$(stat -c %s "$out")
echo "gpu-bundle: $out: $((size / 1024)) KiB ($size bytes), $(wc -l <"$need") libraries needed, $(grep -c ' <- ' "$manifest") bundled"
if [ "$size" -gt $((64 << 20)) ]; then
	echo "gpu-bundle: over 64 MiB" >&2
	exit 1
fi
