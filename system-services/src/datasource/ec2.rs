use super::*;

pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";

struct Session<'a> {
    options: &'a Options,
    token: Option<String>,
}

impl Session<'_> {
    fn new_token(&mut self) -> Result<(), DsError> {
        let url = self.options.url("/latest/api/token");
        let response = self
            .options
            .request(Request::put(&url).header(TTL_HEADER, "21600"))
            .send()?;
        match response.status {
            200 => {
                let token = line(&url, &response.body)?;
                self.token = Some(token);
                Ok(())
            }
            404 | 405 => {
                log::warn!(
                    "{url}: no IMDSv2 (answered {}); using IMDSv1",
                    response.status
                );
                self.token = None;
                Ok(())
            }
            status => Err(DsError::Status { url, status }),
        }
    }

    /// GETs `path`; `None` on 404.
    fn get(&mut self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, DsError> {
        let url = self.options.url(path);
        let send = |token: &Option<String>| -> Result<Response, DsError> {
            let mut req = self.options.request(Request::get(&url)).limit(limit);
            if let Some(t) = token {
                req = req.header(TOKEN_HEADER, t);
            }
            Ok(req.send()?)
        };
        let mut response = send(&self.token)?;
        if response.status == 401 {
            log::info!("{url}: the IMDSv2 token was refused; taking a new one");
            self.new_token()?;
            response = send(&self.token)?;
        }
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(DsError::Status { url, status }),
        }
    }
}

pub fn fetch(options: &Options) -> Result<Instance, DsError> {
    let mut s = Session {
        options,
        token: None,
    };
    s.new_token()?;
    let id_path = "/latest/meta-data/instance-id";
    let Some(id) = s.get(id_path, MAX_META)? else {
        return Err(DsError::Absent(format!(
            "{}: no instance-id",
            options.url(id_path)
        )));
    };
    let instance_id = Some(line(&options.url(id_path), &id)?);
    let mut hostname = None;
    for path in [
        "/latest/meta-data/local-hostname",
        "/latest/meta-data/hostname",
    ] {
        if let Some(h) = s.get(path, MAX_META)? {
            hostname = Some(short_host(&line(&options.url(path), &h)?));
            break;
        }
    }
    let mut public_keys = Vec::new();
    let keys_path = "/latest/meta-data/public-keys/";
    if let Some(list) = s.get(keys_path, MAX_META)? {
        for entry in text(&options.url(keys_path), &list)?.lines() {
            // `0=my-key`: the key is at `0/openssh-key`.
            let index = entry.split('=').next().unwrap_or_default().trim();
            if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let path = format!("{keys_path}{index}/openssh-key");
            if let Some(key) = s.get(&path, MAX_META)? {
                public_keys.extend(
                    text(&options.url(&path), &key)?
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
        }
    }
    let user_data = s.get("/latest/user-data", MAX_USER_DATA)?;
    Ok(Instance {
        instance_id,
        hostname,
        public_keys,
        user_data,
        network: None,
    })
}
