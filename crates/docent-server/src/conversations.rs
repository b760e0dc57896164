//! Conversations kept on the server, so that `/v1/ask` with a
//! `conversation_id` answers follow-up questions, and a restart loses none:
//! one redb file in the collection's folder (`conversations.redb`), like the
//! catalogue. Bounded: at most `max_conversations` (the least recently used
//! go first), `max_turns` question-and-answer pairs each (the oldest go
//! first), and a conversation unused for `ttl` is gone.
//!
//! Routes: `POST /v1/conversations` starts one, `GET` and `DELETE
//! /v1/conversations/{id}` read and end one.

use crate::access::Target;
use crate::error::{ApiError, blocking};
use crate::state::{AppState, Served};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use docent_core::ChatMessage;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");

/// Bounds on what is kept.
#[derive(Clone, Debug)]
pub struct ConversationLimits {
    pub max_conversations: usize,
    /// Question-and-answer pairs kept per conversation.
    pub max_turns: usize,
    /// Characters kept of one question or answer.
    pub max_message_chars: usize,
    /// A conversation unused this long is deleted.
    pub ttl: Duration,
}

impl Default for ConversationLimits {
    fn default() -> Self {
        ConversationLimits {
            max_conversations: 10_000,
            max_turns: 20,
            max_message_chars: 8_000,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One question and its answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Turn {
    pub question: String,
    /// The standalone question docent searched with, when it rewrote a follow-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten_query: Option<String>,
    pub answer: String,
    /// The sources the answer cited.
    #[serde(default)]
    pub cited_sources: Vec<String>,
    /// Unix seconds, when it was recorded.
    pub at: u64,
}

/// A conversation and its turns, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
    pub turns: Vec<Turn>,
}

impl Conversation {
    /// The turns as chat messages, for the answer runner.
    pub fn history(&self) -> Vec<ChatMessage> {
        self.turns
            .iter()
            .flat_map(|t| {
                [
                    ChatMessage::user(t.question.clone()),
                    ChatMessage::assistant(t.answer.clone()),
                ]
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("conversation store {path}: {message}")]
pub struct StoreError {
    path: String,
    message: String,
}

/// The conversations of one collection.
pub struct ConversationStore {
    db: Database,
    path: String,
    limits: ConversationLimits,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn clip(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// Conversation ids are UUIDs; anything else is refused before any lookup.
pub fn valid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok() && id.len() <= 36
}

impl ConversationStore {
    pub fn open(path: &std::path::Path, limits: ConversationLimits) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let err = |message: String| StoreError {
            path: shown.clone(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        let store = ConversationStore {
            db,
            path: shown,
            limits,
        };
        // Creates the table, so that reads never meet a missing one.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = {
            let mut table = tx.open_table(TABLE).map_err(|e| self.err(e))?;
            f(&mut table)?
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Conversation, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| self.err(e))
    }

    fn expired(&self, c: &Conversation, at: u64) -> bool {
        at.saturating_sub(c.updated_at) > self.limits.ttl.as_secs()
    }

    /// Starts an empty conversation. Drops expired ones, then the least
    /// recently used while over the limit.
    pub fn create(&self) -> Result<Conversation, StoreError> {
        let at = now();
        let conversation = Conversation {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: at,
            updated_at: at,
            turns: Vec::new(),
        };
        let bytes = serde_json::to_vec(&conversation).map_err(|e| self.err(e))?;
        self.write(|table| {
            let mut ages = Vec::new();
            for entry in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let c = self.decode(v.value())?;
                ages.push((c.updated_at, k.value().to_string(), self.expired(&c, at)));
            }
            ages.sort();
            let mut remaining = ages.len();
            for (_, id, expired) in &ages {
                if *expired || remaining >= self.limits.max_conversations {
                    table.remove(id.as_str()).map_err(|e| self.err(e))?;
                    remaining -= 1;
                }
            }
            table
                .insert(conversation.id.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
            Ok(())
        })?;
        Ok(conversation)
    }

    /// The conversation, unless it does not exist or has expired.
    pub fn get(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(TABLE).map_err(|e| self.err(e))?;
        let Some(value) = table.get(id).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let c = self.decode(value.value())?;
        Ok((!self.expired(&c, now())).then_some(c))
    }

    /// Adds a turn, stamped with the time it is recorded; the oldest turns
    /// go beyond `max_turns`. False when the conversation is gone (deleted
    /// or expired meanwhile).
    pub fn append(&self, id: &str, turn: Turn) -> Result<bool, StoreError> {
        let limits = &self.limits;
        self.write(|table| {
            let Some(mut c) = table
                .get(id)
                .map_err(|e| self.err(e))?
                .map(|v| self.decode(v.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            let at = now();
            c.turns.push(Turn {
                question: clip(&turn.question, limits.max_message_chars),
                answer: clip(&turn.answer, limits.max_message_chars),
                at,
                ..turn
            });
            let excess = c.turns.len().saturating_sub(limits.max_turns);
            c.turns.drain(..excess);
            c.updated_at = at;
            let bytes = serde_json::to_vec(&c).map_err(|e| self.err(e))?;
            table
                .insert(id, bytes.as_slice())
                .map_err(|e| self.err(e))?;
            Ok(true)
        })
    }

    /// Deletes the conversation; false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.write(|table| Ok(table.remove(id).map_err(|e| self.err(e))?.is_some()))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "conversation store");
        ApiError::internal(e.to_string())
    }
}

impl Served {
    fn conversations(&self) -> Result<&Arc<ConversationStore>, ApiError> {
        self.conversations.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_supported",
                "this server keeps no conversations; send the earlier turns as `history`",
            )
        })
    }

    /// Conversation `id` (422 for a malformed id, 404 when unknown or expired).
    pub(crate) async fn conversation(&self, id: &str) -> Result<Conversation, ApiError> {
        let store = self.conversations()?.clone();
        let id = checked(id)?;
        let found = blocking("conversation lookup", move || store.get(&id)).await?;
        found.ok_or_else(gone)
    }

    /// Records a finished turn (after the answer; a failure is logged, the
    /// answer still stands).
    pub(crate) fn record_turn(&self, id: String, turn: Turn) {
        let Ok(store) = self.conversations().cloned() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.append(&id, turn) {
                tracing::error!(error = %e, conversation = %id, "cannot record the turn");
            }
        });
    }
}

fn checked(id: &str) -> Result<String, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::invalid(
            "conversation_id: not a conversation id (a UUID from POST /v1/conversations)",
        ));
    }
    Ok(id.to_string())
}

