# tandem — plain Makefile with pkg-config.
#
#   make            build daemon, client library, tools, examples
#   make demo       build, start tandemd on a private socket, run the example
#   make test       unit + integration tests + fuzz corpus replay
#   make bench      benchmarks (BENCH lines)
#   make deps       install the Debian packages the build needs (idempotent)
#   make gpu-bundle build/gpu-bundle.tar.gz for a lent GPU machine (README "On a GPU")
#   make install-python / uninstall-python   python/tandem into site-packages
#   make fuzz       run each fuzz target for FUZZ_SECONDS (clang + libFuzzer)
#   make SANITIZE=address,undefined test    sanitizer flavour (own build dir)
#   make SANITIZE=thread test               TSan flavour

CC := gcc
CXX := g++
SANITIZE ?=
FUZZ_SECONDS ?= 30
comma := ,

ifeq ($(SANITIZE),)
BUILD := build
SANFLAGS :=
else
BUILD := build/san-$(subst $(comma),-,$(SANITIZE))
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

PKGS := hwloc libevent libevent_pthreads jansson openblas tomlplusplus OpenCL clblast
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

OPT ?= -O2
WARN := -Wall -Wextra -Werror
CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -Iinclude -I. -pthread $(SANFLAGS)
CXXFLAGS := -std=c++17 -DNDEBUG $(OPT) -g $(WARN) -Iinclude -I. -pthread $(SANFLAGS)
LDFLAGS := -pthread $(SANFLAGS)

