//! Memory given back after load. glibc's allocator keeps the pages of freed memory
//! resident in each thread's arena until it is asked to return them: after a burst
//! of traffic a server or agent held twice its idle size or more for good (issue
//! 22's figures, `docs/benchmarks.md`). A trimmer asks once the process has gone
//! quiet after work, and again when memory is freed later while it stays quiet
//! (buffers parked for a burst are shed seconds after it, records expire), at most
//! every [`FREED_TRIM_LOOKS`] looks. It trims off the runtime's workers, and under
//! steady load it stays out of the way (trimming takes each arena's lock, and pages
//! handed back would only be faulted in again). Elsewhere (macOS, Windows, musl) it
//! does nothing.

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

    /// Bytes freed into the arenas since the last trim that make a quiet process
    /// trim again, though it did no work.
    const FREED_SINCE_TRIM: usize = 1 << 20;

    /// Looks between two trims for memory freed while quiet (30 s): traffic too
    /// light to count as work, opening and closing connections that free buffers,
    /// cannot make the process trim at every look.
    const FREED_TRIM_LOOKS: u32 = 15;
}

/// Hands the allocator's free pages back to the system when the runtime is quiet
/// after work, or memory was freed while it was quiet, until dropped.
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
    /// Trims whenever [`Looks::look`] says so.
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
        let mut looks = Looks::new();
        loop {
            tick.tick().await;
            let spent = busy().saturating_sub(last);
            if looks.look(spent, free_bytes) {
                // Trimming walks every arena under its lock: a blocking thread does
                // it, not a worker.
                match tokio::task::spawn_blocking(trim).await {
                    Ok(free) => looks.trimmed(free),
                    Err(_) => return,
                }
            }
            // The look's own time is not work.
            last = busy();
        }
    }

    /// When to trim: at the first quiet look after a busy one (and once after
    /// start-up), and at a quiet look that finds [`FREED_SINCE_TRIM`] more bytes free
    /// in the arenas than the fewest seen since the last trim (what was freed later),
    /// [`FREED_TRIM_LOOKS`] looks after the last such trim at the soonest.
    struct Looks {
        worked: bool,
        least_free: usize,
        since_freed_trim: u32,
    }

    impl Looks {
        fn new() -> Looks {
            Looks {
                worked: true,
                least_free: usize::MAX,
                since_freed_trim: FREED_TRIM_LOOKS,
            }
        }

        /// Whether to trim now, after the runtime spent `spent` busy since the last
        /// look; `free` (the arenas' free bytes) is asked only when it is quiet.
        fn look(&mut self, spent: Duration, free: impl FnOnce() -> usize) -> bool {
            self.since_freed_trim = self.since_freed_trim.saturating_add(1);
            if spent > QUIET {
                self.worked = true;
                return false;
            }
            let free = free();
            self.least_free = self.least_free.min(free);
            if self.worked {
                self.worked = false;
                return true;
            }
            if free - self.least_free >= FREED_SINCE_TRIM
                && self.since_freed_trim >= FREED_TRIM_LOOKS
            {
                self.since_freed_trim = 0;
                return true;
            }
            false
        }

        /// A trim left `free` bytes free in the arenas.
        fn trimmed(&mut self, free: usize) {
            self.least_free = free;
        }
    }

    /// Bytes in the arenas' free chunks (mallinfo2(3), which walks each arena's bins
    /// under its lock: cheap in a quiet process, so it is asked only there, on the
    /// watching task's worker).
    #[allow(unsafe_code)]
    fn free_bytes() -> usize {
        // SAFETY: mallinfo2(3) takes no pointer, returns a plain struct and reads the
        // allocator's state under its own locks (MT-Safe since glibc 2.33).
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Returns the free pages of every arena to the system, and answers the bytes
    /// left free in the arenas (trimmed chunks stay free).
    #[allow(unsafe_code)]
    fn trim() -> usize {
        // SAFETY: malloc_trim(3) takes no pointer and only changes the allocator's own
        // state, under its own locks; glibc documents it as thread-safe (MT-Safe).
        unsafe {
            libc::malloc_trim(0);
        }
        free_bytes()
    }
}

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    target_has_atomic = "64"
))]
mod tests {
    use std::time::Duration;

