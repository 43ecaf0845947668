//! Defence in depth for text: every message that goes to status, events or logs is scrubbed of
//! the secret values the pass had in hand (SIP passwords, API keys) and bounded in length. The
//! messages are built without secrets in the first place; this catches what an API error
//! detail might echo.

use super::status::Phase;
use crate::oneinbox::ApiError;

/// Longest event note (the API server accepts 1 KiB).
pub const MAX_EVENT_NOTE: usize = 1000;
/// Longest condition message written (metav1.Condition allows 32 KiB; no reader needs more).
pub const MAX_CONDITION_MESSAGE: usize = 2048;
/// What stands for a scrubbed value.
const REDACTED: &str = "[redacted]";
/// Values shorter than this are not scrubbed: they would match ordinary words.
const MIN_SECRET_LEN: usize = 4;

/// `text` without any of `secrets`, cut at `max` bytes (on a character boundary).
pub fn text(text: &str, secrets: &[String], max: usize) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.len() >= MIN_SECRET_LEN && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The API error with its texts scrubbed (it is logged and becomes the error of the pass).
pub fn api_error(e: ApiError, secrets: &[String]) -> ApiError {
    let clean = |t: String| text(&t, secrets, MAX_CONDITION_MESSAGE);
    match e {
        ApiError::Unavailable {
            what,
            detail,
            retry_after,
        } => ApiError::Unavailable {
            what,
            detail: clean(detail),
            retry_after,
        },
        ApiError::KeyRejected { status, detail } => ApiError::KeyRejected {
            status,
            detail: clean(detail),
        },
        ApiError::AlreadyRegistered { phone_id, message } => ApiError::AlreadyRegistered {
            phone_id,
            message: clean(message),
        },
        ApiError::Rejected {
            status,
            code,
            detail,
        } => ApiError::Rejected {
            status,
            code,
            detail: clean(detail),
        },
        ApiError::NotFound => ApiError::NotFound,
    }
}

/// The phase with its message scrubbed and bounded.
pub fn phase(phase: Phase, secrets: &[String]) -> Phase {
    let clean = |m: String| text(&m, secrets, MAX_CONDITION_MESSAGE);
    match phase {
        Phase::Progressing { reason, message } => Phase::Progressing {
            reason,
            message: clean(message),
        },
        Phase::Stalled { reason, message } => Phase::Stalled {
            reason,
            message: clean(message),
        },
        Phase::AvailableButStalled { reason, message } => Phase::AvailableButStalled {
            reason,
            message: clean(message),
        },
        Phase::DeletionBlocked { message } => Phase::DeletionBlocked {
            message: clean(message),
        },
        // Spec field names only: nothing to scrub.
        p @ (Phase::Available | Phase::Paused | Phase::Observed { .. }) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_and_text_is_bounded() {
        let secrets = vec![
            "hunter2-sip".to_string(),
            "oi_sk_live_123".to_string(),
            "ab".into(),
        ];
        let t = text(
            "OneInbox said: bad password hunter2-sip for key oi_sk_live_123 (ab)",
            &secrets,
            1000,
        );
        assert_eq!(
            t,
            "OneInbox said: bad password [redacted] for key [redacted] (ab)"
        );
        let long = "é".repeat(600);
        let t = text(&long, &secrets, 1001);
        assert_eq!(t.len(), 1000);
        assert!(t.chars().all(|c| c == 'é'));
    }

    #[test]
    fn api_error_texts_are_scrubbed() {
        let secrets = vec!["s3cret-value".to_string()];
        let e = api_error(
            ApiError::Unavailable {
                what: "HTTP 502".into(),
                detail: "upstream said s3cret-value".into(),
                retry_after: None,
            },
            &secrets,
        );
        assert!(!e.to_string().contains("s3cret-value"), "{e}");
        assert!(e.to_string().contains("[redacted]"), "{e}");
    }

    #[test]
    fn every_phase_message_is_scrubbed() {
        let secrets = vec!["s3cret-value".to_string()];
        let p = phase(
            Phase::Stalled {
                reason: "RegistrationRejected",
                message: "echo s3cret-value".into(),
            },
            &secrets,
        );
        assert_eq!(
            p,
            Phase::Stalled {
                reason: "RegistrationRejected",
                message: "echo [redacted]".into()
            }
        );
        let p = phase(
            Phase::DeletionBlocked {
                message: "x".repeat(5000),
            },
            &secrets,
        );
        let Phase::DeletionBlocked { message } = p else {
            unreachable!()
        };
        assert_eq!(message.len(), MAX_CONDITION_MESSAGE);
    }
}
