//! Any bytes as a chat or embeddings body: parsing never panics, refusals are 4xx, and a
//! parsed chat request survives the Anthropic translation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel::context::ApiRequest;
use sentinel::middleware::parse::{parse, BodyKind};
use sentinel::providers::anthropic::{from_messages_response, to_messages_request};

fuzz_target!(|data: &[u8]| {
    match parse(BodyKind::Chat, data) {
        Ok(ApiRequest::Chat(chat)) => {
            let _ = to_messages_request(&chat, "claude-fuzz");
        }
        Ok(ApiRequest::Embeddings(_)) => unreachable!("a chat body parsed as embeddings"),
        Err(e) => assert!(e.code.status().is_client_error()),
    }
    if let Err(e) = parse(BodyKind::Embeddings, data) {
        assert!(e.code.status().is_client_error());
    }
    let _ = from_messages_response(data, "demo");
});
