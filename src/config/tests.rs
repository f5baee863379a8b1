use super::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every key path of the configuration, from its serialized form: what a
/// file may set, whatever the settings table says.
fn serialized_paths() -> BTreeSet<String> {
    let Ok(Value::Object(root)) = serde_json::to_value(Config::default()) else {
        panic!("Config does not serialize to a table");
    };
    let mut paths = BTreeSet::new();
    for (k, v) in root {
        match v {
            Value::Object(section) => {
                paths.extend(section.keys().map(|s| format!("{k}.{s}")));
            }
            _ => {
                paths.insert(k);
            }
        }
    }
    paths
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Load with an environment prefix no other test uses.
fn load(path: &std::path::Path, env_prefix: &str) -> anyhow::Result<Config> {
    Config::load_with_env(Some(path), env_prefix)
}

#[test]
fn the_table_and_the_help_list_every_key() {
    let table: BTreeSet<String> = Config::settings().map(|s| s.path()).collect();
    assert_eq!(
        table,
        serialized_paths(),
        "settings table vs Config's fields"
    );
    let help = settings_help();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for s in Config::settings() {
        let under = if s.section.is_empty() {
            help.split("\n[").next().unwrap().to_string()
        } else {
            let head = format!("\n[{}]\n", s.section);
            let at = help
                .find(&head)
                .unwrap_or_else(|| panic!("no [{}] in the help:\n{help}", s.section));
            help[at + head.len()..]
                .split("\n[")
                .next()
                .unwrap()
                .to_string()
        };
        let line = under
            .lines()
            .find(|l| l.starts_with(&format!("  {} = ", s.key)))
            .unwrap_or_else(|| panic!("{} is missing from the help:\n{help}", s.path()));
        let v = if s.section.is_empty() {
            &defaults[s.key]
        } else {
            &defaults[s.section][s.key]
        };
        assert!(
            line.contains(&render::literal(v)),
            "{}: no default in {line:?}",
            s.path()
        );
        assert!(
            line.ends_with(s.flat),
            "{}: no flat name in {line:?}",
            s.path()
        );
        assert!(
            !s.paragraphs().is_empty(),
            "{} has no doc comment",
            s.path()
        );
    }
}

#[test]
fn flat_names_are_unique_and_never_a_section() {
    let mut seen = BTreeSet::new();
    for s in Config::settings() {
        assert!(seen.insert(s.flat), "flat name {} twice", s.flat);
        assert!(
            Config::settings().all(|o| o.section != s.flat),
            "flat name {} is a section",
            s.flat
        );
    }
}

#[test]
fn readme_table_matches_the_settings() {
    let readme = include_str!("../../README.md");
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for s in Config::settings() {
        let v = if s.section.is_empty() {
            &defaults[s.key]
        } else {
            &defaults[s.section][s.key]
        };
        let row = format!(
            "| `{}` | `{}` | `{}` |",
            s.path(),
            render::literal(v),
            s.flat
        );
        assert!(readme.contains(&row), "README has no row {row}");
    }
}

#[test]
fn a_flat_file_loads_like_its_sectioned_form() {
    let dir = tempfile::tempdir().unwrap();
    let flat = write(
        &dir,
        "flat.toml",
        r#"
data_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
invoke_domain = "apigw.test"
store_url = "sqlite:///tmp/x.db"
region = "kr-east1"
srn_offering = "spc"
max_body_bytes = 1000
max_admin_body_bytes = 2000
upstream_timeout_ms = 3000
jwks_allow_http = true
quota_flush_interval_ms = 200
trusted_proxies = ["10.0.0.0/8"]
log = "warn"

[[credentials]]
access_key = "ak"
secret_key = "sk"
account_id = "acct"
"#,
    );
    let sectioned = write(
        &dir,
        "sectioned.toml",
        r#"
log = "warn"
[data]
listen = "127.0.0.1:0"
invoke_domain = "apigw.test"
max_body_bytes = 1000
trusted_proxies = ["10.0.0.0/8"]
[admin]
listen = "127.0.0.1:0"
max_body_bytes = 2000
[store]
url = "sqlite:///tmp/x.db"
[srn]
region = "kr-east1"
offering = "spc"
[upstream]
timeout_ms = 3000
[jwks]
allow_http = true
[quota]
flush_interval_ms = 200
[[signature.credentials]]
access_key = "ak"
secret_key = "sk"
account_id = "acct"
"#,
    );
    let a = load(&flat, "APIGWT_FLAT_").unwrap();
    let b = load(&sectioned, "APIGWT_FLAT_").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.data.max_body_bytes, 1000);
    assert_eq!(a.admin.max_body_bytes, 2000);
    assert_eq!(a.signature.credentials[0].account_id, "acct");
    assert_eq!(a.srn.offering, "spc");
}

