// Fused element-wise LSTM gate kernels for nets/lstm.py (`fast_deep_lstm`).
//
// TensorFlow runs the gate maths of an LSTM step as ~15 (forward) and ~30 (backward) separate
// element-wise ops, each a full pass over [rows, 4H] or [rows, H] tensors; on CPU that memory
// traffic, not the matmuls, dominates a coordinatewise LSTM over many parameters. These two ops
// do it in one pass each. Gate order (i, j, f, o), forget bias added at run time:
//
//   L2lLstmGates:      z = [x, h] w (the matmul stays a TF op), b, c ->
//                      h' = s(o) tanh(c'), c' = s(f + fb) c + s(i) tanh(j),
//                      acts = [s(i), tanh(j), s(f + fb), s(o)], tanh(c')
//   L2lLstmGatesGrad:  dh (next step), dh_above (layer above), dc, acts, tanh(c'), c ->
//                      dz (gradient of z + b), dc_prev
//
// Built on first use by nets/lstm.py with the compiler flags of the installed TensorFlow.

#include <cmath>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#ifdef __AVX512F__
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

REGISTER_OP("L2lLstmGates")
    .Input("z: float")
    .Input("b: float")
    .Input("c: float")
    .Attr("forget_bias: float")
    .Output("h: float")
    .Output("c_new: float")
    .Output("acts: float")
    .Output("tanh_c: float")
    .SetShapeFn([](InferenceContext* ctx) {
      ctx->set_output(0, ctx->input(2));
      ctx->set_output(1, ctx->input(2));
      ctx->set_output(2, ctx->input(0));
      ctx->set_output(3, ctx->input(2));
      return absl::OkStatus();
    });

REGISTER_OP("L2lLstmGatesGrad")
    .Input("dh: float")
    .Input("dh_above: float")
    .Input("dc: float")
    .Input("acts: float")
    .Input("tanh_c: float")
    .Input("c_prev: float")
    .Output("dz: float")
    .Output("dc_prev: float")
    .SetShapeFn([](InferenceContext* ctx) {
      ctx->set_output(0, ctx->input(3));
      ctx->set_output(1, ctx->input(2));
      return absl::OkStatus();
    });

namespace {

// Scalar forms of Eigen's float packet logistic and tanh (the kernels behind TF's Sigmoid and
// Tanh ops), written so that the compiler vectorizes the loops that call them.
inline float Logistic(float x_in) {
  const float x = (x_in < 16.6355324f ? x_in : 16.6355324f) * 0.5f;
  const float m = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  float r = std::fma(m, -0.693359375f, x);
  r = std::fma(m, 2.12194440e-4f, r);
  const float r2 = r * r;
  const float p_even = std::fma(r2, 4.1898667812347412109375e-2f, 0.49999141693115234375f);
  const float p_odd = std::fma(r2, 8.33471305668354034423828125e-3f, 0.16666877269744873046875f);
  float p = std::fma(r, p_odd, p_even);
  p = std::fma(r2, p, r + 1.0f);
  const int32_t bits = (static_cast<int32_t>(m) + 127) << 23;  // 2^m, m in [-76, 12]
  float e = p * __builtin_bit_cast(float, bits);
  e = e * e;
  return x_in < -104.0f ? 0.0f : e / (1.0f + e);
}

inline float Tanh(float x_in) {
  const float c = 8.01773357391357422f;
  const float x = x_in > c ? c : (x_in < -c ? -c : x_in);
  const float x2 = x * x;
  const float x3 = x2 * x;
  float p = std::fma(std::fma(std::fma(1.394553628e-8f, x2, 2.102733560e-5f), x2,
                              3.520756727e-3f), x2, 1.340216100e-1f);
  const float q = std::fma(std::fma(std::fma(std::fma(8.015776984e-7f, x2, 3.326951409e-4f), x2,
                                             2.597254514e-2f), x2, 4.673548340e-1f), x2, 1.0f);
  p = std::fma(x3, p, x);
  return p / q;
}

// One row: the forward gate maths of `H` units (see L2lLstmGates).
inline void GatesRow(const float* __restrict z, const float* __restrict b,
                     const float* __restrict c, const float fb, const int64_t H,
                     float* __restrict acts, float* __restrict c_new, float* __restrict tanh_c,
                     float* __restrict h) {
#pragma omp simd
  for (int64_t k = 0; k < H; ++k) {
    const float si = Logistic(z[k] + b[k]);
    const float tj = Tanh(z[H + k] + b[H + k]);
    const float sf = Logistic(z[2 * H + k] + b[2 * H + k] + fb);
    const float so = Logistic(z[3 * H + k] + b[3 * H + k]);
    const float cn = sf * c[k] + si * tj;
    const float tc = Tanh(cn);
    acts[k] = si;
    acts[H + k] = tj;
    acts[2 * H + k] = sf;
    acts[3 * H + k] = so;
    tanh_c[k] = tc;
    c_new[k] = cn;
    h[k] = so * tc;
  }
}

// One row: the backward gate maths of `n` units (see L2lLstmGatesGrad), gate q of the
// activations and of dz at q * w (w = n in the per-layer kernels). `cell` is tanh(c'), or with
// kFromCell c' itself, whose tanh is then recomputed (the fused gradient op).
template <bool kFromCell>
inline void GatesGradRow(const float* __restrict dh, const float* __restrict dh_above,
                         const float* __restrict dc, const float* __restrict acts,
                         const float* __restrict cell, const float* __restrict c_prev,
                         const int64_t n, const int64_t w, float* __restrict dz,
                         float* __restrict dc_prev) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const float si = acts[k], tj = acts[w + k], sf = acts[2 * w + k], so = acts[3 * w + k];
    const float tc = kFromCell ? Tanh(cell[k]) : cell[k];
    const float dhk = dh[k] + dh_above[k];
    const float dck = dc[k] + dhk * so * (1.0f - tc * tc);
    dz[k] = dck * tj * si * (1.0f - si);
    dz[w + k] = dck * si * (1.0f - tj * tj);
    dz[2 * w + k] = dck * c_prev[k] * sf * (1.0f - sf);
    dz[3 * w + k] = dhk * tc * so * (1.0f - so);
    dc_prev[k] = dck * sf;
  }
}

// Runs fn(begin, end) over `rows` rows of `width` floats: inline for small tensors, else split
// over at most all CPU worker threads, each shard at least kMinShard floats. Small tensors stay
// on one thread because a parallel region waits for its slowest thread, which on a busy machine
// may be descheduled for milliseconds.
template <typename Fn>
void ForRows(OpKernelContext* ctx, int64_t rows, int64_t width, Fn fn) {
  constexpr int64_t kMinShard = 1 << 16;
  auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t shards = std::min<int64_t>(threads->num_threads, rows * width / kMinShard);
  if (shards <= 1) {
    fn(0, rows);
    return;
  }
  // A cost per row this large makes Shard use exactly `shards` shards.
  ::tensorflow::Shard(static_cast<int>(shards), threads->workers, rows, int64_t{1} << 30, fn);
}

}  // namespace

class LstmGatesOp : public OpKernel {
 public:
  explicit LstmGatesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("forget_bias", &forget_bias_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& z = ctx->input(0);
    const Tensor& b = ctx->input(1);
    const Tensor& c = ctx->input(2);
    OP_REQUIRES(ctx, c.dims() == 2 && z.dims() == 2, InvalidArgument("z and c must be matrices"));
    const int64_t rows = c.dim_size(0), hidden = c.dim_size(1);
    OP_REQUIRES(ctx, z.dim_size(0) == rows && z.dim_size(1) == 4 * hidden,
                InvalidArgument("z must be [rows, 4 * hidden]"));
    OP_REQUIRES(ctx, b.dims() == 1 && b.dim_size(0) == 4 * hidden,
                InvalidArgument("b must be [4 * hidden]"));
    Tensor *h, *c_new, *acts, *tanh_c;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, c.shape(), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, c.shape(), &c_new));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, z.shape(), &acts));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, c.shape(), &tanh_c));
    const float* zp = z.flat<float>().data();
    const float* bp = b.flat<float>().data();
    const float* cp = c.flat<float>().data();
    float* hp = h->flat<float>().data();
    float* cnp = c_new->flat<float>().data();
    float* ap = acts->flat<float>().data();
    float* tp = tanh_c->flat<float>().data();
    const float fb = forget_bias_;
    const int64_t H = hidden;
    ForRows(ctx, rows, 4 * H, [=](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        GatesRow(zp + r * 4 * H, bp, cp + r * H, fb, H, ap + r * 4 * H,
                                     cnp + r * H, tp + r * H, hp + r * H);
      }
    });
  }

 private:
  float forget_bias_;
};

