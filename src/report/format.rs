//! How the report writes numbers, times, commands and manifest lines as plain text. The page
//! escapes whatever these return; nothing here produces markup.

use std::time::{Duration, UNIX_EPOCH};

/// A duration for people: `0.4 s`, `12 s`, `3 min 05 s`, `5 min`, `2 h 10 min`, `3 d 4 h`.
pub fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match ms {
        0..10_000 => {
            let tenths = (ms + 50) / 100;
            if tenths % 10 == 0 {
                format!("{} s", tenths / 10)
            } else {
                format!("{}.{} s", tenths / 10, tenths % 10)
            }
        }
        10_000..60_000 => format!("{seconds} s"),
        60_000..3_600_000 if seconds % 60 == 0 => format!("{} min", seconds / 60),
        60_000..3_600_000 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        3_600_000..86_400_000 if seconds / 60 % 60 == 0 => format!("{} h", seconds / 3600),
        3_600_000..86_400_000 => format!("{} h {:02} min", seconds / 3600, seconds / 60 % 60),
        _ if seconds / 3600 % 24 == 0 => format!("{} d", seconds / 86_400),
        _ => format!("{} d {} h", seconds / 86_400, seconds / 3600 % 24),
    }
}

/// A moment in UTC: `2027-03-01 14:05:09 UTC`.
pub fn timestamp(ms: u64) -> String {
    let text =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    // `2027-03-01T14:05:09Z` → `2027-03-01 14:05:09 UTC`
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A size: `812 B`, `64.0 KB`, `12.3 MB`, `1.20 GB` (powers of 1000, like file managers).
pub fn bytes(count: u64) -> String {
    match count {
        0..1000 => format!("{count} B"),
        1000..1_000_000 => format!("{:.1} KB", count as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", count as f64 / 1e6),
        _ => format!("{:.2} GB", count as f64 / 1e9),
    }
}

/// A thousands-separated count: `10,000`.
pub fn count(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A word a POSIX shell reads back as itself: as is when it is plain, otherwise in single
/// quotes (a `'` inside becomes `'\''`).
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./,=:@+".contains(&byte));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One CSV record, quoted as the manifest reader expects (RFC 4180: a field with a comma,
/// quote or line break is quoted and its quotes doubled). No line terminator.
pub fn csv_line<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to memory cannot fail, and the fields are UTF-8 strings.
    let written = writer.write_record(fields);
    debug_assert!(written.is_ok());
    let bytes = writer.into_inner().unwrap_or_default();
    let mut line = String::from_utf8(bytes).unwrap_or_default();
    if line.ends_with('\n') {
        line.pop();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_counts_read_well() {
        let cases = [
            (0, "0 s"),
            (420, "0.4 s"),
            (9_960, "10 s"),
            (12_400, "12 s"),
            (185_000, "3 min 05 s"),
            (300_000, "5 min"),
            (7_200_000, "2 h"),
            (7_800_000, "2 h 10 min"),
            (100_000_000, "1 d 3 h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(ms), text, "{ms} ms");
        }
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(65_536), "65.5 KB");
        assert_eq!(bytes(12_345_678), "12.3 MB");
        assert_eq!(count(10_000), "10,000");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(timestamp(1_800_000_000_000), "2027-01-15 08:00:00 UTC");
    }

    #[test]
    fn shell_words_survive_a_shell() {
        assert_eq!(shell_word("headswap.db"), "headswap.db");
        assert_eq!(shell_word("my batch.db"), "'my batch.db'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(shell_word(""), "''");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(15), ..Default::default()
        })]

        /// A line of fields reads back as exactly those fields.
        #[test]
        fn csv_lines_read_back(fields in proptest::collection::vec(".{0,12}", 1..6)) {
            let line = csv_line(fields.iter().map(String::as_str));
            // After a header, as pasted lines are (a reader drops a BOM at the start of input).
            let text = format!("header\n{line}\n");
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(text.as_bytes());
            let record = reader.records().next().unwrap().unwrap();
            let read: Vec<&str> = record.iter().collect();
            // A record of one empty field is written as `""` and reads back as one empty field.
            proptest::prop_assert_eq!(read, fields.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
