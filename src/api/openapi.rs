//! `GET /openapi.json` and `GET /docs`: the `OpenAPI` 3.1 description of every client, admin and
//! operations endpoint, and the Swagger UI page that renders it (assets compiled into the
//! binary by `utoipa-swagger-ui`'s `vendored` feature: the page loads nothing from elsewhere).
//!
//! How the document is made, all from code:
//! - The wire shapes are the `#[derive(ToSchema)]` types of [`schemas`]: documentation mirrors
//!   of the serde types in `openai`, `audit::record`, `api::usage`, `api::admin`, `store` and
//!   `api::health`, so the hot-path types carry no documentation machinery. They cannot drift
//!   silently: the unit tests below compare each mirror with a serialised value of the real
//!   type, and the end-to-end tests (`tests/e2e/docs.rs`) check live answers of a running
//!   gateway against this document.
//! - Each operation is a `#[utoipa::path]` on a stub in [`paths`]: its parameters, body,
//!   success responses and examples.
//! - [`Conventions`] adds what every operation of a kind shares, each from one table: the
//!   security schemes, the OpenAI-shaped error responses per status (described from
//!   [`ErrorCode::parts`], the table the gateway itself answers from), the request headers
//!   Sentinel reads and the response headers it adds (`x-request-id` everywhere,
//!   `x-sentinel-*` and `x-ratelimit-*` on proxied answers, `retry-after` on 429 and 503).
//!
//! The document is built once ([`LazyLock`]) and served as pre-serialised JSON.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::ErrorCode;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where Swagger UI is served (`/docs` redirects to `/docs/`).
pub const DOCS_PATH: &str = "/docs";

/// Security scheme names.
const TENANT_BEARER: &str = "tenant_bearer";
const TENANT_API_KEY: &str = "tenant_api_key";
const ADMIN_BEARER: &str = "admin_bearer";

/// The document, built on first use.
pub static DOCUMENT: LazyLock<openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// The document as JSON bytes, serialised once.
static JSON: LazyLock<Bytes> = LazyLock::new(|| {
    // Serialising plain data cannot fail; an empty body would fail every client loudly.
    serde_json::to_vec(&*DOCUMENT)
        .map(Bytes::from)
        .unwrap_or_default()
});

/// `GET /openapi.json`.
pub async fn json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        JSON.clone(),
    )
        .into_response()
}

/// Content security policy of the Swagger UI pages: everything from this origin only. Swagger UI
/// styles elements inline and draws icons from `data:` URIs.
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                        script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                        frame-ancestors 'none'";

/// `GET /docs`, `/docs/` and `/docs/{file}`: Swagger UI reading [`OPENAPI_PATH`]. The Swagger
/// validator badge is off (it would send the document to an outside service).
pub fn swagger_ui() -> Router {
    let config = Config::new([OPENAPI_PATH])
        .validator_url("none")
        .display_request_duration(true)
        .persist_authorization(false)
        .try_it_out_enabled(false);
    Router::from(SwaggerUi::new(DOCS_PATH).config(config)).layer(axum::middleware::map_response(
        |mut resp: Response| async move {
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            resp
        },
    ))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sentinel",
        description = "An OpenAI-compatible LLM gateway: routing with retries, fallbacks and \
                       circuit breakers, tenants and keys, limits and budgets, cost accounting, \
                       an audit log, caching, an LLM judge and guardrails.\n\n\
                       Client routes take a tenant key (`Authorization: Bearer sk-sntl-...` or \
                       `x-api-key`); `/admin/*` takes the admin key (`SENTINEL_ADMIN_KEY`), \
                       which may also read any tenant's usage and audit log (`?tenant=`). \
                       `/health*`, `/metrics*`, `/openapi.json`, `/docs` and `/` are public.\n\n\
                       Every error has OpenAI's shape `{\"error\": {\"message\", \"type\", \
                       \"code\", \"param\"}}`, so the official SDKs raise the right exception.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        paths::chat_completions,
        paths::embeddings,
        paths::models,
        paths::usage,
        paths::audit_list,
        paths::audit_one,
        paths::create_tenant,
        paths::list_tenants,
        paths::get_tenant,
        paths::patch_tenant,
        paths::delete_tenant,
        paths::create_key,
        paths::list_keys,
        paths::revoke_key,
        paths::health,
        paths::health_live,
        paths::health_ready,
        paths::metrics,
        paths::metrics_prometheus,
        paths::openapi_json,
        paths::docs,
        paths::dashboard,
    ),
    components(schemas(schemas::ChatCompletionChunk, schemas::ErrorResponse)),
    modifiers(&Conventions),
    tags(
        (name = "openai", description = "OpenAI-compatible endpoints, proxied to the providers \
                                         that serve each model."),
        (name = "accounting", description = "Usage, cost and the audit log of a tenant."),
        (name = "admin", description = "Tenants and their keys. Admin key only."),
        (name = "operations", description = "Probes, metrics, this document and the dashboard. \
                                             No key needed."),
    ),
)]
struct ApiDoc;

// === conventions shared by many operations ===

/// What an operation is, for the parts it shares with others of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Proxied to a provider: chat completions, embeddings.
    Proxy,
    /// `/v1/models`: tenant key, answered by the gateway.
    Models,
    /// `/v1/usage`, `/v1/audit*`: tenant key or admin key.
    Accounting,
    /// `/admin/*`.
    Admin,
    /// Health, metrics, docs, dashboard: public.
    Public,
}

fn kind_of(path: &str) -> Kind {
    match path {
        "/v1/chat/completions" | "/v1/embeddings" => Kind::Proxy,
        "/v1/models" => Kind::Models,
        p if p.starts_with("/v1/") => Kind::Accounting,
        p if p.starts_with("/admin/") => Kind::Admin,
        _ => Kind::Public,
    }
}

/// Every code the gateway itself answers with.
const ERROR_CODES: [ErrorCode; 18] = {
    use ErrorCode as C;
    [
        C::InvalidApiKey,
        C::AdminRequired,
        C::ModelNotAllowed,
        C::ModelNotFound,
        C::InvalidBody,
        C::BodyTooLarge,
        C::RateLimitExceeded,
        C::BudgetExceeded,
        C::ContentBlocked,
        C::AuthUnavailable,
        C::UpstreamTimeout,
        C::UpstreamError,
        C::NotFound,
        C::Conflict,
        C::MethodNotAllowed,
        C::RequestTimeout,
        C::Unavailable,
        C::Internal,
    ]
};

/// Compiles only while [`ERROR_CODES`] can be complete: the `match` has no wildcard, so a new
/// [`ErrorCode`] stops the build here until it is listed above, and so documented.
#[cfg(test)]
const fn listed(code: ErrorCode) -> bool {
    use ErrorCode as C;
    match code {
        C::InvalidApiKey
        | C::AdminRequired
        | C::ModelNotAllowed
        | C::ModelNotFound
        | C::InvalidBody
        | C::BodyTooLarge
        | C::RateLimitExceeded
        | C::BudgetExceeded
        | C::ContentBlocked
        | C::AuthUnavailable
        | C::UpstreamTimeout
        | C::UpstreamError
        | C::NotFound
        | C::Conflict
        | C::MethodNotAllowed
        | C::RequestTimeout
        | C::Unavailable
        | C::Internal => true,
    }
}

