// A probe, not part of quantgate: one fp32 activation row times an int4 weight in torch's AVX-512 CPU
// packing (what torchao's Int4OpaqueTensor holds, BLOCK_N = 64), to measure what a kernel of our own
// could gain over aten._weight_int4pack_mm_for_cpu. bench/int4_probe.py builds and times it.
//
// Layout: packed [N/64][K][32] bytes, byte j of a row: low nibble column j, high nibble column j+32 of
// the block; scale_and_zero [K/g][N][2] bf16; w = (q - 8) * s + z. Unlike torch's kernel, which widens
// every weight (q - 8) * s + z before its multiply, this sums x * q over a group and applies scale and
// zero once per group: sum x (q - 8) s + z sum x = s (sum x q) + (z - 8 s) sum x; and it keeps two k
// steps in flight (two sets of accumulators), since one chain of multiply-adds waits on its latency.
// N must be a multiple of 64, K of the group, the group even. Several rows: in tiles of four that share
// each unpacked step of the weight (tile).
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

// Up to four rows at once: each 32-byte step of the weight is unpacked once and multiplied into every
// row of the tile (16 accumulators; one k step in flight is enough independent chains).
// always inlined, and called with t a constant, so that each tile size keeps its accumulators in registers
static inline __attribute__((always_inline)) void tile(const float *x, const uint8_t *wb, const uint16_t *sz, float *y,
                                                        const int t, int64_t b, int64_t n, int64_t k, int64_t group) {
    const int64_t groups = k / group;
    const __m512i low = _mm512_set1_epi32(0xF);
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __m512 out[4][4];
    for (int r = 0; r < 4; r++) for (int c = 0; c < 4; c++) out[r][c] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        __m512 a[4][4];
        float xs[4] = {0.f, 0.f, 0.f, 0.f};
        for (int r = 0; r < 4; r++) for (int c = 0; c < 4; c++) a[r][c] = _mm512_setzero_ps();
        const int64_t k0 = g * group;
        for (int64_t kk = k0; kk < k0 + group; kk++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(wb + kk * 32));
            const __m512i lo = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(raw));
            const __m512i hi = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(raw, 1));
            const __m512 q0 = _mm512_cvtepi32_ps(_mm512_and_si512(lo, low));
            const __m512 q1 = _mm512_cvtepi32_ps(_mm512_and_si512(hi, low));
            const __m512 q2 = _mm512_cvtepi32_ps(_mm512_srli_epi32(lo, 4));
            const __m512 q3 = _mm512_cvtepi32_ps(_mm512_srli_epi32(hi, 4));
            for (int r = 0; r < t; r++) {
                const float xv = x[r * k + kk];
                const __m512 xr = _mm512_set1_ps(xv);
                xs[r] += xv;
                a[r][0] = _mm512_fmadd_ps(xr, q0, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(xr, q1, a[r][1]);
                a[r][2] = _mm512_fmadd_ps(xr, q2, a[r][2]);
                a[r][3] = _mm512_fmadd_ps(xr, q3, a[r][3]);
            }
        }
        const uint16_t *p = sz + (g * n + b * 64) * 2;
        for (int c = 0; c < 4; c++) {
            __m512 f_lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + c * 32))), 16));
            __m512 f_hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + c * 32 + 16))), 16));
            __m512 s = _mm512_permutex2var_ps(f_lo, ev, f_hi);
            __m512 zz = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), s, _mm512_permutex2var_ps(f_lo, od, f_hi));
            for (int r = 0; r < t; r++)
                out[r][c] = _mm512_fmadd_ps(s, a[r][c], _mm512_fmadd_ps(zz, _mm512_set1_ps(xs[r]), out[r][c]));
        }
    }
    for (int r = 0; r < t; r++) for (int c = 0; c < 4; c++) _mm512_storeu_ps(y + r * n + b * 64 + c * 16, out[r][c]);
}

