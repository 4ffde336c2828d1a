//! `roomsync tencent check` and `roomsync tencent configure`
//! (docs/operations.md#checking-tencents-configuration): the real binary against the fake
//! Tencent server, without a database. Exit statuses, one line per finding, and that neither
//! the key nor a UserSig shows.

use roomsync::callback::Product;

use crate::fake_tencent::FakeTencent;

const APP: i64 = 1_400_000_001;
const OTHER_APP: i64 = 1_400_000_002;
const KEY_A: &str = "3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f5e1f0a3c2b4d6e8f0a1c3e5b7d9f1a";
const KEY_B: &str = "9e1b3d5f5e1f0a3c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c";
const OURS: &str = "https://rooms.example.com/callback";

/// Written out, not taken from the library: what Tencent's console lists for each product.
const ROOM_COMMANDS: [&str; 6] = [
    "Room.CallbackAfterCreateRoom",
    "Room.CallbackAfterDestroyRoom",
    "Room.CallbackAfterUpdateRoomInfo",
    "Room.CallbackAfterMemberEnter",
    "Room.CallbackAfterMemberLeave",
    "Mic.CallbackAfterSeatInfoChanged",
];
const LIVE_COMMANDS: [&str; 4] = [
    "Live.CallbackAfterCreateRoom",
    "Live.CallbackAfterDestroyRoom",
    "Live.CallbackAfterUpdateRoomInfo",
    "Live.CallbackAfterMemberStateChanged",
];

async fn fake() -> FakeTencent {
    FakeTencent::start(&[(APP, KEY_A), (OTHER_APP, KEY_B)]).await
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The environment of one run; `None` leaves a variable unset.
struct Env<'a> {
    api_base: &'a str,
    keys: Option<String>,
    public_url: Option<&'a str>,
    token: Option<&'a str>,
    log: &'a str,
}

impl<'a> Env<'a> {
    fn new(api_base: &'a str) -> Self {
        Self {
            api_base,
            keys: Some(format!("{APP}={KEY_A},{OTHER_APP}={KEY_B}")),
            public_url: Some(OURS),
            token: Some("console-token"),
            log: "warn",
        }
    }
}

/// Runs `roomsync tencent ARGS`. DATABASE_URL names a closed port: these commands must not
/// connect to the database.
async fn run(env: &Env<'_>, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_roomsync"));
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", "postgres://roomsync@127.0.0.1:9/unused")
        .env("SDK_APP_ID", format!("{APP},{OTHER_APP}"))
        .env("TENCENT_API_BASE", env.api_base)
        .env("RUST_LOG", env.log)
        .arg("tencent")
        .args(args);
    for (var, value) in [
        ("TENCENT_SECRET_KEY", env.keys.as_deref()),
        ("PUBLIC_CALLBACK_URL", env.public_url),
        ("CALLBACK_TOKEN", env.token),
    ] {
        if let Some(value) = value {
            command.env(var, value);
        }
    }
    // Bounded: each REST call times out after 5 s, and there are a few.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("roomsync runs");
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let text = run.text();
    for secret in [KEY_A, KEY_B, "usersig=", "console-token"] {
        assert!(!text.contains(secret), "{secret} shows: {text}");
    }
    run
}

fn owned(commands: &[&str]) -> Vec<String> {
    commands.iter().map(|c| (*c).to_owned()).collect()
}

#[tokio::test]
async fn check_passes_with_a_correct_configuration() {
    let fake = fake().await;
    fake.set_callback_config(APP, Product::Room, Some((OURS, &ROOM_COMMANDS)));
    // The other app uses TUILiveKit, with Tencent's older name for one command and the host
    // written in capitals.
    let mut live = LIVE_COMMANDS;
    live[3] = "Live.CallbackMemberStateChanged";
    fake.set_callback_config(
        OTHER_APP,
        Product::Live,
        Some(("https://ROOMS.example.com:443/callback", &live)),
    );
    // At the most verbose log level: still neither key nor UserSig (checked by `run`).
    let mut env = Env::new(&fake.base_url);
    env.log = "trace";
    let ok = run(&env, &["check"]).await;
    assert_eq!(ok.code, Some(0), "{}", ok.text());
    for line in [
        &format!("app {APP} Room: Tencent calls {OURS} with 6 commands on"),
        &format!("app {APP} Room: all right"),
        &format!("app {APP} Live: note: not in use"),
        &format!("app {OTHER_APP} Live: all right"),
        &format!("app {OTHER_APP} Room: note: not in use"),
        "2 apps checked: all right",
        "callback token: not compared",
        "roomsync checks signatures",
    ] {
        assert!(ok.stdout.contains(line), "{line:?} in {}", ok.stdout);
    }
    // Only reads.
    assert!(
        fake.config_calls()
            .iter()
            .all(|(_, api)| api == "get_callback")
    );

    // Without PUBLIC_CALLBACK_URL the URL is not compared: a note, not a finding; without a
    // token, the line says callbacks are unsigned.
    let mut env = Env::new(&fake.base_url);
    env.public_url = None;
    env.token = None;
    let unset = run(
        &env,
        &["check", "--app", &APP.to_string(), "--product", "room"],
    )
    .await;
    assert_eq!(unset.code, Some(0), "{}", unset.text());
    assert!(
        unset
            .stdout
            .contains(&format!("app {APP} Room: note: url not compared")),
        "{}",
        unset.stdout
    );
    assert!(
        unset.stdout.contains("CALLBACK_TOKEN is unset"),
        "{}",
        unset.stdout
    );
    assert!(!unset.stdout.contains(&OTHER_APP.to_string()), "only --app");
    assert!(!unset.stdout.contains("Live"), "only --product room");
    fake.stop().await;
}

