//! `ObjectStorage`: one destination (`s3://BUCKET/PREFIX/`) with its S3 client, checked with a
//! probe, and the housekeeping of multipart uploads (listing and aborting what a killed run
//! left). The upload of an output itself is in `upload.rs`. Holds credentials only inside the
//! `object_store` client and the signer; nothing here prints, logs or stores them.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
};
use rand::Rng;
use sha2::Digest as _;

use super::destination::Destination;
use super::env::S3Env;
use super::error::{Scrubber, StorageError, classify_object_store};
use super::record::{UploadEvent, UploadPhase, UploadRecord};
use super::wire::{PendingUpload, Wire};

/// The name of the user metadata that carries an object's SHA-256 (`x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// How outputs are cut and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Bytes per part of a multipart upload (S3: at least 5 MiB except the last part); an
    /// output of at most this size is sent in one PUT.
    pub part_size: u64,
    /// Parts sent at once per output. Memory per output is at most
    /// `(parts_in_flight + 1) × part_size`, whatever the output's size.
    pub parts_in_flight: usize,
}

impl Default for UploadOptions {
    fn default() -> UploadOptions {
        UploadOptions {
            part_size: 8 << 20,
            parts_in_flight: 2,
        }
    }
}

/// S3's smallest part (except the last) and largest part.
const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;

/// S3's most parts in one upload.
pub(crate) const MAX_PARTS: u64 = 10_000;

/// An S3 destination, ready to probe and to take outputs.
pub struct ObjectStorage {
    pub(crate) destination: Destination,
    pub(crate) s3: Arc<AmazonS3>,
    pub(crate) wire: Wire,
    pub(crate) options: UploadOptions,
    pub(crate) scrubber: Scrubber,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("destination", &self.destination.to_string())
            .field("options", &self.options)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

/// What the store holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bytes: u64,
    /// The `x-amz-meta-sha256` the object carries, if any.
    pub sha256: Option<String>,
    pub etag: Option<String>,
}

impl ObjectStorage {
    /// A client for `destination`, configured from `env`. Sends nothing: see [`Self::probe`].
    pub fn new(
        destination: Destination,
        env: &S3Env,
        options: UploadOptions,
    ) -> Result<ObjectStorage, StorageError> {
        if !(MIN_PART..=MAX_PART).contains(&options.part_size) {
            return Err(StorageError::Config {
                message: format!(
                    "part size {} is outside S3's limits of 5 MiB to 5 GiB",
                    options.part_size
                ),
                hint: "choose a part size of at least 5 MiB".into(),
            });
        }
        if !(1..=64).contains(&options.parts_in_flight) {
            return Err(StorageError::Config {
                message: format!(
                    "{} parts in flight: choose 1 to 64",
                    options.parts_in_flight
                ),
                hint: "a few parts in flight are enough to fill a link".into(),
            });
        }
        let resolved = env.resolve(destination.bucket())?;
        let scrubber = resolved.scrubber.clone();
        let s3 =
            resolved
                .builder
                .build()
                .map_err(|e| match classify_object_store(&e, &scrubber) {
                    // A build error is a configuration error whatever its kind.
                    StorageError::Config { message, hint } => {
                        StorageError::Config { message, hint }
                    }
                    other => StorageError::Config {
                        message: other.to_string(),
                        hint: "check the AWS_* environment".into(),
                    },
                })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StorageError::Config {
                message: format!("cannot build an HTTP client: {e}"),
                hint: "this machine's TLS setup may be broken".into(),
            })?;
        let wire = Wire {
            http,
            credentials: s3.credentials().clone(),
            region: resolved.region,
            bucket_url: resolved.bucket_url,
            sign_payload: resolved.sign_payload,
            request_payer: resolved.request_payer,
            encryption_headers: resolved.encryption_headers,
            scrubber: scrubber.clone(),
        };
        Ok(ObjectStorage {
            destination,
            s3: Arc::new(s3),
            wire,
            options,
            scrubber,
        })
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    pub fn options(&self) -> UploadOptions {
        self.options
    }

