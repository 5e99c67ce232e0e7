/*
 * test_tokenizer.c - tokenizers against Hugging Face's: the fixtures in
 * tests/data/tokenizer/ (made by tools/fixtures/make_tokenizer_fixtures.py)
 * hold small trained tokenizers as GGUF files and, for a set of texts, the
 * ids and decodings transformers gives. Also round trips, streaming
 * detokenization, special tokens, small buffers, malformed metadata built in
 * memory, concurrent use, and (when fetched) SmolLM2-135M-Instruct's vocabulary.
 *
 * Data directory: $TQAI_TOKENIZER_DATA, else tests/data/tokenizer (the tests
 * run from the repository root).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tqai.h"
#include "tqai_engine.h"

#define SMOLLM_PATH "models/cache/smollm2-135m-instruct.gguf"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static const char *data_dir(void) {
  const char *d = getenv("TQAI_TOKENIZER_DATA");
  return d && *d ? d : "tests/data/tokenizer";
}

/* 1 if s[0, n) is valid UTF-8 (no surrogates, overlongs or values above
 * U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return 0;
    }
    if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += len;
  }
  return 1;
}

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static void buf_add(buf *b, const void *p, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t c = b->cap ? b->cap : 256;
    while (c < b->n + n + 1) c *= 2;
    char *np = realloc(b->p, c);
    if (!np) abort();
    b->p = np;
    b->cap = c;
  }
  if (n) memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static int has_bytes(const void *hay, size_t n, const char *needle) {
  size_t m = strlen(needle);
  for (size_t i = 0; m && i + m <= n; i++)
    if (memcmp((const char *)hay + i, needle, m) == 0) return 1;
  return 0;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes hex ("-" = empty) into a malloc'd buffer; NULL on bad input. */
static unsigned char *unhex(const char *h, size_t *n) {
  size_t l = strcmp(h, "-") == 0 ? 0 : strlen(h);
  if (l % 2) return NULL;
  unsigned char *o = malloc(l / 2 + 1);
  if (!o) abort();
  for (size_t i = 0; i < l / 2; i++) {
    int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
    if (a < 0 || b < 0) {
      free(o);
      return NULL;
    }
    o[i] = (unsigned char)(a * 16 + b);
  }
  *n = l / 2;
  return o;
}

/* Tokenizes into a malloc'd array, checking the size query first. */
static int32_t *tokenize(const tq_tokenizer *t, const void *text, size_t len, int bos, int special,
                         size_t *n) {
  size_t need = 0;
  tq_status st = tq_tokenize(t, text, len, bos, special, NULL, 0, &need);
  CHECK(st == TQ_OK || st == TQ_ERR_BUFFER_TOO_SMALL);
  CHECK((st == TQ_OK) == (need == 0));
  int32_t *ids = malloc((need + 1) * sizeof *ids);
  if (!ids) abort();
  size_t got = 0;
  CHECK_OK(tq_tokenize(t, text, len, bos, special, ids, need + 1, &got));
  CHECK(got == need);
  *n = got;
  return ids;
}

/* Streams ids through a detokenizer one by one (then flushes), checking that
 * every chunk is valid UTF-8; returns the concatenation. */
static buf detok_all(const tq_tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
  buf out = {0};
  tq_detok d;
  tq_detok_init(&d, skip_special);
  char chunk[4096];
  for (size_t i = 0; i <= n; i++) {
    size_t got = 0;
    tq_status st = i < n ? tq_detok_push(t, &d, ids[i], chunk, sizeof chunk, &got)
                         : tq_detok_flush(t, &d, chunk, sizeof chunk, &got);
    CHECK_OK(st);
    if (st != TQ_OK) continue;
    CHECKF(strlen(chunk) == got || memchr(chunk, 0, got), "chunk length %zu", got);
    CHECKF(valid_utf8((const unsigned char *)chunk, got), "token %zu (id %d) emitted invalid UTF-8",
           i, i < n ? ids[i] : -1);
    buf_add(&out, chunk, got);
  }
  CHECK(d.n_pending == 0);
  return out;
}

static tq_tokenizer *load_tokenizer(const char *path, tq_gguf **gout) {
  tq_gguf *g = NULL;
  tq_status st = tq_gguf_open(path, &g);
  CHECKF(st == TQ_OK, "%s: %s (%s)", path, tq_status_name(st), tq_gguf_last_error());
  if (st != TQ_OK) return NULL;
  tq_tokenizer *t = NULL;
  st = tq_tokenizer_from_gguf(g, &t);
  CHECKF(st == TQ_OK, "%s: tokenizer: %s (%s)", path, tq_status_name(st), tq_engine_last_error());
  if (gout) *gout = g;
  else tq_gguf_close(g);
  return t;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
  fprintf(stderr, "    %s (%zu):", what, n);
  for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %d", ids[i]);
  fprintf(stderr, n > 64 ? " ...\n" : "\n");
}

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct fcase {
  char name[64];
  int raw;     /* invalid UTF-8 input: no ids, dec = errors="replace" decoding */
  int special, bos;
  unsigned char *input;
  size_t n_input;
  int32_t *ids;
  size_t n_ids;
  unsigned char *dec_skip, *dec_keep;
  size_t n_skip, n_keep;
} fcase;

typedef struct fixture {
  fcase *c;
  size_t n;
} fixture;

static void fixture_free(fixture *f) {
  for (size_t i = 0; i < f->n; i++) {
    free(f->c[i].input);
    free(f->c[i].ids);
    free(f->c[i].dec_skip);
    free(f->c[i].dec_keep);
  }
  free(f->c);
  f->c = NULL;
  f->n = 0;
}

