//! Prompt wake-ups for the scheduler's thread. Under fan-out load the core is busy with the
//! runtime's workers, and Linux's scheduler (EEVDF, since 6.6) lets a thread that wakes wait
//! for the running thread's time slice to end (1.4 ms on a 2-core box, more with more cores)
//! before it runs: cron fires came 1 to 5 ms after the second. Since Linux 6.12 a thread may
//! ask for a shorter slice of its own (`sched_setattr`'s `sched_runtime` under
//! `SCHED_OTHER`); a thread with a short slice has the earlier deadline when it wakes, so it
//! runs at once. Its share of the CPU is unchanged (same policy, same nice value), and no
//! privilege is needed. Older kernels ignore the request; other systems have nothing to ask.

use std::time::Duration;

/// The slice asked for: the kernel's shortest. A fire's work on this thread (render, hand to
/// the outbox) takes a few microseconds.
const SLICE: Duration = Duration::from_micros(100);

/// Ask for prompt wake-ups of the calling thread; a refusal only costs latency.
pub fn ask_for_this_thread() {
    if let Err(e) = short_slice(SLICE) {
        tracing::debug!(error = %e, "no short scheduler slice for this thread");
    }
}

/// `sched_attr` up to its first version's fields (`SCHED_ATTR_SIZE_VER0`, 48 bytes), the
/// layout of `include/uapi/linux/sched/types.h`.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The calling thread's scheduling attributes (sched_getattr(2)).
#[cfg(target_os = "linux")]
fn attributes() -> std::io::Result<SchedAttr> {
    let size = std::mem::size_of::<SchedAttr>() as u32;
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr(2) writes at most `size` bytes into `attr`, which is a
    // `#[repr(C)]` struct of exactly that size; pid 0 is the calling thread.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            size,
            0,
        )
    };
    if got != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr)
}

#[cfg(target_os = "linux")]
fn short_slice(slice: Duration) -> std::io::Result<()> {
    let mut attr = attributes()?;
    // A real-time or batch policy someone chose is left alone.
    if attr.policy != libc::SCHED_OTHER as u32 {
        return Ok(());
    }
    // The same policy and nice value, only the slice changes.
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.flags = 0;
    attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: sched_setattr(2) reads `attr.size` bytes from `attr`, a valid, initialised
    // `#[repr(C)]` struct of that size; pid 0 is the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn short_slice(_slice: Duration) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The slice, as the kernel reports it (6.12 and later report a fair thread's slice).
    fn slice_now() -> u64 {
        attributes().expect("sched_getattr").runtime
    }

    #[test]
    fn a_thread_gets_the_short_slice_it_asks_for_and_keeps_its_nice_value() {
        // On a thread of its own: the test harness's threads are left as they were.
        std::thread::spawn(|| {
            // SAFETY: getpriority(2) on the calling thread (who 0) reads no memory of ours.
            let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let before = (nice(), slice_now());
            short_slice(SLICE).expect("sched_setattr");
            // Kernels before 6.12 report no slice for a fair thread (0): nothing to compare.
            if before.1 != 0 {
                assert_eq!(slice_now(), SLICE.as_nanos() as u64);
            }
            assert_eq!(nice(), before.0, "the nice value is kept");
        })
        .join()
        .expect("thread");
    }
}