    /// Check, before anything is bought, that outputs can be written: a small object with the
    /// SHA-256 metadata is written under the prefix and removed. A refusal says which
    /// (missing bucket, credentials, permission, region) and carries a hint.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let token: u64 = rand::rng().random();
        let key = format!("{}.headswap-probe-{token:016x}", self.destination.prefix());
        let path = self.path(&key)?;
        let content = b"headswap-batch probe: safe to delete\n";
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(SHA256_METADATA.into()),
            crate::job::hex(&sha2::Sha256::digest(content)).into(),
        );
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let url = self.destination.url_of(&key);
        self.s3
            .put_opts(&path, PutPayload::from_static(content), options)
            .await
            .map_err(|e| self.during(&format!("writing the probe object {url}"), &e))?;
        self.s3
            .delete(&path)
            .await
            .map_err(|e| self.during(&format!("removing the probe object {url}"), &e))?;
        Ok(())
    }

    /// What the store holds under `key`, or `None` if nothing.
    pub async fn object_info(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path(key)?;
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.s3.get_opts(&path, options).await {
            Ok(result) => Ok(Some(ObjectInfo {
                bytes: result.meta.size,
                sha256: result
                    .attributes
                    .get(&Attribute::Metadata(SHA256_METADATA.into()))
                    .map(|value| value.to_string()),
                etag: result.meta.e_tag.clone(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(classify_object_store(&e, &self.scrubber)),
        }
    }

    /// Every multipart upload in progress under the prefix (this run's, another shard's, a
    /// killed run's).
    pub async fn pending_uploads(&self) -> Result<Vec<PendingUpload>, StorageError> {
        self.wire
            .list_multipart_uploads(self.destination.prefix())
            .await
    }

    /// Abort the multipart uploads under the prefix that a killed run left behind, so that
    /// nothing stays billed: those whose key is the output of a job `is_ours` (this run's
    /// jobs: other shards may be uploading under the same prefix) and whose upload id is not in
    /// `keep` (the uploads that stored records will resume). Returns those aborted.
    pub async fn abort_abandoned(
        &self,
        is_ours: impl Fn(&str) -> bool,
        keep: &HashSet<String>,
    ) -> Result<Vec<PendingUpload>, StorageError> {
        let mut aborted = Vec::new();
        for upload in self.pending_uploads().await? {
            let ours = self
                .destination
                .job_id_of(&upload.key)
                .is_some_and(&is_ours);
            if !ours || keep.contains(&upload.upload_id) {
                continue;
            }
            self.abort_upload(&upload.key, &upload.upload_id).await?;
            aborted.push(upload);
        }
        Ok(aborted)
    }

    /// Give an upload up: abort its multipart upload if it has one and set the record back to
    /// `Pending`. A complete record is left as it is.
    pub async fn abort(&self, record: &mut UploadRecord, reason: &str) -> Result<(), StorageError> {
        match &record.phase {
            UploadPhase::Complete { .. } | UploadPhase::Pending => return Ok(()),
            UploadPhase::Uploading { upload_id, .. } => {
                self.abort_upload(&record.key, &upload_id.clone()).await?;
            }
            UploadPhase::Planned { .. } => {}
        }
        record
            .apply(&UploadEvent::Restarted {
                reason: reason.to_string(),
            })
            .map_err(|e| StorageError::Config {
                message: e.to_string(),
                hint: "this is a bug".into(),
            })
    }

    /// Abort one multipart upload; one the store no longer knows counts as aborted.
    pub(crate) async fn abort_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.s3.abort_multipart(&path, &upload_id.to_string()).await {
            Ok(()) => Ok(()),
            Err(e) => match classify_object_store(&e, &self.scrubber) {
                StorageError::UploadGone { .. } => Ok(()),
                // A 404 without a body (some stores) also means the upload is gone.
                StorageError::Refused {
                    refusal: super::error::Refusal::Rejected { code },
                    ..
                } if code == "HTTP 404" => Ok(()),
                other => Err(other),
            },
        }
    }

    pub(crate) fn path(&self, key: &str) -> Result<Path, StorageError> {
        Path::parse(key).map_err(|e| StorageError::Config {
            message: format!("{key:?} is not a valid object key: {e}"),
            hint: "check the destination prefix".into(),
        })
    }

    /// Classify `error`, naming the step it happened in.
    fn during(&self, step: &str, error: &object_store::Error) -> StorageError {
        match classify_object_store(error, &self.scrubber) {
            StorageError::Refused { refusal, detail } => StorageError::Refused {
                refusal,
                detail: format!("{step}: {detail}"),
            },
            StorageError::Transient { detail } => StorageError::Transient {
                detail: format!("{step}: {detail}"),
            },
            other => other,
        }
    }
}
