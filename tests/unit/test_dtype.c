/* tests/unit/test_dtype.c - unit tests for kernels/dtype: f16 and bf16
 * conversions, type sizes, and the row dequantizers.
 *
 * Every check is against an independent reference written here: half and
 * bfloat16 values are decoded with ldexp from the bit fields, rounding is
 * "nearest representable value, ties to even" found by a search over the
 * ordered bit patterns (cross-checked with the compiler's _Float16 where it
 * exists), and each quantized type has a naive encoder and an
 * element-by-element decoder written from ggml's block layouts. Exits 0 on
 * success, 1 with a message at the first failure. */
#include "kernels/dtype.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/check.h"

/* ---- references for f16 and bf16 ------------------------------------------ */

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Exact value of a half from its fields. */
static double ref_f16_value(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Magnitude of the non-negative pattern p (p <= the inf pattern). The inf
 * pattern stands for 2^(emax+1), which is where IEEE rounding puts the
 * overflow boundary: a value rounds to inf when it is nearer 2^(emax+1) than
 * the largest finite value, ties going to the even pattern (inf). */
static double f16_mag(uint32_t p) { return p == 0x7c00 ? 65536.0 : ref_f16_value((uint16_t)p); }
static double bf16_mag(uint32_t p) {
    return p == 0x7f80 ? ldexp(1.0, 128) : (double)f32_from_bits(p << 16);
}

/* Round finite or infinite x to the nearest pattern in [0, top] by search,
 * ties to even. NaN is handled by the callers. */
static uint16_t ref_round(double x, uint32_t top, double (*mag)(uint32_t)) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs(x);
    if (a >= mag(top))
        return (uint16_t)(sign | top);
    uint32_t lo = 0, hi = top; /* mag(lo) <= a < mag(hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (mag(mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - mag(lo), dh = mag(hi) - a;
    uint32_t p = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo);
    return (uint16_t)(sign | p);
}

static uint16_t ref_f32_to_f16(float f) { return ref_round(f, 0x7c00, f16_mag); }
static uint16_t ref_f32_to_bf16(float f) { return ref_round(f, 0x7f80, bf16_mag); }

static int f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

/* Checks tsr_f32_to_f16(f) against the reference (and against _Float16 when
 * the compiler has it, which validates the reference itself). */
static void check_f16_encode(float f) {
    uint16_t got = tsr_f32_to_f16(f);
    if (isnan(f)) {
        CHECK(f16_is_nan(got) && (got >> 15) == (bits_of_f32(f) >> 31),
              "f32 NaN 0x%08x -> f16 0x%04x, want a NaN of the same sign", bits_of_f32(f), got);
        return;
    }
    uint16_t want = ref_f32_to_f16(f);
    CHECK(got == want, "f32 %a (0x%08x) -> f16 0x%04x, want 0x%04x", (double)f, bits_of_f32(f), got,
          want);
#ifdef __FLT16_MAX__
    _Float16 h = (_Float16)f;
    uint16_t hw;
    memcpy(&hw, &h, 2);
    CHECK(hw == want, "reference disagrees with _Float16 for %a: 0x%04x vs 0x%04x", (double)f, want,
          hw);
#endif
}

static void check_bf16_encode(float f) {
    uint16_t got = tsr_f32_to_bf16(f);
    if (isnan(f)) {
        CHECK((got & 0x7f80) == 0x7f80 && (got & 0x7f) && (got >> 15) == (bits_of_f32(f) >> 31),
              "f32 NaN 0x%08x -> bf16 0x%04x, want a NaN of the same sign", bits_of_f32(f), got);
        return;
    }
    uint16_t want = ref_f32_to_bf16(f);
    CHECK(got == want, "f32 %a (0x%08x) -> bf16 0x%04x, want 0x%04x", (double)f, bits_of_f32(f),
          got, want);
}

/* A random float with exponent field in [emin, emax] and random sign. */
static float rand_float_exp(tu_rng *r, int emin, int emax) {
    uint32_t e = (uint32_t)(emin + (int)tu_rng_below(r, (uint64_t)(emax - emin + 1)));
    uint32_t u = (uint32_t)(tu_rng_u64(r) & 0x807fffffu) | e << 23;
    return f32_from_bits(u);
}

static void test_f16_decode(void) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float got = tsr_f16_to_f32((uint16_t)h);
        double want = ref_f16_value((uint16_t)h);
        if (isnan(want)) {
            CHECK(isnan(got) && !signbit(got) == !signbit(want), "f16 0x%04x -> %g, want NaN", h,
                  (double)got);
            continue;
        }
        CHECK((double)got == want && !signbit(got) == !signbit(want), "f16 0x%04x -> %a, want %a",
              h, (double)got, want);
#ifdef __FLT16_MAX__
        _Float16 hv;
        uint16_t hb = (uint16_t)h;
        memcpy(&hv, &hb, 2);
        CHECK((double)(float)hv == want, "reference disagrees with _Float16 at 0x%04x", h);
#endif
    }
}

