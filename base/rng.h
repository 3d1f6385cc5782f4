/* base/rng.h - the tree's two generators, one definition each.
 *
 * splitmix64 (Steele, Lea & Flood), the small PRNG and 64-bit mixer: the LoRA initialisation, the epoch shuffle that
 * `tessera train` and `tessera-cli train` must agree on bit for bit, the
 * sampler's xoshiro seeding, request ids and the tests' random data all use
 * this one definition.
 *
 * xoshiro256** 1.0 (Blackman & Vigna), seeded from splitmix64: the
 * sampler's stream and the LoRA initialisation's. */
#ifndef TSR_BASE_RNG_H
#define TSR_BASE_RNG_H

#include <stdint.h>

/* splitmix64's output function: a bijection of 2^64 that mixes every bit. */
static inline uint64_t tsr_splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Advances *state by the golden-ratio increment and returns the next value. */
static inline uint64_t tsr_splitmix64(uint64_t *state) {
    return tsr_splitmix64_mix(*state += 0x9E3779B97F4A7C15ull);
}

static inline uint64_t tsr_rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Advances the four words of xoshiro256** state and returns the next value. */
static inline uint64_t tsr_xoshiro256ss(uint64_t s[4]) {
    const uint64_t r = tsr_rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = tsr_rotl64(s[3], 45);
    return r;
}

/* A uniform double in [0, 1) from the top 53 bits of x. */
static inline double tsr_unit_double(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }

#endif
