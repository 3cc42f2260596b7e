//! The layout of an encoding's compiled rank table: `build.rs` writes it at compile time from
//! tiktoken-rs's ranks, [`super::bpe`] reads it, and both include this file so they cannot
//! disagree. No dependencies, since the build script compiles it too.
//!
//! An encoding is three little-endian arrays, embedded in the binary:
//! - `bytes`: every ordinary token's bytes, back to back in rank order;
//! - `ends`: a `u32` per rank, where its bytes end (they start where the rank before ends);
//! - `slots`: an open-addressing hash index, a power-of-two number of `u32` slots at most
//!   40 % full (so a probe that misses, as most do during a merge, ends within about two
//!   steps), linear probing from [`home`]. A slot holds a rank in its low [`RANK_BITS`] bits
//!   and a [`tag`] of the token's hash above, so most probes that miss never read the token's
//!   bytes; an empty slot is [`EMPTY`].

/// Bits of a slot that hold the rank: tiktoken's largest encoding has 199,998 ordinary tokens.
pub const RANK_BITS: u32 = 18;

/// The rank part of a slot.
pub const RANK_MASK: u32 = (1 << RANK_BITS) - 1;

/// A slot with no rank. Its rank part, 262,143, is out of range for every table (the build
/// checks), so it never reads as a token.
pub const EMPTY: u32 = u32::MAX;

/// The hash of a token's bytes: 8-byte words folded multiplicatively, then mixed (murmur3's
/// finaliser) so both the low bits ([`home`]) and the high bits ([`tag`]) are well spread.
/// Shorter inputs and the tail are read as overlapping words, without a copy: most tokens and
/// most pairs looked up in a merge are under 8 bytes. Fixed, unlike the standard library's,
/// because the table is hashed at build time.
pub fn hash(bytes: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
    let fold = |state: u64, word: u64| (state.rotate_left(26) ^ word).wrapping_mul(MULTIPLIER);
    let len = bytes.len();
    let mut state = (len as u64).wrapping_mul(MULTIPLIER);
    state = match len {
        0 => state,
        1..=3 => {
            let word = u64::from(bytes[0])
                | (u64::from(bytes[len / 2]) << 8)
                | (u64::from(bytes[len - 1]) << 16);
            fold(state, word)
        }
        4..=8 => {
            let first = u64::from(u32_at(bytes, 0));
            let last = u64::from(u32_at(bytes, len - 4));
            fold(state, first | (last << 32))
        }
        _ => {
            let mut at = 0;
            while at + 8 < len {
                state = fold(state, u64_at(bytes, at));
                at += 8;
            }
            // The last 8 bytes, overlapping the word before when the length is no multiple.
            fold(state, u64_at(bytes, len - 8))
        }
    };
    state ^= state >> 33;
    state = state.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    state ^= state >> 33;
    state = state.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    state ^ (state >> 33)
}

/// The 4 bytes at `at`, which the caller keeps in bounds.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0_u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// The 8 bytes at `at`, which the caller keeps in bounds.
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0_u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The slot a hash's probe starts at, in a table of `slot_count` (a power of two) slots.
pub fn home(hash: u64, slot_count: usize) -> usize {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low bits the mask keeps are used, and truncation keeps them"
    )]
    let low = hash as usize;
    low & (slot_count - 1)
}

/// The part of a hash kept in a slot beside the rank: its top bits, independent of [`home`].
pub fn tag(hash: u64) -> u32 {
    (hash >> (64 - (32 - RANK_BITS))) as u32
}
