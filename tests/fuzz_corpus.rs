//! Replays the fuzzer's seed corpus (`fuzz/corpus/decoder/`) through the
//! harness the fuzz target runs, so its invariants are checked by every
//! `cargo test`, on a stable toolchain too; then mutates the seeds a little
//! at random, a small stand-in for the fuzzer itself.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use proptest::collection::vec;
use proptest::prelude::*;
use syncrpc::fuzzing::{decode_all, Summary};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decoder");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn corpus_replays_cleanly() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "only {} seeds", corpus.len());
    let mut total = Summary::default();
    for (name, data) in &corpus {
        let s = panic::catch_unwind(|| decode_all(data))
            .unwrap_or_else(|_| panic!("seed {name} broke an invariant"));
        total.frames += s.frames;
        total.too_large += s.too_large;
        total.errors += s.errors;
        total.metas += s.metas;
        total.inflated += s.inflated;
    }
    // The seeds reach every outcome the harness tells apart.
    assert!(total.frames > 0, "{total:?}");
    assert!(total.too_large > 0, "{total:?}");
    assert!(total.errors > 0, "{total:?}");
    assert!(total.metas > 0, "{total:?}");
    assert!(total.inflated > 0, "{total:?}");
}

/// Each golden frame is whole on the side that receives it and a
/// wrong-direction error on the other (PING is fine on both).
#[test]
fn golden_seeds_decode_as_expected() {
    let corpus = corpus();
    let seed = |name: &str| {
        let (_, data) = corpus.iter().find(|(n, _)| n == name).expect(name);
        decode_all(data)
    };
    let request = seed("golden-request");
    assert_eq!((request.frames, request.errors), (1, 1), "{request:?}");
    let ping = seed("golden-ping");
    assert_eq!((ping.frames, ping.errors), (2, 0), "{ping:?}");
    let server = seed("server-stream");
    assert_eq!((server.frames, server.errors), (4, 1), "{server:?}");
    // Metas giving `method`, `trace_id`, `caller` or `message` a bin where
    // the protocol says str: whole frames, and no request or response
    // meta decodes (one reads as a GOAWAY meta, which has no trace_id).
    for (name, frames, metas) in [
        ("meta-bin-where-str-request", 3, 0),
        ("meta-bin-where-str-response", 2, 1),
    ] {
        let s = seed(name);
        assert_eq!((s.frames, s.metas), (frames, metas), "{name}: {s:?}");
    }
    // Revision 1.1: MESSAGE and WINDOW go either way, END only to a
    // server, and a stream opens with a REQUEST.
    for name in ["golden-message", "golden-window"] {
        let s = seed(name);
        assert_eq!((s.frames, s.errors), (2, 0), "{name}: {s:?}");
    }
    for name in ["golden-end", "golden-stream-request"] {
        let s = seed(name);
        assert_eq!((s.frames, s.errors), (1, 1), "{name}: {s:?}");
    }
    let stream = seed("client-stream-1.1");
    assert_eq!((stream.frames, stream.errors), (5, 1), "{stream:?}");
    // MESSAGE, WINDOW, MESSAGE, RESPONSE: all four for a client, the
    // first three for a server, which refuses the RESPONSE.
    let stream = seed("server-stream-1.1");
    assert_eq!((stream.frames, stream.errors), (7, 1), "{stream:?}");
    // Each broken stream frame is an error on every side that accepts it.
    for (name, errors) in [
        ("err-type-11", 2),
        ("err-window-zero", 2),
        ("err-window-body", 2),
        ("err-message-meta", 2),
        ("err-end-not-empty", 2),
    ] {
        let s = seed(name);
        assert_eq!(s.errors, errors, "{name}: {s:?}");
    }
    let big = seed("oversized-message");
    assert_eq!(
        (big.too_large, big.frames, big.errors),
        (2, 2, 0),
        "{big:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_seeds_keep_the_invariants(
        pick in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let corpus = corpus();
        let mut data = pick.get(&corpus).1.clone();
        if !data.is_empty() {
            for (at, byte) in edits {
                *at.get_mut(&mut data) = byte;
            }
        }
        decode_all(&data);
    }
}