    use super::{FREED_SINCE_TRIM, FREED_TRIM_LOOKS, Looks, QUIET, free_bytes};

    const BUSY: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::ZERO;
    const MIB: usize = 1 << 20;

    #[test]
    fn trims_once_after_work_then_only_when_memory_is_freed() {
        let mut looks = Looks::new();
        // Start-up counts as work.
        assert!(looks.look(IDLE, || 10 * MIB));
        looks.trimmed(10 * MIB);
        assert!(!looks.look(IDLE, || 10 * MIB));
        // Busy: no trim, and the allocator is not asked.
        assert!(!looks.look(BUSY, || unreachable!("asked while busy")));
        assert!(!looks.look(QUIET + Duration::from_millis(1), || unreachable!()));
        assert!(
            looks.look(QUIET, || 4 * MIB),
            "the first quiet look after work"
        );
        looks.trimmed(4 * MIB);
        // Quiet, and less than the threshold freed since: nothing.
        assert!(!looks.look(IDLE, || 4 * MIB + FREED_SINCE_TRIM - 1));
        // Quiet, and buffers shed after the burst: trim again, though no work.
        assert!(looks.look(IDLE, || 4 * MIB + FREED_SINCE_TRIM));
        looks.trimmed(5 * MIB);
        assert!(!looks.look(IDLE, || 5 * MIB));
    }

    #[test]
    fn memory_freed_while_quiet_trims_at_most_every_few_looks() {
        let mut looks = Looks::new();
        assert!(looks.look(IDLE, || MIB));
        looks.trimmed(MIB);
        assert!(looks.look(IDLE, || 3 * MIB), "freed while quiet");
        looks.trimmed(3 * MIB);
        // Connections opened and closed between looks, each time freeing buffers:
        // no trim until the gap has passed.
        for look in 1..FREED_TRIM_LOOKS {
            let free = if look % 2 == 0 { MIB } else { 3 * MIB };
            assert!(!looks.look(IDLE, || free), "look {look}");
        }
        assert!(looks.look(IDLE, || 3 * MIB));
        looks.trimmed(3 * MIB);
        // Work still trims at once when it ends.
        assert!(!looks.look(BUSY, || unreachable!()));
        assert!(looks.look(IDLE, || 3 * MIB));
    }

    #[test]
    fn memory_freed_after_a_dip_counts_from_the_dip() {
        let mut looks = Looks::new();
        assert!(looks.look(IDLE, || 8 * MIB));
        looks.trimmed(8 * MIB);
        // Allocated 6 MiB (free falls), then freed 2 MiB of it: 2 MiB freed since
        // the fewest, though fewer bytes are free than after the trim.
        assert!(!looks.look(IDLE, || 2 * MIB));
        assert!(looks.look(IDLE, || 4 * MIB));
    }

    #[test]
    fn the_allocator_counts_what_is_freed() {
        // A thread of its own, so the blocks come from, and return to, one arena
        // other tests' threads do not churn.
        std::thread::spawn(|| {
            let mut blocks: Vec<Option<Vec<u8>>> =
                (0..512).map(|_| Some(vec![1u8; 32 * 1024])).collect();
            let before = free_bytes();
            // Every other block: the ones kept between them stop the freed ones from
            // merging into the arena's top, which the allocator would unmap itself.
            for block in blocks.iter_mut().step_by(2) {
                *block = None;
            }
            let after = free_bytes();
            // 8 MiB freed; other tests' threads allocating meanwhile may take some.
            assert!(
                after >= before + 4 * MIB,
                "8 MiB freed, the arenas' free bytes went from {before} to {after}"
            );
            drop(blocks);
        })
        .join()
        .unwrap();
    }
}
