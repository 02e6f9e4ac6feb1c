//! Uploading one finished job's output from its link to `PREFIX/<id>.mp4`, streamed, without a
//! local copy, resumable from its [`UploadRecord`].
//!
//! - An output of at most one part is read into memory, hashed, and sent in one PUT that
//!   carries its `x-amz-meta-sha256`.
//! - A larger output is read twice. The first read only hashes: the whole output and each
//!   part, so the multipart upload can be created with the true SHA-256 as metadata. The
//!   second read cuts the output into parts, checks each against its hash from the first read,
//!   and sends it; at most `parts_in_flight` parts are on the wire while the next one fills,
//!   so memory is bounded by `(parts_in_flight + 1) × part_size`. After a crash, or when the
//!   link had to be refreshed, only the missing parts are read again (`Range`) and each is
//!   checked the same way before it is sent.
//! - Completing the multipart upload makes the object visible at once, whole, with its
//!   metadata; it is then checked (length and metadata) with a HEAD.
//!
//! Each fact is applied to the record and reported to the caller as soon as it is true at the
//! store, so the caller can store it. Dropping the future leaves the multipart upload for the
//! record to resume, or for [`ObjectStorage::abort`] / [`ObjectStorage::abort_abandoned`].

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use object_store::multipart::{MultipartStore, PartId};
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::error::{StorageError, UploadError, classify_object_store};
use super::record::{PartRecord, StoredObject, UploadEvent, UploadPhase, UploadPlan, UploadRecord};
use super::source::{self, Body, Opened, OutputSource};
use super::storage::{MAX_PARTS, ObjectStorage, SHA256_METADATA};
use crate::download::DownloadError;
use crate::job::hex;

/// Chunks received by the first read but not yet hashed (as in `run/download.rs`).
const QUEUED_CHUNKS: usize = 4;

impl ObjectStorage {
    /// Upload `source` to `record.key`, from wherever `record` stands (a fresh
    /// [`UploadRecord::new`], or the record stored before a crash or a failed attempt). Every
    /// event is applied to `record` and then passed to `progress` with the record as it now is.
    ///
    /// On error `record` still says what is true at the store: a transient error (download
    /// interrupted, link expired, store unavailable) is resumed by calling again with it.
    pub async fn upload<F>(
        &self,
        http: &reqwest::Client,
        source: &OutputSource,
        record: &mut UploadRecord,
        mut progress: F,
    ) -> Result<StoredObject, UploadError>
    where
        F: FnMut(&UploadEvent, &UploadRecord) + Send,
    {
        let mut emit = |record: &mut UploadRecord, event: UploadEvent| {
            record
                .apply(&event)
                .map_err(|e| UploadError::Internal(e.to_string()))?;
            progress(&event, record);
            Ok::<(), UploadError>(())
        };
        // Each turn moves the record one phase on; a lost upload restarts it once.
        let mut restarts = 0;
        loop {
            match record.phase.clone() {
                UploadPhase::Complete { object } => return Ok(object),
                UploadPhase::Pending => match self.first_read(http, source, &record.key).await? {
                    FirstRead::Stored(object) => emit(record, UploadEvent::Completed(object))?,
                    FirstRead::Planned(plan) => emit(record, UploadEvent::Planned(plan))?,
                },
                UploadPhase::Planned { plan } => {
                    let upload_id = self
                        .wire
                        .create_multipart(&record.key, &plan.sha256)
                        .await?;
                    emit(record, UploadEvent::Created { upload_id })?;
                    crate::crash::point(CRASH_UPLOAD_CREATED);
                }
                UploadPhase::Uploading {
                    plan,
                    upload_id,
                    parts,
                } => {
                    let missing = missing_parts(&plan, &parts);
                    let outcome = if missing.is_empty() {
                        self.complete(&record.key, &plan, &upload_id, &parts).await
                    } else {
                        let key = record.key.clone();
                        let mut on_part = |part: PartRecord| {
                            emit(record, UploadEvent::PartStored(part))?;
                            crate::crash::point(CRASH_UPLOAD_PART);
                            Ok(())
                        };
                        let target = Target {
                            key: &key,
                            plan: &plan,
                            upload_id: &upload_id,
                        };
                        self.send_parts(http, source, target, &missing, &mut on_part)
                            .await
                            .map(|()| None)
                    };
                    match outcome {
                        Ok(Some(object)) => emit(record, UploadEvent::Completed(object))?,
                        Ok(None) => {}
                        Err(Failure::Changed(detail)) => {
                            // Not the bytes hashed: the plan (and its metadata) is void.
                            self.abort_upload(&record.key, &upload_id).await.ok();
                            emit(
                                record,
                                UploadEvent::Restarted {
                                    reason: detail.clone(),
                                },
                            )?;
                            return Err(UploadError::Download(DownloadError::Transient {
                                detail: format!("{detail}; the upload starts over"),
                            }));
                        }
                        Err(Failure::Upload(UploadError::Storage(StorageError::UploadGone {
                            detail,
                        }))) => {
                            // Completed by an attempt that died before recording it, or
                            // aborted (a lifecycle rule, a cleanup): the object tells which.
                            if let Some(object) = self.completed_object(&record.key, &plan).await? {
                                emit(record, UploadEvent::Completed(object))?;
                                continue;
                            }
                            emit(
                                record,
                                UploadEvent::Restarted {
                                    reason: detail.clone(),
                                },
                            )?;
                            restarts += 1;
                            if restarts > 1 {
                                return Err(StorageError::UploadGone { detail }.into());
                            }
                        }
                        Err(Failure::Upload(
                            error @ UploadError::Download(DownloadError::Refused { .. }),
                        )) => {
                            // The output can never be read as planned: nothing to resume.
                            self.abort_upload(&record.key, &upload_id).await.ok();
                            emit(
                                record,
                                UploadEvent::Restarted {
                                    reason: error.to_string(),
                                },
                            )?;
                            return Err(error);
                        }
                        Err(Failure::Upload(error)) => return Err(error),
                    }
                }
            }
        }
    }

