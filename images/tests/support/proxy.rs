//! A proxy in front of a test's registry that breaks the first connection to
//! carry more than a given number of bytes (a layer's: the rest is small).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the proxy breaks the layer's connection.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Closed in the middle of the response.
    Cut,
    /// Left open, with nothing more sent.
    Stall,
}

/// Forwards connections to the registry; the first one to carry `limit`
/// bytes to the client (the layer's: the rest is small) breaks there, by
/// `fault`. Every request's text is kept.
pub struct FaultyProxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FaultyProxy {
    pub fn start(upstream: u16, limit: usize, fault: Fault) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, heads) = (connections.clone(), requests.clone());
        let cut = Arc::new(AtomicBool::new(false));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let server = TcpStream::connect(("127.0.0.1", upstream)).expect("upstream");
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let heads = heads.clone();
                // Client → registry, keeping each request's text.
                std::thread::spawn(move || pump(c2, s2, None, Some(heads)));
                // Registry → client, cut once.
                let cut = cut.clone();
                std::thread::spawn(move || pump(server, client, Some((limit, fault, cut)), None));
            }
        });
        FaultyProxy {
            port,
            connections,
            requests,
        }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: Option<(usize, Fault, Arc<AtomicBool>)>,
    heads: Option<Arc<Mutex<Vec<String>>>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(heads) = &heads {
            heads
                .lock()
                .expect("heads")
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if let Some((limit, fault, done)) = &fault {
            if sent + n >= *limit && !done.swap(true, Ordering::SeqCst) {
                let _ = to.write_all(&buf[..limit - sent]);
                if let Fault::Stall = fault {
                    // Open and silent for longer than the test waits.
                    std::thread::sleep(Duration::from_secs(600));
                }
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl FaultyProxy {
    /// The start of the first range asked for from a byte other than 0: where a
    /// broken transfer went on from.
    pub fn resumed_from(&self) -> Option<usize> {
        let range = "range: bytes=";
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter_map(|r| {
                r.to_lowercase()
                    .lines()
                    .find(|l| l.starts_with(range))
                    .map(|l| l[range.len()..].trim_end_matches('-').to_string())
            })
            .filter_map(|from| from.parse().ok())
            .find(|from| *from != 0)
    }
}
