//! Operator state end to end: a reload is all or nothing (a reload refused at the
//! state-file write leaves the old config and the old certificate in service), and a saved
//! incident that cannot be read is reported at start and kept in the state file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::harness::{free_port, get, put_weight, request};
use crate::restart::Front;
use crate::tls::Pki;

/// The state file of a [`Front`] (the default `state_file`, beside the config).
const STATE_FILE: &str = "sitesteer.state.json";

/// `[[site]]` tables with weights, http endpoints on ports nothing listens on (the tests
/// need the sites in the config, not their traffic).
fn sites(list: &[(&str, u32)]) -> String {
    list.iter()
        .map(|(name, weight)| {
            format!(
                "[[site]]\nname = \"{name}\"\nweight = {weight}\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n\n",
                free_port()
            )
        })
        .collect()
}

/// The certificate a new TLS handshake with `addr` presents (DER), trusting `ca_pem`.
async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Result<Vec<u8>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| "no certificate presented".to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("cert PEM")
        .to_vec()
}

async fn json_of(admin: SocketAddr, path: &str) -> Value {
    let r = get(admin, path).await.expect("admin API");
    assert_eq!(r.status, 200, "{path}: {}", r.short_body());
    r.json()
}

/// (name, configured weight) of every site the admin API shows, and the config generation.
async fn sites_shown(admin: SocketAddr) -> (Vec<(String, u64)>, u64) {
    let v = json_of(admin, "/api/v1/sites").await;
    let sites = v["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or("").to_string();
            (name, s["configured_weight"].as_u64().unwrap_or(0))
        })
        .collect();
    (sites, v["generation"].as_u64().unwrap_or(0))
}

async fn events_text(admin: SocketAddr) -> String {
    json_of(admin, "/api/v1/events?limit=100").await["events"].to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_at_the_state_file_write_keeps_the_old_config_and_certificate() {
    let pki = Pki::new("ops reload CA");
    let front = Front::new("ops-reload", false);
    let (cert_a, key_a) = pki.leaf(&["localhost"]);
    let (cert_file, key_file) = (front.dir.0.join("cert.pem"), front.dir.0.join("key.pem"));
    write(&cert_file, &cert_a);
    write(&key_file, &key_a);
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n",
        cert_file.display(),
        key_file.display()
    );
    front.write(&format!(
        "{tls}{}",
        sites(&[("alpha", 100), ("bravo", 100)])
    ));
    let _proc = front.start("sitesteer.log").await;
    let ca = pki.ca_pem();
    let served = served_certificate(front.http, &ca).await.expect("TLS");
    assert_eq!(served, der_of(&cert_a), "certificate A is served at start");

    // An override of bravo, so that a reload that removes bravo must write the state file.
    let r = put_weight(front.admin, "bravo", 7).await;
    assert_eq!(r.status, 200, "{}", r.short_body());
    let (before, generation) = sites_shown(front.admin).await;

    // The state file becomes a non-empty folder: renaming the new state over it fails.
    let state = front.dir.0.join(STATE_FILE);
    std::fs::remove_file(&state).expect("state file written by the weight change");
    std::fs::create_dir(&state).expect("folder in its place");
    write(&state.join("keep"), "makes the folder non-empty");

    // New certificate B in the same files, and a config without bravo, alpha reweighted.
    let (cert_b, key_b) = pki.leaf(&["localhost"]);
    write(&cert_file, &cert_b);
    write(&key_file, &key_b);
    front.write(&format!("{tls}{}", sites(&[("alpha", 50)])));
    let r = request(front.admin, Method::POST, "/api/v1/reload", &[], None)
        .await
        .expect("reload answers");
    assert_eq!(r.status, 503, "{}", r.short_body());
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("state file")),
        "the error says why: {}",
        r.short_body()
    );

    let (after, generation_after) = sites_shown(front.admin).await;
    assert_eq!(after, before, "the old config is still in service");
    assert_eq!(generation_after, generation, "no new config generation");
    let served = served_certificate(front.http, &ca).await.expect("TLS");
    let which = match served {
        s if s == der_of(&cert_a) => "A",
        s if s == der_of(&cert_b) => "B",
        _ => "neither A nor B",
    };
    assert_eq!(
        which, "A",
        "the old certificate is still served after the refused reload"
    );
    assert!(events_text(front.admin).await.contains("reload refused"));
}

/// An incident as this version writes it.
fn incident(id: u64, site: &str) -> Value {
    json!({
        "id": id, "site": site, "cause": "manual", "open": false,
        "started_ms": 1_795_397_021_997u64, "started": "2026-11-23T01:23:41.997Z",
        "detection_ms": 12, "shift_ms": 12, "failed_requests": 0, "retried_requests": 0,
        "objectives": [], "met": true,
        "timeline": [{"at_ms": 1_795_397_021_997u64, "what": "site out of service: operator"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_saved_incident_is_reported_at_start_and_kept() {
    let front = Front::new("ops-incidents", false);
    let readable = incident(7, "alpha");
    // Written by another version (or by hand): `shift_ms` is not a number, fields missing.
    let unreadable = json!({"id": 41, "site": "alpha", "shift_ms": "soon", "note": "by hand"});
    let state = front.dir.0.join(STATE_FILE);
    let saved = json!({"version": 1, "incidents": [readable, unreadable]});
    write(&state, &saved.to_string());
    front.write(&sites(&[("alpha", 100)]));
    let _proc = front.start("sitesteer.log").await;

    let events = events_text(front.admin).await;
    assert!(
        events.contains("1 saved incident(s)") && events.contains("could not be read"),
        "the unreadable incident is reported: {events}"
    );
    let listed = json_of(front.admin, "/api/v1/incidents").await;
    let ids: Vec<u64> = listed["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .filter_map(|i| i["id"].as_u64())
        .collect();
    // alpha has no server behind it, so a real incident may be recorded meanwhile: it is
    // numbered after every kept one, the unreadable one included.
    assert!(
        ids.contains(&7) && ids.iter().all(|&id| id == 7 || id > 41),
        "the readable incident is restored, the unreadable one is not listed: {ids:?}"
    );
    assert!(
        front
            .log("sitesteer.log")
            .contains("saved incidents could not be read"),
        "and logged"
    );

    // An operator action saves the state file before it is answered.
    let r = put_weight(front.admin, "alpha", 5).await;
    assert_eq!(r.status, 200, "{}", r.short_body());
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state file")).expect("JSON");
    assert_eq!(file["overrides"]["sites"]["alpha"]["weight"], 5, "{file}");
    let kept = file["incidents"].as_array().expect("incidents in the file");
    assert!(
        kept.contains(&unreadable),
        "the unreadable incident is kept as it was: {file}"
    );
    assert!(
        kept.iter().any(|i| i["id"] == 7),
        "with the readable one: {file}"
    );
}
