// The forward step of nets.PerParameterMLP on one parameter tensor as one op.
//
// TensorFlow runs the reference step (nets/mlp_rule.py: `tensor_features`, `mlp_update`) as
// ~60 element-wise ops and three small matmuls per tensor, each a pass over memory with its
// intermediates ([n, 9] features, [n, 8] hidden layers) written out and read back. This op reads
// the gradient, the parameter and the statistics once for the reductions and once for the rest,
// and writes the update and the new statistics; every per-coordinate intermediate stays in
// registers:
//
//   L2lMlpRuleStep:  g, p, m [*shape, D], v, row, col (the rule's state for this tensor), the
//                    step t, the progress features [P], the schedule's step size,
//                    the per-coordinate MLP's (w, b) per layer ->
//                    update, m', v', row', col'
//
// Pass 1 (one thread): sum(p^2), sum(g^2) and, for tensors of rank >= 2, the row and column sums
// of g^2, accumulated in double. Pass 2 (the rows split over TensorFlow's CPU worker threads):
// per vector of kLanes coordinates the new momenta and second moment, the nine clipped features,
// the MLP (its progress inputs folded into the first bias: they are the same for every
// coordinate) and the update. Coordinates never interact in pass 2 and pass 1 runs in a fixed
// order, so the results do not depend on the number of threads.
//
// The maths are those of nets/mlp_rule.py in another order of operations (the bias corrections
// and the per-tensor rms as reciprocals, Cephes' exp, Eigen's tanh; the update is
// -step_size (adam + c_d f tanh(d)) exp(c_m tanh(m)) of the MLP's outputs d, m, f the input
// direction_factor, 1 but for the quiet gate): the results agree with the reference to
// float32 round-off (tests/mlp_rule_fused_test.py). Only the forward step is fused: the gradient
// is that of the reference ops (nets/mlp_rule_fused.py).
//
// Built on first use by nets/mlp_rule_fused.py with the compiler flags of the installed
// TensorFlow, as nets/lstm_kernels.cc.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace l2l {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::InferenceContext;

REGISTER_OP("L2lMlpRuleStep")
    .Input("g: float")
    .Input("p: float")
    .Input("m: float")
    .Input("v: float")
    .Input("row: float")
    .Input("col: float")
    .Input("step: float")
    .Input("progress: float")
    .Input("step_size: float")
    .Input("direction_factor: float")
    .Input("w: num_layers * float")
    .Input("b: num_layers * float")
    .Attr("num_layers: int >= 1")
    .Attr("decays: list(float)")
    .Attr("adam_momentum: int >= 0")
    .Attr("rms_decay: float")
    .Attr("rms_rate: float")
    .Attr("epsilon: float")
    .Attr("feature_clip: float")
    .Attr("direction_scale: float")
    .Attr("magnitude_scale: float")
    .Output("update: float")
    .Output("m_new: float")
    .Output("v_new: float")
    .Output("row_new: float")
    .Output("col_new: float")
    .SetShapeFn([](InferenceContext* ctx) {
      ctx->set_output(0, ctx->input(0));
      ctx->set_output(1, ctx->input(2));
      ctx->set_output(2, ctx->input(3));
      ctx->set_output(3, ctx->input(4));
      ctx->set_output(4, ctx->input(5));
      return absl::OkStatus();
    });

namespace {

constexpr int kLanes = 8;
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));
typedef float vfu __attribute__((vector_size(4 * kLanes), aligned(4)));  // unaligned access

constexpr int kMaxWidth = 256;  // Widest MLP layer (input or hidden) the op accepts.
// Constants of nets/mlp_rule.py's `tensor_features`.
constexpr float kRmsFloorP = 1e-12f, kRmsFloorG = 1e-30f, kRowMeanFloor = 1e-30f;
constexpr float kScaleOffset = 1e-3f, kScaleDivisor = 3.f;

inline vf Splat(float x) { return vf{} + x; }
inline vf Load(const float* p) { return static_cast<vf>(*reinterpret_cast<const vfu*>(p)); }
inline void Store(float* p, vf x) { *reinterpret_cast<vfu*>(p) = x; }

