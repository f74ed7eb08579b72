//! Bulk work that must not hold up buys: a pool of threads at a lower scheduling priority
//! (nice [`NICE`], and the shortest time slice), one per core, for work of milliseconds that
//! comes in bursts, such as a batch of audience events parsed, checked, encoded and folded.
//!
//! On a busy machine the kernel's scheduler gives the runtime's workers and the journal
//! writer, which answer buys, the CPU first, and this pool what is left; on an idle one the
//! pool runs at full speed. A lower weight is not starvation: under full load the pool still
//! gets a small share, so its work finishes, later. Not the kernel's idle policy
//! (`SCHED_IDLE`): a pool thread folds a batch while holding its room's audience lock, which
//! the journal writer's snapshot capture and the re-sent check may need too, and an
//! idle-policy holder can wait long for a core while they wait for the lock.

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

/// A pool thread's time slice (the kernel's custom slice for a normal thread, Linux 6.12 and
/// later), the least the kernel takes. The scheduler lets a thread that has just started to
/// run finish its slice before a waking one takes the core, so with the default slice a buy
/// that arrives as a pool thread is scheduled would wait for it.
const SLICE_NS: u64 = 100_000;

/// Lowers the calling thread's priority: nice [`NICE`], and where the kernel has them, the
/// shortest slice ([`SLICE_NS`]). On Linux both belong to the thread, so this leaves the rest
/// of the process as it is; where that fails the thread keeps its priority.
fn lower_priority() {
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: NICE,
        sched_priority: 0,
        sched_runtime: SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_setattr reads `attr`, which lives across the call and gives its own size;
    // `0` names the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if r == 0 || nice_of_this_thread() >= NICE {
        return;
    }
    // An older kernel refuses the slice: the nice value alone.
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

    /// Where the kernel keeps a custom slice for a normal thread, the pool's threads have the
    /// shortest; an older kernel reports none (0).
    #[tokio::test]
    async fn pool_threads_ask_for_the_shortest_slice() {
        let (policy, nice, runtime) = run(|| {
            let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::sched_attr>() as u32;
            // SAFETY: sched_getattr writes at most `size` bytes into `attr`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_sched_getattr,
                    0,
                    &mut attr as *mut libc::sched_attr,
                    size,
                    0,
                )
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            (attr.sched_policy, attr.sched_nice, attr.sched_runtime)
        })
        .await;
        assert_eq!(policy, libc::SCHED_OTHER as u32);
        assert_eq!(nice, NICE);
        assert!(runtime == SLICE_NS || runtime == 0, "slice {runtime} ns");
    }

    #[tokio::test]
    async fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let r = tokio::spawn(run(|| -> u32 { panic!("boom") })).await;
        assert!(r.unwrap_err().is_panic());
        assert_eq!(run(|| 7).await, 7);
    }
}
