/*
 * gguf.c - GGUF files: a reader for versions 2 and 3 (memory-mapped, or a
 * caller's buffer) and a version 3 writer.
 *
 * Layout (little-endian; the GGUF specification, docs/gguf.md of ggml):
 *   "GGUF", version u32, n_tensors u64, n_kv u64,
 *   n_kv x { key: string, value type u32, value },
 *   n_tensors x { name: string, n_dims u32, ne u64 x n_dims, type u32, offset u64 },
 *   zero padding to the alignment, then the data section; tensor i's bytes
 *   are at data_start + offset_i.
 *   A string is a u64 byte count and that many bytes (no NUL). An array value
 *   is an element type u32, an element count u64, then the elements.
 *
 * The reader treats the bytes as hostile: every count, length, offset and
 * size is checked against the bytes left and for integer overflow before it
 * is used, so a malformed file gives TQ_ERR_CORRUPT (or
 * TQ_ERR_FORMAT_VERSION) and a message in tq_gguf_last_error(), never an
 * out-of-bounds read. Policy choices beyond the specification's letter:
 *   - general.alignment, if present, must be a uint32 power of two in
 *     [8, TQ_GGUF_MAX_ALIGNMENT] (the specification asks for a multiple of 8;
 *     8 or more keeps every tensor's data aligned for 8-byte elements).
 *   - Nested arrays (arrays of arrays, which the specification allows) are
 *     accepted and validated to a depth of TQ_GGUF_MAX_DEPTH; they are
 *     reported by tq_gguf_get_array with element type TQ_GGUF_ARRAY and
 *     their elements cannot be read (TQ_ERR_MISMATCH). Deeper nesting is
 *     TQ_ERR_CORRUPT.
 *   - A bool must be 0 or 1; duplicate keys, duplicate tensor names and
 *     tensors whose data overlap are rejected. Keys longer than 65535 bytes
 *     are rejected (the specification's limit); tensor names of any length
 *     are read, though the writer keeps them to 63 bytes (llama.cpp's limit).
 *   - A dimension of 0 is allowed (an empty tensor, 0 bytes); each dimension,
 *     the element count and the byte count must fit in int64 as in ggml.
 *   - Bytes after the last tensor's data (or after the tensor infos of a
 *     file without tensors) are ignored.
 *   - Tensor types: every type id of ggml's enum whose block layout is fixed
 *     (k_types below) is accepted, also those the engine cannot compute
 *     with (tq_tensor_type_supported says which it can); removed and unknown
 *     ids are TQ_ERR_CORRUPT.
 *
 * Metadata is indexed once at open: one array of entries, one array of
 * offsets of string-array elements (so element access is O(1)) and sorted
 * name indexes of keys and tensor names (duplicates found in O(n log n),
 * lookups by binary search).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqai_engine.h"

#define TQ_GGUF_MAGIC "GGUF"
#define TQ_GGUF_HEADER_BYTES 24u /* magic, version, n_tensors, n_kv */
#define TQ_GGUF_DEFAULT_ALIGNMENT 32u
#define TQ_GGUF_MIN_ALIGNMENT 8u
/* Alignments above this are refused: no writer uses them, and each costs up
 * to that many bytes of padding. */
#define TQ_GGUF_MAX_ALIGNMENT (1u << 20)
#define TQ_GGUF_MAX_DEPTH 8      /* array nesting levels, the outer one included */
#define TQ_GGUF_MAX_DIMS 4u
#define TQ_GGUF_MAX_KEY 65535u   /* specification: keys are at most 2^16-1 bytes */
#define TQ_GGUF_MAX_NAME 64u     /* specification: tensor names are at most 64 bytes */
/* The writer keeps names to 63 bytes: llama.cpp stores them NUL-terminated
 * in char[GGML_MAX_NAME = 64] and refuses longer ones. */
#define TQ_GGUF_WRITER_MAX_NAME 63u
/* Smallest encodings, used to bound the counts by the bytes left: a kv is a
 * key length, a type and a 1-byte value; a tensor info a name length, n_dims,
 * one dimension, a type and an offset; a string a length; a nested array an
 * element type and a count. */
#define TQ_GGUF_MIN_KV 13u
#define TQ_GGUF_MIN_TENSOR 32u
#define TQ_GGUF_MIN_STRING 8u
#define TQ_GGUF_MIN_ARRAY 12u

/* ------------------------------------------------------------------------ */
/* Tensor type table                                                         */
/* ------------------------------------------------------------------------ */

/* Elements per block and bytes per block of each ggml type id, from the
 * block structures of ggml (ggml-common.h) and checked against the GGUF
 * specification; {0, 0} marks ids that were removed or never assigned.
 * (gguf-py lists Q8_1 as 40 bytes: its two fp16 scales were once floats;
 * ggml's block_q8_1 is 2 + 2 + 32 = 36.) Kept here, not taken from quant.c,
 * so the file reader stands alone. */
typedef struct type_info {
  uint32_t block;
  uint32_t bytes;
} type_info;

#define TQ_GGML_TYPE_COUNT 42u
static const type_info k_types[TQ_GGML_TYPE_COUNT] = {
    [0] = {1, 4},      /* F32 */
    [1] = {1, 2},      /* F16 */
    [2] = {32, 18},    /* Q4_0: fp16 d, 16 bytes of nibbles */
    [3] = {32, 20},    /* Q4_1: fp16 d, m, 16 bytes */
    [6] = {32, 22},    /* Q5_0: fp16 d, 4 bytes high bits, 16 bytes */
    [7] = {32, 24},    /* Q5_1: fp16 d, m, 4 + 16 bytes */
    [8] = {32, 34},    /* Q8_0: fp16 d, 32 int8 */
    [9] = {32, 36},    /* Q8_1: fp16 d, s, 32 int8 */
    [10] = {256, 84},  /* Q2_K */
    [11] = {256, 110}, /* Q3_K */
    [12] = {256, 144}, /* Q4_K */
    [13] = {256, 176}, /* Q5_K */
    [14] = {256, 210}, /* Q6_K */
    [15] = {256, 292}, /* Q8_K: f32 d, 256 int8, 16 int16 sums */
    [16] = {256, 66},  /* IQ2_XXS */
    [17] = {256, 74},  /* IQ2_XS */
    [18] = {256, 98},  /* IQ3_XXS */
    [19] = {256, 50},  /* IQ1_S */
    [20] = {32, 18},   /* IQ4_NL */
    [21] = {256, 110}, /* IQ3_S */
    [22] = {256, 82},  /* IQ2_S */
    [23] = {256, 136}, /* IQ4_XS */
    [24] = {1, 1},     /* I8 */
    [25] = {1, 2},     /* I16 */
    [26] = {1, 4},     /* I32 */
    [27] = {1, 8},     /* I64 */
    [28] = {1, 8},     /* F64 */
    [29] = {256, 56},  /* IQ1_M */
    [30] = {1, 2},     /* BF16 */
    [34] = {256, 54},  /* TQ1_0 */
    [35] = {256, 66},  /* TQ2_0 */
    [39] = {32, 17},   /* MXFP4: e8m0 scale, 16 bytes */
    [40] = {64, 36},   /* NVFP4: 4 e4m3 scales, 32 bytes */
    [41] = {128, 18},  /* Q1_0: fp16 d, 16 bytes of bits */
};

