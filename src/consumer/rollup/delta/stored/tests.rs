//! The stored form's round trips: every field, history-only series, an older build's
//! JSON, and every cut or damaged body.

use super::*;
use crate::consumer::rollup::tests::input;

/// Rollups with every optional field both set and unset, negative and large numbers,
/// an error longer than a recent check keeps, a removed target's checks.
fn varied() -> Vec<RollupInput> {
    let mut inputs = vec![
        input(1, 0, true, 12),
        input(2, 10, false, 900),
        input(3, 20, false, 40),
    ];
    inputs[1].error = Some("connection refused: ü".into());
    inputs[1].error_kind = Some("connect");
    inputs[1].status = None;
    inputs[1].phases = [Some(3), None, Some(0), Some(-70_000)];
    inputs[2].url = "https://b.example/".into();
    inputs[2].producer = "".into();
    inputs[2].cert_expires_at = chrono::DateTime::from_timestamp_millis(-1);
    inputs[2].elapsed = Some(i32::MAX);
    inputs[2].maintenance = true;
    let mut long = input(4, 50, false, 30);
    long.error = Some("é".repeat(RECENT_ERROR_CHARS + 3));
    let mut removed = input(5, 55, true, 30);
    removed.url = "https://gone.example/".into();
    removed.removed = true;
    inputs.extend([long, removed]);
    inputs
}

#[test]
fn a_delta_reads_back_as_the_rollups_make_it() {
    let inputs = varied();
    let rollups = Rollups::of(&inputs);
    let delta = Delta::from_stored(&rollups.to_stored()).unwrap();
    assert_eq!(delta, rollups.to_delta());
    // The removed target's series too: its checks' hours, no state.
    assert_eq!(delta.series.len(), 3);
    let gone: Vec<_> = delta.series.iter().filter(|s| s.history_only).collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].url.as_str(), gone[0].hours[0].checks),
        ("https://gone.example/", 1)
    );
    assert!(gone[0].recent.is_empty());
    let error = delta.series[0]
        .recent
        .iter()
        .chain(&delta.series[1].recent)
        .find_map(|c| c.error.as_ref().filter(|e| e.starts_with('é')));
    assert_eq!(error.map(|e| e.chars().count()), Some(RECENT_ERROR_CHARS));
    let empty = Rollups::of(&[]);
    assert_eq!(
        Delta::from_stored(&empty.to_stored()),
        Ok(Delta { series: Vec::new() })
    );
}

#[test]
fn only_a_delta_with_history_only_series_is_marked_so() {
    // An older build cannot read the mark: it leaves such a delta to a newer one, and
    // still folds every other.
    let mut inputs = varied();
    assert_eq!(Rollups::of(&inputs).to_stored()[0], MAGIC_WITH_HISTORY);
    inputs.retain(|e| !e.removed);
    assert_eq!(Rollups::of(&inputs).to_stored()[0], MAGIC);
    let removed: Vec<_> = varied().into_iter().filter(|e| e.removed).collect();
    let rollups = Rollups::of(&removed);
    assert!(
        !rollups.is_empty(),
        "a removed target's checks are history to keep"
    );
    let delta = Delta::from_stored(&rollups.to_stored()).unwrap();
    assert_eq!(delta, rollups.to_delta());
}

#[test]
fn a_json_delta_of_an_older_build_still_reads() {
    let delta = Rollups::of(&varied()).to_delta();
    let json = serde_json::to_vec(&delta).unwrap();
    assert_eq!(json[0], b'{');
    assert_eq!(Delta::from_stored(&json), Ok(delta));
}

#[test]
fn every_cut_or_damaged_body_is_an_error_not_a_panic() {
    let body = Rollups::of(&varied()).to_stored();
    for n in 0..body.len() {
        assert!(Delta::from_stored(&body[..n]).is_err(), "cut at {n} read");
    }
    // Its reason is what the log shows: it says where it broke.
    let cut = Delta::from_stored(&body[..body.len() - 1]).unwrap_err();
    assert!(
        cut.to_string().starts_with("cut short or malformed at "),
        "{cut}"
    );
    let mut longer = body.clone();
    longer.push(0);
    let after = Delta::from_stored(&longer).unwrap_err();
    assert_eq!(after.to_string(), "bytes after the last series");
    for i in 1..body.len() {
        let mut damaged = body.clone();
        damaged[i] = 0xff;
        let _ = Delta::from_stored(&damaged);
    }
}
