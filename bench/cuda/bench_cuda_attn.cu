/*
 * bench_cuda_attn.cu - times tq_cuda_cache_attention_decode (rotate query,
 * split-K decode, reduce) on a device cache filled with random records, and
 * prints one JSON object per configuration on stdout.
 *
 *   bench_cuda_attn [--batches 1,8,32] [--contexts 4096,32768,131072]
 *                   [--bits 4/2,3/2] [--heads 32] [--kv-heads 8] [--dim 128]
 *                   [--iters 50] [--block 256] [--warm-ms 1000]
 *                   [--window-ms 1000]
 *
 * Each configuration holds enough layers (copies of the cache) that the
 * layers timed in turn do not fit the GPU's L2 cache together; each call is
 * timed with CUDA events three ways: synchronized after each call
 * (median_us), queued back to back (stream_us), and as CUDA-graph replays of
 * one call per layer (graph_us, the replay's time over its calls); medians
 * are reported with the bytes the call reads and writes
 * (tq_cuda_cache_decode_bytes) and the bandwidth they give.
 *
 * Sustained timing (sustained_us; off with --window-ms 0): the GPU lowers
 * its clock when its power draw reaches its limit, within tens of
 * milliseconds of load, so short timings after an idle moment run at a
 * clock that depends on what ran before. The graph is replayed back to back
 * for --warm-ms, then every replay of the next --window-ms is timed; the
 * median replay over its calls is reported, with the window's start and end
 * (CLOCK_REALTIME seconds: sustained_t0, sustained_t1) so that a script
 * sampling the GPU's clock and power can match its samples to the window.
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tqai.h"
#include "tqai_cuda.h"

#define CK(x)                                                                       \
  do {                                                                              \
    cudaError_t e_ = (x);                                                           \
    if (e_ != cudaSuccess) {                                                        \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

#define TQ(x)                                                                   \
  do {                                                                          \
    tq_status s_ = (x);                                                         \
    if (s_ != TQ_OK) {                                                          \
      fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #x, tq_status_name(s_), \
              ctx ? tq_cuda_ctx_last_error(ctx) : "");                          \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

static tq_cuda_ctx *ctx;

static int parse_list(const char *s, long *out, int max) {
  int n = 0;
  while (*s && n < max) {
    out[n++] = strtol(s, (char **)&s, 10);
    if (*s == ',') s++;
  }
  return n;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next32(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* Random records: code bytes uniform, fp16 norms in [0.5, 1.5). */
