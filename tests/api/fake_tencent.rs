//! A stand-in for Tencent's Room REST API, on 127.0.0.1:0, for the client and the reconciler.
//!
//! It checks what Tencent checks: the path, `sdkappid`, `identifier`, `contenttype=json`, a
//! `random` that is a u32, and the UserSig, which it decodes and verifies on its own (base64,
//! zlib, HMAC-SHA256 here, not through the library under test), answering with Tencent's error
//! codes. Rooms are programmable per app; failures can be injected; every request is recorded.
//! Each app's callback configuration per product (`room_config`, `live_config`:
//! `get_callback`, `set_callback`, `update_callback`) is kept and checked as Tencent does.

#![allow(dead_code)] // Each test uses part of it.

use std::{
    collections::{BTreeMap, HashMap},
    io::Read,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use roomsync::callback::Product;
use serde_json::{Map, Value, json};
use sha2::Sha256;

pub const ADMIN: &str = "administrator";

/// Members Tencent returns per page when the request has no `Count`.
const DEFAULT_COUNT: usize = 50;
/// A Live member list: members per page, and most members listed at all.
const LIVE_PAGE: usize = 100;
const LIVE_LISTED: usize = 1000;

/// A room as Tencent would describe it.
#[derive(Debug, Clone, Default)]
pub struct FakeRoom {
    /// `Member_Account` values as sent (strings, or bare numbers for big numeric ids).
    pub members: Vec<Value>,
    /// `SeatList` entries as sent.
    pub seats: Vec<Value>,
    /// `MemberCount` of `get_room_info`; the member list's length when `None`.
    pub member_count: Option<i64>,
    /// Extra `RoomInfo` fields (e.g. `IsSeatEnabled`).
    pub info: Map<String, Value>,
}

impl FakeRoom {
    pub fn with_members<S: AsRef<str>>(members: &[S]) -> Self {
        Self {
            members: members.iter().map(|m| json!(m.as_ref())).collect(),
            ..Self::default()
        }
    }
}

/// What every request answers with while it is set, instead of the normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// `ErrorCode` 100001.
    Internal,
    /// Any error code, e.g. a common code such as 70001 "UserSig expired".
    Code(i64, &'static str),
    /// This HTTP status with an HTML body, as a gateway sends it.
    Http(u16),
    /// Answer only after this long (beyond the client's timeout).
    Hang(Duration),
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// Member lists that never end: every page has a new `Next`.
    EndlessPages,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Value,
    /// `RoomId` of the body, when there is one.
    pub room: Option<String>,
    pub at: Instant,
    /// The client's address: the same port means the same connection.
    pub peer: Option<SocketAddr>,
}

/// A product's callback configuration: the URL and the commands switched on, as sent.
pub type CallbackSetting = (String, Vec<String>);

#[derive(Default)]
struct State {
    keys: HashMap<i64, String>,
    rooms: BTreeMap<(i64, String), FakeRoom>,
    callbacks: HashMap<(i64, &'static str), CallbackSetting>,
    failure: Option<Failure>,
    requests: Vec<Recorded>,
    served: u64,
}

pub struct FakeTencent {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    server: ServerHandle,
}

impl FakeTencent {
    /// Starts a fake that knows these apps and their secret keys.
    pub async fn start(apps: &[(i64, &str)]) -> Self {
        let state = Arc::new(Mutex::new(State {
            keys: apps.iter().map(|(a, k)| (*a, (*k).to_owned())).collect(),
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
            server: handle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set_room(&self, app: i64, room: &str, state: FakeRoom) {
        self.lock().rooms.insert((app, room.to_owned()), state);
    }

    /// The room is gone: every call about it answers 100004.
    pub fn remove_room(&self, app: i64, room: &str) {
        self.lock().rooms.remove(&(app, room.to_owned()));
    }

    /// The app's callback configuration of `product`; `None`: there is none (100301).
    pub fn set_callback_config(
        &self,
        app: i64,
        product: Product,
        setting: Option<(&str, &[&str])>,
    ) {
        let key = (app, config_service(product));
        let mut state = self.lock();
        match setting {
            Some((url, commands)) => {
                let commands = commands.iter().map(|c| (*c).to_owned()).collect();
                state.callbacks.insert(key, (url.to_owned(), commands));
            }
            None => {
                state.callbacks.remove(&key);
            }
        }
    }

    pub fn callback_config(&self, app: i64, product: Product) -> Option<CallbackSetting> {
        self.lock()
            .callbacks
            .get(&(app, config_service(product)))
            .cloned()
    }

    /// The requests to the callback configuration APIs, as `(service, api)` in order.
    pub fn config_calls(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter_map(|r| {
                let rest = r.path.strip_prefix("/v4/")?;
                let (service, api) = rest.split_once('/')?;
                service
                    .ends_with("_config")
                    .then(|| (service.to_owned(), api.to_owned()))
            })
            .collect()
    }

    /// Every request fails this way until `fail(None)`.
    pub fn fail(&self, failure: Option<Failure>) {
        self.lock().failure = failure;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_for(&self, room: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.room.as_deref() == Some(room))
            .collect()
    }

    pub async fn stop(self) {
        // Not graceful: a hanging request must not hold the test up.
        self.server.stop(false).await;
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    // Decoded as Tencent's server would (form encoding).
    let query: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://fake/?{}", req.query_string()))
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let room = body_json
        .get("RoomId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let failure = {
        let mut state = state.lock().unwrap();
        state.requests.push(Recorded {
            path: req.path().to_owned(),
            query: query.clone(),
            body: body_json.clone(),
            room: room.clone(),
            at: Instant::now(),
            peer: req.peer_addr(),
        });
        state.served += 1;
        state.failure.clone()
    };
    match failure {
        Some(Failure::Http(status)) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .content_type("text/html")
                .body("<html><body>Bad Gateway</body></html>");
        }
        Some(Failure::Hang(delay)) => tokio::time::sleep(delay).await,
        Some(Failure::Garbage) => {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body("{\"ActionStatus\": \"OK\", ");
        }
        _ => {}
    }
    let answer = {
        let mut state = state.lock().unwrap();
        answer(&mut state, req.path(), &query, &body, failure.as_ref())
    };
    HttpResponse::Ok().json(answer)
}

fn config_service(product: Product) -> &'static str {
    match product {
        Product::Room => "room_config",
        Product::Live => "live_config",
    }
}

fn answer(
    state: &mut State,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    failure: Option<&Failure>,
) -> Value {
    let served = state.served;
    let fail = |code: i64, info: &str| json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info, "RequestId": format!("fake-{served}")});
    // What Tencent checks before it looks at the body.
    let api = match path {
        "/v4/room_engine_http_srv/get_room_info" => "get_room_info",
        "/v4/room_engine_http_srv/get_room_member_list" => "get_room_member_list",
        "/v4/room_engine_http_mic/get_seat_list" => "get_seat_list",
        // TUILiveKit: rooms in the same shape; members without `Count`, at most 1,000 listed.
        "/v4/live_engine_http_srv/get_room_info" => "get_room_info",
        "/v4/live_engine_http_srv/get_member_list" => "live_get_member_list",
        "/v4/room_config/get_callback" | "/v4/live_config/get_callback" => "get_callback",
        "/v4/room_config/set_callback" | "/v4/live_config/set_callback" => "set_callback",
        "/v4/room_config/update_callback" | "/v4/live_config/update_callback" => "update_callback",
        _ => return fail(60009, "request resource error"),
    };
    if query.get("contenttype").map(String::as_str) != Some("json") {
        return fail(60002, "contenttype must be json");
    }
    if query
        .get("random")
        .and_then(|r| r.parse::<u32>().ok())
        .is_none()
    {
        return fail(60002, "random must be a 32-bit unsigned integer");
    }
    let Some(app) = query.get("sdkappid").and_then(|a| a.parse::<i64>().ok()) else {
        return fail(60012, "sdkappid missing");
    };
    let Some(key) = state.keys.get(&app) else {
        return fail(70020, "sdkappid not found");
    };
    let identifier = query.get("identifier").map(String::as_str).unwrap_or("");
    let Some(usersig) = query.get("usersig") else {
        return fail(70003, "usersig missing");
    };
    if let Err((code, info)) = check_usersig(usersig, key, app, identifier) {
        return fail(code, info);
    }
    if identifier != ADMIN {
        return fail(60010, "requires an App administrator");
    }
    match failure {
        Some(Failure::Internal) => return fail(100_001, "internal error"),
        Some(Failure::Code(code, info)) => return fail(*code, info),
        _ => {}
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return fail(60003, "request JSON parse error");
    };
    if api.ends_with("_callback") {
        let service = if path.starts_with("/v4/room_config/") {
            "room_config"
        } else {
            "live_config"
        };
        return match callback_config(state, app, service, api, &request) {
            Ok(response) => json!({
                "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
                "RequestId": format!("fake-{served}"), "Response": response
            }),
            Err((code, info)) => fail(code, info),
        };
    }
    let Some(room_id) = request.get("RoomId").and_then(Value::as_str) else {
        return fail(100_002, "RoomId is required");
    };
    let Some(room) = state.rooms.get(&(app, room_id.to_owned())) else {
        return fail(100_004, "room not exist");
    };
    let response = match api {
        "get_room_info" => {
            let mut info = room.info.clone();
            info.insert("RoomId".into(), json!(room_id));
            info.insert("RoomName".into(), json!(format!("name of {room_id}")));
            info.insert("RoomType".into(), json!("Meeting"));
            info.insert("Owner_Account".into(), json!("owner"));
            info.insert("MaxMemberCount".into(), json!(10_000));
            info.insert(
                "MemberCount".into(),
                json!(room.member_count.unwrap_or(room.members.len() as i64)),
            );
            json!({"RoomInfo": info})
        }
        "get_room_member_list" => {
            if failure == Some(&Failure::EndlessPages) {
                json!({"MemberList": [], "Next": format!("again-{served}")})
            } else {
                let count = request
                    .get("Count")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_COUNT, |c| c.clamp(1, 1000) as usize);
                let start = match request.get("Next").and_then(Value::as_str).unwrap_or("") {
                    "" => 0,
                    token => match decode_next(token) {
                        Some(offset) => offset,
                        None => return fail(100_002, "invalid Next"),
                    },
                };
                let end = (start + count).min(room.members.len());
                let page: Vec<Value> = room.members[start.min(end)..end]
                    .iter()
                    .map(|m| json!({"Member_Account": m, "NameCard": "", "Role": "Member", "Marks": [], "CustomInfo": ""}))
                    .collect();
                let next = if end < room.members.len() {
                    encode_next(end)
                } else {
                    String::new()
                };
                json!({"MemberList": page, "Next": next})
            }
        }
        "live_get_member_list" => {
            let listed = &room.members[..room.members.len().min(LIVE_LISTED)];
            let start = match request.get("Next").and_then(Value::as_str).unwrap_or("") {
                "" => 0,
                token => match decode_next(token) {
                    Some(offset) => offset,
                    None => return fail(100_002, "invalid Next"),
                },
            };
            let end = (start + LIVE_PAGE).min(listed.len());
            let page: Vec<Value> = listed[start.min(end)..end]
                .iter()
                .map(|m| json!({"Member_Account": m}))
                .collect();
            let next = if end < listed.len() {
                encode_next(end)
            } else {
                String::new()
            };
            json!({"MemberList": page, "Next": next, "MemberCount": room.member_count.unwrap_or(room.members.len() as i64)})
        }
        _ => json!({"SeatList": room.seats}),
    };
    json!({
        "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
        "RequestId": format!("fake-{served}"), "Response": response
    })
}

/// `get_callback`, `set_callback`, `update_callback` of one product: Tencent's checks and its
/// private errors (100300 exists already, 100301 none, 100002 invalid parameter).
fn callback_config(
    state: &mut State,
    app: i64,
    service: &'static str,
    api: &str,
    request: &Map<String, Value>,
) -> Result<Value, (i64, &'static str)> {
    let key = (app, service);
    if api == "get_callback" {
        let (url, commands) = state
            .callbacks
            .get(&key)
            .ok_or((100_301, "callback configuration not exist"))?;
        return Ok(json!({"Url": url, "CallbackCommandList": commands}));
    }
    let url = request
        .get("Url")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or((100_002, "Url must start with http or https"))?;
    let commands = match request.get("CallbackCommandList") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or((100_002, "CallbackCommandList must be an array of strings"))?,
        _ => return Err((100_002, "CallbackCommandList must be an array of strings")),
    };
    let exists = state.callbacks.contains_key(&key);
    match (api, exists) {
        ("set_callback", true) => return Err((100_300, "callback configuration already exist")),
        ("update_callback", false) => return Err((100_301, "callback configuration not exist")),
        _ => {}
    }
    state.callbacks.insert(key, (url.to_owned(), commands));
    Ok(json!({}))
}

/// An opaque cursor, as Tencent's is: not just the offset in decimal.
fn encode_next(offset: usize) -> String {
    format!("c{:x}", (offset as u64) ^ 0x5eed_f00d)
}

fn decode_next(token: &str) -> Option<usize> {
    let hex = token.strip_prefix('c')?;
    u64::from_str_radix(hex, 16)
        .ok()
        .map(|v| (v ^ 0x5eed_f00d) as usize)
}

/// TLSSigAPIv2 verification, written from Tencent's description (not the library's code):
/// `*`→`+`, `-`→`/`, `_`→`=`, base64, zlib, JSON, then HMAC-SHA256 of the signed text with the
/// app's key, expiry, and that the signature is for this app and identifier.
fn check_usersig(
    usersig: &str,
    key: &str,
    app: i64,
    identifier: &str,
) -> Result<(), (i64, &'static str)> {
    const PARSE: (i64, &str) = (70003, "UserSig parse failed");
    let standard: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = STANDARD.decode(standard).map_err(|_| PARSE)?;
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|_| PARSE)?;
    let doc: Value = serde_json::from_str(&text).map_err(|_| PARSE)?;
    let field = |name: &str| doc.get(name).ok_or(PARSE);
    if field("TLS.ver")? != "2.0" {
        return Err(PARSE);
    }
    let sig_identifier = field("TLS.identifier")?.as_str().ok_or(PARSE)?;
    let sig_app = field("TLS.sdkappid")?.as_i64().ok_or(PARSE)?;
    let time = field("TLS.time")?.as_i64().ok_or(PARSE)?;
    let expire = field("TLS.expire")?.as_i64().ok_or(PARSE)?;
    let sig = STANDARD
        .decode(field("TLS.sig")?.as_str().ok_or(PARSE)?)
        .map_err(|_| PARSE)?;
    let signed = format!(
        "TLS.identifier:{sig_identifier}\nTLS.sdkappid:{sig_app}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    if mac.verify_slice(&sig).is_err() {
        return Err((70009, "UserSig verification failed"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if now > time + expire {
        return Err((70001, "UserSig expired"));
    }
    if sig_identifier != identifier {
        return Err((70013, "identifier does not match the UserSig"));
    }
    if sig_app != app {
        return Err((70014, "sdkappid does not match the UserSig"));
    }
    Ok(())
}
