/* quantgate's int4 weight-only linear for the CPU, on the bytes torchao's Int4OpaqueTensor holds:
   y = x @ W^T with W[n, k] = (q[n, k] - 8) * s[g, n] + z[g, n] for the group g of k. Built and loaded by
   quantgate/quantize/int4_kernel.py, which says why it exists.

   Layout (torch's _convert_weight_to_int4pack_for_cpu, by the instruction set ATen dispatched to): the
   output columns in blocks of BLOCK = 4 * VL (32 for AVX2, 64 for AVX-512), each block K steps of
   2 * VL bytes; byte j of a step holds column j in its low nibble and column j + 2 * VL in its high
   one. scale_and_zero is [K / group][N] pairs of bf16 (scale, zero), read here as one uint32 each.

   The arithmetic of one output (row m, column n), fixed whatever else shares the call: one running sum
   over a group of x[k] * q[k] in k order, then out += s * sum + (z - 8 s) * xsum, where xsum is the
   group's sum of x in order. Scale and zero apply once per group, not to every weight as torch's
   kernel does. How outputs share the work is free, since it never changes the sums: one row takes two
   blocks a step (eight chains of multiply-adds in flight, which one row needs to keep up with memory);
   more rows go in tiles of up to ROWS rows that share each unpacked step of the weights (AVX2: half a
   block, eight sums in its 16 registers; AVX-512: a whole block, sixteen). So a batched row equals the
   same row alone. 32 2816x1024 layers against torch's kernel (bench/int4_kernel.py, docs/benchmarks.md):
   on the AVX2-only AMD EPYC 2.3x at one row, 1.7-2.4x at 2-512; on an Intel Xeon with AVX-512 1.4-1.6x
   at 1-512 rows. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VL 16
#define ROWS 4
typedef __m512 vec;
typedef __m512i ivec;
static inline vec vzero(void) { return _mm512_setzero_ps(); }
static inline vec vset(float v) { return _mm512_set1_ps(v); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
static inline void vstore(float *p, vec v) { _mm512_storeu_ps(p, v); }
static inline vec vload(const float *p) { return _mm512_loadu_ps(p); }
/* VL bytes widened to VL int32 lanes */
static inline ivec bytes(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
/* A nibble as a float from a 16-entry table: vpermps reads only the low 4 bits of each lane, so the low
   nibble needs no mask, and one shuffle replaces a conversion, with the same values. */
static inline vec nibbles(void) { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
static inline vec low(ivec b) { return _mm512_permutexvar_ps(b, nibbles()); }
static inline vec high(ivec b) { return _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), nibbles()); }
/* VL (scale, zero) pairs as scale and zero - 8 * scale */
static inline void params(const uint32_t *p, vec *s, vec *zz) {
    const ivec v = _mm512_loadu_si512((const void *)p);
    *s = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *zz = _mm512_fnmadd_ps(vset(8.f), *s, _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000))));
}
#else
#define VL 8
#define ROWS 4
typedef __m256 vec;
typedef __m256i ivec;
static inline vec vzero(void) { return _mm256_setzero_ps(); }
static inline vec vset(float v) { return _mm256_set1_ps(v); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
static inline void vstore(float *p, vec v) { _mm256_storeu_ps(p, v); }
static inline vec vload(const float *p) { return _mm256_loadu_ps(p); }
static inline ivec bytes(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
static inline vec low(ivec b) { return _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(0xF))); }
static inline vec high(ivec b) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)); }
static inline void params(const uint32_t *p, vec *s, vec *zz) {
    const ivec v = _mm256_loadu_si256((const __m256i *)p);
    *s = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *zz = _mm256_fnmadd_ps(vset(8.f), *s, _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000))));
}
#endif

#define BLOCK (4 * VL)
#define STEP (2 * VL) /* bytes per k step of a block */

/* Ask for the weights AHEAD bytes on: the hardware prefetcher alone did not keep up on an Intel Xeon with
   AVX-512 (2 cores of a VM, 480 MB L3), where 32 2816x1024 layers ran 1.3-2.5x as fast with it at 1-8
   rows, in both builds (bench/int4_kernel.py, docs/benchmarks.md). On the AVX2-only AMD EPYC, bound by
   arithmetic, a prefetch in the one-row loop made no difference. Past the end of the weights it only
   hints at memory nobody reads: a prefetch never faults. A macro, since GCC 12 dropped the prefetch of a
   static inline function once inlined into tile(). */
