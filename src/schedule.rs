//! Time logic for scheduled notifications: cron schedules in a time zone, freeze windows,
//! digest catch-up, lock reminders and the keys under which a firing is claimed.
//!
//! Pure vocabulary: no store, no clock, no Slack, no timers. Every function takes the
//! instant it reasons about as a parameter, so the scheduler (and its tests) drive time.
//! The one outside read is the system's time zone database, through [`time_zone`].
//!
//! # Cron
//!
//! Five fields, `minute hour day-of-month month day-of-week`, parsed by croner (names
//! such as `MON-FRI` and `JAN`, `7` and `0` both Sunday, croner's `L`, `W`, `#` and `+`
//! extensions). No seconds field, no year field, no `@daily` nicknames. Day-of-month and
//! day-of-week combine with OR, as in Vixie cron, unless the weekday has croner's `+`.
//!
//! # Daylight saving time
//!
//! croner finds the wall-clock times a pattern names; this module turns them into
//! instants itself, with Vixie cron's rule, because croner's own time zone handling counts
//! a schedule with a list of hours (`30 1,13 * * *`) as an interval and fires it twice on
//! a fall-back day:
//!
//! - An **appointment** schedule (neither the minute nor the hour field has `*` or `/`:
//!   `30 2 * * *`, `0 9,17 * * MON-FRI`, `0 16 * * FRI`) names wall-clock times. A time that
//!   a spring-forward change skips fires once, at the first valid instant after the gap
//!   (02:30 → 03:00 in America/New_York and Europe/Berlin). A time that a fall-back change
//!   repeats fires once, in the earlier offset (`30 1 * * *` in New York fires at 01:30
//!   EDT, not again at 01:30 EST).
//! - An **interval** schedule (`*/30 * * * *`, `0 * * * *`, `0 */2 * * *`) names a rhythm.
//!   Times inside a gap do not exist and are skipped; times repeated by a fall-back fire in
//!   both offsets, because each of them is a real instant the rhythm reaches (`*/30` fires
//!   at 01:00 and 01:30 EDT and again at 01:00 and 01:30 EST, always 30 minutes apart).
//!
//! [`Schedule::is_firing`] states these rules for one instant; the searches
//! ([`Schedule::next_after`], [`Schedule::latest_at_or_before`]) agree with it, which the
//! property tests check against a minute-by-minute scan.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::text::{format_duration, sanitize};

/// The longest cron expression accepted.
pub(crate) const MAX_EXPR_LEN: usize = 200;

/// A firing handled within this long of its time is on time: the message does not say
/// it is late. A minute, the resolution of cron.
pub(crate) const ON_TIME: Duration = Duration::from_secs(60);

/// Missed firings are counted up to this many (counts saturate here).
pub(crate) const MAX_COUNTED: u32 = 10_000;

/// The period of a schedule is measured over the civil years 2030 and 2031 in its time
/// zone (from the first to the second year here, exclusive): a fixed horizon, so whether a
/// policy is valid does not depend on the day corral starts, and a future one, so the
/// zone's current daylight-saving rules apply (the time zone database projects them).
pub(crate) const PERIOD_YEARS: (i16, i16) = (2030, 2032);

/// Upper bound on the time-zone segments one search walks (two per year in a zone with
/// daylight saving time); a schedule whose next firing lies further away has none.
const MAX_SEGMENTS: usize = 20_000;

/// Looks up an IANA time zone (`Europe/Berlin`, `America/New_York`, `UTC`).
pub(crate) fn time_zone(name: &str) -> Result<TimeZone, String> {
    let hint = "use an IANA name such as Europe/Berlin, America/New_York or UTC";
    let n = name.trim();
    if n.is_empty() {
        return Err(format!("empty ({hint})"));
    }
    let plausible = n.len() <= 64
        && !n.starts_with('/')
        && !n.contains("..")
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if !plausible {
        return Err(format!(
            "`{}` is not a time zone name ({hint})",
            sanitize(n)
        ));
    }
    TimeZone::get(n).map_err(|_| {
        format!(
            "unknown time zone `{}` ({hint}; names come from this machine's time zone database)",
            sanitize(n)
        )
    })
}

/// The name of a time zone as it is shown and keyed: its IANA name, `UTC` for UTC.
fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_string()
}

