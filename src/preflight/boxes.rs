//! The box walk of an MP4/MOV file, over whatever bytes of it are at hand: where the next
//! top-level box starts, where the `moov` box is, and the movie's duration from the `mvhd`
//! box inside it. Pure code: the video check (`video.rs`) fetches the bytes this asks for.
//!
//! Only box headers are read here (32-bit size and type, the 64-bit `largesize` when the size
//! is 1, size 0 for "to the end of the file"). The `mvhd` box itself is decoded by the
//! `mp4-atom` crate. The whole `moov` is deliberately not decoded: the duration lives in
//! `mvhd` alone, while a full decode fails on any sample entry or QuickTime box the crate does
//! not know (and logs a warning for each), which would turn readable files into undecided
//! ones.

use mp4_atom::{Decode, Mvhd};

/// One box header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BoxHeader {
    pub kind: [u8; 4],
    /// Where the box starts in the file.
    pub offset: u64,
    /// 8, or 16 with a `largesize`.
    pub header_len: u64,
    /// The whole box's length, header included; `None` when it extends to the end of the file.
    pub size: Option<u64>,
}

impl BoxHeader {
    /// The type as text, for messages (`mdat`, or escaped bytes).
    pub fn kind_text(&self) -> String {
        self.kind.escape_ascii().to_string()
    }

    /// Where the box ends, if that is known.
    pub fn end(&self, total: Option<u64>) -> Option<u64> {
        match self.size {
            Some(size) => self.offset.checked_add(size),
            None => total,
        }
    }
}

/// What reading a header at some position found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderRead {
    Header(BoxHeader),
    /// The bytes end before the header does.
    Short,
    /// Not a box header.
    Bad(String),
}

/// Read the box header at `bytes[0..]`, which sits at `offset` in the file.
pub(crate) fn read_header(bytes: &[u8], offset: u64) -> HeaderRead {
    let Some(head) = bytes.get(..8) else {
        return HeaderRead::Short;
    };
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let kind = [head[4], head[5], head[6], head[7]];
    // Box types are four printable characters (QuickTime's © only appears inside `udta`).
    if !kind.iter().all(|byte| (0x20..0x7f).contains(byte)) {
        return HeaderRead::Bad(format!(
            "no box at offset {offset} (bytes {})",
            kind.escape_ascii()
        ));
    }
    let (header_len, size) = match size32 {
        0 => (8, None),
        1 => {
            let Some(large) = bytes.get(8..16) else {
                return HeaderRead::Short;
            };
            let large = u64::from_be_bytes(large.try_into().unwrap_or([0; 8]));
            (16, Some(large))
        }
        size => (8, Some(u64::from(size))),
    };
    let header = BoxHeader {
        kind,
        offset,
        header_len,
        size,
    };
    if size.is_some_and(|size| size < header_len) {
        return HeaderRead::Bad(format!(
            "box '{}' at offset {offset} claims {} bytes, less than its own header",
            header.kind_text(),
            size.unwrap_or(0)
        ));
    }
    HeaderRead::Header(header)
}

/// What the top-level walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Walk {
    /// The `moov` box's header.
    Moov(BoxHeader),
    /// The next header starts at this offset, beyond (or across the end of) the bytes at hand.
    NeedAt(u64),
    /// The file ends without a `moov` box.
    NoMoov,
    /// The bytes are not a sequence of boxes.
    Malformed(String),
}

/// Walk the top-level boxes from `offset`, through `window` (the file's bytes from
/// `window_start`), in a file of `total` bytes when that is known.
pub(crate) fn walk(window: &[u8], window_start: u64, mut offset: u64, total: Option<u64>) -> Walk {
    loop {
        if total.is_some_and(|total| offset >= total) {
            return Walk::NoMoov;
        }
        let Some(at) = offset
            .checked_sub(window_start)
            .and_then(|at| usize::try_from(at).ok())
            .filter(|at| *at < window.len())
        else {
            return Walk::NeedAt(offset);
        };
        let header = match read_header(&window[at..], offset) {
            HeaderRead::Header(header) => header,
            HeaderRead::Short => return Walk::NeedAt(offset),
            HeaderRead::Bad(reason) => return Walk::Malformed(reason),
        };
        let end = header.end(total);
        if let (Some(end), Some(total)) = (end, total) {
            if end > total {
                return Walk::Malformed(format!(
                    "box '{}' at offset {offset} claims {} bytes, past the end of the {total}-byte file",
                    header.kind_text(),
                    end - offset
                ));
            }
        }
        if &header.kind == b"moov" {
            return Walk::Moov(header);
        }
        match end {
            Some(end) => offset = end,
            // A box running to the end of the file, and it is not the moov.
            None => return Walk::NoMoov,
        }
    }
}

/// A movie's duration as its `mvhd` box states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MovieDuration {
    pub timescale: u32,
    pub duration: u64,
}

impl MovieDuration {
    pub fn seconds(&self) -> f64 {
        self.duration as f64 / f64::from(self.timescale)
    }
}

