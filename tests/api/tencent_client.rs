//! The Tencent REST client against the fake Tencent server: answer shapes, pagination, error
//! mapping, timeout, and that the key never shows.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use reqwest::Url;
use roomsync::{
    callback::{Id, SdkAppId},
    config::Secret,
    tencent::{ClientOptions, TencentClient, TencentError},
};
use serde_json::{Value, json};

use crate::fake_tencent::{ADMIN, Failure, FakeRoom, FakeTencent};

const APP: i64 = 1_400_000_001;
const KEY: &str = "0f3a9c1e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf0246";

fn app() -> SdkAppId {
    SdkAppId::parse(&APP.to_string()).unwrap()
}

fn room(id: &str) -> Id {
    Id::parse(id).unwrap()
}

fn client_with(fake: &FakeTencent, key: &str, options: ClientOptions) -> TencentClient {
    let keys = BTreeMap::from([(app(), Secret::new(key))]);
    TencentClient::with_options(&Url::parse(&fake.base_url).unwrap(), ADMIN, &keys, options)
        .expect("client builds")
}

fn client(fake: &FakeTencent) -> TencentClient {
    client_with(fake, KEY, ClientOptions::default())
}

async fn fake() -> FakeTencent {
    FakeTencent::start(&[(APP, KEY)]).await
}

#[tokio::test]
async fn room_info() {
    let fake = fake().await;
    let mut state = FakeRoom::with_members(&["alice", "bob", "carol"]);
    state.info.insert("IsSeatEnabled".into(), json!("true"));
    fake.set_room(APP, "r1", state);
    let answer = client(&fake)
        .get_room_info(app(), &room("r1"))
        .await
        .unwrap();
    assert_eq!(answer.data.member_count, Some(3));
    assert_eq!(answer.data.is_seat_enabled, Some(true));
    assert_eq!(answer.data.fields["RoomId"], "r1");
    assert_eq!(answer.raw["ActionStatus"], "OK");
    assert_eq!(answer.raw["Response"]["RoomInfo"]["MemberCount"], 3);
    assert!(
        answer.raw["RequestId"]
            .as_str()
            .unwrap()
            .starts_with("fake-")
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v4/room_engine_http_srv/get_room_info");
    assert_eq!(request.body, json!({"RoomId": "r1"}));
    assert_eq!(request.query["sdkappid"], APP.to_string());
    assert_eq!(request.query["identifier"], ADMIN);
    assert_eq!(request.query["contenttype"], "json");
    request.query["random"].parse::<u32>().unwrap();
    fake.stop().await;
}

#[tokio::test]
async fn member_list_reads_every_page() {
    let fake = fake().await;
    let members: Vec<String> = (0..7).map(|i| format!("user-{i}")).collect();
    fake.set_room(APP, "r1", FakeRoom::with_members(&members));
    let options = ClientOptions {
        member_page_size: 3,
        ..ClientOptions::default()
    };
    let answer = client_with(&fake, KEY, options)
        .get_room_member_list(app(), &room("r1"))
        .await
        .unwrap();
    let got: Vec<&str> = answer.data.iter().map(Id::as_str).collect();
    assert_eq!(got, members);
    // The payload keeps each page's answer.
    let pages = answer.raw.as_array().unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[2]["Response"]["Next"], "");

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/v4/room_engine_http_srv/get_room_member_list")
    );
    assert_eq!(
        requests[0].body,
        json!({"RoomId": "r1", "Count": 3, "Next": ""})
    );
    // Each later page asks with the token of the page before.
    for (page, request) in pages.iter().zip(&requests[1..]) {
        assert_eq!(request.body["Next"], page["Response"]["Next"]);
    }
    fake.stop().await;
}