/// Error statuses each kind of operation can answer (beyond what its path lists itself).
fn error_statuses(kind: Kind, method: &str, path: &str) -> Vec<u16> {
    let mut out = match kind {
        Kind::Proxy => vec![400, 401, 403, 404, 413, 429, 502, 503, 504],
        Kind::Models => vec![401, 503, 504],
        Kind::Accounting => vec![400, 401, 403, 503, 504],
        Kind::Admin => vec![401, 403, 503, 504],
        Kind::Public => Vec::new(),
    };
    if kind == Kind::Admin {
        if matches!(method, "post" | "patch") {
            out.extend([400, 413]);
        }
        if path.contains('{') {
            out.push(404);
        }
        if method == "post" && path == "/admin/tenants" {
            out.push(409);
        }
    }
    if path == "/v1/audit/{request_id}" {
        out.push(404);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `#/components/responses/` name of the error response of `status`.
fn error_response_name(status: u16) -> String {
    format!("Error{status}")
}

/// One error response per status the gateway uses, described from the code table.
fn error_responses() -> Vec<(String, openapi::Response)> {
    let mut statuses: Vec<u16> = ERROR_CODES.iter().map(|c| c.status().as_u16()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    statuses
        .into_iter()
        .map(|status| {
            let codes: Vec<(&str, &str)> = ERROR_CODES
                .iter()
                .map(|c| c.parts())
                .filter(|(s, _, _)| s.as_u16() == status)
                .map(|(_, kind, code)| (kind, code))
                .collect();
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut description = format!("{reason}. OpenAI-shaped error; `type` / `code`: ");
            description.push_str(
                &codes
                    .iter()
                    .map(|(t, c)| format!("`{t}` / `{c}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            if (400..500).contains(&status) && status != 429 {
                description.push_str(
                    ". A provider's own 4xx verdict on a proxied request is passed through \
                     unchanged, with the provider's `type` and `code`",
                );
            }
            description.push('.');
            let mut examples = openapi::content::ContentBuilder::new().schema(Some(RefOr::Ref(
                openapi::Ref::from_schema_name("ErrorResponse"),
            )));
            for (kind, code) in &codes {
                examples = examples.examples_from_iter([(
                    (*code).to_owned(),
                    openapi::example::ExampleBuilder::new()
                        .summary(format!("{kind} / {code}"))
                        .value(Some(serde_json::json!({"error": {
                            "message": example_message(code),
                            "type": kind,
                            "code": code,
                            "param": null
                        }})))
                        .build(),
                )]);
            }
            let mut response = openapi::ResponseBuilder::new()
                .description(description)
                .content("application/json", examples.build())
                .build();
            for (name, ty, description) in COMMON_RESPONSE_HEADERS {
                response
                    .headers
                    .insert((*name).to_owned(), header_doc(ty, description));
            }
            if matches!(status, 429 | 503) {
                response.headers.insert(
                    "retry-after".to_owned(),
                    header_doc(
                        "integer",
                        "Seconds to wait before trying again (429 from a limit or budget, 503 \
                         while the store or the upstreams are unavailable).",
                    ),
                );
            }
            (error_response_name(status), response)
        })
        .collect()
}

fn example_message(code: &str) -> &'static str {
    match code {
        "invalid_api_key" => "invalid API key",
        "admin_required" => "this route needs the admin key",
        "model_not_allowed" => "model `gpt-4o` is not allowed for this tenant",
        "model_not_found" => "the model `gpt-5-turbo` does not exist",
        "invalid_body" => "invalid request body: missing field `messages`",
        "body_too_large" => "request body is larger than 10485760 bytes",
        "rate_limit_exceeded" => "rate limit reached: 600 requests per minute",
        "budget_exceeded" => "the tenant's monthly budget of 100 USD is spent",
        "content_blocked" => "blocked by a guardrail: pii.credit_card",
        "auth_unavailable" => "the key cannot be checked right now",
        "upstream_timeout" => "the upstream did not answer in time",
        "upstream_error" => "every upstream failed",
        "conflict" => "tenant `acme` already exists",
        "method_not_allowed" => "this endpoint does not accept that method",
        "timeout" => "the request took too long",
        "unavailable" => "the store is unavailable",
        "internal_error" => "internal error",
        _ => "no such endpoint",
    }
}

/// A header with a plain schema type (`string`, `integer`, `number`).
fn header_doc(kind: &str, description: &str) -> openapi::header::Header {
    let ty = match kind {
        "integer" => openapi::schema::Type::Integer,
        "number" => openapi::schema::Type::Number,
        _ => openapi::schema::Type::String,
    };
    openapi::header::HeaderBuilder::new()
        .schema(openapi::ObjectBuilder::new().schema_type(ty))
        .description(Some(description))
        .build()
}

/// Response headers on every answer of the gateway.
const COMMON_RESPONSE_HEADERS: &[(&str, &str, &str)] = &[(
    "x-request-id",
    "string",
    "The request's id: the client's `x-request-id` when it is 1-128 characters of \
     `[A-Za-z0-9._:-]`, else a new UUIDv7. Also the audit record's `request_id`.",
)];

/// Response headers Sentinel adds to proxied answers.
const PROXY_RESPONSE_HEADERS: &[(&str, &str, &str)] = &[
    (
        "x-sentinel-cache",
        "string",
        "`miss`, `exact` or `semantic` (answered from the cache), or `bypass` when the request \
         sent `x-sentinel-cache: bypass|no-store`.",
    ),
    (
        "x-sentinel-provider",
        "string",
        "The configured provider that answered.",
    ),
    (
        "x-sentinel-overhead-ms",
        "number",
        "Time spent in Sentinel itself, upstream time excluded (milliseconds).",
    ),
    (
        "x-sentinel-cost-usd",
        "string",
        "Cost of this request in USD as a decimal string (non-streaming answers only).",
    ),
    (
        "x-ratelimit-limit-requests",
        "integer",
        "The tenant's requests per minute (`limits.rpm`), when it has one.",
    ),
    (
        "x-ratelimit-remaining-requests",
        "integer",
        "Requests left in the current minute.",
    ),
    (
        "x-ratelimit-limit-tokens",
        "integer",
        "The tenant's tokens per minute (`limits.tpm`), when it has one.",
    ),
    (
        "x-ratelimit-remaining-tokens",
        "integer",
        "Tokens left in the current minute.",
    ),
];

/// A request header parameter.
fn header_param(
    name: &str,
    description: &str,
    schema: openapi::ObjectBuilder,
    example: &str,
) -> openapi::path::Parameter {
    openapi::path::ParameterBuilder::new()
        .name(name)
        .parameter_in(openapi::path::ParameterIn::Header)
        .required(openapi::Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .example(Some(serde_json::Value::String(example.to_owned())))
        .build()
}

fn string_schema() -> openapi::ObjectBuilder {
    openapi::ObjectBuilder::new().schema_type(openapi::schema::Type::String)
}

/// Request headers Sentinel reads on proxied requests.
fn proxy_request_headers() -> Vec<openapi::path::Parameter> {
    vec![
        header_param(
            "x-sentinel-cache",
            "`bypass`: do not read the cache (the answer is still stored); `no-store`: neither \
             read nor write it.",
            string_schema().enum_values(Some(["bypass", "no-store"])),
            "bypass",
        ),
        header_param(
            "x-sentinel-tags",
            "`k=v,k2=v2`: stored on the audit record and filterable there (`/v1/audit?tag=k=v`). \
             At most 16 pairs; keys and values of 1-64 characters of `[A-Za-z0-9_.:/-]`.",
            string_schema(),
            "team=search,env=prod",
        ),
    ]
}

fn request_id_param() -> openapi::path::Parameter {
    header_param(
        "x-request-id",
        "Your id for this request (1-128 characters of `[A-Za-z0-9._:-]`); kept and echoed, \
         else Sentinel makes one.",
        string_schema().max_length(Some(128)),
        "req-2f9c1a",
    )
}

/// Schemas of objects whose real type keeps the fields Sentinel does not know (an `extra`
/// map) and passes them on unchanged: they say so with `additionalProperties: true`, so
/// generated clients keep such fields too.
const PASS_THROUGH: &[&str] = &[
    "ChatCompletionRequest",
    "StreamOptions",
    "ChatMessage",
    "ContentPart",
    "Tool",
    "FunctionDefinition",
    "ChatCompletion",
    "Choice",
    "AssistantMessage",
    "EmbeddingsRequest",
];

/// Adds the parts operations share (see the module docs).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for name in PASS_THROUGH {
            if let Some(RefOr::T(openapi::Schema::Object(object))) =
                components.schemas.get_mut(*name)
            {
                object.additional_properties = Some(Box::new(
                    openapi::schema::AdditionalProperties::FreeForm(true),
                ));
            }
        }
        add_security_schemes(components);
        for (name, response) in error_responses() {
            components.responses.insert(name, RefOr::T(response));
        }
        let proxy_headers = proxy_request_headers();
        for (path, item) in &mut doc.paths.paths {
            let kind = kind_of(path);
            for (method, op) in operations(item) {
                decorate(op, kind, method, path, &proxy_headers);
            }
        }
    }
}

fn add_security_schemes(components: &mut openapi::Components) {
    components.add_security_scheme(
        TENANT_BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("sk-sntl-...")
                .description(Some(
                    "A tenant key: `Authorization: Bearer sk-sntl-...`. Keys are created with \
                     `POST /admin/tenants/{id}/keys`, the CLI or the config file.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        TENANT_API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "A tenant key in the `x-api-key` header (same keys as the bearer scheme).",
        ))),
    );
    components.add_security_scheme(
        ADMIN_BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin key, `SENTINEL_ADMIN_KEY` (the admin API is off when it is \
                     unset): `Authorization: Bearer $SENTINEL_ADMIN_KEY`. It manages tenants \
                     and keys and reads any tenant's usage and audit log; it cannot call \
                     models.",
                ))
                .build(),
        ),
    );
}

fn operations(item: &mut openapi::PathItem) -> Vec<(&'static str, &mut openapi::path::Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
        ("put", item.put.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn decorate(
    op: &mut openapi::path::Operation,
    kind: Kind,
    method: &'static str,
    path: &str,
    proxy_headers: &[openapi::path::Parameter],
) {
    let params = op.parameters.get_or_insert_with(Vec::new);
    params.push(request_id_param());
    if kind == Kind::Proxy {
        params.extend(proxy_headers.iter().cloned());
    }
    op.security = Some(security_for(kind));
    for status in error_statuses(kind, method, path) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                RefOr::Ref(openapi::Ref::from_response_name(error_response_name(
                    status,
                )))
            });
    }
    for (status, response) in &mut op.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        for (name, ty, description) in COMMON_RESPONSE_HEADERS {
            response
                .headers
                .insert((*name).to_owned(), header_doc(ty, description));
        }
        if kind == Kind::Proxy && status.starts_with('2') {
            for (name, ty, description) in PROXY_RESPONSE_HEADERS {
                response
                    .headers
                    .insert((*name).to_owned(), header_doc(ty, description));
            }
        }
    }
}

fn security_for(kind: Kind) -> Vec<openapi::security::SecurityRequirement> {
    use openapi::security::SecurityRequirement as Req;
    let none: [&str; 0] = [];
    match kind {
        Kind::Proxy | Kind::Models => vec![
            Req::new(TENANT_BEARER, none),
            Req::new(TENANT_API_KEY, none),
        ],
        Kind::Accounting => vec![
            Req::new(TENANT_BEARER, none),
            Req::new(TENANT_API_KEY, none),
            Req::new(ADMIN_BEARER, none),
        ],
        Kind::Admin => vec![Req::new(ADMIN_BEARER, none)],
        // An empty list: this operation needs no credentials.
        Kind::Public => Vec::new(),
    }
}

