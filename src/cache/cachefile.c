/*
 * cachefile.c - saving and loading a whole tq_cache (docs/FORMAT.md, "Cache
 * file"). Every integer is written and read byte by byte, little-endian; the
 * file ends with a CRC-32 of everything before it.
 *
 * Saving writes a temporary file next to the target, syncs it and renames it
 * over the target. Loading treats the bytes as hostile: every read is bounds
 * checked and every count and value is checked against the cache's
 * parameters; the new lanes are built in new memory and swapped in only when
 * the whole file has been accepted, so a failed load changes nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attn/attn_kernels.h"
#include "cache_internal.h"

#define TQ_FILE_MAGIC "TQKVCACH"
#define TQ_FILE_VERSION 1u
/* magic, version, code version, 11 u32 parameters, 2 u64 seeds */
#define TQ_FILE_FIXED_HEADER 76u
#define TQ_FILE_LANE_COUNTS 24u /* six u32 per lane */
/* Files are never read into memory beyond this, whatever the cache. */
#define TQ_FILE_ABSURD ((uint64_t)1 << 40)

/* ------------------------------------------------------------------------ */
/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), slicing by 8 with   */
/* a table built on the caller's stack (the library keeps no global state).  */
/* ------------------------------------------------------------------------ */

typedef struct crc_table {
  uint32_t t[8][256];
} crc_table;

static void crc_init(crc_table *T) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    T->t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int s = 1; s < 8; s++) T->t[s][i] = (T->t[s - 1][i] >> 8) ^ T->t[0][T->t[s - 1][i] & 0xffu];
}

/* crc: the CRC of the bytes so far (0 to start). */
static uint32_t crc_update(const crc_table *T, uint32_t crc, const uint8_t *p, size_t n) {
  crc = ~crc;
  while (n >= 8) {
    uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                        (uint32_t)p[3] << 24);
    uint32_t b = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
    crc = T->t[7][a & 0xffu] ^ T->t[6][(a >> 8) & 0xffu] ^ T->t[5][(a >> 16) & 0xffu] ^
          T->t[4][a >> 24] ^ T->t[3][b & 0xffu] ^ T->t[2][(b >> 8) & 0xffu] ^
          T->t[1][(b >> 16) & 0xffu] ^ T->t[0][b >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ T->t[0][(crc ^ *p++) & 0xffu];
  return ~crc;
}

/* ------------------------------------------------------------------------ */
/* Little-endian helpers                                                     */
/* ------------------------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static int f16_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

/* Saturating arithmetic for the size bound. */
static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
static uint64_t sat_mul(uint64_t a, uint64_t b) {
  return a && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

/* The rate of one side as stored: twice the bits (2..16), 0 in fp16 mode. */
static uint32_t rate_code(const tq_cache *c, const tq_side_codec *s) {
  if (c->p.mode != TQ_CACHE_TURBOQUANT) return 0;
  return (uint32_t)(s->bits * 2.0f);
}

/* Whether a calibrated lane stores its means (they are zeros otherwise). */
static int has_means(const tq_cache *c) { return c->p.center != 0; }

/* The largest file a cache with these parameters can produce. */
static uint64_t max_file_size(const tq_cache *c) {
  const tq_cache_params *p = &c->p;
  uint64_t d = p->head_dim;
  uint64_t total = TQ_FILE_FIXED_HEADER + 8ull * p->n_layers + 4u;
  for (uint32_t l = 0; l < p->n_layers; l++) {
    const tq_layer *L = &c->layers[l];
    uint64_t per_tok = 4 * d; /* fp16 key and value rows */
    uint64_t rec = (uint64_t)L->k.rec_bytes + L->v.rec_bytes;
    if (rec > per_tok) per_tok = rec;
    uint64_t lane = sat_add(TQ_FILE_LANE_COUNTS, sat_mul(p->max_tokens, per_tok));
    lane = sat_add(lane, 12 * d); /* two f32 means, two u16 permutations */
    total = sat_add(total, sat_mul(lane, p->n_kv_heads));
  }
  return total;
}

/* ------------------------------------------------------------------------ */
/* Saving                                                                    */
/* ------------------------------------------------------------------------ */

#define TQ_WBUF 65536

typedef struct writer {
  FILE *f;
  const crc_table *crc_tab;
  uint32_t crc;
  int err;
  size_t len;
  uint8_t *buf; /* TQ_WBUF bytes */
} writer;

static void w_flush(writer *w) {
  if (w->len == 0) return;
  w->crc = crc_update(w->crc_tab, w->crc, w->buf, w->len);
  if (!w->err && fwrite(w->buf, 1, w->len, w->f) != w->len) w->err = 1;
  w->len = 0;
}

static void w_bytes(writer *w, const void *data, size_t n) {
  const uint8_t *p = data;
  while (n) {
    size_t room = TQ_WBUF - w->len, k = n < room ? n : room;
    memcpy(w->buf + w->len, p, k);
    w->len += k;
    p += k;
    n -= k;
    if (w->len == TQ_WBUF) w_flush(w);
  }
}

static void w_u32(writer *w, uint32_t v) {
  uint8_t b[4];
  put_u32(b, v);
  w_bytes(w, b, 4);
}

static void w_u64(writer *w, uint64_t v) {
  w_u32(w, (uint32_t)v);
  w_u32(w, (uint32_t)(v >> 32));
}

static void w_u16s(writer *w, const uint16_t *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (TQ_WBUF - w->len < 2) w_flush(w);
    w->buf[w->len++] = (uint8_t)x[i];
    w->buf[w->len++] = (uint8_t)(x[i] >> 8);
  }
}

static void w_f32s(writer *w, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    w_u32(w, u);
  }
}

