//! One pass over the meta maps peers send on every call.
//!
//! The general decoder of [`super::meta`] checks the map's structure, then
//! its keys for duplicates, then lets serde fill the struct: three walks
//! over a few dozen bytes, for every request and every response. Nearly
//! every meta is a small map of known keys with string and small-integer
//! values, so this reads that shape in one walk. Anything else (an unknown
//! key, a repeated key, `nil`, metadata entries, a wrong type, trailing
//! bytes) makes it give up and leave the meta to the general decoder, which
//! accepts or rejects it with its usual error: both paths give the same
//! answer for every input.

use super::cursor::Cursor;
use super::meta::{RequestMeta, ResponseMeta, MAX_META_DEPTH, MAX_TRACE_ID_LEN};
use super::msgpack;
use crate::metadata::Metadata;

/// An integer that fits in 32 bits; a larger one is the general
/// decoder's to reject.
fn u32_at(r: &mut Cursor<'_>) -> Option<u32> {
    u32::try_from(r.uint()?).ok()
}

/// Metadata, taken only when it is the empty map.
fn empty_md(r: &mut Cursor<'_>) -> Option<Metadata> {
    (r.byte()? == 0x80).then(Metadata::new)
}

/// A boolean; `nil` and anything else is the general decoder's.
fn bool_at(r: &mut Cursor<'_>) -> Option<bool> {
    match r.byte()? {
        0xc2 => Some(false),
        0xc3 => Some(true),
        _ => None,
    }
}

/// Records `bit` as seen; `None` if it was already.
fn first_time(seen: &mut u8, bit: u8) -> Option<()> {
    (*seen & bit == 0).then(|| *seen |= bit)
}

fn short_trace_id(id: &str) -> Option<&str> {
    (id.len() <= MAX_TRACE_ID_LEN).then_some(id)
}

/// A request meta of the usual shape, or `None` for the general decoder.
pub(super) fn request(bytes: &[u8]) -> Option<RequestMeta<'_>> {
    let mut r = Cursor::new(bytes);
    let mut meta = RequestMeta::new("");
    let mut seen = 0u8;
    for _ in 0..r.map_len()? {
        // Keys are compared as bytes: one that is not valid UTF-8 matches
        // none and goes to the general decoder, which says so.
        match r.str_bytes(false)? {
            b"method" => {
                first_time(&mut seen, 1)?;
                meta.method = r.str()?;
            }
            b"timeout_ms" => {
                first_time(&mut seen, 2)?;
                meta.timeout_ms = u32_at(&mut r)?;
            }
            b"trace_id" => {
                first_time(&mut seen, 4)?;
                meta.trace_id = Some(short_trace_id(r.str()?)?);
            }
            b"caller" => {
                first_time(&mut seen, 8)?;
                meta.caller = Some(r.str()?);
            }
            b"md" => {
                first_time(&mut seen, 16)?;
                meta.md = empty_md(&mut r)?;
            }
            b"stream" => {
                first_time(&mut seen, 32)?;
                meta.stream = bool_at(&mut r)?;
            }
            _ => return None,
        }
    }
    (seen & 1 == 1 && r.at_end()).then_some(meta)
}

/// A response meta of the usual shape, or `None` for the general decoder.
pub(super) fn response(bytes: &[u8]) -> Option<ResponseMeta<'_>> {
    let mut r = Cursor::new(bytes);
    let mut meta = ResponseMeta {
        code: 0,
        message: None,
        trace_id: None,
        md: Metadata::new(),
    };
    let mut seen = 0u8;
    for _ in 0..r.map_len()? {
        // Keys are compared as bytes: one that is not valid UTF-8 matches
        // none and goes to the general decoder, which says so.
        match r.str_bytes(false)? {
            b"code" => {
                first_time(&mut seen, 1)?;
                meta.code = u32_at(&mut r)?;
            }
            b"message" => {
                first_time(&mut seen, 2)?;
                meta.message = Some(r.str()?);
            }
            b"trace_id" => {
                first_time(&mut seen, 4)?;
                meta.trace_id = Some(short_trace_id(r.str()?)?);
            }
            b"md" => {
                first_time(&mut seen, 8)?;
                meta.md = empty_md(&mut r)?;
            }
            _ => return None,
        }
    }
    (seen & 1 == 1 && r.at_end()).then_some(meta)
}

/// The keys of a request meta whose values are `str`.
const REQUEST_STR_KEYS: &[&[u8]] = &[b"method", b"trace_id", b"caller"];
/// The keys of a response meta whose values are `str`.
const RESPONSE_STR_KEYS: &[&[u8]] = &[b"message", b"trace_id"];