class LstmGatesGradOp : public OpKernel {
 public:
  explicit LstmGatesGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dh = ctx->input(0);
    const Tensor& dh_above = ctx->input(1);
    const Tensor& dc = ctx->input(2);
    const Tensor& acts = ctx->input(3);
    const Tensor& tanh_c = ctx->input(4);
    const Tensor& c_prev = ctx->input(5);
    OP_REQUIRES(ctx, c_prev.dims() == 2, InvalidArgument("c_prev must be a matrix"));
    const int64_t rows = c_prev.dim_size(0), H = c_prev.dim_size(1);
    for (const Tensor* t : {&dh, &dh_above, &dc, &tanh_c}) {
      OP_REQUIRES(ctx, t->shape() == c_prev.shape(),
                  InvalidArgument("dh, dh_above, dc, tanh_c must be shaped like c_prev"));
    }
    OP_REQUIRES(ctx, acts.dims() == 2 && acts.dim_size(0) == rows && acts.dim_size(1) == 4 * H,
                InvalidArgument("acts must be [rows, 4 * hidden]"));
    Tensor *dz, *dc_prev;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, acts.shape(), &dz));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, c_prev.shape(), &dc_prev));
    const float* dhp = dh.flat<float>().data();
    const float* dap = dh_above.flat<float>().data();
    const float* dcp = dc.flat<float>().data();
    const float* ap = acts.flat<float>().data();
    const float* tp = tanh_c.flat<float>().data();
    const float* cp = c_prev.flat<float>().data();
    float* dzp = dz->flat<float>().data();
    float* dcpp = dc_prev->flat<float>().data();
    ForRows(ctx, rows, 4 * H, [=](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t e = r * H;
        GatesGradRow<false>(dhp + e, dap + e, dcp + e, ap + 4 * e, tp + e, cp + e, H, H,
                            dzp + 4 * e, dcpp + e);
      }
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("L2lLstmGates").Device(::tensorflow::DEVICE_CPU), LstmGatesOp);
REGISTER_KERNEL_BUILDER(Name("L2lLstmGatesGrad").Device(::tensorflow::DEVICE_CPU),
                        LstmGatesGradOp);

// ---------------------------------------------------------------------------------------------
// The whole coordinatewise LSTM step in one op (`fused_coordinatewise_lstm` in nets/lstm.py).
//
// A coordinatewise optimizer net runs the same small LSTM on every parameter coordinate, each
// coordinate a row that never mixes with the others. These ops run one step for a block of
// rows at a time entirely in the core's cache: preprocessing of the gradient (identity or
// LogAndSign), every LSTM layer (matmul and gates) and the linear output layer times `scale`:
//
//   L2lCwLstm:      g [N], (h, c) per layer [N, H_l], weights ->
//                   update [N] = scale * (h_top w_out + b_out), (h', c') per layer
//   L2lCwLstmGrad:  the same inputs and the gradients of update and (h', c') ->
//                   gradients of g, (h, c) and every weight (summed over rows)
//
// The forward op saves the gate activations (only when a gradient op consumes them), which the
// gradient op reads; it recomputes tanh(c') from c'. Matmuls are register-tiled over GCC vector
// types, with each weight matrix's gate columns in a grouped order (see `Layer`) padded to
// whole 16-float vectors. The rows are split into fixed parts that the threads claim as they
// come (see ForParts), each part with its own weight-gradient sums, added in a fixed order.

REGISTER_OP("L2lCwLstm")
    .Input("g: float")
    .Input("h: num_layers * float")
    .Input("c: num_layers * float")
    .Input("w: num_layers * float")
    .Input("b: num_layers * float")
    .Input("out_w: float")
    .Input("out_b: float")
    .Attr("num_layers: int >= 1")
    .Attr("log_and_sign: bool")
    .Attr("k: float")
    .Attr("eps: float")
    .Attr("forget_bias: float")
    .Attr("scale: float")
    .Attr("inter_op_helpers: bool = true")
    .Attr("inter_op_threads: int = 0")
    .Output("update: float")
    .Output("h_new: num_layers * float")
    .Output("c_new: num_layers * float")
    .Output("saved: float")
    .SetShapeFn([](InferenceContext* ctx) {
      int num_layers;
      TF_RETURN_IF_ERROR(ctx->GetAttr("num_layers", &num_layers));
      ctx->set_output(0, ctx->input(0));
      for (int i = 0; i < 2 * num_layers; ++i) ctx->set_output(1 + i, ctx->input(1 + i));
      ctx->set_output(1 + 2 * num_layers, ctx->Vector(InferenceContext::kUnknownDim));
      return absl::OkStatus();
    });

REGISTER_OP("L2lCwLstmGrad")
    .Input("g: float")
    .Input("h: num_layers * float")
    .Input("c: num_layers * float")
    .Input("w: num_layers * float")
    .Input("b: num_layers * float")
    .Input("out_w: float")
    .Input("out_b: float")
    .Input("d_update: float")
    .Input("d_h_new: num_layers * float")
    .Input("d_c_new: num_layers * float")
    .Input("h_new: num_layers * float")
    .Input("c_new: num_layers * float")
    .Input("saved: float")
    .Attr("num_layers: int >= 1")
    .Attr("log_and_sign: bool")
    .Attr("k: float")
    .Attr("eps: float")
    .Attr("forget_bias: float")
    .Attr("scale: float")
    .Attr("inter_op_helpers: bool = true")
    .Attr("inter_op_threads: int = 0")
    .Output("d_g: float")
    .Output("d_h: num_layers * float")
    .Output("d_c: num_layers * float")
    .Output("d_w: num_layers * float")
    .Output("d_b: num_layers * float")
    .Output("d_out_w: float")
    .Output("d_out_b: float")
    .SetShapeFn([](InferenceContext* ctx) {
      int L;
      TF_RETURN_IF_ERROR(ctx->GetAttr("num_layers", &L));
      ctx->set_output(0, ctx->input(0));
      for (int i = 0; i < 4 * L + 2; ++i) ctx->set_output(1 + i, ctx->input(1 + i));
      return absl::OkStatus();
    });

namespace {

typedef float v16 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
constexpr int64_t kBlock = 64;     // Rows processed together (multiple of 8).
constexpr int64_t kMinRows = 256;  // Rows per thread at least.
constexpr int64_t kMaxParts = 8;   // Parts the rows are split into for the threads.

inline int64_t Chunks(int64_t n) { return (n + kLanes - 1) / kLanes; }

// The logistic and tanh below on whole vectors (the fused coordinatewise ops).
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));  // unaligned access

// 1 / d without the slow vector division (which bounds the gate maths otherwise): the
// reciprocal estimate and one Newton step y + y (1 - d y), whose residual by a fused
// multiply-add keeps the result unbiased (mean error +0.02 ulp).
inline v16 Recip(v16 d) {
#ifdef __AVX512F__
  const v16 y = _mm512_rcp14_ps(d);
  return y * (1.0f - d * y) + y;
#else
  return 1.0f / d;
#endif
}