static const type_info *type_info_of(uint32_t t) {
  if (t >= TQ_GGML_TYPE_COUNT || k_types[t].block == 0) return NULL;
  return &k_types[t];
}

/* Bytes of a tensor of type ti and shape ne[0..n_dims), or 0 with *bad set
 * when ne[0] is not a whole number of blocks (*bad = 1), the element count
 * overflows int64 (*bad = 2) or the byte count does (*bad = 3). ggml keeps
 * both counts in int64_t, hence the INT64_MAX limits. */
static uint64_t tensor_bytes(const type_info *ti, uint32_t n_dims, const uint64_t *ne,
                             uint64_t *n_elements, int *bad) {
  *bad = 0;
  uint64_t n = 1;
  for (uint32_t d = 0; d < n_dims; d++) {
    if (ne[d] > (uint64_t)INT64_MAX || (ne[d] != 0 && n > (uint64_t)INT64_MAX / ne[d])) {
      *bad = 2;
      return 0;
    }
    n *= ne[d];
  }
  if (ne[0] % ti->block != 0) {
    *bad = 1;
    return 0;
  }
  /* Rows of ne[0] elements, each (ne[0] / block) blocks. */
  uint64_t bytes = ne[0] / ti->block;
  if (bytes > (uint64_t)INT64_MAX / ti->bytes) {
    *bad = 3;
    return 0;
  }
  bytes *= ti->bytes;
  for (uint32_t d = 1; d < n_dims; d++) {
    if (ne[d] != 0 && bytes > (uint64_t)INT64_MAX / ne[d]) {
      *bad = 3;
      return 0;
    }
    bytes *= ne[d];
  }
  *n_elements = n;
  return bytes;
}

/* Size of a fixed-size metadata value, 0 for strings, arrays and unknown
 * types. */
static uint32_t scalar_size(uint32_t t) {
  switch (t) {
    case TQ_GGUF_UINT8:
    case TQ_GGUF_INT8:
    case TQ_GGUF_BOOL:
      return 1;
    case TQ_GGUF_UINT16:
    case TQ_GGUF_INT16:
      return 2;
    case TQ_GGUF_UINT32:
    case TQ_GGUF_INT32:
    case TQ_GGUF_FLOAT32:
      return 4;
    case TQ_GGUF_UINT64:
    case TQ_GGUF_INT64:
    case TQ_GGUF_FLOAT64:
      return 8;
    default:
      return 0;
  }
}

static const char *value_type_name(uint32_t t) {
  static const char *const names[] = {"uint8",  "int8",   "uint16", "int16",  "uint32",
                                      "int32",  "float32", "bool",  "string", "array",
                                      "uint64", "int64",  "float64"};
  return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* ------------------------------------------------------------------------ */
/* Error messages                                                            */
/* ------------------------------------------------------------------------ */

/* Why the last open on this thread failed; "" after a success. */
static _Thread_local char g_last_error[512];

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static tq_status corrupt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return TQ_ERR_CORRUPT;
}

const char *tq_gguf_last_error(void) { return g_last_error; }

/* A file's name or key for a message: at most TQ_GGUF_MAX_NAME bytes, bytes
 * outside printable ASCII shown as '?', "..." when cut. */
typedef struct shown {
  char s[TQ_GGUF_MAX_NAME + 4];
} shown;

static shown show(const void *data, uint64_t len) {
  shown r;
  const uint8_t *p = data;
  uint64_t n = len < TQ_GGUF_MAX_NAME ? len : TQ_GGUF_MAX_NAME;
  for (uint64_t i = 0; i < n; i++) r.s[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
  if (len > n) {
    memcpy(r.s + n, "...", 4);
  } else {
    r.s[n] = '\0';
  }
  return r;
}

/* ------------------------------------------------------------------------ */
/* Little-endian loads (byte by byte: any alignment, any host order)         */
/* ------------------------------------------------------------------------ */

static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (unsigned)p[1] << 8); }

static uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32; }

/* ------------------------------------------------------------------------ */
/* The parsed file                                                           */
/* ------------------------------------------------------------------------ */

typedef struct gguf_kv {
  const char *key;
  uint64_t key_len;
  uint32_t type;      /* tq_gguf_type */
  uint32_t elem_type; /* arrays: element type */
  uint64_t count;     /* arrays: element count */
  uint64_t off;       /* file offset of the value: the scalar, a string's length
                         field, or an array's first element */
  uint64_t str_first; /* string arrays: index of element 0 in str_offs */
} gguf_kv;

/* A name (key or tensor name) in a sorted index. */
typedef struct name_ref {
  const char *p;
  uint64_t len;
  uint64_t idx;
} name_ref;

struct tq_gguf {
  const uint8_t *base; /* the file's bytes */
  uint64_t size;
  void *map; /* the mapping when opened from a path, else NULL */
  size_t map_size;
  uint32_t version;
  uint32_t alignment;
  uint64_t data_start; /* file offset of the data section */
  uint64_t n_kv, n_tensors;
  gguf_kv *kv;              /* n_kv */
  tq_gguf_tensor *tensors;  /* n_tensors */
  uint64_t *str_offs;       /* file offsets of the length fields of string-array elements */
  uint64_t n_str, cap_str;
  name_ref *key_index;      /* n_kv, sorted by name */
  name_ref *tensor_index;   /* n_tensors, sorted by name */
};

static void gguf_free(tq_gguf *g) {
  if (!g) return;
  free(g->kv);
  free(g->tensors);
  free(g->str_offs);
  free(g->key_index);
  free(g->tensor_index);
  if (g->map) munmap(g->map, g->map_size);
  free(g);
}

/* Byte-wise order of (p, len) names, shorter first on a common prefix. */
static int cmp_name(const char *a, uint64_t al, const char *b, uint64_t bl) {
  uint64_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, (size_t)n) : 0;
  if (c) return c;
  return al < bl ? -1 : (al > bl ? 1 : 0);
}

/* Name order, then index order, so equal names sort by position and a
 * duplicate is reported with its first two occurrences. */
static int cmp_ref(const void *x, const void *y) {
  const name_ref *a = x, *b = y;
  int c = cmp_name(a->p, a->len, b->p, b->len);
  if (c) return c;
  return a->idx < b->idx ? -1 : (a->idx > b->idx ? 1 : 0);
}

