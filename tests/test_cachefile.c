/*
 * test_cachefile.c - tq_cache_save / tq_cache_load / tq_cache_load_buffer:
 * round trips that must reproduce attention bit for bit, the byte layout of
 * docs/FORMAT.md ("Cache file"), and every way a file can be bad (each must
 * fail with the right status and leave the cache exactly as it was).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqai.h"
#include "test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static char g_dir[512];

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static uint8_t *read_all(const char *path, size_t *n) {
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
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

static int write_all(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  int ok = fwrite(p, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

/* Entries of g_dir other than . and .. */
static int dir_entries(void) {
  DIR *d = opendir(g_dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* The test's own CRC-32 (IEEE, reflected 0xEDB88320), bit by bit. */
static uint32_t t_crc32(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
  }
  return ~c;
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Rewrites the trailing CRC of a file image of n bytes. */
static void fix_crc(uint8_t *buf, size_t n) { wr32(buf + n - 4, t_crc32(buf, n - 4)); }

static uint8_t *dup_buf(const uint8_t *p, size_t n) {
  uint8_t *q = malloc(n ? n : 1);
  memcpy(q, p, n);
  return q;
}

/* Appends n tokens to a layer in chunks of `chunk`: Gaussian data with a
 * per-channel offset and scale, so centering and channel splits matter. */
static void fill_layer(tq_cache *c, uint32_t layer, uint32_t n, uint32_t chunk, tq_test_rng *r) {
  tq_cache_params p;
  tq_cache_get_params(c, &p);
  uint32_t H = p.n_kv_heads, d = p.head_dim;
  while (n) {
    uint32_t m = n < chunk ? n : chunk;
    size_t cnt = (size_t)m * H * d;
    float *k = malloc(cnt * sizeof *k), *v = malloc(cnt * sizeof *v);
    for (size_t i = 0; i < cnt; i++) {
      uint32_t j = (uint32_t)(i % d);
      k[i] = (float)(tq_test_gauss(r) * (0.5 + (j % 5) * 0.4) + (j % 3) * 0.7);
      v[i] = (float)(tq_test_gauss(r) * (0.3 + (j % 4) * 0.5) - (j % 2) * 0.5);
    }
    CHECK_OK(tq_cache_append(c, layer, k, v, m));
    free(k);
    free(v);
    n -= m;
  }
}

/* Fills every layer: layer l gets tokens - 7 * l tokens (at least 1). */
static void fill(tq_cache *c, uint32_t tokens, uint64_t seed) {
  tq_cache_params p;
  tq_cache_get_params(c, &p);
  tq_test_rng r = {seed};
  for (uint32_t l = 0; l < p.n_layers; l++) {
    uint32_t n = tokens > 7 * l + 1 ? tokens - 7 * l : 1;
    if (n > p.max_tokens - tq_cache_tokens(c, l)) n = p.max_tokens - tq_cache_tokens(c, l);
    fill_layer(c, l, n, 1 + (uint32_t)(tq_test_next(&r) % 23), &r);
  }
}

/* Attention of n_q random queries (2 query heads per KV head) on a layer. */
static tq_status attn(const tq_cache *c, uint32_t layer, uint32_t n_q, uint64_t seed, float *out) {
  tq_cache_params p;
  tq_cache_get_params(c, &p);
  uint32_t Hq = 2 * p.n_kv_heads, d = p.head_dim;
  size_t cnt = (size_t)n_q * Hq * d;
  float *q = malloc(cnt * sizeof *q);
  tq_test_rng r = {seed};
  for (size_t i = 0; i < cnt; i++) q[i] = (float)tq_test_gauss(&r);
  tq_status st = tq_cache_attention(c, layer, q, n_q, Hq, 1.0f / sqrtf((float)d), out, NULL);
  free(q);
  return st;
}

/* 1 if both caches hold the same token counts and give bit-identical
 * attention (n_q 1 and 3) on every layer. */
static int same_attention(const tq_cache *a, const tq_cache *b) {
  tq_cache_params p;
  tq_cache_get_params(a, &p);
  int same = 1;
  for (uint32_t l = 0; l < p.n_layers; l++) {
    uint32_t T = tq_cache_tokens(a, l);
    if (T != tq_cache_tokens(b, l)) {
      fprintf(stderr, "  layer %u: %u tokens against %u\n", l, T, tq_cache_tokens(b, l));
      same = 0;
      continue;
    }
    for (uint32_t n_q = 1; n_q <= 3 && n_q <= T; n_q += 2) {
      size_t cnt = (size_t)n_q * 2 * p.n_kv_heads * p.head_dim;
      float *oa = malloc(cnt * sizeof(float)), *ob = malloc(cnt * sizeof(float));
      tq_status sa = attn(a, l, n_q, 1000 + l, oa), sb = attn(b, l, n_q, 1000 + l, ob);
      if (sa != TQ_OK || sb != TQ_OK || memcmp(oa, ob, cnt * sizeof(float)) != 0) {
        fprintf(stderr, "  layer %u n_q %u: attention differs (%s, %s)\n", l, n_q,
                tq_status_name(sa), tq_status_name(sb));
        same = 0;
      }
      free(oa);
      free(ob);
    }
  }
  return same;
}

/* What must not change when a load fails. */
typedef struct snap {
  uint32_t n_layers, tokens[16];
  size_t bytes;
  float *out[16];
  size_t cnt[16];
} snap;

static void snap_take(const tq_cache *c, snap *s) {
  tq_cache_params p;
  tq_cache_get_params(c, &p);
  memset(s, 0, sizeof *s);
  s->n_layers = p.n_layers;
  s->bytes = tq_cache_bytes(c);
  for (uint32_t l = 0; l < p.n_layers && l < 16; l++) {
    s->tokens[l] = tq_cache_tokens(c, l);
    if (!s->tokens[l]) continue;
    s->cnt[l] = (size_t)2 * p.n_kv_heads * p.head_dim;
    s->out[l] = malloc(s->cnt[l] * sizeof(float));
    CHECK_OK(attn(c, l, 1, 77 + l, s->out[l]));
  }
}

static int snap_same(const tq_cache *c, const snap *s) {
  if (tq_cache_bytes(c) != s->bytes) return 0;
  for (uint32_t l = 0; l < s->n_layers && l < 16; l++) {
    if (tq_cache_tokens(c, l) != s->tokens[l]) return 0;
    if (!s->tokens[l]) continue;
    float *o = malloc(s->cnt[l] * sizeof(float));
    int ok = attn(c, l, 1, 77 + l, o) == TQ_OK && memcmp(o, s->out[l], s->cnt[l] * sizeof(float)) == 0;
    free(o);
    if (!ok) return 0;
  }
  return 1;
}

static void snap_free(snap *s) {
  for (int l = 0; l < 16; l++) free(s->out[l]);
}

/* Saves to a file in g_dir and returns its bytes. */
static uint8_t *save_mem(const tq_cache *c, size_t *n) {
  char path[600];
  path_in(path, sizeof path, "mem.tqkv");
  *n = 0;
  tq_status st = tq_cache_save(c, path);
  CHECK_OK(st);
  if (st != TQ_OK) return NULL;
  uint8_t *b = read_all(path, n);
  unlink(path);
  return b;
}

static tq_cache *make(const tq_cache_params *p) {
  tq_cache *c = NULL;
  CHECK_OK(tq_cache_create(p, &c));
  return c;
}

/* ------------------------------------------------------------------------ */
/* Configurations                                                            */
/* ------------------------------------------------------------------------ */

static const float g_layer_k[4] = {1.0f, 8.0f, 4.5f, 2.0f};
static const float g_layer_v[4] = {8.0f, 1.0f, 1.5f, 3.0f};

enum { N_CFG = 9 };

static tq_cache_params cfg(int which, uint32_t *tokens, const char **name) {
  tq_cache_params p = tq_cache_params_default(2, 2, 32);
  p.block_tokens = 16;
  p.max_tokens = 400;
  *tokens = 70;
  switch (which) {
    case 0:
      *name = "f16";
      p.mode = TQ_CACHE_F16;
      p.head_dim = 16;
      break;
    case 1:
      *name = "k4v2";
      break;
    case 2:
      *name = "k3.5v2.5 center sinks4 window16 calib32";
      p.key_bits = 3.5f;
      p.value_bits = 2.5f;
      p.center = 1;
      p.sink_tokens = 4;
      p.window_tokens = 16;
      p.calib_tokens = 32;
      *tokens = 100;
      break;
    case 3:
      *name = "per-layer rates";
      p.n_layers = 4;
      p.head_dim = 16;
      p.layer_key_bits = g_layer_k;
      p.layer_value_bits = g_layer_v;
      p.window_tokens = 4;
      p.calib_tokens = 8;
      *tokens = 40;
      break;
    case 4:
      *name = "edge layers";
      p.n_layers = 4;
      p.head_dim = 16;
      p.key_bits = 2.0f;
      p.value_bits = 1.0f;
      p.edge_layers = 1;
      p.edge_key_bits = 8.0f;
      p.edge_value_bits = 4.5f;
      p.calib_tokens = 8;
      p.sink_tokens = 1;
      *tokens = 40;
      break;
    case 5:
      *name = "mid-calibration";
      p.head_dim = 16;
      p.center = 1;
      p.calib_tokens = 32;
      p.sink_tokens = 2;
      p.window_tokens = 4;
      *tokens = 20; /* layer 0: 2 sinks, 14 pending, 4 in the window */
      break;
    case 7:
      *name = "f32";
      p.mode = TQ_CACHE_F32;
      p.head_dim = 12;
      break;
    case 6:
      *name = "ring wrapped";
      p.head_dim = 24;
      p.key_bits = 3.0f;
      p.window_tokens = 16;
      *tokens = 45;
      break;
    default:
      *name = "hadamard k2.5v1.5 center";
      p.rotation = TQ_ROTATION_HADAMARD;
      p.key_bits = 2.5f;
      p.value_bits = 1.5f;
      p.center = 1;
      p.sink_tokens = 1;
      p.window_tokens = 3;
      p.calib_tokens = 8;
      p.key_seed = 12345;
      p.value_seed = 67890;
      *tokens = 60;
      break;
  }
  return p;
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */
/* ------------------------------------------------------------------------ */

/* truncate_to: 0, or a token count to truncate the original to first. */
static void round_trip(int which, uint32_t truncate_to) {
  uint32_t tokens;
  const char *name;
  tq_cache_params p = cfg(which, &tokens, &name);
  tq_cache *a = make(&p), *b = make(&p), *c = make(&p);
  if (!a || !b || !c) goto out;
  fill(a, tokens, 1 + (uint64_t)which);
  if (truncate_to) CHECK_OK(tq_cache_truncate(a, truncate_to));
  fill(b, tokens / 2 + 3, 99); /* b holds other tokens before the load */

  char f1[600], f2[600];
  path_in(f1, sizeof f1, "a.tqkv");
  path_in(f2, sizeof f2, "b.tqkv");
  CHECK_OK(tq_cache_save(a, f1));
  CHECK_OK(tq_cache_load(b, f1));
  CHECKF(same_attention(a, b), "%s (truncate %u): loaded cache differs", name, truncate_to);
  if (!truncate_to)
    CHECKF(tq_cache_bytes(a) == tq_cache_bytes(b), "%s: bytes %zu vs %zu", name,
           tq_cache_bytes(a), tq_cache_bytes(b));

  /* Saving the loaded cache gives the same bytes. */
  CHECK_OK(tq_cache_save(b, f2));
  size_t n1, n2;
  uint8_t *b1 = read_all(f1, &n1), *b2 = read_all(f2, &n2);
  CHECKF(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0, "%s: re-saved file differs", name);

  /* The same from a buffer. */
  CHECK_OK(tq_cache_load_buffer(c, b1, n1));
  CHECK(same_attention(a, c));

  /* Growing both the same way keeps them identical. */
  fill(a, 37, 555);
  fill(b, 37, 555);
  fill(c, 37, 555);
  CHECKF(same_attention(a, b), "%s (truncate %u): differs after appending", name, truncate_to);
  CHECK(same_attention(a, c));
  fill(a, 150, 556);
  fill(b, 150, 556);
  CHECKF(same_attention(a, b), "%s: differs after appending more", name);
  free(b1);
  free(b2);
  unlink(f1);
  unlink(f2);
out:
  tq_cache_free(a);
  tq_cache_free(b);
  tq_cache_free(c);
}

static void test_round_trip(void) {
  for (int w = 0; w < N_CFG; w++) round_trip(w, 0);
}

static void test_round_trip_truncated(void) {
  round_trip(2, 90); /* ring partly kept, its head not at 0 */
  round_trip(2, 60); /* no window rows left */
  round_trip(2, 10); /* a few coded tokens left */
  round_trip(2, 3);  /* back before calibration, sinks not full */
  round_trip(5, 9);
  round_trip(6, 40);
  round_trip(0, 17);
}

static void test_round_trip_empty(void) {
  uint32_t tokens;
  const char *name;
  tq_cache_params p = cfg(2, &tokens, &name);
  tq_cache *a = make(&p), *b = make(&p);
  if (!a || !b) goto out;
  fill(b, 50, 3);
  size_t n;
  uint8_t *buf = save_mem(a, &n);
  CHECK_OK(tq_cache_load_buffer(b, buf, n));
  CHECK(tq_cache_tokens(b, 0) == 0 && tq_cache_tokens(b, 1) == 0);
  CHECK(tq_cache_bytes(a) == tq_cache_bytes(b));
  fill(a, 80, 4);
  fill(b, 80, 4);
  CHECK(same_attention(a, b));
  free(buf);
out:
  tq_cache_free(a);
  tq_cache_free(b);
}

/* ------------------------------------------------------------------------ */
/* Byte layout                                                               */
/* ------------------------------------------------------------------------ */

static void test_crc_reference(void) {
  CHECK(t_crc32((const uint8_t *)"123456789", 9) == 0xCBF43926u);
}

/* The small configuration of the corruption tests: one layer, two heads,
 * d 8, 3.5/2.5 bits, centered, 2 sinks, window 4, calibration 8. */
static tq_cache_params small_params(void) {
  tq_cache_params p = tq_cache_params_default(1, 2, 8);
  p.block_tokens = 16;
  p.max_tokens = 64;
  p.key_bits = 3.5f;
  p.value_bits = 2.5f;
  p.center = 1;
  p.sink_tokens = 2;
  p.window_tokens = 4;
  p.calib_tokens = 8;
  return p;
}

/* Offsets in a small-configuration file of 30 tokens (2 sinks, 24 coded,
 * 4 in the window), per docs/FORMAT.md. */
enum {
  SM_HDR = 76 + 8,
  SM_KREC = 4 + 4, /* (2 + 2) + (2 + 2): 4 dims at 4 bits, 4 dims at 3 bits */
  SM_VREC = 4 + 3, /* (2 + 2) + (2 + 1) */
  SM_ROW = 16,
  SM_LANE = 24 + 2 * 2 * SM_ROW + 24 * (SM_KREC + SM_VREC) + 2 * 4 * SM_ROW + 2 * 32 + 2 * 16,
  SM_SIZE = SM_HDR + 2 * SM_LANE + 4
};
#define SM_COUNTS(h) (SM_HDR + (h) * SM_LANE)
#define SM_SINKS(h) (SM_COUNTS(h) + 24)
#define SM_KRECS(h) (SM_SINKS(h) + 2 * 2 * SM_ROW)
#define SM_VRECS(h) (SM_KRECS(h) + 24 * SM_KREC)
#define SM_RING(h) (SM_VRECS(h) + 24 * SM_VREC)
#define SM_MEANS(h) (SM_RING(h) + 2 * 4 * SM_ROW)
#define SM_PERMS(h) (SM_MEANS(h) + 2 * 32)

static void test_layout(void) {
  tq_cache_params p = small_params();
  tq_cache *c = make(&p);
  if (!c) return;
  fill_layer(c, 0, 30, 7, &(tq_test_rng){5});
  size_t n;
  uint8_t *b = save_mem(c, &n);
  CHECKF(n == SM_SIZE, "size %zu, expected %d", n, SM_SIZE);
  if (n != SM_SIZE) goto out;
  CHECK(memcmp(b, "TQKVCACH", 8) == 0);
  CHECK(rd32(b + 8) == 1);
  CHECK(rd32(b + 12) == TQ_CODE_FORMAT_VERSION);
  const uint32_t want[11] = {1, 2, 8, 64, 16, TQ_CACHE_TURBOQUANT, 2, 4, 1, 8, TQ_ROTATION_HAAR};
  for (int i = 0; i < 11; i++) CHECKF(rd32(b + 16 + 4 * i) == want[i], "header field %d", i);
  CHECK(rd32(b + 60) == (uint32_t)TQ_DEFAULT_KEY_SEED && rd32(b + 64) == (uint32_t)(TQ_DEFAULT_KEY_SEED >> 32));
  CHECK(rd32(b + 68) == (uint32_t)TQ_DEFAULT_VALUE_SEED);
  CHECK(rd32(b + 76) == 7 && rd32(b + 80) == 5); /* rates x2 */
  for (int h = 0; h < 2; h++) {
    const uint8_t *q = b + SM_COUNTS(h);
    CHECKF(rd32(q) == 2 && rd32(q + 4) == 24 && rd32(q + 8) == 0 && rd32(q + 12) == 4 &&
               rd32(q + 16) == 0 && rd32(q + 20) == 1,
           "lane %d counts %u %u %u %u %u %u", h, rd32(q), rd32(q + 4), rd32(q + 8), rd32(q + 12),
           rd32(q + 16), rd32(q + 20));
    /* The permutations are permutations of 0..7. */
    for (int s = 0; s < 2; s++) {
      unsigned seen = 0;
      for (int j = 0; j < 8; j++) seen |= 1u << rd16(b + SM_PERMS(h) + 16 * s + 2 * j);
      CHECK(seen == 0xffu);
    }
  }
  CHECK(rd32(b + n - 4) == t_crc32(b, n - 4));
out:
  free(b);
  tq_cache_free(c);
}

/* A file written from the specification alone (fp16 mode) loads and gives
 * the attention of a cache filled by appends. */
static void test_spec_written_file(void) {
  tq_cache_params p = tq_cache_params_default(1, 2, 4);
  p.mode = TQ_CACHE_F16;
  p.block_tokens = 16;
  p.max_tokens = 40;
  tq_cache *a = make(&p), *b = make(&p);
  if (!a || !b) goto out;
  enum { T = 21, H = 2, D = 4 };
  float k[T * H * D], v[T * H * D];
  for (int i = 0; i < T * H * D; i++) {
    k[i] = (float)((i * 37 % 19) - 9) * 0.25f;
    v[i] = (float)((i * 11 % 13) - 6) * 0.5f;
  }
  CHECK_OK(tq_cache_append(a, 0, k, v, T));
  size_t n = 76 + 8 + H * (24 + T * D * 2 * 2) + 4;
  uint8_t *f = calloc(n, 1);
  memcpy(f, "TQKVCACH", 8);
  const uint32_t hdr[13] = {1, TQ_CODE_FORMAT_VERSION, 1, H, D, 40, 16, TQ_CACHE_F16, 0, 0, 0, 64, 0};
  for (int i = 0; i < 13; i++) wr32(f + 8 + 4 * i, hdr[i]);
  wr32(f + 60, (uint32_t)TQ_DEFAULT_KEY_SEED);
  wr32(f + 64, (uint32_t)(TQ_DEFAULT_KEY_SEED >> 32));
  wr32(f + 68, (uint32_t)TQ_DEFAULT_VALUE_SEED);
  wr32(f + 72, (uint32_t)(TQ_DEFAULT_VALUE_SEED >> 32));
  /* rates: 0 in fp16 mode */
  size_t at = 84;
  for (int h = 0; h < H; h++) {
    wr32(f + at + 4, T); /* n_comp; the other counts 0 */
    at += 24;
    for (int side = 0; side < 2; side++)
      for (int t = 0; t < T; t++)
        for (int j = 0; j < D; j++, at += 2)
          wr16(f + at, tq_f32_to_f16((side ? v : k)[(t * H + h) * D + j]));
  }
  fix_crc(f, n);
  CHECK_OK(tq_cache_load_buffer(b, f, n));
  CHECK(same_attention(a, b));
  size_t n2;
  uint8_t *f2 = save_mem(b, &n2);
  CHECK(f2 && n2 == n && memcmp(f, f2, n) == 0);
  free(f2);

  /* Unequal token counts across the heads of a layer. */
  snap s;
  snap_take(b, &s);
  uint8_t *g = malloc(n);
  size_t lane = 24 + T * D * 4;
  /* head 1 keeps 20 tokens: drop its last key row and last value row */
  size_t h1 = 84 + lane, gn = 0;
  memcpy(g, f, h1);
  gn = h1;
  memcpy(g + gn, f + h1, 24);
  gn += 24;
  memcpy(g + gn, f + h1 + 24, (T - 1) * D * 2);
  gn += (T - 1) * D * 2;
  memcpy(g + gn, f + h1 + 24 + T * D * 2, (T - 1) * D * 2);
  gn += (T - 1) * D * 2;
  gn += 4;
  wr32(g + h1 + 4, T - 1);
  fix_crc(g, gn);
  CHECK_STATUS(tq_cache_load_buffer(b, g, gn), TQ_ERR_CORRUPT);
  CHECK(snap_same(b, &s));
  /* ... while the same cut in head 0 too is a valid file. */
  uint8_t *e = malloc(n);
  size_t en = 84;
  memcpy(e, f, 84);
  for (int h = 0; h < H; h++) {
    size_t src = 84 + h * lane;
    memcpy(e + en, f + src, 24);
    wr32(e + en + 4, T - 1);
    en += 24;
    memcpy(e + en, f + src + 24, (T - 1) * D * 2);
    en += (T - 1) * D * 2;
    memcpy(e + en, f + src + 24 + T * D * 2, (T - 1) * D * 2);
    en += (T - 1) * D * 2;
  }
  en += 4;
  fix_crc(e, en);
  CHECK_OK(tq_cache_load_buffer(b, e, en));
  CHECK(tq_cache_tokens(b, 0) == T - 1);
  CHECK_OK(tq_cache_load_buffer(b, f, n));

  /* fp16 mode keeps no sinks, window, pending rows or calibration. */
  const int field[4] = {0, 8, 12, 20};
  for (int i = 0; i < 4; i++) {
    memcpy(g, f, n);
    wr32(g + 84 + field[i], 1);
    fix_crc(g, n);
    CHECK_STATUS(tq_cache_load_buffer(b, g, n), TQ_ERR_CORRUPT);
  }
  /* A non-finite fp16 row. */
  memcpy(g, f, n);
  wr16(g + 84 + 24 + 6, 0x7c00);
  fix_crc(g, n);
  CHECK_STATUS(tq_cache_load_buffer(b, g, n), TQ_ERR_CORRUPT);
  snap_free(&s);
  snap_take(b, &s);
  CHECK(same_attention(a, b));
  snap_free(&s);
  free(e);
  free(g);
  free(f);
out:
  tq_cache_free(a);
  tq_cache_free(b);
}

/* ------------------------------------------------------------------------ */
/* Corruption                                                                */
/* ------------------------------------------------------------------------ */

typedef struct fixture {
  tq_cache *victim; /* holds other tokens of the same parameters */
  snap s;
  uint8_t *good;    /* a valid file of 30 tokens */
  size_t n;
} fixture;

static int fixture_make(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  tq_cache_params p = small_params();
  tq_cache *src = make(&p);
  fx->victim = make(&p);
  if (!src || !fx->victim) {
    tq_cache_free(src);
    return 0;
  }
  fill_layer(src, 0, 30, 4, &(tq_test_rng){11});
  fill_layer(fx->victim, 0, 23, 5, &(tq_test_rng){12});
  fx->good = save_mem(src, &fx->n);
  tq_cache_free(src);
  snap_take(fx->victim, &fx->s);
  CHECK(fx->n == SM_SIZE);
  return fx->good && fx->n == SM_SIZE;
}

static void fixture_free(fixture *fx) {
  snap_free(&fx->s);
  free(fx->good);
  tq_cache_free(fx->victim);
}

/* Loads buf into the victim: expects `want`; on an error the victim must be
 * unchanged, on success the snapshot follows the new contents. */
static void expect_load(fixture *fx, const uint8_t *buf, size_t len, tq_status want,
                        const char *what) {
  tq_status st = tq_cache_load_buffer(fx->victim, buf, len);
  CHECKF(st == want, "%s: %s, expected %s", what, tq_status_name(st), tq_status_name(want));
  if (st != TQ_OK) {
    CHECKF(snap_same(fx->victim, &fx->s), "%s: victim changed", what);
  } else {
    snap_free(&fx->s);
    snap_take(fx->victim, &fx->s);
  }
}

#define EXPECT_LOAD(fx, buf, len, want) expect_load((fx), (buf), (len), (want), #buf " " #want)

static void test_empty_and_truncated(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  char path[600];
  path_in(path, sizeof path, "empty.tqkv");
  CHECK(write_all(path, "", 0));
  CHECK_STATUS(tq_cache_load(fx.victim, path), TQ_ERR_CORRUPT);
  CHECK(snap_same(fx.victim, &fx.s));
  int bad = 0;
  for (size_t len = 0; len < fx.n; len++) {
    uint8_t *b = dup_buf(fx.good, len);
    tq_status st = tq_cache_load_buffer(fx.victim, b, len);
    if (st != TQ_ERR_CORRUPT) {
      if (bad++ < 5) CHECKF(0, "prefix %zu: %s", len, tq_status_name(st));
    }
    free(b);
  }
  CHECKF(bad == 0, "%d prefixes not rejected as corrupt", bad);
  CHECK(snap_same(fx.victim, &fx.s));
  /* Through a file, a few lengths. */
  const size_t lens[] = {1, 8, 15, 16, 90, SM_SIZE / 2, SM_SIZE - 1};
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
    CHECK(write_all(path, fx.good, lens[i]));
    CHECK_STATUS(tq_cache_load(fx.victim, path), TQ_ERR_CORRUPT);
  }
  CHECK(snap_same(fx.victim, &fx.s));
  /* And the whole file loads. */
  CHECK(write_all(path, fx.good, fx.n));
  CHECK_OK(tq_cache_load(fx.victim, path));
  CHECK(tq_cache_tokens(fx.victim, 0) == 30);
  unlink(path);
  fixture_free(&fx);
}

static void test_flipped_bytes(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  uint8_t *b = dup_buf(fx.good, fx.n);
  int bad = 0;
  for (size_t i = 0; i < fx.n; i++) {
    for (int m = 0; m < 2; m++) {
      uint8_t mask = m ? 0xff : (uint8_t)(1u << (i % 8));
      b[i] ^= mask;
      tq_status st = tq_cache_load_buffer(fx.victim, b, fx.n);
      tq_status want = i >= 8 && i < 16 ? TQ_ERR_FORMAT_VERSION : TQ_ERR_CORRUPT;
      if (st != want && bad++ < 5) CHECKF(0, "byte %zu ^ %02x: %s", i, mask, tq_status_name(st));
      b[i] ^= mask;
    }
  }
  CHECKF(bad == 0, "%d flips not rejected", bad);
  CHECK(snap_same(fx.victim, &fx.s));
  free(b);
  fixture_free(&fx);
}

static void test_magic_and_versions(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  uint8_t *b = dup_buf(fx.good, fx.n);
  b[3] = 'X';
  fix_crc(b, fx.n);
  EXPECT_LOAD(&fx, b, fx.n, TQ_ERR_CORRUPT);
  const uint32_t versions[] = {0, 2, 0xffffffffu};
  for (int i = 0; i < 3; i++) {
    memcpy(b, fx.good, fx.n);
    wr32(b + 8, versions[i]);
    fix_crc(b, fx.n);
    EXPECT_LOAD(&fx, b, fx.n, TQ_ERR_FORMAT_VERSION);
    memcpy(b, fx.good, fx.n);
    wr32(b + 12, versions[i] + TQ_CODE_FORMAT_VERSION);
    fix_crc(b, fx.n);
    if (versions[i] + TQ_CODE_FORMAT_VERSION != TQ_CODE_FORMAT_VERSION)
      EXPECT_LOAD(&fx, b, fx.n, TQ_ERR_FORMAT_VERSION);
  }
  /* A wrong checksum alone. */
  memcpy(b, fx.good, fx.n);
  b[fx.n - 1] ^= 1;
  EXPECT_LOAD(&fx, b, fx.n, TQ_ERR_CORRUPT);
  free(b);
  fixture_free(&fx);
}

static void test_mismatch(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  /* Header fields edited (with a valid checksum). */
  for (int field = 0; field < 15; field++) {
    uint8_t *b = dup_buf(fx.good, fx.n);
    size_t at = 16 + 4 * (size_t)field;
    if (field == 11) at = 60;      /* key seed */
    else if (field == 12) at = 72; /* value seed, high half */
    else if (field == 13) at = 76; /* layer 0 key rate */
    else if (field == 14) at = 80; /* layer 0 value rate */
    wr32(b + at, rd32(b + at) + 1);
    fix_crc(b, fx.n);
    tq_status st = tq_cache_load_buffer(fx.victim, b, fx.n);
    CHECKF(st == TQ_ERR_MISMATCH, "field %d: %s", field, tq_status_name(st));
    free(b);
  }
  CHECK(snap_same(fx.victim, &fx.s));

  /* Files of caches with other parameters. */
  tq_cache_params p = small_params();
  for (int k = 0; k < 6; k++) {
    tq_cache_params q = p;
    if (k == 0) q.head_dim = 16;
    if (k == 1) q.key_bits = 4.0f;
    if (k == 2) q.value_bits = 3.5f;
    if (k == 3) q.center = 0;
    if (k == 4) q.max_tokens = 65;
    if (k == 5) q.n_kv_heads = 1;
    tq_cache *o = make(&q);
    if (!o) continue;
    fill_layer(o, 0, 12, 12, &(tq_test_rng){9});
    size_t n;
    uint8_t *b = save_mem(o, &n);
    if (b) EXPECT_LOAD(&fx, b, n, TQ_ERR_MISMATCH);
    free(b);
    tq_cache_free(o);
  }
  /* A per-layer rate that differs. */
  tq_cache_params q = tq_cache_params_default(2, 2, 8);
  q.block_tokens = 16;
  q.max_tokens = 64;
  float lk[2] = {4.0f, 4.0f}, lv[2] = {2.0f, 2.0f};
  q.layer_key_bits = lk;
  q.layer_value_bits = lv;
  tq_cache *x = make(&q);
  lk[1] = 5.0f;
  tq_cache *y = make(&q);
  if (x && y) {
    fill_layer(y, 0, 5, 5, &(tq_test_rng){1});
    size_t n;
    uint8_t *b = save_mem(y, &n);
    if (b) CHECK_STATUS(tq_cache_load_buffer(x, b, n), TQ_ERR_MISMATCH);
    CHECK(tq_cache_tokens(x, 0) == 0);
    free(b);
  }
  tq_cache_free(x);
  tq_cache_free(y);
  fixture_free(&fx);
}

/* Writes a u32 (or u16) at `at` in a copy of the good file, fixes the
 * checksum and expects `want`. */
static void edit32(fixture *fx, size_t at, uint32_t v, tq_status want, const char *what) {
  uint8_t *b = dup_buf(fx->good, fx->n);
  wr32(b + at, v);
  fix_crc(b, fx->n);
  expect_load(fx, b, fx->n, want, what);
  free(b);
}

static void edit16(fixture *fx, size_t at, uint16_t v, tq_status want, const char *what) {
  uint8_t *b = dup_buf(fx->good, fx->n);
  wr16(b + at, v);
  fix_crc(b, fx->n);
  expect_load(fx, b, fx->n, want, what);
  free(b);
}

static void test_bad_counts(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  for (int h = 0; h < 2; h++) {
    size_t c = SM_COUNTS(h);
    edit32(&fx, c + 0, 3, TQ_ERR_CORRUPT, "n_sink > sink_tokens");
    edit32(&fx, c + 0, 1, TQ_ERR_CORRUPT, "sinks not full");
    edit32(&fx, c + 4, 0xffffffffu, TQ_ERR_CORRUPT, "n_comp huge");
    edit32(&fx, c + 4, 64, TQ_ERR_CORRUPT, "total over max_tokens");
    edit32(&fx, c + 4, 58, TQ_ERR_CORRUPT, "total at max_tokens, data missing");
    edit32(&fx, c + 4, 25, TQ_ERR_CORRUPT, "n_comp + 1");
    edit32(&fx, c + 4, 0, TQ_ERR_CORRUPT, "calibrated without coded tokens");
    edit32(&fx, c + 8, 1, TQ_ERR_CORRUPT, "pending rows while calibrated");
    edit32(&fx, c + 8, 0x80000000u, TQ_ERR_CORRUPT, "n_pend huge");
    edit32(&fx, c + 12, 5, TQ_ERR_CORRUPT, "n_ring > window_tokens");
    edit32(&fx, c + 12, 3, TQ_ERR_CORRUPT, "n_ring - 1");
    edit32(&fx, c + 16, 4, TQ_ERR_CORRUPT, "ring_head >= window_tokens");
    edit32(&fx, c + 16, 0xffffffffu, TQ_ERR_CORRUPT, "ring_head huge");
    edit32(&fx, c + 16, 3, TQ_OK, "ring_head 3 (valid)");
    edit32(&fx, c + 20, 2, TQ_ERR_CORRUPT, "calibrated 2");
    edit32(&fx, c + 20, 0, TQ_ERR_CORRUPT, "uncalibrated with coded tokens");
  }

  /* Pending rows: a file of an uncalibrated cache (2 sinks, 4 pending, 4 in
   * the window). Claiming the window rows as 4 more pending rows is well
   * formed but reaches calib_tokens. */
  tq_cache_params p = small_params();
  tq_cache *u = make(&p);
  if (u) {
    fill_layer(u, 0, 10, 10, &(tq_test_rng){31});
    size_t n;
    uint8_t *b = save_mem(u, &n);
    CHECK(n == SM_HDR + 2 * (24 + 2 * 2 * SM_ROW + 2 * 8 * SM_ROW) + 4);
    if (b && n == SM_HDR + 2 * (24 + 2 * 2 * SM_ROW + 2 * 8 * SM_ROW) + 4) {
      CHECK(rd32(b + SM_HDR + 8) == 4 && rd32(b + SM_HDR + 12) == 4);
      EXPECT_LOAD(&fx, b, n, TQ_OK);
      uint8_t *e = dup_buf(b, n);
      /* head 0: pend K(4) pend V(4) ring K(4) ring V(4) -> pend K(8) V(8) */
      wr32(e + SM_HDR + 8, 8);
      wr32(e + SM_HDR + 12, 0);
      fix_crc(e, n);
      EXPECT_LOAD(&fx, e, n, TQ_ERR_CORRUPT);
      free(e);
      /* calibrated = 1 with pending rows and no coded tokens */
      e = dup_buf(b, n);
      wr32(e + SM_HDR + 20, 1);
      fix_crc(e, n);
      EXPECT_LOAD(&fx, e, n, TQ_ERR_CORRUPT);
      free(e);
    }
    free(b);
    tq_cache_free(u);
  }

  /* A layer that needs no calibration cannot be calibrated. */
  tq_cache_params q = tq_cache_params_default(1, 1, 8);
  q.block_tokens = 16;
  q.max_tokens = 64;
  tq_cache *x = make(&q), *y = make(&q);
  if (x && y) {
    fill_layer(x, 0, 5, 5, &(tq_test_rng){2});
    fill_layer(y, 0, 3, 3, &(tq_test_rng){3});
    size_t n;
    uint8_t *b = save_mem(x, &n);
    if (b) {
      CHECK_OK(tq_cache_load_buffer(y, b, n));
      wr32(b + 76 + 8 + 20, 1);
      fix_crc(b, n);
      CHECK_STATUS(tq_cache_load_buffer(y, b, n), TQ_ERR_CORRUPT);
      CHECK(tq_cache_tokens(y, 0) == 5);
      wr32(b + 76 + 8 + 20, 0);
      wr32(b + 76 + 8 + 0, 1); /* sinks while sink_tokens is 0 */
      fix_crc(b, n);
      CHECK_STATUS(tq_cache_load_buffer(y, b, n), TQ_ERR_CORRUPT);
    }
    free(b);
  }
  tq_cache_free(x);
  tq_cache_free(y);
  fixture_free(&fx);
}

static void test_bad_values(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  for (int h = 0; h < 2; h++) {
    size_t k0 = SM_KRECS(h), v5 = SM_VRECS(h) + 5 * SM_VREC;
    /* Record norms: group 0 at +0, group 1 at +4 (keys) or +4 (values). */
    edit16(&fx, k0, 0xbc00, TQ_ERR_CORRUPT, "negative key norm");
    edit16(&fx, k0, 0x8000, TQ_ERR_CORRUPT, "-0 key norm");
    edit16(&fx, k0 + 4, 0x7c00, TQ_ERR_CORRUPT, "infinite norm, group 1");
    edit16(&fx, k0 + 4, 0x7e00, TQ_ERR_CORRUPT, "NaN norm, group 1");
    edit16(&fx, v5 + 4, 0xfc00, TQ_ERR_CORRUPT, "value norm -inf, group 1");
    edit16(&fx, v5, 0x7c01, TQ_ERR_CORRUPT, "value norm NaN");
    edit16(&fx, k0, 0x3c00, TQ_OK, "norm 1.0 (valid)");
    edit16(&fx, k0 + 4, 0, TQ_OK, "norm 0 (valid)");
    /* Unused high bits of a packed group: keys group 1 (4 x 3 bits = 12
     * bits in 2 bytes) and values group 0 (4 x 3 bits). */
    {
      uint8_t *b = dup_buf(fx.good, fx.n);
      b[k0 + 7] |= 0x10;
      fix_crc(b, fx.n);
      EXPECT_LOAD(&fx, b, fx.n, TQ_ERR_CORRUPT);
      memcpy(b, fx.good, fx.n);
      b[v5 + 3] |= 0x80;
      fix_crc(b, fx.n);
      EXPECT_LOAD(&fx, b, fx.n, TQ_ERR_CORRUPT);
      memcpy(b, fx.good, fx.n);
      b[v5 + 3] ^= 0x0f; /* used bits: any codes are valid */
      fix_crc(b, fx.n);
      EXPECT_LOAD(&fx, b, fx.n, TQ_OK);
      free(b);
    }
    /* fp16 rows: sinks and window. */
    edit16(&fx, SM_SINKS(h) + 2, 0x7c00, TQ_ERR_CORRUPT, "infinite sink key");
    edit16(&fx, SM_SINKS(h) + 2 * SM_ROW + 14, 0xfe00, TQ_ERR_CORRUPT, "NaN sink value");
    edit16(&fx, SM_RING(h) + 6, 0xfc00, TQ_ERR_CORRUPT, "infinite window key");
    edit16(&fx, SM_RING(h) + 4 * SM_ROW + 62, 0x7d00, TQ_ERR_CORRUPT, "NaN window value");
    edit16(&fx, SM_RING(h) + 6, 0x7bff, TQ_OK, "window key 65504 (valid)");
    /* Means. */
    edit32(&fx, SM_MEANS(h), 0x7fc00000u, TQ_ERR_CORRUPT, "NaN key mean");
    edit32(&fx, SM_MEANS(h) + 32 + 28, 0xff800000u, TQ_ERR_CORRUPT, "-inf value mean");
    edit32(&fx, SM_MEANS(h) + 4, 0x7149f2cau, TQ_ERR_CORRUPT, "key mean 1e30");
    edit32(&fx, SM_MEANS(h) + 4, 0x3f800000u, TQ_OK, "key mean 1 (valid)");
    /* Permutations. */
    size_t kp = SM_PERMS(h), vp = kp + 16;
    edit16(&fx, kp, rd16(fx.good + kp + 2), TQ_ERR_CORRUPT, "key perm repeats");
    edit16(&fx, vp + 14, 8, TQ_ERR_CORRUPT, "value perm entry = d");
    edit16(&fx, vp + 14, 0xffff, TQ_ERR_CORRUPT, "value perm entry huge");
    {
      uint8_t *b = dup_buf(fx.good, fx.n);
      uint16_t a0 = rd16(b + kp), a1 = rd16(b + kp + 2);
      wr16(b + kp, a1);
      wr16(b + kp + 2, a0);
      fix_crc(b, fx.n);
      EXPECT_LOAD(&fx, b, fx.n, TQ_OK); /* another permutation */
      free(b);
    }
  }
  fixture_free(&fx);
}

static void test_trailing_and_short(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  uint8_t *b = malloc(fx.n + 16);
  /* One byte more before the checksum. */
  memcpy(b, fx.good, fx.n - 4);
  b[fx.n - 4] = 0;
  fix_crc(b, fx.n + 1);
  EXPECT_LOAD(&fx, b, fx.n + 1, TQ_ERR_CORRUPT);
  /* Eight more. */
  memset(b + fx.n - 4, 0, 12);
  fix_crc(b, fx.n + 8);
  EXPECT_LOAD(&fx, b, fx.n + 8, TQ_ERR_CORRUPT);
  /* One byte less. */
  memcpy(b, fx.good, fx.n - 5);
  fix_crc(b, fx.n - 1);
  EXPECT_LOAD(&fx, b, fx.n - 1, TQ_ERR_CORRUPT);
  /* The second head missing entirely. */
  memcpy(b, fx.good, SM_COUNTS(1));
  fix_crc(b, SM_COUNTS(1) + 4);
  EXPECT_LOAD(&fx, b, SM_COUNTS(1) + 4, TQ_ERR_CORRUPT);
  /* The header alone. */
  memcpy(b, fx.good, SM_HDR);
  fix_crc(b, SM_HDR + 4);
  EXPECT_LOAD(&fx, b, SM_HDR + 4, TQ_ERR_CORRUPT);
  /* Less than a header. */
  memcpy(b, fx.good, 40);
  fix_crc(b, 44);
  EXPECT_LOAD(&fx, b, 44, TQ_ERR_CORRUPT);
  free(b);
  fixture_free(&fx);
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */
/* ------------------------------------------------------------------------ */

static void test_file_errors(void) {
  fixture fx;
  if (!fixture_make(&fx)) return;
  char path[700], sub[600];
  path_in(path, sizeof path, "no-such-file.tqkv");
  CHECK_STATUS(tq_cache_load(fx.victim, path), TQ_ERR_IO);
  CHECK_STATUS(tq_cache_load(fx.victim, g_dir), TQ_ERR_IO); /* a directory */
  CHECK_STATUS(tq_cache_load(fx.victim, ""), TQ_ERR_IO);
  CHECK(snap_same(fx.victim, &fx.s));

  int before = dir_entries();
  /* Saving into a directory that does not exist. */
  path_in(path, sizeof path, "missing-dir/x.tqkv");
  CHECK_STATUS(tq_cache_save(fx.victim, path), TQ_ERR_IO);
  CHECK(access(path, F_OK) != 0);
  CHECK(dir_entries() == before);
  /* Saving over a directory: fails, the directory stays, no temporary
   * file is left. */
  path_in(sub, sizeof sub, "a-dir");
  CHECK(mkdir(sub, 0700) == 0);
  before = dir_entries();
  CHECK_STATUS(tq_cache_save(fx.victim, sub), TQ_ERR_IO);
  struct stat sb;
  CHECK(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));
  CHECK(dir_entries() == before);
  /* Saving into a directory without write permission (root ignores it). */
  if (geteuid() != 0) {
    CHECK(chmod(sub, 0500) == 0);
    snprintf(path, sizeof path, "%s/x.tqkv", sub);
    CHECK_STATUS(tq_cache_save(fx.victim, path), TQ_ERR_IO);
    CHECK(access(path, F_OK) != 0);
    chmod(sub, 0700);
  } else {
    TQ_SKIP("test_file_errors: read-only directory", "running as root");
  }
  rmdir(sub);

  /* A file larger than any this cache could write: corrupt, or a mismatch
   * when its header says it is another cache's. */
  size_t big = 200000;
  uint8_t *b = calloc(big, 1);
  memcpy(b, fx.good, SM_HDR);
  path_in(path, sizeof path, "big.tqkv");
  CHECK(write_all(path, b, big));
  CHECK_STATUS(tq_cache_load(fx.victim, path), TQ_ERR_CORRUPT);
  wr32(b + 24, 16); /* head_dim */
  CHECK(write_all(path, b, big));
  CHECK_STATUS(tq_cache_load(fx.victim, path), TQ_ERR_MISMATCH);
  wr32(b + 8, 9); /* version */
  CHECK(write_all(path, b, big));
  CHECK_STATUS(tq_cache_load(fx.victim, path), TQ_ERR_FORMAT_VERSION);
  CHECK_STATUS(tq_cache_load_buffer(fx.victim, b, big), TQ_ERR_FORMAT_VERSION);
  memcpy(b, fx.good, SM_HDR);
  fix_crc(b, big);
  CHECK_STATUS(tq_cache_load_buffer(fx.victim, b, big), TQ_ERR_CORRUPT);
  unlink(path);
  free(b);
  CHECK(snap_same(fx.victim, &fx.s));
  fixture_free(&fx);
}

static void test_null_args(void) {
  tq_cache_params p = small_params();
  tq_cache *c = make(&p);
  if (!c) return;
  char path[600];
  path_in(path, sizeof path, "null.tqkv");
  uint8_t byte = 0;
  CHECK_STATUS(tq_cache_save(NULL, path), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_save(c, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_save(c, ""), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_load(NULL, path), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_load(c, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_load_buffer(NULL, &byte, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_load_buffer(c, NULL, 0), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_load_buffer(c, NULL, 10), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_load_buffer(c, &byte, 0), TQ_ERR_CORRUPT);
  CHECK(access(path, F_OK) != 0);
  tq_cache_free(c);
}

static void test_atomic_replace(void) {
  tq_cache_params p = small_params();
  tq_cache *c = make(&p);
  if (!c) return;
  fill_layer(c, 0, 30, 30, &(tq_test_rng){8});
  size_t n;
  uint8_t *want = save_mem(c, &n);
  char path[600];
  path_in(path, sizeof path, "replace.tqkv");
  /* An older, longer file in the way. */
  size_t old_n = 100000;
  uint8_t *old = malloc(old_n);
  memset(old, 0xa5, old_n);
  CHECK(write_all(path, old, old_n));
  int before = dir_entries();
  CHECK_OK(tq_cache_save(c, path));
  size_t got_n;
  uint8_t *got = read_all(path, &got_n);
  CHECK(got && want && got_n == n && memcmp(got, want, n) == 0);
  CHECK(dir_entries() == before);
  free(got);
  /* Replacing a valid file of another state. */
  fill_layer(c, 0, 5, 5, &(tq_test_rng){9});
  CHECK_OK(tq_cache_save(c, path));
  got = read_all(path, &got_n);
  CHECK(got && got_n == n + 2 * 5 * (SM_KREC + SM_VREC));
  CHECK(dir_entries() == before);
  /* A stale temporary file of this process does not block a save. */
  char stale[700];
  snprintf(stale, sizeof stale, "%s.tmp.%ld.0", path, (long)getpid());
  CHECK(write_all(stale, "x", 1));
  CHECK_OK(tq_cache_save(c, path));
  size_t again_n;
  uint8_t *again = read_all(path, &again_n);
  CHECK(again && got && again_n == got_n && memcmp(again, got, got_n) == 0);
  size_t stale_n;
  uint8_t *st = read_all(stale, &stale_n);
  CHECK(st && stale_n == 1);
  free(st);
  unlink(stale);
  free(again);
  free(got);
  free(old);
  free(want);
  unlink(path);
  tq_cache_free(c);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/tq_cachefile.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(g_dir)) {
    fprintf(stderr, "cannot create a temporary directory: %s\n", strerror(errno));
    printf("test_cachefile: 0 passed, 1 failed\n");
    return 1;
  }
  TQ_RUN(test_crc_reference);
  TQ_RUN(test_round_trip);
  TQ_RUN(test_round_trip_truncated);
  TQ_RUN(test_round_trip_empty);
  TQ_RUN(test_layout);
  TQ_RUN(test_spec_written_file);
  TQ_RUN(test_empty_and_truncated);
  TQ_RUN(test_flipped_bytes);
  TQ_RUN(test_magic_and_versions);
  TQ_RUN(test_mismatch);
  TQ_RUN(test_bad_counts);
  TQ_RUN(test_bad_values);
  TQ_RUN(test_trailing_and_short);
  TQ_RUN(test_file_errors);
  TQ_RUN(test_null_args);
  TQ_RUN(test_atomic_replace);
  rmdir(g_dir);
  return tq_test_summary("test_cachefile");
}