#define AHEAD 8192
#define ahead(p) _mm_prefetch((const char *)(p) + AHEAD, _MM_HINT_T0)

/* Column vector c (0..3) of a block: its VL columns start at c * VL; vectors 0 and 1 are the low nibbles
   of bytes 0..VL-1 and VL..2VL-1 of a step, vectors 2 and 3 their high nibbles. Half h of a block
   (vectors h and h + 2) is what one load of VL bytes holds. */

/* The group's epilogue for one row and one column vector c of block b: out += s * acc + (z - 8 s) * xsum */
static inline vec finish(vec out, vec acc, const uint32_t *sz, int64_t g, int64_t N, int64_t b, int c, float xsum) {
    vec s, zz;
    params(sz + g * N + b * BLOCK + c * VL, &s, &zz);
    return vfma(s, acc, vfma(zz, vset(xsum), out));
}

/* One row, blocks b and b + 1 together: eight chains of multiply-adds in flight, which one row needs to
   keep up with memory (one block's four chains wait on their latency). */
static void pair1(const float *x, const float *xsum, const uint8_t *w, const uint32_t *sz, float *y, int64_t b,
                  int64_t N, int64_t K, int64_t group) {
    const uint8_t *w0 = w + b * K * STEP, *w1 = w0 + K * STEP;
    for (int c = 0; c < 8; c++) vstore(y + (b + c / 4) * BLOCK + (c % 4) * VL, vzero());
    for (int64_t g = 0; g < K / group; g++) {
        vec a[8];
        for (int c = 0; c < 8; c++) a[c] = vzero();
        for (int64_t k = g * group; k < (g + 1) * group; k++) {
            ahead(w0 + k * STEP);
            ahead(w1 + k * STEP);
            const vec xk = vset(x[k]);
            const ivec p0 = bytes(w0 + k * STEP), p1 = bytes(w0 + k * STEP + VL);
            const ivec r0 = bytes(w1 + k * STEP), r1 = bytes(w1 + k * STEP + VL);
            a[0] = vfma(xk, low(p0), a[0]);
            a[1] = vfma(xk, low(p1), a[1]);
            a[2] = vfma(xk, high(p0), a[2]);
            a[3] = vfma(xk, high(p1), a[3]);
            a[4] = vfma(xk, low(r0), a[4]);
            a[5] = vfma(xk, low(r1), a[5]);
            a[6] = vfma(xk, high(r0), a[6]);
            a[7] = vfma(xk, high(r1), a[7]);
        }
        for (int c = 0; c < 8; c++) {
            float *out = y + (b + c / 4) * BLOCK + (c % 4) * VL;
            vstore(out, finish(vload(out), a[c], sz, g, N, b + c / 4, c % 4, xsum[g]));
        }
    }
}

/* R <= ROWS rows from row m by C column vectors of block b: all four (C = 4), or half h (C = 2). Inlined
   with R and C constant, so the group's sums stay in registers; the outputs build up in y, read and
   written once a group, which leaves the registers to the sums (kept in registers too, they pushed the
   compiler into spilling). Every output is summed as pair1 sums it. */
