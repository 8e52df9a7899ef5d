//! The lifecycle rules both queue implementations share, so the file queue and the
//! PostgreSQL one refuse the same requests with the same words: which statuses a destroy
//! or a refresh may start from, the idempotency digest of a document, and the list
//! cursor's encoding.

use super::{QueueError, Status};
use sha2::Digest;
use uuid::Uuid;

/// Why `DELETE` is refused in `status`, or `None` when a destroy may be queued.
pub(crate) fn destroy_refusal(id: Uuid, status: Status) -> Option<QueueError> {
    let what = match status {
        Status::Queued | Status::Ready | Status::Failed => return None,
        Status::Destroyed => "it is already destroyed; there is nothing to delete".to_string(),
        Status::DestroyQueued | Status::Destroying => format!(
            "its destroy is already under way; poll GET /api/v1/environments/{id} until it is destroyed"
        ),
        Status::Provisioning | Status::Bootstrapping => format!(
            "a provision job of it is running; DELETE again once GET /api/v1/environments/{id} says ready or failed"
        ),
    };
    Some(QueueError::Conflict {
        id,
        status: status.as_str(),
        what,
    })
}

/// Why `POST /{id}/refresh` is refused in `status`, or `None` when it may be queued.
pub(crate) fn refresh_refusal(id: Uuid, status: Status) -> Option<QueueError> {
    let what = match status {
        Status::Ready | Status::Failed => return None,
        Status::Queued | Status::Provisioning | Status::Bootstrapping => format!(
            "a provision job of it is queued or running; refresh once GET /api/v1/environments/{id} says ready or failed"
        ),
        Status::DestroyQueued | Status::Destroying => {
            "it is being destroyed; submit it again as a new environment once it is destroyed"
                .to_string()
        }
        Status::Destroyed => {
            "it is destroyed; submit it again as a new environment (POST /api/v1/environments)"
                .to_string()
        }
    };
    Some(QueueError::Conflict {
        id,
        status: status.as_str(),
        what,
    })
}

/// The digest an idempotency key is bound to: the document as canonical JSON (object
/// keys sorted by `serde_json`'s map) and the user who sent it.
pub(crate) fn document_digest(user_id: &str, document: &serde_json::Value) -> String {
    let mut h = sha2::Sha256::new();
    h.update(user_id.as_bytes());
    h.update([0]);
    h.update(document.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The list cursor for "after the environment with insertion number `seq`".
pub(crate) fn encode_cursor(seq: i64) -> String {
    format!("e{seq}")
}

/// The insertion number a cursor stands for.
///
/// # Errors
/// [`QueueError::BadCursor`] for a cursor [`encode_cursor`] did not make.
pub(crate) fn decode_cursor(cursor: &str) -> Result<i64, QueueError> {
    cursor
        .strip_prefix('e')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| QueueError::BadCursor {
            cursor: cursor.to_string(),
        })
}

/// What the status event of a job that was taken says.
pub(crate) fn taken_message(status: Status, worker: &str, attempt: u32) -> String {
    if attempt > 1 {
        format!(
            "{} (taken again by worker {worker}, attempt {attempt}: the previous worker's lease ran out)",
            status.as_str()
        )
    } else {
        format!("{} (worker {worker})", status.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroy_and_refresh_are_refused_exactly_where_the_lifecycle_says() {
        let id = Uuid::nil();
        let destroyable: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| destroy_refusal(id, *s).is_none())
            .collect();
        assert_eq!(destroyable, [Status::Queued, Status::Ready, Status::Failed]);
        let refreshable: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| refresh_refusal(id, *s).is_none())
            .collect();
        assert_eq!(refreshable, [Status::Ready, Status::Failed]);
        let e = destroy_refusal(id, Status::Destroyed).unwrap().to_string();
        assert!(
            e.contains("is destroyed") && e.contains("nothing to delete"),
            "{e}"
        );
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "e", "42", "e-1", "ex", "f42"] {
            assert!(
                matches!(decode_cursor(bad), Err(QueueError::BadCursor { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_digest_tells_documents_and_users_apart() {
        let a = serde_json::json!({"a": 1});
        let b = serde_json::json!({"a": 2});
        assert_eq!(document_digest("u", &a), document_digest("u", &a));
        assert_ne!(document_digest("u", &a), document_digest("u", &b));
        assert_ne!(document_digest("u", &a), document_digest("v", &a));
    }
}
