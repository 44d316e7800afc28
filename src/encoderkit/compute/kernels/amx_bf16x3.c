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
#include <math.h>
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

/* One 32 x 32 block of output: rows a0 (and a0 + 16 rows) of the split activations times the column block wb
   (KC chunks of 4 tiles), the accumulators starting from bias (32 floats) or zero, stored at yp (row stride ldy).
   The tiles must be configured. */
static inline void gemm_block(const uint16_t *a0, int64_t Kp, const uint16_t *wb, int64_t KC, const float *bias,
                              float *yp, int64_t ldy) {
    const int64_t lda = 2 * Kp * 2, ldc = ldy * 4;
    const uint16_t *a1 = a0 + 16 * 2 * Kp;
    if (bias) { /* stride 0: every row of the accumulator starts as the bias */
        _tile_loadd(0, bias, 0);
        _tile_loadd(1, bias + 16, 0);
        _tile_loadd(2, bias, 0);
        _tile_loadd(3, bias + 16, 0);
    } else {
        ek_zero_accumulators();
    }
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
    _tile_stored(0, yp, ldc);
    _tile_stored(1, yp + 16, ldc);
    _tile_stored(2, yp + 16 * ldy, ldc);
    _tile_stored(3, yp + 16 * ldy + 16, ldc);
}

/* The same for a 16 x 32 block (the last 16 rows of a call whose row count is an odd multiple of 16): two
   accumulators, so a small batch does not pay for 16 rows of padding. */
static inline void gemm_block16(const uint16_t *a0, int64_t Kp, const uint16_t *wb, int64_t KC, const float *bias,
                                float *yp, int64_t ldy) {
    const int64_t lda = 2 * Kp * 2, ldc = ldy * 4;
    if (bias) {
        _tile_loadd(0, bias, 0);
        _tile_loadd(1, bias + 16, 0);
    } else {
        _tile_zero(0);
        _tile_zero(1);
    }
    for (int64_t kc = 0; kc < KC; kc++) {
        const uint16_t *bt = wb + kc * 4 * 512;
        /* the products in gemm_block's order, so a row's result does not depend on the block it falls in */
        _tile_loadd(4, a0 + kc * 32, lda); /* x_hi */
        _tile_loadd(6, bt, 64);            /* w_hi */
        _tile_loadd(7, bt + 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(2, bt + 1024, 64); /* w_lo (tiles 2 and 3 are free here) */
        _tile_loadd(3, bt + 1536, 64);
        _tile_dpbf16ps(0, 4, 2);
        _tile_dpbf16ps(1, 4, 3);
        _tile_loadd(5, a0 + Kp + kc * 32, lda); /* x_lo */
        _tile_dpbf16ps(0, 5, 6);
        _tile_dpbf16ps(1, 5, 7);
    }
    _tile_stored(0, yp, ldc);
    _tile_stored(1, yp + 16, ldc);
}

/* y[m0:m1, :Np] = split(x)[m0:m1] . W^T (+ bias), m0 a multiple of 32 and m1 of 16. bias: Np fp32 or NULL. gelu:
   apply the exact GELU to each finished block of rows (while it is still in cache), over its first n_act columns. */
void ek_gemm_rows(const uint16_t *x, int64_t Kp, const uint16_t *wp, int64_t Np, const float *bias, float *y,
                  int64_t ldy, int64_t m0, int64_t m1, int gelu, int64_t n_act) {
    ek_config_tiles();
    const int64_t KC = Kp / 32, NB = Np / 32;
    for (int64_t b0 = m0; b0 < m1; b0 += MBLK) {
        int64_t b1 = b0 + MBLK < m1 ? b0 + MBLK : m1;
        for (int64_t nb = 0; nb < NB; nb++) {
            int64_t m = b0;
            for (; m + 32 <= b1; m += 32)
                gemm_block(x + m * 2 * Kp, Kp, wp + nb * KC * 4 * 512, KC, bias ? bias + nb * 32 : NULL,
                           y + m * ldy + nb * 32, ldy);
            if (m < b1)
                gemm_block16(x + m * 2 * Kp, Kp, wp + nb * KC * 4 * 512, KC, bias ? bias + nb * 32 : NULL,
                             y + m * ldy + nb * 32, ldy);
        }
        if (gelu) ek_gelu_rows(y, ldy, n_act, b0, b1);
    }
    _tile_release();
}

/* ---- Attention, softmax(scale * Q K^T + key bias) V, with both products split three ways like the GEMM above ----

   Per head: Q (times the scale) is split into hi/lo rows, K is packed as the "weight" of the first product (T
   output columns, D deep) and V^T as the weight of the second (D output columns, T deep). Query rows go 32 at a time:
   their T logits are computed, biased and exponentiated in fp32 (the whole row is there, so no running softmax is
   needed), split into hi/lo bf16 and multiplied by V^T; each output row is divided by its sum at the end. Nothing of
   size T x T is stored. Q, K and V are read token by token for a group of heads at once: a token's heads are
   contiguous in the projection's output, where one head's rows are a page apart. */

/* exp(x) in fp32: x = n ln2 + r (Cody-Waite two-part ln2), |r| <= ln2 / 2, Taylor series to r^7 (truncation
   error < 6e-9 relative), times 2^n. Inputs below -87 (and -inf) give 0. */
static inline __m512 exp_ps(__m512 x) {
    const __m512 floor = _mm512_set1_ps(-87.0f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, floor, _CMP_GE_OQ);
    x = _mm512_max_ps(x, floor);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

/* 16 fp32 -> their bf16 hi parts and lo parts (v - hi), each as 16 uint16 in a __m256i */
static inline void split16(__m512 v, __m256i *hi, __m256i *lo) {
    __m256bh h = _mm512_cvtneps_pbh(v);
    __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
    *hi = (__m256i)h;
    *lo = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, hf));
}

