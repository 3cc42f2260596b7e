//! The API reference and the dashboard: `/openapi.json` is a valid `OpenAPI` 3 document that
//! lists every endpoint and agrees with what the gateway really answers (every live answer
//! below is checked against the schema the document gives for it); `/docs` is Swagger UI
//! served from this origin only; `/` is the dashboard, public, and the calls it makes work
//! with the admin key.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::audit_log::wait_record;
use crate::support::gateway::{
    anonymous, basic_config, client, client_with_key, Gateway, ADMIN_KEY, TEST_KEY,
};
use crate::support::sse_data;
use crate::support::upstream::Upstream;

/// Every client, admin and operations endpoint, with its methods (SPEC sections 2-4).
const ENDPOINTS: &[(&str, &[&str])] = &[
    ("/v1/chat/completions", &["post"]),
    ("/v1/embeddings", &["post"]),
    ("/v1/models", &["get"]),
    ("/v1/usage", &["get"]),
    ("/v1/audit", &["get"]),
    ("/v1/audit/{request_id}", &["get"]),
    ("/admin/tenants", &["post", "get"]),
    ("/admin/tenants/{id}", &["get", "patch", "delete"]),
    ("/admin/tenants/{id}/keys", &["post", "get"]),
    ("/admin/keys/{key_id}", &["delete"]),
    ("/health", &["get"]),
    ("/health/live", &["get"]),
    ("/health/ready", &["get"]),
    ("/metrics", &["get"]),
    ("/metrics/prometheus", &["get"]),
    ("/openapi.json", &["get"]),
];

/// Every field of an audit record, as SPEC section 2 lists them.
const AUDIT_FIELDS: &[&str] = &[
    "request_id",
    "timestamp",
    "tenant",
    "key_id",
    "endpoint",
    "model",
    "provider",
    "status",
    "stream",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "cost_usd",
    "cost_unknown",
    "cost_saved_usd",
    "cache",
    "overhead_ms",
    "judge",
    "shield",
    "violations",
    "tags",
    "error",
    "prev_hash",
    "hash",
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn fetch_doc(gw: &Gateway) -> Value {
    let resp = anonymous()
        .get(gw.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// `#/a/b` inside `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    reference
        .strip_prefix('#')
        .and_then(|pointer| doc.pointer(pointer))
        .unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

fn walk_refs(node: &Value, doc: &Value, count: &mut usize) {
    match node {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref") {
                resolve(doc, r.as_str().expect("$ref is a string"));
                *count += 1;
            }
            map.values().for_each(|v| walk_refs(v, doc, count));
        }
        Value::Array(items) => items.iter().for_each(|v| walk_refs(v, doc, count)),
        _ => {}
    }
}

/// What `value` does wrong against `schema`: a small JSON Schema subset (`$ref`, `oneOf`,
/// `anyOf`, `allOf`, `type` with `null`, `enum`, `required`, `properties`,
/// `additionalProperties`, `items`). An object key the schema does not list is a violation
/// unless the schema allows more: that is what catches a field the code sends but the
/// document does not describe.
fn violations(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return violations(doc, resolve(doc, r), value, at, out);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<String>> = branches
                .iter()
                .map(|b| {
                    let mut v = Vec::new();
                    violations(doc, b, value, at, &mut v);
                    v
                })
                .collect();
            if !results.iter().any(Vec::is_empty) {
                out.push(format!("{at}: matches no branch of {key}: {results:?}"));
            }
            return;
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            violations(doc, part, value, at, out);
        }
        return;
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        });
        if !fits {
            out.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            out.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::Object(map) => {
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(name) {
                    out.push(format!("{at}: required `{name}` is missing"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, item) in map {
                let here = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) => violations(doc, s, item, &here, out),
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(s)) if s.is_object() => violations(doc, s, item, &here, out),
                    (None, _) if properties.is_some() => {
                        out.push(format!("{here}: not in the document"));
                    }
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    violations(doc, item_schema, item, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The documented schema of `method path` answering `status` with `content_type`.
fn response_schema<'a>(
    doc: &'a Value,
    path: &str,
    method: &str,
    status: u16,
    content_type: &str,
) -> &'a Value {
    let mut response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {path} does not document {status}"
    );
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = resolve(doc, r);
    }
    let schema = &response["content"][content_type]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} {status}: no {content_type} schema"
    );
    schema
}

