//! IEEE 754 half-precision (binary16) and bfloat16 conversions.
//!
//! Whisper weights are stored as float16 in both formats, so most of the
//! conversion is a byte copy. These helpers cover the rest: 1-D tensors and
//! positional embeddings that whisper.cpp wants as f32, and CTranslate2 models
//! saved as float32/bfloat16 whose matrices whisper.cpp wants as f16. The
//! rounding is round-to-nearest-even, as numpy's `astype(np.float16)` does,
//! so a float32 source converts to the same bits the Python script would write.

/// Widens a binary16 value to f32; exact for every input, NaN payloads kept.
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x03ff);
    let magnitude = match exponent {
        0 if mantissa == 0 => 0,
        // Subnormal: mantissa × 2^-24, which f32 represents exactly.
        0 => (mantissa as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        0x1f => 0x7f80_0000 | (mantissa << 13),
        // Rebias the exponent from 15 to 127.
        _ => ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// Narrows an f32 to binary16 with round-to-nearest-even; overflow gives ±inf.
pub(crate) fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x007f_ffff;

    if exponent == 0xff {
        // Keep NaNs NaN (force a quiet bit so the payload cannot vanish).
        let nan_bits = if mantissa != 0 {
            0x0200 | (mantissa >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan_bits;
    }

    let half_exponent = exponent - 127 + 15;
    if half_exponent >= 0x1f {
        return sign | 0x7c00;
    }
    if half_exponent <= 0 {
        // Below 2^-25 everything rounds to zero, even f32 subnormals.
        if half_exponent < -10 {
            return sign;
        }
        let significand = mantissa | 0x0080_0000;
        let shift = (14 - half_exponent) as u32;
        let rounded = round_shift_right_even(significand, shift);
        // A carry out of the subnormal range lands on the smallest normal,
        // which is exactly the right encoding.
        return sign | rounded as u16;
    }

    let truncated = ((half_exponent as u32) << 10) | (mantissa >> 13);
    let remainder = mantissa & 0x1fff;
    // A carry may ripple into the exponent (and up to infinity): that is the
    // correctly rounded result.
    let rounded = if remainder > 0x1000 || (remainder == 0x1000 && truncated & 1 == 1) {
        truncated + 1
    } else {
        truncated
    };
    sign | rounded as u16
}

/// Widens a bfloat16 value to f32 (bfloat16 is the top half of an f32).
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

fn round_shift_right_even(value: u32, shift: u32) -> u32 {
    let truncated = value >> shift;
    let remainder = value & ((1 << shift) - 1);
    let halfway = 1 << (shift - 1);
    if remainder > halfway || (remainder == halfway && truncated & 1 == 1) {
        truncated + 1
    } else {
        truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_value_round_trips_through_f32() {
        for bits in 0..=u16::MAX {
            let wide = f16_to_f32(bits);
            if wide.is_nan() {
                assert!(f16_to_f32(f32_to_f16(wide)).is_nan(), "{bits:#06x}");
                continue;
            }
            assert_eq!(f32_to_f16(wide), bits, "{bits:#06x} -> {wide}");
        }
    }

    #[test]
    fn known_values_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    #[test]
    fn narrowing_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and the next half (1 + 2^-10): even wins.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3·2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even).
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(-1e9), 0xfc00);
        // Half of the smallest subnormal ties to zero; just above rounds up.
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000);
        assert_eq!(f32_to_f16(2f32.powi(-25) * 1.0001), 0x0001);
        assert_eq!(f32_to_f16(1e-30), 0x0000);
        assert_eq!(f32_to_f16(0.1), 0x2e66);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn bfloat16_widens_by_shifting() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }
}
