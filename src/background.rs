//! Bulk work that must not hold up buys: a pool of threads under the kernel's idle
//! scheduling policy (`SCHED_IDLE`), one per core, for work of milliseconds that comes in
//! bursts, such as a batch of audience events parsed, checked, encoded and folded.
//!
//! On a busy machine the kernel's scheduler gives the runtime's workers and the journal
//! writer, which answer buys, the CPU first, and this pool what is left; on an idle one the
//! pool runs at full speed. The idle policy rather than a nice value: a waking normal thread
//! preempts an idle-policy thread at once, where a niced thread may run out its time slice
//! first (milliseconds, which a buy waiting on that core would wait too). It is not
//! starvation: under full load the pool still gets a small share, so its work finishes,
//! later. Where the policy cannot be set, the threads fall back to nice [`NICE`].

use std::sync::OnceLock;

/// The pool threads' nice value where the idle policy cannot be set: their weight is about a
/// tenth of a normal thread's.
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

/// Puts the calling thread under the idle policy, or else lowers its nice value. On Linux
/// both belong to the thread, so this leaves the rest of the process as it is; where both
/// fail the thread keeps its priority.
pub fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only; `0` names the calling thread on Linux.
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

/// Whether the calling thread runs under the idle policy or at nice [`NICE`] or more.
pub fn is_lowered() -> bool {
    // SAFETY: sched_getscheduler takes a plain integer; `0` names the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy == libc::SCHED_IDLE || nice_of_this_thread() >= NICE
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

/// The calling thread's nice value.
fn nice_of_this_thread() -> i32 {
    // SAFETY: getpriority takes plain integers; `0` names the calling thread on Linux.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_threads_of_lower_priority_and_leave_the_caller_alone() {
        assert!(!is_lowered(), "the test's own thread starts normal");
        let (lowered, idle, name) = run(|| {
            (
                is_lowered(),
                // SAFETY: as in `is_lowered`.
                unsafe { libc::sched_getscheduler(0) } == libc::SCHED_IDLE,
                std::thread::current().name().map(str::to_owned),
            )
        })
        .await;
        assert!(lowered, "pool thread not lowered");
        assert!(idle, "Linux lets any thread take the idle policy");
        assert!(name.unwrap().starts_with("livehub-background-"));
        assert!(!is_lowered(), "the caller's thread is left alone");
    }

    #[tokio::test]
    async fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let r = tokio::spawn(run(|| -> u32 { panic!("boom") })).await;
        assert!(r.unwrap_err().is_panic());
        assert_eq!(run(|| 7).await, 7);
    }
}
