/*
 * fuzz_tokenizer.c - libFuzzer target for tokenization and streaming
 * detokenization (tq_tokenize, tq_detok_push/flush).
 *
 * The tokenizers are loaded once: the fixtures bpe_llama3, bpe_qwen2 and spm
 * from $TQAI_TOKENIZER_DATA (default tests/data/tokenizer, so run from the
 * repository root), and SmolLM2-135M-Instruct's from
 * models/cache/smollm2-135m-instruct.gguf when it has been fetched.
 *
 * Input: any bytes, tokenized as text by every tokenizer with parse_special
 * 0 and 1 (BOS when the input length is odd). Checked: the size query agrees
 * with the tokenization, a short buffer gets the same prefix and the same
 * count, every id is in range, at most a few tokens per input byte, every
 * chunk the streaming detokenizer emits is valid UTF-8 and it holds nothing
 * after a flush. For valid UTF-8 input the decoded text must be the input
 * again: for byte-level BPE (special tokens decode to their text) unless it
 * holds a byte the vocabulary lacks (dropped: SmolLM2 has no token for 21), and
 * for SPM without special-token parsing when the input has no U+2581 and no
 * user-defined token (those come back with spaces).
 *
 * Built with -DTQ_FUZZ_SEEDGEN instead, main(argc, argv) writes the seed
 * corpus (fuzz/corpus/tokenizer/) into argv[1].
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqai_engine.h"

#ifndef TQ_FUZZ_SEEDGEN

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_TOK 4

static tq_tokenizer *g_tok[MAX_TOK];
static int32_t g_user[MAX_TOK]; /* a user-defined token of an SPM model, or -1 */
/* Bytes the vocabulary has no token for (SmolLM2 lacks 21; they are dropped,
 * so input holding them does not round-trip). */
static uint8_t g_missing[MAX_TOK][256];
static int g_n_tok = -1;

static void require(int cond, const char *what) {
  if (!cond) {
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
  }
}

static tq_tokenizer *load(const char *path, int required) {
  tq_gguf *g = NULL;
  if (tq_gguf_open(path, &g) != TQ_OK) {
    if (required) fprintf(stderr, "fuzz_tokenizer: cannot open %s (run from the repository root "
                                  "or set TQAI_TOKENIZER_DATA)\n", path);
    require(!required, "fixture missing");
    return NULL;
  }
  tq_tokenizer *t = NULL;
  tq_status st = tq_tokenizer_from_gguf(g, &t);
  tq_gguf_close(g);
  require(st == TQ_OK, "fixture tokenizer does not load");
  return t;
}

static void init(void) {
  const char *dir = getenv("TQAI_TOKENIZER_DATA");
  if (!dir || !*dir) dir = "tests/data/tokenizer";
  const char *names[] = {"bpe_llama3", "bpe_qwen2", "spm"};
  g_n_tok = 0;
  for (int i = 0; i < 3; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, names[i]);
    g_user[g_n_tok] = -1;
    g_tok[g_n_tok++] = load(path, 1);
  }
  g_user[2] = tq_tokenizer_find(g_tok[2], "<tool_call>");
  tq_tokenizer *s = load("models/cache/smollm2-135m-instruct.gguf", 0);
  if (s) {
    g_user[g_n_tok] = -1;
    g_tok[g_n_tok++] = s;
  }
  for (int k = 0; k < g_n_tok; k++)
    for (int b = 0; b < 256; b++) {
      char c = (char)b;
      size_t n = 0;
      (void)tq_tokenize(g_tok[k], &c, 1, 0, 0, NULL, 0, &n);
      g_missing[k][b] = n == 0;
    }
}

static int valid_utf8(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += len;
  }
  return 1;
}

static int has_bytes(const uint8_t *hay, size_t n, const char *needle) {
  size_t m = strlen(needle);
  for (size_t i = 0; i + m <= n; i++)
    if (memcmp(hay + i, needle, m) == 0) return 1;
  return 0;
}

/* Streams ids through a detokenizer; returns the malloc'd text and its
 * length in *len. A chunk buffer of 1 + (size & 7) bytes first, so the
 * too-small path runs, then one that fits. */
