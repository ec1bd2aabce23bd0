//! The boot timeline: when each service's container was created, started, became
//! ready and exited, as times since the kernel booted (CLOCK_BOOTTIME), so that
//! `berth boot-time` can line berthd's work up with the kernel's and PID 1's.

use std::time::Duration;

/// Time since the kernel booted, counting suspend (CLOCK_BOOTTIME); falls back
/// to `/proc/uptime` and then to zero, since a timeline is never worth failing for.
pub fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r == 0 {
        return Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        );
    }
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or_default()
}

/// Seconds since boot, as the API reports times.
pub fn secs(d: Duration) -> f64 {
    // Milliseconds are plenty for a boot chart and keep the JSON short.
    (d.as_millis() as f64) / 1000.0
}

pub use berth_api::{Entry, Timeline};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_forward_and_matches_uptime() {
        let a = since_boot();
        std::thread::sleep(Duration::from_millis(20));
        let b = since_boot();
        assert!(b > a);
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("uptime")
            .split_whitespace()
            .next()
            .expect("field")
            .parse()
            .expect("number");
        assert!((secs(b) - uptime).abs() < 2.0, "{b:?} vs {uptime}");
    }
}