fn gone() -> ApiError {
    ApiError::not_found(
        "no such conversation (it may have expired): start one with POST /v1/conversations",
    )
}

#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "conversations",
    responses(
        (status = 201, description = "A new, empty conversation. Pass its `id` as `conversation_id` to `/v1/ask`: each answer then sees the earlier turns, and follow-up questions are rewritten to stand alone before retrieval.", body = Conversation),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    target: Target,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let store = target.served(&state, None)?.conversations()?.clone();
    let conversation = blocking("conversation create", move || store.create()).await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation's turns, oldest first", body = Conversation),
        (status = 404, description = "Unknown or expired"),
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    target: Target,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(target.served(&state, None)?.conversation(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown or expired"),
    )
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    target: Target,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = target.served(&state, None)?.conversations()?.clone();
    let id = checked(&id)?;
    if blocking("conversation delete", move || store.delete(&id)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(gone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(q: &str) -> Turn {
        Turn {
            question: q.into(),
            rewritten_query: None,
            answer: format!("answer to {q}"),
            cited_sources: vec!["a.md".into()],
            at: 0,
        }
    }

    #[test]
    fn turns_survive_reopening_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let limits = ConversationLimits {
            max_turns: 3,
            max_message_chars: 10,
            ..Default::default()
        };
        let id = {
            let store = ConversationStore::open(&path, limits.clone()).unwrap();
            let c = store.create().unwrap();
            for q in ["q1", "q2", "q3", "q4 is a long question"] {
                assert!(store.append(&c.id, turn(q)).unwrap());
            }
            c.id
        };
        let store = ConversationStore::open(&path, limits).unwrap();
        let c = store.get(&id).unwrap().expect("kept across a restart");
        let questions: Vec<&str> = c.turns.iter().map(|t| t.question.as_str()).collect();
        assert_eq!(questions, ["q2", "q3", "q4 is a lo"]);
        let history = c.history();
        assert_eq!(history.len(), 6);
        assert_eq!(history[1].role, docent_core::Role::Assistant);
        assert!(store.delete(&id).unwrap());
        assert!(store.get(&id).unwrap().is_none());
        assert!(!store.append(&id, turn("late")).unwrap());
        assert!(!store.delete(&id).unwrap());
    }

    #[test]
    fn the_least_recently_used_go_beyond_the_limit_and_old_ones_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConversationStore::open(
            &dir.path().join("c.redb"),
            ConversationLimits {
                max_conversations: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let a = store.create().unwrap();
        let b = store.create().unwrap();
        let c = store.create().unwrap();
        let kept = [&a, &b, &c]
            .iter()
            .filter(|x| store.get(&x.id).unwrap().is_some())
            .count();
        assert_eq!(kept, 2);
        assert!(store.get(&c.id).unwrap().is_some());

        let expiring = ConversationStore::open(
            &dir.path().join("e.redb"),
            ConversationLimits {
                ttl: Duration::from_secs(0),
                ..Default::default()
            },
        )
        .unwrap();
        let old = expiring.create().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(expiring.get(&old.id).unwrap().is_none());
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(valid_id("6f1c7a52-4a1e-4a0e-9a51-1d6f0e0b8c11"));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id(""));
    }
}
