/* The CPU implementation of the op quantgate::int8_linear, registered with torch's dispatcher from C++.
   Built and loaded by quantgate/quantize/int8_kernel.py, which defines the op's schema and says why a
   C++ registration: a compiled decode step calls the op ~140 times, and a call through the dispatcher
   into this function costs a few microseconds where one into a Python implementation costs ~19. */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

extern "C" {
#include "int8_linear.c"
}

namespace {

constexpr int64_t kMaxRows = QG_MAX_ROWS;

/* The same choice as int8_kernel.int8_linear: the C kernel for fp32 CPU input holding one position per
   sequence or at most kMaxRows rows in all, torchao's arithmetic for everything else. */
at::Tensor int8_linear(const at::Tensor &x, const at::Tensor &qdata, const at::Tensor &scale) {
    const int64_t n = qdata.size(0), k = qdata.size(1);
    const bool takes = (x.dim() >= 3 && x.size(-2) == 1) || x.numel() <= kMaxRows * k;
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = n;
    if (x.scalar_type() != at::kFloat || !takes || !x.device().is_cpu()) {
        at::Tensor rows = x.reshape({-1, k});
        at::Tensor y = rows.mm(qdata.t().to(x.scalar_type())) * scale.reshape({1, n}).to(x.scalar_type());
        return y.reshape(shape);
    }
    at::Tensor rows = x.reshape({-1, k}).contiguous();
    at::Tensor w = qdata.contiguous(), s = scale.contiguous();
    at::Tensor y = at::empty(shape, x.options());
    qg_int8_linear(rows.data_ptr<float>(), w.data_ptr<int8_t>(), s.data_ptr<float>(), y.data_ptr<float>(),
                   rows.size(0), n, k, at::get_num_threads());
    return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(quantgate, CPU, m) { m.impl("int8_linear", &int8_linear); }