/* Index of name in a sorted index of n entries, or -1. */
static int64_t index_find(const name_ref *idx, uint64_t n, const char *name, uint64_t len) {
  uint64_t lo = 0, hi = n;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    int c = cmp_name(idx[mid].p, idx[mid].len, name, len);
    if (c == 0) {
      /* Names are unique once a file is open. */
      return (int64_t)idx[mid].idx;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct parser {
  const uint8_t *base;
  uint64_t size;
  uint64_t pos; /* invariant: pos <= size */
  tq_gguf *g;
} parser;

static uint64_t left(const parser *p) { return p->size - p->pos; }

/* Reads a u32/u64 field named `what` (for the message) at p->pos. */
static tq_status rd_u32(parser *p, const char *ctx, const char *what, uint32_t *v) {
  if (left(p) < 4)
    return corrupt("%s: %s at offset %" PRIu64 " is cut off by the end of the file (%" PRIu64
                   " bytes)",
                   ctx, what, p->pos, p->size);
  *v = ld32(p->base + p->pos);
  p->pos += 4;
  return TQ_OK;
}

static tq_status rd_u64(parser *p, const char *ctx, const char *what, uint64_t *v) {
  if (left(p) < 8)
    return corrupt("%s: %s at offset %" PRIu64 " is cut off by the end of the file (%" PRIu64
                   " bytes)",
                   ctx, what, p->pos, p->size);
  *v = ld64(p->base + p->pos);
  p->pos += 8;
  return TQ_OK;
}

/* Reads a string; *off receives the offset of its length field. */
static tq_status rd_str(parser *p, const char *ctx, const char *what, uint64_t *off,
                        uint64_t *len) {
  uint64_t at = p->pos;
  tq_status st = rd_u64(p, ctx, what, len);
  if (st != TQ_OK) return st;
  if (*len > left(p))
    return corrupt("%s: %s length %" PRIu64 " at offset %" PRIu64 " exceeds the %" PRIu64
                   " bytes left in the file",
                   ctx, what, *len, at, left(p));
  *off = at;
  p->pos += *len;
  return TQ_OK;
}

/* Makes room for n more string-array offsets (n <= bytes left / 8, so the
 * total stays below the file size / 8). */
static tq_status reserve_strs(tq_gguf *g, uint64_t n) {
  if (n <= g->cap_str - g->n_str) return TQ_OK;
  uint64_t want = g->n_str + n, cap = g->cap_str ? g->cap_str : 64;
  while (cap < want) cap = cap > UINT64_MAX / 2 ? want : cap * 2;
  if (cap > SIZE_MAX / sizeof(uint64_t)) return TQ_ERR_OUT_OF_MEMORY;
  uint64_t *p = realloc(g->str_offs, (size_t)cap * sizeof *p);
  if (!p) return TQ_ERR_OUT_OF_MEMORY;
  g->str_offs = p;
  g->cap_str = cap;
  return TQ_OK;
}

/* Validates the elements of an array of `count` elements of type elem at
 * p->pos and moves past them. A string array at depth 1 (a top-level value)
 * has its element offsets appended to g->str_offs; nested arrays are only
 * validated. */
static tq_status parse_array_body(parser *p, const char *ctx, uint32_t elem, uint64_t count,
                                  int depth) {
  uint32_t es = scalar_size(elem);
  if (es) {
    if (count > left(p) / es)
      return corrupt("%s: array of %" PRIu64 " %s elements at offset %" PRIu64
                     " exceeds the %" PRIu64 " bytes left in the file",
                     ctx, count, value_type_name(elem), p->pos, left(p));
    if (elem == TQ_GGUF_BOOL) {
      for (uint64_t j = 0; j < count; j++)
        if (p->base[p->pos + j] > 1)
          return corrupt("%s: bool array element %" PRIu64 " is %u (must be 0 or 1)", ctx, j,
                         p->base[p->pos + j]);
    }
    p->pos += count * es;
    return TQ_OK;
  }
  if (elem == TQ_GGUF_STRING) {
    if (count > left(p) / TQ_GGUF_MIN_STRING)
      return corrupt("%s: array of %" PRIu64 " strings at offset %" PRIu64
                     " cannot fit in the %" PRIu64 " bytes left in the file",
                     ctx, count, p->pos, left(p));
    if (depth == 1) {
      tq_status st = reserve_strs(p->g, count);
      if (st != TQ_OK) return st;
    }
    for (uint64_t j = 0; j < count; j++) {
      uint64_t off = 0, len = 0;
      tq_status st = rd_str(p, ctx, "string array element", &off, &len);
      if (st != TQ_OK) return st;
      if (depth == 1) p->g->str_offs[p->g->n_str++] = off;
    }
    return TQ_OK;
  }
  if (elem == TQ_GGUF_ARRAY) {
    if (depth >= TQ_GGUF_MAX_DEPTH)
      return corrupt("%s: arrays nested more than %d deep", ctx, TQ_GGUF_MAX_DEPTH);
    if (count > left(p) / TQ_GGUF_MIN_ARRAY)
      return corrupt("%s: array of %" PRIu64 " arrays at offset %" PRIu64
                     " cannot fit in the %" PRIu64 " bytes left in the file",
                     ctx, count, p->pos, left(p));
    for (uint64_t j = 0; j < count; j++) {
      uint32_t sub = 0;
      uint64_t sub_count = 0;
      tq_status st = rd_u32(p, ctx, "nested array element type", &sub);
      if (st == TQ_OK) st = rd_u64(p, ctx, "nested array count", &sub_count);
      if (st == TQ_OK) st = parse_array_body(p, ctx, sub, sub_count, depth + 1);
      if (st != TQ_OK) return st;
    }
    return TQ_OK;
  }
  return corrupt("%s: unknown array element type %" PRIu32 " at offset %" PRIu64, ctx, elem,
                 p->pos - 12);
}

static tq_status parse_kv(parser *p, uint64_t i) {
  gguf_kv *kv = &p->g->kv[i];
  char ctx[128];
  snprintf(ctx, sizeof ctx, "kv %" PRIu64, i);
  uint64_t off = 0, len = 0;
  tq_status st = rd_str(p, ctx, "key", &off, &len);
  if (st != TQ_OK) return st;
  kv->key = (const char *)p->base + off + 8;
  kv->key_len = len;
  snprintf(ctx, sizeof ctx, "kv %" PRIu64 " '%s'", i, show(kv->key, len).s);
  if (len > TQ_GGUF_MAX_KEY)
    return corrupt("%s: key of %" PRIu64 " bytes (at most %u allowed)", ctx, len,
                   TQ_GGUF_MAX_KEY);
  st = rd_u32(p, ctx, "value type", &kv->type);
  if (st != TQ_OK) return st;

  uint32_t es = scalar_size(kv->type);
  if (es) {
    if (left(p) < es)
      return corrupt("%s: %s value at offset %" PRIu64 " is cut off by the end of the file (%" PRIu64
                     " bytes)",
                     ctx, value_type_name(kv->type), p->pos, p->size);
    if (kv->type == TQ_GGUF_BOOL && p->base[p->pos] > 1)
      return corrupt("%s: bool value %u (must be 0 or 1)", ctx, p->base[p->pos]);
    kv->off = p->pos;
    p->pos += es;
    return TQ_OK;
  }
  if (kv->type == TQ_GGUF_STRING) return rd_str(p, ctx, "string value", &kv->off, &len);
  if (kv->type == TQ_GGUF_ARRAY) {
    st = rd_u32(p, ctx, "array element type", &kv->elem_type);
    if (st == TQ_OK) st = rd_u64(p, ctx, "array count", &kv->count);
    if (st != TQ_OK) return st;
    kv->off = p->pos;
    kv->str_first = p->g->n_str;
    return parse_array_body(p, ctx, kv->elem_type, kv->count, 1);
  }
  return corrupt("%s: unknown value type %" PRIu32 " at offset %" PRIu64, ctx, kv->type,
                 p->pos - 4);
}

/* Sorts n names and rejects a duplicate; `what` is "key" or "tensor name". */
static tq_status check_unique(name_ref *idx, uint64_t n, const char *what) {
  if (n > 1) qsort(idx, (size_t)n, sizeof *idx, cmp_ref);
  for (uint64_t i = 1; i < n; i++)
    if (cmp_name(idx[i - 1].p, idx[i - 1].len, idx[i].p, idx[i].len) == 0)
      return corrupt("duplicate %s '%s' (entries %" PRIu64 " and %" PRIu64 ")", what,
                     show(idx[i].p, idx[i].len).s, idx[i - 1].idx, idx[i].idx);
  return TQ_OK;
}

static tq_status read_alignment(tq_gguf *g) {
  static const char key[] = "general.alignment";
  g->alignment = TQ_GGUF_DEFAULT_ALIGNMENT;
  int64_t i = index_find(g->key_index, g->n_kv, key, sizeof key - 1);
  if (i < 0) return TQ_OK;
  const gguf_kv *kv = &g->kv[i];
  if (kv->type != TQ_GGUF_UINT32)
    return corrupt("general.alignment has type %s (must be uint32)", value_type_name(kv->type));
  uint32_t a = ld32(g->base + kv->off);
  if (a < TQ_GGUF_MIN_ALIGNMENT || a > TQ_GGUF_MAX_ALIGNMENT || (a & (a - 1)) != 0)
    return corrupt("general.alignment is %" PRIu32 " (must be a power of two from %u to %u)", a,
                   TQ_GGUF_MIN_ALIGNMENT, TQ_GGUF_MAX_ALIGNMENT);
  g->alignment = a;
  return TQ_OK;
}

/* Tensor i's info, with its offset relative to the data section in
 * *offset; the data pointer is set once the data section is known. */
static tq_status parse_tensor_info(parser *p, uint64_t i, uint64_t *offset) {
  tq_gguf_tensor *t = &p->g->tensors[i];
  char ctx[128];
  snprintf(ctx, sizeof ctx, "tensor %" PRIu64, i);
  uint64_t off = 0, len = 0;
  tq_status st = rd_str(p, ctx, "name", &off, &len);
  if (st != TQ_OK) return st;
  t->name.data = (const char *)p->base + off + 8;
  t->name.len = len;
  snprintf(ctx, sizeof ctx, "tensor '%s'", show(t->name.data, len).s);
  st = rd_u32(p, ctx, "n_dims", &t->n_dims);
  if (st != TQ_OK) return st;
  if (t->n_dims < 1 || t->n_dims > TQ_GGUF_MAX_DIMS)
    return corrupt("%s: n_dims %" PRIu32 " (must be 1 to %u)", ctx, t->n_dims, TQ_GGUF_MAX_DIMS);
  for (uint32_t d = 0; d < TQ_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
  for (uint32_t d = 0; d < t->n_dims; d++) {
    st = rd_u64(p, ctx, "dimension", &t->ne[d]);
    if (st != TQ_OK) return st;
  }
  uint32_t type = 0;
  st = rd_u32(p, ctx, "type", &type);
  if (st == TQ_OK) st = rd_u64(p, ctx, "data offset", offset);
  if (st != TQ_OK) return st;
  const type_info *ti = type_info_of(type);
  if (!ti) return corrupt("%s: unknown tensor type %" PRIu32, ctx, type);
  t->type = (tq_tensor_type)type;
  int bad;
  t->n_bytes = tensor_bytes(ti, t->n_dims, t->ne, &t->n_elements, &bad);
  if (bad == 1)
    return corrupt("%s: ne[0] = %" PRIu64 " is not a multiple of the type's block of %" PRIu32,
                   ctx, t->ne[0], ti->block);
  if (bad)
    return corrupt("%s: shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64
                   "] overflows the %s count",
                   ctx, t->ne[0], t->ne[1], t->ne[2], t->ne[3], bad == 2 ? "element" : "byte");
  if (*offset % p->g->alignment != 0)
    return corrupt("%s: data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                   ctx, *offset, p->g->alignment);
  return TQ_OK;
}

typedef struct span {
  uint64_t off, len, idx;
} span;

static int cmp_span(const void *x, const void *y) {
  const span *a = x, *b = y;
  if (a->off != b->off) return a->off < b->off ? -1 : 1;
  return a->idx < b->idx ? -1 : (a->idx > b->idx ? 1 : 0);
}

/* Places every tensor's data in the file and rejects data past the end or
 * overlapping another tensor's. offsets: relative to the data section. */
static tq_status place_tensors(tq_gguf *g, const uint64_t *offsets) {
  uint64_t room = g->size - g->data_start; /* bytes of the data section */
  for (uint64_t i = 0; i < g->n_tensors; i++) {
    tq_gguf_tensor *t = &g->tensors[i];
    if (offsets[i] > room || t->n_bytes > room - offsets[i])
      return corrupt("tensor '%s': data [offset %" PRIu64 ", %" PRIu64
                     " bytes] extends past the end of the file (%" PRIu64
                     " bytes, data section at %" PRIu64 ")",
                     show(t->name.data, t->name.len).s, offsets[i], t->n_bytes, g->size,
                     g->data_start);
    t->data = g->base + g->data_start + offsets[i];
  }
  if (g->n_tensors < 2) return TQ_OK;
  span *s = malloc((size_t)g->n_tensors * sizeof *s);
  if (!s) return TQ_ERR_OUT_OF_MEMORY;
  uint64_t n = 0;
  for (uint64_t i = 0; i < g->n_tensors; i++)
    if (g->tensors[i].n_bytes) s[n++] = (span){offsets[i], g->tensors[i].n_bytes, i};
  qsort(s, (size_t)n, sizeof *s, cmp_span);
  tq_status st = TQ_OK;
  for (uint64_t k = 1; k < n; k++) {
    /* No overflow: off + len <= room was checked above. */
    if (s[k].off < s[k - 1].off + s[k - 1].len) {
      const tq_gguf_tensor *a = &g->tensors[s[k - 1].idx], *b = &g->tensors[s[k].idx];
      shown an = show(a->name.data, a->name.len);
      st = corrupt("tensor '%s': data [offset %" PRIu64 ", %" PRIu64
                   " bytes] overlaps tensor '%s' [offset %" PRIu64 ", %" PRIu64 " bytes]",
                   show(b->name.data, b->name.len).s, s[k].off, s[k].len, an.s, s[k - 1].off,
                   s[k - 1].len);
      break;
    }
  }
  free(s);
  return st;
}

static tq_status parse(const uint8_t *base, uint64_t size, tq_gguf **out) {
  if (size < TQ_GGUF_HEADER_BYTES) {
    if (size >= 4 && memcmp(base, TQ_GGUF_MAGIC, 4) != 0)
      return corrupt("not a GGUF file (magic %02x %02x %02x %02x)", base[0], base[1], base[2],
                     base[3]);
    return corrupt("file of %" PRIu64 " bytes is shorter than the %u-byte GGUF header", size,
                   TQ_GGUF_HEADER_BYTES);
  }
  if (memcmp(base, TQ_GGUF_MAGIC, 4) != 0)
    return corrupt("not a GGUF file (magic %02x %02x %02x %02x)", base[0], base[1], base[2],
                   base[3]);
  uint32_t version = ld32(base + 4);
  if (version != 2 && version != 3) {
    if (version == 1)
      set_error("GGUF version 1 (32-bit counts) is not supported; convert the file to v3");
    else if ((version & 0xffffu) == 0 && (version >> 24) >= 2 && (version >> 24) <= 3)
      set_error("GGUF version %" PRIu32 " looks like a big-endian file, which is not supported",
                version);
    else
      set_error("GGUF version %" PRIu32 " is not supported (only 2 and 3)", version);
    return TQ_ERR_FORMAT_VERSION;
  }
  uint64_t n_tensors = ld64(base + 8), n_kv = ld64(base + 16);
  uint64_t rest = size - TQ_GGUF_HEADER_BYTES;
  if (n_kv > rest / TQ_GGUF_MIN_KV)
    return corrupt("header: %" PRIu64 " metadata entries cannot fit in the %" PRIu64
                   " bytes after the header",
                   n_kv, rest);
  if (n_tensors > (rest - n_kv * TQ_GGUF_MIN_KV) / TQ_GGUF_MIN_TENSOR)
    return corrupt("header: %" PRIu64 " tensors and %" PRIu64
                   " metadata entries cannot fit in the %" PRIu64 " bytes after the header",
                   n_tensors, n_kv, rest);

  /* Both counts are now below size / 13, so these sizes cannot overflow on
   * a 64-bit host; on a 32-bit one the casts are checked. */
  tq_gguf *g = NULL;
  if (n_kv <= SIZE_MAX / sizeof(gguf_kv) && n_tensors <= SIZE_MAX / sizeof(tq_gguf_tensor))
    g = calloc(1, sizeof *g);
  if (!g) {
    set_error("out of memory while indexing the file");
    return TQ_ERR_OUT_OF_MEMORY;
  }
  g->base = base;
  g->size = size;
  g->version = version;
  g->n_kv = n_kv;
  g->n_tensors = n_tensors;
  g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
  g->key_index = malloc((n_kv ? (size_t)n_kv : 1) * sizeof *g->key_index);
  g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
  g->tensor_index = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *g->tensor_index);
  uint64_t *offsets = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *offsets);
  tq_status st = TQ_OK;
  if (!g->kv || !g->key_index || !g->tensors || !g->tensor_index || !offsets) {
    st = TQ_ERR_OUT_OF_MEMORY;
    goto fail;
  }

  parser p = {base, size, TQ_GGUF_HEADER_BYTES, g};
  for (uint64_t i = 0; i < n_kv && st == TQ_OK; i++) st = parse_kv(&p, i);
  if (st != TQ_OK) goto fail;
  for (uint64_t i = 0; i < n_kv; i++)
    g->key_index[i] = (name_ref){g->kv[i].key, g->kv[i].key_len, i};
  st = check_unique(g->key_index, n_kv, "key");
  if (st == TQ_OK) st = read_alignment(g);
  for (uint64_t i = 0; i < n_tensors && st == TQ_OK; i++) st = parse_tensor_info(&p, i, &offsets[i]);
  if (st != TQ_OK) goto fail;
  for (uint64_t i = 0; i < n_tensors; i++)
    g->tensor_index[i] = (name_ref){g->tensors[i].name.data, g->tensors[i].name.len, i};
  st = check_unique(g->tensor_index, n_tensors, "tensor name");
  if (st != TQ_OK) goto fail;

  /* The data section starts at the next multiple of the alignment. A file
   * without tensors may end before it. */
  uint64_t pad = (g->alignment - p.pos % g->alignment) % g->alignment;
  if (n_tensors > 0 && pad > left(&p)) {
    st = corrupt("the data section would start at offset %" PRIu64
                 " (alignment %" PRIu32 "), past the end of the file (%" PRIu64 " bytes)",
                 p.pos + pad, g->alignment, size);
    goto fail;
  }
  g->data_start = pad <= left(&p) ? p.pos + pad : size;
  if (n_tensors > 0) st = place_tensors(g, offsets);
  if (st != TQ_OK) goto fail;
  free(offsets);
  *out = g;
  return TQ_OK;

fail:
  if (st == TQ_ERR_OUT_OF_MEMORY) set_error("out of memory while indexing the file");
  free(offsets);
  gguf_free(g);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */
/* ------------------------------------------------------------------------ */

static void io_error(const char *what, const char *path, int err) {
  char msg[128];
  if (strerror_r(err, msg, sizeof msg) != 0) snprintf(msg, sizeof msg, "errno %d", err);
  set_error("%s '%s': %s", what, path, msg);
}

tq_status tq_gguf_open(const char *path, tq_gguf **out) {
  g_last_error[0] = '\0';
  if (!out || !path) {
    set_error("tq_gguf_open: NULL %s", out ? "path" : "output");
    if (out) *out = NULL;
    return TQ_ERR_INVALID_ARGUMENT;
  }
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    io_error("cannot open", path, errno);
    return TQ_ERR_IO;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    io_error("cannot stat", path, errno);
    close(fd);
    return TQ_ERR_IO;
  }
  if (!S_ISREG(sb.st_mode)) {
    set_error("'%s' is not a regular file", path);
    close(fd);
    return TQ_ERR_IO;
  }
  if (sb.st_size < 0 || (uint64_t)sb.st_size > SIZE_MAX) {
    set_error("'%s' is too large to map", path);
    close(fd);
    return TQ_ERR_IO;
  }
  size_t size = (size_t)sb.st_size;
  if (size == 0) { /* mmap refuses empty files; the parser reports it */
    close(fd);
    static const uint8_t empty[1] = {0};
    return parse(empty, 0, out);
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  close(fd);
  if (map == MAP_FAILED) {
    io_error("cannot map", path, map_err);
    return TQ_ERR_IO;
  }
  tq_status st = parse(map, size, out);
  if (st != TQ_OK) {
    munmap(map, size);
    return st;
  }
  (*out)->map = map;
  (*out)->map_size = size;
  return TQ_OK;
}

tq_status tq_gguf_open_buffer(const void *data, size_t size, tq_gguf **out) {
  g_last_error[0] = '\0';
  if (!out || (!data && size)) {
    set_error("tq_gguf_open_buffer: NULL %s", out ? "data" : "output");
    if (out) *out = NULL;
    return TQ_ERR_INVALID_ARGUMENT;
  }
  *out = NULL;
  static const uint8_t empty[1] = {0};
  return parse(data ? data : empty, size, out);
}

void tq_gguf_close(tq_gguf *g) { gguf_free(g); }

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

uint32_t tq_gguf_version(const tq_gguf *g) { return g ? g->version : 0; }
uint64_t tq_gguf_n_kv(const tq_gguf *g) { return g ? g->n_kv : 0; }
uint64_t tq_gguf_n_tensors(const tq_gguf *g) { return g ? g->n_tensors : 0; }

int64_t tq_gguf_find_key(const tq_gguf *g, const char *key) {
  if (!g || !key) return -1;
  return index_find(g->key_index, g->n_kv, key, strlen(key));
}

tq_str tq_gguf_key(const tq_gguf *g, uint64_t i) {
  tq_str s = {NULL, 0};
  if (g && i < g->n_kv) {
    s.data = g->kv[i].key;
    s.len = g->kv[i].key_len;
  }
  return s;
}

tq_gguf_type tq_gguf_kv_type(const tq_gguf *g, uint64_t i) {
  if (!g || i >= g->n_kv) return (tq_gguf_type)-1;
  return (tq_gguf_type)g->kv[i].type;
}

/* Integer value of type t at p as an unsigned value: TQ_ERR_MISMATCH for
 * non-integer types and negative values. */
static tq_status load_uint(uint32_t t, const uint8_t *p, uint64_t *out) {
  int64_t s;
  switch (t) {
    case TQ_GGUF_UINT8: *out = p[0]; return TQ_OK;
    case TQ_GGUF_UINT16: *out = ld16(p); return TQ_OK;
    case TQ_GGUF_UINT32: *out = ld32(p); return TQ_OK;
    case TQ_GGUF_UINT64: *out = ld64(p); return TQ_OK;
    case TQ_GGUF_INT8: s = (int8_t)p[0]; break;
    case TQ_GGUF_INT16: s = (int16_t)ld16(p); break;
    case TQ_GGUF_INT32: s = (int32_t)ld32(p); break;
    case TQ_GGUF_INT64: s = (int64_t)ld64(p); break;
    default: return TQ_ERR_MISMATCH;
  }
  if (s < 0) return TQ_ERR_MISMATCH;
  *out = (uint64_t)s;
  return TQ_OK;
}

/* Integer value of type t at p as a signed value: TQ_ERR_MISMATCH for
 * non-integer types and uint64 values above INT64_MAX. (The narrowing casts
 * to signed types are two's complement on every target we build for.) */
static tq_status load_int(uint32_t t, const uint8_t *p, int64_t *out) {
  switch (t) {
    case TQ_GGUF_UINT8: *out = p[0]; return TQ_OK;
    case TQ_GGUF_UINT16: *out = ld16(p); return TQ_OK;
    case TQ_GGUF_UINT32: *out = ld32(p); return TQ_OK;
    case TQ_GGUF_UINT64: {
      uint64_t u = ld64(p);
      if (u > (uint64_t)INT64_MAX) return TQ_ERR_MISMATCH;
      *out = (int64_t)u;
      return TQ_OK;
    }
    case TQ_GGUF_INT8: *out = (int8_t)p[0]; return TQ_OK;
    case TQ_GGUF_INT16: *out = (int16_t)ld16(p); return TQ_OK;
    case TQ_GGUF_INT32: *out = (int32_t)ld32(p); return TQ_OK;
    case TQ_GGUF_INT64: *out = (int64_t)ld64(p); return TQ_OK;
    default: return TQ_ERR_MISMATCH;
  }
}

static tq_status load_float(uint32_t t, const uint8_t *p, double *out) {
  if (t == TQ_GGUF_FLOAT32) {
    uint32_t u = ld32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    *out = f;
    return TQ_OK;
  }
  if (t == TQ_GGUF_FLOAT64) {
    uint64_t u = ld64(p);
    memcpy(out, &u, sizeof *out);
    return TQ_OK;
  }
  return TQ_ERR_MISMATCH;
}

static tq_str load_str(const tq_gguf *g, uint64_t off) {
  tq_str s;
  s.len = ld64(g->base + off);
  s.data = (const char *)g->base + off + 8;
  return s;
}

/* Entry i, or NULL for a bad handle, index or output. */
static const gguf_kv *entry(const tq_gguf *g, uint64_t i, const void *out) {
  return g && out && i < g->n_kv ? &g->kv[i] : NULL;
}

tq_status tq_gguf_get_uint(const tq_gguf *g, uint64_t i, uint64_t *out) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  return load_uint(kv->type, g->base + kv->off, out);
}

tq_status tq_gguf_get_int(const tq_gguf *g, uint64_t i, int64_t *out) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  return load_int(kv->type, g->base + kv->off, out);
}

tq_status tq_gguf_get_float(const tq_gguf *g, uint64_t i, double *out) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  return load_float(kv->type, g->base + kv->off, out);
}

