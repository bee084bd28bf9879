/* The elementwise arithmetic of a mean-field Gaussian posterior (engine/bayes.py, `_Posterior`), one pass over
 * the weights each way, for float32 on the CPU. engine/posterior_kernel.py compiles this with the system's C
 * compiler at first use and falls back to the same arithmetic in PyTorch ops when it cannot.
 *
 * Why C: eager PyTorch runs softplus, the KL and their gradient as ~15 passes over every weight (each op reads
 * and writes weight-sized tensors); here each weight is read once per pass, with glibc's vectorised exp and log
 * (libmvec, enabled by -ffast-math). Per weight i, alive = (mu != 0), a pruned weight (mu = 0) has no variance
 * and no KL term:
 *   sigma = softplus(rho), as max(softplus(clamp(rho, floor, 80)), rho) (engine.bayes._softplus), softplus(c) =
 *   max(c, 0) + log1p(exp(-|c|)), log1p(t) for t in (0, 1] by its series 2 atanh(t / (2 + t)) to the 13th power
 *   (truncated at ~1e-8 relative; within 4e-7 of softplus in double, PyTorch's within 1.2e-7): ~1.3x faster than
 *   libmvec's log1p, whose exactness -ffast-math does not let a shorter formula keep (log(1 + t) plus the
 *   rounding of 1 + t: gcc cancels the correction)
 *   s = alive * sigma;  std = s^2 (local reparameterisation) or s
 *   KL = sum(mu^2 + s^2) / (2 prior^2) - sum(alive * log sigma) + n_alive (log prior - 1/2)
 * and backward, with g the std's incoming gradient and k the KL's:
 *   d sigma = k (s / prior^2 - alive / sigma) + (2 s or alive) g;  d rho = sigmoid(rho) d sigma
 * A NaN rho gives NaN sigma and gradients, as PyTorch's ops do (a pruned weight's rho, NaN or not, adds nothing
 * to the KL here, where PyTorch's 0 * NaN made it NaN).
 *   d mu = (mu's incoming gradient) + k mu / prior^2
 * The sums are accumulated in float over blocks of 512 weights, then in double; every weight takes the same
 * instructions wherever it lies (below), so its results do not depend on where the tensors were allocated, and
 * a run repeats bit for bit (the sums depend, to float rounding, on the number of threads a large call is cut
 * into). */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* -ffast-math lets gcc assume no NaN: a NaN rho is told by its bits, so that it gives a NaN sigma as PyTorch's ops
 * do (the clamp alone would turn it into the floor and hide a diverged training). */
static inline int is_nan(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7fffffffu) > 0x7f800000u;
}

/* A block of weights at a time (the last one copied into local arrays and padded with pruned weights: mu = 0,
 * rho = 0, sigma = 1, which add nothing), so that every weight goes through the same vector code whatever the
 * array's length: the loops over a block have a fixed trip count, a multiple of any vector's width, so gcc needs no
 * scalar epilogue, whose scalar expf/logf round differently from glibc's vector ones (a weight's result would
 * depend on where it lies: a ticket's compact weights against the dense net's), and a block's sums add up in one
 * fixed order.
 * The loop calling exp/log keeps no running sums: the vector calls clobber every vector register, so sums would
 * be spilled around each call (~1.3x slower); a second loop, with no calls, adds them up (in float over the
 * block, then in double). */
#define BLOCK 512
#define ALIGNED __attribute__((aligned(64)))

/* One block of the forward pass: sigma and the std of BLOCK weights, and their sums (float): sum mu^2 + s^2,
 * sum alive * log sigma as sums[1] + sums[3] log 2, and the number alive (sums[2]).
 * The log sum without a log per weight (which cost a sixth of the pass, bench/bayes_speed.py's 784 inputs):
 * sigma = m 2^e with m in [1, 2), read from its bits (sigma is a normal float: softplus is floored above the
 * smallest one), so sum log sigma = log(product of the m) + (sum of the e) log 2. The products are kept in LANES
 * running products of BLOCK / LANES mantissas each (below 2^32: no overflow), one log each at the end; a fixed
 * number, whatever the vector width, so the sums do not depend on the CPU's.
 * restrict, and not inlined: so gcc vectorises it whole (with the loops written out in the caller it did not). */
