// C++ test of the lidvae_ext ICNN operators (registered by liblidvae_ext_ops).
//
// The ops are called through the dispatcher with typed handles, exactly as a
// libtorch user would, and compared against an oracle written here with
// libtorch autograd: psi from tensor ops, grad psi = autograd::grad(create_graph)
// and the training backward as the double backward of
//     loss = sum(u * psi) + sum(v * grad psi)
// with respect to y, A, b, W, w_out. The oracle follows
// lidvae_ext/reference.py (weight layout: A (L*H+1, d), b (L*H+1),
// W (L-1, H, H), w_out (H)).
//
// Cases cover both CPU code paths (row-wise products for d <= 8, GEMMs for
// d > 8) and a zero-padded input: y with k < d columns stands for [y, 0]
// (what LIDDecoder passes), the oracle runs on the explicitly padded y and its
// dLoss/dy is cut to the first k columns.
//
// Every uninitialized allocation is poisoned: ATen's deterministic mode fills
// at::empty / empty_like with NaN, so an output element (or workspace entry)
// that a kernel forgets to write shows up as "non-finite values".
//
// No test framework: one line per case, a final "N passed, M failed" line,
// exit status non-zero when anything failed.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

using ForwardFn = std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                             const Tensor&, const Tensor&,
                                                             const Tensor&, double,
                                                             c10::string_view, double);
using BackwardFn = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&, double,
    c10::string_view, double, bool);

c10::TypedOperatorHandle<ForwardFn> forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lidvae_ext::icnn_forward", "")
                             .typed<ForwardFn>();
  return op;
}

c10::TypedOperatorHandle<BackwardFn> backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lidvae_ext::icnn_backward", "")
                             .typed<BackwardFn>();
  return op;
}

// ---- oracle ------------------------------------------------------------------

Tensor first_layer_act(const Tensor& t, const std::string& act, double slope) {
  if (act == "leaky_relu") return at::leaky_relu(t, slope).square();
  return at::softplus(t);  // beta = 1, threshold = 20, as F.softplus
}

Tensor hidden_act(const Tensor& t, const std::string& act, double slope) {
  if (act == "leaky_relu") return at::leaky_relu(t, slope);
  return at::softplus(t);
}

Tensor potential(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                 const Tensor& w_out, double alpha, const std::string& act, double slope) {
  const int64_t H = w_out.size(0);
  const int64_t L = W.size(0) + 1;
  const Tensor pre = at::addmm(b, y, A.t());  // (B, L*H+1)
  Tensor z = first_layer_act(pre.narrow(1, 0, H), act, slope);
  for (int64_t l = 1; l < L; ++l) {
    z = hidden_act(at::addmm(pre.narrow(1, l * H, H), z, W[l - 1].t()), act, slope);
  }
  const Tensor out = hidden_act(at::mv(z, w_out) + pre.select(1, L * H), act, slope);
  return out + 0.5 * alpha * y.square().sum(-1);
}

struct Reference {
  Tensor psi, grad;                           // forward
  Tensor grad_y, grad_A, grad_b, grad_W, grad_w_out;  // double backward
};

Reference reference(const Tensor& y0, const Tensor& A0, const Tensor& b0, const Tensor& W0,
                    const Tensor& w_out0, double alpha, const std::string& act, double slope,
                    const Tensor& u, const Tensor& v) {
  const Tensor y = y0.detach().clone().requires_grad_(true);
  const Tensor A = A0.detach().clone().requires_grad_(true);
  const Tensor b = b0.detach().clone().requires_grad_(true);
  const Tensor W = W0.detach().clone().requires_grad_(true);
  const Tensor w_out = w_out0.detach().clone().requires_grad_(true);
  Reference ref;
  const Tensor psi = potential(y, A, b, W, w_out, alpha, act, slope);
  const Tensor grad = torch::autograd::grad({psi.sum()}, {y}, /*grad_outputs=*/{},
                                            /*retain_graph=*/true, /*create_graph=*/true)[0];
  const Tensor loss = (u * psi).sum() + (v * grad).sum();
  const auto grads = torch::autograd::grad({loss}, {y, A, b, W, w_out}, /*grad_outputs=*/{},
                                           /*retain_graph=*/false, /*create_graph=*/false,
                                           /*allow_unused=*/true);
  const std::vector<Tensor> inputs{y, A, b, W, w_out};
  std::vector<Tensor> out(5);
  for (size_t k = 0; k < 5; ++k) {
    out[k] = grads[k].defined() ? grads[k].detach() : at::zeros_like(inputs[k]).detach();
  }
  ref.psi = psi.detach();
  ref.grad = grad.detach();
  ref.grad_y = out[0];
  ref.grad_A = out[1];
  ref.grad_b = out[2];
  ref.grad_W = out[3];
  ref.grad_w_out = out[4];
  return ref;
}

