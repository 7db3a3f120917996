// Writes ggml's importance-weighted (and reference) quantizations of a deterministic input,
// the expectations for owl-kernels' `quant_weighted` tests. See README.md.
//
// Build and run with make.sh; links only ggml-quants.c plus the stubs below.

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-quants.h"

// ---- Stubs for the few symbols of ggml.c that ggml-quants.c references. ----

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    va_list ap;
    fprintf(stderr, "ggml_abort %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void ggml_log_internal(enum ggml_log_level level, const char * fmt, ...) {
    (void)level;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

// Only the types used below: (block elements, block bytes).
static size_t row_size(enum ggml_type t, int64_t n) {
    switch (t) {
        case GGML_TYPE_Q4_0:   return n / 32 * 18;
        case GGML_TYPE_Q4_1:   return n / 32 * 20;
        case GGML_TYPE_Q5_0:   return n / 32 * 22;
        case GGML_TYPE_Q5_1:   return n / 32 * 24;
        case GGML_TYPE_Q8_0:   return n / 32 * 34;
        case GGML_TYPE_IQ4_NL: return n / 32 * 18;
        case GGML_TYPE_Q2_K:   return n / 256 * 84;
        case GGML_TYPE_Q3_K:   return n / 256 * 110;
        case GGML_TYPE_Q4_K:   return n / 256 * 144;
        case GGML_TYPE_Q5_K:   return n / 256 * 176;
        case GGML_TYPE_Q6_K:   return n / 256 * 210;
        case GGML_TYPE_IQ4_XS: return n / 256 * 136;
        default: fprintf(stderr, "row_size: type %d\n", (int)t); abort();
    }
}

size_t ggml_row_size(enum ggml_type type, int64_t ne) { return row_size(type, ne); }

// Referenced by ggml_validate_row_data only, which this driver never calls.
size_t ggml_type_size(enum ggml_type type) { (void)type; abort(); }
const char * ggml_type_name(enum ggml_type type) { (void)type; return "?"; }

// ---- The input generator (mirrored in crates/owl-kernels/tests/it/quant_weighted.rs). ----

#define ROWS 8
#define COLS 512
#define MAX_ROWS 4096

static uint32_t rng_state;

static uint32_t xorshift32(void) {
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

// Uniform in [0, 1): the top 24 bits.
static float uniform(void) { return (float)(xorshift32() >> 8) * (1.0f / 16777216.0f); }

static void generate(float * x, float * imatrix, int rows, uint32_t seed) {
    rng_state = seed;
    for (int r = 0; r < rows; ++r) {
        const float row_scale = 0.01f * (float)(1 + 3 * r);
        for (int c = 0; c < COLS; ++c) {
            // Gaussian-ish: sum of four uniforms, centred (sequenced: C leaves the order
            // of calls within one expression unspecified).
            const float u0 = uniform();
            const float u1 = uniform();
            const float u2 = uniform();
            const float u3 = uniform();
            float g = ((u0 + u1) + (u2 + u3)) - 2.0f;
            float v = g * row_scale;
            uint32_t pick = xorshift32() & 63;
            if (pick == 0) v *= 12.0f;          // outlier
            else if (pick == 1) v = 0.0f;       // exact zero
            x[r * COLS + c] = v;
        }
    }
    // Row 5: first 32 elements zero (an all-zero block / sub-block).
    for (int c = 0; c < 32; ++c) x[5 * COLS + c] = 0.0f;
    // Row 6: all non-negative (min > 0 paths of the asymmetric formats).
    for (int c = 0; c < COLS; ++c) {
        float v = x[6 * COLS + c];
        x[6 * COLS + c] = v < 0.0f ? -v : v;
    }
    // Row 7: all non-positive, and one whole 256-element super-block zero.
    for (int c = 0; c < COLS; ++c) {
        float v = x[7 * COLS + c];
        x[7 * COLS + c] = c < 256 ? 0.0f : (v > 0.0f ? -v : v);
    }
    // Importance, one per column: u^4 spans a wide range; 1 in 16 is zero; columns
    // 96..128 are all zero (a whole 32-block of zero importance).
    for (int c = 0; c < COLS; ++c) {
        float u = uniform();
        float w = 100.0f * (u * u) * (u * u) + 1e-4f;
        if ((xorshift32() & 15) == 0) w = 0.0f;
        if (c >= 96 && c < 128) w = 0.0f;
        imatrix[c] = w;
    }
}

typedef size_t (*quantize_fn)(const float *, void *, int64_t, int64_t, const float *);

struct fmt { const char * name; enum ggml_type type; quantize_fn fn; };

static void put_u32(FILE * f, uint32_t v) {
    uint8_t b[4] = { v & 255, (v >> 8) & 255, (v >> 16) & 255, (v >> 24) & 255 };
    fwrite(b, 1, 4, f);
}

// usage: weighted_reference OUT.bin [ROWS SEED]. The committed file uses the defaults
// (8 rows, seed 0x2545F491); more rows / other seeds are for ad-hoc wider checks.
int main(int argc, char ** argv) {
    if (argc != 2 && argc != 4) { fprintf(stderr, "usage: %s OUT.bin [ROWS SEED]\n", argv[0]); return 2; }
    const int rows = argc == 4 ? atoi(argv[2]) : ROWS;
    const uint32_t seed = argc == 4 ? (uint32_t)strtoul(argv[3], NULL, 0) : 0x2545F491u;
    if (rows < 8 || rows > MAX_ROWS || seed == 0) { fprintf(stderr, "rows must be 8..%d, seed non-zero\n", MAX_ROWS); return 2; }
    static float x[MAX_ROWS * COLS];
    static float imatrix[COLS];
    generate(x, imatrix, rows, seed);

    const struct fmt fmts[] = {
        { "Q4_0",   GGML_TYPE_Q4_0,   quantize_q4_0 },
        { "Q4_1",   GGML_TYPE_Q4_1,   quantize_q4_1 },
        { "Q5_0",   GGML_TYPE_Q5_0,   quantize_q5_0 },
        { "Q5_1",   GGML_TYPE_Q5_1,   quantize_q5_1 },
        { "Q8_0",   GGML_TYPE_Q8_0,   quantize_q8_0 },
        { "Q2_K",   GGML_TYPE_Q2_K,   quantize_q2_K },
        { "Q3_K",   GGML_TYPE_Q3_K,   quantize_q3_K },
        { "Q4_K",   GGML_TYPE_Q4_K,   quantize_q4_K },
        { "Q5_K",   GGML_TYPE_Q5_K,   quantize_q5_K },
        { "Q6_K",   GGML_TYPE_Q6_K,   quantize_q6_K },
        { "IQ4_NL", GGML_TYPE_IQ4_NL, quantize_iq4_nl },
        { "IQ4_XS", GGML_TYPE_IQ4_XS, quantize_iq4_xs },
    };
    const int nfmt = (int)(sizeof(fmts) / sizeof(fmts[0]));

    FILE * f = fopen(argv[1], "wb");
    if (!f) { perror(argv[1]); return 1; }
    // Layout (all little-endian): "OWLWQ001", u32 rows, u32 cols, f32 input[rows*cols],
    // f32 importance[cols], u32 records; per record: char name[8] (NUL-padded),
    // u32 weighted (1: imatrix given, 0: NULL), u32 byte count, the bytes.
    fwrite("OWLWQ001", 1, 8, f);
    put_u32(f, (uint32_t)rows);
    put_u32(f, COLS);
    for (int i = 0; i < rows * COLS; ++i) { uint32_t b; memcpy(&b, &x[i], 4); put_u32(f, b); }
    for (int i = 0; i < COLS; ++i) { uint32_t b; memcpy(&b, &imatrix[i], 4); put_u32(f, b); }
    put_u32(f, (uint32_t)(2 * nfmt));
    for (int weighted = 1; weighted >= 0; --weighted) {
        for (int k = 0; k < nfmt; ++k) {
            size_t n = row_size(fmts[k].type, COLS) * rows;
            uint8_t * buf = calloc(n, 1);
            size_t got = fmts[k].fn(x, buf, rows, COLS, weighted ? imatrix : NULL);
            if (got != n) { fprintf(stderr, "%s: %zu bytes, expected %zu\n", fmts[k].name, got, n); return 1; }
            char name[8] = {0};
            strncpy(name, fmts[k].name, 8);
            fwrite(name, 1, 8, f);
            put_u32(f, (uint32_t)weighted);
            put_u32(f, (uint32_t)n);
            fwrite(buf, 1, n, f);
            free(buf);
        }
    }
    fclose(f);
    return 0;
}
