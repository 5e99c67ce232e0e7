/*
 * codebook.c - Lloyd-Max scalar quantizers for one coordinate of a random
 * unit vector.
 *
 * Both laws are symmetric, so only the positive half is solved: K = 2^(bits-1)
 * cells [t_{k-1}, t_k] with t_0 = 0 and t_K = 1 (exact) or infinity
 * (Gaussian), centroids c_1 < ... < c_K, boundaries t_k = (c_k + c_{k+1}) / 2.
 * The fixed point c_k = E[T | t_{k-1} < T < t_k] is found by companding
 * initialization, a few Lloyd steps, then Newton's method on the tridiagonal
 * system, and checked at the end: a returned codebook is a true fixed point
 * to about 1e-13 relative, at every bit width.
 *
 * Cell masses use upper-tail probabilities computed directly (no 1 - F), and
 * first moments in closed form, so tail cells keep full relative precision.
 */
#include <math.h>
#include <string.h>

#include "codebook.h"
#include "tqai.h"

#define TQ_PI 3.14159265358979323846

typedef struct law {
  tq_codebook_kind kind;
  uint32_t dim;
  double beta;   /* exact: T = 2B - 1, B ~ Beta(beta, beta), beta = (dim-1)/2 */
  double sigma;  /* gaussian: 1/sqrt(dim) */
  double top;    /* upper end of the support: 1 or infinity */
} law;

/* Regularized incomplete beta I_x(a, b) for x <= a/(a+b) region by the
 * continued fraction (modified Lentz). Caller guarantees x in [0, 1]. */
static double betacf(double a, double b, double x) {
  const double tiny = 1e-300;
  double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0, dd = 1.0 - qab * x / qap;
  if (fabs(dd) < tiny) dd = tiny;
  dd = 1.0 / dd;
  double h = dd;
  for (int m = 1; m <= 100000; m++) {
    double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    dd = 1.0 + aa * dd;
    if (fabs(dd) < tiny) dd = tiny;
    c = 1.0 + aa / c;
    if (fabs(c) < tiny) c = tiny;
    dd = 1.0 / dd;
    h *= dd * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    dd = 1.0 + aa * dd;
    if (fabs(dd) < tiny) dd = tiny;
    c = 1.0 + aa / c;
    if (fabs(c) < tiny) c = tiny;
    dd = 1.0 / dd;
    double del = dd * c;
    h *= del;
    if (fabs(del - 1.0) < 1e-16) break;
  }
  return h;
}

static double ibeta(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  double lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
  double bt = exp(lbt);
  if (x < (a + 1.0) / (a + b + 2.0)) return bt * betacf(a, b, x) / a;
  return 1.0 - bt * betacf(b, a, 1.0 - x) / b;
}

/* P(T > t) for t >= 0; used only to place the initial centroids. */
static double upper_tail(const law *L, double t) {
  if (t >= L->top) return 0.0;
  if (L->kind == TQ_CODEBOOK_GAUSSIAN) return 0.5 * erfc(t / (L->sigma * sqrt(2.0)));
  /* P(2B - 1 > t) = P(B' < (1 - t)/2) with B' = 1 - B ~ Beta(beta, beta). */
  return ibeta(L->beta, L->beta, 0.5 * (1.0 - t));
}

/* Everything below works with the density up to its constant factor, which
 * cancels in conditional means and in the Newton Jacobian; masses are
 * normalized by their sum where a probability is needed. Avoiding the
 * constant (a difference of large log-gamma values) and differences of tail
 * probabilities keeps every cell at full relative precision. */

/* Unnormalized density: (1 - t^2)^(beta - 1), or exp(-t^2 / (2 sigma^2)). */
static double density(const law *L, double t) {
  if (t >= L->top) return 0.0;
  if (L->kind == TQ_CODEBOOK_GAUSSIAN) {
    double z = t / L->sigma;
    return exp(-0.5 * z * z);
  }
  return exp((L->beta - 1.0) * log((1.0 - t) * (1.0 + t)));
}

