/*
 * fuzz_cachefile.c - libFuzzer target for tq_cache_load_buffer.
 *
 * Input: byte 0 picks one of N_CONFIGS cache configurations (low bits) and,
 * with bit 7 clear, asks the harness to rewrite the trailing CRC-32 so the
 * mutated bytes get past the checksum and reach the parser; the rest is the
 * cache file image. On an error the cache must be unchanged (same token
 * counts and byte count); on success attention must run and give finite
 * outputs, and appending tokens to the loaded state must work.
 *
 * Built with -DTQ_FUZZ_SEEDGEN instead, main(argc, argv) writes a few valid
 * files of each configuration (with their leading byte) into argv[1]: the
 * seed corpus in fuzz/corpus/cachefile/.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqai.h"

#define N_CONFIGS 4

static const float g_layer_k[3] = {8.0f, 1.5f, 3.0f};
static const float g_layer_v[3] = {1.0f, 7.5f, 2.0f};

static tq_cache_params config(int i) {
  tq_cache_params p;
  switch (i) {
    case 0: /* fractional, centered, sinks, window, calibration */
      p = tq_cache_params_default(1, 2, 8);
      p.key_bits = 3.5f;
      p.value_bits = 2.5f;
      p.center = 1;
      p.sink_tokens = 2;
      p.window_tokens = 4;
      p.calib_tokens = 8;
      break;
    case 1: /* fp16 baseline */
      p = tq_cache_params_default(2, 1, 4);
      p.mode = TQ_CACHE_F16;
      break;
    case 2: /* Hadamard, integer rates, window only */
      p = tq_cache_params_default(2, 2, 16);
      p.rotation = TQ_ROTATION_HADAMARD;
      p.key_bits = 2.0f;
      p.value_bits = 1.0f;
      p.window_tokens = 3;
      break;
    default: /* per-layer rates, fractional without centering */
      p = tq_cache_params_default(3, 1, 8);
      p.layer_key_bits = g_layer_k;
      p.layer_value_bits = g_layer_v;
      p.sink_tokens = 1;
      p.window_tokens = 2;
      p.calib_tokens = 4;
      break;
  }
  p.block_tokens = 16;
  p.max_tokens = 48;
  return p;
}

/* Deterministic token data. */
static float value_at(uint32_t seed, size_t i) {
  uint32_t x = seed * 2654435761u ^ (uint32_t)i * 40503u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return (float)((int32_t)(x % 2001u) - 1000) / 250.0f + (float)(i % 3);
}

static void append_tokens(tq_cache *c, uint32_t layer, uint32_t n, uint32_t seed) {
  if (n == 0) return;
  tq_cache_params p;
  tq_cache_get_params(c, &p);
  size_t cnt = (size_t)n * p.n_kv_heads * p.head_dim;
  float *k = malloc(cnt * sizeof *k), *v = malloc(cnt * sizeof *v);
  if (!k || !v) abort();
  for (size_t i = 0; i < cnt; i++) {
    k[i] = value_at(seed, i);
    v[i] = value_at(seed + 7, i);
  }
  tq_status st = tq_cache_append(c, layer, k, v, n);
  if (st != TQ_OK && st != TQ_ERR_RANGE) abort();
  free(k);
  free(v);
}

#ifndef TQ_FUZZ_SEEDGEN

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tq_cache *g_cache[N_CONFIGS];

/* Runs attention (n_q 1 and up to 3) on every layer; outputs must be finite. */
static void check_attention(const tq_cache *c) {
  tq_cache_params p;
  tq_cache_get_params(c, &p);
  float q[3 * 2 * 2 * 16], out[3 * 2 * 2 * 16];
  for (size_t i = 0; i < sizeof q / sizeof *q; i++) q[i] = value_at(99, i) * 0.25f;
  for (uint32_t l = 0; l < p.n_layers; l++) {
    uint32_t T = tq_cache_tokens(c, l);
    for (uint32_t n_q = 1; n_q <= 3 && n_q <= T; n_q += 2) {
      uint32_t hq = 2 * p.n_kv_heads;
      if (tq_cache_attention(c, l, q, n_q, hq, 0.5f, out, NULL) != TQ_OK) abort();
      for (size_t i = 0; i < (size_t)n_q * hq * p.head_dim; i++)
        if (!isfinite(out[i])) abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int which = data[0] % N_CONFIGS;
  if (!g_cache[which]) {
    tq_cache_params p = config(which);
    if (tq_cache_create(&p, &g_cache[which]) != TQ_OK) abort();
    append_tokens(g_cache[which], 0, 5, 1); /* something to keep on errors */
  }
  tq_cache *c = g_cache[which];
  tq_cache_params p;
  tq_cache_get_params(c, &p);

  size_t n = size - 1;
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) abort();
  memcpy(buf, data + 1, n);
  if (!(data[0] & 0x80) && n >= 4) {
    /* CRC-32 (IEEE, reflected) of everything before the trailer. */
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n - 4; i++) {
      crc ^= buf[i];
      for (int k = 0; k < 8; k++) crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    crc = ~crc;
    for (int i = 0; i < 4; i++) buf[n - 4 + i] = (uint8_t)(crc >> (8 * i));
  }

  uint32_t before[3] = {0, 0, 0};
  for (uint32_t l = 0; l < p.n_layers; l++) before[l] = tq_cache_tokens(c, l);
  size_t bytes = tq_cache_bytes(c);
  tq_status st = tq_cache_load_buffer(c, buf, n);
  free(buf);
  if (st != TQ_OK) {
    /* A failed load changes nothing. */
    if (tq_cache_bytes(c) != bytes) abort();
    for (uint32_t l = 0; l < p.n_layers; l++)
      if (tq_cache_tokens(c, l) != before[l]) abort();
    return 0;
  }
  for (uint32_t l = 0; l < p.n_layers; l++)
    if (tq_cache_tokens(c, l) > p.max_tokens) abort();
  check_attention(c);
  /* The loaded state must take new tokens like any other. */
  for (uint32_t l = 0; l < p.n_layers; l++) append_tokens(c, l, 3, 5 + l);
  check_attention(c);
  return 0;
}

#else /* TQ_FUZZ_SEEDGEN */

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const uint32_t counts[4] = {0, 4, 11, 40};
  for (int w = 0; w < N_CONFIGS; w++) {
    for (int t = 0; t < 4; t++) {
      tq_cache_params p = config(w);
      tq_cache *c;
      if (tq_cache_create(&p, &c) != TQ_OK) return 1;
      for (uint32_t l = 0; l < p.n_layers; l++)
        append_tokens(c, l, counts[t] > l ? counts[t] - l : 0, 11u * (uint32_t)t + l);
      char tmp[4096], out[4096];
      snprintf(tmp, sizeof tmp, "%s/.seed.tmp", argv[1]);
      snprintf(out, sizeof out, "%s/cfg%d-%u.bin", argv[1], w, counts[t]);
      if (tq_cache_save(c, tmp) != TQ_OK) return 1;
      tq_cache_free(c);
      FILE *in = fopen(tmp, "rb"), *o = fopen(out, "wb");
      if (!in || !o) return 1;
      fputc(w, o);
      int ch;
      while ((ch = fgetc(in)) != EOF) fputc(ch, o);
      fclose(in);
      if (fclose(o) != 0) return 1;
      remove(tmp);
    }
  }
  return 0;
}

#endif
