/* encoderkit: fp32-accurate GEMM on Intel AMX-BF16 by splitting each fp32 operand into two bfloat16 parts.

   x = x_hi + x_lo with x_hi = bf16(x) and x_lo = bf16(x - x_hi) (both round-to-nearest-even), same for the
   weight w. Then

       x . w = x_hi.w_hi + x_hi.w_lo + x_lo.w_hi + x_lo.w_lo,

   where the last term is ~2^-16 of the first and is dropped. Every product of two bfloat16 values is exact in
   fp32 and AMX's TDPBF16PS accumulates those products in fp32 tiles, so the three kept products land in one fp32
   accumulator and the result is written in fp32 (the bf16 GEMMs torch / oneDNN expose round their output to
   bf16, which is what loses the precision). Relative error ~4e-6 against float64, the fp32 GEMM's ~4e-7.

   Layouts (the Python side, encoderkit/compute/amx.py, allocates every buffer):
   - activations, split: Mp x (2 Kp) bf16 rows [hi (Kp) | lo (Kp)], Mp a multiple of 32, Kp of 32, zero padded;
   - weight, packed once: for each block of 32 output columns nb and each 32-wide k chunk kc, four 16 x 16-pair
     tiles: hi cols 0-15, hi cols 16-31, lo cols 0-15, lo cols 16-31, each 16 rows (k pairs) x 16 cols x 2 bf16
     (AMX's "VNNI" layout for B);
   - output: rows x ldy fp32, written for columns < Np (Np a multiple of 32).
   Functions take a row range so the caller can run disjoint ranges on several threads. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "ek_amx.h"
#include "ek_gelu.h"
#define MBLK 256 /* rows of activations kept in L2 while every column block passes over them */

/* the 2 x 2 block of products: accumulators 0-3 += A tiles 4-5 x B tiles 6-7 */
static inline void dp_2x2(void) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
}

static inline uint16_t bf16_rne(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Rows [m0, m1) of x (fp32, row stride ldx) -> [hi | lo] bf16 rows of out (row stride 2 Kp). Rows >= M are zeroed. */
void ek_split_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out, int64_t Kp, int64_t m0,
                   int64_t m1) {
    for (int64_t m = m0; m < m1; m++) {
        uint16_t *hi = out + m * 2 * Kp, *lo = hi + Kp;
        if (m >= M) {
            memset(hi, 0, (size_t)(2 * Kp) * 2);
            continue;
        }
        const float *r = x + m * ldx;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m512 v = _mm512_loadu_ps(r + k);
            __m256bh h = _mm512_cvtneps_pbh(v);
            __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
            __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, hf));
            _mm256_storeu_si256((__m256i *)(hi + k), (__m256i)h);
            _mm256_storeu_si256((__m256i *)(lo + k), (__m256i)l);
        }
        for (; k < K; k++) {
            uint16_t h = bf16_rne(r[k]);
            hi[k] = h;
            lo[k] = bf16_rne(r[k] - bf16_to_f32(h));
        }
        for (; k < Kp; k++) hi[k] = lo[k] = 0;
    }
}

/* w: N x K fp32 row-major -> packed tiles (layout above), Np and Kp multiples of 32, zero padded. */
void ek_pack_weight(const float *w, int64_t N, int64_t K, uint16_t *out, int64_t Np, int64_t Kp) {
    int64_t KC = Kp / 32;
    for (int64_t nb = 0; nb < Np / 32; nb++)
        for (int64_t kc = 0; kc < KC; kc++)
            for (int part = 0; part < 2; part++)
                for (int t = 0; t < 2; t++) {
                    uint16_t *tile = out + (((nb * KC + kc) * 2 + part) * 2 + t) * 512;
                    for (int kp = 0; kp < 16; kp++)
                        for (int n = 0; n < 16; n++)
                            for (int e = 0; e < 2; e++) {
                                int64_t col = nb * 32 + t * 16 + n, kk = kc * 32 + kp * 2 + e;
                                float v = (col < N && kk < K) ? w[col * K + kk] : 0.0f;
                                uint16_t h = bf16_rne(v);
                                tile[kp * 32 + n * 2 + e] = part == 0 ? h : bf16_rne(v - bf16_to_f32(h));
                            }
                }
}

/* y[m0:m1, :Np] = split(x)[m0:m1] . W^T (+ bias), m0 and m1 multiples of 32. bias: Np fp32 or NULL. gelu: apply
   the exact GELU to each finished block of rows (while it is still in cache), over its first n_act columns. */
void ek_gemm_rows(const uint16_t *x, int64_t Kp, const uint16_t *wp, int64_t Np, const float *bias, float *y,
                  int64_t ldy, int64_t m0, int64_t m1, int gelu, int64_t n_act) {
    ek_config_tiles();
    const int64_t KC = Kp / 32, NB = Np / 32, lda = 2 * Kp * 2, ldc = ldy * 4;
    for (int64_t b0 = m0; b0 < m1; b0 += MBLK) {
        int64_t b1 = b0 + MBLK < m1 ? b0 + MBLK : m1;
        for (int64_t nb = 0; nb < NB; nb++) {
            const uint16_t *wb = wp + nb * KC * 4 * 512;
            for (int64_t m = b0; m < b1; m += 32) {
                if (bias) { /* stride 0: every row of the accumulator starts as the bias */
                    _tile_loadd(0, bias + nb * 32, 0);
                    _tile_loadd(1, bias + nb * 32 + 16, 0);
                    _tile_loadd(2, bias + nb * 32, 0);
                    _tile_loadd(3, bias + nb * 32 + 16, 0);
                } else {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                }
                const uint16_t *a0 = x + m * 2 * Kp, *a1 = a0 + 16 * 2 * Kp;
                for (int64_t kc = 0; kc < KC; kc++) {
                    const uint16_t *bt = wb + kc * 4 * 512;
                    _tile_loadd(4, a0 + kc * 32, lda); /* x_hi */
                    _tile_loadd(5, a1 + kc * 32, lda);
                    _tile_loadd(6, bt, 64); /* w_hi */
                    _tile_loadd(7, bt + 512, 64);
                    dp_2x2();
                    _tile_loadd(6, bt + 1024, 64); /* w_lo */
                    _tile_loadd(7, bt + 1536, 64);
                    dp_2x2();
                    _tile_loadd(4, a0 + Kp + kc * 32, lda); /* x_lo */
                    _tile_loadd(5, a1 + Kp + kc * 32, lda);
                    _tile_loadd(6, bt, 64); /* w_hi */
                    _tile_loadd(7, bt + 512, 64);
                    dp_2x2();
                }
                float *yp = y + m * ldy + nb * 32;
                _tile_stored(0, yp, ldc);
                _tile_stored(1, yp + 16, ldc);
                _tile_stored(2, yp + 16 * ldy, ldc);
                _tile_stored(3, yp + 16 * ldy + 16, ldc);
            }
        }
        if (gelu) ek_gelu_rows(y, ldy, n_act, b0, b1);
    }
    _tile_release();
}
