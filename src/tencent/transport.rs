//! An async client for the three Tencent Room REST calls drift repair needs.
//!
//! Every call is `POST {base}/v4/{service}/{api}?sdkappid=…&identifier=…&usersig=…&random=…&contenttype=json`
//! with a JSON body. Tencent answers HTTP 200 with
//! `{"ActionStatus":"OK"|"FAIL","ErrorCode":0,"ErrorInfo":"","RequestId":"…","Response":{…}}`
//! (other statuses only for network-level failures); [`TencentClient`] turns that into a typed
//! [`Answer`] or a [`TencentError`].
//!
//! One `reqwest::Client` serves all calls, so connections are reused; each call has a timeout
//! (5 s by default). The URL carries the UserSig, a credential, so no URL ever reaches an error
//! text or a log line.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    sync::Arc,
    time::Duration,
};

use reqwest::Url;
use serde_json::{Value, json};

use super::{
    answer::{self, CallbackConfig, LiveMembers, RoomDetails},
    answers::{Answer, check_status},
    errors::{BudgetError, NO_CALLBACK_CONFIG, TencentError, describe, from_reqwest, malformed},
    usersig::UserSigCache,
};
use crate::{
    callback::{Id, Product, SdkAppId, Seat},
    config::{DriftRepairConfig, Secret},
};

/// Rooms and members.
pub const ROOM_SERVICE: &str = "room_engine_http_srv";
/// Seats (mics).
pub const MIC_SERVICE: &str = "room_engine_http_mic";
/// TUILiveKit's rooms and members.
pub const LIVE_SERVICE: &str = "live_engine_http_srv";

/// TUIRoomKit's callback configuration.
pub const ROOM_CONFIG_SERVICE: &str = "room_config";
/// TUILiveKit's callback configuration.
pub const LIVE_CONFIG_SERVICE: &str = "live_config";

