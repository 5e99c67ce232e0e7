/*
 * tokenizer.c - the two tokenizer families of GGUF models, built from a
 * file's tokenizer.* metadata, and a streaming detokenizer.
 *
 * SPM ("llama"): SentencePiece-style BPE as llama.cpp and Hugging Face's
 *   converted Llama tokenizers run it. The text gets U+2581 ("▁") for every
 *   space and one in front (add_space_prefix, default on); then, over its
 *   UTF-8 characters, the adjacent pair whose concatenation is the vocabulary
 *   piece of highest score is merged, again and again (ties: leftmost pair).
 *   Characters without a token fall back to the <0xXX> byte tokens, or to
 *   the unknown token. Hugging Face's tokenizer.json for such a model holds
 *   every two-piece split of every piece as a merge ranked by the piece's
 *   score, which gives the same ids.
 * BPE ("gpt2"): byte-level BPE. Each text fragment is split by the model's
 *   pre-tokenizer regexes (tokenizer.ggml.pre names them; PCRE2), each piece's
 *   bytes are mapped to GPT-2's printable stand-ins, and within the piece the
 *   adjacent pair of lowest merge rank is merged, again and again (ties:
 *   leftmost) - Hugging Face tokenizers' BPE model.
 * Special tokens: control and unknown tokens written in the text are
 *   recognized (longest match first, leftmost first) when the caller asks for
 *   it; user-defined tokens always are, as Hugging Face does for added tokens
 *   that are not special and llama.cpp for user-defined ones. The text between
 *   them is tokenized on its own, which for SPM means each fragment gets its
 *   own leading "▁".
 *
 * Pre-tokenizers (tokenizer.ggml.pre), with the regexes of the models'
 *   tokenizer.json files as llama.cpp maps the names: llama3 / llama-v3 /
 *   llama-bpe / falcon3 (Llama 3, ignore_merges, BOS by default), dbrx /
 *   smaug-bpe (the same regex), qwen2 / deepseek-r1-qwen / stablelm2 / megrez,
 *   gpt2 / gpt-2 / phi-2 / mpt / olmo, smollm / starcoder / refact / command-r
 *   / codeshell / exaone / minerva-7b (single digits, then GPT-2), and
 *   "default" (also when the key is missing: llama.cpp's four-regex default).
 *   Other names are TQ_ERR_UNSUPPORTED.
 * Detokenization: SPM turns "▁" into a space and <0xXX> tokens into bytes,
 *   and drops the first byte of the output if it is a space (add_space_prefix;
 *   Hugging Face's Strip decoder); BPE maps stand-ins back to bytes. Control
 *   and unknown tokens give their text, or nothing with skip_special;
 *   user-defined tokens of a BPE model their raw text. Bytes pass through a
 *   UTF-8 assembler that emits complete characters only. tq_detok.n_tokens
 *   counts the tokens that produced bytes (a skipped BOS does not).
 * Cost: O(n log n) in the longest stretch of text no merge boundary splits
 *   (see "Segments"); for ordinary text that is a word or a piece.
 *
 * Hostile metadata: array types and lengths are checked, ids must lie in the
 * vocabulary, merges naming missing tokens are skipped, duplicate token texts
 * resolve to the lowest id, token texts are bytes (NULs and invalid UTF-8
 * allowed). Failures return TQ_ERR_CORRUPT or TQ_ERR_UNSUPPORTED, with a
 * message in tq_engine_last_error().
 *
 * Threading: a tq_tokenizer is immutable after creation; any number of threads
 * may tokenize and detokenize with it at once. It owns its compiled patterns
 * (pcre2_code is safe to share for matching); match data and scratch memory
 * are allocated per call. Nothing is cached globally.
 *
 * Known differences from Hugging Face: regexes use PCRE2's Unicode tables
 * (the properties of characters assigned in recent Unicode versions may
 * differ from Oniguruma's); normalizers (e.g. Qwen2's NFC) are not applied;
 * decoding an invalid UTF-8 byte sequence gives one U+FFFD per maximal
 * invalid subpart (as Python's errors="replace"), where Hugging Face's
 * byte fallback gives one per byte of the run.
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model_internal.h"
#include "tqai_engine.h"

#define TQ_MAX_REGEX 4
#define TQ_MAX_EOG 32
/* Ids are int32; larger vocabularies are refused. */
#define TQ_MAX_VOCAB (1u << 30)

/* One special (control, unknown, user-defined) token for the text matcher. */
typedef struct special_tok {
  int32_t id;
  uint32_t len;
  uint8_t user; /* user-defined: matched also without parse_special */
} special_tok;

/* A merge: the pair (left, right) of token ids, its rank and result. */
typedef struct merge_slot {
  int32_t left, right; /* left < 0: empty slot */
  uint32_t rank;
  int32_t result;
} merge_slot;

struct tq_tokenizer {
  tq_tokenizer_kind kind;
  uint32_t n_vocab;
  char *text;      /* every token's text, concatenated */
  size_t *off;     /* (n_vocab + 1) offsets into text */
  float *score;    /* (n_vocab) */
  uint8_t *attr;   /* (n_vocab) tq_token_attr */

  int32_t *hash;   /* text -> id, open addressing, -1 empty */
  uint32_t hash_mask;

  merge_slot *merges; /* BPE: (left, right) -> rank, result */
  uint32_t merge_mask;

  special_tok *specials; /* longest first */
  uint32_t n_specials;
  uint32_t special_first[257]; /* specials starting with byte b: [first[b], first[b+1]) */
  special_tok *by_byte;        /* specials grouped by first byte, longest first */

  pcre2_code *re[TQ_MAX_REGEX];
  int n_re;
  int ignore_merges;        /* a piece that is a token is not split (Llama 3) */
  int32_t byte_sym[256];    /* BPE: token of byte b's stand-in; SPM: <0xXX> */
  uint16_t byte_cp[256];    /* BPE: GPT-2 stand-in code point of each byte */
  /* Adjacent characters some merge can join (see "Segments" below). BPE:
   * bit x * 256 + y set when a merge's left part ends with byte x and its
   * right part starts with byte y. SPM: a set of character pairs adjacent
   * inside a mergeable token (keys from char_key, 0 = empty). */
  uint8_t bpe_join[256 * 256 / 8];
  uint64_t *spm_join;
  uint32_t spm_join_mask;
  int16_t cp_byte[256 + 68]; /* BPE: byte of each stand-in code point, or -1 */