/// Whether the map in `bytes` gives one of `keys` a `bin` value, where the
/// protocol says `str`. False for anything that is not a well-formed map.
fn bin_where_str(bytes: &[u8], keys: &[&[u8]]) -> bool {
    let mut r = Cursor::new(bytes);
    let Some(n) = r.map_len() else {
        return false;
    };
    for _ in 0..n {
        let Some(key) = r.str_bytes(false) else {
            return false;
        };
        if keys.contains(&key) && matches!(bytes.get(r.pos), Some(0xc4..=0xc6)) {
            return true;
        }
        match msgpack::skip_value(bytes, r.pos, MAX_META_DEPTH) {
            Ok(next) => r.pos = next,
            Err(_) => return false,
        }
    }
    false
}

/// Panics unless both paths agree on `bytes` wherever the one-pass reader
/// takes them, and neither takes a `bin` where the protocol says `str`
/// (the one-pass reader gives those up, so the general decoder must
/// refuse them itself): the fuzzer's check.
pub(crate) fn assert_agrees(bytes: &[u8]) {
    if let Some(fast) = request(bytes) {
        assert_eq!(Ok(fast), super::meta::decode_request_slow(bytes));
    }
    if let Some(fast) = response(bytes) {
        assert_eq!(Ok(fast), super::meta::decode_response_slow(bytes));
    }
    if bin_where_str(bytes, REQUEST_STR_KEYS) {
        let decoded = super::meta::RequestMeta::decode(bytes);
        assert!(decoded.is_err(), "a bin where str is due: {decoded:?}");
    }
    if bin_where_str(bytes, RESPONSE_STR_KEYS) {
        let decoded = super::meta::ResponseMeta::decode(bytes);
        assert!(decoded.is_err(), "a bin where str is due: {decoded:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::meta::{decode_request_slow, decode_response_slow};
    use crate::status::Code;

    fn request_cases() -> Vec<Vec<u8>> {
        let mut full = RequestMeta {
            timeout_ms: 70_000,
            trace_id: Some("4bf92f35-77b3-4da6-a3ce-e0b4da1b2c3d"),
            caller: Some("billing"),
            stream: true,
            ..RequestMeta::new("/echo.Echo/Say")
        };
        let mut cases = vec![
            RequestMeta::new("/a.A/b").to_vec(),
            full.to_vec(),
            // Each key once as the first, with the rest after it.
            b"\x82\xaatimeout_ms\x05\xa6method\xa6/a.A/b".to_vec(),
            // A stream, true and false, then nil and a wrong type.
            b"\x82\xa6method\xa6/a.A/b\xa6stream\xc3".to_vec(),
            b"\x82\xa6stream\xc2\xa6method\xa6/a.A/b".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa6stream\xc0".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa6stream\x01".to_vec(),
            // Empty md, nil md, a non-empty md, an unknown key.
            b"\x82\xa6method\xa6/a.A/b\xa2md\x80".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa2md\xc0".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa2md\x81\xa1k\xa1v".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa5extra\x93\x01\x02\x03".to_vec(),
            // A repeated key, a missing method, a wrong type, a trailing
            // byte, a negative and an oversized timeout, a bad UTF-8 method.
            b"\x82\xa6method\xa6/a.A/b\xa6method\xa6/a.A/c".to_vec(),
            b"\x81\xaatimeout_ms\x05".to_vec(),
            b"\x81\xa6method\x05".to_vec(),
            b"\x81\xa6method\xa6/a.A/b\x00".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xaatimeout_ms\xff".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xaatimeout_ms\xcf\x00\x00\x00\x01\x00\x00\x00\x00".to_vec(),
            b"\x81\xa6method\xa2\xff\xfe".to_vec(),
            // A bin holding UTF-8 where the protocol says str.
            b"\x81\xa6method\xc4\x06/a.A/b".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa8trace_id\xc4\x02t1".to_vec(),
            b"\x82\xa6method\xa6/a.A/b\xa6caller\xc4\x01c".to_vec(),
            // Truncated, not a map, empty.
            b"\x81\xa6method\xa6/a.A".to_vec(),
            b"\x91\x01".to_vec(),
            Vec::new(),
        ];
        // A trace id one byte too long.
        let long = "x".repeat(MAX_TRACE_ID_LEN + 1);
        full.trace_id = Some(&long);
        cases.push(full.to_vec());
        // Every prefix of a full meta.
        let whole = cases[1].clone();
        cases.extend((0..whole.len()).map(|n| whole[..n].to_vec()));
        cases
    }

    #[test]
    fn request_agrees_with_the_general_decoder() {
        for bytes in request_cases() {
            let slow = decode_request_slow(&bytes);
            if let Some(fast) = request(&bytes) {
                assert_eq!(Ok(fast), slow, "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn a_bin_where_the_protocol_says_str_is_refused() {
        let cases: [&[u8]; 5] = [
            b"\x81\xa6method\xc4\x06/a.A/b",
            b"\x82\xa6method\xa6/a.A/b\xa8trace_id\xc4\x02t1",
            b"\x82\xa6method\xa6/a.A/b\xa6caller\xc4\x01c",
            b"\x82\xa4code\x00\xa7message\xc4\x01m",
            b"\x82\xa4code\x00\xa8trace_id\xc4\x02t1",
        ];
        for bytes in cases {
            assert!(
                bin_where_str(bytes, REQUEST_STR_KEYS) || bin_where_str(bytes, RESPONSE_STR_KEYS)
            );
            assert_agrees(bytes);
        }
        let e = RequestMeta::decode(cases[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid meta: key `method`: invalid type: byte array, expected a MessagePack str"
        );
        // The same bytes as a str are the usual shape.
        assert!(request(b"\x81\xa6method\xa6/a.A/b").is_some());
    }

    #[test]
    fn request_takes_the_usual_shapes() {
        for bytes in &request_cases()[..5] {
            assert!(request(bytes).is_some(), "{bytes:02x?}");
        }
    }

    /// A value of any of the types a peer might send under a known key.
    fn any_value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(vec![0xc0]),
            Just(vec![0xc2]),
            Just(vec![0xc3]),
            Just(vec![0x80]),
            Just(vec![0x81, 0xa1, b'k', 0xa1, b'v']),
            Just(vec![0x91, 0x01]),
            any::<u64>().prop_map(|n| {
                let mut v = Vec::new();
                rmp::encode::write_uint(&mut v, n).unwrap();
                v
            }),
            any::<i64>().prop_map(|n| {
                let mut v = Vec::new();
                rmp::encode::write_sint(&mut v, n).unwrap();
                v
            }),
            "[a-z/.]{0,80}".prop_map(|s| {
                let mut v = Vec::new();
                rmp::encode::write_str(&mut v, &s).unwrap();
                v
            }),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| {
                let mut v = Vec::new();
                rmp::encode::write_bin(&mut v, &b).unwrap();
                v
            }),
            // Text as a bin: what a str would hold, under the wrong marker.
            "[a-z/.]{0,80}".prop_map(|s| {
                let mut v = Vec::new();
                rmp::encode::write_bin(&mut v, s.as_bytes()).unwrap();
                v
            }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn both_paths_agree_on_maps_of_known_keys(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "method", "timeout_ms", "trace_id", "caller", "md", "stream",
                        "code", "message", "other",
                    ]),
                    any_value(),
                ),
                0..7,
            ),
            leading in proptest::sample::select(vec![
                None, Some("method"), Some("code"), Some("method as bin"),
            ]),
            trailing in proptest::bool::ANY,
        ) {
            // Often start with the required key, so the fast path has a
            // chance at the rest.
            let mut entries = entries;
            if let Some(key) = leading {
                let mut value = Vec::new();
                let key = match key {
                    "method" => {
                        rmp::encode::write_str(&mut value, "/a.B/c").unwrap();
                        key
                    }
                    "method as bin" => {
                        rmp::encode::write_bin(&mut value, b"/a.B/c").unwrap();
                        "method"
                    }
                    _ => {
                        rmp::encode::write_uint(&mut value, 5).unwrap();
                        key
                    }
                };
                entries.insert(0, (key, value));
            }
            let mut bytes = Vec::new();
            rmp::encode::write_map_len(&mut bytes, entries.len() as u32).unwrap();
            for (key, value) in &entries {
                rmp::encode::write_str(&mut bytes, key).unwrap();
                bytes.extend_from_slice(value);
            }
            if trailing {
                bytes.push(0x00);
            }
            assert_agrees(&bytes);
        }
    }

    #[test]
    fn response_agrees_with_the_general_decoder() {
        let cases = [
            ResponseMeta::new(Code::OK).to_vec(),
            ResponseMeta {
                message: Some("no such method"),
                trace_id: Some("t-1"),
                ..ResponseMeta::new(Code::UNIMPLEMENTED)
            }
            .to_vec(),
            b"\x82\xa4code\x00\xa2md\x80".to_vec(),
            b"\x82\xa4code\x00\xa2md\x81\xa1k\xa1v".to_vec(),
            b"\x82\xa4code\x00\xa4code\x01".to_vec(),
            b"\x81\xa4code\xff".to_vec(),
            b"\x81\xa7message\xa1x".to_vec(),
            b"\x81\xa4code\x00\x00".to_vec(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let slow = decode_response_slow(bytes);
            match response(bytes) {
                Some(fast) => assert_eq!(Ok(fast), slow, "{bytes:02x?}"),
                None => assert!(i > 2, "the usual shape {bytes:02x?} was not taken"),
            }
        }
    }
}
