#!/bin/sh
# make install into a DESTDIR, and what an operator and a developer do with
# the installed tree: the binaries' --version, a client built from
# examples/blocked_gemm.c with `pkg-config --cflags --libs tandem` alone, run
# against the installed daemon (which finds its CUDA plugin in lib/tandem),
# the man pages rendered without a warning and true to --help, the unit file
# through systemd-analyze verify, the sysusers/tmpfiles snippets applied to a
# scratch root, and make uninstall leaving nothing behind.
#
# Prints TAP lines ("ok - ...", "not ok - ...", "ok - ... # SKIP why"), which
# tests/run_tests.sh counts. Run from the source tree; BUILD as for make.
set -u
BUILD=${BUILD:-build}
src=$(pwd)
tmp=$(mktemp -d /tmp/tandem-install.XXXXXX)
dest="$tmp/root"
prefix=/usr/local
pid=""
failed=0

cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid"
		wait "$pid" 2>/dev/null
	fi
	if [ "$failed" -eq 0 ]; then rm -rf "$tmp"; else echo "# kept $tmp"; fi
}
trap cleanup EXIT

ok() { echo "ok - $1"; }
not_ok() {
	echo "not ok - $1"
	failed=$((failed + 1))
}
skip() { echo "ok - $1 # SKIP $2"; }
# check NAME COMMAND...: ok when the command succeeds; its output is shown
# when it does not.
check() {
	name=$1
	shift
	if out=$("$@" 2>&1); then ok "$name"; else
		not_ok "$name"
		printf '%s\n' "$out" | sed 's/^/#   /'
	fi
}

# The sanitizer flavours build into build/san-<list>; install that build.
san=""
case "$BUILD" in */san-*) san=$(echo "${BUILD##*/san-}" | tr - ,) ;; esac
mk() { make --no-print-directory -s SANITIZE="$san" "$@"; }

version=$(sed -n 's/^#define TDM_VERSION_STRING "\(.*\)"$/\1/p' include/tandem/version.h)
soversion=$(sed -n 's/^#define TDM_SOVERSION \([0-9]*\)$/\1/p' include/tandem/version.h)

# ---- install -------------------------------------------------------------------
check "make install DESTDIR=..." mk install DESTDIR="$dest"
missing=""
for f in sbin/tandemd bin/tandemctl bin/starpu2machine lib/libtandem.a \
	lib/libtandem.so.$soversion.$version lib/pkgconfig/tandem.pc include/tandem.h \
	include/tandem/wire.h include/tandem/version.h share/tandem/machines/h100.toml \
	share/man/man8/tandemd.8 share/man/man1/tandemctl.1 share/man/man5/tandem.toml.5 \
	share/man/man3/libtandem.3 lib/systemd/system/tandemd.service \
	lib/systemd/system/tandemd.socket lib/sysusers.d/tandem.conf \
	lib/tmpfiles.d/tandem.conf; do
	[ -f "$dest$prefix/$f" ] || missing="$missing $f"
done
[ -f "$dest/etc/tandem/tandemd.toml" ] || missing="$missing /etc/tandem/tandemd.toml"
if [ -z "$missing" ]; then ok "every file installed"; else not_ok "installed files missing:$missing"; fi

lib="$dest$prefix/lib"
if [ "$(readlink "$lib/libtandem.so")" = "libtandem.so.$soversion" ] &&
	[ "$(readlink "$lib/libtandem.so.$soversion")" = "libtandem.so.$soversion.$version" ] &&
	readelf -d "$lib/libtandem.so.$soversion.$version" | grep -q "SONAME.*\[libtandem.so.$soversion\]"; then
	ok "libtandem.so -> libtandem.so.$soversion (soname) -> libtandem.so.$soversion.$version"
else
	not_ok "libtandem's soname and links"
fi
exports=$(objdump -T "$lib/libtandem.so.$soversion" | grep -v '\*UND\*' |
	awk '/ D[FO] / {print $(NF-1), $NF}')