static int32_t *parse_ids(const char *s, size_t *n) {
  *n = 0;
  if (strcmp(s, "-") == 0) return malloc(sizeof(int32_t));
  size_t cap = 1;
  for (const char *p = s; *p; p++) cap += *p == ',';
  int32_t *ids = malloc(cap * sizeof *ids);
  if (!ids) abort();
  const char *p = s;
  while (*p) {
    char *e;
    long v = strtol(p, &e, 10);
    if (e == p || v < 0 || v > INT32_MAX) {
      free(ids);
      return NULL;
    }
    ids[(*n)++] = (int32_t)v;
    p = *e == ',' ? e + 1 : e;
    if (*e && *e != ',') {
      free(ids);
      return NULL;
    }
  }
  return ids;
}

/* Reads NAME.expected; 0 if the file is missing or malformed. */
static int fixture_load(const char *name, fixture *f) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.expected", data_dir(), name);
  FILE *fp = fopen(path, "r");
  CHECKF(fp != NULL, "cannot open %s", path);
  if (!fp) return 0;
  memset(f, 0, sizeof *f);
  size_t cap = 0;
  static char line[1 << 20];
  int ok = 1, lineno = 0;
  while (fgets(line, sizeof line, fp)) {
    lineno++;
    size_t l = strlen(line);
    while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = '\0';
    if (l == 0 || line[0] == '#') continue;
    char *tok[8];
    int nt = 0;
    for (char *p = strtok(line, " "); p && nt < 8; p = strtok(NULL, " ")) tok[nt++] = p;
    if (f->n == cap) {
      cap = cap ? 2 * cap : 64;
      f->c = realloc(f->c, cap * sizeof *f->c);
      if (!f->c) abort();
    }
    fcase *c = &f->c[f->n];
    memset(c, 0, sizeof *c);
    if (nt == 8 && strcmp(tok[0], "case") == 0) {
      snprintf(c->name, sizeof c->name, "%s", tok[1]);
      c->special = atoi(tok[2]);
      c->bos = atoi(tok[3]);
      c->input = unhex(tok[4], &c->n_input);
      c->ids = parse_ids(tok[5], &c->n_ids);
      c->dec_skip = unhex(tok[6], &c->n_skip);
      c->dec_keep = unhex(tok[7], &c->n_keep);
      if (!c->input || !c->ids || !c->dec_skip || !c->dec_keep) ok = 0;
    } else if (nt == 4 && strcmp(tok[0], "raw") == 0) {
      snprintf(c->name, sizeof c->name, "%s", tok[1]);
      c->raw = 1;
      c->input = unhex(tok[2], &c->n_input);
      c->dec_keep = unhex(tok[3], &c->n_keep);
      if (!c->input || !c->dec_keep) ok = 0;
    } else {
      ok = 0;
    }
    f->n++;
    CHECKF(ok, "%s:%d: malformed line", path, lineno);
    if (!ok) break;
  }
  fclose(fp);
  if (!ok) fixture_free(f);
  return ok;
}

/* Checks one tokenizer against one fixture file. user_text: the text of a
 * user-defined token of an SPM model (fragments around it get their own
 * "▁", so inputs holding it do not round-trip), or NULL. all_bytes: the
 * vocabulary has a token for every byte (SmolLM2's lacks the bytes that
 * never occur in UTF-8, which are dropped, as llama.cpp does). */
static void check_fixture(const tq_tokenizer *t, const fixture *f, const char *label,
                          const char *user_text, int all_bytes) {
  int id_fail = 0, dec_fail = 0, rt_fail = 0, n_cases = 0;
  uint32_t nv = tq_tokenizer_n_vocab(t);
  for (size_t i = 0; i < f->n; i++) {
    const fcase *c = &f->c[i];
    if (c->raw) {
      /* Invalid UTF-8: any tokenization, ids in range, and the byte-level
       * round trip gives the text with U+FFFD for the invalid parts. */
      for (int sp = 0; sp < 2; sp++) {
        size_t n;
        int32_t *ids = tokenize(t, c->input, c->n_input, 0, sp, &n);
        for (size_t k = 0; k < n; k++) CHECK(ids[k] >= 0 && (uint32_t)ids[k] < nv);
        buf d = detok_all(t, ids, n, 0);
        if (all_bytes && (d.n != c->n_keep || (d.n && memcmp(d.p, c->dec_keep, d.n) != 0))) {
          TQ_FAIL_("%s %s: round trip of invalid UTF-8 gives '%s'", label, c->name, d.p ? d.p : "");
          rt_fail++;
        }
        free(d.p);
        free(ids);
      }
      continue;
    }
    n_cases++;
    size_t n;
    int add_bos = c->bos ? tq_tokenizer_adds_bos(t) : 0;
    int32_t *ids = tokenize(t, c->input, c->n_input, add_bos, c->special, &n);
    if (n != c->n_ids || (n && memcmp(ids, c->ids, n * sizeof *ids) != 0)) {
      TQ_FAIL_("%s %s special=%d bos=%d: ids differ from transformers'", label, c->name,
               c->special, c->bos);
      print_ids("expected", c->ids, c->n_ids);
      print_ids("got     ", ids, n);
      id_fail++;
    }
    /* Decoding the expected ids: transformers' decode, both ways. */
    for (int skip = 0; skip < 2; skip++) {
      buf d = detok_all(t, c->ids, c->n_ids, skip);
      const unsigned char *want = skip ? c->dec_skip : c->dec_keep;
      size_t nw = skip ? c->n_skip : c->n_keep;
      if (d.n != nw || (nw && memcmp(d.p, want, nw) != 0)) {
        TQ_FAIL_("%s %s special=%d bos=%d skip=%d: decoding differs from transformers': '%s' vs '%.*s'",
                 label, c->name, c->special, c->bos, skip, d.p ? d.p : "", (int)nw, (const char *)want);
        dec_fail++;
      }
      free(d.p);
    }
    /* Round trip: without special-token parsing and BOS, decoding gives the
     * text back (SPM: the leading "▁" it adds is the one removed; a "▁" in
     * the input comes back as a space). */
    if (!c->special && !c->bos &&
        !(user_text && has_bytes(c->input, c->n_input, user_text)) &&
        !(tq_tokenizer_get_kind(t) == TQ_TOKENIZER_SPM &&
          has_bytes(c->input, c->n_input, "\xe2\x96\x81"))) {
      buf d = detok_all(t, ids, n, 0);
      if (d.n != c->n_input || (d.n && memcmp(d.p, c->input, d.n) != 0)) {
        TQ_FAIL_("%s %s: round trip gives '%s'", label, c->name, d.p ? d.p : "");
        rt_fail++;
      }
      free(d.p);
    }
    free(ids);
  }
  CHECKF(n_cases > 10, "%s: only %d cases", label, n_cases);
  if (id_fail || dec_fail || rt_fail)
    fprintf(stderr, "  %s: %d id, %d decoding, %d round-trip mismatches of %d cases\n", label,
            id_fail, dec_fail, rt_fail, n_cases);
}

