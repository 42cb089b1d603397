// Fused multi-step LIF for CPU: one pass over [T, N] per direction instead of T small ops.
//
// Forward, per neuron, for t = 0..T-1 (u starts at 0):
//   h_t = decay * u + I_t;  s_t = (h_t >= threshold);  u = reset(h_t, s_t)
// Backward walks t = T-1..0 with c = dL/du_t carried from step t+1:
//   soft: gh = (gs_t - keep * threshold * c) * sg_t + c
//   hard: gh = (gs_t - keep * h_t * c) * sg_t + c * (1 - s_t)
//   dL/dI_t = gh;  dL/ddecay += gh * u_{t-1};  c = decay * gh
// where sg_t is the surrogate derivative at h_t - threshold and keep = 0 with detach_reset.
// Built with -ffp-contract=off so that h and s equal the eager reference bit for bit.
#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 256;  // neurons whose state stays in a local buffer
constexpr int64_t kGrain = 4096;

template <typename T>
inline T reset_value(T h, T threshold, bool soft) {
  T s = h >= threshold ? T(1) : T(0);
  return soft ? h - threshold * s : h * (T(1) - s);
}

// Surrogate ids follow spikeguide.neurons.kernels.cpu.SURROGATE_IDS; -1 reads precomputed values.
template <typename T>
void surrogate(int sid, T width, const T* x_h, T threshold, const T* pre, T* out, int64_t n) {
  switch (sid) {
    case 0:  // rectangle
      for (int64_t i = 0; i < n; ++i) out[i] = std::abs(x_h[i] - threshold) < width / 2 ? T(1) / width : T(0);
      break;
    case 1:  // triangle
      for (int64_t i = 0; i < n; ++i) out[i] = std::max(T(0), T(1) - std::abs(x_h[i] - threshold) / width) / width;
      break;
    case 2:  // sigmoid
      for (int64_t i = 0; i < n; ++i) {
        T s = T(1) / (T(1) + std::exp(-(x_h[i] - threshold) / width));
        out[i] = s * (T(1) - s) / width;
      }
      break;
    case 3: {  // atan
      T k = T(1) / width, a = T(M_PI / 2) * k;
      for (int64_t i = 0; i < n; ++i) {
        T z = a * (x_h[i] - threshold);
        out[i] = (k / 2) / (T(1) + z * z);
      }
      break;
    }
    case 4: {  // fast sigmoid
      T k = T(1) / width;
      for (int64_t i = 0; i < n; ++i) {
        T d = T(1) + k * std::abs(x_h[i] - threshold);
        out[i] = (k / 2) / (d * d);
      }
      break;
    }
    default:
      std::copy(pre, pre + n, out);
  }
}

// Conversions between the dtype in memory S and the arithmetic's T. bfloat16 goes by its bits
// (rounding to nearest even), written so that GCC vectorizes the loops around it; c10's own
// conversion does not vectorize here and made the bfloat16 backward 4x slower than float32's.
template <typename T, typename S>
inline T load_as(S v) { return T(v); }
template <>
inline float load_as<float, c10::BFloat16>(c10::BFloat16 v) {
  uint32_t bits = uint32_t(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <typename S, typename T>
inline S store_as(T v) { return S(v); }
template <>
inline c10::BFloat16 store_as<c10::BFloat16, float>(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = v != v ? 0x7FC00000u : bits + 0x7FFFu + ((bits >> 16) & 1u);
  return c10::BFloat16(uint16_t(bits >> 16), c10::BFloat16::from_bits());
}

// S is the dtype in memory, T = at::opmath_type<S> the one of the arithmetic: float for bfloat16
// and float16 (their membrane stays float32 in registers; currents, spikes, the saved membrane
// and gradients are read and written as S, as the Triton kernels do), S itself otherwise.
// Where S is narrower than T, the saved membrane is first kept on its spike's side of the
// threshold: at most `below` (the largest S under it) without a spike, at least `above` (the
// smallest S at or over it) with one, so that backward, which tests h >= threshold, sees the
// forward's spikes (rounding alone could carry a membrane just under the threshold onto it).
template <typename S, typename T = at::opmath_type<S>>
void forward_kernel(const S* I, int64_t stride_t, S* s, S* h, int64_t steps, int64_t N, T decay,
                    T threshold, T below, T above, bool soft) {
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    T u[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      std::fill(u, u + n, T(0));
      for (int64_t t = 0; t < steps; ++t) {
        const S* it = I + t * stride_t + b;
        S* st = s + t * N + b;
        S* ht = h ? h + t * N + b : nullptr;
        auto step = [&](auto save) {  // save: a compile-time flag, so that the loop vectorizes
          for (int64_t i = 0; i < n; ++i) {
            T x = decay * u[i];
            x = x + load_as<T>(it[i]);
            T sp = x >= threshold ? T(1) : T(0);
            st[i] = store_as<S>(sp);
            if constexpr (decltype(save)::value) {
              if constexpr (std::is_same_v<S, T>) {
                ht[i] = x;
              } else {  // comparisons that leave a NaN as it is
                ht[i] = store_as<S>(sp > T(0) ? (x < above ? above : x) : (x > below ? below : x));
              }
            }
            u[i] = soft ? x - threshold * sp : x * (T(1) - sp);
          }
        };
        if (ht) step(std::true_type{}); else step(std::false_type{});
      }
    }
  });
}

