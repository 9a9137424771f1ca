//! A minimal executor: polls one future to completion on the calling thread, with timers for
//! the shared driver's deadlines.

use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use smtpkit_server::driver::Runtime;

/// The timers of [`block_on`]: the thread parks no longer than the earliest pending one.
#[derive(Debug)]
pub(crate) struct Mio;

/// A deadline as a future: ready once the clock has reached it.
#[derive(Debug)]
pub(crate) struct Deadline(Instant);

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.0 {
            return Poll::Ready(());
        }
        WAKE_AT.with(|w| w.set(Some(w.get().map_or(self.0, |at| at.min(self.0)))));
        Poll::Pending
    }
}

impl Runtime for Mio {
    type Timer = Deadline;

    fn timer(at: Instant) -> Deadline {
        Deadline(at)
    }

    fn reset(timer: Pin<&mut Deadline>, at: Instant) {
        timer.get_mut().0 = at;
    }
}

/// Unparks the event-loop thread that is blocked in [`block_on`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    // One waker per event-loop thread, made once: handler calls are on the hot path.
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    // The earliest `Deadline` the last poll found pending.
    static WAKE_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `fut` to completion, parking the thread while it is pending.
///
/// Handler futures of a blocking application ([`smtpkit_server::blocking::Blocking`]) are ready
/// at the first poll. An async handler may await anything that wakes its waker from another
/// thread (channels, locks); it must not need a runtime's reactor or timers. A [`Deadline`]
/// in `fut` bounds the wait: the thread wakes at it even if nothing else does.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            WAKE_AT.with(|w| w.set(None));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return v,
                // A spurious unpark only costs another poll.
                Poll::Pending => match WAKE_AT.with(Cell::get) {
                    Some(at) => thread::park_timeout(at.saturating_duration_since(Instant::now())),
                    None => thread::park(),
                },
            }
        }
    })
}

/// Runs `fut` to completion on this thread; while it is pending, calls `wait` with how long
/// it may block (until the earliest pending [`Deadline`], or without limit). `wait` returns
/// on whatever may let `fut` progress (socket readiness for the client, say); a wait that
/// returns early only costs another poll.
pub(crate) fn block_on_with<F: Future>(
    fut: F,
    mut wait: impl FnMut(Option<std::time::Duration>),
) -> F::Output {
    let mut fut = pin!(fut);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            WAKE_AT.with(|w| w.set(None));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return v,
                Poll::Pending => {
                    let at = WAKE_AT.with(Cell::get);
                    wait(at.map(|at| at.saturating_duration_since(Instant::now())));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn ready_and_woken_from_another_thread() {
        assert_eq!(block_on(async { 7 }), 7);

        // A future that is pending until another thread sets a flag and wakes it.
        struct Later(mpsc::Receiver<u32>, Option<mpsc::Sender<Waker>>);
        impl Future for Later {
            type Output = u32;
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
                if let Ok(v) = self.0.try_recv() {
                    return Poll::Ready(v);
                }
                if let Some(tx) = self.1.take() {
                    tx.send(cx.waker().clone()).unwrap();
                }
                Poll::Pending
            }
        }
        let (vtx, vrx) = mpsc::channel();
        let (wtx, wrx) = mpsc::channel::<Waker>();
        let t = thread::spawn(move || {
            let waker = wrx.recv_timeout(Duration::from_secs(10)).unwrap();
            thread::sleep(Duration::from_millis(20));
            vtx.send(42).unwrap();
            waker.wake();
        });
        assert_eq!(block_on(Later(vrx, Some(wtx))), 42);
        t.join().unwrap();
    }

    #[test]
    fn a_deadline_ends_a_future_that_never_wakes() {
        let start = Instant::now();
        let at = start + Duration::from_millis(30);
        let raced = block_on(futures_lite::future::or(
            async {
                std::future::pending::<()>().await;
                false
            },
            async {
                Mio::timer(at).await;
                true
            },
        ));
        assert!(raced);
        assert!(Instant::now() >= at);
    }
}
