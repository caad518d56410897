//! `nexus ctl ca …` (the certificate authority) and `nexus ctl attest …` (ZK attestations over a
//! MIC's committed properties).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use nexus_trust::mic::{Claim, IssueRequest, ModelIdentity};
use nexus_trust::revocation::RevocationReason;
use nexus_trust::zk::{self, Attestation, Commitment, Opening, Predicate, Properties};
use serde::Serialize;
use serde_json::{Value, json};

use super::output::{now_ms, time_ms};
use super::{Client, Table, print_json, usage};
use crate::api::ca::{
    AddVoterRequest, CaKeysDto, CaStatusDto, CircuitDto, MicDto, MicList, ProvingKeyDto,
    RenewRequest, RevocationDto, RevocationList, RevokeRequest, VotersDto,
};

/// `nexus ctl ca` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum CaCommand {
    /// The CA group's status as this node sees it.
    Status,
    /// Issue a certificate (from `--file`, or from the flags).
    Issue(IssueArgs),
    /// Show one certificate.
    Get {
        /// Serial.
        serial: u64,
    },
    /// List certificates with serials above `--after`.
    List {
        /// Exclusive lower bound.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Page size (1–1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Renew a certificate (a new serial; the old one goes into its provenance).
    Renew {
        /// Serial.
        serial: u64,
        /// Lifetime of the new certificate, seconds [default: the renewed one's].
        #[arg(long)]
        validity_s: Option<u64>,
    },
    /// Revoke a certificate (idempotent); every node learns it through gossip.
    Revoke {
        /// Serial.
        serial: u64,
        /// `unspecified`, `key_compromise`, `superseded`, `cessation_of_operation` or
        /// `privilege_withdrawn`.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// List revocation records with seq above `--after`.
    Revocations {
        /// Exclusive lower bound on seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// The CA's public keys and circuits.
    Keys,
    /// Add or remove CA voters.
    #[command(subcommand)]
    Voters(VotersCommand),
}

/// `nexus ctl ca voters` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum VotersCommand {
    /// Add a voter (a node running with `[ca] voter = true`).
    Add {
        /// Its node id (64 hex digits).
        #[arg(long)]
        node: String,
        /// Its Raft address [default: what it advertises in membership].
        #[arg(long)]
        raft_addr: Option<String>,
    },
    /// Remove a voter by node id (hex) or Raft id (decimal).
    Remove {
        /// Node id or Raft id.
        id: String,
    },
}

/// `nexus ctl ca issue` flags.
#[derive(Args, Debug, Clone)]
pub struct IssueArgs {
    /// An IssueRequest JSON file (docs/trust.md); the other flags are then ignored.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["subject_key", "kind", "publisher"])]
    pub file: Option<PathBuf>,
    /// The subject's Ed25519 public key, 64 hex digits.
    #[arg(long, required_unless_present = "file")]
    pub subject_key: Option<String>,
    /// `node`, `model` or `agent`.
    #[arg(long, required_unless_present = "file")]
    pub kind: Option<String>,
    /// Publisher name.
    #[arg(long, required_unless_present = "file")]
    pub publisher: Option<String>,
    /// Model architecture hash (64 hex digits; models).
    #[arg(long, requires = "weights_commitment")]
    pub arch_hash: Option<String>,
    /// Commitment to the weights (64 hex digits; models).
    #[arg(long, requires = "arch_hash")]
    pub weights_commitment: Option<String>,
    /// Capability claim `KEY=VALUE` (repeatable).
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    pub claims: Vec<String>,
    /// Parent serial (repeatable).
    #[arg(long = "provenance", value_name = "SERIAL")]
    pub provenance: Vec<u64>,
    /// Poseidon commitment to hidden properties (64 hex digits; see `nexus ctl attest commit`).
    #[arg(long)]
    pub zk_commitment: Option<String>,
    /// Lifetime, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub validity_s: u64,
    /// Idempotency key (32 hex digits): a retry returns the same certificate.
    #[arg(long)]
    pub request_id: Option<String>,
}

impl IssueArgs {
    /// The request the API takes (`POST /v1/ca/certs`), read from `--file` or built from the
    /// flags; every field is parsed here, so a malformed flag fails before the node is asked.
    pub fn to_request(&self) -> anyhow::Result<IssueRequest> {
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut de = serde_json::Deserializer::from_str(&text);
            return serde_path_to_error::deserialize(&mut de)
                .with_context(|| format!("{} is not an IssueRequest", path.display()));
        }
        let required = |flag: &str, v: &Option<String>| {
            v.clone()
                .ok_or_else(|| anyhow::anyhow!("--{flag} is required without --file"))
        };
        let claims = self
            .claims
            .iter()
            .map(|c| {
                let (key, value) = c
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--claim {c:?} is not KEY=VALUE"))?;
                Ok(Claim {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let model = match (&self.arch_hash, &self.weights_commitment) {
            (Some(a), Some(w)) => Some(ModelIdentity {
                arch_hash: hex_flag("arch-hash", a)?,
                weights_commitment: hex_flag("weights-commitment", w)?,
            }),
            _ => None,
        };
        Ok(IssueRequest {
            request_id: self
                .request_id
                .as_deref()
                .map(|r| hex_flag("request-id", r))
                .transpose()?,
            subject_key: hex_flag("subject-key", &required("subject-key", &self.subject_key)?)?,
            kind: wire_flag("kind", &required("kind", &self.kind)?)?,
            model,
            publisher: required("publisher", &self.publisher)?,
            provenance: self.provenance.clone(),
            claims,
            zk_commitment: self
                .zk_commitment
                .as_deref()
                .map(|z| hex_flag("zk-commitment", z))
                .transpose()?,
            validity_ms: self.validity_s.saturating_mul(1000),
        })
    }
}

/// A flag's value as `N` bytes of hex.
fn hex_flag<const N: usize>(flag: &str, text: &str) -> anyhow::Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|e| anyhow::anyhow!("--{flag}: expected {} hex digits: {e}", 2 * N))?;
    Ok(out)
}

/// A flag's value as an enum the API names by its wire name (`model`, `key_compromise`); the
/// error lists the names it takes.
fn wire_flag<T: serde::de::DeserializeOwned>(flag: &str, text: &str) -> anyhow::Result<T> {
    use serde::de::IntoDeserializer;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        text.into_deserializer();
    T::deserialize(de).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

/// `nexus ctl attest` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum AttestCommand {
    /// Commit to hidden model properties: writes the opening (keep it secret) and prints the
    /// commitment to put in the model's MIC (`ca issue --zk-commitment`).
    Commit {
        /// Benchmark score, per mille (0–1000; 850 = 85.0 %).
        #[arg(long)]
        score: u16,
        /// The safety evaluation passed.
        #[arg(long)]
        safety: bool,
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
        /// Where to write the opening (hex).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Prove a predicate over an opening with the CA's proving key; prints the attestation (hex)
    /// after checking it against the CA's verifying key.
    Prove {
        /// The opening file `attest commit` wrote.
        #[arg(long, value_name = "PATH")]
        opening: PathBuf,
        /// Lowest score the predicate claims, per mille.
        #[arg(long)]
        min_score: u16,
        /// The predicate also claims a passed safety evaluation.
        #[arg(long)]
        require_safety: bool,
    },
    /// Export for snarkjs: `verification_key.json`, and with `--attestation` and `--commitment`
    /// also `proof.json` and `public.json` (`snarkjs groth16 verify` checks them).
    Export {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        snarkjs: PathBuf,
        /// An attestation (hex) to export.
        #[arg(long, requires = "commitment")]
        attestation: Option<String>,
        /// The commitment (hex) the attestation is about.
        #[arg(long, requires = "attestation")]
        commitment: Option<String>,
    },
}

fn print_json_or(json: bool, raw: &str, human: impl FnOnce()) {
    if json {
        print_json(raw);
    } else {
        human();
    }
}

/// A value as its JSON text (`null` for `None`): how the tables show numbers, lists and
/// absent values.
fn js<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// An enum's wire name (`key_compromise`, `model`), as the API spells it.
fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(name)) => name,
        _ => js(v),
    }
}

