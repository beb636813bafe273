/* The CPU implementation of the op quantgate::int4_linear, registered with torch's dispatcher from C++.
   Built and loaded by quantgate/quantize/int4_kernel.py, which defines the op's schema and says why: a
   compiled decode step calls the op for every linear layer, and a call into Python costs several times
   one into C++ (quantize/int8_kernel.py has the figures). */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <new>
#include <stdexcept>
#include <vector>

extern "C" {
#include "int4_linear.c"
}

namespace {

constexpr int64_t kMaxRows = QG_MAX_ROWS;
constexpr int64_t kBf16FromRows = QG_BF16_FROM_ROWS; /* 0: never */
constexpr int64_t kWidenBytes = QG_WIDEN_BYTES;

/* The same choice as int4_kernel.int4_linear: for fp32 or bf16 CPU input with bf16 scales, the C kernel
   where x holds one position per sequence; else, for bf16 x of at least kBf16FromRows rows, the weights
   widened to pairs of bf16 matrices and multiplied a slice of columns at a time; else the C kernel up
   to kMaxRows rows in all; torch's int4 kernel for everything else. */
at::Tensor int4_linear(const at::Tensor &x, const at::Tensor &qdata, const at::Tensor &scale_and_zero, int64_t group) {
    const int64_t n = qdata.size(0), k = qdata.size(1) * 2;
    const bool decode = x.dim() >= 3 && x.size(-2) == 1;
    const bool bf16 = x.scalar_type() == at::kBFloat16;
    const bool ours = (bf16 || x.scalar_type() == at::kFloat) && scale_and_zero.scalar_type() == at::kBFloat16 &&
                      x.device().is_cpu();
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = n;
    at::Tensor rows = x.reshape({-1, k}).contiguous();
    at::Tensor w = qdata.contiguous(), sz = scale_and_zero.contiguous();
    if (ours && !decode && bf16 && kBf16FromRows && rows.size(0) >= kBf16FromRows) {
        /* the widened weights a slice of columns at a time, at most kWidenBytes each (int4_kernel.py) */
        const int64_t slice = qg_int4_widen_columns(k, kWidenBytes);
        const at::Tensor doubled = at::cat({rows, rows}, 1);
        std::vector<at::Tensor> parts;
        for (int64_t n0 = 0; n0 < n; n0 += slice) {
            const int64_t n1 = std::min(n, n0 + slice);
            at::Tensor wt = at::empty({2 * k, n1 - n0}, x.options());
            if (qg_int4_dequant(w.data_ptr<uint8_t>(), reinterpret_cast<const uint32_t *>(sz.data_ptr()),
                                reinterpret_cast<uint16_t *>(wt.data_ptr()), n, k, group, n0, n1,
                                at::get_num_threads()) != 0)
                throw std::runtime_error("int4_linear: widening int4 weights needs the AVX-512 build");
            parts.push_back(at::mm(doubled, wt));
        }
        return (parts.size() == 1 ? parts[0] : at::cat(parts, 1)).reshape(shape);
    }
    if (!ours || !(decode || x.numel() <= kMaxRows * k))
        return at::_weight_int4pack_mm_for_cpu(rows, qdata, group, scale_and_zero).reshape(shape);
    at::Tensor y = at::empty(shape, x.options());
    if (qg_int4_linear(rows.data_ptr(), w.data_ptr<uint8_t>(), reinterpret_cast<const uint32_t *>(sz.data_ptr()),
                       y.data_ptr(), rows.size(0), n, k, group, bf16, at::get_num_threads()))
        throw std::bad_alloc();
    return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(quantgate, CPU, m) { m.impl("int4_linear", &int4_linear); }
