//! stele-fuzz: every decoder that bytes from outside reach, fed arbitrary and mutated
//! valid inputs, checked for panics and for how much each decode allocates.
//!
//! [`alloc::Counting`] is the global allocator of the fuzz binary and of this crate's
//! tests: it counts the bytes each thread holds, so one decode's peak can be asserted.

pub mod alloc;
pub mod corpus;
pub mod mutate;
pub mod run;
pub mod targets;
