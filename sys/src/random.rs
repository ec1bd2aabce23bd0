//! Random bytes from getrandom(2), for what needs uniqueness rather than
//! secrecy: GPT GUIDs, DHCP transaction ids and retry jitter, temporary file
//! names.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// Fills `buf` from the kernel's random pool, waiting for it to be
/// initialised (it is by the time anything here runs on a booted machine).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`,
        // which we own for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
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

/// `N` bytes that are unique enough: random when getrandom works, else the
/// clock and the pid. No entropy this early in boot is not a reason to fail
/// where only uniqueness matters (one disk's GUIDs, one client's xids).
pub fn unique<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if fill(&mut buf).is_err() {
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
