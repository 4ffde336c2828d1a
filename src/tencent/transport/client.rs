//! The client itself: its tuning, the rate bound it passes, and one signed REST call with its
//! answer checked; the typed calls in `rooms` and `callbacks` are built on [`TencentClient::call`].

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use reqwest::Url;
use serde_json::Value;

use crate::{
    callback::SdkAppId,
    config::{DriftRepairConfig, Secret},
    tencent::{
        answers::check_status,
        errors::{BudgetError, TencentError, describe, from_reqwest},
        usersig::UserSigCache,
    },
};

/// Tencent's reconciliation deadline per call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Members asked for per page: Tencent's documented default (it documents no maximum, so a
/// larger page is not assumed to be accepted).
pub const DEFAULT_MEMBER_PAGE_SIZE: u32 = 50;
/// A member list longer than this many pages is refused as [`TencentError::Malformed`]: with
/// the default page size that is 25,000 members, well past the 10,000 a room can hold, so only
/// a server that never ends its list gets there.
pub const DEFAULT_MAX_MEMBER_PAGES: usize = 500;
/// Tuning of a [`TencentClient`]; `Default` is what production uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Whole-call deadline: connect, send, and read the answer.
    pub timeout: Duration,
    /// `Count` of each `get_room_member_list` page (at least 1).
    pub member_page_size: u32,
    /// See [`DEFAULT_MAX_MEMBER_PAGES`].
    pub max_member_pages: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            member_page_size: DEFAULT_MEMBER_PAGE_SIZE,
            max_member_pages: DEFAULT_MAX_MEMBER_PAGES,
        }
    }
}

/// The client. Cheap to share (`Arc` it, or clone: clones share connections and UserSigs).
#[derive(Clone)]
pub struct TencentClient {
    http: reqwest::Client,
    base: Url,
    admin_account: String,
    sigs: Arc<BTreeMap<SdkAppId, UserSigCache>>,
    options: ClientOptions,
    gate: Option<Arc<dyn RateGate>>,
}

/// Admits each REST call (every page of a member list too) within a rate bound that may be
/// shared with other processes (the reconciler's is).
pub trait RateGate: Send + Sync {
    /// Returns once one more call for `app` is within the bound; an error when it is not
    /// (then no call is made).
    fn admit(&self, app: SdkAppId) -> futures_util::future::BoxFuture<'_, Result<(), BudgetError>>;
}

impl fmt::Debug for TencentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentClient")
            .field("base", &self.base.as_str())
            .field("admin_account", &self.admin_account)
            .field("apps", &self.sigs.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TencentClient {
    /// The production client for a drift-repair configuration.
    pub fn new(config: &DriftRepairConfig) -> Result<Self, TencentError> {
        Self::with_options(
            &config.api_base,
            &config.admin_account,
            &config.keys,
            ClientOptions::default(),
        )
    }

    /// A client with explicit tuning (tests use a short timeout and small pages).
    pub fn with_options(
        api_base: &Url,
        admin_account: &str,
        keys: &BTreeMap<SdkAppId, Secret>,
        options: ClientOptions,
    ) -> Result<Self, TencentError> {
        // rustls, verified against the system's root certificates (the container image ships
        // them).
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("roomsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TencentError::Network(describe(&e)))?;
        let sigs = keys
            .iter()
            .map(|(app, key)| (*app, UserSigCache::new(key.clone(), *app, admin_account)))
            .collect();
        Ok(Self {
            http,
            base: api_base.clone(),
            admin_account: admin_account.to_owned(),
            sigs: Arc::new(sigs),
            options,
            gate: None,
        })
    }

    /// Every call first passes `gate` (the rate bound of drift repair).
    pub fn with_gate(mut self, gate: Arc<dyn RateGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The apps this client has keys for.
    pub fn apps(&self) -> impl Iterator<Item = SdkAppId> + '_ {
        self.sigs.keys().copied()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// One REST call: the whole answer when `ActionStatus` is OK and `ErrorCode` 0, else the
    /// error it stands for. The building block of the typed calls; usable for others.
    pub async fn call(
        &self,
        app: SdkAppId,
        service: &str,
        api: &str,
        body: &Value,
    ) -> Result<Value, TencentError> {
        let sigs = self.sigs.get(&app).ok_or(TencentError::NoKey(app.get()))?;
        if let Some(gate) = &self.gate {
            gate.admit(app).await.map_err(TencentError::Budget)?;
        }
        let sig = sigs.get();
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/v4/{service}/{api}",
            self.base.path().trim_end_matches('/')
        ));
        url.query_pairs_mut()
            .append_pair("sdkappid", &app.get().to_string())
            .append_pair("identifier", &self.admin_account)
            .append_pair("usersig", sig.expose())
            .append_pair("random", &rand::random::<u32>().to_string())
            .append_pair("contenttype", "json");
        let result = self.send(url, body).await;
        tracing::debug!(
            sdk_app_id = app.get(),
            service,
            api,
            outcome = result
                .as_ref()
                .err()
                .map_or("ok", TencentError::error_code_label),
            "Tencent REST call"
        );
        result
    }

    async fn send(&self, url: Url, body: &Value) -> Result<Value, TencentError> {
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(TencentError::Http(status.as_u16()));
        }
        let bytes = response.bytes().await.map_err(from_reqwest)?;
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TencentError::Malformed(format!("not JSON: {e}")))?;
        check_status(answer)
    }
}