fn cert_line(m: &MicDto, now_ms: u64) -> Vec<String> {
    let b = &m.mic.body;
    vec![
        m.serial.to_string(),
        wire_name(&b.kind),
        hex::encode(b.subject_key).chars().take(12).collect(),
        b.publisher.clone(),
        time_ms(b.not_after_ms, now_ms),
        if b.zk_commitment.is_none() {
            "-"
        } else {
            "yes"
        }
        .to_owned(),
        m.revocation
            .as_ref()
            .map_or_else(|| "-".to_owned(), |r| wire_name(&r.reason)),
    ]
}

/// The certificate table (`ca list`, `ca get`); REVOKED (the reason) is red on a terminal.
fn cert_table(certs: &[MicDto]) -> Table {
    let now = now_ms();
    let mut t = Table::new(&[
        "SERIAL",
        "KIND",
        "SUBJECT",
        "PUBLISHER",
        "NOT AFTER",
        "ZK",
        "REVOKED",
    ])
    .alarm_column("REVOKED");
    t.extend(certs.iter().map(|m| cert_line(m, now)));
    t
}

/// The `ca status` summary.
pub fn status_table(s: &CaStatusDto) -> Table {
    let r = &s.raft;
    Table::fields(vec![
        ("this node", if s.voter { "voter" } else { "client" }.into()),
        ("raft id", s.raft_id.to_string()),
        ("role (answering member)", wire_name(&r.role).to_lowercase()),
        ("term", r.term.to_string()),
        (
            "leader",
            format!(
                "{} at {}",
                js(&r.leader),
                r.leader_addr.as_deref().unwrap_or("?")
            ),
        ),
        ("voters", js(&r.voters)),
        ("last applied", js(&r.last_applied_index)),
        ("bootstrapped", s.bootstrapped.to_string()),
        ("certificates", js(&s.mics)),
        ("revocations", js(&s.revocations)),
    ])
}

