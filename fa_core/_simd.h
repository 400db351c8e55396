/* Small vector helpers for fa_core's kernels (cimported through _math.pxd).

   On x86-64 SSE2 is part of the baseline ABI, so these use SSE intrinsics with
   no extra compiler flags; the array functions (fa_exp_sum, fa_log_eps, fa_xlogx_sum, ...)
   also have AVX2+FMA bodies chosen at run time (see "run-time dispatch" below); elsewhere
   they fall back to plain C and libm (same results up to float rounding). Never compiled
   with -ffast-math: the order of every sum is fixed (lane-wise, then a fixed tree).

   fa_exp4 / fa_log4 (and the 8-lane fa_exp8 / fa_log8) are the Cephes single-precision
   polynomials (as in Julien Pommier's sse_mathfun, zlib licence). Measured against double
   precision over every float of the kernels' ranges (tests/test_kernel_library.py,
   test_vector_polynomials): exp within 1 ulp on [-87, 88], log within 1 ulp on
   [1e-16, 1e6]; below -88 exp gives 0 or a tiny normal number instead of a subnormal.
   One call does four or eight lanes and, unlike libm's expf / logf, costs no call. */
#ifndef FA_SIMD_H
#define FA_SIMD_H

#include <math.h>

#if defined(__SSE2__)
#include <emmintrin.h>

/* Dot product with eight float partial sums (two SSE registers), summed in double. */
static inline double fa_dot(const float* a, const float* x, int n) {
    __m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps();
    float t[8], tail = 0.0f;
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        s0 = _mm_add_ps(s0, _mm_mul_ps(_mm_loadu_ps(a + k), _mm_loadu_ps(x + k)));
        s1 = _mm_add_ps(s1, _mm_mul_ps(_mm_loadu_ps(a + k + 4), _mm_loadu_ps(x + k + 4)));
    }
    if (k + 4 <= n) {
        s0 = _mm_add_ps(s0, _mm_mul_ps(_mm_loadu_ps(a + k), _mm_loadu_ps(x + k)));
        k += 4;
    }
    for (; k < n; k++)
        tail += a[k] * x[k];
    _mm_storeu_ps(t, s0);
    _mm_storeu_ps(t + 4, s1);
    return (((double)t[0] + t[4]) + ((double)t[1] + t[5]))
         + (((double)t[2] + t[6]) + ((double)t[3] + t[7])) + tail;
}

/* exp of four floats; inputs below -88.37 give 0 or a tiny normal number. */
static inline __m128 fa_exp4(__m128 x) {
    const __m128 one = _mm_set1_ps(1.0f);
    __m128 fx, tmp, z, y, mask;
    __m128i n;
    x = _mm_min_ps(x, _mm_set1_ps(88.3762626647949f));
    x = _mm_max_ps(x, _mm_set1_ps(-88.3762626647949f));
    fx = _mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)), _mm_set1_ps(0.5f));
    tmp = _mm_cvtepi32_ps(_mm_cvttps_epi32(fx));
    mask = _mm_and_ps(_mm_cmpgt_ps(tmp, fx), one);   /* floor */
    fx = _mm_sub_ps(tmp, mask);
    x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(0.693359375f)));
    x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(-2.12194440e-4f)));
    z = _mm_mul_ps(x, x);
    y = _mm_set1_ps(1.9875691500e-4f);
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.3981999507e-3f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(8.3334519073e-3f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(4.1665795894e-2f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.6666665459e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(5.0000001201e-1f));
    y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(y, z), x), one);
    n = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(fx), _mm_set1_epi32(0x7f)), 23);
    return _mm_mul_ps(y, _mm_castsi128_ps(n));
}