static void run_fixture(const char *name, const char *user_text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.gguf", data_dir(), name);
  tq_tokenizer *t = load_tokenizer(path, NULL);
  fixture f;
  if (t && fixture_load(name, &f)) {
    check_fixture(t, &f, name, user_text, 1);
    fixture_free(&f);
  }
  tq_tokenizer_free(t);
}

static void test_fixture_llama3(void) { run_fixture("bpe_llama3", NULL); }
static void test_fixture_qwen2(void) { run_fixture("bpe_qwen2", NULL); }
static void test_fixture_spm(void) { run_fixture("spm", "<tool_call>"); }

static void test_smollm2(void) {
  FILE *fp = fopen(SMOLLM_PATH, "rb");
  if (!fp) {
    TQ_SKIP("test_smollm2", "skipped: model not fetched");
    return;
  }
  fclose(fp);
  tq_test_name_ = "test_smollm2";
  tq_test_cur_failed_ = 0;
  tq_tokenizer *t = load_tokenizer(SMOLLM_PATH, NULL);
  fixture f;
  if (t) {
    CHECK(tq_tokenizer_get_kind(t) == TQ_TOKENIZER_BPE);
    CHECK(tq_tokenizer_n_vocab(t) == 49152);
    CHECK(tq_tokenizer_is_eog(t, tq_tokenizer_find(t, "<|im_end|>")));
    if (fixture_load("smollm2", &f)) {
      check_fixture(t, &f, "smollm2", NULL, 0);
      fixture_free(&f);
    }
  }
  tq_tokenizer_free(t);
  if (tq_test_cur_failed_) tq_test_failed_++;
  else tq_test_passed_++;
}

/* ------------------------------------------------------------------------ */
/* API behaviour on the fixture tokenizers                                   */
/* ------------------------------------------------------------------------ */

static tq_tokenizer *fixture_tokenizer(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.gguf", data_dir(), name);
  return load_tokenizer(path, NULL);
}

static void test_queries(void) {
  tq_tokenizer *l3 = fixture_tokenizer("bpe_llama3");
  tq_tokenizer *qw = fixture_tokenizer("bpe_qwen2");
  tq_tokenizer *sp = fixture_tokenizer("spm");
  if (!l3 || !qw || !sp) goto done;
  CHECK(tq_tokenizer_get_kind(l3) == TQ_TOKENIZER_BPE);
  CHECK(tq_tokenizer_get_kind(sp) == TQ_TOKENIZER_SPM);
  CHECK(tq_tokenizer_n_vocab(l3) > 500 && tq_tokenizer_n_vocab(l3) < 5000);
  CHECK(tq_tokenizer_bos(l3) == tq_tokenizer_find(l3, "<|begin_of_text|>"));
  CHECK(tq_tokenizer_eos(l3) == tq_tokenizer_find(l3, "<|end_of_text|>"));
  CHECK(tq_tokenizer_adds_bos(l3) == 1);
  CHECK(tq_tokenizer_adds_bos(qw) == 0);
  CHECK(tq_tokenizer_adds_bos(sp) == 1);
  CHECK(tq_tokenizer_bos(sp) == 1 && tq_tokenizer_eos(sp) == 2);
  CHECK(tq_tokenizer_is_eog(l3, tq_tokenizer_eos(l3)));
  CHECK(tq_tokenizer_is_eog(l3, tq_tokenizer_find(l3, "<|eot_id|>")));
  CHECK(tq_tokenizer_is_eog(l3, tq_tokenizer_find(l3, "<|eom_id|>")));
  CHECK(!tq_tokenizer_is_eog(l3, tq_tokenizer_bos(l3)));
  CHECK(!tq_tokenizer_is_eog(l3, -1));
  CHECK(tq_tokenizer_is_eog(qw, tq_tokenizer_find(qw, "<|im_end|>")));
  CHECK(tq_tokenizer_is_eog(qw, tq_tokenizer_find(qw, "<|endoftext|>")));
  CHECK(!tq_tokenizer_is_eog(qw, tq_tokenizer_find(qw, "<|im_start|>")));
  CHECK(!tq_tokenizer_is_eog(qw, tq_tokenizer_find(qw, "<think>")));
  CHECK(tq_tokenizer_find(sp, "<0x0A>") == 3 + 0x0A);
  CHECK(tq_tokenizer_find(sp, "no such token text") == -1);
  CHECK(tq_tokenizer_find(sp, "") == -1);
  CHECK(tq_tokenizer_find(sp, NULL) == -1);
  CHECK(tq_tokenizer_find(NULL, "a") == -1);
  CHECK(tq_tokenizer_n_vocab(NULL) == 0);
  CHECK(tq_tokenizer_bos(NULL) == -1);
  CHECK(!tq_tokenizer_is_eog(NULL, 0));
done:
  tq_tokenizer_free(l3);
  tq_tokenizer_free(qw);
  tq_tokenizer_free(sp);
  tq_tokenizer_free(NULL);
}

