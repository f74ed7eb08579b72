//! Bulk work that must not hold up buys: a pool of threads at a lower scheduling priority
//! (nice [`NICE`]), one per core, for work of milliseconds that comes in bursts, such as a
//! batch of audience events parsed, checked, encoded and folded.
//!
//! On a busy machine the kernel's scheduler gives the runtime's workers and the journal
//! writer, which answer buys, the CPU first, and this pool what is left; on an idle one the
//! pool runs at full speed. A lower weight is not starvation: under full load the pool still
//! gets a small share, so its work finishes, later. Not the kernel's idle policy
//! (`SCHED_IDLE`): a pool thread folds a batch while holding its room's audience lock, which
//! the journal writer's apply and the aggregator may need too, and an idle-policy holder can
//! wait long for a core while they wait for the lock.

use std::sync::OnceLock;

/// The pool threads' nice value: their weight is about a tenth of a normal thread's.
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

/// Lowers the calling thread's priority. On Linux a nice value belongs to the thread, so this
/// leaves the rest of the process as it is; where that fails the thread keeps its priority.
fn lower_priority() {
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
        let before = nice_of_this_thread();
        let (nice, name) = run(|| {
            (
                nice_of_this_thread(),
                std::thread::current().name().map(str::to_owned),
            )
        })
        .await;
        assert!(nice >= NICE, "pool thread nice {nice}, caller {before}");
        assert!(name.unwrap().starts_with("livehub-background-"));
        assert_eq!(nice_of_this_thread(), before);
    }

    #[tokio::test]
    async fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let r = tokio::spawn(run(|| -> u32 { panic!("boom") })).await;
        assert!(r.unwrap_err().is_panic());
        assert_eq!(run(|| 7).await, 7);
    }
}
