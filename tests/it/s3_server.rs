//! A real S3 server on loopback for the object-storage tests and benchmarks: `s3s` (which
//! checks every request's SigV4 signature against its one key pair) over `s3s-fs` (objects as
//! files in a temporary folder), served by hyper on 127.0.0.1 port 0 and stopped when dropped.
//!
//! `s3s-fs` does not implement ListMultipartUploads, and creates a missing bucket's folder
//! instead of answering NoSuchBucket. [`Tracked`] makes it behave as S3 does there: it forwards
//! every operation the tests use to `s3s-fs`, refuses operations on a bucket that does not
//! exist, keeps the uploads created and not yet completed or aborted (NoSuchUpload otherwise),
//! and answers the listing from them in pages of `page_size`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use headswap_batch::objstore::S3Env;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use s3s_fs::FileSystem;

pub const ACCESS_KEY: &str = "AKIAHEADSWAPTEST0001";
pub const SECRET_KEY: &str = "hs/Test+Secret/Key0123456789abcdefghijklm";
pub const REGION: &str = "us-east-1";

/// A running server. Dropping it stops it and removes its folder.
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Serve with these buckets already created; listings of uploads come in pages of
    /// `page_size`.
    pub async fn start(buckets: &[&str], page_size: usize) -> S3Server {
        let root = tempfile::tempdir().expect("a folder for the objects");
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).expect("a bucket folder");
        }
        let fs = FileSystem::new(root.path()).expect("s3s-fs starts");
        let tracked = Tracked {
            fs: std::sync::Arc::new(fs),
            root: root.path().to_path_buf(),
            uploads: std::sync::Arc::new(Mutex::new(BTreeMap::new())),
            page_size,
        };
        let mut builder = S3ServiceBuilder::new(tracked);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build().into_shared();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // Connections live in this set: aborting the server drops them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        S3Server { addr, root, server }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a client of this server uses, with `secret` as its secret key.
    pub fn env_with_secret(&self, secret: &str) -> S3Env {
        S3Env::from_vars([
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ])
    }

    pub fn env(&self) -> S3Env {
        self.env_with_secret(SECRET_KEY)
    }

    /// The folder behind the buckets.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One multipart upload in progress.
struct Upload {
    bucket: String,
    key: String,
    initiated: SystemTime,
}

/// `s3s-fs` plus the bookkeeping ListMultipartUploads needs.
struct Tracked {
    fs: std::sync::Arc<FileSystem>,
    root: std::path::PathBuf,
    /// Upload id → upload.
    uploads: std::sync::Arc<Mutex<BTreeMap<String, Upload>>>,
    page_size: usize,
}

/// s3s-fs answers AccessDenied for an upload id it does not know (one completed or aborted
/// meanwhile, possibly by a request a killed client sent just before it died); S3 answers
/// NoSuchUpload, which is what a client acts on. With one key pair, that is the only cause.
fn unknown_upload(error: s3s::S3Error) -> s3s::S3Error {
    if *error.code() == s3s::S3ErrorCode::AccessDenied {
        s3s::s3_error!(NoSuchUpload)
    } else {
        error
    }
}

#[async_trait::async_trait]
impl S3 for Tracked {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.bucket(&req.input.bucket)?;
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.create_multipart_upload(req).await?;
        if let Some(upload_id) = &response.output.upload_id {
            self.uploads.lock().unwrap().insert(
                upload_id.clone(),
                Upload {
                    bucket,
                    key,
                    initiated: SystemTime::now(),
                },
            );
        }
        Ok(response)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        if !self
            .uploads
            .lock()
            .unwrap()
            .contains_key(&req.input.upload_id)
        {
            return Err(s3s::s3_error!(NoSuchUpload));
        }
        self.fs.upload_part(req).await.map_err(unknown_upload)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let upload_id = req.input.upload_id.clone();
        if !self.uploads.lock().unwrap().contains_key(&upload_id) {
            return Err(s3s::s3_error!(NoSuchUpload));
        }
        // S3 completes an upload whole once the request arrived, even if the client goes away
        // meanwhile: done in a task of its own, so a dropped connection cannot cancel it half
        // way (s3s-fs forgets the upload id before it writes the object).
        let fs = std::sync::Arc::clone(&self.fs);
        let uploads = std::sync::Arc::clone(&self.uploads);
        tokio::spawn(async move {
            let response = fs.complete_multipart_upload(req).await;
            if response.is_ok() {
                uploads.lock().unwrap().remove(&upload_id);
            }
            response.map_err(unknown_upload)
        })
        .await
        .expect("completion does not panic")
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let upload_id = req.input.upload_id.clone();
        if !self.uploads.lock().unwrap().contains_key(&upload_id) {
            return Err(s3s::s3_error!(NoSuchUpload));
        }
        let response = self
            .fs
            .abort_multipart_upload(req)
            .await
            .map_err(unknown_upload)?;
        self.uploads.lock().unwrap().remove(&upload_id);
        Ok(response)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = (
            input.key_marker.clone().unwrap_or_default(),
            input.upload_id_marker.clone().unwrap_or_default(),
        );
        let page_size = input.max_uploads.map_or(self.page_size, |max| {
            (max.max(1) as usize).min(self.page_size)
        });
        // S3 lists by key, then by upload id.
        let mut matching: Vec<(String, String, SystemTime)> = self
            .uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, upload)| upload.bucket == input.bucket && upload.key.starts_with(&prefix))
            .map(|(id, upload)| (upload.key.clone(), id.clone(), upload.initiated))
            .filter(|(key, id, _)| (key.clone(), id.clone()) > after)
            .collect();
        matching.sort();
        let truncated = matching.len() > page_size;
        matching.truncate(page_size);
        let next = matching
            .last()
            .map(|(key, id, _)| (key.clone(), id.clone()));
        let uploads = matching
            .into_iter()
            .map(|(key, upload_id, initiated)| MultipartUpload {
                key: Some(key),
                upload_id: Some(upload_id),
                initiated: Some(Timestamp::from(initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().filter(|_| truncated).map(|n| n.0.clone()),
            next_upload_id_marker: next.filter(|_| truncated).map(|n| n.1),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

impl Tracked {
    fn fs_bucket_exists(&self, bucket: &str) -> bool {
        // s3s-fs keeps each bucket as a folder of its root; a bucket name has no separator.
        !bucket.contains('/') && !bucket.contains("..") && self.root.join(bucket).is_dir()
    }

    fn bucket(&self, bucket: &str) -> S3Result<()> {
        if self.fs_bucket_exists(bucket) {
            Ok(())
        } else {
            Err(s3s::s3_error!(NoSuchBucket))
        }
    }
}
