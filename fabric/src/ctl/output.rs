//! How `nexus ctl` prints: one aligned-table renderer for every command, times as RFC 3339 UTC
//! with a relative age, `--json` as the API's own JSON pretty-printed, and colour only on a
//! terminal without `NO_COLOR`.
//!
//! Nothing here talks to the node; the functions take what they render (and the current time)
//! as arguments, so tests can pin them.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

/// The environment variable that turns colour off when set to anything but the empty string
/// (<https://no-color.org>).
pub const NO_COLOR_ENV: &str = "NO_COLOR";

/// Whether tables written to stdout use colour: stdout is a terminal and `NO_COLOR` is unset or
/// empty.
pub fn color_enabled() -> bool {
    color_allowed(std::env::var_os(NO_COLOR_ENV).as_deref()) && std::io::stdout().is_terminal()
}

/// The `NO_COLOR` rule alone: colour is allowed unless the variable holds a non-empty value.
pub fn color_allowed(no_color: Option<&std::ffi::OsStr>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

/// The colour a state word is shown in, if any: green for healthy states, yellow for states
/// on their way somewhere, red for failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateColor {
    /// `alive`, `running`, `established`, `ok`.
    Green,
    /// `suspect`, `restarting`, `handshake`, `degraded`.
    Yellow,
    /// `down`, `dead`, `failed`, `revoked` reasons.
    Red,
}

impl StateColor {
    /// The colour of a state word, or `None` for words that carry no alarm (`left`, `-`).
    pub fn of(state: &str) -> Option<StateColor> {
        match state.trim().trim_end_matches(" *") {
            "alive" | "running" | "established" | "ok" | "voter" | "leader" => {
                Some(StateColor::Green)
            }
            "suspect" | "restarting" | "handshake" | "degraded" | "candidate" => {
                Some(StateColor::Yellow)
            }
            "down" | "dead" | "failed" | "stopped" => Some(StateColor::Red),
            _ => None,
        }
    }

    fn sgr(self) -> &'static str {
        match self {
            StateColor::Green => "\x1b[32m",
            StateColor::Yellow => "\x1b[33m",
            StateColor::Red => "\x1b[31m",
        }
    }
}

const SGR_RESET: &str = "\x1b[0m";

/// How a column's cells are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnColor {
    /// Never.
    Plain,
    /// By [`StateColor::of`] of the cell's text.
    State,
    /// Red whenever the cell is not `-` (e.g. a revocation reason).
    AlarmUnlessDash,
}

/// An aligned text table: a header line, then one line per row, columns two spaces apart,
/// trailing blanks trimmed. Every `nexus ctl` table (and the key/value views) goes through it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    colors: Vec<ColumnColor>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and no rows.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            colors: vec![ColumnColor::Plain; headers.len()],
            rows: Vec::new(),
        }
    }

    /// A two-column `FIELD VALUE` table of `(field, value)` pairs.
    pub fn fields(pairs: Vec<(&str, String)>) -> Table {
        let mut t = Table::new(&["FIELD", "VALUE"]);
        for (field, value) in pairs {
            t.push(vec![field.to_owned(), value]);
        }
        t
    }

    /// Colours the named column by state word (alive green, suspect yellow, down red, …).
    pub fn state_column(mut self, header: &str) -> Table {
        self.set_color(header, ColumnColor::State);
        self
    }

    /// Colours the named column red wherever it is not `-`.
    pub fn alarm_column(mut self, header: &str) -> Table {
        self.set_color(header, ColumnColor::AlarmUnlessDash);
        self
    }

    fn set_color(&mut self, header: &str, color: ColumnColor) {
        let i = self
            .headers
            .iter()
            .position(|h| h == header)
            .unwrap_or_else(|| panic!("no column {header:?} in {:?}", self.headers));
        self.colors[i] = color;
    }

    /// Appends a row (missing cells render empty; extra cells are dropped).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Appends rows.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = Vec<String>>) {
        self.rows.extend(rows);
    }

    /// The rows.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// Renders the table, with colour escape codes only when `color` is true.
    pub fn render(&self, color: bool) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        self.line(&mut out, &widths, &self.headers, false);
        for row in &self.rows {
            self.line(&mut out, &widths, row, color);
        }
        out
    }

    fn line(&self, out: &mut String, widths: &[usize], cells: &[String], color: bool) {
        let start = out.len();
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).map_or("", String::as_str);
            if i > 0 {
                out.push_str("  ");
            }
            let paint = match self.colors[i] {
                _ if !color => None,
                ColumnColor::Plain => None,
                ColumnColor::State => StateColor::of(cell),
                ColumnColor::AlarmUnlessDash => {
                    (!cell.is_empty() && cell != "-").then_some(StateColor::Red)
                }
            };
            // Pad the visible text, so escape codes do not disturb the alignment.
            let pad = w.saturating_sub(cell.chars().count());
            match paint {
                Some(c) => {
                    let _ = write!(out, "{}{cell}{SGR_RESET}", c.sgr());
                }
                None => out.push_str(cell),
            }
            out.extend(std::iter::repeat_n(' ', pad));
        }
        let trimmed = start + out[start..].trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
}

