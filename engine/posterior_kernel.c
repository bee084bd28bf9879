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
 *   d mu = (mu's incoming gradient) + k mu / prior^2
 * The sums are accumulated in float over blocks of 512 weights, then in double. */
#include <math.h>

/* A block of weights at a time: the vector exp/log calls clobber every vector register, so the loop that calls
 * them keeps no running sums (they would be spilled around each call: ~1.3x slower); a second loop over the block,
 * with no calls, adds them up (in float over the block, then in double). */
#define BLOCK 512

void lte_posterior_forward(long n, const float *rho, const float *mu, float *sigma, float *std, int square,
                           float floor_, double *sums) {
  double squares = 0, logs = 0, alive_count = 0;
  float log_sigma[BLOCK];
  for (long a = 0; a < n; a += BLOCK) {
    long m = n - a < BLOCK ? n - a : BLOCK;
    const float *r = rho + a, *u = mu + a;
    float *sg = sigma + a, *sd = std + a;
    _Pragma("GCC ivdep") for (long i = 0; i < m; i++) {
      float c = r[i] < floor_ ? floor_ : (r[i] > 80.f ? 80.f : r[i]);
      float sp = log1pf(expf(c));
      sp = sp > r[i] ? sp : r[i];
      sg[i] = sp;
      log_sigma[i] = logf(sp);
    }
    float sq = 0, lg = 0, count = 0;
    _Pragma("GCC ivdep") for (long i = 0; i < m; i++) {
      float alive = u[i] != 0.f ? 1.f : 0.f;
      float s = sg[i] * alive;
      sd[i] = square ? s * s : s;
      sq += u[i] * u[i] + s * s;
      lg += alive * log_sigma[i];
      count += alive;
    }
    squares += sq;
    logs += lg;
    alive_count += count;
  }
  sums[0] += squares;
  sums[1] += logs;
  sums[2] += alive_count;
}

/* g_std may be NULL (the std got no gradient), and may be d_rho itself (written in place); g_mu may be NULL
 * (taken as 0) or d_mu itself; d_mu NULL: mu's gradient is not wanted. ivdep: every entry is read before it is
 * written, so in-place is safe; without it gcc's overlap check sends in-place calls to a scalar loop (~8x slower). */
void lte_posterior_backward(long n, const float *rho, const float *mu, const float *sigma, const float *g_std,
                            float *d_rho, const float *g_mu, float *d_mu, int square, float k, float inv_var) {
  _Pragma("GCC ivdep") for (long i = 0; i < n; i++) {
    float alive = mu[i] != 0.f ? 1.f : 0.f;
    float s = sigma[i] * alive;
    float d_sigma = k * (s * inv_var - alive / sigma[i]);
    if (g_std)
      d_sigma += (square ? 2.f * s : alive) * g_std[i];
    d_rho[i] = d_sigma / (1.f + expf(-rho[i]));
    if (d_mu)
      d_mu[i] = (g_mu ? g_mu[i] : 0.f) + k * inv_var * mu[i];
  }
}
