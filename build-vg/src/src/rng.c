#include "rng.h"

#include <math.h>

uint64_t rng_key(uint64_t seed, uint32_t purpose, uint64_t sub)
{
    uint64_t k = rng_mix64(seed ^ 0x6a09e667f3bcc908ULL);
    k = rng_mix64(k ^ ((uint64_t)purpose * 0xd1b54a32d192ed03ULL));
    return rng_mix64(k ^ rng_mix64(sub + 0x3c6ef372fe94f82bULL));
}

uint64_t rng_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

float rng_normal(uint64_t key, uint64_t counter)
{
    /* two independent uniforms from counters 2i and 2i+1; u1 in (0,1] */
    uint64_t a = rng_u64(key, 2 * counter);
    uint64_t b = rng_u64(key, 2 * counter + 1);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
