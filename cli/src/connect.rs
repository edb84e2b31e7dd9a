//! What every command that calls a server shares: the address, the
//! protocol, the deadline, TLS and the token, and how a method is named.

use std::time::Duration;

use clap::{Args, ValueEnum};
use syncrpc::client::ClientProtocol;
use syncrpc::{Client, Context};

use crate::exit::Failure;
use crate::security::{Security, TOKEN_ENV};

/// The server and how to talk to it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The server, HOST:PORT.
    pub addr: String,
    /// The deadline of each call, e.g. 500ms, 2s, 1m (a bare number is
    /// seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The wire protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    #[command(flatten)]
    pub security: Security,
}

/// The wire protocols the tool speaks.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// syncrpc's own frames.
    Native,
    /// MessagePack-RPC (no metadata, trace ids or compression).
    MsgpackRpc,
}

impl Target {
    /// A client of the server; the connection opens with the first call.
    pub fn client(&self) -> Result<Client, Failure> {
        let protocol = match self.protocol {
            Protocol::Native => ClientProtocol::Native,
            Protocol::MsgpackRpc => ClientProtocol::MsgpackRpc,
        };
        let mut builder = Client::builder()
            .addr(&self.addr)
            .protocol(protocol)
            .connect_timeout(self.timeout);
        if let Some(token) = self.security.token()? {
            if self.protocol == Protocol::MsgpackRpc {
                // Refused rather than dropped without a word.
                return Err(Failure::usage(format!(
                    "--token (or {TOKEN_ENV}) cannot be sent over MessagePack-RPC, \
                     which has no place for it"
                )));
            }
            builder = builder.bearer_token(token);
        }
        if let Some(tls) = self.security.client_tls()? {
            builder = builder.tls(tls);
        }
        builder.build().map_err(|e| {
            Failure::usage(format!(
                "bad address {:?}: {}",
                self.addr,
                e.status().message()
            ))
        })
    }

    /// The context of a call: the background one with the deadline.
    pub fn context(&self) -> Context {
        Context::background().with_timeout(self.timeout)
    }
}

/// `500ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 500ms, 2s or 1m)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("a duration must be more than zero, not {text:?}"));
    }
    Duration::try_from_secs_f64(value * unit).map_err(|_| format!("too long a duration: {text:?}"))
}

/// A method's full name, `/service/method`, from that form,
/// `service/method`, or `service.method` (the last dot splits).
pub fn method_path(name: &str) -> Result<String, Failure> {
    let path = if let Some(rest) = name.strip_prefix('/') {
        format!("/{rest}")
    } else if name.contains('/') {
        format!("/{name}")
    } else {
        match name.rsplit_once('.') {
            Some((service, method)) => format!("/{service}/{method}"),
            None => String::new(),
        }
    };
    let ok = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'));
    if ok {
        Ok(path)
    } else {
        Err(Failure::usage(format!(
            "bad method name {name:?}: write /service/method, e.g. /echo.Echo/Say"
        )))
    }
}

/// The service part of `/service/method`.
pub fn service_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_in_every_form() {
        for name in ["/echo.Echo/Say", "echo.Echo/Say", "echo.Echo.Say"] {
            assert_eq!(method_path(name).unwrap(), "/echo.Echo/Say", "{name}");
        }
        for bad in ["Say", "/echo.Echo/", "//Say", "/a/b/c", ""] {
            assert!(method_path(bad).is_err(), "{bad}");
        }
        assert_eq!(service_of("/echo.Echo/Say"), "echo.Echo");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e300m").is_err());
    }
}
