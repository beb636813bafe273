/* quantgate's int8 weight-only linear for the CPU (AVX2 + FMA): y = x @ (w * s)^T at decode sizes.
   Built and loaded by quantgate/quantize/int8_kernel.py, which says why it exists. */
#include <immintrin.h>
#include <stdint.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 widen(__m128i eight_bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight_bytes)); }

/* Every row is summed the same way, alone or beside another (four running sums over 32-wide steps,
   then the tail in order), so a row's result does not depend on how many rows share the call: batched
   greedy decoding stays equal to one row at a time. */
static inline float finish(__m256 a0, __m256 a1, __m256 a2, __m256 a3, const float *xr, const int8_t *wr,
                           int64_t k, int64_t K, float scale) {
    float total = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < K; k++) total += xr[k] * (float)wr[k];
    return total * scale;
}

/* y[m, n] = s[n] * sum_k x[m, k] * w[n, k] (x: M x K fp32, w: N x K int8, y: M x N fp32). Rows go in
   pairs that share each widened block of w; output columns are split between `threads` OpenMP
   threads (torch's own pool: the same libgomp) when the layer is large enough to pay for it. */
void qg_int8_linear(const float *x, const int8_t *w, const float *s, float *y, int64_t M, int64_t N, int64_t K,
                    int64_t threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && N * K >= (1 << 18))
    for (int64_t n = 0; n < N; n++) {
        const int8_t *wr = w + n * K;
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) {
            const float *xa = x + m * K, *xb = xa + K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            int64_t k = 0;
            for (; k + 32 <= K; k += 32) {
                const __m128i lo = _mm_loadu_si128((const __m128i *)(wr + k));
                const __m128i hi = _mm_loadu_si128((const __m128i *)(wr + k + 16));
                const __m256 w0 = widen(lo), w1 = widen(_mm_srli_si128(lo, 8));
                const __m256 w2 = widen(hi), w3 = widen(_mm_srli_si128(hi, 8));
                a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xa + k), a0);
                b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb + k), b0);
                a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xa + k + 8), a1);
                b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + k + 8), b1);
                a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xa + k + 16), a2);
                b2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + k + 16), b2);
                a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xa + k + 24), a3);
                b3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + k + 24), b3);
            }
            y[m * N + n] = finish(a0, a1, a2, a3, xa, wr, k, K, s[n]);
            y[(m + 1) * N + n] = finish(b0, b1, b2, b3, xb, wr, k, K, s[n]);
        }
        if (m < M) {
            const float *xa = x + m * K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t k = 0;
            for (; k + 32 <= K; k += 32) {
                const __m128i lo = _mm_loadu_si128((const __m128i *)(wr + k));
                const __m128i hi = _mm_loadu_si128((const __m128i *)(wr + k + 16));
                a0 = _mm256_fmadd_ps(widen(lo), _mm256_loadu_ps(xa + k), a0);
                a1 = _mm256_fmadd_ps(widen(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xa + k + 8), a1);
                a2 = _mm256_fmadd_ps(widen(hi), _mm256_loadu_ps(xa + k + 16), a2);
                a3 = _mm256_fmadd_ps(widen(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xa + k + 24), a3);
            }
            y[m * N + n] = finish(a0, a1, a2, a3, xa, wr, k, K, s[n]);
        }
    }
}
