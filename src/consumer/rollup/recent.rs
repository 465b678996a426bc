//! A series' newest checks, as the site page lists them (`site_status.recent`): kept as
//! references while a transaction's rollups are made ([`Newest`]), as [`RecentCheck`]s in
//! a delta and a fold. Pure: it never does I/O.

use serde::{Deserialize, Serialize};

use super::RollupInput;

/// Checks kept per series for the site page's latest checks.
pub(crate) const RECENT_CHECKS: usize = 5;

/// Characters of an error kept with a recent check.
pub(crate) const RECENT_ERROR_CHARS: usize = 200;

/// One check as the site page lists it (`site_status.recent`, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RecentCheck {
    /// When it ran, ms since the epoch.
    #[serde(rename = "t")]
    pub(crate) at_ms: i64,
    #[serde(rename = "u")]
    pub(crate) up: bool,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<i32>,
    #[serde(rename = "ms", default, skip_serializing_if = "Option::is_none")]
    pub(crate) elapsed_ms: Option<i32>,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_kind: Option<String>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Its phases (DNS, connect, TLS, time to first byte), ms; None where none was timed.
    #[serde(rename = "ph", default, skip_serializing_if = "Option::is_none")]
    pub(crate) phases: Option<[Option<i32>; 4]>,
}

impl RecentCheck {
    /// A check as the delta keeps it (`delta::stored` writes the same without making it).
    #[cfg(test)]
    pub(crate) fn of(e: &RollupInput) -> RecentCheck {
        RecentCheck {
            at_ms: e.ts.timestamp_millis(),
            up: e.up,
            status: e.status,
            elapsed_ms: e.elapsed,
            error_kind: e.error_kind.map(str::to_string),
            error: e
                .error
                .as_ref()
                .map(|t| t.chars().take(RECENT_ERROR_CHARS).collect()),
            phases: e.phases.iter().any(Option::is_some).then_some(e.phases),
        }
    }
}

/// `into` and `more` (each newest first) merged: the newest [`RECENT_CHECKS`].
/// A merge, not a sort: it runs for every series of every delta a fold reads (a sort
/// there was 1 % of a drain's CPU). At the same time, `into`'s go first.
pub(crate) fn merge_recent(into: &mut Vec<RecentCheck>, mut more: Vec<RecentCheck>) {
    // The usual case, a later delta's checks all newer than those held: `more` goes in
    // front, in place. The merge below made a new list per series and delta, the most
    // CPU of a fold (13 %, perf, 25 deltas of 1,000 series).
    let newest_held = into.first().map_or(i64::MIN, |c| c.at_ms);
    if more.last().is_none_or(|c| c.at_ms > newest_held) {
        into.truncate(RECENT_CHECKS.saturating_sub(more.len()));
        more.truncate(RECENT_CHECKS);
        into.splice(0..0, more);
        return;
    }
    let mut held = std::mem::replace(into, Vec::with_capacity(RECENT_CHECKS)).into_iter();
    let mut more = more.into_iter();
    let (mut a, mut b) = (held.next(), more.next());
    while into.len() < RECENT_CHECKS {
        let held_first = match (&a, &b) {
            (Some(x), Some(y)) => x.at_ms >= y.at_ms,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if held_first {
            into.extend(std::mem::replace(&mut a, held.next()));
        } else {
            into.extend(std::mem::replace(&mut b, more.next()));
        }
    }
}

/// A series' newest checks in one transaction, newest first: references, made into
/// [`RecentCheck`]s only when the delta is written, as this runs for every event.
pub(crate) type Newest<'a> = [Option<&'a RollupInput>; RECENT_CHECKS];

/// `e` among the `newest` if it is one of them (one at the same time as those there goes
/// after them).
pub(super) fn add_newest<'a>(newest: &mut Newest<'a>, e: &'a RollupInput) {
    let at_ms = e.ts.timestamp_millis();
    let Some(at) = newest
        .iter()
        .position(|c| c.is_none_or(|c| c.ts.timestamp_millis() < at_ms))
    else {
        return;
    };
    // Shifted one by one: a rotate of a variable length is a call to memmove.
    for i in (at + 1..RECENT_CHECKS).rev() {
        newest[i] = newest[i - 1];
    }
    newest[at] = Some(e);
}