/// A validated cron schedule in a time zone.
#[derive(Clone)]
pub struct Schedule {
    /// The fields joined by single spaces, upper case: how it is shown and keyed.
    expr: String,
    cron: Cron,
    tz: TimeZone,
    tz_name: String,
    /// Neither the minute nor the hour field has `*` or `/` (see the module docs).
    appointments: bool,
    period: OnceLock<Option<Duration>>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expr, self.tz_name)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` in {}", self.expr, self.tz_name)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.tz_name == other.tz_name
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parses a 5-field cron expression for a time zone. The error says what is wrong
    /// with the expression (the caller names the key).
    pub(crate) fn new(expr: &str, tz: TimeZone) -> Result<Schedule, String> {
        if expr.len() > MAX_EXPR_LEN {
            return Err(format!(
                "longer than {MAX_EXPR_LEN} characters; a schedule is 5 short fields"
            ));
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let shown = sanitize(&fields.join(" "));
        if fields.len() != 5 {
            let hint = if expr.contains('@') {
                " (nicknames such as @daily are not accepted: write `0 0 * * *`)"
            } else {
                ""
            };
            return Err(format!(
                "`{shown}` has {} field{}; a schedule has 5: minute hour day-of-month month \
                 day-of-week, e.g. `0 9 * * MON-FRI`{hint}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" },
            ));
        }
        if !fields.iter().all(|f| f.is_ascii()) {
            return Err(format!("`{shown}` has characters cron does not use"));
        }
        let normal = fields.join(" ").to_ascii_uppercase();
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(&normal).map_err(|e| {
            format!(
                "`{shown}` is not a cron schedule: {}",
                sanitize(&e.to_string())
            )
        })?;
        let interval = |f: &str| f.contains(['*', '/']);
        let schedule = Schedule {
            appointments: !interval(fields[0]) && !interval(fields[1]),
            expr: normal,
            cron,
            tz_name: zone_name(&tz),
            tz,
            period: OnceLock::new(),
        };
        // A pattern such as `0 0 30 2 *` parses and never matches a day.
        let reference = DateTime::constant(2000, 1, 1, 0, 0, 0, 0);
        if schedule.civil_next(reference, true).is_none() {
            return Err(format!("`{shown}` never fires (no date matches it)"));
        }
        Ok(schedule)
    }

    /// Parses an expression and a time zone name (`None`: UTC).
    pub(crate) fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => time_zone(name).map_err(ScheduleError::TimeZone)?,
        };
        Schedule::new(expr, tz).map_err(ScheduleError::Cron)
    }

    #[cfg(test)]
    /// The expression, fields joined by single spaces, upper case.
    pub(crate) fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone.
    pub(crate) fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    #[cfg(test)]
    /// The time zone's name (`Europe/Berlin`, `UTC`).
    pub(crate) fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    #[cfg(test)]
    /// Whether this schedule names wall-clock times (no `*` or `/` in its minute and
    /// hour fields), which decides its daylight-saving behaviour (module docs).
    pub(crate) fn is_appointment(&self) -> bool {
        self.appointments
    }

    /// `expr@zone`: the part of a claim key that names this schedule.
    pub(crate) fn key_part(&self) -> String {
        format!("{}@{}", self.expr, self.tz_name)
    }

    /// The first firing strictly after `t`.
    pub(crate) fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let t = whole_second(t)?;
        let mut seg_start = t;
        let mut inclusive = false;
        let mut o = self.tz.to_offset(t);
        for _ in 0..MAX_SEGMENTS {
            // This segment runs from `seg_start` to the next transition, at offset `o`.
            let next = self
                .tz
                .following(seg_start)
                .next()
                .map(|tr| (tr.timestamp(), tr.offset()));
            let hi = next.map(|(tr, _)| o.to_datetime(tr));
            let mut lo = o.to_datetime(seg_start);
            let mut incl = inclusive;
            loop {
                let c = self.civil_next(lo, incl)?;
                if hi.is_some_and(|h| c >= h) {
                    break;
                }
                if self.valid_at(c, o) {
                    return o.to_timestamp(c).ok();
                }
                lo = c;
                incl = false;
            }
            let (tr, o_next) = next?;
            if self.gap_fires(tr, o, o_next) {
                return Some(tr);
            }
            seg_start = tr;
            inclusive = true;
            o = o_next;
        }
        None
    }

    /// The last firing at or before `t`.
    pub(crate) fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let t = whole_second(t)?;
        let mut seg_end = t;
        let mut o = self.tz.to_offset(t);
        for _ in 0..MAX_SEGMENTS {
            // This segment runs from the transition at or before `seg_end`, at offset `o`.
            let start = self
                .tz
                .preceding(seg_end.checked_add(SignedDuration::from_nanos(1)).ok()?)
                .next()
                .map(|tr| tr.timestamp());
            let lo = start.map(|tr| o.to_datetime(tr));
            let mut hi = o.to_datetime(seg_end);
            let mut incl = true;
            loop {
                let c = self.civil_prev(hi, incl)?;
                if lo.is_some_and(|l| c < l) {
                    break;
                }
                if self.valid_at(c, o) {
                    return o.to_timestamp(c).ok();
                }
                hi = c;
                incl = false;
            }
            let tr = start?;
            let before = tr.checked_sub(SignedDuration::from_secs(1)).ok()?;
            let o_prev = self.tz.to_offset(before);
            if self.gap_fires(tr, o_prev, o) {
                return Some(tr);
            }
            seg_end = before;
            o = o_prev;
        }
        None
    }

    /// The firings strictly after `t`, in order. Unbounded: take what you need.
    pub(crate) fn firings_after(&self, t: Timestamp) -> Firings<'_> {
        Firings {
            schedule: self,
            cursor: Some(t),
        }
    }

    #[cfg(test)]
    /// Whether `t` is a firing of this schedule, by the rules in the module docs. The
    /// searches agree with this; it is the definition they are tested against.
    pub(crate) fn is_firing(&self, t: Timestamp) -> bool {
        if t.subsec_nanosecond() != 0 {
            return false;
        }
        let o = self.tz.to_offset(t);
        let c = o.to_datetime(t);
        if self.civil_matches(c) {
            // A repeated wall-clock time: an appointment keeps the earlier instant only.
            return match self.tz.to_ambiguous_timestamp(c).offset() {
                AmbiguousOffset::Fold { before, .. } => !self.appointments || o == before,
                _ => true,
            };
        }
        // Otherwise only the first instant after a gap can fire, for an appointment the
        // gap swallowed.
        let Ok(just_before) = t.checked_sub(SignedDuration::from_nanos(1)) else {
            return false;
        };
        let at_transition = self
            .tz
            .preceding(t.checked_add(SignedDuration::from_nanos(1)).unwrap_or(t))
            .next()
            .is_some_and(|tr| tr.timestamp() == t);
        let o_prev = self.tz.to_offset(just_before);
        if !self.appointments || !at_transition || o_prev >= o {
            return false;
        }
        let gap_start = o_prev.to_datetime(t);
        let gap_end = o.to_datetime(t);
        let mut m = match ceil_minute(gap_start) {
            Some(m) => m,
            None => return false,
        };
        while m < gap_end {
            if self.civil_matches(m) {
                return true;
            }
            match m.checked_add(SignedDuration::from_mins(1)) {
                Ok(n) => m = n,
                Err(_) => return false,
            }
        }
        false
    }

    /// The shortest time between two consecutive firings over [`PERIOD_YEARS`], daylight
    /// saving included (a daily schedule in Europe/Berlin: 23h; `0 16 * * FRI` there:
    /// 167h). `None` when fewer than two firings fall in that horizon (`0 0 29 2 *`).
    ///
    /// Measured, not enumerated: the times of day a pattern names are the same on every
    /// day it matches, so the gaps within a day and between matching days are found from
    /// one day's times and the list of matching days; the gaps around each time-zone
    /// transition are measured with the searches. Computed once, on first use.
    pub(crate) fn period(&self) -> Option<Duration> {
        *self.period.get_or_init(|| self.measure_period())
    }

    fn measure_period(&self) -> Option<Duration> {
        let start = Date::new(PERIOD_YEARS.0, 1, 1)
            .ok()?
            .to_datetime(jiff::civil::Time::midnight());
        let end_date = Date::new(PERIOD_YEARS.1, 1, 1).ok()?;
        let end = end_date.to_datetime(jiff::civil::Time::midnight());
        let mut best: Option<i64> = None;
        let mut offer = |gap: i64| {
            if gap > 0 {
                best = Some(best.map_or(gap, |b| b.min(gap)));
            }
        };
        // The times of day, from the first matching day.
        let first = self.civil_next(start, true)?;
        let day0 = first.date();
        let mut times = vec![seconds_of_day(first)];
        let mut c = first;
        while let Some(n) = self.civil_next(c, false) {
            if n.date() != day0 {
                break;
            }
            times.push(seconds_of_day(n));
            c = n;
        }
        for pair in times.windows(2) {
            offer(pair[1] - pair[0]);
        }
        let span = times.last().copied().unwrap_or(0) - times[0];
        // Between consecutive matching days.
        let mut day = day0;
        while day < end_date {
            let Ok(tomorrow) = day.tomorrow() else { break };
            let Some(n) =
                self.civil_next(tomorrow.to_datetime(jiff::civil::Time::midnight()), true)
            else {
                break;
            };
            let next_day = n.date();
            if next_day >= end_date {
                break;
            }
            offer(civil_seconds(next_day) - civil_seconds(day) - span);
            day = next_day;
        }
        // Around each transition of the zone: the gap that straddles it and the next two.
        let h0 = self.tz.to_ambiguous_timestamp(start).compatible().ok()?;
        let h1 = self.tz.to_ambiguous_timestamp(end).compatible().ok()?;
        for tr in self.tz.following(h0) {
            let at = tr.timestamp();
            if at >= h1 {
                break;
            }
            let Ok(before) = at.checked_sub(SignedDuration::from_secs(1)) else {
                continue;
            };
            let mut prev = match self.latest_at_or_before(before) {
                Some(p) => p,
                None => match self.next_after(before) {
                    Some(n) => n,
                    None => continue,
                },
            };
            for _ in 0..3 {
                let Some(n) = self.next_after(prev) else {
                    break;
                };
                offer(n.as_second() - prev.as_second());
                prev = n;
            }
        }
        best.and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
    }

    /// Whether the civil time `c`, met in a segment at offset `o`, is a firing there: an
    /// appointment repeated by a fall-back fires only in the earlier offset.
    fn valid_at(&self, c: DateTime, o: Offset) -> bool {
        if !self.appointments {
            return true;
        }
        match self.tz.to_ambiguous_timestamp(c).offset() {
            AmbiguousOffset::Fold { before, .. } => before == o,
            _ => true,
        }
    }

    /// Whether the transition at `tr` from `o_before` to `o_after` opens a gap that
    /// swallows a time this (appointment) schedule names: then `tr` fires.
    fn gap_fires(&self, tr: Timestamp, o_before: Offset, o_after: Offset) -> bool {
        if !self.appointments || o_after <= o_before {
            return false;
        }
        let gap_start = o_before.to_datetime(tr);
        let gap_end = o_after.to_datetime(tr);
        self.civil_next(gap_start, true)
            .is_some_and(|c| c < gap_end)
    }

    fn civil_next(&self, from: DateTime, inclusive: bool) -> Option<DateTime> {
        self.cron.find_next_occurrence(&from, inclusive).ok()
    }

    fn civil_prev(&self, from: DateTime, inclusive: bool) -> Option<DateTime> {
        self.cron.find_previous_occurrence(&from, inclusive).ok()
    }

    #[cfg(test)]
    fn civil_matches(&self, c: DateTime) -> bool {
        self.cron.is_time_matching(&c).unwrap_or(false)
    }
}

/// Which part of a schedule was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScheduleError {
    #[error("{0}")]
    Cron(String),
    #[error("{0}")]
    TimeZone(String),
}

/// The firings after an instant; see [`Schedule::firings_after`].
pub(crate) struct Firings<'a> {
    schedule: &'a Schedule,
    cursor: Option<Timestamp>,
}

impl Iterator for Firings<'_> {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        let next = self.schedule.next_after(self.cursor?);
        self.cursor = next;
        next
    }
}

fn whole_second(t: Timestamp) -> Option<Timestamp> {
    Timestamp::from_second(t.as_second()).ok()
}

#[cfg(test)]
fn ceil_minute(c: DateTime) -> Option<DateTime> {
    let floor = c.with().second(0).subsec_nanosecond(0).build().ok()?;
    if floor == c {
        Some(c)
    } else {
        floor.checked_add(SignedDuration::from_mins(1)).ok()
    }
}

fn seconds_of_day(c: DateTime) -> i64 {
    i64::from(c.hour()) * 3600 + i64::from(c.minute()) * 60 + i64::from(c.second())
}

fn civil_seconds(d: Date) -> i64 {
    Offset::UTC
        .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
        .map(|t| t.as_second())
        .unwrap_or(0)
}

fn to_signed(d: Duration) -> Option<SignedDuration> {
    SignedDuration::try_from(d).ok()
}

fn seconds_between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_secs(u64::try_from(to.as_second() - from.as_second()).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// Freeze windows
// ---------------------------------------------------------------------------------------

/// A freeze: releases are refused inside each window. A window opens at each firing of
/// `schedule` and lasts `duration` of elapsed time (Argo CD's sync-window rule: active
/// when the schedule fired within the last `duration`). A 64h window from Friday 16:00 in
/// Europe/Berlin therefore ends on Monday at 08:00, or at 09:00 CEST over the weekend the
/// clocks go forward and at 07:00 CET over the one they go back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub name: String,
    pub schedule: Schedule,
    pub duration: Duration,
}

/// One freeze window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// Whether `t` is inside: `start <= t < end`.
    pub(crate) fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// What went wrong building a [`Freeze`]; [`FreezeError::field`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FreezeError {
    #[error("{0}")]
    Name(String),
    #[error("{0}")]
    Duration(String),
}

impl FreezeError {
    /// The policy key at fault: `name` or `duration`.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            FreezeError::Name(_) => "name",
            FreezeError::Duration(_) => "duration",
        }
    }
}

/// An entry into or exit from a freeze window, to announce once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    Entered(Window),
    Exited(Window),
}

impl Freeze {
    /// Validates a freeze: a name of 1–64 letters, digits, spaces, `-`, `_` or `.`; a
    /// duration above zero and no longer than the schedule's [`Schedule::period`], so
    /// that two windows never overlap.
    pub(crate) fn new(
        name: &str,
        schedule: Schedule,
        duration: Duration,
    ) -> Result<Freeze, FreezeError> {
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name.trim() == name
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if !ok_name {
            return Err(FreezeError::Name(format!(
                "`{}` is not a freeze name (1 to 64 letters, digits, spaces, `-`, `_` or `.`)",
                sanitize(name)
            )));
        }
        if duration.is_zero() {
            return Err(FreezeError::Duration("must be longer than 0".into()));
        }
        if let Some(period) = schedule.period()
            && duration > period
        {
            return Err(FreezeError::Duration(format!(
                "{} is longer than the shortest time between two starts of {schedule}, {}: \
                 its windows would overlap",
                format_duration(duration),
                format_duration(period)
            )));
        }
        Ok(Freeze {
            name: name.to_string(),
            schedule,
            duration,
        })
    }

    /// The window that starts at `start`.
    pub(crate) fn window_from(&self, start: Timestamp) -> Window {
        let end = to_signed(self.duration)
            .and_then(|d| start.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX);
        Window { start, end }
    }

    /// The window `t` is in, if any.
    pub(crate) fn window_at(&self, t: Timestamp) -> Option<Window> {
        // Only the latest start can cover `t`: an earlier window ends no later.
        let w = self.window_from(self.schedule.latest_at_or_before(t)?);
        w.contains(t).then_some(w)
    }

    /// The first window that starts strictly after `t`.
    pub(crate) fn next_window_after(&self, t: Timestamp) -> Option<Window> {
        Some(self.window_from(self.schedule.next_after(t)?))
    }

    /// What to announce, given the window the store last knew to be active (`None`: none)
    /// and `now`. A window is identified by its start. The new state to store is
    /// [`Freeze::window_at`]`(now)`.
    ///
    /// - the known window is still the current one: nothing;
    /// - it ended (or is no longer a window of this schedule): `Exited`;
    /// - a window is active that the store did not know, including one that began while
    ///   corral was down: `Entered` (after the `Exited`, if both).
    ///
    /// A window that opened and closed entirely while corral was down is not announced.
    pub(crate) fn transitions(&self, known: Option<Window>, now: Timestamp) -> Vec<Transition> {
        let current = self.window_at(now);
        let same = |a: &Option<Window>, b: &Option<Window>| match (a, b) {
            (Some(a), Some(b)) => a.start == b.start,
            (None, None) => true,
            _ => false,
        };
        if same(&known, &current) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(k) = known {
            out.push(Transition::Exited(k));
        }
        if let Some(c) = current {
            out.push(Transition::Entered(c));
        }
        out
    }

    /// `freeze:<name>`: the prefix of this freeze's claim keys.
    pub(crate) fn id(&self) -> String {
        format!("freeze:{}", self.name)
    }

    /// `freeze:<name>:<start, unix seconds>`: the key of one window.
    pub(crate) fn window_key(&self, w: &Window) -> String {
        format!("{}:{}", self.id(), w.start.as_second())
    }

    /// The key under which one announcement is claimed:
    /// `freeze:<name>:<start>:enter` or `…:exit`.
    pub(crate) fn transition_key(&self, t: &Transition) -> String {
        match t {
            Transition::Entered(w) => format!("{}:enter", self.window_key(w)),
            Transition::Exited(w) => format!("{}:exit", self.window_key(w)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Digests
// ---------------------------------------------------------------------------------------

/// A scheduled report to one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub schedule: Schedule,
    pub channel: String,
}

impl Digest {
    /// Validates the channel: a Slack channel id or name, no spaces, at most 80 characters.
    pub(crate) fn new(schedule: Schedule, channel: &str) -> Result<Digest, String> {
        let ok = !channel.is_empty()
            && channel.len() <= 80
            && !channel.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!(
                "`{}` is not a channel (a Slack channel id such as C0RELEASES)",
                sanitize(channel)
            ));
        }
        Ok(Digest {
            schedule,
            channel: channel.to_string(),
        })
    }

    /// `digest:<channel>:<expr>@<zone>`: the prefix of this digest's claim keys. It comes
    /// from what the digest is, not from its place in the file, so reordering the policy
    /// neither repeats nor loses a digest.
    pub(crate) fn id(&self) -> String {
        format!("digest:{}:{}", self.channel, self.schedule.key_part())
    }

    /// `<id>:<firing, unix seconds>`: the key under which one firing is claimed.
    pub(crate) fn firing_key(&self, firing: Timestamp) -> String {
        format!("{}:{}", self.id(), firing.as_second())
    }

    /// What to do about this digest now; see [`catch_up`].
    pub(crate) fn catch_up(&self, last_claimed: Option<Timestamp>, now: Timestamp) -> CatchUp {
        catch_up(&self.schedule, last_claimed, now)
    }
}

/// What a scheduler does about a schedule's firings at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CatchUp {
    /// Nothing is due: the latest firing is claimed already, none has come yet, or
    /// nothing was ever claimed and the latest firing is not on time (a fresh store has
    /// missed nothing).
    Nothing,
    /// `firing` is due and on time (within [`ON_TIME`]); `skipped` older firings since
    /// the last claimed one were missed and are not sent.
    OnTime { firing: Timestamp, skipped: u32 },
    /// `firing` was missed by `late_by`, less than the schedule's period: send it once,
    /// saying how late it is; `skipped` older missed firings are not sent.
    Late {
        firing: Timestamp,
        late_by: Duration,
        skipped: u32,
    },
    /// The latest firing was missed by a period or more: send nothing, log it. `missed`
    /// firings since the last claimed one, the latest included, are skipped. Claim
    /// `latest` (as skipped) so the next start does not count them again.
    Skip {
        latest: Timestamp,
        late_by: Duration,
        missed: u32,
    },
}

impl CatchUp {
    #[cfg(test)]
    /// The firing to send and claim, if any.
    pub(crate) fn firing(&self) -> Option<Timestamp> {
        match self {
            CatchUp::OnTime { firing, .. } | CatchUp::Late { firing, .. } => Some(*firing),
            _ => None,
        }
    }
}

/// The decision for missed firings (a digest while corral was down): nothing due, due now
/// (on time), send once late (missed by less than the schedule's period), or skip (missed
/// by more). `last_claimed` is the firing time of the last claimed key, if any. A schedule
/// without a period ([`Schedule::period`] is `None`) is sent late, never skipped.
pub(crate) fn catch_up(
    schedule: &Schedule,
    last_claimed: Option<Timestamp>,
    now: Timestamp,
) -> CatchUp {
    let Some(latest) = schedule.latest_at_or_before(now) else {
        return CatchUp::Nothing;
    };
    let late_by = seconds_between(latest, now);
    let on_time = late_by < ON_TIME;
    let last = match last_claimed {
        Some(last) if last >= latest => return CatchUp::Nothing,
        None if on_time => {
            return CatchUp::OnTime {
                firing: latest,
                skipped: 0,
            };
        }
        None => return CatchUp::Nothing,
        Some(last) => last,
    };
    // Firings strictly between the last claimed one and the latest.
    let older = schedule
        .firings_after(last)
        .take_while(|f| *f < latest)
        .take(MAX_COUNTED as usize)
        .count() as u32;
    if on_time {
        return CatchUp::OnTime {
            firing: latest,
            skipped: older,
        };
    }
    match schedule.period() {
        Some(period) if late_by >= period => CatchUp::Skip {
            latest,
            late_by,
            missed: older.saturating_add(1).min(MAX_COUNTED),
        },
        _ => CatchUp::Late {
            firing: latest,
            late_by,
            skipped: older,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Lock reminders
// ---------------------------------------------------------------------------------------

/// When to remind the holder of a long release: `after` the start, then every `every`
/// (none: once). Reminder `n` (from 0) is due at `started + after + n × every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminders {
    pub after: Duration,
    pub every: Option<Duration>,
}