/* Natural log of four positive normal floats. */
static inline __m128 fa_log4(__m128 x) {
    const __m128 one = _mm_set1_ps(1.0f);
    __m128 e, mask, tmp, z, y;
    __m128i emm0 = _mm_srli_epi32(_mm_castps_si128(x), 23);
    x = _mm_and_ps(x, _mm_castsi128_ps(_mm_set1_epi32(~0x7f800000)));
    x = _mm_or_ps(x, _mm_set1_ps(0.5f));   /* mantissa in [0.5, 1) */
    e = _mm_add_ps(_mm_cvtepi32_ps(_mm_sub_epi32(emm0, _mm_set1_epi32(0x7f))), one);
    mask = _mm_cmplt_ps(x, _mm_set1_ps(0.707106781186547524f));
    tmp = _mm_and_ps(x, mask);
    x = _mm_sub_ps(x, one);
    e = _mm_sub_ps(e, _mm_and_ps(one, mask));
    x = _mm_add_ps(x, tmp);
    z = _mm_mul_ps(x, x);
    y = _mm_set1_ps(7.0376836292e-2f);
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(-1.1514610310e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.1676998740e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(-1.2420140846e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.4249322787e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(-1.6668057665e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(2.0000714765e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(-2.4999993993e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(3.3333331174e-1f));
    y = _mm_mul_ps(_mm_mul_ps(y, x), z);
    y = _mm_add_ps(y, _mm_mul_ps(e, _mm_set1_ps(-2.12194440e-4f)));
    y = _mm_sub_ps(y, _mm_mul_ps(z, _mm_set1_ps(0.5f)));
    x = _mm_add_ps(x, y);
    return _mm_add_ps(x, _mm_mul_ps(e, _mm_set1_ps(0.693359375f)));
}

/* ---- run-time dispatch --------------------------------------------------------------
   The default build targets the architecture's baseline (SSE2 on x86-64: wheels run on any
   x86-64 CPU). The array functions below also have an AVX2+FMA body, compiled with GCC /
   clang's per-function target attribute (no -mavx2 for the module), and chosen once at load
   time by a cpuid check (__builtin_cpu_supports, which also checks that the OS saves the
   YMM registers). FA_CORE_SIMD=sse2 in the environment forces the baseline (for tests and
   comparisons). Each extension module holds its own copy of the flag, set identically. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) \
    && !defined(FA_NO_AVX2)
#define FA_HAVE_AVX2_BODY 1
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#define FA_AVX2 __attribute__((target("avx2,fma")))
static int fa_simd_avx2 = 0;
__attribute__((constructor)) static void fa_simd_init(void) {
    const char* force = getenv("FA_CORE_SIMD");
    __builtin_cpu_init();
    fa_simd_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   && !(force != NULL && strcmp(force, "sse2") == 0);
}
#define FA_USE_AVX2 (fa_simd_avx2)
#else
#define FA_USE_AVX2 0
#endif

/* the instruction set the array functions use: 2 AVX2+FMA, 1 SSE2 */
static inline int fa_simd_level(void) { return FA_USE_AVX2 ? 2 : 1; }

/* ---- SSE2 bodies (4 lanes); tails go through a padded 4-float buffer, so every element
   takes the same polynomial whatever n ---- */

static inline __m128 fa_load_tail4(const float* x, int r, float fill) {
    float t[4] = {fill, fill, fill, fill};
    int j;
    for (j = 0; j < r; j++)
        t[j] = x[j];
    return _mm_loadu_ps(t);
}

static inline void fa_store_tail4(float* x, __m128 v, int r) {
    float t[4];
    int j;
    _mm_storeu_ps(t, v);
    for (j = 0; j < r; j++)
        x[j] = t[j];
}

static inline __m128d fa_sum4_pd(__m128d acc, __m128 v) {  /* acc += both halves, in double */
    acc = _mm_add_pd(acc, _mm_cvtps_pd(v));
    return _mm_add_pd(acc, _mm_cvtps_pd(_mm_movehl_ps(v, v)));
}

static inline double fa_hsum_pd(__m128d a) {
    double t[2];
    _mm_storeu_pd(t, a);
    return t[0] + t[1];
}

static inline double fa_exp_sum_sse2(float* x, int n, float sub) {
    __m128 s = _mm_set1_ps(sub), v;
    __m128d acc = _mm_setzero_pd();
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        v = fa_exp4(_mm_sub_ps(_mm_loadu_ps(x + i), s));
        _mm_storeu_ps(x + i, v);
        acc = fa_sum4_pd(acc, v);
    }
    if (i < n) {  /* padding lanes: exp(-inf), clamped, is 0 and adds nothing */
        v = fa_exp4(_mm_sub_ps(fa_load_tail4(x + i, n - i, -INFINITY), s));
        fa_store_tail4(x + i, v, n - i);
        acc = fa_sum4_pd(acc, v);
    }
    return fa_hsum_pd(acc);
}

static inline void fa_log_eps_sse2(const float* x, float* out, int n, float eps) {
    __m128 e = _mm_set1_ps(eps);
    int i = 0;
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(out + i, fa_log4(_mm_add_ps(_mm_loadu_ps(x + i), e)));
    if (i < n)
        fa_store_tail4(out + i, fa_log4(_mm_add_ps(fa_load_tail4(x + i, n - i, 1.0f), e)), n - i);
}

static inline __m128 fa_xlogx4(__m128 v, __m128 e) {  /* v log(v + eps) where v > 0, else 0 */
    __m128 pos = _mm_cmpgt_ps(v, _mm_setzero_ps());
    __m128 arg = _mm_or_ps(_mm_and_ps(pos, _mm_add_ps(v, e)),
                           _mm_andnot_ps(pos, _mm_set1_ps(1.0f)));
    return _mm_and_ps(pos, _mm_mul_ps(v, fa_log4(arg)));
}

static inline double fa_xlogx_sum_sse2(const float* q, int n, float eps) {
    __m128 e = _mm_set1_ps(eps);
    __m128d acc = _mm_setzero_pd();
    int i = 0;
    for (; i + 4 <= n; i += 4)
        acc = fa_sum4_pd(acc, fa_xlogx4(_mm_loadu_ps(q + i), e));
    if (i < n)
        acc = fa_sum4_pd(acc, fa_xlogx4(fa_load_tail4(q + i, n - i, 0.0f), e));
    return fa_hsum_pd(acc);
}

static inline double fa_xlogx_diff_sum_sse2(const float* q, const float* lp, int n, float eps) {
    __m128 e = _mm_set1_ps(eps), v;
    __m128d acc = _mm_setzero_pd();
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        v = _mm_loadu_ps(q + i);
        acc = fa_sum4_pd(acc, _mm_mul_ps(v, _mm_sub_ps(fa_log4(_mm_add_ps(v, e)),
                                                       _mm_loadu_ps(lp + i))));
    }
    if (i < n) {  /* padding: q = 0 adds 0 * (log eps - 0) = 0 */
        v = fa_load_tail4(q + i, n - i, 0.0f);
        acc = fa_sum4_pd(acc, _mm_mul_ps(v, _mm_sub_ps(fa_log4(_mm_add_ps(v, e)),
                                                       fa_load_tail4(lp + i, n - i, 0.0f))));
    }
    return fa_hsum_pd(acc);
}

static inline double fa_dot_d_sse2(const float* a, const float* b, int n) {
    /* products of floats are exact in double: only the sums round */
    __m128d s0 = _mm_setzero_pd(), s1 = _mm_setzero_pd();
    __m128 va, vb;
    double tail = 0.0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        va = _mm_loadu_ps(a + i);
        vb = _mm_loadu_ps(b + i);
        s0 = _mm_add_pd(s0, _mm_mul_pd(_mm_cvtps_pd(va), _mm_cvtps_pd(vb)));
        s1 = _mm_add_pd(s1, _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(va, va)),
                                       _mm_cvtps_pd(_mm_movehl_ps(vb, vb))));
    }
    for (; i < n; i++)
        tail += (double)a[i] * b[i];
    return fa_hsum_pd(_mm_add_pd(s0, s1)) + tail;
}

