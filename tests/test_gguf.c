/*
 * test_gguf.c - the GGUF reader and writer: round trips through the writer
 * (every metadata type, arrays of every element type, tensors of several
 * types and shapes, custom alignment), a file written by the reference
 * Python writer (tests/data/gguf/python_written.gguf, made by
 * tools/fixtures/make_gguf_fixture.py), files built byte by byte here, and
 * every way a file can be malformed (each must fail with the right status
 * and a message, without reading outside the buffer: the buffers are
 * exactly as long as the file so AddressSanitizer sees any over-read).
 *
 * TQ_TEST_VERBOSE=1 prints each rejected file's message; TQ_TEST_KEEP=1
 * keeps the temporary directory (to check its files with gguf-py).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqai_engine.h"
#include "test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static char g_dir[512];
static char g_argv0_dir[512];
static int g_verbose = 0;

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static uint8_t *read_file(const char *path, size_t *n) {
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 12, len = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (len == cap) buf = realloc(buf, cap *= 2);
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  fclose(f);
  *n = len;
  return buf;
}

/* Entries of directory `dir` other than . and .. */
static int dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static int str_is(tq_str s, const char *want) {
  size_t n = strlen(want);
  return s.len == n && (n == 0 || (s.data && memcmp(s.data, want, n) == 0));
}

static float ld_f32(const void *p) {
  float f;
  memcpy(&f, p, sizeof f);
  return f;
}

static uint16_t ld_u16(const void *p) {
  const uint8_t *b = p;
  return (uint16_t)(b[0] | b[1] << 8);
}

/* Opens a copy of data[0..n) in a buffer of exactly n bytes. */
static tq_status open_copy(const uint8_t *data, size_t n, tq_gguf **g, uint8_t **copy) {
  *copy = malloc(n ? n : 1);
  if (n) memcpy(*copy, data, n);
  return tq_gguf_open_buffer(*copy, n, g);
}

/* Expects data[0..n) to be rejected with `want` and a message containing
 * `needle` (if not NULL). */
#define EXPECT_BAD(data, n, want, needle) expect_bad_((data), (n), (want), (needle), __LINE__)
static void expect_bad_(const uint8_t *data, size_t n, tq_status want, const char *needle,
                        int line) {
  tq_gguf *g = (tq_gguf *)(uintptr_t)1;
  uint8_t *copy;
  tq_status st = open_copy(data, n, &g, &copy);
  const char *msg = tq_gguf_last_error();
  CHECKF(st == want, "line %d: got %s, expected %s (%s)", line, tq_status_name(st),
         tq_status_name(want), msg);
  CHECKF(g == NULL, "line %d: handle not NULL after a failure", line);
  CHECKF(msg && msg[0], "line %d: empty error message", line);
  if (needle) CHECKF(strstr(msg, needle), "line %d: message '%s' lacks '%s'", line, msg, needle);
  if (g_verbose) printf("  line %d: %s: %s\n", line, tq_status_name(st), msg);
  if (st == TQ_OK) tq_gguf_close(g);
  free(copy);
}

