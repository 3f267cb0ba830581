//! Virtual numbers: search, one by id, a user's, and reserving one.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::{NUMBERS_TAG, cache_tag};
use crate::AppState;
use crate::db::{Reservation, VirtualNumber};
use crate::error::AppError;
use crate::params;

/// `limit` of a search: at least one, at most a page the demo's UI shows.
const SEARCH_LIMIT: std::ops::RangeInclusive<i64> = 1..=100;
const DEFAULT_SEARCH_LIMIT: i64 = 20;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    country: Option<String>,
    area: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
struct NumberList {
    numbers: Vec<VirtualNumber>,
    count: usize,
}

impl NumberList {
    fn new(numbers: Vec<VirtualNumber>) -> Self {
        Self { count: numbers.len(), numbers }
    }
}

/// `GET /api/numbers/search?country=US&area=212&status=AVAILABLE&limit=20`
pub async fn search(
    State(state): State<AppState>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(query) = query?;
    let country = params::country("country", params::required("country", query.country.as_deref())?)?;
    let area = query.area.as_deref().map(|area| params::area_code("area", area)).transpose()?;
    let status = query.status.as_deref().map_or(Ok("AVAILABLE"), |status| params::number_status("status", status))?;
    let limit = params::integer_in("limit", query.limit.as_deref(), SEARCH_LIMIT, DEFAULT_SEARCH_LIMIT)?;
    let numbers = state.db.search_numbers(&country, area.as_deref(), status, limit).await?;
    Ok((cache_tag(&[NUMBERS_TAG]), Json(NumberList::new(numbers))))
}

/// `GET /api/numbers/{id}`
pub async fn by_id(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, AppError> {
    let id = params::id("id", &id)?;
    let number = state.db.number(id).await?.ok_or_else(|| AppError::not_found(format!("no number with id {id}")))?;
    Ok((cache_tag(&[NUMBERS_TAG, &format!("number:{id}")]), Json(number)))
}

/// `GET /api/users/{id}/numbers`
pub async fn of_user(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, AppError> {
    let id = params::id("id", &id)?;
    let numbers = state.db.numbers_of_owner(id).await?;
    // An empty list is an answer only for a user who exists.
    if numbers.is_empty() && state.db.user(id).await?.is_none() {
        return Err(AppError::not_found(format!("no user with id {id}")));
    }
    Ok((cache_tag(&[NUMBERS_TAG]), Json(NumberList::new(numbers))))
}

#[derive(Debug, Deserialize)]
pub struct ReserveRequest {
    user_id: i64,
}

/// `POST /api/numbers/{id}/reserve` with `{"user_id": n}`: 200 with the number, 404 for an
/// unknown number, 409 when it is not `AVAILABLE`, 422 for an unknown user.
pub async fn reserve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ReserveRequest>, JsonRejection>,
) -> Result<Json<VirtualNumber>, AppError> {
    let id = params::id("id", &id)?;
    let Json(request) = body?;
    if request.user_id <= 0 {
        return Err(AppError::invalid_parameter("user_id", "expected a positive integer"));
    }
    match state.db.reserve(id, request.user_id).await? {
        Reservation::Reserved(number) => Ok(Json(number)),
        Reservation::NoSuchNumber => Err(AppError::not_found(format!("no number with id {id}"))),
        Reservation::NotAvailable(status) => Err(AppError::new(
            StatusCode::CONFLICT,
            "not_available",
            format!("number {id} is {status}; only AVAILABLE numbers can be reserved"),
        )),
        Reservation::NoSuchUser => Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_user",
            format!("no user with id {}", request.user_id),
        )),
    }
}
