//! What a method is, as a typed declaration states it and reflection
//! reports it: its name, its kind, its body encoding, its types.
//!
//! [`service!`](crate::service!) makes a [`MethodDescriptor`] per method
//! (a `const`, on the generated client as a typed [`Method`]); a
//! [`Service`](crate::Service) keeps one per method it serves, whether it
//! was built by the macro or by hand, and the built-in reflection service
//! (`syncrpc.Reflection`, see [`server::reflection`](crate::server::reflection))
//! answers with them.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

/// How a method is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MethodKind {
    /// One request, one answer.
    Unary,
    /// One request and no answer: the client sends it as a ONEWAY frame.
    Oneway,
    /// One request, a stream of answers.
    ServerStream,
    /// A stream of requests, one answer.
    ClientStream,
    /// Streams both ways.
    BidiStream,
}

impl MethodKind {
    /// The name reflection uses: `"unary"`, `"oneway"`,
    /// `"server_stream"`, `"client_stream"` or `"bidi_stream"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Unary => "unary",
            MethodKind::Oneway => "oneway",
            MethodKind::ServerStream => "server_stream",
            MethodKind::ClientStream => "client_stream",
            MethodKind::BidiStream => "bidi_stream",
        }
    }

    /// True for the three kinds of stream.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            MethodKind::ServerStream | MethodKind::ClientStream | MethodKind::BidiStream
        )
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a method's bodies are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BodyKind {
    /// MessagePack of a serde type (body encoding 0).
    Typed,
    /// Bytes passed through untouched (body encoding 1).
    Raw,
}

impl BodyKind {
    /// The name reflection uses: `"typed"` or `"raw"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyKind::Typed => "typed",
            BodyKind::Raw => "raw",
        }
    }
}

impl fmt::Display for BodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes the JSON Schema of a type, as JSON text, or `None` when the type
/// offers none.
pub type SchemaFn = fn() -> Option<String>;

/// The [`SchemaFn`] of a type without a schema.
pub fn no_schema() -> Option<String> {
    None
}

/// One method of a service, as declared: everything about it that does
/// not depend on how the server was configured.
///
/// # Examples
///
/// ```
/// use syncrpc::descriptor::{BodyKind, MethodDescriptor, MethodKind};
///
/// const SAY: MethodDescriptor = MethodDescriptor {
///     service: "echo.Echo",
///     name: "Say",
///     path: "/echo.Echo/Say",
///     kind: MethodKind::Unary,
///     body: BodyKind::Typed,
///     request_type: "Say",
///     response_type: "Say",
///     request_schema: syncrpc::descriptor::no_schema,
///     response_schema: syncrpc::descriptor::no_schema,
/// };
/// assert_eq!(SAY.path, "/echo.Echo/Say");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MethodDescriptor {
    /// The service's name, `echo.Echo`.
    pub service: &'static str,
    /// The method's name within it, `Say`.
    pub name: &'static str,
    /// Its full name on the wire, `/echo.Echo/Say`.
    pub path: &'static str,
    /// How it is called.
    pub kind: MethodKind,
    /// How its bodies are encoded.
    pub body: BodyKind,
    /// The request type's name as declared (`"bytes"` for raw bodies).
    pub request_type: &'static str,
    /// The response type's name as declared (`"()"` for oneway methods,
    /// `"bytes"` for raw bodies).
    pub response_type: &'static str,
    /// The request type's JSON Schema, when the type offers one (see
    /// [`service!`](crate::service!), "JSON Schema").
    pub request_schema: SchemaFn,
    /// The response type's JSON Schema, when the type offers one.
    pub response_schema: SchemaFn,
}

/// Marks a raw (bytes) body in a [`Method`]'s types: not a serde type, so a
/// raw method cannot be called as a typed one.
#[derive(Debug)]
pub enum RawBody {}

/// A method of the service `S` taking `Req` and answering `Resp`: a
/// [`MethodDescriptor`] that the compiler checks. The client stubs that
/// [`service!`](crate::service!) generates carry one per method as an
/// associated constant named like the method on the wire (`EchoClient::Say`),
/// for calls that need the whole [`Response`](crate::client::Response).
pub struct Method<S, Req, Resp> {
    descriptor: MethodDescriptor,
    _types: PhantomData<fn(S, Req) -> Resp>,
}

impl<S, Req, Resp> Method<S, Req, Resp> {
    /// The typed form of `descriptor`. The generated code makes these; a
    /// hand-made one is only as right as its type parameters.
    pub const fn new(descriptor: MethodDescriptor) -> Self {
        Method {
            descriptor,
            _types: PhantomData,
        }
    }

    /// The method's descriptor.
    pub const fn descriptor(&self) -> &MethodDescriptor {
        &self.descriptor
    }

    /// Its full name on the wire, `/service/method`.
    pub const fn path(&self) -> &'static str {
        self.descriptor.path
    }
}

impl<S, Req, Resp> Clone for Method<S, Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, Req, Resp> Copy for Method<S, Req, Resp> {}

impl<S, Req, Resp> fmt::Debug for Method<S, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Method")
            .field(&self.descriptor.path)
            .finish()
    }
}

/// The schema probe behind [`service!`](crate::service!): a type that
/// implements `schemars::JsonSchema` gets its schema, any other none. It
/// works by method resolution: called on a `&Probe<T>`, the `&self` method
/// of the impl on `Probe<T>` is found before the one on `&Probe<T>`, but
/// only applies when `T: JsonSchema`. That needs a concrete `T`: the
/// macro's expansion has one.
#[cfg(feature = "schemars")]
#[doc(hidden)]
pub mod schema_probe {
    use std::marker::PhantomData;

    pub struct Probe<T: ?Sized>(pub PhantomData<T>);

    pub trait WithSchema {
        fn schema(&self) -> Option<String>;
    }

    impl<T: schemars::JsonSchema + ?Sized> WithSchema for Probe<T> {
        fn schema(&self) -> Option<String> {
            let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
            // A schema is plain JSON data: writing it out cannot fail.
            serde_json::to_string(&schema).ok()
        }
    }

    pub trait WithoutSchema {
        fn schema(&self) -> Option<String>;
    }

    impl<T: ?Sized> WithoutSchema for &Probe<T> {
        fn schema(&self) -> Option<String> {
            None
        }
    }
}