/// Asserts that `body` is what the document says `method path` answers with `status`.
fn assert_documented(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(doc, path, method, status, "application/json");
    let mut out = Vec::new();
    violations(doc, schema, body, "$", &mut out);
    assert!(
        out.is_empty(),
        "{method} {path} {status} disagrees with the document:\n{}\nbody: {body}",
        out.join("\n")
    );
}

/// Asserts that every `x-sentinel-*`, `x-ratelimit-*` and `x-request-id` header of `resp` is
/// documented on that answer.
fn assert_headers_documented(
    doc: &Value,
    path: &str,
    method: &str,
    resp: &reqwest::Response,
) -> usize {
    let mut response = &doc["paths"][path][method]["responses"][resp.status().as_str()];
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = resolve(doc, r);
    }
    let documented = &response["headers"];
    let mut seen = 0;
    for name in resp
        .headers()
        .keys()
        .map(reqwest::header::HeaderName::as_str)
    {
        if name.starts_with("x-sentinel-")
            || name.starts_with("x-ratelimit-")
            || name == "x-request-id"
        {
            assert!(
                documented.get(name).is_some(),
                "{method} {path}: header {name} is not documented"
            );
            seen += 1;
        }
    }
    seen
}

fn property_names(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .keys()
        .cloned()
        .collect()
}

fn parameter_names(op: &Value, place: &str) -> BTreeSet<String> {
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == place)
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The real validator (Python's `openapi-spec-validator`), when the test virtualenv has it
/// (`scripts/test` installs it). Under CI it must be there.
fn run_openapi_spec_validator(doc: &Value) {
    let venv = std::env::var("SENTINEL_TEST_VENV").unwrap_or_else(|_| ".venv".to_owned());
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(venv);
    let validator = venv.join("bin/openapi-spec-validator");
    if !validator.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: scripts/test installs it",
            validator.display()
        );
        eprintln!(
            "skipped: {} not installed (scripts/test installs it)",
            validator.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openapi-spec-validator:\n{text}");
    assert!(text.contains("OK"), "{text}");
}

/// Every endpoint of SPEC sections 2-4 with exactly its methods, each a complete operation,
/// and every `$ref` resolving.
fn assert_every_endpoint(doc: &Value) {
    // Every endpoint with its methods, each a complete operation.
    let mut operation_ids = BTreeSet::new();
    for (path, methods) in ENDPOINTS {
        let item = &doc["paths"][*path];
        assert!(item.is_object(), "{path} is missing");
        for method in *methods {
            let op = &item[*method];
            assert!(op.is_object(), "{method} {path} is missing");
            assert!(operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()));
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{path}"
            );
            assert!(!op["tags"].as_array().unwrap().is_empty());
            for (status, response) in op["responses"].as_object().unwrap() {
                let response = match response.get("$ref") {
                    Some(r) => resolve(doc, r.as_str().unwrap()),
                    None => response,
                };
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}"
                );
            }
            assert!(
                parameter_names(op, "header").contains("x-request-id"),
                "{method} {path}"
            );
        }
        // Only the documented methods.
        for method in METHODS {
            assert_eq!(
                item.get(method).is_some(),
                methods.contains(&method),
                "{method} {path}"
            );
        }
    }

    // Every $ref resolves within the document.
    let mut refs = 0;
    walk_refs(doc, doc, &mut refs);
    assert!(refs > 50, "{refs} refs");
}