  int add_space_prefix;     /* SPM */
  int add_bos, add_eos;
  int32_t bos, eos, unk, pad, eot, eom;
  int32_t eog[TQ_MAX_EOG];
  int n_eog;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static const char *tok_text(const tq_tokenizer *t, int32_t id, size_t *len) {
  *len = t->off[id + 1] - t->off[id];
  return t->text + t->off[id];
}

/* FNV-1a: token texts are short; a simple hash keeps the table portable. */
static uint64_t hash_bytes(const void *p, size_t n) {
  const uint8_t *b = (const uint8_t *)p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

static int32_t lookup(const tq_tokenizer *t, const char *s, size_t n) {
  uint32_t i = (uint32_t)hash_bytes(s, n) & t->hash_mask;
  for (;;) {
    int32_t id = t->hash[i];
    if (id < 0) return -1;
    size_t len;
    const char *p = tok_text(t, id, &len);
    if (len == n && memcmp(p, s, n) == 0) return id;
    i = (i + 1) & t->hash_mask;
  }
}

static uint64_t pair_key(int32_t a, int32_t b) {
  uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

static const merge_slot *find_merge(const tq_tokenizer *t, int32_t a, int32_t b) {
  if (!t->merges) return NULL;
  uint32_t i = (uint32_t)pair_key(a, b) & t->merge_mask;
  for (;;) {
    const merge_slot *m = &t->merges[i];
    if (m->left < 0) return NULL;
    if (m->left == a && m->right == b) return m;
    i = (i + 1) & t->merge_mask;
  }
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the
 * bytes there are not one (then the caller takes a single byte). */
static size_t utf8_valid_len(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else
    return 0;
  if (n < len) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return len;
}

/* Length of the character at s: its valid UTF-8 sequence, else one byte. */
static size_t char_len(const uint8_t *s, size_t n) {
  size_t l = utf8_valid_len(s, n);
  return l ? l : 1;
}

static uint32_t utf8_decode(const uint8_t *s, size_t len) {
  switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
      return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
             ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  }
}

static size_t utf8_encode(uint32_t cp, uint8_t *o) {
  if (cp < 0x80) {
    o[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (uint8_t)(0xC0 | (cp >> 6));
    o[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (uint8_t)(0xE0 | (cp >> 12));
    o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | (cp >> 18));
  o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes for U+0100.. in byte order. Computed, not
 * tabulated: it is a pure function of the byte. */
static int byte_is_printable(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static uint32_t byte_to_cp(unsigned b) {
  if (byte_is_printable(b)) return b;
  uint32_t n = 0;
  for (unsigned c = 0; c < b; c++) n += !byte_is_printable(c);
  return 256 + n;
}

/* The byte a code point stands for, or -1 if it is not one of the 256. */
static int cp_to_byte(uint32_t cp) {
  if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
  if (cp >= 256 + 68) return -1;
  uint32_t n = cp - 256;
  for (unsigned b = 0; b < 256; b++)
    if (!byte_is_printable(b) && n-- == 0) return (int)b;
  return -1;
}

/* "<0xXX>" (upper- or lower-case hex) -> the byte, else -1. */
static int parse_byte_token(const char *s, size_t n) {
  if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/* ------------------------------------------------------------------------ */
/* Pre-tokenizer regexes                                                     */
/* ------------------------------------------------------------------------ */

/* Unicode White_Space, spelled out: PCRE2's \s also takes U+180E (no longer
 * White_Space since Unicode 6.3), which Hugging Face's Oniguruma does not. */
#define WS "\\t-\\r\\x20\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
/* Kept case-insensitive as in the tokenizer.json files (llama.cpp spells it
 * out as [sS]...): both Oniguruma and PCRE2 fold U+017F (long s) to s, so
 * "'\u017f" is a contraction for Hugging Face too. */
#define CONTRACTIONS_CI "(?i:'s|'t|'re|'ve|'m|'ll|'d)"

/* GPT-2 (tokenizers' ByteLevel pre-tokenizer). */
static const char k_re_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS
    "])|[" WS "]+";
/* Llama 3 (its tokenizer.json's Split). */
static const char k_re_llama3[] =
    CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS
    "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";
/* Qwen2: as Llama 3 with single digits. */
static const char k_re_qwen2[] =
    CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS
    "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";
/* Digits one by one (tokenizers' Digits(individual_digits=true)). */
static const char k_re_digit[] = "\\p{N}";
/* llama.cpp's "default" pre-tokenizer (files converted without a known one). */
static const char k_re_def_punct[] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
static const char k_re_def_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])";
static const char k_re_def_digits[] = "\\p{N}+";
static const char k_re_def_3digits[] = "[0-9][0-9][0-9]";

typedef struct pre_def {
  const char *const *names; /* NULL-terminated */
  const char *re[TQ_MAX_REGEX];
  int ignore_merges;
  int add_bos;
} pre_def;

static const char *const k_names_llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", NULL};
static const char *const k_names_dbrx[] = {"dbrx", "smaug-bpe", NULL};
static const char *const k_names_qwen2[] = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez",
                                            NULL};
static const char *const k_names_gpt2[] = {"gpt2", "gpt-2", "phi-2", "mpt", "olmo", NULL};
static const char *const k_names_smollm[] = {"smollm",    "starcoder", "refact", "command-r",
                                             "codeshell", "exaone",    "minerva-7b", NULL};
static const char *const k_names_default[] = {"default", NULL};

static const pre_def k_pre_defs[] = {
    {k_names_llama3, {k_re_llama3}, 1, 1},
    {k_names_dbrx, {k_re_llama3}, 0, 0},
    {k_names_qwen2, {k_re_qwen2}, 0, 0},
    {k_names_gpt2, {k_re_gpt2}, 0, 0},
    {k_names_smollm, {k_re_digit, k_re_gpt2}, 0, 0},
    {k_names_default, {k_re_def_punct, k_re_def_gpt2, k_re_def_digits, k_re_def_3digits}, 0, 0},
};

static const pre_def *find_pre(const char *name, size_t len) {
  for (size_t i = 0; i < sizeof k_pre_defs / sizeof k_pre_defs[0]; i++)
    for (const char *const *n = k_pre_defs[i].names; *n; n++)
      if (strlen(*n) == len && memcmp(*n, name, len) == 0) return &k_pre_defs[i];
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Building                                                                  */
/* ------------------------------------------------------------------------ */

void tq_tokenizer_free(tq_tokenizer *t) {
  if (!t) return;
  for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
  free(t->text);
  free(t->off);
  free(t->score);
  free(t->attr);
  free(t->hash);
  free(t->merges);
  free(t->spm_join);
  free(t->specials);
  free(t->by_byte);
  free(t);
}

static int key_is(tq_str s, const char *lit) {
  size_t n = strlen(lit);
  return s.len == n && memcmp(s.data, lit, n) == 0;
}

/* Optional string key: TQ_OK with found = 0 when absent. */
static tq_status get_str(const tq_gguf *g, const char *key, tq_str *out, int *found) {
  int64_t i = tq_gguf_find_key(g, key);
  *found = 0;
  if (i < 0) return TQ_OK;
  if (tq_gguf_get_string(g, (uint64_t)i, out) != TQ_OK)
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' is not a string", key);
  *found = 1;
  return TQ_OK;
}

static tq_status get_flag(const tq_gguf *g, const char *key, int *out) {
  int64_t i = tq_gguf_find_key(g, key);
  if (i < 0) return TQ_OK; /* keeps the default */
  int v;
  if (tq_gguf_get_bool(g, (uint64_t)i, &v) != TQ_OK)
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' is not a bool", key);
  *out = v != 0;
  return TQ_OK;
}

/* Optional token id: -1 when absent; an id outside the vocabulary is
 * TQ_ERR_CORRUPT unless `lenient` (then -1). */
static tq_status get_id(const tq_gguf *g, const char *key, uint32_t n_vocab, int lenient,
                        int32_t *out) {
  int64_t i = tq_gguf_find_key(g, key);
  *out = -1;
  if (i < 0) return TQ_OK;
  uint64_t v;
  if (tq_gguf_get_uint(g, (uint64_t)i, &v) != TQ_OK)
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' is not an unsigned integer", key);
  if (v >= n_vocab) {
    if (lenient) return TQ_OK;
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' = %llu is outside the %u tokens", key,
                          (unsigned long long)v, n_vocab);
  }
  *out = (int32_t)v;
  return TQ_OK;
}

/* An array key of the given element type (or any numeric type when numeric
 * is set) with exactly n elements (n == 0: any count, returned in *count). */
static tq_status get_array(const tq_gguf *g, const char *key, tq_gguf_type want, int numeric,
                           uint64_t n, int64_t *idx, uint64_t *count) {
  int64_t i = tq_gguf_find_key(g, key);
  *idx = i;
  if (i < 0) return TQ_OK;
  tq_gguf_type et;
  uint64_t c;
  if (tq_gguf_get_array(g, (uint64_t)i, &et, &c) != TQ_OK)
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' is not an array", key);
  int ok = numeric ? (et != TQ_GGUF_STRING && et != TQ_GGUF_ARRAY && et != TQ_GGUF_BOOL) : et == want;
  if (!ok) return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' has elements of type %d", key, (int)et);
  if (n && c != n)
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: '%s' has %llu elements for %llu tokens", key,
                          (unsigned long long)c, (unsigned long long)n);
  if (count) *count = c;
  return TQ_OK;
}

static uint32_t table_size(uint64_t n) {
  uint64_t s = 16;
  while (s < n * 2) s <<= 1;
  return (uint32_t)s;
}

static tq_status build_hash(tq_tokenizer *t) {
  uint32_t size = table_size(t->n_vocab);
  t->hash = malloc((size_t)size * sizeof *t->hash);
  if (!t->hash) return TQ_ERR_OUT_OF_MEMORY;
  memset(t->hash, 0xff, (size_t)size * sizeof *t->hash);
  t->hash_mask = size - 1;
  for (uint32_t id = 0; id < t->n_vocab; id++) {
    size_t len;
    const char *s = tok_text(t, (int32_t)id, &len);
    if (len == 0) continue; /* an empty token can never be looked up */
    uint32_t i = (uint32_t)hash_bytes(s, len) & t->hash_mask;
    for (;;) {
      int32_t o = t->hash[i];
      if (o < 0) {
        t->hash[i] = (int32_t)id;
        break;
      }
      size_t ol;
      const char *os = tok_text(t, o, &ol);
      if (ol == len && memcmp(os, s, len) == 0) break; /* duplicate: lowest id wins */
      i = (i + 1) & t->hash_mask;
    }
  }
  return TQ_OK;
}

/* The byte the first / last character of a token text stands for (GPT-2
 * stand-ins), or -1 when that character is not a stand-in. */
static int first_stand_in_byte(const tq_tokenizer *t, const char *s, size_t n) {
  size_t l = n ? utf8_valid_len((const uint8_t *)s, n) : 0;
  if (!l) return -1;
  uint32_t cp = utf8_decode((const uint8_t *)s, l);
  return cp < 256 + 68 ? t->cp_byte[cp] : -1;
}

static int last_stand_in_byte(const tq_tokenizer *t, const char *s, size_t n) {
  for (size_t k = 1; k <= 4 && k <= n; k++) {
    size_t l = utf8_valid_len((const uint8_t *)s + n - k, k);
    if (l == k) return first_stand_in_byte(t, s + n - k, k);
  }
  return -1;
}

/* Merges "left right" (split at the first space after the first byte, as
 * llama.cpp does). A merge naming a missing token, or whose concatenation is
 * not a token, can never apply: skipped. Duplicates keep the lower rank. */
static tq_status build_merges(tq_tokenizer *t, const tq_gguf *g, int64_t idx, uint64_t count) {
  uint32_t size = table_size(count ? count : 1);
  t->merges = malloc((size_t)size * sizeof *t->merges);
  if (!t->merges) return TQ_ERR_OUT_OF_MEMORY;
  for (uint32_t i = 0; i < size; i++) t->merges[i].left = -1;
  t->merge_mask = size - 1;
  char *buf = NULL;
  size_t buf_cap = 0;
  for (uint64_t j = 0; j < count; j++) {
    tq_str s;
    if (tq_gguf_array_string(g, (uint64_t)idx, j, &s) != TQ_OK) {
      free(buf);
      return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: merge %llu unreadable", (unsigned long long)j);
    }
    if (s.len < 3) continue;
    const char *sp = memchr(s.data + 1, ' ', (size_t)s.len - 1);
    if (!sp) continue;
    size_t la = (size_t)(sp - s.data), lb = (size_t)s.len - la - 1;
    int32_t a = lookup(t, s.data, la), b = lb ? lookup(t, sp + 1, lb) : -1;
    if (a < 0 || b < 0) continue;
    if (la + lb > buf_cap) {
      char *nb = realloc(buf, la + lb);
      if (!nb) {
        free(buf);
        return TQ_ERR_OUT_OF_MEMORY;
      }
      buf = nb;
      buf_cap = la + lb;
    }
    memcpy(buf, s.data, la);
    memcpy(buf + la, sp + 1, lb);
    int32_t r = lookup(t, buf, la + lb);
    if (r < 0) continue;
    uint32_t i = (uint32_t)pair_key(a, b) & t->merge_mask;
    while (t->merges[i].left >= 0 && !(t->merges[i].left == a && t->merges[i].right == b))
      i = (i + 1) & t->merge_mask;
    if (t->merges[i].left >= 0) continue;
    t->merges[i].left = a;
    t->merges[i].right = b;
    t->merges[i].rank = (uint32_t)j;
    t->merges[i].result = r;
    int x = last_stand_in_byte(t, s.data, la), y = first_stand_in_byte(t, sp + 1, lb);
    if (x < 0 || y < 0) {
      memset(t->bpe_join, 0xff, sizeof t->bpe_join); /* odd merge text: no shortcut */
    } else {
      unsigned bit = (unsigned)x * 256u + (unsigned)y;
      t->bpe_join[bit / 8] |= (uint8_t)(1u << (bit % 8));
    }
  }
  free(buf);
  return TQ_OK;
}

/* A key for the character at s (l bytes: a valid sequence, or one byte):
 * its code point, or 0x110000 + the byte for an invalid byte; plus one, so
 * that a pair key is never 0. */
static uint32_t char_key(const uint8_t *s, size_t l) {
  size_t v = utf8_valid_len(s, l);
  return 1 + (v == l ? utf8_decode(s, l) : 0x110000u + s[0]);
}

static uint64_t join_key(uint32_t a, uint32_t b) { return ((uint64_t)a << 32) | b; }

static int spm_mergeable(uint8_t attr);

static void spm_join_insert(tq_tokenizer *t, uint64_t key) {
  uint32_t i = (uint32_t)pair_key((int32_t)(key >> 32), (int32_t)key) & t->spm_join_mask;
  while (t->spm_join[i] && t->spm_join[i] != key) i = (i + 1) & t->spm_join_mask;
  t->spm_join[i] = key;
}

static int spm_can_join(const tq_tokenizer *t, uint32_t a, uint32_t b) {
  uint64_t key = join_key(a, b);
  uint32_t i = (uint32_t)pair_key((int32_t)a, (int32_t)b) & t->spm_join_mask;
  for (;;) {
    if (t->spm_join[i] == key) return 1;
    if (!t->spm_join[i]) return 0;
    i = (i + 1) & t->spm_join_mask;
  }
}

/* SPM: every pair of characters adjacent inside a token that merging can
 * produce. */
static tq_status build_spm_join(tq_tokenizer *t) {
  uint64_t n = 0;
  for (uint32_t id = 0; id < t->n_vocab; id++)
    if (spm_mergeable(t->attr[id])) n += t->off[id + 1] - t->off[id];
  if (n > UINT32_MAX / 4) return TQ_ERR_OUT_OF_MEMORY;
  uint32_t size = table_size(n);
  t->spm_join = calloc(size, sizeof *t->spm_join);
  if (!t->spm_join) return TQ_ERR_OUT_OF_MEMORY;
  t->spm_join_mask = size - 1;
  for (uint32_t id = 0; id < t->n_vocab; id++) {
    if (!spm_mergeable(t->attr[id])) continue;
    size_t len;
    const uint8_t *s = (const uint8_t *)tok_text(t, (int32_t)id, &len);
    uint32_t prev = 0;
    for (size_t i = 0; i < len;) {
      size_t l = char_len(s + i, len - i);
      uint32_t k = char_key(s + i, l);
      if (prev) spm_join_insert(t, join_key(prev, k));
      prev = k;
      i += l;
    }
  }
  return TQ_OK;
}

static int cmp_special(const void *pa, const void *pb) {
  const special_tok *a = pa, *b = pb;
  if (a->len != b->len) return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

/* The special-token matcher: control, unknown and user-defined tokens with
 * non-empty text, grouped by first byte, longest first. */
static tq_status build_specials(tq_tokenizer *t) {
  uint32_t n = 0;
  for (uint32_t id = 0; id < t->n_vocab; id++) {
    uint8_t a = t->attr[id];
    if ((a == TQ_TOKEN_CONTROL || a == TQ_TOKEN_UNKNOWN || a == TQ_TOKEN_USER_DEFINED) &&
        t->off[id + 1] > t->off[id])
      n++;
  }
  t->n_specials = n;
  t->specials = calloc(n ? n : 1, sizeof *t->specials);
  t->by_byte = calloc(n ? n : 1, sizeof *t->by_byte);
  if (!t->specials || !t->by_byte) return TQ_ERR_OUT_OF_MEMORY;
  n = 0;
  for (uint32_t id = 0; id < t->n_vocab; id++) {
    uint8_t a = t->attr[id];
    size_t len = t->off[id + 1] - t->off[id];
    if ((a == TQ_TOKEN_CONTROL || a == TQ_TOKEN_UNKNOWN || a == TQ_TOKEN_USER_DEFINED) && len) {
      t->specials[n].id = (int32_t)id;
      t->specials[n].len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
      t->specials[n].user = a == TQ_TOKEN_USER_DEFINED;
      n++;
    }
  }
  qsort(t->specials, n, sizeof *t->specials, cmp_special);
  uint32_t counts[256] = {0};
  for (uint32_t i = 0; i < n; i++) counts[(uint8_t)t->text[t->off[t->specials[i].id]]]++;
  t->special_first[0] = 0;
  for (int b = 0; b < 256; b++) t->special_first[b + 1] = t->special_first[b] + counts[b];
  uint32_t fill[256];
  memcpy(fill, t->special_first, sizeof fill);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t b = (uint8_t)t->text[t->off[t->specials[i].id]];
    t->by_byte[fill[b]++] = t->specials[i];
  }
  return TQ_OK;
}

static void add_eog(tq_tokenizer *t, int32_t id) {
  if (id < 0) return;
  for (int i = 0; i < t->n_eog; i++)
    if (t->eog[i] == id) return;
  if (t->n_eog < TQ_MAX_EOG) t->eog[t->n_eog++] = id;
}

static tq_status compile_pre(tq_tokenizer *t, const pre_def *pd) {
  for (int i = 0; i < TQ_MAX_REGEX && pd->re[i]; i++) {
    int err;
    PCRE2_SIZE eoff;
    /* MATCH_INVALID_UTF: invalid bytes never match and end up in the gaps
     * between matches, each its own piece; valid text matches as usual. */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pd->re[i], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &eoff,
                                   NULL);
    if (!re) return tq_engine_fail(TQ_ERR_UNSUPPORTED, "tokenizer: regex %d does not compile", i);
    /* JIT is an optimization only: if it is unavailable, matching falls back
     * to the interpreter. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    t->re[t->n_re++] = re;
  }
  return TQ_OK;
}

/* Texts of end-of-generation tokens that models do not always declare (as
 * llama.cpp recognizes them). */
static const char *const k_eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                          "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<|eom_id|>",
                                          NULL};

static tq_status build(tq_tokenizer *t, const tq_gguf *g) {
  tq_status st;
  tq_str model, pre;
  int has_model, has_pre;
  if ((st = get_str(g, "tokenizer.ggml.model", &model, &has_model)) != TQ_OK) return st;
  if (!has_model) return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: 'tokenizer.ggml.model' missing");
  if (key_is(model, "llama")) t->kind = TQ_TOKENIZER_SPM;
  else if (key_is(model, "gpt2")) t->kind = TQ_TOKENIZER_BPE;
  else
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "tokenizer: model '%.*s' is not supported",
                          (int)(model.len > 64 ? 64 : model.len), model.data);
  if ((st = get_str(g, "tokenizer.ggml.pre", &pre, &has_pre)) != TQ_OK) return st;

  /* Tokens. */
  int64_t ti;
  uint64_t n;
  if ((st = get_array(g, "tokenizer.ggml.tokens", TQ_GGUF_STRING, 0, 0, &ti, &n)) != TQ_OK) return st;
  if (ti < 0) return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: 'tokenizer.ggml.tokens' missing");
  if (n == 0 || n > TQ_MAX_VOCAB)
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: %llu tokens", (unsigned long long)n);
  t->n_vocab = (uint32_t)n;
  size_t total = 0;
  for (uint64_t j = 0; j < n; j++) {
    tq_str s;
    if (tq_gguf_array_string(g, (uint64_t)ti, j, &s) != TQ_OK)
      return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: token %llu unreadable", (unsigned long long)j);
    if (s.len > SIZE_MAX - total) return TQ_ERR_OUT_OF_MEMORY;
    total += (size_t)s.len;
  }
  t->text = malloc(total ? total : 1);
  t->off = malloc(((size_t)n + 1) * sizeof *t->off);
  t->score = calloc((size_t)n, sizeof *t->score);
  t->attr = malloc((size_t)n);
  if (!t->text || !t->off || !t->score || !t->attr) return TQ_ERR_OUT_OF_MEMORY;
  size_t pos = 0;
  for (uint64_t j = 0; j < n; j++) {
    tq_str s;
    (void)tq_gguf_array_string(g, (uint64_t)ti, j, &s);
    t->off[j] = pos;
    if (s.len) memcpy(t->text + pos, s.data, (size_t)s.len);
    pos += (size_t)s.len;
    t->attr[j] = TQ_TOKEN_NORMAL;
  }
  t->off[n] = pos;

  /* Scores (SPM ranks by them) and token types. */
  int64_t si, yi;
  if ((st = get_array(g, "tokenizer.ggml.scores", TQ_GGUF_FLOAT32, 1, n, &si, NULL)) != TQ_OK) return st;
  if (si >= 0) {
    for (uint64_t j = 0; j < n; j++) {
      double v;
      int64_t iv;
      if (tq_gguf_array_float(g, (uint64_t)si, j, &v) != TQ_OK) {
        if (tq_gguf_array_int(g, (uint64_t)si, j, &iv) != TQ_OK)
          return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: score %llu unreadable", (unsigned long long)j);
        v = (double)iv;
      }
      /* NaN would break the ordering of the merge queue. */
      if (!(v == v)) return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: score %llu is NaN", (unsigned long long)j);
      t->score[j] = v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : (float)v;
    }
  } else if (t->kind == TQ_TOKENIZER_SPM) {
    return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: 'tokenizer.ggml.scores' missing");
  }
  if ((st = get_array(g, "tokenizer.ggml.token_type", TQ_GGUF_INT32, 1, n, &yi, NULL)) != TQ_OK) return st;
  if (yi >= 0) {
    for (uint64_t j = 0; j < n; j++) {
      int64_t v;
      if (tq_gguf_array_int(g, (uint64_t)yi, j, &v) != TQ_OK || v < TQ_TOKEN_NORMAL || v > TQ_TOKEN_BYTE)
        return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: token type %llu invalid", (unsigned long long)j);
      t->attr[j] = (uint8_t)v;
    }
  }
  if ((st = build_hash(t)) != TQ_OK) return st;

  /* Special ids. The padding id is not used here: out of range, ignored. */
  if ((st = get_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, 0, &t->bos)) != TQ_OK ||
      (st = get_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, 0, &t->eos)) != TQ_OK ||
      (st = get_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, 0, &t->unk)) != TQ_OK ||
      (st = get_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, 0, &t->eot)) != TQ_OK ||
      (st = get_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, 0, &t->eom)) != TQ_OK ||
      (st = get_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, 1, &t->pad)) != TQ_OK)
    return st;

  const pre_def *pd = NULL;
  if (t->kind == TQ_TOKENIZER_SPM) {
    t->add_bos = 1;
    t->add_space_prefix = 1;
    if (t->unk < 0) {
      for (uint32_t id = 0; id < t->n_vocab; id++)
        if (t->attr[id] == TQ_TOKEN_UNKNOWN) {
          t->unk = (int32_t)id;
          break;
        }
    }
    for (int b = 0; b < 256; b++) {
      char s[7];
      snprintf(s, sizeof s, "<0x%02X>", b);
      t->byte_sym[b] = lookup(t, s, 6);
    }
    if ((st = build_spm_join(t)) != TQ_OK) return st;
  } else {
    /* No (or an empty) pre-tokenizer name: llama.cpp's default. */
    pd = has_pre && pre.len ? find_pre(pre.data, (size_t)pre.len) : find_pre("default", 7);
    if (!pd)
      return tq_engine_fail(TQ_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer '%.*s' is not supported",
                            (int)(pre.len > 64 ? 64 : pre.len), pre.data);
    t->ignore_merges = pd->ignore_merges;
    t->add_bos = pd->add_bos;
    for (uint32_t cp = 0; cp < 256 + 68; cp++) t->cp_byte[cp] = (int16_t)cp_to_byte(cp);
    for (int b = 0; b < 256; b++) {
      uint8_t s[4];
      t->byte_cp[b] = (uint16_t)byte_to_cp((unsigned)b);
      size_t l = utf8_encode(t->byte_cp[b], s);
      t->byte_sym[b] = lookup(t, (const char *)s, l);
    }
    int64_t mi;
    uint64_t mc;
    if ((st = get_array(g, "tokenizer.ggml.merges", TQ_GGUF_STRING, 0, 0, &mi, &mc)) != TQ_OK) return st;
    if (mi < 0) return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: 'tokenizer.ggml.merges' missing");
    if (mc > UINT32_MAX / 4) return tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer: too many merges");
    if ((st = build_merges(t, g, mi, mc)) != TQ_OK) return st;
  }
  if ((st = get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos)) != TQ_OK ||
      (st = get_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos)) != TQ_OK ||
      (st = get_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix)) != TQ_OK)
    return st;
  if (t->kind != TQ_TOKENIZER_SPM) t->add_space_prefix = 0;
  if (t->add_bos && t->bos < 0) t->add_bos = 0; /* nothing to add */
  if (t->add_eos && t->eos < 0) t->add_eos = 0;

  if ((st = build_specials(t)) != TQ_OK) return st;
  add_eog(t, t->eos);
  add_eog(t, t->eot);
  add_eog(t, t->eom);
  for (const char *const *e = k_eog_texts; *e; e++) {
    int32_t id = lookup(t, *e, strlen(*e));
    if (id >= 0 && t->attr[id] == TQ_TOKEN_CONTROL) add_eog(t, id);
  }
  if (pd && (st = compile_pre(t, pd)) != TQ_OK) return st;
  return TQ_OK;
}

