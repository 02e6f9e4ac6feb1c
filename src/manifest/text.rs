//! The manifest as text: where lines are, which delimiter the sheet used, Excel's `sep=` line.

/// The 1-based line holding byte `offset`.
pub(super) fn line_of_offset(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count() as u64
}

/// Physical line numbers of records, counted incrementally over the text.
///
/// csv's own `Position::line()` is where the reader *started* looking for the record: before
/// the `\n` of a CRLF and before skipped blank lines, so it can be a line or more too early.
pub(super) struct LineCounter<'t> {
    text: &'t [u8],
    offset: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    pub(super) fn new(text: &'t [u8], first_line: u64) -> LineCounter<'t> {
        LineCounter {
            text,
            offset: 0,
            line: first_line,
        }
    }

    /// The line of the record whose read started at byte `offset`: its first byte is the
    /// first one that does not end a line.
    pub(super) fn line_of_record_at(&mut self, offset: usize) -> u64 {
        let mut start = offset.min(self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.offset {
            let newlines = self.text[self.offset..start]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count();
            self.line += newlines as u64;
            self.offset = start;
        }
        self.line
    }
}

/// `sep=X` on the first line (Excel's delimiter hint): the delimiter and the text after it.
pub(super) fn excel_separator_line(text: &str) -> Option<(u8, &str)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let first = first.trim_end_matches('\r');
    let value = first.strip_prefix("sep=").or(first.strip_prefix("SEP="))?;
    match value.as_bytes() {
        [delimiter] if matches!(delimiter, b',' | b';' | b'\t' | b'|') => Some((*delimiter, rest)),
        _ => None,
    }
}

/// `,` unless the header only names the required columns when split on `;` or a tab.
pub(super) fn sniff_delimiter(text: &str) -> u8 {
    let first_line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let names_required = |delimiter: char| {
        let names: Vec<String> = first_line
            .split(delimiter)
            .map(|name| name.trim().trim_matches('"').trim().to_ascii_lowercase())
            .collect();
        names.iter().any(|name| name == "video_url") && names.iter().any(|name| name == "face_url")
    };
    if names_required(',') {
        b','
    } else if names_required(';') {
        b';'
    } else if names_required('\t') {
        b'\t'
    } else {
        b','
    }
}