static void write_header(writer *w, const tq_cache *c) {
  const tq_cache_params *p = &c->p;
  w_bytes(w, TQ_FILE_MAGIC, 8);
  w_u32(w, TQ_FILE_VERSION);
  w_u32(w, TQ_CODE_FORMAT_VERSION);
  w_u32(w, p->n_layers);
  w_u32(w, p->n_kv_heads);
  w_u32(w, p->head_dim);
  w_u32(w, p->max_tokens);
  w_u32(w, p->block_tokens);
  w_u32(w, (uint32_t)p->mode);
  w_u32(w, p->sink_tokens);
  w_u32(w, p->window_tokens);
  w_u32(w, p->center ? 1u : 0u);
  w_u32(w, p->calib_tokens);
  w_u32(w, (uint32_t)p->rotation);
  w_u64(w, p->key_seed);
  w_u64(w, p->value_seed);
  for (uint32_t l = 0; l < p->n_layers; l++) {
    w_u32(w, rate_code(c, &c->layers[l].k));
    w_u32(w, rate_code(c, &c->layers[l].v));
  }
}

/* The n_comp records of one side (key: 0, value: 1), in position order. */
static void write_records(writer *w, const tq_cache *c, const tq_layer *L, const tq_lane *ln,
                          int value) {
  uint32_t B = c->p.block_tokens, d = c->p.head_dim;
  size_t rec = value ? L->v.rec_bytes : L->k.rec_bytes;
  size_t base = value ? L->k_block_bytes : 0;
  for (uint32_t t = 0; t < ln->n_comp; t++) {
    const uint8_t *r = ln->blocks[t / B] + base + (size_t)(t % B) * rec;
    if (c->p.mode == TQ_CACHE_F16) {
      w_u16s(w, (const uint16_t *)(const void *)r, d);
    } else if (c->p.mode == TQ_CACHE_F32) {
      for (uint32_t j = 0; j < d; j++) {
        uint32_t u;
        memcpy(&u, r + 4 * (size_t)j, sizeof u);
        w_u32(w, u);
      }
    } else {
      w_bytes(w, r, rec);
    }
  }
}

