/* quantgate's int8 weight-only linear for the CPU (AVX2 + FMA, and AVX-512 where the build has it):
   y = x @ (w * s)^T at decode sizes. Built and loaded by quantgate/quantize/int8_kernel.py, which says
   why it exists.

   The arithmetic of one output (row m, column n) is fixed: four running sums of 8 lanes over steps of
   32 weights, added as (s0 + s1) + (s2 + s3), summed across lanes, then the tail in order. So a row's
   result depends neither on how many rows share the call (batched greedy decoding stays equal to one
   row at a time) nor on which of the two instruction sets computed it: an AVX-512 register holds two
   of the 8-lane sums side by side, with the same lane-wise additions.

   The work goes in tiles of up to ROWS rows of x by COLS output columns, so that each widened block of
   weights serves several rows and each loaded block of x several columns. At one row a step is bound
   by reading the weights from memory, and one column at a time (one stream of weights) reads fastest;
   at 8-16 rows it is bound by widening the weights and by reading x again for every column (16 rows of
   a 1024-wide x are 64 KiB, more than L1 holds), which wider tiles cut. AVX2's 16 registers hold a
   2 x 1 tile; AVX-512's 32 hold 4 x 2 (four rows share each widened block, two columns each block of
   x). On a 2-core AMD EPYC with AVX-512, against the AVX2 build: a 291M Llama's decode step 1.22x
   faster at batch 4 and 1.32x at 16, the same within noise at 1, 2 and 8 (docs/benchmarks.md). */
#include <immintrin.h>
#include <stdint.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 widen8(__m128i eight_bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight_bytes)); }

/* 32 weights as floats in four 8-lane registers (two 16-byte loads, not four 8-byte ones) */
static inline void widen32(const int8_t *p, __m256 *out) {
    const __m128i lo = _mm_loadu_si128((const __m128i *)p), hi = _mm_loadu_si128((const __m128i *)(p + 16));
    out[0] = widen8(lo);
    out[1] = widen8(_mm_srli_si128(lo, 8));
    out[2] = widen8(hi);
    out[3] = widen8(_mm_srli_si128(hi, 8));
}

