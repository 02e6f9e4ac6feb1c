//! `headswap-batch check` through the real binary: exit codes, text and JSON output, and
//! messages that name the file.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::support::{HEADER, headswap, stderr, stdout, temp_dir, write_manifest};

#[test]
fn all_valid_exits_0() {
    let dir = temp_dir();
    let path = write_manifest(
        dir.path(),
        "jobs.csv",
        &format!(
            "{HEADER}\na,https://v/1.mp4,https://f/1.jpg,0,,\na,https://v/1.mp4,https://f/2.jpg,1,,\nb,https://v/1.mp4,https://f/3.jpg,,,\nc,https://v/2.mp4,https://f/3.jpg,,,\n"
        ),
    );
    let output = headswap(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "{}: 3 jobs on 2 distinct videos, 0 invalid\n",
            path.display()
        )
    );

    let output = headswap(&["check", "--json", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"jobs": 3, "videos": 2, "invalid": []})
    );
}

#[test]
fn invalid_rows_exit_3_with_lines_and_reasons() {
    let dir = temp_dir();
    let path = write_manifest(
        dir.path(),
        "jobs.csv",
        &format!(
            "{HEADER}\r\na,https://v/1.mp4,https://f/1.jpg,,,\r\n../x,https://v/1.mp4,https://f/1.jpg,,,\r\nb,https://v/2.mp4,https://f/1.jpg,,1080p,\r\n"
        ),
    );
    let output = headswap(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "{}: 1 job on 1 distinct video, 2 invalid\n\
             line 3 (id line-3): id \"../x\" may only contain letters, digits, '.', '_' and '-'\n\
             line 4 (id b): resolution: \"1080p\" must be 480p or 720p\n",
            path.display()
        )
    );

    let output = headswap(&["check", path.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "jobs": 1,
            "videos": 1,
            "invalid": [
                {"line": 3, "id": "line-3", "reason": "id \"../x\" may only contain letters, digits, '.', '_' and '-'"},
                {"line": 4, "id": "b", "reason": "resolution: \"1080p\" must be 480p or 720p"},
            ]
        })
    );
    let keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 3);
}

#[test]
fn header_only_exits_0() {
    let dir = temp_dir();
    let path = write_manifest(dir.path(), "jobs.csv", &format!("{HEADER}\n"));
    let output = headswap(&["check", "--json", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        "{\"jobs\":0,\"videos\":0,\"invalid\":[]}\n"
    );
}

#[test]
fn unusable_files_exit_1_naming_the_file() {
    let dir = temp_dir();
    let missing = dir.path().join("missing.csv");
    let no_face = write_manifest(
        dir.path(),
        "no-face.csv",
        "id,video_url\na,https://v/1.mp4\n",
    );
    let empty = write_manifest(dir.path(), "empty.csv", "");
    let garbage = dir.path().join("garbage.csv");
    std::fs::write(&garbage, [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x13]).unwrap();
    let cases = [
        (&missing, "no such file"),
        (&no_face, "has no face_url column"),
        (&empty, "is empty"),
        (&garbage, "is not UTF-8 text"),
    ];
    for (path, problem) in cases {
        for json in [false, true] {
            let mut args = vec!["check", path.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            let output = headswap(&args);
            assert_eq!(output.status.code(), Some(1), "{path:?}");
            assert_eq!(stdout(&output), "", "nothing on stdout for {path:?}");
            let message = stderr(&output);
            assert!(message.starts_with("error: manifest "), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(problem), "{message}");
            assert!(message.contains("\nhint: "), "{message}");
        }
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = temp_dir();
    let mut body = format!("{HEADER}\n");
    for row in 0..20_000 {
        body.push_str(&format!("r{row},ftp://v/{row},https://f/1.jpg,,,\n"));
    }
    let path = write_manifest(dir.path(), "big.csv", &body);
    let mut child = Command::new(env!("CARGO_BIN_EXE_headswap-batch"))
        .args(["check", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte so the command is surely writing, then hang up.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}