// === operations ===

/// One stub per operation: the `#[utoipa::path]` attribute is the documentation; the bodies
/// are empty because the real handlers live in `api::*` and `server::stack` routes to them.
mod paths {
    #![expect(
        dead_code,
        reason = "documentation stubs: only their generated `__path_*` types are used"
    )]

    use super::schemas::{
        ApiKey, ApiKeyCreated, AuditPage, AuditParams, AuditRecord, ChatCompletion,
        ChatCompletionRequest, EmbeddingsRequest, EmbeddingsResponse, Health, KeyCreate, KeyList,
        ModelList, Tenant, TenantCreate, TenantDeleted, TenantList, TenantPatch, TenantScope,
        UsageParams, UsageReport,
    };

    /// Chat completion (JSON or server-sent events)
    ///
    /// OpenAI's chat completions. The model name is one configured in `[[models]]`; Sentinel
    /// routes it to its providers (primary, then fallbacks) with retries and circuit breakers,
    /// applies the tenant's allow-list, limits, budget and guardrails, answers from the cache
    /// when it can, and records cost and an audit record. Fields Sentinel does not know are
    /// passed upstream unchanged.
    ///
    /// With `"stream": true` the answer is `text/event-stream`: one `data: {json}` event per
    /// `ChatCompletionChunk` (see the schema), then `data: [DONE]`. The last chunk carries
    /// `usage` only if the request asked for it (`stream_options.include_usage`). A stream
    /// that breaks upstream ends with an event `data: {"error": {...}}` in the `ErrorResponse`
    /// shape.
    #[utoipa::path(
        post,
        path = "/v1/chat/completions",
        operation_id = "createChatCompletion",
        tag = "openai",
        request_body(
            content = ChatCompletionRequest,
            examples(
                ("simple" = (summary = "One question", value = json!({
                    "model": "demo",
                    "messages": [{"role": "user", "content": "Hello!"}]
                }))),
                ("stream" = (summary = "Streamed, with the usage chunk", value = json!({
                    "model": "demo",
                    "stream": true,
                    "stream_options": {"include_usage": true},
                    "messages": [
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": "Hello!"}
                    ]
                }))),
            ),
        ),
        responses(
            (status = 200, description = "The completion: JSON, or an SSE stream of chunks when \
                                          `stream` is true.",
                content(
                    (ChatCompletion = "application/json", example = json!({
                        "id": "chatcmpl-0193f1c2a7b4",
                        "object": "chat.completion",
                        "created": 1_764_000_000,
                        "model": "mock-gpt",
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello! How can I help?", "refusal": null},
                            "logprobs": null,
                            "finish_reason": "stop"
                        }],
                        "usage": {
                            "prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15,
                            "prompt_tokens_details": {"cached_tokens": 0},
                            "completion_tokens_details": {"reasoning_tokens": 0}
                        }
                    })),
                    (String = "text/event-stream", example = json!(
                        "data: {\"id\":\"chatcmpl-0193f1c2a7b4\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"mock-gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
                         data: {\"id\":\"chatcmpl-0193f1c2a7b4\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"mock-gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello!\"},\"finish_reason\":null}]}\n\n\
                         data: {\"id\":\"chatcmpl-0193f1c2a7b4\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"mock-gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                         data: [DONE]\n\n"
                    )),
                ),
            ),
        ),
    )]
    pub(super) fn chat_completions() {}

    /// Embeddings
    ///
    /// OpenAI's embeddings, routed like chat completions, costed and audited. Fields Sentinel
    /// does not know are passed upstream unchanged.
    #[utoipa::path(
        post,
        path = "/v1/embeddings",
        operation_id = "createEmbedding",
        tag = "openai",
        request_body(content = EmbeddingsRequest, example = json!({
            "model": "demo-embed", "input": ["Hello!", "Bonjour !"]
        })),
        responses(
            (status = 200, description = "One vector per input, in order.",
                body = EmbeddingsResponse,
                example = json!({
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.12, -0.03, 0.41]}],
                    "model": "mock-embedding",
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}
                })),
        ),
    )]
    pub(super) fn embeddings() {}

    /// Models this key may use
    ///
    /// The configured model names the caller's tenant may use (its `models` allow-list; every
    /// model when the list is empty), in OpenAI's list format.
    #[utoipa::path(
        get,
        path = "/v1/models",
        operation_id = "listModels",
        tag = "openai",
        responses(
            (status = 200, description = "The model list.", body = ModelList,
                example = json!({"object": "list", "data": [
                    {"id": "demo", "object": "model", "created": 0, "owned_by": "sentinel"}
                ]})),
        ),
    )]
    pub(super) fn models() {}

    /// Usage and cost
    ///
    /// Usage and cost of the caller's tenant (the admin key names any tenant with `tenant`),
    /// from daily rollups (UTC days), optionally broken down by model, day or key. Cache hits
    /// cost 0 and count in `cache_hits` and `cost_saved_usd`. Judge calls are billed to the
    /// reserved tenant `_judge`.
    #[utoipa::path(
        get,
        path = "/v1/usage",
        operation_id = "getUsage",
        tag = "accounting",
        params(UsageParams),
        responses(
            (status = 200, description = "The report.", body = UsageReport),
        ),
    )]
    pub(super) fn usage() {}

    /// Audit records
    ///
    /// The caller's tenant's audit records, newest first, filtered, one page at a time: pass
    /// `next_cursor` back as `cursor` until it is `null`.
    #[utoipa::path(
        get,
        path = "/v1/audit",
        operation_id = "listAuditRecords",
        tag = "accounting",
        params(AuditParams),
        responses(
            (status = 200, description = "One page of records.", body = AuditPage),
        ),
    )]
    pub(super) fn audit_list() {}

    /// One audit record
    ///
    /// 404 unless the record belongs to the caller's tenant (or, for the admin key, to
    /// `tenant`).
    #[utoipa::path(
        get,
        path = "/v1/audit/{request_id}",
        operation_id = "getAuditRecord",
        tag = "accounting",
        params(
            ("request_id" = String, Path, description = "The request's `x-request-id`.",
                example = "0193f1c2-a7b4-7c3e-9d2a-5b1e8f0c4d21"),
            TenantScope,
        ),
        responses(
            (status = 200, description = "The record.", body = AuditRecord),
        ),
    )]
    pub(super) fn audit_one() {}

    /// Create a tenant
    #[utoipa::path(
        post,
        path = "/admin/tenants",
        operation_id = "createTenant",
        tag = "admin",
        request_body(content = TenantCreate, example = json!({
            "id": "acme", "name": "Acme Corp", "models": ["demo"],
            "limits": {"rpm": 600, "tpm": 200_000},
            "budget": {"limit_usd": 100.0, "period": "month", "mode": "enforce"},
            "shield": {"pii": {"action": "redact"}},
            "cache": {"semantic": false},
            "judge": {"sample_rate": 0.5}
        })),
        responses(
            (status = 201, description = "The tenant as stored.", body = Tenant),
        ),
    )]
    pub(super) fn create_tenant() {}

    /// List tenants
    #[utoipa::path(
        get,
        path = "/admin/tenants",
        operation_id = "listTenants",
        tag = "admin",
        responses(
            (status = 200, description = "Every tenant.", body = TenantList),
        ),
    )]
    pub(super) fn list_tenants() {}

    /// Get a tenant
    #[utoipa::path(
        get,
        path = "/admin/tenants/{id}",
        operation_id = "getTenant",
        tag = "admin",
        params(("id" = String, Path, description = "Tenant id.", example = "acme")),
        responses(
            (status = 200, description = "The tenant.", body = Tenant),
        ),
    )]
    pub(super) fn get_tenant() {}

    /// Change a tenant
    ///
    /// Changes only the fields the body names; `null` removes `name`, `limits`, `budget`,
    /// `shield`, `cache` or `judge`. Takes effect on every replica within a second.
    #[utoipa::path(
        patch,
        path = "/admin/tenants/{id}",
        operation_id = "updateTenant",
        tag = "admin",
        params(("id" = String, Path, description = "Tenant id.", example = "acme")),
        request_body(content = TenantPatch, example = json!({
            "models": [], "budget": null, "limits": {"rpm": 1200}
        })),
        responses(
            (status = 200, description = "The tenant after the change.", body = Tenant),
        ),
    )]
    pub(super) fn patch_tenant() {}

    /// Delete a tenant
    ///
    /// Removes the tenant and revokes its keys.
    #[utoipa::path(
        delete,
        path = "/admin/tenants/{id}",
        operation_id = "deleteTenant",
        tag = "admin",
        params(("id" = String, Path, description = "Tenant id.", example = "acme")),
        responses(
            (status = 200, description = "Deleted.", body = TenantDeleted,
                example = json!({"id": "acme", "deleted": true})),
        ),
    )]
    pub(super) fn delete_tenant() {}

    /// Create a key
    ///
    /// The answer is the only place the secret `key` ever appears: only its SHA-256 is
    /// stored. The body may be empty (name `default`, no expiry).
    #[utoipa::path(
        post,
        path = "/admin/tenants/{id}/keys",
        operation_id = "createKey",
        tag = "admin",
        params(("id" = String, Path, description = "Tenant id.", example = "acme")),
        request_body(content = Option<KeyCreate>, example = json!({"name": "ci", "expires_in": "30d"})),
        responses(
            (status = 201, description = "The new key, with its secret.", body = ApiKeyCreated),
        ),
    )]
    pub(super) fn create_key() {}

    /// List a tenant's keys
    #[utoipa::path(
        get,
        path = "/admin/tenants/{id}/keys",
        operation_id = "listKeys",
        tag = "admin",
        params(("id" = String, Path, description = "Tenant id.", example = "acme")),
        responses(
            (status = 200, description = "The tenant's keys (never their secrets).", body = KeyList),
        ),
    )]
    pub(super) fn list_keys() {}

    /// Revoke a key
    ///
    /// Every replica refuses the key within a second.
    #[utoipa::path(
        delete,
        path = "/admin/keys/{key_id}",
        operation_id = "revokeKey",
        tag = "admin",
        params(("key_id" = String, Path, description = "The key's public id.",
            example = "key_01j9x7kq3m")),
        responses(
            (status = 200, description = "The revoked key.", body = ApiKey),
        ),
    )]
    pub(super) fn revoke_key() {}

    /// Health detail
    ///
    /// `ok`, `degraded` (the store is down or limits run per replica, or a circuit is not
    /// closed) or `down` (no upstream usable: 503).
    #[utoipa::path(
        get,
        path = "/health",
        operation_id = "getHealth",
        tag = "operations",
        responses(
            (status = 200, description = "`ok` or `degraded`.", body = Health,
                example = json!({"status": "ok", "version": "0.1.0", "uptime_s": 3600,
                                 "checks": {"store": "ok", "upstreams": {"openai": "closed"}}})),
            (status = 503, description = "`down`: no upstream is usable.", body = Health),
        ),
    )]
    pub(super) fn health() {}

    /// Liveness
    #[utoipa::path(
        get,
        path = "/health/live",
        operation_id = "getLiveness",
        tag = "operations",
        responses(
            (status = 200, description = "The process serves.", body = String,
                content_type = "text/plain", example = json!("ok")),
        ),
    )]
    pub(super) fn health_live() {}

    /// Readiness
    #[utoipa::path(
        get,
        path = "/health/ready",
        operation_id = "getReadiness",
        tag = "operations",
        responses(
            (status = 200, description = "The store and at least one upstream are usable.",
                body = Health),
            (status = 503, description = "Not ready: the store is down or no upstream is usable.",
                body = Health),
        ),
    )]
    pub(super) fn health_ready() {}

    /// Prometheus metrics
    ///
    /// Text exposition of every `sentinel_*` family (SPEC section 4), e.g.
    /// `sentinel_requests_total{tenant,model,provider,status,cache}`,
    /// `sentinel_cost_usd_total{tenant,model}` and the `sentinel_judge_score{model}` histogram.
    #[utoipa::path(
        get,
        path = "/metrics",
        operation_id = "getMetrics",
        tag = "operations",
        responses(
            (status = 200, description = "Prometheus text format 0.0.4.", body = String,
                content_type = "text/plain",
                example = json!("# TYPE sentinel_requests_total counter\nsentinel_requests_total{tenant=\"acme\",model=\"demo\",provider=\"mock\",status=\"200\",cache=\"miss\"} 42\n")),
        ),
    )]
    pub(super) fn metrics() {}

    /// Prometheus metrics (same as `/metrics`)
    #[utoipa::path(
        get,
        path = "/metrics/prometheus",
        operation_id = "getPrometheusMetrics",
        tag = "operations",
        responses(
            (status = 200, description = "Prometheus text format 0.0.4.", body = String,
                content_type = "text/plain"),
        ),
    )]
    pub(super) fn metrics_prometheus() {}

    /// This document
    #[utoipa::path(
        get,
        path = "/openapi.json",
        operation_id = "getOpenApi",
        tag = "operations",
        responses(
            (status = 200, description = "OpenAPI 3.1 document.", body = Value,
                content_type = "application/json"),
        ),
    )]
    pub(super) fn openapi_json() {}

    /// API reference (Swagger UI)
    ///
    /// Redirects to `/docs/`, a Swagger UI page served from the binary that renders
    /// `/openapi.json`.
    #[utoipa::path(
        get,
        path = "/docs",
        operation_id = "getDocs",
        tag = "operations",
        responses(
            (status = 303, description = "To `/docs/`."),
        ),
    )]
    pub(super) fn docs() {}

    /// Operator dashboard
    ///
    /// A self-contained page (no external requests): after the operator types the admin key
    /// (kept in `sessionStorage` only) it polls `/metrics`, `/health`, `/admin/tenants` and
    /// `/v1/usage` every 3 seconds and shows requests per second, cost today and this month
    /// per tenant, the cache hit ratio, judge scores, the top tenants and health. The page
    /// itself holds no data.
    #[utoipa::path(
        get,
        path = "/",
        operation_id = "getDashboard",
        tag = "operations",
        responses(
            (status = 200, description = "The dashboard page.", body = String,
                content_type = "text/html"),
        ),
    )]
    pub(super) fn dashboard() {}
}