/* 16-point Gauss-Legendre rule on [-1, 1]: nodes (positive half) and weights. */
static const double gl_x[8] = {
    0.0950125098376374401853, 0.2816035507792589132305, 0.4580167776572273863424,
    0.6178762444026437484467, 0.7554044083550030338951, 0.8656312023878317438805,
    0.9445750230732325760779, 0.9894009349916499325962};
static const double gl_w[8] = {
    0.1894506104550684962854, 0.1826034150449235888668, 0.1691565193950025381893,
    0.1495959888165767320815, 0.1246289712555338720525, 0.0951585116824927848099,
    0.0622535239386478928628, 0.0271524594117540948518};

/* Integrand of the mass (which = 0) or first moment (which = 1) in the
 * variable used for quadrature. Exact law: s = sqrt(1 - t), so that
 * (1 - t^2)^(beta-1) dt = 2 s^(dim-2) (2 - s^2)^(beta-1) ds, smooth on [0, 1]
 * for every dim >= 2 (no endpoint singularity at t = 1). Gaussian: t itself. */
static double integrand(const law *L, double v, int which) {
  if (L->kind == TQ_CODEBOOK_GAUSSIAN) {
    double z = v / L->sigma;
    double f = exp(-0.5 * z * z);
    return which ? v * f : f;
  }
  double s = v;
  double f;
  if (s <= 0.0) f = L->dim == 2 ? 2.0 * exp((L->beta - 1.0) * log(2.0)) : 0.0;
  else f = 2.0 * exp((double)(L->dim - 2) * log(s) + (L->beta - 1.0) * log(2.0 - s * s));
  return which ? (1.0 - s * s) * f : f;
}

static double gl16(const law *L, double a, double b, int which) {
  double mid = 0.5 * (a + b), half = 0.5 * (b - a), sum = 0.0;
  for (int i = 0; i < 8; i++)
    sum += gl_w[i] * (integrand(L, mid - half * gl_x[i], which) +
                      integrand(L, mid + half * gl_x[i], which));
  return sum * half;
}

/* Adaptive Gauss-Legendre: split until the halves agree to 1e-14 (the
 * 16-point rule is then exact to rounding on these smooth integrands). */
static double integrate(const law *L, double a, double b, int which, double whole, int depth) {
  double m = 0.5 * (a + b);
  double left = gl16(L, a, m, which), right = gl16(L, m, b, which);
  if (depth >= 12 || fabs(left + right - whole) <= 1e-14 * fabs(left + right))
    return left + right;
  return integrate(L, a, m, which, left, depth + 1) + integrate(L, m, b, which, right, depth + 1);
}

/* Unnormalized mass and first moment of the cell [a, b], 0 <= a < b <= top. */
static void cell_integrals(const law *L, double a, double b, double *mass, double *moment) {
  if (L->kind == TQ_CODEBOOK_GAUSSIAN && b >= L->top) {
    /* Closed forms of the Gaussian tail; erfc keeps relative precision. */
    double z = a / L->sigma;
    *mass = L->sigma * sqrt(0.5 * TQ_PI) * erfc(z / sqrt(2.0));
    *moment = L->sigma * L->sigma * exp(-0.5 * z * z);
    return;
  }
  double lo = a, hi = b;
  if (L->kind == TQ_CODEBOOK_EXACT) {
    lo = sqrt(1.0 - b);
    hi = sqrt(1.0 - a);
  }
  *mass = integrate(L, lo, hi, 0, gl16(L, lo, hi, 0), 0);
  *moment = integrate(L, lo, hi, 1, gl16(L, lo, hi, 1), 0);
}

