//! Independent verification: proofs and verifying keys exported as snarkjs JSON are checked by
//! `snarkjs groth16 verify` (snarkjs 0.7.6, pinned in `trust/core/snarkjs/package-lock.json`).
//!
//! Needs `node` and the npm-installed snarkjs under `trust/core/snarkjs/node_modules` (`.ci/run` runs
//! `npm ci --prefix trust/core/snarkjs`; if it is missing this test runs that itself). Without `npm`
//! the test fails with a message saying so; it never passes without running snarkjs.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use nexus_trust_core::zk::{
    Opening, Predicate, Properties, Verifier, prove, setup, snarkjs as export,
};
use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

fn snarkjs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snarkjs")
}

/// The snarkjs CLI script, installing it with `npm ci` first if needed.
fn snarkjs_cli() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = snarkjs_dir();
    let cli = dir.join("node_modules/snarkjs/build/cli.cjs");
    if !cli.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "snarkjs is not installed under {} and `npm` could not be run ({e}); install \
                     Node.js + npm, then `npm ci --prefix trust/core/snarkjs`",
                    dir.display()
                )
            });
        assert!(
            status.success(),
            "`npm ci --prefix {}` failed: {status}",
            dir.display()
        );
        assert!(
            cli.exists(),
            "npm ci succeeded but {} is missing",
            cli.display()
        );
    }
    cli
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn snarkjs_verify(vk: &Path, public: &Path, proof: &Path) -> Output {
    let cli = snarkjs_cli();
    Command::new("node")
        .arg(&cli)
        .args(["groth16", "verify"])
        .args([vk, public, proof])
        .output()
        .unwrap_or_else(|e| panic!("could not run `node` ({e}); Node.js is required for this test"))
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn snarkjs_accepts_exported_proofs_and_rejects_tampered_inputs() {
    let keys = setup(&mut StdRng::seed_from_u64(11)).unwrap();
    let pk = keys.proving_key().unwrap();
    let vk = keys.verifying_key().unwrap();
    let opening = Opening::new(
        Properties::new(912, true, 0xD5).unwrap(),
        &mut StdRng::seed_from_u64(12),
    );
    let predicate = Predicate {
        min_score: 900,
        require_safety: true,
    };
    let proof = prove(&pk, &opening, &predicate, &mut StdRng::seed_from_u64(13)).unwrap();
    let commitment = opening.commitment();
    // Our own verifier agrees first.
    Verifier::default()
        .verify(&keys.verifying_key, &commitment, &predicate, &proof)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let vk_json = export::verification_key_json(&vk);
    assert_eq!(vk_json["nPublic"], 3);
    assert_eq!(vk_json["IC"].as_array().unwrap().len(), 4);
    let vk_path = write_json(dir.path(), "verification_key.json", &vk_json);
    let proof_path = write_json(dir.path(), "proof.json", &export::proof_json(&proof));
    let public = export::public_json(&commitment, &predicate);
    assert_eq!(public[1], "900");
    assert_eq!(public[2], "1");
    let public_path = write_json(dir.path(), "public.json", &public);

    let ok = snarkjs_verify(&vk_path, &public_path, &proof_path);
    assert!(
        ok.status.success(),
        "snarkjs rejected a valid proof: {}",
        describe(&ok)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("OK"),
        "snarkjs did not print OK: {}",
        describe(&ok)
    );

    // Tampered public input: a stronger predicate than the one proven.
    let tampered = export::public_json(
        &commitment,
        &Predicate {
            min_score: 950,
            require_safety: true,
        },
    );
    let tampered_path = write_json(dir.path(), "public-tampered.json", &tampered);
    let bad = snarkjs_verify(&vk_path, &tampered_path, &proof_path);
    assert!(
        !bad.status.success(),
        "snarkjs accepted a tampered public input: {}",
        describe(&bad)
    );

    // Tampered commitment (another opening of the same properties).
    let other = Opening::new(opening.properties, &mut StdRng::seed_from_u64(14)).commitment();
    let other_path = write_json(
        dir.path(),
        "public-other-commitment.json",
        &export::public_json(&other, &predicate),
    );
    let bad = snarkjs_verify(&vk_path, &other_path, &proof_path);
    assert!(
        !bad.status.success(),
        "snarkjs accepted a proof for another commitment: {}",
        describe(&bad)
    );
}
