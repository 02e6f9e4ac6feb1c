//! Checking where the outputs go before anything is bought: the output folder is created, a
//! probe file is written, fsynced and removed. A destination that cannot take a file (a file
//! in the way, a read-only folder, a full disk) ends the run at start-up with a message that
//! says which, instead of at the first download, after renders were paid for.
//!
//! Touches only the output folder; knows nothing of the store or the dispatcher. (Outputs in
//! object storage have their own probe, `objstore`, beside this one.)

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::exit::Fatal;

/// Create `folder` if needed and prove a file can be written there.
pub fn check_local_folder(folder: &Path) -> Result<(), Fatal> {
    let shown = folder.display();
    if let Some(file) = file_in_the_way(folder) {
        let message = if file == folder {
            format!("--out {shown} is a file, not a folder")
        } else {
            format!(
                "cannot create the output folder {shown}: {} is a file",
                file.display()
            )
        };
        return Err(Fatal::new(message).hint(
            "give --out a folder (it is created if missing), or move that file out of the way",
        ));
    }
    fs::create_dir_all(folder).map_err(|error| {
        Fatal::new(format!(
            "cannot create the output folder {shown}: {}",
            describe(&error)
        ))
        .hint(hint_for(&error))
    })?;
    if available_bytes(folder) == Some(0) {
        return Err(no_space(folder));
    }
    let probe = folder.join(format!(".headswap-probe-{}", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&probe)?;
        file.write_all(b"headswap-batch checks that outputs can be written here\n")?;
        file.sync_all()
    })();
    let removed = fs::remove_file(&probe);
    if let Err(error) = written {
        if is_no_space(&error) {
            return Err(no_space(folder));
        }
        return Err(Fatal::new(format!(
            "cannot write in the output folder {shown}: {}",
            describe(&error)
        ))
        .hint(hint_for(&error)));
    }
    removed.map_err(|error| {
        Fatal::new(format!(
            "cannot remove the probe file {} from the output folder: {}",
            probe.display(),
            describe(&error)
        ))
        .hint(hint_for(&error))
    })
}

/// The path itself, or its nearest existing ancestor, when that is not a folder.
fn file_in_the_way(folder: &Path) -> Option<PathBuf> {
    folder
        .ancestors()
        .filter(|path| !path.as_os_str().is_empty())
        .find_map(|path| match fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => Some(None),
            Ok(_) => Some(Some(path.to_path_buf())),
            Err(_) => None,
        })
        .flatten()
}

/// Bytes an unprivileged writer may still use on the file system holding `folder`.
fn available_bytes(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stats` points to
    // writable memory of the right type, which statvfs fills when it returns 0.
    let status = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialized `stats`.
    let stats = unsafe { stats.assume_init() };
    // Both are 64 bits here but 32 on some targets.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}

fn no_space(folder: &Path) -> Fatal {
    Fatal::new(format!(
        "no space left on the device holding the output folder {}",
        folder.display()
    ))
    .hint(
        "free space there, or give --out a folder on another disk, then run the same command again",
    )
}

fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    )
}

/// What went wrong, in words rather than an errno.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EROFS) => "the file system is read-only".to_string(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".to_string(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "no space left".to_string(),
        Some(libc::EFBIG) => "a file-size limit (ulimit -f) forbids the write".to_string(),
        Some(libc::ENOTDIR) => "a part of the path is a file, not a folder".to_string(),
        _ => error.to_string(),
    }
}

fn hint_for(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
            "give --out a folder this user can write, or fix its permissions"
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
            "free space there, or give --out a folder on another disk"
        }
        _ => "give --out a folder this user can write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_folder_is_created_and_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        check_local_folder(&folder).unwrap();
        assert!(folder.is_dir());
        assert_eq!(fs::read_dir(&folder).unwrap().count(), 0, "no probe left");
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("renders");
        fs::write(&file, b"x").unwrap();
        let error = check_local_folder(&file).unwrap_err();
        assert_eq!(
            error.message,
            format!("--out {} is a file, not a folder", file.display())
        );
        let error = check_local_folder(&file.join("sub")).unwrap_err();
        assert!(
            error
                .message
                .ends_with(&format!("{} is a file", file.display())),
            "{}",
            error.message
        );
    }

    #[test]
    fn errors_are_described_in_words() {
        for (errno, words) in [
            (libc::EROFS, "read-only"),
            (libc::EACCES, "permission denied"),
            (libc::ENOSPC, "no space left"),
        ] {
            let error = io::Error::from_raw_os_error(errno);
            assert!(describe(&error).contains(words), "{errno}");
        }
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EACCES)));
    }
}