static void law_init(law *L, tq_codebook_kind kind, uint32_t dim) {
  memset(L, 0, sizeof *L);
  L->kind = kind;
  L->dim = dim;
  L->sigma = 1.0 / sqrt((double)dim);
  if (kind == TQ_CODEBOOK_GAUSSIAN) {
    L->top = INFINITY;
  } else {
    L->top = 1.0;
    L->beta = 0.5 * ((double)dim - 1.0);
  }
}

/* Cell k (0-based) spans [t[k], t[k+1]]; t has K+1 entries. */
static void boundaries(const double *c, uint32_t K, const law *L, double *t) {
  t[0] = 0.0;
  for (uint32_t k = 1; k < K; k++) t[k] = 0.5 * (c[k - 1] + c[k]);
  t[K] = L->top;
}

/* Conditional means and unnormalized masses of the K cells for the
 * boundaries t. */
static void cell_stats(const law *L, const double *t, uint32_t K, double *mean, double *mass) {
  for (uint32_t k = 0; k < K; k++) {
    double moment;
    cell_integrals(L, t[k], t[k + 1], &mass[k], &moment);
    double m = mass[k] > 0.0 ? moment / mass[k] : 0.5 * (t[k] + (k + 1 < K ? t[k + 1] : t[k]));
    /* Rounding can put a mean of a very thin cell a hair outside it. */
    if (m < t[k]) m = t[k];
    if (k + 1 < K && m > t[k + 1]) m = t[k + 1];
    mean[k] = m;
  }
}

/* Quantile of the companding law f^(1/3) restricted to t >= 0, at p in (0,1):
 * the point density of an asymptotically optimal quantizer. */
static double compand_quantile(const law *L, double p) {
  law C = *L;
  if (L->kind == TQ_CODEBOOK_GAUSSIAN) {
    C.sigma = L->sigma * sqrt(3.0);
  } else {
    /* f^(1/3) ~ (1-t^2)^((beta-1)/3): a law of the same family. */
    C.beta = (L->beta - 1.0) / 3.0 + 1.0;
  }
  double target = 0.5 * (1.0 - p); /* P(T > t) for the half-law at level p */
  double lo = 0.0, hi = L->kind == TQ_CODEBOOK_GAUSSIAN ? 40.0 * C.sigma : 1.0;
  for (int it = 0; it < 200; it++) {
    double mid = 0.5 * (lo + hi);
    if (upper_tail(&C, mid) > target) lo = mid;
    else hi = mid;
    if (hi - lo <= 1e-17) break;
  }
  return 0.5 * (lo + hi);
}

/* Solves the tridiagonal system (sub, diag, sup) x = rhs in place of rhs. */
static int tridiag_solve(double *sub, double *diag, double *sup, double *rhs, uint32_t n) {
  for (uint32_t i = 1; i < n; i++) {
    if (diag[i - 1] == 0.0) return -1;
    double w = sub[i] / diag[i - 1];
    diag[i] -= w * sup[i - 1];
    rhs[i] -= w * rhs[i - 1];
  }
  if (diag[n - 1] == 0.0) return -1;
  rhs[n - 1] /= diag[n - 1];
  for (uint32_t i = n - 1; i-- > 0;) rhs[i] = (rhs[i] - sup[i] * rhs[i + 1]) / diag[i];
  return 0;
}

#define TQ_KMAX 128 /* 2^(TQ_MAX_BITS - 1) */

static double max_residual(const law *L, const double *c, uint32_t K, double *g) {
  double t[TQ_KMAX + 1], mean[TQ_KMAX], mass[TQ_KMAX];
  boundaries(c, K, L, t);
  cell_stats(L, t, K, mean, mass);
  double worst = 0.0;
  for (uint32_t k = 0; k < K; k++) {
    g[k] = mean[k] - c[k];
    if (fabs(g[k]) > worst) worst = fabs(g[k]);
  }
  return worst;
}