static inline __mmask16 lanes(int64_t n) { /* the first n lanes (all 16 from n >= 16, none from n <= 0) */
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* One token's row of q (D floats) times scale -> row t of the split Q ([hi (Dp) | lo (Dp)]), zero padded. */
static inline void split_query(const float *src, int64_t D, float scale, uint16_t *qs, int64_t Dp, int64_t t) {
    uint16_t *hi = qs + t * 2 * Dp, *lo = hi + Dp;
    for (int64_t d = 0; d < Dp; d += 16) {
        __m256i h, l;
        split16(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(D - d), src + d), _mm512_set1_ps(scale)), &h, &l);
        _mm256_storeu_si256((__m256i *)(hi + d), h);
        _mm256_storeu_si256((__m256i *)(lo + d), l);
    }
}

/* One key row (D floats) -> output column t of the packed K (ek_pack_weight's layout; Tp columns, Dp deep): each
   32-wide chunk is 16 bf16 pairs, one tile column, written with a scatter; the pad past D is written as zeros. */
static inline void pack_key(const float *src, int64_t D, uint16_t *kp, int64_t Dp, int64_t t) {
    const int64_t KC = Dp / 32, nb = t / 32, half = (t % 32) / 16;
    const __m512i idx = _mm512_add_epi32(
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(16)),
        _mm512_set1_epi32((int)(t % 16)));
    for (int64_t kc = 0; kc < KC; kc++) {
        __m256i h0, l0, h1, l1;
        split16(_mm512_maskz_loadu_ps(lanes(D - kc * 32), src + kc * 32), &h0, &l0);
        split16(_mm512_maskz_loadu_ps(lanes(D - kc * 32 - 16), src + kc * 32 + 16), &h1, &l1);
        uint16_t *tile = kp + (((nb * KC + kc) * 2) * 2 + half) * 512;
        _mm512_i32scatter_epi32(tile, idx, _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1), 4);
        _mm512_i32scatter_epi32(tile + 2 * 512, idx, _mm512_inserti64x4(_mm512_castsi256_si512(l0), l1, 1), 4);
    }
}

/* Value rows t and t + 1 (a: D floats; b: D floats or NULL for zeros) -> their tile row of the packed V^T (Dp
   output columns, Tp deep): for each output column the bf16 pair (v[t], v[t + 1]). */
