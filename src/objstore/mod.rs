//! Outputs in object storage: `--out s3://BUCKET/PREFIX/` writes each finished job to
//! `PREFIX/<id>.mp4` in an S3-compatible store, streamed from the output link without a local
//! copy, visible only when complete, its SHA-256 kept with it, resumable after a crash.
//!
//! This module owns the destination, the S3 client (the `object_store` crate), the upload of
//! one output and its record. It does not touch the database, the job state machine or the
//! dispatcher: the run loop stores the [`UploadRecord`] it is handed and decides on retries
//! from [`UploadError`].
//!
//! ## Where the SHA-256 lives, and why outputs larger than a part are read twice
//!
//! The object's SHA-256 is its user metadata `x-amz-meta-sha256`, set by the request that
//! creates the object, so an object never exists without it and never carries a value that
//! was not checked:
//!
//! - an output of at most one part (8 MiB by default; most outputs are a few MB) is read into
//!   memory and stored by one PUT that carries its hash;
//! - a multipart upload fixes its metadata when it is *created*, before any part is sent. So a
//!   larger output is read twice: the first read hashes it (whole and per part) and the upload
//!   is created with that hash; the second read sends the parts, each checked against its
//!   hash from the first read before it leaves. The metadata therefore describes the bytes
//!   stored, and a part read again after a crash or from a refreshed link is checked the same
//!   way. The price is reading large outputs twice from the link.
//!
//! The alternatives were weighed against S3 and `object_store` 0.13: S3's own multipart
//! checksum (`x-amz-checksum-sha256`) is a checksum of the part checksums, not the file's
//! SHA-256; tags and metadata cannot be added to a finished object except by a copy onto itself
//! (object_store's copy cannot replace metadata, and the object would first be visible without
//! the hash); a sidecar object (`<id>.mp4.sha256`) is a second object that can be missing or
//! stale. The hash is also returned ([`StoredObject::sha256`]) for the database.
//!
//! ## Exactly once and resumable
//!
//! Completing a multipart upload makes the whole object visible at once; nothing partial is
//! ever under the final key. Every fact (planned, upload created, part stored with its ETag
//! and byte range, completed) is applied to the [`UploadRecord`] and reported as it happens;
//! given the stored record, [`ObjectStorage::upload`] resumes: only missing parts are read
//! again (with `Range`) and sent. An upload the store no longer knows is completed if its
//! object is there with the planned length and hash, else started over. A killed run's uploads
//! that no record refers to are found with [`ObjectStorage::pending_uploads`] and aborted by
//! [`ObjectStorage::abort_abandoned`]; a job given up calls [`ObjectStorage::abort`].
//!
//! ## Credentials
//!
//! Read from the standard AWS environment ([`S3Env`]) and held by `object_store`'s client and
//! the signer only. `Debug` of every type here is safe to print, and every error text is built
//! from the store's error code and message (never its raw answer, which can echo a key id or a
//! token) with the known secret values scrubbed.

mod destination;
mod env;
mod error;
mod record;
mod source;
mod storage;
mod upload;
mod wire;

pub use destination::{Destination, DestinationError};
pub use env::S3Env;
pub use error::{Refusal, StorageError, UploadError};
pub use record::{
    IllegalUploadEvent, PartRecord, StoredObject, UploadEvent, UploadPhase, UploadPlan,
    UploadRecord,
};
pub use source::OutputSource;
pub use storage::{ObjectInfo, ObjectStorage, SHA256_METADATA, UploadOptions};
pub use upload::{CRASH_UPLOAD_COMPLETED, CRASH_UPLOAD_CREATED, CRASH_UPLOAD_PART};
pub use wire::PendingUpload;