tq_status tq_tokenizer_from_gguf(const tq_gguf *g, tq_tokenizer **out) {
  if (!out) return TQ_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (!g) return TQ_ERR_INVALID_ARGUMENT;
  tq_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return TQ_ERR_OUT_OF_MEMORY;
  t->bos = t->eos = t->unk = t->pad = t->eot = t->eom = -1;
  tq_status st = build(t, g);
  if (st != TQ_OK) {
    if (st == TQ_ERR_OUT_OF_MEMORY) tq_engine_fail(st, "tokenizer: out of memory");
    tq_tokenizer_free(t);
    return st;
  }
  *out = t;
  return TQ_OK;
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

tq_tokenizer_kind tq_tokenizer_get_kind(const tq_tokenizer *t) {
  return t ? t->kind : TQ_TOKENIZER_SPM;
}
uint32_t tq_tokenizer_n_vocab(const tq_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t tq_tokenizer_bos(const tq_tokenizer *t) { return t ? t->bos : -1; }
int32_t tq_tokenizer_eos(const tq_tokenizer *t) { return t ? t->eos : -1; }
int tq_tokenizer_adds_bos(const tq_tokenizer *t) { return t ? t->add_bos : 0; }

int tq_tokenizer_is_eog(const tq_tokenizer *t, int32_t id) {
  if (!t || id < 0) return 0;
  for (int i = 0; i < t->n_eog; i++)
    if (t->eog[i] == id) return 1;
  return 0;
}

int32_t tq_tokenizer_find(const tq_tokenizer *t, const char *text) {
  if (!t || !text) return -1;
  size_t n = strlen(text);
  return n ? lookup(t, text, n) : -1;
}

/* ------------------------------------------------------------------------ */
/* Tokenization                                                              */
/* ------------------------------------------------------------------------ */

/* Per-call state: the output and growable scratch arrays. */
typedef struct sym {
  int32_t prev, next;
  int32_t id;     /* BPE: the symbol's token */
  uint32_t start; /* SPM: byte range in the text */
  uint32_t n;     /* bytes; 0 once merged away */
} sym;

/* A merge candidate (16 bytes: long pieces make large queues). */
typedef struct cand {
  union {
    float score;   /* SPM: higher first */
    uint32_t rank; /* BPE: lower first */
  } key;
  int32_t left, right;
  union {
    uint32_t size;  /* SPM: bytes of the merged piece, to detect stale entries */
    int32_t result; /* BPE: the merged token */
  } val;
} cand;

typedef struct work {
  const tq_tokenizer *t;
  int32_t *ids;
  size_t cap, n;
  sym *syms;
  size_t syms_cap;
  cand *heap;
  size_t heap_n, heap_cap;
  uint8_t *buf; /* SPM: escaped text; BPE: a piece's stand-in characters */
  size_t buf_cap;
  pcre2_match_data *md;
  int oom;
} work;

static void emit(work *w, int32_t id) {
  if (w->n < w->cap) w->ids[w->n] = id;
  w->n++;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 1;
  size_t c = *cap ? *cap : 64;
  while (c < need) {
    if (c > SIZE_MAX / 2 / elem) return 0;
    c *= 2;
  }
  void *np = realloc(*p, c * elem);
  if (!np) return 0;
  *p = np;
  *cap = c;
  return 1;
}

/* The merge queue: a binary heap, best candidate on top. SPM: highest score,
 * then leftmost; BPE: lowest rank, then leftmost. */
static int cand_better(const tq_tokenizer *t, const cand *a, const cand *b) {
  if (t->kind == TQ_TOKENIZER_SPM) {
    if (a->key.score != b->key.score) return a->key.score > b->key.score;
  } else if (a->key.rank != b->key.rank) {
    return a->key.rank < b->key.rank;
  }
  return a->left < b->left;
}

static void heap_push(work *w, const cand *c) {
  /* Capacity is reserved up front (3 per symbol), so this cannot fail. */
  size_t i = w->heap_n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!cand_better(w->t, c, &w->heap[p])) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = *c;
}

static cand heap_pop(work *w) {
  cand top = w->heap[0];
  cand last = w->heap[--w->heap_n];
  size_t i = 0, n = w->heap_n;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, b = i;
    const cand *best = &last;
    if (l < n && cand_better(w->t, &w->heap[l], best)) b = l, best = &w->heap[l];
    if (r < n && cand_better(w->t, &w->heap[r], best)) b = r;
    if (b == i) break;
    w->heap[i] = w->heap[b];
    i = b;
  }
  if (n) w->heap[i] = last;
  return top;
}