void qg_int4_gemv(const float *xs_, const uint8_t *w, const uint16_t *sz, float *ys, int64_t rows, int64_t n,
                  int64_t k, int64_t group, int threads) {
    const int64_t blocks = n / 64, groups = k / group;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
      const uint8_t *wb = w + b * k * 32;
      if (rows > 1) {
        for (int64_t r = 0; r < rows; r += 4) {
          const float *x = xs_ + r * k;
          float *y = ys + r * n;
          switch (rows - r < 4 ? rows - r : 4) {
            case 4: tile(x, wb, sz, y, 4, b, n, k, group); break;
            case 3: tile(x, wb, sz, y, 3, b, n, k, group); break;
            case 2: tile(x, wb, sz, y, 2, b, n, k, group); break;
            default: tile(x, wb, sz, y, 1, b, n, k, group); break;
          }
        }
        continue;
      }
      for (int64_t r = 0; r < rows; r++) {
        const float *x = xs_ + r * k;
        float *y = ys + r * n;
        __m512 out[4];
        for (int c = 0; c < 4; c++) out[c] = _mm512_setzero_ps();
        const __m512i low = _mm512_set1_epi32(0xF);
        for (int64_t g = 0; g < groups; g++) {
            __m512 a0[4], a1[4];
            for (int c = 0; c < 4; c++) { a0[c] = _mm512_setzero_ps(); a1[c] = _mm512_setzero_ps(); }
            float xs = 0.f;
            const int64_t k0 = g * group;
            for (int64_t kk = k0; kk < k0 + group; kk += 2) {
                const __m512 x0 = _mm512_set1_ps(x[kk]), x1 = _mm512_set1_ps(x[kk + 1]);
                xs += x[kk] + x[kk + 1];
                const __m256i r0 = _mm256_loadu_si256((const __m256i *)(wb + kk * 32));
                const __m256i r1 = _mm256_loadu_si256((const __m256i *)(wb + (kk + 1) * 32));
                __m512i lo0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(r0));
                __m512i hi0 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(r0, 1));
                __m512i lo1 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(r1));
                __m512i hi1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(r1, 1));
                a0[0] = _mm512_fmadd_ps(x0, _mm512_cvtepi32_ps(_mm512_and_si512(lo0, low)), a0[0]);
                a0[2] = _mm512_fmadd_ps(x0, _mm512_cvtepi32_ps(_mm512_srli_epi32(lo0, 4)), a0[2]);
                a0[1] = _mm512_fmadd_ps(x0, _mm512_cvtepi32_ps(_mm512_and_si512(hi0, low)), a0[1]);
                a0[3] = _mm512_fmadd_ps(x0, _mm512_cvtepi32_ps(_mm512_srli_epi32(hi0, 4)), a0[3]);
                a1[0] = _mm512_fmadd_ps(x1, _mm512_cvtepi32_ps(_mm512_and_si512(lo1, low)), a1[0]);
                a1[2] = _mm512_fmadd_ps(x1, _mm512_cvtepi32_ps(_mm512_srli_epi32(lo1, 4)), a1[2]);
                a1[1] = _mm512_fmadd_ps(x1, _mm512_cvtepi32_ps(_mm512_and_si512(hi1, low)), a1[1]);
                a1[3] = _mm512_fmadd_ps(x1, _mm512_cvtepi32_ps(_mm512_srli_epi32(hi1, 4)), a1[3]);
            }
            // scale and zero for the block's 64 columns: sz[g][b*64 + c][0..1]
            const uint16_t *p = sz + (g * n + b * 64) * 2;
            for (int c = 0; c < 4; c++) {
                __m512i pair_lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + c * 32)));       // s,z,s,z.. of 8 cols
                __m512i pair_hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + c * 32 + 16)));  // next 8 cols
                __m512 f_lo = _mm512_castsi512_ps(_mm512_slli_epi32(pair_lo, 16));
                __m512 f_hi = _mm512_castsi512_ps(_mm512_slli_epi32(pair_hi, 16));
                const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
                const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
                __m512 s = _mm512_permutex2var_ps(f_lo, ev, f_hi);
                __m512 z = _mm512_permutex2var_ps(f_lo, od, f_hi);
                __m512 acc = _mm512_add_ps(a0[c], a1[c]);
                // sum x*(q-8)*s + z*sum x = s*acc + (z - 8s)*xs
                __m512 zz = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), s, z);
                out[c] = _mm512_fmadd_ps(s, acc, _mm512_fmadd_ps(zz, _mm512_set1_ps(xs), out[c]));
            }
        }
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(y + b * 64 + c * 16, out[c]);
      }
    }
}