inline vf Sqrt(vf x) {
#ifdef __AVX__
  return static_cast<vf>(_mm256_sqrt_ps(static_cast<__m256>(x)));
#else
  for (int l = 0; l < kLanes; ++l) x[l] = std::sqrt(x[l]);
  return x;
#endif
}

inline vf Max(vf a, vf b) { return a > b ? a : b; }
inline vf Clip(vf x, float c) { return x < -c ? Splat(-c) : (x > c ? Splat(c) : x); }

// exp(x) as Eigen's pexp_float (Cephes): 2^m exp(r), r = x - m ln 2, a degree-6 polynomial;
// 0 below -104, inf above 88.72 as std::exp.
inline vf Exp(vf x_in) {
  const vf x = Max(Splat(-104.f), x_in < 88.7228394f ? x_in : Splat(88.7228394f));
  const vf t = x * 1.44269504088896341f + 0.5f;
  vi mi = __builtin_convertvector(t, vi);  // truncation; floor below
  const vf tr = __builtin_convertvector(mi, vf);
  mi += (tr > t);  // -1 where truncation rounded up (t < 0)
  const vf m = __builtin_convertvector(mi, vf);
  vf r = m * -0.693359375f + x;
  r = m * 2.12194440e-4f + r;
  const vf r2 = r * r;
  vf y = r * 1.9875691500E-4f + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * r2 + r + 1.f;
  // 2^m in two factors: m is in [-151, 128], each half a normal float's exponent.
  const vi m1 = mi >> 1, m2 = mi - m1;
  y = y * (vf)((m1 + 127) << 23);  // Vector casts reinterpret the bits.
  y = y * (vf)((m2 + 127) << 23);
  y = x_in < -104.f ? Splat(0.f) : y;
  return x_in > 88.7228394f ? Splat(INFINITY) : (x_in == x_in ? y : x_in);
}

// tanh(x): Eigen's rational approximation (the kernel behind TF's Tanh), as in lstm_kernels.cc.
inline vf Tanh(vf x_in) {
  const float c = 8.01773357391357422f;
  const vf x = x_in > c ? Splat(c) : (x_in < -c ? Splat(-c) : x_in);
  const vf x2 = x * x;
  vf p = ((1.394553628e-8f * x2 + 2.102733560e-5f) * x2 + 3.520756727e-3f) * x2 +
         1.340216100e-1f;
  const vf q = (((8.015776984e-7f * x2 + 3.326951409e-4f) * x2 + 2.597254514e-2f) * x2 +
                4.673548340e-1f) * x2 + 1.0f;
  p = x2 * x * p + x;
  return p / q;
}

// Everything pass 2 needs, per tensor and per step.
struct Step {
  int64_t n;            // Coordinates.
  int D;                // Momenta per coordinate.
  int adam;             // Index of the Adam momentum among them.
  bool factored;
  int64_t C, R;         // Columns and rows of each matrix (factored).
  float decay[16], keep[16], inv_bc[16];  // Per momentum: b, 1 - b, 1 / (1 - b^t).
  float rms_decay, rms_rate, inv_bc_v, eps, clip, inv_rms_p, inv_rms_g, scale_feature;
  float neg_step_size, cd, cm;
  const float *g, *p, *m, *v;
  const float* row_scaled;  // Per matrix row: row' / ((mean(row') + 1e-30) (1 - 0.999^t)).
  const float* col;         // col' [batch, C].
  float *update, *m_new, *v_new;
  // The MLP: per layer fan-in K, fan-out H, weights [K, H] and biases [H] as splatted vectors
  // (layer 0's input: the features only; its bias includes the progress' contribution).
  int L;
  std::vector<int> K, H;
  std::vector<std::vector<vf>> w, b;
};

// out[j] = b[j] + sum_k in[k] w[k, j] (ReLU'd unless last), H outputs in registers.
template <int H>
inline void DenseFixed(const vf* in, int K, const vf* w, const vf* b, bool relu, vf* out) {
  vf acc[H];
  for (int j = 0; j < H; ++j) acc[j] = b[j];
  for (int k = 0; k < K; ++k) {
    const vf x = in[k];
    for (int j = 0; j < H; ++j) acc[j] += x * w[k * H + j];
  }
  for (int j = 0; j < H; ++j) out[j] = relu ? Max(acc[j], Splat(0.f)) : acc[j];
}