static void random_records(uint8_t *r, size_t n, size_t rec) {
  for (size_t i = 0; i < n; i++) {
    uint8_t *p = r + i * rec;
    uint16_t h = tq_f32_to_f16(0.5f + (float)(next32() & 0xffff) / 65536.0f);
    p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
    for (size_t j = 2; j < rec; j++) p[j] = (uint8_t)next32();
  }
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Median time of one call over n replays of a graph of R calls, each
 * replay between two of the 2 n events ev (created by the caller); ms holds
 * n floats of scratch. Returns after the stream has drained. */
static float replay_median(cudaGraphExec_t exec, cudaStream_t st, uint32_t R, long n,
                           cudaEvent_t *ev, float *ms) {
  for (long i = 0; i < n; i++) {
    CK(cudaEventRecord(ev[2 * i], st));
    CK(cudaGraphLaunch(exec, st));
    CK(cudaEventRecord(ev[2 * i + 1], st));
  }
  CK(cudaStreamSynchronize(st));
  for (long i = 0; i < n; i++) {
    CK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
    ms[i] /= (float)R;
  }
  qsort(ms, (size_t)n, sizeof *ms, cmp_float);
  return ms[n / 2];
}

/* Sustained timing of a graph of R calls whose replay took about replay_ms
 * when timed from idle: replays back to back for warm_ms, then each replay
 * of window_ms timed (events around it); returns the median replay over R
 * in ms (-1 when off) and the window's wall-clock start and end. */
static float sustained(cudaGraphExec_t exec, cudaStream_t st, uint32_t R, float replay_ms,
                       long warm_ms, long window_ms, double *t0, double *t1, int *n_out) {
  *t0 = *t1 = 0.0;
  *n_out = 0;
  if (window_ms <= 0 || replay_ms <= 0.0f) return -1.0f;
  long nw = (long)((float)warm_ms / replay_ms) + 1, nm = (long)((float)window_ms / replay_ms) + 1;
  if (nw > 200000) nw = 200000;
  if (nm > 20000) nm = 20000;
  if (nm < 5) nm = 5;
  cudaEvent_t *ev = (cudaEvent_t *)malloc((size_t)(2 * nm) * sizeof *ev);
  float *ms = (float *)malloc((size_t)nm * sizeof *ms);
  if (!ev || !ms) {
    fprintf(stderr, "bench_cuda_attn: out of memory\n");
    exit(1);
  }
  for (long i = 0; i < 2 * nm; i++) CK(cudaEventCreate(&ev[i]));
  for (long i = 0; i < nw; i++) CK(cudaGraphLaunch(exec, st));
  /* The window starts behind the warm-up's last replay: what the queue
   * still holds when the CPU gets here is a few replays at most. */
  CK(cudaStreamSynchronize(st));
  *t0 = wall_now();
  float med = replay_median(exec, st, R, nm, ev, ms);
  *t1 = wall_now();
  for (long i = 0; i < 2 * nm; i++) cudaEventDestroy(ev[i]);
  free(ev);
  free(ms);
  *n_out = (int)nm;
  return med;
}

static long warm_ms = 1000, window_ms = 1000;

static void run_config(uint32_t batch, uint32_t T, uint32_t kb, uint32_t vb, uint32_t Hq,
                       uint32_t H, uint32_t d, uint32_t block, int iters) {
  size_t token_bytes = (size_t)tq_record_size(d, kb, TQ_NORM_F16) + tq_record_size(d, vb, TQ_NORM_F16);
  size_t layer_bytes = (size_t)batch * T * H * token_bytes;
  uint32_t layers = (uint32_t)((240u << 20) / layer_bytes + 1);
  if (layers > 64) layers = 64;
  tq_cuda_cache_params p = tq_cuda_cache_params_default(layers, H, d);
  p.n_seqs = batch;
  p.max_tokens = T;
  p.block_tokens = block;
  p.key_bits = kb;
  p.value_bits = vb;
  tq_cuda_cache *cache = NULL;
  TQ(tq_cuda_cache_create(ctx, &p, &cache));
  /* One chunk of random records, appended again and again. */
  uint32_t chunk = T < 8192 ? T : 8192;
  size_t kr = tq_record_size(d, kb, TQ_NORM_F16), vr = tq_record_size(d, vb, TQ_NORM_F16);
  uint8_t *hk = (uint8_t *)malloc((size_t)chunk * H * kr), *hv = (uint8_t *)malloc((size_t)chunk * H * vr);
  random_records(hk, (size_t)chunk * H, kr);
  random_records(hv, (size_t)chunk * H, vr);
  void *dk, *dv;
  TQ(tq_cuda_malloc(ctx, (size_t)chunk * H * kr, &dk));
  TQ(tq_cuda_malloc(ctx, (size_t)chunk * H * vr, &dv));
  TQ(tq_cuda_upload(ctx, dk, hk, (size_t)chunk * H * kr));
  TQ(tq_cuda_upload(ctx, dv, hv, (size_t)chunk * H * vr));
  for (uint32_t l = 0; l < layers; l++)
    for (uint32_t s = 0; s < batch; s++)
      for (uint32_t t = 0; t < T; t += chunk)
        TQ(tq_cuda_cache_append_records(cache, l, s, dk, dv, T - t < chunk ? T - t : chunk));
  TQ(tq_cuda_ctx_sync(ctx));
  size_t qn = (size_t)batch * Hq * d;
  float *hq = (float *)malloc(qn * sizeof *hq);
  for (size_t i = 0; i < qn; i++) hq[i] = ((float)(next32() & 0xffff) / 32768.0f - 1.0f);
  void *dq, *dout;
  TQ(tq_cuda_malloc(ctx, qn * sizeof(float), &dq));
  TQ(tq_cuda_malloc(ctx, qn * sizeof(float), &dout));
  TQ(tq_cuda_upload(ctx, dq, hq, qn * sizeof(float)));
  cudaStream_t st = (cudaStream_t)tq_cuda_ctx_stream(ctx);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float scale = 1.0f / 11.3137085f;
  for (int i = 0; i < 5; i++)
    TQ(tq_cuda_cache_attention_decode(cache, (uint32_t)i % layers, (const float *)dq, Hq, scale,
                                      (float *)dout));
  /* Stream timing: every call between two events, all queued before one
   * synchronization (the GPU runs behind the CPU, as in a model's decode). */
  float *ms = (float *)malloc((size_t)iters * sizeof *ms);
  cudaEvent_t *ev = (cudaEvent_t *)malloc((size_t)(2 * iters) * sizeof *ev);
  for (int i = 0; i < 2 * iters; i++) CK(cudaEventCreate(&ev[i]));
  for (int i = 0; i < iters; i++) {
    CK(cudaEventRecord(ev[2 * i], st));
    TQ(tq_cuda_cache_attention_decode(cache, (uint32_t)i % layers, (const float *)dq, Hq, scale,
                                      (float *)dout));
    CK(cudaEventRecord(ev[2 * i + 1], st));
  }
  CK(cudaStreamSynchronize(st));
  for (int i = 0; i < iters; i++) CK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  qsort(ms, (size_t)iters, sizeof *ms, cmp_float);
  float stream_med = ms[iters / 2];
  /* Graph timing: one graph of R calls (the layers in turn), replayed; the
   * time of a replay over R is the time of a call without launch gaps. */
  uint32_t R = layers < 8 ? 8 : layers;
  float graph_med = -1.0f, sus_med = -1.0f;
  double sus_t0 = 0.0, sus_t1 = 0.0;
  int sus_n = 0;
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  if (cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed) == cudaSuccess) {
    int ok = 1;
    for (uint32_t i = 0; i < R && ok; i++)
      ok = tq_cuda_cache_attention_decode(cache, i % layers, (const float *)dq, Hq, scale,
                                          (float *)dout) == TQ_OK;
    if (cudaStreamEndCapture(st, &graph) == cudaSuccess && ok &&
        cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess) {
      CK(cudaGraphLaunch(exec, st));
      graph_med = replay_median(exec, st, R, iters, ev, ms);
      sus_med = sustained(exec, st, R, graph_med * (float)R, warm_ms, window_ms, &sus_t0, &sus_t1,
                          &sus_n);
    }
    (void)cudaGetLastError();
  }
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  for (int i = 0; i < 2 * iters; i++) cudaEventDestroy(ev[i]);
  free(ev);
  /* The older per-call timing (synchronized after each call), for comparison
   * with earlier runs. */
  for (int i = 0; i < iters; i++) {
    CK(cudaEventRecord(e0, st));
    TQ(tq_cuda_cache_attention_decode(cache, (uint32_t)i % layers, (const float *)dq, Hq, scale,
                                      (float *)dout));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms[i], e0, e1));
  }
  qsort(ms, (size_t)iters, sizeof *ms, cmp_float);
  float med = ms[iters / 2];
  /* Output finite? (a cheap guard against a broken kernel being timed) */
  TQ(tq_cuda_download(ctx, hq, dout, qn * sizeof(float)));
  int finite = 1;
  for (size_t i = 0; i < qn; i++) finite &= hq[i] == hq[i] && hq[i] - hq[i] == 0.0f;
  size_t bytes = tq_cuda_cache_decode_bytes(cache, 0, Hq);
  printf("{\"impl\": \"tqai\", \"kbits\": %u, \"vbits\": %u, \"batch\": %u, \"context\": %u, "
         "\"q_heads\": %u, \"kv_heads\": %u, \"dim\": %u, \"layers_rotated\": %u, \"median_us\": %.3f, "
         "\"min_us\": %.3f, \"stream_us\": %.3f, \"graph_us\": %.3f, \"sustained_us\": %.3f, "
         "\"sustained_replays\": %d, \"sustained_t0\": %.6f, \"sustained_t1\": %.6f, "
         "\"graph_calls\": %u, \"bytes\": %zu, \"gbps\": %.1f, \"graph_gbps\": %.1f, \"finite\": %s}\n",
         kb, vb, batch, T, Hq, H, d, layers, med * 1e3, ms[0] * 1e3, stream_med * 1e3,
         graph_med * 1e3, sus_med * 1e3, sus_n, sus_t0, sus_t1, R, bytes,
         (double)bytes / (med * 1e-3) / 1e9,
         graph_med > 0 ? (double)bytes / (graph_med * 1e-3) / 1e9 : 0.0, finite ? "true" : "false");
  fflush(stdout);
  free(ms);
  free(hq);
  free(hk);
  free(hv);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  tq_cuda_free(ctx, dq);
  tq_cuda_free(ctx, dout);
  tq_cuda_free(ctx, dk);
  tq_cuda_free(ctx, dv);
  tq_cuda_cache_free(cache);
}