static void write_ring(writer *w, const tq_cache *c, const tq_lane *ln, const uint16_t *ring) {
  uint32_t d = c->p.head_dim;
  for (uint32_t i = 0; i < ln->n_ring; i++)
    w_u16s(w, ring + (size_t)tq_ring_slot(ln, c->p.window_tokens, i) * d, d);
}

static void write_lane(writer *w, const tq_cache *c, const tq_layer *L, const tq_lane *ln) {
  size_t d = c->p.head_dim;
  w_u32(w, ln->n_sink);
  w_u32(w, ln->n_comp);
  w_u32(w, ln->n_pend);
  w_u32(w, ln->n_ring);
  w_u32(w, ln->n_ring ? ln->ring_head : 0);
  w_u32(w, ln->calibrated ? 1u : 0u);
  if (ln->n_sink) {
    w_u16s(w, ln->sink_k, ln->n_sink * d);
    w_u16s(w, ln->sink_v, ln->n_sink * d);
  }
  write_records(w, c, L, ln, 0);
  write_records(w, c, L, ln, 1);
  if (ln->n_pend) {
    w_u16s(w, ln->pend_k, ln->n_pend * d);
    w_u16s(w, ln->pend_v, ln->n_pend * d);
  }
  if (ln->n_ring) {
    write_ring(w, c, ln, ln->ring_k);
    write_ring(w, c, ln, ln->ring_v);
  }
  if (L->needs_calib && ln->calibrated) {
    if (has_means(c)) {
      w_f32s(w, ln->k_mean, d);
      w_f32s(w, ln->v_mean, d);
    }
    if (L->k.n_groups == 2) w_u16s(w, ln->k_perm, d);
    if (L->v.n_groups == 2) w_u16s(w, ln->v_perm, d);
  }
}

/* Best effort: makes the rename durable. A failure here is not reported, as
 * the new file is already complete under its name. */
static void sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash) {
    dir = malloc(2);
    if (dir) strcpy(dir, ".");
  } else {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    dir = malloc(n + 1);
    if (dir) {
      memcpy(dir, path, n);
      dir[n] = '\0';
    }
  }
  if (!dir) return;
  int fd = open(dir, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

tq_status tq_cache_save(const tq_cache *cache, const char *path) {
  if (!cache || !path || !*path) return TQ_ERR_INVALID_ARGUMENT;
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 48);
  crc_table *tab = malloc(sizeof *tab);
  uint8_t *buf = malloc(TQ_WBUF);
  if (!tmp || !tab || !buf) {
    free(tmp);
    free(tab);
    free(buf);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  crc_init(tab);
  tq_status st = TQ_ERR_IO;

  /* A fresh name next to the target: O_EXCL, so concurrent saves (and stale
   * files of a dead process with the same id) never share a file. */
  int fd = -1;
  for (unsigned i = 0; i < 1000 && fd < 0; i++) {
    snprintf(tmp, plen + 48, "%s.tmp.%ld.%u", path, (long)getpid(), i);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) goto done;
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmp);
    goto done;
  }

  writer w = {f, tab, 0, 0, 0, buf};
  write_header(&w, cache);
  for (uint32_t l = 0; l < cache->p.n_layers; l++) {
    const tq_layer *L = &cache->layers[l];
    for (uint32_t h = 0; h < cache->p.n_kv_heads; h++) write_lane(&w, cache, L, &L->lanes[h]);
  }
  w_flush(&w);
  uint8_t trailer[4];
  put_u32(trailer, w.crc);
  int err = w.err;
  if (!err && fwrite(trailer, 1, 4, f) != 4) err = 1;
  if (fflush(f) != 0) err = 1;
  if (!err && fsync(fileno(f)) != 0) err = 1;
  if (fclose(f) != 0) err = 1;
  if (err || rename(tmp, path) != 0) {
    unlink(tmp);
    goto done;
  }
  sync_parent_dir(path);
  st = TQ_OK;
done:
  free(tmp);
  free(tab);
  free(buf);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct reader {
  const uint8_t *p;
  size_t n, pos;
} reader;

