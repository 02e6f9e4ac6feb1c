//! Writes to the journal file: where each batch of lines goes, the room made ahead of them,
//! the fdatasync, and the chain that keeps writes in order when they run in the background.
//!
//! A batch's place in the file is reserved when it is started, so appends can go on while it
//! is written; each write waits for the one started before it, and a failed write poisons the
//! journal, so nothing is written after a line that may be partial.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// One write's work: lines at the end of the last ones (and zeros after them when the file
/// must grow), then, if durable, fdatasync and the folder's fsync for a new file.
pub(super) struct Write {
    pub at: u64,
    pub bytes: Vec<u8>,
    pub grow_to: Option<u64>,
    pub durable: bool,
    pub folder: Option<PathBuf>,
    /// The write started before this one: this one waits for it.
    pub previous: Option<Arc<Completion>>,
    pub done: Arc<Completion>,
    pub poison: Arc<Mutex<Option<String>>>,
}

impl Write {
    /// Do the write (after the previous one) and publish its result.
    pub fn execute(self, file: &File) -> Result<(), String> {
        let result = self.run(file);
        if let Err(cause) = &result {
            let mut poison = lock(&self.poison);
            poison.get_or_insert_with(|| cause.clone());
        }
        self.done.complete(result.clone());
        result
    }

    fn run(&self, file: &File) -> Result<(), String> {
        if let Some(previous) = &self.previous {
            previous.wait_blocking()?;
        }
        if let Some(cause) = lock(&self.poison).clone() {
            return Err(cause);
        }
        let io = |error: std::io::Error| format!("write and sync: {error}");
        match self.grow_to {
            None => file.write_all_at(&self.bytes, self.at).map_err(io)?,
            Some(size) => {
                // One write: the lines, then the room ahead.
                let mut bytes = Vec::with_capacity((size - self.at) as usize);
                bytes.extend_from_slice(&self.bytes);
                bytes.resize((size - self.at) as usize, 0);
                file.write_all_at(&bytes, self.at).map_err(io)?;
            }
        }
        if !self.durable {
            return Ok(());
        }
        file.sync_data().map_err(io)?;
        if let Some(folder) = &self.folder {
            File::open(folder)
                .and_then(|folder| folder.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

/// The outcome of a write, once known: waited for from a blocking thread or from async code.
#[derive(Debug, Default)]
pub(super) struct Completion {
    result: Mutex<Option<Result<(), String>>>,
    ready: Condvar,
    notify: tokio::sync::Notify,
}

impl Completion {
    /// A completion that is already done.
    pub fn done(result: Result<(), String>) -> Arc<Completion> {
        let completion = Arc::new(Completion::default());
        completion.complete(result);
        completion
    }

    pub fn complete(&self, result: Result<(), String>) {
        *lock(&self.result) = Some(result);
        self.ready.notify_all();
        self.notify.notify_waiters();
    }

    pub fn wait_blocking(&self) -> Result<(), String> {
        let mut result = lock(&self.result);
        loop {
            if let Some(result) = result.as_ref() {
                return result.clone();
            }
            result = self
                .ready
                .wait(result)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    pub async fn wait(&self) -> Result<(), String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a completion in between is not missed.
            notified.as_mut().enable();
            if let Some(result) = lock(&self.result).as_ref() {
                return result.clone();
            }
            notified.await;
        }
    }

    pub fn is_done(&self) -> bool {
        lock(&self.result).is_some()
    }
}

/// A mutex's contents, also after a thread panicked holding it (the data is a plain value).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
