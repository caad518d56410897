//! The `nexus` command line as a user meets it: completion scripts checked by the real shells,
//! man pages rendered by groff, `nexus ctl --json` against a real node, RFC 3339 times in
//! tables, colour only on a terminal without NO_COLOR, and `nexus ctl`'s exit codes.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes; cores never do"
)]

mod ca_common;
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{fast_config, nexus, start_node};
use serde_json::Value;

const BOOT: &str = "bootstrap-management-token-0123";

/// Subcommand words every completion script must know.
const WORDS: [&str; 6] = [
    "ctl",
    "members",
    "keyring",
    "revocations",
    "completions",
    "man",
];

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// A tool on PATH, if it is there. In CI (`CI` set) `.ci/run` installs zsh, fish and groff, so
/// a missing one fails there instead of being skipped.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing (.ci/run installs it)"
        );
        eprintln!("{name} not installed: its checks are skipped");
    }
    found
}

fn completion(shell: &str, dir: &Path) -> std::path::PathBuf {
    let script = ok(&nexus().args(["completions", shell]).output().expect("run"));
    for word in WORDS {
        assert!(script.contains(word), "{shell} script lacks {word:?}");
    }
    let path = dir.join(format!("nexus.{shell}"));
    std::fs::write(&path, script).expect("write");
    path
}

#[test]
fn completion_scripts_parse_and_complete_in_real_shells() {
    let dir = tempfile::tempdir().expect("tmp");

    // bash: the script parses, registers `_nexus`, and completes `nexus ctl mem` to `members`.
    let bash = completion("bash", dir.path());
    ok(&Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .output()
        .expect("bash"));
    let words = ok(&Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1"; complete -p nexus >/dev/null || exit 9
               COMP_WORDS=(nexus ctl mem); COMP_CWORD=2; COMP_LINE="nexus ctl mem"
               COMP_POINT=${#COMP_LINE}; _nexus nexus mem ctl; printf '%s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(&bash)
        .output()
        .expect("bash"));
    assert_eq!(words.trim(), "members", "{words}");

    // zsh: the script parses.
    let zsh = completion("zsh", dir.path());
    assert!(
        std::fs::read_to_string(&zsh)
            .expect("read")
            .starts_with("#compdef nexus")
    );
    if tool("zsh") {
        ok(&Command::new("zsh")
            .arg("-n")
            .arg(&zsh)
            .output()
            .expect("zsh"));
    }

    // fish: the script parses, and fish completes `nexus ctl ca rev` from it.
    let fish = completion("fish", dir.path());
    if tool("fish") {
        ok(&Command::new("fish")
            .arg("--no-execute")
            .arg(&fish)
            .output()
            .expect("fish"));
        let words = ok(&Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source {}; complete -C'nexus ctl ca rev'",
                fish.display()
            ))
            .output()
            .expect("fish"));
        let first: Vec<&str> = words
            .lines()
            .map(|l| l.split('\t').next().unwrap_or(""))
            .collect();
        assert!(
            first.contains(&"revoke") && first.contains(&"revocations"),
            "{words}"
        );
    }

    // elvish and PowerShell: generated, with the commands in them (no shell here to run them).
    completion("elvish", dir.path());
    completion("powershell", dir.path());

    // An unknown shell is a usage error.
    let out = nexus().args(["completions", "tcsh"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_one_per_command_render_with_groff() {
    let dir = tempfile::tempdir().expect("tmp");
    let out_dir = dir.path().join("man1");
    let listing = ok(&nexus()
        .arg("man")
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run"));
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(listing.lines().count(), files.len(), "{listing}");
    for want in [
        "nexus.1",
        "nexus-node.1",
        "nexus-node-run.1",
        "nexus-node-check.1",
        "nexus-ctl.1",
        "nexus-ctl-members.1",
        "nexus-ctl-service-register.1",
        "nexus-ctl-ca-voters-add.1",
        "nexus-ctl-acl-token-create.1",
        "nexus-ctl-keyring-install.1",
        "nexus-ctl-sessions-probe.1",
        "nexus-sim-run.1",
        "nexus-demo.1",
        "nexus-keygen.1",
        "nexus-completions.1",
        "nexus-man.1",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} not in {files:?}");
    }
    assert!(
        !files.iter().any(|f| f.contains("help")),
        "a page for clap's help subcommand: {files:?}"
    );
    // One page per command: as many pages as `nexus ctl` has leaf and group commands.
    assert!(files.len() >= 40, "{} pages: {files:?}", files.len());
    for f in &files {
        let text = std::fs::read_to_string(out_dir.join(f)).expect("read");
        assert!(text.contains("\n.TH ") || text.starts_with(".TH "), "{f}");
    }

    // Without --out: nexus(1) on stdout, the same page.
    let stdout = ok(&nexus().arg("man").output().expect("run"));
    assert_eq!(
        stdout,
        std::fs::read_to_string(out_dir.join("nexus.1")).expect("read")
    );

    if tool("groff") {
        let render = |page: &str| {
            let out = Command::new("groff")
                // -k: preconv, as man(1) runs it (the pages hold UTF-8 such as "≥").
                .args(["-k", "-man", "-Tutf8", "-ww"])
                .arg(out_dir.join(page))
                .output()
                .expect("groff");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success() && stderr.is_empty(),
                "{page}: {stderr}"
            );
            // Strip overstrike (bold/underline) to compare text.
            let raw = String::from_utf8_lossy(&out.stdout).into_owned();
            strip_overstrike(&raw)
        };
        let root = render("nexus.1");
        assert!(root.contains("NAME") && root.contains("SYNOPSIS"), "{root}");
        assert!(
            root.contains("Exit codes") && root.contains("nexus ctl"),
            "{root}"
        );
        let members = render("nexus-ctl-members.1");
        assert!(members.contains("nexus ctl members"), "{members}");
        assert!(members.contains("--json"), "{members}");
        assert!(
            members.contains("unauthorised") || members.contains("401"),
            "{members}"
        );
    }
}

fn strip_overstrike(s: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue; // `c\bc` (bold) or `_\bc` (underline): keep the char after the backspace
        }
        out.push(c);
    }
    // Also drop SGR sequences if groff emitted them.
    let text: String = out.into_iter().collect();
    let mut clean = String::with_capacity(text.len());
    let mut in_esc = false;
    for c in text.chars() {
        match (in_esc, c) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, c) => clean.push(c),
        }
    }
    clean
}