// The logistic 1 / (1 + e^-x) on whole vectors. e^-x = 2^m e^r with m = round(-x log2(e)) and
// r = -x - m ln(2) in [-ln(2) / 2, ln(2) / 2] (ln(2) in two parts, so r is exact), e^r by
// Cephes' expf polynomial (also in `Exp` of mlp_rule_kernels.cc, built apart, 8 lanes wide),
// 2^m added to the exponent bits; then `Recip`. Within 2.8 ulp of the exact logistic (Eigen's,
// TensorFlow's Sigmoid: 6). Written for CPUs whose multiply-add pipes bound the gate maths: 12
// multiplies or multiply-adds a vector, where Eigen's form (e^(x/2) squared, then a corrected
// division) takes 16.
inline v16 SigmoidV(v16 x_in) {
  // |x| <= 87: 2^m stays a normal float (m in [-126, 126]) and 1 + e^-x finite; NaN stays NaN.
  const v16 x = x_in < -87.0f ? v16{} - 87.0f : (x_in > 87.0f ? v16{} + 87.0f : x_in);
  const v16 nx = -x;
  v16 m = nx * 1.44269504088896341f;
#ifdef __AVX512F__
  m = _mm512_roundscale_ps(m, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  m = __builtin_convertvector(__builtin_convertvector(m + (m < 0.0f ? -0.5f : 0.5f), vi16), v16);
#endif
  v16 r = m * -0.693359375f + nx;
  r = m * 2.12194440e-4f + r;
  const v16 r2 = r * r;
  v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + (r + 1.0f);
  const vi16 bits = reinterpret_cast<const vi16&>(p) + (__builtin_convertvector(m, vi16) << 23);
  const v16 y = Recip(reinterpret_cast<const v16&>(bits) + 1.0f);
  return x_in < -87.0f ? v16{} : y;  // below 2e-38
}

// Eigen's rational tanh (TensorFlow's Tanh), within 5 ulp.
inline v16 TanhV(v16 x_in) {
  const float c = 8.01773357391357422f;
  const v16 x = x_in > c ? v16{} + c : (x_in < -c ? v16{} - c : x_in);
  const v16 x2 = x * x;
  const v16 x3 = x2 * x;
  v16 p = ((1.394553628e-8f * x2 + 2.102733560e-5f) * x2 + 3.520756727e-3f) * x2 +
          1.340216100e-1f;
  const v16 q = (((8.015776984e-7f * x2 + 3.326951409e-4f) * x2 + 2.597254514e-2f) * x2 +
                 4.673548340e-1f) * x2 + 1.0f;
  p = x3 * p + x;
  return p * Recip(q);
}

// v[j] = p[j] for j < G, in registers: the tiles below reuse each loaded vector for several
// rows, where compilers would otherwise fold a load into every FMA (one 512-bit load per FMA
// bounds the loop on CPUs that load one 512-bit vector per cycle).
template <int G>
inline void LoadPinned(const v16* p, v16* v) {
  for (int j = 0; j < G; ++j) {
    v[j] = p[j];
#ifdef __AVX512F__  // Without AVX-512 a v16 spans several registers (and cannot be pinned).
    __asm__("" : "+v"(v[j]));
#endif
  }
}

// z[r * zs + j] = (bias ? bias[j] : 0) + sum_k x[r, k] w[k * ws + j], for R rows and G chunks,
// where row r of x is x1[r * s1 + 0 .. K1) followed by x2[r * s2 + 0 .. K2) (the layer input
// and the recurrent state, read in place).
template <int R, int G>
inline void MatTile(const float* __restrict x1, int64_t s1, int64_t K1,
                    const float* __restrict x2, int64_t s2, int64_t K2,
                    const v16* __restrict w, int64_t ws, const v16* __restrict bias,
                    v16* __restrict z, int64_t zs) {
  v16 acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < G; ++j) acc[r][j] = bias ? bias[j] : v16{};
  for (int64_t k = 0; k < K1; ++k) {
    v16 wk[G];
    LoadPinned<G>(w + k * ws, wk);
    for (int r = 0; r < R; ++r) {
      const float a = x1[r * s1 + k];
      for (int j = 0; j < G; ++j) acc[r][j] += a * wk[j];
    }
  }
  w += K1 * ws;
  for (int64_t k = 0; k < K2; ++k) {
    v16 wk[G];
    LoadPinned<G>(w + k * ws, wk);
    for (int r = 0; r < R; ++r) {
      const float a = x2[r * s2 + k];
      for (int j = 0; j < G; ++j) acc[r][j] += a * wk[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < G; ++j) z[r * zs + j] = acc[r][j];
}

template <int R>
inline void MatRows(const float* x1, int64_t s1, int64_t K1, const float* x2, int64_t s2,
                    int64_t K2, const v16* w, int64_t nc, const v16* bias, v16* z, int64_t zs) {
  for (int64_t c = 0; c < nc;) {
    const int64_t g = std::min<int64_t>(5, nc - c);
    const v16* b = bias ? bias + c : nullptr;
    switch (g) {
      case 5: MatTile<R, 5>(x1, s1, K1, x2, s2, K2, w + c, nc, b, z + c, zs); break;
      case 4: MatTile<R, 4>(x1, s1, K1, x2, s2, K2, w + c, nc, b, z + c, zs); break;
      case 3: MatTile<R, 3>(x1, s1, K1, x2, s2, K2, w + c, nc, b, z + c, zs); break;
      case 2: MatTile<R, 2>(x1, s1, K1, x2, s2, K2, w + c, nc, b, z + c, zs); break;
      default: MatTile<R, 1>(x1, s1, K1, x2, s2, K2, w + c, nc, b, z + c, zs); break;
    }
    c += g;
  }
}

// z = [x1, x2] w (+ bias) for `rows` rows: x1 [rows, K1] and x2 [rows, K2] (row strides s1, s2
// floats), w [K1 + K2, nc] chunks, z [rows, nc] chunks (row stride zs chunks).
inline void MatMul(const float* x1, int64_t s1, int64_t K1, const float* x2, int64_t s2,
                   int64_t K2, int64_t rows, const v16* w, int64_t nc, const v16* bias, v16* z,
                   int64_t zs) {
  int64_t r = 0;
  if (nc <= 3) {  // Narrow outputs: 8 rows a tile, for enough independent accumulators.
    for (; r + 8 <= rows; r += 8) {
      MatRows<8>(x1 + r * s1, s1, K1, x2 + r * s2, s2, K2, w, nc, bias, z + r * zs, zs);
    }
  }
  for (; r + 4 <= rows; r += 4) {
    MatRows<4>(x1 + r * s1, s1, K1, x2 + r * s2, s2, K2, w, nc, bias, z + r * zs, zs);
  }
  for (; r < rows; ++r) {
    MatRows<1>(x1 + r * s1, s1, K1, x2 + r * s2, s2, K2, w, nc, bias, z + r * zs, zs);
  }
}

// The input gradients dxh [rows, kc chunks] = dz [rows, K1] wt [K1, kc chunks] (row strides
// xs floats and zs chunks; only the first K columns of dxh are used). When the last chunk holds
// at most 8 of them it is done in 256-bit vectors: CPUs that run a 512-bit FMA as two 256-bit
// halves then do half the work for it, the others the same.
typedef float v8 __attribute__((vector_size(32)));

template <int R, int G, bool kHalf>
inline void DxTile(const float* __restrict x, int64_t xs, int64_t K1, const v16* __restrict w,
                   int64_t ws, v16* __restrict z, int64_t zs) {
  v16 acc[R][G > 0 ? G : 1];
  v8 half[R];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < G; ++j) acc[r][j] = v16{};
    half[r] = v8{};
  }
  for (int64_t k = 0; k < K1; ++k) {
    v16 wk[G > 0 ? G : 1];
    LoadPinned<G>(w + k * ws, wk);
    v8 wh{};
    if (kHalf) {
      wh = *reinterpret_cast<const v8*>(w + k * ws + G);
#ifdef __AVX__
      __asm__("" : "+v"(wh));
#endif
    }
    for (int r = 0; r < R; ++r) {
      const float a = x[r * xs + k];
      for (int j = 0; j < G; ++j) acc[r][j] += a * wk[j];
      if (kHalf) half[r] += a * wh;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < G; ++j) z[r * zs + j] = acc[r][j];
    if (kHalf) *reinterpret_cast<v8*>(z + r * zs + G) = half[r];
  }
}

template <int R>
inline void DxRows(const float* x, int64_t xs, int64_t K1, const v16* w, int64_t kc, bool half,
                   v16* z, int64_t zs) {
  const int64_t full = half ? kc - 1 : kc;
  for (int64_t c = 0; c < full || (half && c == full);) {
    const int64_t g = std::min<int64_t>(4, full - c);
    const bool h = half && c + g == full;
    v16* zc = z + c;
    const v16* wc = w + c;
#define L2L_DX(G) (h ? DxTile<R, G, true>(x, xs, K1, wc, kc, zc, zs) \
                     : DxTile<R, G, false>(x, xs, K1, wc, kc, zc, zs))
    switch (g) {
      case 4: L2L_DX(4); break;
      case 3: L2L_DX(3); break;
      case 2: L2L_DX(2); break;
      case 1: L2L_DX(1); break;
      default: DxTile<R, 0, true>(x, xs, K1, wc, kc, zc, zs); break;
    }
#undef L2L_DX
    c += g + (h ? 1 : 0);
  }
}