/* Returns the next k bytes and advances, or NULL if fewer remain. */
static const uint8_t *r_take(reader *r, size_t k) {
  if (k > r->n - r->pos) return NULL;
  const uint8_t *q = r->p + r->pos;
  r->pos += k;
  return q;
}

static int r_u32(reader *r, uint32_t *v) {
  const uint8_t *q = r_take(r, 4);
  if (!q) return 0;
  *v = get_u32(q);
  return 1;
}

static int r_u64(reader *r, uint64_t *v) {
  const uint8_t *q = r_take(r, 8);
  if (!q) return 0;
  *v = (uint64_t)get_u32(q) | (uint64_t)get_u32(q + 4) << 32;
  return 1;
}

/* Checks the header (after the magic and versions) against the cache. */
static tq_status check_params(const tq_cache *c, reader *r) {
  const tq_cache_params *p = &c->p;
  uint32_t want[11] = {p->n_layers,     p->n_kv_heads,    p->head_dim,     p->max_tokens,
                       p->block_tokens, (uint32_t)p->mode, p->sink_tokens, p->window_tokens,
                       p->center ? 1u : 0u, p->calib_tokens, (uint32_t)p->rotation};
  for (int i = 0; i < 11; i++) {
    uint32_t v;
    if (!r_u32(r, &v)) return TQ_ERR_CORRUPT;
    if (v != want[i]) return TQ_ERR_MISMATCH;
  }
  uint64_t ks, vs;
  if (!r_u64(r, &ks) || !r_u64(r, &vs)) return TQ_ERR_CORRUPT;
  if (ks != p->key_seed || vs != p->value_seed) return TQ_ERR_MISMATCH;
  for (uint32_t l = 0; l < p->n_layers; l++) {
    uint32_t kb, vb;
    if (!r_u32(r, &kb) || !r_u32(r, &vb)) return TQ_ERR_CORRUPT;
    if (kb != rate_code(c, &c->layers[l].k) || vb != rate_code(c, &c->layers[l].v))
      return TQ_ERR_MISMATCH;
  }
  return TQ_OK;
}

/* Magic and versions: what can be judged before the checksum. */
static tq_status check_magic(const uint8_t *b, size_t size) {
  if (size < 8 || memcmp(b, TQ_FILE_MAGIC, 8) != 0) return TQ_ERR_CORRUPT;
  if (size < 16) return TQ_ERR_CORRUPT;
  if (get_u32(b + 8) != TQ_FILE_VERSION || get_u32(b + 12) != TQ_CODE_FORMAT_VERSION)
    return TQ_ERR_FORMAT_VERSION;
  return TQ_OK;
}

/* Reads n fp16 values into dst, rejecting infinities and NaNs. */
static tq_status read_f16s(reader *r, uint16_t *dst, size_t n) {
  if (n > (r->n - r->pos) / 2) return TQ_ERR_CORRUPT;
  const uint8_t *q = r_take(r, n * 2);
  for (size_t i = 0; i < n; i++) {
    uint16_t h = get_u16(q + 2 * i);
    if (!f16_finite(h)) return TQ_ERR_CORRUPT;
    dst[i] = h;
  }
  return TQ_OK;
}

/* Checks one coded record (each group: a valid norm, zero unused bits). */
static int record_ok(const tq_side_codec *s, const uint8_t *rec) {
  for (uint32_t g = 0; g < s->n_groups; g++) {
    const uint8_t *sub = rec + s->offset[g];
    tq_codec_params cp;
    tq_codec_get_params(s->codec[g], &cp);
    size_t norm_bytes;
    if (cp.norm_format == TQ_NORM_F16) {
      uint16_t h = get_u16(sub);
      if ((h & 0x8000u) || !f16_finite(h)) return 0;
      norm_bytes = 2;
    } else {
      uint32_t u = get_u32(sub);
      if ((u & 0x80000000u) || (u & 0x7f800000u) == 0x7f800000u) return 0;
      norm_bytes = 4;
    }
    size_t bits = (size_t)s->dim[g] * s->gbits[g];
    if (bits % 8) {
      uint8_t last = sub[norm_bytes + bits / 8];
      if (last >> (bits % 8)) return 0;
    }
  }
  return 1;
}