static inline float fa_max_sse2(const float* x, int n) {
    __m128 m = _mm_set1_ps(x[0]);
    float t[4], mx;
    int i = 0;
    for (; i + 4 <= n; i += 4)
        m = _mm_max_ps(m, _mm_loadu_ps(x + i));
    _mm_storeu_ps(t, m);
    mx = t[0] > t[1] ? t[0] : t[1];
    mx = mx > t[2] ? mx : t[2];
    mx = mx > t[3] ? mx : t[3];
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

static inline void fa_exp_shifted_sse2(float* x, const float* sub, int n, int lanes) {
    int i, b;
    for (i = 0; i < n; i += lanes)
        for (b = 0; b < lanes; b += 4)
            _mm_storeu_ps(x + i + b, fa_exp4(_mm_sub_ps(_mm_loadu_ps(x + i + b),
                                                        _mm_loadu_ps(sub + b))));
}

static inline void fa_sub_xlogx_sse2(const float* q, int n, int lanes, float eps, double* acc) {
    int i, b;
    float t[4];
    __m128 e = _mm_set1_ps(eps);
    for (i = 0; i < n; i += lanes)
        for (b = 0; b < lanes; b += 4) {
            /* lanes with q <= 0 take log(1) = 0 and add nothing */
            _mm_storeu_ps(t, fa_xlogx4(_mm_loadu_ps(q + i + b), e));
            acc[b] -= t[0]; acc[b + 1] -= t[1]; acc[b + 2] -= t[2]; acc[b + 3] -= t[3];
        }
}


/* ---- 8-agent block helpers (the block kernels' BL = 8 agents innermost: x[i * 8 + b]) ----
   Each lane does exactly the scalar loop it replaces (the same float / double operations in
   the same order; baseline SSE2 only, so nothing is contracted into an FMA), so results are
   bitwise those of the loop, whatever the CPU. Two 4-lane halves per row of 8. */

static inline __m128d fa_lo_pd(__m128 v) { return _mm_cvtps_pd(v); }
static inline __m128d fa_hi_pd(__m128 v) { return _mm_cvtps_pd(_mm_movehl_ps(v, v)); }

/* One parent: o[j] += t[j]; ell += (double)t[j] * q[j], j < n. */
static inline void fa_marg1_bl8_sse2(const float* t, const float* q, float* o, double* ell, int n) {
    __m128d e[4];
    __m128 tv, qv;
    int j, h;
    for (h = 0; h < 4; h++)
        e[h] = _mm_loadu_pd(ell + 2 * h);
    for (j = 0; j < n; j++)
        for (h = 0; h < 2; h++) {
            tv = _mm_loadu_ps(t + 8 * j + 4 * h);
            qv = _mm_loadu_ps(q + 8 * j + 4 * h);
            _mm_storeu_ps(o + 8 * j + 4 * h, _mm_add_ps(_mm_loadu_ps(o + 8 * j + 4 * h), tv));
            e[2 * h] = _mm_add_pd(e[2 * h], _mm_mul_pd(fa_lo_pd(tv), fa_lo_pd(qv)));
            e[2 * h + 1] = _mm_add_pd(e[2 * h + 1], _mm_mul_pd(fa_hi_pd(tv), fa_hi_pd(qv)));
        }
    for (h = 0; h < 4; h++)
        _mm_storeu_pd(ell + 2 * h, e[h]);
}

/* Two parents (t is (n0, n1) in C order): o0[i] += t[i, j] q1[j]; o1[j] += t[i, j] q0[i];
   ell += (double)t[i, j] * (q0[i] q1[j]); o0 and o1 do not overlap. */
static inline void fa_marg2_bl8_sse2(const float* t, const float* q0, const float* q1, float* o0,
                                float* o1, double* ell, int n0, int n1) {
    __m128d e[4];
    __m128 a[2], s[2], tk, b, p;
    int i, j, h;
    for (h = 0; h < 4; h++)
        e[h] = _mm_loadu_pd(ell + 2 * h);
    for (i = 0; i < n0; i++) {
        for (h = 0; h < 2; h++) {
            a[h] = _mm_loadu_ps(q0 + 8 * i + 4 * h);
            s[h] = _mm_loadu_ps(o0 + 8 * i + 4 * h);
        }
        for (j = 0; j < n1; j++)
            for (h = 0; h < 2; h++) {
                tk = _mm_loadu_ps(t + 8 * (i * n1 + j) + 4 * h);
                b = _mm_loadu_ps(q1 + 8 * j + 4 * h);
                s[h] = _mm_add_ps(s[h], _mm_mul_ps(tk, b));
                _mm_storeu_ps(o1 + 8 * j + 4 * h,
                              _mm_add_ps(_mm_loadu_ps(o1 + 8 * j + 4 * h), _mm_mul_ps(tk, a[h])));
                p = _mm_mul_ps(a[h], b);
                e[2 * h] = _mm_add_pd(e[2 * h], _mm_mul_pd(fa_lo_pd(tk), fa_lo_pd(p)));
                e[2 * h + 1] = _mm_add_pd(e[2 * h + 1], _mm_mul_pd(fa_hi_pd(tk), fa_hi_pd(p)));
            }
        for (h = 0; h < 2; h++)
            _mm_storeu_ps(o0 + 8 * i + 4 * h, s[h]);
    }
    for (h = 0; h < 4; h++)
        _mm_storeu_pd(ell + 2 * h, e[h]);
}

/* F += the float q (lq - lp) of the rows with q != 0, each added in double (n rows). */
static inline void fa_divergence_bl8_sse2(const float* q, const float* lq, const float* lp, int n,
                                     double* F) {
    __m128d e[4];
    __m128 qv, v;
    int i, h;
    for (h = 0; h < 4; h++)
        e[h] = _mm_loadu_pd(F + 2 * h);
    for (i = 0; i < n; i++)
        for (h = 0; h < 2; h++) {
            qv = _mm_loadu_ps(q + 8 * i + 4 * h);
            v = _mm_mul_ps(qv, _mm_sub_ps(_mm_loadu_ps(lq + 8 * i + 4 * h),
                                          _mm_loadu_ps(lp + 8 * i + 4 * h)));
            /* 0 log 0 = 0: such lanes add +0 (the loop skipped them) */
            v = _mm_and_ps(v, _mm_cmpneq_ps(qv, _mm_setzero_ps()));
            e[2 * h] = _mm_add_pd(e[2 * h], fa_lo_pd(v));
            e[2 * h + 1] = _mm_add_pd(e[2 * h + 1], fa_hi_pd(v));
        }
    for (h = 0; h < 4; h++)
        _mm_storeu_pd(F + 2 * h, e[h]);
}

/* out[b] = (float) sum over c < n of (a[k] x[k][b]) in double, k = idx[c] (idx NULL: k = c);
   zero a[k] are skipped (they add +0: x is finite). */
static inline void fa_wsum_bl8_sse2(const float* a, const int* idx, int n, const float* x,
                               float* out) {
    __m128d e0 = _mm_setzero_pd(), e1 = e0, e2 = e0, e3 = e0;
    __m128 av, p0, p1;
    int c, k;
    for (c = 0; c < n; c++) {
        k = idx != NULL ? idx[c] : c;
        if (a[k] == 0.0f)
            continue;
        av = _mm_set1_ps(a[k]);
        p0 = _mm_mul_ps(av, _mm_loadu_ps(x + 8 * k));
        p1 = _mm_mul_ps(av, _mm_loadu_ps(x + 8 * k + 4));
        e0 = _mm_add_pd(e0, fa_lo_pd(p0));
        e1 = _mm_add_pd(e1, fa_hi_pd(p0));
        e2 = _mm_add_pd(e2, fa_lo_pd(p1));
        e3 = _mm_add_pd(e3, fa_hi_pd(p1));
    }
    _mm_storeu_ps(out, _mm_movelh_ps(_mm_cvtpd_ps(e0), _mm_cvtpd_ps(e1)));
    _mm_storeu_ps(out + 4, _mm_movelh_ps(_mm_cvtpd_ps(e2), _mm_cvtpd_ps(e3)));
}

/* out[i, j] = q0[i] q1[j] (i < n0, j < n1, C order): the joint of two parents. */
static inline void fa_outer_bl8_sse2(const float* q0, int n0, const float* q1, int n1, float* out) {
    __m128 a0, a1;
    int i, j;
    for (i = 0; i < n0; i++) {
        a0 = _mm_loadu_ps(q0 + 8 * i);
        a1 = _mm_loadu_ps(q0 + 8 * i + 4);
        for (j = 0; j < n1; j++) {
            _mm_storeu_ps(out + 8 * (i * n1 + j), _mm_mul_ps(a0, _mm_loadu_ps(q1 + 8 * j)));
            _mm_storeu_ps(out + 8 * (i * n1 + j) + 4,
                          _mm_mul_ps(a1, _mm_loadu_ps(q1 + 8 * j + 4)));
        }
    }
}

/* acc += (double)x[k] * w[k] over k < n with w[k] != 0 (a zero weight adds +0: x finite). */
static inline void fa_wdot_bl8_sse2(const float* w, const float* x, int n, double* acc) {
    __m128d e[4], wv;
    __m128 v;
    int k, h;
    for (h = 0; h < 4; h++)
        e[h] = _mm_loadu_pd(acc + 2 * h);
    for (k = 0; k < n; k++) {
        if (w[k] == 0.0f)
            continue;
        wv = _mm_set1_pd((double)w[k]);
        for (h = 0; h < 2; h++) {
            v = _mm_loadu_ps(x + 8 * k + 4 * h);
            e[2 * h] = _mm_add_pd(e[2 * h], _mm_mul_pd(fa_lo_pd(v), wv));
            e[2 * h + 1] = _mm_add_pd(e[2 * h + 1], _mm_mul_pd(fa_hi_pd(v), wv));
        }
    }
    for (h = 0; h < 4; h++)
        _mm_storeu_pd(acc + 2 * h, e[h]);
}

/* Softmax of every lane of x (n rows) in place, with logq = x - max - log(sum) (the float
   log of the double sum); the sums in double, each division in double. */
static inline void fa_exp_shifted(float* x, const float* sub, int n, int lanes);
static inline void fa_softmax_log_bl8(float* x, float* logq, int n) {
    __m128 mx[2], lt[2];
    __m128d tot[4];
    double tt[8];
    float ltf[8];
    int i, h;
    for (h = 0; h < 2; h++)
        mx[h] = _mm_loadu_ps(x + 4 * h);
    for (i = 1; i < n; i++)  /* x > max ? x : max, as the loop's comparison */
        for (h = 0; h < 2; h++)
            mx[h] = _mm_max_ps(_mm_loadu_ps(x + 8 * i + 4 * h), mx[h]);
    for (i = 0; i < n; i++)
        for (h = 0; h < 2; h++)
            _mm_storeu_ps(logq + 8 * i + 4 * h, _mm_sub_ps(_mm_loadu_ps(x + 8 * i + 4 * h), mx[h]));
    _mm_storeu_ps(ltf, mx[0]);
    _mm_storeu_ps(ltf + 4, mx[1]);
    fa_exp_shifted(x, ltf, 8 * n, 8);
    for (h = 0; h < 4; h++)
        tot[h] = _mm_setzero_pd();
    for (i = 0; i < n; i++)
        for (h = 0; h < 2; h++) {
            __m128 v = _mm_loadu_ps(x + 8 * i + 4 * h);
            tot[2 * h] = _mm_add_pd(tot[2 * h], fa_lo_pd(v));
            tot[2 * h + 1] = _mm_add_pd(tot[2 * h + 1], fa_hi_pd(v));
        }
    for (h = 0; h < 4; h++)
        _mm_storeu_pd(tt + 2 * h, tot[h]);
    for (h = 0; h < 8; h++)
        ltf[h] = (float)log(tt[h]);
    lt[0] = _mm_loadu_ps(ltf);
    lt[1] = _mm_loadu_ps(ltf + 4);
    for (i = 0; i < n; i++)
        for (h = 0; h < 2; h++) {
            __m128 v = _mm_loadu_ps(x + 8 * i + 4 * h);
            __m128 lo = _mm_cvtpd_ps(_mm_div_pd(fa_lo_pd(v), tot[2 * h]));
            __m128 hi = _mm_cvtpd_ps(_mm_div_pd(fa_hi_pd(v), tot[2 * h + 1]));
            _mm_storeu_ps(x + 8 * i + 4 * h, _mm_movelh_ps(lo, hi));
            _mm_storeu_ps(logq + 8 * i + 4 * h,
                          _mm_sub_ps(_mm_loadu_ps(logq + 8 * i + 4 * h), lt[h]));
        }
}

#ifdef FA_HAVE_AVX2_BODY
/* ---- AVX2+FMA bodies (8 lanes): the same Cephes polynomials, Horner steps fused ---- */

FA_AVX2 static inline __m256 fa_exp8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 fx, z, y;
    __m256i n;
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
    fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                         _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    z = _mm256_mul_ps(x, x);
    y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, z, x), one);
    n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(0x7f)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