/// Runs `nexus ctl ca …`.
pub async fn ca(client: &Client, command: CaCommand, json: bool) -> anyhow::Result<()> {
    match command {
        CaCommand::Status => {
            let (s, raw): (CaStatusDto, _) = client.get("/v1/ca/status").await?;
            print_json_or(json, &raw, || out!("{}", status_table(&s)));
        }
        CaCommand::Issue(args) => {
            let body = args.to_request().map_err(usage)?;
            let (m, raw): (MicDto, _) = client.post("/v1/ca/certs", &body).await?;
            print_json_or(json, &raw, || {
                outln!("issued serial {} ({})", m.serial, m.fingerprint);
            });
        }
        CaCommand::Get { serial } => {
            let (m, raw): (MicDto, _) = client.get(&format!("/v1/ca/certs/{serial}")).await?;
            print_json_or(json, &raw, || {
                let b = &m.mic.body;
                let now = now_ms();
                out!("{}", cert_table(std::slice::from_ref(&m)));
                outln!("not before: {}", time_ms(b.not_before_ms, now));
                outln!("not after:  {}", time_ms(b.not_after_ms, now));
                if let Some(r) = &m.revocation {
                    outln!("revoked:    {}", time_ms(r.revoked_at_ms, now));
                }
                outln!("encoded: {}", m.encoded);
            });
        }
        CaCommand::List { after, limit } => {
            let (l, raw): (MicList, _) = client
                .get(&format!("/v1/ca/certs?after={after}&limit={limit}"))
                .await?;
            if json {
                print_json(&raw);
                return Ok(());
            }
            // The list carries no revocations (only `GET /v1/ca/certs/{serial}` does): join the
            // revocation records in, so REVOKED is true for every row.
            let revoked = revocations_by_serial(client).await?;
            let mut certs = l.certs;
            for m in &mut certs {
                if m.revocation.is_none() {
                    m.revocation = revoked.get(&m.serial).cloned();
                }
            }
            print_json_or(false, &raw, || {
                out!("{}", cert_table(&certs));
                if let Some(next) = l.next_after {
                    outln!("more: --after {next}");
                }
            });
        }
        CaCommand::Renew { serial, validity_s } => {
            let body = RenewRequest {
                validity_ms: validity_s.map(|s| s.saturating_mul(1000)),
            };
            let (m, raw): (MicDto, _) = client
                .post(&format!("/v1/ca/certs/{serial}/renew"), &body)
                .await?;
            print_json_or(json, &raw, || {
                outln!("renewed {serial} as serial {}", m.serial)
            });
        }
        CaCommand::Revoke { serial, reason } => {
            let body = RevokeRequest {
                reason: Some(wire_flag::<RevocationReason>("reason", &reason).map_err(usage)?),
            };
            let (r, raw): (RevocationDto, _) = client
                .post(&format!("/v1/ca/certs/{serial}/revoke"), &body)
                .await?;
            print_json_or(json, &raw, || {
                let rev = &r.revocation;
                outln!(
                    "revoked serial {} (seq {}, reason {})",
                    rev.serial,
                    rev.seq,
                    wire_name(&rev.reason)
                );
            });
        }
        CaCommand::Revocations { after } => {
            let (l, raw): (RevocationList, _) = client
                .get(&format!("/v1/ca/revocations?after={after}"))
                .await?;
            print_json_or(json, &raw, || {
                let now = now_ms();
                let rows: Vec<Vec<String>> = l
                    .revocations
                    .iter()
                    .map(|r| {
                        vec![
                            r.seq.to_string(),
                            r.serial.to_string(),
                            wire_name(&r.reason),
                            time_ms(r.revoked_at_ms, now),
                            time_ms(r.not_after_ms, now),
                        ]
                    })
                    .collect();
                let mut t = Table::new(&["SEQ", "SERIAL", "REASON", "REVOKED AT", "NOT AFTER"]);
                t.extend(rows);
                out!("{t}");
            });
        }
        CaCommand::Keys => {
            let (k, raw): (CaKeysDto, _) = client.get("/v1/ca/keys").await?;
            print_json_or(json, &raw, || {
                for key in &k.keys {
                    outln!("CA key {}: {}", key.ca_key_id, hex::encode(key.public_key));
                }
                for c in &k.circuits {
                    outln!("circuit {}: verifying key {}", c.id, c.verifying_key_id);
                }
            });
        }
        CaCommand::Voters(VotersCommand::Add { node, raft_addr }) => {
            let body = AddVoterRequest { node, raft_addr };
            let (v, raw): (VotersDto, _) = client.post("/v1/ca/voters", &body).await?;
            print_json_or(json, &raw, || outln!("voters: {}", js(&v.voters)));
        }
        CaCommand::Voters(VotersCommand::Remove { id }) => {
            let (v, raw): (VotersDto, _) = client.delete(&format!("/v1/ca/voters/{id}")).await?;
            print_json_or(json, &raw, || outln!("voters: {}", js(&v.voters)));
        }
    }
    Ok(())
}

