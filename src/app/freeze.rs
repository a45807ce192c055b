//! Freeze windows as the lock gate and `/release status` see them: the window open now
//! (and when it ends), or the next one. Pure reads of the policy's `[[freeze]]` list.

use jiff::Timestamp;

use crate::lock::Frozen;
use crate::schedule::{Freeze, show_time};
use crate::text::sanitize;

/// The freeze window open at `now`, if any (of several, the one that ends last).
pub(crate) fn frozen_at(freezes: &[Freeze], now: Timestamp) -> Option<Frozen> {
    freezes
        .iter()
        .filter_map(|f| f.window_at(now).map(|w| (f, w)))
        .max_by_key(|(_, w)| w.end)
        .map(|(f, w)| Frozen {
            name: f.name.clone(),
            until: w.end.as_second(),
            until_shown: show_time(w.end, f.schedule.time_zone()),
        })
}

/// The freeze line of `/release status`: the window open now and its end, or the next
/// one; `None` without freezes.
pub(crate) fn freeze_status(freezes: &[Freeze], now: Timestamp) -> Option<String> {
    if let Some(f) = frozen_at(freezes, now) {
        return Some(format!(
            "🧊 Freeze window `{}` is open until {}: releases and jobs need an admin's `--force`.",
            sanitize(&f.name),
            f.until_shown
        ));
    }
    let (f, w) = freezes
        .iter()
        .filter_map(|f| f.next_window_after(now).map(|w| (f, w)))
        .min_by_key(|(_, w)| w.start)?;
    let tz = f.schedule.time_zone();
    Some(format!(
        "Next freeze window: `{}` from {} until {}.",
        sanitize(&f.name),
        show_time(w.start, tz),
        show_time(w.end, tz)
    ))
}
