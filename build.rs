//! Compiles tiktoken's encodings into the rank tables token counting reads
//! (`src/tokens/bpe.rs`; layout in `src/tokens/table.rs`).
//!
//! tiktoken-rs embeds its encodings as base64 text and parses them into hash maps of owned
//! byte vectors, about 40 MB for `o200k_base` and ~150 ms of start-up work. Read out here, at
//! compile time, the gateway embeds only the compact tables (4.3 MB for `o200k_base`), maps
//! them straight from the binary and touches a page only when a lookup needs it.

use std::collections::HashSet;
use std::error::Error;
use std::path::Path;

use tiktoken_rs::{CoreBPE, Rank};

#[path = "src/tokens/table.rs"]
mod table;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/tokens/table.rs");
    let out_dir = std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?;
    let out_dir = Path::new(&out_dir);
    // With each encoding's known number of ordinary tokens: a table cut short (a gap in
    // tiktoken-rs's ranks, a special token found early) fails the build instead of miscounting.
    for (name, encoding, ordinary_tokens) in [
        ("o200k_base", tiktoken_rs::o200k_base()?, 199_998),
        ("cl100k_base", tiktoken_rs::cl100k_base()?, 100_256),
    ] {
        let (bytes, ends) = tokens_of(&encoding)?;
        if ends.len() != ordinary_tokens {
            return Err(format!(
                "{name}: read {} ordinary tokens, expected {ordinary_tokens}",
                ends.len()
            )
            .into());
        }
        let slots = index(&bytes, &ends)?;
        std::fs::write(out_dir.join(format!("{name}.bytes")), &bytes)?;
        std::fs::write(out_dir.join(format!("{name}.ends")), little_endian(&ends))?;
        std::fs::write(out_dir.join(format!("{name}.slots")), little_endian(&slots))?;
    }
    Ok(())
}

/// Every ordinary token of `encoding`, back to back in rank order, and where each one ends.
/// tiktoken numbers them from 0 without gaps, below its special tokens.
fn tokens_of(encoding: &CoreBPE) -> Result<(Vec<u8>, Vec<u32>), Box<dyn Error>> {
    let special: HashSet<Rank> = encoding
        .special_tokens()
        .into_iter()
        .filter_map(|text| encoding.encode(text, &HashSet::from([text])).ok())
        .flat_map(|(ranks, _)| ranks)
        .collect();
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for rank in 0..Rank::MAX {
        if special.contains(&rank) {
            break;
        }
        let Ok(token) = encoding.decode_bytes(&[rank]) else {
            break;
        };
        bytes.extend_from_slice(&token);
        ends.push(u32::try_from(bytes.len())?);
    }
    if ends.is_empty() || ends.len() >= table::RANK_MASK as usize {
        return Err(format!("{} ordinary tokens do not fit the table", ends.len()).into());
    }
    Ok((bytes, ends))
}

/// The hash index of the tokens `tokens_of` read out.
fn index(bytes: &[u8], ends: &[u32]) -> Result<Vec<u32>, Box<dyn Error>> {
    let mut slots = vec![table::EMPTY; slot_count(ends.len())];
    let mut start = 0;
    for (rank, &end) in ends.iter().enumerate() {
        let token = &bytes[start..end as usize];
        start = end as usize;
        let hash = table::hash(token);
        let mut at = table::home(hash, slots.len());
        while slots[at] != table::EMPTY {
            at = (at + 1) % slots.len();
        }
        slots[at] = slot(hash, u32::try_from(rank)?);
    }
    Ok(slots)
}

/// Slots for a vocabulary of `tokens`: at most 40 % full (see `src/tokens/table.rs`).
fn slot_count(tokens: usize) -> usize {
    (tokens * 5 / 2).next_power_of_two()
}

/// A slot holding `rank`, whose bytes hash to `hash`.
fn slot(hash: u64, rank: u32) -> u32 {
    (table::tag(hash) << table::RANK_BITS) | rank
}

fn little_endian(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|word| word.to_le_bytes()).collect()
}