FA_AVX2 static inline __m256 fa_log8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e, mask, tmp, z, y;
    __m256i emm0 = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
    x = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(~0x7f800000)));
    x = _mm256_or_ps(x, _mm256_set1_ps(0.5f));   /* mantissa in [0.5, 1) */
    e = _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(emm0, _mm256_set1_epi32(0x7f))), one);
    mask = _mm256_cmp_ps(x, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    tmp = _mm256_and_ps(x, mask);
    x = _mm256_sub_ps(x, one);
    e = _mm256_sub_ps(e, _mm256_and_ps(one, mask));
    x = _mm256_add_ps(x, tmp);
    z = _mm256_mul_ps(x, x);
    y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, x), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    x = _mm256_add_ps(x, y);
    return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), x);
}

FA_AVX2 static inline __m256 fa_load_tail8(const float* x, int r, float fill) {
    float t[8] = {fill, fill, fill, fill, fill, fill, fill, fill};
    int j;
    for (j = 0; j < r; j++)
        t[j] = x[j];
    return _mm256_loadu_ps(t);
}

FA_AVX2 static inline void fa_store_tail8(float* x, __m256 v, int r) {
    float t[8];
    int j;
    _mm256_storeu_ps(t, v);
    for (j = 0; j < r; j++)
        x[j] = t[j];
}