fn ctl(admin: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = nexus();
    cmd.args(["ctl", "--admin", admin])
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("NEXUS_CA_CERT")
        .env_remove("NEXUS_ADMIN")
        .env_remove("NO_COLOR");
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(args);
    cmd
}

/// Runs `cmd` on a pseudo-terminal (util-linux `script`) and returns what it printed.
fn on_terminal(cmd: &Command, no_color: bool) -> String {
    let mut line = String::new();
    line.push_str(&shell_quote(cmd.get_program().to_str().expect("utf-8")));
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(a.to_str().expect("utf-8")));
    }
    let mut script = Command::new("script");
    script
        .args(["-qefc", &line, "/dev/null"])
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("NO_COLOR");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    ok(&script.output().expect("script"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_json_tables_colour_and_exit_codes_against_a_node() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node(
        "cli1",
        &dir.path().join("cli1"),
        &[],
        &fast_config(""),
        Some(BOOT),
    );
    let admin = node.admin.as_str();
    let http = reqwest::Client::new();
    let api = |path: &'static str| {
        let http = http.clone();
        let url = format!("{admin}{path}");
        async move {
            http.get(url)
                .bearer_auth(BOOT)
                .send()
                .await
                .expect("GET")
                .json::<Value>()
                .await
                .expect("json")
        }
    };

    // A service and a token, so their tables have times in them.
    let svc = dir.path().join("coder.json");
    std::fs::write(
        &svc,
        r#"{"id": "coder-1", "tasks": ["llm.code"], "model_family": "qwen",
            "context_window": 128000, "latency_ms_p50": 90, "latency_ms_p99": 150,
            "price_micros_per_1k": 500}"#,
    )
    .expect("write");
    ok(&ctl(admin, Some(BOOT), &["service", "register", "--file"])
        .arg(&svc)
        .output()
        .expect("run"));
    ok(&ctl(
        admin,
        Some(BOOT),
        &[
            "acl",
            "token",
            "create",
            "--scope",
            "read",
            "--description",
            "ci",
        ],
    )
    .output()
    .expect("run"));

    // --json: the API's JSON, pretty-printed, in the server's member order, nothing else.
    for (args, path, first_key) in [
        (&["node"][..], "/v1/node", "id"),
        (&["members"][..], "/v1/members", "members"),
        (&["actors"][..], "/v1/actors", "name"),
        (&["service", "list"][..], "/v1/services", "scope"),
        (&["acl", "token", "list"][..], "/v1/acl/tokens", "tokens"),
        (
            &["service", "list", "--local"][..],
            "/v1/services?scope=local",
            "scope",
        ),
    ] {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = ctl(admin, Some(BOOT), &full).output().expect("run");
        let text = ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}\n{text}"));
        assert!(
            text.starts_with(&format!("{{\n  \"{first_key}\": ")),
            "{args:?} is not pretty-printed in the API's order:\n{text}"
        );
        let direct = api(path).await;
        match path {
            // Counters and uptimes move between the two reads: compare what does not.
            "/v1/node" => assert_eq!(v["id"], direct["id"]),
            "/v1/actors" => assert_eq!(
                v["children"].as_array().map(Vec::len),
                direct["children"].as_array().map(Vec::len)
            ),
            p if p.starts_with("/v1/services") => assert_eq!(
                v["services"][0]["service"]["id"],
                direct["services"][0]["service"]["id"]
            ),
            _ => assert_eq!(v, direct, "{args:?}"),
        }
    }

    // Tables: RFC 3339 UTC times with a relative age.
    let rfc3339 = |s: &str, word: &str| {
        s.lines().any(|l| {
            l.contains(word)
                && l.split_whitespace().any(|w| {
                    w.len() == 20
                        && w.ends_with('Z')
                        && w.as_bytes()[4] == b'-'
                        && w.as_bytes()[10] == b'T'
                        && w.as_bytes()[13] == b':'
                })
        })
    };
    let services = ok(&ctl(admin, Some(BOOT), &["service", "list"])
        .output()
        .expect("run"));
    assert!(rfc3339(&services, "coder-1"), "{services}");
    assert!(
        services.contains("(in "),
        "lease expiry is in the future:\n{services}"
    );
    let tokens = ok(&ctl(admin, Some(BOOT), &["acl", "token", "list"])
        .output()
        .expect("run"));
    assert!(rfc3339(&tokens, "ci"), "{tokens}");
    assert!(
        tokens.contains(" ago)") || tokens.contains("(now)"),
        "{tokens}"
    );
    let node_table = ok(&ctl(admin, Some(BOOT), &["node"]).output().expect("run"));
    assert!(rfc3339(&node_table, "started"), "{node_table}");

    // Colour: none through a pipe; on a terminal, states are coloured unless NO_COLOR is set.
    let members = ok(&ctl(admin, Some(BOOT), &["members"]).output().expect("run"));
    assert!(
        members.contains("alive") && !members.contains('\x1b'),
        "{members:?}"
    );
    let tty = on_terminal(&ctl(admin, Some(BOOT), &["members"]), false);
    assert!(tty.contains("\x1b[32malive\x1b[0m"), "{tty:?}");
    let tty_no_color = on_terminal(&ctl(admin, Some(BOOT), &["members"]), true);
    assert!(
        tty_no_color.contains("alive") && !tty_no_color.contains('\x1b'),
        "{tty_no_color:?}"
    );
    let tty_json = on_terminal(&ctl(admin, Some(BOOT), &["--json", "members"]), false);
    assert!(!tty_json.contains('\x1b'), "{tty_json:?}");

    // A reader that stops early (`| head -1`): a quiet exit 0, not a panic on the closed pipe.
    let mut child = ctl(admin, Some(BOOT), &["--json", "members"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // closed before the command has had time to print
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Exit codes.
    let code = |cmd: &mut Command| {
        let out = cmd.output().expect("run");
        assert!(
            out.stdout.is_empty(),
            "an error printed to stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    // 1: the node answered 404.
    let (c, e) = code(&mut ctl(
        admin,
        Some(BOOT),
        &["acl", "token", "revoke", "nosuchaccessor"],
    ));
    assert_eq!(c, Some(1), "{e}");
    assert!(e.starts_with("error: ") && e.contains("404"), "{e}");
    // 2: a bad flag (clap), and bad local input.
    let (c, e) = code(&mut ctl(admin, Some(BOOT), &["members", "--no-such-flag"]));
    assert_eq!(c, Some(2), "{e}");
    let (c, e) = code(&mut ctl(
        admin,
        Some(BOOT),
        &["resolve", "--task", "x", "--prefer", "latency"],
    ));
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("NAME=WEIGHT"), "{e}");
    let (c, e) = code(&mut ctl(
        admin,
        Some(BOOT),
        &["service", "register", "--file", "/nonexistent.toml"],
    ));
    assert_eq!(c, Some(2), "{e}");
    // 3: nothing listens (a port just released).
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", free.local_addr().expect("addr"));
    drop(free);
    let (c, e) = code(&mut ctl(&dead, Some(BOOT), &["members"]));
    assert_eq!(c, Some(3), "{e}");
    assert!(e.contains("cannot reach"), "{e}");
    // 4: no token, a wrong token (401), a token without the scope (403).
    let (c, e) = code(&mut ctl(admin, None, &["members"]));
    assert_eq!(c, Some(4), "{e}");
    let (c, e) = code(&mut ctl(
        admin,
        Some("wrong-token-wrong-token"),
        &["members"],
    ));
    assert_eq!(c, Some(4), "{e}");
    let read = ok(&ctl(
        admin,
        Some(BOOT),
        &["--json", "acl", "token", "create", "--scope", "read"],
    )
    .output()
    .expect("run"));
    let read: Value = serde_json::from_str(&read).expect("json");
    let secret = read["secret"].as_str().expect("secret");
    let (c, e) = code(&mut ctl(admin, Some(secret), &["acl", "token", "list"]));
    assert_eq!(c, Some(4), "{e}");
    assert!(e.contains("403"), "{e}");
    // --json changes nothing about errors: still stderr and the same code.
    let (c, _) = code(&mut ctl(admin, None, &["--json", "members"]));
    assert_eq!(c, Some(4));
}

/// `2026-12-07T14:03:11Z`: a UTC RFC 3339 time to the second.
fn is_rfc3339(w: &str) -> bool {
    let b = w.as_bytes();
    w.len() == 20
        && w.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && w.chars().filter(char::is_ascii_digit).count() == 14
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_tables_show_rfc3339_times_and_revocations() {
    let dir = tempfile::tempdir().expect("tmp");
    let (voters, _) = ca_common::start_three_voters(&ca_common::http(), dir.path()).await;
    let admin = voters[0].node.admin.as_str();
    let key = "ab".repeat(32);
    let issue = [
        "ca",
        "issue",
        "--subject-key",
        &key,
        "--kind",
        "agent",
        "--publisher",
        "cli",
        "--validity-s",
        "7200",
    ];
    let issued = ok(&ctl(admin, None, &[&["--json"][..], &issue[..]].concat())
        .output()
        .expect("run"));
    let issued: Value = serde_json::from_str(&issued).expect("json");
    let serial = issued["serial"].as_u64().expect("serial").to_string();
    let not_after_ms = issued["mic"]["body"]["not_after_ms"].as_u64().expect("ms");
    ok(&ctl(
        admin,
        None,
        &["ca", "revoke", &serial, "--reason", "superseded"],
    )
    .output()
    .expect("run"));

    // The list: NOT AFTER as RFC 3339, about two hours ahead; REVOKED names the reason.
    let list = ok(&ctl(admin, None, &["ca", "list"]).output().expect("run"));
    let row = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(serial.as_str()))
        .unwrap_or_else(|| panic!("no row for {serial}:\n{list}"));
    let time = row
        .split_whitespace()
        .find(|w| is_rfc3339(w))
        .unwrap_or_else(|| panic!("no RFC 3339 time in {row:?}"));
    let seconds = i64::try_from(not_after_ms / 1000).expect("fits");
    let expected = chrono::DateTime::from_timestamp(seconds, 0)
        .expect("valid")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(time, expected, "{row}");
    assert!(row.contains("(in 1h)") || row.contains("(in 2h)"), "{row}");
    assert!(row.contains("superseded"), "{row}");
    assert!(
        !list.contains(&not_after_ms.to_string()),
        "raw milliseconds in:\n{list}"
    );

    // The revocation: when, as RFC 3339 in the past (or now).
    let revocations = ok(&ctl(admin, None, &["ca", "revocations"])
        .output()
        .expect("run"));
    let line = revocations
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{revocations}"));
    assert!(
        line.split_whitespace().filter(|w| is_rfc3339(w)).count() == 2,
        "{line}"
    );
    assert!(line.contains(" ago)") || line.contains("(now)"), "{line}");

    // One certificate: both ends of its validity and the revocation time.
    let one = ok(&ctl(admin, None, &["ca", "get", &serial])
        .output()
        .expect("run"));
    for field in ["not before:", "not after:", "revoked:"] {
        let line = one
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in\n{one}"));
        assert!(line.split_whitespace().any(is_rfc3339), "{line}");
    }

    // --json is the API's own JSON: milliseconds, unchanged.
    let json = ok(&ctl(admin, None, &["--json", "ca", "get", &serial])
        .output()
        .expect("run"));
    let v: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["mic"]["body"]["not_after_ms"], not_after_ms);

    // On a terminal the revocation reason is red; through NO_COLOR it is plain.
    let tty = on_terminal(&ctl(admin, None, &["ca", "list"]), false);
    assert!(tty.contains("\x1b[31msuperseded\x1b[0m"), "{tty:?}");
    let plain = on_terminal(&ctl(admin, None, &["ca", "list"]), true);
    assert!(!plain.contains('\x1b'), "{plain:?}");

    // A serial that does not exist: the node answers 404, exit 1.
    let out = ctl(admin, None, &["ca", "get", "999999"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}
