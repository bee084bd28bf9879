/* The elementwise arithmetic of a mean-field Gaussian posterior (engine/bayes.py, `_Posterior`), one pass over
 * the weights each way, for float32 on the CPU. engine/posterior_kernel.py compiles this with the system's C
 * compiler at first use and falls back to the same arithmetic in PyTorch ops when it cannot.
 *
 * Why C: eager PyTorch runs softplus, the KL and their gradient as ~15 passes over every weight (each op reads
 * and writes weight-sized tensors); here each weight is read once per pass, with glibc's vectorised exp, log1p
 * and log (libmvec, enabled by -ffast-math). Per weight i, alive = (mu != 0), a pruned weight (mu = 0) has no
 * variance and no KL term:
 *   sigma = softplus(rho), as max(log1p(exp(clamp(rho, floor, 80))), rho) (engine.bayes._softplus)
 *   s = alive * sigma;  std = s^2 (local reparameterisation) or s
 *   KL = sum(mu^2 + s^2) / (2 prior^2) - sum(alive * log sigma) + n_alive (log prior - 1/2)
 * and backward, with g the std's incoming gradient and k the KL's:
 *   d sigma = k (s / prior^2 - alive / sigma) + (2 s or alive) g;  d rho = sigmoid(rho) d sigma
 * A NaN rho gives NaN sigma and gradients, as PyTorch's ops do.
 *   d mu = (mu's incoming gradient) + k mu / prior^2
 * The sums are accumulated in float over blocks of 512 weights, then in double; every weight takes the same
 * instructions wherever it lies (below), so results do not depend on where the tensors were allocated. */
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

static long load(float *to, const float *from, long a, long n, float pad) {
  long m = n - a < BLOCK ? n - a : BLOCK;
  memcpy(to, from + a, m * sizeof(float));
  for (long i = m; i < BLOCK; i++)
    to[i] = pad;
  return m;
}

/* One block of the forward pass: sigma and std of BLOCK weights, their three sums added into `sums` (float).
 * restrict, and not inlined: so gcc vectorises it whole (with the loops written out in the caller it did not). */
__attribute__((noinline)) static void forward_block(const float *restrict r, const float *restrict u,
                                                    float *restrict sg, float *restrict sd, float *restrict lg,
                                                    int square, float floor_, float *restrict sums) {
  for (long i = 0; i < BLOCK; i++) {
    float c = r[i] < floor_ ? floor_ : (r[i] > 80.f ? 80.f : r[i]);
    float sp = log1pf(expf(c));
    sp = sp > r[i] ? sp : r[i];
    sp = is_nan(r[i]) ? r[i] : sp;
    sg[i] = sp;
    lg[i] = logf(sp);
  }
  float sq = 0, lgs = 0, count = 0;
  for (long i = 0; i < BLOCK; i++) {
    float alive = u[i] != 0.f ? 1.f : 0.f;
    float s = sg[i] * alive;
    sd[i] = square ? s * s : s;
    sq += u[i] * u[i] + s * s;
    lgs += alive * lg[i];
    count += alive;
  }
  sums[0] = sq;
  sums[1] = lgs;
  sums[2] = count;
}

void lte_posterior_forward(long n, const float *rho, const float *mu, float *sigma, float *std, int square,
                           float floor_, double *sums) {
  double squares = 0, logs = 0, alive_count = 0;
  float r[BLOCK] ALIGNED, u[BLOCK] ALIGNED, sg[BLOCK] ALIGNED, sd[BLOCK] ALIGNED, lg[BLOCK] ALIGNED, part[3];
  for (long a = 0; a < n; a += BLOCK) {
    if (n - a >= BLOCK) {  /* a whole block: straight from and into the arrays */
      forward_block(rho + a, mu + a, sigma + a, std + a, lg, square, floor_, part);
    } else {  /* the last, padded */
      long m = load(r, rho, a, n, 0.f);
      load(u, mu, a, n, 0.f);
      forward_block(r, u, sg, sd, lg, square, floor_, part);
      memcpy(sigma + a, sg, m * sizeof(float));
      memcpy(std + a, sd, m * sizeof(float));
    }
    squares += part[0];
    logs += part[1];
    alive_count += part[2];
  }
  sums[0] += squares;
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

/* g_std may be NULL (the std got no gradient), and may be d_rho itself (written in place); g_mu may be NULL
 * (taken as 0) or d_mu itself; d_mu NULL: mu's gradient is not wanted. (In place passes `backward_block` the same
 * array as an input and an output despite restrict: it reads and writes each entry at its own index only, so no
 * order of its loads and stores can read a written entry.) */
void lte_posterior_backward(long n, const float *rho, const float *mu, const float *sigma, const float *g_std,
                            float *d_rho, const float *g_mu, float *d_mu, int square, float floor_, float k,
                            float inv_var) {
  static const float zeros[BLOCK];
  float r[BLOCK] ALIGNED, u[BLOCK] ALIGNED, sg[BLOCK] ALIGNED, gs[BLOCK] ALIGNED, gm[BLOCK] ALIGNED,
      dr[BLOCK] ALIGNED, dm[BLOCK] ALIGNED;
  for (long a = 0; a < n; a += BLOCK) {
    if (n - a >= BLOCK) {  /* a whole block: straight from and into the arrays */
      backward_block(rho + a, mu + a, sigma + a, g_std ? g_std + a : zeros, g_mu ? g_mu + a : zeros, d_rho + a,
                     d_mu ? d_mu + a : dm, square, floor_, k, inv_var);
      continue;
    }
    long m = load(r, rho, a, n, 0.f);  /* the last, padded */
    load(u, mu, a, n, 0.f);
    load(sg, sigma, a, n, 1.f);
    if (g_std)
      load(gs, g_std, a, n, 0.f);
    else
      memset(gs, 0, sizeof gs);
    if (g_mu)
      load(gm, g_mu, a, n, 0.f);
    else
      memset(gm, 0, sizeof gm);
    backward_block(r, u, sg, gs, gm, dr, dm, square, floor_, k, inv_var);
    memcpy(d_rho + a, dr, m * sizeof(float));
    if (d_mu)
      memcpy(d_mu + a, dm, m * sizeof(float));
  }
}