# ---- sources, by room --------------------------------------------------------
CORE_C := $(filter-out daemon/main.c,$(wildcard daemon/*.c)) client/errors.c client/socket_path.c \
	$(wildcard common/*.c) $(wildcard engine/*.c) $(wildcard graph/*.c) $(wildcard sim/*.c) \
	$(wildcard workload/*.c) \
	$(wildcard policies/*.c) $(wildcard placement/*.c) $(wildcard profiler/*.c) \
	$(wildcard backends/*.c) $(wildcard backends/cpu/*.c) $(wildcard backends/opencl/*.c) \
	$(wildcard backends/sim/*.c)
CORE_CXX := $(wildcard common/*.cpp)
CLIENT_C := $(wildcard client/*.c)

CORE_OBJ := $(CORE_C:%.c=$(BUILD)/obj/%.o) $(CORE_CXX:%.cpp=$(BUILD)/obj/%.o)
CLIENT_OBJ := $(CLIENT_C:%.c=$(BUILD)/obj/%.o)
CLIENT_PIC_OBJ := $(CLIENT_C:%.c=$(BUILD)/pic/%.o)

CORE_LIB := $(BUILD)/lib/libtandemd-core.a
CLIENT_LIB := $(BUILD)/lib/libtandem.a
CLIENT_SO := $(BUILD)/lib/libtandem.so
TANDEMD := $(BUILD)/bin/tandemd
TANDEMCTL := $(BUILD)/bin/tandemctl
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/bin/%,$(wildcard examples/*.c))
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(wildcard tests/integration/test_*.c))
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
REPLAYS := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)
BENCHES := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(wildcard tests/bench/bench_*.c))
TEST_HELPERS := $(wildcard tests/integration/support*.c)

# libsystemd: sd_notify for the systemd service (daemon/notify.c).
SYSTEMD_LIBS = $(shell pkg-config --libs libsystemd 2>/dev/null)
DAEMON_LIBS = $(PKG_LIBS) $(SYSTEMD_LIBS) -lglpk -llapacke -lstdc++ -lm -ldl

# The CUDA backend is a plugin, built when nvcc is found and loaded at run
# time, so that the daemon builds and runs where there is no CUDA at all.
# Its C files build like the daemon's (C11, -Werror) against CUDA's C
# headers, its .cu files with nvcc; only tandem_cuda_backend is exported.
ifeq ($(origin NVCC),undefined)
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_SRC := $(wildcard backends/cuda/*.cu) $(wildcard backends/cuda/*.c)
ifneq ($(NVCC),)
ifneq ($(CUDA_SRC),)
CUDA_PLUGIN := $(BUILD)/lib/tandem-cuda.so
endif
endif
CUDA_OBJ := $(CUDA_SRC:%=$(BUILD)/cuda/%.o)
CUDA_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -Iinclude -I. -I$(CUDA_HOME)/include \
	-pthread -fPIC -fvisibility=hidden
NVCCFLAGS := -O2 -std=c++17 -Iinclude -I. -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra \
	--Werror all-warnings \
	-gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80 \
	-gencode arch=compute_90,code=compute_90

.PHONY: all demo demo-run test test-run bench bench-run deps fuzz format format-check check-rooms \
	clean
all: $(TANDEMD) $(TANDEMCTL) $(BUILD)/bin/starpu2machine $(CLIENT_LIB) $(CLIENT_SO) $(EXAMPLES) $(CUDA_PLUGIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -DTDM_BUILD_SHARED -MMD -MP -c $< -o $@

$(CORE_LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(CLIENT_LIB): $(CLIENT_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
# Only tdm_* is exported, each symbol versioned TANDEM_1 or later (client/libtandem.map).
CLIENT_MAP := client/libtandem.map
$(CLIENT_SO): $(CLIENT_PIC_OBJ) $(CLIENT_MAP)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libtandem.so.$(SOVERSION) -Wl,--version-script,$(CLIENT_MAP) \
		$(CLIENT_PIC_OBJ) -o $@

# Sanitizer flavours build the plugin too, but without sanitizers (nvcc).
# cudart is linked statically and cuBLAS found through the rpath, so the
# plugin needs only the driver and cuBLAS at run time.
$(BUILD)/cuda/%.c.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CUDA_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/cuda/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/lib/tandem-cuda.so: $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) -shared $(CUDA_OBJ) -o $@ -Xlinker -rpath,$(CUDA_HOME)/lib64 \
		-Xlinker --exclude-libs,ALL -Xlinker --no-undefined \
		-L$(CUDA_HOME)/lib64 -lcublas -cudart static

$(TANDEMD): $(BUILD)/obj/daemon/main.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) -o $@
$(TANDEMCTL): $(BUILD)/obj/tools/tandemctl.o $(BUILD)/obj/tools/top.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@
# StarPU sampling files to a machine description (docs/machines.md); its
# unit test links the converter's library part.
$(BUILD)/bin/starpu2machine: $(BUILD)/obj/tools/starpu2machine.o $(BUILD)/obj/tools/starpu_perfmodel.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) -o $@
$(BUILD)/tests/test_starpu2machine: $(BUILD)/obj/tests/unit/test_starpu2machine.o $(BUILD)/obj/tools/starpu_perfmodel.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) $(CMOCKA_LIBS) -o $@
$(BUILD)/bin/%: $(BUILD)/obj/examples/%.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -lm -o $@
# llm_serve reads its trace with the workload room's reader
# (workload/llm_trace.h): that file and the readers' input helpers, none of
# the daemon's core.
$(BUILD)/bin/llm_serve: $(BUILD)/obj/examples/llm_serve.o $(BUILD)/obj/workload/wl_llm.o \
		$(BUILD)/obj/workload/wl_io.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -lm -o $@

# Unit tests see the daemon's insides; integration tests only libtandem.
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) $(CMOCKA_LIBS) -o $@
# Fake CUDA plugins for test_cuda_loader (the loader's checks, CUDA or not):
# one of this backend ABI version, one of the next. Without sanitizers, as
# the real plugin.
FAKE_PLUGINS := $(BUILD)/tests/fake-cuda-ok.so $(BUILD)/tests/fake-cuda-abi.so
$(BUILD)/tests/fake-cuda-ok.so: tests/unit/fake_cuda_plugin.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude -I. -fPIC -fvisibility=hidden -shared \
		-MMD -MP -MF $(@:.so=.d) $< -o $@
$(BUILD)/tests/fake-cuda-abi.so: tests/unit/fake_cuda_plugin.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude -I. -fPIC -fvisibility=hidden -shared \
		-DFAKE_ABI_SKEW=1 -MMD -MP -MF $(@:.so=.d) $< -o $@
$(BUILD)/tests/test_cuda_loader: | $(FAKE_PLUGINS)
# Integration tests that also read what the daemon writes (traces, machine
# descriptions) link the daemon core as well. A static pattern rule wins.
CORE_INTEG := $(BUILD)/tests/test_trace_record
$(CORE_INTEG): $(BUILD)/tests/%: $(BUILD)/obj/tests/integration/%.o $(TEST_HELPERS:%.c=$(BUILD)/obj/%.o) $(CLIENT_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) $(CMOCKA_LIBS) -o $@
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/integration/test_%.o $(TEST_HELPERS:%.c=$(BUILD)/obj/%.o) $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(CMOCKA_LIBS) $(PKG_LIBS) -lm -o $@
$(BUILD)/tests/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay_main.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) -o $@
# bench_devices and bench_overlap drive the backends and the engine directly,
# without a daemon: they link the daemon core. A static pattern rule, so it
# wins over the pattern below.
CORE_BENCHES := $(BUILD)/bench/bench_devices $(BUILD)/bench/bench_overlap $(BUILD)/bench/bench_models \
	$(BUILD)/bench/bench_stg $(BUILD)/bench/bench_policies $(BUILD)/bench/bench_sim \
	$(BUILD)/bench/bench_intake $(BUILD)/bench/bench_plan_exec $(BUILD)/bench/bench_llm_sim
CORE_BENCHES += $(BUILD)/bench/bench_attn_varlen
CORE_BENCHES += $(BUILD)/bench/bench_kv_waste
CORE_BENCHES += $(BUILD)/bench/bench_llm_policy
CORE_BENCHES += $(BUILD)/bench/bench_moe_sim
CORE_BENCHES += $(BUILD)/bench/bench_elastic_sim
CORE_BENCHES += $(BUILD)/bench/bench_moe_routed
CORE_BENCHES += $(BUILD)/bench/bench_launch
# moe_direct: llm_layer's step with the CPU kernels called directly, the
# baseline tests/bench/moe_layer.sh runs (a tool of that script, not run alone).
BENCH_TOOLS := $(BUILD)/bench/moe_direct
$(CORE_BENCHES) $(BENCH_TOOLS): $(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(DAEMON_LIBS) -o $@
# bench_elastic starts tandemd and changes its devices with the integration
# tests' helpers (tests/integration/support*.c). A static pattern rule wins.
CLIENT_HELPER_BENCHES := $(BUILD)/bench/bench_elastic
$(CLIENT_HELPER_BENCHES): $(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(TEST_HELPERS:%.c=$(BUILD)/obj/%.o) $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -lm -o $@
$(BUILD)/bench/bench_%: $(BUILD)/obj/tests/bench/bench_%.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(CLIENT_LIB) $(PKG_LIBS) $(shell pkg-config --libs starpu-1.3 2>/dev/null) -lm -o $@
$(BUILD)/obj/tests/bench/%.o: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(shell pkg-config --cflags starpu-1.3 2>/dev/null) -MMD -MP -c $< -o $@

# test, demo and bench install missing packages first, then build and run.
test: deps
	@$(MAKE) --no-print-directory test-run
test-run: all $(UNIT_TESTS) $(INTEG_TESTS) $(REPLAYS) $(FAKE_PLUGINS) check-rooms
	@BUILD=$(BUILD) sh tests/run_tests.sh $(UNIT_TESTS) $(INTEG_TESTS) $(REPLAYS) $(SHELL_TESTS)

demo: deps
	@$(MAKE) --no-print-directory demo-run
demo-run: all
	@BUILD=$(BUILD) sh examples/demo.sh

bench: deps
	@$(MAKE) --no-print-directory bench-run
# kill_probe.sh runs test_kill's 1000 kills under ASan too: that flavour's
# daemon and test, built by a plain `make bench`.
ifeq ($(SANITIZE),)
KILL_PROBE_ASAN := kill-probe-asan
endif
bench-run: all $(BENCHES) $(BENCH_TOOLS) $(INTEG_TESTS) $(KILL_PROBE_ASAN)
	@BUILD=$(BUILD) sh tests/bench/run_bench.sh $(BENCHES) tests/bench/sim_fidelity.sh \
		tests/bench/dos_probe.sh tests/bench/kill_probe.sh tests/bench/llm_serve.sh \
		tests/bench/moe_layer.sh
.PHONY: kill-probe-asan
kill-probe-asan:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined all \
		build/san-address-undefined/tests/test_kill

deps:
	@sh .ci/deps.sh

# Coverage-guided fuzzing with clang's libFuzzer, each target for FUZZ_SECONDS.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -Iinclude -I. -pthread -fsanitize=fuzzer,address,undefined \
	-fsanitize-link-c++-runtime
fuzz: $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
	@for n in $(FUZZ_NAMES); do \
	  mkdir -p build/fuzz/work-$$n && \
	  build/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	    build/fuzz/work-$$n tests/fuzz/corpus/$$n || exit 1; done
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(CORE_C) $(CORE_CXX)
	@mkdir -p build/fuzz/obj
	@for f in $(CORE_CXX); do clang++ -std=c++17 -DNDEBUG -O1 -g -Iinclude -I. -fsanitize=fuzzer-no-link,address,undefined $(PKG_CFLAGS) -c $$f -o build/fuzz/obj/$$(basename $$f).o || exit 1; done
	clang $(FUZZ_CFLAGS) $(PKG_CFLAGS) $< $(CORE_C) build/fuzz/obj/*.o $(DAEMON_LIBS) -o $@

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cpp')
format-check: check-rooms
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h' '*.cpp')

# Every #include points to the same room or one below it (tools/check_rooms.sh).
check-rooms:
	@sh tools/check_rooms.sh

clean:
	rm -rf build

# ---- install, uninstall (issue 17) -------------------------------------------
#   make install [PREFIX=/usr/local] [DESTDIR=]     make uninstall (same variables)
# Everything below a prefix goes under $(DESTDIR)$(PREFIX); the unit files
# under SYSTEMDUNITDIR, the configuration under $(SYSCONFDIR)/tandem, whose
# tandemd.toml is never overwritten and is removed by uninstall only while
# it is the one install put there (unchanged). INSTALL_EXTRA and
# UNINSTALL_EXTRA name more targets that install and uninstall run (other
# parts, such as the Python binding). tandemd finds the CUDA plugin in
# ../lib/tandem relative to its own directory (SBINDIR): with a LIBDIR that
# is not $(PREFIX)/lib, set cuda.plugin in the configuration.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
INSTALL_EXTRA ?= install-python
UNINSTALL_EXTRA ?= uninstall-python
INSTALL ?= install

# The version, defined once in include/tandem/version.h.
version_field = $(shell sed -n 's/^\#define $(1) "*\([0-9.]*\)"*$$/\1/p' include/tandem/version.h)
VERSION := $(call version_field,TDM_VERSION_STRING)
SOVERSION := $(call version_field,TDM_SOVERSION)
# libtandem.so -> libtandem.so.$(SOVERSION) (the soname) -> the real file.
LIBTANDEM_REAL := libtandem.so.$(SOVERSION).$(VERSION)

MAN_PAGES := docs/man/tandemd.8 docs/man/tandemctl.1 docs/man/tandem.toml.5 docs/man/libtandem.3
HEADERS := include/tandem.h $(wildcard include/tandem/*.h)
MACHINES := $(wildcard machines/*.toml)
# Files made from dist/*.in with the install's paths: they change with them.
DIST_SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@SBINDIR@|$(SBINDIR)|g' \
	-e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@VERSION@|$(VERSION)|g'
DIST_DIR := $(BUILD)/dist
DIST_GEN := $(DIST_DIR)/tandem.pc $(DIST_DIR)/tandemd.service
$(DIST_DIR)/%: dist/%.in FORCE
	@mkdir -p $(dir $@)
	$(DIST_SUBST) $< >$@.tmp && mv $@.tmp $@

# Every file install puts, below $(DESTDIR) (the configuration apart).
INSTALLED := $(SBINDIR)/tandemd $(BINDIR)/tandemctl $(BINDIR)/starpu2machine \
	$(LIBDIR)/$(LIBTANDEM_REAL) $(LIBDIR)/libtandem.so.$(SOVERSION) $(LIBDIR)/libtandem.so \
	$(LIBDIR)/libtandem.a $(PKGCONFIGDIR)/tandem.pc \
	$(HEADERS:include/%=$(INCLUDEDIR)/%) $(MACHINES:%=$(DATADIR)/tandem/%) \
	$(foreach m,$(MAN_PAGES),$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m))) \
	$(SYSTEMDUNITDIR)/tandemd.service $(SYSTEMDUNITDIR)/tandemd.socket \
	$(SYSUSERSDIR)/tandem.conf $(TMPFILESDIR)/tandem.conf $(LIBDIR)/tandem/tandem-cuda.so
# Directories of tandem's own, removed by uninstall when empty (deepest first).
INSTALLED_DIRS := $(DATADIR)/tandem/machines $(DATADIR)/tandem $(INCLUDEDIR)/tandem $(LIBDIR)/tandem

# make test runs it: install into a DESTDIR, build and run a client against it.
SHELL_TESTS += tests/integration/install.sh

.PHONY: install install-files uninstall uninstall-files FORCE
install: install-files $(INSTALL_EXTRA)
uninstall: uninstall-files $(UNINSTALL_EXTRA)

install-files: $(TANDEMD) $(TANDEMCTL) $(BUILD)/bin/starpu2machine $(CLIENT_LIB) $(CLIENT_SO) \
		$(CUDA_PLUGIN) $(DIST_GEN)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(INCLUDEDIR)/tandem \
		$(DESTDIR)$(DATADIR)/tandem/machines $(DESTDIR)$(SYSTEMDUNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)/tandem \
		$(foreach m,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m))))
	$(INSTALL) -m 755 $(TANDEMD) $(DESTDIR)$(SBINDIR)/tandemd
	$(INSTALL) -m 755 $(TANDEMCTL) $(BUILD)/bin/starpu2machine $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 755 $(CLIENT_SO) $(DESTDIR)$(LIBDIR)/$(LIBTANDEM_REAL)
	ln -sf $(LIBTANDEM_REAL) $(DESTDIR)$(LIBDIR)/libtandem.so.$(SOVERSION)
	ln -sf libtandem.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libtandem.so
	$(INSTALL) -m 644 $(CLIENT_LIB) $(DESTDIR)$(LIBDIR)/libtandem.a
	$(INSTALL) -m 644 $(DIST_DIR)/tandem.pc $(DESTDIR)$(PKGCONFIGDIR)/tandem.pc
	$(INSTALL) -m 644 include/tandem.h $(DESTDIR)$(INCLUDEDIR)/tandem.h
	$(INSTALL) -m 644 $(wildcard include/tandem/*.h) $(DESTDIR)$(INCLUDEDIR)/tandem/
	$(INSTALL) -m 644 $(MACHINES) $(DESTDIR)$(DATADIR)/tandem/machines/
	$(foreach m,$(MAN_PAGES),$(INSTALL) -m 644 $(m) \
		$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/ &&) true
	$(INSTALL) -m 644 $(DIST_DIR)/tandemd.service $(DESTDIR)$(SYSTEMDUNITDIR)/tandemd.service
	$(INSTALL) -m 644 dist/tandemd.socket $(DESTDIR)$(SYSTEMDUNITDIR)/tandemd.socket
	$(INSTALL) -m 644 dist/tandem.sysusers $(DESTDIR)$(SYSUSERSDIR)/tandem.conf
	$(INSTALL) -m 644 dist/tandem.tmpfiles $(DESTDIR)$(TMPFILESDIR)/tandem.conf
ifneq ($(CUDA_PLUGIN),)
	$(INSTALL) -d $(DESTDIR)$(LIBDIR)/tandem
	$(INSTALL) -m 755 $(CUDA_PLUGIN) $(DESTDIR)$(LIBDIR)/tandem/tandem-cuda.so
endif
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/tandem/tandemd.toml ]; then \
	  echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/tandem/tandemd.toml (dist/tandemd.toml is the one shipped)"; \
	else \
	  $(INSTALL) -m 644 dist/tandemd.toml $(DESTDIR)$(SYSCONFDIR)/tandem/tandemd.toml; \
	fi

uninstall-files:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	@conf=$(DESTDIR)$(SYSCONFDIR)/tandem/tandemd.toml; \
	if [ -e $$conf ] && ! cmp -s $$conf dist/tandemd.toml; then \
	  echo "uninstall: keeping $$conf: changed since install"; else rm -f $$conf; fi
	@for d in $(addprefix $(DESTDIR),$(INSTALLED_DIRS) $(SYSCONFDIR)/tandem); do \
	  rmdir $$d 2>/dev/null || true; done

# ---- Python binding and GPU check bundle (issue 17 items 5 and 7) -----------
# install-python / uninstall-python: the tandem package (python/tandem) into
# the site-packages of PREFIX that Debian's python3 reads: /usr ->
# /usr/lib/python3/dist-packages, another prefix -> PREFIX/lib/python3.X/
# dist-packages (PYTHON_SITE overrides). It loads libtandem.so.1 at import.
PYTHON ?= /usr/bin/python3
PYTHON_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTHON_SITE ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$(PREFIX)/lib/python$(PYTHON_VERSION)/dist-packages)
.PHONY: install-python uninstall-python gpu-bundle
install-python:
	install -d $(DESTDIR)$(PYTHON_SITE)/tandem
	install -m 0644 python/tandem/*.py $(DESTDIR)$(PYTHON_SITE)/tandem/
uninstall-python:
	rm -rf $(DESTDIR)$(PYTHON_SITE)/tandem

# gpu-bundle: build/gpu-bundle.tar.gz, what a lent GPU machine (CUDA, none of
# our other libraries) needs to run tools/run-gpu-check.sh (README "On a
# GPU"): these binaries of the plain build, with the CUDA plugin, and the
# libraries they need from Debian's packages (tools/gpu_bundle.sh).
GPU_BUNDLE := build/gpu-bundle.tar.gz
GPU_BUNDLE_FILES := $(addprefix build/bin/,tandemd tandemctl llm_layer blocked_gemm cholesky) \
	build/lib/libtandem.so build/lib/tandem-cuda.so \
	$(addprefix build/tests/,test_cuda_loader test_backend_kernels test_calibrate test_llm_layer \
	  test_devices test_graphs test_runtime_bounds test_models fake-cuda-ok.so fake-cuda-abi.so) \
	$(addprefix build/bench/,bench_devices bench_overlap bench_models)
GPU_BUNDLE_FILES += build/tests/test_attn_varlen build/tests/test_attn_varlen_daemon \
	build/bench/bench_attn_varlen
GPU_BUNDLE_FILES += build/bench/bench_moe_routed build/bench/bench_launch
gpu-bundle: $(if $(SANITIZE),,$(GPU_BUNDLE_FILES))
	@$(if $(SANITIZE),echo "gpu-bundle: from the plain build only (no SANITIZE)" >&2; exit 1)
	@BUILD=build sh tools/gpu_bundle.sh $(GPU_BUNDLE) $(GPU_BUNDLE_FILES)

# Keep intermediate objects: they are reused by several binaries.
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
