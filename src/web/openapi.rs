//! `GET /openapi.json`: the API's OpenAPI 3.1 description.

use actix_web::HttpResponse;

/// The document, kept beside the routes it describes.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}
