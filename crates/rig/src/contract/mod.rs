//! What a run and its tests agree on, as data: `env.json`, the scenario
//! files, the delivery modes, the results table, rotations and faults as
//! recorded, and the reports built from them. **Imports only `base`**: no
//! Vault, no process, no profile; a test reads these types without starting
//! anything.

pub mod case;
pub mod conformance;
pub mod env;
pub mod environments;
pub mod fault;
pub mod gateway_docs;
pub mod gateways;
pub mod identity;
pub mod modes;
pub mod once;
pub mod records;
pub mod references;
pub mod report;
pub mod rotation;
pub mod scenario;
