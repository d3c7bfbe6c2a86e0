//! The admin HTTP API (axum): publish to a session or a room, list and kick
//! sessions, list rooms and members, drain, health and readiness,
//! Prometheus metrics, and the OpenAPI description of all of it.
//! Everything under `/v1` needs `Authorization: Bearer KEY`; `/metrics` is
//! open unless a read-only metrics key is configured (it or the admin key).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq as _;
use tether_proto::{CloseCode, SessionId};

use crate::rooms::Rooms;
use crate::{api, deliver, Shared};
use tether_runtime::store::Kicked;

/// The OpenAPI 3.1 description, served at `/openapi.json` (the answers are
/// the types of [`crate::api`], checked against it).
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// A JSON error body: what happened and what to do.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// An error as a handler's `Err`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(api::ErrorBody { error: self.1 })).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

pub(crate) fn router(shared: Shared) -> Router {
    let api = Router::new()
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(kick))
        .route("/v1/sessions/{id}/publish", post(publish_session))
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/rooms/{room}", get(get_room))
        .route("/v1/rooms/{room}/publish", post(publish_room))
        .route("/v1/bans", get(list_bans))
        .route("/v1/bans/{user}", axum::routing::delete(lift_ban))
        .route("/v1/drain", post(drain))
        .route_layer(middleware::from_fn_with_state(shared.clone(), bearer));
    let metrics = Router::new()
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(shared.clone(), metrics_bearer));
    Router::new()
        .route("/health", get(|| async { Json(api::Health { status: "ok" }) }))
        .route("/ready", get(ready))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .merge(api)
        .merge(metrics)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see /openapi.json") })
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// Counts every request by route template, method and status
/// (`tether_admin_requests_total`), whatever answered it (a refusal of the
/// key included).
async fn count(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let response = next.run(req).await;
    s.metrics.admin_request(route.as_deref().unwrap_or("unmatched"), &method, response.status().as_u16());
    response
}

async fn bearer(State(s): State<Shared>, req: Request, next: Next) -> Response {
    check_bearer(req, &[&s.admin_key], "admin key", next).await
}

/// `/metrics`: open, unless `admin.metrics_key` is set; then it or the
/// admin key.
async fn metrics_bearer(State(s): State<Shared>, req: Request, next: Next) -> Response {
    match &s.metrics_key {
        None => next.run(req).await,
        Some(m) => check_bearer(req, &[m, &s.admin_key], "metrics key", next).await,
    }
}

/// Passes a request carrying `Authorization: Bearer K` for one of `keys`
/// (compared in constant time); 401 naming what is missing otherwise.
async fn check_bearer(req: Request, keys: &[&str], what: &str, next: Next) -> Response {
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    // "Bearer" is case-insensitive (RFC 7235).
    let given = header
        .as_deref()
        .and_then(|v| (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii().to_vec()));
    let refuse = |message: String| {
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        r
    };
    let ok = |k: &[u8]| keys.iter().fold(false, |ok, key| ok | bool::from(k.ct_eq(key.as_bytes())));
    match (header.is_some(), given) {
        (_, Some(k)) if ok(&k) => next.run(req).await,
        (_, Some(_)) => refuse(format!(
            "wrong {what}; use the key from the config's admin.{} (or its _env){}",
            if what == "admin key" { "key" } else { "metrics_key" },
            if what == "admin key" { ", or the admin key file named at start" } else { "" }
        )),
        (true, None) => refuse(format!("the Authorization header is not `Bearer <{what}>`")),
        (false, None) => refuse(format!("missing header `Authorization: Bearer <{what}>`")),
    }
}

fn rooms(s: &Shared) -> std::sync::MutexGuard<'_, Rooms> {
    s.rooms.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_id(id: &str) -> Result<SessionId, ApiError> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(id, &mut b)
        .map(|()| SessionId::from_bytes(b))
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{id:?} is not a session id (32 hex digits)")))
}

const GONE: &str = "no such session (it may have expired)";
const NO_ROOM: &str = "no such room (rooms exist while they have members)";

fn session_view(rooms: &Rooms, info: &tether_runtime::server::SessionInfo) -> api::Session {
    let member = rooms.participant(info.id);
    api::Session {
        id: info.id.to_string(),
        user: member.map(|m| m.user(info.id)).or_else(|| crate::auth::user_of(info.user.as_deref())),
        state: if info.attached { api::Attachment::Attached } else { api::Attachment::Detached },
        transport: info.peer.map(|(k, _)| k.to_string()),
        peer: info.peer.map(|(_, a)| a.to_string()),
        rtt_ms: member.and_then(|m| m.rtt_ms()),
        last_heard_ms: info.silent_for.as_millis() as u64,
        replay_buffer: api::ReplayBuffer { messages: info.buffered.0, bytes: info.buffered.1 },
        rooms: member.map(|m| m.rooms().map(str::to_owned).collect()).unwrap_or_default(),
    }
}

