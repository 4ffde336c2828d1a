//! What roomsync acknowledges, PostgreSQL stores: the check of what jsonb cannot hold is held
//! against PostgreSQL itself, at the door (400, kept) and on random bodies.

use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use roomsync::callback::{CallbackQuery, RejectionKind, SdkAppId, parse_body};
use serde_json::json;
use sqlx::PgPool;

use crate::{helpers::*, rows::count};

#[sqlx::test]
async fn strings_jsonb_cannot_store_are_refused_at_the_door_and_kept(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let query = app.query_for(&enter("r", &["a"], 1));
    let cases = [
        // A lone surrogate where roomsync reads nothing, deep, as a key, after a high one.
        (r#""Junk":"\ud800""#, 40011),
        (r#""Junk":[{"a":"\udc00"}]"#, 40011),
        (r#""Junk":{"\ud800":1}"#, 40011),
        (r#""Junk":"\ud800\u0041""#, 40011),
        // A value PostgreSQL refuses, hidden by a later duplicate of its key.
        (r#""X":"\u0000","X":1"#, 40005),
        (r#""X":"\udfff","X":1"#, 40011),
        (r#""X":1e999999,"X":1"#, 40004),
    ];
    for (n, (extra, code)) in cases.iter().enumerate() {
        let text =
            enter("r", &["a"], 100 + n as i64)
                .to_string()
                .replacen('{', &format!("{{{extra},"), 1);
        let (status, answer) = answer(app.post_raw(&query, text).await).await;
        assert_eq!(
            (status, answer["ErrorCode"].clone()),
            (400, json!(code)),
            "{extra}: {answer}"
        );
    }
    // Each kept as text PostgreSQL holds (the escape as sent), nothing applied or journaled.
    let kept: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT error_code, body FROM rejected_callbacks ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept.len(), cases.len());
    for ((code, body), (extra, expected)) in kept.iter().zip(cases) {
        assert_eq!(*code, expected);
        assert!(body.as_deref().unwrap().contains(extra), "{extra}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 0);
    assert_eq!(journal_depth(&app).await, 0);
    app.stop().await;
}

/// A JSON string with the escapes that matter to jsonb: NUL, surrogates paired and not, random
/// ones, escaped backslashes.
fn string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z]{0,3}",
        Just(r"\\".to_owned()),
        Just(r"\u0000".to_owned()),
        Just(r"\ud800".to_owned()),
        Just(r"\uDC00".to_owned()),
        Just(r"\ud83d\ude00".to_owned()),
        Just(r"\\ud800".to_owned()),
        Just(r#"\""#.to_owned()),
        Just("é中".to_owned()),
        "\\\\u[0-9a-fA-F]{4}",
        "\\\\u[dD][89a-fA-F][0-9a-fA-F]{2}",
    ];
    prop::collection::vec(piece, 0..5).prop_map(|p| format!("\"{}\"", p.concat()))
}

/// Numbers at and past what `numeric` holds, and odd spellings.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,10})?([eE][-+]?[0-9]{1,7})?",
        prop::sample::select(&[
            "-0",
            "0e-16384",
            "1e-16383",
            "1e-16384",
            "9e131071",
            "10e131071",
            "1E+131072",
            "0.5e-16382",
            "1.0000e-16380",
            "1e1073741823",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Objects whose keys repeat often (a small set of names, or a string with escapes).
fn body() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        3 => prop::sample::select(&["\"a\"", "\"RoomId\"", "\"Junk\"", "\"RoomInfo\"", "\"Reason\""])
            .prop_map(str::to_owned),
        1 => string(),
    ];
    let leaf = prop_oneof![Just("null".to_owned()), number(), string()];
    let value = leaf.prop_recursive(3, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((string(), inner), 0..5).prop_map(|fields| {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    // Before the fields of a valid enter: a `RoomId` or a `Reason` among them is hidden.
    prop::collection::vec((key, value), 0..6).prop_map(|fields| {
        let fields: String = fields.iter().map(|(k, v)| format!("{k}:{v},")).collect();
        format!(
            r#"{{{fields}"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r","MemberList_Account":["a"],"EventTime":5}}"#
        )
    })
}

/// Whatever the check accepts, PostgreSQL stores as jsonb; and what it refuses as something
/// PostgreSQL cannot store, PostgreSQL refuses too.
#[sqlx::test]
async fn what_the_check_accepts_postgresql_stores(pool: PgPool) {
    let mut runner = TestRunner::new(Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(29),
        ..Config::default()
    });
    let strategy = body();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..3_000 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let check = parse_body(
            text.as_bytes(),
            &CallbackQuery::default(),
            SdkAppId::parse("1400000001").unwrap(),
            chrono::Utc::now(),
            None,
        );
        let stored = sqlx::query_scalar::<_, bool>("SELECT $1::text::jsonb IS NOT NULL")
            .bind(&text)
            .fetch_one(&pool)
            .await;
        match check {
            Ok(_) => {
                accepted += 1;
                assert!(stored.is_ok(), "accepted, not stored: {text}: {stored:?}");
            }
            Err(rejection) => {
                refused += 1;
                let unstorable = match rejection.kind {
                    RejectionKind::NotJson
                    | RejectionKind::NulCharacter
                    | RejectionKind::LoneSurrogate => true,
                    RejectionKind::OutOfBounds => rejection.info.contains("numeric"),
                    _ => false,
                };
                if unstorable {
                    assert!(stored.is_err(), "refused, but stored: {text}: {rejection}");
                }
            }
        }
    }
    // Both sides are exercised.
    assert!(accepted > 300 && refused > 300, "{accepted} / {refused}");
}