// === wire shapes ===

/// Documentation mirrors of the wire types (see the module docs for how they are kept true).
/// `Serialize` is derived only so the serde attributes (`untagged`, `rename`) that shape the
/// schemas are available.
pub mod schemas {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::Value;
    use utoipa::{IntoParams, ToSchema};

    // --- chat ---

    /// A chat completion request. Fields not listed here are passed upstream unchanged.
    #[derive(Serialize, ToSchema)]
    pub struct ChatCompletionRequest {
        /// A model name configured in Sentinel (see `GET /v1/models`).
        #[schema(example = "demo")]
        pub model: String,
        #[schema(min_items = 1)]
        pub messages: Vec<ChatMessage>,
        /// `true`: answer as server-sent events.
        pub stream: Option<bool>,
        pub stream_options: Option<StreamOptions>,
        pub max_tokens: Option<u32>,
        pub max_completion_tokens: Option<u32>,
        #[schema(minimum = 0.0, maximum = 2.0)]
        pub temperature: Option<f64>,
        #[schema(minimum = 0.0, maximum = 1.0)]
        pub top_p: Option<f64>,
        pub stop: Option<StopSequences>,
        pub tools: Option<Vec<Tool>>,
        /// `none`, `auto`, `required` or `{"type": "function", "function": {"name": ...}}`.
        pub tool_choice: Option<Value>,
        /// E.g. `{"type": "json_object"}` or a JSON schema.
        pub response_format: Option<Value>,
        pub seed: Option<i64>,
        /// An end-user id, passed upstream (not part of the cache key).
        pub user: Option<String>,
    }

    /// `stream_options` of a streaming request.
    #[derive(Serialize, ToSchema)]
    pub struct StreamOptions {
        /// Send a last chunk with `usage` (and `choices: []`).
        pub include_usage: Option<bool>,
    }