static void test_f16_encode(tu_rng *r) {
    /* Every finite half and both infinities round-trip exactly. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if (f16_is_nan((uint16_t)h))
            continue;
        float f = (float)ref_f16_value((uint16_t)h);
        CHECK(tsr_f32_to_f16(f) == h, "f16 0x%04x does not round-trip (got 0x%04x)", h,
              tsr_f32_to_f16(f));
    }
    /* Exact midpoints between neighbours go to the even one; one float ulp
     * either side goes to the nearer one. Includes subnormals, the
     * normal/subnormal boundary and 65504..65536 (overflow to inf). */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double lo = f16_mag(h), hi = f16_mag(h + 1);
        float mid = (float)((lo + hi) / 2);
        CHECK((double)mid == (lo + hi) / 2, "midpoint not exact at 0x%04x", h);
        for (int s = 0; s < 2; s++) {
            float m = s ? -mid : mid;
            uint16_t sg = s ? 0x8000 : 0;
            uint16_t even = (uint16_t)(sg | ((h & 1) ? h + 1 : h));
            CHECK(tsr_f32_to_f16(m) == even, "tie %a -> 0x%04x, want 0x%04x", (double)m,
                  tsr_f32_to_f16(m), even);
            check_f16_encode(m);
            check_f16_encode(nextafterf(m, 0.0f));
            check_f16_encode(nextafterf(m, s ? -INFINITY : INFINITY));
        }
    }
    /* Hand-picked values with known answers. */
    static const struct {
        float f;
        uint16_t h;
    } known[] = {
        {0.0f, 0x0000},           {-0.0f, 0x8000},
        {1.0f, 0x3c00},           {-2.0f, 0xc000},
        {65504.0f, 0x7bff},       {65519.99609375f, 0x7bff},
        {65520.0f, 0x7c00},       {-65520.0f, 0xfc00},
        {1e10f, 0x7c00},          {-FLT_MAX, 0xfc00},
        {INFINITY, 0x7c00},       {-INFINITY, 0xfc00},
        {0x1p-24f, 0x0001},       {0x1p-25f, 0x0000},
        {-0x1p-25f, 0x8000},      {0x1.000002p-25f, 0x0001},
        {0x1.8p-24f, 0x0002},     {0x1.4p-23f, 0x0002},
        {0x1p-14f, 0x0400},       {0x1.ffcp-15f, 0x0400},
        {0x1p-15f, 0x0200},       {1.00048828125f, 0x3c00},
        {1.00146484375f, 0x3c02}, {FLT_MIN, 0x0000},
        {1e-45f, 0x0000},         {-1e-45f, 0x8000},
        {0.333333343f, 0x3555},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        CHECK(tsr_f32_to_f16(known[i].f) == known[i].h, "%a -> 0x%04x, want 0x%04x",
              (double)known[i].f, tsr_f32_to_f16(known[i].f), known[i].h);
        check_f16_encode(known[i].f);
    }
    /* NaNs of both signs, including payloads only in the low float bits
     * (which a naive shift would turn into inf). */
    static const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u,
                                    0xff800001u, 0x7fbfffffu, 0x7f802000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++)
        check_f16_encode(f32_from_bits(nans[i]));
    /* Random values over the whole half range and beyond, then random bits. */
    for (int i = 0; i < 200000; i++)
        check_f16_encode(rand_float_exp(r, 127 - 27, 127 + 17));
    for (int i = 0; i < 100000; i++)
        check_f16_encode(f32_from_bits((uint32_t)tu_rng_u64(r)));
}

static void test_bf16(tu_rng *r) {
    /* Decoding is exact: the pattern is the top half of the float. */
    for (uint32_t b = 0; b < 0x10000; b++) {
        float f = tsr_bf16_to_f32((uint16_t)b);
        CHECK(bits_of_f32(f) == b << 16, "bf16 0x%04x -> 0x%08x", b, bits_of_f32(f));
        if (!isnan(f))
            CHECK(tsr_f32_to_bf16(f) == b, "bf16 0x%04x does not round-trip (0x%04x)", b,
                  tsr_f32_to_bf16(f));
    }
    /* Midpoints (exact in f32) go to even; neighbours to the nearer. */
    for (uint32_t b = 0; b < 0x7f80; b++) {
        double lo = bf16_mag(b), hi = bf16_mag(b + 1);
        float mid = (float)((lo + hi) / 2);
        CHECK((double)mid == (lo + hi) / 2, "bf16 midpoint not exact at 0x%04x", b);
        for (int s = 0; s < 2; s++) {
            float m = s ? -mid : mid;
            uint16_t even = (uint16_t)((s ? 0x8000 : 0) | ((b & 1) ? b + 1 : b));
            CHECK(tsr_f32_to_bf16(m) == even, "bf16 tie %a -> 0x%04x, want 0x%04x", (double)m,
                  tsr_f32_to_bf16(m), even);
            check_bf16_encode(nextafterf(m, 0.0f));
            check_bf16_encode(nextafterf(m, s ? -INFINITY : INFINITY));
        }
    }
    static const struct {
        uint32_t f;
        uint16_t b;
    } known[] = {
        {0x3f800000u, 0x3f80},                        /* 1 */
        {0x3f808000u, 0x3f80},                        /* 1 + 2^-8: tie, even is down */
        {0x3f818000u, 0x3f82},                        /* 1 + 3*2^-8: tie, even is up */
        {0x3f808001u, 0x3f81},                        /* just above the tie */
        {0x7f7fffffu, 0x7f80},                        /* FLT_MAX rounds to inf */
        {0x7f7f7fffu, 0x7f7f},                        /* just below the overflow tie */
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* infinities */
        {0x00008000u, 0x0000},                        /* subnormal tie, even is 0 */
        {0x00018000u, 0x0002},                        /* subnormal tie, even is up */
        {0x80000000u, 0x8000},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        float f = f32_from_bits(known[i].f);
        CHECK(tsr_f32_to_bf16(f) == known[i].b, "0x%08x -> bf16 0x%04x, want 0x%04x", known[i].f,
              tsr_f32_to_bf16(f), known[i].b);
        check_bf16_encode(f);
    }
    static const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u,
                                    0xff800001u, 0x7fffffffu, 0x7f80ffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++)
        check_bf16_encode(f32_from_bits(nans[i]));
    for (int i = 0; i < 200000; i++)
        check_bf16_encode(f32_from_bits((uint32_t)tu_rng_u64(r)));
}

/* ---- type table and row sizes --------------------------------------------- */

