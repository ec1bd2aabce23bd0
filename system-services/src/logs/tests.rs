use super::*;

#[test]
fn since_takes_times_and_durations() {
    let now = Timestamp(1_000_000_000);
    assert_eq!(
        parse_since("10m", now).ok(),
        Some(Timestamp(1_000_000_000 - 600_000))
    );
    assert_eq!(
        parse_since("90", now).ok(),
        Some(Timestamp(1_000_000_000 - 90_000))
    );
    assert_eq!(
        parse_since("1970-01-02", now).ok(),
        Some(Timestamp(86_400_000))
    );
    assert!(matches!(
        parse_since("soon", now),
        Err(LogError::Since { .. })
    ));
}

#[test]
fn splitter_cuts_lines_and_long_ones() {
    let mut s = Splitter::new(8);
    let mut b = Batch::default();
    s.feed(b"abc\n12345678\n123456789\nxy", &mut b);
    let lines: Vec<&[u8]> = b
        .ends
        .iter()
        .scan(0, |start, &end| {
            let l = &b.data[*start..end];
            *start = end;
            Some(l)
        })
        .collect();
    assert_eq!(lines, [&b"abc"[..], b"12345678", b"12345678", b"9"]);
    assert_eq!(s.pending, b"xy");
    // Never splits a UTF-8 character.
    let mut s = Splitter::new(8);
    let mut b = Batch::default();
    s.feed("1234567é\n".as_bytes(), &mut b);
    assert_eq!(&b.data[..b.ends[0]], b"1234567");
    assert_eq!(&b.data[b.ends[0]..], "é".as_bytes());
}

#[test]
fn log_lines_parse() {
    let l = LogLine::new(b"2026-11-23T08:40:01.123Z stderr hello world");
    assert_eq!(l.timestamp, Some(Timestamp(1_795_423_201_123)));
    assert_eq!(l.stream(), Some(Stream::Stderr));
    assert_eq!(l.message(), "hello world");
    let l = LogLine::new(b"garbage here");
    assert_eq!(
        (l.timestamp, l.stream(), l.message()),
        (None, None, "garbage here")
    );
}

#[test]
fn names_cannot_escape_the_directory() {
    for bad in ["../etc/passwd", "a/b", "", ".hidden"] {
        assert!(LogReader::new("/tmp", bad).is_err(), "{bad}");
        assert!(
            LogWriter::open(&LogConfig::new("/nonexistent"), bad).is_err(),
            "{bad}"
        );
    }
}
