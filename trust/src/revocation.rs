//! Signed revocation deltas and the revocation set every node keeps.
