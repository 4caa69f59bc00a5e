// The fused coordinatewise LSTM kernels' parts on one thread, outside TensorFlow: what
// bench/kernel_phases.py builds and runs (see there). Includes nets/lstm_kernels.cc (path in
// L2L_KERNEL_SOURCE) to call its block functions directly; 2x20 LSTM, LogAndSign, as the
// 2016 optimizer. Prints key=value lines:
//
//   part=... ns_per_row=...   one 64-row block, in the core's cache, per layer of 40 inputs
//   case=in_cache / case=through_memory / case=memory_only ... forward_ns_per_row=...
//                             backward_ns_per_row=...
//
// in_cache: one step over `rows` rows, repeated on the same buffers; through_memory: an unroll
// of 20 steps forward then 20 backward, each step with its own buffers (the memory picture of
// a meta-step); memory_only: that unroll's backward reading and writing the same data without
// computing (the memory floor).
#include L2L_KERNEL_SOURCE
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

using namespace l2l;

namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Best time of `repeats` rounds of `reps` calls, per call.
template <typename F>
double Best(F f, int reps, int repeats) {
  double best = 1e30;
  for (int t = 0; t < repeats; ++t) {
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    best = std::min(best, Seconds(a, std::chrono::steady_clock::now()) / reps);
  }
  return best;
}

struct Setup {
  Net net;
  std::vector<std::vector<float>> w, b;
  std::vector<float> out_w;
  std::vector<int64_t> offset;
  explicit Setup(int64_t N, std::mt19937* rng) {
    std::normal_distribution<float> nd;
    net.L = 2;
    net.N = N;
    net.log_and_sign = true;
    net.F = 2;
    net.k = 5.f;
    net.exp_k = std::exp(5.f);
    net.scale = 0.01f;
    w.resize(2);
    b.resize(2);
    int64_t in = 2;
    for (int l = 0; l < 2; ++l) {
      w[l].resize((in + 20) * 80);
      for (float& v : w[l]) v = nd(*rng) * 0.3f;
      b[l].assign(80, 0.f);
      AddLayer(in, 20, w[l].data(), b[l].data(), 1.f, true, &net);
      in = 20;
    }
    net.saved += net.F;
    out_w.resize(20);
    for (float& v : out_w) v = nd(*rng) * 0.3f;
    net.out_w = out_w.data();
    offset.assign(3, 0);
    for (int l = 0; l < 2; ++l) {
      offset[l + 1] = offset[l] + (net.layers[l].K + 1) * net.layers[l].nc;
    }
  }
  int64_t AccSize() const { return offset[2] + Chunks(20) + 1; }
};

std::vector<float> Normal(int64_t n, std::mt19937* rng, float scale = 1.f) {
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (float& x : v) x = nd(*rng) * scale;
  return v;
}

void Parts(std::mt19937* rng, int repeats) {
  const int64_t n = kBlock;
  Setup s(n, rng);
  const Layer& layer = s.net.layers[1];  // 40 inputs, 20 units: the 2016 net's second layer
  std::vector<float> x = Normal(n * 20, rng), h = Normal(n * 20, rng), c = Normal(n * 20, rng);
  std::vector<float> c_new(n * 20), h_new(n * 20), dc(n * 20);
  std::vector<float> dh = Normal(n * 20, rng), dh_above = Normal(n * 20, rng);
  std::vector<float> dc_next = Normal(n * 20, rng);
  std::vector<v16> z(n * layer.nc), acts(n * layer.nc), dz(n * layer.nc), dxh(n * layer.kc);
  std::vector<v16> acc((layer.K + 1) * layer.nc);
  float* zf = reinterpret_cast<float*>(z.data());
  const std::vector<float> zinit = Normal(n * layer.nc * kLanes, rng, 2.f);
  volatile float sink = 0.f;
  const int reps = 2000;
  auto report = [&](const char* part, double seconds) {
    std::printf("part=%s ns_per_row=%.1f\n", part, 1e9 * seconds / n);
  };
  report("forward_matmul", Best([&] {
    MatMul(x.data(), 20, 20, h.data(), 20, 20, n, layer.w.data(), layer.nc, layer.b.data(),
           z.data(), layer.nc);
    sink = sink + zf[7];
  }, reps, repeats));
  std::copy(zinit.begin(), zinit.end(), zf);
  report("forward_gates", Best([&] {
    CellBlock(layer, n, zf, c.data(), reinterpret_cast<float*>(acts.data()), c_new.data(),
              h_new.data());
    sink = sink + h_new[5];
  }, reps, repeats));
  report("backward_gates", Best([&] {
    CellGradBlock(layer, n, reinterpret_cast<const float*>(acts.data()), c_new.data(), c.data(),
                  dh.data(), dh_above.data(), dc_next.data(), reinterpret_cast<float*>(dz.data()),
                  dc.data());
    sink = sink + dc[5];
  }, reps, repeats));
  report("backward_weight_gradients", Best([&] {
    Outer(x.data(), 20, n, 20, dz.data(), layer.nc, acc.data(), layer.nc);
    Outer(h.data(), 20, n, 20, dz.data(), layer.nc, acc.data() + 20 * layer.nc, layer.nc);
    sink = sink + acc[3][3];
  }, reps, repeats));
  report("backward_input_gradients", Best([&] {
    DxMatMul(reinterpret_cast<const float*>(dz.data()), layer.nc * kLanes, layer.nc * kLanes, n,
             layer.wt.data(), layer.kc, layer.K, dxh.data(), layer.kc);
    sink = sink + dxh[3][3];
  }, reps, repeats));
}

