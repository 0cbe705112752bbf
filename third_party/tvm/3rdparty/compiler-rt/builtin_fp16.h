// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Generic IEEE-754 binary floating point narrowing / widening conversions,
// used by the TVM runtime for float16 <-> float32/float64
// (builtin_fp16.cc, random number engine):
//
//   DST_T __truncXfYf2__<SRC_T, SRC_REP_T, SRC_SIG_BITS, DST_T, DST_REP_T, DST_SIG_BITS>(SRC_T)
//   DST_T __extendXfYf2__<SRC_T, SRC_REP_T, SRC_SIG_BITS, DST_T, DST_REP_T, DST_SIG_BITS>(SRC_T)
//
// *_REP_T is the unsigned integer type holding the bits, *_SIG_BITS the number
// of stored significand (fraction) bits.  Narrowing rounds to nearest, ties to
// even; overflow gives infinity, NaNs stay (quiet) NaNs with the sign kept.
// Written for convtvm (not the compiler-rt implementation).
#ifndef CONVTVM_BUILTIN_FP16_H_
#define CONVTVM_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace convtvm_fp {

template <typename REP, int SIG_BITS>
struct Format {
  static constexpr int kBits = static_cast<int>(sizeof(REP) * 8);
  static constexpr int kSigBits = SIG_BITS;
  static constexpr int kExpBits = kBits - SIG_BITS - 1;
  static constexpr int kExpMax = (1 << kExpBits) - 1;  // biased exponent of inf / NaN
  static constexpr int kBias = kExpMax >> 1;
  static constexpr uint64_t kFracMask = (uint64_t{1} << SIG_BITS) - 1;
  static constexpr uint64_t kQuietBit = uint64_t{1} << (SIG_BITS - 1);
};

template <typename T, typename REP>
inline REP ToBits(T v) {
  static_assert(sizeof(T) == sizeof(REP), "type / representation size mismatch");
  REP r;
  std::memcpy(&r, &v, sizeof(r));
  return r;
}

template <typename T, typename REP>
inline T FromBits(REP r) {
  static_assert(sizeof(T) == sizeof(REP), "type / representation size mismatch");
  T v;
  std::memcpy(&v, &r, sizeof(v));
  return v;
}

// Shift right by n (0 < n < 64) and round the result to nearest, ties to even.
inline uint64_t ShiftRightRoundEven(uint64_t value, int n) {
  if (n <= 0) return value << (-n);
  if (n >= 64) return 0;  // callers ensure value < 2^63, so this rounds to zero
  uint64_t kept = value >> n;
  uint64_t rest = value & ((uint64_t{1} << n) - 1);
  uint64_t half = uint64_t{1} << (n - 1);
  if (rest > half || (rest == half && (kept & 1))) ++kept;
  return kept;
}

}  // namespace convtvm_fp

template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __truncXfYf2__(SRC_T a) {
  using S = convtvm_fp::Format<SRC_REP_T, SRC_SIG_BITS>;
  using D = convtvm_fp::Format<DST_REP_T, DST_SIG_BITS>;
  static_assert(S::kSigBits > D::kSigBits && S::kExpBits >= D::kExpBits, "not a narrowing");
  const uint64_t bits = static_cast<uint64_t>(convtvm_fp::ToBits<SRC_T, SRC_REP_T>(a));
  const uint64_t sign = (bits >> (S::kBits - 1)) & 1;
  const int exp = static_cast<int>((bits >> S::kSigBits) & static_cast<uint64_t>(S::kExpMax));
  const uint64_t frac = bits & S::kFracMask;
  const uint64_t dst_sign = sign << (D::kBits - 1);
  const uint64_t dst_inf = static_cast<uint64_t>(D::kExpMax) << D::kSigBits;
  uint64_t out;
  if (exp == S::kExpMax) {
    // inf or NaN (NaN payload truncated, forced quiet so it stays a NaN)
    out = dst_inf;
    if (frac != 0) out |= D::kQuietBit | ((frac >> (S::kSigBits - D::kSigBits)) & D::kFracMask);
  } else if (exp == 0 && frac == 0) {
    out = 0;
  } else {
    // value = sig * 2^(e - S::kSigBits), sig including the implicit bit
    const int e = exp == 0 ? 1 - S::kBias : exp - S::kBias;
    const uint64_t sig = exp == 0 ? frac : (frac | (uint64_t{1} << S::kSigBits));
    const int dst_exp = e + D::kBias;
    if (dst_exp >= D::kExpMax) {
      out = dst_inf;
    } else if (dst_exp >= 1) {
      // normal: keep the exponent field in the sum so a rounding carry bumps it
      uint64_t packed = (static_cast<uint64_t>(dst_exp) << S::kSigBits) | (sig & S::kFracMask);
      out = convtvm_fp::ShiftRightRoundEven(packed, S::kSigBits - D::kSigBits);
      if (out > dst_inf) out = dst_inf;
    } else {
      // subnormal (or underflow to zero); a carry becomes the smallest normal
      const int shift = S::kSigBits - D::kSigBits + (1 - dst_exp);
      out = shift > S::kSigBits + 1 ? 0 : convtvm_fp::ShiftRightRoundEven(sig, shift);
    }
  }
  return convtvm_fp::FromBits<DST_T, DST_REP_T>(static_cast<DST_REP_T>(out | dst_sign));
}

template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __extendXfYf2__(SRC_T a) {
  using S = convtvm_fp::Format<SRC_REP_T, SRC_SIG_BITS>;
  using D = convtvm_fp::Format<DST_REP_T, DST_SIG_BITS>;
  static_assert(S::kSigBits < D::kSigBits && S::kExpBits <= D::kExpBits, "not a widening");
  constexpr int kShift = D::kSigBits - S::kSigBits;
  const uint64_t bits = static_cast<uint64_t>(convtvm_fp::ToBits<SRC_T, SRC_REP_T>(a));
  const uint64_t sign = (bits >> (S::kBits - 1)) & 1;
  int exp = static_cast<int>((bits >> S::kSigBits) & static_cast<uint64_t>(S::kExpMax));
  uint64_t frac = bits & S::kFracMask;
  uint64_t out;
  if (exp == S::kExpMax) {
    out = (static_cast<uint64_t>(D::kExpMax) << D::kSigBits) | (frac << kShift);
  } else if (exp == 0 && frac == 0) {
    out = 0;
  } else {
    int e = exp - S::kBias;
    if (exp == 0) {
      // subnormal source: normalize so the leading one becomes the implicit bit
      e = 1 - S::kBias;
      while ((frac & (uint64_t{1} << S::kSigBits)) == 0) {
        frac <<= 1;
        --e;
      }
      frac &= S::kFracMask;
    }
    out = (static_cast<uint64_t>(e + D::kBias) << D::kSigBits) | (frac << kShift);
  }
  return convtvm_fp::FromBits<DST_T, DST_REP_T>(
      static_cast<DST_REP_T>(out | (sign << (D::kBits - 1))));
}

#endif  // CONVTVM_BUILTIN_FP16_H_
