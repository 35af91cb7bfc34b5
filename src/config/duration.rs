//! Durations written with units, and their parser.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::time::format_duration;

/// A duration written with units (`90s`, `15m`, `24h`, `7d`, `1h 30m`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Units accepted in durations. Months and years are left out on purpose:
/// humantime reads `M` as months (not minutes) and both have no fixed length.
const UNITS: &[&str] = &[
    "ms", "msec", "s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes",
    "h", "hr", "hrs", "hour", "hours", "d", "day", "days", "w", "week", "weeks",
];

/// Parses a duration with units, refusing bare numbers and unclear units.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\"";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration: {expected}"));
    }
    let mut chars = t.chars().peekable();
    let mut saw_part = false;
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut digits = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| c.is_ascii_digit()) {
            digits.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut unit = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| c.is_alphabetic()) {
            unit.push(c);
            chars.next();
        }
        if !digits.is_empty() && matches!(chars.peek(), Some('.' | ',')) {
            return Err(format!(
                "{text:?} has a fraction: durations take whole numbers; write a smaller \
                 unit or parts, like \"1h 30m\" or \"90m\" for 1.5h"
            ));
        }
        if digits.is_empty() {
            return Err(format!("{text:?} is not a duration: {expected}"));
        }
        if unit.is_empty() {
            return Err(format!(
                "{text:?} has a number without a unit: {expected} (a bare number is \
                 refused: seconds or minutes?)"
            ));
        }
        if !UNITS.contains(&unit.as_str()) {
            let why = if ["M", "mo", "month", "months", "y", "yr", "year", "years"]
                .contains(&unit.as_str())
            {
                "months and years have no fixed length; "
            } else {
                ""
            };
            return Err(format!(
                "{text:?} uses the unit {unit:?}, which is not accepted ({why}use ms, s, m for \
                 minutes, h, d or w, like \"30d\" or \"52w\")"
            ));
        }
        saw_part = true;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    if !saw_part {
        return Err(format!("{text:?}: {expected}"));
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("{text:?}: {e}; {expected}"))?;
    // Nothing in jwksd is meant to last a century; larger values would only
    // overflow the arithmetic of the timeline.
    if d > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("{text:?} is longer than 100 years"));
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::parse;

    #[test]
    fn durations_refuse_bare_numbers_and_months() {
        for bad in ["90", "5M", "1month", "2y", "m", "", "1.5h", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        let e = parse("tokens:\n  clock_skew: 90\n").unwrap_err();
        assert!(
            e.contains("tokens.clock_skew") && e.contains("line 2"),
            "{e}"
        );
        let e = parse("tokens:\n  max_lifetime: 1.5h\n").unwrap_err();
        assert!(
            e.contains("fraction") && !e.contains("without a unit"),
            "{e}"
        );
        let e = parse("tokens:\n  max_lifetime: 5M\n").unwrap_err();
        assert!(e.contains("\"M\"") && e.contains("line 2"), "{e}");
    }
}
