use super::*;
use base64::Engine;

pub const API: &str = "api-version=2021-02-01";

pub fn parse(url: &str, body: &[u8]) -> Result<Instance, DsError> {
    let doc = json(url, body)?;
    let Some(id) = doc["vmId"].as_str() else {
        return Err(DsError::Malformed {
            url: url.into(),
            reason: "no `vmId`".into(),
        });
    };
    let user_data = match doc["userData"].as_str().filter(|s| !s.is_empty()) {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| DsError::Malformed {
                    url: url.into(),
                    reason: format!("userData is not base64: {e}"),
                })?,
        ),
        None => None,
    };
    Ok(Instance {
        instance_id: Some(id.to_string()),
        hostname: doc["osProfile"]["computerName"]
            .as_str()
            .or(doc["name"].as_str())
            .map(short_host),
        public_keys: doc["publicKeys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["keyData"].as_str().map(|s| s.trim().to_string()))
            .collect(),
        user_data,
        network: None,
    })
}

pub fn fetch(options: &Options) -> Result<Instance, DsError> {
    let url = options.url(&format!("/metadata/instance/compute?{API}"));
    let response = options
        .request(Request::get(&url).header("Metadata", "true"))
        .limit(MAX_USER_DATA + MAX_META)
        .send()?;
    let instance = match response.status {
        200 => parse(&url, &response.body)?,
        404 => return Err(DsError::Absent(format!("{url}: not found"))),
        status => return Err(DsError::Status { url, status }),
    };
    if options.azure_ready {
        // The platform waits for this, but the config is good without it.
        if let Err(e) = report_ready(options) {
            log::warn!("Azure ready report: {e}");
        }
    }
    Ok(instance)
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim())
}

/// Reads the goal state from the wire server and posts `Ready` for it.
pub fn report_ready(options: &Options) -> Result<(), DsError> {
    let base = options.azure_wireserver.trim_end_matches('/');
    let url = format!("{base}/machine/?comp=goalstate");
    let response = options
        .request(Request::get(&url).header("x-ms-version", "2012-11-30"))
        .send()?;
    if response.status != 200 {
        return Err(DsError::Status {
            url,
            status: response.status,
        });
    }
    let xml = text(&url, &response.body)?;
    let field = |name: &str| {
        tag(&xml, name)
            .map(str::to_string)
            .ok_or_else(|| DsError::Malformed {
                url: url.clone(),
                reason: format!("the goal state has no <{name}>"),
            })
    };
    let (incarnation, container, instance) = (
        field("Incarnation")?,
        field("ContainerId")?,
        field("InstanceId")?,
    );
    let report = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><GoalStateIncarnation>{incarnation}</GoalStateIncarnation><Container><ContainerId>{container}</ContainerId><RoleInstanceList><Role><InstanceId>{instance}</InstanceId><Health><State>Ready</State></Health></Role></RoleInstanceList></Container></Health>\n"
    );
    let url = format!("{base}/machine?comp=health");
    let response = options
        .request(
            Request::post(&url)
                .header("x-ms-version", "2012-11-30")
                .header("Content-Type", "text/xml;charset=utf-8")
                .body(report),
        )
        .send()?;
    if !response.is_success() {
        return Err(DsError::Status {
            url,
            status: response.status,
        });
    }
    log::info!("Azure: reported ready");
    Ok(())
}
