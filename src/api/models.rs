//! `GET /v1/models`: the models this caller may use, in OpenAI's list format.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};

use crate::tenancy::RequestContext;

use crate::openai::models::ModelList;
use crate::proxy::Proxy;

/// Lists the models the caller may use (the admin sees all).
pub async fn list(
    State(proxy): State<Arc<Proxy>>,
    caller: Option<Extension<Arc<RequestContext>>>,
) -> Json<ModelList> {
    let names = proxy
        .model_names()
        .into_iter()
        .filter(|m| caller.as_ref().is_none_or(|c| c.allows_model(m)));
    Json(ModelList::new(names))
}
