use std::path::Path;

use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(
        text,
        Path::new("test.toml"),
        &MapEnv::from_pairs(env.iter().copied()),
    )
}

const MINIMAL: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"

[[models]]
name = "gpt-4o-mini"
routes = [{ provider = "openai", model = "gpt-4o-mini" }]
"#;

#[test]
fn minimal_config_gets_defaults_and_resolves_secret() {
    let cfg = load(MINIMAL, &[("OPENAI_API_KEY", "sk-test-123")]).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(cfg.server.request_timeout, Duration::from_secs(600));
    assert_eq!(
        cfg.providers[0].base_url.as_str(),
        "https://api.openai.com/v1"
    );
    assert_eq!(
        cfg.providers[0].api_key.as_ref().unwrap().expose(),
        "sk-test-123"
    );
    let shown = cfg.to_display_toml();
    assert!(!shown.contains("sk-test-123"), "{shown}");
    assert!(shown.contains("*****"), "{shown}");
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n");
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test.toml") && err.contains("server.listn"),
        "{err}"
    );
}

#[test]
fn unknown_key_inside_array_entry_is_named() {
    let text = MINIMAL
        .replace("max_retries", "x")
        .replace("kind = \"openai\"", "kind = \"openai\"\nretries = 1");
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("providers[0].retries"), "{err}");
}

#[test]
fn missing_secret_names_the_variable() {
    let err = load(MINIMAL, &[]).unwrap_err().to_string();
    assert!(
        err.contains("providers[0].api_key_env") && err.contains("OPENAI_API_KEY"),
        "{err}"
    );
}

