//! Reading back the events the spool keeps on disk only (the memory buffer was full, or
//! they are from before the start), in the order they were written. Never writes.

use super::{EventId, Files, Position, Spool, segment};
use crate::event::CheckEvent;
use std::sync::atomic::Ordering;

impl Spool {
    /// Up to `max` of the events kept on disk only, oldest first (they leave the disk when
    /// [`Spool::done`]). Empty once every pending event is in memory.
    pub fn read_spilled(&self, max: usize) -> Vec<CheckEvent> {
        let mut files = self.files();
        let mut events = Vec::new();
        while events.len() < max {
            let Some(from) = files.spill_from else {
                break;
            };
            let current = files.segments.back().map(|s| s.no);
            // The segment it points into, or the next one left (the spool may have dropped it).
            let Some(seg) = files.segments.iter().find(|s| s.no >= from.seg) else {
                files.spill_from = None;
                break;
            };
            let (no, end) = (seg.no, seg.bytes);
            let offset = if no == from.seg { from.offset } else { 0 };
            if offset >= end {
                files.spill_from = if Some(no) == current {
                    None // caught up: what comes next stays in memory too
                } else {
                    Some(Position {
                        seg: no + 1,
                        offset: 0,
                    })
                };
                continue;
            }
            let path = segment::path_of(&self.settings.dir, no);
            let chunk = match segment::read_from(&path, offset, end, max - events.len()) {
                Ok(c) if !c.broken => c,
                Ok(_) | Err(_) => {
                    self.lose_rest_of(&mut files, no, offset);
                    continue;
                }
            };
            files.spill_from = Some(Position {
                seg: no,
                offset: chunk.next,
            });
            let mut read_back = 0;
            for payload in chunk.payloads {
                let ev = match serde_json::from_slice::<CheckEvent>(&payload) {
                    Ok(ev) => ev,
                    Err(e) => {
                        self.unreadable(&mut files, no, &payload, &e);
                        continue;
                    }
                };
                if files.pending.contains_key(&ev.id) {
                    events.push(ev);
                    read_back += 1;
                }
            }
            if let Some(seg) = files.segments.iter_mut().find(|s| s.no == no) {
                seg.spilled = seg.spilled.saturating_sub(read_back);
            }
        }
        events
    }

    /// A record with an id that is not an event (written by another version): dropped,
    /// counted and said, so that its segment can go.
    fn unreadable(&self, files: &mut Files, no: u64, payload: &[u8], e: &serde_json::Error) {
        let Ok(EventId { id }) = serde_json::from_slice::<EventId>(payload) else {
            return; // no id: never pending
        };
        if files.pending.remove(&id).is_none() {
            return;
        }
        if let Some(seg) = files.segments.iter_mut().find(|s| s.no == no) {
            seg.pending = seg.pending.saturating_sub(1);
            seg.spilled = seg.spilled.saturating_sub(1);
        }
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        log::warn!(
            "spool: a record of {} is not an event ({e}): dropped ({total} so far)",
            segment::path_of(&self.settings.dir, no).display()
        );
    }

    /// Segment `no` cannot be read from `offset` on (changed under us, or a disk error):
    /// what it holds there counts as dropped, said, and reading goes on at the next one.
    fn lose_rest_of(&self, files: &mut Files, no: u64, offset: u64) {
        let lost = files
            .segments
            .iter_mut()
            .find(|s| s.no == no)
            .map_or(0, |s| std::mem::take(&mut s.spilled));
        let total = self.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
        log::error!(
            "spool: {} cannot be read past byte {offset}: {lost} event(s) in it lost ({total} dropped so far)",
            segment::path_of(&self.settings.dir, no).display()
        );
        files.spill_from = Some(Position {
            seg: no + 1,
            offset: 0,
        });
    }
}