inline void DxMatMul(const float* x, int64_t xs, int64_t K1, int64_t rows, const v16* w,
                     int64_t kc, int64_t K, v16* z, int64_t zs) {
  const bool half = K % kLanes != 0 && K % kLanes <= 8;
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) DxRows<8>(x + r * xs, xs, K1, w, kc, half, z + r * zs, zs);
  for (; r + 4 <= rows; r += 4) DxRows<4>(x + r * xs, xs, K1, w, kc, half, z + r * zs, zs);
  for (; r < rows; ++r) DxRows<1>(x + r * xs, xs, K1, w, kc, half, z + r * zs, zs);
}

// acc[k * nc + j] += sum_r x[r * xs + k] dz[r * zs + j] over `rows` rows (weight gradients).
template <int KR, int G>
inline void OuterTile(const float* __restrict x, int64_t xs, int64_t rows,
                      const v16* __restrict dz, int64_t zs, v16* __restrict acc, int64_t nc) {
  v16 a[KR][G];
  for (int k = 0; k < KR; ++k)
    for (int j = 0; j < G; ++j) a[k][j] = acc[k * nc + j];
  for (int64_t r = 0; r < rows; ++r) {
    v16 d[G];
    LoadPinned<G>(dz + r * zs, d);
    for (int k = 0; k < KR; ++k) {
      const float s = x[r * xs + k];
      for (int j = 0; j < G; ++j) a[k][j] += s * d[j];
    }
  }
  for (int k = 0; k < KR; ++k)
    for (int j = 0; j < G; ++j) acc[k * nc + j] = a[k][j];
}

template <int KR>
inline void OuterRows(const float* x, int64_t xs, int64_t rows, const v16* dz, int64_t zs,
                      v16* acc, int64_t nc) {
  for (int64_t c = 0; c < nc;) {
    const int64_t g = std::min<int64_t>(5, nc - c);
    switch (g) {
      case 5: OuterTile<KR, 5>(x, xs, rows, dz + c, zs, acc + c, nc); break;
      case 4: OuterTile<KR, 4>(x, xs, rows, dz + c, zs, acc + c, nc); break;
      case 3: OuterTile<KR, 3>(x, xs, rows, dz + c, zs, acc + c, nc); break;
      case 2: OuterTile<KR, 2>(x, xs, rows, dz + c, zs, acc + c, nc); break;
      default: OuterTile<KR, 1>(x, xs, rows, dz + c, zs, acc + c, nc); break;
    }
    c += g;
  }
}

inline void Outer(const float* x, int64_t xs, int64_t rows, int64_t K, const v16* dz, int64_t zs,
                  v16* acc, int64_t nc) {
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) OuterRows<4>(x + k, xs, rows, dz, zs, acc + k * nc, nc);
  for (; k < K; ++k) OuterRows<1>(x + k, xs, rows, dz, zs, acc + k * nc, nc);
}

// Runs fn(worker, part, begin, end) over `parts` contiguous ranges of `rows` rows starting at
// multiples of kBlock, on up to `workers` threads (worker 0 is the calling thread). Threads
// claim parts as they come, so a helper thread that starts late (descheduled, or busy with
// other work) delays the op by at most one part instead of a fixed half. The parts depend only
// on `rows` and `parts`, so per-part results (the gradient op's weight-gradient sums) can be
// combined in a fixed order: deterministic whatever the threads do.
template <typename Fn>
void ForParts(OpKernelContext* ctx, int64_t rows, int64_t parts, int64_t workers,
              bool inter_op, Fn fn) {
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  auto range = [=](int64_t p) {
    return std::make_pair(std::min(rows, blocks * p / parts * kBlock),
                          std::min(rows, blocks * (p + 1) / parts * kBlock));
  };
  if (workers <= 1 || parts <= 1) {
    for (int64_t p = 0; p < parts; ++p) {
      const auto r = range(p);
      fn(0, p, r.first, r.second);
    }
    return;
  }
  // Shared with the helper tasks, which may start after this op has returned: they then find
  // no part left and touch nothing else.
  struct State {
    // The unclaimed parts [lo, hi), packed as hi << 32 | lo. The caller claims from the front
    // and helpers from the back, so each thread tends to get the same rows op after op (still
    // in its core's cache: a helper's parts took 30% longer than the caller's when threads
    // took parts in turn), while the split follows the threads' speeds.
    std::atomic<uint64_t> unclaimed{0};
    int64_t Claim(bool front) {
      uint64_t v = unclaimed.load();
      for (;;) {
        const uint64_t lo = v & 0xffffffffu, hi = v >> 32;
        if (lo >= hi) return -1;
        const uint64_t rest = front ? (hi << 32 | (lo + 1)) : ((hi - 1) << 32 | lo);
        if (unclaimed.compare_exchange_weak(v, rest)) {
          return static_cast<int64_t>(front ? lo : hi - 1);
        }
      }
    }
    std::atomic<int64_t> active{0};
    std::atomic<int64_t> worker{1};
    std::atomic<bool> started{false};
    std::function<void(int64_t, int64_t)> run;  // (worker, part); only called for claimed parts
  };
  auto state = std::make_shared<State>();
  state->unclaimed.store(static_cast<uint64_t>(parts) << 32);
  state->run = [&](int64_t worker, int64_t p) {
    const auto r = range(p);
    fn(worker, p, r.first, r.second);
  };
  auto helper = [state] {
    state->active.fetch_add(1);
    state->started.store(true);
    int64_t worker = -1;
    for (int64_t p; (p = state->Claim(false)) >= 0;) {
      if (worker < 0) worker = state->worker.fetch_add(1);
      state->run(worker, p);
    }
    state->active.fetch_sub(1);
  };
  // With `inter_op`, the helpers go to the executor's inter-op pool first: in a chain of
  // dependent ops its idle threads are awake, looking for work, and start at once, sooner than
  // the intra-op pool's. When none has started after the caller's first part (the inter-op
  // threads busy), they go to the intra-op pool as well. Without it (one inter-op thread: the
  // caller) they go to the intra-op pool only.
  auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  bool intra = !inter_op;
  for (int64_t i = 1; i < workers; ++i) {
    if (intra) {
      threads->workers->Schedule(helper);
    } else {
      (*ctx->runner())(helper);
    }
  }
  for (int64_t p; (p = state->Claim(true)) >= 0;) {
    state->run(0, p);
    if (!intra && !state->started.load()) {
      intra = true;
      for (int64_t i = 1; i < workers; ++i) threads->workers->Schedule(helper);
    }
  }
  for (int i = 0; state->active.load() > 0; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) == 63) std::this_thread::yield();
  }
}

// Shapes and padded weights of one layer. The 4H gate columns are stored in a grouped order
// that keeps the gate maths in whole vectors with no copies: for each full group of 16 units,
// one 16-float chunk per gate (i, j, f, o); then the R = H mod 16 remaining units packed as the
// four gates' R-unit runs, each `rw` lanes wide (4, 8 or 16), in 4 rw / 16 chunks. For H = 20
// that is [i 0-15 | j 0-15 | f 0-15 | o 0-15 | i 16-19, j 16-19, f 16-19, o 16-19], 5 chunks.
enum ChunkKind : char { kMixed, kSigmoid, kTanh };

struct Layer {
  int64_t in = 0, H = 0, K = 0, nc = 0, kc = 0;  // K = in + H; nc = chunks of the gates; kc of K
  int64_t groups = 0, rem = 0, rw = 0;          // full 16-unit groups; remaining units; width
  std::vector<int64_t> col;                      // [nc * 16]: the TF gate column, or -1
  std::vector<v16> mul, add;                     // [nc]: act = s(z mul + add) mul - (mul - 1)
  std::vector<char> kind;                        // [nc]: kSigmoid, kTanh or kMixed chunk
  std::vector<v16> w;                            // [K, nc]
  std::vector<v16> b;                            // [nc]
  std::vector<v16> wt;                           // [nc * 16, kc] (gradient op only)

  // The lane (in a row of nc chunks) of gate q of unit k.
  int64_t Lane(int64_t q, int64_t k) const {
    const int64_t g = k / kLanes;
    return g < groups ? (4 * g + q) * kLanes + k % kLanes
                      : 4 * groups * kLanes + q * rw + (k - groups * kLanes);
  }
};

struct Net {
  int L = 0;
  int64_t N = 0, F = 1;
  bool log_and_sign = false;
  float k = 5.f, eps = 1e-10f, fb = 1.f, scale = 1.f, exp_k = 1.f;
  std::vector<Layer> layers;
  const float* out_w = nullptr;
  float out_b = 0.f;
  int64_t kmax = 0, hmax = 0, zmax = 0;  // floats per row of the block buffers
  int64_t saved = 0;  // floats per row of the saved activations (see SavedActs)
};