/* Reads the n_comp records of one side into the lane's blocks. */
static tq_status read_records(tq_cache *c, const tq_layer *L, tq_lane *ln, reader *r, int value) {
  const tq_side_codec *s = value ? &L->v : &L->k;
  uint32_t B = c->p.block_tokens, d = c->p.head_dim;
  size_t base = value ? L->k_block_bytes : 0;
  if (ln->n_comp > (r->n - r->pos) / s->rec_bytes) return TQ_ERR_CORRUPT;
  for (uint32_t t = 0; t < ln->n_comp; t++) {
    uint8_t *dst = ln->blocks[t / B] + base + (size_t)(t % B) * s->rec_bytes;
    if (c->p.mode == TQ_CACHE_F16) {
      tq_status st = read_f16s(r, (uint16_t *)(void *)dst, d);
      if (st != TQ_OK) return st;
    } else if (c->p.mode == TQ_CACHE_F32) {
      const uint8_t *q = r_take(r, s->rec_bytes);
      for (uint32_t j = 0; j < d; j++) {
        uint32_t u = get_u32(q + 4 * (size_t)j);
        float x;
        memcpy(&x, &u, sizeof x);
        /* The cache accepts no vector longer than TQ_CACHE_MAX_NORM. */
        if (!(fabsf(x) <= TQ_CACHE_MAX_NORM)) return TQ_ERR_CORRUPT;
        memcpy(dst + 4 * (size_t)j, &x, sizeof x);
      }
    } else {
      const uint8_t *q = r_take(r, s->rec_bytes);
      if (!record_ok(s, q)) return TQ_ERR_CORRUPT;
      memcpy(dst, q, s->rec_bytes);
    }
  }
  return TQ_OK;
}

static tq_status read_ring(tq_cache *c, tq_lane *ln, reader *r, uint16_t *ring) {
  uint32_t d = c->p.head_dim;
  for (uint32_t i = 0; i < ln->n_ring; i++) {
    tq_status st = read_f16s(r, ring + (size_t)tq_ring_slot(ln, c->p.window_tokens, i) * d, d);
    if (st != TQ_OK) return st;
  }
  return TQ_OK;
}

static tq_status read_means(reader *r, float *dst, uint32_t d) {
  if (d > (r->n - r->pos) / 4) return TQ_ERR_CORRUPT;
  const uint8_t *q = r_take(r, (size_t)d * 4);
  for (uint32_t j = 0; j < d; j++) {
    uint32_t u = get_u32(q + 4 * j);
    float x;
    memcpy(&x, &u, sizeof x);
    /* A mean of fp16 rows lies within the fp16 range. */
    if (!(fabsf(x) <= TQ_F16_MAX)) return TQ_ERR_CORRUPT;
    dst[j] = x;
  }
  return TQ_OK;
}

static tq_status read_perm(reader *r, uint16_t *dst, uint32_t d) {
  if (d > (r->n - r->pos) / 2) return TQ_ERR_CORRUPT;
  const uint8_t *q = r_take(r, (size_t)d * 2);
  uint8_t seen[TQ_MAX_DIM];
  memset(seen, 0, d);
  for (uint32_t j = 0; j < d; j++) {
    uint16_t v = get_u16(q + 2 * j);
    if (v >= d || seen[v]) return TQ_ERR_CORRUPT;
    seen[v] = 1;
    dst[j] = v;
  }
  return TQ_OK;
}