static inline void pack_value_pair(const float *a, const float *b, int64_t D, uint16_t *vp, int64_t Tp, int64_t t) {
    const int64_t KC = Tp / 32, kc = t / 32, kp = (t % 32) / 2;
    for (int64_t nb = 0; nb < (D + 31) / 32; nb++)
        for (int half = 0; half < 2; half++) {
            const int64_t c0 = nb * 32 + half * 16;
            const __mmask16 mk = lanes(D - c0);
            __m256i ah, al, bh, bl;
            split16(_mm512_maskz_loadu_ps(mk, a + c0), &ah, &al);
            split16(b ? _mm512_maskz_loadu_ps(mk, b + c0) : _mm512_setzero_ps(), &bh, &bl);
            uint16_t *tile = vp + (((nb * KC + kc) * 2) * 2 + half) * 512 + kp * 32;
            _mm512_storeu_si512(tile, _mm512_or_si512(_mm512_cvtepu16_epi32(ah),
                                                      _mm512_slli_epi32(_mm512_cvtepu16_epi32(bh), 16)));
            _mm512_storeu_si512(tile + 2 * 512, _mm512_or_si512(_mm512_cvtepu16_epi32(al),
                                                                _mm512_slli_epi32(_mm512_cvtepu16_epi32(bl), 16)));
        }
}

/* The first `rows` of the 32 logit rows s (row stride Tp, already scaled): e = exp(s + kb - max) over columns < T
   (kb: T floats or NULL), written as split rows [hi (Tp) | lo (Tp)] of ps (zero from column T on, and in rows >=
   rows); inv[r] = 1 / sum(e) (0 for a row whose keys are all masked out, where torch would give NaN). */
static void softmax_split(const float *s, int64_t Tp, int64_t T, const float *kb, uint16_t *ps, int64_t rows,
                          float *inv) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const int64_t T16 = (T + 15) / 16 * 16;
    for (int64_t r = 0; r < 32; r++) {
        uint16_t *hi = ps + r * 2 * Tp, *lo = hi + Tp;
        const float *row = s + r * Tp;
        __m512 vmax = ninf;
        if (r < rows)
            for (int64_t j = 0; j < T; j += 16) {
                __m512 x = _mm512_mask_loadu_ps(ninf, lanes(T - j), row + j);
                if (kb) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(lanes(T - j), kb + j));
                vmax = _mm512_max_ps(vmax, x);
            }
        const float m = _mm512_reduce_max_ps(vmax);
        if (r >= rows || m == -INFINITY) {
            memset(hi, 0, (size_t)(2 * Tp) * 2);
            if (r < rows) inv[r] = 0.0f;
            continue;
        }
        const __m512 vm = _mm512_set1_ps(m);
        __m512 vsum = _mm512_setzero_ps();
        for (int64_t j = 0; j < T; j += 16) {
            __m512 x = _mm512_mask_loadu_ps(ninf, lanes(T - j), row + j);
            if (kb) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(lanes(T - j), kb + j));
            __m512 e = exp_ps(_mm512_sub_ps(x, vm)); /* lanes past T: 0 */
            vsum = _mm512_add_ps(vsum, e);
            __m256i h, l;
            split16(e, &h, &l);
            _mm256_storeu_si256((__m256i *)(hi + j), h);
            _mm256_storeu_si256((__m256i *)(lo + j), l);
        }
        if (T16 < Tp) {
            memset(hi + T16, 0, (size_t)(Tp - T16) * 2);
            memset(lo + T16, 0, (size_t)(Tp - T16) * 2);
        }
        inv[r] = 1.0f / _mm512_reduce_add_ps(vsum);
    }
}

static inline int64_t up64(int64_t n) { return (n + 63) / 64 * 64; }

/* Scratch bytes ek_attention_rows needs for one call (one thread) that handles up to G heads at once. */
int64_t ek_attention_scratch(int64_t T, int64_t D, int64_t G) {
    const int64_t Tp = (T + 31) / 32 * 32, Dp = (D + 31) / 32 * 32;
    return 64 + G * (up64(Tp * 2 * Dp * 2) + 2 * up64(Tp * Dp * 2 * 2) + up64(Tp * Dp * 4) + up64(Tp * 4)) +
           up64(32 * 2 * Tp * 2) + up64(32 * Tp * 4);
}

/* Heads bh in [bh0, bh1) (bh = b * H + h) of attention over q, k, v (fp32; strides[9]: batch, head and token
   strides of q, k and v in floats, the D features contiguous), up to G heads of one batch item at a time; kbias:
   per-batch additive key bias (row stride kb_ld, 0 to share one row) or NULL; out: B x T x H x D fp32 (the
   layout the output projection reads); scratch: ek_attention_scratch(T, D, G) bytes. */
