//! Tests of `[tls]`, `[site.tls]` and `proxy.upgrade_sock`.

use super::*;
use std::path::Path;

const SITE: &str = r#"
[[site]]
name = "a"
host = "mcp.internal:8443"
[site.endpoints]
http = "127.0.0.1:1001"
"#;

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, "<test>", Path::new("/etc/sitesteer"))
}

fn paths(text: &str) -> Vec<String> {
    parse_str(text)
        .expect_err("config should be refused")
        .errors
        .into_iter()
        .map(|e| e.path)
        .collect()
}

#[test]
fn no_tls_by_default_and_the_upgrade_socket_sits_beside_the_state_file() {
    let c = parse_str(SITE).expect("valid");
    assert_eq!(c.tls, Tls::default());
    assert!(c.sites[0].tls.is_none());
    assert_eq!(
        c.proxy.upgrade_sock,
        Path::new("/etc/sitesteer/sitesteer.upgrade.sock")
    );
    let c = parse_str(&format!("state_file = \"/var/lib/s/state.json\"\n{SITE}")).expect("valid");
    assert_eq!(
        c.proxy.upgrade_sock,
        Path::new("/var/lib/s/sitesteer.upgrade.sock")
    );
    let c = parse_str(&format!(
        "{SITE}\n[proxy]\nupgrade_sock = \"run/up.sock\"\n"
    ))
    .expect("valid");
    assert_eq!(
        c.proxy.upgrade_sock,
        Path::new("/etc/sitesteer/run/up.sock")
    );
}

#[test]
fn listener_tls_covers_both_listeners_unless_told() {
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:7000\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n{SITE}"
    );
    let c = parse_str(&text).expect("valid");
    let l = c.tls.listener.expect("listener tls");
    assert_eq!(l.cert_file, Path::new("/etc/sitesteer/c.pem"));
    assert!(l.http && l.tcp);
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:7000\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nlisteners = [\"tcp\"]\n{SITE}"
    );
    let l = parse_str(&text).expect("valid").tls.listener.expect("tls");
    assert!(!l.http && l.tcp);
}

#[test]
fn bad_tls_keys_are_named() {
    assert_eq!(
        paths(&format!("[tls]\ncert_file = \"c.pem\"\n{SITE}")),
        ["tls.key_file"]
    );
    assert_eq!(
        paths(&format!("[tls]\nkey_file = \"k.pem\"\n{SITE}")),
        ["tls.cert_file"]
    );
    assert_eq!(
        paths(&format!(
            "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nlisteners = [\"tcp\", \"udp\"]\n{SITE}"
        )),
        ["tls.listeners[0]", "tls.listeners[1]"]
    );
    assert_eq!(
        paths(&format!("[tls]\nversion = \"1.1\"\n{SITE}")),
        ["tls.version"]
    );
    assert_eq!(
        paths(&format!("{SITE}[site.tls]\nsni = \"mcp.internal\"\n")),
        ["site[0].tls.ca_file"]
    );
    assert_eq!(
        paths(&format!(
            "{SITE}[site.tls]\nca_file = \"ca.pem\"\nsni = \"bad name\"\n"
        )),
        ["site[0].tls.sni"]
    );
    let long = "x".repeat(120);
    assert_eq!(
        paths(&format!("{SITE}[proxy]\nupgrade_sock = \"/{long}\"\n")),
        ["proxy.upgrade_sock"]
    );
}

#[test]
fn site_tls_takes_the_global_ca_and_derives_its_server_name() {
    let c = parse_str(&format!("[tls]\nca_file = \"/ca.pem\"\n{SITE}[site.tls]\n")).expect("valid");
    let site = &c.sites[0];
    let tls = site.tls.as_ref().expect("site tls");
    assert_eq!(tls.ca_file, Path::new("/ca.pem"));
    assert!(c.tls.listener.is_none());
    let addr = "127.0.0.1:1001".parse().expect("addr");
    assert_eq!(site.tls_server_name(addr).as_deref(), Some("mcp.internal"));
    let c = parse_str(
        &SITE
            .replace("host = \"mcp.internal:8443\"\n", "")
            .to_string()
            .replace(
                "[site.endpoints]",
                "[site.tls]\nca_file = \"ca.pem\"\n[site.endpoints]",
            ),
    )
    .expect("valid");
    assert_eq!(
        c.sites[0].tls_server_name(addr).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(host_without_port("[::1]:443"), "::1");
    assert_eq!(host_without_port("name"), "name");
}
