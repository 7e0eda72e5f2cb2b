//! Who may call what, tried as an attacker would: every route without credentials, forged and
//! stale JWTs, each role against the routes it may and may not call, another team's app, a
//! production region for a non-production principal, the rate limit, and the audit row of every
//! mutating call. The API runs in-process against the real Kafka and Cassandra.

mod common;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::api::{spawn_app, spawn_app_auth};
use common::{client_as, dev_tokens, unique};

const ISSUER: &str = "https://idp.test.example/";

/// A deployment of `app` with a unique marker in its version, to `regions`.
fn deployment(app: &str, marker: &str, regions: &[&str]) -> Value {
    let targets: Vec<Value> = regions.iter().map(|r| json!({ "region": r })).collect();
    json!({
        "app": app, "version": format!("1.0.0-{marker}"), "artifact": "registry.example.com/a:1",
        "instances_per_zone": 1, "resources": {"cpus": 0.1, "mem_mb": 64}, "targets": targets,
    })
}

/// Answers status, headers and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn every_route_but_the_public_ones_needs_credentials() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    let id = uuid::Uuid::new_v4();
    for (method, path) in mot::web::SERVICE_ROUTES {
        let url = format!(
            "{}{}",
            app.url,
            path.replace("{id}", &id.to_string())
                .replace("{app}", "some-app")
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for authorization in [None, Some("Bearer mot_not-a-token"), Some("Basic YTpi")] {
            let mut request = anonymous
                .request(method.clone(), &url)
                .header("Content-Type", "application/json")
                .body("{}");
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            let (status, headers, body) = send(request).await;
            assert_eq!(
                status, 401,
                "{method} {path} with {authorization:?}: {body}"
            );
            assert_eq!(body["error"]["code"], "unauthenticated", "{method} {path}");
            let challenge = headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer realm=\"mot\""), "{challenge}");
            assert_eq!(
                challenge.contains("invalid_token"),
                authorization.is_some(),
                "{challenge}"
            );
        }
    }
    for (_, path) in mot::web::ROUTES_ALWAYS {
        let status = anonymous
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(status.as_u16(), 401, "{path} is public");
    }
    // Refused calls are audited, with no principal.
    let (status, _, audit) = send(
        app.client
            .get(format!("{}/audit?principal=anonymous", app.url)),
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let mutating = mot::web::SERVICE_ROUTES
        .iter()
        .filter(|(m, _)| *m != "GET")
        .count();
    let calls = audit["calls"].as_array().unwrap();
    assert_eq!(calls.len(), mutating * 3, "{audit}");
    assert!(calls.iter().all(|c| c["status"] == 401
        && c["outcome"] == "refused"
        && c["reason"] == "unauthenticated"));
}

