/*
 * safetensors.c - hostile-input-safe reader of .safetensors files and the
 * strict JSON parsing the converter uses (json-c). See safetensors.h.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#if defined(__GNUC__) || defined(__clang__)
#define ST_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#define ST_PRINTF(fmt, first)
#endif

static int fail(char *err, size_t errsz, const char *fmt, ...) ST_PRINTF(3, 4);

static int fail(char *err, size_t errsz, const char *fmt, ...) {
  if (err && errsz) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int st_json_parse(const char *text, size_t len, const char *what, struct json_object **out,
                  char *err, size_t errsz) {
  *out = NULL;
  if (!text) return fail(err, errsz, "%s: no text", what);
  /* json-c takes an int length, the terminating NUL included. */
  if (len >= (size_t)INT32_MAX - 1) return fail(err, errsz, "%s: too large to parse", what);
  if (memchr(text, '\0', len)) return fail(err, errsz, "%s: contains a NUL byte", what);
  while (len && is_json_space(text[len - 1])) len--;
  if (len == 0) return fail(err, errsz, "%s: empty", what);
  char *buf = malloc(len + 1);
  if (!buf) return fail(err, errsz, "%s: out of memory", what);
  memcpy(buf, text, len);
  buf[len] = '\0';
  struct json_tokener *tok = json_tokener_new_ex(ST_JSON_DEPTH);
  if (!tok) {
    free(buf);
    return fail(err, errsz, "%s: out of memory", what);
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  struct json_object *v = json_tokener_parse_ex(tok, buf, (int)len + 1);
  enum json_tokener_error e = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  int rc = 0;
  if (!v || e != json_tokener_success) {
    if (e == json_tokener_continue || e == json_tokener_success)
      rc = fail(err, errsz, "%s: invalid JSON: unexpected end of text", what);
    else
      rc = fail(err, errsz, "%s: invalid JSON: %s (near byte %zu)", what, json_tokener_error_desc(e),
                end);
  } else if (end < len) {
    rc = fail(err, errsz, "%s: invalid JSON: text after the value (byte %zu)", what, end);
  }
  json_tokener_free(tok);
  free(buf);
  if (rc) {
    json_object_put(v);
    return rc;
  }
  *out = v;
  return 0;
}

int st_json_read_file(const char *path, size_t max_bytes, struct json_object **out, char *err,
                      size_t errsz) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 1;
    return fail(err, errsz, "%s: %s", path, strerror(errno));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return fail(err, errsz, "%s: not a regular file", path);
  }
  if ((uint64_t)sb.st_size > max_bytes) {
    close(fd);
    return fail(err, errsz, "%s: %lld bytes is larger than the %zu this file may have", path,
                (long long)sb.st_size, max_bytes);
  }
  size_t size = (size_t)sb.st_size;
  char *buf = malloc(size ? size : 1);
  if (!buf) {
    close(fd);
    return fail(err, errsz, "%s: out of memory", path);
  }
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != size) {
    free(buf);
    return fail(err, errsz, "%s: read error", path);
  }
  int rc = st_json_parse(buf, size, path, out, err, errsz);
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Safetensors                                                               */
/* ------------------------------------------------------------------------ */

static const struct {
  const char *name;
  unsigned size;
  st_dtype dtype;
} k_dtypes[] = {
    {"F32", 4, ST_F32},     {"F16", 2, ST_F16},     {"BF16", 2, ST_BF16},  {"F64", 8, ST_OTHER},
    {"I64", 8, ST_OTHER},   {"I32", 4, ST_OTHER},   {"I16", 2, ST_OTHER},  {"I8", 1, ST_OTHER},
    {"U64", 8, ST_OTHER},   {"U32", 4, ST_OTHER},   {"U16", 2, ST_OTHER},  {"U8", 1, ST_OTHER},
    {"BOOL", 1, ST_OTHER},  {"F8_E4M3", 1, ST_OTHER}, {"F8_E5M2", 1, ST_OTHER},
    {"F8_E8M0", 1, ST_OTHER},
};

/* Reads a non-negative JSON integer into *out; 0 on success. */
static int json_u64(struct json_object *o, uint64_t *out) {
  if (!o || !json_object_is_type(o, json_type_int)) return -1;
  errno = 0;
  int64_t v = json_object_get_int64(o);
  if (v < 0) return -1;
  /* json-c keeps integers above INT64_MAX as unsigned; get_int64 saturates. */
  if (v == INT64_MAX) {
    uint64_t u = json_object_get_uint64(o);
    *out = u;
    return 0;
  }
  *out = (uint64_t)v;
  return 0;
}

