//! Graph's users delta query (`GET /v1.0/users/delta`), over the tenant's users: a full sync in
//! pages with `@odata.nextLink`, ending in an `@odata.deltaLink`; an incremental sync from a delta
//! link returns the users changed since, and removed users as `@removed`. Links carry their state
//! in `$skiptoken` / `$deltatoken` and must be followed verbatim. [`crate::RunningSim`] lets a test
//! move a user to another department, remove one, and expire every token (Graph then answers
//! `400 syncStateNotFound`, as for a delta link older than 7 days).
//!
//! Updated users are served with every selected property at its current value (Graph's default
//! for users, without `Prefer: return=minimal`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::graph::{gate_plain, graph_error};
use crate::tenant::User;
use crate::{Endpoint, LedgerTag, SimState};

/// Users per delta page (Graph pages users delta at 100 by default).
pub const USERS_PAGE: usize = 100;

/// One user as the directory holds it.
#[derive(Debug, Clone)]
pub(crate) struct DirectoryUser {
    pub(crate) value: Value,
    /// The directory revision that last changed it.
    pub(crate) changed: u64,
    pub(crate) removed: bool,
}

/// The directory and its change counter.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    pub(crate) revision: u64,
    /// Tokens of an older generation are refused.
    pub(crate) generation: u64,
    pub(crate) users: BTreeMap<String, DirectoryUser>,
    pub(crate) page: usize,
}

impl Directory {
    pub(crate) fn new(users: &[User], page: usize) -> Self {
        let users = users
            .iter()
            .map(|u| {
                (
                    u.id.clone(),
                    DirectoryUser {
                        value: user_value(u),
                        changed: 1,
                        removed: false,
                    },
                )
            })
            .collect();
        Self {
            revision: 1,
            generation: 1,
            users,
            page: page.max(1),
        }
    }

    /// Sets `property` of user `id` (JSON `null` clears it); `false` for an unknown user.
    pub(crate) fn set(&mut self, id: &str, property: &str, value: Value) -> bool {
        let Some(user) = self.users.get_mut(id) else {
            return false;
        };
        self.revision += 1;
        user.changed = self.revision;
        if let Some(org) = property.strip_prefix("employeeOrgData.") {
            if !user.value["employeeOrgData"].is_object() {
                user.value["employeeOrgData"] = json!({});
            }
            user.value["employeeOrgData"][org] = value;
        } else {
            user.value[property] = value;
        }
        true
    }

    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(user) = self.users.get_mut(id) else {
            return false;
        };
        self.revision += 1;
        user.changed = self.revision;
        user.removed = true;
        true
    }
}

/// A tenant user as `GET users` selects it.
fn user_value(u: &User) -> Value {
    json!({
        "id": u.id,
        "userPrincipalName": u.upn,
        "displayName": u.display_name,
        "department": u.department,
        "employeeOrgData": {"costCenter": u.cost_center, "division": u.division},
        "officeLocation": u.office_location,
        "usageLocation": u.usage_location,
        "companyName": "Contoso",
    })
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/v1.0/users/delta", get(delta))
}

/// Where a listing stands: `since` (none: a full sync), `upto` (the revision it ends at), and the
/// last id served.
struct Position {
    generation: u64,
    since: Option<u64>,
    upto: u64,
    after: Option<String>,
}

impl Position {
    fn skiptoken(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.generation,
            self.since.map(|s| s.to_string()).unwrap_or_default(),
            self.upto,
            self.after.as_deref().unwrap_or_default()
        )
    }

    fn parse_skiptoken(token: &str) -> Option<Self> {
        let mut parts = token.splitn(4, '.');
        let generation = parts.next()?.parse().ok()?;
        let since = match parts.next()? {
            "" => None,
            s => Some(s.parse().ok()?),
        };
        let upto = parts.next()?.parse().ok()?;
        let after = Some(parts.next()?.to_owned()).filter(|a| !a.is_empty());
        Some(Self {
            generation,
            since,
            upto,
            after,
        })
    }
}

fn gone() -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

async fn delta(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let endpoint = Endpoint::UsersDelta;
    if let Err(r) = gate_plain(&state, &headers, endpoint).await {
        return r;
    }
    let tagged = |r: Response| {
        let mut r = r;
        r.extensions_mut().insert(LedgerTag {
            endpoint,
            record_id: None,
            reset: false,
        });
        r
    };
    let directory = state.directory.lock().unwrap_or_else(|p| p.into_inner());
    let bad = || {
        tagged(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid delta or skip token.",
        ))
    };
    let position = if let Some(token) = query.get("$skiptoken") {
        match Position::parse_skiptoken(token) {
            Some(p) => p,
            None => return bad(),
        }
    } else if let Some(token) = query.get("$deltatoken") {
        let Some((generation, since)) = token
            .split_once('.')
            .and_then(|(g, r)| Some((g.parse().ok()?, r.parse().ok()?)))
        else {
            return bad();
        };
        Position {
            generation,
            since: Some(since),
            upto: directory.revision,
            after: None,
        }
    } else {
        Position {
            generation: directory.generation,
            since: None,
            upto: directory.revision,
            after: None,
        }
    };
    if position.generation != directory.generation {
        return tagged(gone());
    }
    let wanted = |u: &DirectoryUser| match position.since {
        None => !u.removed,
        Some(since) => u.changed > since && u.changed <= position.upto,
    };
    let mut value = Vec::new();
    let mut last = None;
    let mut more = false;
    let after = position.after.clone().unwrap_or_default();
    for (id, user) in directory
        .users
        .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        .filter(|(_, u)| wanted(u))
    {
        if value.len() == directory.page {
            more = true;
            break;
        }
        value.push(if user.removed {
            json!({"id": id, "@removed": {"reason": "deleted"}})
        } else {
            user.value.clone()
        });
        last = Some(id.clone());
    }
    let base = &state.base_url;
    let mut body = json!({
        "@odata.context": format!("{base}/v1.0/$metadata#users(id,userPrincipalName,displayName,department,employeeOrgData,officeLocation,usageLocation,companyName)"),
        "value": value,
    });
    if more {
        let next = Position {
            after: last,
            ..position
        };
        body["@odata.nextLink"] = json!(format!(
            "{base}/v1.0/users/delta?$skiptoken={}",
            next.skiptoken()
        ));
    } else {
        body["@odata.deltaLink"] = json!(format!(
            "{base}/v1.0/users/delta?$deltatoken={}.{}",
            position.generation, position.upto
        ));
    }
    tagged(axum::Json(body).into_response())
}