/// Sessions as the API shows them; with `[cluster]`, their rooms are read
/// from Redis (where membership lives).
async fn views(s: &Shared, infos: &[tether_runtime::server::SessionInfo]) -> Result<Vec<api::Session>, ApiError> {
    let mut views: Vec<api::Session> = {
        let rooms = rooms(s);
        infos.iter().map(|i| session_view(&rooms, i)).collect()
    };
    if let Some(c) = &s.cluster {
        let ids: Vec<SessionId> = infos.iter().map(|i| i.id).collect();
        let rooms = c.rooms_of(&ids).await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        for (v, r) in views.iter_mut().zip(rooms) {
            v.rooms = r;
        }
    }
    Ok(views)
}

async fn list_sessions(State(s): State<Shared>) -> ApiResult {
    let mut infos = s.server.sessions();
    infos.sort_by_key(|i| i.id);
    let sessions = views(&s, &infos).await?;
    Ok(Json(api::Sessions { sessions }).into_response())
}

async fn get_session(State(s): State<Shared>, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = parse_id(&id.map_err(bad_request)?.0)?;
    let Some(info) = s.server.sessions().into_iter().find(|i| i.id == id) else {
        return Err(ApiError(StatusCode::NOT_FOUND, GONE.into()));
    };
    let view = views(&s, std::slice::from_ref(&info)).await?.pop();
    Ok(Json(view).into_response())
}

#[derive(Deserialize, Default)]
struct KickQuery {
    reason: Option<String>,
    /// A duration ("10m"): also ban the session's user for that long, and
    /// end every session they hold.
    ban: Option<String>,
}

async fn kick(
    State(s): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<KickQuery>, QueryRejection>,
) -> ApiResult {
    let id = parse_id(&id.map_err(bad_request)?.0)?;
    let q = q.map_err(bad_request)?.0;
    let reason = q.reason.unwrap_or_else(|| "kicked by the operator".into());
    let Some(ban) = q.ban else {
        let kicked = Json(api::Kicked { kicked: vec![id.to_string()], banned: None, ban_ms: None }).into_response();
        s.metrics.kicking(id, false);
        if s.server.close_session(id, CloseCode::Kicked, &reason) {
            return Ok(kicked);
        }
        s.metrics.not_kicked(id);
        // With a cluster, the session may be carried by another node, or by
        // none (its node died): the store tells that node, or ends it.
        let (Some(store), Some(c)) = (s.server.store(), &s.cluster) else {
            return Err(ApiError(StatusCode::NOT_FOUND, GONE.into()));
        };
        return match store.kick(id, &reason).await.map_err(store_away)? {
            Kicked::Forwarded => Ok(kicked),
            Kicked::Ended => {
                // No node carried it: it ends here, in the store.
                s.metrics.count_end("kicked");
                if let Ok(crate::rooms::redis::Done::Sent(sent)) = c.ended(id, false).await {
                    crate::tally(&s.metrics, s.server.stored(sent));
                }
                Ok(kicked)
            }
            Kicked::Unknown => Err(ApiError(StatusCode::NOT_FOUND, GONE.into())),
        };
    };
    let d = humantime::parse_duration(&ban)
        .map_err(|e| bad_request(format!("ban: {ban:?}: {e}; write a duration with a unit, e.g. 10m or 2h")))?;
    if d.is_zero() || d > Duration::from_secs(365 * 86400) {
        return Err(bad_request("ban: give a duration above 0 and at most a year, e.g. ban=10m"));
    }
    let sessions = s.server.sessions();
    let Some(info) = sessions.iter().find(|i| i.id == id) else {
        return Err(ApiError(StatusCode::NOT_FOUND, GONE.into()));
    };
    let user = crate::auth::user_of(info.user.as_deref()).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "this session is anonymous: there is no user to ban; kick it without ban=".into(),
        )
    })?;
    s.bans.ban(&user, std::time::Instant::now() + d);
    let mut kicked = Vec::new();
    for i in sessions.iter().filter(|i| crate::auth::user_of(i.user.as_deref()).as_deref() == Some(user.as_str())) {
        s.metrics.kicking(i.id, true);
        if s.server.close_session(i.id, CloseCode::Kicked, &reason) {
            kicked.push(i.id.to_string());
        } else {
            s.metrics.not_kicked(i.id);
        }
    }
    tracing::info!(%user, ban = %humantime::format_duration(d), sessions = kicked.len(), "user banned");
    Ok(Json(api::Kicked { kicked, banned: Some(user), ban_ms: Some(d.as_millis() as u64) }).into_response())
}

async fn list_bans(State(s): State<Shared>) -> Response {
    let bans = s
        .bans
        .list(std::time::Instant::now())
        .into_iter()
        .map(|(user, left)| api::Ban { user, remaining_ms: left.as_millis() as u64 })
        .collect();
    Json(api::Bans { bans }).into_response()
}