if [ -z "$exports" ] || printf '%s\n' "$exports" | grep -v '^TANDEM_[12] \(tdm_\|TANDEM_[12]$\)' | grep -q .; then
	not_ok "libtandem.so exports only tdm_* as TANDEM_1 or TANDEM_2"
else
	ok "libtandem.so exports only tdm_* as TANDEM_1 or TANDEM_2"
fi

for b in sbin/tandemd bin/tandemctl bin/starpu2machine; do
	out=$("$dest$prefix/$b" --version 2>&1)
	if [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] &&
		printf '%s\n' "$out" | grep -q "^$(basename "$b") $version\b"; then
		ok "$b --version: $out"
	else
		not_ok "$b --version: one line with $version, got: $out"
	fi
done

# ---- build a client against the installed tree ----------------------------------
PKG_CONFIG_PATH="$lib/pkgconfig"
PKG_CONFIG_SYSROOT_DIR="$dest"
PKG_CONFIG_LIBDIR="$lib/pkgconfig" # nothing of the system's
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
flags=$(pkg-config --cflags --libs tandem 2>&1 | sed 's/ *$//')
if [ "$(pkg-config --modversion tandem 2>&1)" = "$version" ] &&
	[ "$flags" = "-I$dest$prefix/include -L$lib -ltandem" ]; then
	ok "pkg-config --cflags --libs tandem: $flags"
else
	not_ok "pkg-config tandem: got $flags"
fi
# Only the installed tree: a copy of the example outside the source tree.
cp examples/blocked_gemm.c "$tmp/"
# A sanitizer flavour's libtandem.so needs its runtime loaded first.
sanflags=""
[ -n "$san" ] && sanflags="-fsanitize=$san"
# shellcheck disable=SC2086
check "cc blocked_gemm.c \$(pkg-config --cflags --libs tandem)" \
	cc -std=c11 $sanflags -o "$tmp/blocked_gemm" "$tmp/blocked_gemm.c" $flags
if readelf -d "$tmp/blocked_gemm" 2>/dev/null | grep -q "NEEDED.*\[libtandem.so.$soversion\]"; then
	ok "the client needs libtandem.so.$soversion"
else
	not_ok "the client needs libtandem.so.$soversion"
fi
# Static: libtandem.a, with what pkg-config --static says it needs.
if [ -z "$san" ]; then
	# shellcheck disable=SC2086
	check "cc -static blocked_gemm.c \$(pkg-config --static --cflags --libs tandem)" \
		cc -std=c11 -static -o "$tmp/blocked_gemm_static" "$tmp/blocked_gemm.c" \
		$(pkg-config --static --cflags --libs tandem)
else
	skip "cc -static blocked_gemm.c" "sanitizer flavour"
fi
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR

# ---- run it against the installed daemon -----------------------------------------
sock="$tmp/run/tandemd.sock"
mkdir -m 700 "$tmp/run" "$tmp/state"
printf '[profiler]\ncalibrate = false\npersist_models = false\n' >"$tmp/test.toml"
env -u TANDEM_CUDA_PLUGIN XDG_STATE_HOME="$tmp/state" \
	"$dest$prefix/sbin/tandemd" --config "$tmp/test.toml" --socket "$sock" 2>"$tmp/tandemd.log" &
pid=$!
i=0
until "$dest$prefix/bin/tandemctl" --socket "$sock" status >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
	sleep 0.05
done
if kill -0 "$pid" 2>/dev/null; then ok "installed tandemd serves $sock"; else
	not_ok "installed tandemd did not start"
	sed 's/^/#   /' "$tmp/tandemd.log"
fi
if out=$(LD_LIBRARY_PATH="$lib" "$tmp/blocked_gemm" "$sock" 256 128 2>&1) &&
	printf '%s\n' "$out" | grep -q '^result: correct$'; then
	ok "blocked_gemm (built against the installed tree) runs on the installed daemon"
else
	not_ok "blocked_gemm on the installed daemon"
	printf '%s\n' "$out" | sed 's/^/#   /'
