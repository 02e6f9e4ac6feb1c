//! Manifest parsing: Excel habits, every kind of bad row with its exact reason, refused
//! files, and property tests (no input panics; generated manifests round-trip).

use std::collections::BTreeMap;
use std::path::Path;

use headswap_batch::job::Face;
use headswap_batch::manifest::{
    self, Defaults, Manifest, ManifestError, RawJob, derived_id, parse_bytes,
};
use proptest::prelude::*;

use crate::support::{HEADER, temp_dir, write_manifest};

fn parse(text: &str) -> Manifest {
    parse_bytes(Path::new("jobs.csv"), text.as_bytes()).expect("a usable manifest")
}

/// Parse `HEADER` + `body` and compare the invalid jobs with `(line, id, reason)`.
#[track_caller]
fn check(body: &str, expected: &[(u64, &str, &str)]) {
    let manifest = parse(&format!("{HEADER}\n{body}"));
    let invalid: Vec<(u64, &str, &str)> = manifest
        .invalid()
        .map(|job| (job.line, job.id.as_str(), job.reason().unwrap()))
        .collect();
    assert_eq!(invalid, expected, "manifest body:\n{body}");
}

/// The manifest bytes must be refused with an error whose message contains `expected`.
#[track_caller]
fn refused(bytes: &[u8], expected: &str) -> ManifestError {
    let error = parse_bytes(Path::new("dir/jobs.csv"), bytes).expect_err("a refused manifest");
    let message = error.to_string();
    assert!(
        message.contains(expected),
        "{message:?} should contain {expected:?}"
    );
    assert!(
        message.contains("dir/jobs.csv"),
        "{message:?} names the file"
    );
    error
}

fn face(obj_id: Option<u32>, face_url: &str) -> Face {
    Face {
        obj_id,
        face_url: face_url.to_string(),
    }
}