#[actix_web::test]
async fn roles_teams_and_environments_decide_who_changes_what() {
    let app = spawn_app().await;
    let tokens = dev_tokens();
    let as_ = |token: &str| client_as(token).build().unwrap();
    let (admin, checkout, nonprod, viewer) = (
        as_(&tokens.admin),
        as_(&tokens.checkout),
        as_(&tokens.nonprod),
        as_(&tokens.viewer),
    );
    let ours = format!("shop-{}", unique("").replace('_', ""));
    let theirs = format!("pay-{}", unique("").replace('_', ""));
    let marker = unique("access");
    let post = |client: &reqwest::Client, body: Value| {
        client.post(format!("{}/deployments", app.url)).json(&body)
    };
    let both = ["test-us-east-1", "production-us-west-2"];

    // A viewer reads, and changes nothing.
    let (status, _, body) = send(post(&viewer, deployment(&ours, &marker, &both))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    // A non-production deployer is refused a production region, named.
    let (status, _, body) = send(post(&nonprod, deployment(&ours, &marker, &both))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "targets[1].region",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("production"),
        "{body}"
    );

    // The first deployment of an unowned app gives it to the deployer's team.
    let (status, _, body) = send(post(&checkout, deployment(&ours, &marker, &both))).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, _, owners) = send(viewer.get(format!("{}/apps/{ours}/owners", app.url))).await;
    assert_eq!(
        (status, &owners["teams"]),
        (200, &json!(["checkout"])),
        "{owners}"
    );
    // The non-production deployer of the same team may change it in test.
    let (status, _, body) = send(post(
        &nonprod,
        deployment(&ours, &marker, &["test-us-east-1"]),
    ))
    .await;
    assert_eq!(status, 202, "{body}");
    // Who asked is on the deployment and its timeline.
    let (_, _, got) = send(viewer.get(format!("{}/deployments/{id}", app.url))).await;
    assert_eq!(got["requested_by"], "dev-checkout", "{got}");
    let (_, _, events) = send(viewer.get(format!("{}/deployments/{id}/events", app.url))).await;
    assert_eq!(events["requested_by"], "dev-checkout", "{events}");

    // Another team's app: only an admin gives owners; its deployers alone change it.
    let (status, _, body) = send(
        checkout
            .put(format!("{}/apps/{theirs}/owners", app.url))
            .json(&json!({"teams": ["checkout"]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = send(
        admin
            .put(format!("{}/apps/{theirs}/owners", app.url))
            .json(&json!({"teams": ["payments"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(post(&checkout, deployment(&theirs, &marker, &both))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "app", "{body}");
    let (status, _, body) = send(post(&admin, deployment(&theirs, &marker, &both))).await;
    assert_eq!(status, 202, "{body}");
    let theirs_id = body["id"].as_str().unwrap().to_owned();
    // Reads of another team's app are refused to a principal of one team, not to a viewer of all.
    let (status, _, _) = send(checkout.get(format!("{}/deployments/{theirs_id}", app.url))).await;
    assert_eq!(status, 403);
    let (status, _, _) = send(checkout.get(format!("{}/apps/{theirs}/deployments", app.url))).await;
    assert_eq!(status, 403);
    let (status, _, _) = send(viewer.get(format!("{}/deployments/{theirs_id}", app.url))).await;
    assert_eq!(status, 200);
    let (_, _, listing) = send(checkout.get(format!("{}/deployments?limit=100", app.url))).await;
    let listed: Vec<&str> = listing["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["app"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&ours.as_str()) && !listed.contains(&theirs.as_str()),
        "{listed:?}"
    );
    let (status, _, body) = send(
        checkout
            .post(format!("{}/deployments/{theirs_id}/traffic", app.url))
            .json(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = send(
        nonprod
            .post(format!("{}/deployments/{id}/traffic", app.url))
            .json(
                &json!({"enabled": false, "regions": ["test-us-east-1", "production-us-west-2"]}),
            ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "regions[1]", "{body}");
    let (status, _, body) = send(checkout.delete(format!("{}/apps/{theirs}", app.url))).await;
    assert_eq!(status, 403, "{body}");

    // Nothing refused reached Kafka: the two accepted requests of ours, the admin's of theirs.
    let logged = app.requests_marked_payloads(&marker).await;
    let apps: Vec<&str> = logged
        .iter()
        .map(|p| p["spec"]["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps.iter().filter(|a| **a == ours).count(), 2, "{apps:?}");
    assert_eq!(apps.iter().filter(|a| **a == theirs).count(), 1, "{apps:?}");
    let by: Vec<&str> = logged
        .iter()
        .filter_map(|p| p["requested_by"].as_str())
        .collect();
    assert_eq!(by.len(), 3, "{logged:?}");

    // The audit log: only an admin reads it; one row per mutating call, refusals included.
    let (status, _, _) = send(viewer.get(format!("{}/audit", app.url))).await;
    assert_eq!(status, 403);
    let (status, _, audit) = send(admin.get(format!("{}/audit?app={ours}", app.url))).await;
    assert_eq!(status, 200, "{audit}");
    let rows: Vec<(String, String, i64)> = audit["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["principal"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
                c["status"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut expected: Vec<(String, String, i64)> = [
        ("dev-viewer", "POST /deployments", 403),
        ("dev-checkout-nonprod", "POST /deployments", 403),
        ("dev-checkout", "POST /deployments", 202),
        ("dev-checkout-nonprod", "POST /deployments", 202),
        (
            "dev-checkout-nonprod",
            "POST /deployments/{id}/traffic",
            403,
        ),
    ]
    .iter()
    .map(|(p, a, s)| (p.to_string(), a.to_string(), *s))
    .collect();
    let mut got = rows.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{audit}");
    let newest = &audit["calls"][0];
    assert_eq!(
        newest["regions"],
        json!(["production-us-west-2", "test-us-east-1"])
    );
    assert_eq!(newest["deployment"], json!(id));
    assert_eq!(newest["source"], "127.0.0.1");
    let (_, _, theirs_audit) = send(admin.get(format!("{}/audit?app={theirs}", app.url))).await;
    assert_eq!(
        theirs_audit["calls"].as_array().unwrap().len(),
        6,
        "{theirs_audit}"
    );
}

#[actix_web::test]
async fn mutating_calls_are_rate_limited_per_principal() {
    let app = spawn_app_auth("mutations_per_minute = 1\nmutation_burst = 2").await;
    let tokens = dev_tokens();
    let nonprod = client_as(&tokens.nonprod).build().unwrap();
    // Malformed bodies: refused without reaching Kafka, and still counted.
    let bad = || {
        nonprod
            .post(format!("{}/deployments", app.url))
            .header("Content-Type", "application/json")
            .body("{")
    };
    for _ in 0..2 {
        assert_eq!(send(bad()).await.0, 400);
    }
    let (status, headers, body) = send(bad()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Reads are not limited, nor are other principals.
    assert_eq!(
        send(nonprod.get(format!("{}/deployments", app.url)))
            .await
            .0,
        200
    );
    let viewer = client_as(&tokens.viewer).build().unwrap();
    let (status, _, _) = send(
        viewer
            .post(format!("{}/deployments", app.url))
            .header("Content-Type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(status, 400);
    let (_, _, audit) = send(
        app.client
            .get(format!("{}/audit?principal=dev-checkout-nonprod", app.url)),
    )
    .await;
    let mut calls: Vec<(i64, String)> = audit["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_i64().unwrap(),
                c["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            (400, "malformed_json".into()),
            (400, "malformed_json".into()),
            (429, "rate_limited".into())
        ],
        "{audit}"
    );

    // Callers without valid credentials share their address's bucket: the third is 429, and
    // it costs no audit row (a flood of them is not a flood of INSERTs).
    let anonymous = reqwest::Client::new();
    let post = |token: Option<&str>| {
        let request = anonymous
            .post(format!("{}/deployments", app.url))
            .header("Content-Type", "application/json")
            .body("{}");
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    assert_eq!(send(post(None)).await.0, 401);
    assert_eq!(send(post(Some("mot_not-a-token"))).await.0, 401);
    let (status, headers, body) = send(post(None)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(headers.contains_key("retry-after"));
    assert!(!headers.contains_key("www-authenticate"));
    // A valid token from the same address is not held back by them.
    assert_eq!(send(post(Some(&tokens.admin))).await.0, 400);
    let (_, _, audit) = send(
        app.client
            .get(format!("{}/audit?principal=anonymous", app.url)),
    )
    .await;
    let statuses: Vec<i64> = audit["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 401], "{audit}");
}

/// An identity provider's signing key.
struct Signer {
    kid: String,
    key: EncodingKey,
}

impl Signer {
    fn new(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let secret = p256::SecretKey::from_slice(&seed).unwrap();
        let der = secret.to_pkcs8_der().unwrap();
        Self {
            kid: kid.into(),
            key: EncodingKey::from_ec_der(der.as_bytes()),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn claims(exp_from_now: i64, audience: &str, issuer: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({
        "sub": "alice@example.com", "iss": issuer, "aud": audience,
        "iat": now, "exp": now + exp_from_now,
        "groups": ["checkout"], "roles": ["deployer", "offline_access"], "environments": ["test"],
    })
}

/// Serves `jwks` (as it is at each request) on a port of its own: the identity provider's
/// JWKS endpoint.
fn serve_jwks(jwks: Arc<RwLock<JwkSet>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let server = actix_web::HttpServer::new(move || {
        let jwks = jwks.clone();
        actix_web::App::new().route(
            "/jwks.json",
            actix_web::web::get().to(move || {
                let body = serde_json::to_string(&*jwks.read().unwrap()).unwrap();
                async move {
                    actix_web::HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    url
}

#[actix_web::test]
async fn jwts_are_checked_for_signature_time_audience_and_issuer() {
    let signer = Signer::new("k1");
    let jwks = Arc::new(RwLock::new(JwkSet {
        keys: vec![signer.jwk()],
    }));
    let url = serve_jwks(jwks.clone());
    let app = spawn_app_auth(
        &format!(
            "[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"mot\"\njwks_url = \"{url}\"\nleeway_secs = 5\n"
        ),
    )
    .await;
    let get = |token: &str| {
        let client = client_as(token).build().unwrap();
        let url = format!("{}/deployments", app.url);
        async move { send(client.get(url)).await }
    };

    let good = signer.sign(&claims(600, "mot", ISSUER));
    let (status, _, body) = get(&good).await;
    assert_eq!(status, 200, "{body}");
    let forged = Signer::new("k1").sign(&claims(600, "mot", ISSUER));
    let hmac = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims(600, "mot", ISSUER),
            &EncodingKey::from_secret(b"k1"),
        )
        .unwrap()
    };
    let refused = [
        ("a wrong signature", forged, "bad signature"),
        (
            "an expired token",
            signer.sign(&claims(-60, "mot", ISSUER)),
            "expired",
        ),
        (
            "a wrong audience",
            signer.sign(&claims(600, "other", ISSUER)),
            "wrong audience",
        ),
        (
            "a wrong issuer",
            signer.sign(&claims(600, "mot", "https://evil.example/")),
            "wrong issuer",
        ),
        ("another algorithm than the key's", hmac, "its key is for"),
        (
            "an unknown key",
            Signer::new("k9").sign(&claims(600, "mot", ISSUER)),
            "no key `k9`",
        ),
    ];
    for (what, token, why) in refused {
        let (status, headers, body) = get(&token).await;
        assert_eq!(status, 401, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{what}: {message}");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }

    // What the claims allow: a deployer of checkout in test, refused production.
    let alice = client_as(&good).build().unwrap();
    let app_name = format!("jwt-{}", unique("").replace('_', ""));
    let marker = unique("jwt");
    let (status, _, body) = send(
        alice
            .post(format!("{}/deployments", app.url))
            .json(&deployment(&app_name, &marker, &["production-us-west-2"])),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "targets[0].region");
    let (status, _, body) = send(
        alice
            .post(format!("{}/deployments", app.url))
            .json(&deployment(&app_name, &marker, &["test-us-east-1"])),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let (_, _, got) = send(alice.get(format!("{}/deployments/{id}", app.url))).await;
    assert_eq!(got["requested_by"], "alice@example.com");

    // The provider rotates its key: a token of the new key is accepted without a restart, once
    // the cache may be re-read (an unknown key id re-reads it at most every 10 s).
    let next = Signer::new("k2");
    jwks.write().unwrap().keys.push(next.jwk());
    let rotated = next.sign(&claims(600, "mot", ISSUER));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(&rotated).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never accepted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[actix_web::test]
async fn metrics_labels_are_never_taken_from_the_client() {
    let app = spawn_app().await;
    let brew = reqwest::Method::from_bytes(b"BREWCOFFEE").unwrap();
    let _ = app
        .client
        .request(brew, format!("{}/deployments", app.url))
        .send()
        .await
        .unwrap();
    let _ = app
        .client
        .get(format!("{}/no/such/route/{}", app.url, unique("x")))
        .send()
        .await
        .unwrap();
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("BREWCOFFEE") && !metrics.contains("no/such"),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

/// A route (method, pattern), the path and body sent, and the status each of viewer, nonprod,
/// checkout and admin gets.
type MatrixRow<'a> = (&'a str, &'a str, String, Option<Value>, [u16; 4]);

#[actix_web::test]
async fn each_role_against_each_route() {
    let app = spawn_app().await;
    let tokens = dev_tokens();
    let principals = [
        ("viewer", &tokens.viewer),
        ("nonprod", &tokens.nonprod),
        ("checkout", &tokens.checkout),
        ("admin", &tokens.admin),
    ];
    let clients: Vec<reqwest::Client> = principals
        .iter()
        .map(|(_, t)| client_as(t).build().unwrap())
        .collect();
    // An app of team checkout with one deployment in test (where the non-production deployer
    // may act too).
    let name = format!("matrix-{}", unique("").replace('_', ""));
    let marker = unique("matrix");
    let body = deployment(&name, &marker, &["test-us-east-1"]);
    let (status, _, created) = send(
        clients[2]
            .post(format!("{}/deployments", app.url))
            .json(&body),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // Route, path, body, and the status each of viewer, nonprod, checkout, admin gets.
    let routes: Vec<MatrixRow> = vec![
        (
            "POST",
            "/deployments",
            "/deployments".into(),
            Some(body.clone()),
            [403, 202, 202, 202],
        ),
        (
            "GET",
            "/deployments",
            "/deployments".into(),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            "/deployments/{id}",
            format!("/deployments/{id}"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            "/deployments/{id}/instances",
            format!("/deployments/{id}/instances"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            "/deployments/{id}/events",
            format!("/deployments/{id}/events"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "POST",
            "/deployments/{id}/traffic",
            format!("/deployments/{id}/traffic"),
            Some(json!({"enabled": true})),
            [403, 202, 202, 202],
        ),
        // Allowed, then refused for what the deployment is: it has no rollout.
        (
            "POST",
            "/deployments/{id}/resume",
            format!("/deployments/{id}/resume"),
            None,
            [403, 409, 409, 409],
        ),
        (
            "POST",
            "/deployments/{id}/cancel",
            format!("/deployments/{id}/cancel"),
            None,
            [403, 409, 409, 409],
        ),
        (
            "DELETE",
            "/apps/{app}",
            format!("/apps/{name}?regions=test-us-east-1"),
            None,
            [403, 202, 202, 202],
        ),
        // Allowed, then refused: no earlier deployment was healthy.
        (
            "POST",
            "/apps/{app}/rollback",
            format!("/apps/{name}/rollback"),
            None,
            [403, 409, 409, 409],
        ),
        (
            "GET",
            "/apps/{app}/deployments",
            format!("/apps/{name}/deployments"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            "/apps/{app}/history",
            format!("/apps/{name}/history?at={now}"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "PUT",
            "/apps/{app}/config",
            format!("/apps/{name}/config"),
            Some(json!({"replicas": 2})),
            [403, 200, 200, 200],
        ),
        (
            "GET",
            "/apps/{app}/config",
            format!("/apps/{name}/config"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            "/apps/{app}/owners",
            format!("/apps/{name}/owners"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "PUT",
            "/apps/{app}/owners",
            format!("/apps/{name}/owners"),
            Some(json!({"teams": ["checkout"]})),
            [403, 403, 403, 200],
        ),
        ("GET", "/audit", "/audit".into(), None, [403, 403, 403, 200]),
    ];
    let mut covered: Vec<(&str, &str)> = routes.iter().map(|(m, p, ..)| (*m, *p)).collect();
    covered.sort();
    let mut served: Vec<(&str, &str)> = mot::web::SERVICE_ROUTES.to_vec();
    served.sort();
    assert_eq!(covered, served, "every route is in the matrix");
    let mut wrong = Vec::new();
    for (method, route, path, body, expected) in &routes {
        for (i, client) in clients.iter().enumerate() {
            let mut request = client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.url),
            );
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, _, answer) = send(request).await;
            if status != expected[i] {
                wrong.push(format!(
                    "{} {method} {route}: {status} instead of {}: {answer}",
                    principals[i].0, expected[i]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