#define LANES 16
__attribute__((noinline)) static void forward_block(const float *restrict r, const float *restrict u,
                                                    float *restrict sg, float *restrict sd, int square, float floor_,
                                                    float *restrict sums) {
  for (long i = 0; i < BLOCK; i++) {
    float c = r[i] < floor_ ? floor_ : (r[i] > 80.f ? 80.f : r[i]);
    float t = expf(-fabsf(c)), q = t / (2.f + t), z = q * q;  /* log1p(t) = 2 atanh(q), q <= 1/3 */
    float p = 1.f + z * (1.f / 3 + z * (1.f / 5 + z * (1.f / 7 + z * (1.f / 9 + z * (1.f / 11 + z * (1.f / 13))))));
    float sp = fmaxf(c, 0.f) + 2.f * q * p;
    sp = sp > r[i] ? sp : r[i];
    sg[i] = is_nan(r[i]) ? r[i] : sp;
  }
  float sq = 0, count = 0, exponents = 0, products[LANES];
  for (long l = 0; l < LANES; l++)
    products[l] = 1.f;
  for (long j = 0; j < BLOCK; j += LANES) {
    for (long l = 0; l < LANES; l++) {
      long i = j + l;
      float alive = u[i] != 0.f ? 1.f : 0.f;
      float s = sg[i] * alive;
      sd[i] = square ? s * s : s;
      sq += u[i] * u[i] + s * s;
      count += alive;
      uint32_t bits, mantissa_bits;
      float mantissa;
      memcpy(&bits, &sg[i], sizeof bits);
      mantissa_bits = (bits & 0x007fffffu) | 0x3f800000u;
      memcpy(&mantissa, &mantissa_bits, sizeof mantissa);
      products[l] *= alive != 0.f ? mantissa : 1.f;
      exponents += alive * (float)((int)((bits >> 23) & 0xffu) - 127);
    }
  }
  float logs = 0;
  for (long l = 0; l < LANES; l++)
    logs += logf(products[l]);
  sums[0] = sq;
  sums[1] = logs;
  sums[2] = count;
  sums[3] = exponents;
}

/* A block's input: straight from the array where the block is whole and in place (no index), else copied into
 * `local` (gathered through `idx` where given) and padded with `pad`; NULL (no such input) reads as zeros. */
static const float *in_block(const float *from, const int32_t *idx, long a, long m, float *local, float pad) {
  static const float zeros[BLOCK];
  if (!from)
    return zeros;
  if (!idx && m == BLOCK)
    return from + a;
  for (long i = 0; i < m; i++)
    local[i] = from[idx ? idx[a + i] : a + i];
  for (long i = m; i < BLOCK; i++)
    local[i] = pad;
  return local;
}

/* Where a block's output goes: straight into the array where the block is whole and in place, else into `local`,
 * which `put_block` then writes out (scattered through `idx` where given); NULL: not wanted. */
static float *out_block(float *to, const int32_t *idx, long m, float *local, long a) {
  return to && !idx && m == BLOCK ? to + a : local;
}

static void put_block(float *to, const int32_t *idx, long a, long m, const float *local, const float *used) {
  if (!to || used != local)
    return;
  for (long i = 0; i < m; i++)
    to[idx ? idx[a + i] : a + i] = local[i];
}

/* The layers of one call, laid end to end: layer l has counts[l] weights (all of its weights, or on a ticket's
 * compact support the kept ones), and table[c * nl + l] its arrays (column by column: the caller fills a column
 * in one go). rho, sigma and d_rho are indexed by that
 * position j; the weight-shaped ones (mu, the std, their gradients) at idx[j] (the kept weight's flat index in
 * its layer), or at j where idx is NULL (all of its weights). A piece computes positions [a, z) of the whole, so
 * that a large layer is cut into pieces run on several threads; blocks start at a layer's start or a piece's. */
enum { RHO, SIGMA, MU, STD, G_STD, D_RHO, G_MU, D_MU, IDX, COLUMNS };