// n values of src as T: src itself when S is T, else converted into buf.
template <typename T, typename S>
inline const T* as_compute(const S* src, T* buf, int64_t n) {
  if constexpr (std::is_same_v<S, T>) {
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = load_as<T>(src[i]);
    return buf;
  }
}

template <typename S, typename T = at::opmath_type<S>>
double backward_kernel(const S* gs, const S* h, const S* pre, S* gI, int64_t steps, int64_t N,
                       T decay, T threshold, bool soft, bool detach, int sid, T width,
                       bool want_decay) {
  const T keep = detach ? T(0) : T(1);
  return at::parallel_reduce(0, N, kGrain, 0.0, [&](int64_t begin, int64_t end, double acc) {
    T c[kBlock], sg[kBlock], g[kBlock], h_buf[kBlock], pre_buf[kBlock], hp_buf[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      std::fill(c, c + n, T(0));
      for (int64_t t = steps - 1; t >= 0; --t) {
        const T* ht = as_compute(h + t * N + b, h_buf, n);
        const S* gt = gs + t * N + b;
        S* git = gI + t * N + b;
        surrogate(sid, width, ht, threshold, pre ? as_compute(pre + t * N + b, pre_buf, n) : nullptr,
                  sg, n);
        auto step = [&](auto soft_reset) {  // a compile-time flag, so that the loop vectorizes
          for (int64_t i = 0; i < n; ++i) {
            const T x = ht[i], gin = load_as<T>(gt[i]);
            T gh;
            if constexpr (decltype(soft_reset)::value) {
              gh = (gin - keep * threshold * c[i]) * sg[i] + c[i];
            } else {
              T sp = x >= threshold ? T(1) : T(0);
              gh = (gin - keep * x * c[i]) * sg[i] + c[i] * (T(1) - sp);
            }
            g[i] = gh;
            c[i] = decay * gh;
          }
        };
        if (soft) step(std::true_type{}); else step(std::false_type{});
        for (int64_t i = 0; i < n; ++i) git[i] = store_as<S>(g[i]);
        if (want_decay && t > 0) {
          const T* hp = as_compute(h + (t - 1) * N + b, hp_buf, n);
          for (int64_t i = 0; i < n; ++i)
            acc += double(g[i]) * double(reset_value(hp[i], threshold, soft));
        }
      }
    }
    return acc;
  }, std::plus<double>());
}

