//! [`Prefetcher`]: computes the next batches on a background thread while the model trains.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use candle_core::Result;

/// An iterator whose items are computed in order on a background thread, up to `depth` items
/// ahead of the consumer (a bounded channel: the worker blocks when it is that far ahead).
///
/// Dropping it stops the worker after the item in progress. If the producer panics, the panic
/// is resumed on the consuming thread at the next call to `next`.
///
/// ```
/// let squares: Vec<u64> = augment::Prefetcher::new(1..=4u64, 2, |x| x * x)?.collect();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Prefetcher<T> {
    rx: Option<Receiver<T>>,
    worker: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts a thread that maps `produce` over `jobs` in order; `depth` (at least 1) items
    /// may wait for the consumer.
    pub fn new<I, F>(jobs: I, depth: usize, mut produce: F) -> Result<Self>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        F: FnMut(I::Item) -> T + Send + 'static,
    {
        let (tx, rx) = sync_channel(depth.max(1));
        let jobs = jobs.into_iter();
        let worker = std::thread::Builder::new()
            .name("augment-prefetch".into())
            .spawn(move || {
                for job in jobs {
                    if tx.send(produce(job)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            rx: Some(rx),
            worker: Some(worker),
        })
    }
}

impl<T> Iterator for Prefetcher<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self.rx.as_ref()?.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                self.rx = None;
                if let Some(worker) = self.worker.take() {
                    if let Err(panic) = worker.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }
}

impl<T> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            // A panic in the producer was not observed by the consumer: nothing to report to.
            let _ = worker.join();
        }
    }
}