inline void Dense(const vf* in, int K, int H, const vf* w, const vf* b, bool relu, vf* out) {
  switch (H) {
    case 1: return DenseFixed<1>(in, K, w, b, relu, out);
    case 2: return DenseFixed<2>(in, K, w, b, relu, out);
    case 4: return DenseFixed<4>(in, K, w, b, relu, out);
    case 8: return DenseFixed<8>(in, K, w, b, relu, out);
    case 16: return DenseFixed<16>(in, K, w, b, relu, out);
    default:
      for (int j = 0; j < H; ++j) out[j] = b[j];
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < H; ++j) out[j] += in[k] * w[k * H + j];
      if (relu)
        for (int j = 0; j < H; ++j) out[j] = Max(out[j], Splat(0.f));
  }
}

// The momenta of kLanes coordinates from `m` ([n, 3], interleaved) as three vectors, and back.
inline void LoadMomenta3(const float* m, vf* out) {
  const vf a = Load(m), b = Load(m + kLanes), c = Load(m + 2 * kLanes);
  out[0] = __builtin_shuffle(__builtin_shuffle(a, b, vi{0, 3, 6, 9, 12, 15, 0, 0}), c,
                             vi{0, 1, 2, 3, 4, 5, 10, 13});
  out[1] = __builtin_shuffle(__builtin_shuffle(a, b, vi{1, 4, 7, 10, 13, 0, 0, 0}), c,
                             vi{0, 1, 2, 3, 4, 8, 11, 14});
  out[2] = __builtin_shuffle(__builtin_shuffle(a, b, vi{2, 5, 8, 11, 14, 0, 0, 0}), c,
                             vi{0, 1, 2, 3, 4, 9, 12, 15});
}

inline void StoreMomenta3(const vf* m, float* out) {
  Store(out, __builtin_shuffle(__builtin_shuffle(m[0], m[1], vi{0, 8, 0, 1, 9, 0, 2, 10}), m[2],
                               vi{0, 1, 8, 3, 4, 9, 6, 7}));
  Store(out + kLanes,
        __builtin_shuffle(__builtin_shuffle(m[0], m[1], vi{0, 3, 11, 0, 4, 12, 0, 5}), m[2],
                          vi{10, 1, 2, 11, 4, 5, 12, 7}));
  Store(out + 2 * kLanes,
        __builtin_shuffle(__builtin_shuffle(m[0], m[1], vi{13, 0, 6, 14, 0, 7, 15, 0}), m[2],
                          vi{0, 13, 2, 3, 14, 5, 6, 15}));
}

// Pass 2 on kLanes coordinates: g, p, v, the momenta m [D] (updated in place, as v) and
// `fac`, the factored second moment v_fac (when factored) -> the update.
inline vf Coordinates(const Step& s, vf g, vf p, vf* v, vf* m, vf fac) {
  const int D = s.D;
  for (int d = 0; d < D; ++d) m[d] = s.decay[d] * m[d] + s.keep[d] * g;
  *v = s.rms_decay * *v + s.rms_rate * (g * g);
  const vf inv_rms = 1.f / (Sqrt(*v * s.inv_bc_v) + s.eps);
  const vf inv_fac = s.factored ? 1.f / (Sqrt(fac) + s.eps) : inv_rms;
  const vf m_adam = m[s.adam] * s.inv_bc[s.adam];
  vf f[kMaxWidth];
  int F = 0;
  f[F++] = Clip(g * inv_rms, s.clip);
  for (int d = 0; d < D; ++d) f[F++] = Clip((m[d] * s.inv_bc[d]) * inv_rms, s.clip);
  f[F++] = Clip(g * inv_fac, s.clip);
  f[F++] = Clip(m_adam * inv_fac, s.clip);
  f[F++] = Clip(p * s.inv_rms_p, s.clip);
  f[F++] = Clip(g * s.inv_rms_g, s.clip);
  f[F++] = Splat(s.scale_feature);
  vf h[2][kMaxWidth];
  const vf* in = f;
  for (int l = 0; l < s.L; ++l) {
    Dense(in, s.K[l], s.H[l], s.w[l].data(), s.b[l].data(), l + 1 < s.L, h[l & 1]);
    in = h[l & 1];
  }
  const vf direction = m_adam * inv_rms + s.cd * Tanh(in[0]);
  return (s.neg_step_size * direction) * Exp(s.cm * Tanh(in[1]));
}