tq_status tq_gguf_get_bool(const tq_gguf *g, uint64_t i, int *out) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  if (kv->type != TQ_GGUF_BOOL) return TQ_ERR_MISMATCH;
  *out = g->base[kv->off];
  return TQ_OK;
}

tq_status tq_gguf_get_string(const tq_gguf *g, uint64_t i, tq_str *out) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  if (kv->type != TQ_GGUF_STRING) return TQ_ERR_MISMATCH;
  *out = load_str(g, kv->off);
  return TQ_OK;
}

tq_status tq_gguf_get_array(const tq_gguf *g, uint64_t i, tq_gguf_type *elem_type,
                            uint64_t *count) {
  const gguf_kv *kv = entry(g, i, elem_type);
  if (!kv || !count) return TQ_ERR_INVALID_ARGUMENT;
  if (kv->type != TQ_GGUF_ARRAY) return TQ_ERR_MISMATCH;
  *elem_type = (tq_gguf_type)kv->elem_type;
  *count = kv->count;
  return TQ_OK;
}

/* Element j of array entry i, if the entry is an array of fixed-size
 * elements: its address in *p. */
static tq_status array_elem(const tq_gguf *g, uint64_t i, uint64_t j, const void *out,
                            const gguf_kv **kv_out, const uint8_t **p) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  if (kv->type != TQ_GGUF_ARRAY) return TQ_ERR_MISMATCH;
  if (j >= kv->count) return TQ_ERR_INVALID_ARGUMENT;
  uint32_t es = scalar_size(kv->elem_type);
  if (!es) return TQ_ERR_MISMATCH;
  *kv_out = kv;
  *p = g->base + kv->off + j * es; /* j * es < count * es, checked at open */
  return TQ_OK;
}

