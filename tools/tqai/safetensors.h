/*
 * safetensors.h - a small reader of Hugging Face .safetensors files for the
 * tqai tool (tqai convert), and the JSON helpers the converter shares.
 *
 * A safetensors file is: an unsigned 64-bit little-endian header length N,
 * N bytes of JSON (an object mapping tensor names to {"dtype", "shape",
 * "data_offsets": [begin, end]}, plus an optional "__metadata__" object of
 * strings), then the data; offsets count from the first byte after the
 * header. The files are memory-mapped read-only.
 *
 * Files are treated as hostile: the header length must fit the file, the
 * header must be one strict JSON object (UTF-8, no NUL bytes, bounded
 * nesting), every tensor entry must have a known dtype, at most ST_MAX_DIMS
 * non-negative dimensions whose product times the element size neither
 * overflows nor differs from end - begin, and begin <= end <= the data size.
 * Anything else is refused with a message naming the file and the tensor.
 * Tensor data may be unaligned; st_to_float copies before converting.
 * (A file truncated by someone else while it is mapped still raises SIGBUS:
 * mapping cannot guard against that.)
 */
#ifndef TQAI_TOOL_SAFETENSORS_H
#define TQAI_TOOL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

struct json_object;

#define ST_MAX_DIMS 8
/* Largest header accepted (the format's reference reader allows 100 MB). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

typedef enum st_dtype {
  ST_F32 = 0,
  ST_F16 = 1,
  ST_BF16 = 2,
  ST_OTHER = 3 /* a valid safetensors dtype that the converter cannot read */
} st_dtype;

typedef struct st_tensor {
  char *name;
  st_dtype dtype;
  char dtype_name[12];         /* as written in the file ("F32", "I64", ...) */
  uint32_t n_dims;
  uint64_t shape[ST_MAX_DIMS]; /* as written: shape[0] is the slowest dimension */
  uint64_t n_elements;
  uint64_t n_bytes;
  const unsigned char *data;   /* into the mapping; may be unaligned */
  uint32_t file;               /* index into st_set.files */
} st_tensor;

typedef struct st_file {
  char *path;
  void *map;
  size_t size;
} st_file;

/* The tensors of one or more files (a sharded checkpoint). Zero it before
 * the first st_add_file; free it with st_free. */
typedef struct st_set {
  st_file *files;
  uint32_t n_files;
  st_tensor *tensors;
  size_t n_tensors, cap_tensors;
} st_set;

/* Maps `path`, checks its header and adds its tensors to s. A name that is
 * already in s (from another file) is an error. Returns 0, or -1 with a
 * message in err (capacity errsz); s stays usable (nothing of the failed
 * file is kept). */
int st_add_file(st_set *s, const char *path, char *err, size_t errsz);

/* The tensor called `name`, or NULL (a linear scan). */
const st_tensor *st_find(const st_set *s, const char *name);

/* Converts all of t's elements (F32, F16 or BF16) to float into dst
 * (t->n_elements floats). Returns 0, or -1 for another dtype. */
int st_to_float(const st_tensor *t, float *dst);

void st_free(st_set *s);

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/* Maximum nesting accepted in any JSON the converter reads. */
#define ST_JSON_DEPTH 64

/* Parses len bytes as one strict JSON value (UTF-8 checked, NUL bytes and
 * anything but white space after the value refused). *out receives the value
 * (the caller puts it with json_object_put). Returns 0, or -1 with a message
 * (prefixed by `what`, e.g. the file name) in err. */
int st_json_parse(const char *text, size_t len, const char *what, struct json_object **out,
                  char *err, size_t errsz);

/* Reads a regular file of at most max_bytes and parses it as above. Returns
 * 0, 1 when the file does not exist (*out NULL, no message), or -1 with a
 * message. */
int st_json_read_file(const char *path, size_t max_bytes, struct json_object **out, char *err,
                      size_t errsz);

#endif /* TQAI_TOOL_SAFETENSORS_H */
