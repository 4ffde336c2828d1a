//! The one error type of the callback boundary and its mapping to HTTP answers (docs/http.md#error-codes).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::json;

use crate::{
    callback::{Rejection, RejectionKind, SignatureError},
    ingest::IngestError,
    journal::JournalError,
    store::StoreError,
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
    /// Each distinct failure has its own code (docs/http.md#error-codes lists them).
    pub fn code(&self) -> u32 {
        match self {
            Self::Invalid(rejection) => match rejection.kind {
                RejectionKind::NotJson => 40001,
                RejectionKind::MissingField => 40002,
                RejectionKind::WrongType => 40003,
                RejectionKind::OutOfBounds => 40004,
                RejectionKind::NulCharacter => 40005,
                RejectionKind::CommandMismatch => 40006,
                RejectionKind::MissingCommand => 40007,
                RejectionKind::FutureEventTime => 40010,
            },
            Self::BodyRead(_) => 40008,
            Self::BodyTimeout => 40009,
            Self::Signature(SignatureError::Missing) => 40101,
            Self::Signature(SignatureError::BadRequestTime) => 40102,
            Self::Signature(SignatureError::Expired) => 40103,
            Self::Signature(SignatureError::Mismatch) => 40104,
            Self::AppIdMissing => 40301,
            Self::AppIdUnknown => 40302,
            Self::TooLarge(_) => 41301,
            Self::BodiesInFlight => 50310,
            Self::NotDurable(IngestError::Store(store)) => match store {
                StoreError::Unavailable(_) => 50301,
                StoreError::Timeout => 50302,
                StoreError::Closed => 50303,
                StoreError::Refused(_) => 50304,
                StoreError::Busy(_) => 50308,
                StoreError::Failed(_) => 50309,
            },
            Self::NotDurable(IngestError::Journal(JournalError::Full { .. })) => 50305,
            Self::NotDurable(IngestError::Journal(_)) => 50306,
        }
    }

    /// The request body was not read to its end.
    pub fn body_unread(&self) -> bool {
        matches!(
            self,
            Self::TooLarge(_) | Self::BodyRead(_) | Self::BodyTimeout | Self::BodiesInFlight
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