static int contains(const int32_t *ids, size_t n, int32_t id) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] == id) return 1;
  return 0;
}

static void test_special_tokens(void) {
  tq_tokenizer *qw = fixture_tokenizer("bpe_qwen2");
  tq_tokenizer *sp = fixture_tokenizer("spm");
  if (!qw || !sp) goto done;
  int32_t im_start = tq_tokenizer_find(qw, "<|im_start|>");
  int32_t im_end = tq_tokenizer_find(qw, "<|im_end|>");
  int32_t think = tq_tokenizer_find(qw, "<think>");
  CHECK(im_start >= 0 && im_end >= 0 && think >= 0);
  const char *text = "<|im_start|>user<think>x</think><|im_end|>";
  size_t n;
  int32_t *ids = tokenize(qw, text, strlen(text), 0, 1, &n);
  CHECK(n >= 5 && ids[0] == im_start && ids[n - 1] == im_end && contains(ids, n, think));
  free(ids);
  /* Without parse_special control tokens are text; user-defined ones are
   * still recognized (as transformers and llama.cpp do). */
  ids = tokenize(qw, text, strlen(text), 0, 0, &n);
  CHECK(!contains(ids, n, im_start) && !contains(ids, n, im_end) && contains(ids, n, think));
  buf d = detok_all(qw, ids, n, 1);
  CHECK(d.p && strcmp(d.p, text) == 0);
  free(d.p);
  free(ids);
  /* Longest match first: "<|im_start|>" is not read as a shorter special. */
  ids = tokenize(qw, "<|im_start|><|im_start|>", 24, 0, 1, &n);
  CHECK(n == 2 && ids[0] == im_start && ids[1] == im_start);
  free(ids);
  /* Skipped when decoding with skip_special, kept otherwise. */
  int32_t seq[3] = {im_start, think, im_end};
  d = detok_all(qw, seq, 3, 1);
  CHECK(d.p && strcmp(d.p, "<think>") == 0);
  free(d.p);
  d = detok_all(qw, seq, 3, 0);
  CHECK(d.p && strcmp(d.p, "<|im_start|><think><|im_end|>") == 0);
  free(d.p);
  /* SPM: a fragment after a special token gets its own leading space, the
   * first decoded space is removed only at the start of the output. */
  ids = tokenize(sp, "<s>Hi", 5, 0, 1, &n);
  CHECK(n >= 2 && ids[0] == 1);
  d = detok_all(sp, ids, n, 1);
  CHECK(d.p && strcmp(d.p, "Hi") == 0);
  free(d.p);
  d = detok_all(sp, ids, n, 0);
  CHECK(d.p && strcmp(d.p, "<s> Hi") == 0);
  free(d.p);
  free(ids);
  ids = tokenize(sp, "Hi", 2, 1, 0, &n);
  CHECK(n >= 2 && ids[0] == 1);
  free(ids);
done:
  tq_tokenizer_free(qw);
  tq_tokenizer_free(sp);
}

