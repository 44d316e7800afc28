/* encoderkit: the tile configuration both AMX kernels use: tiles 0-7 all 16 rows x 64 bytes (0-3 accumulators of a
   32 x 32 output block, 4-5 two 16-row A tiles, 6-7 two B tiles). Call once per thread before any tile op. */
#ifndef EK_AMX_H
#define EK_AMX_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} ek_tilecfg_t;

static inline void ek_config_tiles(void) {
    ek_tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* the accumulator tiles 0-3 (a 32 x 32 output block) set to zero */
static inline void ek_zero_accumulators(void) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
}
#endif
