/* encoderkit: residual add + LayerNorm in one pass over each row (post-norm encoder layers: LN(x + f(x))).

   out[m] = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta,  s = x[m] + y[m]
   mean and the (biased) variance in two passes over the row while it is in L1, in fp32. torch runs the add and the
   LayerNorm as two passes over the whole tensor. Rows [m0, m1) so the caller can split rows between threads. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

void ek_add_layernorm_rows(const float *x, const float *y, int64_t D, const float *gamma, const float *beta,
                           float eps, float *out, int64_t m0, int64_t m1) {
    __mmask16 tail = (D % 16) ? (__mmask16)((1u << (D % 16)) - 1) : 0xFFFF;
    for (int64_t m = m0; m < m1; m++) {
        const float *xr = x + m * D, *yr = y + m * D;
        float *o = out + m * D;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < D; k += 16) {
            __mmask16 mk = k + 16 <= D ? 0xFFFF : tail;
            __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, xr + k), _mm512_maskz_loadu_ps(mk, yr + k));
            _mm512_mask_storeu_ps(o + k, mk, s);
            acc = _mm512_add_ps(acc, s);
        }
        float mean = _mm512_reduce_add_ps(acc) / (float)D;
        __m512 vm = _mm512_set1_ps(mean), sq = _mm512_setzero_ps();
        for (int64_t k = 0; k < D; k += 16) {
            __mmask16 mk = k + 16 <= D ? 0xFFFF : tail;
            __m512 d = _mm512_maskz_sub_ps(mk, _mm512_maskz_loadu_ps(mk, o + k), vm);
            sq = _mm512_fmadd_ps(d, d, sq);
        }
        float rstd = 1.0f / sqrtf(_mm512_reduce_add_ps(sq) / (float)D + eps);
        __m512 vr = _mm512_set1_ps(rstd);
        for (int64_t k = 0; k < D; k += 16) {
            __mmask16 mk = k + 16 <= D ? 0xFFFF : tail;
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, o + k), vm), vr);
            __m512 g = gamma ? _mm512_maskz_loadu_ps(mk, gamma + k) : _mm512_set1_ps(1.0f);
            __m512 b = beta ? _mm512_maskz_loadu_ps(mk, beta + k) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(o + k, mk, _mm512_fmadd_ps(d, g, b));
        }
    }
}