static void test_buffer_too_small(void) {
  tq_tokenizer *t = fixture_tokenizer("bpe_llama3");
  if (!t) return;
  const char *text = "The quick brown fox jumps over the lazy dog, 12345 times.";
  size_t n, got = 99;
  int32_t *ids = tokenize(t, text, strlen(text), 1, 1, &n);
  CHECK(n > 8);
  int32_t small[4] = {-7, -7, -7, -7};
  CHECK_STATUS(tq_tokenize(t, text, strlen(text), 1, 1, small, 3, &got), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK(got == n);
  CHECK(memcmp(small, ids, 3 * sizeof *ids) == 0 && small[3] == -7);
  CHECK_STATUS(tq_tokenize(t, text, strlen(text), 1, 1, NULL, 0, &got), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK(got == n);
  CHECK_OK(tq_tokenize(t, "", 0, 0, 1, NULL, 0, &got));
  CHECK(got == 0);
  CHECK_OK(tq_tokenize(t, NULL, 0, 0, 1, NULL, 0, &got));
  CHECK_STATUS(tq_tokenize(t, NULL, 3, 0, 1, small, 4, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tokenize(t, text, 3, 0, 1, NULL, 4, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tokenize(NULL, text, 3, 0, 1, small, 4, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tokenize(t, text, 3, 0, 1, small, 4, NULL), TQ_ERR_INVALID_ARGUMENT);

  /* Detokenizer: too small a buffer reports the bytes needed and leaves
   * the state as it was, so the same token can be pushed again. */
  int32_t fox = ids[3];
  tq_detok d;
  tq_detok_init(&d, 0);
  char out[64];
  CHECK_OK(tq_detok_push(t, &d, ids[1], out, sizeof out, &got)); /* "The" or "T" */
  CHECK(got >= 1 && got == strlen(out) && out[0] == 'T');
  tq_detok before = d;
  CHECK_STATUS(tq_detok_push(t, &d, fox, NULL, 0, &got), TQ_ERR_BUFFER_TOO_SMALL);
  size_t need = got;
  CHECK(need >= 1 && need < sizeof out);
  CHECK(memcmp(&before, &d, sizeof d) == 0);
  CHECK_STATUS(tq_detok_push(t, &d, fox, out, need, &got), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK(got == need);
  CHECK(memcmp(&before, &d, sizeof d) == 0);
  CHECK_OK(tq_detok_push(t, &d, fox, out, need + 1, &got));
  CHECK(got == need && strlen(out) == need);
  CHECK_STATUS(tq_detok_push(t, &d, -1, out, sizeof out, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_detok_push(t, &d, (int32_t)tq_tokenizer_n_vocab(t), out, sizeof out, &got),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_detok_push(NULL, &d, 0, out, sizeof out, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_detok_push(t, NULL, 0, out, sizeof out, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_detok_push(t, &d, 0, NULL, 5, &got), TQ_ERR_INVALID_ARGUMENT);
  /* An empty flush fits any buffer, even none. */
  CHECK_OK(tq_detok_flush(t, &d, NULL, 0, &got));
  CHECK(got == 0);
  free(ids);
  tq_tokenizer_free(t);
}

/* A character split over tokens: nothing comes out until it is complete;
 * a flush emits U+FFFD for an incomplete one. */
static void test_streaming_partial(void) {
  tq_tokenizer *sp = fixture_tokenizer("spm");
  tq_tokenizer *l3 = fixture_tokenizer("bpe_llama3");
  if (!sp || !l3) goto done;
  /* SPM byte tokens <0xE6> <0x97> <0xA5> = U+65E5. */
  int32_t b[3] = {3 + 0xE6, 3 + 0x97, 3 + 0xA5};
  tq_detok d;
  tq_detok_init(&d, 0);
  char out[16];
  size_t got;
  CHECK_OK(tq_detok_push(sp, &d, b[0], out, sizeof out, &got));
  CHECK(got == 0 && out[0] == '\0' && d.n_pending == 1);
  CHECK_OK(tq_detok_push(sp, &d, b[1], out, sizeof out, &got));
  CHECK(got == 0 && d.n_pending == 2);
  CHECK_OK(tq_detok_push(sp, &d, b[2], out, sizeof out, &got));
  CHECK(got == 3 && memcmp(out, "\xe6\x97\xa5", 3) == 0 && d.n_pending == 0);
  CHECK_OK(tq_detok_push(sp, &d, b[0], out, sizeof out, &got));
  CHECK_STATUS(tq_detok_flush(sp, &d, out, 3, &got), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK(got == 3 && d.n_pending == 1);
  CHECK_OK(tq_detok_flush(sp, &d, out, sizeof out, &got));
  CHECK(got == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0 && d.n_pending == 0);
  /* An interrupted sequence: U+FFFD, then the byte that interrupted it. */
  tq_detok_init(&d, 0);
  CHECK_OK(tq_detok_push(sp, &d, b[0], out, sizeof out, &got));
  CHECK_OK(tq_detok_push(sp, &d, 3 + 'A', out, sizeof out, &got));
  CHECK(got == 4 && memcmp(out, "\xef\xbf\xbd" "A", 4) == 0);
  /* Byte-level: an emoji's 4 bytes split over tokens comes out whole. */
  const char *emoji = "x\xf0\x9f\xa6\x80y";
  size_t n;
  int32_t *ids = tokenize(l3, emoji, strlen(emoji), 0, 0, &n);
  CHECK(n >= 3);
  buf all = detok_all(l3, ids, n, 0);
  CHECK(all.p && strcmp(all.p, emoji) == 0);
  free(all.p);
  free(ids);
done:
  tq_tokenizer_free(sp);
  tq_tokenizer_free(l3);
}

/* ------------------------------------------------------------------------ */
/* Malformed metadata                                                        */
/* ------------------------------------------------------------------------ */

/* A GGUF v3 file with metadata only, built byte by byte. */
typedef struct gb {
  buf b;
  uint64_t n_kv;
} gb;

static void gb_u32(gb *g, uint32_t v) {
  unsigned char x[4];
  for (int i = 0; i < 4; i++) x[i] = (unsigned char)(v >> (8 * i));
  buf_add(&g->b, x, 4);
}
static void gb_u64(gb *g, uint64_t v) {
  unsigned char x[8];
  for (int i = 0; i < 8; i++) x[i] = (unsigned char)(v >> (8 * i));
  buf_add(&g->b, x, 8);
}
static void gb_strn(gb *g, const char *s, size_t n) {
  gb_u64(g, n);
  buf_add(&g->b, s, n);
}
static void gb_key(gb *g, const char *key, tq_gguf_type type) {
  gb_strn(g, key, strlen(key));
  gb_u32(g, (uint32_t)type);
  g->n_kv++;
}
static void gb_string(gb *g, const char *key, const char *v) {
  gb_key(g, key, TQ_GGUF_STRING);
  gb_strn(g, v, strlen(v));
}
static void gb_uint(gb *g, const char *key, uint32_t v) {
  gb_key(g, key, TQ_GGUF_UINT32);
  gb_u32(g, v);
}
static void gb_bool(gb *g, const char *key, int v) {
  gb_key(g, key, TQ_GGUF_BOOL);
  unsigned char c = (unsigned char)(v != 0);
  buf_add(&g->b, &c, 1);
}
/* Strings given with explicit lengths (NULs allowed). */
static void gb_strs(gb *g, const char *key, const char *const *s, const size_t *len, size_t n) {
  gb_key(g, key, TQ_GGUF_ARRAY);
  gb_u32(g, TQ_GGUF_STRING);
  gb_u64(g, n);
  for (size_t i = 0; i < n; i++) gb_strn(g, s[i], len ? len[i] : strlen(s[i]));
}
static void gb_i32s(gb *g, const char *key, const int32_t *v, size_t n) {
  gb_key(g, key, TQ_GGUF_ARRAY);
  gb_u32(g, TQ_GGUF_INT32);
  gb_u64(g, n);
  for (size_t i = 0; i < n; i++) gb_u32(g, (uint32_t)v[i]);
}
static void gb_f32s(gb *g, const char *key, const float *v, size_t n) {
  gb_key(g, key, TQ_GGUF_ARRAY);
  gb_u32(g, TQ_GGUF_FLOAT32);
  gb_u64(g, n);
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    gb_u32(g, u);
  }
}

/* The whole file: header, then the kvs collected in g. */
static unsigned char *gb_finish(gb *g, size_t *size) {
  buf f = {0};
  unsigned char h[24];
  memcpy(h, "GGUF", 4);
  h[4] = 3, h[5] = h[6] = h[7] = 0;
  for (int i = 0; i < 8; i++) h[8 + i] = 0;
  for (int i = 0; i < 8; i++) h[16 + i] = (unsigned char)(g->n_kv >> (8 * i));
  buf_add(&f, h, 24);
  buf_add(&f, g->b.p, g->b.n);
  free(g->b.p);
  g->b.p = NULL;
  g->b.n = g->b.cap = 0;
  g->n_kv = 0;
  *size = f.n;
  return (unsigned char *)f.p;
}

/* A small byte-level vocabulary: the 256 stand-ins, some merges' results,
 * two specials. */
#define MINI_N (256 + 4 + 2)
static char mini_text[MINI_N][16];
static const char *mini_tok[MINI_N];
static int32_t mini_type[MINI_N];

static void mini_init(void) {
  uint32_t k = 0;
  for (unsigned b = 0; b < 256; b++) {
    unsigned cp = ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE)) ? b : 0;
    if (!cp) {
      unsigned nn = 0;
      for (unsigned c = 0; c < b; c++)
        nn += !((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE));
      cp = 256 + nn;
    }
    char *o = mini_text[k];
    if (cp < 0x80) o[0] = (char)cp, o[1] = 0;
    else o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F)), o[2] = 0;
    mini_type[k++] = TQ_TOKEN_NORMAL;
  }
  const char *extra[] = {"ab", "abc", "\304\240a", "\304\240ab", "<|ctl|>", "<usr>"};
  for (int i = 0; i < 6; i++) {
    snprintf(mini_text[k], sizeof mini_text[k], "%s", extra[i]);
    mini_type[k++] = i == 4 ? TQ_TOKEN_CONTROL : i == 5 ? TQ_TOKEN_USER_DEFINED : TQ_TOKEN_NORMAL;
  }
  for (uint32_t i = 0; i < MINI_N; i++) mini_tok[i] = mini_text[i];
}

/* Ranks: "Ġ a" before "a b", so " ab" is Ġa + b = Ġab. */
static const char *const mini_merges[] = {"\xc4\xa0 a", "a b", "\304\240a b", "ab c"};

enum {
  MINI_NO_MODEL = 1 << 0,
  MINI_NO_TOKENS = 1 << 1,
  MINI_NO_MERGES = 1 << 2,
  MINI_SHORT_TYPES = 1 << 3,
  MINI_BAD_TYPE = 1 << 4,
  MINI_BOS_RANGE = 1 << 5,
  MINI_BOS_STRING = 1 << 6,
  MINI_PAD_RANGE = 1 << 7,
  MINI_BAD_MERGES = 1 << 8,
  MINI_BAD_PRE = 1 << 9,
  MINI_TOKENS_INTS = 1 << 10,
  MINI_ADD_BOS_INT = 1 << 11,
  MINI_MODEL_BERT = 1 << 12,
  MINI_NO_PRE = 1 << 13
};

static unsigned char *mini_gguf(unsigned flags, size_t *size) {
  gb g = {{0}, 0};
  gb_string(&g, "general.architecture", "llama");
  if (!(flags & MINI_NO_MODEL)) gb_string(&g, "tokenizer.ggml.model", flags & MINI_MODEL_BERT ? "bert" : "gpt2");
  if (!(flags & MINI_NO_PRE)) gb_string(&g, "tokenizer.ggml.pre", flags & MINI_BAD_PRE ? "no-such-pre" : "qwen2");
  if (flags & MINI_TOKENS_INTS) gb_i32s(&g, "tokenizer.ggml.tokens", mini_type, MINI_N);
  else if (!(flags & MINI_NO_TOKENS)) gb_strs(&g, "tokenizer.ggml.tokens", mini_tok, NULL, MINI_N);
  int32_t types[MINI_N];
  memcpy(types, mini_type, sizeof types);
  if (flags & MINI_BAD_TYPE) types[7] = 9;
  gb_i32s(&g, "tokenizer.ggml.token_type", types, flags & MINI_SHORT_TYPES ? MINI_N - 1 : MINI_N);
  if (flags & MINI_BAD_MERGES) {
    const char *bad[] = {"", " ", "nospace", "a zzzz", "zzzz a", "x y", "a ", " a b", "a b",
                         "a b", "\xff \xfe", "ab c"};
    gb_strs(&g, "tokenizer.ggml.merges", bad, NULL, 12);
  } else if (!(flags & MINI_NO_MERGES)) {
    gb_strs(&g, "tokenizer.ggml.merges", mini_merges, NULL, 4);
  }
  if (flags & MINI_BOS_STRING) gb_string(&g, "tokenizer.ggml.bos_token_id", "1");
  else gb_uint(&g, "tokenizer.ggml.bos_token_id", flags & MINI_BOS_RANGE ? MINI_N : MINI_N - 2);
  gb_uint(&g, "tokenizer.ggml.padding_token_id", flags & MINI_PAD_RANGE ? 1000000 : MINI_N - 2);
  if (flags & MINI_ADD_BOS_INT) gb_uint(&g, "tokenizer.ggml.add_bos_token", 1);
  else gb_bool(&g, "tokenizer.ggml.add_bos_token", 0);
  return gb_finish(&g, size);
}

/* Builds a tokenizer from an in-memory GGUF; returns the status. */
static tq_status try_build(const unsigned char *file, size_t size, tq_tokenizer **out) {
  tq_gguf *g = NULL;
  *out = NULL;
  tq_status st = tq_gguf_open_buffer(file, size, &g);
  CHECKF(st == TQ_OK, "crafted GGUF rejected by the reader: %s (%s)", tq_status_name(st),
         tq_gguf_last_error());
  if (st != TQ_OK) return st;
  st = tq_tokenizer_from_gguf(g, out);
  tq_gguf_close(g);
  return st;
}

static void expect_build(unsigned flags, tq_status want, const char *what) {
  size_t size;
  unsigned char *file = mini_gguf(flags, &size);
  tq_tokenizer *t;
  tq_status st = try_build(file, size, &t);
  CHECKF(st == want, "%s: got %s, expected %s (%s)", what, tq_status_name(st), tq_status_name(want),
         tq_engine_last_error());
  CHECK((st == TQ_OK) == (t != NULL));
  tq_tokenizer_free(t);
  free(file);
}

/* Tokenizes and detokenizes some text with t: ids in range, valid UTF-8. */
static void exercise(const tq_tokenizer *t) {
  const char *texts[] = {"abc ab a <|ctl|><usr> x\xff\xe4\xb8 \xc3\xa9t\xc3\xa9 123", "", " ", "abcabc"};
  for (int i = 0; i < 4; i++)
    for (int sp = 0; sp < 2; sp++) {
      size_t n;
      int32_t *ids = tokenize(t, texts[i], strlen(texts[i]), 1, sp, &n);
      for (size_t k = 0; k < n; k++) CHECK(ids[k] >= 0 && (uint32_t)ids[k] < tq_tokenizer_n_vocab(t));
      buf d = detok_all(t, ids, n, sp);
      free(d.p);
      free(ids);
    }
}

static void test_malformed(void) {
  mini_init();
  tq_tokenizer *t = NULL;
  CHECK_STATUS(tq_tokenizer_from_gguf(NULL, &t), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tokenizer_from_gguf((const tq_gguf *)&t, NULL), TQ_ERR_INVALID_ARGUMENT);

  expect_build(0, TQ_OK, "well-formed");
  expect_build(MINI_NO_MODEL, TQ_ERR_CORRUPT, "no tokenizer.ggml.model");
  expect_build(MINI_MODEL_BERT, TQ_ERR_UNSUPPORTED, "model bert");
  expect_build(MINI_BAD_PRE, TQ_ERR_UNSUPPORTED, "unknown pre-tokenizer");
  expect_build(MINI_NO_PRE, TQ_OK, "no pre-tokenizer (llama.cpp's default)");
  expect_build(MINI_NO_TOKENS, TQ_ERR_CORRUPT, "no tokens");
  expect_build(MINI_TOKENS_INTS, TQ_ERR_CORRUPT, "tokens not strings");
  expect_build(MINI_NO_MERGES, TQ_ERR_CORRUPT, "BPE without merges");
  expect_build(MINI_SHORT_TYPES, TQ_ERR_CORRUPT, "token_type shorter than tokens");
  expect_build(MINI_BAD_TYPE, TQ_ERR_CORRUPT, "token type 9");
  expect_build(MINI_BOS_RANGE, TQ_ERR_CORRUPT, "bos id out of range");
  expect_build(MINI_BOS_STRING, TQ_ERR_CORRUPT, "bos id a string");
  expect_build(MINI_PAD_RANGE, TQ_OK, "padding id out of range (ignored)");
  expect_build(MINI_ADD_BOS_INT, TQ_ERR_CORRUPT, "add_bos_token not a bool");
  expect_build(MINI_BAD_MERGES, TQ_OK, "bad merges skipped");

  /* The well-formed one works, merges apply by rank. */
  size_t size, n;
  unsigned char *file = mini_gguf(0, &size);
  if (try_build(file, size, &t) == TQ_OK) {
    int32_t *ids = tokenize(t, "abc ab", 6, 0, 0, &n);
    /* "abc" then " ab" (stand-in "Ġab"). */
    CHECK(n == 2 && ids[0] == 257 && ids[1] == 259);
    free(ids);
    ids = tokenize(t, "x<|ctl|>y<usr>", 14, 0, 1, &n);
    CHECK(n == 4 && ids[1] == 260 && ids[3] == 261);
    free(ids);
    ids = tokenize(t, "x<|ctl|>y<usr>", 14, 0, 0, &n);
    CHECK(n > 4 && !contains(ids, n, 260) && ids[n - 1] == 261);
    free(ids);
    exercise(t);
    tq_tokenizer_free(t);
  }
  free(file);
  /* Bad merges skipped: "a b" and "ab c" still work (the duplicate "a b" keeps its first rank). */
  file = mini_gguf(MINI_BAD_MERGES, &size);
  if (try_build(file, size, &t) == TQ_OK) {
    int32_t *ids = tokenize(t, "abc", 3, 0, 0, &n);
    CHECK(n == 1 && ids[0] == 257);
    free(ids);
    exercise(t);
    tq_tokenizer_free(t);
  }
  free(file);

  /* Lengths that disagree, scores, NUL and invalid UTF-8 token text, empty
   * and duplicate tokens (SPM). */
  const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\342\226\201a",
                        "a\0b", "\xff\xfe", "", "a", "<0x41>", "<0xE4>", "ab"};
  size_t lens[] = {5, 3, 4, 3, 1, 1, 4, 3, 2, 0, 1, 6, 6, 2};
  int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 6, 1};
  float scores[] = {0, 0, 0, -1, -2, -3, -0.5f, -4, -5, -6, -7, 0, 0, -0.25f};
  const size_t nt = sizeof lens / sizeof lens[0];
  for (int variant = 0; variant < 8; variant++) {
    gb g = {{0}, 0};
    gb_string(&g, "tokenizer.ggml.model", "llama");
    gb_strs(&g, "tokenizer.ggml.tokens", toks, lens, nt);
    float sc[sizeof scores / sizeof scores[0] + 1] = {0}; /* one spare for variant 1 */
    memcpy(sc, scores, sizeof scores);
    if (variant == 4) sc[5] = 0.0f / 0.0f;
    if (variant != 3) gb_f32s(&g, "tokenizer.ggml.scores", sc, variant == 1 ? nt + 1 : nt);
    gb_i32s(&g, "tokenizer.ggml.token_type", types, variant == 2 ? nt - 1 : nt);
    gb_uint(&g, "tokenizer.ggml.bos_token_id", 1);
    gb_uint(&g, "tokenizer.ggml.eos_token_id", variant == 5 ? 0xFFFFFFFFu : 2);
    if (variant == 6) gb_bool(&g, "tokenizer.ggml.add_space_prefix", 0);
    if (variant == 7) gb_uint(&g, "tokenizer.ggml.unknown_token_id", 99);
    file = gb_finish(&g, &size);
    tq_status want = (variant >= 1 && variant <= 5) || variant == 7 ? TQ_ERR_CORRUPT : TQ_OK;
    tq_status st = try_build(file, size, &t);
    CHECKF(st == want, "SPM variant %d: %s", variant, tq_status_name(st));
    if (st == TQ_OK) {
      CHECK(tq_tokenizer_get_kind(t) == TQ_TOKENIZER_SPM);
      CHECK(tq_tokenizer_find(t, "a") == 4); /* duplicate "a" (10): lowest id wins */
      int32_t *ids = tokenize(t, "a ab aA\xe4", 8, 1, 1, &n);
      /* <s> ▁a ▁ ab ▁a <0x41> <0xE4>  (or without the first ▁ when
       * add_space_prefix is off: a ▁ ab ▁a ...) */
      if (variant == 0) {
        int32_t want_ids[] = {1, 6, 3, 13, 6, 11, 12};
        CHECK(n == 7 && memcmp(ids, want_ids, sizeof want_ids) == 0);
        if (n != 7) print_ids("got", ids, n);
      } else {
        CHECK(n >= 2 && ids[1] == 4);
      }
      buf d = detok_all(t, ids, n, 1);
      CHECK(d.p && strcmp(d.p, "a ab aA\xef\xbf\xbd") == 0);
      free(d.p);
      /* A token with a NUL byte and one with invalid UTF-8: text as is,
       * invalid bytes as U+FFFD. */
      int32_t odd[] = {7, 8};
      d = detok_all(t, odd, 2, 1);
      CHECK(d.n == 9 && memcmp(d.p, "a\0b\xef\xbf\xbd\xef\xbf\xbd", 9) == 0);
      free(d.p);
      free(ids);
      exercise(t);
      tq_tokenizer_free(t);
    }
    free(file);
  }
}

/* ------------------------------------------------------------------------ */
/* Concurrency: one tokenizer, several threads                               */
/* ------------------------------------------------------------------------ */

typedef struct thread_arg {
  const tq_tokenizer *t;
  const char *text;
  const int32_t *want;
  size_t n_want;
  int bad;
} thread_arg;

static void *thread_main(void *p) {
  thread_arg *a = p;
  int32_t *ids = malloc((a->n_want + 1) * sizeof *ids);
  if (!ids) abort();
  for (int it = 0; it < 200; it++) {
    size_t n = 0;
    if (tq_tokenize(a->t, a->text, strlen(a->text), 0, 1, ids, a->n_want + 1, &n) != TQ_OK ||
        n != a->n_want || memcmp(ids, a->want, n * sizeof *ids) != 0)
      a->bad++;
  }
  free(ids);
  return NULL;
}

static void test_threads(void) {
  tq_tokenizer *t = fixture_tokenizer("bpe_qwen2");
  if (!t) return;
  const char *text =
      "<|im_start|>user\nThreads share one tokenizer: 12345, caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac, "
      "    indented\n\tcode();<|im_end|>";
  size_t n;
  int32_t *want = tokenize(t, text, strlen(text), 0, 1, &n);
  pthread_t th[4];
  thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (thread_arg){t, text, want, n, 0};
    CHECK(pthread_create(&th[i], NULL, thread_main, &args[i]) == 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(args[i].bad == 0);
  }
  free(want);
  tq_tokenizer_free(t);
}

/* Long inputs stay fast (no quadratic regex or merge behaviour). */
static void test_long_inputs(void) {
  tq_tokenizer *l3 = fixture_tokenizer("bpe_llama3");
  tq_tokenizer *sp = fixture_tokenizer("spm");
  if (!l3 || !sp) goto done;
  size_t len = 1 << 18;
  char *s = malloc(len);
  if (!s) abort();
  const char *fills[] = {" ", "a", "1", "\n", "=", " \t"};
  for (int f = 0; f < 6; f++) {
    size_t fl = strlen(fills[f]);
    for (size_t i = 0; i < len; i++) s[i] = fills[f][i % fl];
    for (int k = 0; k < 2; k++) {
      const tq_tokenizer *t = k ? sp : l3;
      size_t n;
      int32_t *ids = tokenize(t, s, len, 0, 0, &n);
      CHECK(n > 0);
      buf d = detok_all(t, ids, n, 0);
      CHECKF(d.n == len && memcmp(d.p, s, len) == 0, "fill %d kind %d: round trip", f, k);
      free(d.p);
      free(ids);
    }
  }
  free(s);
done:
  tq_tokenizer_free(l3);
  tq_tokenizer_free(sp);
}

int main(void) {
  TQ_RUN(test_fixture_llama3);
  TQ_RUN(test_fixture_qwen2);
  TQ_RUN(test_fixture_spm);
  test_smollm2();
  TQ_RUN(test_queries);
  TQ_RUN(test_special_tokens);
  TQ_RUN(test_buffer_too_small);
  TQ_RUN(test_streaming_partial);
  TQ_RUN(test_malformed);
  TQ_RUN(test_threads);
  TQ_RUN(test_long_inputs);
  return tq_test_summary("test_tokenizer");
}
