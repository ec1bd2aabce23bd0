//! A serde deserializer over [`Node`] trees.
//!
//! It exists for three reasons a generic YAML deserializer cannot serve: every error carries the
//! position of the value that caused it; unknown keys are all collected (with a
//! "did you mean") instead of stopping at the first; and keys that cloud-init
//! knows but Berth does not implement become warnings instead of errors.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::compat;
use crate::diag::{did_you_mean, Diagnostic, Origin};
use crate::node::{resolve_plain, Entry, Node, Plain, Value};

/// A deserialization failure, located at the innermost value it concerns.
#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    pub origin: Option<Origin>,
    pub path: Option<String>,
    /// Keys (and list indexes) from the root to the offending node.
    pub keys: Vec<String>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            origin: None,
            path: None,
            keys: Vec::new(),
        }
    }
}

impl DeError {
    fn at(mut self, node: &Node, path: &str, keys: &[String]) -> Self {
        if self.origin.is_none() {
            self.origin = Some(node.origin.clone());
            self.path = Some(path.to_string());
            self.keys = keys.to_vec();
        }
        self
    }

    pub fn into_diagnostic(self) -> Diagnostic {
        Diagnostic::error(self.origin, self.path.unwrap_or_default(), self.message)
    }
}

/// Findings that do not stop deserialization (unknown and unsupported keys).
#[derive(Debug, Default)]
pub struct Collector {
    diagnostics: RefCell<Vec<Diagnostic>>,
}

impl Collector {
    pub fn into_inner(self) -> Vec<Diagnostic> {
        self.diagnostics.into_inner()
    }

    fn push(&self, d: Diagnostic) {
        self.diagnostics.borrow_mut().push(d);
    }
}

/// Deserializes `T` from `node`, adding non-fatal findings to `collector`.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    collector: &Collector,
) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer {
        node,
        path: String::new(),
        keys: Vec::new(),
        collector,
    })
}

pub fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[derive(Debug)]
pub struct NodeDeserializer<'de, 'c> {
    node: &'de Node,
    path: String,
    keys: Vec<String>,
    collector: &'c Collector,
}

impl<'de, 'c> NodeDeserializer<'de, 'c> {
    fn child(&self, node: &'de Node, path: String, key: &str) -> Self {
        let mut keys = self.keys.clone();
        keys.push(key.to_string());
        NodeDeserializer {
            node,
            path,
            keys,
            collector: self.collector,
        }
    }

    fn invalid_type<V: Visitor<'de>>(&self, visitor: &V) -> DeError {
        let unexpected = match &self.node.value {
            Value::Null => de::Unexpected::Unit,
            Value::Scalar { text, .. } => de::Unexpected::Str(text),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        };
        <DeError as de::Error>::invalid_type(unexpected, visitor)
            .at(self.node, &self.path, &self.keys)
    }

    fn scalar(&self) -> Option<&'de str> {
        match &self.node.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn locate<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(self.node, &self.path, &self.keys))
    }

    fn visit_seq<V: Visitor<'de>>(
        self,
        visitor: V,
        items: &'de [Node],
    ) -> Result<V::Value, DeError> {
        let access = SeqAccess {
            items: items.iter().enumerate(),
            parent: &self,
        };
        let r = visitor.visit_seq(access);
        self.locate(r)
    }

    fn visit_map<V: Visitor<'de>>(
        self,
        visitor: V,
        entries: &'de [Entry],
        known: Option<(&'static str, &'static [&'static str])>,
    ) -> Result<V::Value, DeError> {
        let access = MapAccess {
            entries: entries.iter(),
            value: None,
            known,
            parent: &self,
        };
        let r = visitor.visit_map(access);
        self.locate(r)
    }
}

macro_rules! deserialize_number {
    ($($method:ident => $visit:ident as $ty:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.scalar().map(|t| parse_number::<$ty>(t.trim())) {
                Some(Some(n)) => {
                    let r = visitor.$visit(n);
                    self.locate(r)
                }
                _ => Err(self.invalid_type(&visitor)),
            }
        }
    )*};
}

fn parse_number<T: std::str::FromStr + TryFrom<u64>>(text: &str) -> Option<T> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16)
            .ok()
            .and_then(|v| T::try_from(v).ok());
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8)
            .ok()
            .and_then(|v| T::try_from(v).ok());
    }
    text.parse().ok()
}

