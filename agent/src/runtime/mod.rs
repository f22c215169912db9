//! The agent's runtime: the reducer, the applier, the ticker and the supervisor, and the wiring
//! that starts them with the workers.

pub mod agent;
pub mod applier;
pub mod explain;
pub mod reducer;
pub mod status;
pub mod supervisor;
pub mod ticker;

#[cfg(test)]
mod tests;
