//! The driver's own thread: one OS thread with a current-thread tokio
//! runtime that runs the driver and the publisher (the MQTT link stays on
//! the caller's runtime).
//!
//! Being its own thread, the driver may block on an fsync when the device
//! is idle without stalling anyone else's runtime, which saves the journal
//! thread's two wake-ups on the idle path (`docs/architecture.md`,
//! "Latency"). The link stays elsewhere on purpose: measured with the link's
//! tasks on this thread too, idle latency did not improve and sustained
//! throughput with the `echo` plugin fell from ~5,900 to 3,600-4,500
//! commands/s (one thread then did all of the host's network work too).
//!
//! The thread stops once the driver it was given has finished (or, if it
//! never got one, when the `DeviceThread` is dropped).

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// See the module doc.
#[derive(Debug)]
pub struct DeviceThread {
    handle: Handle,
    /// Dropping it ends the thread (after its runtime's tasks were dropped).
    stop: oneshot::Sender<()>,
}

impl DeviceThread {
    /// Starts the thread (`relay-driver`).
    pub fn spawn() -> std::io::Result<DeviceThread> {
        // Timers only: the driver and the publisher own no sockets (the link
        // runs elsewhere), and a runtime without an I/O driver parks on a
        // futex instead of epoll, a cheaper wake-up for each command.
        let runtime = Builder::new_current_thread().enable_time().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("relay-driver".into())
            .spawn(move || {
                // The block_on future only waits for the end; the real work is
                // spawned tasks. (With the driver itself as the block_on future,
                // it once stalled for good under load: a wake-up deferred by
                // tokio's cooperative budget was not delivered before the
                // thread parked; seen in the kill -9 test.)
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(DeviceThread { handle, stop })
    }

    /// Runs `main` on the thread; the thread ends when it returns.
    pub(super) fn run<F>(self, main: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let DeviceThread { handle, stop } = self;
        handle.spawn(async move {
            main.await;
            drop(stop);
        });
    }
}
