//! Thin adapters over the other pure cores, one per crate, so a change of their API touches
//! one small file here. Nothing in them decides anything; `cluster.rs` does.
pub mod check;
pub mod crdt;
pub mod ownership;
pub mod swim;