/* ------------------------------------------------------------------------ */
/* A byte-level GGUF builder (independent of the library's writer)           */
/* ------------------------------------------------------------------------ */

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void bput(buf *b, const void *s, size_t n) {
  if (b->n + n > b->cap) {
    while (b->n + n > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
}

static size_t ble(buf *b, uint64_t v, unsigned n) {
  size_t at = b->n;
  uint8_t t[8];
  for (unsigned k = 0; k < n; k++) t[k] = (uint8_t)(v >> (8 * k));
  bput(b, t, n);
  return at;
}

static size_t bu32(buf *b, uint32_t v) { return ble(b, v, 4); }
static size_t bu64(buf *b, uint64_t v) { return ble(b, v, 8); }

/* A string; returns the offset of its length field. */
static size_t bstr(buf *b, const char *s) {
  size_t at = bu64(b, strlen(s));
  bput(b, s, strlen(s));
  return at;
}

static void bpad(buf *b, size_t align) {
  while (b->n % align) bput(b, "", 1);
}

static void poke32(uint8_t *p, size_t at, uint32_t v) {
  for (int k = 0; k < 4; k++) p[at + k] = (uint8_t)(v >> (8 * k));
}

static void poke64(uint8_t *p, size_t at, uint64_t v) {
  for (int k = 0; k < 8; k++) p[at + k] = (uint8_t)(v >> (8 * k));
}

static void bheader(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  bput(b, "GGUF", 4);
  bu32(b, version);
  bu64(b, n_tensors);
  bu64(b, n_kv);
}

/* The small valid file the malformed cases edit, with the offsets of the
 * fields they change. Metadata: general.architecture "llama",
 * general.alignment 32, a.u32 7, a.bool 1, a.arr [1, 2, 3] (uint32),
 * a.strs ["x", "yz"]. Tensors: t0 F32 [8, 2] at 0 (64 bytes), t1 Q8_0 [32]
 * at 64 (34 bytes); the file ends with t1's data. */
typedef struct small {
  buf b;
  size_t version, n_tensors, n_kv;
  size_t key0_len, arch_len, align_type, align_val, u32_type, bool_val;
  size_t arr_elem, arr_count, strs_count, strs_elem0_len;
  size_t t_name[2], t_ndims[2], t_ne0[2], t_ne1, t_type[2], t_off[2];
  size_t data_start;
} small;

enum { SMALL_DUP_KEY = 1, SMALL_DUP_NAME = 2 };

static void build_small(small *s, int flags) {
  memset(s, 0, sizeof *s);
  buf *b = &s->b;
  int n_kv = 6 + ((flags & SMALL_DUP_KEY) != 0);
  bheader(b, 3, 2, (uint64_t)n_kv);
  s->version = 4;
  s->n_tensors = 8;
  s->n_kv = 16;
  s->key0_len = bstr(b, "general.architecture");
  bu32(b, TQ_GGUF_STRING);
  s->arch_len = bstr(b, "llama");
  bstr(b, "general.alignment");
  s->align_type = bu32(b, TQ_GGUF_UINT32);
  s->align_val = bu32(b, 32);
  bstr(b, "a.u32");
  s->u32_type = bu32(b, TQ_GGUF_UINT32);
  bu32(b, 7);
  bstr(b, "a.bool");
  bu32(b, TQ_GGUF_BOOL);
  s->bool_val = ble(b, 1, 1);
  bstr(b, "a.arr");
  bu32(b, TQ_GGUF_ARRAY);
  s->arr_elem = bu32(b, TQ_GGUF_UINT32);
  s->arr_count = bu64(b, 3);
  for (uint32_t v = 1; v <= 3; v++) bu32(b, v);
  bstr(b, "a.strs");
  bu32(b, TQ_GGUF_ARRAY);
  bu32(b, TQ_GGUF_STRING);
  s->strs_count = bu64(b, 2);
  s->strs_elem0_len = bstr(b, "x");
  bstr(b, "yz");
  if (flags & SMALL_DUP_KEY) {
    bstr(b, "a.u32");
    bu32(b, TQ_GGUF_INT32);
    bu32(b, 9);
  }
  s->t_name[0] = bstr(b, "t0");
  s->t_ndims[0] = bu32(b, 2);
  s->t_ne0[0] = bu64(b, 8);
  s->t_ne1 = bu64(b, 2);
  s->t_type[0] = bu32(b, TQ_TENSOR_F32);
  s->t_off[0] = bu64(b, 0);
  s->t_name[1] = bstr(b, (flags & SMALL_DUP_NAME) ? "t0" : "t1");
  s->t_ndims[1] = bu32(b, 1);
  s->t_ne0[1] = bu64(b, 32);
  s->t_type[1] = bu32(b, TQ_TENSOR_Q8_0);
  s->t_off[1] = bu64(b, 64);
  bpad(b, 32);
  s->data_start = b->n;
  for (int i = 0; i < 64 + 34; i++) {
    uint8_t v = (uint8_t)(i * 7 + 1);
    bput(b, &v, 1);
  }
}

/* A copy of the small file's bytes, to edit. */
static uint8_t *small_copy(const small *s) {
  uint8_t *p = malloc(s->b.n);
  memcpy(p, s->b.p, s->b.n);
  return p;
}

/* ------------------------------------------------------------------------ */
/* Files built byte by byte                                                  */
/* ------------------------------------------------------------------------ */

static void test_small_valid(void) {
  small s;
  build_small(&s, 0);
  tq_gguf *g = NULL;
  uint8_t *copy;
  CHECK_OK(open_copy(s.b.p, s.b.n, &g, &copy));
  CHECK(g != NULL);
  if (g) {
    CHECK(strcmp(tq_gguf_last_error(), "") == 0);
    CHECK(tq_gguf_version(g) == 3);
    CHECK(tq_gguf_n_kv(g) == 6);
    CHECK(tq_gguf_n_tensors(g) == 2);
    int64_t i = tq_gguf_find_key(g, "a.strs");
    CHECK(i == 5);
    tq_str str;
    CHECK_OK(tq_gguf_array_string(g, (uint64_t)i, 1, &str));
    CHECK(str_is(str, "yz"));
    tq_gguf_tensor t;
    CHECK_OK(tq_gguf_find_tensor(g, "t1", &t));
    CHECK(t.type == TQ_TENSOR_Q8_0 && t.n_dims == 1 && t.ne[0] == 32 && t.ne[1] == 1);
    CHECK(t.n_elements == 32 && t.n_bytes == 34);
    CHECK((const uint8_t *)t.data == copy + s.data_start + 64);
    CHECK_OK(tq_gguf_find_tensor(g, "t0", &t));
    CHECK(t.n_elements == 16 && t.n_bytes == 64 && t.ne[1] == 2);
    CHECK((const uint8_t *)t.data == copy + s.data_start);
    tq_gguf_close(g);
  }
  free(copy);

  /* Version 2 has the same layout. */
  uint8_t *p = small_copy(&s);
  poke32(p, s.version, 2);
  CHECK_OK(open_copy(p, s.b.n, &g, &copy));
  CHECK(tq_gguf_version(g) == 2);
  tq_gguf_close(g);
  free(copy);
  free(p);
  free(s.b.p);
}

/* Every scalar type, arrays of every element type (bool and nested
 * included), keys and strings with odd bytes. */
static void test_all_value_types(void) {
  buf b = {0};
  bheader(&b, 3, 0, 29);
  bstr(&b, "u8"), bu32(&b, TQ_GGUF_UINT8), ble(&b, 250, 1);
  bstr(&b, "i8"), bu32(&b, TQ_GGUF_INT8), ble(&b, 0x80, 1);
  bstr(&b, "u16"), bu32(&b, TQ_GGUF_UINT16), ble(&b, 65535, 2);
  bstr(&b, "i16"), bu32(&b, TQ_GGUF_INT16), ble(&b, 0x8000, 2);
  bstr(&b, "u32"), bu32(&b, TQ_GGUF_UINT32), bu32(&b, 0xffffffffu);
  bstr(&b, "i32"), bu32(&b, TQ_GGUF_INT32), bu32(&b, 0x80000000u);
  bstr(&b, "f32"), bu32(&b, TQ_GGUF_FLOAT32), bu32(&b, 0x3e200000u); /* 0.15625 */
  bstr(&b, "b0"), bu32(&b, TQ_GGUF_BOOL), ble(&b, 0, 1);
  bstr(&b, "b1"), bu32(&b, TQ_GGUF_BOOL), ble(&b, 1, 1);
  bstr(&b, "s"), bu32(&b, TQ_GGUF_STRING), bstr(&b, "");
  bstr(&b, "u64"), bu32(&b, TQ_GGUF_UINT64), bu64(&b, UINT64_MAX);
  bstr(&b, "i64"), bu32(&b, TQ_GGUF_INT64), bu64(&b, (uint64_t)INT64_MIN);
  bstr(&b, "f64"), bu32(&b, TQ_GGUF_FLOAT64), bu64(&b, 0xc00c000000000000ull); /* -3.5 */
  bstr(&b, "i8pos"), bu32(&b, TQ_GGUF_INT8), ble(&b, 0x7f, 1);
  bstr(&b, "u64small"), bu32(&b, TQ_GGUF_UINT64), bu64(&b, 12345);
  /* Arrays: elements [a, b] of each fixed-size type. */
  const uint32_t types[] = {TQ_GGUF_UINT8,   TQ_GGUF_INT8,   TQ_GGUF_UINT16, TQ_GGUF_INT16,
                            TQ_GGUF_UINT32,  TQ_GGUF_INT32,  TQ_GGUF_UINT64, TQ_GGUF_INT64,
                            TQ_GGUF_FLOAT32, TQ_GGUF_FLOAT64, TQ_GGUF_BOOL};
  const unsigned sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 1};
  for (int k = 0; k < 11; k++) {
    char key[16];
    snprintf(key, sizeof key, "arr%d", k);
    bstr(&b, key);
    bu32(&b, TQ_GGUF_ARRAY);
    bu32(&b, types[k]);
    bu64(&b, 2);
    if (types[k] == TQ_GGUF_FLOAT32) {
      bu32(&b, 0x3f800000u); /* 1 */
      bu32(&b, 0xc0000000u); /* -2 */
    } else if (types[k] == TQ_GGUF_FLOAT64) {
      bu64(&b, 0x3ff0000000000000ull);
      bu64(&b, 0xc000000000000000ull);
    } else {
      ble(&b, 1, sizes[k]);
      ble(&b, types[k] == TQ_GGUF_BOOL ? 0 : UINT64_MAX, sizes[k]); /* -1 or the maximum */
    }
  }
  /* A string array with an empty string and bytes that are not UTF-8. */
  bstr(&b, "strs");
  bu32(&b, TQ_GGUF_ARRAY);
  bu32(&b, TQ_GGUF_STRING);
  bu64(&b, 3);
  bstr(&b, "");
  bstr(&b, "\xff\x01");
  bstr(&b, "three");
  /* A nested array [[7, 8], ["q"]] and an empty array. */
  bstr(&b, "nested");
  bu32(&b, TQ_GGUF_ARRAY);
  bu32(&b, TQ_GGUF_ARRAY);
  bu64(&b, 2);
  bu32(&b, TQ_GGUF_UINT8), bu64(&b, 2), ble(&b, 7, 1), ble(&b, 8, 1);
  bu32(&b, TQ_GGUF_STRING), bu64(&b, 1), bstr(&b, "q");
  bstr(&b, "empty");
  bu32(&b, TQ_GGUF_ARRAY);
  bu32(&b, TQ_GGUF_FLOAT32);
  bu64(&b, 0);
  /* The file ends here: no tensors, no padding. */

  tq_gguf *g = NULL;
  uint8_t *copy;
  CHECK_OK(open_copy(b.p, b.n, &g, &copy));
  if (!g) {
    free(copy);
    free(b.p);
    return;
  }
  CHECK(tq_gguf_n_kv(g) == 29 && tq_gguf_n_tensors(g) == 0);
  uint64_t u;
  int64_t s;
  double f;
  int bo;
  tq_str str;
#define KEY(name) ((uint64_t)tq_gguf_find_key(g, name))
  CHECK(tq_gguf_kv_type(g, KEY("i16")) == TQ_GGUF_INT16);
  CHECK_OK(tq_gguf_get_uint(g, KEY("u8"), &u));
  CHECK(u == 250);
  CHECK_OK(tq_gguf_get_int(g, KEY("u8"), &s));
  CHECK(s == 250);
  CHECK_STATUS(tq_gguf_get_uint(g, KEY("i8"), &u), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_int(g, KEY("i8"), &s));
  CHECK(s == -128);
  CHECK_OK(tq_gguf_get_uint(g, KEY("i8pos"), &u));
  CHECK(u == 127);
  CHECK_OK(tq_gguf_get_uint(g, KEY("u16"), &u));
  CHECK(u == 65535);
  CHECK_OK(tq_gguf_get_int(g, KEY("i16"), &s));
  CHECK(s == -32768);
  CHECK_STATUS(tq_gguf_get_uint(g, KEY("i16"), &u), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_uint(g, KEY("u32"), &u));
  CHECK(u == 0xffffffffu);
  CHECK_OK(tq_gguf_get_int(g, KEY("i32"), &s));
  CHECK(s == INT32_MIN);
  CHECK_OK(tq_gguf_get_float(g, KEY("f32"), &f));
  CHECK(f == 0.15625);
  CHECK_STATUS(tq_gguf_get_float(g, KEY("u32"), &f), TQ_ERR_MISMATCH);
  CHECK_STATUS(tq_gguf_get_uint(g, KEY("f32"), &u), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_bool(g, KEY("b0"), &bo));
  CHECK(bo == 0);
  CHECK_OK(tq_gguf_get_bool(g, KEY("b1"), &bo));
  CHECK(bo == 1);
  CHECK_STATUS(tq_gguf_get_uint(g, KEY("b1"), &u), TQ_ERR_MISMATCH);
  CHECK_STATUS(tq_gguf_get_bool(g, KEY("u8"), &bo), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_string(g, KEY("s"), &str));
  CHECK(str.len == 0);
  CHECK_STATUS(tq_gguf_get_string(g, KEY("u8"), &str), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_uint(g, KEY("u64"), &u));
  CHECK(u == UINT64_MAX);
  CHECK_STATUS(tq_gguf_get_int(g, KEY("u64"), &s), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_int(g, KEY("u64small"), &s));
  CHECK(s == 12345);
  CHECK_OK(tq_gguf_get_int(g, KEY("i64"), &s));
  CHECK(s == INT64_MIN);
  CHECK_STATUS(tq_gguf_get_uint(g, KEY("i64"), &u), TQ_ERR_MISMATCH);
  CHECK_OK(tq_gguf_get_float(g, KEY("f64"), &f));
  CHECK(f == -3.5);
  tq_gguf_type et;
  uint64_t count;
  CHECK_STATUS(tq_gguf_get_array(g, KEY("u8"), &et, &count), TQ_ERR_MISMATCH);

  for (int k = 0; k < 11; k++) {
    char key[16];
    snprintf(key, sizeof key, "arr%d", k);
    uint64_t i = KEY(key);
    CHECK(tq_gguf_kv_type(g, i) == TQ_GGUF_ARRAY);
    CHECK_OK(tq_gguf_get_array(g, i, &et, &count));
    CHECKF(et == (tq_gguf_type)types[k] && count == 2, "%s: type %d count %llu", key, (int)et,
           (unsigned long long)count);
    CHECK_STATUS(tq_gguf_array_string(g, i, 0, &str), TQ_ERR_MISMATCH);
    CHECK_STATUS(tq_gguf_array_uint(g, i, 2, &u), TQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tq_gguf_get_uint(g, i, &u), TQ_ERR_MISMATCH);
    uint32_t t = types[k];
    int is_signed = t == TQ_GGUF_INT8 || t == TQ_GGUF_INT16 || t == TQ_GGUF_INT32 ||
                    t == TQ_GGUF_INT64;
    if (t == TQ_GGUF_FLOAT32 || t == TQ_GGUF_FLOAT64) {
      CHECK_OK(tq_gguf_array_float(g, i, 0, &f));
      CHECK(f == 1.0);
      CHECK_OK(tq_gguf_array_float(g, i, 1, &f));
      CHECK(f == -2.0);
      CHECK_STATUS(tq_gguf_array_int(g, i, 0, &s), TQ_ERR_MISMATCH);
    } else if (t == TQ_GGUF_BOOL) {
      /* No accessor reads bool elements (the getters' rules). */
      CHECK_STATUS(tq_gguf_array_uint(g, i, 0, &u), TQ_ERR_MISMATCH);
      CHECK_STATUS(tq_gguf_array_float(g, i, 0, &f), TQ_ERR_MISMATCH);
    } else {
      CHECK_STATUS(tq_gguf_array_float(g, i, 0, &f), TQ_ERR_MISMATCH);
      CHECK_OK(tq_gguf_array_uint(g, i, 0, &u));
      CHECK(u == 1);
      CHECK_OK(tq_gguf_array_int(g, i, 0, &s));
      CHECK(s == 1);
      if (is_signed) {
        CHECK_STATUS(tq_gguf_array_uint(g, i, 1, &u), TQ_ERR_MISMATCH);
        CHECK_OK(tq_gguf_array_int(g, i, 1, &s));
        CHECK(s == -1);
      } else {
        uint64_t max = sizes[k] == 8 ? UINT64_MAX : (1ull << (8 * sizes[k])) - 1;
        CHECK_OK(tq_gguf_array_uint(g, i, 1, &u));
        CHECK(u == max);
        if (sizes[k] == 8) {
          CHECK_STATUS(tq_gguf_array_int(g, i, 1, &s), TQ_ERR_MISMATCH);
        } else {
          CHECK_OK(tq_gguf_array_int(g, i, 1, &s));
          CHECK(s == (int64_t)max);
        }
      }
    }
  }
  uint64_t i = KEY("strs");
  CHECK_OK(tq_gguf_get_array(g, i, &et, &count));
  CHECK(et == TQ_GGUF_STRING && count == 3);
  CHECK_OK(tq_gguf_array_string(g, i, 0, &str));
  CHECK(str.len == 0);
  CHECK_OK(tq_gguf_array_string(g, i, 1, &str));
  CHECK(str.len == 2 && (uint8_t)str.data[0] == 0xff && str.data[1] == 1);
  CHECK_OK(tq_gguf_array_string(g, i, 2, &str));
  CHECK(str_is(str, "three"));
  CHECK_STATUS(tq_gguf_array_string(g, i, 3, &str), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_uint(g, i, 0, &u), TQ_ERR_MISMATCH);
  i = KEY("nested");
  CHECK_OK(tq_gguf_get_array(g, i, &et, &count));
  CHECK(et == TQ_GGUF_ARRAY && count == 2);
  CHECK_STATUS(tq_gguf_array_uint(g, i, 0, &u), TQ_ERR_MISMATCH);
  CHECK_STATUS(tq_gguf_array_string(g, i, 0, &str), TQ_ERR_MISMATCH);
  i = KEY("empty");
  CHECK_OK(tq_gguf_get_array(g, i, &et, &count));
  CHECK(et == TQ_GGUF_FLOAT32 && count == 0);
  CHECK_STATUS(tq_gguf_array_float(g, i, 0, &f), TQ_ERR_INVALID_ARGUMENT);
#undef KEY
  tq_gguf_close(g);
  free(copy);
  free(b.p);
}

/* Arrays nested `depth` levels deep (the outermost counted), innermost
 * holding one uint8. */
static void build_nested(buf *b, int depth) {
  bheader(b, 3, 0, 1);
  bstr(b, "deep");
  bu32(b, TQ_GGUF_ARRAY);
  for (int d = 1; d < depth; d++) {
    bu32(b, TQ_GGUF_ARRAY);
    bu64(b, 1);
  }
  bu32(b, TQ_GGUF_UINT8);
  bu64(b, 1);
  ble(b, 5, 1);
}

static void test_nesting_limit(void) {
  buf b = {0};
  build_nested(&b, 8);
  tq_gguf *g = NULL;
  uint8_t *copy;
  CHECK_OK(open_copy(b.p, b.n, &g, &copy));
  tq_gguf_close(g);
  free(copy);
  free(b.p);
  memset(&b, 0, sizeof b);
  build_nested(&b, 9);
  EXPECT_BAD(b.p, b.n, TQ_ERR_CORRUPT, "nested");
  free(b.p);
  /* More nested arrays than the bytes left could hold. */
  memset(&b, 0, sizeof b);
  build_nested(&b, 2);
  poke64(b.p, b.n - 21, 1ull << 40);
  EXPECT_BAD(b.p, b.n, TQ_ERR_CORRUPT, "array of 1099511627776 arrays");
  free(b.p);
  /* An unknown element type inside a nested array. */
  memset(&b, 0, sizeof b);
  build_nested(&b, 3);
  poke32(b.p, b.n - 13, 77);
  EXPECT_BAD(b.p, b.n, TQ_ERR_CORRUPT, "77");
  free(b.p);
}

/* ------------------------------------------------------------------------ */
/* Malformed files                                                           */
/* ------------------------------------------------------------------------ */

static void test_truncated_every_length(void) {
  small s;
  build_small(&s, 0);
  for (size_t n = 0; n < s.b.n; n++) EXPECT_BAD(s.b.p, n, TQ_ERR_CORRUPT, NULL);
  free(s.b.p);
}

/* A scalar value cut off by the end of the file (the counts still fit). */
static void test_value_cut_off(void) {
  buf b = {0};
  bheader(&b, 3, 0, 1);
  bstr(&b, "k");
  bu32(&b, TQ_GGUF_UINT64);
  ble(&b, 0, 3);
  EXPECT_BAD(b.p, b.n, TQ_ERR_CORRUPT, "uint64 value at offset 37 is cut off");
  free(b.p);
}

static void test_header_errors(void) {
  small s;
  build_small(&s, 0);
  uint8_t *p = small_copy(&s);
  size_t n = s.b.n;

  p[0] = 'X';
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "magic");
  EXPECT_BAD(p, 3, TQ_ERR_CORRUPT, NULL);
  EXPECT_BAD(p, 10, TQ_ERR_CORRUPT, "magic");
  p[0] = 'G';
  const uint32_t bad_versions[] = {0, 1, 4, 99, 0x03000000u, 0xffffffffu};
  for (int k = 0; k < 6; k++) {
    poke32(p, s.version, bad_versions[k]);
    EXPECT_BAD(p, n, TQ_ERR_FORMAT_VERSION, NULL);
  }
  poke32(p, s.version, 3);

  const uint64_t huge[] = {7, 1ull << 32, 1ull << 62, UINT64_MAX};
  for (int k = 0; k < 4; k++) {
    poke64(p, s.n_kv, huge[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, NULL);
  }
  poke64(p, s.n_kv, 6);
  const uint64_t huge_t[] = {3, 1ull << 32, 1ull << 62, UINT64_MAX};
  for (int k = 0; k < 4; k++) {
    poke64(p, s.n_tensors, huge_t[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, NULL);
  }
  poke64(p, s.n_tensors, 2);
  /* Both large enough alone, too large together. */
  poke64(p, s.n_kv, (n - 24) / 13);
  poke64(p, s.n_tensors, (n - 24) / 64);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "cannot fit");
  free(p);
  free(s.b.p);
}

static void test_string_errors(void) {
  small s;
  build_small(&s, 0);
  uint8_t *p = small_copy(&s);
  size_t n = s.b.n;
  const size_t fields[] = {s.key0_len, s.arch_len, s.strs_elem0_len, s.t_name[1]};
  for (int f = 0; f < 4; f++) {
    uint64_t left = n - fields[f] - 8;
    const uint64_t lens[] = {left + 1, n, 1ull << 63, UINT64_MAX};
    for (int k = 0; k < 4; k++) {
      poke64(p, fields[f], lens[k]);
      EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "exceeds");
    }
    memcpy(p, s.b.p, n);
  }
  /* A key longer than the specification's 65535 bytes. */
  buf b = {0};
  bheader(&b, 3, 0, 1);
  bu64(&b, 70000);
  for (int k = 0; k < 70000; k++) bput(&b, "k", 1);
  bu32(&b, TQ_GGUF_UINT8);
  ble(&b, 0, 1);
  EXPECT_BAD(b.p, b.n, TQ_ERR_CORRUPT, "key of 70000 bytes");
  free(b.p);
  free(p);
  free(s.b.p);
}

