// The W_hh recurrence of one GRU layer, forward and backward, as a tight loop per direction.
//
// Everything that is not sequential (input projections, weight gradients) is done by the
// caller as whole-sequence matrix products; only h_t = f(h_{t-1}) is stepped here.
// Equations are nn.GRU's, gate order (r, z, n), reset gate applied to (W_hn h + b_hn):
//   r = sigmoid(gi_r + gh_r)   z = sigmoid(gi_z + gh_z)   n = tanh(gi_n + r * gh_n)
//   h' = (1 - z) * n + z * h,  with gh = W_hh h + b_hh and gi = W_ih x + b_ih.
// A reverse direction steps t = S-1 .. 0; every array stays in natural time order, so the
// caller never flips a sequence.
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <optional>
#include <cstring>
#include <vector>

// A row-major (K, N) matrix for repeated products with vectors: its columns in blocks of NB, each
// block stored as one contiguous (K, NB) slab, so a block's k loop streams through memory; the
// last N % NB columns stay in the original matrix.
template <typename T>
struct BlockedMatrix {
  // may_alias and the element's alignment: a Vec may be read and written straight from any T
  // array. Copying through a Vec temporary instead (memcpy) let gcc 12 tuned for AMD Zen split
  // each load into two 16-byte stores and one 32-byte reload, a store-forwarding stall on every
  // product term that made the whole kernel many times slower (python -m model.benchmark shows it).
  typedef T Vec __attribute__((vector_size(32), aligned(alignof(T)), may_alias));
  static constexpr int64_t L = 32 / sizeof(T), NV = 8, NB = NV * L;   // eight 256-bit vectors

  BlockedMatrix(const T* mat, int64_t K, int64_t N) : mat(mat), K(K), N(N), blocks(N / NB) {
    slabs.resize(blocks * K * NB);
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t k = 0; k < K; ++k)
        std::memcpy(&slabs[(blk * K + k) * NB], mat + k * N + blk * NB, NB * sizeof(T));
  }

  // out[n] = init[n] + sum_k mat[k, n] * vec[k]. A block's sums stay in eight registers over the
  // whole k loop and are stored once, which keeps both FMA units busy. The (K, N) matrix is about
  // as big as L1 (48 KiB at H = 64, float32), so sweeping it in one direction every step evicts
  // each line just before it is needed again; `backwards` sweeps blocks and rows last to first,
  // and alternating it on successive steps starts each sweep on what the previous one left in L1.
  void matvec_add(const T* vec, const T* init, T* out, bool backwards) const {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t blk = backwards ? blocks - 1 - b : b, n0 = blk * NB;
      const T* slab = slabs.data() + blk * K * NB;
      Vec acc[NV];
      for (int64_t i = 0; i < NV; ++i) acc[i] = *reinterpret_cast<const Vec*>(init + n0 + i * L);
      for (int64_t j = 0; j < K; ++j) {
        const int64_t k = backwards ? K - 1 - j : j;
        const T v = vec[k];
        const T* row = slab + k * NB;
        for (int64_t i = 0; i < NV; ++i) acc[i] += *reinterpret_cast<const Vec*>(row + i * L) * v;
      }
      for (int64_t i = 0; i < NV; ++i) *reinterpret_cast<Vec*>(out + n0 + i * L) = acc[i];
    }
    const int64_t rest = blocks * NB;
    if (rest == N) return;
    for (int64_t n = rest; n < N; ++n) out[n] = init[n];
    for (int64_t k = 0; k < K; ++k) {
      const T v = vec[k];
      const T* row = mat + k * N;
      for (int64_t n = rest; n < N; ++n) out[n] += row[n] * v;
    }
  }

  const T* mat;
  int64_t K, N, blocks;
  std::vector<T> slabs;
};

// The widest vectors this build's target has (the kernel is compiled with -march=native for the
// CPU it runs on): 512-bit where AVX-512 is, 256-bit otherwise.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif

// A row-major (K, N) matrix for products with blocks of rows, A (M, K) x mat: its columns in
// panels of NB, each a contiguous (K, NB) slab, and the product done MR rows of A at a time, in
// MR x NV vector accumulators that stay in registers over the whole k loop. Each weight vector
// loaded then feeds MR multiply-adds instead of one: many windows stepped side by side (a row
// each) run at the speed of the FMA units rather than of the loads, which bound a matrix-vector
// product (one load per multiply-add). The last N % NB columns stay in the original matrix.
template <typename T>
struct PanelMatrix {
  typedef T Vec __attribute__((vector_size(kVecBytes), aligned(alignof(T)), may_alias));
  static constexpr int64_t L = kVecBytes / sizeof(T);
  // accumulators + a slab row + one broadcast fit the register file: 6 x 4 + 4 + 1 of AVX-512's
  // 32 vector registers, 6 x 2 + 2 + 1 of AVX2's 16
  static constexpr int64_t MR = 6, NV = kVecBytes == 64 ? 4 : 2, NB = NV * L;

  PanelMatrix(const T* mat, int64_t K, int64_t N) : mat(mat), K(K), N(N), panels(N / NB) {
    slabs.resize(panels * K * NB);
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t k = 0; k < K; ++k)
        std::memcpy(&slabs[(p * K + k) * NB], mat + k * N + p * NB, NB * sizeof(T));
  }

  // out[m, n] = init[n] + sum_k a[m, k] mat[k, n] for m < M; a and out are row-major with K and N
  // columns. Panel by panel, so one slab (16 KiB at H = 64, float32) stays in L1 while every
  // block of rows streams past it.
  void matmul_add(const T* a, int64_t M, const T* init, T* out) const {
    for (int64_t p = 0; p < panels; ++p) {
      int64_t m0 = 0;
      for (; m0 + MR <= M; m0 += MR) rows_block<MR>(a, m0, p, init, out);
      switch (M - m0) {          // the last M % MR rows: the same loop, fewer accumulators
        case 5: rows_block<5>(a, m0, p, init, out); break;
        case 4: rows_block<4>(a, m0, p, init, out); break;
        case 3: rows_block<3>(a, m0, p, init, out); break;
        case 2: rows_block<2>(a, m0, p, init, out); break;
        case 1: rows_block<1>(a, m0, p, init, out); break;
      }
    }
    const int64_t rest = panels * NB;
    for (int64_t m = 0; m < M && rest < N; ++m) {
      T* o = out + m * N;
      for (int64_t n = rest; n < N; ++n) o[n] = init[n];
      for (int64_t k = 0; k < K; ++k) {
        const T s = a[m * K + k];
        const T* row = mat + k * N;
        for (int64_t n = rest; n < N; ++n) o[n] += row[n] * s;
      }
    }
  }

  template <int64_t R>
  void rows_block(const T* a, int64_t m0, int64_t p, const T* init, T* out) const {
    static_assert(R <= MR, "more rows than accumulators");
    const int64_t n0 = p * NB;
    const T* slab = slabs.data() + p * K * NB;
    const T* rows = a + m0 * K;
    Vec acc[R][NV];
    for (int64_t i = 0; i < R; ++i)
      for (int64_t v = 0; v < NV; ++v) acc[i][v] = *reinterpret_cast<const Vec*>(init + n0 + v * L);
    for (int64_t k = 0; k < K; ++k) {
      Vec w[NV];
      for (int64_t v = 0; v < NV; ++v) w[v] = *reinterpret_cast<const Vec*>(slab + k * NB + v * L);
      for (int64_t i = 0; i < R; ++i) {
        const T s = rows[i * K + k];
        for (int64_t v = 0; v < NV; ++v) acc[i][v] += w[v] * s;
      }
    }
    for (int64_t i = 0; i < R; ++i)
      for (int64_t v = 0; v < NV; ++v) *reinterpret_cast<Vec*>(out + (m0 + i) * N + n0 + v * L) = acc[i][v];
  }

  const T* mat;
  int64_t K, N, panels;
  std::vector<T> slabs;
};

