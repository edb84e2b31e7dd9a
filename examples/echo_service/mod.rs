//! The declaration of `echo.Echo`, shared by the example server and the
//! example client: one `service!` makes the server's trait, the typed
//! client and the descriptors reflection serves.

// Each example uses one side of the declaration.
#![allow(dead_code)]

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `{"text": str}`: what `Say` is sent and answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Say {
    pub text: String,
}

/// `{"ms": uint}`: how long `Sleep` waits.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Sleep {
    pub ms: u64,
}

/// `{"code": uint, "message": str}`: the status `Fail` answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Fail {
    pub code: u32,
    #[serde(default)]
    pub message: String,
}

/// `{}`: an empty map.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Empty {}

/// `{"n": uint, "ms": uint}`: how many messages `Count` sends, and how
/// many milliseconds apart.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Count {
    pub n: u64,
    #[serde(default)]
    pub ms: u64,
}

/// `{"i": uint}`: one message of `Count`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Tick {
    pub i: u64,
}

/// `{"v": int}`: one message `Sum` adds up.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Value {
    pub v: i64,
}

/// `{"sum": int, "count": uint}`: what `Sum` answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Total {
    pub sum: i64,
    pub count: u64,
}

/// Any MessagePack value, read and thrown away (sent as nil).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Anything;

impl Serialize for Anything {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Anything {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Anything)
    }
}

syncrpc::service! {
    /// `echo.Echo`: says things back, sleeps, fails and panics on request,
    /// and streams: counts, sums and chats.
    pub service Echo("echo.Echo") client EchoClient {
        /// Answers the request unchanged.
        unary Say => fn say(Say) -> Say;
        /// Answers `{}` after `ms` milliseconds, or `CANCELLED` /
        /// `DEADLINE_EXCEEDED` as soon as the call is cancelled or its
        /// deadline passes.
        unary Sleep => fn sleep(Sleep) -> Empty;
        /// Answers the status asked for (code 0 answers OK with `{}`).
        unary Fail => fn fail(Fail) -> Empty;
        /// Panics: the server answers `INTERNAL`.
        unary Panic => fn panic(Anything) -> ();
        /// Answers the raw bytes unchanged.
        raw Bytes => fn bytes(Bytes) -> Bytes;
        /// Sends `{"i": 0}` to `{"i": n-1}`, `ms` milliseconds apart.
        server_stream Count => fn count(Count) -> Tick;
        /// Adds up the `v` of every message: `{"sum": total, "count": messages}`.
        client_stream Sum => fn sum(Value) -> Total;
        /// Sends each message back as soon as it arrives.
        bidi_stream Chat => fn chat(Say) -> Say;
    }
}