/* Reserves n symbols and 3n queue entries (each merge adds at most two). */
static int reserve(work *w, size_t n) {
  if (n > SIZE_MAX / 4 || n > INT32_MAX) return 0;
  if (!grow((void **)&w->syms, &w->syms_cap, n, sizeof *w->syms)) return 0;
  if (!grow((void **)&w->heap, &w->heap_cap, 3 * n + 1, sizeof *w->heap)) return 0;
  w->heap_n = 0;
  return 1;
}

/* SPM: tokens a piece may be merged into (SentencePiece keeps control,
 * unknown and byte pieces out of merging). */
static int spm_mergeable(uint8_t attr) {
  return attr == TQ_TOKEN_NORMAL || attr == TQ_TOKEN_USER_DEFINED || attr == TQ_TOKEN_UNUSED;
}

static void spm_try_pair(work *w, const uint8_t *text, int32_t l, int32_t r) {
  if (l < 0 || r < 0) return;
  const sym *a = &w->syms[l], *b = &w->syms[r];
  int32_t id = lookup(w->t, (const char *)text + a->start, (size_t)a->n + b->n);
  if (id < 0 || !spm_mergeable(w->t->attr[id])) return;
  cand c;
  c.key.score = w->t->score[id];
  c.left = l;
  c.right = r;
  c.val.size = a->n + b->n;
  heap_push(w, &c);
}

