/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader (tq_gguf_open_buffer).
 *
 * Input: a GGUF file image. A rejected file must give a handle of NULL, a
 * file-format status and a message. An accepted one is walked completely:
 * every key with every getter (each must agree with the entry's type), every
 * element of every array with every element accessor, every tensor by index
 * and by name, with the first and last byte of its data read, and every
 * string and data range checked to lie inside the input. Under ASan any read
 * outside the input buffer (libFuzzer's copy is exactly `size` bytes) is a
 * crash.
 *
 * Built with -DTQ_FUZZ_SEEDGEN instead, main(argc, argv) writes a few small
 * valid files with tq_gguf_writer into argv[1]: the seed corpus in
 * fuzz/corpus/gguf/ (next to python_written.gguf, a copy of the test fixture
 * written by gguf-py, which holds a nested array our writer cannot make).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqai_engine.h"

#ifndef TQ_FUZZ_SEEDGEN

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t g_sink;

static void require(int cond) {
  if (!cond) abort();
}

/* p[0..len) lies inside data[0..size); reads its first and last bytes. */
static void touch(const uint8_t *data, size_t size, const void *p, uint64_t len) {
  const uint8_t *b = p;
  require(b != NULL && b >= data && b <= data + size);
  require(len <= (uint64_t)(data + size - b));
  if (len) g_sink ^= b[0] ^ b[len - 1];
}

/* A NUL-terminated copy of s, or NULL if s holds a NUL (then a lookup by C
 * string would find another name). */
static char *c_string(tq_str s) {
  if (memchr(s.data, 0, (size_t)s.len)) return NULL;
  char *c = malloc((size_t)s.len + 1);
  require(c != NULL);
  memcpy(c, s.data, (size_t)s.len);
  c[s.len] = '\0';
  return c;
}

static int is_int_type(tq_gguf_type t) {
  return t == TQ_GGUF_UINT8 || t == TQ_GGUF_INT8 || t == TQ_GGUF_UINT16 || t == TQ_GGUF_INT16 ||
         t == TQ_GGUF_UINT32 || t == TQ_GGUF_INT32 || t == TQ_GGUF_UINT64 || t == TQ_GGUF_INT64;
}

static int is_float_type(tq_gguf_type t) { return t == TQ_GGUF_FLOAT32 || t == TQ_GGUF_FLOAT64; }

/* get_uint / get_int agree with each other and with the type. */
static void check_ints(tq_gguf_type t, tq_status su, uint64_t u, tq_status si, int64_t s) {
  if (!is_int_type(t)) {
    require(su == TQ_ERR_MISMATCH && si == TQ_ERR_MISMATCH);
    return;
  }
  require(su == TQ_OK || si == TQ_OK);
  if (su == TQ_OK && si == TQ_OK) require((uint64_t)s == u && s >= 0);
  if (su != TQ_OK) require(su == TQ_ERR_MISMATCH && s < 0);
  if (si != TQ_OK) require(si == TQ_ERR_MISMATCH && t == TQ_GGUF_UINT64 && u > (uint64_t)INT64_MAX);
}

static void walk_array(const tq_gguf *g, uint64_t i, const uint8_t *data, size_t size) {
  tq_gguf_type et;
  uint64_t count;
  require(tq_gguf_get_array(g, i, &et, &count) == TQ_OK);
  /* Every element takes at least a byte of the input. */
  require(count <= size);
  for (uint64_t j = 0; j <= count; j++) {
    uint64_t u = 0;
    int64_t s = 0;
    double f;
    tq_str str;
    tq_status su = tq_gguf_array_uint(g, i, j, &u);
    tq_status si = tq_gguf_array_int(g, i, j, &s);
    tq_status sf = tq_gguf_array_float(g, i, j, &f);
    tq_status ss = tq_gguf_array_string(g, i, j, &str);
    if (j == count) { /* one past the end */
      require(su != TQ_OK && si != TQ_OK && sf != TQ_OK && ss != TQ_OK);
      break;
    }
    check_ints(et, su, u, si, s);
    require((sf == TQ_OK) == is_float_type(et));
    require((ss == TQ_OK) == (et == TQ_GGUF_STRING));
    if (ss == TQ_OK) touch(data, size, str.data, str.len);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tq_gguf *g = (tq_gguf *)(uintptr_t)1;
  tq_status st = tq_gguf_open_buffer(data, size, &g);
  if (st != TQ_OK) {
    require(g == NULL);
    require(st == TQ_ERR_CORRUPT || st == TQ_ERR_FORMAT_VERSION || st == TQ_ERR_OUT_OF_MEMORY);
    require(tq_gguf_last_error()[0] != '\0');
    return 0;
  }
  require(g != NULL && tq_gguf_last_error()[0] == '\0');
  uint32_t version = tq_gguf_version(g);
  require(version == 2 || version == 3);

  uint64_t n_kv = tq_gguf_n_kv(g);
  require(n_kv <= size);
  for (uint64_t i = 0; i < n_kv; i++) {
    tq_str key = tq_gguf_key(g, i);
    touch(data, size, key.data, key.len);
    char *ck = c_string(key);
    if (ck) require(tq_gguf_find_key(g, ck) == (int64_t)i);
    free(ck);

    tq_gguf_type t = tq_gguf_kv_type(g, i);
    uint64_t u = 0, count;
    int64_t s = 0;
    double f;
    int b;
    tq_str str;
    tq_gguf_type et;
    check_ints(t, tq_gguf_get_uint(g, i, &u), u, tq_gguf_get_int(g, i, &s), s);
    require((tq_gguf_get_float(g, i, &f) == TQ_OK) == is_float_type(t));
    tq_status sb = tq_gguf_get_bool(g, i, &b);
    require((sb == TQ_OK) == (t == TQ_GGUF_BOOL));
    if (sb == TQ_OK) require(b == 0 || b == 1);
    tq_status ss = tq_gguf_get_string(g, i, &str);
    require((ss == TQ_OK) == (t == TQ_GGUF_STRING));
    if (ss == TQ_OK) touch(data, size, str.data, str.len);
    tq_status sa = tq_gguf_get_array(g, i, &et, &count);
    require((sa == TQ_OK) == (t == TQ_GGUF_ARRAY));
    if (sa == TQ_OK) walk_array(g, i, data, size);
  }
  uint64_t u;
  require(tq_gguf_get_uint(g, n_kv, &u) == TQ_ERR_INVALID_ARGUMENT);
  require(tq_gguf_key(g, n_kv).data == NULL);

  uint64_t n_tensors = tq_gguf_n_tensors(g);
  require(n_tensors <= size);
  for (uint64_t i = 0; i < n_tensors; i++) {
    tq_gguf_tensor t, by_name;
    require(tq_gguf_tensor_at(g, i, &t) == TQ_OK);
    touch(data, size, t.name.data, t.name.len);
    require(t.n_dims >= 1 && t.n_dims <= 4);
    uint64_t n = 1;
    for (int d = 0; d < 4; d++) {
      require(d < (int)t.n_dims || t.ne[d] == 1);
      n *= t.ne[d]; /* checked for overflow at open */
    }
    require(n == t.n_elements && t.n_elements <= (uint64_t)INT64_MAX);
    touch(data, size, t.data, t.n_bytes);
    char *cn = c_string(t.name);
    if (cn) {
      require(tq_gguf_find_tensor(g, cn, &by_name) == TQ_OK);
      require(by_name.data == t.data && by_name.n_bytes == t.n_bytes);
    }
    free(cn);
  }
  tq_gguf_tensor none;
  require(tq_gguf_tensor_at(g, n_tensors, &none) == TQ_ERR_INVALID_ARGUMENT);
  tq_gguf_close(g);
  return 0;
}

#else /* TQ_FUZZ_SEEDGEN */

#define CK(expr)                                              \
  do {                                                        \
    if ((expr) != TQ_OK) {                                    \
      fprintf(stderr, "seedgen: %s failed\n", #expr);         \
      exit(1);                                                \
    }                                                         \
  } while (0)

static void add_tensor(tq_gguf_writer *w, const char *name, tq_tensor_type type, uint32_t n_dims,
                       const uint64_t *ne, size_t n_bytes) {
  uint8_t *d = malloc(n_bytes ? n_bytes : 1);
  if (!d) exit(1);
  for (size_t i = 0; i < n_bytes; i++) d[i] = (uint8_t)(i * 13 + 5);
  CK(tq_gguf_writer_add_tensor(w, name, type, n_dims, ne, d, n_bytes));
  free(d);
}

static void write_seed(tq_gguf_writer *w, const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  CK(tq_gguf_writer_write(w, path));
  tq_gguf_writer_free(w);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  tq_gguf_writer *w;

  /* Metadata of every kind the writer makes, no tensors. */
  CK(tq_gguf_writer_create(&w));
  CK(tq_gguf_writer_add_string(w, "general.architecture", "llama"));
  CK(tq_gguf_writer_add_uint32(w, "llama.block_count", 2));
  CK(tq_gguf_writer_add_int32(w, "k.i32", -7));
  CK(tq_gguf_writer_add_uint64(w, "k.u64", 1ull << 40));
  CK(tq_gguf_writer_add_float32(w, "k.f32", 1e-5f));
  CK(tq_gguf_writer_add_bool(w, "k.bool", 1));
  const int8_t i8[3] = {-1, 0, 1};
  const uint16_t u16[2] = {1, 65535};
  const int64_t i64[2] = {-5, 5};
  const double f64[2] = {0.5, -2.0};
  const uint8_t bools[2] = {0, 1};
  CK(tq_gguf_writer_add_array(w, "a.i8", TQ_GGUF_INT8, i8, 3));
  CK(tq_gguf_writer_add_array(w, "a.u16", TQ_GGUF_UINT16, u16, 2));
  CK(tq_gguf_writer_add_array(w, "a.i64", TQ_GGUF_INT64, i64, 2));
  CK(tq_gguf_writer_add_array(w, "a.f64", TQ_GGUF_FLOAT64, f64, 2));
  CK(tq_gguf_writer_add_array(w, "a.bool", TQ_GGUF_BOOL, bools, 2));
  write_seed(w, dir, "metadata.gguf");

  /* A tokenizer-like file: string, score and type arrays, one tensor. */
  CK(tq_gguf_writer_create(&w));
  CK(tq_gguf_writer_add_string(w, "tokenizer.ggml.model", "gpt2"));
  const char *const toks[6] = {"<s>", "</s>", "a", "b", "ab", "\xc4\xa0"};
  const float scores[6] = {0, 0, -1, -2, -3, -4};
  const int32_t types[6] = {3, 3, 1, 1, 1, 1};
  const char *const merges[2] = {"a b", "\xc4\xa0 a"};
  CK(tq_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", toks, 6));
  CK(tq_gguf_writer_add_array(w, "tokenizer.ggml.scores", TQ_GGUF_FLOAT32, scores, 6));
  CK(tq_gguf_writer_add_array(w, "tokenizer.ggml.token_type", TQ_GGUF_INT32, types, 6));
  CK(tq_gguf_writer_add_string_array(w, "tokenizer.ggml.merges", merges, 2));
  CK(tq_gguf_writer_add_uint32(w, "tokenizer.ggml.bos_token_id", 0));
  const uint64_t ne_embd[2] = {8, 6};
  add_tensor(w, "token_embd.weight", TQ_TENSOR_F16, 2, ne_embd, 8 * 6 * 2);
  write_seed(w, dir, "tokenizer.gguf");

  /* Tensors of several types and shapes, alignment 32. */
  CK(tq_gguf_writer_create(&w));
  CK(tq_gguf_writer_add_string(w, "general.architecture", "llama"));
  const uint64_t ne_a[1] = {8}, ne_b[2] = {32, 2}, ne_c[3] = {32, 1, 2}, ne_d[4] = {2, 2, 2, 2};
  const uint64_t ne_e[1] = {256}, ne_f[2] = {0, 3};
  add_tensor(w, "f32", TQ_TENSOR_F32, 1, ne_a, 32);
  add_tensor(w, "q8_0", TQ_TENSOR_Q8_0, 2, ne_b, 2 * 34);
  add_tensor(w, "q4_0", TQ_TENSOR_Q4_0, 3, ne_c, 2 * 18);
  add_tensor(w, "bf16", TQ_TENSOR_BF16, 4, ne_d, 32);
  add_tensor(w, "q4_k", TQ_TENSOR_Q4_K, 1, ne_e, 144);
  add_tensor(w, "q6_k", TQ_TENSOR_Q6_K, 1, ne_e, 210);
  add_tensor(w, "empty", TQ_TENSOR_F32, 2, ne_f, 0);
  write_seed(w, dir, "tensors.gguf");

  /* Custom alignment 64. */
  CK(tq_gguf_writer_create(&w));
  CK(tq_gguf_writer_add_uint32(w, "general.alignment", 64));
  CK(tq_gguf_writer_add_string(w, "general.name", "aligned"));
  add_tensor(w, "a", TQ_TENSOR_F16, 1, ne_a, 16);
  add_tensor(w, "b", TQ_TENSOR_Q8_0, 1, ne_b, 34);
  write_seed(w, dir, "align64.gguf");

  /* Nothing at all. */
  CK(tq_gguf_writer_create(&w));
  write_seed(w, dir, "empty.gguf");
  return 0;
}

#endif
