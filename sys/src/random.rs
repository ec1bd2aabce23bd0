//! Random bytes from getrandom(2), for what needs uniqueness rather than
//! secrecy: GPT GUIDs, DHCP transaction ids and retry jitter, temporary file
//! names.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// Fills `buf` from the kernel's random pool with getrandom(2) `flags`.
fn fill_with(buf: &mut [u8], flags: libc::c_uint) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`,
        // which we own for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), flags) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Fills `buf` from the kernel's random pool, waiting for it to be
/// initialised: for what must be unpredictable.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    fill_with(buf, 0)
}

/// `N` bytes that are unique enough: random when getrandom works, else the
/// clock and the pid. No entropy this early in boot is not a reason to fail
/// where only uniqueness matters (one disk's GUIDs, one client's xids).
///
/// `GRND_INSECURE` (Linux 5.6): never waits for the pool. Under emulation,
/// with no RDRAND and no virtio-rng, the pool was initialised ~7 s into the
/// boot, and stage 1's first atomic write (its temporary name) and netconf's
/// first DHCP xid waited for it.
pub fn unique<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if fill_with(&mut buf, libc::GRND_INSECURE).is_err() && fill(&mut buf).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = (t ^ u128::from(std::process::id())).to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = seed[i % seed.len()];
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_differ_between_calls() {
        let a: [u8; 16] = unique();
        let b: [u8; 16] = unique();
        assert_ne!(a, b);
        let mut big = vec![0u8; 1 << 20];
        fill(&mut big).expect("getrandom");
        assert!(big.iter().any(|&b| b != 0));
    }
}