static void test_value_errors(void) {
  small s;
  build_small(&s, 0);
  uint8_t *p = small_copy(&s);
  size_t n = s.b.n;

  poke32(p, s.u32_type, 13);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "unknown value type 13");
  poke32(p, s.u32_type, 0xffffffffu);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "unknown value type");
  memcpy(p, s.b.p, n);

  p[s.bool_val] = 2;
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "bool");
  memcpy(p, s.b.p, n);

  poke32(p, s.arr_elem, 13);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "element type");
  memcpy(p, s.b.p, n);

  /* 2^62 uint32 elements: count * 4 overflows 64 bits. */
  const uint64_t counts[] = {1000, 1ull << 61, 1ull << 62, UINT64_MAX};
  for (int k = 0; k < 4; k++) {
    poke64(p, s.arr_count, counts[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "array of");
    memcpy(p, s.b.p, n);
    poke64(p, s.strs_count, counts[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, NULL);
    memcpy(p, s.b.p, n);
  }
  /* A bool array with a 2 in it. */
  poke32(p, s.arr_elem, TQ_GGUF_BOOL);
  poke64(p, s.arr_count, 12);
  p[s.arr_count + 8 + 4] = 2;
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "bool array element 4");
  free(p);
  free(s.b.p);

  build_small(&s, SMALL_DUP_KEY);
  EXPECT_BAD(s.b.p, s.b.n, TQ_ERR_CORRUPT, "duplicate key 'a.u32'");
  free(s.b.p);
}

