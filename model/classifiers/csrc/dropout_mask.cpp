// Dropout masks drawn from torch's default CPU generator exactly as Tensor.bernoulli_(p) draws
// them, in less time (model/benchmark.py measures it). nn.GRU's CPU dropout is `noise.bernoulli_(1 - p)`, which turns two
// 32-bit MT19937 words into one double per element in a serial loop;
// here the words come in blocks of 624 from vectorised loops. The generator is left exactly where
// bernoulli_ leaves it, so `--gru_impl fused` and `torch` train on the same masks and the same
// random stream afterwards. fused_gru.py checks this against bernoulli_ before first use.
#include <torch/extension.h>
#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>
#include <cmath>
#include <mutex>

namespace {
constexpr int kStateWords = 624, kShift = 397;   // MT19937's N and M

inline uint32_t twist(uint32_t u, uint32_t v) {
  return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

// MT19937's state update, the same recurrence as at::mt19937's, in loops gcc vectorises
void regenerate(uint32_t* __restrict__ s) {
  for (int j = 0; j < kStateWords - kShift; ++j) s[j] = s[j + kShift] ^ twist(s[j], s[j + 1]);
  for (int j = kStateWords - kShift; j < kStateWords - 1; ++j)
    s[j] = s[j + kShift - kStateWords] ^ twist(s[j], s[j + 1]);
  s[kStateWords - 1] = s[kShift - 1] ^ twist(s[kStateWords - 1], s[0]);
}

inline uint32_t temper(uint32_t y) {
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  return y ^ (y >> 18);
}

// at::mt19937 hands out state_[next_] and regenerates when --left_ reaches 0, so left_ - 1 words
// are still unused. bernoulli_ keeps an element when (first word << 32 | second word), cut to its
// low 53 bits and divided by 2^53, is below p; in integers: below ceil(p 2^53).
template <typename T>
void fill_mask(T* out, int64_t n, double p, at::mt19937_data_pod& st) {
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(std::ldexp(p, 53)));
  constexpr uint64_t kLow53 = (uint64_t(1) << 53) - 1;
  uint32_t words[kStateWords + 1];
  int carried = 0;                  // an odd word left over from the previous block
  for (int64_t i = 0; i < n;) {
    if (st.left_ == 1) {
      regenerate(st.state_.data());
      st.left_ = kStateWords + 1;
      st.next_ = 0;
    }
    const int take = static_cast<int>(std::min<int64_t>(st.left_ - 1, 2 * (n - i) - carried));
    for (int k = 0; k < take; ++k) words[carried + k] = temper(st.state_[st.next_ + k]);
    st.next_ += take;
    st.left_ -= take;
    const int total = carried + take, pairs = total / 2;
    for (int k = 0; k < pairs; ++k) {
      const uint64_t bits = ((uint64_t(words[2 * k]) << 32) | words[2 * k + 1]) & kLow53;
      out[i + k] = bits < threshold ? T(1) : T(0);
    }
    i += pairs;
    carried = total - 2 * pairs;
    if (carried) words[0] = words[total - 1];
  }
}
}  // namespace

// out.bernoulli_(p) for a contiguous CPU tensor, with the same draws from the default generator
void bernoulli_mask_(torch::Tensor out, double p) {
  TORCH_CHECK(out.is_contiguous() && out.device().is_cpu(), "the mask must be a contiguous CPU tensor");
  TORCH_CHECK(p >= 0 && p <= 1, "p must be in [0, 1]");
  auto* generator = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(generator->mutex_);
  at::mt19937 engine = generator->engine();
  at::mt19937_data_pod state = engine.data();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "bernoulli_mask_", [&] {
    fill_mask<scalar_t>(out.data_ptr<scalar_t>(), out.numel(), p, state);
  });
  engine.set_data(state);
  generator->set_engine(engine);
}
