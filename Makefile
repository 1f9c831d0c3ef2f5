# shunt - GNU make build.  `make`, `make test`, `make demo`, `make bench`,
# `make install`, `make deb`.
# SAN=asan or SAN=tsan builds everything instrumented into build-$(SAN)/.
# V=1 shows the commands.

CC      ?= gcc
PREFIX  ?= /usr/local
# `shunt run` looks for the preload library in ../lib from its own binary:
# the libraries go to $(PREFIX)/lib.
LIBDIR  := $(PREFIX)/lib
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/shunt
SAN     ?=
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT     ?= -O2 -g
CFLAGS  ?=
LDFLAGS ?=

ifeq ($(SAN),)
B := build
SANFLAGS :=
else ifeq ($(SAN),asan)
B := build-asan
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else ifeq ($(SAN),tsan)
B := build-tsan
# TSan does not model atomic_thread_fence.  Our only fences order the wait
# words against the ring indices (wake.h); data is synchronised by the
# release/acquire pairs TSan does model, so its warning is not for us.
SANFLAGS := -fsanitize=thread -Wno-tsan
else
$(error SAN must be asan or tsan)
endif

# The layers (docs/design.md): base, core, medium, native API, socket shim.
INC     := -Iinclude -Isrc/base -Isrc/core -Isrc/medium -Isrc/medium/local \
           -Isrc/medium/ivshmem -Isrc/native -Isrc/shim
ALL_CFLAGS := $(CSTD) $(WARN) $(OPT) -fPIC -fvisibility=hidden $(INC) \
              $(SANFLAGS) $(CFLAGS) -MMD -MP
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)