/* Checks a lane's counts against the parameters (and the layer's rules). */
static tq_status check_counts(const tq_cache *c, const tq_layer *L, const uint32_t n[6]) {
  const tq_cache_params *p = &c->p;
  uint32_t n_sink = n[0], n_comp = n[1], n_pend = n[2], n_ring = n[3], head = n[4], cal = n[5];
  uint64_t total = (uint64_t)n_sink + n_comp + n_pend + n_ring;
  if (total > p->max_tokens || cal > 1) return TQ_ERR_CORRUPT;
  if (p->mode != TQ_CACHE_TURBOQUANT) {
    /* fp16 mode: everything is in the blocks. */
    if (n_sink || n_pend || n_ring || head || cal) return TQ_ERR_CORRUPT;
    return TQ_OK;
  }
  if (n_sink > p->sink_tokens) return TQ_ERR_CORRUPT;
  /* The sinks fill first. */
  if (n_sink < p->sink_tokens && (n_comp || n_pend || n_ring)) return TQ_ERR_CORRUPT;
  if (n_ring > p->window_tokens) return TQ_ERR_CORRUPT;
  if (n_ring ? head >= p->window_tokens : head != 0) return TQ_ERR_CORRUPT;
  if (L->needs_calib) {
    /* Coded tokens exist exactly when the lane is calibrated; pending rows
     * only before that, fewer than calib_tokens. */
    if (cal ? (n_pend || !n_comp) : (n_comp || n_pend >= p->calib_tokens)) return TQ_ERR_CORRUPT;
  } else if (cal || n_pend) {
    return TQ_ERR_CORRUPT;
  }
  return TQ_OK;
}

/* Reads one lane into ln (zeroed, in the cache's counter). On an error what
 * was allocated stays in ln for the caller to release. */
static tq_status read_lane(tq_cache *c, const tq_layer *L, tq_lane *ln, reader *r,
                           uint32_t *tokens) {
  const tq_cache_params *p = &c->p;
  uint32_t d = p->head_dim;
  size_t row = (size_t)d * sizeof(uint16_t);
  uint32_t n[6];
  for (int i = 0; i < 6; i++)
    if (!r_u32(r, &n[i])) return TQ_ERR_CORRUPT;
  tq_status st = check_counts(c, L, n);
  if (st != TQ_OK) return st;
  ln->n_sink = n[0];
  ln->n_comp = n[1];
  ln->n_pend = n[2];
  ln->n_ring = n[3];
  ln->ring_head = n[4];
  ln->calibrated = (int)n[5];
  *tokens = tq_lane_tokens(ln);

  /* The data must be there before anything is sized by the counts. */
  uint64_t need = ((uint64_t)ln->n_sink + ln->n_pend + ln->n_ring) * 2 * row +
                  (uint64_t)ln->n_comp * (L->k.rec_bytes + L->v.rec_bytes);
  if (need > r->n - r->pos) return TQ_ERR_CORRUPT;

  /* The buffers kvcache.c's lane_reserve gives a lane that holds tokens. */
  if (p->mode == TQ_CACHE_TURBOQUANT && *tokens > 0) {
    if (p->sink_tokens) {
      if (!(ln->sink_k = tq_cache_alloc(c, row * p->sink_tokens))) return TQ_ERR_OUT_OF_MEMORY;
      if (!(ln->sink_v = tq_cache_alloc(c, row * p->sink_tokens))) return TQ_ERR_OUT_OF_MEMORY;
    }
    if (p->window_tokens) {
      if (!(ln->ring_k = tq_cache_alloc(c, row * p->window_tokens))) return TQ_ERR_OUT_OF_MEMORY;
      if (!(ln->ring_v = tq_cache_alloc(c, row * p->window_tokens))) return TQ_ERR_OUT_OF_MEMORY;
    }
    if (L->needs_calib) {
      if (!(ln->k_mean = tq_cache_alloc(c, d * sizeof(float))) ||
          !(ln->v_mean = tq_cache_alloc(c, d * sizeof(float))) ||
          !(ln->k_perm = tq_cache_alloc(c, d * sizeof(uint16_t))) ||
          !(ln->v_perm = tq_cache_alloc(c, d * sizeof(uint16_t))))
        return TQ_ERR_OUT_OF_MEMORY;
      if (!ln->calibrated) {
        if (!(ln->pend_k = tq_cache_alloc(c, row * p->calib_tokens))) return TQ_ERR_OUT_OF_MEMORY;
        if (!(ln->pend_v = tq_cache_alloc(c, row * p->calib_tokens))) return TQ_ERR_OUT_OF_MEMORY;
      }
    }
  }
  uint32_t B = p->block_tokens;
  uint32_t blocks = (uint32_t)(((uint64_t)ln->n_comp + B - 1) / B);
  if (blocks) {
    uint32_t cap = 4; /* as lane_reserve grows it */
    while (cap < blocks) cap *= 2;
    if (!(ln->blocks = tq_cache_alloc(c, cap * sizeof *ln->blocks))) return TQ_ERR_OUT_OF_MEMORY;
    ln->cap_blocks = cap;
    for (uint32_t b = 0; b < blocks; b++) {
      if (!(ln->blocks[b] = tq_cache_alloc(c, L->block_bytes))) return TQ_ERR_OUT_OF_MEMORY;
      ln->n_blocks = b + 1;
    }
  }

  if (ln->n_sink) {
    if ((st = read_f16s(r, ln->sink_k, (size_t)ln->n_sink * d)) != TQ_OK) return st;
    if ((st = read_f16s(r, ln->sink_v, (size_t)ln->n_sink * d)) != TQ_OK) return st;
  }
  if ((st = read_records(c, L, ln, r, 0)) != TQ_OK) return st;
  if ((st = read_records(c, L, ln, r, 1)) != TQ_OK) return st;
  if (ln->n_pend) {
    if ((st = read_f16s(r, ln->pend_k, (size_t)ln->n_pend * d)) != TQ_OK) return st;
    if ((st = read_f16s(r, ln->pend_v, (size_t)ln->n_pend * d)) != TQ_OK) return st;
  }
  if (ln->n_ring) {
    if ((st = read_ring(c, ln, r, ln->ring_k)) != TQ_OK) return st;
    if ((st = read_ring(c, ln, r, ln->ring_v)) != TQ_OK) return st;
  }
  if (L->needs_calib && ln->calibrated) {
    if (has_means(c)) {
      if ((st = read_means(r, ln->k_mean, d)) != TQ_OK) return st;
      if ((st = read_means(r, ln->v_mean, d)) != TQ_OK) return st;
    }
    if (L->k.n_groups == 2 && (st = read_perm(r, ln->k_perm, d)) != TQ_OK) return st;
    if (L->v.n_groups == 2 && (st = read_perm(r, ln->v_perm, d)) != TQ_OK) return st;
  }
  return TQ_OK;
}