/// Every revocation record by serial, read page by page (at most `REVOCATION_PAGES_MAX` pages).
async fn revocations_by_serial(
    client: &Client,
) -> anyhow::Result<std::collections::BTreeMap<u64, nexus_trust::revocation::SignedRevocation>> {
    const REVOCATION_PAGES_MAX: usize = 100;
    let mut by_serial = std::collections::BTreeMap::new();
    let mut after = 0u64;
    for _ in 0..REVOCATION_PAGES_MAX {
        let (page, _): (RevocationList, _) = client
            .get(&format!("/v1/ca/revocations?after={after}"))
            .await?;
        for r in page.revocations {
            by_serial.insert(r.serial, r);
        }
        match page.next_after {
            Some(next) if next > after => after = next,
            _ => break,
        }
    }
    Ok(by_serial)
}

fn read_hex_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))
}

/// The commitment to `properties` under a fresh salt: the opening (secret) and its commitment.
pub fn commit(properties: Properties) -> (Opening, Commitment) {
    // The salt (fresh from the OS) hides the values behind the commitment.
    let mut rng = rand_08::rngs::OsRng;
    let opening = Opening::new(properties, &mut rng);
    let commitment = opening.commitment();
    (opening, commitment)
}

/// Proves `predicate` over `opening` with the CA's attestation circuit keys fetched from
/// `client`, and checks the proof against the CA's verifying key before returning it.
pub async fn prove(
    client: &Client,
    opening: &Opening,
    predicate: Predicate,
) -> anyhow::Result<Attestation> {
    let circuit = zk::ATTESTATION_CIRCUIT_ID;
    let (pk, _): (ProvingKeyDto, _) = client
        .get(&format!("/v1/ca/circuits/{circuit}/proving-key"))
        .await?;
    let (vk, _): (CircuitDto, _) = client.get(&format!("/v1/ca/circuits/{circuit}")).await?;
    let pk = hex::decode(pk.proving_key).context("the CA's proving key is not hex")?;
    let vk = hex::decode(vk.verifying_key).context("the CA's verifying key is not hex")?;
    let opening = *opening;
    let attestation = tokio::task::spawn_blocking(move || -> anyhow::Result<Attestation> {
        let pk = zk::ProvingKey::from_bytes(&pk).context("parsing the proving key")?;
        let attestation = Attestation::create(
            circuit,
            &pk,
            &opening,
            &predicate,
            &mut rand_08::rngs::OsRng,
        )?;
        let mut verifier = zk::Verifier::new(1);
        verifier
            .verify_attestation(circuit, &vk, &opening.commitment(), &attestation)
            .context("the proof does not verify under the CA's verifying key")?;
        Ok(attestation)
    })
    .await
    .context("prover task")??;
    Ok(attestation)
}