static int valid_centroids(const law *L, const double *c, uint32_t K) {
  if (!(c[0] > 0.0)) return 0;
  for (uint32_t k = 1; k < K; k++)
    if (!(c[k] > c[k - 1])) return 0;
  return c[K - 1] < L->top;
}

/* Positive half of the Lloyd-Max quantizer: c[0..K-1] ascending. */
static tq_status solve_half(const law *L, uint32_t K, double *c) {
  double t[TQ_KMAX + 1], mean[TQ_KMAX], mass[TQ_KMAX], g[TQ_KMAX];
  double sub[TQ_KMAX], diag[TQ_KMAX], sup[TQ_KMAX], step[TQ_KMAX], trial[TQ_KMAX];
  if (K == 1) {
    t[0] = 0.0;
    t[1] = L->top;
    cell_stats(L, t, 1, mean, mass);
    c[0] = mean[0];
    return TQ_OK;
  }
  for (uint32_t k = 0; k < K; k++) c[k] = compand_quantile(L, ((double)k + 0.5) / (double)K);
  for (int it = 0; it < 8; it++) {
    boundaries(c, K, L, t);
    cell_stats(L, t, K, mean, mass);
    memcpy(c, mean, K * sizeof *c);
  }
  const double tol = 1e-14 * L->sigma;
  double res = max_residual(L, c, K, g);
  for (int it = 0; it < 200 && res > tol; it++) {
    boundaries(c, K, L, t);
    cell_stats(L, t, K, mean, mass);
    /* Jacobian of g_k = m_k(t_k, t_{k+1}) - c_k. dm/d(lower) and dm/d(upper). */
    for (uint32_t k = 0; k < K; k++) {
      double lower = 0.0, upper = 0.0;
      if (mass[k] > 0.0) {
        if (k > 0) lower = density(L, t[k]) * (mean[k] - t[k]) / mass[k];
        if (k + 1 < K) upper = density(L, t[k + 1]) * (t[k + 1] - mean[k]) / mass[k];
      }
      sub[k] = 0.5 * lower;
      sup[k] = 0.5 * upper;
      diag[k] = 0.5 * lower + 0.5 * upper - 1.0;
      step[k] = -(mean[k] - c[k]);
    }
    if (tridiag_solve(sub, diag, sup, step, K) != 0) break;
    /* Damped step: keep the centroids ordered and the residual falling. */
    double lambda = 1.0;
    int accepted = 0;
    for (int half = 0; half < 40; half++) {
      for (uint32_t k = 0; k < K; k++) trial[k] = c[k] + lambda * step[k];
      if (valid_centroids(L, trial, K)) {
        double r = max_residual(L, trial, K, g);
        if (r < res || r <= tol) {
          memcpy(c, trial, K * sizeof *c);
          res = r;
          accepted = 1;
          break;
        }
      }
      lambda *= 0.5;
    }
    if (!accepted) {
      /* Fall back to a plain Lloyd step, which never increases distortion. */
      boundaries(c, K, L, t);
      cell_stats(L, t, K, mean, mass);
      memcpy(c, mean, K * sizeof *c);
      double r = max_residual(L, c, K, g);
      if (!(r < res)) break;
      res = r;
    }
  }
  return res <= 1e-12 * L->sigma ? TQ_OK : TQ_ERR_NO_CONVERGENCE;
}

/* Distortion E||u - Q(u)||^2 = dim * (E[T^2] - sum over all cells of P c^2),
 * E[T^2] = 1/dim, valid at a fixed point (centroids are conditional means). */
static double half_distortion(const law *L, const double *c, uint32_t K) {
  double t[TQ_KMAX + 1], mean[TQ_KMAX], mass[TQ_KMAX];
  boundaries(c, K, L, t);
  cell_stats(L, t, K, mean, mass);
  double s = 0.0, total = 0.0;
  for (uint32_t k = 0; k < K; k++) {
    s += mass[k] * c[k] * c[k];
    total += mass[k];
  }
  /* Each half holds probability 1/2: P_k = mass_k / (2 total). */
  return 1.0 - (double)L->dim * s / total;
}