// current: [T, N] with rows contiguous (row stride N, or 0 for a broadcast static input);
// spikes and h (h may be undefined: not saved) are contiguous [T, N] outputs. below / above: the
// values of the tensors' dtype next to the threshold (forward_kernel; unused for float32/64).
void forward(torch::Tensor current, torch::Tensor spikes, c10::optional<torch::Tensor> h,
             double decay, double threshold, double below, double above, bool soft) {
  const int64_t steps = current.size(0), N = current.size(1);
  TORCH_CHECK(current.stride(1) == 1 && (steps == 1 || current.stride(0) == N || current.stride(0) == 0),
              "lif_cpu.forward needs rows of N contiguous elements");
  TORCH_CHECK(spikes.is_contiguous() && spikes.scalar_type() == current.scalar_type() &&
              (!h.has_value() || (h->is_contiguous() && h->scalar_type() == current.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, current.scalar_type(), "lif_cpu_forward", [&] {
    using T = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t>(current.data_ptr<scalar_t>(), current.stride(0), spikes.data_ptr<scalar_t>(),
                             h.has_value() ? h->data_ptr<scalar_t>() : nullptr, steps, N,
                             T(decay), T(threshold), T(below), T(above), soft);
  });
}

// Writes dL/dI into grad_i [T, N]; returns dL/ddecay (0 unless want_decay).
double backward(torch::Tensor grad_s, torch::Tensor h, c10::optional<torch::Tensor> precomputed,
                torch::Tensor grad_i, double decay, double threshold, bool soft, bool detach,
                int64_t sid, double width, bool want_decay) {
  grad_s = grad_s.contiguous();
  auto pre = precomputed.has_value() ? precomputed->contiguous() : torch::Tensor();
  TORCH_CHECK(h.is_contiguous() && grad_i.is_contiguous() && grad_i.scalar_type() == h.scalar_type() &&
              grad_s.scalar_type() == h.scalar_type());
  double gd = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "lif_cpu_backward", [&] {
    using T = at::opmath_type<scalar_t>;
    gd = backward_kernel<scalar_t>(grad_s.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                   pre.defined() ? pre.data_ptr<scalar_t>() : nullptr,
                                   grad_i.data_ptr<scalar_t>(), h.size(0), h.size(1), T(decay),
                                   T(threshold), soft, detach, int(sid), T(width), want_decay);
  });
  return gd;
}

// The spiking pass of rate-based BP (spikeguide.ratepass.eligibility.record_chunk, the eager
// reference): the forward above plus, per neuron, the spike count and the eligibility
//   kappa = decay * kappa + 1;  e += sg(h_t - threshold) * kappa;  kappa *= a_t
// with the reset gain a_t of the rule (1, 1 - threshold * sg, 1 - s, 1 - s - h * sg), and e /= T
// at the end. The operations are those of the reference in the same order.
enum class Rule { kSoftDetached, kSoft, kHardDetached, kHard };

// One step of a block of n neurons from its charged membrane h and surrogate derivative sg:
// spikes, spike counts (kept as floats: exact below 2^24 steps, and one type keeps the loop
// vectorized), eligibility sum and trace, reset membrane.
template <typename T, Rule R>
inline void record_step(const T* __restrict h, const T* __restrict sg, T* __restrict st,
                        T* __restrict n_spikes, T* __restrict e, T* __restrict kappa,
                        T* __restrict u, int64_t n, T threshold) {
  constexpr bool soft = R == Rule::kSoftDetached || R == Rule::kSoft;
  for (int64_t i = 0; i < n; ++i) {
    const T sp = h[i] >= threshold ? T(1) : T(0);
    st[i] = sp;
    n_spikes[i] += sp;
    e[i] = e[i] + sg[i] * kappa[i];
    if constexpr (R == Rule::kSoft) kappa[i] = kappa[i] + -threshold * kappa[i] * sg[i];
    if constexpr (R == Rule::kHardDetached) kappa[i] = kappa[i] - kappa[i] * sp;
    if constexpr (R == Rule::kHard) kappa[i] = kappa[i] * ((T(1) - sp) - h[i] * sg[i]);
    u[i] = soft ? h[i] - threshold * sp : h[i] - h[i] * sp;
  }
}

template <typename T, typename C, Rule R>
void record_kernel(const T* I, int64_t stride_t, T* s, C* counts, T* elig, int64_t steps,
                   int64_t N, T decay, T threshold, int sid, T width) {
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    T u[kBlock], h[kBlock], kappa[kBlock], e[kBlock], sg[kBlock], n_spikes[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      for (T* state : {u, kappa, e, n_spikes}) std::fill(state, state + n, T(0));
      for (int64_t t = 0; t < steps; ++t) {
        const T* it = I + t * stride_t + b;
        for (int64_t i = 0; i < n; ++i) {
          T x = decay * u[i];
          h[i] = x + it[i];
          kappa[i] = kappa[i] * decay + T(1);
        }
        surrogate(sid, width, h, threshold, static_cast<const T*>(nullptr), sg, n);
        record_step<T, R>(h, sg, s + t * N + b, n_spikes, e, kappa, u, n, threshold);
      }
      for (int64_t i = 0; i < n; ++i) {
        counts[b + i] = static_cast<C>(n_spikes[i]);
        elig[b + i] = e[i] / T(steps);
      }
    }
  });
}

