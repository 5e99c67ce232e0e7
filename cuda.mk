# cuda.mk - libtqai_cuda (kernels in src/cuda/), its test and its benchmark.
# Included from the Makefile. Built only when nvcc is on the PATH (or NVCC is
# set) and not in sanitizer builds (SAN=1): there tests/test_cuda.c is built
# by the generic test rule without CUDA and reports itself skipped.
#   make cuda              build/libtqai_cuda.a, build/tests/test_cuda,
#                          build/bench/bench_cuda_attn
#   CUDA_GENCODE=...       other targets (default sm_90 code + compute_90 PTX)

NVCC ?= $(shell command -v nvcc 2>/dev/null)

ifneq ($(strip $(NVCC)),)
ifneq ($(SAN),1)

CUDA_GENCODE ?= -gencode=arch=compute_90,code=[sm_90,compute_90]
# Host code: the project's warnings as errors; device code: nvcc's warnings as
# errors. -ffp-contract=off keeps host float code as the C files compile it.
NVCC_HOST_FLAGS := -Wall,-Wextra,-Werror,-Wshadow,-fPIC,-fvisibility=hidden,-ffp-contract=off
NVCCFLAGS_ALL := -std=c++17 -O3 -g $(CUDA_GENCODE) -Xcompiler $(NVCC_HOST_FLAGS) \
                 -Werror all-warnings -Iinclude -Isrc $(NVCCFLAGS)

CUDA_SRC := $(wildcard src/cuda/*.cu)
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.o,$(CUDA_SRC))
CUDA_LIB := $(BUILD)/libtqai_cuda.a
CUDA_TEST := $(BUILD)/tests/test_cuda
CUDA_BENCH := $(BUILD)/bench/bench_cuda_attn

.PHONY: cuda
cuda: $(CUDA_LIB) $(CUDA_TEST) $(CUDA_BENCH)

# The encoder must not fuse multiply-adds (bytes identical to the CPU codec).
$(BUILD)/obj/src/cuda/encode.o: NVCC_EXTRA := --fmad=false

$(BUILD)/obj/src/cuda/%.o: src/cuda/%.cu src/cuda/cuda_internal.h include/tqai_cuda.h include/tqai.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS_ALL) $(NVCC_EXTRA) -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# Overrides the generic test rule for this one program: compiled as C with
# TQ_HAVE_CUDA, linked by nvcc (static CUDA runtime), no engine library.
$(CUDA_TEST): tests/test_cuda.c tests/test.h include/tqai_cuda.h $(CUDA_LIB) $(STATIC)
	@mkdir -p $(dir $@) $(BUILD)/obj/tests
	$(CC) $(CFLAGS_ALL) -DTQ_HAVE_CUDA -Itests -c $< -o $(BUILD)/obj/tests/test_cuda.o
	$(NVCC) $(CUDA_GENCODE) -o $@ $(BUILD)/obj/tests/test_cuda.o $(CUDA_LIB) $(STATIC) -lm -lpthread

$(CUDA_BENCH): bench/cuda/bench_cuda_attn.cu include/tqai_cuda.h $(CUDA_LIB) $(STATIC)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS_ALL) -o $@ $< $(CUDA_LIB) $(STATIC) -lm -lpthread

endif
endif
