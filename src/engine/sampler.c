/*
 * sampler.c - picks the next token from logits: repetition penalty, then
 * greedy argmax or temperature, top-k, top-p and min-p on the candidates.
 * Random numbers come from a splitmix64/xoshiro-style generator owned by the
 * sampler, so a seed reproduces a generation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tqai_engine.h"

typedef struct cand {
  int32_t id;
  float logit;
} cand;

struct tq_sampler {
  tq_sampler_params p;
  uint32_t n_vocab;
  uint64_t rng;
  int32_t *history;   /* (repeat_last_n,) ring of recent tokens */
  uint32_t n_hist, hist_head;
  cand *cands;        /* (n_vocab,) scratch */
};

tq_sampler_params tq_sampler_params_greedy(void) {
  tq_sampler_params p;
  memset(&p, 0, sizeof p);
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.repeat_penalty = 1.0f;
  return p;
}

tq_sampler_params tq_sampler_params_default(void) {
  tq_sampler_params p = tq_sampler_params_greedy();
  p.temperature = 0.8f;
  p.top_k = 40;
  p.top_p = 0.95f;
  p.min_p = 0.05f;
  p.repeat_penalty = 1.1f;
  p.repeat_last_n = 64;
  return p;
}

tq_status tq_sampler_create(const tq_sampler_params *p, uint32_t n_vocab, tq_sampler **out) {
  if (out) *out = NULL;
  if (!p || !out || n_vocab == 0) return TQ_ERR_INVALID_ARGUMENT;
  if (!(p->temperature >= 0.0f) || !isfinite(p->temperature) || !(p->top_p > 0.0f && p->top_p <= 1.0f) ||
      !(p->min_p >= 0.0f && p->min_p <= 1.0f) || !(p->repeat_penalty > 0.0f) ||
      !isfinite(p->repeat_penalty) || p->repeat_last_n > (1u << 20))
    return TQ_ERR_INVALID_ARGUMENT;
  tq_sampler *s = calloc(1, sizeof *s);
  if (!s) return TQ_ERR_OUT_OF_MEMORY;
  s->p = *p;
  s->n_vocab = n_vocab;
  s->rng = p->seed ^ 0x5eed5eed5eed5eedull;
  s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
  s->history = p->repeat_last_n ? malloc(p->repeat_last_n * sizeof *s->history) : NULL;
  if (!s->cands || (p->repeat_last_n && !s->history)) {
    tq_sampler_free(s);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  *out = s;
  return TQ_OK;
}

void tq_sampler_free(tq_sampler *s) {
  if (!s) return;
  free(s->cands);
  free(s->history);
  free(s);
}

void tq_sampler_accept(tq_sampler *s, int32_t id) {
  if (!s || !s->p.repeat_last_n) return;
  uint32_t cap = s->p.repeat_last_n;
  s->history[(s->hist_head + s->n_hist) % cap] = id;
  if (s->n_hist < cap) s->n_hist++;
  else s->hist_head = (s->hist_head + 1) % cap;
}

static double next_uniform(tq_sampler *s) {
  uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_logit_desc(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
  return (x->id > y->id) - (x->id < y->id);
}

/* Moves the k largest candidates to the front, sorted (partial selection
 * with a heap would be faster; k is small and n is the vocabulary). */
static uint32_t take_top(cand *c, uint32_t n, uint32_t k) {
  if (k == 0 || k >= n) {
    qsort(c, n, sizeof *c, by_logit_desc);
    return n;
  }
  /* Quickselect-free approach: keep a sorted prefix of size k. */
  uint32_t have = 0;
  for (uint32_t i = 0; i < n; i++) {
    cand x = c[i];
    if (have == k && by_logit_desc(&x, &c[k - 1]) >= 0) continue;
    uint32_t j = have < k ? have++ : k - 1;
    while (j > 0 && by_logit_desc(&x, &c[j - 1]) < 0) {
      c[j] = c[j - 1];
      j--;
    }
    c[j] = x;
  }
  return have;
}

tq_status tq_sampler_sample(tq_sampler *s, const float *logits, int32_t *out) {
  if (!s || !logits || !out) return TQ_ERR_INVALID_ARGUMENT;
  uint32_t n = s->n_vocab;
  for (uint32_t i = 0; i < n; i++) s->cands[i] = (cand){(int32_t)i, logits[i]};
  if (s->p.repeat_penalty != 1.0f) {
    for (uint32_t h = 0; h < s->n_hist; h++) {
      int32_t id = s->history[(s->hist_head + h) % s->p.repeat_last_n];
      if (id < 0 || (uint32_t)id >= n) continue;
      float *l = &s->cands[id].logit;
      /* Apply once per distinct token: mark by comparing with the input. */
      if (*l != logits[id]) continue;
      *l = *l > 0.0f ? *l / s->p.repeat_penalty : *l * s->p.repeat_penalty;
    }
  }
  int32_t pick;
  if (s->p.temperature <= 0.0f) {
    pick = 0;
    for (uint32_t i = 1; i < n; i++)
      if (s->cands[i].logit > s->cands[pick].logit) pick = (int32_t)i;
    pick = s->cands[pick].id;
  } else {
    uint32_t m = take_top(s->cands, n, s->p.top_k);
    /* Softmax at the temperature over the m best, in descending order. */
    double mx = s->cands[0].logit, sum = 0.0;
    double *pr = malloc(m * sizeof *pr);
    if (!pr) return TQ_ERR_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < m; i++) sum += (pr[i] = exp((s->cands[i].logit - mx) / s->p.temperature));
    uint32_t keep = m;
    if (s->p.min_p > 0.0f) {
      /* Tokens below min_p times the best probability go. */
      uint32_t k = 1;
      while (k < keep && pr[k] >= s->p.min_p * pr[0]) k++;
      keep = k;
    }
    if (s->p.top_p < 1.0f) {
      double total = 0.0;
      for (uint32_t i = 0; i < keep; i++) total += pr[i];
      double acc = 0.0;
      uint32_t k = 0;
      while (k < keep) {
        acc += pr[k++];
        if (acc >= s->p.top_p * total) break;
      }
      keep = k;
    }
    sum = 0.0;
    for (uint32_t i = 0; i < keep; i++) sum += pr[i];
    double u = next_uniform(s) * sum, acc = 0.0;
    uint32_t i = 0;
    for (; i + 1 < keep; i++) {
      acc += pr[i];
      if (u < acc) break;
    }
    pick = s->cands[i].id;
    free(pr);
  }
  tq_sampler_accept(s, pick);
  *out = pick;
  return TQ_OK;
}
