/* encoderkit: W8A8 linear layer on Intel AMX-INT8 with per-token activation scales, quantization and
   dequantization fused around the tile products (encoderkit/compute/int8.py says what is computed):

       s_x[m] = max_k |x[m, k]| / 127,   q_x[m, k] = round_half_even(x[m, k] / s_x[m])      (int8)
       y[m, n] = (sum_k q_x[m, k] * q_w[n, k]) * s_x[m] * s_w[n] + b[n]                      (int32 sum, exact)

   Layouts (the Python side allocates every buffer):
   - quantized activations: Mp x Kp int8 rows (Mp a multiple of 32, Kp of 64, zero padded) and Mp fp32 scales;
   - weight, packed once: for each block of 32 output columns nb and each 64-wide k chunk kc, two tiles (cols 0-15,
     16-31), each 16 rows (groups of 4 k) x 16 cols x 4 int8 (AMX's "VNNI" layout for B);
   - output: rows x ldy fp32 for columns < N.
   ek_i8_ffn_rows runs a whole feed-forward block (two such layers and the GELU between) strip by strip.
   Functions take a row range so the caller can run disjoint ranges on several threads. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ek_amx.h"
#include "ek_gelu.h"


/* One row of K fp32 values -> Kp int8 values (zero padded); returns its scale max |x| / 127. */
static inline float quantize_row(const float *r, int64_t K, int8_t *qr, int64_t Kp) {
    __m512 mx = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(r + k)));
    float amax = _mm512_reduce_max_ps(mx);
    for (; k < K; k++) amax = fmaxf(amax, fabsf(r[k]));
    float s = fmaxf(amax, 1e-12f) / 127.0f;
    __m512 vs = _mm512_set1_ps(s);
    for (k = 0; k + 16 <= K; k += 16) {
        __m512i v = _mm512_cvt_roundps_epi32(_mm512_div_ps(_mm512_loadu_ps(r + k), vs),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(qr + k), _mm512_cvtsepi32_epi8(v));
    }
    for (; k < K; k++) qr[k] = (int8_t)nearbyintf(r[k] / s);
    for (; k < Kp; k++) qr[k] = 0;
    return s;
}

/* Rows [m0, m1) of x (fp32, row stride ldx) -> int8 rows of q (row stride Kp) and their scales; rows >= M zero. */
void ek_i8_quantize_rows(const float *x, int64_t M, int64_t K, int64_t ldx, int8_t *q, float *scale, int64_t Kp,
                         int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++) {
        if (m >= M) {
            memset(q + m * Kp, 0, (size_t)Kp);
            scale[m] = 0.0f;
        } else {
            scale[m] = quantize_row(x + m * ldx, K, q + m * Kp, Kp);
        }
    }
}

/* wq: N x K int8 row-major -> packed tiles (layout above), Np a multiple of 32, Kp of 64, zero padded. */
void ek_i8_pack_weight(const int8_t *wq, int64_t N, int64_t K, int8_t *out, int64_t Np, int64_t Kp) {
    int64_t KC = Kp / 64;
    for (int64_t nb = 0; nb < Np / 32; nb++)
        for (int64_t kc = 0; kc < KC; kc++)
            for (int t = 0; t < 2; t++) {
                int8_t *tile = out + ((nb * KC + kc) * 2 + t) * 1024;
                for (int kg = 0; kg < 16; kg++)
                    for (int n = 0; n < 16; n++)
                        for (int e = 0; e < 4; e++) {
                            int64_t col = nb * 32 + t * 16 + n, kk = kc * 64 + kg * 4 + e;
                            tile[kg * 64 + n * 4 + e] = (col < N && kk < K) ? wq[col * K + kk] : 0;
                        }
            }
}

/* panel (32 x Np int32) = a (32 rows of Kp int8, row stride Kp) . W^T: every column block's tile products. The
   caller reads the panel only after all of them: reading a tile's int32 values right after storing them stalls on
   the tile store (measured 8x slower than the products themselves). */