tq_status tq_gguf_array_uint(const tq_gguf *g, uint64_t i, uint64_t j, uint64_t *out) {
  const gguf_kv *kv;
  const uint8_t *p;
  tq_status st = array_elem(g, i, j, out, &kv, &p);
  return st != TQ_OK ? st : load_uint(kv->elem_type, p, out);
}

tq_status tq_gguf_array_int(const tq_gguf *g, uint64_t i, uint64_t j, int64_t *out) {
  const gguf_kv *kv;
  const uint8_t *p;
  tq_status st = array_elem(g, i, j, out, &kv, &p);
  return st != TQ_OK ? st : load_int(kv->elem_type, p, out);
}

tq_status tq_gguf_array_float(const tq_gguf *g, uint64_t i, uint64_t j, double *out) {
  const gguf_kv *kv;
  const uint8_t *p;
  tq_status st = array_elem(g, i, j, out, &kv, &p);
  return st != TQ_OK ? st : load_float(kv->elem_type, p, out);
}

tq_status tq_gguf_array_string(const tq_gguf *g, uint64_t i, uint64_t j, tq_str *out) {
  const gguf_kv *kv = entry(g, i, out);
  if (!kv) return TQ_ERR_INVALID_ARGUMENT;
  if (kv->type != TQ_GGUF_ARRAY) return TQ_ERR_MISMATCH;
  if (j >= kv->count) return TQ_ERR_INVALID_ARGUMENT;
  if (kv->elem_type != TQ_GGUF_STRING) return TQ_ERR_MISMATCH;
  *out = load_str(g, g->str_offs[kv->str_first + j]);
  return TQ_OK;
}

