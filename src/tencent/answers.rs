//! Tencent's answer envelope: `{"ActionStatus","ErrorCode","ErrorInfo","Response"}` split into
//! success or the [`TencentError`] it stands for, and a typed [`Answer`] that keeps the JSON it
//! came from. What `Response` holds is decoded beside the domain types
//! ([`super::answer`]).

use serde_json::Value;

use super::answer::integer;
use super::errors::{ROOM_NOT_FOUND, TencentError, malformed};

/// A parsed answer together with the JSON it came from, which the reconciler stores as the
/// payload of the correction it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub data: T,
    /// The whole answer as received (numbers keep every digit). For the member list, a JSON
    /// array of the answers of every page, in order.
    pub raw: Value,
}
/// Splits an answer into success or the error its `ActionStatus`/`ErrorCode` say.
pub(super) fn check_status(answer: Value) -> Result<Value, TencentError> {
    let Value::Object(fields) = &answer else {
        return Err(malformed("the answer is not a JSON object"));
    };
    let code = match fields.get("ErrorCode") {
        None | Some(Value::Null) => 0,
        Some(v) => integer(v).ok_or_else(|| malformed("ErrorCode is not an integer"))?,
    };
    let info = || {
        fields
            .get("ErrorInfo")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match (fields.get("ActionStatus").and_then(Value::as_str), code) {
        (_, ROOM_NOT_FOUND) => Err(TencentError::RoomNotFound),
        (Some("OK"), 0) => Ok(answer),
        (Some("FAIL"), 0) => Err(TencentError::Api {
            code: 0,
            info: info(),
        }),
        (_, 0) => Err(malformed("ActionStatus is neither OK nor FAIL")),
        (_, code) => Err(TencentError::Api { code, info: info() }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(answer: Value) -> Result<Value, TencentError> {
        check_status(answer)
    }

    #[test]
    fn status_and_codes() {
        let ok = json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "Response": {}});
        assert_eq!(check(ok.clone()), Ok(ok));
        assert_eq!(
            check(
                json!({"ActionStatus": "FAIL", "ErrorCode": 100004, "ErrorInfo": "room not exist"})
            ),
            Err(TencentError::RoomNotFound)
        );
        assert_eq!(
            check(
                json!({"ActionStatus": "FAIL", "ErrorCode": "70001", "ErrorInfo": "sig expired"})
            ),
            Err(TencentError::Api {
                code: 70_001,
                info: "sig expired".into()
            })
        );
        assert_eq!(
            check(json!({"ActionStatus": "FAIL", "ErrorCode": 0})),
            Err(TencentError::Api {
                code: 0,
                info: String::new()
            })
        );
        assert!(matches!(
            check(json!({"ActionStatus": "MAYBE"})),
            Err(TencentError::Malformed(_))
        ));
        assert!(matches!(check(json!([1])), Err(TencentError::Malformed(_))));
        assert!(matches!(check(json!({})), Err(TencentError::Malformed(_))));
    }
}