template <typename T, typename C>
void record_typed(const torch::Tensor& current, torch::Tensor& spikes, torch::Tensor& counts,
                  torch::Tensor& eligibility, T decay, T threshold, bool soft, bool detach, int sid,
                  T width) {
  const Rule rule = soft ? (detach ? Rule::kSoftDetached : Rule::kSoft)
                         : (detach ? Rule::kHardDetached : Rule::kHard);
  auto run = [&](auto kernel) {
    kernel(current.data_ptr<T>(), current.stride(0), spikes.data_ptr<T>(), counts.data_ptr<C>(),
           eligibility.data_ptr<T>(), current.size(0), current.size(1), decay, threshold, sid,
           width);
  };
  switch (rule) {
    case Rule::kSoftDetached: run(record_kernel<T, C, Rule::kSoftDetached>); break;
    case Rule::kSoft: run(record_kernel<T, C, Rule::kSoft>); break;
    case Rule::kHardDetached: run(record_kernel<T, C, Rule::kHardDetached>); break;
    case Rule::kHard: run(record_kernel<T, C, Rule::kHard>); break;
  }
}

// current: [T, N] rows as for forward; spikes: contiguous [T, N]; counts (uint8 or int32) and
// eligibility: contiguous [N]. sid: a built-in surrogate (0..4).
void record(torch::Tensor current, torch::Tensor spikes, torch::Tensor counts,
            torch::Tensor eligibility, double decay, double threshold, bool soft, bool detach,
            int64_t sid, double width) {
  const int64_t steps = current.size(0), N = current.size(1);
  TORCH_CHECK(current.stride(1) == 1 &&
              (steps == 1 || current.stride(0) == N || current.stride(0) == 0),
              "lif_cpu.record needs rows of N contiguous elements");
  TORCH_CHECK(spikes.is_contiguous() && eligibility.is_contiguous() && counts.is_contiguous() &&
              spikes.scalar_type() == current.scalar_type() &&
              eligibility.scalar_type() == current.scalar_type() && counts.numel() == N);
  TORCH_CHECK(sid >= 0 && sid <= 4, "lif_cpu.record evaluates the built-in surrogates only");
  TORCH_CHECK(counts.scalar_type() == torch::kUInt8 || counts.scalar_type() == torch::kInt32,
              "lif_cpu.record counts in uint8 or int32");
  AT_DISPATCH_FLOATING_TYPES(current.scalar_type(), "lif_cpu_record", [&] {
    auto typed = [&](auto count_type) {
      record_typed<scalar_t, decltype(count_type)>(current, spikes, counts, eligibility,
                                                   scalar_t(decay), scalar_t(threshold), soft,
                                                   detach, int(sid), scalar_t(width));
    };
    if (counts.scalar_type() == torch::kUInt8) typed(uint8_t{}); else typed(int32_t{});
  });
}

// Batch norm on the input currents fused with the LIF (spikeguide.neurons.kernels.bn_lif).
// x: [T, N] rows as for forward; the channel of neuron n is (n / inner) % C (inner = H * W for
// NCHW rows, 1 for channels_last and [T, B, C] rows). The current is I = x * alpha_c + beta_c,
// the order of operations of PyTorch's CPU batch norm. Nothing is saved but x: backward
// recomputes h per block of neurons.
// The channels of the n neurons from b: ch[i] = ((b + i) / inner) % C, without a division each.
inline void block_channels(int64_t b, int64_t n, int64_t inner, int64_t C, int32_t* ch) {
  int64_t rem = b % inner, c = (b / inner) % C;
  for (int64_t i = 0; i < n; ++i) {
    ch[i] = int32_t(c);
    if (++rem == inner) {
      rem = 0;
      if (++c == C) c = 0;
    }
  }
}

template <typename T>
inline void gather(const int32_t* ch, int64_t n, const T* per_channel, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = per_channel[ch[i]];
}