tq_status tq_gguf_tensor_at(const tq_gguf *g, uint64_t i, tq_gguf_tensor *out) {
  if (!g || !out || i >= g->n_tensors) return TQ_ERR_INVALID_ARGUMENT;
  *out = g->tensors[i];
  return TQ_OK;
}

tq_status tq_gguf_find_tensor(const tq_gguf *g, const char *name, tq_gguf_tensor *out) {
  if (!g || !name || !out) return TQ_ERR_INVALID_ARGUMENT;
  int64_t i = index_find(g->tensor_index, g->n_tensors, name, strlen(name));
  if (i < 0) return TQ_ERR_INVALID_ARGUMENT;
  *out = g->tensors[i];
  return TQ_OK;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */
/* ------------------------------------------------------------------------ */

/* A growable byte buffer; `oom` sticks once an append fails. */
typedef struct bytes {
  uint8_t *p;
  size_t n, cap;
  int oom;
} bytes;

static void b_put(bytes *b, const void *src, size_t n) {
  if (b->oom || n == 0) return;
  if (n > b->cap - b->n) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < n) {
      if (cap > SIZE_MAX / 2) {
        b->oom = 1;
        return;
      }
      cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}

static void b_le(bytes *b, uint64_t v, unsigned n) {
  uint8_t t[8];
  for (unsigned k = 0; k < n; k++) t[k] = (uint8_t)(v >> (8 * k));
  b_put(b, t, n);
}

static void b_str(bytes *b, const char *s, size_t len) {
  b_le(b, len, 8);
  b_put(b, s, len);
}

typedef struct wkv {
  char *key;
  uint8_t *val; /* the value type u32 and the value, as written */
  size_t val_len;
} wkv;

typedef struct wtensor {
  char *name;
  uint32_t type, n_dims;
  uint64_t ne[4];
  uint8_t *data;
  size_t n_bytes;
} wtensor;

struct tq_gguf_writer {
  wkv *kv;
  size_t n_kv, cap_kv;
  wtensor *t;
  size_t n_t, cap_t;
  uint32_t alignment;
};

tq_status tq_gguf_writer_create(tq_gguf_writer **out) {
  if (!out) return TQ_ERR_INVALID_ARGUMENT;
  *out = calloc(1, sizeof **out);
  if (!*out) return TQ_ERR_OUT_OF_MEMORY;
  (*out)->alignment = TQ_GGUF_DEFAULT_ALIGNMENT;
  return TQ_OK;
}

void tq_gguf_writer_free(tq_gguf_writer *w) {
  if (!w) return;
  for (size_t i = 0; i < w->n_kv; i++) {
    free(w->kv[i].key);
    free(w->kv[i].val);
  }
  for (size_t i = 0; i < w->n_t; i++) {
    free(w->t[i].name);
    free(w->t[i].data);
  }
  free(w->kv);
  free(w->t);
  free(w);
}

static int is_alignment_key(const char *key) { return strcmp(key, "general.alignment") == 0; }

/* Checks a new key: non-empty, at most TQ_GGUF_MAX_KEY bytes, not present yet
 * (a linear scan: writers hold tens of keys). general.alignment must come
 * through tq_gguf_writer_add_uint32. */
static tq_status check_new_key(const tq_gguf_writer *w, const char *key, uint32_t type) {
  if (!w || !key || !*key || strlen(key) > TQ_GGUF_MAX_KEY) return TQ_ERR_INVALID_ARGUMENT;
  if (type != TQ_GGUF_UINT32 && is_alignment_key(key)) return TQ_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < w->n_kv; i++)
    if (strcmp(w->kv[i].key, key) == 0) return TQ_ERR_INVALID_ARGUMENT;
  return TQ_OK;
}

