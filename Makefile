# Makefile for tqai: libtqai (static and shared), the tqai tool, tests and
# benchmarks. GNU make. `make`, `make test`, `make test SAN=1` (AddressSanitizer
# and UndefinedBehaviorSanitizer), `make bench`, `make install PREFIX=...`.

VERSION_MAJOR := 0
VERSION := 0.1.0

SAN ?=
ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
BUILD ?= build
SANFLAGS :=
endif

CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
OPT ?= -O2

# -ffp-contract=off: the reference kernels and the rotation builder must not
# fuse multiply-adds, or encoded bytes would depend on the compiler.
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wvla -Wformat=2
CFLAGS_ALL := -std=c11 $(OPT) -g $(WARN) -ffp-contract=off \
              -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc $(SANFLAGS) $(CFLAGS)
LIBCFLAGS := $(CFLAGS_ALL) -fPIC -fvisibility=hidden
LDLIBS := -lm -lpthread

ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
SIMD_DEFS := -DTQ_HAVE_AVX2 -DTQ_HAVE_AVX512
AVX2_FLAGS := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c
else
SIMD_DEFS :=
endif

CORE_DIRS := src/core src/codec src/cache src/attn
LIB_SRC := $(foreach d,$(CORE_DIRS),$(wildcard $(d)/*.c))
LIB_SRC := $(filter-out %_avx2.c %_avx512.c,$(LIB_SRC))
ifeq ($(ARCH),x86_64)
LIB_SRC += $(foreach d,$(CORE_DIRS),$(wildcard $(d)/*_avx2.c) $(wildcard $(d)/*_avx512.c))
endif
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))

# The model engine is a library of its own: it needs PCRE2 (tokenizer
# pre-splitting), which the core library must not depend on.
ENGINE_SRC := $(wildcard src/engine/*.c)
ENGINE_SRC := $(filter-out %_avx2.c %_avx512.c,$(ENGINE_SRC))
ifeq ($(ARCH),x86_64)
ENGINE_SRC += $(wildcard src/engine/*_avx2.c) $(wildcard src/engine/*_avx512.c)
endif
ENGINE_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(ENGINE_SRC))
ENGINE_LIBS := -lpcre2-8

TOOL_SRC := $(wildcard tools/tqai/*.c)
TOOL_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(TOOL_SRC))

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

STATIC := $(BUILD)/libtqai.a
ENGINE := $(BUILD)/libtqai_engine.a
SHARED := $(BUILD)/libtqai.so.$(VERSION)
SONAME := libtqai.so.$(VERSION_MAJOR)

.PHONY: all lib tool tests test bench install uninstall clean
all: lib tool

lib: $(STATIC) $(SHARED) $(ENGINE)
tool: $(BUILD)/tqai
tests: $(TEST_BIN)

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(LIBCFLAGS) $(SIMD_DEFS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(LIBCFLAGS) $(SIMD_DEFS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LIBCFLAGS) $(SIMD_DEFS) -MMD -MP -c $< -o $@

$(BUILD)/obj/tools/%.o: tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(SIMD_DEFS) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(ENGINE): $(ENGINE_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(SANFLAGS) -o $@ $^ $(LDLIBS)
	ln -sf libtqai.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libtqai.so

$(BUILD)/tqai: $(TOOL_OBJ) $(ENGINE) $(STATIC)
	$(CC) $(CFLAGS_ALL) -o $@ $(TOOL_OBJ) $(ENGINE) $(STATIC) $(ENGINE_LIBS) -ljson-c $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(ENGINE) $(STATIC)
	@mkdir -p $(dir $@)
	@mkdir -p $(BUILD)/obj/tests
	$(CC) $(CFLAGS_ALL) $(SIMD_DEFS) -Itests -MMD -MP -MF $(BUILD)/obj/tests/$*.d -o $@ $< \
	  $(ENGINE) $(STATIC) $(ENGINE_LIBS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(ENGINE) $(STATIC)
	@mkdir -p $(dir $@)
	@mkdir -p $(BUILD)/obj/bench
	$(CC) $(CFLAGS_ALL) $(SIMD_DEFS) -MMD -MP -MF $(BUILD)/obj/bench/$*.d -o $@ $< \
	  $(ENGINE) $(STATIC) $(ENGINE_LIBS) $(LDLIBS)

# Runs every test program, then the tool's own checks; the last line is the
# total "N passed, N failed".
test: $(TEST_BIN) $(BUILD)/tqai
	@sh tests/run.sh $(BUILD)

bench: $(BENCH_BIN)
	@for b in $(BENCH_BIN); do $$b || exit 1; done

install: lib tool
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/tqai.h include/tqai_engine.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(ENGINE) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libtqai.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libtqai.so
	install -m 755 $(BUILD)/tqai $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(PREFIX)/share/tqai
	install -m 644 models/tqai-tiny.gguf $(DESTDIR)$(PREFIX)/share/tqai/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    tqai.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/tqai.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/tqai.h $(DESTDIR)$(INCLUDEDIR)/tqai_engine.h \
	      $(DESTDIR)$(LIBDIR)/libtqai.a $(DESTDIR)$(LIBDIR)/libtqai_engine.a \
	      $(DESTDIR)$(LIBDIR)/libtqai.so* $(DESTDIR)$(LIBDIR)/pkgconfig/tqai.pc \
	      $(DESTDIR)$(BINDIR)/tqai $(DESTDIR)$(PREFIX)/share/tqai/tqai-tiny.gguf
	-rmdir $(DESTDIR)$(PREFIX)/share/tqai 2>/dev/null

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Regenerates the built-in codebook tables from the solver.
$(BUILD)/gen_codebooks: tools/gen_codebooks.c $(STATIC)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(STATIC) $(LDLIBS)

.PHONY: codebooks
codebooks: $(BUILD)/gen_codebooks
	$(BUILD)/gen_codebooks > src/codec/codebook_tables.c.new
	mv src/codec/codebook_tables.c.new src/codec/codebook_tables.c

# ---------------------------------------------------------------------------
# Fuzzing (clang with libFuzzer; see fuzz/README.md).
#   make fuzz        builds $(FUZZ_BUILD)/fuzz_NAME for every fuzz/fuzz_NAME.c,
#                    the library sources compiled in with ASan + UBSan
#   make fuzz-run    runs each for FUZZ_SECONDS seconds (default 30) from the
#                    seeds in fuzz/corpus/NAME/; new inputs go to
#                    $(FUZZ_BUILD)/corpus/NAME/, crashes to $(FUZZ_BUILD)/
#   make fuzz-seeds  regenerates fuzz/corpus/NAME/ (each fuzzer built with
#                    -DTQ_FUZZ_SEEDGEN has a main(argc, argv) that writes them)
FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 30
FUZZ_FLAGS ?=
FUZZ_CFLAGS := -std=c11 -O1 -g $(WARN) -ffp-contract=off -D_POSIX_C_SOURCE=200809L \
               -Iinclude -Isrc -fsanitize=address,undefined -fno-sanitize-recover=all \
               -fno-omit-frame-pointer $(CFLAGS)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRC))
FUZZ_SEEDGEN := $(patsubst fuzz/fuzz_%.c,$(FUZZ_BUILD)/seedgen_%,$(FUZZ_SRC))
# The fuzz targets are parsers: they are built from the portable sources only
# (scalar kernels, no TQ_HAVE_AVX*), which also keeps clang's sanitizer build
# of the large SIMD files out of the way.
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(filter-out %_avx2.c %_avx512.c,$(LIB_SRC)))

.PHONY: fuzz fuzz-run fuzz-seeds fuzz-clean
fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/obj/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIB_OBJ)
	@mkdir -p $(FUZZ_BUILD)/obj/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP \
	  -MF $(FUZZ_BUILD)/obj/fuzz/fuzz_$*.d -o $@ $< $(FUZZ_LIB_OBJ) $(LDLIBS)

$(FUZZ_BUILD)/seedgen_%: fuzz/fuzz_%.c $(FUZZ_LIB_OBJ)
	@mkdir -p $(FUZZ_BUILD)/obj/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DTQ_FUZZ_SEEDGEN -MMD -MP \
	  -MF $(FUZZ_BUILD)/obj/fuzz/seedgen_$*.d -o $@ $< $(FUZZ_LIB_OBJ) $(LDLIBS)

# fuzz_gguf: the GGUF reader is engine code, which the generic rules above do
# not link; the fuzzer and its seed generator take only its object (no PCRE2).
FUZZ_GGUF_OBJ := $(FUZZ_BUILD)/obj/src/engine/gguf.o

$(FUZZ_BUILD)/fuzz_gguf: fuzz/fuzz_gguf.c $(FUZZ_GGUF_OBJ)
	@mkdir -p $(FUZZ_BUILD)/obj/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP \
	  -MF $(FUZZ_BUILD)/obj/fuzz/fuzz_gguf.d -o $@ $< $(FUZZ_GGUF_OBJ) $(LDLIBS)

$(FUZZ_BUILD)/seedgen_gguf: fuzz/fuzz_gguf.c $(FUZZ_GGUF_OBJ)
	@mkdir -p $(FUZZ_BUILD)/obj/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DTQ_FUZZ_SEEDGEN -MMD -MP \
	  -MF $(FUZZ_BUILD)/obj/fuzz/seedgen_gguf.d -o $@ $< $(FUZZ_GGUF_OBJ) $(LDLIBS)

# fuzz_tokenizer: the tokenizer is engine code and needs PCRE2; the fuzzer
# takes the engine's and the core library's objects, its seed generator none.
FUZZ_ENGINE_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(filter-out %_avx2.c %_avx512.c,$(ENGINE_SRC)))

$(FUZZ_BUILD)/fuzz_tokenizer: fuzz/fuzz_tokenizer.c $(FUZZ_ENGINE_OBJ) $(FUZZ_LIB_OBJ)
	@mkdir -p $(FUZZ_BUILD)/obj/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP \
	  -MF $(FUZZ_BUILD)/obj/fuzz/fuzz_tokenizer.d -o $@ $< $(FUZZ_ENGINE_OBJ) $(FUZZ_LIB_OBJ) \
	  $(ENGINE_LIBS) $(LDLIBS)

$(FUZZ_BUILD)/seedgen_tokenizer: fuzz/fuzz_tokenizer.c
	@mkdir -p $(FUZZ_BUILD)/obj/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DTQ_FUZZ_SEEDGEN -MMD -MP \
	  -MF $(FUZZ_BUILD)/obj/fuzz/seedgen_tokenizer.d -o $@ $<

fuzz-run: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	  name=$${f##*/fuzz_}; \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$name fuzz/corpus/$$name; \
	  echo "== $$f: $(FUZZ_SECONDS) s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_BUILD)/ $(FUZZ_FLAGS) \
	      $(FUZZ_BUILD)/corpus/$$name fuzz/corpus/$$name || exit 1; \
	done

fuzz-seeds: $(FUZZ_SEEDGEN)
	@for g in $(FUZZ_SEEDGEN); do \
	  name=$${g##*/seedgen_}; \
	  mkdir -p fuzz/corpus/$$name && $$g fuzz/corpus/$$name || exit 1; \
	done

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# CUDA kernels, test and benchmark (only where nvcc exists).
-include cuda.mk