void ek_attention_rows(const float *q, const float *k, const float *v, const int64_t *strides, const float *kbias,
                       int64_t kb_ld, float *out, int64_t H, int64_t T, int64_t D, float scale, int64_t bh0,
                       int64_t bh1, int64_t G, void *scratch) {
    const int64_t Tp = (T + 31) / 32 * 32, Dp = (D + 31) / 32 * 32;
    const int64_t q_sz = up64(Tp * 2 * Dp * 2), kv_sz = up64(Tp * Dp * 2 * 2), o_sz = up64(Tp * Dp * 4);
    const int64_t inv_sz = up64(Tp * 4);
    char *base = (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    char *qs0 = base, *kp0 = qs0 + G * q_sz, *vp0 = kp0 + G * kv_sz, *o0 = vp0 + G * kv_sz, *inv0 = o0 + G * o_sz;
    uint16_t *ps = (uint16_t *)(inv0 + G * inv_sz);
    float *s = (float *)((char *)ps + up64(32 * 2 * Tp * 2));
    ek_config_tiles();
    for (int64_t g0 = bh0; g0 < bh1;) {
        const int64_t b = g0 / H, h0 = g0 % H;
        int64_t h1 = h0 + G < H ? h0 + G : H;
        if (b * H + h1 > bh1) h1 = bh1 - b * H;
        const int64_t n = h1 - h0;
        const float *bias = kbias ? kbias + b * kb_ld : NULL;
        /* pack: token by token over the group's heads */
        for (int64_t t = 0; t < Tp; t++)
            for (int64_t i = 0; i < n; i++) {
                uint16_t *qs = (uint16_t *)(qs0 + i * q_sz);
                if (t >= T) {
                    memset(qs + t * 2 * Dp, 0, (size_t)(2 * Dp) * 2);
                    continue;
                }
                const int64_t h = h0 + i;
                split_query(q + b * strides[0] + h * strides[1] + t * strides[2], D, scale, qs, Dp, t);
                pack_key(k + b * strides[3] + h * strides[4] + t * strides[5], D, (uint16_t *)(kp0 + i * kv_sz), Dp, t);
                if (t % 2 == 0) {
                    const float *va = v + b * strides[6] + h * strides[7] + t * strides[8];
                    pack_value_pair(va, t + 1 < T ? va + strides[8] : NULL, D, (uint16_t *)(vp0 + i * kv_sz), Tp, t);
                }
            }
        for (int64_t t = (T + 1) / 2 * 2; t < Tp; t += 2) /* V^T rows past T: zeros (P's zeros times them) */
            for (int64_t i = 0; i < n; i++) {
                const int64_t kc = t / 32, kp = (t % 32) / 2, KC = Tp / 32;
                for (int64_t nb = 0; nb < Dp / 32; nb++)
                    for (int part = 0; part < 4; part++)
                        memset((uint16_t *)(vp0 + i * kv_sz) + ((nb * KC + kc) * 4 + part) * 512 + kp * 32, 0, 64);
            }
        /* compute, head by head */
        for (int64_t i = 0; i < n; i++) {
            const uint16_t *qs = (const uint16_t *)(qs0 + i * q_sz), *kp = (const uint16_t *)(kp0 + i * kv_sz);
            const uint16_t *vp = (const uint16_t *)(vp0 + i * kv_sz);
            float *o = (float *)(o0 + i * o_sz), *inv = (float *)(inv0 + i * inv_sz);
            for (int64_t m = 0; m < T; m += 32) {
                for (int64_t nb = 0; nb < Tp / 32; nb++)
                    gemm_block(qs + m * 2 * Dp, Dp, kp + nb * (Dp / 32) * 4 * 512, Dp / 32, NULL, s + nb * 32, Tp);
                softmax_split(s, Tp, T, bias, ps, T - m < 32 ? T - m : 32, inv + m);
                for (int64_t nb = 0; nb < Dp / 32; nb++)
                    gemm_block(ps, Tp, vp + nb * (Tp / 32) * 4 * 512, Tp / 32, NULL, o + m * Dp + nb * 32, Dp);
            }
        }
        /* out[b, t, h, :] = o / sum, token by token */
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < n; i++) {
                const float *o = (const float *)(o0 + i * o_sz) + t * Dp;
                const __m512 w = _mm512_set1_ps(((const float *)(inv0 + i * inv_sz))[t]);
                float *dst = out + ((b * T + t) * H + h0 + i) * D;
                for (int64_t d = 0; d < D; d += 16)
                    _mm512_mask_storeu_ps(dst + d, lanes(D - d), _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(D - d), o + d), w));
            }
        g0 = b * H + h1;
    }
    _tile_release();
}
