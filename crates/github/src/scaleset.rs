//! The client side of GitHub's runner scale sets (`../shared/spec/scaleset-protocol.md`): the
//! Actions service connection (registration token → service URL and admin token), scale set
//! management, JIT configs, the message session and its long-poll queue, acknowledgement and
//! `acquirejobs`. Typed models follow `actions/scaleset`'s `types.go` field by field.
//!
//! This is the protocol layer only: what a listener does with the messages (accounting,
//! capacity, warm runners) belongs to `airlock serve`.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// The API version the Actions service expects on every call.
pub const API_VERSION: &str = "6.0-preview";

/// Errors of the Actions service.
#[derive(Debug, thiserror::Error)]
pub enum ScaleSetError {
    /// Another session is live for this scale set (a second manager, or a crashed one whose
    /// session has not expired yet).
    #[error("scale set {scale_set}: another session is already open (409): another airlock serve, or one that crashed less than a few minutes ago, holds it")]
    SessionConflict {
        /// The scale set's id.
        scale_set: i64,
    },
    /// The message queue's token expired (401): refresh the session and poll again.
    #[error("the message queue token expired (401)")]
    QueueTokenExpired,
    /// The service answered an unexpected status.
    #[error("{request}: {status} {type_name}: {message}")]
    Status {
        /// `METHOD path` (no query, no token).
        request: String,
        /// The status.
        status: u16,
        /// The service's `typeName` (`…AgentExistsException`), if any.
        type_name: String,
        /// The service's `message`, or the start of the body.
        message: String,
    },
    /// Connection, TLS or timeout failure.
    #[error("{request}: network error")]
    Network {
        /// `METHOD path`.
        request: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A response body larger than [`MAX_BODY`] (refused, not read further).
    #[error("{request}: response body over {limit} bytes")]
    TooLarge {
        /// `METHOD path`.
        request: String,
        /// The limit.
        limit: usize,
    },
    /// A body that is not the documented shape.
    #[error("{request}: unexpected response body")]
    Decode {
        /// `METHOD path`.
        request: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ScaleSetError {
    /// Whether a retry may succeed (5xx, network errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A label of a scale set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// `System` for the scale set's own labels.
    #[serde(rename = "type")]
    pub kind: String,
    /// The label (`runs-on`).
    pub name: String,
}

/// A runner group of the organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerGroup {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Runners in it.
    #[serde(default)]
    pub size: i64,
    /// Whether it is the default group.
    #[serde(default, rename = "isDefaultGroup")]
    pub is_default: bool,
}

/// Settings of a scale set's runners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSetting {
    /// Runners take one job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// Elastic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_elastic: bool,
    /// Runners do not update themselves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_update: bool,
}

/// The scale set's statistics: what a manager scales by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Jobs available (GHES, before `acquirejobs`).
    #[serde(default)]
    pub total_available_jobs: i64,
    /// Jobs acquired.
    #[serde(default)]
    pub total_acquired_jobs: i64,
    /// Jobs assigned to the scale set (waiting or running): the runners needed.
    #[serde(default)]
    pub total_assigned_jobs: i64,
    /// Jobs running.
    #[serde(default)]
    pub total_running_jobs: i64,
    /// Runners registered.
    #[serde(default)]
    pub total_registered_runners: i64,
    /// Runners busy.
    #[serde(default)]
    pub total_busy_runners: i64,
    /// Runners idle.
    #[serde(default)]
    pub total_idle_runners: i64,
}

/// A runner scale set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerScaleSet {
    /// Its id (absent when creating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Its name: the `runs-on` label.
    pub name: String,
    /// The runner group it lives in.
    #[serde(default)]
    pub runner_group_id: i64,
    /// The group's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_group_name: Option<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Runner settings (the service spells this key with a capital R).
    #[serde(default, rename = "RunnerSetting")]
    pub runner_setting: RunnerSetting,
    /// Statistics, when the service includes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Statistics>,
}

