//! `check-config` and start-up refusals.

use std::process::Command;

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentinel"));
    cmd.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "E2E_OPENAI_KEY"

[[models]]
name = "gpt-4o-mini"
routes = [{ provider = "openai", model = "gpt-4o-mini" }]
"#;

#[test]
fn valid_config_prints_effective_values_with_secrets_masked() {
    let (ok, stdout, stderr) = check(
        VALID,
        &[
            ("E2E_OPENAI_KEY", "sk-live-very-secret"),
            ("SENTINEL_SERVER__LISTEN", "0.0.0.0:9999"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("0.0.0.0:9999"),
        "env override applied: {stdout}"
    );
    assert!(stdout.contains("*****"));
    assert!(!stdout.contains("sk-live-very-secret") && !stderr.contains("sk-live-very-secret"));
}

#[test]
fn errors_exit_1_naming_file_key_and_reason() {
    let cases = [
        (format!("{VALID}\n[server]\nlisen = 1\n"), "server.lisen"),
        (
            VALID.replace("kind = \"openai\"", "kind = \"openia\""),
            "providers[0].kind",
        ),
        (
            format!("{VALID}\n[cache.semantic]\nthreshold = 7.0\n"),
            "cache.semantic.threshold",
        ),
        ("[[models]\n".to_owned(), "invalid TOML"),
    ];
    for (config, needle) in cases {
        let (ok, _, stderr) = check(&config, &[("E2E_OPENAI_KEY", "k")]);
        assert!(!ok, "{needle} should fail");
        assert!(
            stderr.contains(needle) && stderr.contains("c.toml"),
            "{needle}: {stderr}"
        );
    }
    let (ok, _, stderr) = check(VALID, &[]);
    assert!(!ok);
    assert!(stderr.contains("E2E_OPENAI_KEY"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sentinel"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn shipped_config_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sentinel.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_sentinel"))
        .args(["check-config", "--config", path])
        .env("SENTINEL_DEMO_KEY", crate::support::gateway::TEST_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