// Writes the input features of rows [r0, r0 + n) into xh (row stride xs).
void Features(const Net& net, const float* g, int64_t r0, int64_t n, float* xh,
                     int64_t xs) {
  for (int64_t r = 0; r < n; ++r) {
    const float v = g[r0 + r];
    if (net.log_and_sign) {
      xh[r * xs] = std::max(std::log(std::abs(v) + net.eps) / net.k, -1.0f);
      xh[r * xs + 1] = std::min(std::max(v * net.exp_k, -1.0f), 1.0f);
    } else {
      xh[r * xs] = v;
    }
  }
}

// Fills the gate layout and the padded weights of `layer` (in and H set) from TensorFlow's
// w [K, 4H] and b [4H] (gates i, j, f, o); `transposed` adds wt for the gradient.
void BuildLayer(const float* w, const float* b, float fb, bool transposed, Layer* out) {
  Layer& layer = *out;
  const int64_t G = 4 * layer.H;
  layer.K = layer.in + layer.H;
  layer.groups = layer.H / kLanes;
  layer.rem = layer.H % kLanes;
  layer.rw = layer.rem == 0 ? 0 : (layer.rem <= 4 ? 4 : (layer.rem <= 8 ? 8 : kLanes));
  layer.nc = 4 * layer.groups + 4 * layer.rw / kLanes;
  layer.kc = Chunks(layer.K);
  const int64_t lanes = layer.nc * kLanes;
  layer.col.assign(lanes, -1);
  layer.mul.assign(layer.nc, v16{} + 1.0f);
  layer.add.assign(layer.nc, v16{});
  float* mul = reinterpret_cast<float*>(layer.mul.data());
  float* add = reinterpret_cast<float*>(layer.add.data());
  for (int64_t q = 0; q < 4; ++q) {
    for (int64_t k = 0; k < layer.H; ++k) {
      const int64_t lane = layer.Lane(q, k);
      layer.col[lane] = q * layer.H + k;
      // j is tanh(z) = 2 s(2 z) - 1; f has the forget bias.
      if (q == 1) mul[lane] = 2.f;
      if (q == 2) add[lane] = fb;
    }
  }
  // Chunks whose lanes are all one kind of gate take shortcuts in CellBlock.
  layer.kind.assign(layer.nc, kMixed);
  for (int64_t j = 0; j < layer.nc; ++j) {
    bool sigmoid = true, tanh = true;
    for (int64_t lane = j * kLanes; lane < (j + 1) * kLanes; ++lane) {
      sigmoid = sigmoid && mul[lane] == 1.f;
      tanh = tanh && mul[lane] == 2.f && add[lane] == 0.f;
    }
    layer.kind[j] = sigmoid ? kSigmoid : (tanh ? kTanh : kMixed);
  }
  layer.w.assign(layer.K * layer.nc, v16{});
  layer.b.assign(layer.nc, v16{});
  const float* wp = w;
  const float* bp = b;
  float* lw = reinterpret_cast<float*>(layer.w.data());
  float* lb = reinterpret_cast<float*>(layer.b.data());
  for (int64_t lane = 0; lane < lanes; ++lane) {
    if (layer.col[lane] >= 0) lb[lane] = bp[layer.col[lane]];
  }
  for (int64_t r = 0; r < layer.K; ++r) {
    for (int64_t lane = 0; lane < lanes; ++lane) {
      if (layer.col[lane] >= 0) lw[r * lanes + lane] = wp[r * G + layer.col[lane]];
    }
  }
  if (transposed) {
    layer.wt.assign(lanes * layer.kc, v16{});
    float* lt = reinterpret_cast<float*>(layer.wt.data());
    for (int64_t lane = 0; lane < lanes; ++lane) {
      const int64_t c = layer.col[lane];
      if (c < 0) continue;
      for (int64_t r = 0; r < layer.K; ++r) lt[lane * layer.kc * kLanes + r] = wp[r * G + c];
    }
  }
}

// Appends a layer of `H` units over `in` inputs to `net` (TensorFlow's w [in + H, 4H] and b
// [4H]), with the block buffers' and saved activations' sizes; after the last layer the caller
// adds the input features to net->saved.
void AddLayer(int64_t in, int64_t H, const float* w, const float* b, float fb, bool transposed,
              Net* net) {
  net->layers.emplace_back();
  Layer& layer = net->layers.back();
  layer.in = in;
  layer.H = H;
  BuildLayer(w, b, fb, transposed, &layer);
  net->kmax = std::max(net->kmax, layer.kc * kLanes);
  net->hmax = std::max(net->hmax, layer.H);
  net->zmax = std::max(net->zmax, layer.nc * kLanes);
  net->saved += layer.nc * kLanes;
}

class CwLstmBase : public OpKernel {
 public:
  explicit CwLstmBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_layers", &L_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("log_and_sign", &log_and_sign_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("eps", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("forget_bias", &fb_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("inter_op_helpers", &inter_op_helpers_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("inter_op_threads", &inter_op_threads_));
  }

 protected:
  // Checks the shared inputs and fills `net`; returns false (with the error set) on bad input.
  bool Setup(OpKernelContext* ctx, bool transposed, Net* net) {
#define CW_CHECK(cond, ...)                                                    \
  if (!(cond)) {                                                               \
    ctx->CtxFailure(__FILE__, __LINE__, InvalidArgument(__VA_ARGS__));        \
    return false;                                                              \
  }
    const Tensor& g = ctx->input(0);
    net->L = L_;
    net->N = g.NumElements();
    net->log_and_sign = log_and_sign_;
    net->F = log_and_sign_ ? 2 : 1;
    net->k = k_;
    net->eps = eps_;
    net->fb = fb_;
    net->scale = scale_;
    net->exp_k = std::exp(k_);
    net->layers.reserve(L_);
    int64_t in = net->F;
    for (int l = 0; l < L_; ++l) {
      const Tensor& h = ctx->input(1 + l);
      const Tensor& c = ctx->input(1 + L_ + l);
      const Tensor& w = ctx->input(1 + 2 * L_ + l);
      const Tensor& b = ctx->input(1 + 3 * L_ + l);
      CW_CHECK(h.dims() == 2 && h.dim_size(0) == net->N && c.shape() == h.shape(),
               "state ", l, " must be two [", net->N, ", hidden] matrices");
      const int64_t H = h.dim_size(1), K = in + H, G = 4 * H;
      CW_CHECK(w.dims() == 2 && w.dim_size(0) == K && w.dim_size(1) == G,
               "w ", l, " must be [", K, ", ", G, "]");
      CW_CHECK(b.dims() == 1 && b.dim_size(0) == G,
               "b ", l, " must be [", G, "]");
      AddLayer(in, H, w.flat<float>().data(), b.flat<float>().data(), fb_, transposed, net);
      in = H;
    }
    net->saved += net->F;  // the input features, after the layers' activations
    const Tensor& out_w = ctx->input(1 + 4 * L_);
    const Tensor& out_b = ctx->input(2 + 4 * L_);
    CW_CHECK(out_w.dims() == 2 && out_w.dim_size(0) == in && out_w.dim_size(1) == 1,
             "out_w must be [", in, ", 1]");
    CW_CHECK(out_b.NumElements() == 1, "out_b must have 1 element");
    net->out_w = out_w.flat<float>().data();
    net->out_b = out_b.flat<float>().data()[0];
    return true;
#undef CW_CHECK
  }

  // The parts of `rows` rows (a function of rows only), and the threads to run them on.
  static int64_t Parts(int64_t rows) {
    const int64_t blocks = (rows + kBlock - 1) / kBlock;
    return std::max<int64_t>(1, std::min<int64_t>(kMaxParts, blocks / 2));
  }

  // The threads of the larger of TensorFlow's two pools (`inter_op_threads`: the inter-op
  // pool's size, known to Python only): a process with one intra-op thread (small problems'
  // own ops run faster unsplit) still runs these ops on every core, helped from the inter-op
  // pool (ForParts).
  int64_t Workers(OpKernelContext* ctx, int64_t rows) const {
    const int64_t threads = std::max<int64_t>(
        ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
        inter_op_helpers_ ? inter_op_threads_ : 1);
    return std::max<int64_t>(1, std::min<int64_t>(threads, rows / kMinRows));
  }

  int L_;
  bool log_and_sign_;
  float k_, eps_, fb_, scale_;
  bool inter_op_helpers_;
  int64_t inter_op_threads_;
};

