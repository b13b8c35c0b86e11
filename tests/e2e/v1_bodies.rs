//! Every `/api/v1` route that takes a JSON body, found in the OpenAPI document so that a new
//! route is covered without touching this file: malformed, mistyped (the whole body, or one
//! field), incomplete and oversized bodies get the envelope's 400/422 with the right code,
//! never a 5xx, on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{spawn_app, Backend};

on_both_backends!(every_json_route_refuses_malformed_mistyped_missing_and_oversized_bodies);

/// The body schema of an operation, with a `$ref` to the components resolved.
fn body_schema<'a>(doc: &'a Value, op: &'a Value) -> Option<&'a Value> {
    let schema = op.pointer("/requestBody/content/application~1json/schema")?;
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')),
        None => Some(schema),
    }
}

/// The first property whose schema is a string, number, boolean or array: an object is the
/// wrong type for it.
fn scalar_field(schema: &Value) -> Option<&str> {
    let props = schema["properties"].as_object()?;
    props.iter().find_map(|(name, p)| {
        let ty = p["type"].as_str().or_else(|| p["type"].as_array()?.first()?.as_str())?;
        ["string", "integer", "number", "boolean", "array"]
            .contains(&ty)
            .then_some(name.as_str())
    })
}

async fn every_json_route_refuses_malformed_mistyped_missing_and_oversized_bodies(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let (_, doc, _) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    let (mut tested, mut mistyped) = (0, 0);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) = body_schema(&doc, op) else {
                continue;
            };
            // Ids that name nothing: the body is read and refused before any lookup.
            let url = format!("{}{}", app.url, path.replace('{', "none-").replace('}', ""));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let required = schema["required"].as_array().map_or(0, Vec::len);
            let mut cases = vec![
                ("{\"a\":".to_string(), StatusCode::BAD_REQUEST, "VALIDATION_002"),
                (
                    "\"text\"".to_string(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "VALIDATION_002",
                ),
                // serde would fill a struct from an array, field by field.
                (
                    "[null, null]".to_string(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "VALIDATION_002",
                ),
                (
                    json!({"pad": "x".repeat(2 << 20)}).to_string(),
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_003",
                ),
            ];
            if required > 0 {
                cases.push(("{}".to_string(), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_001"));
            }
            if let Some(field) = scalar_field(schema) {
                // One field of the wrong type is named, whatever else is missing.
                let body = json!({ field: {"nested": true} }).to_string();
                cases.push((body, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_002"));
                mistyped += 1;
            }
            for (body, status, code) in cases {
                let r = app
                    .client
                    .request(method.clone(), &url)
                    .bearer_auth(&admin)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let (got, request_id) = (r.status(), r.headers().get("x-request-id").cloned());
                let what = format!("{method} {path} {:.40}", body);
                let text = r.text().await.unwrap();
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {got} {text:?}"));
                assert_eq!((got, v["error"]["code"].as_str()), (status, Some(code)), "{what}: {v}");
                assert_eq!(v["success"], false, "{what}");
                assert_eq!(
                    v["request_id"].as_str(),
                    request_id.as_ref().and_then(|h| h.to_str().ok()),
                    "{what}"
                );
            }
            tested += 1;
        }
    }
    // Sign-up, sign-in (2), refresh, OAuth, profile, password, keys, roles (2), check, users (2).
    assert!(tested >= 13, "only {tested} JSON routes found in the document");
    assert!(mistyped >= 12, "only {mistyped} routes had a field to mistype");
    // The admin's session survived all of that.
    let (s, _) = app.v1(Method::GET, "/api/v1/auth/me", Some(&admin), None).await;
    assert_eq!(s, 200);
}