// Pass 2 on the cnt <= kLanes coordinates from i0.
inline void Vector(const Step& s, int64_t i0, int cnt, vf fac) {
  const int D = s.D;
  vf m[16];
  if (cnt == kLanes) {
    vf v = Load(s.v + i0);
    if (D == 3) {
      LoadMomenta3(s.m + i0 * 3, m);
    } else {
      for (int d = 0; d < D; ++d)
        for (int l = 0; l < kLanes; ++l) m[d][l] = s.m[(i0 + l) * D + d];
    }
    Store(s.update + i0, Coordinates(s, Load(s.g + i0), Load(s.p + i0), &v, m, fac));
    Store(s.v_new + i0, v);
    if (D == 3) {
      StoreMomenta3(m, s.m_new + i0 * 3);
    } else {
      for (int d = 0; d < D; ++d)
        for (int l = 0; l < kLanes; ++l) s.m_new[(i0 + l) * D + d] = m[d][l];
    }
    return;
  }
  vf g{}, p{}, v{};  // The tail: padded with zeros.
  for (int d = 0; d < D; ++d) m[d] = vf{};
  for (int l = 0; l < cnt; ++l) {
    g[l] = s.g[i0 + l];
    p[l] = s.p[i0 + l];
    v[l] = s.v[i0 + l];
    for (int d = 0; d < D; ++d) m[d][l] = s.m[(i0 + l) * D + d];
  }
  const vf u = Coordinates(s, g, p, &v, m, fac);
  for (int l = 0; l < cnt; ++l) {
    s.update[i0 + l] = u[l];
    s.v_new[i0 + l] = v[l];
    for (int d = 0; d < D; ++d) s.m_new[(i0 + l) * D + d] = m[d][l];
  }
}

// Pass 2 on coordinates [begin, end), begin a multiple of kLanes. For factored tensors a cursor
// follows the coordinates' row r (over the batch of matrices) and column c.
void Pass2(const Step& s, int64_t begin, int64_t end) {
  if (!s.factored) {
    for (int64_t i0 = begin; i0 < end; i0 += kLanes)
      Vector(s, i0, static_cast<int>(std::min<int64_t>(kLanes, end - i0)), vf{});
    return;
  }
  const int64_t C = s.C, R = s.R;
  int64_t r = begin / C, c = begin - r * C, in_matrix = r % R;
  const float* col = s.col + (r / R) * C;  // This matrix's column statistics.
  auto next = [&]() {
    if (++c == C) {
      c = 0;
      ++r;
      if (++in_matrix == R) {
        in_matrix = 0;
        col += C;
      }
    }
  };
  for (int64_t i0 = begin; i0 < end; i0 += kLanes) {
    const int cnt = static_cast<int>(std::min<int64_t>(kLanes, end - i0));
    vf fac{};
    if (cnt == kLanes && c + kLanes <= C) {
      fac = s.row_scaled[r] * Load(col + c);
      c += kLanes - 1;
      next();
    } else {
      for (int l = 0; l < cnt; ++l) {
        fac[l] = s.row_scaled[r] * col[c];
        next();
      }
    }
    Vector(s, i0, cnt, fac);
  }
}