static inline __attribute__((always_inline)) void tile(const float *x, const float *xsum, const uint8_t *w,
                                                       const uint32_t *sz, float *y, int64_t m, int64_t b, int h,
                                                       int64_t N, int64_t K, int64_t group, const int R, const int C) {
    const int64_t groups = K / group;
    const uint8_t *wb = w + b * K * STEP;
    int cols[4];
    for (int i = 0; i < C; i++) cols[i] = C == 4 ? i : h + 2 * i;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < C; i++) vstore(y + (m + r) * N + b * BLOCK + cols[i] * VL, vzero());
    for (int64_t g = 0; g < groups; g++) {
        vec a[ROWS][4];
        for (int r = 0; r < R; r++)
            for (int i = 0; i < C; i++) a[r][i] = vzero();
        for (int64_t k = g * group; k < (g + 1) * group; k++) {
            vec q[4];
            ahead(wb + k * STEP);
            if (C == 4) {
                const ivec p0 = bytes(wb + k * STEP), p1 = bytes(wb + k * STEP + VL);
                q[0] = low(p0), q[1] = low(p1), q[2] = high(p0), q[3] = high(p1);
            } else {
                const ivec p = bytes(wb + k * STEP + h * VL);
                q[0] = low(p), q[1] = high(p);
            }
            for (int r = 0; r < R; r++) {
                const vec xk = vset(x[(m + r) * K + k]);
                for (int i = 0; i < C; i++) a[r][i] = vfma(xk, q[i], a[r][i]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int i = 0; i < C; i++) {
                float *out = y + (m + r) * N + b * BLOCK + cols[i] * VL;
                vstore(out, finish(vload(out), a[r][i], sz, g, N, b, cols[i], xsum[(m + r) * groups + g]));
            }
    }
}

/* All M rows of block b: tiles of ROWS rows (AVX2: half a block at a time, 8 running sums, as many as
   its 16 registers hold beside the weights; AVX-512: the whole block, 16), then the rows left over. */
static void block_rows(const float *x, const float *xsum, const uint8_t *w, const uint32_t *sz, float *y,
                       int64_t M, int64_t b, int64_t N, int64_t K, int64_t group) {
#if defined(__AVX512F__)
    int64_t m = 0;
    for (; m + ROWS <= M; m += ROWS) tile(x, xsum, w, sz, y, m, b, 0, N, K, group, ROWS, 4);
    switch (M - m) {
    case 3: tile(x, xsum, w, sz, y, m, b, 0, N, K, group, 3, 4); break;
    case 2: tile(x, xsum, w, sz, y, m, b, 0, N, K, group, 2, 4); break;
    case 1: tile(x, xsum, w, sz, y, m, b, 0, N, K, group, 1, 4); break;
    default: break;
    }
#else
    int64_t m = 0;
    for (; m + ROWS <= M; m += ROWS)
        for (int h = 0; h < 2; h++) tile(x, xsum, w, sz, y, m, b, h, N, K, group, ROWS, 2);
    switch (M - m) { /* at least eight sums in flight where the rows allow */
    case 3:
        for (int h = 0; h < 2; h++) tile(x, xsum, w, sz, y, m, b, h, N, K, group, 3, 2);
        break;
    case 2: tile(x, xsum, w, sz, y, m, b, 0, N, K, group, 2, 4); break;
    case 1: tile(x, xsum, w, sz, y, m, b, 0, N, K, group, 1, 4); break;
    default: break;
    }
#endif
}

static inline float from_bf16(uint16_t v) {
    const uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as torch's bf16 conversion does (NaN stays NaN). */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f != f) return 0x7FC0;
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* The block size of the packing this build reads, for the Python side to check against torch's. */
int64_t qg_int4_block(void) { return BLOCK; }

/* How many output columns a slice of widened weights (qg_int4_dequant: 2K rows of bf16) may hold within
   `bytes`: whole blocks, at least one. The Python and C++ callers both cut their slices by it. */
int64_t qg_int4_widen_columns(int64_t K, int64_t bytes) {
    const int64_t columns = bytes / (4 * K) / BLOCK * BLOCK;
    return columns > BLOCK ? columns : BLOCK;
}

#if defined(__AVX512F__)
/* Round to the nearest bf16, ties to even (finite values only: these are weights), 16 at a time; stores
   it and returns it as fp32. */
static inline vec store_bf16(uint16_t *p, vec v) {
    const ivec u = _mm512_castps_si512(v);
    const ivec odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const ivec r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd)), 16);
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
    return _mm512_castsi512_ps(_mm512_slli_epi32(r, 16));
}

/* The layer's weights, transposed, as two bf16 matrices whose sum is within 2^-17 of them: out[k, n] =
   hi = bf16(w) and out[K + k, n] = lo = bf16(w - hi), for w = (q - 8) * s + z of W[n, k] computed as
   torch computes that expression in fp32 (a product, then a sum). [x, x] @ out, one bf16 matrix
   product with fp32 sums, is then x @ W^T as the kernel computes it up to the order of the sums and
   that 2^-17: on a CPU with AMX a long prefill multiplies on its tiles (int4_kernel.py says when),
   without the bf16 rounding of the weights, which would move a prefill's results by ~1e-3 and make
   them depend on whether the call was long enough. Output columns n0..n1 only (whole blocks), so a
   wide layer widens a slice at a time: out is 2K x (n1 - n0). Returns 0, or -1 in a build without
   AVX-512. */
