//! Value types that accept the several spellings users write in cloud-config and
//! compose files (`environment` as a map or a `K=V` list, `command` as a string or
//! a list, file modes as `"0644"` or `0644`, …), each with its JSON schema.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Any YAML scalar, kept as the text the user wrote (`8080`, `true`, `on`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Scalar(pub String);

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(String::new()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Asking for a string gets the text as written (`0o600`, `0644`, `1.10`),
        // not YAML's reading of it as a number.
        d.deserialize_str(ScalarVisitor)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string, number or boolean.",
            "type": ["string", "number", "integer", "boolean", "null"]
        })
    }
}

/// A key/value map that may also be written as a list of `KEY=VALUE` strings
/// (compose's `environment` and `labels`). A list item without `=` has no value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KeyValues(pub BTreeMap<String, Option<String>>);

impl KeyValues {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_deref())
    }
}

struct KeyValuesVisitor;

impl<'de> Visitor<'de> for KeyValuesVisitor {
    type Value = KeyValues;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of names to values, or a list of NAME=VALUE strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyValues, A::Error> {
        let mut map = BTreeMap::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            match item.0.split_once('=') {
                Some((k, v)) => map.insert(k.to_string(), Some(v.to_string())),
                None => map.insert(item.0, None),
            };
        }
        Ok(KeyValues(map))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<KeyValues, A::Error> {
        let mut map = BTreeMap::new();
        while let Some((k, v)) = access.next_entry::<String, Option<Scalar>>()? {
            map.insert(k, v.map(|s| s.0));
        }
        Ok(KeyValues(map))
    }

    fn visit_unit<E: de::Error>(self) -> Result<KeyValues, E> {
        Ok(KeyValues::default())
    }
}

impl<'de> Deserialize<'de> for KeyValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyValuesVisitor)
    }
}

impl JsonSchema for KeyValues {
    fn schema_name() -> Cow<'static, str> {
        "KeyValues".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A map of names to values, or a list of `NAME=VALUE` strings.",
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": ["string", "number", "integer", "boolean", "null"]}},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// A command as a shell string (`"echo hi"`) or an argument list (`[echo, hi]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

impl Command {
    /// The argv to execute; a shell string runs under `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            Command::Exec(v) => v.clone(),
        }
    }
}

/// Berth's `http:SOCKET PATH` healthcheck (what follows `http:`): an HTTP GET
/// of PATH on the unix socket SOCKET, both absolute; `None` when either is
/// not. PATH defaults to `/`.
pub fn http_check(rest: &str) -> Option<(String, String)> {
    let mut words = rest.split_whitespace();
    let socket = words.next().filter(|s| s.starts_with('/'))?;
    let path = words.next().unwrap_or("/");
    if !path.starts_with('/') || words.next().is_some() {
        return None;
    }
    Some((socket.to_string(), path.to_string()))
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command string or a list of arguments")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
        Ok(Command::Shell(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Command, E> {
        Ok(Command::Shell(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Command, E> {
        Ok(Command::Shell(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Command, E> {
        Ok(Command::Shell(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
        let mut args = Vec::new();
        while let Some(arg) = seq.next_element::<Scalar>()? {
            args.push(arg.0);
        }
        Ok(Command::Exec(args))
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CommandVisitor)
    }
}

impl JsonSchema for Command {
    fn schema_name() -> Cow<'static, str> {
        "Command".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A shell command string, or a list of arguments.",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": ["string", "number", "integer", "boolean"]}}
            ]
        })
    }
}

/// One string or a list of strings (`tmpfs: /run` or `tmpfs: [/run, /tmp]`;
/// cloud-init's `groups: "a, b"` is split by [`StringList::comma_separated`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StringList(pub Vec<String>);

impl StringList {
    /// Items with comma-separated strings split apart and trimmed.
    pub fn comma_separated(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

struct StringListVisitor;

impl<'de> Visitor<'de> for StringListVisitor {
    type Value = StringList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
        Ok(StringList(vec![v.to_string()]))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StringList, E> {
        Ok(StringList::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            items.push(item.0);
        }
        Ok(StringList(items))
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringListVisitor)
    }
}

impl JsonSchema for StringList {
    fn schema_name() -> Cow<'static, str> {
        "StringList".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        })
    }
}

/// Why a value's text is not a file mode or a duration; the text is the
/// type error shown at the value's file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("`{0}` is not an octal file mode (write it like \"0644\")")]
    NotOctal(String),
    #[error("`{0}` is larger than the largest file mode, 07777")]
    ModeTooLarge(String),
    #[error("`{0}` is not a duration (write it like 30s, 1m30s or 500ms)")]
    NotDuration(String),
}

/// A Unix file mode, written in octal as cloud-init does: `"0644"`, `0644`, `'600'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    pub fn parse(text: &str) -> Result<Self, FormError> {
        let digits = text.trim();
        let digits = digits.strip_prefix("0o").unwrap_or(digits);
        if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(FormError::NotOctal(text.to_string()));
        }
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 => Ok(FileMode(mode)),
            _ => Err(FormError::ModeTooLarge(text.to_string())),
        }
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?;
        FileMode::parse(&text.0).map_err(de::Error::custom)
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> Cow<'static, str> {
        "FileMode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An octal file mode such as \"0644\".",
            "anyOf": [
                {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$"},
                {"type": "integer", "minimum": 0, "maximum": 7777}
            ]
        })
    }
}

/// A duration as compose writes it: `30s`, `1m30s`, `500ms`, `2h`, or bare seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(text: &str) -> Result<Self, FormError> {
        let bad = || FormError::NotDuration(text.to_string());
        let text = text.trim();
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Duration(std::time::Duration::from_secs(secs)));
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = text;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b'.')
                .count();
            if digits == 0 {
                return Err(bad());
            }
            let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let scale = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                "us" => 0.000_001,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            let part = std::time::Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        Ok(Duration(total))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?;
        Duration::parse(&text.0).map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as 30s, 1m30s or 500ms; a bare number is seconds.",
            "anyOf": [
                {"type": "string", "pattern": "^([0-9.]+(h|m|s|ms|us))+$|^[0-9]+$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_are_octal() {
        assert_eq!(FileMode::parse("0644"), Ok(FileMode(0o644)));
        assert_eq!(FileMode::parse("600"), Ok(FileMode(0o600)));
        assert_eq!(FileMode::parse("0o755"), Ok(FileMode(0o755)));
        assert!(FileMode::parse("0899").is_err());
        assert!(FileMode::parse("17777").is_err());
        assert!(FileMode::parse("rw-r--r--").is_err());
    }

    #[test]
    fn durations_take_compose_units() {
        let secs = |t: &str| Duration::parse(t).map(|d| d.0.as_millis());
        assert_eq!(secs("30s"), Ok(30_000));
        assert_eq!(secs("1m30s"), Ok(90_000));
        assert_eq!(secs("500ms"), Ok(500));
        assert_eq!(secs("2"), Ok(2_000));
        assert!(secs("soon").is_err());
        assert!(secs("").is_err());
        assert!(secs("5x").is_err());
        // Found by the fuzzer: the sum of parts overflowed and panicked.
        assert!(secs("100000000000000000000s100000000000000000000s").is_err());
    }
}