/* One output's four 8-lane running sums, added in the fixed order */
static inline float sum32(const __m256 *a) {
    return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

#if defined(__AVX512F__)
#define ROWS 4
#define COLS 2
#define SUMS 2 /* registers per output: (s0 | s1), (s2 | s3) */
typedef __m512 vec;
static inline vec vzero(void) { return _mm512_setzero_ps(); }
static inline vec vload(const float *p) { return _mm512_loadu_ps(p); }
/* 32 weights as floats, in SUMS registers */
static inline void widen(const int8_t *p, vec *out) {
    out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    out[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
}
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline __m256 high(vec v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
static inline float total(const vec *a) {
    const __m256 s01 = _mm256_add_ps(_mm512_castps512_ps256(a[0]), high(a[0]));
    const __m256 s23 = _mm256_add_ps(_mm512_castps512_ps256(a[1]), high(a[1]));
    return hsum(_mm256_add_ps(s01, s23));
}
#else
#define ROWS 2
#define COLS 1
#define SUMS 4
typedef __m256 vec;
static inline vec vzero(void) { return _mm256_setzero_ps(); }
static inline vec vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void widen(const int8_t *p, vec *out) { widen32(p, out); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline float total(const vec *a) { return sum32(a); }
#endif

#define LANES (32 / SUMS)

/* Ask for the weights AHEAD bytes on (each thread reads its columns' rows of w as one stream): the
   hardware prefetcher alone did not keep up on an Intel Xeon with AVX-512 (see int4_linear.c). A macro,
   since GCC 12 dropped the prefetch of an inlined static function. */
#define AHEAD 8192
#define ahead(p) _mm_prefetch((const char *)(p) + AHEAD, _MM_HINT_T0)

/* One row by one column with 8-lane registers, the sums above in their order: one row reads the
   weights from memory, and there four chains of 8-lane FMAs kept up with it where two chains of
   16-lane ones did not (a 291M Llama's batch-1 step took ~20% longer with those, AVX-512 build). */
static inline float row8(const float *xr, const int8_t *wr, int64_t K, float scale) {
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256 wv[4];
        ahead(wr + k);
        widen32(wr + k, wv);
        for (int j = 0; j < 4; j++) a[j] = _mm256_fmadd_ps(wv[j], _mm256_loadu_ps(xr + k + 8 * j), a[j]);
    }
    float t = sum32(a);
    for (; k < K; k++) t += xr[k] * (float)wr[k];
    return t * scale;
}

/* y[m..m+R, n..n+C] for R <= ROWS rows and C <= COLS columns; inlined with constant R and C, so the
   running sums stay in registers. */
static inline __attribute__((always_inline)) void tile(const float *x, const int8_t *w, const float *s, float *y,
                                                       int64_t m, int64_t n, int64_t N, int64_t K, const int R,
                                                       const int C) {
    vec acc[ROWS][COLS][SUMS];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            for (int j = 0; j < SUMS; j++) acc[r][c][j] = vzero();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        vec wv[COLS][SUMS];
        for (int c = 0; c < C; c++) {
            ahead(w + (n + c) * K + k);
            widen(w + (n + c) * K + k, wv[c]);
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < SUMS; j++) {
                const vec xv = vload(x + (m + r) * K + k + j * LANES);
                for (int c = 0; c < C; c++) acc[r][c][j] = vfma(wv[c][j], xv, acc[r][c][j]);
            }
    }
    for (int r = 0; r < R; r++) {
        const float *xr = x + (m + r) * K;
        for (int c = 0; c < C; c++) {
            const int8_t *wr = w + (n + c) * K;
            float t = total(acc[r][c]);
            for (int64_t i = k; i < K; i++) t += xr[i] * (float)wr[i];
            y[(m + r) * N + n + c] = t * s[n + c];
        }
    }
}

/* All rows for columns n..n+C: full tiles, then the rows left over. */
static inline __attribute__((always_inline)) void columns(const float *x, const int8_t *w, const float *s, float *y,
                                                          int64_t M, int64_t n, int64_t N, int64_t K, const int C) {
    int64_t m = 0;
    for (; m + ROWS <= M; m += ROWS) tile(x, w, s, y, m, n, N, K, ROWS, C);
    switch (M - m) {
#if ROWS > 3
    case 3: tile(x, w, s, y, m, n, N, K, 3, C); break;
    case 2: tile(x, w, s, y, m, n, N, K, 2, C); break;
#endif
    case 1: tile(x, w, s, y, m, n, N, K, 1, C); break;
    default: break;
    }
}

/* y[m, n] = s[n] * sum_k x[m, k] * w[n, k] (x: M x K fp32, w: N x K int8, y: M x N fp32). Groups of
   output columns are split between `threads` OpenMP threads (torch's own pool: the same libgomp) when
   the layer is large enough to pay for it. */
void qg_int8_linear(const float *x, const int8_t *w, const float *s, float *y, int64_t M, int64_t N, int64_t K,
                    int64_t threads) {
    const int par = threads > 1 && N * K >= (1 << 18);
    if (M == 1) {
#pragma omp parallel for schedule(static) num_threads(threads) if (par)
        for (int64_t n = 0; n < N; n++) y[n] = row8(x, w + n * K, K, s[n]);
        return;
    }
    /* Two columns a tile pay only past 8 rows (at 2-8 they were slower than one, on a 2-core AMD EPYC
       with AVX-512); the tile never changes the result, only the speed. */
    if (M <= 8 || COLS == 1) { /* one column a tile */
#pragma omp parallel for schedule(static) num_threads(threads) if (par)
        for (int64_t n = 0; n < N; n++) columns(x, w, s, y, M, n, N, K, 1);
        return;
    }
    const int64_t groups = N / COLS;
#pragma omp parallel for schedule(static) num_threads(threads) if (par)
    for (int64_t g = 0; g < groups; g++) columns(x, w, s, y, M, COLS * g, N, K, COLS);
    for (int64_t n = COLS * groups; n < N; n++) columns(x, w, s, y, M, n, N, K, 1);
}
