/* Checks the division-free a / d of the CPU kernels (fa_div_const in csrc/cpu/simd.h):
 * q = a * (1/d), e = fma(q, d, -a), result = fma(-e, 1/d, q), against the division
 * a / d on every float32 a (NaN excluded), for d = 3 and d = 6.  Prints the mismatches,
 * split by whether the correctly rounded quotient is normal (or zero) or subnormal, and
 * whether a is infinite.
 *
 *   cc -O2 -ffp-contract=off tools/check_div_const.c -o /tmp/check_div_const -lm
 *   /tmp/check_div_const        # about a minute
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  const float divisors[] = {3.0f, 6.0f};
  for (int k = 0; k < 2; ++k) {
    const float d = divisors[k], inv = 1.0f / d;
    long normal = 0, subnormal = 0, infinite = 0;
    for (uint64_t u = 0; u < (UINT64_C(1) << 32); ++u) {
      const uint32_t bits = (uint32_t)u;
      float a;
      memcpy(&a, &bits, sizeof a);
      if (isnan(a)) continue;
      const float q = a * inv;
      const float e = fmaf(q, d, -a);
      const float got = fmaf(-e, inv, q);
      const float want = a / d;
      uint32_t gb, wb;
      memcpy(&gb, &got, sizeof gb);
      memcpy(&wb, &want, sizeof wb);
      if (gb == wb) continue;
      if (isinf(a))
        ++infinite;
      else if (want != 0.0f && fabsf(want) < 0x1p-126f)
        ++subnormal;
      else
        ++normal;
    }
    printf("d = %g: mismatches with a normal or zero quotient %ld, a subnormal quotient %ld, "
           "an infinite a %ld\n", d, normal, subnormal, infinite);
  }
  return 0;
}
