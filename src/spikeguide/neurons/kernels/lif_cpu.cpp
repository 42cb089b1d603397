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
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

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

template <typename T>
void forward_kernel(const T* I, int64_t stride_t, T* s, T* h, int64_t steps, int64_t N, T decay,
                    T threshold, bool soft) {
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    T u[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      std::fill(u, u + n, T(0));
      for (int64_t t = 0; t < steps; ++t) {
        const T* it = I + t * stride_t + b;
        T* st = s + t * N + b;
        T* ht = h ? h + t * N + b : nullptr;
        for (int64_t i = 0; i < n; ++i) {
          T x = decay * u[i];
          x = x + it[i];
          T sp = x >= threshold ? T(1) : T(0);
          st[i] = sp;
          if (ht) ht[i] = x;
          u[i] = soft ? x - threshold * sp : x * (T(1) - sp);
        }
      }
    }
  });
}

template <typename T>
double backward_kernel(const T* gs, const T* h, const T* pre, T* gI, int64_t steps, int64_t N,
                       T decay, T threshold, bool soft, bool detach, int sid, T width,
                       bool want_decay) {
  const T keep = detach ? T(0) : T(1);
  return at::parallel_reduce(0, N, kGrain, 0.0, [&](int64_t begin, int64_t end, double acc) {
    T c[kBlock], sg[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      std::fill(c, c + n, T(0));
      for (int64_t t = steps - 1; t >= 0; --t) {
        const T* ht = h + t * N + b;
        const T* gt = gs + t * N + b;
        T* git = gI + t * N + b;
        surrogate(sid, width, ht, threshold, pre ? pre + t * N + b : nullptr, sg, n);
        for (int64_t i = 0; i < n; ++i) {
          T x = ht[i];
          T gh;
          if (soft) {
            gh = (gt[i] - keep * threshold * c[i]) * sg[i] + c[i];
          } else {
            T sp = x >= threshold ? T(1) : T(0);
            gh = (gt[i] - keep * x * c[i]) * sg[i] + c[i] * (T(1) - sp);
          }
          git[i] = gh;
          c[i] = decay * gh;
        }
        if (want_decay && t > 0) {
          const T* hp = h + (t - 1) * N + b;
          for (int64_t i = 0; i < n; ++i)
            acc += double(git[i]) * double(reset_value(hp[i], threshold, soft));
        }
      }
    }
    return acc;
  }, std::plus<double>());
}

// current: [T, N] with rows contiguous (row stride N, or 0 for a broadcast static input);
// spikes and h (h may be undefined: not saved) are contiguous [T, N] outputs.
void forward(torch::Tensor current, torch::Tensor spikes, c10::optional<torch::Tensor> h,
             double decay, double threshold, bool soft) {
  const int64_t steps = current.size(0), N = current.size(1);
  TORCH_CHECK(current.stride(1) == 1 && (steps == 1 || current.stride(0) == N || current.stride(0) == 0),
              "lif_cpu.forward needs rows of N contiguous elements");
  TORCH_CHECK(spikes.is_contiguous() && spikes.scalar_type() == current.scalar_type() &&
              (!h.has_value() || (h->is_contiguous() && h->scalar_type() == current.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES(current.scalar_type(), "lif_cpu_forward", [&] {
    forward_kernel<scalar_t>(current.data_ptr<scalar_t>(), current.stride(0), spikes.data_ptr<scalar_t>(),
                             h.has_value() ? h->data_ptr<scalar_t>() : nullptr, steps, N,
                             scalar_t(decay), scalar_t(threshold), soft);
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
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lif_cpu_backward", [&] {
    gd = backward_kernel<scalar_t>(grad_s.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                   pre.defined() ? pre.data_ptr<scalar_t>() : nullptr,
                                   grad_i.data_ptr<scalar_t>(), h.size(0), h.size(1), scalar_t(decay),
                                   scalar_t(threshold), soft, detach, int(sid), scalar_t(width),
                                   want_decay);
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused multi-step LIF forward");
  m.def("backward", &backward, "fused multi-step LIF backward");
  m.def("record", &record, "spiking pass of rate-based BP: spikes, spike counts, eligibility");
}