/* Segments: merging only ever joins adjacent symbols into a token, so where
 * the characters on the two sides of a boundary never occur side by side
 * in a token (SPM) or at the junction of a merge (BPE), no symbol will ever
 * span it. The text is cut there and each segment merged on its own: the
 * same result (candidates in different segments never interact, and within
 * a segment the order is the same), with small queues instead of one the
 * size of the text. */

/* SPM: merges symbols [0, count) of w->syms (linked), then emits them. */
static void spm_merge(work *w, const uint8_t *text, int32_t count) {
  const tq_tokenizer *t = w->t;
  w->heap_n = 0;
  for (int32_t i = 1; i < count; i++) spm_try_pair(w, text, i - 1, i);
  while (w->heap_n) {
    cand c = heap_pop(w);
    sym *a = &w->syms[c.left], *b = &w->syms[c.right];
    if (a->n == 0 || b->n == 0 || a->next != c.right || a->n + b->n != c.val.size) continue;
    a->n += b->n;
    b->n = 0;
    a->next = b->next;
    if (b->next >= 0) w->syms[b->next].prev = c.left;
    spm_try_pair(w, text, a->prev, c.left);
    spm_try_pair(w, text, c.left, a->next);
  }
  for (int32_t i = 0; i >= 0; i = w->syms[i].next) {
    const sym *s = &w->syms[i];
    int32_t id = lookup(t, (const char *)text + s->start, s->n);
    if (id >= 0) {
      emit(w, id);
      continue;
    }
    /* Byte fallback: every byte's <0xXX> token, or else one unknown token
     * (tokenizers' BPE with byte_fallback and fuse_unk). */
    int all = 1;
    for (uint32_t k = 0; k < s->n; k++) all &= t->byte_sym[text[s->start + k]] >= 0;
    if (all) {
      for (uint32_t k = 0; k < s->n; k++) emit(w, t->byte_sym[text[s->start + k]]);
    } else if (t->unk >= 0) {
      emit(w, t->unk);
    }
  }
}