static tq_status check_args(uint32_t dim, uint32_t bits, tq_codebook_kind kind, const void *p) {
  if (!p) return TQ_ERR_INVALID_ARGUMENT;
  if (kind != TQ_CODEBOOK_EXACT && kind != TQ_CODEBOOK_GAUSSIAN) return TQ_ERR_INVALID_ARGUMENT;
  if (dim < TQ_MIN_DIM || dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  if (bits < TQ_MIN_BITS || bits > TQ_MAX_BITS) return TQ_ERR_UNSUPPORTED_BITS;
  return TQ_OK;
}

tq_status tq_codebook_solve(uint32_t dim, uint32_t bits, tq_codebook_kind kind,
                            double *centroids, double *distortion) {
  tq_status st = check_args(dim, bits, kind, centroids);
  if (st != TQ_OK) return st;
  law L;
  law_init(&L, kind, dim);
  uint32_t K = 1u << (bits - 1);
  double c[TQ_KMAX];
  st = solve_half(&L, K, c);
  if (st != TQ_OK) return st;
  for (uint32_t k = 0; k < K; k++) {
    centroids[K + k] = c[k];
    centroids[K - 1 - k] = -c[k];
  }
  if (distortion) *distortion = half_distortion(&L, c, K);
  return TQ_OK;
}

static const tq_codebook_table *find_table(uint32_t dim, uint32_t bits) {
  for (uint32_t i = 0; i < tq_codebook_table_count; i++)
    if (tq_codebook_tables[i].dim == dim && tq_codebook_tables[i].bits == bits)
      return &tq_codebook_tables[i];
  return NULL;
}

int tq_codebook_is_tabulated(uint32_t dim, uint32_t bits, tq_codebook_kind kind) {
  if (check_args(dim, bits, kind, "") != TQ_OK) return 0;
  if (kind == TQ_CODEBOOK_GAUSSIAN) return 1;
  return find_table(dim, bits) != NULL;
}

tq_status tq_codebook_get(uint32_t dim, uint32_t bits, tq_codebook_kind kind,
                          float *centroids) {
  tq_status st = check_args(dim, bits, kind, centroids);
  if (st != TQ_OK) return st;
  uint32_t K = 1u << (bits - 1);
  if (kind == TQ_CODEBOOK_GAUSSIAN) {
    const double *unit = tq_codebook_gauss_unit + (K - 1); /* offsets 0,1,3,7,... */
    double sigma = 1.0 / sqrt((double)dim);
    for (uint32_t k = 0; k < K; k++) {
      float v = (float)(unit[k] * sigma);
      centroids[K + k] = v;
      centroids[K - 1 - k] = -v;
    }
    return TQ_OK;
  }
  const tq_codebook_table *tab = find_table(dim, bits);
  if (tab) {
    for (uint32_t k = 0; k < K; k++) {
      centroids[K + k] = tab->half[k];
      centroids[K - 1 - k] = -tab->half[k];
    }
    return TQ_OK;
  }
  double c[2 * TQ_KMAX];
  st = tq_codebook_solve(dim, bits, kind, c, NULL);
  if (st != TQ_OK) return st;
  for (uint32_t i = 0; i < 2 * K; i++) centroids[i] = (float)c[i];
  return TQ_OK;
}

double tq_distortion_upper_bound(uint32_t bits) {
  if (bits < TQ_MIN_BITS || bits > TQ_MAX_BITS) return 0.0;
  return sqrt(3.0) * TQ_PI / 2.0 * ldexp(1.0, -2 * (int)bits);
}

double tq_distortion_lower_bound(uint32_t bits) {
  if (bits < TQ_MIN_BITS || bits > TQ_MAX_BITS) return 0.0;
  return ldexp(1.0, -2 * (int)bits);
}
