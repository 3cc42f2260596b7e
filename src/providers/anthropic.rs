//! SHIM (replaced by the real translation on merge).
use crate::openai::chat::{ChatCompletion, ChatRequest};
use crate::openai::usage::Usage;
use bytes::Bytes;
#[derive(Debug, thiserror::Error)]
#[error("shim")]
pub struct TranslateError;
pub fn to_messages_request(_req: &ChatRequest, _m: &str) -> Result<Bytes, TranslateError> {
    Err(TranslateError)
}
pub fn from_messages_response(_b: &[u8], _m: &str) -> Result<ChatCompletion, TranslateError> {
    Err(TranslateError)
}
pub fn error_type_and_message(_s: u16, _b: &[u8]) -> (&'static str, String) {
    ("api_error", String::new())
}
#[derive(Debug)]
pub struct StreamTranslator;
impl StreamTranslator {
    pub fn new(_m: &str) -> Self {
        Self
    }
    pub fn push(&mut self, _i: &[u8]) -> Result<Bytes, TranslateError> {
        Err(TranslateError)
    }
    pub fn finish(&mut self) -> Result<Bytes, TranslateError> {
        Err(TranslateError)
    }
    pub fn usage(&self) -> Option<&Usage> {
        None
    }
}
