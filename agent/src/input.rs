//! What workers send to the event loop: the one bounded channel every observation goes
//! through.

use fleetnode_state_machine::{Event, ResyncCause};
use fleetnode_wire::AgentStatus;
use tokio::sync::oneshot;

/// Capacity of the event loop's input channel. Inputs are small (a few hundred bytes; a switch
/// result carries at most a 4 KiB output tail), so 256 of them is at most about 1 MiB. Workers
/// wait when it is full: back-pressure instead of unbounded memory.
pub const INPUT_CHANNEL_CAPACITY: usize = 256;

/// One input to the event loop.
#[derive(Debug)]
pub enum Input {
    /// A fact for the state machine.
    Event(Event),
    /// The control plane durably stored every event up to and including this seq.
    Acked {
        /// Highest acknowledged seq.
        through: u64,
    },
    /// The control plane refused this event for good: move it to the dead letters and put the
    /// state machine's gap in its place so delivery goes on. `done` is told once the gap is
    /// durable (or the event had left the queue), or that the write failed.
    DeadLettered {
        /// The refused event.
        seq: u64,
        /// The control plane's error code.
        code: String,
        /// Told whether the dead letter is written.
        done: oneshot::Sender<Written>,
    },
    /// The control plane's mirror cannot follow the events: record a snapshot for it to
    /// restart from. `done` gets the snapshot's seq once it is durable (`None` when the state
    /// machine refused).
    Resync {
        /// The last seq the control plane holds of the stream.
        log_end: u64,
        /// Why.
        cause: ResyncCause,
        /// Told the snapshot's seq.
        done: Option<oneshot::Sender<Option<u64>>>,
    },
    /// Someone (CLI, admin listener) asks for the agent's status; the event loop answers it
    /// itself, so a stalled loop shows as no answer.
    Status(oneshot::Sender<AgentStatus>),
}

/// The event loop's answer to a worker that asked it to write something and waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Durable, or there was nothing left to write.
    Done,
    /// The store refused the write (the event loop logged why); ask again later.
    Failed,
}

/// The sending side every worker holds.
pub type InputSender = tokio::sync::mpsc::Sender<Input>;

/// Why a worker stopped with a fault; the supervisor logs it, counts it and restarts the worker
/// with backoff. Each variant's message says what failed and on what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The event loop's input channel closed while no shutdown was asked for.
    #[error("the event loop stopped")]
    LoopStopped,
    /// The outbound queue could not be read (the store's error).
    #[error("cannot read the outbound queue: {0}")]
    Queue(String),
    /// A listener could not be set up or stopped accepting: its address, socket path,
    /// permissions or group, in words that say what to change.
    #[error("{0}")]
    Listener(String),
    /// The probes could not run: their HTTP client could not be built, or a probe task failed.
    #[error("probes: {0}")]
    Probes(String),
}
