/* encoderkit: the exact (erf) GELU on 16 floats, for the kernels' fused epilogues.

   gelu(x) = x/2 (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7):
       erf(z) = sign(z) (1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-z^2)),  t = 1 / (1 + p |z|),
   exp by range reduction to r = x - n ln 2 (ln 2 in two parts) and a degree-6 polynomial of e^r on
   |r| <= ln 2 / 2 (the Taylor coefficients, slightly adjusted for the interval as in Cephes' expf), times 2^n. */
#ifndef EK_GELU_H
#define EK_GELU_H
#include <immintrin.h>

static inline __m512 ek_exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 ek_gelu16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    __m512 az = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f), one));
    __m512 poly = _mm512_set1_ps(1.061405429f);
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453152027f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
    poly = _mm512_mul_ps(poly, t);
    __m512 erf_abs = _mm512_fnmadd_ps(poly, ek_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az))), one);
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 erf = _mm512_mask_sub_ps(erf_abs, neg, _mm512_setzero_ps(), erf_abs);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(one, erf));
}

/* gelu in place on rows [m0, m1) x cols [0, n) of a row-major fp32 matrix (row stride ld). */
static inline void ek_gelu_rows(float *y, int64_t ld, int64_t n, int64_t m0, int64_t m1) {
    __mmask16 tail = (n % 16) ? (__mmask16)((1u << (n % 16)) - 1) : 0xFFFF;
    for (int64_t m = m0; m < m1; m++) {
        float *r = y + m * ld;
        for (int64_t k = 0; k < n; k += 16) {
            __mmask16 mk = k + 16 <= n ? 0xFFFF : tail;
            _mm512_mask_storeu_ps(r + k, mk, ek_gelu16(_mm512_maskz_loadu_ps(mk, r + k)));
        }
    }
}
#endif
