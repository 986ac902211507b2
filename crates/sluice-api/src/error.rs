use sluice_proto::{ApiResponse, ErrorType};

/// An error a client sees as Prometheus's JSON envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub error_type: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError {
            error_type,
            message: message.into(),
        }
    }

    /// A `bad_data` (400) error.
    pub fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::BadData, message)
    }

    pub fn http_status(&self) -> u16 {
        self.error_type.http_status()
    }

    pub fn into_response(self) -> ApiResponse {
        ApiResponse::error(self.error_type, self.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.error_type.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}