/// The Room configuration of one app at Tencent: URL and commands; `None`: none.
type Setting<'a> = Option<(&'a str, &'a [&'a str])>;

#[tokio::test]
async fn check_names_each_finding() {
    let fake = fake().await;
    // The other app is configured right throughout, and said to be.
    fake.set_callback_config(OTHER_APP, Product::Room, Some((OURS, &ROOM_COMMANDS)));
    let cases: &[(&[&str], Setting, &str)] = &[
        (
            &["check"],
            Some((OURS, &ROOM_COMMANDS[..4])),
            "Room: commands off: Room.CallbackAfterMemberLeave, Mic.CallbackAfterSeatInfoChanged",
        ),
        (
            &["check"],
            Some(("https://old.example.com/callback", &ROOM_COMMANDS)),
            "Room: url not ours: Tencent calls https://old.example.com/callback, PUBLIC_CALLBACK_URL is https://rooms.example.com/callback",
        ),
        (
            &["check"],
            Some(("http://rooms.example.com/callback", &ROOM_COMMANDS)),
            "Room: not https: Tencent calls http://rooms.example.com/callback",
        ),
        // Neither product configured: both are findings.
        (&["check"], None, "Room: not configured"),
        (&["check"], None, "Live: not configured"),
        // Named, Live is a finding although Room is configured.
        (
            &["check", "--product", "live"],
            Some((OURS, &ROOM_COMMANDS)),
            "Live: not configured",
        ),
    ];
    for (args, room, expected) in cases {
        fake.set_callback_config(APP, Product::Room, *room);
        let found = run(&Env::new(&fake.base_url), args).await;
        assert_eq!(found.code, Some(1), "{expected}: {}", found.text());
        let line = format!("app {APP} {expected}");
        assert!(found.stdout.contains(&line), "{line:?} in {}", found.stdout);
        assert!(
            found
                .stdout
                .contains(&format!("app {OTHER_APP} Room: all right"))
                || args.contains(&"live"),
            "{}",
            found.stdout
        );
        assert!(found.stdout.contains(" finding"), "{}", found.stdout);
    }
    fake.stop().await;
}

#[tokio::test]
async fn an_unreachable_tencent_exits_2() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    for args in [&["check"][..], &["configure"]] {
        let run = run(&Env::new(&closed), args).await;
        assert_eq!(run.code, Some(2), "{}", run.text());
        assert!(
            run.stdout.contains(&format!("app {APP} Room: not asked:"))
                && run
                    .stdout
                    .contains("Tencent could not be reached: check TENCENT_API_BASE"),
            "{}",
            run.text()
        );
    }
}

#[tokio::test]
async fn a_wrong_key_exits_2_naming_the_key() {
    // Tencent knows another key for the first app.
    let fake = FakeTencent::start(&[(APP, KEY_B), (OTHER_APP, KEY_B)]).await;
    fake.set_callback_config(OTHER_APP, Product::Room, Some((OURS, &ROOM_COMMANDS)));
    let run = run(&Env::new(&fake.base_url), &["check", "--product", "room"]).await;
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "app {APP} Room: not asked: Tencent error 70009: UserSig verification failed; Tencent refused the credentials: check this app's key in TENCENT_SECRET_KEY and TENCENT_ADMIN_ACCOUNT"
        )),
        "{}",
        run.stdout
    );
    // The other app was still checked.
    assert!(
        run.stdout
            .contains(&format!("app {OTHER_APP} Room: all right")),
        "{}",
        run.stdout
    );
    fake.stop().await;
}

