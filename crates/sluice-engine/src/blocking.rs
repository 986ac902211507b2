//! Running an evaluation from async code. Evaluation is CPU-bound and can run
//! for seconds, so it must never occupy one of the async runtime's worker
//! threads (every other request on that thread would stall behind it): it
//! runs on the blocking pool, and dropping the returned future (a client gone,
//! a deadline passed) raises the query's cancel flag, which the evaluator
//! checks between steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{EngineError, QueryOptions, QueryOutput};

/// Raises the cancel flag unless disarmed: the waiting future was dropped.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs `evaluate` on Tokio's blocking pool with `options`, whose cancel flag
/// is raised if the returned future is dropped before it finishes.
pub async fn evaluate_off_runtime<F>(
    mut options: QueryOptions,
    evaluate: F,
) -> Result<QueryOutput, EngineError>
where
    F: FnOnce(&QueryOptions) -> Result<QueryOutput, EngineError> + Send + 'static,
{
    let flag = options
        .cancel
        .get_or_insert_with(|| Arc::new(AtomicBool::new(false)))
        .clone();
    let mut guard = CancelOnDrop { flag, armed: true };
    let outcome = tokio::task::spawn_blocking(move || evaluate(&options)).await;
    guard.armed = false;
    match outcome {
        Ok(result) => result,
        Err(join_error) => Err(EngineError::Execution(format!(
            "evaluation failed: {join_error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, MemoryStorage};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evaluates_on_the_blocking_pool() {
        let storage = Arc::new(MemoryStorage::default());
        let runtime_thread = std::thread::current().id();
        let output = evaluate_off_runtime(QueryOptions::default(), move |options| {
            assert_ne!(std::thread::current().id(), runtime_thread);
            Engine::new().instant(storage.as_ref(), "1 + 1", 0, options)
        })
        .await
        .unwrap();
        assert!(output.warnings.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_future_cancels_the_evaluation() {
        let cancel = Arc::new(AtomicBool::new(false));
        let options = QueryOptions {
            cancel: Some(cancel.clone()),
            ..QueryOptions::default()
        };
        let (started, running) = std::sync::mpsc::channel();
        let watched = cancel.clone();
        let evaluation = evaluate_off_runtime(options, move |_| {
            started.send(()).unwrap();
            // Stands in for an evaluator checking its flag between steps.
            while !watched.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(EngineError::Canceled)
        });
        let waiting = tokio::spawn(evaluation);
        tokio::task::spawn_blocking(move || running.recv().unwrap())
            .await
            .unwrap();
        waiting.abort();
        let _ = waiting.await;
        for _ in 0..1000 {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the cancel flag was never raised");
    }
}
