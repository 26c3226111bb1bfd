// The W_hh recurrence of one GRU layer direction, forward and backward, as a tight loop.
//
// Everything that is not sequential (input projections, weight gradients) is done by the
// caller as whole-sequence matrix products; only h_t = f(h_{t-1}) is stepped here.
// Equations are nn.GRU's, gate order (r, z, n), reset gate applied to (W_hn h + b_hn):
//   r = sigmoid(gi_r + gh_r)   z = sigmoid(gi_z + gh_z)   n = tanh(gi_n + r * gh_n)
//   h' = (1 - z) * n + z * h,  with gh = W_hh h + b_hh and gi = W_ih x + b_ih.
#include <torch/extension.h>
#include <cmath>
#include <vector>

template <typename T>
static void forward_kernel(const T* gi, const T* w_hh_t, const T* b_hh, T* hs, T* gates, T* ghn,
                           int64_t B, int64_t S, int64_t H) {
  const int64_t G = 3 * H;
  std::vector<T> gh(G), h(H);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(h.begin(), h.end(), T(0));
    for (int64_t t = 0; t < S; ++t) {
      const int64_t row = b * S + t;
      // gh = b_hh + W_hh h, as a sum of columns so the inner loop is contiguous and vectorises
      for (int64_t j = 0; j < G; ++j) gh[j] = b_hh[j];
      for (int64_t k = 0; k < H; ++k) {
        const T hk = h[k];
        const T* col = w_hh_t + k * G;
        for (int64_t j = 0; j < G; ++j) gh[j] += col[j] * hk;
      }
      const T* x = gi + row * G;
      T* g = gates + row * G;
      T* out = hs + row * H;
      // Gate activations as separate simple loops over arrays, so the compiler turns exp and
      // tanh into vector calls (glibc libmvec, enabled by -ffast-math) instead of scalar ones.
      for (int64_t j = 0; j < 2 * H; ++j) g[j] = std::exp(-(x[j] + gh[j]));
      for (int64_t j = 0; j < 2 * H; ++j) g[j] = T(1) / (T(1) + g[j]);          // r, then z
      for (int64_t j = 0; j < H; ++j) g[2 * H + j] = x[2 * H + j] + g[j] * gh[2 * H + j];
      for (int64_t j = 0; j < H; ++j) g[2 * H + j] = std::tanh(g[2 * H + j]);   // n
      for (int64_t j = 0; j < H; ++j) {
        const T z = g[H + j], n = g[2 * H + j];
        h[j] = (T(1) - z) * n + z * h[j];
        ghn[row * H + j] = gh[2 * H + j];
        out[j] = h[j];
      }
    }
  }
}

template <typename T>
static void backward_kernel(const T* grad_hs, const T* w_hh, const T* hs, const T* gates,
                            const T* ghn, T* dgi, T* dgh, int64_t B, int64_t S, int64_t H) {
  const int64_t G = 3 * H;
  std::vector<T> dh(H), dh_prev(H);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(dh_prev.begin(), dh_prev.end(), T(0));
    for (int64_t t = S - 1; t >= 0; --t) {
      const int64_t row = b * S + t;
      const T* g = gates + row * G;
      const T* h_prev = t > 0 ? hs + (row - 1) * H : nullptr;
      T* dx = dgi + row * G;
      T* dr = dgh + row * G;
      for (int64_t j = 0; j < H; ++j) {
        dh[j] = grad_hs[row * H + j] + dh_prev[j];
        const T r = g[j], z = g[H + j], n = g[2 * H + j];
        const T hp = h_prev ? h_prev[j] : T(0);
        const T dn_pre = dh[j] * (T(1) - z) * (T(1) - n * n);
        const T dz_pre = dh[j] * (hp - n) * z * (T(1) - z);
        const T dr_pre = dn_pre * ghn[row * H + j] * r * (T(1) - r);
        dx[j] = dr_pre; dx[H + j] = dz_pre; dx[2 * H + j] = dn_pre;
        dr[j] = dr_pre; dr[H + j] = dz_pre; dr[2 * H + j] = dn_pre * r;
        dh_prev[j] = dh[j] * z;
      }
      // dh_prev += W_hh^T dgh, row by row so the inner loop is contiguous
      for (int64_t i = 0; i < G; ++i) {
        const T d = dr[i];
        const T* w_row = w_hh + i * H;
        for (int64_t k = 0; k < H; ++k) dh_prev[k] += w_row[k] * d;
      }
    }
  }
}

// gi: (B, S, 3H) input projections including b_ih; w_hh: (3H, H); b_hh: (3H).
// Returns hs (B, S, H) and what backward needs: gates (B, S, 3H) = (r, z, n), ghn (B, S, H).
std::vector<torch::Tensor> gru_forward(torch::Tensor gi, torch::Tensor w_hh, torch::Tensor b_hh) {
  TORCH_CHECK(gi.dim() == 3 && gi.is_contiguous() && !gi.is_cuda(), "gi must be contiguous (B,S,3H) on CPU");
  const int64_t B = gi.size(0), S = gi.size(1), H = w_hh.size(1);
  TORCH_CHECK(gi.size(2) == 3 * H && w_hh.size(0) == 3 * H && b_hh.numel() == 3 * H, "shape mismatch");
  auto w_hh_t = w_hh.t().contiguous();
  auto b = b_hh.contiguous();
  auto hs = torch::empty({B, S, H}, gi.options());
  auto gates = torch::empty({B, S, 3 * H}, gi.options());
  auto ghn = torch::empty({B, S, H}, gi.options());
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "gru_forward", [&] {
    forward_kernel<scalar_t>(gi.data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                             hs.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), ghn.data_ptr<scalar_t>(),
                             B, S, H);
  });
  return {hs, gates, ghn};
}

// Returns dgi (B, S, 3H), the gradient of the input projections, and dgh (B, S, 3H), the
// gradient of W_hh h + b_hh at each step (the caller turns it into dW_hh and db_hh).
std::vector<torch::Tensor> gru_backward(torch::Tensor grad_hs, torch::Tensor w_hh, torch::Tensor hs,
                                        torch::Tensor gates, torch::Tensor ghn) {
  auto grad = grad_hs.contiguous();
  auto w = w_hh.contiguous();
  const int64_t B = hs.size(0), S = hs.size(1), H = hs.size(2);
  auto dgi = torch::empty({B, S, 3 * H}, hs.options());
  auto dgh = torch::empty({B, S, 3 * H}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "gru_backward", [&] {
    backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(),
                              gates.data_ptr<scalar_t>(), ghn.data_ptr<scalar_t>(),
                              dgi.data_ptr<scalar_t>(), dgh.data_ptr<scalar_t>(), B, S, H);
  });
  return {dgi, dgh};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &gru_forward, "GRU recurrence forward (CPU)");
  m.def("backward", &gru_backward, "GRU recurrence backward (CPU)");
}