    /// One stop sequence or several.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum StopSequences {
        One(String),
        Many(Vec<String>),
    }

    /// Who wrote a message.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Role {
        System,
        Developer,
        User,
        Assistant,
        Tool,
        Function,
    }

    /// One message of the conversation.
    #[derive(Serialize, ToSchema)]
    pub struct ChatMessage {
        pub role: Role,
        pub content: Option<MessageContent>,
        pub name: Option<String>,
        /// Calls the assistant made (assistant messages).
        pub tool_calls: Option<Vec<ToolCall>>,
        /// The call this message answers (tool messages).
        pub tool_call_id: Option<String>,
    }

    /// Plain text, or typed parts (text, images, audio, ...).
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum MessageContent {
        Text(String),
        Parts(Vec<ContentPart>),
    }

    /// One part of a multi-part message; non-text parts carry their own fields
    /// (`image_url`, `input_audio`, ...).
    #[derive(Serialize, ToSchema)]
    pub struct ContentPart {
        /// `text`, `image_url`, `input_audio`, ...
        #[serde(rename = "type")]
        #[schema(example = "text")]
        pub kind: String,
        pub text: Option<String>,
    }

    /// A tool the model may call.
    #[derive(Serialize, ToSchema)]
    pub struct Tool {
        /// `function`.
        #[serde(rename = "type")]
        pub kind: String,
        pub function: Option<FunctionDefinition>,
    }

    /// The function behind a tool.
    #[derive(Serialize, ToSchema)]
    pub struct FunctionDefinition {
        pub name: String,
        pub description: Option<String>,
        /// JSON Schema of the arguments.
        pub parameters: Option<Value>,
    }

    /// A tool call made by the assistant.
    #[derive(Serialize, ToSchema)]
    pub struct ToolCall {
        pub id: String,
        /// `function`.
        #[serde(rename = "type")]
        pub kind: String,
        pub function: FunctionCall,
    }

    /// The function name and JSON-encoded arguments of a tool call.
    #[derive(Serialize, ToSchema)]
    pub struct FunctionCall {
        pub name: String,
        /// JSON text.
        pub arguments: String,
    }

    /// A non-streaming chat completion, as the provider answered (translated to OpenAI's
    /// shape for Anthropic). Other provider fields pass through.
    #[derive(Serialize, ToSchema)]
    pub struct ChatCompletion {
        pub id: String,
        /// `chat.completion`.
        #[schema(example = "chat.completion")]
        pub object: String,
        /// Unix seconds.
        pub created: u64,
        /// The provider's model name.
        pub model: String,
        pub choices: Vec<Choice>,
        pub usage: Option<Usage>,
        pub system_fingerprint: Option<String>,
        pub service_tier: Option<String>,
    }

    /// One choice of a completion.
    #[derive(Serialize, ToSchema)]
    pub struct Choice {
        pub index: u32,
        pub message: AssistantMessage,
        pub logprobs: Option<Value>,
        /// `stop`, `length`, `tool_calls`, `content_filter`, ...
        #[schema(required = true)]
        pub finish_reason: Option<String>,
    }

    /// The assistant's message in a completion.
    #[derive(Serialize, ToSchema)]
    pub struct AssistantMessage {
        pub role: Role,
        #[schema(required = true)]
        pub content: Option<String>,
        pub tool_calls: Option<Vec<ToolCall>>,
        pub refusal: Option<String>,
    }

    /// One event of a streamed completion (`data: {...}`).
    #[derive(Serialize, ToSchema)]
    pub struct ChatCompletionChunk {
        pub id: String,
        /// `chat.completion.chunk`.
        #[schema(example = "chat.completion.chunk")]
        pub object: String,
        pub created: u64,
        pub model: String,
        /// Empty on the usage chunk.
        pub choices: Vec<ChunkChoice>,
        /// Only with `stream_options.include_usage`: `null` on every chunk but the last.
        pub usage: Option<Usage>,
        pub system_fingerprint: Option<String>,
        pub service_tier: Option<String>,
    }

    /// One choice's delta in a chunk.
    #[derive(Serialize, ToSchema)]
    pub struct ChunkChoice {
        pub index: u32,
        pub delta: Delta,
        pub logprobs: Option<Value>,
        #[schema(required = true)]
        pub finish_reason: Option<String>,
    }

    /// What a chunk adds to the message.
    #[derive(Serialize, ToSchema)]
    pub struct Delta {
        pub role: Option<Role>,
        pub content: Option<String>,
        pub tool_calls: Option<Vec<ToolCallDelta>>,
        pub refusal: Option<String>,
    }

    /// A fragment of a tool call in a stream.
    #[derive(Serialize, ToSchema)]
    pub struct ToolCallDelta {
        pub index: u32,
        pub id: Option<String>,
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub function: Option<FunctionCallDelta>,
    }

    /// Name and argument fragments of a streamed tool call.
    #[derive(Serialize, ToSchema)]
    pub struct FunctionCallDelta {
        pub name: Option<String>,
        pub arguments: Option<String>,
    }

    /// Token usage. Cached tokens are counted inside `prompt_tokens`, reasoning tokens inside
    /// `completion_tokens` (OpenAI's convention; Anthropic's usage is translated to it).
    #[derive(Serialize, ToSchema)]
    pub struct Usage {
        pub prompt_tokens: u64,
        pub completion_tokens: u64,
        pub total_tokens: u64,
        pub prompt_tokens_details: Option<PromptTokensDetails>,
        pub completion_tokens_details: Option<CompletionTokensDetails>,
    }

    /// Breakdown of the prompt tokens.
    #[derive(Serialize, ToSchema)]
    pub struct PromptTokensDetails {
        pub cached_tokens: u64,
        /// Anthropic's cache-creation tokens, when there were any.
        pub cache_write_tokens: Option<u64>,
        pub audio_tokens: Option<u64>,
    }

    /// Breakdown of the completion tokens.
    #[derive(Serialize, ToSchema)]
    pub struct CompletionTokensDetails {
        pub reasoning_tokens: u64,
        pub audio_tokens: Option<u64>,
        pub accepted_prediction_tokens: Option<u64>,
        pub rejected_prediction_tokens: Option<u64>,
    }

    // --- embeddings and models ---

    /// An embeddings request. Fields not listed here are passed upstream unchanged.
    #[derive(Serialize, ToSchema)]
    pub struct EmbeddingsRequest {
        #[schema(example = "demo-embed")]
        pub model: String,
        pub input: EmbeddingsInput,
        pub encoding_format: Option<EncodingFormat>,
        pub dimensions: Option<u32>,
        pub user: Option<String>,
    }

    /// A text, several texts, a token array or several token arrays.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum EmbeddingsInput {
        Text(String),
        Texts(Vec<String>),
        Tokens(Vec<u32>),
        TokenLists(Vec<Vec<u32>>),
    }

    /// How vectors are encoded.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum EncodingFormat {
        Float,
        Base64,
    }

    /// The embeddings.
    #[derive(Serialize, ToSchema)]
    pub struct EmbeddingsResponse {
        /// `list`.
        pub object: String,
        pub data: Vec<Embedding>,
        pub model: String,
        pub usage: EmbeddingsUsage,
    }

    /// One vector.
    #[derive(Serialize, ToSchema)]
    pub struct Embedding {
        /// `embedding`.
        pub object: String,
        pub index: u32,
        pub embedding: EmbeddingVector,
    }

    /// Floats, or base64 of little-endian f32 with `encoding_format: base64`.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum EmbeddingVector {
        Floats(Vec<f64>),
        Base64(String),
    }

    /// Tokens of an embeddings request.
    #[derive(Serialize, ToSchema)]
    pub struct EmbeddingsUsage {
        pub prompt_tokens: u64,
        pub total_tokens: u64,
    }

    /// OpenAI's list of models.
    #[derive(Serialize, ToSchema)]
    pub struct ModelList {
        /// `list`.
        pub object: String,
        pub data: Vec<Model>,
    }

    /// One model a key may use.
    #[derive(Serialize, ToSchema)]
    pub struct Model {
        /// The name to send as `model`.
        pub id: String,
        /// `model`.
        pub object: String,
        pub created: u64,
        /// `sentinel`.
        pub owned_by: String,
    }

    // --- errors ---

    /// OpenAI's error shape, for every error.
    #[derive(Serialize, ToSchema)]
    #[schema(example = json!({"error": {"message": "invalid API key", "type": "invalid_request_error", "code": "invalid_api_key", "param": null}}))]
    pub struct ErrorResponse {
        pub error: ErrorObject,
    }

    /// The error itself. Sentinel's own `type`/`code` pairs are listed on each error
    /// response; a provider's 4xx is passed through with its own.
    #[derive(Serialize, ToSchema)]
    pub struct ErrorObject {
        /// For people; never contains secrets.
        pub message: String,
        /// `invalid_request_error`, `permission_error`, `rate_limit_error`,
        /// `insufficient_quota` or `api_error`.
        #[serde(rename = "type")]
        pub kind: String,
        /// The machine-readable reason, e.g. `invalid_api_key`.
        #[schema(required = true)]
        pub code: Option<String>,
        /// The request field at fault, when there is one.
        #[schema(required = true)]
        pub param: Option<String>,
    }

    // --- usage ---

    /// Query of `GET /v1/usage`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct UsageParams {
        /// First day (RFC 3339 or `YYYY-MM-DD`, UTC); default: the first of this month.
        #[param(example = "2026-01-01")]
        pub start: Option<String>,
        /// Last day, inclusive; default: today.
        #[param(example = "2026-01-31")]
        pub end: Option<String>,
        /// Break the totals down by `model`, `day` or `key`.
        pub group_by: Option<UsageGroupBy>,
        /// Admin key only: the tenant to read.
        #[param(example = "acme")]
        pub tenant: Option<String>,
    }

    /// How `/v1/usage` groups its breakdown.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum UsageGroupBy {
        Model,
        Day,
        Key,
    }

    /// Usage and cost of a tenant over a range of UTC days.
    #[derive(Serialize, ToSchema)]
    #[schema(example = json!({
        "tenant": "acme", "start": "2026-01-01T00:00:00Z", "end": "2026-01-31T23:59:59Z",
        "group_by": "model",
        "totals": {"requests": 1200, "prompt_tokens": 480_000, "completion_tokens": 96_000,
                   "cost_usd": 1.87, "cache_hits": 150, "cost_saved_usd": 0.21},
        "breakdown": [{"model": "gpt-4o-mini", "requests": 1200, "prompt_tokens": 480_000,
                       "completion_tokens": 96_000, "cost_usd": 1.87, "cache_hits": 150,
                       "cost_saved_usd": 0.21}]
    }))]
    pub struct UsageReport {
        pub tenant: String,
        /// RFC 3339, start of the first day.
        pub start: String,
        /// RFC 3339, end of the last day.
        pub end: String,
        #[schema(required = true)]
        pub group_by: Option<UsageGroupBy>,
        pub totals: UsageTotals,
        /// One entry per group (empty without `group_by`).
        pub breakdown: Vec<UsageBreakdown>,
    }

    /// Totals of a range (or of a group).
    #[derive(Serialize, ToSchema)]
    pub struct UsageTotals {
        pub requests: u64,
        pub prompt_tokens: u64,
        pub completion_tokens: u64,
        pub cost_usd: f64,
        /// Requests answered from the cache (exact or semantic).
        pub cache_hits: u64,
        /// What the cache hits would have cost.
        pub cost_saved_usd: f64,
    }

    /// Totals of one group, with the group's field.
    #[derive(Serialize, ToSchema)]
    pub struct UsageBreakdown {
        /// With `group_by=model`.
        pub model: Option<String>,
        /// With `group_by=day`: `YYYY-MM-DD`.
        pub day: Option<String>,
        /// With `group_by=key`.
        pub key_id: Option<String>,
        pub requests: u64,
        pub prompt_tokens: u64,
        pub completion_tokens: u64,
        pub cost_usd: f64,
        pub cache_hits: u64,
        pub cost_saved_usd: f64,
    }

    // --- audit ---

    /// Query of `GET /v1/audit`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct AuditParams {
        /// Records at or after (RFC 3339 or `YYYY-MM-DD`).
        pub start: Option<String>,
        /// Records at or before (RFC 3339 or `YYYY-MM-DD`, inclusive).
        pub end: Option<String>,
        /// Client-facing model name.
        pub model: Option<String>,
        /// HTTP status of the answer.
        #[param(example = 200)]
        pub status: Option<u16>,
        /// How the cache answered.
        pub cache: Option<CacheStatus>,
        /// `k=v`: records carrying that `x-sentinel-tags` pair.
        #[param(example = "team=search")]
        pub tag: Option<String>,
        /// Records per page.
        #[param(minimum = 1, maximum = 1000, default = 100)]
        pub limit: Option<u32>,
        /// `next_cursor` of the previous page.
        pub cursor: Option<String>,
        /// Admin key only: the tenant to read.
        pub tenant: Option<String>,
    }

    /// Query of `GET /v1/audit/{request_id}`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct TenantScope {
        /// Admin key only: the tenant the record belongs to.
        pub tenant: Option<String>,
    }

    /// How the cache answered a request.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum CacheStatus {
        Miss,
        Exact,
        Semantic,
        Bypass,
    }

    /// One page of audit records.
    #[derive(Serialize, ToSchema)]
    pub struct AuditPage {
        /// Newest first.
        pub data: Vec<AuditRecord>,
        /// Pass as `cursor` for the next page; `null` on the last.
        #[schema(required = true)]
        pub next_cursor: Option<String>,
    }

    /// One request, as the audit log keeps it. Sealed in a SHA-256 chain per tenant and
    /// writer: `hash = SHA-256(prev_hash + "\n" + canonical JSON of the record without
    /// `hash` and `judge`)`; `sentinel audit verify --tenant ID` checks the chains.
    #[derive(Serialize, ToSchema)]
    #[schema(example = json!({
        "request_id": "0193f1c2-a7b4-7c3e-9d2a-5b1e8f0c4d21", "timestamp": "2026-01-15T09:30:00.123Z",
        "ts_ms": 1_768_469_400_123_u64, "tenant": "acme", "key_id": "key_01j9x7kq3m",
        "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini", "provider": "openai",
        "status": 200, "stream": false, "latency_ms": 812.4, "ttft_ms": null,
        "prompt_tokens": 412, "cached_tokens": 0, "completion_tokens": 96, "reasoning_tokens": 0,
        "tokens_estimated": false, "cost_usd": 0.000_12, "cost_unknown": false,
        "cost_saved_usd": 0.0, "cache": "miss", "overhead_ms": 0.41,
        "judge": {"score": 8.5, "verdict": "Accurate and concise.", "model": "gpt-4o"},
        "shield": [{"rule": "pii.email", "action": "redact"}], "violations": [],
        "tags": {"team": "search"}, "error": null, "chain": "acme:01j9x7", "seq": 42,
        "prev_hash": "5f1c0e...", "hash": "9a7b3d..."
    }))]
    pub struct AuditRecord {
        /// The request's `x-request-id`.
        pub request_id: String,
        /// RFC 3339, UTC, millisecond precision.
        pub timestamp: String,
        /// Unix milliseconds of `timestamp`.
        pub ts_ms: u64,
        pub tenant: String,
        /// Public id of the key used (never the secret).
        pub key_id: String,
        /// `/v1/chat/completions` or `/v1/embeddings`.
        pub endpoint: String,
        /// Client-facing model name.
        pub model: String,
        /// Provider that answered (`none` when refused before routing).
        pub provider: String,
        /// HTTP status of the answer; 499 when the client disconnected.
        pub status: u16,
        pub stream: bool,
        pub latency_ms: f64,
        /// Time to first token of a stream.
        #[schema(required = true)]
        pub ttft_ms: Option<f64>,
        pub prompt_tokens: u64,
        pub cached_tokens: u64,
        pub completion_tokens: u64,
        pub reasoning_tokens: u64,
        /// Counted with tiktoken because the upstream sent no usage.
        pub tokens_estimated: bool,
        pub cost_usd: f64,
        /// The model has no price: costed at 0.
        pub cost_unknown: bool,
        /// What a cache hit would have cost.
        pub cost_saved_usd: f64,
        pub cache: CacheStatus,
        /// Time spent in Sentinel itself (ms).
        pub overhead_ms: f64,
        /// `null` until the judge has scored the answer.
        #[schema(required = true)]
        pub judge: Option<JudgeResult>,
        /// Guardrail findings (rule and action, never the matched text).
        pub shield: Vec<ShieldFinding>,
        /// Policies in `dry_run` that would have refused the request.
        pub violations: Vec<Violation>,
        /// From `x-sentinel-tags`.
        pub tags: BTreeMap<String, String>,
        /// Error code of a failed request, e.g. `upstream_timeout` or `client_disconnected`.
        #[schema(required = true)]
        pub error: Option<String>,
        /// Only with `audit.store_bodies = "full" | "redacted"`.
        pub request_body: Option<String>,
        /// Only with `audit.store_bodies = "full" | "redacted"`.
        pub response_body: Option<String>,
        /// The hash chain (one per tenant and writer).
        pub chain: String,
        /// Position in the chain, from 1.
        pub seq: u64,
        /// `hash` of the previous record of the chain (64 zeros for the first).
        pub prev_hash: String,
        /// SHA-256, hex.
        pub hash: String,
    }

    /// The judge's verdict on an answer.
    #[derive(Serialize, ToSchema)]
    pub struct JudgeResult {
        #[schema(minimum = 0.0, maximum = 10.0)]
        pub score: f64,
        pub verdict: String,
        /// The judge model.
        pub model: String,
        /// Below the tenant's `judge.min_score` (present only when true).
        pub low: Option<bool>,
    }

    /// A guardrail finding.
    #[derive(Serialize, ToSchema)]
    pub struct ShieldFinding {
        /// E.g. `pii.email`, `pii.credit_card`, `injection`, `deny_terms`.
        pub rule: String,
        pub action: ShieldAction,
    }

    /// What a guardrail does when it matches.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum ShieldAction {
        Redact,
        Block,
        Log,
    }

    /// A policy in `dry_run` mode that would have refused the request.
    #[derive(Serialize, ToSchema)]
    pub struct Violation {
        pub policy: ViolationPolicy,
        /// `dry_run`.
        pub mode: String,
    }

    /// Which policy.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum ViolationPolicy {
        Budget,
        Rpm,
        Tpm,
        Model,
    }

    // --- admin ---

    /// A tenant: the same fields as a `[[tenants]]` entry of the config.
    #[derive(Serialize, ToSchema)]
    #[schema(example = json!({
        "id": "acme", "name": "Acme Corp", "models": ["demo"],
        "limits": {"rpm": 600, "tpm": 200_000},
        "budget": {"limit_usd": 100.0, "period": "month", "mode": "enforce"},
        "shield": {"pii": {"action": "redact"}, "deny_terms": ["project-x"]},
        "cache": {"exact": true, "semantic": false, "ttl": "10m"},
        "judge": {"sample_rate": 0.5, "min_score": 6.0}
    }))]
    pub struct Tenant {
        pub id: String,
        #[schema(required = true)]
        pub name: Option<String>,
        /// Allowed models; empty allows every model.
        pub models: Vec<String>,
        pub limits: Limits,
        #[schema(required = true)]
        pub budget: Option<Budget>,
        /// Guardrail overrides on top of the global `[shield]`.
        pub shield: Option<ShieldOverride>,
        /// Cache switches and TTL.
        pub cache: Option<CacheOverride>,
        /// Judge overrides.
        pub judge: Option<JudgeOverride>,
    }

    /// Body of `POST /admin/tenants`.
    #[derive(Serialize, ToSchema)]
    pub struct TenantCreate {
        /// 1-64 characters of `A-Z a-z 0-9 _ -`, not starting with `_`.
        #[schema(pattern = "^[A-Za-z0-9-][A-Za-z0-9_-]{0,63}$")]
        pub id: String,
        pub name: Option<String>,
        /// Allowed models; empty or absent allows every model.
        pub models: Option<Vec<String>>,
        pub limits: Option<Limits>,
        pub budget: Option<Budget>,
        pub shield: Option<ShieldOverride>,
        pub cache: Option<CacheOverride>,
        pub judge: Option<JudgeOverride>,
    }

    /// Body of `PATCH /admin/tenants/{id}`: only the fields present change; `null` removes.
    #[derive(Serialize, ToSchema)]
    pub struct TenantPatch {
        /// Must equal the path's id when present (ids cannot change).
        pub id: Option<String>,
        pub name: Option<String>,
        pub models: Option<Vec<String>>,
        pub limits: Option<Limits>,
        pub budget: Option<Budget>,
        pub shield: Option<ShieldOverride>,
        pub cache: Option<CacheOverride>,
        pub judge: Option<JudgeOverride>,
    }

    /// Requests and tokens per minute.
    #[derive(Serialize, ToSchema)]
    pub struct Limits {
        #[schema(minimum = 1)]
        pub rpm: Option<u32>,
        #[schema(minimum = 1)]
        pub tpm: Option<u32>,
        /// Default `enforce`.
        pub mode: Option<PolicyMode>,
    }

    /// A spending limit per period.
    #[derive(Serialize, ToSchema)]
    pub struct Budget {
        #[schema(minimum = 0.0)]
        pub limit_usd: f64,
        pub period: BudgetPeriod,
        /// Default `enforce`.
        pub mode: Option<PolicyMode>,
    }

    /// Budget period (UTC).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum BudgetPeriod {
        Day,
        Month,
    }

    /// `enforce` refuses; `dry_run` only records a violation.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum PolicyMode {
        Enforce,
        DryRun,
    }

    /// Per-tenant guardrails (same shape as the config's `[shield]`).
    #[derive(Serialize, ToSchema)]
    pub struct ShieldOverride {
        /// Emails, phone numbers, credit cards (Luhn), IBANs, US SSNs, IP addresses, secrets.
        pub pii: Option<ShieldRule>,
        /// Prompt-injection heuristics (`block` or `log`; `threshold` on the score).
        pub injection: Option<ShieldRule>,
        /// Terms whose match blocks the request.
        pub deny_terms: Option<Vec<String>>,
        /// Also check non-streaming answers.
        pub responses: Option<bool>,
    }

    /// One guardrail rule.
    #[derive(Serialize, ToSchema)]
    pub struct ShieldRule {
        pub action: ShieldAction,
        pub threshold: Option<f64>,
    }

    /// Per-tenant cache settings.
    #[derive(Serialize, ToSchema)]
    pub struct CacheOverride {
        /// Exact-match cache on or off for this tenant.
        pub exact: Option<bool>,
        /// Semantic cache on or off for this tenant.
        pub semantic: Option<bool>,
        /// Overrides both TTLs, e.g. `10m`.
        #[schema(example = "10m")]
        pub ttl: Option<String>,
    }

    /// Per-tenant judge settings.
    #[derive(Serialize, ToSchema)]
    pub struct JudgeOverride {
        /// Share of answers judged.
        #[schema(minimum = 0.0, maximum = 1.0)]
        pub sample_rate: Option<f64>,
        /// Scores below are flagged `low` and counted.
        #[schema(minimum = 0.0, maximum = 10.0)]
        pub min_score: Option<f64>,
    }

    /// Every tenant.
    #[derive(Serialize, ToSchema)]
    pub struct TenantList {
        /// `list`.
        pub object: String,
        pub data: Vec<Tenant>,
    }

    /// Answer of `DELETE /admin/tenants/{id}`.
    #[derive(Serialize, ToSchema)]
    pub struct TenantDeleted {
        pub id: String,
        pub deleted: bool,
    }

    /// Body of `POST /admin/tenants/{id}/keys`.
    #[derive(Serialize, ToSchema)]
    pub struct KeyCreate {
        /// Default `default`.
        #[schema(example = "ci")]
        pub name: Option<String>,
        /// A duration such as `30d` or `12h`; absent: never expires.
        #[schema(example = "30d")]
        pub expires_in: Option<String>,
        /// The key's own limits, checked on top of the tenant's.
        pub limits: Option<Limits>,
    }

    /// A key as listed: never the secret.
    #[derive(Serialize, ToSchema)]
    pub struct ApiKey {
        /// Public id, shown in listings and audit records.
        #[schema(example = "key_01j9x7kq3m")]
        pub id: String,
        /// The first characters of the secret, to recognise it.
        #[schema(example = "sk-sntl-AbCd")]
        pub prefix: String,
        pub name: String,
        pub tenant: String,
        /// RFC 3339.
        pub created_at: String,
        #[schema(required = true)]
        pub expires_at: Option<String>,
        #[schema(required = true)]
        pub revoked_at: Option<String>,
        /// The key's own limits; absent when it has none.
        pub limits: Option<Limits>,
    }

    /// A new key: the only answer that carries the secret.
    #[derive(Serialize, ToSchema)]
    #[schema(example = json!({
        "id": "key_01j9x7kq3m", "key": "sk-sntl-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg",
        "prefix": "sk-sntl-AbCd", "name": "ci", "tenant": "acme",
        "created_at": "2026-01-15T09:30:00Z", "expires_at": "2026-02-14T09:30:00Z",
        "revoked_at": null
    }))]
    pub struct ApiKeyCreated {
        pub id: String,
        /// The secret: `sk-sntl-` + 43 URL-safe characters. Shown once.
        pub key: String,
        pub prefix: String,
        pub name: String,
        pub tenant: String,
        pub created_at: String,
        #[schema(required = true)]
        pub expires_at: Option<String>,
        #[schema(required = true)]
        pub revoked_at: Option<String>,
        /// The key's own limits; absent when it has none.
        pub limits: Option<Limits>,
    }

    /// A tenant's keys.
    #[derive(Serialize, ToSchema)]
    pub struct KeyList {
        /// `list`.
        pub object: String,
        pub data: Vec<ApiKey>,
    }

    // --- operations ---

    /// Overall status with per-check detail.
    #[derive(Serialize, ToSchema)]
    pub struct Health {
        pub status: HealthStatus,
        pub version: String,
        pub uptime_s: u64,
        pub checks: HealthChecks,
    }

    /// `ok`, `degraded` or `down`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum HealthStatus {
        Ok,
        Degraded,
        Down,
    }

    /// The store, each provider's circuit and the semantic cache.
    #[derive(Serialize, ToSchema)]
    pub struct HealthChecks {
        /// `ok` or `down` (also `down` while limits run per replica).
        pub store: String,
        /// Circuit state per configured provider.
        pub upstreams: BTreeMap<String, CircuitState>,
        /// `ok`, `off` (not configured) or `disabled` (configured, but its embedding model is
        /// missing).
        pub semantic_cache: SemanticCacheStatus,
    }

    /// State of the semantic cache.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum SemanticCacheStatus {
        Ok,
        Off,
        Disabled,
    }

    /// A provider's circuit breaker.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum CircuitState {
        Closed,
        HalfOpen,
        Open,
    }
}

