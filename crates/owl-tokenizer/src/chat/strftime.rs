//! `strftime_now(format)`: the current date as Python's `datetime.now().strftime` writes it
//! (Llama 3.x templates put "Today Date: 26 Jul 2024" in the system prompt).
//!
//! owl carries no time-zone database, so the clock is UTC. The common C directives are
//! supported; an unknown one is an error rather than a silently wrong prompt.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CivilTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Monday .. 6 = Sunday
    pub weekday: u32,
    /// 1..=366
    pub day_of_year: u32,
}

impl CivilTime {
    /// From seconds since the Unix epoch (Howard Hinnant's days-to-civil algorithm).
    pub(crate) fn from_unix(secs: i64) -> CivilTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy_mar + 2) / 153;
        let day = (doy_mar - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let day_of_year = CUM[(month - 1) as usize] + day + u32::from(leap && month > 2);
        // 1970-01-01 was a Thursday (weekday 3 when Monday is 0).
        let weekday = (days + 3).rem_euclid(7) as u32;
        CivilTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            weekday,
            day_of_year,
        }
    }

    pub(crate) fn now_utc() -> CivilTime {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        CivilTime::from_unix(secs)
    }
}

/// Formats the UTC time `secs` after the Unix epoch with C/Python strftime directives (what
/// templates' `strftime_now` uses; the server's RFC 3339 timestamps too).
pub fn format_unix_utc(secs: i64, format: &str) -> Result<String, String> {
    strftime(&CivilTime::from_unix(secs), format)
}

/// Formats `t` with C/Python strftime directives.
pub(crate) fn strftime(t: &CivilTime, format: &str) -> Result<String, String> {
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let month = MONTHS[(t.month - 1) as usize];
        let weekday = WEEKDAYS[t.weekday as usize];
        let hour12 = if t.hour.is_multiple_of(12) { 12 } else { t.hour % 12 };
        match d {
            'Y' => out.push_str(&t.year.to_string()),
            'y' => out.push_str(&format!("{:02}", t.year.rem_euclid(100))),
            'm' => out.push_str(&format!("{:02}", t.month)),
            'd' => out.push_str(&format!("{:02}", t.day)),
            'e' => out.push_str(&format!("{:2}", t.day)),
            '-' => match chars.next() {
                // glibc's no-padding flag, common in templates: %-d, %-m, %-H, %-I, %-M, %-S
                Some('d') => out.push_str(&t.day.to_string()),
                Some('m') => out.push_str(&t.month.to_string()),
                Some('H') => out.push_str(&t.hour.to_string()),
                Some('I') => out.push_str(&hour12.to_string()),
                Some('M') => out.push_str(&t.minute.to_string()),
                Some('S') => out.push_str(&t.second.to_string()),
                Some('j') => out.push_str(&t.day_of_year.to_string()),
                other => return Err(format!("strftime: unsupported directive %-{}", other.unwrap_or(' '))),
            },
            'H' => out.push_str(&format!("{:02}", t.hour)),
            'I' => out.push_str(&format!("{hour12:02}")),
            'M' => out.push_str(&format!("{:02}", t.minute)),
            'S' => out.push_str(&format!("{:02}", t.second)),
            'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'b' | 'h' => out.push_str(&month[..3]),
            'B' => out.push_str(month),
            'a' => out.push_str(&weekday[..3]),
            'A' => out.push_str(weekday),
            'w' => out.push_str(&((t.weekday + 1) % 7).to_string()),
            'u' => out.push_str(&(t.weekday + 1).to_string()),
            'j' => out.push_str(&format!("{:03}", t.day_of_year)),
            'F' => out.push_str(&format!("{}-{:02}-{:02}", t.year, t.month, t.day)),
            'T' => out.push_str(&format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second)),
            'D' => out.push_str(&format!("{:02}/{:02}/{:02}", t.month, t.day, t.year.rem_euclid(100))),
            'Z' => out.push_str("UTC"),
            'z' => out.push_str("+0000"),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            other => return Err(format!("strftime: unsupported directive %{other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        // 2024-07-26 12:34:56 UTC (a Friday, day 208 of a leap year)
        let t = CivilTime::from_unix(1_721_997_296);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2024, 7, 26, 12, 34, 56));
        assert_eq!(t.weekday, 4);
        assert_eq!(t.day_of_year, 208);
        assert_eq!(strftime(&t, "%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(strftime(&t, "%A, %B %-d, %Y %I:%M %p").unwrap(), "Friday, July 26, 2024 12:34 PM");
        assert_eq!(strftime(&t, "%F %T %j %%").unwrap(), "2024-07-26 12:34:56 208 %");
        let epoch = CivilTime::from_unix(0);
        assert_eq!(strftime(&epoch, "%Y-%m-%d %a").unwrap(), "1970-01-01 Thu");
        let leap = CivilTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!(strftime(&leap, "%Y-%m-%d").unwrap(), "2000-02-29");
        assert!(strftime(&t, "%Q").is_err());
    }
}