/// Security schemes: tenant bearer, `x-api-key`, admin bearer; public routes need none.
fn assert_security(doc: &Value) {
    // Security: tenant bearer, x-api-key, admin bearer; public routes need none.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["tenant_bearer"]["scheme"], "bearer");
    assert_eq!(schemes["tenant_api_key"]["type"], "apiKey");
    assert_eq!(schemes["tenant_api_key"]["in"], "header");
    assert_eq!(schemes["tenant_api_key"]["name"], "x-api-key");
    assert_eq!(schemes["admin_bearer"]["scheme"], "bearer");
    for (path, methods) in ENDPOINTS {
        for method in *methods {
            let security = doc["paths"][*path][*method]["security"].as_array().unwrap();
            for requirement in security {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.get(name).is_some(), "{path}: unknown scheme {name}");
                }
            }
            let public = path.starts_with("/health")
                || path.starts_with("/metrics")
                || *path == "/openapi.json";
            assert_eq!(security.is_empty(), public, "{method} {path}");
        }
    }
    assert_eq!(
        doc["paths"]["/admin/keys/{key_id}"]["delete"]["security"],
        json!([{"admin_bearer": []}])
    );
}

/// Chat answers JSON and SSE with the documented headers; usage and audit take their query
/// parameters.
fn assert_chat_and_queries(doc: &Value) {
    // Chat: JSON and SSE answers, the chunk schema, request headers, response headers.
    let chat = &doc["paths"]["/v1/chat/completions"]["post"];
    let ok = &chat["responses"]["200"];
    assert!(ok["content"]["application/json"]["schema"].is_object());
    assert!(ok["content"]["text/event-stream"].is_object());
    assert!(doc["components"]["schemas"]["ChatCompletionChunk"].is_object());
    assert_eq!(
        parameter_names(chat, "header"),
        BTreeSet::from(["x-request-id", "x-sentinel-cache", "x-sentinel-tags"].map(str::to_owned))
    );
    for header in [
        "x-request-id",
        "x-sentinel-cache",
        "x-sentinel-cost-usd",
        "x-sentinel-provider",
        "x-sentinel-overhead-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
    ] {
        assert!(ok["headers"][header].is_object(), "chat 200 lacks {header}");
    }
    for status in [
        "400", "401", "403", "404", "413", "429", "502", "503", "504",
    ] {
        assert!(chat["responses"][status].is_object(), "chat lacks {status}");
    }
    let too_many = resolve(doc, chat["responses"]["429"]["$ref"].as_str().unwrap());
    assert!(too_many["headers"]["retry-after"].is_object());

    // Query parameters of usage and audit.
    assert_eq!(
        parameter_names(&doc["paths"]["/v1/usage"]["get"], "query"),
        BTreeSet::from(["start", "end", "group_by", "tenant"].map(str::to_owned))
    );
    let audit_params = parameter_names(&doc["paths"]["/v1/audit"]["get"], "query");
    for name in [
        "start", "end", "model", "status", "cache", "tag", "limit", "cursor", "tenant",
    ] {
        assert!(audit_params.contains(name), "/v1/audit lacks ?{name}");
    }
}

/// The audit record has every SPEC field, tenants their overrides, errors OpenAI's shape.
fn assert_shapes(doc: &Value) {
    // Shapes: the audit record has every SPEC field, tenants their overrides, errors OpenAI's.
    let audit = property_names(doc, "AuditRecord");
    for field in AUDIT_FIELDS {
        assert!(audit.contains(*field), "AuditRecord lacks {field}");
    }
    let tenant = property_names(doc, "Tenant");
    for field in [
        "id", "name", "models", "limits", "budget", "shield", "cache", "judge",
    ] {
        assert!(tenant.contains(field), "Tenant lacks {field}");
    }
    assert_eq!(
        property_names(doc, "ErrorObject"),
        BTreeSet::from(["message", "type", "code", "param"].map(str::to_owned))
    );
    assert!(property_names(doc, "ApiKeyCreated").contains("key"));
    assert!(!property_names(doc, "ApiKey").contains("key"));

    // Examples are there for people to copy.
    let text = doc.to_string();
    assert!(text.matches("\"example").count() >= 20, "too few examples");
}