template <typename T>
void bn_forward_kernel(const T* x, int64_t stride_t, T* s, int64_t steps, int64_t N, int64_t inner,
                       int64_t C, const T* alpha, const T* beta, T decay, T threshold, bool soft) {
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    T u[kBlock], a[kBlock], c[kBlock];
    int32_t ch[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      block_channels(b, n, inner, C, ch);
      gather(ch, n, alpha, a);
      gather(ch, n, beta, c);
      std::fill(u, u + n, T(0));
      for (int64_t t = 0; t < steps; ++t) {
        const T* xt = x + t * stride_t + b;
        T* st = s + t * N + b;
        for (int64_t i = 0; i < n; ++i) {
          T cur = xt[i] * a[i];
          cur = cur + c[i];
          T h = decay * u[i];
          h = h + cur;
          T sp = h >= threshold ? T(1) : T(0);
          st[i] = sp;
          u[i] = soft ? h - threshold * sp : h * (T(1) - sp);
        }
      }
    }
  });
}

// The statistics pass: per chunk of kGrain neurons (a fixed split, so that sums do not depend on
// threads), the per-channel sums of x and x^2 in float64 into sums[chunk][0 or 1][C].
template <typename T>
void bn_stats_kernel(const T* x, int64_t stride_t, int64_t steps, int64_t N, int64_t inner,
                     int64_t C, double* sums) {
  const int64_t chunks = (N + kGrain - 1) / kGrain;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    double s1[kBlock], s2[kBlock];
    int32_t ch[kBlock];
    for (int64_t chunk = first; chunk < last; ++chunk) {
      double* ch_sums = sums + chunk * 2 * C;
      for (int64_t b = chunk * kGrain; b < std::min(N, (chunk + 1) * kGrain); b += kBlock) {
        const int64_t n = std::min(kBlock, N - b);
        block_channels(b, n, inner, C, ch);
        std::fill(s1, s1 + n, 0.0);
        std::fill(s2, s2 + n, 0.0);
        for (int64_t t = 0; t < steps; ++t) {
          const T* __restrict xt = x + t * stride_t + b;
          for (int64_t i = 0; i < n; ++i) {
            const double v = xt[i];
            s1[i] += v;
            s2[i] += v * v;
          }
        }
        for (int64_t i = 0; i < n; ++i) {
          ch_sums[ch[i]] += s1[i];
          ch_sums[C + ch[i]] += s2[i];
        }
      }
    }
  });
}

// Pass 1: per chunk of kGrain neurons (a fixed split, so that sums do not depend on threads),
// recompute h, run the LIF backward into g = dL/dI, and sum per channel g and g * xhat
// (xhat = (x - mean_c) * invstd_c) into sums[chunk][0 or 1][C], and dL/ddecay into
// decay_sums[chunk].
// One step of the LIF backward over n neurons (as in backward_kernel), carry = dL/du from t + 1.
// Kept out of line: inlined into bn_backward_sums, GCC does not vectorize it.
template <typename T, bool soft>
__attribute__((noinline)) void lif_backward_step(const T* __restrict ht, const T* __restrict gt,
                                                 const T* __restrict sg, T* __restrict git,
                                                 T* __restrict carry, int64_t n, T keep,
                                                 T threshold, T decay) {
  for (int64_t i = 0; i < n; ++i) {
    T gh;
    if constexpr (soft) {
      gh = (gt[i] - keep * threshold * carry[i]) * sg[i] + carry[i];
    } else {
      T sp = ht[i] >= threshold ? T(1) : T(0);
      gh = (gt[i] - keep * ht[i] * carry[i]) * sg[i] + carry[i] * (T(1) - sp);
    }
    git[i] = gh;
    carry[i] = decay * gh;
  }
}