#define EACH_BLOCK(...)                                                                                        \
  for (long l = 0, start = 0; l < nl; start += counts[l], l++) {                                               \
    long from = a > start ? a - start : 0, to = z < start + counts[l] ? z - start : counts[l];              \
    void *t[COLUMNS];                                                                                          \
    for (int c = 0; c < COLUMNS; c++)                                                                          \
      t[c] = table[c * nl + l];                                                                                \
    const int32_t *idx = t[IDX];                                                                               \
    int square = squares[l];                                                                                   \
    for (long b = from; b < to; b += BLOCK) {                                                                  \
      long m = to - b < BLOCK ? to - b : BLOCK;                                                                \
      __VA_ARGS__                                                                                              \
    }                                                                                                          \
  }

/* A call's positions [0, n) in k pieces, piece i from cut(i) to cut(i + 1), each start a multiple of `align`
 * (k threads of torch's OpenMP pool run them: -fopenmp, the runtime torch itself loads; built without it, one
 * thread runs them in turn, with the same results). */
static long cut(long i, long n, long k, long align) { return i == k ? n : i * n / k / align * align; }

/* One piece runs on the calling thread with no OpenMP region (a training step's usual case: ~1 us saved a call). */
#define PIECES(pieces, body)                                                                                   \
  if (pieces == 1) {                                                                                           \
    long i = 0;                                                                                                \
    body                                                                                                       \
  } else {                                                                                                     \
    _Pragma("omp parallel for num_threads(pieces) schedule(static, 1)")                                       \
    for (long i = 0; i < pieces; i++) {                                                                        \
      body                                                                                                     \
    }                                                                                                          \
  }

/* sigma and the std (t[RHO] -> t[SIGMA], t[STD]) of positions [a, z), the KL's three sums added into `sums`. */
static void forward_piece(long a, long z, long nl, const long *counts, void *const *table, const int *squares,
                          float floor_, double *sums) {
  double squares_sum = 0, logs = 0, alive_count = 0;
  float r[BLOCK] ALIGNED, u[BLOCK] ALIGNED, sg[BLOCK] ALIGNED, sd[BLOCK] ALIGNED, part[4];
  EACH_BLOCK({
    float *sigma_out = out_block(t[SIGMA], NULL, m, sg, b), *std_out = out_block(t[STD], idx, m, sd, b);
    forward_block(in_block(t[RHO], NULL, b, m, r, 0.f), in_block(t[MU], idx, b, m, u, 0.f), sigma_out, std_out,
                  square, floor_, part);
    put_block(t[SIGMA], NULL, b, m, sg, sigma_out);
    put_block(t[STD], idx, b, m, sd, std_out);
    squares_sum += part[0];
    logs += part[1] + part[3] * 0.69314718055994530942;  /* (log 2) */
    alive_count += part[2];
  })
  sums[0] += squares_sum;
  sums[1] += logs;
  sums[2] += alive_count;
}

/* One block of the backward pass (restrict: with the loop written out in `lte_posterior_backward` gcc did not
 * vectorise it, nor inlined). */
__attribute__((noinline)) static void backward_block(const float *restrict r, const float *restrict u,
                                                     const float *restrict sg, const float *restrict gs,
                                                     const float *restrict gm, float *restrict dr,
                                                     float *restrict dm, int square, float floor_, float k,
                                                     float inv_var) {
  for (long i = 0; i < BLOCK; i++) {
    float alive = u[i] != 0.f ? 1.f : 0.f;
    float s = sg[i] * alive;
    float d_sigma = k * (s * inv_var - alive / sg[i]) + (square ? 2.f * s : alive) * gs[i];
    /* sigmoid(rho) with rho floored as sigma's softplus floors it: unfloored, a vector division (a reciprocal
     * under -ffast-math) by an infinite 1 + exp(-rho) gives NaN where sigmoid underflows (rho < -88) */
    dr[i] = d_sigma / (1.f + expf(-fmaxf(r[i], floor_)));
    dm[i] = gm[i] + k * inv_var * u[i];
  }
}

/* d_rho and d_mu of positions [a, z) from rho, sigma, mu and the incoming gradients g_std and g_mu. g_std may be
 * NULL (the std got no gradient), and may be d_rho itself (written in place); g_mu may be NULL (taken as 0) or
 * d_mu itself; d_mu NULL: mu's gradient is not wanted. On a compact support (idx given) d_mu is written at the kept
 * weights only: elsewhere mu is 0, so it keeps g_mu's value. (In place passes `backward_block` the same array as
 * an input and an output despite restrict: it reads and writes each entry at its own index only, so no order of
 * its loads and stores can read a written entry.) */