FA_AVX2 static inline __m256d fa_sum8_pd(__m256d acc, __m256 v) {
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

FA_AVX2 static inline double fa_hsum256_pd(__m256d a) {
    double t[4];
    _mm256_storeu_pd(t, a);
    return (t[0] + t[2]) + (t[1] + t[3]);
}

FA_AVX2 static inline double fa_exp_sum_avx2(float* x, int n, float sub) {
    __m256 s = _mm256_set1_ps(sub), v;
    __m256d acc = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v = fa_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, v);
        acc = fa_sum8_pd(acc, v);
    }
    if (i < n) {
        v = fa_exp8(_mm256_sub_ps(fa_load_tail8(x + i, n - i, -INFINITY), s));
        fa_store_tail8(x + i, v, n - i);
        acc = fa_sum8_pd(acc, v);
    }
    return fa_hsum256_pd(acc);
}

FA_AVX2 static inline void fa_log_eps_avx2(const float* x, float* out, int n, float eps) {
    __m256 e = _mm256_set1_ps(eps);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, fa_log8(_mm256_add_ps(_mm256_loadu_ps(x + i), e)));
    if (i < n)
        fa_store_tail8(out + i, fa_log8(_mm256_add_ps(fa_load_tail8(x + i, n - i, 1.0f), e)),
                       n - i);
}

FA_AVX2 static inline __m256 fa_xlogx8(__m256 v, __m256 e) {
    __m256 pos = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);
    __m256 arg = _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(v, e), pos);
    return _mm256_and_ps(pos, _mm256_mul_ps(v, fa_log8(arg)));
}

FA_AVX2 static inline double fa_xlogx_sum_avx2(const float* q, int n, float eps) {
    __m256 e = _mm256_set1_ps(eps);
    __m256d acc = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = fa_sum8_pd(acc, fa_xlogx8(_mm256_loadu_ps(q + i), e));
    if (i < n)
        acc = fa_sum8_pd(acc, fa_xlogx8(fa_load_tail8(q + i, n - i, 0.0f), e));
    return fa_hsum256_pd(acc);
}

FA_AVX2 static inline double fa_xlogx_diff_sum_avx2(const float* q, const float* lp, int n, float eps) {
    __m256 e = _mm256_set1_ps(eps), v;
    __m256d acc = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v = _mm256_loadu_ps(q + i);
        acc = fa_sum8_pd(acc, _mm256_mul_ps(v, _mm256_sub_ps(fa_log8(_mm256_add_ps(v, e)),
                                                             _mm256_loadu_ps(lp + i))));
    }
    if (i < n) {
        v = fa_load_tail8(q + i, n - i, 0.0f);
        acc = fa_sum8_pd(acc, _mm256_mul_ps(v, _mm256_sub_ps(fa_log8(_mm256_add_ps(v, e)),
                                                             fa_load_tail8(lp + i, n - i, 0.0f))));
    }
    return fa_hsum256_pd(acc);
}

FA_AVX2 static inline double fa_dot_d_avx2(const float* a, const float* b, int n) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256 va, vb;
    double tail = 0.0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        va = _mm256_loadu_ps(a + i);
        vb = _mm256_loadu_ps(b + i);
        s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(va)),
                             _mm256_cvtps_pd(_mm256_castps256_ps128(vb)), s0);
        s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(va, 1)),
                             _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1)), s1);
    }
    for (; i < n; i++)
        tail += (double)a[i] * b[i];
    return fa_hsum256_pd(_mm256_add_pd(s0, s1)) + tail;
}

