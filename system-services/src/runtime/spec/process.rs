//! What the container runs and as whom: argv, environment, user.

use berth_configs::forms::Command;
use berth_configs::model::Service;
use berth_images::oci::RunConfig;
use oci_spec::runtime::User;

use super::{ImageInfo, SpecContext, SpecError, DEFAULT_PATH};

/// Docker's rule for what a container runs: the service's entrypoint replaces the
/// image's and then the image's Cmd is dropped too; the service's command replaces
/// the image's Cmd. `entrypoint: ""` (or `[]`) clears the image's entrypoint.
pub fn process_args(
    service_name: &str,
    service: &Service,
    image: &RunConfig,
) -> Result<Vec<String>, SpecError> {
    let argv = |c: &Command| match c {
        Command::Shell(s) if s.trim().is_empty() => Vec::new(),
        c => c.argv(),
    };
    let (entrypoint, cmd) = match &service.entrypoint {
        Some(e) => (
            argv(e),
            service.command.as_ref().map(argv).unwrap_or_default(),
        ),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            match &service.command {
                Some(c) => argv(c),
                None => image.cmd.clone().unwrap_or_default(),
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            service: service_name.into(),
        });
    }
    Ok(args)
}

/// The environment: the image's, then `berth.environment`, then the service's
/// own, later winning per name; `PATH` is always set.
pub fn environment(service: &Service, image: &RunConfig, ctx: &SpecContext) -> Vec<String> {
    // Names in first-seen order, each with its last value.
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    for entry in image.env.iter().flatten() {
        match entry.split_once('=') {
            Some((k, v)) => set(&mut env, k, v),
            None => set(&mut env, entry, ""),
        }
    }
    for (k, v) in &ctx.environment {
        set(&mut env, k, v);
    }
    // A name without a value (`- FOO` in list form) would take the value from
    // the compose caller's environment; berthd has none to give, so it is left out.
    for (k, v) in &service.environment.0 {
        if let Some(v) = v {
            set(&mut env, k, v);
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        if let Some((k, v)) = DEFAULT_PATH.split_once('=') {
            set(&mut env, k, v);
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: Option<&str>) -> Vec<PasswdEntry> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members) from an `/etc/group`.
fn group_entries(text: Option<&str>) -> Vec<(String, u32, Vec<String>)> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// `user[:group]`, each numeric or a name from the image's `/etc/passwd` and
/// `/etc/group`. A user found in passwd gets its primary group (unless one is
/// given) and the supplementary groups that list it; an unknown numeric uid runs
/// with gid 0, as Docker does.
pub fn resolve_user(service_name: &str, spec: &str, image: &ImageInfo) -> Result<User, SpecError> {
    let err = |reason: String| SpecError::User {
        service: service_name.into(),
        user: spec.into(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd_entries(image.passwd.as_deref());
    let groups = group_entries(image.group.as_deref());
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) if user.is_empty() => None,
        Err(_) => Some(passwd.iter().find(|e| e.name == user).ok_or_else(|| {
            err(if image.passwd.is_some() {
                format!("no user `{user}` in the image's /etc/passwd")
            } else {
                format!("the image has no /etc/passwd to look `{user}` up in; use a numeric uid")
            })
        })?),
    };
    let uid = match (user.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e.uid,
        (Err(_), None) => 0,
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| err(format!("no group `{g}` in the image's /etc/group")))?,
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut u = User::default();
    u.set_uid(uid);
    u.set_gid(gid);
    if let Some(e) = entry {
        let extra: Vec<u32> = groups
            .iter()
            .filter(|(_, g, members)| *g != gid && members.contains(&e.name))
            .map(|(_, g, _)| *g)
            .collect();
        if !extra.is_empty() {
            u.set_additional_gids(Some(extra));
        }
    }
    Ok(u)
}
