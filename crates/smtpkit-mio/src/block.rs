//! A minimal executor: polls one future to completion on the calling thread.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

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
}

/// Runs `fut` to completion, parking the thread while it is pending.
///
/// Handler futures of a blocking application ([`smtpkit_server::blocking::Blocking`]) are ready
/// at the first poll. An async handler may await anything that wakes its waker from another
/// thread (channels, locks); it must not need a runtime's reactor or timers.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return v,
                // A spurious unpark only costs another poll.
                Poll::Pending => thread::park(),
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
}
