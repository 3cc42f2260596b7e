//! Any bytes through the OpenAI SSE observer, split at a fuzzer-chosen point: passed through
//! byte for byte when nothing is stripped, and the same verdict for any split.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sentinel::openai::sse::SseObserver;

fn run(pieces: &[&[u8]], strip: bool) -> (Vec<u8>, bool) {
    let mut o = SseObserver::new(strip);
    let mut out = Vec::new();
    for p in pieces {
        out.extend_from_slice(&o.observe(Bytes::copy_from_slice(p)));
    }
    out.extend_from_slice(&o.finish());
    (out, o.is_done())
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * input.len() / 256;
    let (a, b) = input.split_at(at);
    let whole = run(&[input], false);
    assert_eq!(whole.0, input);
    assert_eq!(whole, run(&[a, b], false));
    assert_eq!(run(&[input], true), run(&[a, b], true));
});