/* Appends key with the value bytes in b (taken over; freed on failure). */
static tq_status add_kv(tq_gguf_writer *w, const char *key, bytes *b) {
  if (b->oom) {
    free(b->p);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  size_t klen = strlen(key);
  char *k = malloc(klen + 1);
  if (k && w->n_kv == w->cap_kv) {
    size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
    wkv *p = cap <= SIZE_MAX / sizeof *p ? realloc(w->kv, cap * sizeof *p) : NULL;
    if (p) {
      w->kv = p;
      w->cap_kv = cap;
    } else {
      free(k);
      k = NULL;
    }
  }
  if (!k) {
    free(b->p);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  memcpy(k, key, klen + 1);
  w->kv[w->n_kv++] = (wkv){k, b->p, b->n};
  return TQ_OK;
}

/* A scalar of `n` bytes holding v (little-endian). */
static tq_status add_scalar(tq_gguf_writer *w, const char *key, uint32_t type, uint64_t v,
                            unsigned n) {
  tq_status st = check_new_key(w, key, type);
  if (st != TQ_OK) return st;
  bytes b = {0};
  b_le(&b, type, 4);
  b_le(&b, v, n);
  return add_kv(w, key, &b);
}

tq_status tq_gguf_writer_add_uint32(tq_gguf_writer *w, const char *key, uint32_t v) {
  tq_status st = check_new_key(w, key, TQ_GGUF_UINT32);
  if (st != TQ_OK) return st;
  int align = is_alignment_key(key);
  if (align && (v < TQ_GGUF_MIN_ALIGNMENT || v > TQ_GGUF_MAX_ALIGNMENT || (v & (v - 1)) != 0))
    return TQ_ERR_INVALID_ARGUMENT;
  st = add_scalar(w, key, TQ_GGUF_UINT32, v, 4);
  if (st == TQ_OK && align) w->alignment = v;
  return st;
}

tq_status tq_gguf_writer_add_int32(tq_gguf_writer *w, const char *key, int32_t v) {
  return add_scalar(w, key, TQ_GGUF_INT32, (uint32_t)v, 4);
}

tq_status tq_gguf_writer_add_uint64(tq_gguf_writer *w, const char *key, uint64_t v) {
  return add_scalar(w, key, TQ_GGUF_UINT64, v, 8);
}

tq_status tq_gguf_writer_add_float32(tq_gguf_writer *w, const char *key, float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return add_scalar(w, key, TQ_GGUF_FLOAT32, u, 4);
}

tq_status tq_gguf_writer_add_bool(tq_gguf_writer *w, const char *key, int v) {
  return add_scalar(w, key, TQ_GGUF_BOOL, v != 0, 1);
}

tq_status tq_gguf_writer_add_string(tq_gguf_writer *w, const char *key, const char *v) {
  tq_status st = check_new_key(w, key, TQ_GGUF_STRING);
  if (st != TQ_OK) return st;
  if (!v) return TQ_ERR_INVALID_ARGUMENT;
  bytes b = {0};
  b_le(&b, TQ_GGUF_STRING, 4);
  b_str(&b, v, strlen(v));
  return add_kv(w, key, &b);
}

/* Arrays of any fixed-size type, bool included (one byte per element, each 0
 * or 1). */
tq_status tq_gguf_writer_add_array(tq_gguf_writer *w, const char *key, tq_gguf_type elem_type,
                                   const void *data, uint64_t count) {
  tq_status st = check_new_key(w, key, TQ_GGUF_ARRAY);
  if (st != TQ_OK) return st;
  unsigned es = scalar_size((uint32_t)elem_type);
  if (!es || (count && !data) || count > SIZE_MAX / es || count > (uint64_t)INT64_MAX / es)
    return TQ_ERR_INVALID_ARGUMENT;
  const uint8_t *src = data;
  if (elem_type == TQ_GGUF_BOOL)
    for (uint64_t j = 0; j < count; j++)
      if (src[j] > 1) return TQ_ERR_INVALID_ARGUMENT;
  bytes b = {0};
  b_le(&b, TQ_GGUF_ARRAY, 4);
  b_le(&b, (uint32_t)elem_type, 4);
  b_le(&b, count, 8);
  for (uint64_t j = 0; j < count && !b.oom; j++) {
    /* Native layout in, little-endian out. */
    const uint8_t *e = src + j * es;
    uint64_t v;
    if (es == 1) {
      v = e[0];
    } else if (es == 2) {
      uint16_t x;
      memcpy(&x, e, 2);
      v = x;
    } else if (es == 4) {
      uint32_t x;
      memcpy(&x, e, 4);
      v = x;
    } else {
      memcpy(&v, e, 8);
    }
    b_le(&b, v, es);
  }
  return add_kv(w, key, &b);
}

tq_status tq_gguf_writer_add_string_array(tq_gguf_writer *w, const char *key,
                                          const char *const *strings, uint64_t count) {
  tq_status st = check_new_key(w, key, TQ_GGUF_ARRAY);
  if (st != TQ_OK) return st;
  if (count && !strings) return TQ_ERR_INVALID_ARGUMENT;
  for (uint64_t j = 0; j < count; j++)
    if (!strings[j]) return TQ_ERR_INVALID_ARGUMENT;
  bytes b = {0};
  b_le(&b, TQ_GGUF_ARRAY, 4);
  b_le(&b, TQ_GGUF_STRING, 4);
  b_le(&b, count, 8);
  for (uint64_t j = 0; j < count && !b.oom; j++) b_str(&b, strings[j], strlen(strings[j]));
  return add_kv(w, key, &b);
}

tq_status tq_gguf_writer_add_tensor(tq_gguf_writer *w, const char *name, tq_tensor_type type,
                                    uint32_t n_dims, const uint64_t *ne, const void *data,
                                    size_t n_bytes) {
  if (!w || !name || !ne || (n_bytes && !data)) return TQ_ERR_INVALID_ARGUMENT;
  size_t nlen = strlen(name);
  if (nlen == 0 || nlen > TQ_GGUF_WRITER_MAX_NAME) return TQ_ERR_INVALID_ARGUMENT;
  const type_info *ti = type_info_of((uint32_t)type);
  if (!ti || n_dims < 1 || n_dims > TQ_GGUF_MAX_DIMS) return TQ_ERR_INVALID_ARGUMENT;
  uint64_t n_elements;
  int bad;
  uint64_t need = tensor_bytes(ti, n_dims, ne, &n_elements, &bad);
  if (bad || need != n_bytes) return TQ_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < w->n_t; i++)
    if (strcmp(w->t[i].name, name) == 0) return TQ_ERR_INVALID_ARGUMENT;

  if (w->n_t == w->cap_t) {
    size_t cap = w->cap_t ? w->cap_t * 2 : 16;
    wtensor *p = cap <= SIZE_MAX / sizeof *p ? realloc(w->t, cap * sizeof *p) : NULL;
    if (!p) return TQ_ERR_OUT_OF_MEMORY;
    w->t = p;
    w->cap_t = cap;
  }
  wtensor t = {0};
  t.name = malloc(nlen + 1);
  t.data = n_bytes ? malloc(n_bytes) : NULL;
  if (!t.name || (n_bytes && !t.data)) {
    free(t.name);
    free(t.data);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  memcpy(t.name, name, nlen + 1);
  if (n_bytes) memcpy(t.data, data, n_bytes);
  t.type = (uint32_t)type;
  t.n_dims = n_dims;
  for (uint32_t d = 0; d < TQ_GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
  t.n_bytes = n_bytes;
  w->t[w->n_t++] = t;
  return TQ_OK;
}

/* fwrite with a sticky error flag; *pos counts the bytes written. */
static void put(FILE *f, const void *p, size_t n, uint64_t *pos, int *err) {
  if (*err || n == 0) return;
  if (fwrite(p, 1, n, f) != n) *err = 1;
  *pos += n;
}

static void put_le(FILE *f, uint64_t v, unsigned n, uint64_t *pos, int *err) {
  uint8_t t[8];
  for (unsigned k = 0; k < n; k++) t[k] = (uint8_t)(v >> (8 * k));
  put(f, t, n, pos, err);
}

/* Zero bytes up to the next multiple of the alignment. */
static void put_pad(FILE *f, uint32_t alignment, uint64_t *pos, int *err) {
  static const uint8_t zeros[256];
  uint64_t pad = (alignment - *pos % alignment) % alignment;
  while (pad > 0 && !*err) {
    size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
    put(f, zeros, n, pos, err);
    pad -= n;
  }
}

/* Best effort: makes the rename durable. A failure is not reported: the
 * file is complete under its name by then. */
static void sync_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
  char *dir = malloc(n + 1);
  if (!dir) return;
  if (slash) memcpy(dir, path, n);
  else dir[0] = '.';
  dir[n] = '\0';
  int fd = open(dir, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

static void write_all(const tq_gguf_writer *w, FILE *f, int *err) {
  uint64_t pos = 0;
  put(f, TQ_GGUF_MAGIC, 4, &pos, err);
  put_le(f, 3, 4, &pos, err);
  put_le(f, w->n_t, 8, &pos, err);
  put_le(f, w->n_kv, 8, &pos, err);
  for (size_t i = 0; i < w->n_kv; i++) {
    size_t klen = strlen(w->kv[i].key);
    put_le(f, klen, 8, &pos, err);
    put(f, w->kv[i].key, klen, &pos, err);
    put(f, w->kv[i].val, w->kv[i].val_len, &pos, err);
  }
  /* Tensors in the order added, each at the next multiple of the alignment
   * (the same layout as gguf-py and llama.cpp write). */
  uint64_t off = 0;
  for (size_t i = 0; i < w->n_t; i++) {
    const wtensor *t = &w->t[i];
    size_t nlen = strlen(t->name);
    put_le(f, nlen, 8, &pos, err);
    put(f, t->name, nlen, &pos, err);
    put_le(f, t->n_dims, 4, &pos, err);
    for (uint32_t d = 0; d < t->n_dims; d++) put_le(f, t->ne[d], 8, &pos, err);
    put_le(f, t->type, 4, &pos, err);
    put_le(f, off, 8, &pos, err);
    uint64_t padded = t->n_bytes + (w->alignment - t->n_bytes % w->alignment) % w->alignment;
    if (padded < t->n_bytes || off > UINT64_MAX - padded) *err = 1; /* cannot happen in memory */
    off += padded;
  }
  put_pad(f, w->alignment, &pos, err);
  for (size_t i = 0; i < w->n_t; i++) {
    put(f, w->t[i].data, w->t[i].n_bytes, &pos, err);
    put_pad(f, w->alignment, &pos, err);
  }
}

tq_status tq_gguf_writer_write(const tq_gguf_writer *w, const char *path) {
  if (!w || !path || !*path) return TQ_ERR_INVALID_ARGUMENT;
  static const char suffix[] = ".tmp-XXXXXX";
  size_t plen = strlen(path);
  char *tmp = malloc(plen + sizeof suffix);
  if (!tmp) return TQ_ERR_OUT_OF_MEMORY;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, suffix, sizeof suffix);

  /* mkstemp: a fresh name next to the target (the rename stays within one
   * file system), created O_EXCL. It makes the file 0600; model files are
   * meant to be shared, so the result gets 0644 like other tools' output. */
  int fd = mkstemp(tmp);
  if (fd < 0) {
    free(tmp);
    return TQ_ERR_IO;
  }
  (void)fchmod(fd, 0644);
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmp);
    free(tmp);
    return TQ_ERR_IO;
  }
  int err = 0;
  write_all(w, f, &err);
  if (fflush(f) != 0) err = 1;
  if (!err && fsync(fileno(f)) != 0) err = 1;
  if (fclose(f) != 0) err = 1;
  if (err || rename(tmp, path) != 0) {
    unlink(tmp);
    free(tmp);
    return TQ_ERR_IO;
  }
  free(tmp);
  sync_dir_of(path);
  return TQ_OK;
}
