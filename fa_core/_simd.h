/* Small vector helpers for fa_core/_kernels.pyx.

   On x86-64 SSE2 is part of the baseline ABI, so these use SSE intrinsics with
   no extra compiler flags; elsewhere they fall back to plain C (same results up
   to float rounding). Never compiled with -ffast-math: every sum keeps its order.

   fa_exp4 / fa_log4 are the Cephes single-precision polynomials (as in Julien
   Pommier's sse_mathfun, zlib licence), relative error about 1e-7: one call
   does four lanes and, unlike libm's expf / logf, costs no call, so the block
   kernels' loops over agents keep their registers. */
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

/* x[i] = exp(x[i] - sub[i % lanes]) for i < n; lanes and n are multiples of 4. */
static inline void fa_exp_shifted(float* x, const float* sub, int n, int lanes) {
    int i, b;
    for (i = 0; i < n; i += lanes)
        for (b = 0; b < lanes; b += 4)
            _mm_storeu_ps(x + i + b, fa_exp4(_mm_sub_ps(_mm_loadu_ps(x + i + b),
                                                        _mm_loadu_ps(sub + b))));
}

/* acc[i % lanes] -= q[i] log(q[i] + eps) over the q[i] > 0, i < n (multiples of 4). */
static inline void fa_sub_xlogx(const float* q, int n, int lanes, float eps, double* acc) {
    int i, b;
    float t[4];
    for (i = 0; i < n; i += lanes)
        for (b = 0; b < lanes; b += 4) {
            __m128 v = _mm_loadu_ps(q + i + b);
            __m128 pos = _mm_cmpgt_ps(v, _mm_setzero_ps());
            /* lanes with q <= 0 take log(1) = 0 and add nothing */
            __m128 arg = _mm_or_ps(_mm_and_ps(pos, _mm_add_ps(v, _mm_set1_ps(eps))),
                                   _mm_andnot_ps(pos, _mm_set1_ps(1.0f)));
            _mm_storeu_ps(t, _mm_and_ps(pos, _mm_mul_ps(v, fa_log4(arg))));
            acc[b] -= t[0]; acc[b + 1] -= t[1]; acc[b + 2] -= t[2]; acc[b + 3] -= t[3];
        }
}

#else  /* plain C */

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

#endif
#endif
