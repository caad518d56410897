//! Admin API access control and TLS against real `nexus node run` processes: every endpoint
//! (read from the node's own OpenAPI document, so a new endpoint is covered without editing
//! this file) refuses a request without a token (401) and a token lacking its scope (403,
//! naming the scope) and accepts the right scope; tokens are made, listed and revoked through
//! the real `nexus ctl`, survive a restart and are stored without their secrets; the API serves
//! HTTPS, refuses plain HTTP on the TLS port and picks up a new certificate on SIGHUP.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{expect_problem, fast_config, nexus, start_node};
use serde_json::Value;

const BOOT: &str = "bootstrap-management-token-0123";

fn ctl(admin: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = nexus();
    cmd.args(["ctl", "--admin", admin])
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("NEXUS_CA_CERT")
        .env_remove("NEXUS_ADMIN");
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(args).output().expect("run nexus ctl")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "nexus ctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// Creates a token through `nexus ctl acl token create`; returns (accessor, secret).
fn create_token(admin: &str, scopes: &str, description: &str) -> (String, String) {
    let out = ctl(
        admin,
        Some(BOOT),
        &[
            "--json",
            "acl",
            "token",
            "create",
            "--scope",
            scopes,
            "--description",
            description,
        ],
    );
    let v = ok_json(&out);
    (
        v["token"]["accessor"]
            .as_str()
            .expect("accessor")
            .to_owned(),
        v["secret"].as_str().expect("secret").to_owned(),
    )
}

/// One operation of the OpenAPI document: method, path and required scope (`open` or a name).
fn operations(doc: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let scope = op["x-nexus-scope"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no x-nexus-scope"))
                .to_owned();
            out.push((method.to_uppercase(), path.clone(), scope));
        }
    }
    out
}

/// A concrete URL path for a templated one; values chosen so that no call changes the node
/// in a way that stops the sweep (no such actor, route, token, voter).
fn concrete(path: &str) -> String {
    path.replace("{actor}", "no-such-actor")
        .replace("{key}", "00000000000000000000000000000000")
        .replace("{accessor}", "00000000000000000000000000000000")
        .replace("{serial}", "999999")
        .replace("{id}", "4242")
        .replace(['{', '}'], "")
}