/* SPM over n bytes of escaped text, segment by segment. */
static void spm_run(work *w, const uint8_t *text, size_t n) {
  if (n == 0) return;
  if (n > UINT32_MAX || !reserve(w, n)) {
    w->oom = 1;
    return;
  }
  for (size_t p = 0; p < n;) {
    int32_t count = 0;
    uint32_t prev = 0;
    size_t q = p;
    while (q < n) {
      size_t l = char_len(text + q, n - q);
      uint32_t k = char_key(text + q, l);
      if (count && !spm_can_join(w->t, prev, k)) break;
      sym *s = &w->syms[count];
      s->start = (uint32_t)q;
      s->n = (uint32_t)l;
      s->prev = count - 1;
      s->next = count + 1;
      s->id = -1;
      count++;
      prev = k;
      q += l;
    }
    w->syms[count - 1].next = -1;
    spm_merge(w, text, count);
    p = q;
  }
}

/* SPM fragment: spaces become U+2581, one more in front when add_space_prefix
 * (each fragment between special tokens gets its own, as Hugging Face's
 * Prepend normalizer and llama.cpp do). */
static void spm_fragment(work *w, const uint8_t *s, size_t n) {
  if (n == 0) return;
  if (n > (SIZE_MAX - 3) / 3 || !grow((void **)&w->buf, &w->buf_cap, 3 * n + 3, 1)) {
    w->oom = 1;
    return;
  }
  size_t m = 0;
  if (w->t->add_space_prefix) {
    memcpy(w->buf, "\xe2\x96\x81", 3);
    m = 3;
  }
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ' ') {
      memcpy(w->buf + m, "\xe2\x96\x81", 3);
      m += 3;
    } else {
      w->buf[m++] = s[i];
    }
  }
  spm_run(w, w->buf, m);
}

