//! The one error type of the callback boundary and its mapping to HTTP answers (docs/http.md#error-codes).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::json;

use crate::{
    callback::{Rejection, SignatureError},
    codes,
    ingest::IngestError,
    journal::JournalError,
};

#[derive(thiserror::Error)]
pub enum CallbackError {
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("body could not be read")]
    BodyRead(#[source] actix_web::error::PayloadError),
    #[error("body did not arrive in time")]
    BodyTimeout,
    #[error("too many callback bodies are being received at once; try again")]
    BodiesInFlight,
    #[error("SdkAppid is missing from the query string")]
    AppIdMissing,
    #[error("SdkAppid is not one of this service's apps")]
    AppIdUnknown,
    #[error(transparent)]
    Signature(SignatureError),
    #[error(transparent)]
    Invalid(Rejection),
    #[error("the callback could not be made durable")]
    NotDurable(#[source] IngestError),
}

impl CallbackError {
    /// Each distinct failure has its own code, from the catalogue in [`codes`].
    pub fn code(&self) -> u32 {
        match self {
            Self::Invalid(rejection) => rejection.code(),
            Self::BodyRead(_) => codes::BODY_READ,
            Self::BodyTimeout => codes::BODY_TIMEOUT,
            Self::Signature(SignatureError::Missing) => codes::SIGNATURE_MISSING,
            Self::Signature(SignatureError::BadRequestTime) => codes::SIGNATURE_BAD_REQUEST_TIME,
            Self::Signature(SignatureError::Expired) => codes::SIGNATURE_EXPIRED,
            Self::Signature(SignatureError::Mismatch) => codes::SIGNATURE_MISMATCH,
            Self::AppIdMissing => codes::APP_ID_MISSING,
            Self::AppIdUnknown => codes::APP_ID_UNKNOWN,
            Self::TooLarge(_) => codes::TOO_LARGE,
            Self::BodiesInFlight => codes::BODIES_IN_FLIGHT,
            Self::NotDurable(IngestError::Refused(_)) => codes::STORE_REFUSED,
            Self::NotDurable(IngestError::Journal(JournalError::Full { .. })) => {
                codes::JOURNAL_FULL
            }
            Self::NotDurable(IngestError::Journal(_)) => codes::JOURNAL_FAILED,
        }
    }

    /// The request body was not read to its end (a stranger's is never read).
    pub fn body_unread(&self) -> bool {
        matches!(
            self,
            Self::TooLarge(_)
                | Self::BodyRead(_)
                | Self::BodyTimeout
                | Self::BodiesInFlight
                | Self::AppIdMissing
                | Self::AppIdUnknown
                | Self::Signature(_)
        )
    }

    /// The metrics label of the outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::AppIdMissing | Self::AppIdUnknown => "forbidden",
            Self::Signature(_) => "unauthorized",
            Self::BodyRead(_) | Self::BodyTimeout | Self::Invalid(_) => "invalid",
            Self::NotDurable(_) | Self::BodiesInFlight => "unavailable",
        }
    }
}

// Debug walks the source chain: the log line gets everything, the response nothing internal.
impl std::fmt::Debug for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::telemetry::error_chain(self))
    }
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::AppIdMissing | Self::AppIdUnknown => StatusCode::FORBIDDEN,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::BodyRead(_) | Self::BodyTimeout | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotDurable(_) | Self::BodiesInFlight => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        // The body was not read to its end: the connection cannot carry another request.
        if self.body_unread() {
            response.force_close();
        }
        // The Display text names the field or problem and never holds database details.
        response.json(json!({
            "ActionStatus": "FAIL",
            "ErrorInfo": self.to_string(),
            "ErrorCode": self.code(),
        }))
    }
}