static void test_alignment_errors(void) {
  small s;
  build_small(&s, 0);
  uint8_t *p = small_copy(&s);
  size_t n = s.b.n;
  const uint32_t bad[] = {0, 1, 3, 4, 24, 1u << 21, 1u << 31, 0xffffffffu};
  for (int k = 0; k < 8; k++) {
    poke32(p, s.align_val, bad[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "alignment");
  }
  memcpy(p, s.b.p, n);
  poke32(p, s.align_type, TQ_GGUF_INT32);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "must be uint32");
  /* Alignment 16: the data section moves to the next multiple of 16 after
   * the tensor infos (the data stay in the file, so the file is valid). */
  memcpy(p, s.b.p, n);
  poke32(p, s.align_val, 16);
  tq_gguf *g = NULL;
  uint8_t *copy;
  CHECK_OK(open_copy(p, n, &g, &copy));
  tq_gguf_tensor t;
  CHECK_OK(tq_gguf_tensor_at(g, 0, &t));
  CHECK((const uint8_t *)t.data == copy + (s.t_off[1] + 8 + 15) / 16 * 16);
  tq_gguf_close(g);
  free(copy);
  free(p);
  free(s.b.p);
}

static void test_tensor_errors(void) {
  small s;
  build_small(&s, 0);
  uint8_t *p = small_copy(&s);
  size_t n = s.b.n;

  const uint32_t dims[] = {0, 5, 0xffffffffu};
  for (int k = 0; k < 3; k++) {
    poke32(p, s.t_ndims[0], dims[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "n_dims");
  }
  memcpy(p, s.b.p, n);

  /* Element count overflow, byte count overflow, one dimension above
   * INT64_MAX. */
  poke64(p, s.t_ne0[0], 1ull << 40);
  poke64(p, s.t_ne1, 1ull << 40);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "overflows the element count");
  poke64(p, s.t_ne0[0], 1ull << 61);
  poke64(p, s.t_ne1, 2);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "overflows the byte count");
  poke64(p, s.t_ne0[0], 1ull << 62); /* 2^62 elements fit int64, 2^64 bytes do not */
  poke64(p, s.t_ne1, 1);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "overflows the byte count");
  poke64(p, s.t_ne0[0], UINT64_MAX);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "overflows");
  poke64(p, s.t_ne0[0], 8);
  poke64(p, s.t_ne1, 0);
  poke64(p, s.t_ne0[1], 33);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "not a multiple of the type's block of 32");
  memcpy(p, s.b.p, n);

  const uint32_t types[] = {4, 5, 31, 33, 36, 38, 42, 1000, 0xffffffffu};
  for (int k = 0; k < 9; k++) {
    poke32(p, s.t_type[1], types[k]);
    EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "tensor 't1': unknown tensor type");
  }
  memcpy(p, s.b.p, n);

  poke64(p, s.t_off[1], 65);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "not a multiple of the alignment");
  poke64(p, s.t_off[1], 1ull << 40);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "extends past the end");
  poke64(p, s.t_off[1], UINT64_MAX - 31);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "extends past the end");
  poke64(p, s.t_off[1], 96);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "tensor 't1': data [offset 96, 34 bytes] extends past the end");
  memcpy(p, s.b.p, n);
  poke64(p, s.t_ne0[1], 64);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "extends past the end");
  memcpy(p, s.b.p, n);

  /* Overlap: t1 inside t0, then t0 grown over t1. */
  poke64(p, s.t_off[1], 32);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "overlaps");
  memcpy(p, s.b.p, n);
  poke64(p, s.t_ne1, 3);
  EXPECT_BAD(p, n, TQ_ERR_CORRUPT, "overlaps tensor 't0'");
  memcpy(p, s.b.p, n);
  /* Same offset is fine for an empty tensor. */
  poke64(p, s.t_ne1, 0);
  poke64(p, s.t_off[0], 64);
  tq_gguf *g = NULL;
  uint8_t *copy;
  CHECK_OK(open_copy(p, n, &g, &copy));
  tq_gguf_tensor t;
  CHECK_OK(tq_gguf_tensor_at(g, 0, &t));
  CHECK(t.n_bytes == 0 && t.n_elements == 0);
  tq_gguf_close(g);
  free(copy);

  /* Tensors present but the file ends before the data section starts. */
  EXPECT_BAD(s.b.p, s.t_off[1] + 8, TQ_ERR_CORRUPT, "data section");
  free(p);
  free(s.b.p);

  build_small(&s, SMALL_DUP_NAME);
  EXPECT_BAD(s.b.p, s.b.n, TQ_ERR_CORRUPT, "duplicate tensor name 't0'");
  free(s.b.p);
}

/* ------------------------------------------------------------------------ */
/* Writer round trips                                                        */
/* ------------------------------------------------------------------------ */

typedef struct tensor_case {
  const char *name;
  tq_tensor_type type;
  uint32_t n_dims;
  uint64_t ne[4];
  size_t n_bytes;
} tensor_case;

static const tensor_case k_tensors[] = {
    {"f32.vec", TQ_TENSOR_F32, 1, {7}, 28},
    {"f16.mat", TQ_TENSOR_F16, 2, {8, 3}, 48},
    {"bf16.4d", TQ_TENSOR_BF16, 4, {2, 3, 4, 5}, 240},
    {"q8_0.mat", TQ_TENSOR_Q8_0, 2, {64, 2}, 4 * 34},
    {"q4_0.mat", TQ_TENSOR_Q4_0, 2, {32, 3}, 3 * 18},
    {"q4_1.vec", TQ_TENSOR_Q4_1, 1, {64}, 2 * 20},
    {"q5_0.vec", TQ_TENSOR_Q5_0, 1, {32}, 22},
    {"q5_1.vec", TQ_TENSOR_Q5_1, 1, {32}, 24},
    {"q8_1.vec", TQ_TENSOR_Q8_1, 1, {32}, 36},
    {"q2_k.vec", TQ_TENSOR_Q2_K, 1, {256}, 84},
    {"q3_k.vec", TQ_TENSOR_Q3_K, 1, {256}, 110},
    {"q4_k.3d", TQ_TENSOR_Q4_K, 3, {256, 1, 2}, 2 * 144},
    {"q5_k.vec", TQ_TENSOR_Q5_K, 1, {256}, 176},
    {"q6_k.vec", TQ_TENSOR_Q6_K, 1, {512}, 2 * 210},
    {"q8_k.vec", TQ_TENSOR_Q8_K, 1, {256}, 292},
    {"i32.vec", (tq_tensor_type)26, 1, {5}, 20}, /* a ggml type outside tq_tensor_type */
    {"iq4_xs.vec", (tq_tensor_type)23, 1, {256}, 136},
    {"empty", TQ_TENSOR_F32, 2, {0, 4}, 0},
};
#define N_TENSORS (sizeof k_tensors / sizeof k_tensors[0])

static uint8_t tensor_byte(size_t t, size_t i) { return (uint8_t)(t * 31 + i * 7 + (i >> 8)); }

static const uint8_t k_u8[] = {0, 255};
static const int8_t k_i8[] = {-128, 127};
static const uint16_t k_u16[] = {1, 65535, 7};
static const int16_t k_i16[] = {-32768, 32767};
static const uint32_t k_u32[] = {0, 4000000000u};
static const int32_t k_i32[] = {-5, INT32_MAX, INT32_MIN};
static const float k_f32[] = {1.5f, -0.0f, 3e38f};
static const uint8_t k_bool[] = {1, 0, 1, 1};
static const uint64_t k_u64[] = {UINT64_MAX, 0};
static const int64_t k_i64[] = {INT64_MIN, -1, INT64_MAX};
static const double k_f64[] = {0.1, -1e300};
static const char *const k_strs[] = {"", "hello", "w\xc3\xb6rld", "tab\there"};

/* Writes the round-trip file: every writer call, every k_tensors entry.
 * alignment 0: no general.alignment key. */