static void bpe_try_pair(work *w, int32_t l, int32_t r) {
  if (l < 0 || r < 0) return;
  const merge_slot *m = find_merge(w->t, w->syms[l].id, w->syms[r].id);
  if (!m) return;
  cand c;
  c.key.rank = m->rank;
  c.left = l;
  c.right = r;
  c.val.result = m->result;
  heap_push(w, &c);
}

/* BPE over one segment of a piece (symbols reserved by the caller). */
static void bpe_segment(work *w, const uint8_t *s, size_t n) {
  const tq_tokenizer *t = w->t;
  w->heap_n = 0;
  /* One symbol per byte (each byte is one stand-in character). A byte
   * without a token is dropped, as llama.cpp does and as tokenizers' BPE
   * does without a model-level unknown token (GGUF's unknown_token_id of a
   * byte-level model comes from the tokenizer configuration, not the BPE
   * model). Vocabularies leave out only bytes that never occur in UTF-8. */
  int32_t count = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = t->byte_sym[s[i]];
    if (id < 0) continue;
    sym *y = &w->syms[count];
    y->id = id;
    y->n = 1;
    y->prev = count - 1;
    y->next = count + 1;
    count++;
  }
  if (count == 0) return;
  w->syms[count - 1].next = -1;
  for (int32_t i = 1; i < count; i++) bpe_try_pair(w, i - 1, i);
  while (w->heap_n) {
    cand c = heap_pop(w);
    sym *a = &w->syms[c.left];
    if (a->n == 0 || a->next != c.right) continue;
    sym *b = &w->syms[c.right];
    const merge_slot *m = find_merge(t, a->id, b->id);
    if (!m || m->result != c.val.result) continue; /* stale: a side changed */
    a->id = c.val.result;
    a->n += b->n;
    b->n = 0;
    a->next = b->next;
    if (b->next >= 0) w->syms[b->next].prev = c.left;
    bpe_try_pair(w, a->prev, c.left);
    bpe_try_pair(w, c.left, a->next);
  }
  for (int32_t i = 0; i >= 0; i = w->syms[i].next) emit(w, w->syms[i].id);
}