template <typename T, bool soft>
void bn_backward_sums(const T* gs, const T* x, int64_t stride_t, T* g, int64_t steps, int64_t N,
                      int64_t inner, int64_t C, const T* alpha, const T* beta, const T* mean,
                      const T* invstd, T decay, T threshold, bool detach, int sid, T width,
                      bool want_decay, double* sums, double* decay_sums) {
  const T keep = detach ? T(0) : T(1);
  const int64_t chunks = (N + kGrain - 1) / kGrain;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    std::vector<T> hs(steps * kBlock);
    T a[kBlock], c[kBlock], m[kBlock], r[kBlock], carry[kBlock], sg[kBlock], sum_g[kBlock],
        sum_gx[kBlock];
    int32_t ch[kBlock];
    for (int64_t chunk = first; chunk < last; ++chunk) {
      double* ch_sums = sums + chunk * 2 * C;
      double acc_decay = 0;
      for (int64_t b = chunk * kGrain; b < std::min(N, (chunk + 1) * kGrain); b += kBlock) {
        const int64_t n = std::min(kBlock, N - b);
        block_channels(b, n, inner, C, ch);
        gather(ch, n, alpha, a);
        gather(ch, n, beta, c);
        gather(ch, n, mean, m);
        gather(ch, n, invstd, r);
        std::fill(carry, carry + n, T(0));
        for (int64_t t = 0; t < steps; ++t) {  // the forward, keeping h in hs
          const T* __restrict xt = x + t * stride_t + b;
          T* __restrict ht = hs.data() + t * kBlock;
          for (int64_t i = 0; i < n; ++i) {
            T cur = xt[i] * a[i];
            cur = cur + c[i];
            T h = decay * carry[i];
            h = h + cur;
            ht[i] = h;
            carry[i] = reset_value(h, threshold, soft);
          }
        }
        std::fill(carry, carry + n, T(0));
        std::fill(sum_g, sum_g + n, T(0));
        std::fill(sum_gx, sum_gx + n, T(0));
        for (int64_t t = steps - 1; t >= 0; --t) {
          const T* __restrict ht = hs.data() + t * kBlock;
          const T* __restrict gt = gs + t * N + b;
          const T* __restrict xt = x + t * stride_t + b;
          T* __restrict git = g + t * N + b;
          surrogate(sid, width, ht, threshold, static_cast<const T*>(nullptr), sg, n);
          lif_backward_step<T, soft>(ht, gt, sg, git, carry, n, keep, threshold, decay);
          for (int64_t i = 0; i < n; ++i) {
            sum_g[i] += git[i];
            sum_gx[i] += git[i] * ((xt[i] - m[i]) * r[i]);
          }
          if (want_decay && t > 0) {
            const T* hp = hs.data() + (t - 1) * kBlock;
            for (int64_t i = 0; i < n; ++i)
              acc_decay += double(git[i]) * double(reset_value(hp[i], threshold, soft));
          }
        }
        for (int64_t i = 0; i < n; ++i) {
          ch_sums[ch[i]] += sum_g[i];
          ch_sums[C + ch[i]] += sum_gx[i];
        }
      }
      decay_sums[chunk] = acc_decay;
    }
  });
}

// Pass 2, in place: g = alpha_c * (g - k1_c - xhat * k2_c).
template <typename T>
void bn_backward_input(const T* x, int64_t stride_t, T* g, int64_t steps, int64_t N, int64_t inner,
                       int64_t C, const T* alpha, const T* mean, const T* invstd, const T* k1,
                       const T* k2) {
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    T a[kBlock], m[kBlock], r[kBlock], c1[kBlock], c2[kBlock];
    int32_t ch[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      block_channels(b, n, inner, C, ch);
      gather(ch, n, alpha, a);
      gather(ch, n, mean, m);
      gather(ch, n, invstd, r);
      gather(ch, n, k1, c1);
      gather(ch, n, k2, c2);
      for (int64_t t = 0; t < steps; ++t) {
        const T* xt = x + t * stride_t + b;
        T* gt = g + t * N + b;
        for (int64_t i = 0; i < n; ++i)
          gt[i] = a[i] * (gt[i] - c1[i] - ((xt[i] - m[i]) * r[i]) * c2[i]);
      }
    }
  });
}

void check_rows(const torch::Tensor& x, const char* what) {
  const int64_t steps = x.size(0), N = x.size(1);
  TORCH_CHECK(x.stride(1) == 1 && (steps == 1 || x.stride(0) == N || x.stride(0) == 0), what,
              " needs rows of N contiguous elements");
}

// Per-channel sums [2, C] of x and x^2, in float64.
torch::Tensor bn_stats(torch::Tensor x, int64_t inner, int64_t C) {
  check_rows(x, "lif_cpu.bn_stats");
  const int64_t N = x.size(1), chunks = (N + kGrain - 1) / kGrain;
  auto sums = torch::zeros({chunks, 2, C}, torch::TensorOptions().dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_cpu_bn_stats", [&] {
    bn_stats_kernel<scalar_t>(x.data_ptr<scalar_t>(), x.stride(0), x.size(0), N, inner, C,
                              sums.data_ptr<double>());
  });
  return sums.sum(0);
}

