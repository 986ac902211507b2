//! Running one object-store request from synchronous code. The request runs
//! on the runtime (its I/O needs the reactor); the calling thread, which is
//! a blocking-pool thread or a plain thread, waits on a channel. Waiting this
//! way instead of with `Handle::block_on` cannot panic when called from
//! inside a runtime context, and a runtime that shut down surfaces as `None`
//! (the task and its sender are dropped) rather than as a hang.

use std::sync::mpsc;

use tokio::runtime::Handle;

/// The output of `future`, run on `runtime`; `None` if the runtime dropped it.
pub(crate) fn wait<T: Send + 'static>(
    runtime: &Handle,
    future: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (sender, receiver) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        // The receiver only goes away with the caller; nothing to do then.
        let _ = sender.send(future.await);
    });
    receiver.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_runtime_and_reports_a_shut_down_one() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let answer = wait(&handle, async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            42
        });
        assert_eq!(answer, Some(42));
        runtime.shutdown_background();
        assert_eq!(wait(&handle, async { 1 }), None);
    }
}