/* BPE over one pre-tokenized piece. */
static void bpe_word(work *w, const uint8_t *s, size_t n) {
  const tq_tokenizer *t = w->t;
  if (n == 0) return;
  if (t->ignore_merges) {
    /* Llama 3 (ignore_merges): a piece that is a whole token stays one. */
    if (n > SIZE_MAX / 2 || !grow((void **)&w->buf, &w->buf_cap, 2 * n, 1)) {
      w->oom = 1;
      return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += utf8_encode(t->byte_cp[s[i]], w->buf + m);
    int32_t id = lookup(t, (const char *)w->buf, m);
    if (id >= 0) {
      emit(w, id);
      return;
    }
  }
  if (!reserve(w, n)) {
    w->oom = 1;
    return;
  }
  /* Bytes without a token are dropped, which makes their neighbours
   * adjacent: the boundary test looks at the last byte kept. */
  for (size_t p = 0; p < n;) {
    size_t q = p + 1;
    int last = t->byte_sym[s[p]] >= 0 ? s[p] : -1;
    for (; q < n; q++) {
      if (t->byte_sym[s[q]] < 0) continue;
      if (last >= 0) {
        unsigned bit = (unsigned)last * 256u + s[q];
        if (!(t->bpe_join[bit / 8] & (1u << (bit % 8)))) break;
      }
      last = s[q];
    }
    bpe_segment(w, s + p, q - p);
    p = q;
  }
}

/* Splits s[0, n) by regex `level` into matches and the gaps between them,
 * each handed to the next regex, the last level's pieces to BPE (tokenizers'
 * Split with behavior "isolated"; each piece is matched on its own, so
 * look-arounds see only the piece). */
static void bpe_split(work *w, int level, const uint8_t *s, size_t n) {
  if (n == 0 || w->oom) return;
  if (level == w->t->n_re) {
    bpe_word(w, s, n);
    return;
  }
  const pcre2_code *re = w->t->re[level];
  size_t pos = 0, gap = 0;
  while (pos < n) {
    int rc = pcre2_match(re, s, n, pos, 0, w->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = pcre2_match(re, s, n, pos, PCRE2_NO_JIT, w->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    size_t ms, me;
    if (rc < 0) {
      /* Match or heap limit: take one character as a piece of its own and
       * go on; tokenization never fails on the text. */
      ms = pos;
      me = pos + char_len(s + pos, n - pos);
    } else {
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
      ms = ov[0];
      me = ov[1];
      if (me <= ms) { /* an empty match: skip a character */
        pos = ms + char_len(s + ms, n - ms);
        continue;
      }
    }
    if (ms > gap) bpe_split(w, level + 1, s + gap, ms - gap);
    bpe_split(w, level + 1, s + ms, me - ms);
    pos = gap = me;
  }
  if (gap < n) bpe_split(w, level + 1, s + gap, n - gap);
}

/* The longest special token at s (n bytes left) that may be matched, or
 * NULL. */
static const special_tok *match_special(const tq_tokenizer *t, const uint8_t *s, size_t n,
                                        int parse_special) {
  for (uint32_t i = t->special_first[s[0]]; i < t->special_first[s[0] + 1]; i++) {
    const special_tok *sp = &t->by_byte[i];
    if (!parse_special && !sp->user) continue;
    if (sp->len <= n && memcmp(t->text + t->off[sp->id], s, sp->len) == 0) return sp;
  }
  return NULL;
}

static void fragment(work *w, const uint8_t *s, size_t n) {
  if (w->t->kind == TQ_TOKENIZER_SPM) spm_fragment(w, s, n);
  else bpe_split(w, 0, s, n);
}

tq_status tq_tokenize(const tq_tokenizer *t, const char *text, size_t len, int add_bos,
                      int parse_special, int32_t *ids, size_t cap, size_t *n_out) {
  if (n_out) *n_out = 0;
  if (!t || !n_out || (!text && len) || (!ids && cap)) return TQ_ERR_INVALID_ARGUMENT;
  work w;
  memset(&w, 0, sizeof w);
  w.t = t;
  w.ids = ids;
  w.cap = cap;
  if (t->n_re) {
    w.md = pcre2_match_data_create(1, NULL);
    if (!w.md) return TQ_ERR_OUT_OF_MEMORY;
  }
  if (add_bos && t->bos >= 0) emit(&w, t->bos);
  const uint8_t *s = (const uint8_t *)text;
  size_t start = 0;
  for (size_t p = 0; p < len && !w.oom;) {
    const special_tok *sp = t->n_specials ? match_special(t, s + p, len - p, parse_special) : NULL;
    if (!sp) {
      p++;
      continue;
    }
    fragment(&w, s + start, p - start);
    emit(&w, sp->id);
    p += sp->len;
    start = p;
  }
  if (!w.oom && start < len) fragment(&w, s + start, len - start);
  pcre2_match_data_free(w.md);
  free(w.syms);
  free(w.heap);
  free(w.buf);
  if (w.oom) return TQ_ERR_OUT_OF_MEMORY;
  *n_out = w.n;
  return w.n > cap ? TQ_ERR_BUFFER_TOO_SMALL : TQ_OK;
}

/* ------------------------------------------------------------------------ */
/* Detokenization                                                            */
/* ------------------------------------------------------------------------ */

/* Output of one push: counts every byte, stores while there is room. */
typedef struct sink {
  char *out;
  size_t cap, n;
} sink;

static void put(sink *k, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (k->out && k->n < k->cap) k->out[k->n] = (char)b[i];
    k->n++;
  }
}

static const uint8_t k_fffd[3] = {0xEF, 0xBF, 0xBD};

/* Whether byte b may follow the pending bytes p[0, n) of a UTF-8 sequence. */
static int continues(const uint8_t *p, uint32_t n, uint8_t b) {
  if ((b & 0xC0) != 0x80) return 0;
  if (n == 1) {
    if (p[0] == 0xE0) return b >= 0xA0;
    if (p[0] == 0xED) return b <= 0x9F;
    if (p[0] == 0xF0) return b >= 0x90;
    if (p[0] == 0xF4) return b <= 0x8F;
  }
  return 1;
}

static uint32_t seq_len(uint8_t lead) {
  return lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
}

/* Feeds one byte to the UTF-8 assembler: complete characters go out, an
 * invalid byte or an interrupted sequence becomes one U+FFFD (a maximal
 * invalid subpart, as Unicode recommends), so the output is always valid. */
static void feed(tq_detok *d, sink *k, uint8_t b) {
  for (;;) {
    if (d->n_pending == 0) {
      if (b < 0x80) put(k, &b, 1);
      else if (b >= 0xC2 && b <= 0xF4) d->pending[d->n_pending++] = b;
      else put(k, k_fffd, 3);
      return;
    }
    if (continues(d->pending, d->n_pending, b)) {
      d->pending[d->n_pending++] = b;
      if (d->n_pending == seq_len(d->pending[0])) {
        put(k, d->pending, d->n_pending);
        d->n_pending = 0;
      }
      return;
    }
    put(k, k_fffd, 3);
    d->n_pending = 0; /* and b starts afresh */
  }
}

/* A token's output bytes on their way to the assembler. The very first
 * byte of an SPM stream is dropped if it is the space add_space_prefix put
 * there: Hugging Face's Strip decoder looks at the first character of the
 * whole decoded text, so a skipped special token in front does not count,
 * one that is written out does. */
typedef struct token_out {
  const tq_tokenizer *t;
  tq_detok *d;
  sink *k;
  int first; /* no byte of the stream produced yet */
  int any;   /* this token produced a byte */
} token_out;

static void out_bytes(token_out *o, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (o->first) {
      o->first = 0;
      if (o->t->add_space_prefix && b[i] == ' ') {
        o->any = 1;
        continue;
      }
    }
    o->any = 1;
    feed(o->d, o->k, b[i]);
  }
}

/* The bytes of token id into the assembler. n_tokens counts the tokens that
 * produced bytes (skipped special tokens do not), for the leading-space rule. */
static void detok_token(const tq_tokenizer *t, tq_detok *d, int32_t id, sink *k) {
  size_t len;
  const uint8_t *s = (const uint8_t *)tok_text(t, id, &len);
  uint8_t attr = t->attr[id];
  token_out o = {t, d, k, d->n_tokens == 0, 0};
  if (attr == TQ_TOKEN_CONTROL || attr == TQ_TOKEN_UNKNOWN) {
    if (!d->skip_special) out_bytes(&o, s, len);
  } else if (attr == TQ_TOKEN_BYTE && parse_byte_token((const char *)s, len) >= 0) {
    uint8_t c = (uint8_t)parse_byte_token((const char *)s, len);
    out_bytes(&o, &c, 1);
  } else if (attr == TQ_TOKEN_USER_DEFINED && t->kind == TQ_TOKENIZER_BPE) {
    out_bytes(&o, s, len); /* added tokens keep their raw text */
  } else {
    for (size_t i = 0; i < len;) {
      size_t l = utf8_valid_len(s + i, len - i);
      if (l == 0) { /* invalid UTF-8 in the token text: as is */
        out_bytes(&o, s + i, 1);
        i++;
        continue;
      }
      if (t->kind == TQ_TOKENIZER_SPM) {
        if (l == 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) out_bytes(&o, (const uint8_t *)" ", 1);
        else out_bytes(&o, s + i, l);
      } else {
        uint32_t cp = utf8_decode(s + i, l);
        int b = cp < 256 + 68 ? t->cp_byte[cp] : -1;
        if (b >= 0) {
          uint8_t c = (uint8_t)b;
          out_bytes(&o, &c, 1);
        } else {
          out_bytes(&o, s + i, l); /* not a stand-in: as is */
        }
      }
      i += l;
    }
  }
  if (o.any && d->n_tokens < UINT32_MAX) d->n_tokens++;
}

void tq_detok_init(tq_detok *d, int skip_special) {
  if (!d) return;
  memset(d, 0, sizeof *d);
  d->skip_special = skip_special != 0;
}

/* Runs fn on a copy of the state to count the bytes, then for real if they
 * fit with their NUL: a too-small buffer leaves the state unchanged and
 * reports the bytes needed (without the NUL) in *n_out. */
static tq_status detok_out(const tq_tokenizer *t, tq_detok *d, int32_t id, int flush, char *out,
                           size_t cap, size_t *n_out) {
  tq_detok tmp = *d;
  if (tmp.n_pending > 3) tmp.n_pending = 0; /* a corrupted state: start afresh */
  sink k = {NULL, 0, 0};
  if (flush) {
    if (tmp.n_pending) put(&k, k_fffd, 3);
  } else {
    detok_token(t, &tmp, id, &k);
  }
  size_t need = k.n;
  *n_out = need;
  if (need > 0 && need >= cap) return TQ_ERR_BUFFER_TOO_SMALL;
  if (d->n_pending > 3) d->n_pending = 0;
  sink w = {out, cap, 0};
  if (flush) {
    if (d->n_pending) put(&w, k_fffd, 3);
    d->n_pending = 0;
  } else {
    detok_token(t, d, id, &w);
  }
  if (cap) out[w.n] = '\0';
  return TQ_OK;
}

tq_status tq_detok_push(const tq_tokenizer *t, tq_detok *d, int32_t id, char *out, size_t cap,
                        size_t *n_out) {
  if (n_out) *n_out = 0;
  if (!t || !d || !n_out || (!out && cap)) return TQ_ERR_INVALID_ARGUMENT;
  if (id < 0 || (uint32_t)id >= t->n_vocab) return TQ_ERR_INVALID_ARGUMENT;
  return detok_out(t, d, id, 0, out, cap, n_out);
}

tq_status tq_detok_flush(const tq_tokenizer *t, tq_detok *d, char *out, size_t cap, size_t *n_out) {
  if (n_out) *n_out = 0;
  if (!t || !d || !n_out || (!out && cap)) return TQ_ERR_INVALID_ARGUMENT;
  return detok_out(t, d, 0, 1, out, cap, n_out);
}