/// A message session.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Its id.
    pub session_id: String,
    /// Who opened it.
    #[serde(default)]
    pub owner_name: String,
    /// The queue to long-poll.
    pub message_queue_url: String,
    /// The queue's token.
    pub message_queue_access_token: Secret,
    /// Statistics at opening.
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// A message of the queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Its id (acknowledge it, and poll with it as `lastMessageId`).
    pub message_id: i64,
    /// `RunnerScaleSetJobMessages`.
    pub message_type: String,
    /// A JSON array of job messages, encoded as a string.
    #[serde(default)]
    pub body: String,
    /// The scale set's statistics now.
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// Fields every job message has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// The request's id (what `acquirejobs` takes).
    #[serde(default)]
    pub runner_request_id: i64,
    /// `owner/name` or the repository's name.
    #[serde(default)]
    pub repository_name: String,
    /// The repository's owner.
    #[serde(default)]
    pub owner_name: String,
    /// The job's id.
    #[serde(default)]
    pub job_id: String,
    /// The workflow's ref.
    #[serde(default)]
    pub job_workflow_ref: String,
    /// The job's name.
    #[serde(default)]
    pub job_display_name: String,
    /// The workflow run.
    #[serde(default)]
    pub workflow_run_id: i64,
    /// The triggering event.
    #[serde(default)]
    pub event_name: String,
    /// The job's `runs-on` labels.
    #[serde(default)]
    pub request_labels: Vec<String>,
}

/// One job message of a message's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMessage {
    /// GHES: a job the scale set may acquire.
    Available {
        /// Where to acquire it.
        acquire_job_url: String,
        /// The job.
        job: JobInfo,
    },
    /// A job assigned to the scale set.
    Assigned(JobInfo),
    /// A runner of the scale set started the job.
    Started {
        /// The runner's id.
        runner_id: i64,
        /// The runner's name.
        runner_name: String,
        /// The job.
        job: JobInfo,
    },
    /// The job ended (`succeeded`, `failed`, `canceled`, …).
    Completed {
        /// How.
        result: String,
        /// The runner's id (0 when it never ran).
        runner_id: i64,
        /// The runner's name.
        runner_name: String,
        /// The job.
        job: JobInfo,
    },
    /// A type this client does not know (kept, so nothing is silently dropped).
    Other(String),
}

impl Message {
    /// The job messages of the body (a string holding a JSON array, possibly with a BOM).
    pub fn jobs(&self) -> Result<Vec<JobMessage>, serde_json::Error> {
        if self.body.trim().is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<serde_json::Value> =
            serde_json::from_str(self.body.trim_start_matches('\u{feff}'))?;
        raw.into_iter().map(job_message).collect()
    }
}

fn job_message(v: serde_json::Value) -> Result<JobMessage, serde_json::Error> {
    let kind = v["messageType"].as_str().unwrap_or_default().to_owned();
    let job: JobInfo = serde_json::from_value(v.clone())?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let n = |k: &str| v[k].as_i64().unwrap_or(0);
    Ok(match kind.as_str() {
        "JobAvailable" => JobMessage::Available {
            acquire_job_url: s("acquireJobUrl"),
            job,
        },
        "JobAssigned" => JobMessage::Assigned(job),
        "JobStarted" => JobMessage::Started {
            runner_id: n("runnerId"),
            runner_name: s("runnerName"),
            job,
        },
        "JobCompleted" => JobMessage::Completed {
            result: s("result"),
            runner_id: n("runnerId"),
            runner_name: s("runnerName"),
            job,
        },
        _ => JobMessage::Other(kind),
    })
}

/// A JIT runner configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JitRunnerConfig {
    /// The runner registered for it.
    pub runner: RunnerReference,
    /// Passed to the runner as `ACTIONS_RUNNER_INPUT_JITCONFIG`.
    #[serde(rename = "encodedJITConfig")]
    pub encoded_jit_config: Secret,
}

/// A runner of a scale set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerReference {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its scale set.
    #[serde(default)]
    pub runner_scale_set_id: i64,
}

/// What a poll of the queue returned.
#[derive(Debug, Clone)]
pub enum Poll {
    /// A message (200).
    Message(Message),
    /// Nothing within the long poll (202).
    Empty,
}

#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
}

/// Parses a body as the service sends it: JSON, possibly after a UTF-8 byte-order mark.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let b = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    serde_json::from_slice(b)
}

/// A connection to the Actions service with an admin token.
#[derive(Debug, Clone)]
pub struct ActionsService {
    http: reqwest::Client,
    url: String,
    admin: Secret,
}