impl Reminders {
    /// From the policy's `[lock]`: `remind_after` and `remind_every`. With only
    /// `remind_every`, the first reminder comes after one interval; with neither, none.
    pub(crate) fn from_policy(
        after: Option<Duration>,
        every: Option<Duration>,
    ) -> Option<Reminders> {
        match (after, every) {
            (Some(after), every) => Some(Reminders { after, every }),
            (None, Some(every)) => Some(Reminders {
                after: every,
                every: Some(every),
            }),
            (None, None) => None,
        }
    }

    /// When reminder `n` is due for a release started at `started`.
    pub(crate) fn at(&self, started: Timestamp, n: u32) -> Option<Timestamp> {
        let offset = match (n, self.every) {
            (0, _) => self.after,
            (_, None) => return None,
            (n, Some(every)) => self.after.checked_add(every.checked_mul(n)?)?,
        };
        started.checked_add(to_signed(offset)?).ok()
    }

    /// The number of the latest reminder due at or before `now`.
    pub(crate) fn latest_at_or_before(&self, started: Timestamp, now: Timestamp) -> Option<u32> {
        let first = self.at(started, 0)?;
        if now < first {
            return None;
        }
        let Some(every) = self.every.filter(|e| !e.is_zero()) else {
            return Some(0);
        };
        let since = seconds_between(first, now).as_secs();
        u32::try_from(since / every.as_secs().max(1)).ok()
    }