static tq_status write_round_trip(const char *path, uint32_t alignment) {
  tq_gguf_writer *w = NULL;
  tq_status st = tq_gguf_writer_create(&w);
  if (st != TQ_OK) return st;
  if (alignment) CHECK_OK(tq_gguf_writer_add_uint32(w, "general.alignment", alignment));
  CHECK_OK(tq_gguf_writer_add_string(w, "general.architecture", "llama"));
  CHECK_OK(tq_gguf_writer_add_uint32(w, "k.u32", 4000000000u));
  CHECK_OK(tq_gguf_writer_add_int32(w, "k.i32", -123456));
  CHECK_OK(tq_gguf_writer_add_uint64(w, "k.u64", 0xfedcba9876543210ull));
  CHECK_OK(tq_gguf_writer_add_float32(w, "k.f32", -2.75f));
  CHECK_OK(tq_gguf_writer_add_bool(w, "k.true", 5));
  CHECK_OK(tq_gguf_writer_add_bool(w, "k.false", 0));
  CHECK_OK(tq_gguf_writer_add_string(w, "k.str", "h\xc3\xa9llo"));
  CHECK_OK(tq_gguf_writer_add_string(w, "k.empty_str", ""));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.u8", TQ_GGUF_UINT8, k_u8, 2));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.i8", TQ_GGUF_INT8, k_i8, 2));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.u16", TQ_GGUF_UINT16, k_u16, 3));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.i16", TQ_GGUF_INT16, k_i16, 2));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.u32", TQ_GGUF_UINT32, k_u32, 2));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.i32", TQ_GGUF_INT32, k_i32, 3));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.f32", TQ_GGUF_FLOAT32, k_f32, 3));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.bool", TQ_GGUF_BOOL, k_bool, 4));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.u64", TQ_GGUF_UINT64, k_u64, 2));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.i64", TQ_GGUF_INT64, k_i64, 3));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.f64", TQ_GGUF_FLOAT64, k_f64, 2));
  CHECK_OK(tq_gguf_writer_add_array(w, "a.empty", TQ_GGUF_INT32, NULL, 0));
  CHECK_OK(tq_gguf_writer_add_string_array(w, "a.strs", k_strs, 4));
  for (size_t t = 0; t < N_TENSORS; t++) {
    const tensor_case *c = &k_tensors[t];
    uint8_t *data = malloc(c->n_bytes ? c->n_bytes : 1);
    for (size_t i = 0; i < c->n_bytes; i++) data[i] = tensor_byte(t, i);
    CHECK_OK(tq_gguf_writer_add_tensor(w, c->name, c->type, c->n_dims, c->ne, data, c->n_bytes));
    free(data);
  }
  st = tq_gguf_writer_write(w, path);
  tq_gguf_writer_free(w);
  return st;
}

/* Checks every value of the round-trip file; base: the start of the file's
 * bytes (to check offsets), alignment: the data alignment expected. */
static void check_round_trip(const tq_gguf *g, const uint8_t *base, size_t size,
                             uint32_t alignment) {
  uint64_t u;
  int64_t s;
  double f;
  int b;
  tq_str str;
  tq_gguf_type et;
  uint64_t count;
  CHECK(tq_gguf_version(g) == 3);
  CHECK(tq_gguf_n_kv(g) == 22 + (alignment != 32));
  CHECK(tq_gguf_n_tensors(g) == N_TENSORS);
#define KEY(name) ((uint64_t)tq_gguf_find_key(g, name))
  CHECK(tq_gguf_find_key(g, "no.such.key") == -1);
  if (alignment != 32) {
    CHECK_OK(tq_gguf_get_uint(g, KEY("general.alignment"), &u));
    CHECK(u == alignment);
    CHECK(tq_gguf_kv_type(g, KEY("general.alignment")) == TQ_GGUF_UINT32);
  }
  CHECK_OK(tq_gguf_get_string(g, KEY("general.architecture"), &str));
  CHECK(str_is(str, "llama"));
  CHECK(str_is(tq_gguf_key(g, KEY("k.u32")), "k.u32"));
  CHECK(tq_gguf_kv_type(g, KEY("k.u32")) == TQ_GGUF_UINT32);
  CHECK_OK(tq_gguf_get_uint(g, KEY("k.u32"), &u));
  CHECK(u == 4000000000u);
  CHECK(tq_gguf_kv_type(g, KEY("k.i32")) == TQ_GGUF_INT32);
  CHECK_OK(tq_gguf_get_int(g, KEY("k.i32"), &s));
  CHECK(s == -123456);
  CHECK(tq_gguf_kv_type(g, KEY("k.u64")) == TQ_GGUF_UINT64);
  CHECK_OK(tq_gguf_get_uint(g, KEY("k.u64"), &u));
  CHECK(u == 0xfedcba9876543210ull);
  CHECK(tq_gguf_kv_type(g, KEY("k.f32")) == TQ_GGUF_FLOAT32);
  CHECK_OK(tq_gguf_get_float(g, KEY("k.f32"), &f));
  CHECK(f == -2.75);
  CHECK_OK(tq_gguf_get_bool(g, KEY("k.true"), &b));
  CHECK(b == 1);
  CHECK_OK(tq_gguf_get_bool(g, KEY("k.false"), &b));
  CHECK(b == 0);
  CHECK_OK(tq_gguf_get_string(g, KEY("k.str"), &str));
  CHECK(str_is(str, "h\xc3\xa9llo"));
  CHECK_OK(tq_gguf_get_string(g, KEY("k.empty_str"), &str));
  CHECK(str.len == 0);

  const struct {
    const char *key;
    tq_gguf_type type;
    uint64_t count;
  } arrays[] = {{"a.u8", TQ_GGUF_UINT8, 2},     {"a.i8", TQ_GGUF_INT8, 2},
                {"a.u16", TQ_GGUF_UINT16, 3},   {"a.i16", TQ_GGUF_INT16, 2},
                {"a.u32", TQ_GGUF_UINT32, 2},   {"a.i32", TQ_GGUF_INT32, 3},
                {"a.f32", TQ_GGUF_FLOAT32, 3},  {"a.bool", TQ_GGUF_BOOL, 4},
                {"a.u64", TQ_GGUF_UINT64, 2},   {"a.i64", TQ_GGUF_INT64, 3},
                {"a.f64", TQ_GGUF_FLOAT64, 2},  {"a.empty", TQ_GGUF_INT32, 0},
                {"a.strs", TQ_GGUF_STRING, 4}};
  for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++) {
    CHECK(tq_gguf_kv_type(g, KEY(arrays[k].key)) == TQ_GGUF_ARRAY);
    CHECK_OK(tq_gguf_get_array(g, KEY(arrays[k].key), &et, &count));
    CHECKF(et == arrays[k].type && count == arrays[k].count, "%s", arrays[k].key);
  }
  for (int j = 0; j < 2; j++) {
    CHECK_OK(tq_gguf_array_uint(g, KEY("a.u8"), (uint64_t)j, &u));
    CHECK(u == k_u8[j]);
    CHECK_OK(tq_gguf_array_int(g, KEY("a.i8"), (uint64_t)j, &s));
    CHECK(s == k_i8[j]);
    CHECK_OK(tq_gguf_array_int(g, KEY("a.i16"), (uint64_t)j, &s));
    CHECK(s == k_i16[j]);
    CHECK_OK(tq_gguf_array_uint(g, KEY("a.u32"), (uint64_t)j, &u));
    CHECK(u == k_u32[j]);
    CHECK_OK(tq_gguf_array_uint(g, KEY("a.u64"), (uint64_t)j, &u));
    CHECK(u == k_u64[j]);
    CHECK_OK(tq_gguf_array_float(g, KEY("a.f64"), (uint64_t)j, &f));
    CHECK(f == k_f64[j]);
  }
  for (int j = 0; j < 3; j++) {
    CHECK_OK(tq_gguf_array_uint(g, KEY("a.u16"), (uint64_t)j, &u));
    CHECK(u == k_u16[j]);
    CHECK_OK(tq_gguf_array_int(g, KEY("a.i32"), (uint64_t)j, &s));
    CHECK(s == k_i32[j]);
    CHECK_OK(tq_gguf_array_float(g, KEY("a.f32"), (uint64_t)j, &f));
    CHECK(f == (double)k_f32[j]);
    CHECK_OK(tq_gguf_array_int(g, KEY("a.i64"), (uint64_t)j, &s));
    CHECK(s == k_i64[j]);
  }
  CHECK_OK(tq_gguf_array_float(g, KEY("a.f32"), 1, &f));
  CHECK(f == 0.0 && signbit(f));
  for (int j = 0; j < 4; j++) {
    CHECK_OK(tq_gguf_array_string(g, KEY("a.strs"), (uint64_t)j, &str));
    CHECK(str_is(str, k_strs[j]));
  }
  CHECK_STATUS(tq_gguf_array_string(g, KEY("a.strs"), 4, &str), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_int(g, KEY("a.empty"), 0, &s), TQ_ERR_INVALID_ARGUMENT);
