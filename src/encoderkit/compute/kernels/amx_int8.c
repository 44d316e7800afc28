/* encoderkit: W8A8 linear layer on Intel AMX-INT8 with per-token activation scales, quantization and
   dequantization fused around the tile products (encoderkit/compute/int8.py says what is computed):

       s_x[m] = max_k |x[m, k]| / 127,   q_x[m, k] = round_half_even(x[m, k] / s_x[m])      (int8)
       y[m, n] = (sum_k q_x[m, k] * q_w[n, k]) * s_x[m] * s_w[n] + b[n]                      (int32 sum, exact)

   Layouts (the Python side allocates every buffer):
   - quantized activations: Mp x Kp int8 rows (Mp a multiple of 32, Kp of 64, zero padded) and Mp fp32 scales;
   - weight, packed once: for each block of 32 output columns nb and each 64-wide k chunk kc, two tiles (cols 0-15,
     16-31), each 16 rows (groups of 4 k) x 16 cols x 4 int8 (AMX's "VNNI" layout for B);
   - output: rows x ldy fp32 for columns < N.
   Functions take a row range so the caller can run disjoint ranges on several threads. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ek_gelu.h"

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

/* Rows [m0, m1) of x (fp32, row stride ldx) -> int8 rows of q (row stride Kp) and their scales; rows >= M zero. */
void ek_i8_quantize_rows(const float *x, int64_t M, int64_t K, int64_t ldx, int8_t *q, float *scale, int64_t Kp,
                         int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++) {
        int8_t *qr = q + m * Kp;
        if (m >= M) {
            memset(qr, 0, (size_t)Kp);
            scale[m] = 0.0f;
            continue;
        }
        const float *r = x + m * ldx;
        __m512 mx = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(r + k)));
        float amax = _mm512_reduce_max_ps(mx);
        for (; k < K; k++) amax = fmaxf(amax, fabsf(r[k]));
        float s = fmaxf(amax, 1e-12f) / 127.0f;
        scale[m] = s;
        __m512 vs = _mm512_set1_ps(s);
        for (k = 0; k + 16 <= K; k += 16) {
            __m512i v = _mm512_cvt_roundps_epi32(_mm512_div_ps(_mm512_loadu_ps(r + k), vs),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm_storeu_si128((__m128i *)(qr + k), _mm512_cvtsepi32_epi8(v));
        }
        for (; k < K; k++) qr[k] = (int8_t)nearbyintf(r[k] / s);
        for (; k < Kp; k++) qr[k] = 0;
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

/* y[m0:m1, :N] = dequantized (q[m0:m1] . Wq^T) + bias; m0, m1 multiples of 32. wscale, bias: Np fp32 (bias may be
   NULL). gelu: apply the exact GELU to each output (the FFN's activation, fused). panel: 32 x Np int32 scratch.
   For each 32-row strip, the tile products of every column block go to the
   panel first and are scaled afterwards: reading a tile's int32 values right after storing them stalls on the tile
   store (measured 8x slower than the products themselves). */
void ek_i8_gemm_rows(const int8_t *q, const float *xscale, int64_t Kp, const int8_t *wp, const float *wscale,
                     int64_t N, int64_t Np, const float *bias, float *y, int64_t ldy, int32_t *panel, int64_t m0,
                     int64_t m1, int gelu) {
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    const int64_t KC = Kp / 64, NB = Np / 32, ldp = Np * 4;
    __mmask16 tail = (N % 16) ? (__mmask16)((1u << (N % 16)) - 1) : 0xFFFF;
    for (int64_t m = m0; m < m1; m += 32) {
        const int8_t *a0 = q + m * Kp, *a1 = a0 + 16 * Kp;
        for (int64_t nb = 0; nb < NB; nb++) {
            const int8_t *wb = wp + nb * KC * 2 * 1024;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t kc = 0; kc < KC; kc++) {
                const int8_t *bt = wb + kc * 2 * 1024;
                _tile_loadd(4, a0 + kc * 64, Kp);
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
        for (int r = 0; r < 32; r++) { /* fma(acc * s_x, s_w, b): the torch path's mul_ then addcmul */
            __m512 sx = _mm512_set1_ps(xscale[m + r]);
            const int32_t *pr = panel + r * Np;
            float *yr = y + (m + r) * ldy;
            for (int64_t n = 0; n < N; n += 16) {
                __mmask16 mk = n + 16 <= N ? 0xFFFF : tail;
                __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(pr + n)), sx);
                __m512 ws = _mm512_loadu_ps(wscale + n);
                v = bias ? _mm512_fmadd_ps(v, ws, _mm512_loadu_ps(bias + n)) : _mm512_mul_ps(v, ws);
                if (gelu) v = ek_gelu16(v);
                _mm512_mask_storeu_ps(yr + n, mk, v);
            }
        }
    }
    _tile_release();
}
