//! Sans-IO capability registry for Nexus (being built: see the registry issue).
#![deny(missing_docs)]