#[test]
fn hostile_rows_get_exact_reasons() {
    check(
        "a,notaurl,https://f/1.jpg,,,",
        &[(2, "a", r#"video_url: "notaurl" is not an http(s) URL"#)],
    );
    check(
        "a,ftp://x,https://f/1.jpg,,,",
        &[(2, "a", r#"video_url: "ftp://x" is not an http(s) URL"#)],
    );
    check(
        "a,http://,https://f/1.jpg,,,",
        &[(
            2,
            "a",
            r#"video_url: "http://" is not a valid URL (empty host)"#,
        )],
    );
    check(
        "a,https://v/a b.mp4,https://f/1.jpg,,,",
        &[(
            2,
            "a",
            r#"video_url: "https://v/a b.mp4" contains a space (write it as %20)"#,
        )],
    );
    check(
        ",https://v/1.mp4,,,,",
        &[(
            2,
            &derived_id("https://v/1.mp4", "", ""),
            "face_url is blank",
        )],
    );
    check(
        "a,,file:///etc/passwd,,,",
        &[(
            2,
            "a",
            r#"video_url is blank; face_url: "file:///etc/passwd" is not an http(s) URL"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/1.jpg,,1080p,",
        &[(2, "a", r#"resolution: "1080p" must be 480p or 720p"#)],
    );
    check(
        "a,https://v/1.mp4,https://f/1.jpg,abc,,\nb,https://v/1.mp4,https://f/1.jpg,-1,,\nc,https://v/1.mp4,https://f/1.jpg,1.5,,",
        &[
            (2, "a", r#"obj_id: "abc" is not a non-negative integer"#),
            (3, "b", r#"obj_id: "-1" is not a non-negative integer"#),
            (4, "c", r#"obj_id: "1.5" is not a non-negative integer"#),
        ],
    );
    check(
        "a,https://v/1.mp4,https://f/1.jpg,99999999999,,",
        &[(2, "a", r#"obj_id: "99999999999" is too large"#)],
    );
    check(
        "a,https://v/1.mp4,https://f/1.jpg,,,maybe",
        &[(
            2,
            "a",
            r#"keep_original_sound: "maybe" must be true or false"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/1.jpg,,",
        &[(2, "a", "row has 5 fields, the header has 6")],
    );
    check(
        "a,https://v/1.mp4,https://f/1.jpg,,,,extra",
        &[(2, "a", "row has 7 fields, the header has 6")],
    );
}

#[test]
fn bad_ids_get_line_ids() {
    let long_id = "x".repeat(129);
    let body = format!(
        "../x,https://v/1.mp4,https://f/1.jpg,,,\n\
         .,https://v/1.mp4,https://f/1.jpg,,,\n\
         ..,https://v/1.mp4,https://f/1.jpg,,,\n\
         {long_id},https://v/1.mp4,https://f/1.jpg,,,\n\
         a/b,https://v/1.mp4,https://f/1.jpg,,,\n\
         a b,https://v/1.mp4,https://f/1.jpg,,,\n\
         é,ftp://v,https://f/1.jpg,,,\n"
    );
    check(
        &body,
        &[
            (
                2,
                "line-2",
                r#"id "../x" may only contain letters, digits, '.', '_' and '-'"#,
            ),
            (3, "line-3", r#"id "." is not allowed (it names a folder)"#),
            (4, "line-4", r#"id ".." is not allowed (it names a folder)"#),
            (
                5,
                "line-5",
                "id is 129 characters long, at most 128 allowed",
            ),
            (
                6,
                "line-6",
                r#"id "a/b" may only contain letters, digits, '.', '_' and '-'"#,
            ),
            (
                7,
                "line-7",
                r#"id "a b" may only contain letters, digits, '.', '_' and '-'"#,
            ),
            (
                8,
                "line-8",
                r#"id "é" may only contain letters, digits, '.', '_' and '-'; video_url: "ftp://v" is not an http(s) URL"#,
            ),
        ],
    );
    // 128 characters and the allowed punctuation are fine.
    let manifest = parse(&format!(
        "{HEADER}\n{},https://v/1.mp4,https://f/1.jpg,,,\n.a_b-C.9,https://v/1.mp4,https://f/1.jpg,,,\n",
        "y".repeat(128)
    ));
    assert_eq!(manifest.valid_jobs(), 2);
}

#[test]
fn grouped_rows_must_agree() {
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,\n\
         a,https://v/1.mp4,https://f/1.jpg,1,,\n\
         a,https://v/1.mp4,https://f/2.jpg,2,,\n\
         a,https://v/1.mp4,https://f/3.jpg,3,,\n\
         a,https://v/1.mp4,https://f/4.jpg,4,,\n\
         a,https://v/1.mp4,https://f/5.jpg,5,,",
        &[(
            2,
            "a",
            r#"id "a": 6 rows, at most 5 subjects per job (lines 2, 3, 4, 5, 6, 7)"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,\n\
         a,https://v/1.mp4,https://f/1.jpg,1,,\n\
         b,https://v/2.mp4,https://f/1.jpg,,,\n\
         a,https://v/1.mp4,https://f/2.jpg,1,,",
        &[(2, "a", r#"id "a": obj_id 1 appears twice (lines 3, 5)"#)],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,\n\
         a,https://v/1.mp4,https://f/1.jpg,0,,\n\
         a,https://v/1.mp4,https://f/2.jpg,0,,",
        &[(
            2,
            "a",
            r#"id "a": obj_id 0 appears 3 times (lines 2, 3, 4)"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,\n\
         b,https://v/1.mp4,https://f/0.jpg,0,,\n\
         a,https://v/2.mp4,https://f/1.jpg,1,,",
        &[(2, "a", r#"id "a": video_url differs between lines 2 and 4"#)],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,720p,\n\
         a,https://v/1.mp4,https://f/1.jpg,1,480p,",
        &[(
            2,
            "a",
            r#"id "a": resolution differs between lines 2 and 3"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,true\n\
         a,https://v/1.mp4,https://f/1.jpg,1,,",
        &[(
            2,
            "a",
            r#"id "a": keep_original_sound differs between lines 2 and 3"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,\n\
         a,https://v/1.mp4,https://f/1.jpg,,,",
        &[(
            2,
            "a",
            r#"id "a": obj_id is blank on line 3, required when an id has several rows"#,
        )],
    );
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,,\n\
         a,https://v/1.mp4,https://f/1.jpg,x,,",
        &[(
            2,
            "a",
            r#"id "a": line 3: obj_id: "x" is not a non-negative integer"#,
        )],
    );
    // Normalized values agree: TRUE and 1 are both true, 720P is 720p.
    check(
        "a,https://v/1.mp4,https://f/0.jpg,0,720P,TRUE\n\
         a,https://v/1.mp4,https://f/1.jpg,1,720p,1",
        &[],
    );
}

#[test]
fn model_and_template_must_agree_too() {
    let manifest = parse(
        "id,video_url,face_url,obj_id,model_name,template_id\n\
         a,https://v/1.mp4,https://f/0.jpg,0,m1,t\n\
         a,https://v/1.mp4,https://f/1.jpg,1,m2,u\n",
    );
    assert_eq!(
        manifest.jobs[0].reason(),
        Some(
            r#"id "a": model_name differs between lines 2 and 3; template_id differs between lines 2 and 3"#
        )
    );
}

#[test]
fn duplicate_blank_id_rows() {
    let id = derived_id("https://v/1.mp4", "0", "https://f/1.jpg");
    let manifest = parse(&format!(
        "{HEADER}\n\
         ,https://v/1.mp4,https://f/1.jpg,0,,\n\
         ,https://v/1.mp4,https://f/2.jpg,0,,\n\
         , https://v/1.mp4 ,https://f/1.jpg,0,480p,\n"
    ));
    let jobs: Vec<(&str, u64, Option<&str>)> = manifest
        .jobs
        .iter()
        .map(|job| (job.id.as_str(), job.line, job.reason()))
        .collect();
    assert_eq!(
        jobs,
        [
            (id.as_str(), 2, None),
            (
                derived_id("https://v/1.mp4", "0", "https://f/2.jpg").as_str(),
                3,
                None
            ),
            ("line-4", 4, Some("duplicate of line 2")),
        ]
    );
    assert!(id.starts_with("j-") && id.len() == 14, "{id}");
    assert!(id[2..].bytes().all(|byte| byte.is_ascii_hexdigit()));
}

#[test]
fn derived_ids_and_line_ids_never_clash_with_given_ids() {
    let derived = derived_id("https://v/1.mp4", "", "https://f/1.jpg");
    let manifest = parse(&format!(
        "{HEADER}\n\
         ,https://v/1.mp4,https://f/1.jpg,,,\n\
         {derived},https://v/2.mp4,https://f/1.jpg,,,\n\
         line-5,https://v/2.mp4,https://f/2.jpg,,,\n\
         ../x,https://v/2.mp4,https://f/2.jpg,,,\n"
    ));
    let jobs: Vec<(&str, Option<&str>)> = manifest
        .jobs
        .iter()
        .map(|job| (job.id.as_str(), job.reason()))
        .collect();
    let clash = format!("id {derived:?} is also used by line 2");
    assert_eq!(
        jobs,
        [
            (derived.as_str(), None),
            ("line-3", Some(clash.as_str())),
            ("line-5", None),
            (
                "line-5-2",
                Some(r#"id "../x" may only contain letters, digits, '.', '_' and '-'"#)
            ),
        ]
    );
}

#[test]
fn excel_habits() {
    // BOM, CRLF, header case and spaces, quoted fields with commas, quotes and line breaks,
    // whitespace around values, blank and comma-only lines, trailing blank lines.
    let text = "\u{feff} ID , Video_URL ,FACE_URL,Obj_Id,Resolution,Keep_Original_Sound,Campaign,Title\r\n\
                \r\n\
                a, https://v/1.mp4?x=1&y=2 ,\"https://f/1.jpg\",0, 480P ,False,spring,\"Hello, \"\"world\"\"\r\nsecond line\"\r\n\
                ,,,,,,,\r\n\
                b,https://v/2.mp4,https://f/2.jpg,,,YES,  summer  ,\r\n\
                a,https://v/1.mp4?x=1&y=2,https://f/0.jpg,1,480p,no,ignored,ignored\r\n\
                \r\n\
                \r\n";
    let manifest = parse(text);
    assert_eq!(manifest.extra_columns, ["Campaign", "Title"]);
    assert_eq!(manifest.invalid().count(), 0, "{:?}", manifest.jobs);
    let a = &manifest.jobs[0];
    assert_eq!(
        (a.id.as_str(), a.line, a.lines.clone()),
        ("a", 3, vec![3, 7])
    );
    assert_eq!(
        a.row,
        Ok(RawJob {
            video_url: "https://v/1.mp4?x=1&y=2".into(),
            faces: vec![
                face(Some(0), "https://f/1.jpg"),
                face(Some(1), "https://f/0.jpg")
            ],
            resolution: Some(headswap_batch::akool::Resolution::P480),
            model_name: None,
            keep_original_sound: Some(false),
            template_id: None,
            extra: vec![
                ("Campaign".to_string(), "spring".to_string()),
                (
                    "Title".to_string(),
                    "Hello, \"world\"\r\nsecond line".to_string()
                ),
            ],
        })
    );
    let b = &manifest.jobs[1];
    assert_eq!((b.id.as_str(), b.line), ("b", 6));
    let b = b.row.as_ref().unwrap();
    assert_eq!(b.keep_original_sound, Some(true));
    assert_eq!(
        b.extra,
        [
            ("Campaign".to_string(), "summer".to_string()),
            ("Title".to_string(), String::new())
        ]
    );
    assert_eq!(manifest.valid_jobs(), 2);
    assert_eq!(manifest.distinct_videos(), 2);
}

#[test]
fn semicolons_and_the_excel_sep_line() {
    for text in [
        "id;video_url;face_url\na;https://v/1.mp4;https://f/1.jpg\n",
        "sep=;\nid;video_url;face_url\n\na;https://v/1.mp4;https://f/1.jpg\n",
        "id\tvideo_url\tface_url\na\thttps://v/1.mp4\thttps://f/1.jpg\n",
    ] {
        let manifest = parse(text);
        assert_eq!(manifest.valid_jobs(), 1, "{text:?}");
        let job = &manifest.jobs[0];
        let expected_line = if text.starts_with("sep=") { 4 } else { 2 };
        assert_eq!((job.id.as_str(), job.line), ("a", expected_line));
    }
}

#[test]
fn blank_header_columns_are_ignored() {
    let manifest = parse("video_url,face_url,,sku,\nhttps://v/1.mp4,https://f/1.jpg,x,42,y\n");
    assert_eq!(manifest.extra_columns, ["sku"]);
    let raw = manifest.jobs[0].row.as_ref().unwrap();
    assert_eq!(raw.extra, [("sku".to_string(), "42".to_string())]);
}

#[test]
fn keep_original_sound_spellings() {
    let spellings = [
        ("true", Some(true)),
        ("TRUE", Some(true)),
        ("True", Some(true)),
        ("1", Some(true)),
        ("yes", Some(true)),
        ("Yes", Some(true)),
        ("false", Some(false)),
        ("FALSE", Some(false)),
        ("False", Some(false)),
        ("0", Some(false)),
        ("no", Some(false)),
        ("NO", Some(false)),
        ("", None),
        ("  ", None),
    ];
    for (text, expected) in spellings {
        let manifest = parse(&format!(
            "{HEADER}\na,https://v/1.mp4,https://f/1.jpg,,,{text}\n"
        ));
        let raw = manifest.jobs[0].row.as_ref().expect("valid");
        assert_eq!(raw.keep_original_sound, expected, "{text:?}");
    }
}

#[test]
fn to_spec_applies_defaults() {
    let manifest = parse(&format!(
        "{HEADER},model_name,template_id\n\
         a,https://v/1.mp4,https://f/1.jpg,,,,,\n\
         b,https://v/1.mp4,https://f/1.jpg,2,480p,false,m,t\n"
    ));
    let defaults = Defaults {
        resolution: headswap_batch::akool::Resolution::P720,
        model_name: "akool-premium".to_string(),
    };
    let a = manifest.jobs[0].row.as_ref().unwrap().to_spec(&defaults);
    assert_eq!(
        (
            a.resolution.as_str(),
            a.model_name.as_str(),
            a.keep_original_sound,
            a.template_id.as_deref()
        ),
        ("720p", "akool-premium", true, None)
    );
    let b = manifest.jobs[1].row.as_ref().unwrap().to_spec(&defaults);
    assert_eq!(
        (
            b.resolution.as_str(),
            b.model_name.as_str(),
            b.keep_original_sound,
            b.template_id.as_deref()
        ),
        ("480p", "m", false, Some("t"))
    );
    assert_eq!(b.faces, [face(Some(2), "https://f/1.jpg")]);
    assert_eq!(Defaults::default(), defaults);
}

#[test]
fn video_url_is_kept_byte_for_byte() {
    let url = "https://cdn.example.com/a%20b/Clip.MP4?sig=AbC%2F%3D&x=1#frag";
    let manifest = parse(&format!("{HEADER}\na, {url}\t,https://f/1.jpg,,,\n"));
    assert_eq!(manifest.jobs[0].row.as_ref().unwrap().video_url, url);
}

#[test]
fn header_only_is_an_empty_batch() {
    for text in [
        HEADER,
        "id,video_url,face_url\r\n\r\n\r\n",
        "video_url,face_url\n,,\n",
    ] {
        let manifest = parse(text);
        assert!(manifest.jobs.is_empty(), "{text:?}");
    }
}

#[test]
fn text_that_is_not_utf8_is_decoded_and_said_so() {
    // Excel's "CSV": Windows-1252, where 0xE9 is é and 0x80 the euro sign.
    let manifest = parse_bytes(
        Path::new("jobs.csv"),
        b"id,video_url,face_url,title\na,https://v/1.mp4,https://f/1.jpg,Caf\xe9\nb,https://v/2.mp4,https://f/\xe9t\xe9.jpg,5 \x80\n",
    )
    .unwrap();
    let decoded = manifest.decoded.expect("decoded");
    assert_eq!((decoded.encoding, decoded.line), ("windows-1252", 2));
    let valid: Vec<&manifest::RawJob> = manifest
        .jobs
        .iter()
        .map(|job| job.row.as_ref().unwrap())
        .collect();
    assert_eq!(valid[0].extra, [("title".to_string(), "Café".to_string())]);
    assert_eq!(valid[1].faces[0].face_url, "https://f/été.jpg");
    assert_eq!(valid[1].extra[0].1, "5 €");
    // The fingerprint is of the bytes as they are.
    assert_eq!(
        manifest.sha256,
        manifest::content_sha256(b"id,video_url,face_url,title\na,https://v/1.mp4,https://f/1.jpg,Caf\xe9\nb,https://v/2.mp4,https://f/\xe9t\xe9.jpg,5 \x80\n")
    );
    // Excel's "Unicode text": UTF-16LE with a byte-order mark, tab-separated.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            "id\tvideo_url\tface_url\r\nx\thttps://v/1.mp4\thttps://f/Zoë.jpg\r\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    let manifest = parse_bytes(Path::new("jobs.txt"), &utf16).unwrap();
    assert_eq!(manifest.decoded.unwrap().encoding, "UTF-16LE");
    assert_eq!(
        manifest.jobs[0].row.as_ref().unwrap().faces[0].face_url,
        "https://f/Zoë.jpg"
    );
    // UTF-8 stays as it is.
    assert!(
        parse("id,video_url,face_url\na,https://v/1.mp4,https://f/é.jpg\n")
            .decoded
            .is_none()
    );
}

#[test]
fn unusable_files_are_refused() {
    refused(b"", "is empty");
    refused(b"\xef\xbb\xbf  \r\n\r\n", "is empty");
    refused(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
        "is not UTF-8 text (invalid byte on line 1)",
    );
    refused(
        b"id,video_url,face_url\na,https://v/1.mp4,https://f/\xff.jpg\n\0",
        "is not UTF-8 text (invalid byte on line 2), nor text in another encoding",
    );
    refused(
        b"id,video_url,face_url\n\na,b\0c\n",
        "is not a CSV text file (NUL byte on line 3)",
    );
    refused(
        b"id,face_url,obj_id\n",
        "has no video_url column (header: id, face_url, obj_id)",
    );
    refused(b"id,Video_URL,obj_id\n", "has no face_url column");
    refused(b"name,url\nx,y\n", "has no video_url and face_url columns");
    refused(
        b"video_url,face_url,SKU,sku\n",
        "column \"sku\" appears more than once in the header",
    );
}

#[test]
fn missing_and_unreadable_files_are_refused() {
    let dir = temp_dir();
    let missing = dir.path().join("nope.csv");
    let error = manifest::parse_file(&missing).unwrap_err();
    assert_eq!(
        error,
        ManifestError::Missing {
            path: missing.clone()
        }
    );
    assert!(error.to_string().contains("nope.csv"));
    let error = manifest::parse_file(dir.path()).unwrap_err();
    assert!(
        matches!(error, ManifestError::Unreadable { .. }),
        "{error:?}"
    );
    let fatal = headswap_batch::exit::Fatal::from(manifest::parse_file(&missing).unwrap_err());
    assert!(fatal.hint.is_some());

    let path = write_manifest(dir.path(), "ok.csv", &format!("{HEADER}\n"));
    let manifest = manifest::parse_file(&path).unwrap();
    assert_eq!(manifest.path, path);
    assert_eq!(manifest.sha256.len(), 64);
}

#[test]
fn a_hundred_thousand_rows() {
    let text = big_manifest(100_000);
    let manifest = parse(&text);
    assert_eq!(manifest.jobs.len(), 100_000);
    assert_eq!(manifest.valid_jobs(), 100_000);
    assert_eq!(manifest.distinct_videos(), 1000);
    assert_eq!(manifest.jobs[99_999].line, 100_001);
}

/// `rows` valid single-row jobs over 1000 videos.
pub fn big_manifest(rows: usize) -> String {
    let mut text = String::with_capacity(rows * 100);
    text.push_str("id,video_url,face_url,obj_id,sku\n");
    for row in 0..rows {
        text.push_str(&format!(
            "job-{row:06},https://cdn.example.com/video-{}.mp4,https://faces.example.com/{row}.jpg,,sku-{row}\n",
            row % 1000
        ));
    }
    text
}

// ---- property tests ----

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_bytes(Path::new("fuzz.csv"), &bytes);
    }

    #[test]
    fn csv_like_text_never_panics(text in csv_like_text()) {
        if let Ok(manifest) = parse_bytes(Path::new("fuzz.csv"), text.as_bytes()) {
            // Every job has a usable, unique id and a line inside the file.
            let lines = text.matches('\n').count() as u64 + 1;
            let mut ids = std::collections::HashSet::new();
            for job in &manifest.jobs {
                prop_assert!(ids.insert(job.id.clone()), "duplicate id {}", job.id);
                prop_assert!(manifest::check_id(job.id.as_str()).is_ok(), "bad id {}", job.id);
                prop_assert!(job.line >= 2 && job.line <= lines, "line {} of {}", job.line, lines);
                if let Err(reason) = &job.row {
                    prop_assert!(!reason.contains('\n'), "multi-line reason {reason:?}");
                }
            }
        }
    }

    #[test]
    fn generated_manifests_round_trip(plan in manifest_plan()) {
        let bytes = plan.write();
        let manifest = parse_bytes(Path::new("gen.csv"), &bytes).expect("usable");
        let got: BTreeMap<String, RawJob> = manifest
            .jobs
            .iter()
            .map(|job| (job.id.to_string(), job.row.clone().unwrap_or_else(|reason| panic!("{} invalid: {reason}", job.id))))
            .collect();
        prop_assert_eq!(got, plan.expected());
        prop_assert_eq!(manifest.extra_columns.clone(), plan.extra_columns.clone());
    }
}

/// Text made of CSV-ish pieces, to reach deeper than random bytes do.
fn csv_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("id".to_string()),
        Just("video_url".to_string()),
        Just("face_url".to_string()),
        Just("obj_id".to_string()),
        Just("resolution".to_string()),
        Just("keep_original_sound".to_string()),
        Just(",".to_string()),
        Just(";".to_string()),
        Just("\"".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just(" ".to_string()),
        Just("https://v/1.mp4".to_string()),
        Just("http://".to_string()),
        Just("a".to_string()),
        Just("..".to_string()),
        Just("0".to_string()),
        Just("720p".to_string()),
        Just("\u{feff}".to_string()),
        Just("sep=;".to_string()),
        "[a-z0-9./:_-]{0,6}",
    ];
    proptest::collection::vec(piece, 0..80).prop_map(|pieces| {
        let mut text = "id,video_url,face_url,obj_id\n".to_string();
        text.extend(pieces);
        text
    })
}

/// A generated manifest: jobs, how they are written, and what parsing must give back.
#[derive(Debug, Clone)]
struct ManifestPlan {
    extra_columns: Vec<String>,
    jobs: Vec<PlannedJob>,
    /// Row order: (job index, face index), shuffled so groups are not adjacent.
    order: Vec<(usize, usize)>,
    bom: bool,
    crlf: bool,
    quote_all: bool,
    upper_header: bool,
    blank_lines: bool,
}

#[derive(Debug, Clone)]
struct PlannedJob {
    /// `None`: a blank id, derived from the row.
    id: Option<String>,
    video_url: String,
    faces: Vec<Face>,
    resolution: Option<String>,
    model_name: Option<String>,
    keep_original_sound: Option<bool>,
    template_id: Option<String>,
    extra: Vec<String>,
}

const EXTRA_NAMES: [&str; 3] = ["sku", "Campaign Name", "note, \"quoted\""];

fn planned_job(index: usize) -> impl Strategy<Value = PlannedJob> {
    let extra_value =
        "[a-zA-Z0-9 ,\"\n;.]{0,12}".prop_map(|value: String| value.trim().to_string());
    (
        any::<bool>(),
        0usize..4,
        proptest::collection::btree_set(0u32..8, 1..=5),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just("480p"), Just("720p")]),
        proptest::option::of("[a-z][a-z0-9-]{0,10}"),
        proptest::option::of(any::<bool>()),
        proptest::option::of("[A-Za-z0-9]{1,8}"),
        proptest::collection::vec(extra_value, EXTRA_NAMES.len()),
    )
        .prop_map(
            move |(
                given_id,
                video,
                obj_ids,
                blank_obj_id,
                resolution,
                model,
                keep,
                template,
                extra,
            )| {
                let video_url = format!("https://cdn.example.com/v{video}.mp4?a=1&b=%2F");
                let (id, faces) = if given_id {
                    let faces = obj_ids
                        .iter()
                        .map(|obj_id| {
                            face(
                                Some(*obj_id),
                                &format!("https://f.example.com/{index}/{obj_id}.jpg"),
                            )
                        })
                        .collect();
                    (Some(format!("job.{index}_x-{}", obj_ids.len())), faces)
                } else {
                    // A blank id means one row; its face URL is unique, so is its derived id.
                    let obj_id = (!blank_obj_id).then(|| *obj_ids.iter().next().unwrap());
                    (
                        None,
                        vec![face(obj_id, &format!("https://f.example.com/{index}.jpg"))],
                    )
                };
                PlannedJob {
                    id,
                    video_url,
                    faces,
                    resolution: resolution.map(str::to_string),
                    model_name: model,
                    keep_original_sound: keep,
                    template_id: template,
                    extra,
                }
            },
        )
}

fn manifest_plan() -> impl Strategy<Value = ManifestPlan> {
    (1usize..12)
        .prop_flat_map(|count| {
            let jobs: Vec<_> = (0..count).map(planned_job).collect();
            (jobs, 0usize..=EXTRA_NAMES.len())
        })
        .prop_flat_map(|(jobs, extra_count)| {
            let order: Vec<(usize, usize)> = jobs
                .iter()
                .enumerate()
                .flat_map(|(job, planned)| (0..planned.faces.len()).map(move |face| (job, face)))
                .collect();
            (
                Just(jobs),
                Just(extra_count),
                Just(order).prop_shuffle(),
                any::<(bool, bool, bool, bool, bool)>(),
            )
        })
        .prop_map(
            |(mut jobs, extra_count, order, (bom, crlf, quote_all, upper_header, blank_lines))| {
                for job in &mut jobs {
                    job.extra.truncate(extra_count);
                }
                ManifestPlan {
                    extra_columns: EXTRA_NAMES[..extra_count]
                        .iter()
                        .map(|name| name.to_string())
                        .collect(),
                    jobs,
                    order,
                    bom,
                    crlf,
                    quote_all,
                    upper_header,
                    blank_lines,
                }
            },
        )
}

impl ManifestPlan {
    fn write(&self) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if self.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .quote_style(if self.quote_all {
                csv::QuoteStyle::Always
            } else {
                csv::QuoteStyle::Necessary
            })
            .from_writer(Vec::new());
        let mut header: Vec<String> = [
            "id",
            "video_url",
            "face_url",
            "obj_id",
            "resolution",
            "model_name",
            "keep_original_sound",
            "template_id",
        ]
        .iter()
        .map(|name| {
            if self.upper_header {
                name.to_uppercase()
            } else {
                name.to_string()
            }
        })
        .collect();
        header.extend(self.extra_columns.iter().cloned());
        writer.write_record(&header).unwrap();
        for (row, &(job_index, face_index)) in self.order.iter().enumerate() {
            let job = &self.jobs[job_index];
            let face = &job.faces[face_index];
            let mut record = vec![
                job.id.clone().unwrap_or_default(),
                job.video_url.clone(),
                face.face_url.clone(),
                face.obj_id
                    .map(|obj_id| obj_id.to_string())
                    .unwrap_or_default(),
                job.resolution.clone().unwrap_or_default(),
                job.model_name.clone().unwrap_or_default(),
                job.keep_original_sound
                    .map(|keep| keep.to_string())
                    .unwrap_or_default(),
                job.template_id.clone().unwrap_or_default(),
            ];
            // Only a job's first row's extra columns count; later rows say something else.
            let first_row =
                self.order.iter().position(|&(other, _)| other == job_index) == Some(row);
            record.extend(job.extra.iter().map(|value| {
                if first_row {
                    value.clone()
                } else {
                    "other".to_string()
                }
            }));
            writer.write_record(&record).unwrap();
            if self.blank_lines && row % 3 == 0 {
                let blanks = vec![""; header.len()];
                writer.write_record(&blanks).unwrap();
            }
        }
        let mut bytes = if self.bom {
            "\u{feff}".as_bytes().to_vec()
        } else {
            Vec::new()
        };
        bytes.extend(writer.into_inner().unwrap());
        if self.blank_lines {
            bytes.extend_from_slice(b"\n\n");
        }
        bytes
    }

    fn expected(&self) -> BTreeMap<String, RawJob> {
        self.jobs
            .iter()
            .map(|job| {
                let id = job.id.clone().unwrap_or_else(|| {
                    let face = &job.faces[0];
                    let obj_id = face
                        .obj_id
                        .map(|obj_id| obj_id.to_string())
                        .unwrap_or_default();
                    derived_id(&job.video_url, &obj_id, &face.face_url)
                });
                let raw = RawJob {
                    video_url: job.video_url.clone().into(),
                    faces: job.faces.clone(),
                    resolution: job.resolution.as_deref().map(|r| r.parse().unwrap()),
                    model_name: job.model_name.clone(),
                    keep_original_sound: job.keep_original_sound,
                    template_id: job.template_id.clone(),
                    extra: self
                        .extra_columns
                        .iter()
                        .cloned()
                        .zip(job.extra.iter().cloned())
                        .collect(),
                };
                (id, raw)
            })
            .collect()
    }
}