// spikes: contiguous [T, N]; alpha, beta: [C] of x's dtype.
void bn_forward(torch::Tensor x, torch::Tensor spikes, torch::Tensor alpha, torch::Tensor beta,
                int64_t inner, double decay, double threshold, bool soft) {
  check_rows(x, "lif_cpu.bn_forward");
  TORCH_CHECK(spikes.is_contiguous() && spikes.scalar_type() == x.scalar_type() &&
              alpha.is_contiguous() && beta.is_contiguous() && alpha.numel() == beta.numel());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_cpu_bn_forward", [&] {
    bn_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), x.stride(0), spikes.data_ptr<scalar_t>(),
                                x.size(0), x.size(1), inner, alpha.numel(),
                                alpha.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(),
                                scalar_t(decay), scalar_t(threshold), soft);
  });
}

// Writes dL/dI into grad [T, N]; returns (per-channel sums [2, C] of dL/dI and dL/dI * xhat, in
// float64; dL/ddecay as a float64 scalar tensor).
std::vector<torch::Tensor> bn_backward_sums_op(
    torch::Tensor grad_s, torch::Tensor x, torch::Tensor grad, torch::Tensor alpha,
    torch::Tensor beta, torch::Tensor mean, torch::Tensor invstd, int64_t inner, double decay,
    double threshold, bool soft, bool detach, int64_t sid, double width, bool want_decay) {
  check_rows(x, "lif_cpu.bn_backward_sums");
  grad_s = grad_s.contiguous();
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == x.scalar_type() &&
              grad_s.scalar_type() == x.scalar_type());
  TORCH_CHECK(sid >= 0 && sid <= 4, "lif_cpu.bn_backward_sums evaluates the built-in surrogates only");
  const int64_t N = x.size(1), C = alpha.numel(), chunks = (N + kGrain - 1) / kGrain;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto sums = torch::zeros({chunks, 2, C}, f64);
  auto decay_sums = torch::zeros({chunks}, f64);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_cpu_bn_backward_sums", [&] {
    auto run = [&](auto kernel) {
      kernel(grad_s.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), x.stride(0),
             grad.data_ptr<scalar_t>(), x.size(0), N, inner, C, alpha.data_ptr<scalar_t>(),
             beta.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), invstd.data_ptr<scalar_t>(),
             scalar_t(decay), scalar_t(threshold), detach, int(sid), scalar_t(width), want_decay,
             sums.data_ptr<double>(), decay_sums.data_ptr<double>());
    };
    if (soft) run(bn_backward_sums<scalar_t, true>); else run(bn_backward_sums<scalar_t, false>);
  });
  return {sums.sum(0), decay_sums.sum()};
}

void bn_backward_input_op(torch::Tensor x, torch::Tensor grad, torch::Tensor alpha,
                          torch::Tensor mean, torch::Tensor invstd, torch::Tensor k1,
                          torch::Tensor k2, int64_t inner) {
  check_rows(x, "lif_cpu.bn_backward_input");
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_cpu_bn_backward_input", [&] {
    bn_backward_input<scalar_t>(x.data_ptr<scalar_t>(), x.stride(0), grad.data_ptr<scalar_t>(),
                                x.size(0), x.size(1), inner, alpha.numel(),
                                alpha.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
                                invstd.data_ptr<scalar_t>(), k1.data_ptr<scalar_t>(),
                                k2.data_ptr<scalar_t>());
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused multi-step LIF forward");
  m.def("backward", &backward, "fused multi-step LIF backward");
  m.def("record", &record, "spiking pass of rate-based BP: spikes, spike counts, eligibility");
  m.def("bn_stats", &bn_stats, "fused BN-LIF: per-channel sums of x and x^2");
  m.def("bn_forward", &bn_forward, "batch norm fused with the LIF forward");
  m.def("bn_backward_sums", &bn_backward_sums_op, "fused BN-LIF backward, pass 1");
  m.def("bn_backward_input", &bn_backward_input_op, "fused BN-LIF backward, pass 2");
}
