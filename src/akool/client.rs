//! HTTP client for the Akool API (stub).

use std::time::Duration;

use super::{Analysis, ApiError, CreateTask, Task};
use crate::secret::Secret;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `x-api-key` header.
    ApiKey(Secret),
    /// getToken once, then `Authorization: Bearer`.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
}

/// Checked client configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub credentials: Credentials,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

/// The API client. Cheap to clone; clones share one connection pool and one token.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(_config: ClientConfig) -> Result<Client, ApiError> {
        todo!()
    }
    pub async fn analyze(&self, _video_url: &str) -> Result<Analysis, ApiError> {
        todo!()
    }
    pub async fn analysis_detail(&self, _id: &str) -> Result<Analysis, ApiError> {
        todo!()
    }
    pub async fn create_task(&self, _request: &CreateTask) -> Result<Task, ApiError> {
        todo!()
    }
    pub async fn task_detail(&self, _id: &str) -> Result<Task, ApiError> {
        todo!()
    }
}
