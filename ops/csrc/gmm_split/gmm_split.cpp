// A two-component 1-D Gaussian mixture fitted by EM per group, and which of the group's values
// fall in the component initialised at its minimum: the split of MOD's APS (Sec. 3.2.2) between
// a GT's positives and negatives. distill/models/assigners/batched_gmm.py has the definition
// (scikit-learn's EM with the published code's initialisation) and its batched PyTorch form;
// this is the same EM, one group per task: on the CPU the batched form is ~30 tiny tensor ops
// per iteration, each mostly dispatch overhead at APS's sizes (tens of groups of <= 18 values).
//
// Per group, in float64 as scikit-learn fits: weights 1/2, means at the min and max value,
// variances 1; each EM iteration computes the E-step with the current parameters (its mean
// log-likelihood is the convergence criterion), then the M-step; it stops once the
// log-likelihood changes by less than tol, or after max_iter iterations. The split is
// argmax_k of the weighted log densities with the final parameters (ties: the low component).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../parallel.h"

namespace distill {
namespace ops {
namespace {

struct Mixture {
  double mean[2], var[2], log_w[2];
  double log_norm[2];  // log w_k - log sqrt(2 pi var_k): once per parameter update, not per value

  void parameters_changed() {
    for (int k = 0; k < 2; ++k) {
      log_norm[k] = log_w[k] - 0.5 * (std::log(2.0 * M_PI) + std::log(var[k]));
    }
  }

  // log w_k + log N(x; mean_k, var_k)
  double weighted(int k, double x) const {
    const double d = x - mean[k];
    return log_norm[k] - 0.5 * d * d / var[k];
  }
};

// The low-component flags of one group's n values (n >= 2).
void fit_group(const double* x, int64_t n, int64_t max_iter, double tol, double reg_covar,
               char* low) {
  Mixture g;
  double lo = x[0], hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  g.mean[0] = lo;
  g.mean[1] = hi;
  g.var[0] = g.var[1] = 1.0;
  g.log_w[0] = g.log_w[1] = std::log(0.5);
  g.parameters_changed();
  // scikit-learn's guard on the component sums
  const double eps = 10 * std::numeric_limits<double>::epsilon();
  double lower_bound = -std::numeric_limits<double>::infinity();
  std::vector<double> resp(2 * n);
  for (int64_t it = 0; it < max_iter; ++it) {
    double bound = 0.0, nk[2] = {0.0, 0.0}, sx[2] = {0.0, 0.0};
    for (int64_t i = 0; i < n; ++i) {  // E-step
      const double w0 = g.weighted(0, x[i]), w1 = g.weighted(1, x[i]);
      const double top = std::max(w0, w1);
      const double norm = top + std::log(std::exp(w0 - top) + std::exp(w1 - top));
      bound += norm;
      resp[2 * i] = std::exp(w0 - norm);
      resp[2 * i + 1] = std::exp(w1 - norm);
    }
    bound /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {  // M-step: weights and means
      for (int k = 0; k < 2; ++k) {
        nk[k] += resp[2 * i + k];
        sx[k] += resp[2 * i + k] * x[i];
      }
    }
    for (int k = 0; k < 2; ++k) {
      nk[k] += eps;
      g.mean[k] = sx[k] / nk[k];
    }
    double sv[2] = {0.0, 0.0};  // variances about the new means
    for (int64_t i = 0; i < n; ++i) {
      for (int k = 0; k < 2; ++k) {
        const double d = x[i] - g.mean[k];
        sv[k] += resp[2 * i + k] * d * d;
      }
    }
    for (int k = 0; k < 2; ++k) {
      g.var[k] = sv[k] / nk[k] + reg_covar;
      g.log_w[k] = std::log(nk[k] / static_cast<double>(n));
    }
    g.parameters_changed();
    const bool converged = std::abs(bound - lower_bound) < tol;
    lower_bound = bound;
    if (converged) break;
  }
  for (int64_t i = 0; i < n; ++i) low[i] = g.weighted(0, x[i]) >= g.weighted(1, x[i]);
}

at::Tensor gmm_split_cpu(const at::Tensor& scores, const at::Tensor& valid, int64_t max_iter,
                         double tol, double reg_covar) {
  TORCH_CHECK(scores.dim() == 2 && valid.sizes() == scores.sizes(),
              "gmm_split: scores and valid must both be (groups, values), got ", scores.sizes(),
              " and ", valid.sizes());
  TORCH_CHECK(scores.scalar_type() == at::kDouble && valid.scalar_type() == at::kBool,
              "gmm_split: float64 scores and bool valid, got ", scores.scalar_type(), " and ",
              valid.scalar_type());
  const at::Tensor x = scores.contiguous(), v = valid.contiguous();
  const int64_t groups = x.size(0), m = x.size(1);
  at::Tensor out = at::zeros({groups, m}, v.options());
  const double* px = x.data_ptr<double>();
  const bool* pv = v.data_ptr<bool>();
  bool* po = out.data_ptr<bool>();
  // an EM iteration costs about 20 operations per value; most groups stop after a few
  balanced_for(groups, 8, 20 * m * std::min<int64_t>(max_iter, 10), [&](int64_t begin,
                                                                         int64_t end) {
    std::vector<double> values(m);  // one group's valid values, in order
    std::vector<int64_t> where(m);  // and their columns
    std::vector<char> low(m);
    for (int64_t gi = begin; gi < end; ++gi) {
      int64_t n = 0;
      for (int64_t j = 0; j < m; ++j) {
        if (pv[gi * m + j]) {
          values[n] = px[gi * m + j];
          where[n++] = j;
        }
      }
      if (n == 1) po[gi * m + where[0]] = true;  // one candidate: kept
      if (n < 2) continue;
      fit_group(values.data(), n, max_iter, tol, reg_covar, low.data());
      for (int64_t i = 0; i < n; ++i) po[gi * m + where[i]] = low[i] != 0;
    }
  });
  return out;
}

}  // namespace
}  // namespace ops
}  // namespace distill

TORCH_LIBRARY_FRAGMENT(distill, m) {
  m.def(
      "gmm_split(Tensor scores, Tensor valid, int max_iter, float tol, float reg_covar) -> "
      "Tensor");
}

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("gmm_split", &distill::ops::gmm_split_cpu);
}