static void backward_piece(long a, long z, long nl, const long *counts, void *const *table, const int *squares,
                           float floor_, float k, float inv_var) {
  float r[BLOCK] ALIGNED, u[BLOCK] ALIGNED, sg[BLOCK] ALIGNED, gs[BLOCK] ALIGNED, gm[BLOCK] ALIGNED,
      dr[BLOCK] ALIGNED, dm[BLOCK] ALIGNED;
  EACH_BLOCK({
    float *d_rho = out_block(t[D_RHO], NULL, m, dr, b), *d_mu = out_block(t[D_MU], idx, m, dm, b);
    backward_block(in_block(t[RHO], NULL, b, m, r, 0.f), in_block(t[MU], idx, b, m, u, 0.f),
                   in_block(t[SIGMA], NULL, b, m, sg, 1.f), in_block(t[G_STD], idx, b, m, gs, 0.f),
                   in_block(t[G_MU], idx, b, m, gm, 0.f), d_rho, d_mu, square, floor_, k, inv_var);
    put_block(t[D_RHO], NULL, b, m, dr, d_rho);
    put_block(t[D_MU], idx, b, m, dm, d_mu);
  })
}

/* The forward pass over positions [0, n) in `pieces` pieces, piece i's three sums in sums[3 i, 3 i + 3) (added
 * up by the caller in order: the same sums however the threads ran). */
void lte_posterior_forward(long n, long pieces, long nl, const long *counts, void *const *table, const int *squares,
                           float floor_, double *sums) {
  PIECES(pieces, {
    forward_piece(cut(i, n, pieces, 1), cut(i + 1, n, pieces, 1), nl, counts, table, squares, floor_, sums + 3 * i);
  })
}

void lte_posterior_backward(long n, long pieces, long nl, const long *counts, void *const *table,
                            const int *squares, float floor_, float k, float inv_var) {
  PIECES(pieces, {
    backward_piece(cut(i, n, pieces, 1), cut(i + 1, n, pieces, 1), nl, counts, table, squares, floor_, k, inv_var);
  })
}

/* Standard normal noise, the samples' epsilon (engine.bayes, `BayesLayer._eps`): glibc has no vector generator
 * and torch's CPU one (a Mersenne Twister, one 32-bit draw at a time) cost ~2.3 ns a number, a sixth of a
 * Bayesian step of lenet300 on digits (bench/bayes_speed.py). Philox4x32-10 (Salmon et al. 2011, the counter-based
 * generator of cuRAND, JAX and NumPy) turns a 64-bit key and a counter into four 32-bit words with no state, so
 * a block of counters runs as vector code and any piece of the output can be computed on its own (the numbers do
 * not depend on how a large call is cut into threads). Each word pair (a, b) gives two normals by Box-Muller:
 * u = (a >> 8) + 1 over 2^24 in (0, 1], v = (b >> 8) / 2^24, r = sqrt(-2 log u): r cos(2 pi v), r sin(2 pi v)
 * (24 bits, as torch's float normals: |n| <= 5.77). Normal j of a block of NORMALS is word j / 64 (the pair's
 * cosine, sine; the second pair's) of counter start + j % 64: the output is laid out a word at a time. */
#define COUNTERS 64
#define NORMALS (4 * COUNTERS)