#[test]
fn env_overrides_apply_and_are_validated() {
    let cfg = load(
        MINIMAL,
        &[
            ("OPENAI_API_KEY", "k"),
            ("SENTINEL_SERVER__LISTEN", "0.0.0.0:9000"),
            ("SENTINEL_PROVIDERS__0__MAX_RETRIES", "7"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.server.listen.port(), 9000);
    assert_eq!(cfg.providers[0].max_retries, 7);
    let err = load(
        MINIMAL,
        &[
            ("OPENAI_API_KEY", "k"),
            ("SENTINEL_SERVER__REQUEST_TIMEOUT", "soon"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("server.request_timeout") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused_with_reasons() {
    let cases = [
        (
            "kind = \"openai\"",
            "kind = \"gopher\"",
            "providers[0].kind",
        ),
        (
            "https://api.openai.com/v1/",
            "ftp://x",
            "providers[0].base_url",
        ),
        (
            "provider = \"openai\", model",
            "provider = \"nope\", model",
            "models[0].routes[0].provider",
        ),
    ];
    for (from, to, key) in cases {
        let err = load(&MINIMAL.replace(from, to), &[("OPENAI_API_KEY", "k")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{to}: {err}");
    }
}

#[test]
fn weighted_routes_need_weights() {
    let text = MINIMAL.replace("routes = [", "strategy = \"weighted\"\nroutes = [");
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight"), "{err}");
}

#[test]
fn telemetry_is_off_by_default_and_its_endpoint_is_checked() {
    let cfg = load(MINIMAL, &[("OPENAI_API_KEY", "k")]).unwrap();
    assert!(cfg.telemetry.otlp_endpoint.is_none());
    assert_eq!(cfg.telemetry.traces_url(), None);
    assert_eq!(cfg.telemetry.service_name, "sentinel");

    for (endpoint, traces) in [
        ("http://otel:4318", "http://otel:4318/v1/traces"),
        (
            "https://otel.example.com:4318/",
            "https://otel.example.com:4318/v1/traces",
        ),
        (
            "http://10.0.0.7:4318/otlp/",
            "http://10.0.0.7:4318/otlp/v1/traces",
        ),
    ] {
        let text = format!(
            "{MINIMAL}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gw-eu\"\n"
        );
        let cfg = load(&text, &[("OPENAI_API_KEY", "k")]).unwrap();
        assert_eq!(
            cfg.telemetry.traces_url().as_deref(),
            Some(traces),
            "{endpoint}"
        );
        assert_eq!(cfg.telemetry.service_name, "gw-eu");
    }

    for (endpoint, reason) in [
        ("otel:4318", "http(s) URL"),
        ("not a url", "not a URL"),
        ("grpc://otel:4317", "http(s) URL"),
        ("http://otel:4318/v1/traces", "base URL"),
        ("http://user:secret@otel:4318", "credentials"),
        ("http://otel:4318?x=1", "query"),
    ] {
        let text = format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
        let err = load(&text, &[("OPENAI_API_KEY", "k")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("telemetry.otlp_endpoint") && err.contains(reason),
            "{endpoint}: {err}"
        );
        if reason == "credentials" {
            assert!(!err.contains("secret"), "the password is not echoed: {err}");
        }
    }
    let text = format!("{MINIMAL}\n[telemetry]\nservice_name = \" \"\n");
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("telemetry.service_name"), "{err}");
}

#[test]
fn judge_and_cache_settings_are_checked() {
    for (extra, key) in [
        ("[judge]\nenabled = true\n", "judge.model"),
        ("[judge]\nenabled = true\nmodel = \"nope\"\n", "judge.model"),
        (
            "[judge]\nenabled = true\nmodel = \"gpt-4o-mini\"\nsample_rate = 2.0\n",
            "judge.sample_rate",
        ),
        (
            "[cache.semantic]\nthreshold = 1.5\n",
            "cache.semantic.threshold",
        ),
        (
            "[cache.semantic]\nembedder = \"remote:nope\"\n",
            "cache.semantic.embedder",
        ),
        ("[cache.exact]\nttl = \"soon\"\n", "cache.exact.ttl"),
    ] {
        let err = load(&format!("{MINIMAL}\n{extra}"), &[("OPENAI_API_KEY", "k")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let cfg = load(
        &format!("{MINIMAL}\n[judge]\nenabled = true\nmodel = \"gpt-4o-mini\"\n[cache.exact]\nenabled = true\nttl = \"5m\"\n"),
        &[("OPENAI_API_KEY", "k")],
    )
    .unwrap();
    assert!(
        cfg.judge.unwrap().rubric.contains("{{answer}}"),
        "the built-in rubric"
    );
    assert!(cfg.cache.exact_enabled);
    assert_eq!(cfg.cache.exact_ttl, std::time::Duration::from_secs(300));
}

#[test]
fn tenant_limits_budgets_audit_and_pricing_parse() {
    let extra = r#"
[audit]
retention = "7d"
store_bodies = "redacted"

[pricing."my-model"]
input = 1.5
output = 2.25

[[tenants]]
id = "acme"
limits = { rpm = 5, tpm = 1000, mode = "dry_run" }
budget = { limit_usd = 12.5, period = "day" }
"#;
    let cfg = load(&format!("{MINIMAL}\n{extra}"), &[("OPENAI_API_KEY", "k")]).unwrap();
    let t = &cfg.tenants[0];
    assert_eq!(t.limits.rpm.map(std::num::NonZeroU32::get), Some(5));
    assert_eq!(t.limits.tpm.map(std::num::NonZeroU32::get), Some(1000));
    assert_eq!(t.limits.mode, crate::config::raw::PolicyMode::DryRun);
    let b = t.budget.unwrap();
    assert!((b.limit_usd - 12.5).abs() < f64::EPSILON);
    assert_eq!(b.period, crate::config::raw::BudgetPeriod::Day);
    assert_eq!(
        cfg.audit.retention,
        std::time::Duration::from_secs(7 * 86_400)
    );
    let price = cfg.pricing.price("my-model").unwrap();
    assert_eq!((price.input, price.output), (1_500_000, 2_250_000));
    assert!(
        cfg.pricing.price("gpt-4o-mini").is_some(),
        "built-in list kept"
    );

    for (bad, key) in [
        ("limits = { rpm = 0 }", "tenants[0].limits.rpm"),
        (
            "budget = { limit_usd = -1.0, period = \"day\" }",
            "tenants[0].budget.limit_usd",
        ),
    ] {
        let text = format!("{MINIMAL}\n[[tenants]]\nid = \"acme\"\n{bad}\n");
        let err = load(&text, &[("OPENAI_API_KEY", "k")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
    let text = format!("{MINIMAL}\n[pricing.\"x\"]\ninput = -1.0\noutput = 1.0\n");
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("pricing"), "{err}");
}

#[test]
fn azure_needs_api_version() {
    let text = MINIMAL.replace("kind = \"openai\"", "kind = \"azure\"");
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_version"), "{err}");
}

#[test]
fn shipped_config_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sentinel.toml"))
            .unwrap();
    let cfg = load(
        &text,
        &[(
            "SENTINEL_DEMO_KEY",
            "sk-sntl-demo-0123456789abcdefghijklmnopqrstuvwxyz",
        )],
    )
    .unwrap();
    assert!(cfg.models.iter().any(|m| m.name == "demo"));
    assert_eq!(cfg.tenants[0].id, "demo");
    assert!(cfg.demo.mock_provider.is_some());
}

#[test]
fn tenants_resolve_bootstrap_keys_and_check_models() {
    let key = "sk-sntl-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    let text = format!("{MINIMAL}\n[[tenants]]\nid = \"acme\"\nmodels = [\"gpt-4o-mini\"]\nkeys = [{{ name = \"ci\", key_env = \"ACME_KEY\" }}]\n");
    let cfg = load(&text, &[("OPENAI_API_KEY", "k"), ("ACME_KEY", key)]).unwrap();
    assert_eq!(cfg.tenants[0].keys[0].secret.expose(), key);
    assert!(!cfg.to_display_toml().contains(key));
    let err = load(&text, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenants[0].keys[0].key_env") && err.contains("ACME_KEY"),
        "{err}"
    );
    let err = load(&text, &[("OPENAI_API_KEY", "k"), ("ACME_KEY", "not-a-key")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a Sentinel key"), "{err}");
    let err = load(
        &text.replace("models = [\"gpt-4o-mini\"]", "models = [\"nope\"]"),
        &[("OPENAI_API_KEY", "k"), ("ACME_KEY", key)],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tenants[0].models"), "{err}");
}

#[test]
fn redis_store_needs_a_url_and_masks_its_password() {
    let base = format!("{MINIMAL}\n[store]\nbackend = \"redis\"\n");
    let err = load(&base, &[("OPENAI_API_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("store.redis_url"), "{err}");
    let cfg = load(
        &format!("{base}redis_url = \"redis://:hunter2@10.0.0.1:6379/0\"\n"),
        &[("OPENAI_API_KEY", "k")],
    )
    .unwrap();
    let shown = cfg.to_display_toml();
    assert!(
        !shown.contains("hunter2") && shown.contains("10.0.0.1"),
        "{shown}"
    );
    let cfg = load(
        &format!("{base}cluster_urls = [\"redis://a:1\", \"redis://b:2\"]\n"),
        &[("OPENAI_API_KEY", "k")],
    )
    .unwrap();
    assert!(matches!(
        cfg.store,
        StoreConfig::Redis { cluster: true, .. }
    ));
}

#[test]
fn serving_lanes_default_to_the_cores_and_are_bounded() {
    let key = [("OPENAI_API_KEY", "k")];
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(load(MINIMAL, &key).unwrap().server.workers, cores);
    let with = |workers: &str| format!("{MINIMAL}\n[server]\nworkers = {workers}\n");
    assert_eq!(load(&with("0"), &key).unwrap().server.workers, cores);
    assert_eq!(load(&with("3"), &key).unwrap().server.workers, 3);
    let err = load(&with("5000"), &key).unwrap_err().to_string();
    assert!(err.contains("server.workers"), "{err}");
}