static uint8_t *detok(const tq_tokenizer *t, const int32_t *ids, size_t n, int skip, size_t small,
                      size_t *len) {
  size_t cap = 64 + 16 * n, used = 0;
  uint8_t *out = malloc(cap);
  require(out != NULL, "out of memory");
  tq_detok d;
  tq_detok_init(&d, skip);
  char chunk[1024];
  for (size_t i = 0; i <= n; i++) {
    size_t got = 0;
    tq_detok before = d;
    tq_status st = i < n ? tq_detok_push(t, &d, ids[i], chunk, small, &got)
                         : tq_detok_flush(t, &d, chunk, small, &got);
    if (st == TQ_ERR_BUFFER_TOO_SMALL) {
      require(got >= small && memcmp(&before, &d, sizeof d) == 0, "too-small push changed state");
      size_t need = got;
      st = i < n ? tq_detok_push(t, &d, ids[i], chunk, sizeof chunk, &got)
                 : tq_detok_flush(t, &d, chunk, sizeof chunk, &got);
      require(got == need, "needed count differs");
    }
    require(st == TQ_OK, "detok failed");
    require(got < sizeof chunk && chunk[got] == '\0', "chunk not terminated");
    require(valid_utf8((const uint8_t *)chunk, got), "chunk is not valid UTF-8");
    if (used + got > cap) {
      cap = 2 * (used + got);
      out = realloc(out, cap);
      require(out != NULL, "out of memory");
    }
    memcpy(out + used, chunk, got);
    used += got;
  }
  require(d.n_pending == 0, "bytes pending after flush");
  *len = used;
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (g_n_tok < 0) init();
  const char *text = (const char *)data;
  int add_bos = (int)(size & 1);
  int valid = valid_utf8(data, size);
  size_t small = 1 + (size & 7);
  for (int k = 0; k < g_n_tok; k++) {
    const tq_tokenizer *t = g_tok[k];
    uint32_t nv = tq_tokenizer_n_vocab(t);
    int spm = tq_tokenizer_get_kind(t) == TQ_TOKENIZER_SPM;
    for (int sp = 0; sp < 2; sp++) {
      size_t n = 0;
      tq_status st = tq_tokenize(t, text, size, add_bos, sp, NULL, 0, &n);
      require(st == (n ? TQ_ERR_BUFFER_TOO_SMALL : TQ_OK), "size query");
      require(n <= 3 * size + 4, "too many tokens");
      int32_t *ids = malloc((n + 1) * sizeof *ids);
      require(ids != NULL, "out of memory");
      size_t got = 0;
      require(tq_tokenize(t, text, size, add_bos, sp, ids, n + 1, &got) == TQ_OK && got == n,
              "tokenize");
      for (size_t i = 0; i < n; i++) require(ids[i] >= 0 && (uint32_t)ids[i] < nv, "id out of range");
      if (n >= 2) {
        int32_t *half = malloc((n / 2) * sizeof *half);
        require(half != NULL, "out of memory");
        require(tq_tokenize(t, text, size, add_bos, sp, half, n / 2, &got) == TQ_ERR_BUFFER_TOO_SMALL &&
                    got == n && memcmp(half, ids, (n / 2) * sizeof *ids) == 0,
                "short buffer");
        free(half);
      }
      size_t len;
      uint8_t *dec = detok(t, ids, n, sp, small, &len);
      free(dec);
      /* Round trip, leaving out the BOS (its text is no part of the input). */
      size_t off = add_bos && tq_tokenizer_bos(t) >= 0;
      require(!off || (n >= 1 && ids[0] == tq_tokenizer_bos(t)), "BOS not first");
      int check = valid;
      for (size_t i = 0; check && i < size; i++) check = !g_missing[k][data[i]];
      if (spm) {
        if (sp || has_bytes(data, size, "\xe2\x96\x81")) check = 0;
        for (size_t i = 0; check && i < n; i++)
          if (g_user[k] >= 0 && ids[i] == g_user[k]) check = 0;
      }
      if (check) {
        dec = detok(t, ids + off, n - off, 0, 1024, &len);
        require(len == size && memcmp(dec, data, size) == 0, "round trip differs");
        free(dec);
      }
      free(ids);
    }
  }
  return 0;
}

#else /* TQ_FUZZ_SEEDGEN */

static void seed(const char *dir, const char *name, const char *data, size_t len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
    fprintf(stderr, "seedgen: cannot write %s\n", path);
    exit(1);
  }
}

#define SEED(name, lit) seed(dir, name, lit, sizeof lit - 1)

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  SEED("prose.txt", "The quick brown fox jumps over the lazy dog. It's 12:30; don't panic!\n");
  SEED("code.txt", "def main():\n    for i in range(10):\n\tprint(f\"{i:>3}\")  # x\r\n    return 0\n");
  SEED("unicode.txt", "Caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                      "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9 \xc2\xa0\xe3\x80\x80"
                      "\xe1\xa0\x8e it'\xc5\xbf");
  SEED("special.txt", "<|im_start|>user\nHi<|im_end|><|begin_of_text|><s></s><unk><think>x</think>"
                      "<tool_call><|eot_id|><|im_start");
  SEED("numbers.txt", "1234567890 3.14159 1,000,000 \xd9\xa3\xd9\xa4 \xe2\x91\xa0");
  SEED("spaces.txt", "   a  b\t\t\n\n\n  \r\n \xe2\x96\x81\xe2\x96\x81 x   ");
  SEED("invalid.bin", "ab\xff\xfe\xc0\xaf\xed\xa0\x80\xe4\xb8 \xf0\x9f\x98z\x80\x00end");
  return 0;
}

#endif /* TQ_FUZZ_SEEDGEN */