#undef KEY

  /* Tensors: in order, at increasing multiples of the alignment, each
   * right after the previous one's padded end. */
  const uint8_t *expect = NULL;
  for (size_t t = 0; t < N_TENSORS; t++) {
    const tensor_case *c = &k_tensors[t];
    tq_gguf_tensor ti;
    CHECK_OK(tq_gguf_tensor_at(g, t, &ti));
    tq_gguf_tensor by_name;
    CHECK_OK(tq_gguf_find_tensor(g, c->name, &by_name));
    CHECK(by_name.data == ti.data && by_name.n_bytes == ti.n_bytes);
    CHECKF(str_is(ti.name, c->name), "tensor %zu name", t);
    CHECKF(ti.type == c->type && ti.n_dims == c->n_dims, "%s: type %d dims %u", c->name,
           (int)ti.type, ti.n_dims);
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < 4; d++) {
      uint64_t want = d < c->n_dims ? c->ne[d] : 1;
      CHECKF(ti.ne[d] == want, "%s: ne[%u] = %llu", c->name, d, (unsigned long long)ti.ne[d]);
      n_el *= want;
    }
    CHECK(ti.n_elements == n_el);
    CHECKF(ti.n_bytes == c->n_bytes, "%s: %llu bytes", c->name, (unsigned long long)ti.n_bytes);
    const uint8_t *d = ti.data;
    size_t off = (size_t)(d - base);
    CHECKF(off % alignment == 0, "%s: offset %zu not aligned to %u", c->name, off, alignment);
    CHECK(off + c->n_bytes <= size);
    if (expect) CHECKF(d == expect, "%s: not right after the previous tensor", c->name);
    expect = d + (c->n_bytes + alignment - 1) / alignment * alignment;
    int same = 1;
    for (size_t i = 0; i < c->n_bytes; i++) same &= d[i] == tensor_byte(t, i);
    CHECKF(same, "%s: data differs", c->name);
  }
  CHECK(expect == base + size); /* the last tensor padded to the alignment */
  tq_gguf_tensor none;
  CHECK_STATUS(tq_gguf_find_tensor(g, "nope", &none), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_tensor_at(g, N_TENSORS, &none), TQ_ERR_INVALID_ARGUMENT);
}

static void round_trip(uint32_t alignment) {
  char path[600];
  snprintf(path, sizeof path, "%s/round_trip_%u.gguf", g_dir, alignment);
  CHECK_OK(write_round_trip(path, alignment == 32 ? 0 : alignment));
  size_t size;
  uint8_t *bytes = read_file(path, &size);
  CHECK(bytes != NULL && size % alignment == 0);
  if (!bytes) return;
  struct stat sb;
  CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);

  /* Through a buffer of exactly the file's size... */
  tq_gguf *g = NULL;
  uint8_t *copy;
  size_t data_start = 0, end_of_data = 0;
  CHECK_OK(open_copy(bytes, size, &g, &copy));
  if (g) {
    check_round_trip(g, copy, size, alignment);
    tq_gguf_tensor t;
    CHECK_OK(tq_gguf_tensor_at(g, 0, &t));
    data_start = (size_t)((const uint8_t *)t.data - copy);
    for (uint64_t i = 0; i < tq_gguf_n_tensors(g); i++) {
      CHECK_OK(tq_gguf_tensor_at(g, i, &t));
      size_t e = (size_t)((const uint8_t *)t.data - copy) + (size_t)t.n_bytes;
      if (e > end_of_data) end_of_data = e;
    }
  }
  tq_gguf_close(g);
  free(copy);
  /* ...and through the mapping, which is page-aligned, so the data are
   * aligned in memory too. */
  CHECK_OK(tq_gguf_open(path, &g));
  if (g) {
    tq_gguf_tensor t0;
    CHECK_OK(tq_gguf_tensor_at(g, 0, &t0));
    CHECK((uintptr_t)t0.data % alignment == 0);
    check_round_trip(g, (const uint8_t *)t0.data - data_start, size, alignment);
    tq_gguf_close(g);
  }

  /* Truncated anywhere before the end of the last tensor's data: rejected;
   * truncated inside the final padding: still valid. (Large files: a
   * sample of the lengths.) */
  CHECK(end_of_data > 0 && size - end_of_data < alignment);
  for (size_t n = 0; n < size; n++) {
    if (size > 20000 && n > 4096 && n + 64 < end_of_data && n % 97 != 0) continue;
    tq_status st = open_copy(bytes, n, &g, &copy);
    CHECKF(st == (n < end_of_data ? TQ_ERR_CORRUPT : TQ_OK), "truncated to %zu: %s", n,
           tq_status_name(st));
    tq_gguf_close(g);
    free(copy);
  }
  free(bytes);
  if (!getenv("TQ_TEST_KEEP")) unlink(path);
}

static void test_round_trip_default_alignment(void) { round_trip(32); }
static void test_round_trip_alignment_64(void) { round_trip(64); }
static void test_round_trip_alignment_4096(void) { round_trip(4096); }

/* The byte layout of a tiny writer file, field by field. */
static void test_writer_layout(void) {
  char path[600];
  path_in(path, sizeof path, "layout.gguf");
  tq_gguf_writer *w;
  CHECK_OK(tq_gguf_writer_create(&w));
  CHECK_OK(tq_gguf_writer_add_uint32(w, "n", 0x01020304u));
  const float data[32] = {1.0f};
  uint64_t ne[1] = {32};
  CHECK_OK(tq_gguf_writer_add_tensor(w, "w", TQ_TENSOR_F32, 1, ne, data, sizeof data));
  CHECK_OK(tq_gguf_writer_write(w, path));
  tq_gguf_writer_free(w);

  buf b = {0};
  bheader(&b, 3, 1, 1);
  bstr(&b, "n");
  bu32(&b, TQ_GGUF_UINT32);
  bu32(&b, 0x01020304u);
  bstr(&b, "w");
  bu32(&b, 1);
  bu64(&b, 32);
  bu32(&b, TQ_TENSOR_F32);
  bu64(&b, 0);
  bpad(&b, 32);
  bu32(&b, 0x3f800000u);
  for (int i = 1; i < 32; i++) bu32(&b, 0);
  size_t size;
  uint8_t *got = read_file(path, &size);
  CHECK(got && size == b.n && memcmp(got, b.p, size) == 0);
  free(got);
  free(b.p);
  unlink(path);
}

