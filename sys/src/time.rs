//! Date and time: RFC 3339 in UTC with milliseconds, computed here rather
//! than with a date crate to keep the static binary small. The one calendar
//! of the project: service logs, `berth logs --since`, image `created` times.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The length of [`Timestamp::format`]: `2026-11-23T08:40:01.123Z`.
pub const TIMESTAMP_LEN: usize = 24;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Parses RFC 3339 (`2026-11-23T08:40:01.123Z`, `…+02:00`), and the looser
    /// forms people type: a space for `T`, no seconds, no offset (UTC), or a
    /// date alone (midnight UTC).
    pub fn parse(text: &str) -> Option<Timestamp> {
        let b = text.trim().as_bytes();
        let num = |s: &[u8]| -> Option<i64> {
            if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
                return None;
            }
            s.iter().try_fold(0i64, |acc, d| {
                acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
            })
        };
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let mut rest = &b[10..];
        let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
        if let Some((&sep, time)) = rest.split_first() {
            if !matches!(sep, b'T' | b't' | b' ') || time.len() < 5 || time[2] != b':' {
                return None;
            }
            hour = num(&time[0..2])?;
            minute = num(&time[3..5])?;
            rest = &time[5..];
            if rest.first() == Some(&b':') {
                second = num(rest.get(1..3)?)?;
                rest = &rest[3..];
                if rest.first() == Some(&b'.') {
                    let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if digits == 0 {
                        return None;
                    }
                    let frac = &rest[1..1 + digits];
                    let mut ms = 0;
                    for i in 0..3 {
                        ms = ms * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
                    }
                    millis = ms;
                    rest = &rest[1 + digits..];
                }
            }
        }
        // A leap second is stored as the last millisecond before it.
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        if second == 60 {
            second = 59;
            millis = 999;
        }
        let offset = match rest {
            [] | [b'Z'] | [b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let (h, m) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
                if h > 23 || m > 59 {
                    return None;
                }
                let minutes = h * 60 + m;
                if *sign == b'+' {
                    minutes
                } else {
                    -minutes
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
        Some(Timestamp(secs * 1000 + millis))
    }

    /// The fixed-width form written in log files.
    pub fn format(self) -> [u8; TIMESTAMP_LEN] {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let year = year.clamp(0, 9999);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                // v is within 0..10^width here, so each digit fits a byte.
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, sod / 3600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 3, ms);
        out
    }
}

impl Timestamp {
    /// Whole seconds, `1970-01-01T00:00:00Z`: the form OCI's `created` and
    /// other RFC 3339 fields take.
    pub fn format_seconds(self) -> String {
        let full = self.format();
        let mut out = String::with_capacity(20);
        // The formatter only writes ASCII: each byte is one char.
        out.extend(full[..19].iter().map(|&b| char::from(b)));
        out.push('Z');
        out
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.format();
        // The formatter only writes ASCII digits and separators.
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_and_parse() {
        let t = Timestamp(1_795_423_201_123);
        assert_eq!(t.to_string(), "2026-11-23T08:40:01.123Z");
        assert_eq!(Timestamp::parse("2026-11-23T08:40:01.123Z"), Some(t));
        assert_eq!(
            Timestamp::parse("2026-11-23T09:40:01.123456+01:00"),
            Some(t)
        );
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::parse("2000-02-29"),
            Some(Timestamp(951_782_400_000))
        );
        assert_eq!(
            Timestamp::parse("2026-11-23 08:40"),
            Some(Timestamp(1_795_423_200_000))
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-11-23T25:00",
            "2026-11-23T08:40:01.Z",
            "yesterday",
            "2026-11-23T08:40:01+1",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
        // Every day of a few centuries round-trips.
        for days in (-719_000..2_900_000).step_by(997) {
            let t = Timestamp(days * 86_400_000 + 45_296_789);
            assert_eq!(Timestamp::parse(&t.to_string()), Some(t), "{t}");
        }
    }

    #[test]
    fn whole_seconds() {
        assert_eq!(Timestamp(0).format_seconds(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_700_000_000_999).format_seconds(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).format_seconds(),
            "2000-02-29T00:00:00Z"
        );
    }
}
