use super::*;

fn get(options: &Options, path: &str, limit: usize) -> Result<Option<Vec<u8>>, DsError> {
    let url = options.url(&format!("/computeMetadata/v1/{path}"));
    let response = options
        .request(Request::get(&url).header("Metadata-Flavor", "Google"))
        .limit(limit)
        .send()?;
    if response.header("metadata-flavor") != Some("Google") {
        return Err(DsError::Malformed {
            url,
            reason: "the answer lacks `Metadata-Flavor: Google`: not GCE's metadata server".into(),
        });
    }
    match response.status {
        200 => Ok(Some(response.body)),
        404 => Ok(None),
        status => Err(DsError::Status { url, status }),
    }
}

/// `user:ssh-ed25519 AAAA… comment` lines: the keys, for the default user.
pub fn ssh_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (_, key) = l.trim().split_once(':')?;
            let key = key.trim();
            (key.starts_with("ssh-") || key.starts_with("ecdsa-") || key.starts_with("sk-"))
                .then(|| key.to_string())
        })
        .collect()
}

pub fn fetch(options: &Options) -> Result<Instance, DsError> {
    let url = |p: &str| options.url(&format!("/computeMetadata/v1/{p}"));
    let Some(id) = get(options, "instance/id", MAX_META)? else {
        return Err(DsError::Absent(format!(
            "{}: no instance id",
            url("instance/id")
        )));
    };
    let instance_id = Some(line(&url("instance/id"), &id)?);
    let hostname = match get(options, "instance/hostname", MAX_META)? {
        Some(h) => Some(short_host(&line(&url("instance/hostname"), &h)?)),
        None => None,
    };
    let mut public_keys = Vec::new();
    let block_project = get(
        options,
        "instance/attributes/block-project-ssh-keys",
        MAX_META,
    )?
    .is_some_and(|b| {
        String::from_utf8_lossy(&b)
            .trim()
            .eq_ignore_ascii_case("true")
    });
    let mut key_paths = vec!["instance/attributes/ssh-keys"];
    if !block_project {
        key_paths.push("project/attributes/ssh-keys");
    }
    for path in key_paths {
        if let Some(keys) = get(options, path, MAX_META)? {
            public_keys.extend(ssh_keys(&text(&url(path), &keys)?));
        }
    }
    let user_data = get(options, "instance/attributes/user-data", MAX_USER_DATA)?;
    Ok(Instance {
        instance_id,
        hostname,
        public_keys,
        user_data,
        network: None,
    })
}
