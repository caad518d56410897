//! Groth16 attestations over Poseidon commitments (BN254).
