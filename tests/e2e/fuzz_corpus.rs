//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`)
//! through the same target bodies `cargo fuzz` runs, on the stable toolchain: a parser crash
//! found once by the fuzzer fails this suite from then on.

use std::path::Path;

#[path = "../../fuzz/src/lib.rs"]
// The same file is the fuzz crate's public library; here it is a private module.
#[allow(unreachable_pub)]
mod harness;

/// A target body: bytes in, a panic when a promise breaks.
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("list_query", harness::list_query),
    ("cursor", harness::cursor),
    ("config", harness::config),
    ("credentials", harness::credentials),
    ("if_match", harness::if_match),
];

#[test]
fn every_committed_fuzz_input_replays_without_a_crash() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (target, run) in TARGETS {
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                // A fuzzer running meanwhile replaces entries as it minimises them.
                let Ok(input) = std::fs::read(&path) else {
                    continue;
                };
                let outcome = std::panic::catch_unwind(|| run(&input));
                assert!(outcome.is_ok(), "{target}: {} crashes", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "fuzz/corpus/{target} is empty");
    }
}

#[test]
fn every_fuzz_target_is_replayed_here() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(fuzz)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut here: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    here.sort();
    assert_eq!(on_disk, here);
}
