//! `GET /v1/models`: the models this caller may use, in OpenAI's list format.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::openai::models::ModelList;
use crate::proxy::Proxy;

/// Lists the configured client-facing models.
pub async fn list(State(proxy): State<Arc<Proxy>>) -> Json<ModelList> {
    Json(ModelList::new(proxy.model_names()))
}
