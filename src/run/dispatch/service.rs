//! The workers: what carries a [`Request`] out and answers it. [`Live`] calls the Akool API and
//! downloads from the CDN; unit tests of the loop use their own [`Service`] that records
//! requests and never answers, and feed the loop synthetic outcomes instead.
//!
//! A worker holds no job state and writes nothing but the download's own file.

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use crate::akool::Client;
use crate::download;
use crate::objstore::{ObjectStorage, UploadError};
use crate::run::dispatch::event::{Answer, Request};
use crate::store::Store;

/// The future of one request's answer.
pub type AnswerFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Carries requests out.
pub trait Service: Send + Sync {
    /// Start carrying out `request`; the future resolves to its answer.
    fn execute(&self, request: Request) -> AnswerFuture;
}

/// The real thing: the API client, and downloads over its HTTP connection pool.
pub struct Live {
    client: Client,
    bucket: Option<Bucket>,
}

/// Where uploads go, and where their progress is recorded as it happens.
struct Bucket {
    storage: Arc<ObjectStorage>,
    store: Store,
}

impl Live {
    pub fn new(client: Client) -> Live {
        Live {
            client,
            bucket: None,
        }
    }

    /// Uploads go to `storage`; each fact of an upload (created, part stored) is written to
    /// `store` as it becomes true, so a killed run resumes the upload instead of redoing it.
    pub fn with_bucket(mut self, storage: Arc<ObjectStorage>, store: Store) -> Live {
        self.bucket = Some(Bucket { storage, store });
        self
    }
}

impl Service for Live {
    fn execute(&self, request: Request) -> AnswerFuture {
        let client = self.client.clone();
        match request {
            Request::Analyze { video_url } => Box::pin(async move {
                let result = client.analyze(video_url.as_str()).await;
                Answer::Analyze { video_url, result }
            }),
            Request::AnalysisDetail {
                video_url,
                analysis_id,
            } => Box::pin(async move {
                let result = client.analysis_detail(&analysis_id).await;
                Answer::AnalysisDetail { video_url, result }
            }),
            Request::Create { job_id, body } => Box::pin(async move {
                let result = client.create_task(&body).await;
                Answer::Create { job_id, result }
            }),
            Request::TaskDetail {
                job_id,
                task_id,
                refresh,
            } => Box::pin(async move {
                let result = client.task_detail(&task_id).await;
                Answer::TaskDetail {
                    job_id,
                    refresh,
                    result,
                }
            }),
            Request::Download { request, mut etag } => Box::pin(async move {
                let result = download::download(client.http(), &request, &mut etag).await;
                Answer::Download {
                    job_id: request.job_id,
                    result,
                    etag,
                }
            }),
            Request::Upload {
                job_id,
                source,
                mut record,
            } => {
                let Some(bucket) = &self.bucket else {
                    let result = Err(UploadError::Internal("no object storage configured".into()));
                    return Box::pin(async move { Answer::Upload { job_id, result } });
                };
                let storage = Arc::clone(&bucket.storage);
                let store = bucket.store.clone();
                Box::pin(async move {
                    let id = job_id.to_string();
                    let result = storage
                        .upload(client.http(), &source, &mut record, |_, record| {
                            let text = serde_json::to_string(record).expect("records serialize");
                            if let Err(error) = store.put_upload(&id, Some(&text)) {
                                tracing::warn!(job = %id, "cannot record the upload's progress: {error}");
                            }
                        })
                        .await;
                    Answer::Upload { job_id, result }
                })
            }
        }
    }
}