fi
if [ -z "$san" ]; then
	if out=$("$tmp/blocked_gemm_static" "$sock" 256 128 2>&1) &&
		printf '%s\n' "$out" | grep -q '^result: correct$'; then
		ok "blocked_gemm linked statically runs on the installed daemon"
	else
		not_ok "blocked_gemm (static) on the installed daemon"
		printf '%s\n' "$out" | sed 's/^/#   /'
	fi
fi
if [ -f "$BUILD/lib/tandem-cuda.so" ]; then
	# Found in lib/tandem/ beside sbin/: the log says why CUDA is not used
	# (no driver here), not that there is no plugin.
	if grep -q "CUDA plugin not built" "$tmp/tandemd.log"; then
		not_ok "the installed tandemd finds lib/tandem/tandem-cuda.so"
		grep -i cuda "$tmp/tandemd.log" | sed 's/^/#   /'
	else
		ok "the installed tandemd finds lib/tandem/tandem-cuda.so: $(grep -i 'cuda' "$tmp/tandemd.log" | head -1 | sed 's/^.*info: //')"
	fi
else
	skip "the installed tandemd finds lib/tandem/tandem-cuda.so" "no CUDA plugin built"
fi
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
pid=""
if [ "$rc" -eq 0 ]; then ok "installed tandemd drains and exits 0 on SIGTERM"; else not_ok "tandemd exit $rc"; fi

# ---- man pages -----------------------------------------------------------------
man="$dest$prefix/share/man"
for page in man8/tandemd.8 man1/tandemctl.1 man5/tandem.toml.5 man3/libtandem.3; do
	if ! command -v groff >/dev/null; then
		skip "$page renders without warnings" "groff absent (apt-get install groff-base)"
		continue
	fi
	warn=$(groff -ww -man -z "$man/$page" 2>&1)
	rendered=$(MANWIDTH=80 man -l "$man/$page" 2>&1 >/dev/null)
	if [ -z "$warn" ] && [ -z "$rendered" ]; then ok "$page renders without warnings"; else
		not_ok "$page: warnings"
		printf '%s\n%s\n' "$warn" "$rendered" | sed 's/^/#   /'
	fi
done
# Every long option of --help is in the page (as \-\-option).
for pair in "sbin/tandemd man8/tandemd.8" "bin/tandemctl man1/tandemctl.1"; do
	set -- $pair
	opts=$("$dest$prefix/$1" --help | grep -o -- '--[a-z][a-z-]*' | sort -u)
	absent=""
	for o in $opts; do
		grep -qF -- "$(printf '%s' "$o" | sed 's/-/\\-/g')" "$man/$2" || absent="$absent $o"
	done
	if [ -z "$absent" ]; then ok "$2 has every option of $(basename "$1") --help"; else
		not_ok "$2 lacks$absent"
	fi
done

# ---- systemd --------------------------------------------------------------------
unit="$dest$prefix/lib/systemd/system/tandemd.service"
if grep -q "^ExecStart=$prefix/sbin/tandemd --config /etc/tandem/tandemd.toml\$" "$unit"; then
	ok "tandemd.service starts $prefix/sbin/tandemd"
else
	not_ok "tandemd.service ExecStart"
