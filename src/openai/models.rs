//! `GET /v1/models` list format.

use serde::Serialize;

/// One entry of the model list.
#[derive(Debug, Clone, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

/// OpenAI's list envelope.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

impl ModelList {
    /// Lists the given client-facing model names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            object: "list",
            data: names
                .into_iter()
                .map(|id| ModelObject {
                    id: id.to_owned(),
                    object: "model",
                    created: 0,
                    owned_by: "sentinel",
                })
                .collect(),
        }
    }
}