#[tokio::test]
async fn a_room_of_ten_thousand_members_with_the_longest_ids() {
    let fake = fake().await;
    let members: Vec<String> = (0..10_000).map(|i| format!("{i:0>256}")).collect();
    fake.set_room(APP, "big", FakeRoom::with_members(&members));
    let started = Instant::now();
    let answer = client(&fake)
        .get_room_member_list(app(), &room("big"))
        .await
        .unwrap();
    assert_eq!(answer.data.len(), 10_000);
    assert!(answer.data.iter().all(|m| m.as_str().len() == 256));
    assert_eq!(answer.data.iter().collect::<HashSet<_>>().len(), 10_000);
    // 50 a page, Tencent's default.
    assert_eq!(fake.requests().len(), 200);
    // One connection, reused for every page.
    let peers: HashSet<_> = fake.requests().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    fake.stop().await;
}

#[tokio::test]
async fn numeric_accounts_keep_every_digit() {
    let fake = fake().await;
    let big: Value = serde_json::from_str("123456789012345678901234567890").unwrap();
    let state = FakeRoom {
        members: vec![big.clone(), json!("plain")],
        seats: vec![json!({"Index": 0, "Member_Account": big})],
        ..FakeRoom::default()
    };
    fake.set_room(APP, "r1", state);
    let client = client(&fake);
    let members = client
        .get_room_member_list(app(), &room("r1"))
        .await
        .unwrap();
    assert_eq!(members.data[0].as_str(), "123456789012345678901234567890");
    let seats = client.get_seat_list(app(), &room("r1")).await.unwrap();
    assert_eq!(
        seats.data[0].member.as_ref().unwrap().as_str(),
        "123456789012345678901234567890"
    );
    assert_eq!(
        seats.raw["Response"]["SeatList"][0]["Member_Account"].to_string(),
        "123456789012345678901234567890"
    );
    fake.stop().await;
}

#[tokio::test]
async fn seat_list() {
    let fake = fake().await;
    let state = FakeRoom {
        seats: vec![
            json!({"Index": 0, "Member_Account": "alice", "IsTakenDisabled": false, "IsVideoDisabled": "true", "IsAudioDisabled": "false"}),
            json!({"Index": 1, "Member_Account": "", "IsTakenDisabled": "true"}),
            json!({"Index": 2}),
        ],
        ..FakeRoom::default()
    };
    fake.set_room(APP, "r1", state);
    let answer = client(&fake)
        .get_seat_list(app(), &room("r1"))
        .await
        .unwrap();
    let seats = answer.data;
    assert_eq!(seats.len(), 3);
    assert_eq!(seats[0].member.as_ref().unwrap().as_str(), "alice");
    assert!(
        seats[0].is_video_disabled && !seats[0].is_audio_disabled && !seats[0].is_taken_disabled
    );
    assert!(seats[1].member.is_none() && seats[1].is_taken_disabled);
    assert!(seats[2].member.is_none() && !seats[2].is_taken_disabled);
    assert_eq!(
        answer.raw["Response"]["SeatList"].as_array().unwrap().len(),
        3
    );
    assert_eq!(
        fake.requests()[0].path,
        "/v4/room_engine_http_mic/get_seat_list"
    );
    fake.stop().await;
}

#[tokio::test]
async fn a_missing_room_is_room_not_found_for_every_call() {
    let fake = fake().await;
    fake.set_room(APP, "r1", FakeRoom::with_members(&["a"]));
    fake.remove_room(APP, "r1");
    let client = client(&fake);
    let gone = room("r1");
    assert_eq!(
        client.get_room_info(app(), &gone).await.unwrap_err(),
        TencentError::RoomNotFound
    );
    assert_eq!(
        client.get_room_member_list(app(), &gone).await.unwrap_err(),
        TencentError::RoomNotFound
    );
    assert_eq!(
        client.get_seat_list(app(), &gone).await.unwrap_err(),
        TencentError::RoomNotFound
    );
    fake.stop().await;
}