// Block buffers of one thread.
struct Scratch {
  std::vector<v16> z, dxh;         // row-major matmul outputs, gate activations / dz
  std::vector<float> feat, dh_above;  // features; [rows * H]
  Scratch(const Net& net, bool grad) {
    feat.assign(kBlock * net.F, 0.f);
    z.assign(kBlock * net.zmax / kLanes, v16{});
    if (grad) {
      dxh.assign(kBlock * net.kmax / kLanes, v16{});
      dh_above.assign(kBlock * net.hmax, 0.f);
    }
  }
};

// The saved activations of a block of n rows starting at r0: per layer, the gate activations
// of each row in the layer's gate layout ([n, nc] chunks); then the rows' input features
// ([n, F]). The block's region starts at r0 * saved.
inline float* SavedActs(const Net& net, float* saved, int64_t r0, int64_t n, int l) {
  float* p = saved + r0 * net.saved;
  for (int i = 0; i < l; ++i) p += n * net.layers[i].nc * kLanes;
  return p;
}

inline float* SavedFeatures(const Net& net, float* saved, int64_t r0, int64_t n) {
  return saved + r0 * net.saved + n * (net.saved - net.F);
}

// dst[0, n) = src[0, n); inline, for the short runs here (std::copy calls memmove).
inline void Copy(const float* __restrict src, int64_t n, float* __restrict dst) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// The gate maths of the R = H mod 16 remaining units, for rows whose gates are at
// acts + r * lanes + offset (per gate a run of `rw` lanes) and whose state units at
// state + r * H + offset2. AVX-512 with rw = 4 (H = 20, ...) does 4 rows at a time: a 4 x 4
// transpose of 128-bit blocks turns the rows' [i j f o] chunks into one vector per gate.
#ifdef __AVX512F__
inline void Transpose4(__m512 r0, __m512 r1, __m512 r2, __m512 r3, __m512* q0, __m512* q1,
                       __m512* q2, __m512* q3) {
  const __m512 t0 = _mm512_shuffle_f32x4(r0, r1, 0x44), t1 = _mm512_shuffle_f32x4(r0, r1, 0xEE);
  const __m512 t2 = _mm512_shuffle_f32x4(r2, r3, 0x44), t3 = _mm512_shuffle_f32x4(r2, r3, 0xEE);
  *q0 = _mm512_shuffle_f32x4(t0, t2, 0x88);
  *q1 = _mm512_shuffle_f32x4(t0, t2, 0xDD);
  *q2 = _mm512_shuffle_f32x4(t1, t3, 0x88);
  *q3 = _mm512_shuffle_f32x4(t1, t3, 0xDD);
}

// The gates of the packed rest (rw = 4) of 4 rows whose chunks are at a, a + lanes, ...: one
// vector per gate (i, j, f, o), rows in 128-bit lanes.
inline void Gates4(const float* a, int64_t lanes, __m512* q) {
  Transpose4(_mm512_loadu_ps(a), _mm512_loadu_ps(a + lanes), _mm512_loadu_ps(a + 2 * lanes),
             _mm512_loadu_ps(a + 3 * lanes), &q[0], &q[1], &q[2], &q[3]);
}

// The 4 floats at p, p + stride, p + 2 stride, p + 3 stride as one vector, and back.
inline __m512 Load4x4(const float* p, int64_t stride) {
  __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(p));
  v = _mm512_insertf32x4(v, _mm_loadu_ps(p + stride), 1);
  v = _mm512_insertf32x4(v, _mm_loadu_ps(p + 2 * stride), 2);
  return _mm512_insertf32x4(v, _mm_loadu_ps(p + 3 * stride), 3);
}

inline void Store4x4(__m512 v, int64_t stride, float* p) {
  _mm_storeu_ps(p, _mm512_castps512_ps128(v));
  _mm_storeu_ps(p + stride, _mm512_extractf32x4_ps(v, 1));
  _mm_storeu_ps(p + 2 * stride, _mm512_extractf32x4_ps(v, 2));
  _mm_storeu_ps(p + 3 * stride, _mm512_extractf32x4_ps(v, 3));
}
#endif

// Runs the gate maths of the rest (the H mod 16 units after the full groups) of n rows:
// fn4(r) for rows r .. r + 3 together where the AVX-512 path applies (a rest of 4 units), fn1(r)
// for single rows otherwise.
template <typename Fn4, typename Fn1>
inline void ForRest(const Layer& layer, int64_t n, Fn4 fn4, Fn1 fn1) {
  if (layer.rem == 0) return;
  int64_t r = 0;
#ifdef __AVX512F__
  if (layer.rw == 4 && layer.rem == 4) {
    for (; r + 4 <= n; r += 4) fn4(r);
  }
#endif
  for (; r < n; ++r) fn1(r);
}

// The forward gate maths of n rows of a layer (gate layout of `Layer`): z, the gate
// pre-activations with bias ([n, nc] chunks) -> acts (may be z itself), c' and h from c
// ([n, H] each).
inline void CellBlock(const Layer& layer, int64_t n, const float* z, const float* c,
                      float* acts, float* c_new, float* h) {
  const int64_t lanes = layer.nc * kLanes, H = layer.H, rw = layer.rw;
  auto cell = [](const float* __restrict a, int64_t w, const float* __restrict c,
                 float* __restrict c_new, float* __restrict h, int64_t m) {
#pragma omp simd
    for (int64_t k = 0; k < m; ++k) {
      const float cn = a[2 * w + k] * c[k] + a[k] * a[w + k];
      c_new[k] = cn;
      h[k] = a[3 * w + k] * Tanh(cn);
    }
  };
  const int64_t ro = 4 * layer.groups * kLanes, so = layer.groups * kLanes;
  const v16* vm = layer.mul.data();
  const v16* va = layer.add.data();
  // First all activations (independent, so their long dependency chains overlap), then the
  // cells.
  for (int64_t r = 0; r < n; ++r) {
    const v16u* zr = reinterpret_cast<const v16u*>(z + r * lanes);
    v16u* ar = reinterpret_cast<v16u*>(acts + r * lanes);
    for (int64_t j = 0; j < layer.nc; ++j) {
      if (layer.kind[j] == kSigmoid) {
        ar[j] = SigmoidV(zr[j] + va[j]);
      } else if (layer.kind[j] == kTanh) {  // 2 s(2 z) - 1, by adds (exact as the products)
        const v16 y = SigmoidV(zr[j] + zr[j]);
        ar[j] = (y + y) - 1.0f;
      } else {
        const v16 m = vm[j];
        ar[j] = SigmoidV(zr[j] * m + va[j]) * m - (m - 1.0f);
      }
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    const v16u* ar = reinterpret_cast<const v16u*>(acts + r * lanes);
    for (int64_t g = 0; g < layer.groups; ++g) {
      const v16u* a = ar + 4 * g;
      const int64_t o = r * H + g * kLanes;
      const v16 cn = a[2] * *reinterpret_cast<const v16u*>(c + o) + a[0] * a[1];
      *reinterpret_cast<v16u*>(c_new + o) = cn;
      *reinterpret_cast<v16u*>(h + o) = a[3] * TanhV(cn);
    }
  }
  ForRest(layer, n, [&](int64_t r) {
#ifdef __AVX512F__
    __m512 q[4];
    Gates4(acts + r * lanes + ro, lanes, q);
    const v16 cn = q[2] * Load4x4(c + r * H + so, H) + q[0] * q[1];
    Store4x4(cn, H, c_new + r * H + so);
    Store4x4(q[3] * TanhV(cn), H, h + r * H + so);
#endif
  }, [&](int64_t r) {
    cell(acts + r * lanes + ro, rw, c + r * H + so, c_new + r * H + so, h + r * H + so,
         layer.rem);
  });
}

// The backward gate maths of n rows of a layer: from the activations, c', c, and the
// gradients of h (dh + dh_above) and c' -> dz (the gradient of the pre-activations, in the gate
// layout, zero on unused lanes) and dc.
inline void CellGradBlock(const Layer& layer, int64_t n, const float* acts, const float* c_new,
                          const float* c_prev, const float* dh, const float* dh_above,
                          const float* dc_next, float* dz, float* dc) {
  const int64_t lanes = layer.nc * kLanes, H = layer.H, rw = layer.rw;
  // One vector of 16 units: gates si, tj, sf, so; c', c, dh + dh_above, dc_next -> dz, dc.
  auto vcell = [](v16 si, v16 tj, v16 sf, v16 so, v16 cn, v16 cp, v16 dhk, v16 dcn, v16* d,
                  v16* dcp) {
    const v16 tc = TanhV(cn);
    // Shared products first: this CPU's multiply pipes bound the gate maths.
    const v16 dho = dhk * so;
    const v16 dck = dcn + dho * (1.0f - tc * tc);
    const v16 dci = dck * si, dcf = dck * sf;
    d[0] = dci * (tj * (1.0f - si));
    d[1] = dci * (1.0f - tj * tj);
    d[2] = dcf * (cp * (1.0f - sf));
    d[3] = dho * (tc * (1.0f - so));
    *dcp = dcf;
  };
  auto ld = [](const float* p) { return static_cast<v16>(*reinterpret_cast<const v16u*>(p)); };
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t g = 0; g < layer.groups; ++g) {
      const int64_t o = r * H + g * kLanes, ao = r * lanes + 4 * g * kLanes;
      const float* a = acts + ao;
      v16 d[4], dcv;
      vcell(ld(a), ld(a + kLanes), ld(a + 2 * kLanes), ld(a + 3 * kLanes), ld(c_new + o),
            ld(c_prev + o), ld(dh + o) + ld(dh_above + o), ld(dc_next + o), d, &dcv);
      v16u* dr = reinterpret_cast<v16u*>(dz + ao);
      for (int j = 0; j < 4; ++j) dr[j] = d[j];
      *reinterpret_cast<v16u*>(dc + o) = dcv;
    }
  }
  const int64_t ro = 4 * layer.groups * kLanes, so = layer.groups * kLanes;
  ForRest(layer, n, [&](int64_t r) {
#ifdef __AVX512F__
    __m512 q[4];
    Gates4(acts + r * lanes + ro, lanes, q);
    const int64_t o = r * H + so;
    v16 d[4], dcv;
    vcell(q[0], q[1], q[2], q[3], Load4x4(c_new + o, H), Load4x4(c_prev + o, H),
          Load4x4(dh + o, H) + Load4x4(dh_above + o, H), Load4x4(dc_next + o, H), d, &dcv);
    Transpose4(d[0], d[1], d[2], d[3], &q[0], &q[1], &q[2], &q[3]);
    float* dr = dz + r * lanes + ro;
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(dr + j * lanes, q[j]);
    Store4x4(dcv, H, dc + o);
#endif
  }, [&](int64_t r) {
    float* d = dz + r * lanes + ro;
    for (int64_t i = 0; i < 4 * rw; ++i) d[i] = 0.f;
    const int64_t o = r * H + so;
    GatesGradRow<true>(dh + o, dh_above + o, dc_next + o, acts + r * lanes + ro, c_new + o,
                       c_prev + o, layer.rem, rw, d, dc + o);
  });
}

