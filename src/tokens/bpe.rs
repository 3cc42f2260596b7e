//! One encoding's counter: its ranks in a compact table, and tiktoken's byte-pair merge.
//!
//! tiktoken-rs keeps an encoding as hash maps of owned byte vectors both ways plus a sorted
//! copy (about 40 MB resident for `o200k_base`). Counting needs only "which rank has these
//! bytes", so [`Vocabulary`] keeps every token's bytes back to back and a hash table of ranks:
//! about 3.5 MB. The ranks are read out of tiktoken-rs's own table once, at build time.
//!
//! The merge is tiktoken's (`_byte_pair_merge` and `_byte_pair_merge_large` in its vendored
//! `lib.rs`, MIT), reduced to counting: repeatedly merge the adjacent pair with the lowest rank,
//! leftmost first, until no pair is a token.

use std::collections::{BinaryHeap, HashSet};
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use tiktoken_rs::{CoreBPE, Rank};

use super::split::Splitter;
use super::tokenizer::Encoding;

/// Pieces this long or longer merge with a heap, as tiktoken switches at this length.
const LARGE_PIECE: usize = 100;

/// Longest piece merged in one go, in bytes: the heap merge holds about 48 bytes per byte of
/// its piece, so a 10 MiB run of spaces or letters (one piece) would hold half a gigabyte.
/// Longer pieces are merged in chunks this long, which can count a token or so more per cut
/// than tiktoken; no text has such pieces but a pasted blob or a deliberate one, and tiktoken
/// itself fails on whitespace runs ten times this long.
const MAX_MERGED: usize = 100_000;

/// Counts one encoding's tokens exactly as tiktoken-rs's `encode_ordinary` would.
#[derive(Debug)]
pub(super) struct Counter {
    splitter: Splitter,
    vocabulary: Vocabulary,
}

impl Counter {
    /// `encoding`'s counter, with the ranks of the tiktoken-rs table `load` builds. That table
    /// is dropped, and the thread's freed pages handed back, before the hash index and the
    /// split automaton are built: allocated into its freed pages instead, they kept about
    /// 6.5 MB more resident (measured at ready).
    pub(super) fn build(
        encoding: Encoding,
        load: impl FnOnce() -> Option<CoreBPE>,
    ) -> Option<Self> {
        let tokens = tokens_of(&load()?)?;
        crate::memory::release_now();
        Some(Self {
            splitter: Splitter::new(encoding)?,
            vocabulary: Vocabulary::new(tokens)?,
        })
    }

    pub(super) fn count(&self, text: &str) -> usize {
        self.splitter
            .pieces(text)
            .flat_map(merge_chunks)
            .map(|chunk| self.vocabulary.count_piece(chunk.as_bytes()))
            .fold(0, usize::saturating_add)
    }
}

/// `piece` in chunks of at most [`MAX_MERGED`] bytes, cut at char boundaries; a shorter piece
/// whole.
fn merge_chunks(piece: &str) -> impl Iterator<Item = &str> {
    let mut rest = piece;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(MAX_MERGED);
        // A char is at most 4 bytes, so this stops well above 0.
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        Some(chunk)
    })
}

/// Every ordinary token of an encoding: rank → bytes and bytes → rank.
struct Vocabulary {
    /// Every token's bytes, back to back in rank order.
    bytes: Box<[u8]>,
    /// Where each rank's bytes end in `bytes`; they start where the rank before ends.
    ends: Box<[u32]>,
    /// Ranks, found by the hash of their bytes.
    ranks: HashTable<Rank>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("tokens", &self.ends.len())
            .finish_non_exhaustive()
    }
}

impl Vocabulary {
    /// The vocabulary of the tokens `tokens_of` read out.
    fn new(Tokens { bytes, ends }: Tokens) -> Option<Self> {
        let mut vocabulary = Self {
            bytes,
            ends,
            ranks: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        };
        let mut ranks = HashTable::with_capacity(vocabulary.ends.len());
        for rank in 0..vocabulary.ends.len() {
            let rank = Rank::try_from(rank).ok()?;
            let hash = vocabulary.hasher.hash_one(vocabulary.token(rank));
            ranks.insert_unique(hash, rank, |&rank| {
                vocabulary.hasher.hash_one(vocabulary.token(rank))
            });
        }
        vocabulary.ranks = ranks;
        Some(vocabulary)
    }

    /// The bytes of `rank`, which must be one of this vocabulary's.
    fn token(&self, rank: Rank) -> &[u8] {
        let rank = rank as usize;
        let start = match rank.checked_sub(1) {
            Some(before) => self.ends[before] as usize,
            None => 0,
        };
        &self.bytes[start..self.ends[rank] as usize]
    }

    fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let hash = self.hasher.hash_one(bytes);
        self.ranks
            .find(hash, |&rank| self.token(rank) == bytes)
            .copied()
    }

    /// Tokens of one piece of split text.
    fn count_piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 {
            return piece.len();
        }
        if self.rank(piece).is_some() {
            return 1;
        }
        if piece.len() < LARGE_PIECE {
            self.merge_short(piece)
        } else {
            self.merge_long(piece)
        }
    }

    /// The rank of `piece[start..end]`, or `Rank::MAX` if those bytes are no token.
    fn pair_rank(&self, piece: &[u8], start: usize, end: usize) -> Rank {
        self.rank(&piece[start..end]).unwrap_or(Rank::MAX)
    }

    /// tiktoken's `_byte_pair_merge`: O(n²) on a short piece, fastest there.
    fn merge_short(&self, piece: &[u8]) -> usize {
        // (start of a part, rank of that part merged with the next one)
        let mut parts: Vec<(usize, Rank)> = (0..piece.len() - 1)
            .map(|i| (i, self.pair_rank(piece, i, i + 2)))
            .collect();
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));
        // The rank of part `i` merged with part `i + 1`, with part `i + 1` (about to be
        // removed) still in place: hence `i + 3`.
        let merged_rank = |parts: &[(usize, Rank)], i: usize| {
            if i + 3 < parts.len() {
                self.pair_rank(piece, parts[i].0, parts[i + 3].0)
            } else {
                Rank::MAX
            }
        };
        while let Some((i, _)) = lowest(&parts[..parts.len() - 1]) {
            if i > 0 {
                parts[i - 1].1 = merged_rank(&parts, i - 1);
            }
            parts[i].1 = merged_rank(&parts, i);
            parts.remove(i + 1);
        }
        parts.len() - 1
    }

    /// tiktoken's `_byte_pair_merge_large`: a heap of candidate merges and a linked list of
    /// parts, O(n log n) on a long piece.
    fn merge_long(&self, piece: &[u8]) -> usize {
        struct Part {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: Rank,
        }
        let mut parts: Vec<Part> = (0..piece.len())
            .map(|i| Part {
                prev: i.wrapping_sub(1),
                end: i + 1,
                next_end: i + 2,
                next_rank: Rank::MAX,
            })
            .collect();
        let mut heap = BinaryHeap::with_capacity(piece.len());
        for (i, part) in parts.iter_mut().take(piece.len() - 1).enumerate() {
            let rank = self.pair_rank(piece, i, i + 2);
            if rank != Rank::MAX {
                heap.push(Merge { start: i, rank });
                part.next_rank = rank;
            }
        }
        let candidate =
            |parts: &mut Vec<Part>, heap: &mut BinaryHeap<Merge>, start: usize, end: usize| {
                parts[start].next_end = end;
                parts[start].next_rank = Rank::MAX;
                if end <= piece.len() {
                    let rank = self.pair_rank(piece, start, end);
                    if rank != Rank::MAX {
                        heap.push(Merge { start, rank });
                        parts[start].next_rank = rank;
                    }
                }
            };
        let mut count = piece.len();
        while let Some(left) = heap.pop() {
            if left.rank != parts[left.start].next_rank {
                continue; // superseded by a merge next to it
            }
            let left_start = left.start;
            let right_start = parts[left_start].end;
            let right_end = parts[left_start].next_end;
            let right_next_end = parts[right_start].next_end;
            parts[left_start].end = right_end;
            candidate(&mut parts, &mut heap, left_start, right_next_end);
            if right_end < parts.len() {
                parts[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = parts[left_start].prev;
                candidate(&mut parts, &mut heap, prev_start, right_end);
            }
            parts[right_start].next_rank = Rank::MAX;
            count -= 1;
        }
        count
    }
}

/// Every ordinary token of an encoding, as [`Vocabulary`] keeps them.
struct Tokens {
    bytes: Box<[u8]>,
    ends: Box<[u32]>,
}

/// Every ordinary token of `table`. tiktoken numbers them from 0 without gaps, below its
/// special tokens. `None` if the table has none or is too large to index with `u32`.
fn tokens_of(table: &CoreBPE) -> Option<Tokens> {
    let special: HashSet<Rank> = table
        .special_tokens()
        .into_iter()
        .filter_map(|text| table.encode(text, &HashSet::from([text])).ok())
        .flat_map(|(ranks, _)| ranks)
        .collect();
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for rank in 0..Rank::MAX {
        if special.contains(&rank) {
            break;
        }
        let Ok(token) = table.decode_bytes(&[rank]) else {
            break;
        };
        bytes.extend_from_slice(&token);
        ends.push(u32::try_from(bytes.len()).ok()?);
    }
    if ends.is_empty() {
        return None;
    }
    Some(Tokens {
        bytes: bytes.into_boxed_slice(),
        ends: ends.into_boxed_slice(),
    })
}

/// The leftmost part with the lowest merge rank, if any can merge.
fn lowest(parts: &[(usize, Rank)]) -> Option<(usize, Rank)> {
    let mut best: Option<(usize, Rank)> = None;
    for (i, &(_, rank)) in parts.iter().enumerate() {
        if rank != Rank::MAX && best.is_none_or(|(_, lowest)| rank < lowest) {
            best = Some((i, rank));
        }
    }
    best
}

/// A candidate merge of the part at `start` with the next; the heap pops the lowest rank,
/// leftmost first.
#[derive(PartialEq, Eq)]
struct Merge {
    start: usize,
    rank: Rank,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.start.cmp(&self.start))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    use super::*;

    /// How many ordinary tokens `counter`'s encoding has.
    pub(in crate::tokens) fn vocabulary_len(counter: &Counter) -> usize {
        counter.vocabulary.ends.len()
    }

    /// The chunks `piece` is merged in.
    pub(in crate::tokens) fn chunks(piece: &str) -> Vec<&str> {
        merge_chunks(piece).collect()
    }
}
