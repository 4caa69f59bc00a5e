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
#include <cstdint>

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
void GatesRow(const float* __restrict z, const float* __restrict b, const float* __restrict c,
              const float fb, const int64_t H, float* __restrict acts, float* __restrict c_new,
              float* __restrict tanh_c, float* __restrict h) {
#pragma omp simd
  for (int64_t k = 0; k < H; ++k) {
    const float si = Logistic(z[k] + b[k]);
    const float tj = Tanh(z[H + k] + b[H + k]);
    const float sf = Logistic((z[2 * H + k] + b[2 * H + k]) + fb);
    const float so = Logistic(z[3 * H + k] + b[3 * H + k]);
    const float cn = sf * c[k] + si * tj;
    const float tc = Tanh(cn);
    acts[k] = si;
    acts[H + k] = tj;
    acts[2 * H + k] = sf;
    acts[3 * H + k] = so;
    c_new[k] = cn;
    tanh_c[k] = tc;
    h[k] = so * tc;
  }
}

// One row: the backward gate maths of `H` units (see L2lLstmGatesGrad).
void GatesGradRow(const float* __restrict dh, const float* __restrict dh_above,
                  const float* __restrict dc, const float* __restrict acts,
                  const float* __restrict tanh_c, const float* __restrict c_prev, const int64_t H,
                  float* __restrict dz, float* __restrict dc_prev) {
#pragma omp simd
  for (int64_t k = 0; k < H; ++k) {
    const float si = acts[k], tj = acts[H + k], sf = acts[2 * H + k], so = acts[3 * H + k];
    const float tc = tanh_c[k];
    const float dhk = dh[k] + dh_above[k];
    const float dck = dc[k] + dhk * so * (1.0f - tc * tc);
    dz[k] = dck * tj * si * (1.0f - si);
    dz[H + k] = dck * si * (1.0f - tj * tj);
    dz[2 * H + k] = dck * c_prev[k] * sf * (1.0f - sf);
    dz[3 * H + k] = dhk * tc * so * (1.0f - so);
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
        GatesRow(zp + r * 4 * H, bp, cp + r * H, fb, H, ap + r * 4 * H, cnp + r * H, tp + r * H,
                 hp + r * H);
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
        GatesGradRow(dhp + e, dap + e, dcp + e, ap + 4 * e, tp + e, cp + e, H, dzp + 4 * e,
                     dcpp + e);
      }
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("L2lLstmGates").Device(::tensorflow::DEVICE_CPU), LstmGatesOp);
REGISTER_KERNEL_BUILDER(Name("L2lLstmGatesGrad").Device(::tensorflow::DEVICE_CPU),
                        LstmGatesGradOp);

}  // namespace l2l