// One forward step after gh = W_hh h + b_hh (with b_ih's r and z parts added in, see
// forward_kernel): the gates, the new h (updated in place), and what backward needs.
// Separate simple loops over arrays, so the compiler turns exp and tanh into vector calls
// (glibc libmvec, enabled by -ffast-math) instead of scalar ones; __restrict__ lets it
// vectorise without run-time overlap checks.
template <typename T>
static inline void forward_gates(const T* __restrict__ x, const T* __restrict__ b_in, const T* __restrict__ gh,
                                 T* __restrict__ h, T* __restrict__ g, T* __restrict__ ghn, T* __restrict__ out,
                                 int64_t H) {
  // sigmoid(v) = (1 + tanh(v / 2)) / 2: the vector tanh saturates quietly, while the vector exp
  // hands every lane whose exp over- or underflows (a saturated gate) to the scalar exp
  for (int64_t j = 0; j < 2 * H; ++j) g[j] = T(0.5) * std::tanh(T(0.5) * (x[j] + gh[j])) + T(0.5);   // r, z
  for (int64_t j = 0; j < H; ++j) g[2 * H + j] = x[2 * H + j] + b_in[j] + g[j] * gh[2 * H + j];
  for (int64_t j = 0; j < H; ++j) g[2 * H + j] = std::tanh(g[2 * H + j]);   // n
  for (int64_t j = 0; j < H; ++j) {
    const T z = g[H + j], n = g[2 * H + j];
    h[j] = (T(1) - z) * n + z * h[j];
    ghn[j] = gh[2 * H + j];
    out[j] = h[j];
  }
}

// One backward step: the gradients of the gate pre-activations (dx for gi, dr for W_hh h + b_hh)
// from dh = dout + dh_next, and the part of dh_prev that does not go through W_hh.
template <typename T>
static inline void backward_gates(const T* __restrict__ dout, const T* __restrict__ dh_next,
                                  const T* __restrict__ g, const T* __restrict__ h_prev,
                                  const T* __restrict__ ghn, T* __restrict__ dx, T* __restrict__ dr,
                                  T* __restrict__ carried, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T dh = dout[j] + dh_next[j];
    const T r = g[j], z = g[H + j], n = g[2 * H + j];
    const T dn_pre = dh * (T(1) - z) * (T(1) - n * n);
    const T dz_pre = dh * (h_prev[j] - n) * z * (T(1) - z);
    const T dr_pre = dn_pre * ghn[j] * r * (T(1) - r);
    dx[j] = dr_pre; dx[H + j] = dz_pre; dx[2 * H + j] = dn_pre;
    dr[j] = dr_pre; dr[H + j] = dz_pre; dr[2 * H + j] = dn_pre * r;
    carried[j] = dh * z;
  }
}

// One layer direction over B sequences of S steps: gi (B, S, 3H) = W_ih x without b_ih. Rows of
// hs are `ld_hs` apart, so both directions write one (B, S, 2H) layer output.
template <typename T, int64_t FixedH = 0>
static void forward_kernel(const T* gi, const T* w_hh_t, const T* b_ih, const T* b_hh, T* hs, int64_t ld_hs,
                           T* gates, T* ghn, int64_t B, int64_t S, int64_t hidden, bool reverse) {
  const int64_t H = FixedH ? FixedH : hidden, G = 3 * H;
  // the r and z biases of both kinds simply add, so they start the W_hh sums; b_in stays
  // outside the reset gate's product and b_hn inside it, as in nn.GRU
  std::vector<T> gh(G), h(H), bias(b_hh, b_hh + G), g_scratch(G), ghn_scratch(H);
  const bool keep = gates != nullptr;     // inference keeps only hs: one step's scratch instead
  for (int64_t j = 0; j < 2 * H; ++j) bias[j] += b_ih[j];
  const BlockedMatrix<T> w(w_hh_t, H, G);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(h.begin(), h.end(), T(0));
    for (int64_t step = 0; step < S; ++step) {
      const int64_t row = b * S + (reverse ? S - 1 - step : step);
      w.matvec_add(h.data(), bias.data(), gh.data(), step & 1);       // gh = bias + W_hh h
      forward_gates(gi + row * G, b_ih + 2 * H, gh.data(), h.data(), keep ? gates + row * G : g_scratch.data(),
                    keep ? ghn + row * H : ghn_scratch.data(), hs + row * ld_hs, H);
    }
  }
}