/// Runs `nexus ctl attest …`.
pub async fn attest(client: &Client, command: AttestCommand, json: bool) -> anyhow::Result<()> {
    match command {
        AttestCommand::Commit {
            score,
            safety,
            dataset,
            out,
        } => {
            let properties = Properties::new(score, safety, dataset).map_err(usage)?;
            let (opening, commitment) = commit(properties);
            write_secret(&out, &hex::encode(opening.encode()))?;
            let c = hex::encode(commitment.to_bytes());
            if json {
                print_json(&json!({"commitment": c, "opening": out}).to_string());
            } else {
                outln!("commitment {c}");
                outln!("opening written to {} (keep it secret)", out.display());
            }
        }
        AttestCommand::Prove {
            opening,
            min_score,
            require_safety,
        } => {
            let opening = read_hex_file(&opening)
                .and_then(|b| Ok(Opening::decode(&b)?))
                .map_err(usage)?;
            let predicate = Predicate {
                min_score,
                require_safety,
            };
            if let Err(v) = predicate.check(&opening.properties) {
                return Err(usage(anyhow::anyhow!(
                    "the predicate is false for this opening: {v}"
                )));
            }
            let attestation = prove(client, &opening, predicate).await?;
            let a = hex::encode(attestation.encode());
            if json {
                print_json(
                    &json!({"attestation": a, "commitment": hex::encode(opening.commitment().to_bytes())})
                        .to_string(),
                );
            } else {
                outln!("{a}");
            }
        }
        AttestCommand::Export {
            snarkjs,
            attestation,
            commitment,
        } => {
            std::fs::create_dir_all(&snarkjs)
                .with_context(|| format!("creating {}", snarkjs.display()))
                .map_err(usage)?;
            // Parse the inputs before asking the node anything.
            let parsed = match (attestation, commitment) {
                (Some(a), Some(c)) => Some(parse_attestation(&a, &c).map_err(usage)?),
                _ => None,
            };
            let circuit = zk::ATTESTATION_CIRCUIT_ID;
            // Written as the node sent it (snarkjs's own layout); only checked to be JSON.
            let (_, raw): (serde::de::IgnoredAny, _) = client
                .get(&format!("/v1/ca/circuits/{circuit}?format=snarkjs"))
                .await?;
            let mut written = vec![write_file(&snarkjs.join("verification_key.json"), &raw)?];
            if let Some((a, c)) = parsed {
                let proof = a.parsed_proof()?;
                written.push(write_file(
                    &snarkjs.join("proof.json"),
                    &zk::snarkjs::proof_json(&proof).to_string(),
                )?);
                written.push(write_file(
                    &snarkjs.join("public.json"),
                    &zk::snarkjs::public_json(&c, &a.predicate).to_string(),
                )?);
            }
            if json {
                let paths: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
                print_json(&json!({ "written": paths }).to_string());
            } else {
                for p in written {
                    outln!("wrote {}", p.display());
                }
            }
        }
    }
    Ok(())
}