static void release_lanes(tq_cache *c, tq_lane **lanes) {
  for (uint32_t l = 0; l < c->p.n_layers; l++) {
    if (!lanes[l]) continue;
    for (uint32_t h = 0; h < c->p.n_kv_heads; h++) tq_lane_free(c, &lanes[l][h]);
    tq_cache_dealloc(c, lanes[l]);
  }
  free(lanes);
}

tq_status tq_cache_load_buffer(tq_cache *cache, const void *data, size_t size) {
  if (!cache || !data) return TQ_ERR_INVALID_ARGUMENT;
  const uint8_t *b = data;
  tq_status st = check_magic(b, size);
  if (st != TQ_OK) return st;
  if (size < TQ_FILE_FIXED_HEADER + 4) return TQ_ERR_CORRUPT;

  crc_table *tab = malloc(sizeof *tab);
  if (!tab) return TQ_ERR_OUT_OF_MEMORY;
  crc_init(tab);
  uint32_t crc = crc_update(tab, 0, b, size - 4);
  free(tab);
  if (crc != get_u32(b + size - 4)) return TQ_ERR_CORRUPT;

  reader r = {b, size - 4, 16};
  st = check_params(cache, &r);
  if (st != TQ_OK) return st;

  const tq_cache_params *p = &cache->p;
  tq_lane **lanes = calloc(p->n_layers, sizeof *lanes);
  if (!lanes) return TQ_ERR_OUT_OF_MEMORY;
  for (uint32_t l = 0; l < p->n_layers && st == TQ_OK; l++) {
    const tq_layer *L = &cache->layers[l];
    lanes[l] = tq_cache_alloc(cache, (size_t)p->n_kv_heads * sizeof **lanes);
    if (!lanes[l]) {
      st = TQ_ERR_OUT_OF_MEMORY;
      break;
    }
    uint32_t first = 0;
    for (uint32_t h = 0; h < p->n_kv_heads && st == TQ_OK; h++) {
      uint32_t tokens = 0;
      st = read_lane(cache, L, &lanes[l][h], &r, &tokens);
      if (st == TQ_OK && h == 0) first = tokens;
      /* Every head of a layer holds the same positions. */
      if (st == TQ_OK && tokens != first) st = TQ_ERR_CORRUPT;
    }
  }
  if (st == TQ_OK && r.pos != r.n) st = TQ_ERR_CORRUPT; /* trailing bytes */
  if (st != TQ_OK) {
    release_lanes(cache, lanes);
    return st;
  }
  /* Accepted: drop the old token memory and swap the new lanes in. */
  for (uint32_t l = 0; l < p->n_layers; l++) {
    tq_layer *L = &cache->layers[l];
    for (uint32_t h = 0; h < p->n_kv_heads; h++) tq_lane_free(cache, &L->lanes[h]);
    tq_cache_dealloc(cache, L->lanes);
    L->lanes = lanes[l];
  }
  free(lanes);
  return TQ_OK;
}