// Steps per chunk of inference: the input products of a chunk of every sequence (B x kChunk x 3H
// values, 1.2 MiB for 24 windows at H = 64, float32) are made just before it is stepped, into one
// buffer used over and over, instead of a whole-sequence array each layer (newly mapped memory,
// whose page faults cost about as much as the arithmetic).
constexpr int64_t kChunk = 64;

// One direction of one layer, inference only, for B sequences stepped side by side: each step's
// W_hh products for all of them are one (B, H) x (H, 3H) matrix product instead of B
// matrix-vector ones. x (B, S, I) is the layer input, w_ih_t (I, 3H) and w_hh_t (H, 3H) the
// transposed weights. Sequence b is its first lengths[b] rows (the rest padding, never read nor
// written: a reverse direction starts at the sequence's own last row). Rows of hs are `ld_hs`
// apart, so both directions write one (B, S, D x H) layer output.
template <typename T, int64_t FixedH = 0>
static void inference_direction(const T* x, int64_t I, const T* w_ih_t, const T* w_hh_t, const T* b_ih,
                                const T* b_hh, T* hs, int64_t ld_hs, int64_t B, int64_t S, int64_t hidden,
                                bool reverse, const int64_t* lengths) {
  const int64_t H = FixedH ? FixedH : hidden, G = 3 * H;
  const PanelMatrix<T> wi(w_ih_t, I, G), wh(w_hh_t, H, G);
  // h of sequences that have ended (shorter than the longest) keeps being multiplied, unused
  std::vector<T> h(B * H, T(0)), gh(B * G), gi(B * kChunk * G), bias(b_hh, b_hh + G), zeros(G, T(0));
  std::vector<T> g_scratch(G), ghn_scratch(H);
  for (int64_t j = 0; j < 2 * H; ++j) bias[j] += b_ih[j];    // as in forward_kernel
  std::vector<int64_t> length(B, S), first(B);
  if (lengths) std::copy(lengths, lengths + B, length.begin());
  const int64_t longest = B ? *std::max_element(length.begin(), length.end()) : 0;
  for (int64_t s0 = 0; s0 < longest; s0 += kChunk) {
    // the chunk's steps s0 .. s0 + kChunk - 1 are, for sequence b, rows first[b] onwards
    for (int64_t b = 0; b < B; ++b) {
      const int64_t end = std::min(s0 + kChunk, length[b]);
      if (end <= s0) continue;
      first[b] = reverse ? length[b] - end : s0;
      wi.matmul_add(x + (b * S + first[b]) * I, end - s0, zeros.data(), gi.data() + b * kChunk * G);
    }
    for (int64_t step = s0; step < std::min(s0 + kChunk, longest); ++step) {
      wh.matmul_add(h.data(), B, bias.data(), gh.data());      // gh = bias + h W_hh^T, every row
      for (int64_t b = 0; b < B; ++b) {
        if (step >= length[b]) continue;
        const int64_t t = reverse ? length[b] - 1 - step : step;
        forward_gates(gi.data() + (b * kChunk + t - first[b]) * G, b_ih + 2 * H, gh.data() + b * G,
                      h.data() + b * H, g_scratch.data(), ghn_scratch.data(), hs + (b * S + t) * ld_hs, H);
      }
    }
  }
}

