//! Unmasking client payloads in place (RFC 6455 §5.3).
//!
//! A whole vector register at a time, with the mask repeated across it: 16
//! bytes with the SSE2 every x86-64 has (the compiler turns each step into
//! one load, XOR and store, so a 512-byte payload costs about 100
//! instructions; a `u64` loop costs twice that), and 32 with AVX2 where the
//! CPU has it (checked once, at run time: release builds target the
//! baseline), which halves that again for payloads of 64 bytes and more.

/// XORs `buf` with `mask`, where `buf` starts `offset` bytes into the
/// frame's payload (a payload that arrives in pieces is unmasked piece by
/// piece).
#[inline]
pub fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // The mask as it stands at `buf`'s first byte.
    let mask = u32::from_le_bytes(mask).rotate_right(8 * (offset % 4) as u32).to_le_bytes();
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= 64 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { unmask_avx2(buf, mask) };
        return;
    }
    unmask_sse2(buf, mask);
}

/// 16 bytes at a time: the mask repeated into a `u128` becomes one vector
/// load, XOR and store per step.
#[inline(always)]
fn unmask_sse2(buf: &mut [u8], mask: [u8; 4]) {
    let word = u128::from(u32::from_ne_bytes(mask));
    let wide = word | word << 32 | word << 64 | word << 96;
    let (blocks, rest) = buf.as_chunks_mut::<16>();
    for block in blocks {
        *block = (u128::from_ne_bytes(*block) ^ wide).to_ne_bytes();
    }
    // The blocks covered a multiple of 16 bytes, so the mask phase is 0 again.
    for (byte, m) in rest.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// 32 bytes at a time, then the tail as [`unmask_sse2`] does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unmask_avx2(buf: &mut [u8], mask: [u8; 4]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_storeu_si256, _mm256_xor_si256};
    let wide = _mm256_set1_epi32(i32::from_ne_bytes(mask));
    let (blocks, tail) = buf.as_chunks_mut::<32>();
    for block in blocks {
        let at = block.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `at` points to 32 bytes of `block`; loadu/storeu need no alignment.
        unsafe { _mm256_storeu_si256(at, _mm256_xor_si256(_mm256_loadu_si256(at), wide)) };
    }
    // The blocks end at a multiple of 32 bytes: the tail starts at phase 0.
    unmask_sse2(tail, mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_definition_at_every_length_and_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in (0..40).chain(60..200) {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len as u8).collect();
                let (mut fast, mut slow) = (original.clone(), original.clone());
                unmask(&mut fast, mask, offset);
                bytewise(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn pieces_unmask_like_the_whole() {
        let mask = [9, 8, 7, 6];
        let original: Vec<u8> = (0..=255).collect();
        let mut whole = original.clone();
        unmask(&mut whole, mask, 0);
        let mut pieces = original.clone();
        let (a, b) = pieces.split_at_mut(13);
        unmask(a, mask, 0);
        unmask(b, mask, 13);
        assert_eq!(pieces, whole);
    }
}