__attribute__((noinline)) static void normal_block(uint64_t start, uint32_t k0, uint32_t k1, float *restrict out) {
  uint32_t x0[COUNTERS] ALIGNED, x1[COUNTERS] ALIGNED, x2[COUNTERS] ALIGNED, x3[COUNTERS] ALIGNED;
  for (long l = 0; l < COUNTERS; l++) {
    x0[l] = (uint32_t)(start + l);
    x1[l] = (uint32_t)((start + l) >> 32);
    x2[l] = x3[l] = 0;
  }
  for (int round = 0; round < 10; round++) {
    for (long l = 0; l < COUNTERS; l++) {
      uint64_t p0 = (uint64_t)0xD2511F53u * x0[l], p1 = (uint64_t)0xCD9E8D57u * x2[l];
      uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1[l] ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x3[l] ^ k1;
      x1[l] = (uint32_t)p1;
      x3[l] = (uint32_t)p0;
      x0[l] = y0;
      x2[l] = y2;
    }
    k0 += 0x9E3779B9u;  /* the key schedule (Weyl sequence) */
    k1 += 0xBB67AE85u;
  }
  /* radii and angles first, then cosines, then sines: in one loop gcc makes one scalar sincosf of the pair, which
   * has no vector version (the whole loop stayed scalar, ~3x slower) */
  const float step = 1.f / 16777216.f, two_pi = 6.28318530717958647692f;
  float r[2 * COUNTERS] ALIGNED, t[2 * COUNTERS] ALIGNED;
  for (long l = 0; l < COUNTERS; l++) {
    r[l] = sqrtf(-2.f * logf((float)((x0[l] >> 8) + 1) * step));
    t[l] = two_pi * (float)(x1[l] >> 8) * step;
    r[COUNTERS + l] = sqrtf(-2.f * logf((float)((x2[l] >> 8) + 1) * step));
    t[COUNTERS + l] = two_pi * (float)(x3[l] >> 8) * step;
  }
  for (long l = 0; l < COUNTERS; l++) {
    out[l] = r[l] * cosf(t[l]);
    out[2 * COUNTERS + l] = r[COUNTERS + l] * cosf(t[COUNTERS + l]);
  }
  for (long l = 0; l < COUNTERS; l++) {
    out[COUNTERS + l] = r[l] * sinf(t[l]);
    out[3 * COUNTERS + l] = r[COUNTERS + l] * sinf(t[COUNTERS + l]);
  }
}

/* out[a, z) of the normals of `key` (a a multiple of NORMALS). */
static void normal_piece(float *out, long a, long z, uint64_t key) {
  float block[NORMALS] ALIGNED;
  for (long b = a; b < z; b += NORMALS) {
    long m = z - b < NORMALS ? z - b : NORMALS;
    normal_block((uint64_t)b / 4, (uint32_t)key, (uint32_t)(key >> 32), m == NORMALS ? out + b : block);
    if (m < NORMALS)
      memcpy(out + b, block, (size_t)m * sizeof(float));
  }
}

/* out[0, n) the normals of `key`, in `pieces` pieces. */
void lte_normal(float *out, long n, long pieces, uint64_t key) {
  PIECES(pieces, { normal_piece(out, cut(i, n, pieces, NORMALS), cut(i + 1, n, pieces, NORMALS), key); })
}

/* The noise of local reparameterisation (engine.bayes, `_LocalReparameterisation`), per pre-activation i, with
 * the normals of `key` as above (n_i): given w_i = 4 v_i (v: its variance), out_i += sqrt(w_i) n_i / 2 and
 * e_i = n_i / sqrt(w_i), d out / d v, kept for the backward pass. One pass where PyTorch ops made four (sqrt, the
 * normals, their product added, the quotient), each a few microseconds of dispatch on the batch-sized tensors of a
 * training step. Entries [a, z) (a a multiple of NORMALS). */
static void local_noise_piece(const float *w, float *out, float *e, long a, long z, uint64_t key) {
  float block[NORMALS] ALIGNED;
  for (long b = a; b < z; b += NORMALS) {
    long m = z - b < NORMALS ? z - b : NORMALS;
    normal_block((uint64_t)b / 4, (uint32_t)key, (uint32_t)(key >> 32), block);
    const float *restrict wb = w + b;
    float *restrict ob = out + b, *restrict eb = e + b;
    for (long j = 0; j < m; j++) {
      float s = sqrtf(wb[j]);
      ob[j] += 0.5f * s * block[j];
      eb[j] = block[j] / s;
    }
  }
}

/* out[0, n) and e[0, n), in `pieces` pieces. */
void lte_local_noise(const float *w, float *out, float *e, long n, long pieces, uint64_t key) {
  PIECES(pieces, { local_noise_piece(w, out, e, cut(i, n, pieces, NORMALS), cut(i + 1, n, pieces, NORMALS), key); })
}