/// `POST {api}/orgs/{org}/actions/runners/registration-token` (or `repos/{o}/{r}`) with an
/// installation token or PAT: a registration token for the Actions service connection.
pub async fn registration_token(
    http: &reqwest::Client,
    api_base: &str,
    scope_path: &str,
    token: &Secret,
) -> Result<Secret, ScaleSetError> {
    #[derive(Deserialize)]
    struct T {
        token: Secret,
    }
    let url = format!(
        "{}/{}/actions/runners/registration-token",
        api_base.trim_end_matches('/'),
        scope_path.trim_matches('/')
    );
    let req = http
        .post(&url)
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .header(ACCEPT, "application/vnd.github+json");
    let t: T = send(req, "POST registration-token").await?;
    Ok(t.token)
}

async fn send<T: DeserializeOwned>(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, ScaleSetError> {
    let body = send_raw(req, what).await?;
    parse_body(&body).map_err(|source| ScaleSetError::Decode {
        request: what.to_owned(),
        source,
    })
}

/// The largest response body read from the service: a message holds at most 50 job
/// messages of a few KiB each; anything far larger is refused rather than held in memory.
pub const MAX_BODY: usize = 16 << 20;

/// Reads a response body, at most [`MAX_BODY`] bytes.
async fn read_capped(mut resp: reqwest::Response, what: &str) -> Result<Vec<u8>, ScaleSetError> {
    let too_large = || ScaleSetError::TooLarge {
        request: what.to_owned(),
        limit: MAX_BODY,
    };
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| ScaleSetError::Network {
            request: what.to_owned(),
            source,
        })?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn send_raw(req: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, ScaleSetError> {
    let resp = req.send().await.map_err(|source| ScaleSetError::Network {
        request: what.to_owned(),
        source,
    })?;
    let status = resp.status();
    let body = read_capped(resp, what).await?;
    if status.is_success() {
        return Ok(body);
    }
    Err(status_error(what, status, &body))
}

fn status_error(what: &str, status: StatusCode, body: &[u8]) -> ScaleSetError {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct E {
        #[serde(default)]
        type_name: String,
        #[serde(default)]
        message: String,
    }
    let e: E = parse_body(body).unwrap_or_default();
    let message = if e.message.is_empty() {
        String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
    } else {
        e.message
    };
    ScaleSetError::Status {
        request: what.to_owned(),
        status: status.as_u16(),
        type_name: e.type_name,
        message,
    }
}

impl ActionsService {
    /// `POST {api}/actions/runner-registration` with the registration token: the service URL
    /// and an admin token for `config_url` (`https://github.com/{org}`).
    pub async fn connect(
        http: reqwest::Client,
        api_base: &str,
        config_url: &str,
        registration_token: &Secret,
    ) -> Result<Self, ScaleSetError> {
        #[derive(Deserialize)]
        struct C {
            url: String,
            token: Secret,
        }
        let req = http
            .post(format!(
                "{}/actions/runner-registration",
                api_base.trim_end_matches('/')
            ))
            .header(
                AUTHORIZATION,
                format!("RemoteAuth {}", registration_token.expose()),
            )
            .json(&serde_json::json!({ "url": config_url, "runner_event": "register" }));
        let c: C = send(req, "POST actions/runner-registration").await?;
        Ok(Self {
            http,
            url: c.url.trim_end_matches('/').to_owned(),
            admin: c.token,
        })
    }

    /// The service URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.http
            .request(
                method,
                format!("{}/{path}{sep}api-version={API_VERSION}", self.url),
            )
            .header(AUTHORIZATION, format!("Bearer {}", self.admin.expose()))
    }

    /// The runner group named `name`.
    pub async fn runner_group(&self, name: &str) -> Result<Option<RunnerGroup>, ScaleSetError> {
        let req = self
            .request(Method::GET, "_apis/runtime/runnergroups/")
            .query(&[("groupName", name)]);
        let l: List<RunnerGroup> = send(req, "GET runnergroups").await?;
        Ok(l.value.into_iter().find(|g| g.name == name))
    }

    /// The scale set named `name` in runner group `group_id`.
    pub async fn scale_set(
        &self,
        group_id: i64,
        name: &str,
    ) -> Result<Option<RunnerScaleSet>, ScaleSetError> {
        let req = self
            .request(Method::GET, "_apis/runtime/runnerscalesets")
            .query(&[
                ("runnerGroupId", group_id.to_string()),
                ("name", name.to_owned()),
            ]);
        let l: List<RunnerScaleSet> = send(req, "GET runnerscalesets").await?;
        Ok(l.value.into_iter().find(|s| s.name == name))
    }

    /// Creates a scale set.
    pub async fn create_scale_set(
        &self,
        s: &RunnerScaleSet,
    ) -> Result<RunnerScaleSet, ScaleSetError> {
        let req = self
            .request(Method::POST, "_apis/runtime/runnerscalesets")
            .json(s);
        send(req, "POST runnerscalesets").await
    }

    /// Updates scale set `id` (name, runner group, labels) to `s`.
    pub async fn update_scale_set(
        &self,
        id: i64,
        s: &RunnerScaleSet,
    ) -> Result<RunnerScaleSet, ScaleSetError> {
        let req = self
            .request(
                Method::PATCH,
                &format!("_apis/runtime/runnerscalesets/{id}"),
            )
            .json(s);
        send(req, "PATCH runnerscalesets/{id}").await
    }

    /// Deletes a scale set.
    pub async fn delete_scale_set(&self, id: i64) -> Result<(), ScaleSetError> {
        let req = self.request(
            Method::DELETE,
            &format!("_apis/runtime/runnerscalesets/{id}"),
        );
        send_raw(req, "DELETE runnerscalesets/{id}")
            .await
            .map(|_| ())
    }

    /// A JIT configuration for one runner of scale set `id`.
    pub async fn generate_jit_config(
        &self,
        id: i64,
        name: &str,
        work_folder: &str,
    ) -> Result<JitRunnerConfig, ScaleSetError> {
        let req = self
            .request(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{id}/generatejitconfig"),
            )
            .json(&serde_json::json!({ "name": name, "workFolder": work_folder }));
        send(req, "POST generatejitconfig").await
    }

    /// Opens the message session of scale set `id`; 409 is [`ScaleSetError::SessionConflict`].
    pub async fn create_session(&self, id: i64, owner: &str) -> Result<Session, ScaleSetError> {
        let req = self
            .request(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{id}/sessions"),
            )
            .json(&serde_json::json!({ "ownerName": owner }));
        match send(req, "POST sessions").await {
            Err(ScaleSetError::Status { status: 409, .. }) => {
                Err(ScaleSetError::SessionConflict { scale_set: id })
            }
            other => other,
        }
    }

    /// Refreshes a session's queue token.
    pub async fn refresh_session(&self, id: i64, session: &str) -> Result<Session, ScaleSetError> {
        let req = self.request(
            Method::PATCH,
            &format!("_apis/runtime/runnerscalesets/{id}/sessions/{session}"),
        );
        send(req, "PATCH sessions/{id}").await
    }

    /// Closes a session.
    pub async fn delete_session(&self, id: i64, session: &str) -> Result<(), ScaleSetError> {
        let req = self.request(
            Method::DELETE,
            &format!("_apis/runtime/runnerscalesets/{id}/sessions/{session}"),
        );
        send_raw(req, "DELETE sessions/{id}").await.map(|_| ())
    }

    /// Acquires jobs (GHES `JobAvailable`), with the queue token; returns those acquired.
    pub async fn acquire_jobs(
        &self,
        id: i64,
        queue_token: &Secret,
        request_ids: &[i64],
    ) -> Result<Vec<i64>, ScaleSetError> {
        let req = self
            .http
            .post(format!(
                "{}/_apis/runtime/runnerscalesets/{id}/acquirejobs?api-version={API_VERSION}",
                self.url
            ))
            .header(AUTHORIZATION, format!("Bearer {}", queue_token.expose()))
            .json(request_ids);
        let l: List<i64> = send(req, "POST acquirejobs").await?;
        Ok(l.value)
    }
}

/// A session's message queue.
#[derive(Debug, Clone)]
pub struct Queue {
    http: reqwest::Client,
    url: String,
    token: Secret,
}

impl Queue {
    /// The queue of `session`.
    pub fn of(http: reqwest::Client, session: &Session) -> Self {
        Self {
            http,
            url: session.message_queue_url.clone(),
            token: session.message_queue_access_token.clone(),
        }
    }

    /// The queue's token (what `acquirejobs` authenticates with).
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Long-polls for the next message after `last` with this manager's free capacity.
    /// 401 is [`ScaleSetError::QueueTokenExpired`].
    pub async fn poll(
        &self,
        last: Option<i64>,
        max_capacity: u32,
        timeout: Duration,
    ) -> Result<Poll, ScaleSetError> {
        let mut req = self
            .http
            .get(&self.url)
            .timeout(timeout)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .header(
                ACCEPT,
                format!("application/json; api-version={API_VERSION}"),
            )
            .header("X-ScaleSetMaxCapacity", max_capacity.to_string());
        if let Some(id) = last {
            req = req.query(&[("lastMessageId", id)]);
        }
        let what = "GET message queue";
        let resp = req.send().await.map_err(|source| ScaleSetError::Network {
            request: what.to_owned(),
            source,
        })?;
        let status = resp.status();
        let body = read_capped(resp, what).await?;
        match status {
            StatusCode::ACCEPTED => Ok(Poll::Empty),
            StatusCode::UNAUTHORIZED => Err(ScaleSetError::QueueTokenExpired),
            s if s.is_success() => {
                let m: Message = parse_body(&body).map_err(|source| ScaleSetError::Decode {
                    request: what.to_owned(),
                    source,
                })?;
                Ok(Poll::Message(m))
            }
            s => Err(status_error(what, s, &body)),
        }
    }

    /// Acknowledges message `id` (`DELETE {queue path}/{id}`, the query kept).
    pub async fn ack(&self, id: i64) -> Result<(), ScaleSetError> {
        let (path, query) = match self.url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.url.as_str(), None),
        };
        let url = match query {
            Some(q) => format!("{}/{id}?{q}", path.trim_end_matches('/')),
            None => format!("{}/{id}", path.trim_end_matches('/')),
        };
        let req = self
            .http
            .delete(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .header(CONTENT_TYPE, "application/json");
        send_raw(req, "DELETE message").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_with_a_bom_parse_and_job_messages_decode() {
        let body = "\u{feff}{\"messageId\":7,\"messageType\":\"RunnerScaleSetJobMessages\",\"body\":\"[{\\\"messageType\\\":\\\"JobAssigned\\\",\\\"runnerRequestId\\\":11,\\\"jobId\\\":\\\"j\\\",\\\"requestLabels\\\":[\\\"airlock\\\"]},{\\\"messageType\\\":\\\"JobCompleted\\\",\\\"runnerRequestId\\\":11,\\\"result\\\":\\\"canceled\\\",\\\"runnerId\\\":0},{\\\"messageType\\\":\\\"Surprise\\\"}]\",\"statistics\":{\"totalAssignedJobs\":1}}";
        let m: Message = parse_body(body.as_bytes()).expect("message");
        assert_eq!(m.message_id, 7);
        assert_eq!(m.statistics.map(|s| s.total_assigned_jobs), Some(1));
        let jobs = m.jobs().expect("jobs");
        assert_eq!(jobs.len(), 3);
        match &jobs[0] {
            JobMessage::Assigned(j) => {
                assert_eq!(j.runner_request_id, 11);
                assert_eq!(j.request_labels, ["airlock"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&jobs[1], JobMessage::Completed { result, .. } if result == "canceled"));
        assert_eq!(jobs[2], JobMessage::Other("Surprise".into()));
    }

    #[test]
    fn a_scale_set_serialises_as_the_service_spells_it() {
        let s = RunnerScaleSet {
            name: "airlock-untrusted".into(),
            runner_group_id: 1,
            labels: vec![Label {
                kind: "System".into(),
                name: "airlock-untrusted".into(),
            }],
            runner_setting: RunnerSetting {
                disable_update: true,
                ..RunnerSetting::default()
            },
            ..RunnerScaleSet::default()
        };
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["runnerGroupId"], 1);
        assert_eq!(v["RunnerSetting"]["disableUpdate"], true);
        assert_eq!(v["labels"][0]["type"], "System");
        assert!(v.get("id").is_none());
    }
}
