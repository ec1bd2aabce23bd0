use super::*;

pub fn parse(url: &str, body: &[u8]) -> Result<Instance, DsError> {
    let doc = json(url, body)?;
    let id = match &doc["droplet_id"] {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => {
            return Err(DsError::Malformed {
                url: url.into(),
                reason: "no droplet_id".into(),
            })
        }
    };
    Ok(Instance {
        instance_id: Some(id),
        hostname: doc["hostname"].as_str().map(short_host),
        public_keys: doc["public_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        user_data: doc["user_data"].as_str().map(|s| s.as_bytes().to_vec()),
        network: network_from_digitalocean(&doc["interfaces"], &doc["dns"]),
    })
}

pub fn fetch(options: &Options) -> Result<Instance, DsError> {
    let url = options.url("/metadata/v1.json");
    let response = options
        .request(Request::get(&url))
        .limit(MAX_USER_DATA + MAX_META)
        .send()?;
    match response.status {
        200 => parse(&url, &response.body),
        404 => Err(DsError::Absent(format!("{url}: not found"))),
        status => Err(DsError::Status { url, status }),
    }
}