static void free_tensor(st_tensor *t) { free(t->name); }

/* Parses one tensor entry. */
static int parse_entry(const char *path, const char *name, struct json_object *e, uint64_t data_size,
                       const unsigned char *data, st_tensor *t, char *err, size_t errsz) {
  memset(t, 0, sizeof *t);
  if (!json_object_is_type(e, json_type_object))
    return fail(err, errsz, "%s: tensor '%s': entry is not a JSON object", path, name);
  struct json_object *jd, *js, *jo;
  if (!json_object_object_get_ex(e, "dtype", &jd) || !json_object_is_type(jd, json_type_string))
    return fail(err, errsz, "%s: tensor '%s': 'dtype' is missing or not a string", path, name);
  if (!json_object_object_get_ex(e, "shape", &js) || !json_object_is_type(js, json_type_array))
    return fail(err, errsz, "%s: tensor '%s': 'shape' is missing or not an array", path, name);
  if (!json_object_object_get_ex(e, "data_offsets", &jo) || !json_object_is_type(jo, json_type_array) ||
      json_object_array_length(jo) != 2)
    return fail(err, errsz, "%s: tensor '%s': 'data_offsets' is missing or not [begin, end]", path,
                name);
  const char *dn = json_object_get_string(jd);
  int di = -1;
  for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
    if ((size_t)json_object_get_string_len(jd) == strlen(k_dtypes[i].name) &&
        strcmp(dn, k_dtypes[i].name) == 0)
      di = (int)i;
  if (di < 0)
    return fail(err, errsz, "%s: tensor '%s': unknown dtype '%.16s'", path, name, dn);
  size_t nd = json_object_array_length(js);
  if (nd > ST_MAX_DIMS)
    return fail(err, errsz, "%s: tensor '%s': %zu dimensions (at most %d)", path, name, nd,
                ST_MAX_DIMS);
  uint64_t n = 1;
  for (size_t d = 0; d < nd; d++) {
    uint64_t v;
    if (json_u64(json_object_array_get_idx(js, d), &v) != 0)
      return fail(err, errsz, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, d);
    if (v && n > UINT64_MAX / v)
      return fail(err, errsz, "%s: tensor '%s': shape overflows", path, name);
    n *= v;
    t->shape[d] = v;
  }
  uint64_t es = k_dtypes[di].size;
  if (n > UINT64_MAX / es) return fail(err, errsz, "%s: tensor '%s': shape overflows", path, name);
  uint64_t begin, end;
  if (json_u64(json_object_array_get_idx(jo, 0), &begin) != 0 ||
      json_u64(json_object_array_get_idx(jo, 1), &end) != 0)
    return fail(err, errsz, "%s: tensor '%s': data_offsets are not non-negative integers", path, name);
  if (begin > end || end > data_size)
    return fail(err, errsz,
                "%s: tensor '%s': data_offsets [%llu, %llu] are outside the %llu bytes of data", path,
                name, (unsigned long long)begin, (unsigned long long)end,
                (unsigned long long)data_size);
  if (end - begin != n * es)
    return fail(err, errsz,
                "%s: tensor '%s': %llu bytes of data, but its shape and dtype %s need %llu", path,
                name, (unsigned long long)(end - begin), k_dtypes[di].name,
                (unsigned long long)(n * es));
  size_t nlen = strlen(name);
  t->name = malloc(nlen + 1);
  if (!t->name) return fail(err, errsz, "out of memory");
  memcpy(t->name, name, nlen + 1);
  t->dtype = k_dtypes[di].dtype;
  snprintf(t->dtype_name, sizeof t->dtype_name, "%s", k_dtypes[di].name);
  t->n_dims = (uint32_t)nd;
  t->n_elements = n;
  t->n_bytes = n * es;
  t->data = data + begin;
  return 0;
}

const st_tensor *st_find(const st_set *s, const char *name) {
  for (size_t i = 0; i < s->n_tensors; i++)
    if (strcmp(s->tensors[i].name, name) == 0) return &s->tensors[i];
  return NULL;
}