/// The duration in a `moov` box: `moov` holds the box from its first byte, possibly only its
/// beginning (`mvhd` comes first in every muxer's output, but any position is searched).
pub(crate) fn movie_duration(
    moov: &[u8],
    moov_header: &BoxHeader,
) -> Result<MovieDuration, String> {
    let moov_len = moov_header.size.unwrap_or(u64::MAX);
    let mut at = moov_header.header_len;
    loop {
        if at >= moov_len {
            return Err("the moov box has no mvhd box".into());
        }
        let Some(rest) = usize::try_from(at).ok().and_then(|at| moov.get(at..)) else {
            return Err(format!(
                "no mvhd box in the first {} bytes of the moov box",
                moov.len()
            ));
        };
        let child = match read_header(rest, at) {
            HeaderRead::Header(child) => child,
            HeaderRead::Short => {
                return Err(format!(
                    "no mvhd box in the first {} bytes of the moov box",
                    moov.len()
                ));
            }
            HeaderRead::Bad(reason) => return Err(format!("inside the moov box: {reason}")),
        };
        let child_end = child.size.map_or(moov_len, |size| at.saturating_add(size));
        if child_end > moov_len {
            return Err(format!(
                "box '{}' inside the moov box runs past the moov's end",
                child.kind_text()
            ));
        }
        if &child.kind == b"mvhd" {
            let end = usize::try_from(child_end.min(moov.len() as u64)).unwrap_or(moov.len());
            if (end as u64) < child_end {
                return Err("the mvhd box is cut short".into());
            }
            let mut body = &moov[at as usize..end];
            let mvhd =
                Mvhd::decode(&mut body).map_err(|error| format!("unreadable mvhd box: {error}"))?;
            return check_duration(mvhd.timescale, mvhd.duration);
        }
        at = child_end;
    }
}

fn check_duration(timescale: u32, duration: u64) -> Result<MovieDuration, String> {
    if timescale == 0 {
        return Err("the mvhd box gives a timescale of 0".into());
    }
    // 0 and all ones mean "not recorded" (fragmented files, live recordings).
    if duration == 0 || duration == u64::from(u32::MAX) || duration == u64::MAX {
        return Err(
            "the mvhd box does not record the duration (a fragmented or live file?)".into(),
        );
    }
    Ok(MovieDuration {
        timescale,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body_len: usize) -> Vec<u8> {
        let mut bytes = ((body_len + 8) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(kind);
        bytes.resize(body_len + 8, 0);
        bytes
    }

    fn header(kind: &[u8; 4], offset: u64, header_len: u64, size: Option<u64>) -> BoxHeader {
        BoxHeader {
            kind: *kind,
            offset,
            header_len,
            size,
        }
    }

    #[test]
    fn headers() {
        assert_eq!(
            read_header(&boxed(b"ftyp", 16), 0),
            HeaderRead::Header(header(b"ftyp", 0, 8, Some(24)))
        );
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(5_000_000_000u64).to_be_bytes());
        assert_eq!(
            read_header(&large, 40),
            HeaderRead::Header(header(b"mdat", 40, 16, Some(5_000_000_000)))
        );
        assert_eq!(read_header(&large[..12], 40), HeaderRead::Short);
        assert_eq!(
            read_header(b"\0\0\0\0moov", 7),
            HeaderRead::Header(header(b"moov", 7, 8, None))
        );
        assert_eq!(read_header(b"\0\0\0\x08mda", 0), HeaderRead::Short);
        assert!(matches!(
            read_header(b"\0\0\0\x04free", 0),
            HeaderRead::Bad(_)
        ));
        assert!(matches!(
            read_header(b"\0\0\0\x10\xff\x00ab", 0),
            HeaderRead::Bad(_)
        ));
    }

    #[test]
    fn walk_finds_the_moov_or_says_where_to_look() {
        let mut file = boxed(b"ftyp", 16);
        file.extend(boxed(b"mdat", 1000));
        file.extend(boxed(b"moov", 100));
        let total = Some(file.len() as u64);
        assert_eq!(
            walk(&file, 0, 0, total),
            Walk::Moov(header(b"moov", 1032, 8, Some(108)))
        );
        // Only the first 40 bytes at hand: the next header is at the end of the mdat.
        assert_eq!(walk(&file[..40], 0, 0, total), Walk::NeedAt(1032));
        // A window that starts there finds it.
        assert_eq!(
            walk(&file[1032..], 1032, 1032, total),
            Walk::Moov(header(b"moov", 1032, 8, Some(108)))
        );
        // No moov at all.
        assert_eq!(walk(&file[..1032], 0, 0, Some(1032)), Walk::NoMoov);
        // A box claiming more than the file holds.
        assert!(matches!(walk(&file, 0, 0, Some(500)), Walk::Malformed(_)));
    }

    fn moov_with_mvhd(timescale: u32, duration: u64, before: &[u8]) -> Vec<u8> {
        let mvhd = Mvhd {
            timescale,
            duration,
            ..Mvhd::default()
        };
        let mut mvhd_bytes = Vec::new();
        mp4_atom::Encode::encode(&mvhd, &mut mvhd_bytes).unwrap();
        let body_len = before.len() + mvhd_bytes.len();
        let mut moov = ((body_len + 8) as u32).to_be_bytes().to_vec();
        moov.extend_from_slice(b"moov");
        moov.extend_from_slice(before);
        moov.extend(mvhd_bytes);
        moov
    }

    #[test]
    fn duration_from_mvhd_wherever_it_sits_in_the_moov() {
        for before in [Vec::new(), boxed(b"udta", 20)] {
            let moov = moov_with_mvhd(600, 15_000, &before);
            let HeaderRead::Header(moov_header) = read_header(&moov, 0) else {
                panic!("a header")
            };
            let duration = movie_duration(&moov, &moov_header).unwrap();
            assert_eq!(duration.seconds(), 25.0);
            // Cut short before the mvhd ends: said, not guessed.
            let cut = &moov[..moov.len() - 10];
            assert!(movie_duration(cut, &moov_header).is_err());
        }
    }

    #[test]
    fn unrecorded_durations_are_errors() {
        for (timescale, duration) in [(0, 1000), (1000, 0), (1000, u64::from(u32::MAX))] {
            let moov = moov_with_mvhd(timescale, duration, &[]);
            let HeaderRead::Header(moov_header) = read_header(&moov, 0) else {
                panic!("a header")
            };
            assert!(movie_duration(&moov, &moov_header).is_err());
        }
    }
}