#[test]
fn unknown_and_doubled_keys_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("data_lisen = \"127.0.0.1:0\"\n", "`data_lisen`"),
        ("[data]\nlisen = \"127.0.0.1:0\"\n", "`lisen`"),
        ("[upstream]\ntimeout = 5\n", "`timeout`"),
        ("[nosuch]\nx = 1\n", "`nosuch`"),
        (
            "max_body_bytes = 1\n[data]\nmax_body_bytes = 2\n",
            "max_body_bytes",
        ),
        ("data_listen = 5\n", "data.listen"),
        ("data_listen = \"here\"\n", "data.listen"),
        (
            "[data]\nescaped_path_separators = \"drop\"\n",
            "escaped_path_separators",
        ),
        ("[store]\nurl = \"mysql://x\"\n", "store.url"),
        ("[store]\nurl = \"postgres://x:notaport/db\"\n", "store.url"),
    ] {
        let p = write(&dir, "bad.toml", text);
        let e = format!("{:#}", load(&p, "APIGWT_BAD_").unwrap_err());
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn environment_by_flat_name_and_by_section() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "f.toml",
        "[data]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = 5\n",
    );
    // Unique names: no other test reads this prefix.
    std::env::set_var("APIGWT_ENV_MAX_BODY_BYTES", "2000");
    std::env::set_var("APIGWT_ENV_UPSTREAM__TIMEOUT_MS", "7");
    std::env::set_var("APIGWT_ENV_ADMIN_MAX_CONNECTIONS", "9");
    std::env::set_var(
        "APIGWT_ENV_CREDENTIALS",
        r#"[{access_key="a",secret_key="b",account_id="c"}]"#,
    );
    std::env::set_var("APIGWT_ENV_CONFIG", "/the/file/is/no/setting");
    let c = load(&p, "APIGWT_ENV_").unwrap();
    assert_eq!(c.data.listen, "127.0.0.1:1");
    assert_eq!(c.data.max_body_bytes, 2000, "the environment wins");
    assert_eq!(c.upstream.timeout_ms, 7);
    assert_eq!(c.admin.max_connections, 9);
    assert_eq!(c.signature.credentials[0].secret_key, "b");
}

#[test]
fn config_output_is_toml_that_loads_back() {
    let mut c = Config::default();
    c.data.trusted_proxies = vec!["10.0.0.0/8".into(), "::1".into()];
    c.admin.public_base_url = "https://gw.example/\"quoted\"\\\u{7f}".into();
    c.jwks.allow_http = true;
    c.signature.credentials = vec![
        Credential {
            access_key: "a1".into(),
            secret_key: "s1".into(),
            account_id: "acct1".into(),
            user_id: String::new(),
        },
        Credential {
            access_key: "a2".into(),
            secret_key: "s2".into(),
            account_id: "acct2".into(),
            user_id: "u2".into(),
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "out.toml", &c.to_toml().unwrap());
    assert_eq!(load(&p, "APIGWT_OUT_").unwrap(), c);
    let masked = c.masked().to_toml().unwrap();
    assert!(!masked.contains("s1") && masked.contains("secret_key = \"***\""));
}

#[test]
fn the_example_config_loads() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/apigw.toml");
    let c = load(&p, "APIGWT_EXAMPLE_").unwrap();
    assert_eq!(c.data.listen, "127.0.0.1:8080");
    assert_eq!(c.signature.credentials.len(), 1);
}

#[test]
fn legacy_env_keys_map_to_sections() {
    assert_eq!(legacy::env_key("DATA_LISTEN"), "data.listen");
    assert_eq!(legacy::env_key("data__listen"), "data.listen");
    assert_eq!(legacy::env_key("REGION"), "srn.region");
    assert_eq!(legacy::env_key("log"), "log");
    assert_eq!(legacy::env_key("NOSUCH"), "nosuch");
}
