//! One encoding's counter: its compiled rank table, and tiktoken's byte-pair merge.
//!
//! Counting needs only "which rank has these bytes". tiktoken-rs answers that from hash maps of
//! owned byte vectors both ways plus a sorted copy, which it parses from base64 text on first
//! use (about 40 MB resident for `o200k_base`, ~150 ms). `build.rs` reads its ranks out at
//! compile time into the table [`Vocabulary`] reads in place from the binary (layout in
//! [`super::table`]): nothing to build or allocate, and only the pages lookups touch are
//! resident.
//!
//! The merge is tiktoken's (`_byte_pair_merge` and `_byte_pair_merge_large` in its vendored
//! `lib.rs`, MIT), reduced to counting: repeatedly merge the adjacent pair with the lowest rank,
//! leftmost first, until no pair is a token.

use std::collections::BinaryHeap;

use super::split::Splitter;
use super::table;
use super::tokenizer::Encoding;

/// A token's number in its encoding, as tiktoken numbers them.
type Rank = u32;

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
    /// `encoding`'s counter. Compiles its split automaton: a few milliseconds.
    pub(super) fn build(encoding: Encoding) -> Option<Self> {
        Some(Self {
            splitter: Splitter::new(encoding)?,
            vocabulary: Vocabulary::of(encoding),
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

/// An encoding's compiled table, as `build.rs` wrote it into `OUT_DIR`.
macro_rules! compiled {
    ($name:literal) => {
        Vocabulary {
            bytes: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bytes")),
            ends: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".ends")),
            slots: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".slots")),
        }
    };
}

static O200K_BASE: Vocabulary = compiled!("o200k_base");
static CL100K_BASE: Vocabulary = compiled!("cl100k_base");

/// Every ordinary token of an encoding: rank → bytes and bytes → rank, read in place. Reads
/// out of range (which a table written by `build.rs` never causes) find no token rather than
/// panic.
#[derive(Clone, Copy)]
struct Vocabulary {
    /// Every token's bytes, back to back in rank order.
    bytes: &'static [u8],
    /// Little-endian `u32`s: where each rank's bytes end in `bytes`.
    ends: &'static [u8],
    /// Little-endian `u32`s: the hash index, [`table::EMPTY`] or a tagged rank.
    slots: &'static [u8],
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("tokens", &self.len())
            .finish_non_exhaustive()
    }
}

impl Vocabulary {
    fn of(encoding: Encoding) -> Self {
        match encoding {
            Encoding::O200kBase => O200K_BASE,
            Encoding::Cl100kBase => CL100K_BASE,
        }
    }

    /// How many ordinary tokens the encoding has.
    fn len(&self) -> usize {
        self.ends.len() / 4
    }

    fn slot_count(&self) -> usize {
        self.slots.len() / 4
    }

    /// The bytes of `rank`; empty if it is out of range.
    fn token(&self, rank: Rank) -> &'static [u8] {
        let rank = rank as usize;
        let start = rank
            .checked_sub(1)
            .map_or(Some(0), |before| word(self.ends, before));
        start
            .zip(word(self.ends, rank))
            .and_then(|(start, end)| self.bytes.get(start as usize..end as usize))
            .unwrap_or(&[])
    }

    fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let slot_count = self.slot_count();
        if slot_count == 0 {
            return None;
        }
        let hash = table::hash(bytes);
        let tag = table::tag(hash);
        let mut at = table::home(hash, slot_count);
        // At most every slot once: a table always has empty slots, but a bound costs nothing.
        for _ in 0..slot_count {
            let slot = word(self.slots, at)?;
            if slot == table::EMPTY {
                return None;
            }
            if slot >> table::RANK_BITS == tag {
                let rank = slot & table::RANK_MASK;
                if self.token(rank) == bytes {
                    return Some(rank);
                }
            }
            at = (at + 1) & (slot_count - 1);
        }
        None
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

/// The `index`th little-endian `u32` of `words`.
fn word(words: &[u8], index: usize) -> Option<u32> {
    let at = index.checked_mul(4)?;
    let bytes: [u8; 4] = words.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
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

    /// How many ordinary tokens `encoding` has.
    pub(in crate::tokens) fn vocabulary_len(encoding: Encoding) -> usize {
        Vocabulary::of(encoding).len()
    }

    /// The rank `encoding`'s table finds for `bytes`, and the bytes it keeps for that rank.
    pub(in crate::tokens) fn lookup(encoding: Encoding, bytes: &[u8]) -> Option<(u32, &[u8])> {
        let vocabulary = Vocabulary::of(encoding);
        let rank = vocabulary.rank(bytes)?;
        Some((rank, vocabulary.token(rank)))
    }

    /// How many steps past its home slot each token of `encoding` is stored.
    pub(in crate::tokens) fn probe_distances(encoding: Encoding) -> Vec<usize> {
        let vocabulary = Vocabulary::of(encoding);
        let slot_count = vocabulary.slot_count();
        (0..slot_count)
            .filter_map(|at| {
                let slot = word(vocabulary.slots, at)?;
                (slot != table::EMPTY).then_some((at, slot & table::RANK_MASK))
            })
            .map(|(at, rank)| {
                let home = table::home(table::hash(vocabulary.token(rank)), slot_count);
                at.wrapping_sub(home) & (slot_count - 1)
            })
            .collect()
    }

    /// The chunks `piece` is merged in.
    pub(in crate::tokens) fn chunks(piece: &str) -> Vec<&str> {
        merge_chunks(piece).collect()
    }
}