#[tokio::test]
async fn without_credentials_it_exits_2() {
    let fake = fake().await;
    let mut env = Env::new(&fake.base_url);
    env.keys = None;
    for args in [&["check"][..], &["configure"]] {
        let run = run(&env, args).await;
        assert_eq!(run.code, Some(2), "{}", run.text());
        assert!(
            run.stderr.contains("set TENCENT_SECRET_KEY"),
            "{}",
            run.text()
        );
    }
    // An app without a key is named, not skipped.
    let unknown = run(&Env::new(&fake.base_url), &["check", "--app", "1400000009"]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.text());
    assert!(
        unknown
            .stderr
            .contains("app 1400000009 has no key in TENCENT_SECRET_KEY"),
        "{}",
        unknown.text()
    );
    assert!(fake.requests().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn configure_from_nothing_sets_it_and_check_passes() {
    let fake = fake().await;
    let env = Env::new(&fake.base_url);
    let app = APP.to_string();
    let done = run(&env, &["configure", "--app", &app]).await;
    assert_eq!(done.code, Some(0), "{}", done.text());
    assert!(
        done.stdout.contains(&format!(
            "app {APP} Room: set: url {OURS}; commands {}",
            ROOM_COMMANDS.join(", ")
        )),
        "{}",
        done.stdout
    );
    assert_eq!(
        fake.callback_config(APP, Product::Room),
        Some((OURS.to_owned(), owned(&ROOM_COMMANDS)))
    );
    assert_eq!(
        fake.callback_config(APP, Product::Live),
        None,
        "room by default"
    );
    assert_eq!(
        fake.callback_config(OTHER_APP, Product::Room),
        None,
        "only --app"
    );
    assert_eq!(
        fake.config_calls(),
        [
            ("room_config".to_owned(), "get_callback".to_owned()),
            ("room_config".to_owned(), "set_callback".to_owned()),
        ]
    );

    let check = run(&env, &["check", "--app", &app]).await;
    assert_eq!(check.code, Some(0), "{}", check.text());

    // Again: nothing to change, nothing written.
    let again = run(&env, &["configure", "--app", &app]).await;
    assert_eq!(again.code, Some(0), "{}", again.text());
    assert!(
        again
            .stdout
            .contains(&format!("app {APP} Room: nothing to change")),
        "{}",
        again.stdout
    );
    assert_eq!(
        fake.config_calls().last().unwrap().1,
        "get_callback",
        "no write"
    );

    // Live too, when asked for.
    let live = run(&env, &["configure", "--app", &app, "--product", "live"]).await;
    assert_eq!(live.code, Some(0), "{}", live.text());
    assert_eq!(
        fake.callback_config(APP, Product::Live),
        Some((OURS.to_owned(), owned(&LIVE_COMMANDS)))
    );
    fake.stop().await;
}

#[tokio::test]
async fn configure_updates_a_partial_list_and_keeps_extras() {
    let fake = fake().await;
    let theirs = [
        "Room.CallbackAfterSendMessage",
        "Room.CallbackAfterCreateRoom",
        "Room.CallbackUpdateRoomInfo",
    ];
    fake.set_callback_config(
        APP,
        Product::Room,
        Some(("http://old.example.com/cb", &theirs)),
    );
    let env = Env::new(&fake.base_url);
    let done = run(&env, &["configure", "--app", &APP.to_string()]).await;
    assert_eq!(done.code, Some(0), "{}", done.text());
    assert!(
        done.stdout.contains(&format!(
            "app {APP} Room: update: add Room.CallbackAfterDestroyRoom, Room.CallbackAfterMemberEnter, \
             Room.CallbackAfterMemberLeave, Mic.CallbackAfterSeatInfoChanged; url http://old.example.com/cb → {OURS}"
        )),
        "{}",
        done.stdout
    );
    let (url, commands) = fake.callback_config(APP, Product::Room).unwrap();
    assert_eq!(url, OURS);
    // What was on stays on, as Tencent spelt it; the missing ones are added.
    assert_eq!(&commands[..3], &owned(&theirs)[..]);
    assert_eq!(
        &commands[3..],
        &owned(&[
            "Room.CallbackAfterDestroyRoom",
            "Room.CallbackAfterMemberEnter",
            "Room.CallbackAfterMemberLeave",
            "Mic.CallbackAfterSeatInfoChanged",
        ])[..]
    );
    assert_eq!(
        fake.config_calls()
            .iter()
            .map(|(_, api)| api.as_str())
            .collect::<Vec<_>>(),
        ["get_callback", "update_callback"]
    );
    let check = run(&env, &["check", "--app", &APP.to_string()]).await;
    assert_eq!(check.code, Some(0), "{}", check.text());
    assert!(
        check.stdout.contains(&format!(
            "app {APP} Room: note: switched on but not handled by roomsync (kept as sent): Room.CallbackAfterSendMessage"
        )),
        "{}",
        check.stdout
    );
    fake.stop().await;
}

#[tokio::test]
async fn configure_dry_run_only_reads() {
    let fake = fake().await;
    fake.set_callback_config(APP, Product::Room, Some((OURS, &ROOM_COMMANDS[..2])));
    let env = Env::new(&fake.base_url);
    let dry = run(&env, &["configure", "--dry-run", "--product", "both"]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.text());
    for line in [
        format!("app {APP} Room: update: add Room.CallbackAfterUpdateRoomInfo"),
        format!("app {APP} Live: set: url {OURS}"),
        format!("app {OTHER_APP} Room: set: url {OURS}"),
        "dry run: nothing was sent to Tencent".to_owned(),
    ] {
        assert!(dry.stdout.contains(&line), "{line:?} in {}", dry.stdout);
    }
    assert_eq!(fake.config_calls().len(), 4);
    assert!(
        fake.config_calls()
            .iter()
            .all(|(_, api)| api == "get_callback")
    );
    assert_eq!(
        fake.callback_config(APP, Product::Room),
        Some((OURS.to_owned(), owned(&ROOM_COMMANDS[..2])))
    );
    assert_eq!(fake.callback_config(OTHER_APP, Product::Room), None);
    fake.stop().await;
}

#[tokio::test]
async fn configure_needs_the_public_url() {
    let fake = fake().await;
    let mut env = Env::new(&fake.base_url);
    env.public_url = None;
    let run = run(&env, &["configure"]).await;
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stderr.contains("configure needs PUBLIC_CALLBACK_URL"),
        "{}",
        run.text()
    );
    assert!(fake.requests().is_empty(), "nothing asked");
    fake.stop().await;
}

#[tokio::test]
async fn the_fake_checks_callback_settings_as_tencent_does() {
    use std::collections::BTreeMap;

    use reqwest::Url;
    use roomsync::{
        callback::SdkAppId,
        config::Secret,
        tencent::{
            CALLBACK_CONFIG_EXISTS, CallbackConfig, ClientOptions, NO_CALLBACK_CONFIG,
            TencentClient,
        },
    };
    use serde_json::json;

    let fake = fake().await;
    let app = SdkAppId::from_i64(APP).unwrap();
    let keys = BTreeMap::from([(app, Secret::new(KEY_A))]);
    let client = TencentClient::with_options(
        &Url::parse(&fake.base_url).unwrap(),
        crate::fake_tencent::ADMIN,
        &keys,
        ClientOptions::default(),
    )
    .unwrap();
    let config = CallbackConfig {
        url: OURS.into(),
        commands: owned(&LIVE_COMMANDS),
    };
    assert_eq!(client.get_callback(app, Product::Live).await.unwrap(), None);
    let update = client.update_callback(app, Product::Live, &config).await;
    assert_eq!(update.unwrap_err().code(), Some(NO_CALLBACK_CONFIG));
    client
        .set_callback(app, Product::Live, &config)
        .await
        .unwrap();
    let set_again = client.set_callback(app, Product::Live, &config).await;
    assert_eq!(set_again.unwrap_err().code(), Some(CALLBACK_CONFIG_EXISTS));
    let answer = client
        .get_callback(app, Product::Live)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.data, config);
    assert_eq!(answer.raw["Response"]["Url"], OURS);
    // Room's configuration is another one.
    assert_eq!(client.get_callback(app, Product::Room).await.unwrap(), None);
    // Tencent's invalid parameter: a URL that is not http(s), a list that is not of strings.
    let ftp = CallbackConfig {
        url: "ftp://rooms.example.com/".into(),
        ..config.clone()
    };
    let refused = client.update_callback(app, Product::Live, &ftp).await;
    assert_eq!(refused.unwrap_err().code(), Some(100_002));
    let raw = client
        .call(
            app,
            "live_config",
            "update_callback",
            &json!({"Url": OURS, "CallbackCommandList": [1]}),
        )
        .await;
    assert_eq!(raw.unwrap_err().code(), Some(100_002));
    assert_eq!(
        fake.callback_config(APP, Product::Live),
        Some((OURS.to_owned(), owned(&LIVE_COMMANDS)))
    );
    fake.stop().await;
}