    /// The next reminder strictly after `t`: its number and time.
    pub(crate) fn next_after(&self, started: Timestamp, t: Timestamp) -> Option<(u32, Timestamp)> {
        let n = match self.latest_at_or_before(started, t) {
            None => 0,
            Some(n) => n.checked_add(1)?,
        };
        Some((n, self.at(started, n)?))
    }

    /// The reminder to send now, if any: the latest one due, when it is newer than
    /// `last_sent`. Reminders missed while corral was down collapse into this one.
    pub(crate) fn due(
        &self,
        started: Timestamp,
        last_sent: Option<u32>,
        now: Timestamp,
    ) -> Option<u32> {
        let n = self.latest_at_or_before(started, now)?;
        match last_sent {
            Some(last) if last >= n => None,
            _ => Some(n),
        }
    }

    /// `remind:<release start, unix seconds>:<n>`: the claim key of one reminder.
    pub(crate) fn key(started: Timestamp, n: u32) -> String {
        format!("remind:{}:{n}", started.as_second())
    }
}

// ---------------------------------------------------------------------------------------
// Showing times
// ---------------------------------------------------------------------------------------

/// `Fri 2025-03-28 16:00 CET (15:00 UTC)`: a time in a zone and in UTC (once for UTC).
pub(crate) fn show_time(t: Timestamp, tz: &TimeZone) -> String {
    let utc = t.strftime("%a %Y-%m-%d %H:%M UTC").to_string();
    if zone_name(tz) == "UTC" {
        return utc;
    }
    let local = t.to_zoned(tz.clone());
    let same_day = local.date() == t.to_zoned(TimeZone::UTC).date();
    let utc_short = if same_day {
        t.strftime("%H:%M UTC").to_string()
    } else {
        utc
    };
    format!("{} ({utc_short})", local.strftime("%a %Y-%m-%d %H:%M %Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, Some(tz)).unwrap()
    }

    /// The next `n` firings after `from`, as RFC 3339 instants in UTC.
    fn next_n(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        s.firings_after(ts(from))
            .take(n)
            .map(|t| t.to_string())
            .collect()
    }

    /// Local wall-clock time with its zone abbreviation.
    fn local(s: &Schedule, t: Timestamp) -> String {
        t.to_zoned(s.time_zone().clone())
            .strftime("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }

    // --- parsing and names ----------------------------------------------------------

    #[test]
    fn weekday_names_and_numbers() {
        let s = sched("0 9 * * MON-FRI", "UTC");
        // From Friday 2025-06-06 10:00: Monday to Friday of the next week.
        assert_eq!(
            next_n(&s, "2025-06-06T10:00:00Z", 5),
            [
                "2025-06-09T09:00:00Z",
                "2025-06-10T09:00:00Z",
                "2025-06-11T09:00:00Z",
                "2025-06-12T09:00:00Z",
                "2025-06-13T09:00:00Z"
            ]
        );
        let fri = sched("0 16 * * FRI", "UTC");
        assert_eq!(
            next_n(&fri, "2025-06-06T16:00:00Z", 2),
            ["2025-06-13T16:00:00Z", "2025-06-20T16:00:00Z"]
        );
        // 7 is Sunday, like 0 and SUN; 2025-06-08 is a Sunday.
        for expr in ["0 9 * * 7", "0 9 * * 0", "0 9 * * SUN", "0 9 * * sun"] {
            let s = sched(expr, "UTC");
            assert_eq!(
                next_n(&s, "2025-06-06T00:00:00Z", 2),
                ["2025-06-08T09:00:00Z", "2025-06-15T09:00:00Z"],
                "{expr}"
            );
        }
        let lower = sched("0  9 * *   mon-fri", "UTC");
        assert_eq!(lower.expr(), "0 9 * * MON-FRI");
        assert_eq!(lower, sched("0 9 * * MON-FRI", "UTC"));
        let months = sched("0 0 1 JAN,JUL *", "UTC");
        assert_eq!(
            next_n(&months, "2025-02-01T00:00:00Z", 2),
            ["2025-07-01T00:00:00Z", "2026-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn bad_cron_strings_are_refused_with_a_reason() {
        for (expr, needle) in [
            ("", "0 fields"),
            ("0 16 * *", "4 fields"),
            ("0 0 16 * * FRI", "6 fields"),
            ("0 0 16 * * FRI 2025", "7 fields"),
            ("@daily", "nicknames"),
            ("60 * * * *", "not a cron schedule"),
            ("0 24 * * *", "not a cron schedule"),
            ("0 0 32 * *", "not a cron schedule"),
            ("0 0 * 13 *", "not a cron schedule"),
            ("0 0 * * 8", "not a cron schedule"),
            ("0 0 * * FUNDAY", "not a cron schedule"),
            ("a b c d e", "not a cron schedule"),
            ("0 0 30 2 *", "never fires"),
            ("0 0 31 4,6,9,11 *", "never fires"),
            ("0 0 ５ * *", "characters"),
        ] {
            let e = Schedule::new(expr, TimeZone::UTC).unwrap_err();
            assert!(e.contains(needle), "{expr:?}: {e}");
        }
        let long = "0 ".repeat(150);
        assert!(
            Schedule::new(&long, TimeZone::UTC)
                .unwrap_err()
                .contains("longer")
        );
        // A hostile string is quoted back without backticks or mentions breaking out.
        let e = Schedule::new("<@U1> ` x y z", TimeZone::UTC).unwrap_err();
        assert!(!e.contains("<@U1>") && e.contains("&lt;@U1&gt;"), "{e}");
    }

    #[test]
    fn time_zones_are_looked_up() {
        assert!(time_zone("Europe/Berlin").is_ok());
        assert!(time_zone("America/New_York").is_ok());
        assert_eq!(zone_name(&time_zone("UTC").unwrap()), "UTC");
        for bad in [
            "",
            "  ",
            "Mars/Base",
            "../../etc/passwd",
            "/etc/localtime",
            "Europe/Berlin\nx",
        ] {
            let e = time_zone(bad).unwrap_err();
            assert!(e.contains("IANA"), "{bad:?}: {e}");
        }
        assert_eq!(
            Schedule::parse("0 9 * * *", Some("Mars/Base")),
            Err(ScheduleError::TimeZone(time_zone("Mars/Base").unwrap_err()))
        );
        assert!(matches!(
            Schedule::parse("0 9 * *", None),
            Err(ScheduleError::Cron(_))
        ));
        assert_eq!(
            Schedule::parse("0 9 * * *", None).unwrap().time_zone_name(),
            "UTC"
        );
    }

    #[test]
    fn appointment_or_interval() {
        for (expr, appointment) in [
            ("30 2 * * *", true),
            ("0 9,17 * * MON-FRI", true),
            ("0 9-17 * * *", true),
            ("0 16 * * FRI", true),
            ("*/30 * * * *", false),
            ("0 * * * *", false),
            ("0 */2 * * *", false),
            ("0-59/20 3 * * *", false),
        ] {
            assert_eq!(sched(expr, "UTC").is_appointment(), appointment, "{expr}");
        }
    }

    // --- daylight saving time ---------------------------------------------------------
    // 2025: America/New_York springs forward on 03-09 at 07:00Z (02:00 EST → 03:00 EDT)
    // and falls back on 11-02 at 06:00Z (02:00 EDT → 01:00 EST); Europe/Berlin springs
    // forward on 03-30 at 01:00Z (02:00 CET → 03:00 CEST) and falls back on 10-26 at
    // 01:00Z (03:00 CEST → 02:00 CET).

    #[test]
    fn spring_forward_fires_once_at_the_first_valid_time_new_york() {
        let s = sched("30 2 * * *", "America/New_York");
        let got: Vec<String> = s
            .firings_after(ts("2025-03-07T12:00:00Z"))
            .take(3)
            .map(|t| local(&s, t))
            .collect();
        assert_eq!(
            got,
            [
                "Sat 2025-03-08 02:30 EST",
                "Sun 2025-03-09 03:00 EDT",
                "Mon 2025-03-10 02:30 EDT"
            ]
        );
        assert_eq!(
            next_n(&s, "2025-03-08T12:00:00Z", 1),
            ["2025-03-09T07:00:00Z"]
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-03-09T07:00:00Z")),
            Some(ts("2025-03-09T07:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-03-09T06:59:59Z")),
            Some(ts("2025-03-08T07:30:00Z"))
        );
        assert!(s.is_firing(ts("2025-03-09T07:00:00Z")));
        // Two times in the same gap fire once, together.
        let both = sched("0,30 2 * * *", "America/New_York");
        assert_eq!(
            next_n(&both, "2025-03-09T05:00:00Z", 3),
            [
                "2025-03-09T07:00:00Z",
                "2025-03-10T06:00:00Z",
                "2025-03-10T06:30:00Z"
            ]
        );
    }

    #[test]
    fn spring_forward_fires_once_at_the_first_valid_time_berlin() {
        let s = sched("30 2 * * *", "Europe/Berlin");
        let got: Vec<String> = s
            .firings_after(ts("2025-03-28T12:00:00Z"))
            .take(3)
            .map(|t| local(&s, t))
            .collect();
        assert_eq!(
            got,
            [
                "Sat 2025-03-29 02:30 CET",
                "Sun 2025-03-30 03:00 CEST",
                "Mon 2025-03-31 02:30 CEST"
            ]
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-03-30T12:00:00Z")),
            Some(ts("2025-03-30T01:00:00Z"))
        );
    }

    #[test]
    fn fall_back_fires_once_not_twice_new_york() {
        let s = sched("30 1 * * *", "America/New_York");
        let got: Vec<String> = s
            .firings_after(ts("2025-10-31T12:00:00Z"))
            .take(3)
            .map(|t| local(&s, t))
            .collect();
        assert_eq!(
            got,
            [
                "Sat 2025-11-01 01:30 EDT",
                "Sun 2025-11-02 01:30 EDT",
                "Mon 2025-11-03 01:30 EST"
            ]
        );
        // From between the two 01:30s (01:10 EST), the next is the next day's.
        assert_eq!(
            next_n(&s, "2025-11-02T06:10:00Z", 1),
            ["2025-11-03T06:30:00Z"]
        );
        // From after the second 01:30 (01:45 EST), the latest is the EDT one.
        assert_eq!(
            s.latest_at_or_before(ts("2025-11-02T06:45:00Z")),
            Some(ts("2025-11-02T05:30:00Z"))
        );
        assert!(s.is_firing(ts("2025-11-02T05:30:00Z")));
        assert!(!s.is_firing(ts("2025-11-02T06:30:00Z")));
    }

    #[test]
    fn fall_back_fires_once_not_twice_berlin() {
        let s = sched("30 2 * * *", "Europe/Berlin");
        let got: Vec<String> = s
            .firings_after(ts("2025-10-24T12:00:00Z"))
            .take(3)
            .map(|t| local(&s, t))
            .collect();
        assert_eq!(
            got,
            [
                "Sat 2025-10-25 02:30 CEST",
                "Sun 2025-10-26 02:30 CEST",
                "Mon 2025-10-27 02:30 CET"
            ]
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-10-26T01:45:00Z")),
            Some(ts("2025-10-26T00:30:00Z"))
        );
    }

    #[test]
    fn a_list_of_hours_is_an_appointment_too() {
        let s = sched("30 1,13 * * *", "America/New_York");
        assert_eq!(
            next_n(&s, "2025-11-02T05:00:00Z", 3),
            [
                "2025-11-02T05:30:00Z",
                "2025-11-02T18:30:00Z",
                "2025-11-03T06:30:00Z"
            ]
        );
        // Why the wrapper resolves time zones itself: croner's own resolution counts a
        // list of hours as an interval and fires the repeated 01:30 a second time.
        let raw: croner::Cron = "30 1,13 * * *".parse().unwrap();
        let from = ts("2025-11-02T05:30:00Z").to_zoned(s.time_zone().clone());
        let croner_next = raw.find_next_occurrence(&from, false).unwrap();
        assert_eq!(croner_next.timestamp(), ts("2025-11-02T06:30:00Z"));
    }

    #[test]
    fn every_30_minutes_fires_in_both_offsets_of_the_repeated_hour() {
        let s = sched("*/30 * * * *", "America/New_York");
        assert_eq!(
            next_n(&s, "2025-11-02T04:45:00Z", 5),
            [
                "2025-11-02T05:00:00Z", // 01:00 EDT
                "2025-11-02T05:30:00Z", // 01:30 EDT
                "2025-11-02T06:00:00Z", // 01:00 EST
                "2025-11-02T06:30:00Z", // 01:30 EST
                "2025-11-02T07:00:00Z", // 02:00 EST
            ]
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-11-02T06:15:00Z")),
            Some(ts("2025-11-02T06:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-11-02T05:59:59Z")),
            Some(ts("2025-11-02T05:30:00Z"))
        );
        // Spring forward: 02:00 and 02:30 do not exist; the rhythm goes on at 03:00.
        assert_eq!(
            next_n(&s, "2025-03-09T06:15:00Z", 3),
            [
                "2025-03-09T06:30:00Z",
                "2025-03-09T07:00:00Z",
                "2025-03-09T07:30:00Z"
            ]
        );
        let b = sched("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            next_n(&b, "2025-10-25T23:45:00Z", 5),
            [
                "2025-10-26T00:00:00Z", // 02:00 CEST
                "2025-10-26T00:30:00Z", // 02:30 CEST
                "2025-10-26T01:00:00Z", // 02:00 CET
                "2025-10-26T01:30:00Z", // 02:30 CET
                "2025-10-26T02:00:00Z", // 03:00 CET
            ]
        );
        assert_eq!(
            next_n(&b, "2025-03-30T00:15:00Z", 3),
            [
                "2025-03-30T00:30:00Z", // 01:30 CET
                "2025-03-30T01:00:00Z", // 03:00 CEST
                "2025-03-30T01:30:00Z", // 03:30 CEST
            ]
        );
    }

    #[test]
    fn sub_second_instants() {
        let s = sched("0 9 * * *", "UTC");
        assert_eq!(
            s.next_after(ts("2025-06-06T08:59:59.999Z")),
            Some(ts("2025-06-06T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2025-06-06T09:00:00.001Z")),
            Some(ts("2025-06-07T09:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(ts("2025-06-06T09:00:00.5Z")),
            Some(ts("2025-06-06T09:00:00Z"))
        );
        assert!(!s.is_firing(ts("2025-06-06T09:00:00.5Z")));
    }

    #[test]
    fn the_ends_of_time() {
        let s = sched("0 0 1 1 *", "UTC");
        assert_eq!(s.next_after(Timestamp::MAX), None);
        assert_eq!(s.latest_at_or_before(Timestamp::MIN), None);
        // croner searches up to the year 5000.
        assert_eq!(s.next_after(ts("5000-06-01T00:00:00Z")), None);
        assert!(s.firings_after(Timestamp::MAX).next().is_none());
    }

    // --- period ---------------------------------------------------------------------

    const H: u64 = 3600;

    #[test]
    fn periods() {
        for (expr, tz, secs) in [
            ("0 9 * * *", "UTC", Some(24 * H)),
            ("0 9 * * *", "Europe/Berlin", Some(23 * H)),
            ("0 9 * * *", "America/New_York", Some(23 * H)),
            ("30 2 * * *", "Europe/Berlin", Some(23 * H + 1800)),
            ("0 9 * * MON-FRI", "UTC", Some(24 * H)),
            ("0 16 * * FRI", "UTC", Some(168 * H)),
            ("0 16 * * FRI", "Europe/Berlin", Some(167 * H)),
            ("*/30 * * * *", "Europe/Berlin", Some(1800)),
            ("* * * * *", "America/New_York", Some(60)),
            ("0,50 * * * *", "UTC", Some(600)),
            ("30 */2 * * *", "UTC", Some(2 * H)),
            // The repeated hour makes two firings one hour apart.
            ("30 */2 * * *", "Europe/Berlin", Some(H)),
            ("0 0 1 1 *", "UTC", Some(365 * 24 * H)),
            ("0 0 1 */3 *", "UTC", Some((31 + 28 + 31) * 24 * H)),
            ("0 0 29 2 *", "UTC", None),
        ] {
            assert_eq!(
                sched(expr, tz).period(),
                secs.map(Duration::from_secs),
                "{expr} in {tz}"
            );
        }
    }

    /// The period, by walking every firing of the horizon.
    fn brute_period(s: &Schedule) -> Option<Duration> {
        let start = s
            .time_zone()
            .to_ambiguous_timestamp(DateTime::constant(PERIOD_YEARS.0, 1, 1, 0, 0, 0, 0))
            .compatible()
            .unwrap();
        let end = s
            .time_zone()
            .to_ambiguous_timestamp(DateTime::constant(PERIOD_YEARS.1, 1, 1, 0, 0, 0, 0))
            .compatible()
            .unwrap();
        let all: Vec<Timestamp> = s
            .firings_after(start.checked_sub(SignedDuration::from_secs(1)).unwrap())
            .take_while(|t| *t < end)
            .collect();
        all.windows(2)
            .map(|w| Duration::from_secs((w[1].as_second() - w[0].as_second()) as u64))
            .min()
    }

    #[test]
    fn the_measured_period_is_the_walked_period() {
        for (expr, tz) in [
            ("0 9 * * MON-FRI", "Europe/Berlin"),
            ("30 2 * * *", "America/New_York"),
            ("30 1,13 * * *", "America/New_York"),
            ("0 */2 * * *", "Europe/Berlin"),
            ("0 16 * * FRI", "Europe/Berlin"),
            ("30 2 * 3 0#L", "Europe/Berlin"),
            ("0 3 * * *", "Australia/Lord_Howe"),
            ("45 23 L * *", "America/St_Johns"),
            ("0 0 13 * +FRI", "UTC"),
        ] {
            let s = sched(expr, tz);
            assert_eq!(s.period(), brute_period(&s), "{expr} in {tz}");
        }
    }

    // --- freeze windows ---------------------------------------------------------------

    fn weekend() -> Freeze {
        Freeze::new(
            "weekend",
            sched("0 16 * * FRI", "Europe/Berlin"),
            Duration::from_secs(64 * H),
        )
        .unwrap()
    }

    #[test]
    fn a_weekend_window_across_midnight_and_spring_forward() {
        let f = weekend();
        // Fri 2025-03-28 16:00 CET; 64 hours later it is Mon 09:00 CEST.
        let w = Window {
            start: ts("2025-03-28T15:00:00Z"),
            end: ts("2025-03-31T07:00:00Z"),
        };
        assert_eq!(local(&f.schedule, w.end), "Mon 2025-03-31 09:00 CEST");
        for inside in [
            "2025-03-28T15:00:00Z", // the start
            "2025-03-28T23:00:00Z", // Saturday 00:00 CET
            "2025-03-30T00:59:59Z", // just before the clocks change
            "2025-03-30T01:30:00Z", // Sunday 03:30 CEST
            "2025-03-31T06:59:59Z", // the last second
        ] {
            assert_eq!(f.window_at(ts(inside)), Some(w), "{inside}");
        }
        for outside in [
            "2025-03-28T14:59:59Z",
            "2025-03-31T07:00:00Z",
            "2025-04-02T12:00:00Z",
        ] {
            assert_eq!(f.window_at(ts(outside)), None, "{outside}");
        }
        assert_eq!(f.next_window_after(ts("2025-03-25T00:00:00Z")), Some(w));
        assert_eq!(
            f.next_window_after(ts("2025-03-28T15:00:00Z"))
                .map(|w| w.start),
            Some(ts("2025-04-04T14:00:00Z"))
        );
    }

    #[test]
    fn a_weekend_window_across_fall_back() {
        let f = weekend();
        // Fri 2025-10-24 16:00 CEST; 64 hours later it is Mon 07:00 CET.
        let w = Window {
            start: ts("2025-10-24T14:00:00Z"),
            end: ts("2025-10-27T06:00:00Z"),
        };
        assert_eq!(local(&f.schedule, w.end), "Mon 2025-10-27 07:00 CET");
        for inside in [
            "2025-10-24T22:00:00Z", // Saturday 00:00 CEST
            "2025-10-26T00:30:00Z", // 02:30 CEST
            "2025-10-26T01:30:00Z", // 02:30 CET, the repeated hour
            "2025-10-27T05:59:59Z",
        ] {
            assert_eq!(f.window_at(ts(inside)), Some(w), "{inside}");
        }
        assert_eq!(f.window_at(ts("2025-10-27T06:00:00Z")), None);
        assert_eq!(f.window_at(ts("2025-10-24T13:59:59Z")), None);
    }

    #[test]
    fn transitions_to_announce() {
        let f = weekend();
        let w1 = f.window_at(ts("2025-03-29T12:00:00Z")).unwrap();
        let w2 = f.window_at(ts("2025-04-05T12:00:00Z")).unwrap();
        // Nothing known, inside a window (it began while corral was down): entered.
        assert_eq!(
            f.transitions(None, ts("2025-03-29T12:00:00Z")),
            [Transition::Entered(w1)]
        );
        // Known and still active: nothing.
        assert!(
            f.transitions(Some(w1), ts("2025-03-30T12:00:00Z"))
                .is_empty()
        );
        // Known, now over: exited.
        assert_eq!(
            f.transitions(Some(w1), ts("2025-03-31T07:00:00Z")),
            [Transition::Exited(w1)]
        );
        // Known, over, and the next one active: exited then entered.
        assert_eq!(
            f.transitions(Some(w1), ts("2025-04-05T12:00:00Z")),
            [Transition::Exited(w1), Transition::Entered(w2)]
        );
        // Nothing known and nothing active: nothing, even when whole windows passed.
        assert!(f.transitions(None, ts("2025-04-09T12:00:00Z")).is_empty());
        // Same start, other end (the duration was changed): the same window.
        let longer = Window {
            end: w1.end.checked_add(SignedDuration::from_hours(1)).unwrap(),
            ..w1
        };
        assert!(
            f.transitions(Some(longer), ts("2025-03-30T12:00:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn freezes_are_validated() {
        let s = || sched("0 16 * * FRI", "Europe/Berlin");
        let e = Freeze::new("weekend", s(), Duration::ZERO).unwrap_err();
        assert_eq!(e.field(), "duration");
        // 168h is longer than the 167h week that has the spring-forward in it.
        let e = Freeze::new("weekend", s(), Duration::from_secs(168 * H)).unwrap_err();
        assert_eq!(e.field(), "duration");
        assert!(e.to_string().contains("overlap"), "{e}");
        assert!(Freeze::new("weekend", s(), Duration::from_secs(167 * H)).is_ok());
        for bad in [
            "",
            " weekend",
            "a:b",
            "<!channel>",
            &"x".repeat(65),
            "wëekend",
        ] {
            let e = Freeze::new(bad, s(), Duration::from_secs(H)).unwrap_err();
            assert_eq!(e.field(), "name", "{bad:?}");
        }
        assert!(Freeze::new("Xmas 2025-12_v1.0", s(), Duration::from_secs(H)).is_ok());
        // A schedule with fewer than two firings in the horizon takes any duration.
        let leap = sched("0 0 29 2 *", "UTC");
        assert!(Freeze::new("leap", leap, Duration::from_secs(366 * 24 * H)).is_ok());
    }

    // --- catch-up -------------------------------------------------------------------

    #[test]
    fn catch_up_decisions() {
        let s = sched("0 9 * * MON-FRI", "UTC");
        let t = ts;
        // A fresh store: on time is due, anything older was not missed.
        assert_eq!(
            catch_up(&s, None, t("2025-06-09T09:00:30Z")),
            CatchUp::OnTime {
                firing: t("2025-06-09T09:00:00Z"),
                skipped: 0
            }
        );
        assert_eq!(
            catch_up(&s, None, t("2025-06-09T10:00:00Z")),
            CatchUp::Nothing
        );
        // Claimed already.
        assert_eq!(
            catch_up(
                &s,
                Some(t("2025-06-09T09:00:00Z")),
                t("2025-06-09T10:00:00Z")
            ),
            CatchUp::Nothing
        );
        // Claimed in the future (another process's clock is ahead): nothing.
        assert_eq!(
            catch_up(
                &s,
                Some(t("2025-06-10T09:00:00Z")),
                t("2025-06-09T10:00:00Z")
            ),
            CatchUp::Nothing
        );
        // Friday claimed, Monday 09:00:10: on time, nothing skipped over the weekend.
        assert_eq!(
            catch_up(
                &s,
                Some(t("2025-06-06T09:00:00Z")),
                t("2025-06-09T09:00:10Z")
            ),
            CatchUp::OnTime {
                firing: t("2025-06-09T09:00:00Z"),
                skipped: 0
            }
        );
        // Thursday claimed, Monday 10:00: Monday's is sent an hour late, Friday's skipped.
        assert_eq!(
            catch_up(
                &s,
                Some(t("2025-06-05T09:00:00Z")),
                t("2025-06-09T10:00:00Z")
            ),
            CatchUp::Late {
                firing: t("2025-06-09T09:00:00Z"),
                late_by: Duration::from_secs(H),
                skipped: 1
            }
        );
        // Wednesday claimed, Monday 08:00: Friday's is 71h old, more than the 24h period.
        assert_eq!(
            catch_up(
                &s,
                Some(t("2025-06-04T09:00:00Z")),
                t("2025-06-09T08:00:00Z")
            ),
            CatchUp::Skip {
                latest: t("2025-06-06T09:00:00Z"),
                late_by: Duration::from_secs(71 * H),
                missed: 2
            }
        );
        // The boundary: a second under the period is late, the period itself is skipped.
        assert_eq!(
            catch_up(
                &s,
                Some(t("2025-06-05T09:00:00Z")),
                t("2025-06-07T08:59:59Z")
            ),
            CatchUp::Late {
                firing: t("2025-06-06T09:00:00Z"),
                late_by: Duration::from_secs(24 * H - 1),
                skipped: 0
            }
        );
        assert!(matches!(
            catch_up(
                &s,
                Some(t("2025-06-05T09:00:00Z")),
                t("2025-06-07T09:00:00Z")
            ),
            CatchUp::Skip { missed: 1, .. }
        ));
        // The on-time boundary.
        assert!(matches!(
            catch_up(
                &s,
                Some(t("2025-06-05T09:00:00Z")),
                t("2025-06-06T09:00:59Z")
            ),
            CatchUp::OnTime { .. }
        ));
        assert!(matches!(
            catch_up(
                &s,
                Some(t("2025-06-05T09:00:00Z")),
                t("2025-06-06T09:01:00Z")
            ),
            CatchUp::Late { .. }
        ));
        // Before the first firing ever: nothing.
        assert_eq!(catch_up(&s, None, Timestamp::MIN), CatchUp::Nothing);
    }

    #[test]
    fn catch_up_counts_are_bounded() {
        let s = sched("* * * * *", "UTC");
        let d = Digest::new(s, "C1").unwrap();
        let got = d.catch_up(Some(ts("2025-01-01T00:00:00Z")), ts("2025-03-01T00:30:00Z"));
        assert_eq!(
            got,
            CatchUp::OnTime {
                firing: ts("2025-03-01T00:30:00Z"),
                skipped: MAX_COUNTED
            }
        );
        assert_eq!(got.firing(), Some(ts("2025-03-01T00:30:00Z")));
    }

    // --- keys -------------------------------------------------------------------------

    #[test]
    fn claim_keys() {
        let f = weekend();
        let w = f.window_at(ts("2025-03-29T12:00:00Z")).unwrap();
        assert_eq!(f.window_key(&w), "freeze:weekend:1743174000");
        assert_eq!(
            f.transition_key(&Transition::Entered(w)),
            "freeze:weekend:1743174000:enter"
        );
        assert_eq!(
            f.transition_key(&Transition::Exited(w)),
            "freeze:weekend:1743174000:exit"
        );
        let d = Digest::new(sched("0 9 * * mon-fri", "Europe/Berlin"), "C0RELEASES").unwrap();
        assert_eq!(d.id(), "digest:C0RELEASES:0 9 * * MON-FRI@Europe/Berlin");
        let firing = d.schedule.next_after(ts("2025-06-06T10:00:00Z")).unwrap();
        assert_eq!(
            d.firing_key(firing),
            "digest:C0RELEASES:0 9 * * MON-FRI@Europe/Berlin:1749452400"
        );
        // Another channel, zone or time is another key; the same digest the same key.
        let other = Digest::new(sched("0 9 * * MON-FRI", "UTC"), "C0RELEASES").unwrap();
        assert_ne!(d.id(), other.id());
        let same = Digest::new(sched("0  9 * * MON-FRI", "Europe/Berlin"), "C0RELEASES").unwrap();
        assert_eq!(d.firing_key(firing), same.firing_key(firing));
        for bad in ["", "C0 RELEASES", "C0\n", &"C".repeat(81)] {
            assert!(
                Digest::new(sched("0 9 * * *", "UTC"), bad).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            Reminders::key(ts("2025-06-06T10:00:00Z"), 3),
            "remind:1749204000:3"
        );
    }

    // --- reminders --------------------------------------------------------------------

    #[test]
    fn reminders() {
        let r = Reminders::from_policy(
            Some(Duration::from_secs(2 * H)),
            Some(Duration::from_secs(1800)),
        )
        .unwrap();
        let start = ts("2025-06-06T10:00:00Z");
        assert_eq!(r.at(start, 0), Some(ts("2025-06-06T12:00:00Z")));
        assert_eq!(r.at(start, 3), Some(ts("2025-06-06T13:30:00Z")));
        assert_eq!(
            r.latest_at_or_before(start, ts("2025-06-06T11:59:59Z")),
            None
        );
        assert_eq!(
            r.latest_at_or_before(start, ts("2025-06-06T12:00:00Z")),
            Some(0)
        );
        assert_eq!(
            r.latest_at_or_before(start, ts("2025-06-06T13:10:00Z")),
            Some(2)
        );
        assert_eq!(
            r.next_after(start, ts("2025-06-06T12:00:00Z")),
            Some((1, ts("2025-06-06T12:30:00Z")))
        );
        assert_eq!(
            r.next_after(start, start),
            Some((0, ts("2025-06-06T12:00:00Z")))
        );
        // Down for a while: only the latest reminder is due, once.
        assert_eq!(r.due(start, None, ts("2025-06-06T13:10:00Z")), Some(2));
        assert_eq!(r.due(start, Some(0), ts("2025-06-06T13:10:00Z")), Some(2));
        assert_eq!(r.due(start, Some(2), ts("2025-06-06T13:10:00Z")), None);
        assert_eq!(r.due(start, None, ts("2025-06-06T11:00:00Z")), None);

        let once = Reminders::from_policy(Some(Duration::from_secs(H)), None).unwrap();
        assert_eq!(once.at(start, 1), None);
        assert_eq!(
            once.latest_at_or_before(start, ts("2025-06-07T00:00:00Z")),
            Some(0)
        );
        assert_eq!(once.next_after(start, ts("2025-06-06T11:00:00Z")), None);
        assert_eq!(once.due(start, Some(0), ts("2025-06-07T00:00:00Z")), None);

        let every = Reminders::from_policy(None, Some(Duration::from_secs(H))).unwrap();
        assert_eq!(every.at(start, 0), Some(ts("2025-06-06T11:00:00Z")));
        assert_eq!(every.at(start, 1), Some(ts("2025-06-06T12:00:00Z")));
        assert_eq!(Reminders::from_policy(None, None), None);
        // Far in the future nothing overflows.
        assert_eq!(r.at(Timestamp::MAX, 0), None);
        assert_eq!(
            r.latest_at_or_before(start, Timestamp::MAX).map(|n| n > 0),
            Some(true)
        );
    }

    #[test]
    fn shown_times() {
        let berlin = time_zone("Europe/Berlin").unwrap();
        assert_eq!(
            show_time(ts("2025-03-28T15:00:00Z"), &berlin),
            "Fri 2025-03-28 16:00 CET (15:00 UTC)"
        );
        assert_eq!(
            show_time(ts("2025-03-28T23:30:00Z"), &berlin),
            "Sat 2025-03-29 00:30 CET (Fri 2025-03-28 23:30 UTC)"
        );
        assert_eq!(
            show_time(ts("2025-03-28T15:00:00Z"), &TimeZone::UTC),
            "Fri 2025-03-28 15:00 UTC"
        );
    }

    // --- properties -------------------------------------------------------------------

    const ZONES: &[&str] = &[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe", // a 30-minute change
        "America/St_Johns",    // a -03:30 offset
        "Asia/Kolkata",        // no change, +05:30
    ];

    fn field(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        proptest::sample::select(options)
    }

    /// Cron expressions, weighted towards the hours clocks change at (01:00–03:00 in the
    /// zones below) and towards patterns that match every day, so that gaps and repeated
    /// hours are met often.
    fn cron_expr() -> impl Strategy<Value = String> {
        (
            field(&[
                "*", "0", "30", "59", "*/15", "*/7", "0,30", "5-10", "0-59/20", "7", "30", "0",
            ]),
            field(&[
                "*", "0", "1", "2", "3", "*/2", "1,2,3", "9-17", "2,14", "23", "1-3/2", "1", "2",
                "2", "1,2", "2-3",
            ]),
            field(&[
                "*", "*", "*", "1", "15", "L", "31", "1-7", "*/10", "29", "15W",
            ]),
            field(&[
                "*", "*", "*", "3", "10", "3,10,11", "*/2", "FEB", "JAN-JUN", "4",
            ]),
            field(&[
                "*", "*", "*", "*", "MON-FRI", "0", "7", "SUN", "FRI", "1-5", "5#L", "0#L",
                "SAT,SUN", "+MON",
            ]),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    /// An instant in 2024–2027, mostly within 26 hours of a clock change.
    fn instant(zone: &'static str) -> impl Strategy<Value = Timestamp> {
        let lo = ts("2024-01-01T00:00:00Z").as_second();
        let hi = ts("2028-01-01T00:00:00Z").as_second();
        (lo..hi, proptest::bool::weighted(0.8), -93_600i64..93_600).prop_map(
            move |(s, near, jitter)| {
                let t = Timestamp::from_second(s).unwrap();
                if near {
                    let tz = TimeZone::get(zone).unwrap();
                    if let Some(tr) = tz.following(t).next() {
                        return Timestamp::from_second(tr.timestamp().as_second() + jitter)
                            .unwrap();
                    }
                }
                t
            },
        )
    }

    fn case() -> impl Strategy<Value = (String, &'static str, Timestamp)> {
        (cron_expr(), proptest::sample::select(ZONES))
            .prop_flat_map(|(e, z)| (Just(e), Just(z), instant(z)))
    }

    /// Checks that no instant in `(a, b)` is a firing, minute by minute (offsets here are
    /// whole minutes, so every firing is on a UTC minute).
    fn no_firing_between(s: &Schedule, a: Timestamp, b: Timestamp) -> Result<(), TestCaseError> {
        let mut m = (a.as_second().div_euclid(60) + 1) * 60;
        while m < b.as_second() {
            let u = Timestamp::from_second(m).unwrap();
            prop_assert!(
                !s.is_firing(u),
                "{s:?}: {u} is a firing between {a} and {b}"
            );
            m += 60;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn next_after_is_the_next_firing((expr, zone, t) in case()) {
            let Ok(s) = Schedule::parse(&expr, Some(zone)) else { return Ok(()) };
            if let Some(r) = s.next_after(t) {
                prop_assert!(r > t, "{s:?}: {r} after {t}");
                prop_assert!(s.is_firing(r), "{s:?}: {r} ({}) is not a firing", local(&s, r));
                prop_assert_eq!(s.latest_at_or_before(r), Some(r));
                let before = r.checked_sub(SignedDuration::from_secs(1)).unwrap();
                prop_assert!(s.latest_at_or_before(before).is_none_or(|p| p <= t));
                if r.as_second() - t.as_second() <= 2 * 86_400 {
                    no_firing_between(&s, t, r)?;
                }
            }
            if let Some(p) = s.latest_at_or_before(t) {
                prop_assert!(p <= t);
                prop_assert!(s.is_firing(p), "{s:?}: {p} ({}) is not a firing", local(&s, p));
                prop_assert_eq!(s.next_after(p).map(|n| n > t), s.next_after(t).map(|_| true));
                if t.as_second() - p.as_second() <= 2 * 86_400 {
                    no_firing_between(&s, p, t.checked_add(SignedDuration::from_secs(1)).unwrap())?;
                }
            }
        }

        #[test]
        fn firings_strictly_increase((expr, zone, t) in case()) {
            let Ok(s) = Schedule::parse(&expr, Some(zone)) else { return Ok(()) };
            let mut last = t;
            for f in s.firings_after(t).take(40) {
                prop_assert!(f > last, "{s:?}: {f} after {last}");
                prop_assert!(s.is_firing(f), "{s:?}: {f} ({}) is not a firing", local(&s, f));
                last = f;
            }
        }

        #[test]
        fn no_string_panics_the_parser(expr in "\\PC{0,60}") {
            let _ = Schedule::new(&expr, TimeZone::UTC);
        }

        #[test]
        fn no_cron_soup_panics_the_parser(expr in "[0-9A-Z*/,#LW?+\\- ]{0,40}") {
            if let Ok(s) = Schedule::new(&expr, TimeZone::UTC) {
                let _ = s.next_after(ts("2025-01-01T00:00:00Z"));
                let _ = s.latest_at_or_before(ts("2025-01-01T00:00:00Z"));
            }
        }

        #[test]
        fn no_zone_name_panics_the_lookup(name in "\\PC{0,40}") {
            let _ = time_zone(&name);
        }
    }
}