int st_add_file(st_set *s, const char *path, char *err, size_t errsz) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(err, errsz, "%s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return fail(err, errsz, "%s: not a regular file", path);
  }
  uint64_t fsize = (uint64_t)sb.st_size;
  if (fsize < 8 || fsize > SIZE_MAX) {
    close(fd);
    return fail(err, errsz, "%s: %llu bytes is too short for a safetensors file", path,
                (unsigned long long)fsize);
  }
  void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return fail(err, errsz, "%s: cannot map: %s", path, strerror(errno));
  const unsigned char *p = map;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
  int rc = 0;
  struct json_object *root = NULL;
  size_t first_new = s->n_tensors;
  if (hlen < 2 || hlen > fsize - 8 || hlen > ST_MAX_HEADER) {
    rc = fail(err, errsz, "%s: header length %llu does not fit the file of %llu bytes", path,
              (unsigned long long)hlen, (unsigned long long)fsize);
    goto out;
  }
  char what[600];
  snprintf(what, sizeof what, "%s: header", path);
  if (st_json_parse((const char *)p + 8, (size_t)hlen, what, &root, err, errsz) != 0) {
    rc = -1;
    goto out;
  }
  if (!json_object_is_type(root, json_type_object)) {
    rc = fail(err, errsz, "%s: header is not a JSON object", path);
    goto out;
  }
  uint64_t data_size = fsize - 8 - hlen;
  const unsigned char *data = p + 8 + hlen;
  json_object_object_foreach(root, key, val) {
    if (strcmp(key, "__metadata__") == 0) {
      if (!json_object_is_type(val, json_type_object)) {
        rc = fail(err, errsz, "%s: __metadata__ is not a JSON object", path);
        goto out;
      }
      continue;
    }
    if (!*key || strlen(key) > 512) {
      rc = fail(err, errsz, "%s: a tensor name is empty or longer than 512 bytes", path);
      goto out;
    }
    if (st_find(s, key)) {
      rc = fail(err, errsz, "%s: tensor '%s' is also in another file", path, key);
      goto out;
    }
    if (s->n_tensors == s->cap_tensors) {
      size_t cap = s->cap_tensors ? s->cap_tensors * 2 : 64;
      st_tensor *nt = realloc(s->tensors, cap * sizeof *nt);
      if (!nt) {
        rc = fail(err, errsz, "out of memory");
        goto out;
      }
      s->tensors = nt;
      s->cap_tensors = cap;
    }
    st_tensor t;
    if (parse_entry(path, key, val, data_size, data, &t, err, errsz) != 0) {
      rc = -1;
      goto out;
    }
    t.file = s->n_files;
    s->tensors[s->n_tensors++] = t;
  }
  {
    st_file *nf = realloc(s->files, (s->n_files + 1) * sizeof *nf);
    size_t plen = strlen(path);
    char *pcopy = malloc(plen + 1);
    if (!nf || !pcopy) {
      if (nf) s->files = nf;
      free(pcopy);
      rc = fail(err, errsz, "out of memory");
      goto out;
    }
    memcpy(pcopy, path, plen + 1);
    s->files = nf;
    s->files[s->n_files++] = (st_file){pcopy, map, (size_t)fsize};
  }
out:
  json_object_put(root);
  if (rc) {
    for (size_t i = first_new; i < s->n_tensors; i++) free_tensor(&s->tensors[i]);
    s->n_tensors = first_new;
    munmap(map, (size_t)fsize);
  }
  return rc;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {
      /* Subnormal: normalize. */
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while (!(man & 0x400));
      bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else {
    bits = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

int st_to_float(const st_tensor *t, float *dst) {
  const unsigned char *p = t->data;
  uint64_t n = t->n_elements;
  switch (t->dtype) {
    case ST_F32:
      for (uint64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                     (uint32_t)p[4 * i + 3] << 24;
        memcpy(&dst[i], &u, 4);
      }
      return 0;
    case ST_F16:
      for (uint64_t i = 0; i < n; i++) dst[i] = half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
      return 0;
    case ST_BF16:
      for (uint64_t i = 0; i < n; i++) {
        uint32_t u = ((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8) << 16;
        memcpy(&dst[i], &u, 4);
      }
      return 0;
    case ST_OTHER: break;
  }
  return -1;
}

void st_free(st_set *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n_tensors; i++) free_tensor(&s->tensors[i]);
  for (uint32_t i = 0; i < s->n_files; i++) {
    munmap(s->files[i].map, s->files[i].size);
    free(s->files[i].path);
  }
  free(s->tensors);
  free(s->files);
  memset(s, 0, sizeof *s);
}
