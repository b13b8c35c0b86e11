//! The OpenAPI 3.1 document, assembled from the route table: each v1 handler's own description
//! plus the errors its guard can answer with.

use std::sync::OnceLock;

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use super::envelope::ErrorBody;
use super::guard::Access;
use crate::routes::{Endpoint, ROUTES};

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// The errors every v1 route may answer with, by who may call it and how.
fn add_common_errors(op: &mut Operation, access: Access, method: &str) {
    let mut errors = vec![
        ("400", "Malformed request"),
        ("422", "A field is missing, mistyped or out of range"),
        ("429", "Rate limit or quota exceeded"),
        ("500", "Internal error"),
    ];
    if method == "PUT" {
        // Every PUT is an optimistic read-modify-write, which a concurrent change can refuse.
        errors.push(("409", "Changed concurrently; read it again and retry"));
    }
    if op.request_body.is_some() {
        // Bodies share one memory budget across all requests (`body::BodyBudget`).
        errors.push((
            "503",
            "The server holds as many request bodies as it can; retry shortly",
        ));
    }
    if matches!(access, Access::Permission(_)) {
        errors.extend([
            ("401", "Missing, invalid, expired or revoked credential"),
            ("403", "Permission missing"),
        ]);
        op.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
        ]);
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &str) -> Option<&'a mut Operation> {
    match method {
        "GET" => item.get.as_mut(),
        "POST" => item.post.as_mut(),
        "PUT" => item.put.as_mut(),
        "DELETE" => item.delete.as_mut(),
        _ => None,
    }
}

fn build() -> OpenApi {
    let mut paths = Paths::new();
    let mut components = ComponentsBuilder::new()
        .schema(ErrorBody::name(), ErrorBody::schema())
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or mk_ API key")
                    .build(),
            ),
        )
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    let mut schemas = Vec::new();
    ErrorBody::schemas(&mut schemas);
    for route in ROUTES {
        let Endpoint::V1(endpoint) = route.endpoint else {
            continue;
        };
        let (route_schemas, mut route_paths, _) = endpoint();
        schemas.extend(route_schemas);
        for (path, mut item) in std::mem::take(&mut route_paths.paths) {
            if let Some(op) = operation_mut(&mut item, route.method) {
                op.operation_id = Some(route.name.to_string());
                add_common_errors(op, route.access, route.method);
            }
            match paths.paths.get_mut(&path) {
                Some(existing) => existing.merge_operations(item),
                None => {
                    paths.paths.insert(path, item);
                }
            }
        }
    }
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("maas platform API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Accounts, tokens, API keys, roles and rate limits. Envelope and error codes: docs/api-v1.md.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// The document as served, built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(build()).expect("the OpenAPI document serializes");
        spell_links_as_openapi_does(&mut doc);
        doc
    })
}

/// utoipa 5.5 writes a response link's fields in snake_case (`operation_id`); OpenAPI spells
/// them `operationId`, `operationRef` and `requestBody`, and tools ignore anything else.
fn spell_links_as_openapi_does(doc: &mut serde_json::Value) {
    let paths = doc.get_mut("paths").and_then(|p| p.as_object_mut());
    let operations = paths.into_iter().flat_map(|p| p.values_mut());
    let responses = operations
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let links = response.get_mut("links").and_then(|l| l.as_object_mut());
        for link in links
            .into_iter()
            .flat_map(|l| l.values_mut())
            .filter_map(|l| l.as_object_mut())
        {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(snake) {
                    link.insert(camel.to_string(), v);
                }
            }
        }
    }
}
