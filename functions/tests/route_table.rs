//! infra/template.yaml and events/ are derived from the route table: exactly one Lambda
//! function and one sample event per route, with matching binary, method and path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use maas_functions::ROUTES;
use serde_yaml::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("template parses as plain YAML (long-form intrinsics only)")
}

/// (binary, method, path) of every serverless function in the template.
fn functions(t: &Value) -> BTreeMap<String, (String, String, String)> {
    let mut out = BTreeMap::new();
    for (id, res) in t["Resources"].as_mapping().unwrap() {
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id.as_str().unwrap().to_string();
        assert_eq!(
            res["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{id}"
        );
        let binary = res["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} has no Binary"));
        let (method, path) = match res["Properties"]["FunctionUrlConfig"]["InvokeMode"].as_str() {
            Some(mode) => {
                // A streaming route: a function URL, reached through the front door.
                assert_eq!(mode, "RESPONSE_STREAM", "{id}");
                assert!(res["Properties"]["Events"].is_null(), "{id} streams: no HTTP API event");
                let route = &res["Metadata"]["Route"];
                let path = route["Path"].as_str().unwrap().to_string();
                assert!(front_door_sends(t, &path, &id), "the front door sends {path} to {id}");
                (route["Method"].as_str().unwrap().to_uppercase(), path)
            }
            None => {
                let events = res["Properties"]["Events"]
                    .as_mapping()
                    .unwrap_or_else(|| panic!("{id} has no events"));
                assert_eq!(events.len(), 1, "{id} has exactly one event");
                let ev = events.values().next().unwrap();
                assert_eq!(ev["Type"].as_str(), Some("HttpApi"), "{id}");
                let method = ev["Properties"]["Method"].as_str().unwrap().to_uppercase();
                (method, ev["Properties"]["Path"].as_str().unwrap().to_string())
            }
        };
        assert!(
            out.insert(binary.to_string(), (id, method, path)).is_none(),
            "two functions build {binary}"
        );
    }
    out
}

/// Whether the CloudFront front door has a behaviour for `path` whose origin is `function`'s URL.
fn front_door_sends(t: &Value, path: &str, function: &str) -> bool {
    let config = &t["Resources"]["Front"]["Properties"]["DistributionConfig"];
    let Some(behaviours) = config["CacheBehaviors"].as_sequence() else {
        return false;
    };
    let Some(b) = behaviours.iter().find(|b| b["PathPattern"].as_str() == Some(path)) else {
        return false;
    };
    let origin = b["TargetOriginId"].as_str().unwrap_or_default();
    config["Origins"].as_sequence().unwrap().iter().any(|o| {
        o["Id"].as_str() == Some(origin)
            && o["DomainName"]["Fn::Select"][1]["Fn::Split"][1]["Fn::GetAtt"][0].as_str()
                == Some(&format!("{function}Url"))
    })
}

#[test]
fn the_template_has_exactly_one_function_per_route() {
    let fns = functions(&template());
    assert_eq!(fns.len(), ROUTES.len(), "functions: {:?}", fns.keys());
    for r in ROUTES {
        let (id, method, path) = fns
            .get(r.name)
            .unwrap_or_else(|| panic!("no function builds {}", r.name));
        assert_eq!((method.as_str(), path.as_str()), (r.method, r.path), "{id}");
        let streams = template()["Resources"][id.as_str()]["Properties"]["FunctionUrlConfig"].is_mapping();
        assert_eq!(
            streams,
            r.streams(),
            "{id}: streams in the template as in the route table"
        );
    }
}

#[test]
fn every_route_has_a_lambda_binary_and_a_sample_event() {
    for r in ROUTES {
        let bin = repo_root().join(format!("functions/src/bin/{}.rs", r.name));
        assert!(bin.exists(), "missing {}", bin.display());
        let event = repo_root().join(format!("events/{}.json", r.name));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&event).unwrap()).unwrap();
        assert_eq!(v["version"], "2.0", "{}", r.name);
        assert_eq!(v["requestContext"]["http"]["method"], r.method, "{}", r.name);
        assert_eq!(v["routeKey"], format!("{} {}", r.method, r.path), "{}", r.name);
        assert!(path_matches(r.path, v["rawPath"].as_str().unwrap()), "{}", r.name);
    }
    let bins = std::fs::read_dir(repo_root().join("functions/src/bin"))
        .unwrap()
        .count();
    let events = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(
        (bins, events),
        (ROUTES.len(), ROUTES.len()),
        "no stray binaries or events"
    );
}

/// `/users/{id}` matches `/users/anything`: events fill path parameters in.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<_>, Vec<_>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()))
}
