//! Bulk work that must not hold up buys: a pool of threads under the kernel's idle policy
//! (`SCHED_IDLE`; nice [`NICE`] where that is refused), one per core, for work of
//! milliseconds that comes in bursts, such as a batch of audience events parsed, checked,
//! encoded and folded, or a room's review.
//!
//! The pool runs on what the threads that answer buys (the runtime's workers, the journal
//! writer) leave: a waking buy takes the core from a pool thread at once, and a core that
//! runs only pool threads counts as idle when the kernel places a waking thread. On an idle
//! machine the pool runs at full speed; under full load it gets a sliver, and its work waits.
//! So nothing that serves buys may wait for a pool thread: a lock a pool job holds (a room's
//! audience, [`crate::audience::Audience`]) is one those threads only try, or never take.
//! A plain lower weight (nice 10, even with the shortest slice) still let each batch of
//! audience events add to the buys' p99 (BENCHMARKS.md, "Audience").

use std::sync::OnceLock;

/// The pool threads' nice value where the idle policy is refused: their weight is then about
/// a tenth of a normal thread's.
pub const NICE: i32 = 10;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            )
            .thread_name(|i| format!("livehub-background-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .expect("the background pool starts")
    })
}

/// Puts the calling thread under the idle policy, or failing that at nice [`NICE`]. On Linux
/// both belong to the thread, so this leaves the rest of the process as it is; where both
/// fail the thread keeps its priority.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param`, which lives across the call; `0` names the
    // calling thread on Linux.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    if nice_of_this_thread() >= NICE {
        return;
    }
    // SAFETY: setpriority takes plain integers; `0` names the calling thread on Linux.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if r != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "the background pool keeps its priority"
        );
    }
}

/// Runs `f` on the pool and waits for it without holding a runtime worker. A panic in `f`
/// is resumed in the caller.
pub async fn run<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool().spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.await.expect("the pool runs every job it takes") {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `f` on the pool without waiting for it. A panic in `f` is logged.
pub fn spawn(f: impl FnOnce() + Send + 'static) {
    pool().spawn(move || {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            tracing::error!("a background job panicked");
        }
    });
}

/// The calling thread's nice value.
fn nice_of_this_thread() -> i32 {
    // SAFETY: getpriority takes plain integers; `0` names the calling thread on Linux.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_idle_policy_threads_and_leave_the_caller_alone() {
        let before = (policy_of_this_thread(), nice_of_this_thread());
        let (policy, nice, name) = run(|| {
            (
                policy_of_this_thread(),
                nice_of_this_thread(),
                std::thread::current().name().map(str::to_owned),
            )
        })
        .await;
        assert!(
            policy == libc::SCHED_IDLE || nice >= NICE,
            "pool thread policy {policy}, nice {nice}"
        );
        assert!(name.unwrap().starts_with("livehub-background-"));
        assert_eq!((policy_of_this_thread(), nice_of_this_thread()), before);
        assert_ne!(before.0, libc::SCHED_IDLE);
    }

    fn policy_of_this_thread() -> i32 {
        // SAFETY: takes a plain integer; `0` names the calling thread on Linux.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[tokio::test]
    async fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let r = tokio::spawn(run(|| -> u32 { panic!("boom") })).await;
        assert!(r.unwrap_err().is_panic());
        assert_eq!(run(|| 7).await, 7);
    }
}
