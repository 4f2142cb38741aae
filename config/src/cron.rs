//! Cron-like schedules for `[[drill]]`: five fields (minute, hour, day of month, month, day
//! of week, in UTC), each `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a
//! comma-separated list of those. Day of week 0 or 7 is Sunday. Also the calendar they run
//! on ([`civil_from_days`]), which prints timestamps too ([`format_utc_ms`]).

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

fn field(text: &str, lo: u32, hi: u32, name: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step {s:?} in the {name} field"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in the {name} field"));
        }
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = a
                .parse::<u32>()
                .map_err(|_| format!("bad value {a:?} in the {name} field"))?;
            let b = b
                .parse::<u32>()
                .map_err(|_| format!("bad value {b:?} in the {name} field"))?;
            (a, b)
        } else {
            let v = range
                .parse::<u32>()
                .map_err(|_| format!("bad value {range:?} in the {name} field"))?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{part:?} is outside {lo}-{hi} in the {name} field"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// Days since the Unix epoch to the civil date `(year, month 1-12, day 1-31)` of the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`). The one copy of the
/// algorithm: schedules run on it and timestamps are printed with it ([`format_utc_ms`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), the time
/// format of incidents and drill reports.
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

impl Schedule {
    /// Parses five cron fields.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields.as_slice() else {
            return Err(format!(
                "expected five fields (minute hour day month weekday), got {text:?}"
            ));
        };
        let mut weekdays = field(dow, 0, 7, "weekday")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Self {
            text: text.to_string(),
            minutes: field(m, 0, 59, "minute")?,
            hours: field(h, 0, 23, "hour")?,
            days: field(dom, 1, 31, "day")?,
            months: field(mon, 1, 12, "month")?,
            weekdays,
        })
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first matching minute strictly after `unix_secs`, as Unix seconds (within ~4 years).
    pub fn next_after(&self, unix_secs: u64) -> Option<u64> {
        let mut t = (unix_secs / 60 + 1) * 60;
        for _ in 0..(4 * 366 * 24 * 60) {
            let days = (t / 86_400) as i64;
            let (_, month, day) = civil_from_days(days);
            let weekday = ((days + 4).rem_euclid(7)) as u32; // 1970-01-01 was a Thursday
            let minute = ((t / 60) % 60) as u32;
            let hour = ((t / 3600) % 24) as u32;
            if self.months & (1 << month) == 0
                || self.days & (1 << day) == 0
                || self.weekdays & (1 << weekday) == 0
            {
                t = (t / 86_400 + 1) * 86_400;
                continue;
            }
            if self.hours & (1 << hour) == 0 {
                t = (t / 3600 + 1) * 3600;
                continue;
            }
            if self.minutes & (1 << minute) != 0 {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_ms(1_795_397_021_997), "2026-11-23T01:23:41.997Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn parses_and_finds_the_next_minute() {
        let every_15 = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(every_15.next_after(0), Some(15 * 60));
        // Mondays at 03:00 UTC; 1970-01-05 was a Monday.
        let weekly = Schedule::parse("0 3 * * 1").unwrap();
        assert_eq!(weekly.next_after(0), Some(4 * 86_400 + 3 * 3600));
        let sunday = Schedule::parse("30 12 * * 7").unwrap();
        assert_eq!(sunday.next_after(0), Some(3 * 86_400 + 12 * 3600 + 30 * 60));
        assert!(Schedule::parse("* * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after(0)
                .is_none(),
            "February 30 never comes"
        );
    }
}