// Besides dgi and dgh, sums them over all steps into db_ih and db_hh (3H each), the bias gradients:
// in float blocks of kBiasBlock steps added into doubles, as accurate as torch's cascaded sum.
constexpr int64_t kBiasBlock = 64;

template <typename T, int64_t FixedH = 0>
static void backward_kernel(const T* grad_hs, const T* w_hh, const T* hs, int64_t ld_hs, const T* gates,
                            const T* ghn, T* dgi, T* dgh, T* db_ih, T* db_hh, int64_t B, int64_t S,
                            int64_t hidden, bool reverse) {
  const int64_t H = FixedH ? FixedH : hidden, G = 3 * H;
  std::vector<T> dh_prev(H), carried(H), zeros(H, T(0));
  // r and z have the same gradient in dgi and dgh; n has one each: [rz | n of dgi | n of dgh]
  std::vector<T> block_sum(4 * H, T(0));
  std::vector<double> bias_sum(4 * H, 0.0);
  int64_t in_block = 0;
  const BlockedMatrix<T> w(w_hh, G, H);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(dh_prev.begin(), dh_prev.end(), T(0));
    for (int64_t step = S - 1; step >= 0; --step) {          // the forward steps, last first
      const int64_t t = reverse ? S - 1 - step : step;
      const int64_t row = b * S + t;
      // h at the step before this one (in stepping order); zero at the first step
      const T* h_prev = step == 0 ? zeros.data() : hs + (b * S + (reverse ? t + 1 : t - 1)) * ld_hs;
      T* dx = dgi + row * G;
      T* dr = dgh + row * G;
      backward_gates(grad_hs + row * ld_hs, dh_prev.data(), gates + row * G, h_prev, ghn + row * H,
                     dx, dr, carried.data(), H);
      w.matvec_add(dr, carried.data(), dh_prev.data(), step & 1);   // dh_prev = dh z + W_hh^T dgh
      T* __restrict__ sums = block_sum.data();
      for (int64_t j = 0; j < G; ++j) sums[j] += dx[j];
      for (int64_t j = 0; j < H; ++j) sums[G + j] += dr[2 * H + j];
      if (++in_block == kBiasBlock) {
        for (int64_t j = 0; j < 4 * H; ++j) bias_sum[j] += sums[j], sums[j] = T(0);
        in_block = 0;
      }
    }
  }
  for (int64_t j = 0; j < 4 * H; ++j) bias_sum[j] += block_sum[j];
  for (int64_t j = 0; j < G; ++j) db_ih[j] = T(bias_sum[j]);
  for (int64_t j = 0; j < 2 * H; ++j) db_hh[j] = T(bias_sum[j]);
  for (int64_t j = 0; j < H; ++j) db_hh[2 * H + j] = T(bias_sum[G + j]);
}

// The model's hidden size gets its own compiled copy of the kernels, in which the compiler knows
// every loop bound and can unroll them; the general one serves any other size.
constexpr int64_t kTunedHidden = 64;

