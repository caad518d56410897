//! Model Identity Certificates: the binary format, signing and verification (`docs/trust.md`).
