//! What the trainer reports while it runs. The trainer never prints: it sends
//! [`TrainEvent`]s to the [`Progress`] of its settings, and the caller renders them (the
//! pipeline turns them into its observer's events).

use std::fmt;
use std::sync::Arc;

use crate::trainer::EpochReport;

/// One thing that happened in a training run.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent {
    /// The run starts; its settings and peak-memory estimate as lines for a human.
    Started {
        /// Optimizer, learning rate and schedule, batch, epochs, seed; then a line naming
        /// the gradient path (`gradients: graph backward` or `gradients: tape (why)`).
        settings: String,
        /// The memory estimate made before training.
        memory: String,
    },
    /// Epoch `epoch` (1-based) of `epochs` starts; it has `batches` micro-batches.
    EpochStarted {
        /// The epoch, 1-based.
        epoch: usize,
        /// Epochs of the whole run.
        epochs: usize,
        /// Micro-batches in this epoch.
        batches: usize,
    },
    /// `done` micro-batches of the current epoch are finished.
    Batch {
        /// Micro-batches finished in this epoch.
        done: usize,
        /// Mean training loss of the epoch so far.
        loss: f64,
    },
    /// The current epoch ended.
    EpochEnded {
        /// Its figures.
        report: EpochReport,
        /// Epochs of the whole run.
        epochs: usize,
    },
    /// The weights of `epoch`, the best validation value, were put back at the end.
    RestoredBest {
        /// The epoch whose weights were restored.
        epoch: usize,
    },
}

/// Where a run's [`TrainEvent`]s go (nowhere by default). Clones share the receiver, and
/// settings compare equal whatever their receiver, so it never makes two runs differ.
#[derive(Clone, Default)]
pub struct Progress(Option<Receiver>);

/// A receiver of events, shared by every clone of a [`Progress`].
type Receiver = Arc<dyn Fn(&TrainEvent) + Send + Sync>;

impl Progress {
    /// Sends every event to `receiver`.
    pub fn new(receiver: impl Fn(&TrainEvent) + Send + Sync + 'static) -> Self {
        Progress(Some(Arc::new(receiver)))
    }

    /// Sends `event` to the receiver, if there is one.
    pub fn send(&self, event: TrainEvent) {
        if let Some(receiver) = &self.0 {
            receiver(&event);
        }
    }
}

impl PartialEq for Progress {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.0.is_some() { "receiver" } else { "none" };
        write!(f, "Progress({what})")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn events_reach_the_receiver_of_every_clone_and_none_is_silent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let progress = Progress::new(move |e| sink.lock().unwrap().push(e.clone()));
        let copy = progress.clone();
        progress.send(TrainEvent::Batch { done: 1, loss: 0.5 });
        copy.send(TrainEvent::RestoredBest { epoch: 2 });
        Progress::default().send(TrainEvent::RestoredBest { epoch: 3 });
        assert_eq!(
            *seen.lock().unwrap(),
            [
                TrainEvent::Batch { done: 1, loss: 0.5 },
                TrainEvent::RestoredBest { epoch: 2 }
            ]
        );
        assert_eq!(progress, Progress::default());
    }
}
