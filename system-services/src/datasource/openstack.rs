use super::*;

pub fn parse_meta(url: &str, body: &[u8], user_data: Option<Vec<u8>>) -> Result<Instance, DsError> {
    let doc = json(url, body)?;
    let Some(uuid) = doc["uuid"].as_str() else {
        return Err(DsError::Malformed {
            url: url.into(),
            reason: "no `uuid`".into(),
        });
    };
    let public_keys = match &doc["public_keys"] {
        serde_json::Value::Object(keys) => keys
            .values()
            .filter_map(|k| k.as_str().map(|s| s.trim().to_string()))
            .collect(),
        serde_json::Value::Array(keys) => keys
            .iter()
            .filter_map(|k| k.as_str().map(|s| s.trim().to_string()))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Instance {
        instance_id: Some(uuid.to_string()),
        hostname: doc["hostname"]
            .as_str()
            .or(doc["name"].as_str())
            .map(short_host),
        public_keys,
        user_data,
        network: None,
    })
}

pub fn fetch(options: &Options) -> Result<Instance, DsError> {
    let get = |path: &str, limit: usize| -> Result<Option<Vec<u8>>, DsError> {
        let url = options.url(path);
        let response = options.request(Request::get(&url)).limit(limit).send()?;
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(DsError::Status { url, status }),
        }
    };
    let meta_path = "/openstack/latest/meta_data.json";
    let Some(meta) = get(meta_path, MAX_META)? else {
        return Err(DsError::Absent(format!(
            "{}: not found",
            options.url(meta_path)
        )));
    };
    let user_data = get("/openstack/latest/user_data", MAX_USER_DATA)?;
    let mut instance = parse_meta(&options.url(meta_path), &meta, user_data)?;
    let net_path = "/openstack/latest/network_data.json";
    if let Some(net) = get(net_path, MAX_META)? {
        instance.network = network_from_openstack(&json(&options.url(net_path), &net)?);
    }
    Ok(instance)
}