#[tokio::test]
async fn each_failure_maps_to_its_error() {
    let fake = fake().await;
    fake.set_room(APP, "r1", FakeRoom::with_members(&["a"]));
    let client = client(&fake);
    let r1 = room("r1");

    fake.fail(Some(Failure::Internal));
    let err = client.get_room_info(app(), &r1).await.unwrap_err();
    assert_eq!(
        err,
        TencentError::Api {
            code: 100_001,
            info: "internal error".into()
        }
    );
    assert!(err.is_retryable() && !err.is_auth_error());
    assert_eq!(err.error_code_label(), "100001");

    fake.fail(Some(Failure::Code(70_001, "UserSig expired")));
    let err = client.get_room_member_list(app(), &r1).await.unwrap_err();
    assert_eq!(err.code(), Some(70_001));
    assert!(err.is_auth_error() && !err.is_retryable());

    fake.fail(Some(Failure::Http(502)));
    let err = client.get_seat_list(app(), &r1).await.unwrap_err();
    assert_eq!(err, TencentError::Http(502));
    assert!(err.is_retryable());

    fake.fail(Some(Failure::Garbage));
    let err = client.get_room_info(app(), &r1).await.unwrap_err();
    assert!(matches!(err, TencentError::Malformed(_)), "{err:?}");

    fake.fail(None);
    assert!(client.get_room_info(app(), &r1).await.is_ok());
    fake.stop().await;
}

#[tokio::test]
async fn a_server_that_never_ends_the_list_is_cut_off() {
    let fake = fake().await;
    fake.set_room(APP, "r1", FakeRoom::with_members(&["a"]));
    fake.fail(Some(Failure::EndlessPages));
    let options = ClientOptions {
        max_member_pages: 5,
        ..ClientOptions::default()
    };
    let err = client_with(&fake, KEY, options)
        .get_room_member_list(app(), &room("r1"))
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::Malformed(_)), "{err:?}");
    assert_eq!(fake.requests().len(), 5);
    fake.stop().await;
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let fake = fake().await;
    fake.set_room(APP, "r1", FakeRoom::with_members(&["a"]));
    fake.fail(Some(Failure::Hang(Duration::from_secs(5))));
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let err = client_with(&fake, KEY, options)
        .get_room_info(app(), &room("r1"))
        .await
        .unwrap_err();
    assert_eq!(err, TencentError::Timeout);
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ClientOptions::default().timeout, Duration::from_secs(5));
    fake.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keys = BTreeMap::from([(app(), Secret::new(KEY))]);
    let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let client =
        TencentClient::with_options(&base, ADMIN, &keys, ClientOptions::default()).unwrap();
    let err = client.get_room_info(app(), &room("r1")).await.unwrap_err();
    assert!(matches!(err, TencentError::Network(_)), "{err:?}");
    assert!(err.is_retryable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("usersig"), "{shown}");
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_never_shown() {
    let fake = fake().await;
    fake.set_room(APP, "r1", FakeRoom::with_members(&["a"]));
    let wrong = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    let client = client_with(&fake, wrong, ClientOptions::default());
    let err = client.get_room_info(app(), &room("r1")).await.unwrap_err();
    assert_eq!(err.code(), Some(70_009));
    assert!(err.is_auth_error());
    let usersig = fake.requests()[0].query["usersig"].clone();
    let shown = format!("{err} {err:?} {client:?}");
    for secret in [wrong, KEY, usersig.as_str()] {
        assert!(!shown.contains(secret), "{shown}");
    }
    fake.stop().await;
}

#[tokio::test]
async fn an_app_without_a_key_is_refused_locally() {
    let fake = fake().await;
    let other = SdkAppId::parse("1400000002").unwrap();
    let err = client(&fake)
        .get_room_info(other, &room("r1"))
        .await
        .unwrap_err();
    assert_eq!(err, TencentError::NoKey(1_400_000_002));
    assert!(fake.requests().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn one_usersig_and_a_fresh_random_per_request() {
    let fake = fake().await;
    fake.set_room(APP, "r1", FakeRoom::with_members(&["a"]));
    let client = client(&fake);
    for _ in 0..5 {
        client.get_room_info(app(), &room("r1")).await.unwrap();
    }
    let requests = fake.requests();
    let sigs: HashSet<_> = requests
        .iter()
        .map(|r| r.query["usersig"].clone())
        .collect();
    assert_eq!(sigs.len(), 1, "the UserSig is cached");
    let randoms: HashSet<_> = requests.iter().map(|r| r.query["random"].clone()).collect();
    assert!(randoms.len() >= 4, "{randoms:?}");
    fake.stop().await;
}