FA_AVX2 static inline float fa_max_avx2(const float* x, int n) {
    __m256 m = _mm256_set1_ps(x[0]);
    float t[8], mx;
    int i = 0, j;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    _mm256_storeu_ps(t, m);
    mx = t[0];
    for (j = 1; j < 8; j++)
        mx = t[j] > mx ? t[j] : mx;
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

FA_AVX2 static inline void fa_exp_shifted_avx2(float* x, const float* sub, int n, int lanes) {
    int i, b;
    if (lanes == 8) {
        __m256 s = _mm256_loadu_ps(sub);
        for (i = 0; i < n; i += 8)
            _mm256_storeu_ps(x + i, fa_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
        return;
    }
    for (i = 0; i < n; i += lanes)  /* 4-lane groups, the 8-lane polynomial on each half */
        for (b = 0; b < lanes; b += 4)
            _mm_storeu_ps(x + i + b, _mm256_castps256_ps128(fa_exp8(_mm256_castps128_ps256(
                _mm_sub_ps(_mm_loadu_ps(x + i + b), _mm_loadu_ps(sub + b))))));
}

FA_AVX2 static inline void fa_sub_xlogx_avx2(const float* q, int n, int lanes, float eps, double* acc) {
    int i, b;
    float t[8];
    __m256 e = _mm256_set1_ps(eps), v;
    if (lanes == 8) {
        __m256d a0 = _mm256_loadu_pd(acc), a1 = _mm256_loadu_pd(acc + 4);
        for (i = 0; i < n; i += 8) {
            v = fa_xlogx8(_mm256_loadu_ps(q + i), e);
            a0 = _mm256_sub_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            a1 = _mm256_sub_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
        _mm256_storeu_pd(acc, a0);
        _mm256_storeu_pd(acc + 4, a1);
        return;
    }
    for (i = 0; i < n; i += lanes)
        for (b = 0; b < lanes; b += 4) {
            _mm256_storeu_ps(t, fa_xlogx8(_mm256_castps128_ps256(_mm_loadu_ps(q + i + b)), e));
            acc[b] -= t[0]; acc[b + 1] -= t[1]; acc[b + 2] -= t[2]; acc[b + 3] -= t[3];
        }
}
/* The 8-agent block helpers in one 8-lane register per row: each lane's operations exactly
   the SSE2 bodies' (target avx2 without fma, so no product is contracted into an FMA and
   the results are bitwise those of the SSE2 bodies and of the loops they replace). */
#define FA_AVX2_EXACT __attribute__((target("avx2")))

FA_AVX2_EXACT static inline __m256d fa_lo4_pd(__m256 v) {
    return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
}
FA_AVX2_EXACT static inline __m256d fa_hi4_pd(__m256 v) {
    return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

FA_AVX2_EXACT static inline void fa_marg1_bl8_avx2(const float* t, const float* q, float* o,
                                                   double* ell, int n) {
    __m256d e0 = _mm256_loadu_pd(ell), e1 = _mm256_loadu_pd(ell + 4);
    __m256 tv, qv;
    int j;
    for (j = 0; j < n; j++) {
        tv = _mm256_loadu_ps(t + 8 * j);
        qv = _mm256_loadu_ps(q + 8 * j);
        _mm256_storeu_ps(o + 8 * j, _mm256_add_ps(_mm256_loadu_ps(o + 8 * j), tv));
        e0 = _mm256_add_pd(e0, _mm256_mul_pd(fa_lo4_pd(tv), fa_lo4_pd(qv)));
        e1 = _mm256_add_pd(e1, _mm256_mul_pd(fa_hi4_pd(tv), fa_hi4_pd(qv)));
    }
    _mm256_storeu_pd(ell, e0);
    _mm256_storeu_pd(ell + 4, e1);
}

FA_AVX2_EXACT static inline void fa_marg2_bl8_avx2(const float* t, const float* q0,
                                                   const float* q1, float* o0, float* o1,
                                                   double* ell, int n0, int n1) {
    __m256d e0 = _mm256_loadu_pd(ell), e1 = _mm256_loadu_pd(ell + 4);
    __m256 a, acc, tk, b, p;
    int i, j;
    for (i = 0; i < n0; i++) {
        a = _mm256_loadu_ps(q0 + 8 * i);
        acc = _mm256_loadu_ps(o0 + 8 * i);
        for (j = 0; j < n1; j++) {
            tk = _mm256_loadu_ps(t + 8 * (i * n1 + j));
            b = _mm256_loadu_ps(q1 + 8 * j);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(tk, b));
            _mm256_storeu_ps(o1 + 8 * j, _mm256_add_ps(_mm256_loadu_ps(o1 + 8 * j),
                                                       _mm256_mul_ps(tk, a)));
            p = _mm256_mul_ps(a, b);
            e0 = _mm256_add_pd(e0, _mm256_mul_pd(fa_lo4_pd(tk), fa_lo4_pd(p)));
            e1 = _mm256_add_pd(e1, _mm256_mul_pd(fa_hi4_pd(tk), fa_hi4_pd(p)));
        }
        _mm256_storeu_ps(o0 + 8 * i, acc);
    }
    _mm256_storeu_pd(ell, e0);
    _mm256_storeu_pd(ell + 4, e1);
}

FA_AVX2_EXACT static inline void fa_divergence_bl8_avx2(const float* q, const float* lq,
                                                        const float* lp, int n, double* F) {
    __m256d e0 = _mm256_loadu_pd(F), e1 = _mm256_loadu_pd(F + 4);
    __m256 qv, v;
    int i;
    for (i = 0; i < n; i++) {
        qv = _mm256_loadu_ps(q + 8 * i);
        v = _mm256_mul_ps(qv, _mm256_sub_ps(_mm256_loadu_ps(lq + 8 * i),
                                            _mm256_loadu_ps(lp + 8 * i)));
        v = _mm256_and_ps(v, _mm256_cmp_ps(qv, _mm256_setzero_ps(), _CMP_NEQ_UQ));
        e0 = _mm256_add_pd(e0, fa_lo4_pd(v));
        e1 = _mm256_add_pd(e1, fa_hi4_pd(v));
    }
    _mm256_storeu_pd(F, e0);
    _mm256_storeu_pd(F + 4, e1);
}

FA_AVX2_EXACT static inline void fa_wsum_bl8_avx2(const float* a, const int* idx, int n,
                                                  const float* x, float* out) {
    __m256d e0 = _mm256_setzero_pd(), e1 = e0;
    __m256 p;
    int c, k;
    for (c = 0; c < n; c++) {
        k = idx != NULL ? idx[c] : c;
        if (a[k] == 0.0f)
            continue;
        p = _mm256_mul_ps(_mm256_set1_ps(a[k]), _mm256_loadu_ps(x + 8 * k));
        e0 = _mm256_add_pd(e0, fa_lo4_pd(p));
        e1 = _mm256_add_pd(e1, fa_hi4_pd(p));
    }
    _mm256_storeu_ps(out, _mm256_set_m128(_mm256_cvtpd_ps(e1), _mm256_cvtpd_ps(e0)));
}

FA_AVX2_EXACT static inline void fa_outer_bl8_avx2(const float* q0, int n0, const float* q1,
                                                   int n1, float* out) {
    __m256 a;
    int i, j;
    for (i = 0; i < n0; i++) {
        a = _mm256_loadu_ps(q0 + 8 * i);
        for (j = 0; j < n1; j++)
            _mm256_storeu_ps(out + 8 * (i * n1 + j), _mm256_mul_ps(a, _mm256_loadu_ps(q1 + 8 * j)));
    }
}

FA_AVX2_EXACT static inline void fa_wdot_bl8_avx2(const float* w, const float* x, int n,
                                                  double* acc) {
    __m256d e0 = _mm256_loadu_pd(acc), e1 = _mm256_loadu_pd(acc + 4), wv;
    __m256 v;
    int k;
    for (k = 0; k < n; k++) {
        if (w[k] == 0.0f)
            continue;
        wv = _mm256_set1_pd((double)w[k]);
        v = _mm256_loadu_ps(x + 8 * k);
        e0 = _mm256_add_pd(e0, _mm256_mul_pd(fa_lo4_pd(v), wv));
        e1 = _mm256_add_pd(e1, _mm256_mul_pd(fa_hi4_pd(v), wv));
    }
    _mm256_storeu_pd(acc, e0);
    _mm256_storeu_pd(acc + 4, e1);
}
#define FA_DISPATCH(name, ...) (FA_USE_AVX2 ? name##_avx2(__VA_ARGS__) : name##_sse2(__VA_ARGS__))
#else
#define FA_DISPATCH(name, ...) (name##_sse2(__VA_ARGS__))
#endif  /* FA_HAVE_AVX2_BODY */

/* ---- the array functions the kernels call ---- */

/* x[i] = exp(x[i] - sub); returns the sum of the new x in double (softmax's denominator). */
static inline double fa_exp_sum(float* x, int n, float sub) {
    return FA_DISPATCH(fa_exp_sum, x, n, sub);
}

/* out[i] = log(x[i] + eps) for x[i] + eps positive and normal; out may be x. */
static inline void fa_log_eps(const float* x, float* out, int n, float eps) {
    FA_DISPATCH(fa_log_eps, x, out, n, eps);
}

/* sum over q[i] > 0 of q[i] log(q[i] + eps), in double (0 log 0 = 0). */
static inline double fa_xlogx_sum(const float* q, int n, float eps) {
    return FA_DISPATCH(fa_xlogx_sum, q, n, eps);
}

/* sum of q[i] (log(q[i] + eps) - lp[i]), in double. */
static inline double fa_xlogx_diff_sum(const float* q, const float* lp, int n, float eps) {
    return FA_DISPATCH(fa_xlogx_diff_sum, q, lp, n, eps);
}

/* sum of a[i] b[i] in double (exact products, lane-wise double sums). */
static inline double fa_dot_d(const float* a, const float* b, int n) {
    return FA_DISPATCH(fa_dot_d, a, b, n);
}

/* max of x[0..n), n >= 1 (no NaN). */
static inline float fa_max(const float* x, int n) {
    return FA_DISPATCH(fa_max, x, n);
}

/* x[i] = exp(x[i] - sub[i % lanes]) for i < n; lanes and n are multiples of 4. */
static inline void fa_exp_shifted(float* x, const float* sub, int n, int lanes) {
    FA_DISPATCH(fa_exp_shifted, x, sub, n, lanes);
}

/* acc[i % lanes] -= q[i] log(q[i] + eps) over the q[i] > 0, i < n (multiples of 4). */
static inline void fa_sub_xlogx(const float* q, int n, int lanes, float eps, double* acc) {
    FA_DISPATCH(fa_sub_xlogx, q, n, lanes, eps, acc);
}

/* the 8-agent block helpers (see their SSE2 bodies) */
static inline void fa_marg1_bl8(const float* t, const float* q, float* o, double* ell, int n) {
    FA_DISPATCH(fa_marg1_bl8, t, q, o, ell, n);
}
static inline void fa_marg2_bl8(const float* t, const float* q0, const float* q1, float* o0,
                                float* o1, double* ell, int n0, int n1) {
    FA_DISPATCH(fa_marg2_bl8, t, q0, q1, o0, o1, ell, n0, n1);
}
static inline void fa_divergence_bl8(const float* q, const float* lq, const float* lp, int n,
                                     double* F) {
    FA_DISPATCH(fa_divergence_bl8, q, lq, lp, n, F);
}
static inline void fa_wsum_bl8(const float* a, const int* idx, int n, const float* x,
                               float* out) {
    FA_DISPATCH(fa_wsum_bl8, a, idx, n, x, out);
}
static inline void fa_outer_bl8(const float* q0, int n0, const float* q1, int n1, float* out) {
    FA_DISPATCH(fa_outer_bl8, q0, n0, q1, n1, out);
}
static inline void fa_wdot_bl8(const float* w, const float* x, int n, double* acc) {
    FA_DISPATCH(fa_wdot_bl8, w, x, n, acc);
}

/* One float through the vector polynomials (test probes: isa 2 AVX2+FMA if available, else
   SSE2). */
static inline float fa_exp1(float x, int isa) {
    float t[8] = {x, 0, 0, 0, 0, 0, 0, 0};
#ifdef FA_HAVE_AVX2_BODY
    if (isa == 2 && fa_simd_avx2) { fa_exp_sum_avx2(t, 1, 0.0f); return t[0]; }
#endif
    (void)isa;
    fa_exp_sum_sse2(t, 1, 0.0f);
    return t[0];
}

static inline float fa_log1(float x, int isa) {
    float t[8] = {x, 0, 0, 0, 0, 0, 0, 0};
#ifdef FA_HAVE_AVX2_BODY
    if (isa == 2 && fa_simd_avx2) { fa_log_eps_avx2(t, t, 1, 0.0f); return t[0]; }
#endif
    (void)isa;
    fa_log_eps_sse2(t, t, 1, 0.0f);
    return t[0];
}

#else  /* plain C */

static inline int fa_simd_level(void) { return 0; }

static inline double fa_dot(const float* a, const float* x, int n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0f;
    int k = 0, l;
    for (; k + 8 <= n; k += 8)
        for (l = 0; l < 8; l++)
            s[l] += a[k + l] * x[k + l];
    for (; k < n; k++)
        tail += a[k] * x[k];
    return (((double)s[0] + s[4]) + ((double)s[1] + s[5]))
         + (((double)s[2] + s[6]) + ((double)s[3] + s[7])) + tail;
}

static inline double fa_exp_sum(float* x, int n, float sub) {
    double tot = 0.0;
    int i;
    for (i = 0; i < n; i++) {
        x[i] = expf(x[i] - sub);
        tot += x[i];
    }
    return tot;
}

static inline void fa_log_eps(const float* x, float* out, int n, float eps) {
    int i;
    for (i = 0; i < n; i++)
        out[i] = logf(x[i] + eps);
}

static inline double fa_xlogx_sum(const float* q, int n, float eps) {
    double s = 0.0;
    int i;
    for (i = 0; i < n; i++)
        if (q[i] > 0.0f)
            s += q[i] * logf(q[i] + eps);
    return s;
}

static inline double fa_xlogx_diff_sum(const float* q, const float* lp, int n, float eps) {
    double s = 0.0;
    int i;
    for (i = 0; i < n; i++)
        s += q[i] * (logf(q[i] + eps) - lp[i]);
    return s;
}

static inline double fa_dot_d(const float* a, const float* b, int n) {
    double s = 0.0;
    int i;
    for (i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static inline float fa_max(const float* x, int n) {
    float mx = x[0];
    int i;
    for (i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

static inline void fa_exp_shifted(float* x, const float* sub, int n, int lanes) {
    int i;
    for (i = 0; i < n; i++)
        x[i] = expf(x[i] - sub[i % lanes]);
}

static inline void fa_sub_xlogx(const float* q, int n, int lanes, float eps, double* acc) {
    int i;
    for (i = 0; i < n; i++)
        if (q[i] > 0.0f)
            acc[i % lanes] -= q[i] * logf(q[i] + eps);
}


/* 8-agent block helpers: the loops they stand for (see the SSE2 versions) */
static inline void fa_marg1_bl8(const float* t, const float* q, float* o, double* ell, int n) {
    int j, b;
    for (j = 0; j < n; j++)
        for (b = 0; b < 8; b++) {
            o[8 * j + b] += t[8 * j + b];
            ell[b] += (double)t[8 * j + b] * q[8 * j + b];
        }
}

static inline void fa_marg2_bl8(const float* t, const float* q0, const float* q1, float* o0,
                                float* o1, double* ell, int n0, int n1) {
    int i, j, b;
    const float* tk;
    for (i = 0; i < n0; i++)
        for (j = 0; j < n1; j++) {
            tk = t + 8 * (i * n1 + j);
            for (b = 0; b < 8; b++) {
                o0[8 * i + b] += tk[b] * q1[8 * j + b];
                o1[8 * j + b] += tk[b] * q0[8 * i + b];
                ell[b] += (double)tk[b] * (q0[8 * i + b] * q1[8 * j + b]);
            }
        }
}

static inline void fa_divergence_bl8(const float* q, const float* lq, const float* lp, int n,
                                     double* F) {
    int i;
    for (i = 0; i < 8 * n; i++)
        if (q[i] != 0.0f)
            F[i % 8] += q[i] * (lq[i] - lp[i]);
}

static inline void fa_wsum_bl8(const float* a, const int* idx, int n, const float* x,
                               float* out) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int c, k, b;
    for (c = 0; c < n; c++) {
        k = idx != NULL ? idx[c] : c;
        if (a[k] != 0.0f)
            for (b = 0; b < 8; b++)
                acc[b] += a[k] * x[8 * k + b];
    }
    for (b = 0; b < 8; b++)
        out[b] = (float)acc[b];
}

static inline void fa_outer_bl8(const float* q0, int n0, const float* q1, int n1, float* out) {
    int i, j, b;
    for (i = 0; i < n0; i++)
        for (j = 0; j < n1; j++)
            for (b = 0; b < 8; b++)
                out[8 * (i * n1 + j) + b] = q0[8 * i + b] * q1[8 * j + b];
}

static inline void fa_wdot_bl8(const float* w, const float* x, int n, double* acc) {
    int k, b;
    for (k = 0; k < n; k++)
        if (w[k] != 0.0f)
            for (b = 0; b < 8; b++)
                acc[b] += (double)x[8 * k + b] * w[k];
}

static inline void fa_softmax_log_bl8(float* x, float* logq, int n) {
    float mx[8], lt;
    double tot[8];
    int i, b;
    for (b = 0; b < 8; b++) {
        mx[b] = x[b];
        tot[b] = 0.0;
    }
    for (i = 1; i < n; i++)
        for (b = 0; b < 8; b++)
            mx[b] = x[8 * i + b] > mx[b] ? x[8 * i + b] : mx[b];
    for (i = 0; i < 8 * n; i++) {
        logq[i] = x[i] - mx[i % 8];
        x[i] = expf(x[i] - mx[i % 8]);
        tot[i % 8] += x[i];
    }
    for (b = 0; b < 8; b++) {
        lt = (float)log(tot[b]);
        for (i = 0; i < n; i++) {
            x[8 * i + b] = (float)(x[8 * i + b] / tot[b]);
            logq[8 * i + b] -= lt;
        }
    }
}

static inline float fa_exp1(float x, int isa) { (void)isa; return expf(x); }
static inline float fa_log1(float x, int isa) { (void)isa; return logf(x); }

#endif
#endif