#[tokio::test]
async fn openapi_json_is_a_valid_openapi_3_document_of_every_endpoint() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let doc = fetch_doc(&gw).await;

    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Sentinel");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    assert_every_endpoint(&doc);
    assert_security(&doc);
    assert_chat_and_queries(&doc);
    assert_shapes(&doc);
    run_openapi_spec_validator(&doc);
}

/// Chat completions, JSON and SSE: bodies, chunks and headers as documented.
async fn check_chat(doc: &Value, gw: &Gateway) {
    let c = client();
    // Chat, JSON.
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "docs-chat-1")
        .header("x-sentinel-tags", "team=docs")
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "Hello docs"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(assert_headers_documented(doc, "/v1/chat/completions", "post", &resp) >= 4);
    let body: Value = resp.json().await.unwrap();
    assert_documented(doc, "/v1/chat/completions", "post", 200, &body);

    // Chat, SSE: every event is a documented chunk.
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "demo", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Stream docs"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(response_schema(
        doc,
        "/v1/chat/completions",
        "post",
        200,
        "text/event-stream"
    )
    .is_object());
    let events = sse_data(&resp.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunk_schema = json!({"$ref": "#/components/schemas/ChatCompletionChunk"});
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let mut out = Vec::new();
        violations(doc, &chunk_schema, &chunk, "$", &mut out);
        assert!(out.is_empty(), "{}\n{chunk}", out.join("\n"));
    }
}

