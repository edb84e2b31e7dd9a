//! The reflection service's answers, read leniently.
//!
//! The tool talks to servers newer than itself: a method kind or body
//! kind it does not know is kept as the server's string and shown as it
//! is, never a decoding error. Unknown fields are ignored.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use syncrpc::client::CallOptions;
use syncrpc::server::reflection::{DescribeRequest, ListRequest};
use syncrpc::{Client, Context, Error};

/// The path of reflection's `List`.
const LIST: &str = "/syncrpc.Reflection/List";
/// The path of reflection's `Describe`.
const DESCRIBE: &str = "/syncrpc.Reflection/Describe";

/// How a method is called, as reflection names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `unary`: one request, one answer.
    Unary,
    /// `oneway`: one request, no answer.
    Oneway,
    /// `server_stream`: one request, a stream of answers.
    ServerStream,
    /// `client_stream`: a stream of requests, one answer.
    ClientStream,
    /// `bidi_stream`: streams both ways.
    BidiStream,
    /// A kind this version of the tool does not know, as the server named it.
    Other(String),
}

impl Kind {
    /// The kind reflection calls `name`.
    pub fn from_name(name: &str) -> Kind {
        match name {
            "unary" => Kind::Unary,
            "oneway" => Kind::Oneway,
            "server_stream" => Kind::ServerStream,
            "client_stream" => Kind::ClientStream,
            "bidi_stream" => Kind::BidiStream,
            other => Kind::Other(other.to_owned()),
        }
    }

    /// Its name in reflection.
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Unary => "unary",
            Kind::Oneway => "oneway",
            Kind::ServerStream => "server_stream",
            Kind::ClientStream => "client_stream",
            Kind::BidiStream => "bidi_stream",
            Kind::Other(name) => name,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        String::deserialize(d).map(|s| Kind::from_name(&s))
    }
}

/// One method, as reflection reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodInfo {
    /// Its name within the service, `Say`.
    pub name: String,
    /// Its full name, `/echo.Echo/Say`.
    pub path: String,
    /// How it is called.
    pub kind: Kind,
    /// How its bodies are encoded: `typed`, `raw`, or a newer server's
    /// name for something else.
    pub body: String,
    /// Its timeout in milliseconds, if it has one.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The request type's name.
    #[serde(default)]
    pub request_type: String,
    /// The response type's name.
    #[serde(default)]
    pub response_type: String,
    /// The request type's JSON Schema (JSON text), from `Describe`.
    #[serde(default)]
    pub request_schema: Option<String>,
    /// The response type's JSON Schema.
    #[serde(default)]
    pub response_schema: Option<String>,
}

/// One service, as reflection reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Its name, `echo.Echo`.
    pub name: String,
    /// Its methods, in the order they were added.
    #[serde(default)]
    pub methods: Vec<MethodInfo>,
}

#[derive(Deserialize)]
struct ListResponse {
    services: Vec<ServiceInfo>,
}

/// The services reflection lists: all, or the one named.
pub fn services(
    client: &Client,
    ctx: &Context,
    service: Option<&str>,
) -> Result<Vec<ServiceInfo>, Error> {
    let req = ListRequest {
        service: service.unwrap_or_default().to_owned(),
    };
    client
        .call_with::<_, ListResponse>(ctx, LIST, &req, &CallOptions::new())
        .map(|r| r.into_body().services)
}

/// What reflection says of the method at `path`, asked with `opts`.
pub fn describe(
    client: &Client,
    ctx: &Context,
    path: &str,
    opts: &CallOptions,
) -> Result<MethodInfo, Error> {
    let req = DescribeRequest {
        method: path.to_owned(),
    };
    client
        .call_with::<_, MethodInfo>(ctx, DESCRIBE, &req, opts)
        .map(|r| r.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_ones_are_kept() {
        for name in [
            "unary",
            "oneway",
            "server_stream",
            "client_stream",
            "bidi_stream",
        ] {
            assert_eq!(Kind::from_name(name).as_str(), name);
            assert!(!matches!(Kind::from_name(name), Kind::Other(_)));
        }
        let info: MethodInfo = serde_json::from_value(serde_json::json!({
            "name": "Watch", "path": "/a.A/Watch", "kind": "quantum_stream",
            "body": "protobuf", "timeout_ms": null, "request_type": "Q",
            "response_type": "R", "added_later": 7
        }))
        .unwrap();
        assert_eq!(info.kind, Kind::Other("quantum_stream".into()));
        assert_eq!(info.kind.to_string(), "quantum_stream");
        assert_eq!(info.body, "protobuf");
        assert_eq!(
            serde_json::to_value(&info).unwrap()["kind"],
            "quantum_stream"
        );
    }
}