fi
if command -v systemd-analyze >/dev/null; then
	# The installed paths, as they will be once the tree is in place.
	sed "s|$prefix/sbin/tandemd|$dest$prefix/sbin/tandemd|" "$unit" >"$tmp/tandemd.service"
	cp "$dest$prefix/lib/systemd/system/tandemd.socket" "$tmp/"
	out=$(cd "$tmp" && MANPATH="$man" systemd-analyze verify "$tmp/tandemd.service" \
		"$tmp/tandemd.socket" 2>&1)
	if [ $? -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify tandemd.service tandemd.socket"; else
		not_ok "systemd-analyze verify tandemd.service tandemd.socket"
		printf '%s\n' "$out" | sed 's/^/#   /'
	fi
else
	skip "systemd-analyze verify tandemd.service tandemd.socket" "systemd-analyze absent (apt-get install systemd)"
fi
if command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null; then
	sroot="$tmp/sysroot"
	mkdir -p "$sroot/etc"
	: >"$sroot/etc/passwd"
	: >"$sroot/etc/group"
	systemd-sysusers --root="$sroot" "$dest$prefix/lib/sysusers.d/tandem.conf" >/dev/null 2>&1
	systemd-tmpfiles --root="$sroot" --create "$dest$prefix/lib/tmpfiles.d/tandem.conf" >/dev/null 2>&1
	if grep -q '^tandem:x:[0-9]*:$' "$sroot/etc/group" &&
		[ "$(stat -c %a "$sroot/var/lib/tandem" 2>/dev/null)" = 700 ] &&
		[ "$(stat -c %a "$sroot/run/tandem" 2>/dev/null)" = 755 ]; then
		ok "sysusers.d makes the group tandem; tmpfiles.d /run/tandem 0755, /var/lib/tandem 0700"
	else
		not_ok "sysusers.d / tmpfiles.d snippets"
	fi
else
	skip "sysusers.d / tmpfiles.d snippets" "systemd-sysusers or systemd-tmpfiles absent"
fi
# For real under systemd, where this machine runs it (PID 1) and lets us
# start units: Type=notify reaches "active" only after READY=1, and the
# status line comes from STATUS=.
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null && [ "$(id -u)" -eq 0 ]; then
	u="tandem-install-test-$$"
	if systemd-run --quiet --unit="$u" -p Type=notify -p NotifyAccess=main -p WatchdogSec=20 \
		-E XDG_STATE_HOME="$tmp/state" \
		"$dest$prefix/sbin/tandemd" --config "$tmp/test.toml" --socket "$tmp/run/unit.sock" &&
		[ "$(systemctl show -p ActiveState --value "$u")" = active ] &&
		systemctl show -p StatusText --value "$u" | grep -q 'clients\?$'; then
		ok "under systemd: active after READY=1, status: $(systemctl show -p StatusText --value "$u")"
	else
		not_ok "under systemd (systemd-run -p Type=notify)"
	fi
	systemctl stop "$u" >/dev/null 2>&1
else
	skip "tandemd under systemd" "systemd is not PID 1 here (no /run/systemd/system), or not root"
fi

# ---- a changed configuration survives install and uninstall ----------------------
conf="$dest/etc/tandem/tandemd.toml"
echo '# changed by the operator' >>"$conf"
mk install DESTDIR="$dest" >/dev/null 2>&1
if tail -1 "$conf" | grep -q 'changed by the operator'; then ok "install keeps an existing configuration"; else
	not_ok "install overwrote the configuration"
fi

# ---- uninstall --------------------------------------------------------------------
check "make uninstall DESTDIR=..." mk uninstall DESTDIR="$dest"
if [ -f "$conf" ] && tail -1 "$conf" | grep -q 'changed by the operator'; then
	ok "uninstall keeps a configuration changed since install"
	rm -f "$conf"
	rmdir "$dest/etc/tandem"
else
	not_ok "uninstall removed a changed configuration"
fi
# What is left: no file, no link, no directory of tandem's (empty standard
# directories such as usr/local/bin, which install -d made, may stay).
left=$(find "$dest" ! -type d -o -type d -name '*tandem*' 2>/dev/null)
if [ -z "$left" ]; then ok "make uninstall leaves nothing behind"; else
	not_ok "make uninstall left:"
	printf '%s\n' "$left" | sed 's/^/#   /'
fi
# And an unchanged configuration goes with the rest.
mk install DESTDIR="$dest" >/dev/null 2>&1 && mk uninstall DESTDIR="$dest" >/dev/null 2>&1
left=$(find "$dest" ! -type d -o -type d -name '*tandem*' 2>/dev/null)
if [ -z "$left" ]; then ok "install then uninstall with the shipped configuration leaves nothing"; else
	not_ok "uninstall left:"
	printf '%s\n' "$left" | sed 's/^/#   /'
fi

cd "$src" || exit 1
[ "$failed" -eq 0 ]
