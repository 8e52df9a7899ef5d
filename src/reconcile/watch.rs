//! The watch-mode scheduler: run, wait, run again, until asked to stop.
//!
//! Kept apart from the reconciler so that it can be tested on tokio's paused clock with
//! any run closure: [`watch`] takes the interval, the run and a shutdown future.

use std::future::Future;
use std::time::Duration;

/// Runs `run` at once and then every `interval` (measured from the start of one run to
/// the start of the next; a run that overruns is followed at once by the next), until
/// `shutdown` completes. A shutdown while a run is going on lets that run finish; one
/// while waiting ends the wait at once. Returns how many runs finished.
pub async fn watch<R, F>(interval: Duration, mut run: R, shutdown: impl Future<Output = ()>) -> u64
where
    R: FnMut() -> F,
    F: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let mut runs = 0;
    loop {
        let started = tokio::time::Instant::now();
        let mut stopping = false;
        {
            let current = run();
            tokio::pin!(current);
            loop {
                tokio::select! {
                    () = &mut current => break,
                    () = &mut shutdown, if !stopping => stopping = true,
                }
            }
        }
        runs += 1;
        if stopping {
            return runs;
        }
        // An interval too long to add to the clock (e.g. `--interval 500000000000y`)
        // means no further run: wait for the stop alone.
        let Some(next) = started.checked_add(interval) else {
            shutdown.await;
            return runs;
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = &mut shutdown => return runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn two_intervals_give_two_runs() {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let shutdown = async {
            // Just short of the end of the second interval.
            tokio::time::sleep(2 * HOUR - Duration::from_millis(1)).await;
        };
        let runs = watch(
            HOUR,
            move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            },
            shutdown,
        )
        .await;
        assert_eq!(runs, 2);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_is_followed_at_once_and_intervals_count_from_starts() {
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = starts.clone();
        let t0 = tokio::time::Instant::now();
        let runs = watch(
            Duration::from_secs(10),
            move || {
                let s = s.clone();
                async move {
                    let n = {
                        let mut g = s.lock().unwrap();
                        g.push(t0.elapsed().as_secs());
                        g.len()
                    };
                    // The first run takes longer than the interval.
                    if n == 1 {
                        tokio::time::sleep(Duration::from_secs(15)).await;
                    } else {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
            tokio::time::sleep(Duration::from_secs(30)),
        )
        .await;
        assert_eq!(*starts.lock().unwrap(), vec![0, 15, 25]);
        assert_eq!(runs, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_run_lets_it_finish() {
        let finished = Arc::new(AtomicU64::new(0));
        let f = finished.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let runs = watch(
            HOUR,
            move || {
                let f = f.clone();
                // The stop arrives one second into the first run.
                let tx = tx.take();
                async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Some(tx) = tx {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                }
            },
            async {
                let _ = rx.await;
            },
        )
        .await;
        assert_eq!(runs, 1);
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the run finished");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_while_waiting_ends_the_wait() {
        let runs = watch(
            HOUR,
            || async {},
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(runs, 1);
    }
}