static void test_sizes(void) {
    static const struct {
        int t;
        const char *name;
        size_t block, bytes;
    } types[] = {
        {TSR_F32, "f32", 1, 4},       {TSR_F16, "f16", 1, 2},         {TSR_BF16, "bf16", 1, 2},
        {TSR_Q4_0, "q4_0", 32, 18},   {TSR_Q4_1, "q4_1", 32, 20},     {TSR_Q5_0, "q5_0", 32, 22},
        {TSR_Q5_1, "q5_1", 32, 24},   {TSR_Q8_0, "q8_0", 32, 34},     {TSR_Q2_K, "q2_k", 256, 84},
        {TSR_Q3_K, "q3_k", 256, 110}, {TSR_Q4_K, "q4_k", 256, 144},   {TSR_Q5_K, "q5_k", 256, 176},
        {TSR_Q6_K, "q6_k", 256, 210}, {TSR_IQ4_NL, "iq4_nl", 32, 18},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int t = types[i].t;
        CHECK(tsr_dtype_name(t) && !strcmp(tsr_dtype_name(t), types[i].name), "name of %d", t);
        CHECK(tsr_dtype_block(t) == types[i].block, "block of %s", types[i].name);
        CHECK(tsr_dtype_block_bytes(t) == types[i].bytes, "block bytes of %s", types[i].name);
        size_t qk = types[i].block, bb = types[i].bytes;
        CHECK(tsr_dtype_row_bytes(t, qk) == bb, "one block of %s", types[i].name);
        CHECK(tsr_dtype_row_bytes(t, 7 * qk) == 7 * bb, "seven blocks of %s", types[i].name);
        if (qk > 1) {
            CHECK(tsr_dtype_row_bytes(t, qk + 1) == 0, "%s: a partial block", types[i].name);
            CHECK(tsr_dtype_row_bytes(t, qk - 1) == 0, "%s: less than a block", types[i].name);
            CHECK(tsr_dtype_row_bytes(t, 3 * qk + qk / 2) == 0, "%s: half a block", types[i].name);
        }
        /* Overflow: the largest block count that fits, and one more. */
        uint64_t max_blocks = SIZE_MAX / bb;
        if (max_blocks <= UINT64_MAX / qk) {
            CHECK(tsr_dtype_row_bytes(t, max_blocks * qk) == max_blocks * bb,
                  "%s: largest row that fits", types[i].name);
            if (max_blocks + 1 <= UINT64_MAX / qk)
                CHECK(tsr_dtype_row_bytes(t, (max_blocks + 1) * qk) == 0,
                      "%s: overflowing row not reported", types[i].name);
        }
        uint64_t top = UINT64_MAX - (UINT64_MAX % qk), top_blocks = top / qk;
        size_t top_want = top_blocks <= SIZE_MAX / bb ? (size_t)(top_blocks * bb) : 0;
        CHECK(tsr_dtype_row_bytes(t, top) == top_want, "%s: the largest whole-block count",
              types[i].name);
    }
    CHECK(tsr_dtype_row_bytes(TSR_F16, UINT64_MAX) == 0, "f16 UINT64_MAX elements");
    CHECK(tsr_dtype_row_bytes(TSR_F32, UINT64_C(1) << 62) == 0, "f32 2^62 elements");
    CHECK(tsr_dtype_row_bytes(TSR_F32, 5) == 20, "f32 odd count");
    CHECK(tsr_dtype_row_bytes(TSR_F16, 3) == 6, "f16 odd count");
    static const int unknown[] = {-1, 4, 5, 9, 15, 16, 23, 29, 31, 1000, -1000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        int t = unknown[i];
        CHECK(!tsr_dtype_name(t) && !tsr_dtype_block(t) && !tsr_dtype_block_bytes(t) &&
                  !tsr_dtype_row_bytes(t, 32) && !tsr_dtype_row_bytes(t, 256),
              "unknown type %d is known", t);
    }
}

/* ---- plain types through tsr_dequantize ------------------------------------ */

static uint16_t rand_finite_f16(tu_rng *r) {
    for (;;) {
        uint16_t h = (uint16_t)tu_rng_u64(r);
        if ((h & 0x7c00) != 0x7c00)
            return h;
    }
}

static void test_plain_dequant(tu_rng *r) {
    enum { N = 37 };
    uint8_t buf[1 + 4 * N];
    float out[N + 1];
    /* Sources at odd addresses: dequantize must cope with unaligned rows. */
    for (int i = 0; i < N; i++) {
        float f = tu_rng_float(r, -100, 100);
        memcpy(buf + 1 + 4 * i, &f, 4);
    }
    out[N] = 12345.0f;
    tsr_dequantize(TSR_F32, buf + 1, out, N);
    CHECK(!memcmp(out, buf + 1, 4 * N) && out[N] == 12345.0f, "f32 copy");
    for (int i = 0; i < N; i++) {
        uint16_t h = rand_finite_f16(r);
        buf[1 + 2 * i] = (uint8_t)h;
        buf[2 + 2 * i] = (uint8_t)(h >> 8);
    }
    tsr_dequantize(TSR_F16, buf + 1, out, N);
    for (int i = 0; i < N; i++) {
        uint16_t h = (uint16_t)(buf[1 + 2 * i] | buf[2 + 2 * i] << 8);
        CHECK((double)out[i] == ref_f16_value(h), "f16 row element %d", i);
    }
    CHECK(out[N] == 12345.0f, "f16 row wrote past n");
    for (int i = 0; i < N; i++) {
        buf[1 + 2 * i] = (uint8_t)tu_rng_u64(r);
        buf[2 + 2 * i] = (uint8_t)tu_rng_u64(r);
    }
    tsr_dequantize(TSR_BF16, buf + 1, out, N);
    for (int i = 0; i < N; i++) {
        uint32_t want = (uint32_t)(buf[1 + 2 * i] | buf[2 + 2 * i] << 8) << 16;
        CHECK(bits_of_f32(out[i]) == want, "bf16 row element %d", i);
    }
    CHECK(out[N] == 12345.0f, "bf16 row wrote past n");
}