/// Embeddings, the model list, and errors in OpenAI's shape under their documented status.
async fn check_embeddings_models_and_errors(doc: &Value, gw: &Gateway) {
    let c = client();
    // Embeddings and models.
    let resp = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "embed", "input": ["one", "two"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_headers_documented(doc, "/v1/embeddings", "post", &resp);
    assert_documented(
        doc,
        "/v1/embeddings",
        "post",
        200,
        &resp.json().await.unwrap(),
    );
    let models: Value = c
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/v1/models", "get", 200, &models);

    // Errors: OpenAI's shape under the documented status.
    let resp = client_with_key("sk-sntl-not-a-real-key-000000000000000000000000")
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_documented(doc, "/v1/models", "get", 401, &resp.json().await.unwrap());
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_headers_documented(doc, "/v1/chat/completions", "post", &resp);
    assert_documented(
        doc,
        "/v1/chat/completions",
        "post",
        404,
        &resp.json().await.unwrap(),
    );
}

/// Audit records and usage reports, with the tenant key and the admin key.
async fn check_accounting(doc: &Value, gw: &Gateway) {
    let c = client();
    let admin = client_with_key(ADMIN_KEY);
    // Audit: one record, then the page it is on.
    let record = wait_record(&c, gw, "docs-chat-1").await;
    assert_documented(doc, "/v1/audit/{request_id}", "get", 200, &record);
    assert_eq!(record["tags"]["team"], "docs");
    let page: Value = c
        .get(gw.url("/v1/audit?limit=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!page["data"].as_array().unwrap().is_empty());
    assert_documented(doc, "/v1/audit", "get", 200, &page);

    // Usage, each grouping, with the tenant key and with the admin key.
    for query in ["", "?group_by=model", "?group_by=day", "?group_by=key"] {
        let report: Value = c
            .get(gw.url(&format!("/v1/usage{query}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_documented(doc, "/v1/usage", "get", 200, &report);
    }
    let resp = admin
        .get(gw.url("/v1/usage?tenant=test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_documented(doc, "/v1/usage", "get", 200, &resp.json().await.unwrap());
}

/// Admin: a tenant created with every override, listed, read and changed.
async fn check_admin_tenants(doc: &Value, gw: &Gateway) {
    let admin = client_with_key(ADMIN_KEY);
    // Admin: the whole life of a tenant and a key.
    let resp = admin
        .post(gw.url("/admin/tenants"))
        .json(&json!({"id": "docs", "name": "Docs", "models": ["demo"],
                      "limits": {"rpm": 100, "tpm": 10000, "mode": "dry_run"},
                      "budget": {"limit_usd": 5.0, "period": "month"},
                      "shield": {"pii": {"action": "redact"}, "deny_terms": ["secret-project"]},
                      "cache": {"exact": true, "semantic": false, "ttl": "10m"},
                      "judge": {"sample_rate": 0.5, "min_score": 4.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_documented(
        doc,
        "/admin/tenants",
        "post",
        201,
        &resp.json().await.unwrap(),
    );
    let resp = admin
        .post(gw.url("/admin/tenants"))
        .json(&json!({"id": "docs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_documented(
        doc,
        "/admin/tenants",
        "post",
        409,
        &resp.json().await.unwrap(),
    );
    let list: Value = admin
        .get(gw.url("/admin/tenants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/admin/tenants", "get", 200, &list);
    let one: Value = admin
        .get(gw.url("/admin/tenants/docs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/admin/tenants/{id}", "get", 200, &one);
    let patched: Value = admin
        .patch(gw.url("/admin/tenants/docs"))
        .json(&json!({"budget": null, "models": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/admin/tenants/{id}", "patch", 200, &patched);
    assert!(patched["budget"].is_null());
}

/// Admin: a key created, listed and revoked, then the tenant deleted.
async fn check_admin_keys(doc: &Value, gw: &Gateway) {
    let c = client();
    let admin = client_with_key(ADMIN_KEY);
    let resp = admin
        .post(gw.url("/admin/tenants/docs/keys"))
        .json(&json!({"name": "ci", "expires_in": "30d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let key: Value = resp.json().await.unwrap();
    assert_documented(doc, "/admin/tenants/{id}/keys", "post", 201, &key);
    let keys: Value = admin
        .get(gw.url("/admin/tenants/docs/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/admin/tenants/{id}/keys", "get", 200, &keys);
    let key_id = key["id"].as_str().unwrap();
    let revoked: Value = admin
        .delete(gw.url(&format!("/admin/keys/{key_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/admin/keys/{key_id}", "delete", 200, &revoked);
    let deleted: Value = admin
        .delete(gw.url("/admin/tenants/docs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_documented(doc, "/admin/tenants/{id}", "delete", 200, &deleted);
    let resp = admin
        .get(gw.url("/admin/tenants/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_documented(
        doc,
        "/admin/tenants/{id}",
        "get",
        404,
        &resp.json().await.unwrap(),
    );
    let resp = c.get(gw.url("/admin/tenants")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_documented(
        doc,
        "/admin/tenants",
        "get",
        403,
        &resp.json().await.unwrap(),
    );
}

/// Health probes.
async fn check_operations(doc: &Value, gw: &Gateway) {
    // Operations.
    for path in ["/health", "/health/ready"] {
        let body: Value = anonymous()
            .get(gw.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_documented(doc, path, "get", 200, &body);
    }
}

#[tokio::test]
async fn live_answers_match_the_documented_schemas() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let doc = fetch_doc(&gw).await;
    check_chat(&doc, &gw).await;
    check_embeddings_models_and_errors(&doc, &gw).await;
    check_accounting(&doc, &gw).await;
    check_admin_tenants(&doc, &gw).await;
    check_admin_keys(&doc, &gw).await;
    check_operations(&doc, &gw).await;
}

/// `src="..."` and `href="..."` values of an HTML page.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').unwrap();
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

#[tokio::test]
async fn docs_is_swagger_ui_served_from_this_origin_without_a_key() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let anon = anonymous();

    let resp = anon.get(gw.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().path(), "/docs/", "/docs redirects to /docs/");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let assets = references(&html);
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in &assets {
        assert!(
            !asset.contains("//") && !asset.starts_with("http"),
            "not same-origin: {asset}"
        );
        let url = gw.url(&format!("/docs/{}", asset.trim_start_matches("./")));
        let resp = anon.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert!(!resp.bytes().await.unwrap().is_empty(), "{url}");
    }
    let init = anon
        .get(gw.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("\"url\": \"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(
        !init.contains("http"),
        "the initializer points nowhere else: {init}"
    );

    // The allow-list is exact paths: the rest of the bundle still needs a key.
    let resp = anon
        .get(gw.url("/docs/swagger-ui.js.map"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Sum of every `sentinel_requests_total` sample, as the dashboard computes it.
fn requests_total(metrics: &str, tenant: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sentinel_requests_total{"))
        .filter(|l| l.contains(&format!("tenant=\"{tenant}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The page: public, strict Content-Security-Policy, pointing only at this origin, polling
/// the documented endpoints.
async fn check_dashboard_page(gw: &Gateway) {
    let anon = anonymous();
    let resp = anon.get(gw.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    let page = resp.text().await.unwrap();
    assert!(page.contains("sessionStorage") && page.contains("<script>"));
    for reference in references(&page) {
        assert!(
            reference.starts_with('/') && !reference.starts_with("//") || reference == "data:,",
            "the page may only point at this origin: {reference}"
        );
    }
    // The endpoints the page polls.
    for path in ["'/metrics'", "'/health'", "'/admin/tenants'", "'/v1/usage'"] {
        assert!(page.contains(path), "{path}");
    }
}

/// What the page reads with the admin key: the tenant list, then each tenant's usage this
/// month and today; a wrong key gets a message in OpenAI's shape.
async fn check_dashboard_admin_calls(gw: &Gateway) {
    // With the admin key: the tenant list, then each tenant's usage this month and today.
    let admin = client_with_key(ADMIN_KEY);
    let tenants: Value = admin
        .get(gw.url("/admin/tenants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"test"), "{tenants}");
    let today = sentinel::audit::record::day_of(sentinel::audit::record::now_ms());
    let usage = |query: String| {
        let admin = admin.clone();
        let url = gw.url(&format!("/v1/usage?{query}"));
        async move {
            let resp = admin.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let t0 = Instant::now();
    let month = loop {
        let month = usage("tenant=test&group_by=model".to_owned()).await;
        if month["totals"]["requests"].as_u64() >= Some(3) || t0.elapsed() > Duration::from_secs(10)
        {
            break month;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(month["totals"]["requests"], 3, "{month}");
    assert_eq!(month["breakdown"][0]["model"], "demo", "{month}");
    assert!(month["totals"]["cache_hits"].as_u64().is_some());
    let day = usage(format!(
        "tenant=test&group_by=model&start={today}&end={today}"
    ))
    .await;
    assert_eq!(day["totals"]["requests"], 3, "{day}");
    assert!(day["totals"]["cost_usd"].as_f64().is_some());
    // Judge calls are billed to `_judge`: readable, empty here.
    let judge = usage("tenant=_judge&group_by=model".to_owned()).await;
    assert_eq!(judge["totals"]["requests"], 0, "{judge}");

    // A wrong key is refused in OpenAI's shape (the page shows that message), and a tenant
    // key is not an admin key.
    for key in ["not-the-admin-key", TEST_KEY] {
        let resp = client_with_key(key)
            .get(gw.url("/admin/tenants"))
            .send()
            .await
            .unwrap();
        assert!(matches!(resp.status().as_u16(), 401 | 403), "{key}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().is_some(), "{body}");
    }
}

#[tokio::test]
async fn the_dashboard_is_public_and_its_calls_work_with_the_admin_key() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let anon = anonymous();

    check_dashboard_page(&gw).await;

    // Some traffic for the numbers.
    let c = client();
    for i in 0..3 {
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", format!("dash-{i}"))
            .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    wait_record(&c, &gw, "dash-2").await;

    // Public: metrics (requests per second and judge scores) and health.
    let metrics = anon
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(requests_total(&metrics, "test") >= 3.0, "{metrics}");
    let health: Value = anon
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    check_dashboard_admin_calls(&gw).await;
}