/// `--attestation` and `--commitment` (hex) of `attest export`.
fn parse_attestation(a: &str, c: &str) -> anyhow::Result<(Attestation, Commitment)> {
    let a = Attestation::decode(&hex::decode(a.trim()).context("--attestation is not hex")?)?;
    let c = Commitment::from_slice(&hex::decode(c.trim()).context("--commitment is not hex")?)?;
    Ok((a, c))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Writes `text` to a new file readable only by its owner (an opening reveals the properties).
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_flags_become_an_issue_request() {
        let args = IssueArgs {
            file: None,
            subject_key: Some("ab".repeat(32)),
            kind: Some("model".into()),
            publisher: Some("acme".into()),
            arch_hash: Some("01".repeat(32)),
            weights_commitment: Some("02".repeat(32)),
            claims: vec!["task=code".into()],
            provenance: vec![3],
            zk_commitment: None,
            validity_s: 60,
            request_id: None,
        };
        let req = args.to_request().expect("request");
        assert_eq!(req.validity_ms, 60_000);
        assert_eq!(req.subject_key, [0xab; 32]);
        assert_eq!(req.kind, nexus_trust::mic::SubjectKind::Model);
        assert_eq!(req.claims[0].key, "task");
        assert_eq!(req.model.map(|m| m.weights_commitment), Some([2; 32]));
        // What the CLI sends is what the server reads.
        let wire = serde_json::to_string(&req).expect("json");
        assert_eq!(
            serde_json::from_str::<IssueRequest>(&wire).expect("back"),
            req
        );
        let bad = IssueArgs {
            claims: vec!["novalue".into()],
            ..args.clone()
        };
        assert!(bad.to_request().is_err());
        let bad_kind = IssueArgs {
            kind: Some("robot".into()),
            ..args.clone()
        };
        let e = bad_kind.to_request().expect_err("kind").to_string();
        assert!(e.contains("--kind") && e.contains("agent"), "{e}");
        let short_key = IssueArgs {
            subject_key: Some("ab".into()),
            ..args
        };
        let e = short_key.to_request().expect_err("key").to_string();
        assert!(e.contains("--subject-key") && e.contains("64 hex"), "{e}");
        assert_eq!(
            wire_flag::<RevocationReason>("reason", "key_compromise").expect("reason"),
            RevocationReason::KeyCompromise
        );
        assert!(wire_flag::<RevocationReason>("reason", "bored").is_err());
    }

    #[test]
    fn a_commitment_opens_to_its_properties() {
        let props = Properties::new(850, true, 7).expect("props");
        let (opening, commitment) = commit(props);
        let back = Opening::decode(&opening.encode()).expect("decode");
        assert_eq!(back.commitment(), commitment);
        assert!(
            Predicate {
                min_score: 800,
                require_safety: true
            }
            .check(&back.properties)
            .is_ok()
        );
        assert!(
            Predicate {
                min_score: 900,
                require_safety: false
            }
            .check(&back.properties)
            .is_err()
        );
    }
}
