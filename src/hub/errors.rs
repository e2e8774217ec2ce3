//! Core layer (values), part of the hub: why the hub refuses an app, as values — each with
//! its wire `code`, a message for people and (for a join) the HTTP status and close reason.
//! The server core names them through `hub::` (re-exported there).
//!
//! Owns no state. Invariant: every variant has a distinct `code`.

/// Why an app may not join a session; each is a distinct `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    Malformed,
    NotInitialized,
    PackageNotFound,
    InvalidApiKey,
    InvalidAppToken,
    MissingHeaders,
    SessionNotFound,
    AppNotStarted,
    AddressNotAllowed,
    AlreadyInitialized,
    InitTimeout,
    /// `sessionId` names a venue feed this app does not publish.
    NotVenueFeed,
}

impl JoinError {
    pub fn code(self) -> &'static str {
        match self {
            JoinError::Malformed => "MALFORMED_MESSAGE",
            JoinError::NotInitialized => "NOT_INITIALIZED",
            JoinError::PackageNotFound => "PACKAGE_NOT_FOUND",
            JoinError::InvalidApiKey => "INVALID_API_KEY",
            JoinError::InvalidAppToken => "INVALID_APP_TOKEN",
            JoinError::MissingHeaders => "MISSING_HEADERS",
            JoinError::SessionNotFound => "SESSION_NOT_FOUND",
            JoinError::AppNotStarted => "APP_NOT_STARTED",
            JoinError::AddressNotAllowed => "ADDRESS_NOT_ALLOWED",
            JoinError::AlreadyInitialized => "ALREADY_INITIALIZED",
            JoinError::InitTimeout => "INIT_TIMEOUT",
            JoinError::NotVenueFeed => "NOT_VENUE_FEED",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            JoinError::Malformed => "expected a JSON object with packageName, sessionId and apiKey",
            JoinError::NotInitialized => "send tpa_connection_init first",
            JoinError::PackageNotFound => "no app with this packageName is registered",
            JoinError::InvalidApiKey => "the API key does not match this app",
            JoinError::InvalidAppToken => "the app token is invalid or was issued for another key",
            JoinError::MissingHeaders => {
                "header auth needs Authorization: Bearer <app token> and X-Session-Id"
            }
            JoinError::SessionNotFound => {
                "no such session; sessionId must be <userId>-<packageName>"
            }
            JoinError::AppNotStarted => "this app was not started for this session",
            JoinError::AddressNotAllowed => "this system app may not connect from this address",
            JoinError::AlreadyInitialized => {
                "this connection is already initialised for another app"
            }
            JoinError::InitTimeout => "no tpa_connection_init in time",
            JoinError::NotVenueFeed => {
                "this app is not configured as this venue feed (venueFeed); sessionId 'venue' \
                 names the venue's only feed, 'venue:<feed>' a named one"
            }
        }
    }

    /// The HTTP status when refused at the upgrade.
    pub fn status(self) -> u16 {
        match self {
            JoinError::InvalidApiKey | JoinError::InvalidAppToken | JoinError::MissingHeaders => {
                401
            }
            JoinError::AppNotStarted | JoinError::AddressNotAllowed | JoinError::NotVenueFeed => {
                403
            }
            JoinError::PackageNotFound | JoinError::SessionNotFound => 404,
            _ => 400,
        }
    }

    /// A short close reason.
    pub fn reason(self) -> &'static str {
        match self {
            JoinError::InvalidApiKey | JoinError::InvalidAppToken => "Invalid API key",
            JoinError::SessionNotFound => "No active session",
            JoinError::AppNotStarted => "App not started for this session",
            JoinError::PackageNotFound => "Unknown package",
            JoinError::AddressNotAllowed => "Address not allowed",
            JoinError::NotVenueFeed => "Not a venue feed",
            _ => "Refused",
        }
    }
}

/// Why an app start/stop request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleError {
    RateLimited,
    /// The session runs `max_apps_per_session` apps already.
    TooManyApps,
}

impl LifecycleError {
    pub fn code(self) -> &'static str {
        match self {
            LifecycleError::RateLimited => "RATE_LIMITED",
            LifecycleError::TooManyApps => "TOO_MANY_APPS",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            LifecycleError::RateLimited => {
                "too many app start/stop requests for this session; try again in a second"
            }
            LifecycleError::TooManyApps => {
                "this session runs as many apps as it may; stop one first"
            }
        }
    }
}
