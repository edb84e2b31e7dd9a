//! Application metadata: the `md` map of request and response meta.
//!
//! Keys are strings; values are strings or byte strings (MessagePack `str`
//! or `bin`). Metadata is usually a handful of entries, so it is kept as a
//! small vector in insertion order rather than a hash map: lookups are a
//! short scan and an empty map allocates nothing.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One metadata value: text or bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum MetadataValue {
    /// A UTF-8 string (MessagePack `str`).
    Str(String),
    /// Opaque bytes (MessagePack `bin`).
    Bin(Vec<u8>),
}

impl MetadataValue {
    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::Str(s) => Some(s),
            MetadataValue::Bin(_) => None,
        }
    }

    /// The value's bytes, whichever kind it is.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MetadataValue::Str(s) => s.as_bytes(),
            MetadataValue::Bin(b) => b,
        }
    }
}

impl fmt::Debug for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataValue::Str(s) => fmt::Debug::fmt(s, f),
            MetadataValue::Bin(b) => write!(f, "bin({} bytes)", b.len()),
        }
    }
}

impl From<&str> for MetadataValue {
    fn from(s: &str) -> Self {
        MetadataValue::Str(s.to_owned())
    }
}

impl From<String> for MetadataValue {
    fn from(s: String) -> Self {
        MetadataValue::Str(s)
    }
}

impl From<Vec<u8>> for MetadataValue {
    fn from(b: Vec<u8>) -> Self {
        MetadataValue::Bin(b)
    }
}

impl From<&[u8]> for MetadataValue {
    fn from(b: &[u8]) -> Self {
        MetadataValue::Bin(b.to_vec())
    }
}

impl Serialize for MetadataValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MetadataValue::Str(v) => s.serialize_str(v),
            MetadataValue::Bin(v) => s.serialize_bytes(v),
        }
    }
}

impl<'de> Deserialize<'de> for MetadataValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetadataValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a str or bin metadata value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MetadataValue::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MetadataValue::Str(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(MetadataValue::Bin(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(MetadataValue::Bin(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Application metadata: string keys to [`MetadataValue`]s, in insertion
/// order, each key at most once.
///
/// # Examples
///
/// ```
/// use syncrpc::Metadata;
///
/// let mut md = Metadata::new();
/// md.insert("tenant", "acme");
/// md.insert("blob", vec![0u8, 1, 2]);
/// assert_eq!(md.get_str("tenant"), Some("acme"));
/// assert_eq!(md.get("blob").unwrap().as_bytes(), &[0, 1, 2]);
/// md.insert("tenant", "globex"); // replaces
/// assert_eq!(md.len(), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, MetadataValue)>,
}

impl Metadata {
    /// An empty map; allocates nothing.
    pub const fn new() -> Metadata {
        Metadata {
            entries: Vec::new(),
        }
    }

    /// Sets `key` to `value`, replacing any earlier value; returns the old one.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> Option<MetadataValue> {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value for `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetadataValue::as_str)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<MetadataValue> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry, keeping the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<MetadataValue>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut md = Metadata::new();
        for (k, v) in iter {
            md.insert(k, v);
        }
        md
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of str to str or bin")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                // The size hint comes from the peer: never size a buffer from it.
                let mut md = Metadata::new();
                while let Some(entry) = map.next_entry::<String, MetadataValue>()? {
                    md.entries.push(entry);
                }
                // Sorting keeps a hostile map of thousands of keys at
                // n log n rather than the quadratic cost of insert().
                let mut keys: Vec<&str> = md.entries.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                    return Err(de::Error::custom(format_args!(
                        "duplicate metadata key {:?}",
                        w[0]
                    )));
                }
                Ok(md)
            }
        }
        d.deserialize_map(V)
    }
}