int main(int argc, char **argv) {
  long batches[16] = {1, 8, 32}, contexts[16] = {4096, 32768, 131072};
  int nb = 3, nc = 3;
  long kbits[8] = {4, 3}, vbits[8] = {2, 2};
  int nbits = 2;
  long Hq = 32, H = 8, d = 128, iters = 50, block = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "--batches")) nb = parse_list(v, batches, 16);
    else if (!strcmp(a, "--contexts")) nc = parse_list(v, contexts, 16);
    else if (!strcmp(a, "--bits")) {
      nbits = 0;
      while (*v && nbits < 8) {
        kbits[nbits] = strtol(v, (char **)&v, 10);
        if (*v == '/') v++;
        vbits[nbits++] = strtol(v, (char **)&v, 10);
        if (*v == ',') v++;
      }
    } else if (!strcmp(a, "--heads")) Hq = strtol(v, NULL, 10);
    else if (!strcmp(a, "--kv-heads")) H = strtol(v, NULL, 10);
    else if (!strcmp(a, "--dim")) d = strtol(v, NULL, 10);
    else if (!strcmp(a, "--iters")) iters = strtol(v, NULL, 10);
    else if (!strcmp(a, "--block")) block = strtol(v, NULL, 10);
    else if (!strcmp(a, "--warm-ms")) warm_ms = strtol(v, NULL, 10);
    else if (!strcmp(a, "--window-ms")) window_ms = strtol(v, NULL, 10);
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  if (iters < 1) iters = 1;
  if (warm_ms < 0 || warm_ms > 600000 || window_ms < 0 || window_ms > 600000) {
    fprintf(stderr, "bench_cuda_attn: --warm-ms and --window-ms take 0 to 600000\n");
    return 2;
  }
  int n = 0;
  tq_cuda_device_count(&n);
  if (n == 0) {
    fprintf(stderr, "bench_cuda_attn: no CUDA GPU\n");
    return 1;
  }
  TQ(tq_cuda_ctx_create(0, NULL, &ctx));
  for (int b = 0; b < nbits; b++)
    for (int i = 0; i < nb; i++)
      for (int c = 0; c < nc; c++)
        run_config((uint32_t)batches[i], (uint32_t)contexts[c], (uint32_t)kbits[b],
                   (uint32_t)vbits[b], (uint32_t)Hq, (uint32_t)H, (uint32_t)d, (uint32_t)block,
                   (int)iters);
  tq_cuda_ctx_free(ctx);
  return 0;
}