class MlpRuleStepOp : public OpKernel {
 public:
  explicit MlpRuleStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_layers", &L_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("decays", &decays_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adam_momentum", &adam_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rms_decay", &rms_decay_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rms_rate", &rms_rate_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("feature_clip", &clip_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("direction_scale", &cd_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("magnitude_scale", &cm_));
    OP_REQUIRES(ctx, !decays_.empty() && decays_.size() <= 16 &&
                         adam_ < static_cast<int>(decays_.size()),
                InvalidArgument("decays: 1 to 16 of them, adam_momentum one of them"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& g = ctx->input(0);
    const Tensor& p = ctx->input(1);
    const Tensor& m = ctx->input(2);
    const Tensor& v = ctx->input(3);
    const Tensor& row = ctx->input(4);
    const Tensor& col = ctx->input(5);
    const Tensor& step = ctx->input(6);
    const Tensor& progress = ctx->input(7);
    const Tensor& step_size = ctx->input(8);
    const Tensor& direction_factor = ctx->input(9);  // Scales c_d (the quiet gate).
    const int D = static_cast<int>(decays_.size());
    OP_REQUIRES(ctx, p.shape() == g.shape() && v.shape() == g.shape(),
                InvalidArgument("g, p and v must have the same shape"));
    TensorShape m_shape = g.shape();
    m_shape.AddDim(D);
    OP_REQUIRES(ctx, m.shape() == m_shape, InvalidArgument("m must be [*g.shape, ", D, "]"));
    OP_REQUIRES(ctx, step.NumElements() == 1 && step_size.NumElements() == 1 &&
                         direction_factor.NumElements() == 1,
                InvalidArgument("step, step_size and direction_factor must be scalars"));
    Step s;
    s.n = g.NumElements();
    s.D = D;
    s.adam = adam_;
    s.factored = g.dims() >= 2;
    if (s.factored) {
      s.C = g.dim_size(g.dims() - 1);
      s.R = g.dim_size(g.dims() - 2);
      TensorShape row_shape = g.shape(), col_shape = g.shape();
      row_shape.RemoveLastDims(1);
      col_shape.RemoveDim(g.dims() - 2);
      OP_REQUIRES(ctx, row.shape() == row_shape && col.shape() == col_shape,
                  InvalidArgument("row must be g.shape[:-1] and col g.shape[:-2] + [C]"));
    } else {
      s.C = s.R = 1;
      OP_REQUIRES(ctx, row.NumElements() == 1 && col.NumElements() == 1,
                  InvalidArgument("row and col of a tensor of rank < 2 must be [1]"));
    }
    // The MLP: layer 0 reads the features and the progress.
    const int P = static_cast<int>(progress.NumElements());
    const int F = D + 6;
    s.L = L_;
    int fan_in = F + P;
    for (int l = 0; l < L_; ++l) {
      const Tensor& w = ctx->input(10 + l);
      const Tensor& b = ctx->input(10 + L_ + l);
      OP_REQUIRES(ctx, w.dims() == 2 && w.dim_size(0) == fan_in && b.dims() == 1 &&
                           b.dim_size(0) == w.dim_size(1) && w.dim_size(1) <= kMaxWidth,
                  InvalidArgument("layer ", l, ": w must be [", fan_in, ", H <= ", kMaxWidth,
                                  "] and b [H]"));
      const int K = l == 0 ? F : fan_in, H = static_cast<int>(w.dim_size(1));
      const float* wp = w.flat<float>().data();
      const float* bp = b.flat<float>().data();
      s.K.push_back(K);
      s.H.push_back(H);
      s.w.emplace_back(static_cast<size_t>(K) * H);
      s.b.emplace_back(H);
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < H; ++j) s.w[l][k * H + j] = Splat(wp[k * H + j]);
      for (int j = 0; j < H; ++j) {
        float bias = 0.f;
        if (l == 0) {  // The progress' part of the first layer: the same for every coordinate.
          const float* pr = progress.flat<float>().data();
          for (int k = 0; k < P; ++k) bias += pr[k] * wp[(F + k) * H + j];
        }
        s.b[l][j] = Splat(bias + bp[j]);
      }
      fan_in = H;
    }
    OP_REQUIRES(ctx, fan_in == 2, InvalidArgument("the last layer must have 2 outputs"));

    Tensor *update, *m_new, *v_new, *row_new, *col_new;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, g.shape(), &update));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, m.shape(), &m_new));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, v.shape(), &v_new));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, row.shape(), &row_new));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, col.shape(), &col_new));
    s.g = g.flat<float>().data();
    s.p = p.flat<float>().data();
    s.m = m.flat<float>().data();
    s.v = v.flat<float>().data();
    s.update = update->flat<float>().data();
    s.m_new = m_new->flat<float>().data();
    s.v_new = v_new->flat<float>().data();

    // Scalars of the step, in float32 as the reference's ops.
    const float t = step.flat<float>()(0);
    for (int d = 0; d < D; ++d) {
      s.decay[d] = decays_[d];
      s.keep[d] = 1.f - decays_[d];
      s.inv_bc[d] = 1.f / (1.f - std::pow(decays_[d], t));
    }
    s.rms_decay = rms_decay_;
    s.rms_rate = rms_rate_;
    const float bc_v = 1.f - std::pow(rms_decay_, t);
    s.inv_bc_v = 1.f / bc_v;
    s.eps = eps_;
    s.clip = clip_;
    s.cd = cd_ * direction_factor.flat<float>()(0);
    s.cm = cm_;
    s.neg_step_size = -step_size.flat<float>()(0);

    // Pass 1: the reductions over the tensor, in double, in a fixed order.
    const int64_t n = s.n;
    double sum_p2 = 0., sum_g2 = 0.;
    for (int64_t i = 0; i < n; ++i) {
      sum_p2 += static_cast<double>(s.p[i] * s.p[i]);
      sum_g2 += static_cast<double>(s.g[i] * s.g[i]);
    }
    const float mean_p2 = n ? static_cast<float>(sum_p2 / n) : NAN;
    const float mean_g2 = n ? static_cast<float>(sum_g2 / n) : NAN;
    const float rms_p = std::sqrt(mean_p2 + kRmsFloorP);
    s.inv_rms_p = 1.f / rms_p;
    s.inv_rms_g = 1.f / std::sqrt(mean_g2 + kRmsFloorG);
    s.scale_feature = std::min(clip_, std::max(-clip_, std::log(rms_p + kScaleOffset) /
                                                           kScaleDivisor));
    std::vector<float> row_scaled;
    float* rn = row_new->flat<float>().data();
    float* cn = col_new->flat<float>().data();
    if (s.factored) {
      const int64_t C = s.C, R = s.R, rows = C && R ? n / C : 0, batch = rows ? rows / R : 0;
      const float* rp = row.flat<float>().data();
      const float* cp = col.flat<float>().data();
      row_scaled.resize(rows);
      std::vector<double> col_sum(C);
      for (int64_t bi = 0; bi < batch; ++bi) {
        std::fill(col_sum.begin(), col_sum.end(), 0.);
        double row_total = 0.;
        for (int64_t r = bi * R; r < (bi + 1) * R; ++r) {
          const float* gr = s.g + r * C;
          double sum = 0.;
          for (int64_t c = 0; c < C; ++c) {
            const double x = static_cast<double>(gr[c] * gr[c]);
            sum += x;
            col_sum[c] += x;
          }
          rn[r] = rms_decay_ * rp[r] + rms_rate_ * static_cast<float>(sum / C);
          row_total += rn[r];
        }
        for (int64_t c = 0; c < C; ++c) {
          cn[bi * C + c] = rms_decay_ * cp[bi * C + c] +
                           rms_rate_ * static_cast<float>(col_sum[c] / R);
        }
        const float scale = 1.f / ((static_cast<float>(row_total / R) + kRowMeanFloor) * bc_v);
        for (int64_t r = bi * R; r < (bi + 1) * R; ++r) row_scaled[r] = rn[r] * scale;
      }
      s.row_scaled = row_scaled.data();
      s.col = cn;
    } else {
      rn[0] = row.flat<float>()(0);  // Unused by the rule: carried unchanged.
      cn[0] = col.flat<float>()(0);
    }

    // Pass 2, over the CPU worker threads for large tensors (each shard at least kMinShard
    // coordinates: a parallel region waits for its slowest thread, which on a busy machine may
    // be descheduled for milliseconds).
    constexpr int64_t kMinShard = 1 << 15;
    const int64_t vectors = (n + kLanes - 1) / kLanes;
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t shards = std::min<int64_t>(threads->num_threads, n / kMinShard);
    auto work = [&s, n](int64_t begin, int64_t end) {
      Pass2(s, begin * kLanes, std::min(n, end * kLanes));
    };
    if (shards <= 1) {
      work(0, vectors);
    } else {
      ::tensorflow::Shard(static_cast<int>(shards), threads->workers, vectors, int64_t{1} << 30,
                          work);
    }
  }

 private:
  int L_, adam_;
  std::vector<float> decays_;
  float rms_decay_, rms_rate_, eps_, clip_, cd_, cm_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("L2lMlpRuleStep").Device(::tensorflow::DEVICE_CPU), MlpRuleStepOp);

}  // namespace l2l