// One layer with D = len(w_hh) directions (the second one reverse), as nn.GRU lays them out:
// gi: (D, B, S, 3H) input products W_ih x without b_ih; w_hh[d]: (3H, H); b_ih[d], b_hh[d]: (3H).
// Returns the layer output hs (B, S, D x H) and what backward needs: gates (D, B, S, 3H) =
// (r, z, n) and ghn (D, B, S, H) = W_hn h + b_hn (both empty when keep_for_backward is false).
std::vector<torch::Tensor> gru_forward(torch::Tensor gi, std::vector<torch::Tensor> w_hh,
                                       std::vector<torch::Tensor> b_ih, std::vector<torch::Tensor> b_hh,
                                       bool keep_for_backward = true) {
  const int64_t D = w_hh.size();
  TORCH_CHECK(gi.dim() == 4 && gi.is_contiguous() && !gi.is_cuda(), "gi must be contiguous (D,B,S,3H) on CPU");
  TORCH_CHECK(gi.size(0) == D && b_ih.size() == (size_t)D && b_hh.size() == (size_t)D, "one W_hh and biases per direction");
  const int64_t B = gi.size(1), S = gi.size(2), H = w_hh[0].size(1), G = 3 * H;
  TORCH_CHECK(gi.size(3) == G, "gi must have 3H columns");
  auto hs = torch::empty({B, S, D * H}, gi.options());
  // without backward (inference) the gates are not kept: 3H + H values a step less to write
  auto gates = keep_for_backward ? torch::empty({D, B, S, G}, gi.options()) : torch::empty({0}, gi.options());
  auto ghn = keep_for_backward ? torch::empty({D, B, S, H}, gi.options()) : torch::empty({0}, gi.options());
  for (int64_t d = 0; d < D; ++d) {
    TORCH_CHECK(w_hh[d].size(0) == G && w_hh[d].size(1) == H && b_ih[d].numel() == G && b_hh[d].numel() == G,
                "W_hh and bias shapes");
    auto w_hh_t = w_hh[d].t().contiguous();
    auto bi = b_ih[d].contiguous(), bh = b_hh[d].contiguous();
    AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "gru_forward", [&] {
      auto kernel = H == kTunedHidden ? forward_kernel<scalar_t, kTunedHidden> : forward_kernel<scalar_t>;
      kernel(gi[d].data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(), bi.data_ptr<scalar_t>(),
             bh.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>() + d * H, D * H,
             keep_for_backward ? gates[d].data_ptr<scalar_t>() : nullptr,
             keep_for_backward ? ghn[d].data_ptr<scalar_t>() : nullptr, B, S, H, d == 1);
    });
  }
  return {hs, gates, ghn};
}

// Returns dgi (D, B, S, 3H), the gradient of the input projections, dgh (D, B, S, 3H), the
// gradient of W_hh h + b_hh at each step (the caller turns both into weight gradients), and the
// bias gradients db_ih and db_hh (D, 3H).
std::vector<torch::Tensor> gru_backward(torch::Tensor grad_hs, std::vector<torch::Tensor> w_hh, torch::Tensor hs,
                                        torch::Tensor gates, torch::Tensor ghn) {
  const int64_t D = w_hh.size();
  const int64_t B = hs.size(0), S = hs.size(1), H = hs.size(2) / D, G = 3 * H;
  auto grad = grad_hs.contiguous();
  TORCH_CHECK(hs.is_contiguous() && gates.is_contiguous() && ghn.is_contiguous(), "saved tensors not contiguous");
  auto dgi = torch::empty({D, B, S, G}, hs.options());
  auto dgh = torch::empty({D, B, S, G}, hs.options());
  auto db_ih = torch::empty({D, G}, hs.options());
  auto db_hh = torch::empty({D, G}, hs.options());
  for (int64_t d = 0; d < D; ++d) {
    auto w = w_hh[d].contiguous();
    AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "gru_backward", [&] {
      auto kernel = H == kTunedHidden ? backward_kernel<scalar_t, kTunedHidden> : backward_kernel<scalar_t>;
      kernel(grad.data_ptr<scalar_t>() + d * H, w.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>() + d * H, D * H,
             gates[d].data_ptr<scalar_t>(), ghn[d].data_ptr<scalar_t>(), dgi[d].data_ptr<scalar_t>(),
             dgh[d].data_ptr<scalar_t>(), db_ih[d].data_ptr<scalar_t>(), db_hh[d].data_ptr<scalar_t>(),
             B, S, H, d == 1);
    });
  }
  return {dgi, dgh, db_ih, db_hh};
}

