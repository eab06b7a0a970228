//! Memory given back after load. glibc's allocator keeps the pages of freed memory
//! resident in each thread's arena until it is asked to return them: after a burst
//! of traffic a server or agent held twice its idle size or more for good (issue
//! 22's figures, `docs/benchmarks.md`). A trimmer asks once the process has gone
//! quiet after work, off the runtime's workers; under steady load it stays out of
//! the way (trimming takes each arena's lock, and pages handed back would only be
//! faulted in again). Elsewhere (macOS, Windows, musl) it does nothing.

/// Whether this target trims: glibc, with the runtime's 64-bit busy counters.
macro_rules! trims {
    ($($item:item)*) => {
        $(#[cfg(all(target_os = "linux", target_env = "gnu", target_has_atomic = "64"))] $item)*
    };
}

trims! {
    use std::time::Duration;

    /// How often the trimmer looks: a load's end is seen within two looks.
    const LOOK_EVERY: Duration = Duration::from_secs(2);

    /// The runtime's workers together busier than this over one look is work, not
    /// quiet (5 % of one worker; an idle server or agent spends well under 1 %).
    const QUIET: Duration = Duration::from_millis(100);
}

/// Hands the allocator's free pages back to the system the first time the runtime
/// is quiet after work, until dropped.
pub(crate) struct Trimmer(Option<tokio::task::JoinHandle<()>>);

impl Trimmer {
    /// Starts watching the current runtime.
    pub(crate) fn start() -> Trimmer {
        #[cfg(all(target_os = "linux", target_env = "gnu", target_has_atomic = "64"))]
        {
            Trimmer(Some(tokio::spawn(watch())))
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu", target_has_atomic = "64")))]
        Trimmer(None)
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

trims! {
    /// Trims at the first quiet look after a busy one (and once after start-up).
    async fn watch() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let busy = move || {
            (0..metrics.num_workers())
                .map(|w| metrics.worker_total_busy_duration(w))
                .sum::<Duration>()
        };
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = busy();
        let mut worked = true;
        loop {
            tick.tick().await;
            let now = busy();
            let spent = now.saturating_sub(last);
            last = now;
            if spent > QUIET {
                worked = true;
                continue;
            }
            if !worked {
                continue;
            }
            worked = false;
            // Trimming walks every arena under its lock: a blocking thread does it,
            // not a worker.
            if tokio::task::spawn_blocking(trim).await.is_err() {
                return;
            }
        }
    }

    /// Returns the free pages of every arena to the system.
    #[allow(unsafe_code)]
    fn trim() {
        // SAFETY: malloc_trim(3) takes no pointer and only changes the allocator's own
        // state, under its own locks; glibc documents it as thread-safe (MT-Safe).
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
