//! Memory given back after load. glibc's allocator keeps the pages of freed memory
//! resident in each thread's arena until it is asked to return them: after a burst
//! of traffic a server or agent held twice its idle size or more for good (issue
//! 22's figures, `docs/benchmarks.md`). A trimmer asks every few seconds, off the
//! runtime's workers. Elsewhere (macOS, Windows, musl) it does nothing.

/// How often freed memory is handed back: well within the 10 s after a load ends
/// that an operator watching RSS waits.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the allocator's free pages back to the system every 5 s until dropped.
pub(crate) struct Trimmer(Option<tokio::task::JoinHandle<()>>);

impl Trimmer {
    /// Starts trimming on the current runtime.
    pub(crate) fn start() -> Trimmer {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let task = tokio::spawn(async {
                let mut tick = tokio::time::interval(TRIM_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // Trimming walks every arena under its lock: a blocking thread
                    // does it, not a worker that viewers' traffic waits on.
                    if tokio::task::spawn_blocking(trim).await.is_err() {
                        return;
                    }
                }
            });
            Trimmer(Some(task))
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
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

/// Returns the free pages of every arena to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim(3) takes no pointer and only changes the allocator's own
    // state, under its own locks; glibc documents it as thread-safe (MT-Safe).
    unsafe {
        libc::malloc_trim(0);
    }
}
