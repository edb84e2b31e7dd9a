//! JSON in, MessagePack on the wire, JSON out.
//!
//! A request body is parsed as JSON before anything is sent (so a typo is
//! reported with its line and column, and no server sees it): a sequence
//! of values separated by whitespace, one for a unary call, one per
//! message for a stream. Each is sent as
//! the MessagePack serde makes of it: objects as maps, integers in their
//! smallest form. An answer is read back into JSON from any MessagePack:
//! binary strings become arrays of byte values, map keys that are not
//! strings become their JSON text.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::exit::Failure;

/// Every JSON value in `body`, in order; a usage failure naming `source`
/// at the first that does not parse.
pub fn parse_values(body: &[u8], source: &str) -> Result<Vec<Value>, Failure> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Failure::usage(format!("{source} is not UTF-8 text: {e}")))?;
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| input_error(source, &e))
}

pub fn input_error(source: &str, e: &serde_json::Error) -> Failure {
    if e.is_io() {
        return Failure::usage(format!("cannot read {source}: {e}"));
    }
    Failure::usage(format!(
        "{source} is not JSON: {} at line {} column {}",
        message(e),
        e.line(),
        e.column()
    ))
}

/// serde_json's message without its own " at line L column C".
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Any MessagePack value, read as JSON.
pub struct Json(pub Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(v.iter().map(|&b| Value::from(b)).collect()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Json::deserialize(d).map(|j| j.0)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Json::deserialize(d).map(|j| j.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Not sized from the declared length: the body was checked, but a
        // length is still only a claim.
        let mut items = Vec::new();
        while let Some(Json(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((Json(k), Json(v))) = map.next_entry()? {
            let key = match k {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "a MessagePack extension type has no JSON form",
        ))
    }
}

/// `value` as indented JSON, for people and `jq` alike.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_split_on_whitespace_and_named_when_bad() {
        let values = parse_values(b"{\"v\":1}\n{\"v\":2}\n\n[3] 4", "the body").unwrap();
        assert_eq!(
            values,
            [
                serde_json::json!({"v": 1}),
                serde_json::json!({"v": 2}),
                serde_json::json!([3]),
                serde_json::json!(4)
            ]
        );
        assert!(parse_values(b"", "the body").unwrap().is_empty());
        let err = parse_values(b"{\"v\":1}\n{\"v\":}", "the body").unwrap_err();
        assert_eq!(err.status, crate::exit::USAGE);
        assert_eq!(
            err.message,
            "the body is not JSON: expected value at line 2 column 6"
        );
    }

    #[test]
    fn messagepack_reads_back_as_json() {
        // {"a": [1, -2, 1.5, nil, true], 7: bin "\x01\x02", "s": "x"}
        let body = b"\x83\xa1a\x95\x01\xfe\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xc0\xc3\x07\xc4\x02\x01\x02\xa1s\xa1x";
        let Json(v) = rmp_serde::from_slice(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": [1, -2, 1.5, null, true], "7": [1, 2], "s": "x"})
        );
    }
}
