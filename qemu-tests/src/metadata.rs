//! A cloud metadata service emulated on the host for a VM: the tests' HTTP
//! server ([`berth_testkit::http`]) on 127.0.0.1, answering with a test's
//! handler and keeping every request it saw so a test can check the
//! protocol (IMDSv2 tokens, GCE's flavor header) the guest spoke.

use std::path::Path;
use std::sync::{Arc, Mutex};

pub use berth_testkit::http::{not_found, ok, Answer, Seen, Server};

use crate::{io_err, Result};

/// EC2's instance metadata service, IMDSv2 only: tokens from
/// `PUT /latest/api/token` (which must carry a TTL header), and every GET
/// without a token it handed out refused with 401. The instance is
/// `i-0berth0000000001`, `ip-10-0-0-7.ec2.internal`, with `key` as its one
/// SSH key and `user_data` as its user-data.
pub fn imds_v2(key: String, user_data: Vec<u8>) -> Result<Server> {
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let server = Server::start(move |req| -> Answer {
        let mut tokens = tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if req.method == "PUT" && req.path == "/latest/api/token" {
            if !req
                .headers
                .contains_key("x-aws-ec2-metadata-token-ttl-seconds")
            {
                return (400, Vec::new(), b"missing ttl".to_vec());
            }
            let t = format!("AQAEAtoken{}", tokens.len());
            tokens.push(t.clone());
            return ok(t);
        }
        let valid = req
            .headers
            .get("x-aws-ec2-metadata-token")
            .is_some_and(|t| tokens.contains(t));
        if !valid {
            return (401, Vec::new(), Vec::new());
        }
        match req.path.as_str() {
            "/latest/meta-data/instance-id" => ok("i-0berth0000000001"),
            "/latest/meta-data/local-hostname" => ok("ip-10-0-0-7.ec2.internal"),
            "/latest/meta-data/public-keys/" => ok("0=berth-test"),
            "/latest/meta-data/public-keys/0/openssh-key" => ok(format!("{key}\n")),
            "/latest/user-data" => ok(user_data.clone()),
            _ => not_found(),
        }
    });
    server.map_err(io_err(Path::new("127.0.0.1:0")))
}

/// The time from berthd's start to its config being loaded (datasource
/// probe included), from the line berthd logs:
/// `datasources: config loaded N ms after berthd started`.
pub fn config_loaded_ms(ssh: &crate::ssh::Ssh) -> Result<u64> {
    let text = ssh.check("sudo berth logs berthd | grep 'datasources: config loaded'")?;
    text.lines()
        .last()
        .and_then(|l| {
            l.split("config loaded ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| crate::Error::Io {
            path: "berth logs berthd".into(),
            source: std::io::Error::other(format!("no `config loaded N ms` line in: {text}")),
        })
}