// The forward step of rows [r0, r0 + n): writes (h', c'), the update and, when `saved` is not
// null, the activations the gradient needs.
void ForwardBlock(const Net& net, const float* g, const float* const* h_in,
                  const float* const* c_in, int64_t r0, int64_t n, Scratch* s,
                  float* const* h_out, float* const* c_out, float* update, float* saved) {
  Features(net, g, r0, n, s->feat.data(), net.F);
  if (saved != nullptr) Copy(s->feat.data(), n * net.F, SavedFeatures(net, saved, r0, n));
  const float* below = s->feat.data();  // the layer's input, [n, in]
  for (int l = 0; l < net.L; ++l) {
    const Layer& layer = net.layers[l];
    const int64_t H = layer.H;
    // The [r0, r0 + n) rows of an [N, H] state are the n * H floats from r0 * H on.
    MatMul(below, layer.in, layer.in, h_in[l] + r0 * H, H, H, n, layer.w.data(), layer.nc,
           layer.b.data(), s->z.data(), layer.nc);
    float* h = h_out[l] + r0 * H;
    const int64_t lanes = layer.nc * kLanes;
    float* z = reinterpret_cast<float*>(s->z.data());
    float* acts = saved != nullptr ? SavedActs(net, saved, r0, n, l) : z;
    CellBlock(layer, n, z, c_in[l] + r0 * H, acts, c_out[l] + r0 * H, h);
    below = h;
  }
  const int64_t H = net.layers[net.L - 1].H;
  for (int64_t r = 0; r < n; ++r) {
    float o = 0.f;
    for (int64_t j = 0; j < H; ++j) o += below[r * H + j] * net.out_w[j];
    update[r0 + r] = net.scale * (o + net.out_b);
  }
}

// The inputs and outputs of the gradient op, per layer where indexed.
struct Grads {
  const float* const* h_in;
  const float* const* c_in;
  const float* const* dh_next;
  const float* const* dc_next;
  const float* const* h_new;
  const float* const* c_new;
  float* const* dh;
  float* const* dc;
  float* dg;
  const float* du;
  float* saved;
};

// The backward step of rows [r0, r0 + n): writes the gradients of g and the state, and adds
// the weight gradients to `my` (per layer dW [K, nc] and db [nc] chunks from offset[l]; then
// d_out_w and d_out_b from offset[L]).
void BackwardBlock(const Net& net, const float* g, const Grads& a, int64_t r0, int64_t n,
                   Scratch* sp, v16* my, const int64_t* offset) {
  Scratch& s = *sp;
  const int L = net.L;
  const int64_t htop = net.layers[L - 1].H;
  const float* const* h_in = a.h_in;
  const float* const* c_in = a.c_in;
  const float* const* dh_next = a.dh_next;
  const float* const* dc_next = a.dc_next;
  const float* const* h_new = a.h_new;
  const float* const* c_new = a.c_new;
  float* const* dh = a.dh;
  float* const* dc = a.dc;
  float* dgp = a.dg;
  const float* du = a.du;
  float* saved = a.saved;
  float* d_out_w = reinterpret_cast<float*>(my + offset[L]);
  float* d_out_b = reinterpret_cast<float*>(my + offset[L] + Chunks(htop));
  const float* features = SavedFeatures(net, saved, r0, n);
  // Output layer.
  const float* top = h_new[L - 1] + r0 * htop;
  for (int64_t r = 0; r < n; ++r) {
    const float d = net.scale * du[r0 + r];
    d_out_b[0] += d;
    for (int64_t j = 0; j < htop; ++j) {
      d_out_w[j] += top[r * htop + j] * d;
      s.dh_above[r * htop + j] = d * net.out_w[j];
    }
  }
  for (int l = L - 1; l >= 0; --l) {
    const Layer& layer = net.layers[l];
    const int64_t H = layer.H, zs = layer.nc;
    const int64_t e = r0 * H;  // the block's rows of the [N, H] state
    const float* acts = SavedActs(net, saved, r0, n, l);
    const int64_t lanes = zs * kLanes;
    float* dz = reinterpret_cast<float*>(s.z.data());
    CellGradBlock(layer, n, acts, c_new[l] + e, c_in[l] + e, dh_next[l] + e,
                  s.dh_above.data(), dc_next[l] + e, dz, dc[l] + e);
    v16* dw = my + offset[l];
    v16* db = dw + layer.K * layer.nc;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < layer.nc; ++j) db[j] += s.z[r * zs + j];
    // dW += [input, h]^T dz, reading the layer's input and state in place.
    const float* input = l == 0 ? features : h_new[l - 1] + r0 * layer.in;
    Outer(input, layer.in, n, layer.in, s.z.data(), zs, dw, layer.nc);
    Outer(h_in[l] + e, H, n, H, s.z.data(), zs, dw + layer.in * layer.nc, layer.nc);
    // dxh = dz w^T over the 4H real columns of dz.
    DxMatMul(dz, lanes, lanes, n, layer.wt.data(), layer.kc, layer.K, s.dxh.data(), layer.kc);
    const float* dxh = reinterpret_cast<const float*>(s.dxh.data());
    const int64_t xs = layer.kc * kLanes;
    for (int64_t r = 0; r < n; ++r) {
      Copy(dxh + r * xs + layer.in, H, dh[l] + (r0 + r) * H);
      if (l > 0) {
        Copy(dxh + r * xs, layer.in, s.dh_above.data() + r * layer.in);
      } else if (dgp != nullptr) {
        const float v = g[r0 + r];
        float d;
        if (net.log_and_sign) {
          const float a = std::abs(v) + net.eps;
          const float lg = std::log(a) / net.k;
          const float sgn = v > 0.f ? 1.f : (v < 0.f ? -1.f : 0.f);
          d = lg >= -1.f ? dxh[r * xs] / net.k / a * sgn : 0.f;
          const float x = v * net.exp_k;
          if (x >= -1.f && x <= 1.f) d += dxh[r * xs + 1] * net.exp_k;
        } else {
          d = dxh[r * xs];
        }
        dgp[r0 + r] = d;
      }
    }
  }
}

