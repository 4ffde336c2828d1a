//! `rejected_callbacks`: what Tencent sent that failed validation, kept for an operator.

use sqlx::PgConnection;

pub struct RejectedCallback<'a> {
    pub sdk_app_id: Option<i64>,
    pub callback_command: Option<&'a str>,
    pub error_code: i32,
    pub error_info: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

pub async fn insert_rejected(
    conn: &mut PgConnection,
    rejected: &RejectedCallback<'_>,
) -> Result<i64, sqlx::Error> {
    // Text cannot hold NUL or invalid UTF-8: keep a lossy text and the exact bytes beside it.
    let (body, body_bytes) = match std::str::from_utf8(rejected.body) {
        Ok(text) if !text.contains('\0') => (text.to_owned(), None),
        _ => (
            String::from_utf8_lossy(rejected.body).replace('\0', "\u{FFFD}"),
            Some(rejected.body.to_vec()),
        ),
    };
    let strip = |s: &str| s.replace('\0', "\u{FFFD}");
    sqlx::query_scalar!(
        r#"INSERT INTO rejected_callbacks
               (sdk_app_id, callback_command, error_code, error_info, query, body, body_bytes)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING id"#,
        rejected.sdk_app_id,
        rejected.callback_command.map(strip),
        rejected.error_code,
        strip(rejected.error_info),
        strip(rejected.query),
        body,
        body_bytes,
    )
    .fetch_one(conn)
    .await
}