fn request(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let url = format!("{base}{}", concrete(path));
    let method: reqwest::Method = method.parse().expect("method");
    let has_body = [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
    ]
    .contains(&method);
    let mut r = http.request(method, url);
    if has_body {
        // An invalid body everywhere: a handler that runs answers 4xx without acting. The leave
        // endpoint takes an empty body as "leave now", so it gets a reason that is too long.
        let body = if path == "/v1/leave" {
            serde_json::json!({ "reason": "x".repeat(300) })
        } else {
            serde_json::json!({ "unexpected-member": true })
        };
        r = r.json(&body);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_checks_its_scope_and_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("n1");
    let node = start_node("n1", &data, &[], &fast_config(""), Some(BOOT));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // The document is open and lists every operation with its scope.
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", node.admin))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    assert!(
        ops.iter()
            .any(|(m, p, s)| m == "POST" && p == "/v1/acl/tokens" && s == "management")
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    // One token per scope, made with the real CLI; a token's "wrong" scope is read, or
    // operator for endpoints that need read.
    let mut secrets = std::collections::BTreeMap::new();
    let mut accessors = Vec::new();
    for scope in [
        "read",
        "services:write",
        "routes:write",
        "ca:issue",
        "ca:revoke",
        "ca:admin",
        "operator",
        "management",
    ] {
        let (accessor, secret) = create_token(&node.admin, scope, &format!("only {scope}"));
        assert_eq!(accessor.len(), 32);
        assert_eq!(secret.len(), 64);
        accessors.push(accessor);
        secrets.insert(scope, secret);
    }

    for (method, path, scope) in &ops {
        if scope == "open" {
            let r = request(&http, &node.admin, method, path, None)
                .send()
                .await
                .expect("send");
            assert!(
                r.status().is_success(),
                "{method} {path} is open: {}",
                r.status()
            );
            continue;
        }
        let r = request(&http, &node.admin, method, path, None)
            .send()
            .await
            .expect("send");
        let body = expect_problem(r, 401, "unauthorized").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or("")
                .contains(scope.as_str()),
            "{method} {path}: {body}"
        );

        let wrong = if scope == "read" { "operator" } else { "read" };
        let r = request(&http, &node.admin, method, path, Some(&secrets[wrong]))
            .send()
            .await
            .expect("send");
        let body = expect_problem(r, 403, "forbidden").await;
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(&format!("needs the scope {scope}")),
            "{method} {path}: {body}"
        );

        for token in [&secrets[scope.as_str()], &secrets["management"]] {
            let r = request(&http, &node.admin, method, path, Some(token))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            assert!(
                status != 401 && status != 403,
                "{method} {path} with scope {scope}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
    }
    // The node is still up: no call of the sweep stopped it.
    assert!(node.logs().contains("node started"));

    // Malformed Authorization headers and unknown tokens.
    for bad in ["Basic Zm9vOmJhcg==", "Bearer", "Bearer a b", "Token abc"] {
        let r = http
            .get(format!("{}/v1/node", node.admin))
            .header("authorization", bad)
            .send()
            .await
            .expect("send");
        expect_problem(r, 401, "malformed-authorization").await;
    }
    let r = http
        .get(format!("{}/v1/node", node.admin))
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .send()
        .await
        .expect("send");
    expect_problem(r, 401, "malformed-authorization").await;
    let r = http
        .get(format!("{}/v1/node", node.admin))
        .bearer_auth("f".repeat(64))
        .send()
        .await
        .expect("send");
    expect_problem(r, 401, "unauthorized").await;

    // Unknown paths and methods reveal nothing without a token; with any valid one they are
    // 404 and 405.
    for (method, path, status, kind) in [
        ("PATCH", "/v1/node", 405, "method-not-allowed"),
        ("DELETE", "/v1/health", 405, "method-not-allowed"),
        ("GET", "/v1/nope", 404, "not-found"),
    ] {
        let method: reqwest::Method = method.parse().expect("method");
        let url = format!("{}{path}", node.admin);
        let r = http
            .request(method.clone(), &url)
            .send()
            .await
            .expect("send");
        expect_problem(r, 401, "unauthorized").await;
        let r = http
            .request(method, &url)
            .bearer_auth(&secrets["read"])
            .send()
            .await
            .expect("send");
        expect_problem(r, status, kind).await;
    }

    // Unknown scope names are refused at creation with the known ones listed.
    let out = ctl(
        &node.admin,
        Some(BOOT),
        &["acl", "token", "create", "--scope", "read,superuser"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("\"superuser\""), "{stderr}");
    assert!(stderr.contains("routes:write"), "{stderr}");
    // Token management needs the management scope.
    let out = ctl(
        &node.admin,
        Some(&secrets["read"]),
        &["acl", "token", "list"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("needs the scope management"), "{stderr}");

    // The list shows every token, the bootstrap and the node-internal one, and no secret.
    let out = ctl(
        &node.admin,
        Some(&secrets["management"]),
        &["--json", "acl", "token", "list"],
    );
    let list = ok_json(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in secrets.values() {
        assert!(!text.contains(secret.as_str()), "a secret is listed");
    }
    let tokens = list["tokens"].as_array().expect("tokens");
    assert_eq!(tokens[0]["kind"], "bootstrap");
    for a in &accessors {
        assert!(tokens.iter().any(|t| t["accessor"] == a.as_str()), "{a}");
    }
    let internal: Vec<&Value> = tokens
        .iter()
        .filter(|t| t["kind"] == "node-internal")
        .collect();
    assert_eq!(internal.len(), 1, "{list}");
    assert_eq!(
        internal[0]["scopes"],
        serde_json::json!(["read", "services:write", "ca:issue"])
    );

    // Revocation takes effect at once.
    let revoked = &accessors[1]; // services:write
    let out = ctl(
        &node.admin,
        Some(BOOT),
        &["acl", "token", "revoke", revoked],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = http
        .get(format!("{}/v1/services", node.admin))
        .bearer_auth(&secrets["services:write"])
        .send()
        .await
        .expect("send");
    expect_problem(r, 401, "unauthorized").await;
    let out = ctl(
        &node.admin,
        Some(BOOT),
        &["acl", "token", "revoke", revoked],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown token"));
    let out = ctl(
        &node.admin,
        Some(BOOT),
        &["acl", "token", "revoke", "bootstrap"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not revocable"));

    // Refusals are counted.
    let metrics = http
        .get(format!("{}/metrics", node.admin))
        .bearer_auth(&secrets["read"])
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for reason in ["missing", "malformed", "invalid", "forbidden"] {
        let line = format!("nexus_admin_auth_failures_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }

    // The store holds hashes, not secrets, and only its owner may read it.
    let store = data.join("acl_tokens.json");
    let text = std::fs::read_to_string(&store).expect("store");
    for secret in secrets.values() {
        assert!(
            !text.contains(secret.as_str()),
            "secret in clear in the store"
        );
    }
    assert!(!text.contains(revoked.as_str()));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&store)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Tokens survive a restart; the revoked one stays revoked.
    drop(node);
    let node = start_node("n1", &data, &[], &fast_config(""), Some(BOOT));
    let r = http
        .get(format!("{}/v1/node", node.admin))
        .bearer_auth(&secrets["read"])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{}/v1/services", node.admin))
        .bearer_auth(&secrets["services:write"])
        .send()
        .await
        .expect("send");
    expect_problem(r, 401, "unauthorized").await;
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it.
struct TestPki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    fn new() -> TestPki {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nexus test CA");
        let cert = params.self_signed(&key).expect("CA cert");
        TestPki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A fresh leaf (new key) written to `cert` and `key`; returns its DER.
    fn leaf(&self, cert: &Path, key: &Path) -> Vec<u8> {
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("params");
        let leaf = params.signed_by(&leaf_key, &self.issuer).expect("leaf");
        std::fs::write(cert, leaf.pem()).expect("write cert");
        std::fs::write(key, leaf_key.serialize_pem()).expect("write key");
        leaf.der().to_vec()
    }
}

/// The certificate a fresh TLS connection to `addr` is served, verified against `ca_pem`.
async fn served_certificate(addr: &str, ca_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    #[allow(deprecated, reason = "the ring provider is the workspace's")]
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_admin_api_with_ctl_sdk_and_sighup_reload() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = TestPki::new();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let (cert, key) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
    let first = pki.leaf(&cert, &key);
    // Top-level keys go before fast_config's [gossip] table.
    let config = format!(
        "admin_tls_cert = {:?}\nadmin_tls_key = {:?}\n{}",
        cert.display().to_string(),
        key.display().to_string(),
        fast_config("")
    );
    let mut node = start_node("tls1", &dir.path().join("tls1"), &[], &config, Some(BOOT));
    let addr = node.admin.trim_start_matches("http://").to_owned();
    let https = format!("https://{addr}");

    // nexus ctl with --ca-cert, and with NEXUS_CA_CERT.
    let out = ctl(
        &https,
        Some(BOOT),
        &["--ca-cert", ca.to_str().expect("utf-8"), "--json", "node"],
    );
    assert_eq!(ok_json(&out)["name"], "tls1");
    let out = nexus()
        .args(["ctl", "--admin", &https, "--json", "node"])
        .env("NEXUS_ADMIN_TOKEN", BOOT)
        .env("NEXUS_CA_CERT", &ca)
        .output()
        .expect("ctl");
    assert_eq!(ok_json(&out)["name"], "tls1");
    // Without a CA the CLI says what is missing.
    let out = ctl(&https, Some(BOOT), &["node"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The SDK's node client over HTTPS.
    let sdk = nexus_api::NodeConfig::discover_with_ca(
        &https,
        Some(BOOT.into()),
        Some(pki.ca_pem.clone().into_bytes()),
    )
    .await
    .expect("the SDK discovers the node over HTTPS");
    assert!(sdk.api.port() > 0);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let r = plain.get(format!("http://{addr}/v1/health")).send().await;
    assert!(
        r.is_err(),
        "plain HTTP answered: {:?}",
        r.map(|r| r.status())
    );

    // SIGHUP with a new certificate: new connections get it.
    assert_eq!(served_certificate(&addr, &pki.ca_pem).await, first);
    let second = pki.leaf(&cert, &key);
    assert_ne!(first, second);
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(node.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("kill -HUP")
    };
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_certificate(&addr, &pki.ca_pem).await != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A bad file on SIGHUP keeps the certificate in use, and is counted.
    std::fs::write(&cert, "not a certificate").expect("write");
    hup();
    let ca_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let text = ca_client
            .get(format!("{https}/metrics"))
            .bearer_auth(BOOT)
            .send()
            .await
            .expect("metrics over https")
            .text()
            .await
            .expect("text");
        if text.contains("nexus_admin_tls_reloads_total{result=\"failed\"} 1") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no failed reload counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(metrics.contains("nexus_admin_tls_reloads_total{result=\"ok\"} 1"));
    assert!(
        !metrics.contains("nexus_admin_tls_handshake_failures_total 0"),
        "the plain HTTP attempt counts as a failed handshake:\n{metrics}"
    );
    assert_eq!(served_certificate(&addr, &pki.ca_pem).await, second);
    assert!(node.logs().contains("admin TLS certificate reload failed"));
    assert!(
        node.child.try_wait().expect("wait").is_none(),
        "SIGHUP stopped the node"
    );
}
