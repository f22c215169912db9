//! The agent's runtime: the event loop, the start-up and shutdown around it, the supervisor of
//! the workers, and the status the loop publishes. `docs/architecture.md` draws it.

pub mod agent;
pub mod eventloop;
pub mod record;
pub mod supervisor;

#[cfg(test)]
mod tests;
