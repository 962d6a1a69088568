//! NCRONTAB schedules in an IANA time zone: parse (6 fields with seconds; 5 fields mean
//! "at second 0") and compute next fire instants. Pure: no tasks, no clocks of its own.
//!
//! Built on `croner` (POSIX day-of-week numbering, 0 and 7 = Sunday, documented DST rules: a
//! fixed time inside a spring-forward gap fires at the first valid instant after it, a fixed
//! time inside a fall-back overlap fires once). Like NCRONTAB, a day-of-month and a
//! day-of-week restriction must both match.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule: expression + time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    cron: croner::Cron,
    time_zone: Tz,
}

/// Why an expression or a time zone was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CronError {
    #[error("invalid cron expression `{expression}`: {reason}")]
    Expression { expression: String, reason: String },
    #[error("unknown time zone `{0}` (use an IANA name such as `Europe/Berlin` or `UTC`)")]
    TimeZone(String),
}

/// Parse an IANA time zone name.
pub fn parse_time_zone(name: &str) -> Result<Tz, CronError> {
    name.parse::<Tz>()
        .map_err(|_| CronError::TimeZone(name.to_string()))
}

/// The fields of a 6-field expression, with the values each accepts.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT"),
];

/// Name the first field that is wrong on its own: parse the expression with every other field
/// set to `*`.
fn explain(parser: &CronParser, expression: &str) -> Option<String> {
    let mut fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() == 5 {
        fields.insert(0, "0");
    }
    for (i, field) in fields.iter().enumerate() {
        let mut probe = ["*"; 6];
        probe[i] = field;
        if parser.parse(&probe.join(" ")).is_err() {
            let (name, range) = FIELDS[i];
            return Some(format!(
                "the {name} field `{field}` is not valid (use {range}, `*`, lists, ranges or steps)"
            ));
        }
    }
    None
}

impl CronSchedule {
    /// Parse `expression` (NCRONTAB, 6 or 5 fields) for the time zone `time_zone`.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, CronError> {
        let tz = parse_time_zone(time_zone)?;
        Self::with_zone(expression, tz)
    }

    /// Parse `expression` for an already parsed zone.
    pub fn with_zone(expression: &str, time_zone: Tz) -> Result<Self, CronError> {
        let fields = expression.split_whitespace().count();
        if !(fields == 5 || fields == 6) || expression.contains('@') {
            return Err(CronError::Expression {
                expression: expression.to_string(),
                reason: format!(
                    "expected 6 fields (second minute hour day month day-of-week) or 5 \
                     (minute hour day month day-of-week), found {fields}"
                ),
            });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(true)
            .build();
        let cron = parser
            .parse(expression)
            .map_err(|e| CronError::Expression {
                expression: expression.to_string(),
                reason: explain(&parser, expression).unwrap_or_else(|| e.to_string()),
            })?;
        Ok(CronSchedule {
            expression: expression.to_string(),
            cron,
            time_zone,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The schedule's time zone.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// A human description of the pattern, e.g. "At second 0, every 30 minutes".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The first fire instant strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.time_zone.from_utc_datetime(&after.naive_utc());
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire instants after `after`, in the schedule's zone.
    pub fn next_n(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next.with_timezone(&self.time_zone));
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_thirty_minutes_fires_at_00_and_30() {
        let s = CronSchedule::parse("0 */30 * * * *", "UTC").unwrap();
        let next = s.next_n(utc("2026-11-28T10:07:12Z"), 3);
        let shown: Vec<String> = next.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            shown,
            [
                "2026-11-28T10:30:00+00:00",
                "2026-11-28T11:00:00+00:00",
                "2026-11-28T11:30:00+00:00"
            ]
        );
    }

    #[test]
    fn five_fields_mean_second_zero() {
        let s = CronSchedule::parse("*/5 * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-28T10:07:12Z")),
            Some(utc("2026-11-28T10:10:00Z"))
        );
    }

    #[test]
    fn weekdays_are_posix_numbered() {
        // 2026-11-28 is a Saturday: 1-5 (Mon-Fri) next fires on Monday.
        let s = CronSchedule::parse("0 30 9 * * 1-5", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-28T12:00:00Z")),
            Some(utc("2026-11-30T09:30:00Z"))
        );
        let sunday = CronSchedule::parse("0 0 0 * * 0", "UTC").unwrap();
        assert_eq!(
            sunday.next_after(utc("2026-11-28T12:00:00Z")),
            Some(utc("2026-11-29T00:00:00Z"))
        );
    }

    #[test]
    fn invalid_expressions_are_refused() {
        for bad in [
            "61 * * * * *",
            "bogus",
            "* * * *",
            "0 0 0 * * * 2027",
            "0 0 25 * * *",
        ] {
            assert!(
                matches!(
                    CronSchedule::parse(bad, "UTC"),
                    Err(CronError::Expression { .. })
                ),
                "{bad} should be refused"
            );
        }
        assert_eq!(
            CronSchedule::parse("* * * * * *", "Mars/Olympus").unwrap_err(),
            CronError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn errors_name_the_wrong_field() {
        let reason = |e: &str| match CronSchedule::parse(e, "UTC") {
            Err(CronError::Expression { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason("61 * * * * *").starts_with("the second field `61` is not valid (use 0-59"));
        assert!(reason("0 0 25 * * *").starts_with("the hour field `25`"));
        assert!(reason("0 0 0 * 13 *").starts_with("the month field `13`"));
        assert!(reason("0 0 9 * * FUNDAY").starts_with("the day of week field `FUNDAY`"));
        // 5 fields: minute hour day month day-of-week.
        assert!(reason("0 99 * * *").starts_with("the hour field `99`"));
    }

    #[test]
    fn berlin_spring_forward_runs_once_at_first_valid_time() {
        // 2027-03-28 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
        let s = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        let fires = s.next_n(utc("2027-03-27T12:00:00Z"), 2);
        assert_eq!(fires[0].to_rfc3339(), "2027-03-28T03:00:00+02:00");
        assert_eq!(fires[1].to_rfc3339(), "2027-03-29T02:30:00+02:00");
    }

    #[test]
    fn berlin_fall_back_runs_once() {
        // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice on the wall.
        let s = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        let fires = s.next_n(utc("2026-10-24T12:00:00Z"), 2);
        assert_eq!(fires[0].date_naive().to_string(), "2026-10-25");
        assert_eq!(fires[1].date_naive().to_string(), "2026-10-26");
    }

    #[test]
    fn hourly_keeps_every_real_hour_across_fall_back() {
        // An interval job fires for each matching wall time, so the repeated hour fires twice,
        // one real hour apart, and never twice for one instant.
        let s = CronSchedule::parse("0 0 * * * *", "Europe/Berlin").unwrap();
        let fires = s.next_n(utc("2026-10-24T23:30:00Z"), 4);
        for pair in fires.windows(2) {
            assert!(pair[1] > pair[0]);
        }
    }
}
