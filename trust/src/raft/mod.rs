//! The CA on openraft 0.9: type config, seeded runtime, sled storage, TCP transport, node handle.