class CwLstmOp : public CwLstmBase {
 public:
  using CwLstmBase::CwLstmBase;

  void Compute(OpKernelContext* ctx) override {
    Net net;
    if (!Setup(ctx, false, &net)) return;
    Tensor* update;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &update));
    std::vector<const float*> h_in(L_), c_in(L_);
    std::vector<float*> h_out(L_), c_out(L_);
    for (int l = 0; l < L_; ++l) {
      Tensor *h, *c;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + l, ctx->input(1 + l).shape(), &h));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + L_ + l, ctx->input(1 + L_ + l).shape(), &c));
      h_in[l] = ctx->input(1 + l).flat<float>().data();
      c_in[l] = ctx->input(1 + L_ + l).flat<float>().data();
      h_out[l] = h->flat<float>().data();
      c_out[l] = c->flat<float>().data();
    }
    // The activations for the gradient, only when something consumes them (a gradient op).
    const int saved_index = 1 + 2 * L_;
    const bool save = ctx->output_required(saved_index);
    Tensor* saved;
    const int64_t saved_size = save ? net.N * net.saved : 0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(saved_index, TensorShape({saved_size}),
                                             &saved));
    float* sp = save ? saved->flat<float>().data() : nullptr;
    const float* g = ctx->input(0).flat<float>().data();
    float* up = update->flat<float>().data();
    const int64_t workers = Workers(ctx, net.N);
    std::vector<std::unique_ptr<Scratch>> scratch(2 * workers);
    ForParts(ctx, net.N, Parts(net.N), workers, inter_op_helpers_,
             [&](int64_t w, int64_t, int64_t begin, int64_t end) {
      if (!scratch[w]) scratch[w].reset(new Scratch(net, false));
      for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
        ForwardBlock(net, g, h_in.data(), c_in.data(), r0, std::min(kBlock, end - r0),
                     scratch[w].get(), h_out.data(), c_out.data(), up, sp);
      }
    });
  }
};

class CwLstmGradOp : public CwLstmBase {
 public:
  using CwLstmBase::CwLstmBase;

  void Compute(OpKernelContext* ctx) override {
    Net net;
    if (!Setup(ctx, true, &net)) return;
    const int L = L_;
    const int64_t N = net.N;
    const Tensor& d_update = ctx->input(3 + 4 * L);
    OP_REQUIRES(ctx, d_update.NumElements() == N,
                InvalidArgument("d_update must have ", N, " elements"));
    std::vector<const float*> h_in(L), c_in(L), dh_next(L), dc_next(L), h_new(L), c_new(L);
    std::vector<float*> dh(L), dc(L);
    Tensor* dg;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dg));
    for (int l = 0; l < L; ++l) {
      const Tensor& h = ctx->input(1 + l);
      const Tensor& dhn = ctx->input(4 + 4 * L + l);
      const Tensor& dcn = ctx->input(4 + 5 * L + l);
      OP_REQUIRES(ctx, dhn.shape() == h.shape() && dcn.shape() == h.shape(),
                  InvalidArgument("d_h_new and d_c_new must be shaped like the state"));
      h_in[l] = h.flat<float>().data();
      c_in[l] = ctx->input(1 + L + l).flat<float>().data();
      const Tensor& hn = ctx->input(4 + 6 * L + l);
      const Tensor& cn = ctx->input(4 + 7 * L + l);
      OP_REQUIRES(ctx, hn.shape() == h.shape() && cn.shape() == h.shape(),
                  InvalidArgument("h_new and c_new must be shaped like the state"));
      h_new[l] = hn.flat<float>().data();
      c_new[l] = cn.flat<float>().data();
      dh_next[l] = dhn.flat<float>().data();
      dc_next[l] = dcn.flat<float>().data();
      Tensor *a, *b;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + l, h.shape(), &a));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + L + l, h.shape(), &b));
      dh[l] = a->flat<float>().data();
      dc[l] = b->flat<float>().data();
    }
    const Tensor& saved_t = ctx->input(4 + 8 * L);
    OP_REQUIRES(ctx, saved_t.NumElements() == N * net.saved,
                InvalidArgument("saved must have ", N * net.saved, " elements (the forward op's "
                                "`saved` output), got ", saved_t.NumElements()));
    float* saved = const_cast<float*>(saved_t.flat<float>().data());
    // Per-part accumulators: for each layer dW [K, nc] and db [nc] chunks; then d_out_w, d_out_b.
    std::vector<int64_t> offset(L + 1, 0);
    for (int l = 0; l < L; ++l) {
      offset[l + 1] = offset[l] + (net.layers[l].K + 1) * net.layers[l].nc;
    }
    const int64_t htop = net.layers[L - 1].H;
    const int64_t per_part = offset[L] + Chunks(htop) + 1;
    const int64_t parts = Parts(N), workers = Workers(ctx, N);
    // Zeroed by the thread that claims the part.
    std::unique_ptr<v16[]> acc(new v16[parts * per_part]);
    const float* g = ctx->input(0).flat<float>().data();
    const float* du = d_update.flat<float>().data();
    // The gradient of g only when something consumes it: first-order unrolls stop it.
    float* dgp = dg->flat<float>().data();
    if (!ctx->output_required(0)) {
      std::fill(dgp, dgp + N, 0.f);
      dgp = nullptr;
    }

    const Grads grads{h_in.data(), c_in.data(), dh_next.data(), dc_next.data(), h_new.data(),
                      c_new.data(), dh.data(), dc.data(), dgp, du, saved};
    std::vector<std::unique_ptr<Scratch>> scratch(2 * workers);
    ForParts(ctx, N, parts, workers, inter_op_helpers_,
             [&](int64_t w, int64_t part, int64_t begin, int64_t end) {
      if (!scratch[w]) scratch[w].reset(new Scratch(net, true));
      v16* my = acc.get() + part * per_part;
      std::fill(my, my + per_part, v16{});
      for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
        BackwardBlock(net, g, grads, r0, std::min(kBlock, end - r0), scratch[w].get(), my,
                      offset.data());
      }
    });
    // Sum the parts' accumulators into the weight gradients, in a fixed order.
    for (int64_t p = 1; p < parts; ++p)
      for (int64_t i = 0; i < per_part; ++i) acc[i] += acc[p * per_part + i];
    const float* total = reinterpret_cast<const float*>(acc.get());
    for (int l = 0; l < L; ++l) {
      const Layer& layer = net.layers[l];
      const int64_t G = 4 * layer.H;
      Tensor *dw, *db;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + 2 * L + l, ctx->input(1 + 2 * L + l).shape(),
                                               &dw));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + 3 * L + l, ctx->input(1 + 3 * L + l).shape(),
                                               &db));
      const float* src = total + offset[l] * kLanes;
      const float* bsrc = src + layer.K * layer.nc * kLanes;
      float* dwp = dw->flat<float>().data();
      float* dbp = db->flat<float>().data();
      const int64_t lanes = layer.nc * kLanes;
      for (int64_t lane = 0; lane < lanes; ++lane) {
        const int64_t c = layer.col[lane];
        if (c < 0) continue;
        dbp[c] = bsrc[lane];
        for (int64_t r = 0; r < layer.K; ++r) dwp[r * G + c] = src[r * lanes + lane];
      }
    }
    Tensor *dow, *dob;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1 + 4 * L, ctx->input(1 + 4 * L).shape(), &dow));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2 + 4 * L, ctx->input(2 + 4 * L).shape(), &dob));
    const float* osrc = total + offset[L] * kLanes;
    std::copy(osrc, osrc + htop, dow->flat<float>().data());
    dob->flat<float>().data()[0] = osrc[Chunks(htop) * kLanes];
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("L2lCwLstm").Device(::tensorflow::DEVICE_CPU), CwLstmOp);
REGISTER_KERNEL_BUILDER(Name("L2lCwLstmGrad").Device(::tensorflow::DEVICE_CPU), CwLstmGradOp);

}  // namespace l2l
