//! Tower layers of the request path, one job each, in the order `server/stack.rs` applies them.

pub mod admit;
pub mod auth;
pub mod guard;
pub mod parse;
pub mod request_id;
pub mod timeout;