/// The service of `product`'s callback configuration calls (`get_callback`, `set_callback`,
/// `update_callback`).
pub fn callback_service(product: Product) -> &'static str {
    match product {
        Product::Room => ROOM_CONFIG_SERVICE,
        Product::Live => LIVE_CONFIG_SERVICE,
    }
}

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

    /// The apps this client has keys for.
    /// Every call first passes `gate` (the rate bound of drift repair).
    pub fn with_gate(mut self, gate: Arc<dyn RateGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn apps(&self) -> impl Iterator<Item = SdkAppId> + '_ {
        self.sigs.keys().copied()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `room_engine_http_srv/get_room_info`. [`TencentError::RoomNotFound`] when the room is
    /// gone.
    pub async fn get_room_info(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        self.room_info_of(ROOM_SERVICE, app, room).await
    }

    /// `live_engine_http_srv/get_room_info`: a TUILiveKit room, in the same shape.
    pub async fn get_live_room_info(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        self.room_info_of(LIVE_SERVICE, app, room).await
    }

    /// `live_engine_http_srv/get_member_list`, every page. Tencent lists at most 1,000
    /// members of a larger room, and refreshes the list about every 40 s; `member_count` is
    /// its count of the whole room, so a caller can tell a cut list.
    pub async fn get_live_member_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<LiveMembers>, TencentError> {
        let (members, pages) = self
            .member_pages(
                app,
                LIVE_SERVICE,
                "get_member_list",
                |next| json!({ "RoomId": room.as_str(), "Next": next }),
            )
            .await?;
        let member_count = answer::live_member_count(&pages)?;
        let data = LiveMembers {
            members,
            member_count,
        };
        Ok(Answer {
            data,
            raw: Value::Array(pages),
        })
    }

    /// Every page of a member list: the members in Tencent's order, each once, and the
    /// answers. `body` makes a page's request from the `Next` of the one before.
    async fn member_pages(
        &self,
        app: SdkAppId,
        service: &str,
        api: &str,
        body: impl Fn(&str) -> Value,
    ) -> Result<(Vec<Id>, Vec<Value>), TencentError> {
        let mut next = String::new();
        let mut pages = Vec::new();
        let mut members = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..self.options.max_member_pages {
            let raw = self.call(app, service, api, &body(&next)).await?;
            let (page, page_next) = answer::member_page(&raw)?;
            members.extend(page.into_iter().filter(|m| seen.insert(m.clone())));
            pages.push(raw);
            if page_next.is_empty() {
                return Ok((members, pages));
            }
            if page_next == next {
                return Err(malformed("Response.Next did not advance"));
            }
            next = page_next;
        }
        Err(TencentError::Malformed(format!(
            "the member list did not end within {} pages",
            self.options.max_member_pages
        )))
    }

    async fn room_info_of(
        &self,
        service: &str,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        let raw = self
            .call(
                app,
                service,
                "get_room_info",
                &json!({ "RoomId": room.as_str() }),
            )
            .await?;
        let data = answer::room_details(&raw)?;
        Ok(Answer { data, raw })
    }

    /// `room_engine_http_srv/get_room_member_list`, every page: the members in Tencent's order,
    /// each once.
    pub async fn get_room_member_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<Vec<Id>>, TencentError> {
        let count = self.options.member_page_size.max(1);
        let (members, pages) = self
            .member_pages(
                app,
                ROOM_SERVICE,
                "get_room_member_list",
                |next| json!({ "RoomId": room.as_str(), "Count": count, "Next": next }),
            )
            .await?;
        Ok(Answer {
            data: members,
            raw: Value::Array(pages),
        })
    }

    /// `room_engine_http_mic/get_seat_list`: every seat, free ones with `member: None`.
    pub async fn get_seat_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<Vec<Seat>>, TencentError> {
        let raw = self
            .call(
                app,
                MIC_SERVICE,
                "get_seat_list",
                &json!({ "RoomId": room.as_str() }),
            )
            .await?;
        let data = answer::seats_of_answer(&raw)?;
        Ok(Answer { data, raw })
    }

    /// `{room,live}_config/get_callback`: where Tencent sends `product`'s callbacks and which
    /// are switched on; `None` when the app has no configuration for it (`ErrorCode` 100301).
    pub async fn get_callback(
        &self,
        app: SdkAppId,
        product: Product,
    ) -> Result<Option<Answer<CallbackConfig>>, TencentError> {
        let raw = match self
            .call(app, callback_service(product), "get_callback", &json!({}))
            .await
        {
            Err(TencentError::Api {
                code: NO_CALLBACK_CONFIG,
                ..
            }) => return Ok(None),
            other => other?,
        };
        let data = answer::callback_config(&raw)?;
        Ok(Some(Answer { data, raw }))
    }

    /// `{room,live}_config/set_callback`: creates `product`'s configuration; `ErrorCode` 100300
    /// ([`CALLBACK_CONFIG_EXISTS`](super::CALLBACK_CONFIG_EXISTS)) when there is one already.
    pub async fn set_callback(
        &self,
        app: SdkAppId,
        product: Product,
        config: &CallbackConfig,
    ) -> Result<Answer<()>, TencentError> {
        self.write_callback(app, product, "set_callback", config)
            .await
    }

    /// `{room,live}_config/update_callback`: replaces the URL and the whole command list;
    /// `ErrorCode` 100301 ([`NO_CALLBACK_CONFIG`](super::NO_CALLBACK_CONFIG)) when there is no
    /// configuration to change.
    pub async fn update_callback(
        &self,
        app: SdkAppId,
        product: Product,
        config: &CallbackConfig,
    ) -> Result<Answer<()>, TencentError> {
        self.write_callback(app, product, "update_callback", config)
            .await
    }

    async fn write_callback(
        &self,
        app: SdkAppId,
        product: Product,
        api: &str,
        config: &CallbackConfig,
    ) -> Result<Answer<()>, TencentError> {
        let body = json!({ "Url": config.url, "CallbackCommandList": config.commands });
        let raw = self
            .call(app, callback_service(product), api, &body)
            .await?;
        Ok(Answer { data: (), raw })
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