static inline void strip_products(const int8_t *a, int64_t Kp, const int8_t *wp, int64_t Np, int32_t *panel) {
    const int64_t KC = Kp / 64, NB = Np / 32, ldp = Np * 4;
    const int8_t *a1 = a + 16 * Kp;
    for (int64_t nb = 0; nb < NB; nb++) {
        const int8_t *wb = wp + nb * KC * 2 * 1024;
        ek_zero_accumulators();
        for (int64_t kc = 0; kc < KC; kc++) {
            const int8_t *bt = wb + kc * 2 * 1024;
            _tile_loadd(4, a + kc * 64, Kp);
            _tile_loadd(5, a1 + kc * 64, Kp);
            _tile_loadd(6, bt, 64);
            _tile_loadd(7, bt + 1024, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
        int32_t *pp = panel + nb * 32;
        _tile_stored(0, pp, ldp);
        _tile_stored(1, pp + 16, ldp);
        _tile_stored(2, pp + 16 * Np, ldp);
        _tile_stored(3, pp + 16 * Np + 16, ldp);
    }
}

/* One output row: yr[n] = fma(acc[n] * s_x, s_w[n], b[n]) (the torch path's mul_ then addcmul), then GELU. */
static inline void dequantize_row(const int32_t *acc, float sx_, const float *wscale, const float *bias, int64_t N,
                                  int gelu, float *yr) {
    __m512 sx = _mm512_set1_ps(sx_);
    __mmask16 tail = (N % 16) ? (__mmask16)((1u << (N % 16)) - 1) : 0xFFFF;
    for (int64_t n = 0; n < N; n += 16) {
        __mmask16 mk = n + 16 <= N ? 0xFFFF : tail;
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + n)), sx);
        __m512 ws = _mm512_loadu_ps(wscale + n);
        v = bias ? _mm512_fmadd_ps(v, ws, _mm512_loadu_ps(bias + n)) : _mm512_mul_ps(v, ws);
        if (gelu) v = ek_gelu16(v);
        _mm512_mask_storeu_ps(yr + n, mk, v);
    }
}

/* y[m0:m1, :N] = dequantized (q[m0:m1] . Wq^T) + bias; m0, m1 multiples of 32. wscale, bias: Np fp32 (bias may be
   NULL). gelu: apply the exact GELU to each output (the FFN's activation, fused). panel: 32 x Np int32 scratch. */
void ek_i8_gemm_rows(const int8_t *q, const float *xscale, int64_t Kp, const int8_t *wp, const float *wscale,
                     int64_t N, int64_t Np, const float *bias, float *y, int64_t ldy, int32_t *panel, int64_t m0,
                     int64_t m1, int gelu) {
    ek_config_tiles();
    for (int64_t m = m0; m < m1; m += 32) {
        strip_products(q + m * Kp, Kp, wp, Np, panel);
        for (int r = 0; r < 32; r++)
            dequantize_row(panel + r * Np, xscale[m + r], wscale, bias, N, gelu, y + (m + r) * ldy);
    }
    _tile_release();
}

/* A whole feed-forward block, y = W2 gelu(W1 x + b1) + b2, both layers W8A8, one 32-row strip at a time: the
   d_ff-wide intermediate never leaves the cache (it is the largest tensor of an encoder layer). Numbers equal two
   ek_i8_gemm_rows calls with a quantization between them. x: M x K fp32 (row stride ldx); layer 1: K -> F
   (packed w1 with Kp1, Fp; scales/bias padded to Fp), layer 2: F -> N (packed w2 with Kp2 = F padded to 64, Np).
   Scratch per calling thread: q1 32 x Kp1 int8, p1 32 x Fp int32, h 32 x F fp32, q2 32 x Kp2 int8, p2 32 x Np int32.
   Rows [m0, m1), multiples of 32; rows >= M read as zero and are written (the caller's y has them). */
void ek_i8_ffn_rows(const float *x, int64_t M, int64_t K, int64_t ldx, const int8_t *w1, const float *ws1,
                    const float *b1, int64_t F, int64_t Kp1, int64_t Fp, const int8_t *w2, const float *ws2,
                    const float *b2, int64_t N, int64_t Kp2, int64_t Np, float *y, int64_t ldy, int8_t *q1,
                    int32_t *p1, float *h, int8_t *q2, int32_t *p2, int64_t m0, int64_t m1) {
    float s1[32], s2[32];
    ek_config_tiles();
    for (int64_t m = m0; m < m1; m += 32) {
        for (int r = 0; r < 32; r++) {
            if (m + r < M) {
                s1[r] = quantize_row(x + (m + r) * ldx, K, q1 + r * Kp1, Kp1);
            } else {
                memset(q1 + r * Kp1, 0, (size_t)Kp1);
                s1[r] = 0.0f;
            }
        }
        strip_products(q1, Kp1, w1, Fp, p1);
        for (int r = 0; r < 32; r++) {
            dequantize_row(p1 + r * Fp, s1[r], ws1, b1, F, 1, h + r * F);
            s2[r] = quantize_row(h + r * F, F, q2 + r * Kp2, Kp2);
        }
        strip_products(q2, Kp2, w2, Np, p2);
        for (int r = 0; r < 32; r++) dequantize_row(p2 + r * Np, s2[r], ws2, b2, N, 0, y + (m + r) * ldy);
    }
    _tile_release();
}