# The version is the header's; the library's soname carries the major.
MAJOR   := $(shell sed -n 's/^\#define SHUNT_VERSION_MAJOR //p' include/shunt.h)
MINOR   := $(shell sed -n 's/^\#define SHUNT_VERSION_MINOR //p' include/shunt.h)
VERSION := $(MAJOR).$(MINOR)
SONAME  := libshunt.so.$(MAJOR)

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC   := $(wildcard src/base/*.c src/core/*.c src/medium/*/*.c src/native/*.c)
LIB_OBJ   := $(LIB_SRC:src/%.c=$(B)/src/%.o)
SHIM_SRC  := $(wildcard src/shim/*.c)
SHIM_OBJ  := $(SHIM_SRC:src/%.c=$(B)/src/%.o)
TOOL_SRC  := $(wildcard tools/*.c)
TOOL_OBJ  := $(TOOL_SRC:tools/%.c=$(B)/tools/%.o)
TEST_SRC  := $(wildcard tests/t_*.c)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(B)/tests/%)
# Script tests drive real programs under the preload library; they run in the
# plain build only (a sanitizer runtime cannot be preloaded into them).
ifeq ($(SAN),)
TEST_SH   := $(patsubst tests/%.sh,$(B)/tests/%,$(wildcard tests/t_*.sh))
endif
TEST_LIB  := $(B)/tests/testlib.o
# Helper programs the script tests run (tests/soak.c: t_soak.sh, make soak;
# tests/diff_shim.c: t_diff_seeds.sh, make diff).
TEST_HELP := $(B)/tests/soak $(B)/tests/diff_shim
EXAMPLES  := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

.PHONY: all lib deps test test-vm demo bench install deb clean fuzz soak diff
# Keep test objects, or make deletes them as intermediates and relinks all.
.SECONDARY: $(TEST_LIB) $(B)/tests/shimlib.o $(TEST_SRC:tests/%.c=$(B)/tests/%.o) $(B)/tests/diff_shim.o \
	$(TEST_HELP:%=%.o)
all: lib $(B)/shunt $(TEST_BIN) $(TEST_SH) $(TEST_HELP) $(EXAMPLES)
lib: $(B)/libshunt.so $(B)/libshunt.a $(B)/libshunt-preload.so

$(B)/src/%.o: src/%.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/tools/%.o: tools/%.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# Examples use only the public API and link the shared library, as users do.
$(B)/examples/%: examples/%.c include/shunt.h $(B)/libshunt.so
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CSTD) $(WARN) $(OPT) -Iinclude $(SANFLAGS) $(CFLAGS) -o $@ $< \
		-L$(B) -lshunt -Wl,-rpath,'$$ORIGIN/..' $(ALL_LDFLAGS) -lpthread

$(B)/libshunt.so: $(LIB_OBJ) src/libshunt.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -o $@ $(LIB_OBJ) -Wl,--version-script=src/libshunt.map \
		-Wl,-z,defs -Wl,-soname,$(SONAME) $(ALL_LDFLAGS)
	$(Q)ln -sf libshunt.so $(B)/$(SONAME)

# The LD_PRELOAD library: the core plus the socket shim, exporting only the
# libc functions it wraps.  The code a forked child runs (SHUNT_FORK_TEXT,
# first in .text) is one fault for the child only within one aligned 64 KiB
# of addresses, the kernel's fault-around: segments aligned to 64 KiB make
# the loader map the library on such a boundary (glibc >= 2.35), and the
# loader's call at exit (DT_FINI) goes to a function there, not to the
# _fini stub at the end of the code (tests/t_layout.sh).
PRELOAD_LAYOUT := -Wl,-z,max-page-size=0x10000 -Wl,-fini=shunt__fini
$(B)/libshunt-preload.so: $(LIB_OBJ) $(SHIM_OBJ) src/shim/preload.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -o $@ $(LIB_OBJ) $(SHIM_OBJ) -Wl,--version-script=src/shim/preload.map \
		-Wl,-z,defs -Wl,-soname,libshunt-preload.so $(PRELOAD_LAYOUT) $(ALL_LDFLAGS) -lpthread

$(B)/libshunt.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/shunt: $(TOOL_OBJ) $(B)/libshunt.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $(TOOL_OBJ) $(B)/libshunt.a $(ALL_LDFLAGS) -lm

# Tests link the static library so they can reach internal (hidden) symbols.
$(B)/tests/t_%: $(B)/tests/t_%.o $(TEST_LIB) $(B)/libshunt.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $< $(TEST_LIB) $(B)/libshunt.a $(ALL_LDFLAGS) -lpthread

$(B)/tests/soak: $(B)/tests/soak.o $(TEST_LIB) $(B)/libshunt.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $< $(TEST_LIB) $(B)/libshunt.a $(ALL_LDFLAGS) -lpthread

# Every t_shim_* test links the shim itself, so that its wrappers run
# instrumented under SAN=asan and SAN=tsan (an executable's symbols come
# first), with the shared harness of tests/shimlib.c (pairs, peers, moving a
# connection to shared memory, one forked process per case).
SHIM_TEST_LIB := $(B)/tests/shimlib.o
$(B)/tests/t_shim_%: $(B)/tests/t_shim_%.o $(TEST_LIB) $(SHIM_TEST_LIB) $(SHIM_OBJ) $(B)/libshunt.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $< $(TEST_LIB) $(SHIM_TEST_LIB) $(SHIM_OBJ) $(B)/libshunt.a $(ALL_LDFLAGS) -lpthread

# The differential tester (tests/diff_shim.c, `make diff`): not in the
# suite, as it still finds differences that are open (tests/README.md);
# t_diff_seeds.sh replays the seeds whose differences were fixed.
$(B)/tests/diff_shim: $(B)/tests/diff_shim.o $(TEST_LIB) $(SHIM_TEST_LIB) $(SHIM_OBJ) $(B)/libshunt.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $< $(TEST_LIB) $(SHIM_TEST_LIB) $(SHIM_OBJ) $(B)/libshunt.a $(ALL_LDFLAGS) -lpthread

diff: lib $(B)/tests/diff_shim
	$(Q)$(B)/tests/diff_shim

$(B)/tests/t_%: tests/t_%.sh
	@mkdir -p $(@D)
	$(Q)install -m 755 $< $@

# `make test` first installs what the tests need (tests/deps.sh: with
# apt-get as root, else it prints the command and stops); NODEPS=1 skips
# that, and the tests that need what is missing are skipped.
deps:
	$(Q)$(if $(filter 1,$(NODEPS)),:,tests/deps.sh)

test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tests/run.sh $(B)

# Every test that boots QEMU guests (the suite runs all but the lab's own
# check, t_vm_lab).
VM_TESTS := $(patsubst tests/%.sh,%,$(wildcard tests/t_vm_*.sh))
test-vm: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tests/run.sh $(B) $(VM_TESTS)

# The fuzzers for longer than the test suite gives them (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 300
fuzz:
	$(Q)SHUNT_FUZZ_SECONDS=$(FUZZ_SECONDS) tests/t_fuzz.sh

# The soak test of tests/t_soak.sh for an hour (SOAK_SECONDS), with its
# summary: connections, bytes, moved, errors, leaks.
SOAK_SECONDS ?= 3600
soak: all
	$(Q)SHUNT_BUILD=$(CURDIR)/$(B) SHUNT_SOAK_SECONDS=$(SOAK_SECONDS) \
		SOAK_WAYS=$${SOAK_WAYS:-epoll,fork,scm,exec,thread} \
		SOAK_KINDS=$${SOAK_KINDS:-blocking,poll,epoll,short} tests/t_soak.sh

# The Quick start demonstration: an ordinary TCP client and server, plain
# and under `shunt run`, side by side.
demo: all
	$(Q)tools/demo.sh $(B)

# The evaluation suite: TCP vs shunt side by side, written up as
# docs/bench/REPORT.md (charts and data beside it; the side-by-side table
# on the terminal too); about 20 minutes.  bench/REPORT.md sums up a run.
# QUICK=1: a subset in about a minute, into $(B)/bench-quick/.
# BENCH_OUT=DIR writes elsewhere; ROUNDS=N runs N rounds per comparison (3).
bench: all
	$(Q)bench/run.sh --build $(B) $(if $(filter 1,$(QUICK)),--quick) $(if $(BENCH_OUT),--out $(BENCH_OUT)) \
		$(if $(ROUNDS),--rounds $(ROUNDS))

# The library as libshunt.so.MAJOR.MINOR with the soname link and the
# development link; the preload library; the CLI; the header, pkg-config's
# file, the manual pages and an example config file.
install: lib $(B)/shunt
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(DOCDIR)/examples
	install -m 755 $(B)/shunt $(DESTDIR)$(PREFIX)/bin/shunt
	install -m 755 $(B)/libshunt.so $(DESTDIR)$(LIBDIR)/libshunt.so.$(VERSION)
	ln -sf libshunt.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libshunt.so
	install -m 755 $(B)/libshunt-preload.so $(DESTDIR)$(LIBDIR)/libshunt-preload.so
	install -m 644 $(B)/libshunt.a $(DESTDIR)$(LIBDIR)/libshunt.a
	install -m 644 include/shunt.h $(DESTDIR)$(PREFIX)/include/shunt.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' src/shunt.pc.in \
		>$(DESTDIR)$(LIBDIR)/pkgconfig/shunt.pc
	install -m 644 examples/shunt.conf examples/echo.c examples/tcpbench.c $(DESTDIR)$(DOCDIR)/examples/
	@for p in man/*.[0-9]; do s=$${p##*.}; \
		install -d $(DESTDIR)$(MANDIR)/man$$s; \
		echo "install -m 644 $$p $(DESTDIR)$(MANDIR)/man$$s/"; \
		install -m 644 $$p $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; done

# A Debian package of `make install PREFIX=/usr`, built with dpkg-deb
# (tools/mkdeb.sh): $(B)/shunt_VERSION_ARCH.deb.
deb: lib $(B)/shunt
	$(Q)tools/mkdeb.sh $(B) $(B)

clean:
	rm -rf build build-asan build-tsan

-include $(wildcard $(B)/*/*.d $(B)/*/*/*.d $(B)/*/*/*/*.d)