// ---- comparison ----------------------------------------------------------------

// max |got - ref| / max |ref| (absolute when ref is identically zero); shapes must agree.
double rel_error(const Tensor& got, const Tensor& ref, std::string* why) {
  if (got.sizes() != ref.sizes()) {
    std::ostringstream os;
    os << "shape " << got.sizes() << " != reference " << ref.sizes();
    *why = os.str();
    return 1e300;
  }
  if (ref.numel() == 0) return 0.0;
  const Tensor g = got.to(at::kDouble), r = ref.to(at::kDouble);
  if (!at::isfinite(g).all().item<bool>()) {
    *why = "non-finite values";
    return 1e300;
  }
  const double scale = r.abs().max().item<double>();
  const double diff = (g - r).abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

struct Case {
  std::string activation;
  int64_t layers, batch, dim, hidden;
  double alpha;
  double slope = 0.2;
  at::ScalarType dtype = at::kDouble;
  double tol = 1e-10;
  bool with_grad_psi = true;
  bool need_input_grad = true;
  int64_t in_dim = -1;  // columns of y; -1: all d (k < d: y stands for [y, 0])
};

int64_t columns(const Case& c) { return c.in_dim < 0 ? c.dim : c.in_dim; }

std::string describe(const Case& c) {
  std::ostringstream os;
  os << c.activation << " L=" << c.layers << " B=" << c.batch << " d=" << c.dim;
  if (columns(c) != c.dim) os << " k=" << columns(c);
  os << " H=" << c.hidden << " alpha=" << c.alpha << " slope=" << c.slope << " " << c.dtype
     << (c.with_grad_psi ? "" : " grad_psi=None") << (c.need_input_grad ? "" : " no_input_grad");
  return os.str();
}

// Returns an empty string on success, else what went wrong; *worst gets the
// largest relative error seen.
std::string run_case(const Case& c, uint64_t seed, double* worst) {
  at::manual_seed(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t M = c.layers * c.hidden + 1;
  const double in_scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
  const double hid_scale = 1.0 / static_cast<double>(c.hidden);
  const int64_t k = columns(c);
  const Tensor y = at::randn({c.batch, k}, f64);
  const Tensor A = at::randn({M, c.dim}, f64) * in_scale;
  const Tensor b = at::randn({M}, f64) * 0.5;
  const Tensor W = at::rand({c.layers - 1, c.hidden, c.hidden}, f64) * (2.0 * hid_scale);
  const Tensor w_out = at::rand({c.hidden}, f64) * (2.0 * hid_scale) + 0.05;
  const Tensor u = c.with_grad_psi ? at::randn({c.batch}, f64) : at::zeros({c.batch}, f64);
  const Tensor v = at::randn({c.batch, c.dim}, f64);

  // Oracle in float64 on the (rounded, for float32 cases) inputs the op sees.
  auto cast = [&](const Tensor& t) { return t.to(c.dtype); };
  auto back = [&](const Tensor& t) { return cast(t).to(at::kDouble); };
  // The oracle sees the explicitly padded [y, 0]; its dLoss/dy is cut back to k columns.
  const Tensor y_full = k < c.dim ? at::constant_pad_nd(back(y), {0, c.dim - k}) : back(y);
  Reference ref = reference(y_full, back(A), back(b), back(W), back(w_out), c.alpha,
                            c.activation, c.slope, back(u), back(v));
  ref.grad_y = ref.grad_y.narrow(1, 0, k).contiguous();

  const auto [psi, grad, pre, upstream] =
      forward_op().call(cast(y), cast(A), cast(b), cast(W), cast(w_out), c.alpha, c.activation,
                        c.slope);
  const std::optional<Tensor> grad_psi =
      c.with_grad_psi ? std::optional<Tensor>(cast(u)) : std::nullopt;
  const auto [grad_y, grad_A, grad_b, grad_W, grad_w_out] = backward_op().call(
      grad_psi, cast(v), cast(y), cast(A), cast(W), cast(w_out),
      // The map is needed only with grad_psi; without it pass none, as the autograd glue does.
      c.with_grad_psi ? std::optional<Tensor>(grad) : std::nullopt, pre, upstream, c.alpha,
      c.activation, c.slope, c.need_input_grad);

  std::ostringstream fail;
  auto check = [&](const char* name, const Tensor& got, const Tensor& expected) {
    if (got.scalar_type() != c.dtype) {
      fail << " " << name << ": dtype " << got.scalar_type();
      return;
    }
    std::string why;
    const double err = rel_error(got, expected, &why);
    if (why.empty()) *worst = std::max(*worst, err);
    if (!(err <= c.tol)) {
      fail << " " << name << ": rel err " << err << (why.empty() ? "" : " (" + why + ")");
    }
  };
  check("psi", psi, ref.psi);
  check("grad", grad, ref.grad);
  if (c.need_input_grad) {
    check("grad_y", grad_y, ref.grad_y);
  } else if (grad_y.numel() != 0) {
    fail << " grad_y: expected an empty tensor with need_input_grad=false, got " << grad_y.sizes();
  }
  check("grad_A", grad_A, ref.grad_A);
  check("grad_b", grad_b, ref.grad_b);
  check("grad_W", grad_W, ref.grad_W);
  check("grad_w_out", grad_w_out, ref.grad_w_out);
  return fail.str();
}

// ---- error cases ------------------------------------------------------------------

struct ErrorCase {
  std::string name;
  std::function<void()> call;
  std::vector<std::string> must_contain;
};

std::string run_error_case(const ErrorCase& e) {
  // The kernels are on the stable ABI: their checks throw std::runtime_error, which the
  // dispatcher passes on as such (a c10::Error from torch itself is a std::exception too).
  std::string msg;
  try {
    e.call();
    return "did not throw";
  } catch (const c10::Error& err) {
    msg = err.what_without_backtrace();
  } catch (const std::exception& err) {
    msg = err.what();
  }
  for (const auto& needle : e.must_contain) {
    if (msg.find(needle) == std::string::npos) {
      return "message lacks '" + needle + "': " + msg;
    }
  }
  return "";
}

std::vector<ErrorCase> error_cases() {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t B = 4, d = 3, H = 5, L = 2, M = L * H + 1;
  const Tensor y = at::randn({B, d}, f64);
  const Tensor A = at::randn({M, d}, f64);
  const Tensor b = at::randn({M}, f64);
  const Tensor W = at::rand({L - 1, H, H}, f64);
  const Tensor w_out = at::rand({H}, f64);
  const Tensor v = at::randn({B, d}, f64);
  auto fwd = [=](const Tensor& y_, const Tensor& A_, const Tensor& b_, const Tensor& W_,
                 const Tensor& wo_, double alpha, const std::string& act, double slope) {
    forward_op().call(y_, A_, b_, W_, wo_, alpha, act, slope);
  };
  auto bwd_with_grad_map = [=](const Tensor& grad_map) {
    const auto [psi, grad, pre, up] =
        forward_op().call(y, A, b, W, w_out, 0.0, "leaky_relu", 0.2);
    backward_op().call(std::nullopt, grad_map, y, A, W, w_out, grad, pre, up, 0.0, "leaky_relu",
                       0.2, true);
  };
  std::vector<ErrorCase> cases;
  cases.push_back({"W negative", [=] { fwd(y, A, b, -W, w_out, 0.0, "leaky_relu", 0.2); },
                   {"W must be non-negative", "icnn_forward"}});
  cases.push_back({"w_out negative", [=] { fwd(y, A, b, W, -w_out, 0.0, "leaky_relu", 0.2); },
                   {"w_out must be non-negative"}});
  cases.push_back({"A wrong shape",
                   [=] { fwd(y, at::randn({M + 1, d}, f64), b, W, w_out, 0.0, "leaky_relu", 0.2); },
                   {"A must have shape"}});
  // A may be wider than y (y then stands for [y, 0]), never narrower.
  cases.push_back({"A narrower than y",
                   [=] { fwd(y, at::randn({M, d - 1}, f64), b, W, w_out, 0.0, "softplus", 0.2); },
                   {"A must have shape"}});
  cases.push_back({"b wrong shape",
                   [=] { fwd(y, A, at::randn({M - 1}, f64), W, w_out, 0.0, "leaky_relu", 0.2); },
                   {"b must have shape"}});
  cases.push_back({"W wrong shape",
                   [=] { fwd(y, A, b, at::rand({L - 1, H, H + 1}, f64), w_out, 0.0, "leaky_relu", 0.2); },
                   {"W must have shape"}});
  cases.push_back({"y not 2-D", [=] { fwd(y.flatten(), A, b, W, w_out, 0.0, "leaky_relu", 0.2); },
                   {"y must be 2-D"}});
  cases.push_back({"dtype mismatch",
                   [=] { fwd(y, A, b, W, w_out.to(at::kFloat), 0.0, "leaky_relu", 0.2); },
                   {"w_out has dtype"}});
  cases.push_back({"unknown activation", [=] { fwd(y, A, b, W, w_out, 0.0, "relu", 0.2); },
                   {"activation must be"}});
  cases.push_back({"negative strong_convexity",
                   [=] { fwd(y, A, b, W, w_out, -1.0, "leaky_relu", 0.2); },
                   {"strong_convexity"}});
  cases.push_back({"slope out of range", [=] { fwd(y, A, b, W, w_out, 0.0, "leaky_relu", 1.5); },
                   {"negative_slope"}});
  cases.push_back({"backward grad_map wrong shape",
                   [=] { bwd_with_grad_map(at::randn({B, d + 1}, f64)); },
                   {"grad_map must have shape", "icnn_backward"}});
  cases.push_back({"backward grad_psi without grad",
                   [=] {
                     const auto [psi, grad, pre, up] =
                         forward_op().call(y, A, b, W, w_out, 0.0, "leaky_relu", 0.2);
                     backward_op().call(at::ones({B}, f64), v, y, A, W, w_out, std::nullopt, pre, up,
                                        0.0, "leaky_relu", 0.2, true);
                   },
                   {"grad (the map icnn_forward returned", "required when grad_psi is given"}});
  cases.push_back({"softplus_weights_backward shape mismatch",
                   [=] {
                     c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lidvae_ext::softplus_weights_backward", "")
                         .typed<Tensor(const Tensor&, const Tensor&)>()
                         .call(at::zeros({3}, f64), at::zeros({4}, f64));
                   },
                   {"grad has shape [3] but raw has shape [4]"}});
  return cases;
}


// ---- the weight parametrization ops ----------------------------------------------------

using SoftplusFn = Tensor(const Tensor&);
using SoftplusBackwardFn = Tensor(const Tensor&, const Tensor&);

// softplus_weights / softplus_weights_backward against at::softplus / at::softplus_backward
// (beta 1, threshold 20) on n values of dtype: a wide range, the thresholds, an odd length.
std::string run_softplus_case(at::ScalarType dtype, int64_t n, double tol, double* worst) {
  static const auto fwd = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("lidvae_ext::softplus_weights", "")
                              .typed<SoftplusFn>();
  static const auto bwd = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("lidvae_ext::softplus_weights_backward", "")
                              .typed<SoftplusBackwardFn>();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const Tensor edges = at::tensor({0.0, 19.99, 20.0, 20.01, -20.0, -86.9, -100.0, -800.0, 900.0}, f64);
  const Tensor raw64 = at::cat({at::rand({n}, f64).mul(240.0).sub(120.0), edges});
  const Tensor raw = raw64.to(dtype);
  const Tensor grad = at::randn({raw.numel()}, f64).to(dtype);
  const Tensor want = at::softplus(raw.to(at::kDouble), 1.0, 20.0);
  const Tensor want_back = at::softplus_backward(grad.to(at::kDouble), raw.to(at::kDouble), 1.0, 20.0);
  const Tensor got = fwd.call(raw).to(at::kDouble), got_back = bwd.call(grad, raw).to(at::kDouble);
  if (!got.isfinite().all().item<bool>() || !got_back.isfinite().all().item<bool>())
    return " non-finite values";
  const double floor = dtype == at::kFloat ? 1e-37 : 1e-300;  // below: denormal territory
  auto rel = [&](const Tensor& a, const Tensor& b) {
    return ((a - b).abs() / b.abs().clamp_min(floor)).masked_fill(b.abs() < floor, 0.0).max().item<double>();
  };
  *worst = std::max(rel(got, want), rel(got_back, want_back));
  return *worst <= tol ? "" : " relative error above tolerance";
}

}  // namespace

int main() {
  int passed = 0, failed = 0;
  auto report = [&](const std::string& name, const std::string& failure) {
    if (failure.empty()) {
      ++passed;
      std::printf("PASS  %s\n", name.c_str());
    } else {
      ++failed;
      std::printf("FAIL  %s:%s\n", name.c_str(), failure.c_str());
    }
    std::fflush(stdout);
  };

  // Both ops must be registered (a missing registration is one failure, not a crash).
  try {
    forward_op();
    backward_op();
  } catch (const c10::Error& err) {
    report("ops registered", std::string(" ") + err.what_without_backtrace());
    std::printf("%d passed, %d failed\n", passed, failed);
    return 1;
  }

  // Poison every uninitialized allocation with NaN (see the header comment).
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/true);
  at::globalContext().setDeterministicFillUninitializedMemory(true);
  if (!at::empty({4}, at::TensorOptions().dtype(at::kDouble)).isnan().all().item<bool>()) {
    report("poisoned allocations", " at::empty is not NaN-filled in deterministic mode");
  }

  std::vector<Case> cases;
  // (B, d, H): d <= 8 takes the row-wise path, d > 8 (9, 12, 40) the GEMM path.
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes{
      {7, 3, 5}, {33, 1, 4}, {16, 6, 17}, {0, 4, 3}, {13, 9, 6}, {5, 40, 8}, {0, 12, 3}};
  for (const std::string act : {"leaky_relu", "softplus"}) {
    for (int64_t layers : {1, 2, 3}) {
      for (double alpha : {0.0, 0.3}) {
        for (const auto& [B, d, H] : shapes) {
          cases.push_back(Case{act, layers, B, d, H, alpha});
        }
      }
    }
  }
  // Variants: plain ReLU (slope 0), no grad_psi, no input grad, float32.
  {
    Case c{"leaky_relu", 2, 9, 3, 6, 0.3};
    c.slope = 0.0;
    cases.push_back(c);
  }
  for (const std::string act : {"leaky_relu", "softplus"}) {
    Case c{act, 3, 11, 4, 5, 0.3};
    c.with_grad_psi = false;
    cases.push_back(c);
    Case n{act, 2, 11, 4, 5, 0.0};
    n.need_input_grad = false;
    cases.push_back(n);
  }
  for (const std::string act : {"leaky_relu", "softplus"}) {
    for (int64_t d : {5, 20}) {
      Case c{act, 3, 32, d, 16, 0.3};
      c.dtype = at::kFloat;
      c.tol = 1e-4;
      cases.push_back(c);
    }
  }
  // Zero-padded y (k < d columns) on both paths, every depth, with and without grad_psi,
  // and without the input gradient.
  for (const std::string act : {"leaky_relu", "softplus"}) {
    for (int64_t layers : {1, 2, 3}) {
      for (const auto& [d, k] : std::vector<std::pair<int64_t, int64_t>>{{5, 2}, {8, 1}, {12, 4}, {33, 32}}) {
        Case c{act, layers, 9, d, 6, layers == 2 ? 0.0 : 0.3};
        c.in_dim = k;
        cases.push_back(c);
      }
    }
    for (int64_t d : {6, 12}) {
      Case c{act, 2, 10, d, 5, 0.3};
      c.in_dim = 3;
      c.with_grad_psi = false;
      cases.push_back(c);
      Case n = c;
      n.with_grad_psi = true;
      n.need_input_grad = false;
      cases.push_back(n);
      Case f = c;
      f.with_grad_psi = true;
      f.dtype = at::kFloat;
      f.tol = 1e-4;
      cases.push_back(f);
    }
  }

  uint64_t seed = 1234;
  for (const auto& c : cases) {
    std::string failure;
    double worst = 0.0;
    try {
      failure = run_case(c, seed++, &worst);
    } catch (const c10::Error& err) {
      failure = std::string(" threw: ") + err.what_without_backtrace();
    } catch (const std::exception& err) {
      failure = std::string(" threw: ") + err.what();
    }
    char err_text[64];
    std::snprintf(err_text, sizeof(err_text), " [max rel err %.2e, tol %.0e]", worst, c.tol);
    report(describe(c) + err_text, failure);
  }

  for (const auto& [dtype, tol] : {std::pair<at::ScalarType, double>{at::kDouble, 1e-13},
                                   std::pair<at::ScalarType, double>{at::kFloat, 2e-6}}) {
    for (int64_t n : {0, 7, 100003}) {
      std::string failure;
      double worst = 0.0;
      try {
        failure = run_softplus_case(dtype, n, tol, &worst);
      } catch (const c10::Error& err) {
        failure = std::string(" threw: ") + err.what_without_backtrace();
      }
      char text[96];
      std::snprintf(text, sizeof(text), "softplus_weights %s n=%lld [max rel err %.2e, tol %.0e]",
                    dtype == at::kFloat ? "float32" : "float64", static_cast<long long>(n), worst, tol);
      report(text, failure);
    }
  }

  for (const auto& e : error_cases()) {
    const std::string failure = run_error_case(e);
    report("throws: " + e.name, failure.empty() ? failure : " " + failure);
  }

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
