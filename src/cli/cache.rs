//! `sentinel cache eval`: the semantic cache's quality on a labelled set of question pairs —
//! hit rate on paraphrases and false-hit rate on near misses, per threshold — with the
//! in-process embedder and the false-hit guard exactly as the gateway uses them.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::cache::semantic::eval::{self, EvalSet};
use crate::cache::semantic::MiniLm;

/// `cache` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CacheCommand {
    /// Report hit and false-hit rates on an evaluation set.
    Eval {
        /// `{"paraphrases": [[a, b], ...], "near_misses": [[a, b], ...]}`.
        #[arg(long, default_value = "tests/data/semantic_eval.json")]
        set: PathBuf,
        #[arg(long, default_value = "models/all-minilm-l6-v2")]
        model_dir: PathBuf,
        /// Report one threshold instead of the sweep.
        #[arg(long)]
        threshold: Option<f32>,
    },
}

/// Runs a `cache` subcommand.
pub fn run(command: CacheCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let CacheCommand::Eval {
        set,
        model_dir,
        threshold,
    } = command;
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    let set = EvalSet::load(&set).map_err(|e| usage(&e))?;
    let model = MiniLm::load(&model_dir).map_err(|e| usage(&e))?;
    if let Some(t) = threshold {
        let r = eval::evaluate(&model, &set, t).map_err(|e| usage(&e))?;
        writeln!(
            out,
            "threshold {t:.2}: {:.1} % of {} paraphrases hit, {:.1} % of {} near misses hit",
            r.hit_rate * 100.0,
            r.paraphrases,
            r.false_hit_rate * 100.0,
            r.near_misses
        )?;
        return Ok(());
    }
    let table = eval::sweep(&model, &set).map_err(|e| usage(&e))?;
    write!(out, "{}", eval::format_table(&table))?;
    if let Some(best) = eval::choose(&table) {
        writeln!(
            out,
            "most hits within the false-hit budget: threshold {:.2} ({:.1} % hits, {:.1} % false hits)",
            best.threshold,
            best.hit_rate * 100.0,
            best.false_hit_rate * 100.0
        )?;
    }
    Ok(())
}