/* ---- quantized types: naive encoders and decoders -------------------------- */

static double f16_at(const uint8_t *p) { return ref_f16_value((uint16_t)(p[0] | p[1] << 8)); }

static void put_f16(uint8_t *p, double v) {
    uint16_t h = ref_f32_to_f16((float)v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* 4-bit field of element j (0..31): low nibble of qs[j] for j < 16, high
 * nibble of qs[j - 16] otherwise. */
static int nibble(const uint8_t *qs, int j) { return j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4; }

static void set_nibble(uint8_t *qs, int j, int v) {
    if (j < 16)
        qs[j] = (uint8_t)((qs[j] & 0xf0) | v);
    else
        qs[j - 16] = (uint8_t)((qs[j - 16] & 0x0f) | v << 4);
}

/* Bit j of the little-endian u32 at qh. */
static int qh_bit(const uint8_t *qh, int j) { return (qh[j / 8] >> (j % 8)) & 1; }

static long nearest(double x) { return lround(x); }

static int clampi(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

/* Each decoder returns element j of the block and writes the magnitude of
 * its terms to *mag (the scale for the rounding tolerance of a float
 * implementation). */
static double dec_q8_0(const uint8_t *b, int j, double *mag) {
    double v = f16_at(b) * (int8_t)b[2 + j];
    *mag = fabs(v);
    return v;
}

static double dec_q4_0(const uint8_t *b, int j, double *mag) {
    double v = f16_at(b) * (nibble(b + 2, j) - 8);
    *mag = fabs(v);
    return v;
}

/* IQ4_NL: Q4_0's nibble layout, each nibble an index into ggml's fixed
 * kvalues_iq4nl table. */
static const int iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

static double dec_iq4_nl(const uint8_t *b, int j, double *mag) {
    double v = f16_at(b) * iq4nl_values[nibble(b + 2, j)];
    *mag = fabs(v);
    return v;
}

static double dec_q4_1(const uint8_t *b, int j, double *mag) {
    double dq = f16_at(b) * nibble(b + 4, j), m = f16_at(b + 2);
    *mag = fabs(dq) + fabs(m);
    return dq + m;
}

static double dec_q5_0(const uint8_t *b, int j, double *mag) {
    int q = nibble(b + 6, j) | qh_bit(b + 2, j) << 4;
    double v = f16_at(b) * (q - 16);
    *mag = fabs(v);
    return v;
}

static double dec_q5_1(const uint8_t *b, int j, double *mag) {
    int q = nibble(b + 8, j) | qh_bit(b + 4, j) << 4;
    double dq = f16_at(b) * q, m = f16_at(b + 2);
    *mag = fabs(dq) + fabs(m);
    return dq + m;
}

/* Q6_K, per ggml's dequantize_row_q6_K: element e = 128*h + 32*g + l
 * (h < 2, g < 4, l < 32) takes the low (g < 2) or high (g >= 2) nibble of
 * ql[64h + l + 32*(g & 1)], bits 2g..2g+1 of qh[32h + l] above it, minus 32,
 * times d and the int8 scale of its 16-element group, scales[e / 16]. */
static void q6k_fields(int e, int *ql_i, int *ql_high, int *qh_i, int *qh_shift) {
    int h = e / 128, g = (e % 128) / 32, l = e % 32;
    *ql_i = 64 * h + l + 32 * (g & 1);
    *ql_high = g >= 2;
    *qh_i = 128 + 32 * h + l;
    *qh_shift = 2 * g;
}

static double dec_q6_k(const uint8_t *b, int e, double *mag) {
    int ql_i, ql_high, qh_i, qh_shift;
    q6k_fields(e, &ql_i, &ql_high, &qh_i, &qh_shift);
    int lo = ql_high ? b[ql_i] >> 4 : b[ql_i] & 0xf;
    int q = (lo | ((b[qh_i] >> qh_shift) & 3) << 4) - 32;
    double v = f16_at(b + 208) * (int8_t)b[192 + e / 16] * q;
    *mag = fabs(v);
    return v;
}

/* The K-quants below, per ggml's dequantize_row_q{2,3,4,5}_K, element by
 * element. Q2_K and Q3_K: element e = 128*h + 32*s + l (h < 2, s < 4, l < 32)
 * has its low 2 bits at bits 2s..2s+1 of qs[32h + l], and a 16-element group
 * e / 16 with its own scale. */
static int k_low2(const uint8_t *qs, int e) {
    return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

/* Q2_K {scales[16] (low nibble scale, high nibble min); qs[64]; f16 d; f16
 * dmin}: x = d*scale*q - dmin*min. */
static double dec_q2_k(const uint8_t *b, int e, double *mag) {
    int g = b[e / 16];
    double dq = f16_at(b + 80) * (g & 15) * k_low2(b + 16, e), m = f16_at(b + 82) * (g >> 4);
    *mag = fabs(dq) + fabs(m);
    return dq - m;
}

/* Q3_K {hmask[32]; qs[64]; scales[12]; f16 d}: q = low2 + 4*hbit - 4 with hbit
 * bit e / 32 of hmask[e % 32]; group g's 6-bit scale has its low nibble in
 * byte g % 8 of scales (high nibble for g >= 8) and its top 2 bits at bits
 * 2*(g / 4) of byte 8 + g % 4; x = d*(scale - 32)*q. */
static double dec_q3_k(const uint8_t *b, int e, double *mag) {
    const uint8_t *sc = b + 96;
    int g = e / 16;
    int lo = g < 8 ? sc[g] & 15 : sc[g - 8] >> 4, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
    int q = k_low2(b + 32, e) + 4 * ((b[e % 32] >> (e / 32)) & 1) - 4;
    double v = f16_at(b + 108) * ((lo | hi << 4) - 32) * q;
    *mag = fabs(v);
    return v;
}

/* Q4_K and Q5_K {f16 d; f16 dmin; scales[12]; (Q5_K: qh[32]); qs[128]}:
 * element e in 32-element group j = e / 32 is the low (j even) or high nibble
 * of qs[32*(j / 2) + e % 32], with (Q5_K) bit j of qh[e % 32] as fifth bit.
 * Group j < 4 has scale scales[j] & 63 and min scales[j + 4] & 63; group
 * j >= 4 has the nibbles of scales[j + 4] (low: scale, high: min) with the
 * top 2 bits of scales[j - 4] (scale) and scales[j] (min) above them.
 * x = d*scale*q - dmin*min. */
static double dec_k4(const uint8_t *b, int e, int five, double *mag) {
    const uint8_t *sc = b + 4, *qs = b + (five ? 48 : 16);
    int j = e / 32, l = e % 32, scale, min;
    if (j < 4) {
        scale = sc[j] & 63;
        min = sc[j + 4] & 63;
    } else {
        scale = (sc[j + 4] & 15) | (sc[j - 4] >> 6) << 4;
        min = (sc[j + 4] >> 4) | (sc[j] >> 6) << 4;
    }
    int q = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
    if (five)
        q += 16 * ((b[16 + l] >> j) & 1);
    double dq = f16_at(b) * scale * q, m = f16_at(b + 2) * min;
    *mag = fabs(dq) + fabs(m);
    return dq - m;
}

static double dec_q4_k(const uint8_t *b, int e, double *mag) { return dec_k4(b, e, 0, mag); }
static double dec_q5_k(const uint8_t *b, int e, double *mag) { return dec_k4(b, e, 1, mag); }

/* Encoders: from x(qk) to one block; return the largest error bound any
 * element may have against x (half the quantization step, plus slack). */
static double enc_q8_0(const float *x, uint8_t *b, tu_rng *r) {
    double amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmax(amax, fabs(x[j]));
    double d = amax / 127 * (tu_rng_below(r, 2) ? -1 : 1); /* both signs of d */
    put_f16(b, d);
    d = f16_at(b);
    for (int j = 0; j < 32; j++)
        b[2 + j] = (uint8_t)(int8_t)clampi(nearest(x[j] / d), -127, 127);
    return fabs(d) * 0.51;
}

static double enc_q4_0(const float *x, uint8_t *b, tu_rng *r) {
    double amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmax(amax, fabs(x[j]));
    double d = amax / 7 * (tu_rng_below(r, 2) ? -1 : 1);
    put_f16(b, d);
    d = f16_at(b);
    memset(b + 2, 0, 16);
    for (int j = 0; j < 32; j++)
        set_nibble(b + 2, j, clampi(nearest(x[j] / d) + 8, 0, 15));
    return fabs(d) * 0.51;
}

/* Nearest table entry to x/d; the table's widest gap is 24 and d = amax/127
 * reaches 14 past its ends (a little more once d is rounded to f16): 14.1|d|
 * bounds every element's error. */
static double enc_iq4_nl(const float *x, uint8_t *b, tu_rng *r) {
    double amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmax(amax, fabs(x[j]));
    put_f16(b, amax / 127 * (tu_rng_below(r, 2) ? -1 : 1));
    double d = f16_at(b);
    memset(b + 2, 0, 16);
    for (int j = 0; j < 32; j++) {
        int best = 0;
        for (int k = 1; k < 16; k++)
            if (fabs(x[j] - d * iq4nl_values[k]) < fabs(x[j] - d * iq4nl_values[best]))
                best = k;
        set_nibble(b + 2, j, best);
    }
    return fabs(d) * 14.1;
}

static double enc_affine(const float *x, uint8_t *b, int levels, double *d_out, double *m_out) {
    double mn = x[0], mx = x[0];
    for (int j = 1; j < 32; j++) {
        mn = fmin(mn, x[j]);
        mx = fmax(mx, x[j]);
    }
    put_f16(b, (mx - mn) / levels);
    put_f16(b + 2, mn);
    *d_out = f16_at(b);
    *m_out = f16_at(b + 2);
    /* m is rounded to f16, so the extremes may clamp by up to |mn - m|. */
    return fabs(*d_out) * 0.51 + fabs(mn - *m_out) + 1e-6 * fmax(fabs(mn), fabs(mx));
}

static double enc_q4_1(const float *x, uint8_t *b, tu_rng *r) {
    (void)r;
    double d, m;
    double bound = enc_affine(x, b, 15, &d, &m);
    memset(b + 4, 0, 16);
    for (int j = 0; j < 32; j++)
        set_nibble(b + 4, j, clampi(nearest((x[j] - m) / d), 0, 15));
    return bound;
}

static double enc_q5_0(const float *x, uint8_t *b, tu_rng *r) {
    double amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmax(amax, fabs(x[j]));
    double d = amax / 15 * (tu_rng_below(r, 2) ? -1 : 1);
    put_f16(b, d);
    d = f16_at(b);
    memset(b + 2, 0, 20);
    for (int j = 0; j < 32; j++) {
        int q = clampi(nearest(x[j] / d) + 16, 0, 31);
        set_nibble(b + 6, j, q & 0xf);
        b[2 + j / 8] |= (uint8_t)((q >> 4) << (j % 8));
    }
    return fabs(d) * 0.51;
}

static double enc_q5_1(const float *x, uint8_t *b, tu_rng *r) {
    (void)r;
    double d, m;
    double bound = enc_affine(x, b, 31, &d, &m);
    memset(b + 4, 0, 20);
    for (int j = 0; j < 32; j++) {
        int q = clampi(nearest((x[j] - m) / d), 0, 31);
        set_nibble(b + 8, j, q & 0xf);
        b[4 + j / 8] |= (uint8_t)((q >> 4) << (j % 8));
    }
    return bound;
}

/* The test data gives every 16-element group an amax within a factor 2 of
 * the block's, so each int8 scale lands in [63, 127] and the rounding of the
 * scale cannot push a value out of the 6-bit range. */
static double enc_q6_k(const float *x, uint8_t *b, tu_rng *r) {
    double s[16], smax = 0;
    for (int g = 0; g < 16; g++) {
        double amax = 0;
        for (int j = 0; j < 16; j++)
            amax = fmax(amax, fabs(x[16 * g + j]));
        s[g] = amax / 31;
        smax = fmax(smax, s[g]);
    }
    put_f16(b + 208, smax / 127);
    double d = f16_at(b + 208), bound = 0;
    memset(b, 0, 192);
    for (int g = 0; g < 16; g++) {
        int sc = clampi(nearest(s[g] / d), 1, 127) * (tu_rng_below(r, 2) ? -1 : 1);
        b[192 + g] = (uint8_t)(int8_t)sc;
        double eff = d * sc;
        bound = fmax(bound, fabs(eff) * 0.51);
        for (int j = 0; j < 16; j++) {
            int e = 16 * g + j;
            int q = clampi(nearest(x[e] / eff), -32, 31) + 32;
            int ql_i, ql_high, qh_i, qh_shift;
            q6k_fields(e, &ql_i, &ql_high, &qh_i, &qh_shift);
            b[ql_i] |= (uint8_t)((q & 0xf) << (ql_high ? 4 : 0));
            b[qh_i] |= (uint8_t)((q >> 4) << qh_shift);
        }
    }
    return bound;
}

typedef struct {
    int type;
    const char *name;
    int qk, bytes;
    double (*encode)(const float *x, uint8_t *b, tu_rng *r); /* NULL: random bytes only */
    double (*decode)(const uint8_t *b, int j, double *mag);
    int d_at; /* where the f16 scale d sits (random-byte blocks keep it finite) */
    int m_at; /* where the f16 min m sits, or -1 */
} qtype;

static const qtype qtypes[] = {
    {TSR_Q8_0, "q8_0", 32, 34, enc_q8_0, dec_q8_0, 0, -1},
    {TSR_Q4_0, "q4_0", 32, 18, enc_q4_0, dec_q4_0, 0, -1},
    {TSR_Q4_1, "q4_1", 32, 20, enc_q4_1, dec_q4_1, 0, 2},
    {TSR_Q5_0, "q5_0", 32, 22, enc_q5_0, dec_q5_0, 0, -1},
    {TSR_Q5_1, "q5_1", 32, 24, enc_q5_1, dec_q5_1, 0, 2},
    {TSR_IQ4_NL, "iq4_nl", 32, 18, enc_iq4_nl, dec_iq4_nl, 0, -1},
    {TSR_Q6_K, "q6_k", 256, 210, enc_q6_k, dec_q6_k, 208, -1},
    {TSR_Q2_K, "q2_k", 256, 84, NULL, dec_q2_k, 80, 82},
    {TSR_Q3_K, "q3_k", 256, 110, NULL, dec_q3_k, 108, -1},
    {TSR_Q4_K, "q4_k", 256, 144, NULL, dec_q4_k, 0, 2},
    {TSR_Q5_K, "q5_k", 256, 176, NULL, dec_q5_k, 0, 2},
};

/* Dequantizes nb blocks at an odd address and compares every element with
 * the naive decoder; checks nothing past n is written. */
static void check_blocks(const qtype *qt, const uint8_t *blocks, int nb, const char *what) {
    size_t n = (size_t)nb * qt->qk;
    uint8_t *src = tu_xmalloc((size_t)nb * qt->bytes + 1);
    memcpy(src + 1, blocks, (size_t)nb * qt->bytes);
    float *out = tu_xmalloc((n + 1) * sizeof *out);
    double *want = tu_xmalloc(n * sizeof *want), *scale = tu_xmalloc(n * sizeof *scale);
    out[n] = -7.0f;
    tsr_dequantize(qt->type, src + 1, out, n);
    CHECK(out[n] == -7.0f, "%s: wrote past the row", qt->name);
    for (size_t i = 0; i < n; i++) {
        want[i] = qt->decode(blocks + (i / qt->qk) * qt->bytes, (int)(i % qt->qk), &scale[i]);
        scale[i] = fmax(scale[i], 1e-30);
    }
    char label[64];
    snprintf(label, sizeof label, "%s %s", qt->name, what);
    CHECK_CLOSE(label, out, want, n, 3e-7, scale, 0);
    free(src);
    free(out);
    free(want);
    free(scale);
}

static void test_quant_encoded(tu_rng *r) {
    enum { NB = 5 };
    for (size_t t = 0; t < sizeof qtypes / sizeof qtypes[0]; t++) {
        const qtype *qt = &qtypes[t];
        if (!qt->encode)
            continue;
        size_t n = (size_t)NB * qt->qk;
        float *x = tu_xmalloc(n * sizeof *x);
        uint8_t *blocks = tu_xmalloc((size_t)NB * qt->bytes);
        double *bound = tu_xmalloc(NB * sizeof *bound);
        for (int b = 0; b < NB; b++) {
            /* Blocks of very different sizes (all with a normal f16 scale);
             * for Q6_K every 16-group has an amax within a factor 2 of the
             * block's (see enc_q6_k). */
            double big = pow(10.0, 3 * tu_rng_unit(r));
            double shift = qt->m_at >= 0 ? big * (tu_rng_unit(r) - 0.5) * 4 : 0;
            for (int j = 0; j < qt->qk; j++)
                x[b * qt->qk + j] = (float)(shift + big * (2 * tu_rng_unit(r) - 1));
            if (qt->type == TSR_Q6_K)
                for (int g = 0; g < 16; g++) {
                    int at = b * 256 + 16 * g + (int)tu_rng_below(r, 16);
                    x[at] =
                        (float)(big * (0.5 + 0.5 * tu_rng_unit(r)) * (tu_rng_below(r, 2) ? -1 : 1));
                }
            bound[b] = qt->encode(x + b * qt->qk, blocks + b * qt->bytes, r);
        }
        check_blocks(qt, blocks, NB, "encoded blocks");
        /* The layout round trip: decoding gives back x to within half a step. */
        for (size_t i = 0; i < n; i++) {
            double mag, v = qt->decode(blocks + (i / qt->qk) * qt->bytes, (int)(i % qt->qk), &mag);
            CHECK(fabs(v - x[i]) <= bound[i / qt->qk], "%s: element %zu decodes to %g, was %g",
                  qt->name, i, v, (double)x[i]);
        }
        free(x);
        free(blocks);
        free(bound);
    }
}

static void test_quant_random_bytes(tu_rng *r) {
    enum { NB = 9 };
    for (size_t t = 0; t < sizeof qtypes / sizeof qtypes[0]; t++) {
        const qtype *qt = &qtypes[t];
        uint8_t *blocks = tu_xmalloc((size_t)NB * qt->bytes);
        for (int it = 0; it < 20; it++) {
            for (size_t i = 0; i < (size_t)NB * qt->bytes; i++)
                blocks[i] = (uint8_t)tu_rng_u64(r);
            for (int b = 0; b < NB; b++) {
                uint8_t *blk = blocks + b * qt->bytes;
                uint16_t d = rand_finite_f16(r);
                blk[qt->d_at] = (uint8_t)d;
                blk[qt->d_at + 1] = (uint8_t)(d >> 8);
                if (qt->m_at >= 0) {
                    uint16_t m = rand_finite_f16(r);
                    blk[qt->m_at] = (uint8_t)m;
                    blk[qt->m_at + 1] = (uint8_t)(m >> 8);
                }
            }
            check_blocks(qt, blocks, NB, "random bytes");
        }
        free(blocks);
    }
}

/* Known answers written straight from the layout, independent of the naive
 * decoders above. */
static void test_quant_known(void) {
    float out[256];
    uint8_t b[210];

    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x3c; /* d = 1 */
    b[2] = 0x80;              /* q[0] = -128 */
    b[33] = 0x7f;             /* q[31] = 127 */
    b[3] = 0xfd;              /* q[1] = -3 */
    tsr_dequantize(TSR_Q8_0, b, out, 32);
    CHECK(out[0] == -128 && out[1] == -3 && out[31] == 127 && out[2] == 0, "q8_0 known");

    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x40; /* d = 2 */
    b[2] = 0x9f;              /* element 0: 15, element 16: 9 */
    b[17] = 0x08;             /* element 15: 8, element 31: 0 */
    tsr_dequantize(TSR_Q4_0, b, out, 32);
    CHECK(out[0] == 14 && out[16] == 2 && out[15] == 0 && out[31] == -16 && out[1] == -16,
          "q4_0 known: %g %g %g %g", (double)out[0], (double)out[16], (double)out[15],
          (double)out[31]);

    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x38; /* d = 0.5 */
    b[2] = 0x00, b[3] = 0xbc; /* m = -1 */
    b[5] = 0x3a;              /* element 1: 10, element 17: 3 */
    tsr_dequantize(TSR_Q4_1, b, out, 32);
    CHECK(out[1] == 4 && out[17] == 0.5f && out[0] == -1, "q4_1 known");

    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x40; /* d = 2 */
    b[2] = 0xf0;              /* element 0: index 0 (-127), element 16: index 15 (113) */
    b[17] = 0x78;             /* element 15: index 8 (1), element 31: index 7 (-10) */
    b[3] = 0x49;              /* element 1: index 9 (13), element 17: index 4 (-49) */
    tsr_dequantize(TSR_IQ4_NL, b, out, 32);
    CHECK(out[0] == -254 && out[16] == 226 && out[15] == 2 && out[31] == -20 && out[1] == 26 &&
              out[17] == -98 && out[2] == -254,
          "iq4_nl known: %g %g %g %g %g %g", (double)out[0], (double)out[16], (double)out[15],
          (double)out[31], (double)out[1], (double)out[17]);

    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x3c;                     /* d = 1 */
    b[2] = 0x01, b[3] = 0, b[4] = 0, b[5] = 0x80; /* qh bits 0 and 31 */
    b[6] = 0xf2;                                  /* element 0: 2, element 16: 15 */
    b[21] = 0x7f;                                 /* element 15: 15, element 31: 7 */
    tsr_dequantize(TSR_Q5_0, b, out, 32);
    CHECK(out[0] == 2 && out[16] == -1 && out[15] == -1 && out[31] == 7 && out[1] == -16,
          "q5_0 known");

    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x3c; /* d = 1 */
    b[2] = 0x00, b[3] = 0x38; /* m = 0.5 */
    b[6] = 0x01;              /* qh bit 16 */
    b[8] = 0x31;              /* element 0: 1, element 16: 3 */
    tsr_dequantize(TSR_Q5_1, b, out, 32);
    CHECK(out[0] == 1.5f && out[16] == 19.5f && out[1] == 0.5f, "q5_1 known");

    memset(b, 0, sizeof b);
    for (int s = 0; s < 16; s++)
        b[192 + s] = (uint8_t)(s + 1); /* scales 1..16 */
    b[192 + 5] = (uint8_t)(int8_t)-3;  /* one negative scale: elements 80..95 */
    b[208] = 0x00, b[209] = 0x3c;      /* d = 1 */
    /* element 200 = 128 + 64 + 8: high nibble of ql[64 + 8], qh[128 + 32 + 8] bits 4-5, scale 12 */
    b[72] = 0x50;
    b[128 + 40] = 0x20; /* q = 5 | 2 << 4 = 37 -> 5 */
    /* element 47 = 32 + 15: low nibble of ql[47], qh[128 + 15] bits 2-3, scale 2 */
    b[47] = 0x0c;
    b[128 + 15] = 0x0c; /* q = 12 | 3 << 4 = 60 -> 28 */
    /* element 81 = 64 + 17: high nibble of ql[17], qh[128 + 17] bits 4-5, scale 5 */
    b[17] = 0x70;
    b[128 + 17] = 0x30; /* q = 7 | 3 << 4 = 55 -> 23 */
    tsr_dequantize(TSR_Q6_K, b, out, 256);
    CHECK(out[200] == 13 * 5, "q6_k element 200: %g", (double)out[200]);
    CHECK(out[47] == 3 * 28, "q6_k element 47: %g", (double)out[47]);
    CHECK(out[81] == -3 * 23, "q6_k element 81: %g", (double)out[81]);
    CHECK(out[111] == 7 * -32, "q6_k element 111: %g", (double)out[111]); /* ql[47] high = 0 */
    CHECK(out[0] == -32 && out[255] == 16 * -32 && out[80] == 3 * 32, "q6_k defaults");

    uint8_t k[176];
    memset(k, 0, sizeof k);     /* Q2_K: scales 0..15, qs 16..79, d 80, dmin 82 */
    k[81] = 0x3c, k[83] = 0x38; /* d = 1, dmin = 0.5 */
    k[0] = 0x21;                /* group 0: scale 1, min 2 */
    k[2] = 0x03;                /* group 2: scale 3, min 0 */
    k[4] = 0xf5;                /* group 4: scale 5, min 15 */
    k[12] = 0x17;               /* group 12: scale 7, min 1 */
    k[16] = 0xe4;               /* qs[0]: element 0 q=0, 32 q=1, 64 q=2, 96 q=3 */
    k[16 + 40] = 0x30;          /* element 200 = 128 + 64 + 8: bits 4-5 of qs[40], q=3 */
    tsr_dequantize(TSR_Q2_K, k, out, 256);
    CHECK(out[0] == -1 && out[32] == 3 && out[64] == 2.5f && out[96] == 0 && out[200] == 20.5f,
          "q2_k known: %g %g %g %g %g", (double)out[0], (double)out[32], (double)out[64],
          (double)out[96], (double)out[200]);
    CHECK(out[1] == -1 && out[16] == 0 && out[255] == 0, "q2_k defaults");

    memset(k, 0, sizeof k);       /* Q3_K: hmask 0..31, qs 32..95, scales 96..107, d 108 */
    k[109] = 0x3c;                /* d = 1; all-zero fields: scale -32, q = -4 */
    k[0] = 0x01, k[32] = 0x03;    /* element 0: hbit 1, low2 3: q = 3 */
    k[96] = 0x02, k[104] = 0x82;  /* group 0: 2 | 2 << 4 = 34 -> 2; group 12's top bits 2 */
    k[100] = 0x50;                /* group 12 low nibble 5: 37 -> 5 */
    k[8] = 0x40, k[72] = 0x10;    /* element 200: hbit (bit 6 of hmask[8]) 1, low2 1: q = 1 */
    k[103] = 0xf0, k[107] = 0xc0; /* group 15: 15 | 3 << 4 = 63 -> 31 */
    k[95] = 0x80;                 /* element 255: low2 2 (bits 6-7 of qs[63]), hbit 0: q = -2 */
    tsr_dequantize(TSR_Q3_K, k, out, 256);
    CHECK(out[0] == 6 && out[200] == 5 && out[255] == -62 && out[33] == 128,
          "q3_k known: %g %g %g %g", (double)out[0], (double)out[200], (double)out[255],
          (double)out[33]);

    for (int five = 0; five < 2; five++) {
        /* Q4_K: d 0, dmin 2, scales 4..15, qs 16..143; Q5_K: qh 16..47, qs 48..175 */
        int qs = five ? 48 : 16;
        memset(k, 0, sizeof k);
        k[1] = 0x3c, k[3] = 0x38; /* d = 1, dmin = 0.5 */
        k[4] = 0x03, k[8] = 0x02; /* group 0: scale 3, min 2 */
        k[4 + 9] = 0x42;          /* group 5: low bits scale 2, min 4 */
        k[4 + 1] = 0x40;          /* group 5 scale top bits 1: 18; group 1 scale 0 */
        k[4 + 5] = 0x80;          /* group 5 min top bits 2: 36; group 1 min 0 */
        k[4 + 11] = 0x30;         /* group 7: scale 0, min 3 */
        k[qs] = 0x05;             /* element 0: 5 */
        k[qs + 71] = 0x90;        /* element 167 = 5*32 + 7: high nibble of qs[64 + 7], 9 */
        if (five) {
            k[16] = 0x01;     /* element 0: fifth bit (bit 0 of qh[0]): 21 */
            k[16 + 7] = 0x20; /* element 167: bit 5 of qh[7]: 25 */
        }
        tsr_dequantize(five ? TSR_Q5_K : TSR_Q4_K, k, out, 256);
        float want0 = five ? 62 : 14, want167 = five ? 432 : 144;
        CHECK(out[0] == want0 && out[167] == want167 && out[32] == 0 && out[255] == -1.5f &&
                  out[1] == -1,
              "%s known: %g %g %g %g", five ? "q5_k" : "q4_k", (double)out[0], (double)out[167],
              (double)out[32], (double)out[255]);
    }
}

int main(void) {
    tu_rng r = {0x5eed0001};
    test_f16_decode();
    test_f16_encode(&r);
    printf("  f16 ok\n");
    test_bf16(&r);
    printf("  bf16 ok\n");
    test_sizes();
    printf("  sizes ok\n");
    test_plain_dequant(&r);
    test_quant_known();
    test_quant_encoded(&r);
    test_quant_random_bytes(&r);
    printf("  dequantize ok\n");
    printf("test_dtype: all passed\n");
    return 0;
}
