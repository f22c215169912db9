//! The applier: carries out the effects of committed transitions, in order.
//!
//! It runs only what the reducer has already made durable. Activation effects go to the
//! activation worker, probe resets to the probe worker (both through a [`Dispatch`]); every
//! reported event kicks the outbound drainer.

use std::future::Future;
use std::sync::Arc;

use fleetnode_state_machine::Effect;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

/// Where the applier sends the effects it does not carry out itself.
pub trait Dispatch: Send + 'static {
    /// Hands an activation effect (`Realise`, `RunSwitch`, `WatchSwitch`, `AbortSwitch`,
    /// `Reboot`) to the activation worker. Errors only when the worker's channel is gone.
    fn activation(&mut self, effect: Effect) -> impl Future<Output = Result<(), String>> + Send;
    /// Restarts every probe task with a new epoch.
    fn reset_probes(&mut self, epoch: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs until the reducer's side of the channel closes or shutdown is requested.
pub async fn run<D: Dispatch>(
    mut effects: mpsc::Receiver<Vec<Effect>>,
    mut dispatch: D,
    drainer: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        let list = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            list = effects.recv() => match list {
                Some(list) => list,
                None => return,
            },
        };
        for effect in list {
            let result = match effect {
                Effect::Report(_) => {
                    drainer.notify_one();
                    Ok(())
                }
                Effect::ResetProbes { epoch } => {
                    debug!(epoch, "restarting probes");
                    dispatch.reset_probes(epoch).await
                }
                effect @ (Effect::Realise { .. }
                | Effect::RunSwitch { .. }
                | Effect::WatchSwitch { .. }
                | Effect::AbortSwitch { .. }
                | Effect::ReleaseSwitch { .. }
                | Effect::Reboot) => {
                    debug!(?effect, "dispatching to the activation worker");
                    dispatch.activation(effect).await
                }
            };
            if let Err(e) = result {
                // Only happens during shutdown, when the workers' channels close.
                error!(error = %e, "an effect could not be dispatched");
            }
        }
    }
}