    /// The first read: a small output is stored at once; a large one is hashed into a plan.
    async fn first_read(
        &self,
        http: &reqwest::Client,
        source: &OutputSource,
        key: &str,
    ) -> Result<FirstRead, UploadError> {
        let mut body = match source::open(http, source, 0, None).await? {
            Opened::Body(body) => body,
            Opened::RangeNotSatisfiable => {
                return Err(DownloadError::Transient {
                    detail: "HTTP 416 to a request without a range".into(),
                }
                .into());
            }
        };
        let part_size = self.options.part_size;
        if body.total <= part_size {
            return self.put_whole(key, body).await.map(FirstRead::Stored);
        }
        if body.total.div_ceil(part_size) > MAX_PARTS {
            return Err(DownloadError::Refused {
                detail: format!(
                    "output is {} bytes, more than {MAX_PARTS} parts of {part_size} bytes",
                    body.total
                ),
            }
            .into());
        }
        // Receive here; hash on a blocking thread.
        let (sender, chunks) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
        let total = body.total;
        let hasher = tokio::task::spawn_blocking(move || hash_parts(chunks, part_size));
        let received = loop {
            match body.chunk().await {
                Ok(Some(chunk)) => {
                    if sender.send(chunk).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        drop(sender);
        let (sha256, part_sha256, hashed) = hasher
            .await
            .map_err(|e| UploadError::Internal(format!("the hashing thread failed: {e}")))?;
        received?;
        if hashed != total {
            return Err(DownloadError::Transient {
                detail: format!("connection closed after {hashed} of {total} bytes"),
            }
            .into());
        }
        Ok(FirstRead::Planned(UploadPlan {
            bytes: total,
            sha256,
            part_size,
            part_sha256,
            link_etag: body.etag.clone(),
        }))
    }

    /// One PUT of a whole (small) output, with its SHA-256 as metadata.
    async fn put_whole(&self, key: &str, mut body: Body) -> Result<StoredObject, UploadError> {
        let mut buffer = BytesMut::with_capacity(body.total as usize);
        while let Some(chunk) = body.chunk().await? {
            buffer.extend_from_slice(&chunk);
        }
        let data = buffer.freeze();
        let (data, sha256) = tokio::task::spawn_blocking(move || {
            let sha256 = hex(&Sha256::digest(&data));
            (data, sha256)
        })
        .await
        .map_err(|e| UploadError::Internal(format!("the hashing thread failed: {e}")))?;
        let bytes = data.len() as u64;
        let path = self.path(key)?;
        let options = PutOptions {
            attributes: object_attributes(&sha256),
            ..PutOptions::default()
        };
        let result = self
            .s3
            .put_opts(&path, PutPayload::from_bytes(data), options)
            .await
            .map_err(|e| classify_object_store(&e, &self.scrubber))?;
        crate::crash::point(CRASH_UPLOAD_COMPLETED);
        Ok(StoredObject {
            key: key.to_string(),
            url: self.destination.url_of(key),
            bytes,
            sha256,
            etag: result.e_tag,
        })
    }

    /// Read the output from the first missing part on and send every missing part, checked
    /// against the plan, with at most `parts_in_flight` on the wire.
    async fn send_parts(
        &self,
        http: &reqwest::Client,
        source: &OutputSource,
        target: Target<'_>,
        missing: &BTreeSet<u32>,
        on_part: &mut (dyn FnMut(PartRecord) -> Result<(), UploadError> + Send),
    ) -> Result<(), Failure> {
        let Target {
            key,
            plan,
            upload_id,
        } = target;
        let (Some(&first), Some(&last)) = (missing.first(), missing.last()) else {
            return Ok(());
        };
        let path = self.path(key).map_err(UploadError::from)?;
        let (from, _) = plan
            .part_range(first)
            .expect("missing parts are in the plan");
        let mut body = match source::open(http, source, from, plan.link_etag.as_deref())
            .await
            .map_err(UploadError::from)?
        {
            Opened::Body(body) => body,
            Opened::RangeNotSatisfiable => {
                return Err(Failure::Changed(
                    "the output is shorter than when it was first read".into(),
                ));
            }
        };
        if body.total != plan.bytes {
            return Err(Failure::Changed(format!(
                "the output is {} bytes, not the {} first read",
                body.total, plan.bytes
            )));
        }
        // A server that ignored the range sends from byte 0: skip what is not needed.
        let mut offset = body.start;
        let mut number = (offset / plan.part_size) as u32 + 1;
        let mut buffer = BytesMut::new();
        // Buffers of parts sent, used again: an upload holds the same few part-sized buffers
        // from start to end (allocating one per part let the allocator keep freed ones).
        let mut spare: Vec<BytesMut> = Vec::new();
        let mut in_flight: JoinSet<Result<SentPart, Failure>> = JoinSet::new();
        while number <= last {
            let Some(mut chunk) = body.chunk().await.map_err(UploadError::from)? else {
                break;
            };
            while !chunk.is_empty() && number <= last {
                let (start, end) = plan.part_range(number).expect("numbers stay in the plan");
                let piece = chunk.split_to(chunk.len().min((end - offset) as usize));
                offset += piece.len() as u64;
                let wanted = missing.contains(&number);
                if wanted {
                    if buffer.is_empty() {
                        buffer = spare.pop().unwrap_or_default();
                        buffer.reserve((end - start) as usize);
                    }
                    buffer.extend_from_slice(&piece);
                }
                if offset < end {
                    continue;
                }
                if wanted {
                    while in_flight.len() >= self.options.parts_in_flight {
                        let sent = joined(in_flight.join_next().await)?;
                        spare.extend(sent.buffer);
                        on_part(sent.part)?;
                    }
                    let data = std::mem::take(&mut buffer).freeze();
                    let part = PartToSend {
                        path: path.clone(),
                        upload_id: upload_id.to_string(),
                        number,
                        range: (start, end),
                        expected: plan.part_sha256[number as usize - 1].clone(),
                    };
                    in_flight.spawn(self.send_part(part, data));
                }
                number += 1;
                while let Some(done) = in_flight.try_join_next() {
                    let sent = joined(Some(done))?;
                    spare.extend(sent.buffer);
                    on_part(sent.part)?;
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            on_part(joined(Some(done))?.part)?;
        }
        if number <= last {
            // The body ended before the parts did (the length check makes this unreachable).
            return Err(Failure::Upload(
                DownloadError::Transient {
                    detail: format!("the output ended at byte {offset}"),
                }
                .into(),
            ));
        }
        Ok(())
    }

    /// A task that checks one part against the plan and sends it.
    fn send_part(
        &self,
        part: PartToSend,
        data: Bytes,
    ) -> impl std::future::Future<Output = Result<SentPart, Failure>> + Send + 'static {
        let s3 = self.s3.clone();
        let scrubber = self.scrubber.clone();
        let PartToSend {
            path,
            upload_id,
            number,
            range: (start, end),
            expected,
        } = part;
        async move {
            let (data, actual) = tokio::task::spawn_blocking(move || {
                let actual = hex(&Sha256::digest(&data));
                (data, actual)
            })
            .await
            .map_err(|e| UploadError::Internal(format!("the hashing thread failed: {e}")))?;
            if actual != expected {
                return Err(Failure::Changed(format!(
                    "part {number} (bytes {start}..{end}) differs from the output first read"
                )));
            }
            let kept = data.clone();
            let part = s3
                .put_part(
                    &path,
                    &upload_id,
                    number as usize - 1,
                    PutPayload::from_bytes(data),
                )
                .await
                .map_err(|e| UploadError::from(classify_object_store(&e, &scrubber)))?;
            // The request is done with the bytes: take the buffer back if nothing else holds it.
            let buffer = kept.try_into_mut().ok().map(|mut buffer| {
                buffer.clear();
                buffer
            });
            Ok(SentPart {
                part: PartRecord {
                    number,
                    etag: part.content_id,
                    start,
                    end,
                },
                buffer,
            })
        }
    }

    /// Complete the multipart upload and check the object it made.
    async fn complete(
        &self,
        key: &str,
        plan: &UploadPlan,
        upload_id: &str,
        parts: &[PartRecord],
    ) -> Result<Option<StoredObject>, Failure> {
        let path = self.path(key).map_err(UploadError::from)?;
        let ids = parts
            .iter()
            .map(|part| PartId {
                content_id: part.etag.clone(),
            })
            .collect();
        let result = match self
            .s3
            .complete_multipart(&path, &upload_id.to_string(), ids)
            .await
        {
            Ok(result) => result,
            Err(error) => {
                let error = classify_object_store(&error, &self.scrubber);
                if matches!(error, StorageError::Refused { .. }) {
                    return Err(UploadError::from(error).into());
                }
                // S3 may answer a completion 200 and then an error, or the answer may be
                // lost: the object, then the list of uploads, tell what happened.
                if let Some(object) = self.completed_object(key, plan).await? {
                    return Ok(Some(object));
                }
                let pending = self.wire.list_multipart_uploads(key).await?;
                let exists = pending
                    .iter()
                    .any(|upload| upload.key == key && upload.upload_id == upload_id);
                return Err(UploadError::from(if exists {
                    error
                } else {
                    StorageError::UploadGone {
                        detail: format!(
                            "completing it failed ({error}) and its object is not there"
                        ),
                    }
                })
                .into());
            }
        };
        crate::crash::point(CRASH_UPLOAD_COMPLETED);
        match self.completed_object(key, plan).await? {
            Some(object) => Ok(Some(StoredObject {
                etag: result.e_tag.or(object.etag),
                ..object
            })),
            None => Err(Failure::Upload(UploadError::Internal(format!(
                "{} is not the object uploaded after completing it",
                self.destination.url_of(key)
            )))),
        }
    }

    /// The object under `key`, if it is the one `plan` describes (length and metadata).
    async fn completed_object(
        &self,
        key: &str,
        plan: &UploadPlan,
    ) -> Result<Option<StoredObject>, UploadError> {
        let info = self.object_info(key).await?;
        Ok(info
            .filter(|info| info.bytes == plan.bytes && info.sha256.as_deref() == Some(&plan.sha256))
            .map(|info| StoredObject {
                key: key.to_string(),
                url: self.destination.url_of(key),
                bytes: plan.bytes,
                sha256: plan.sha256.clone(),
                etag: info.etag,
            }))
    }
}

/// Crash points of the upload (`HEADSWAP_CRASH_AT`, see `crash.rs`): the multipart upload
/// was created and reported; a part was stored and reported (`:n` for the n-th); the object
/// is complete and the completion not reported yet.
pub const CRASH_UPLOAD_CREATED: &str = "upload-created";
pub const CRASH_UPLOAD_PART: &str = "upload-part-stored";
pub const CRASH_UPLOAD_COMPLETED: &str = "upload-completed";

/// The multipart upload parts go to.
#[derive(Clone, Copy)]
struct Target<'a> {
    key: &'a str,
    plan: &'a UploadPlan,
    upload_id: &'a str,
}

/// One part handed to its sending task.
struct PartToSend {
    path: object_store::path::Path,
    upload_id: String,
    number: u32,
    range: (u64, u64),
    expected: String,
}

/// What the first read gave.
enum FirstRead {
    Stored(StoredObject),
    Planned(UploadPlan),
}

/// Why sending parts stopped.
enum Failure {
    /// The bytes read again are not those first read: the plan is void.
    Changed(String),
    Upload(UploadError),
}

impl From<UploadError> for Failure {
    fn from(error: UploadError) -> Failure {
        Failure::Upload(error)
    }
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Failure {
        Failure::Upload(error.into())
    }
}

/// A part stored, and its buffer to fill again.
struct SentPart {
    part: PartRecord,
    buffer: Option<BytesMut>,
}

fn joined(
    outcome: Option<Result<Result<SentPart, Failure>, tokio::task::JoinError>>,
) -> Result<SentPart, Failure> {
    match outcome {
        Some(Ok(result)) => result,
        Some(Err(e)) => {
            Err(UploadError::Internal(format!("a part upload task failed: {e}")).into())
        }
        None => Err(UploadError::Internal("no part upload in flight".into()).into()),
    }
}

/// The part numbers of `plan` not among `parts`.
fn missing_parts(plan: &UploadPlan, parts: &[PartRecord]) -> BTreeSet<u32> {
    let done: BTreeSet<u32> = parts.iter().map(|p| p.number).collect();
    (1..=plan.part_count() as u32)
        .filter(|n| !done.contains(n))
        .collect()
}

/// `Content-Type: video/mp4` and `x-amz-meta-sha256`.
fn object_attributes(sha256: &str) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "video/mp4".into());
    attributes.insert(
        Attribute::Metadata(SHA256_METADATA.into()),
        sha256.to_string().into(),
    );
    attributes
}

/// Hash chunks until the channel closes: the whole (SHA-256, hex), each `part_size` part, and
/// the count of bytes.
fn hash_parts(mut chunks: mpsc::Receiver<Bytes>, part_size: u64) -> (String, Vec<String>, u64) {
    let mut whole = Sha256::new();
    let mut part = Sha256::new();
    let mut in_part = 0u64;
    let mut parts = Vec::new();
    let mut total = 0u64;
    while let Some(mut chunk) = chunks.blocking_recv() {
        whole.update(&chunk);
        total += chunk.len() as u64;
        while !chunk.is_empty() {
            let take = chunk.len().min((part_size - in_part) as usize);
            let piece = chunk.split_to(take);
            part.update(&piece);
            in_part += take as u64;
            if in_part == part_size {
                parts.push(hex(&std::mem::take(&mut part).finalize()));
                in_part = 0;
            }
        }
    }
    if in_part > 0 {
        parts.push(hex(&part.finalize()));
    }
    (hex(&whole.finalize()), parts, total)
}