static void test_writer_errors(void) {
  CHECK_STATUS(tq_gguf_writer_create(NULL), TQ_ERR_INVALID_ARGUMENT);
  tq_gguf_writer_free(NULL);
  tq_gguf_writer *w;
  CHECK_OK(tq_gguf_writer_create(&w));
  uint32_t one = 1;
  uint64_t ne1[1] = {32};
  CHECK_STATUS(tq_gguf_writer_add_uint32(NULL, "k", 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_uint32(w, NULL, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_uint32(w, "", 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_string(w, "s", NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_int32(NULL, "k", 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_uint64(w, NULL, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_float32(NULL, "k", 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_bool(w, NULL, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_array(w, "a", TQ_GGUF_STRING, &one, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_array(w, "a", TQ_GGUF_ARRAY, &one, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_array(w, "a", (tq_gguf_type)13, &one, 1),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_array(w, "a", TQ_GGUF_UINT32, NULL, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_array(w, "a", TQ_GGUF_UINT64, &one, UINT64_MAX / 4),
               TQ_ERR_INVALID_ARGUMENT);
  const uint8_t two = 2;
  CHECK_STATUS(tq_gguf_writer_add_array(w, "a", TQ_GGUF_BOOL, &two, 1), TQ_ERR_INVALID_ARGUMENT);
  const char *const strs[] = {"a", NULL};
  CHECK_STATUS(tq_gguf_writer_add_string_array(w, "s", strs, 2), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_string_array(w, "s", NULL, 1), TQ_ERR_INVALID_ARGUMENT);

  /* Duplicate keys, whatever the types. */
  CHECK_OK(tq_gguf_writer_add_uint32(w, "dup", 1));
  CHECK_STATUS(tq_gguf_writer_add_uint32(w, "dup", 2), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_string(w, "dup", "x"), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_string_array(w, "dup", strs, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_array(w, "dup", TQ_GGUF_UINT32, &one, 1), TQ_ERR_INVALID_ARGUMENT);

  /* general.alignment: a uint32 power of two from 8 to 2^20. */
  const uint32_t bad_align[] = {0, 1, 4, 3, 48, 1u << 21, 1u << 31};
  for (int k = 0; k < 7; k++)
    CHECK_STATUS(tq_gguf_writer_add_uint32(w, "general.alignment", bad_align[k]),
                 TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_uint64(w, "general.alignment", 64), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_int32(w, "general.alignment", 64), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_string(w, "general.alignment", "64"), TQ_ERR_INVALID_ARGUMENT);

  /* Tensors. */
  uint8_t data[64] = {0};
  uint64_t ne[4] = {32, 1, 1, 1}, ne33[1] = {33}, big[2] = {1ull << 62, 1ull << 62};
  CHECK_STATUS(tq_gguf_writer_add_tensor(NULL, "t", TQ_TENSOR_Q8_0, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, NULL, TQ_TENSOR_Q8_0, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "", TQ_TENSOR_Q8_0, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  /* Names: at most 63 bytes (llama.cpp's char[64] with its NUL). */
  char long_name[70];
  memset(long_name, 'n', 64);
  long_name[64] = '\0';
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, long_name, TQ_TENSOR_Q8_0, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  long_name[63] = '\0';
  CHECK_OK(tq_gguf_writer_add_tensor(w, long_name, TQ_TENSOR_Q8_0, 1, ne, data, 34));
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, NULL, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, ne, NULL, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, ne, data, 33),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, ne, data, 35),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 0, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 5, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, ne33, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", (tq_tensor_type)4, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", (tq_tensor_type)99, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_F32, 2, big, data, 0),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_OK(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, ne, data, 34));
  CHECK_STATUS(tq_gguf_writer_add_tensor(w, "t", TQ_TENSOR_Q8_0, 1, ne, data, 34),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_OK(tq_gguf_writer_add_tensor(w, "t2", TQ_TENSOR_Q8_0, 1, ne1, data, 34));

  /* Paths. */
  CHECK_STATUS(tq_gguf_writer_write(NULL, "x"), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_write(w, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_writer_write(w, ""), TQ_ERR_INVALID_ARGUMENT);
  char path[700];
  int before = dir_entries(g_dir);
  path_in(path, sizeof path, "no_such_dir/x.gguf");
  CHECK_STATUS(tq_gguf_writer_write(w, path), TQ_ERR_IO);
  CHECK(access(path, F_OK) != 0);
  /* The target is a directory: the temporary file is written, the rename
   * fails, and the temporary file must be gone. */
  path_in(path, sizeof path, "a_directory");
  CHECK(mkdir(path, 0755) == 0);
  CHECK_STATUS(tq_gguf_writer_write(w, path), TQ_ERR_IO);
  struct stat sb;
  CHECK(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
  CHECK(dir_entries(path) == 0);
  rmdir(path);
  CHECK(dir_entries(g_dir) == before);
  /* A good write replaces an existing file in one step. */
  path_in(path, sizeof path, "replaced.gguf");
  FILE *f = fopen(path, "wb");
  fputs("old", f);
  fclose(f);
  CHECK_OK(tq_gguf_writer_write(w, path));
  tq_gguf *g = NULL;
  CHECK_OK(tq_gguf_open(path, &g));
  CHECK(tq_gguf_n_tensors(g) == 3 && tq_gguf_n_kv(g) == 1);
  tq_gguf_close(g);
  unlink(path);
  CHECK(dir_entries(g_dir) == before);
  tq_gguf_writer_free(w);

  /* An empty writer writes a valid empty file (header and padding). */
  CHECK_OK(tq_gguf_writer_create(&w));
  path_in(path, sizeof path, "empty.gguf");
  CHECK_OK(tq_gguf_writer_write(w, path));
  tq_gguf_writer_free(w);
  CHECK_OK(tq_gguf_open(path, &g));
  CHECK(tq_gguf_n_kv(g) == 0 && tq_gguf_n_tensors(g) == 0);
  tq_gguf_close(g);
  unlink(path);
}

/* ------------------------------------------------------------------------ */
/* Reader API edges                                                          */
/* ------------------------------------------------------------------------ */

static void test_reader_null_and_bad_index(void) {
  tq_gguf *g = NULL;
  CHECK_STATUS(tq_gguf_open(NULL, &g), TQ_ERR_INVALID_ARGUMENT);
  CHECK(g == NULL && tq_gguf_last_error()[0] != '\0');
  CHECK_STATUS(tq_gguf_open("x", NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_open_buffer("GGUF", 4, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_open_buffer(NULL, 4, &g), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_open_buffer(NULL, 0, &g), TQ_ERR_CORRUPT);
  CHECK(g == NULL);
  char path[600];
  path_in(path, sizeof path, "does_not_exist.gguf");
  CHECK_STATUS(tq_gguf_open(path, &g), TQ_ERR_IO);
  CHECK(strstr(tq_gguf_last_error(), "does_not_exist.gguf") != NULL);
  CHECK_STATUS(tq_gguf_open(g_dir, &g), TQ_ERR_IO);
  CHECK(tq_gguf_last_error()[0] != '\0');
  path_in(path, sizeof path, "empty_file.gguf");
  FILE *fp = fopen(path, "wb");
  if (fp) fclose(fp);
  CHECK_STATUS(tq_gguf_open(path, &g), TQ_ERR_CORRUPT);
  CHECK(strstr(tq_gguf_last_error(), "0 bytes") != NULL);
  /* A malformed file through the mapping (which must be unmapped). */
  fp = fopen(path, "wb");
  if (fp) {
    fwrite("GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0", 1, 24, fp);
    fclose(fp);
  }
  CHECK_STATUS(tq_gguf_open(path, &g), TQ_ERR_CORRUPT);
  CHECK(g == NULL && strstr(tq_gguf_last_error(), "1 metadata entries") != NULL);
  unlink(path);

  tq_gguf_close(NULL);
  CHECK(tq_gguf_version(NULL) == 0 && tq_gguf_n_kv(NULL) == 0 && tq_gguf_n_tensors(NULL) == 0);
  CHECK(tq_gguf_find_key(NULL, "a") == -1);
  CHECK(tq_gguf_key(NULL, 0).data == NULL);

  small s;
  build_small(&s, 0);
  uint8_t *copy;
  CHECK_OK(open_copy(s.b.p, s.b.n, &g, &copy));
  uint64_t u;
  int64_t i64;
  double f;
  int b;
  tq_str str;
  tq_gguf_type et;
  tq_gguf_tensor t;
  CHECK(tq_gguf_find_key(g, NULL) == -1);
  CHECK(tq_gguf_find_key(g, "a.u3") == -1);
  CHECK(tq_gguf_find_key(g, "a.u32x") == -1);
  CHECK(tq_gguf_find_key(g, "") == -1);
  tq_str k = tq_gguf_key(g, 6);
  CHECK(k.data == NULL && k.len == 0);
  CHECK(tq_gguf_kv_type(g, 6) == (tq_gguf_type)-1);
  CHECK_STATUS(tq_gguf_get_uint(g, 6, &u), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_uint(g, 2, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_uint(NULL, 2, &u), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_int(g, UINT64_MAX, &i64), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_float(g, 6, &f), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_bool(g, 6, &b), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_string(g, 6, &str), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_array(g, 6, &et, &u), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_array(g, 4, NULL, &u), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_get_array(g, 4, &et, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_uint(g, 6, 0, &u), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_uint(g, 4, 0, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_uint(g, 4, 3, &u), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_uint(g, 2, 0, &u), TQ_ERR_MISMATCH);
  CHECK_STATUS(tq_gguf_array_int(NULL, 4, 0, &i64), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_float(g, 4, 0, &f), TQ_ERR_MISMATCH);
  CHECK_STATUS(tq_gguf_array_string(g, 5, 2, &str), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_array_string(g, 5, 0, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_OK(tq_gguf_array_uint(g, 4, 2, &u));
  CHECK(u == 3);
  CHECK_STATUS(tq_gguf_tensor_at(g, 2, &t), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_tensor_at(g, 0, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_tensor_at(NULL, 0, &t), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_find_tensor(g, NULL, &t), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_find_tensor(g, "t0", NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_gguf_find_tensor(g, "t", &t), TQ_ERR_INVALID_ARGUMENT);
  tq_gguf_close(g);
  free(copy);
  free(s.b.p);
}

typedef struct thread_arg {
  const uint8_t *data;
  size_t n;
  char msg[512];
  tq_status st;
} thread_arg;

static void *open_in_thread(void *p) {
  thread_arg *a = p;
  tq_gguf *g = NULL;
  a->st = tq_gguf_open_buffer(a->data, a->n, &g);
  snprintf(a->msg, sizeof a->msg, "%s", tq_gguf_last_error());
  tq_gguf_close(g);
  return NULL;
}

/* The message is per thread, and a success clears it. */
static void test_error_is_thread_local(void) {
  small s;
  build_small(&s, 0);
  tq_gguf *g = NULL;
  CHECK_STATUS(tq_gguf_open_buffer(s.b.p, 10, &g), TQ_ERR_CORRUPT);
  char mine[512];
  snprintf(mine, sizeof mine, "%s", tq_gguf_last_error());
  CHECK(mine[0] != '\0');
  uint8_t *p = small_copy(&s);
  poke32(p, s.version, 7);
  thread_arg a = {p, s.b.n, "", TQ_OK};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, open_in_thread, &a) == 0);
  pthread_join(th, NULL);
  CHECK(a.st == TQ_ERR_FORMAT_VERSION && strstr(a.msg, "version 7") != NULL);
  CHECK(strcmp(tq_gguf_last_error(), mine) == 0);
  CHECK_OK(tq_gguf_open_buffer(s.b.p, s.b.n, &g));
  CHECK(strcmp(tq_gguf_last_error(), "") == 0);
  tq_gguf_close(g);
  free(p);
  free(s.b.p);
}

/* ------------------------------------------------------------------------ */
/* The file written by gguf-py                                               */
/* ------------------------------------------------------------------------ */

static int find_fixture(char *out, size_t n) {
  static const char rel[] = "tests/data/gguf/python_written.gguf";
  snprintf(out, n, "%s", rel);
  if (access(out, R_OK) == 0) return 1;
  /* The binary lives in BUILD/tests/: the repository is two levels up. */
  snprintf(out, n, "%s/../../%s", g_argv0_dir, rel);
  return access(out, R_OK) == 0;
}

static void test_python_fixture(void) {
  char path[1200];
  CHECKF(find_fixture(path, sizeof path), "tests/data/gguf/python_written.gguf not found");
  tq_gguf *g = NULL;
  CHECK_OK(tq_gguf_open(path, &g));
  if (!g) return;
  uint64_t u;
  int64_t s;
  double f;
  int b;
  tq_str str;
  tq_gguf_type et;
  uint64_t count;
  CHECK(tq_gguf_version(g) == 3);
  CHECK(tq_gguf_n_kv(g) == 19 && tq_gguf_n_tensors(g) == 3);
#define KEY(name) ((uint64_t)tq_gguf_find_key(g, name))
  CHECK(tq_gguf_find_key(g, "general.architecture") == 0);
  CHECK_OK(tq_gguf_get_string(g, KEY("general.architecture"), &str));
  CHECK(str_is(str, "tqaitest"));
  CHECK(tq_gguf_kv_type(g, KEY("test.u8")) == TQ_GGUF_UINT8);
  CHECK_OK(tq_gguf_get_uint(g, KEY("test.u8"), &u));
  CHECK(u == 200);
  CHECK(tq_gguf_kv_type(g, KEY("test.i8")) == TQ_GGUF_INT8);
  CHECK_OK(tq_gguf_get_int(g, KEY("test.i8"), &s));
  CHECK(s == -100);
  CHECK_STATUS(tq_gguf_get_uint(g, KEY("test.i8"), &u), TQ_ERR_MISMATCH);
  CHECK(tq_gguf_kv_type(g, KEY("test.u16")) == TQ_GGUF_UINT16);
  CHECK_OK(tq_gguf_get_uint(g, KEY("test.u16"), &u));
  CHECK(u == 60000);
  CHECK(tq_gguf_kv_type(g, KEY("test.i16")) == TQ_GGUF_INT16);
  CHECK_OK(tq_gguf_get_int(g, KEY("test.i16"), &s));
  CHECK(s == -30000);
  CHECK(tq_gguf_kv_type(g, KEY("test.u32")) == TQ_GGUF_UINT32);
  CHECK_OK(tq_gguf_get_uint(g, KEY("test.u32"), &u));
  CHECK(u == 4000000000u);
  CHECK(tq_gguf_kv_type(g, KEY("test.i32")) == TQ_GGUF_INT32);
  CHECK_OK(tq_gguf_get_int(g, KEY("test.i32"), &s));
  CHECK(s == -2000000000);
  CHECK(tq_gguf_kv_type(g, KEY("test.f32")) == TQ_GGUF_FLOAT32);
  CHECK_OK(tq_gguf_get_float(g, KEY("test.f32"), &f));
  CHECK(f == 0.15625);
  CHECK(tq_gguf_kv_type(g, KEY("test.u64")) == TQ_GGUF_UINT64);
  CHECK_OK(tq_gguf_get_uint(g, KEY("test.u64"), &u));
  CHECK(u == (1ull << 63) + 5);
  CHECK_STATUS(tq_gguf_get_int(g, KEY("test.u64"), &s), TQ_ERR_MISMATCH);
  CHECK(tq_gguf_kv_type(g, KEY("test.i64")) == TQ_GGUF_INT64);
  CHECK_OK(tq_gguf_get_int(g, KEY("test.i64"), &s));
  CHECK(s == -(INT64_C(1) << 62) - 7);
  CHECK(tq_gguf_kv_type(g, KEY("test.f64")) == TQ_GGUF_FLOAT64);
  CHECK_OK(tq_gguf_get_float(g, KEY("test.f64"), &f));
  CHECK(f == -1.0 / 3.0);
  CHECK_OK(tq_gguf_get_bool(g, KEY("test.bool"), &b));
  CHECK(b == 1);
  CHECK_OK(tq_gguf_get_string(g, KEY("test.str"), &str));
  CHECK(str_is(str, "h\xc3\xa9llo w\xc3\xb6rld"));

  const int64_t i32s[] = {1, -2, 3, INT32_MIN};
  CHECK_OK(tq_gguf_get_array(g, KEY("test.arr_i32"), &et, &count));
  CHECK(et == TQ_GGUF_INT32 && count == 4);
  for (uint64_t j = 0; j < 4; j++) {
    CHECK_OK(tq_gguf_array_int(g, KEY("test.arr_i32"), j, &s));
    CHECK(s == i32s[j]);
  }
  CHECK_STATUS(tq_gguf_array_uint(g, KEY("test.arr_i32"), 1, &u), TQ_ERR_MISMATCH);
  const double f32s[] = {0.5, -1.25, (double)3e38f};
  CHECK_OK(tq_gguf_get_array(g, KEY("test.arr_f32"), &et, &count));
  CHECK(et == TQ_GGUF_FLOAT32 && count == 3);
  for (uint64_t j = 0; j < 3; j++) {
    CHECK_OK(tq_gguf_array_float(g, KEY("test.arr_f32"), j, &f));
    CHECK(f == f32s[j]);
  }
  CHECK_OK(tq_gguf_get_array(g, KEY("test.arr_u16"), &et, &count));
  CHECK(et == TQ_GGUF_UINT16 && count == 2);
  CHECK_OK(tq_gguf_array_uint(g, KEY("test.arr_u16"), 1, &u));
  CHECK(u == 65535);
  CHECK_OK(tq_gguf_get_array(g, KEY("test.arr_bool"), &et, &count));
  CHECK(et == TQ_GGUF_BOOL && count == 3);
  const char *const toks[] = {"<s>", "a", "", ("\xc3\xbc" "ber")};
  CHECK_OK(tq_gguf_get_array(g, KEY("tokenizer.ggml.tokens"), &et, &count));
  CHECK(et == TQ_GGUF_STRING && count == 4);
  for (uint64_t j = 0; j < 4; j++) {
    CHECK_OK(tq_gguf_array_string(g, KEY("tokenizer.ggml.tokens"), j, &str));
    CHECK(str_is(str, toks[j]));
  }
  CHECK_OK(tq_gguf_get_array(g, KEY("test.nested"), &et, &count));
  CHECK(et == TQ_GGUF_ARRAY && count == 2);
#undef KEY

  tq_gguf_tensor t;
  CHECK_OK(tq_gguf_tensor_at(g, 0, &t));
  CHECK(str_is(t.name, "f32.weight") && t.type == TQ_TENSOR_F32 && t.n_dims == 2);
  CHECK(t.ne[0] == 8 && t.ne[1] == 3 && t.n_elements == 24 && t.n_bytes == 96);
  CHECK((uintptr_t)t.data % 32 == 0);
  for (int i = 0; i < 24; i++)
    CHECK(ld_f32((const uint8_t *)t.data + 4 * i) == (float)(i % 17 - 8) / 4.0f);
  CHECK_OK(tq_gguf_find_tensor(g, "f16.weight", &t));
  CHECK(t.type == TQ_TENSOR_F16 && t.ne[0] == 16 && t.ne[1] == 2 && t.n_bytes == 64);
  for (int i = 0; i < 32; i++)
    CHECK(tq_f16_to_f32(ld_u16((const uint8_t *)t.data + 2 * i)) == (float)(i % 11 - 5) / 8.0f);
  CHECK_OK(tq_gguf_find_tensor(g, "q8.weight", &t));
  CHECK(t.type == TQ_TENSOR_Q8_0 && t.ne[0] == 64 && t.ne[1] == 2 && t.n_bytes == 4 * 34);
  /* Q8_0 blocks: fp16 scale d, 32 int8 q; x ~ d * q within d / 2. */
  int close_enough = 1;
  for (int blk = 0; blk < 4; blk++) {
    const uint8_t *p = (const uint8_t *)t.data + 34 * blk;
    float d = tq_f16_to_f32(ld_u16(p));
    for (int k = 0; k < 32; k++) {
      int i = blk * 32 + k;
      float x = (float)(i % 23 - 11) / 16.0f;
      float y = d * (float)(int8_t)p[2 + k];
      if (!(fabsf(x - y) <= d * 0.5f + 1e-6f)) close_enough = 0;
    }
  }
  CHECK(close_enough);
  tq_gguf_close(g);
}

int main(int argc, char **argv) {
  (void)argc;
  g_verbose = getenv("TQ_TEST_VERBOSE") != NULL;
  snprintf(g_argv0_dir, sizeof g_argv0_dir, "%s", argv[0]);
  char *slash = strrchr(g_argv0_dir, '/');
  if (slash) *slash = '\0';
  else snprintf(g_argv0_dir, sizeof g_argv0_dir, ".");
  const char *tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/tq_gguf.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(g_dir)) {
    fprintf(stderr, "cannot create a temporary directory: %s\n", strerror(errno));
    printf("test_gguf: 0 passed, 1 failed\n");
    return 1;
  }
  TQ_RUN(test_small_valid);
  TQ_RUN(test_all_value_types);
  TQ_RUN(test_nesting_limit);
  TQ_RUN(test_truncated_every_length);
  TQ_RUN(test_value_cut_off);
  TQ_RUN(test_header_errors);
  TQ_RUN(test_string_errors);
  TQ_RUN(test_value_errors);
  TQ_RUN(test_alignment_errors);
  TQ_RUN(test_tensor_errors);
  TQ_RUN(test_round_trip_default_alignment);
  TQ_RUN(test_round_trip_alignment_64);
  TQ_RUN(test_round_trip_alignment_4096);
  TQ_RUN(test_writer_layout);
  TQ_RUN(test_writer_errors);
  TQ_RUN(test_reader_null_and_bad_index);
  TQ_RUN(test_error_is_thread_local);
  TQ_RUN(test_python_fixture);
  if (getenv("TQ_TEST_KEEP")) printf("kept %s\n", g_dir);
  else rmdir(g_dir);
  return tq_test_summary("test_gguf");
}