// One step's buffers of the unroll: the state entering the step and its gradient, per layer.
struct StepState {
  std::vector<float> h[2], c[2], dh[2], dc[2];
};

void Unroll(int64_t N, int steps, bool in_cache, bool memory_only, std::mt19937* rng,
            int repeats) {
  Setup s(N, rng);
  const Net& net = s.net;
  const int T = in_cache ? 1 : steps;
  std::vector<StepState> st(T + 1);
  for (auto& x : st) {
    for (int l = 0; l < 2; ++l) {
      x.h[l] = Normal(N * 20, rng, 0.5f);
      x.c[l] = Normal(N * 20, rng);
      x.dh[l] = Normal(N * 20, rng);
      x.dc[l] = Normal(N * 20, rng);
    }
  }
  std::vector<std::vector<float>> g(T), update(T), saved(T);
  for (int t = 0; t < T; ++t) {
    g[t] = Normal(N, rng);
    update[t].assign(N, 0.f);
    saved[t].assign(N * net.saved, 0.f);
  }
  const std::vector<float> du = Normal(N, rng);
  Scratch forward_scratch(net, false), backward_scratch(net, true);
  std::vector<v16> acc(s.AccSize());
  double fwd = 1e30, bwd = 1e30;
  for (int rep = 0; rep < repeats; ++rep) {
    const int rounds = in_cache ? steps : 1;  // the same number of rows either way
    const auto a = std::chrono::steady_clock::now();
    for (int round = 0; round < rounds; ++round) {
      for (int t = 0; t < T; ++t) {
        const float* h_in[2] = {st[t].h[0].data(), st[t].h[1].data()};
        const float* c_in[2] = {st[t].c[0].data(), st[t].c[1].data()};
        float* h_out[2] = {st[t + 1].h[0].data(), st[t + 1].h[1].data()};
        float* c_out[2] = {st[t + 1].c[0].data(), st[t + 1].c[1].data()};
        for (int64_t r0 = 0; r0 < N; r0 += kBlock) {
          ForwardBlock(net, g[t].data(), h_in, c_in, r0, std::min(kBlock, N - r0),
                       &forward_scratch, h_out, c_out, update[t].data(), saved[t].data());
        }
      }
    }
    const auto b = std::chrono::steady_clock::now();
    for (int round = 0; round < rounds; ++round) {
      for (int t = T - 1; t >= 0; --t) {
        const int next = t + 1;
        const float* h_in[2] = {st[t].h[0].data(), st[t].h[1].data()};
        const float* c_in[2] = {st[t].c[0].data(), st[t].c[1].data()};
        const float* h_new[2] = {st[next].h[0].data(), st[next].h[1].data()};
        const float* c_new[2] = {st[next].c[0].data(), st[next].c[1].data()};
        const float* dh_next[2] = {st[next].dh[0].data(), st[next].dh[1].data()};
        const float* dc_next[2] = {st[next].dc[0].data(), st[next].dc[1].data()};
        float* dh[2] = {st[t].dh[0].data(), st[t].dh[1].data()};
        float* dc[2] = {st[t].dc[0].data(), st[t].dc[1].data()};
        const Grads grads{h_in, c_in, dh_next, dc_next, h_new, c_new, dh, dc, nullptr, du.data(),
                          saved[t].data()};
        for (int64_t r0 = 0; r0 < N; r0 += kBlock) {
          const int64_t n = std::min(kBlock, N - r0);
          if (!memory_only) {
            BackwardBlock(net, g[t].data(), grads, r0, n, &backward_scratch, acc.data(),
                          s.offset.data());
            continue;
          }
          // The same bytes read and written, without the arithmetic.
          v16 sum{};
          auto read = [&](const float* p, int64_t count) {
            for (int64_t i = 0; i + kLanes <= count; i += kLanes) {
              sum += *reinterpret_cast<const v16u*>(p + i);
            }
          };
          read(saved[t].data() + r0 * net.saved, n * net.saved);
          for (int l = 0; l < 2; ++l) {
            const int64_t e = r0 * 20;
            for (const float* p : {h_in[l], c_in[l], dh_next[l], dc_next[l], h_new[l], c_new[l]}) {
              read(p + e, n * 20);
            }
            for (float* p : {dh[l], dc[l]}) {
              for (int64_t i = 0; i + kLanes <= n * 20; i += kLanes) {
                *reinterpret_cast<v16u*>(p + e + i) = sum;
              }
            }
          }
          acc[0] += sum;
        }
      }
    }
    const auto c = std::chrono::steady_clock::now();
    fwd = std::min(fwd, Seconds(a, b));
    bwd = std::min(bwd, Seconds(b, c));
  }
  const double rows = static_cast<double>(N) * steps;
  if (memory_only) {
    std::printf("case=memory_only rows=%ld steps=%d backward_ns_per_row=%.1f\n",
                static_cast<long>(N), steps, 1e9 * bwd / rows);
  } else {
    std::printf("case=%s rows=%ld steps=%d forward_ns_per_row=%.1f backward_ns_per_row=%.1f\n",
                in_cache ? "in_cache" : "through_memory", static_cast<long>(N), steps,
                1e9 * fwd / rows, 1e9 * bwd / rows);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atol(argv[1]) : 15910;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  const int64_t cache_rows = argc > 3 ? std::atol(argv[3]) : 1280;
  std::mt19937 rng(0);
  Parts(&rng, repeats);
  Unroll(cache_rows, 20, true, false, &rng, repeats);
  Unroll(rows, 20, false, false, &rng, repeats);
  Unroll(rows, 20, false, true, &rng, repeats);
  return 0;
}
