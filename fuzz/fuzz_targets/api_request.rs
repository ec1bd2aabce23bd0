//! Fuzzes berthd's API request parser (request line, headers,
//! Content-Length and the announced body, percent-decoding of the path and
//! query) with its default limits.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berthd::api::fuzz_request(data);
});