async fn lift_ban(State(s): State<Shared>, user: Result<Path<String>, PathRejection>) -> ApiResult {
    let user = user.map_err(bad_request)?.0;
    if s.bans.lift(&user) {
        Ok(Json(api::Lifted { lifted: user }).into_response())
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "no ban for this user".into()))
    }
}

#[derive(Deserialize)]
struct Publish {
    body: Value,
}

type PublishBody = Result<Json<Publish>, JsonRejection>;

fn body(p: PublishBody) -> Result<Value, ApiError> {
    p.map(|Json(p)| p.body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{}; send JSON like {{\"body\": {{\"text\": \"hi\"}}}}", e.body_text()),
        )
    })
}

async fn publish_session(State(s): State<Shared>, Path(id): Path<String>, p: PublishBody) -> ApiResult {
    let (id, body) = (parse_id(&id)?, body(p)?);
    let fate = match s.server.publish(vec![(id, Rooms::publish_session(&body))]).await {
        Ok(mut fates) => fates.pop().unwrap_or(Err(tether_proto::SendError::NoSession)),
        Err(e) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("not queued: {e}; retry shortly"))),
    };
    match fate {
        Ok(seq) => {
            s.metrics.messages_out(1);
            Ok((StatusCode::ACCEPTED, Json(api::SessionPublished { session: id.to_string(), seq })).into_response())
        }
        Err(e) => Err(ApiError(StatusCode::CONFLICT, format!("not queued: {e}"))),
    }
}

/// The store is away: the answer says so (503) and to retry.
fn store_away(e: tether_runtime::store::StoreError) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry shortly"))
}

async fn list_rooms(State(s): State<Shared>) -> ApiResult {
    let list = match &s.cluster {
        Some(c) => c.list().await.map_err(store_away)?,
        None => rooms(&s).list(),
    };
    let rooms = list.into_iter().map(|(room, members)| api::RoomSize { room, members }).collect();
    Ok(Json(api::Rooms { rooms }).into_response())
}

async fn get_room(State(s): State<Shared>, room: Result<Path<String>, PathRejection>) -> ApiResult {
    let room = room.map_err(bad_request)?.0;
    let members = match &s.cluster {
        Some(c) => c.members(&room).await.map_err(store_away)?,
        None => rooms(&s).room_members(&room),
    };
    match members {
        Some(members) => Ok(Json(api::Room { room, members }).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, NO_ROOM.into())),
    }
}

async fn publish_room(State(s): State<Shared>, Path(room): Path<String>, p: PublishBody) -> ApiResult {
    let body = body(p)?;
    let queued = match &s.cluster {
        Some(c) => {
            let payload = crate::protocol::Event::Publish { room: Some(room.clone()), body }.to_bytes();
            match c.publish(&room, payload).await.map_err(store_away)? {
                Some(crate::rooms::redis::Done::Sent(sent)) => crate::tally(&s.metrics, s.server.stored(sent)).queued,
                Some(_) => 0,
                None => return Err(ApiError(StatusCode::NOT_FOUND, NO_ROOM.into())),
            }
        }
        None => {
            let out = rooms(&s).publish_room(&room, &body);
            match out {
                Some(out) => deliver(&s.server, &s.metrics, out).await.queued,
                None => return Err(ApiError(StatusCode::NOT_FOUND, NO_ROOM.into())),
            }
        }
    };
    Ok((StatusCode::ACCEPTED, Json(api::RoomPublished { room, queued })).into_response())
}

#[derive(Deserialize, Default)]
struct DrainReq {
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
}

/// The body is optional; without one (or with `{}`) the configured window is used.
async fn drain(State(s): State<Shared>, body: axum::body::Bytes) -> ApiResult {
    let req: DrainReq = if body.iter().all(u8::is_ascii_whitespace) {
        DrainReq::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("{e}; send JSON like {{\"window\": \"5s\"}}, or no body")))?
    };
    let window = req.window.unwrap_or(s.drain_window);
    if window.is_zero() || window > Duration::from_secs(3600) {
        return Err(bad_request("window must be above 0 and at most 1h, e.g. {\"window\": \"5s\"}"));
    }
    s.draining.store(true, Ordering::SeqCst);
    let told = s.server.drain(window);
    tracing::info!(told, ?window, "draining on the admin API's request");
    Ok(Json(api::Drained { told, window_ms: window.as_millis() as u64 }).into_response())
}

async fn ready(State(s): State<Shared>) -> Response {
    if s.draining.load(Ordering::SeqCst) {
        error(StatusCode::SERVICE_UNAVAILABLE, "draining: new sessions are refused")
    } else {
        Json(api::Ready { ready: true }).into_response()
    }
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    // With [cluster] rooms live in Redis, cluster-wide: no room gauges
    // (GET /v1/rooms lists them).
    let rooms = s.cluster.is_none().then(|| rooms(&s).counts());
    let text = s.metrics.render(&s.server, rooms);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
