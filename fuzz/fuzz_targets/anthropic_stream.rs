//! Any bytes as an Anthropic event stream, split at a fuzzer-chosen point: no panic, and the
//! result does not depend on the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel::providers::anthropic::StreamTranslator;

fn run(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut t = StreamTranslator::with_created("demo", 1);
    let mut out = Vec::new();
    for p in pieces {
        match t.push(p) {
            Ok(b) => out.extend_from_slice(&b),
            Err(_) => return (out, true),
        }
    }
    match t.finish() {
        Ok(b) => {
            out.extend_from_slice(&b);
            (out, false)
        }
        Err(_) => (out, true),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * input.len() / 256;
    let (a, b) = input.split_at(at);
    assert_eq!(run(&[input]), run(&[a, b]));
});
