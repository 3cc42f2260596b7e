//! Deterministic stand-ins for what a model computes: token counts, reply text, stream
//! pieces and embedding vectors. Same input, same output, on every run.

/// Tokens added per chat message, on top of its words (OpenAI's chat overhead is about 3).
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Dimensions of a mock embedding.
pub const EMBEDDING_DIMS: usize = 8;

/// How many characters of the user's message the default reply quotes.
const QUOTED_CHARS: usize = 40;

/// The mock's token count: whitespace-separated words.
pub fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The reply: the configured text, or `Mock reply to: <first 40 chars of the prompt>`.
pub fn reply(fixed: Option<&str>, last_user: &str) -> String {
    fixed.map_or_else(
        || {
            let quoted = last_user
                .char_indices()
                .nth(QUOTED_CHARS)
                .map_or(last_user, |(at, _)| &last_user[..at]);
            format!("Mock reply to: {quoted}")
        },
        str::to_owned,
    )
}

/// Splits `text` into exactly `n` consecutive pieces on character boundaries, as even as
/// possible. When `text` has fewer characters than `n`, the last pieces are empty.
pub fn pieces(text: &str, n: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars = bounds.len() - 1;
    // Ceiling division spreads the characters evenly; with fewer characters than pieces,
    // each of the first pieces gets one.
    let at = |i: usize| {
        bounds[if chars >= n {
            (i * chars).div_ceil(n)
        } else {
            i.min(chars)
        }]
    };
    (0..n).map(|i| &text[at(i)..at(i + 1)]).collect()
}

/// An L2-normalised vector derived from a hash of `text`.
pub fn embedding(text: &str) -> [f32; EMBEDDING_DIMS] {
    vector(fnv1a_64(text.bytes()))
}

/// An L2-normalised vector derived from a hash of token ids (an `input` given as tokens).
pub fn token_embedding(tokens: &[u64]) -> [f32; EMBEDDING_DIMS] {
    vector(fnv1a_64(tokens.iter().flat_map(|t| t.to_le_bytes())))
}

fn vector(seed: u64) -> [f32; EMBEDDING_DIMS] {
    let mut state = seed;
    let mut out = [0.0_f32; EMBEDDING_DIMS];
    for value in &mut out {
        state = splitmix64(state);
        let bits = u16::try_from(state >> 48).unwrap_or(0);
        *value = f32::from(bits) / f32::from(u16::MAX) * 2.0 - 1.0;
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in &mut out {
            *value /= norm;
        }
    }
    out
}

/// FNV-1a over `bytes`: a fast, stable hash (the same on every run and platform).
pub fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