/// Booleans as YAML 1.1 (and so cloud-init) spells them.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
            Some(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => {
            Some(false)
        }
        _ => None,
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, quoted: true } => visitor.visit_borrowed_str(text),
            Value::Scalar {
                text,
                quoted: false,
            } => match resolve_plain(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int(i) => visitor.visit_i64(i),
                Plain::UInt(u) => visitor.visit_u64(u),
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str => visitor.visit_borrowed_str(text),
            },
            Value::Seq(items) => return self.visit_seq(visitor, items),
            Value::Map(entries) => return self.visit_map(visitor, entries, None),
        };
        self.locate(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().and_then(parse_bool) {
            Some(b) => {
                let r = visitor.visit_bool(b);
                self.locate(r)
            }
            None => Err(self.invalid_type(&visitor)),
        }
    }

    deserialize_number! {
        deserialize_i8 => visit_i64 as i64,
        deserialize_i16 => visit_i64 as i64,
        deserialize_i32 => visit_i64 as i64,
        deserialize_i64 => visit_i64 as i64,
        deserialize_u8 => visit_u64 as u64,
        deserialize_u16 => visit_u64 as u64,
        deserialize_u32 => visit_u64 as u64,
        deserialize_u64 => visit_u64 as u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(|t| t.trim().parse::<f64>()) {
            Some(Ok(f)) => {
                let r = visitor.visit_f64(f);
                self.locate(r)
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Scalar { text, .. } => visitor.visit_borrowed_str(text),
            // Lets "any scalar" types read an empty value; a plain String still refuses it.
            Value::Null => visitor.visit_unit(),
            _ => return Err(self.invalid_type(&visitor)),
        };
        self.locate(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(text) => {
                let r = visitor.visit_borrowed_bytes(text.as_bytes());
                self.locate(r)
            }
            None => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let is_null = match &self.node.value {
            Value::Null => true,
            Value::Scalar {
                text,
                quoted: false,
            } => resolve_plain(text) == Plain::Null,
            _ => false,
        };
        if is_null {
            let r = visitor.visit_none();
            self.locate(r)
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => {
                let r = visitor.visit_unit();
                self.locate(r)
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => self.visit_seq(visitor, items),
            // `runcmd:` with nothing after it is an empty list to every cloud-init user.
            Value::Null => self.visit_seq(visitor, &[]),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.visit_map(visitor, entries, None),
            Value::Null => self.visit_map(visitor, &[], None),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.visit_map(visitor, entries, Some((name, fields))),
            Value::Null => self.visit_map(visitor, &[], Some((name, fields))),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, .. } => {
                if !variants.contains(&text.as_str()) {
                    let mut msg = format!(
                        "`{text}` is not one of: {}",
                        variants
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if let Some(s) = did_you_mean(text, variants.iter().copied()) {
                        msg.push_str(&format!(" (did you mean `{s}`?)"));
                    }
                    return Err(
                        <DeError as de::Error>::custom(msg).at(self.node, &self.path, &self.keys)
                    );
                }
                let r = visitor.visit_enum(text.as_str().into_deserializer());
                self.locate(r)
            }
            Value::Map(entries) if entries.len() == 1 => {
                let entry = &entries[0];
                let r = visitor.visit_enum(EnumAccess {
                    entry,
                    parent: &self,
                });
                self.locate(r)
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'a, 'de, 'c> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    parent: &'a NodeDeserializer<'de, 'c>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, 'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((index, node)) => {
                let path = format!("{}[{index}]", self.parent.path);
                let child = self.parent.child(node, path, &index.to_string());
                let (path, keys) = (child.path.clone(), child.keys.clone());
                seed.deserialize(child)
                    .map(Some)
                    .map_err(|e| e.at(node, &path, &keys))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a, 'de, 'c> {
    entries: std::slice::Iter<'de, Entry>,
    value: Option<&'de Entry>,
    /// For structs: their name and fields, so unknown keys can be reported and skipped.
    known: Option<(&'static str, &'static [&'static str])>,
    parent: &'a NodeDeserializer<'de, 'c>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        loop {
            let Some(entry) = self.entries.next() else {
                return Ok(None);
            };
            if let Some((name, fields)) = self.known {
                if !fields.contains(&entry.key.as_str()) {
                    self.report_unknown(name, fields, entry);
                    continue;
                }
            }
            self.value = Some(entry);
            let key_node = Node::string(entry.key.clone(), entry.key_origin.clone());
            let r = seed.deserialize(entry.key.as_str().into_deserializer());
            let mut keys = self.parent.keys.clone();
            keys.push(entry.key.clone());
            return r.map(Some).map_err(|e: DeError| {
                e.at(
                    &key_node,
                    &join_path(&self.parent.path, entry.shown_key()),
                    &keys,
                )
            });
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value requested before key"))?;
        let path = join_path(&self.parent.path, entry.shown_key());
        let child = self.parent.child(&entry.value, path, &entry.key);
        let (path, keys) = (child.path.clone(), child.keys.clone());
        seed.deserialize(child)
            .map_err(|e| e.at(&entry.value, &path, &keys))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

impl MapAccess<'_, '_, '_> {
    fn report_unknown(&self, name: &str, fields: &[&str], entry: &Entry) {
        let path = join_path(&self.parent.path, entry.shown_key());
        let origin = Some(entry.key_origin.clone());
        if let Some(reason) = compat::unsupported(name, &entry.key) {
            self.parent
                .collector
                .push(Diagnostic::warning(origin, path, reason.to_string()));
            return;
        }
        let mut message = format!("unknown key `{}`", entry.key);
        if let Some(s) = did_you_mean(&entry.key, fields.iter().copied()) {
            message.push_str(&format!("; did you mean `{s}`?"));
        }
        self.parent
            .collector
            .push(Diagnostic::error(origin, path, message));
    }
}

struct EnumAccess<'a, 'de, 'c> {
    entry: &'de Entry,
    parent: &'a NodeDeserializer<'de, 'c>,
}

impl<'a, 'de, 'c> de::EnumAccess<'de> for EnumAccess<'a, 'de, 'c> {
    type Error = DeError;
    type Variant = NodeDeserializer<'de, 'c>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let variant = seed.deserialize(self.entry.key.as_str().into_deserializer())?;
        let path = join_path(&self.parent.path, &self.entry.key);
        Ok((
            variant,
            self.parent.child(&self.entry.value, path, &self.entry.key),
        ))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDeserializer<'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}