int qg_int4_dequant(const uint8_t *w, const uint32_t *sz, uint16_t *out, int64_t N, int64_t K, int64_t group,
                    int64_t n0, int64_t n1, int64_t threads) {
    const int64_t width = n1 - n0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t b = n0 / BLOCK; b < n1 / BLOCK; b++) {
        const uint8_t *wb = w + b * K * STEP;
        for (int64_t g = 0; g < K / group; g++) {
            vec s[4], z[4];
            for (int c = 0; c < 4; c++) {
                const ivec v = _mm512_loadu_si512((const void *)(sz + g * N + b * BLOCK + c * VL));
                s[c] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                z[c] = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000)));
            }
            for (int64_t k = g * group; k < (g + 1) * group; k++) {
                const ivec p0 = bytes(wb + k * STEP), p1 = bytes(wb + k * STEP + VL);
                const vec q[4] = {low(p0), low(p1), high(p0), high(p1)};
                uint16_t *hi = out + k * width + b * BLOCK - n0, *lo = hi + K * width;
                for (int c = 0; c < 4; c++) {
                    const vec v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(q[c], vset(8.f)), s[c]), z[c]);
                    store_bf16(lo + c * VL, _mm512_sub_ps(v, store_bf16(hi + c * VL, v)));
                }
            }
        }
    }
    return 0;
}
#else
int qg_int4_dequant(const uint8_t *w, const uint32_t *sz, uint16_t *out, int64_t N, int64_t K, int64_t group,
                    int64_t n0, int64_t n1, int64_t threads) {
    (void)w, (void)sz, (void)out, (void)N, (void)K, (void)group, (void)n0, (void)n1, (void)threads;
    return -1;
}
#endif

/* y = x @ W^T for x M x K and y M x N, both fp32 (bf16 = 0) or both bf16 (bf16 = 1); w packed as above,
   N a multiple of BLOCK, K of group, group even. Returns 0, or -1 when memory for the fp32 copy of x
   ran out. Blocks of columns are split between `threads` OpenMP threads when the layer is large enough
   to pay for it. */
int qg_int4_linear(const void *x_, const uint8_t *w, const uint32_t *sz, void *y_, int64_t M, int64_t N, int64_t K,
                   int64_t group, int bf16, int64_t threads) {
    const int64_t groups = K / group, blocks = N / BLOCK;
    float *buf = (float *)malloc(sizeof(float) * (size_t)(M * groups + (bf16 ? M * K + M * N : 0)));
    if (!buf) return -1;
    float *xsum = buf, *x = (float *)x_, *y = (float *)y_;
    if (bf16) {
        x = buf + M * groups;
        y = x + M * K;
        for (int64_t i = 0; i < M * K; i++) x[i] = from_bf16(((const uint16_t *)x_)[i]);
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t g = 0; g < groups; g++) {
            float t = 0.f;
            for (int64_t k = g * group; k < (g + 1) * group; k++) t += x[m * K + k];
            xsum[m * groups + g] = t;
        }
    const int par = threads > 1 && N * K >= (1 << 18);
    if (M == 1) {
        const int64_t pairs = blocks / 2;
#pragma omp parallel for schedule(static) num_threads(threads) if (par)
        for (int64_t i = 0; i < pairs; i++) pair1(x, xsum, w, sz, y, 2 * i, N, K, group);
        if (blocks % 2) tile(x, xsum, w, sz, y, 0, blocks - 1, 0, N, K, group, 1, 4);
    } else {
#pragma omp parallel for schedule(static) num_threads(threads) if (par)
        for (int64_t b = 0; b < blocks; b++) block_rows(x, xsum, w, sz, y, M, b, N, K, group);
    }
    if (bf16)
        for (int64_t i = 0; i < M * N; i++) ((uint16_t *)y_)[i] = to_bf16(y[i]);
    free(buf);
    return 0;
}
