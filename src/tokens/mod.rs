//! Token counting and pricing: turns a request and its usage into tokens and money.
//!
//! Sits at metering (`src/metering/`): the metered response takes token counts from the
//! upstream's `usage` block when it has one and falls back to [`Tokenizer`] otherwise (the record
//! is then marked `tokens_estimated`); [`PricingTable`] and [`cost_nano`] turn those counts into
//! an integer cost, so sums over millions of requests never drift. Budgets also use the
//! tokenizer before the call to reserve an upper bound.
//!
//! Both pieces are built once and shared read-only: compiling an encoding's split automaton
//! takes long enough to stall an async worker, so it happens once per encoding, off the
//! workers. The encodings' rank tables are compiled into the binary (`build.rs`).

mod bpe;
pub mod pricing;
mod split;
mod table;
pub mod tokenizer;

#[cfg(test)]
mod tests;

pub use pricing::{cost_nano, format_usd, usd_f64, Price, PriceEntry, PricingError, PricingTable};
pub use tokenizer::{Encoding, Tokenizer};