#[cfg(test)]
mod tests {
    //! Each mirror in [`schemas`] against the real type: a fully populated value of the real
    //! type serialises to exactly the documented properties, and every documented request
    //! field is one the real type accepts.

    use std::collections::BTreeSet;

    use serde_json::{json, Value};

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(&*DOCUMENT).unwrap()
    }

    fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {value}"))
            .keys()
            .cloned()
            .collect()
    }

    fn assert_same(doc: &Value, schema: &str, value: &Value) {
        assert_eq!(keys(value), properties(doc, schema), "{schema} vs {value}");
    }

    fn assert_documented(doc: &Value, schema: &str, value: &Value) {
        let undocumented: Vec<String> = keys(value)
            .difference(&properties(doc, schema))
            .cloned()
            .collect();
        assert!(undocumented.is_empty(), "{schema} lacks {undocumented:?}");
    }

    /// A value for every property of `schema`, from its examples or its type.
    fn sample(doc: &Value, schema: &str, overrides: &Value) -> Value {
        let mut out = serde_json::Map::new();
        for name in properties(doc, schema) {
            let value = overrides
                .get(&name)
                .cloned()
                .unwrap_or_else(|| panic!("give {schema}.{name} a sample value"));
            out.insert(name, value);
        }
        Value::Object(out)
    }

    #[test]
    fn audit_record_mirror_matches_the_sealed_record() {
        let doc = doc();
        let record: crate::audit::record::AuditRecord = serde_json::from_value(json!({
            "request_id": "r1", "timestamp": "2026-01-15T09:30:00.123Z", "ts_ms": 1,
            "tenant": "acme", "key_id": "key_1", "endpoint": "/v1/chat/completions",
            "model": "demo", "provider": "mock", "status": 200, "stream": true,
            "latency_ms": 1.5, "ttft_ms": 0.5, "prompt_tokens": 3, "cached_tokens": 1,
            "completion_tokens": 2, "reasoning_tokens": 0, "tokens_estimated": false,
            "cost_usd": 0.1, "cost_unknown": false, "cost_saved_usd": 0.0, "cache": "miss",
            "overhead_ms": 0.2,
            "judge": {"score": 3.0, "verdict": "weak", "model": "judge", "low": true},
            "shield": [{"rule": "pii.email", "action": "redact"}],
            "violations": [{"policy": "rpm", "mode": "dry_run"}],
            "tags": {"team": "search"}, "error": null,
            "request_body": "{}", "response_body": "{}",
            "chain": "c", "seq": 1, "prev_hash": "0", "hash": "1"
        }))
        .unwrap();
        let value = serde_json::to_value(&record).unwrap();
        assert_same(&doc, "AuditRecord", &value);
        assert_same(&doc, "JudgeResult", &value["judge"]);
        assert_same(&doc, "ShieldFinding", &value["shield"][0]);
        assert_same(&doc, "Violation", &value["violations"][0]);
    }

    #[test]
    fn tenant_mirrors_match_the_stored_tenant_and_the_admin_input() {
        let doc = doc();
        let full = json!({
            "id": "acme", "name": "Acme", "models": ["demo"],
            "limits": {"rpm": 1, "tpm": 2, "mode": "dry_run"},
            "budget": {"limit_usd": 1.0, "period": "day", "mode": "dry_run"},
            "shield": {"pii": {"action": "redact", "threshold": 0.5},
                       "injection": {"action": "block"}, "deny_terms": ["x"], "responses": true},
            "cache": {"exact": true, "semantic": false, "ttl": "10m"},
            "judge": {"sample_rate": 0.5, "min_score": 5.0}
        });
        let tenant: crate::store::Tenant = serde_json::from_value(full.clone()).unwrap();
        let value = serde_json::to_value(&tenant).unwrap();
        assert_same(&doc, "Tenant", &value);
        assert_same(&doc, "Limits", &value["limits"]);
        assert_same(&doc, "Budget", &value["budget"]);
        assert_same(&doc, "ShieldOverride", &value["shield"]);
        assert_same(&doc, "ShieldRule", &value["shield"]["pii"]);
        assert_same(&doc, "CacheOverride", &value["cache"]);
        assert_same(&doc, "JudgeOverride", &value["judge"]);
        // Every documented input field is accepted (the input refuses unknown fields).
        for schema in ["TenantCreate", "TenantPatch"] {
            let body = sample(&doc, schema, &full);
            serde_json::from_value::<crate::api::admin::TenantInput>(body)
                .unwrap_or_else(|e| panic!("{schema}: {e}"));
        }
        let key = sample(
            &doc,
            "KeyCreate",
            &json!({"name": "ci", "expires_in": "30d", "limits": {"rpm": 60}}),
        );
        serde_json::from_value::<crate::api::admin::KeyInput>(key).unwrap();
    }

    #[test]
    fn key_mirrors_match_the_key_view() {
        let doc = doc();
        let mut view = crate::api::admin::KeyView {
            id: "key_1".into(),
            key: Some("sk-sntl-x".into()),
            prefix: "sk-sntl-x".into(),
            name: "ci".into(),
            tenant: "acme".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
            revoked_at: None,
            limits: Some(crate::store::Limits {
                rpm: std::num::NonZeroU32::new(60),
                tpm: std::num::NonZeroU32::new(6000),
                mode: crate::config::raw::PolicyMode::DryRun,
            }),
        };
        assert_same(&doc, "ApiKeyCreated", &serde_json::to_value(&view).unwrap());
        view.key = None;
        assert_same(&doc, "ApiKey", &serde_json::to_value(&view).unwrap());
    }

    #[test]
    fn usage_mirrors_match_the_report_and_the_query() {
        let doc = doc();
        let report = crate::api::usage::UsageReport {
            tenant: "acme".into(),
            start: "s".into(),
            end: "e".into(),
            group_by: Some("model"),
            totals: crate::api::usage::Totals::default(),
            breakdown: Vec::new(),
        };
        let value = serde_json::to_value(&report).unwrap();
        assert_same(&doc, "UsageReport", &value);
        assert_same(&doc, "UsageTotals", &value["totals"]);
        let mut breakdown = properties(&doc, "UsageTotals");
        breakdown.extend(["model", "day", "key_id"].map(str::to_owned));
        assert_eq!(properties(&doc, "UsageBreakdown"), breakdown);
        // The documented query parameters are exactly the ones the handlers accept.
        let params = |path: &str| -> serde_json::Map<String, Value> {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| {
                    let name = p["name"].as_str().unwrap().to_owned();
                    let value = match name.as_str() {
                        "group_by" => json!("model"),
                        "cache" => json!("miss"),
                        "status" | "limit" => json!(1),
                        _ => json!("x"),
                    };
                    (name, value)
                })
                .collect()
        };
        serde_json::from_value::<crate::api::usage::UsageQuery>(Value::Object(params("/v1/usage")))
            .unwrap();
        serde_json::from_value::<crate::api::audit::AuditParams>(Value::Object(params(
            "/v1/audit",
        )))
        .unwrap();
        serde_json::from_value::<crate::api::audit::OneParams>(Value::Object(params(
            "/v1/audit/{request_id}",
        )))
        .unwrap();
    }

    #[test]
    fn openai_mirrors_cover_every_typed_field() {
        let doc = doc();
        let request: crate::openai::chat::ChatRequest = serde_json::from_value(json!({
            "model": "demo",
            "messages": [{"role": "assistant", "content": "hi", "name": "n", "tool_call_id": "t",
                          "tool_calls": [{"id": "c", "type": "function",
                                          "function": {"name": "f", "arguments": "{}"}}]}],
            "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 1,
            "max_completion_tokens": 1, "temperature": 0.5, "top_p": 0.5, "stop": "x",
            "tools": [{"type": "function",
                       "function": {"name": "f", "description": "d", "parameters": {}}}],
            "tool_choice": "auto", "response_format": {"type": "text"}, "seed": 1, "user": "u"
        }))
        .unwrap();
        let value = serde_json::to_value(&request).unwrap();
        assert_same(&doc, "ChatCompletionRequest", &value);
        assert_same(&doc, "ChatMessage", &value["messages"][0]);
        assert_same(&doc, "ToolCall", &value["messages"][0]["tool_calls"][0]);
        assert_same(
            &doc,
            "FunctionCall",
            &value["messages"][0]["tool_calls"][0]["function"],
        );
        assert_same(&doc, "Tool", &value["tools"][0]);
        assert_same(&doc, "FunctionDefinition", &value["tools"][0]["function"]);
        assert_same(&doc, "StreamOptions", &value["stream_options"]);

        let usage = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                           "prompt_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 1},
                           "completion_tokens_details": {"reasoning_tokens": 1}});
        let completion: crate::openai::chat::ChatCompletion = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi", "tool_calls": []}}],
            "usage": usage
        }))
        .unwrap();
        let value = serde_json::to_value(&completion).unwrap();
        assert_documented(&doc, "ChatCompletion", &value);
        assert_documented(&doc, "Choice", &value["choices"][0]);
        assert_documented(&doc, "AssistantMessage", &value["choices"][0]["message"]);
        assert_same(&doc, "Usage", &value["usage"]);
        assert_documented(
            &doc,
            "PromptTokensDetails",
            &value["usage"]["prompt_tokens_details"],
        );
        assert_documented(
            &doc,
            "CompletionTokensDetails",
            &value["usage"]["completion_tokens_details"],
        );

        let chunk: crate::openai::chat::ChatCompletionChunk = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": null,
                         "delta": {"role": "assistant", "content": "h",
                                   "tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                   "function": {"name": "f", "arguments": ""}}]}}],
            "usage": usage
        }))
        .unwrap();
        let value = serde_json::to_value(&chunk).unwrap();
        assert_documented(&doc, "ChatCompletionChunk", &value);
        assert_documented(&doc, "ChunkChoice", &value["choices"][0]);
        assert_documented(&doc, "Delta", &value["choices"][0]["delta"]);
        assert_same(
            &doc,
            "ToolCallDelta",
            &value["choices"][0]["delta"]["tool_calls"][0],
        );
        assert_same(
            &doc,
            "FunctionCallDelta",
            &value["choices"][0]["delta"]["tool_calls"][0]["function"],
        );

        let embeddings: crate::openai::embeddings::EmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": "x"})).unwrap();
        assert_documented(
            &doc,
            "EmbeddingsRequest",
            &serde_json::to_value(&embeddings).unwrap(),
        );
        let models = serde_json::to_value(crate::openai::models::ModelList::new(["demo"])).unwrap();
        assert_same(&doc, "ModelList", &models);
        assert_same(&doc, "Model", &models["data"][0]);
    }

    #[test]
    fn every_error_code_is_documented_under_its_status() {
        let doc = doc();
        for code in ERROR_CODES {
            assert!(listed(code));
            let (status, kind, name) = code.parts();
            let response = &doc["components"]["responses"][error_response_name(status.as_u16())];
            let text = response["description"].as_str().unwrap();
            assert!(text.contains(&format!("`{kind}` / `{name}`")), "{text}");
            assert_eq!(
                response["content"]["application/json"]["examples"][name]["value"]["error"]["code"],
                name
            );
        }
        let rendered = crate::error::GatewayError::new(ErrorCode::Conflict, "x").into_response();
        assert_eq!(rendered.status(), 409);
    }

    #[test]
    fn swagger_ui_loads_only_public_same_origin_files() {
        let config = std::sync::Arc::new(Config::new([OPENAPI_PATH]).validator_url("none"));
        let file = |name: &str| {
            let file = utoipa_swagger_ui::serve(name, std::sync::Arc::clone(&config))
                .unwrap()
                .unwrap();
            String::from_utf8(file.bytes.to_vec()).unwrap()
        };
        let index = file("index.html");
        let referenced: Vec<&str> = index
            .split('"')
            .filter(|s| [".js", ".css", ".png"].iter().any(|ext| s.ends_with(ext)))
            .collect();
        assert_eq!(referenced.len(), 7, "{index}");
        for reference in referenced {
            assert!(!reference.contains("//"), "not same-origin: {reference}");
            let path = format!("{DOCS_PATH}/{}", reference.trim_start_matches("./"));
            assert!(
                crate::server::routes::UNAUTHENTICATED.contains(&path.as_str()),
                "{path} must be public"
            );
        }
        let init = file("swagger-initializer.js");
        assert!(init.contains(r#""url": "/openapi.json""#), "{init}");
        assert!(init.contains(r#""validatorUrl": "none""#), "{init}");
    }

    #[test]
    fn every_ref_resolves_and_public_routes_need_no_key() {
        fn walk(node: &Value, doc: &Value, seen: &mut usize) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
                        assert!(target.is_some(), "dangling {r}");
                        *seen += 1;
                    }
                    map.values().for_each(|v| walk(v, doc, seen));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, doc, seen)),
                _ => {}
            }
        }
        let doc = doc();
        let mut seen = 0;
        walk(&doc, &doc, &mut seen);
        assert!(seen > 50, "{seen} refs");
        for path in crate::server::routes::UNAUTHENTICATED {
            if let Some(item) = doc["paths"].get(*path) {
                assert_eq!(item["get"]["security"], json!([]), "{path}");
            }
        }
        assert_eq!(
            doc["paths"]["/admin/tenants"]["post"]["security"],
            json!([{"admin_bearer": []}])
        );
        for name in PASS_THROUGH {
            assert_eq!(
                doc["components"]["schemas"][*name]["additionalProperties"], true,
                "{name}"
            );
        }
    }
}