// A whole multi-layer GRU in eval mode, nothing kept for backward: x (B, S, I) -> the last layer's
// output (B, S, D x H). params: per layer, per direction, w_ih (3H, I_l), w_hh (3H, H), b_ih and
// b_hh (3H), nn.GRU's order (fused_gru._layer_parameters). lengths (B,), each in 1..S, where given:
// sequence b is x[b, :lengths[b]], as if alone, and its output rows past that are zero.
torch::Tensor gru_inference(torch::Tensor x, std::vector<torch::Tensor> params, int64_t num_layers,
                            std::optional<torch::Tensor> lengths = std::nullopt) {
  TORCH_CHECK(x.dim() == 3 && !x.is_cuda(), "x must be (B, S, I) on CPU");
  TORCH_CHECK(num_layers >= 1 && params.size() % (4 * num_layers) == 0, "four parameters per layer and direction");
  const int64_t D = params.size() / (4 * num_layers), B = x.size(0), S = x.size(1);
  const int64_t H = params[1].size(1), G = 3 * H;
  torch::Tensor steps;
  if (lengths.has_value()) {
    steps = lengths->to(torch::kLong).contiguous();
    TORCH_CHECK(steps.dim() == 1 && steps.size(0) == B, "one length per sequence");
    TORCH_CHECK(B == 0 || (steps.min().item<int64_t>() >= 1 && steps.max().item<int64_t>() <= S),
                "lengths must be between 1 and the padded length");
  }
  // Outputs of the layers before the last are kept from call to call (per thread, two taking
  // turns): a batch's are tens of MB, which the allocator maps afresh every time, and the page
  // faults of touching new memory cost a third as much as the arithmetic (docs/speed.md). Only real rows
  // of them are ever read, so their padding needs no zeros; the last layer's output, returned, is
  // new memory every call.
  static thread_local torch::Tensor between[2];
  auto out = x.contiguous();
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    auto in = out;
    const int64_t I = in.size(2), need = B * S * D * H;
    if (layer + 1 < num_layers) {
      auto& kept = between[layer % 2];
      if (!kept.defined() || kept.scalar_type() != x.scalar_type() || kept.numel() < need)
        kept = torch::empty({need}, x.options());
      out = kept.narrow(0, 0, need).view({B, S, D * H});
    } else {
      out = steps.defined() ? torch::zeros({B, S, D * H}, x.options()) : torch::empty({B, S, D * H}, x.options());
    }
    for (int64_t d = 0; d < D; ++d) {
      const auto* p = &params[4 * (layer * D + d)];
      TORCH_CHECK(p[0].size(0) == G && p[0].size(1) == I && p[1].size(0) == G && p[1].size(1) == H &&
                  p[2].numel() == G && p[3].numel() == G, "W_ih, W_hh and bias shapes");
      auto w_ih_t = p[0].t().contiguous(), w_hh_t = p[1].t().contiguous();
      auto bi = p[2].contiguous(), bh = p[3].contiguous();
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_inference", [&] {
        auto kernel = H == kTunedHidden ? inference_direction<scalar_t, kTunedHidden> : inference_direction<scalar_t>;
        kernel(in.data_ptr<scalar_t>(), I, w_ih_t.data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(),
               bi.data_ptr<scalar_t>(), bh.data_ptr<scalar_t>(), out.data_ptr<scalar_t>() + d * H, D * H, B, S, H,
               d == 1, steps.defined() ? steps.data_ptr<int64_t>() : nullptr);
      });
    }
  }
  return out;
}

void bernoulli_mask_(torch::Tensor out, double p);   // dropout_mask.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &gru_forward, "GRU layer recurrence forward, all directions (CPU)", py::arg("gi"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("keep_for_backward") = true);
  m.def("inference", &gru_inference, "a whole multi-layer GRU, eval mode, sequences side by side (CPU)",
        py::arg("x"), py::arg("params"), py::arg("num_layers"), py::arg("lengths") = py::none());
  m.def("backward", &gru_backward, "GRU layer recurrence backward, all directions (CPU)");
  m.def("bernoulli_mask_", &bernoulli_mask_, "out.bernoulli_(p) with the same draws, faster (CPU)");
}