/* A file bigger than the cache could ever write: judged by its header alone
 * (so a file of other parameters still reads as a mismatch), else corrupt. */
static tq_status oversized(const tq_cache *c, FILE *f) {
  size_t want = TQ_FILE_FIXED_HEADER + 8 * (size_t)c->p.n_layers;
  uint8_t *h = malloc(want);
  if (!h) return TQ_ERR_OUT_OF_MEMORY;
  size_t got = fread(h, 1, want, f);
  tq_status st = check_magic(h, got);
  if (st == TQ_OK) {
    reader r = {h, got, 16};
    st = check_params(c, &r);
  }
  free(h);
  return st == TQ_OK ? TQ_ERR_CORRUPT : st;
}

tq_status tq_cache_load(tq_cache *cache, const char *path) {
  if (!cache || !path) return TQ_ERR_INVALID_ARGUMENT;
  uint64_t limit = max_file_size(cache);
  if (limit > TQ_FILE_ABSURD) limit = TQ_FILE_ABSURD;
  if (limit > SIZE_MAX / 2) limit = SIZE_MAX / 2;
  FILE *f = fopen(path, "rb");
  if (!f) return TQ_ERR_IO;
  struct stat sb;
  uint64_t hint = 0;
  if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0)
    hint = (uint64_t)sb.st_size;
  if (hint > limit) {
    tq_status st = oversized(cache, f);
    fclose(f);
    return st;
  }
  /* Read to the end, whatever the size said (one spare byte shows EOF). */
  size_t cap = hint ? (size_t)hint + 1 : 4096, len = 0;
  uint8_t *buf = malloc(cap);
  tq_status st = TQ_OK;
  if (!buf) st = TQ_ERR_OUT_OF_MEMORY;
  while (st == TQ_OK) {
    if (len == cap) {
      if (len > limit) {
        st = TQ_ERR_CORRUPT;
        break;
      }
      size_t ncap = cap * 2 > (size_t)limit + 1 ? (size_t)limit + 1 : cap * 2;
      uint8_t *grown = realloc(buf, ncap);
      if (!grown) {
        st = TQ_ERR_OUT_OF_MEMORY;
        break;
      }
      buf = grown;
      cap = ncap;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (len < cap) {
      if (ferror(f)) st = TQ_ERR_IO;
      break;
    }
  }
  if (st == TQ_OK && len > limit) st = TQ_ERR_CORRUPT;
  fclose(f);
  if (st == TQ_OK) st = tq_cache_load_buffer(cache, buf, len);
  free(buf);
  return st;
}