impl std::fmt::Display for Table {
    /// Renders with colour when stdout is a terminal and `NO_COLOR` is unset.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(color_enabled()))
    }
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> u64 {
    // The CLI is a driver: it reads the clock to say how long ago a time was.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-12-07T14:03:11Z` for a time in milliseconds since the Unix epoch (seconds precision,
/// UTC), or the number itself if it is out of range.
pub fn rfc3339_ms(epoch_ms: u64) -> String {
    i64::try_from(epoch_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || epoch_ms.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// A signed distance from now in words: `3m ago`, `in 23h`, `now` (within a second). One unit,
/// rounded down: seconds below a minute, minutes below an hour, hours below two days, then days.
pub fn relative_ms(epoch_ms: u64, now_ms: u64) -> String {
    let (delta, past) = if epoch_ms <= now_ms {
        (now_ms - epoch_ms, true)
    } else {
        (epoch_ms - now_ms, false)
    };
    let s = delta / 1000;
    let amount = match s {
        0 => return "now".to_owned(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A time for a table cell: `2026-12-07T14:03:11Z (3m ago)` or `… (in 23h)`.
pub fn time_ms(epoch_ms: u64, now_ms: u64) -> String {
    format!(
        "{} ({})",
        rfc3339_ms(epoch_ms),
        relative_ms(epoch_ms, now_ms)
    )
}

/// [`time_ms`] of a JSON number (milliseconds since the epoch); `-` when absent.
pub fn time_json_ms(v: &serde_json::Value, now_ms: u64) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_owned(), |ms| time_ms(ms, now_ms))
}

/// The API's JSON text re-indented like `serde_json::to_string_pretty` (two spaces), keeping
/// the server's member order and every value's exact text. Fails on text that is not JSON.
pub fn pretty_json(raw: &str) -> Result<String, serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(raw)?;
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Writes to stdout (what `out!`/`outln!` expand to). A closed pipe (`nexus ctl members | head
/// -1`) ends the process quietly with exit 0, as it ends other Unix tools; any other write error
/// is reported and exits 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints the API's JSON, pretty-printed, as the only thing on stdout.
pub fn print_json(raw: &str) {
    match pretty_json(raw) {
        Ok(p) => outln!("{p}"),
        // Client::send only returns text that parsed; print it as it came if it ever does not.
        Err(_) => outln!("{raw}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "LONG HEADER"]);
        t.push(vec!["xxxxx".into(), "1".into()]);
        t.push(vec!["y".into(), "22".into()]);
        assert_eq!(t.render(false), "A      LONG HEADER\nxxxxx  1\ny      22\n");
    }

    #[test]
    fn colour_codes_only_when_asked_and_alignment_kept() {
        let mut t = Table::new(&["NAME", "STATE", "N"]).state_column("STATE");
        t.push(vec!["a".into(), "alive".into(), "1".into()]);
        t.push(vec!["b".into(), "suspect".into(), "2".into()]);
        t.push(vec!["c".into(), "down".into(), "3".into()]);
        t.push(vec!["d".into(), "left".into(), "4".into()]);
        let plain = t.render(false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let colored = t.render(true);
        assert!(colored.contains("\x1b[32malive\x1b[0m"), "{colored}");
        assert!(colored.contains("\x1b[33msuspect\x1b[0m"), "{colored}");
        assert!(colored.contains("\x1b[31mdown\x1b[0m"), "{colored}");
        // Stripping the escape codes gives the plain table back.
        let stripped = colored
            .replace("\x1b[32m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn no_color_rule() {
        assert!(color_allowed(None));
        assert!(color_allowed(Some(std::ffi::OsStr::new(""))));
        assert!(!color_allowed(Some(std::ffi::OsStr::new("1"))));
    }

    #[test]
    fn times_are_rfc3339_utc_with_an_age() {
        let t = 1_796_652_191_000; // 2026-12-07T14:03:11Z
        assert_eq!(rfc3339_ms(t), "2026-12-07T14:03:11Z");
        assert_eq!(time_ms(t, t + 180_500), "2026-12-07T14:03:11Z (3m ago)");
        assert_eq!(relative_ms(t + 23 * 3_600_000 + 5, t), "in 23h");
        assert_eq!(relative_ms(t, t + 400), "now");
        assert_eq!(relative_ms(t, t + 59_999), "59s ago");
        assert_eq!(relative_ms(t, t + 3 * 86_400_000), "3d ago");
        assert_eq!(time_json_ms(&serde_json::Value::Null, t), "-");
        assert_eq!(rfc3339_ms(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn pretty_json_matches_serde_and_keeps_order() {
        let raw = r#"{"b":1,"a":[],"c":{"x":"q\"[,:]","y":[1,2,{}]},"d":null}"#;
        let ours = pretty_json(raw).expect("json");
        let v: serde_json::Value = serde_json::from_str(raw).expect("json");
        // Same document, same layout; only serde_json's Value sorts the members.
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ours).expect("json"),
            v
        );
        assert!(ours.starts_with("{\n  \"b\": 1,\n  \"a\": [],\n"), "{ours}");
        let sorted = serde_json::to_string(&v).expect("json");
        assert_eq!(
            pretty_json(&sorted).expect("json"),
            serde_json::to_string_pretty(&v).expect("json")
        );
        assert!(pretty_json("{nope").is_err());
    }
}
