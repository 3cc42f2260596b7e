//! `cache.semantic.embedder = "remote:<model>"`: embeddings from a configured embeddings model,
//! called through the gateway's own routing (providers, retries, fallbacks) as the reserved
//! tenant `_cache`, so the spend is metered and audited like any other.

use std::sync::Arc;
use std::time::Instant;

use axum::body::to_bytes;

use super::index::RemoteEmbed;
use crate::context::{ApiRequest, ParsedBody, RequestId};
use crate::metering::Meter;
use crate::providers::Endpoint;
use crate::proxy::{Proxy, RequestMeta};
use crate::store::Tenant;
use crate::tenancy::RequestContext;

/// The reserved tenant remote embeddings are metered under.
pub const CACHE_TENANT: &str = "_cache";
/// Largest embeddings answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Embeddings through the gateway.
pub struct GatewayEmbed {
    proxy: Arc<Proxy>,
    meter: Arc<Meter>,
    model: String,
    caller: Arc<RequestContext>,
}

impl GatewayEmbed {
    /// Embeds with the configured model `model`.
    pub fn new(proxy: Arc<Proxy>, meter: Arc<Meter>, model: &str) -> Self {
        let tenant = Tenant {
            name: Some("semantic cache embeddings".into()),
            ..Tenant::new(CACHE_TENANT)
        };
        Self {
            proxy,
            meter,
            model: model.to_owned(),
            caller: Arc::new(RequestContext {
                tenant_id: Arc::from(CACHE_TENANT),
                tenant: Arc::new(tenant),
                key_id: Arc::from("cache"),
                key_prefix: Arc::from("cache"),
                key_limits: crate::store::Limits::default(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl RemoteEmbed for GatewayEmbed {
    async fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let request = crate::openai::embeddings::EmbeddingsRequest {
            model: self.model.clone(),
            input: serde_json::Value::String(text.to_owned()),
            extra: serde_json::Map::new(),
        };
        let raw = bytes::Bytes::from(serde_json::to_vec(&request).ok()?);
        let (id, started) = (RequestId::generate(), Instant::now());
        let ledger = self.meter.open(
            id.clone(),
            &self.caller,
            Endpoint::Embeddings,
            started,
            &self.model,
            false,
            std::collections::BTreeMap::new(),
            raw.clone(),
        );
        let meta = RequestMeta {
            id,
            caller: Arc::clone(&self.caller),
            started,
            endpoint: Endpoint::Embeddings,
            response_guard: None,
            fill: None,
        };
        let body = ParsedBody {
            raw,
            api: ApiRequest::Embeddings(Box::new(request)),
            rewritten: false,
        };
        let resp = self.proxy.handle(meta, body, Some(ledger)).await;
        if !resp.status().is_success() {
            return None;
        }
        let bytes = to_bytes(resp.into_body(), MAX_ANSWER_BYTES).await.ok()?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "embeddings are f32 precision"
        )]
        let mut v: Vec<f32> = answer
            .pointer("/data/0/embedding")?
            .as_array()?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()?;
        // Providers do not all normalise: cosine needs unit vectors.
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        Some(v)
    }
}
