//! The Kubernetes provider against a mock API server: a `tower-test` service
//! under a real `kube::Client`, which sees every HTTP request the provider
//! makes and answers what a real API server would.

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use squall_monitor::{
    Action, KubernetesConfig, KubernetesProvider, NodeKind, Provider, ProviderError, Replicas,
};
use std::thread::JoinHandle;
use std::time::Duration;
use tower_test::mock;

/// One request the mock API server expects, and its answer.
struct Exchange {
    method: &'static str,
    /// Path and query, exactly.
    uri: String,
    /// For a patch: its JSON body (the content type must be a merge patch).
    patch: Option<Value>,
    status: u16,
    answer: Value,
}

/// A provider whose client talks to a mock API server running `exchanges`
/// in order on its own thread. Joining the thread re-raises its failed
/// assertions and checks no other request came.
fn provider_with(
    config: KubernetesConfig,
    exchanges: Vec<Exchange>,
) -> (KubernetesProvider, JoinHandle<()>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = std::thread::spawn(move || serve(handle, exchanges));
    let provider =
        KubernetesProvider::with_client(config, move || kube::Client::new(service, "default"))
            .expect("provider");
    (provider, server)
}

fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, exchanges: Vec<Exchange>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        for want in exchanges {
            let (request, reply) = handle.next_request().await.expect("a request");
            assert_eq!(request.method().as_str(), want.method);
            assert_eq!(request.uri().to_string(), want.uri);
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().expect("ascii").to_string());
            let body = request.into_body().collect_bytes().await.expect("body");
            match want.patch {
                Some(patch) => {
                    assert_eq!(
                        content_type.as_deref(),
                        Some("application/merge-patch+json")
                    );
                    let sent: Value = serde_json::from_slice(&body).expect("JSON body");
                    assert_eq!(sent, patch);
                }
                None => assert!(body.is_empty(), "a GET carries no body"),
            }
            let answer = Response::builder()
                .status(want.status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&want.answer).expect("json")))
                .expect("response");
            reply.send_response(answer);
        }
        // The provider is dropped once the test is done with it; nothing
        // else may have been asked in between.
        if let Some((request, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    });
}

fn join(server: JoinHandle<()>) {
    if let Err(panic) = server.join() {
        std::panic::resume_unwind(panic);
    }
}

fn scale_object(name: &str, desired: i32, observed: i32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": { "name": name, "namespace": "squall" },
        "spec": { "replicas": desired },
        "status": { "replicas": observed, "selector": format!("app.kubernetes.io/name={name}") },
    })
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// The scale subresource each kind's workload has under the defaults.
fn scale_path(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Storage => "/apis/apps/v1/namespaces/squall/statefulsets/squall-kvs/scale",
        NodeKind::Router => "/apis/apps/v1/namespaces/squall/statefulsets/squall-router/scale",
        NodeKind::Scheduler => {
            "/apis/apps/v1/namespaces/squall/statefulsets/squall-scheduler/scale"
        }
        NodeKind::Compute => "/apis/apps/v1/namespaces/squall/deployments/squall-compute/scale",
    }
}

fn name_in(path: &str) -> &str {
    path.rsplit('/').nth(1).expect("a name")
}

#[test]
fn scale_sends_a_merge_patch_of_spec_replicas_to_each_kinds_scale_subresource() {
    let exchanges = NodeKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &kind)| Exchange {
            method: "PATCH",
            uri: format!("{}?&fieldManager=squall-monitor", scale_path(kind)),
            patch: Some(json!({ "spec": { "replicas": i + 2 } })),
            status: 200,
            answer: scale_object(name_in(scale_path(kind)), i as i32 + 2, 1),
        })
        .collect();
    let (provider, server) = provider_with(KubernetesConfig::default(), exchanges);
    let got: Vec<_> = NodeKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &kind)| provider.scale(kind, i as u32 + 2).expect("scaled"))
        .collect();
    drop(provider);
    join(server);
    for (i, replicas) in got.into_iter().enumerate() {
        let desired = i as u32 + 2;
        assert_eq!(
            replicas,
            Replicas {
                desired,
                observed: 1
            }
        );
    }
}

#[test]
fn replicas_reads_each_kinds_scale_subresource_with_a_get() {
    let exchanges = NodeKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &kind)| Exchange {
            method: "GET",
            uri: scale_path(kind).to_string(),
            patch: None,
            status: 200,
            answer: scale_object(name_in(scale_path(kind)), 3, i as i32),
        })
        .collect();
    let (provider, server) = provider_with(KubernetesConfig::default(), exchanges);
    let got: Vec<_> = NodeKind::ALL
        .iter()
        .map(|&kind| provider.replicas(kind).expect("read"))
        .collect();
    drop(provider);
    join(server);
    for (i, replicas) in got.into_iter().enumerate() {
        let observed = i as u32;
        assert_eq!(
            replicas,
            Replicas {
                desired: 3,
                observed
            }
        );
    }
}

#[test]
fn workload_names_and_namespace_come_from_the_config() {
    let config = KubernetesConfig {
        namespace: "prod".into(),
        storage: "kvs-a".into(),
        compute: "fn-b".into(),
        ..KubernetesConfig::default()
    };
    let exchanges = vec![
        Exchange {
            method: "PATCH",
            uri: "/apis/apps/v1/namespaces/prod/statefulsets/kvs-a/scale?&fieldManager=squall-monitor"
                .into(),
            patch: Some(json!({ "spec": { "replicas": 0 } })),
            status: 200,
            answer: scale_object("kvs-a", 0, 2),
        },
        Exchange {
            method: "GET",
            uri: "/apis/apps/v1/namespaces/prod/deployments/fn-b/scale".into(),
            patch: None,
            status: 200,
            answer: scale_object("fn-b", 5, 5),
        },
    ];
    let (provider, server) = provider_with(config, exchanges);
    let scaled = provider.scale(NodeKind::Storage, 0);
    let read = provider.replicas(NodeKind::Compute);
    drop(provider);
    join(server);
    assert_eq!(
        scaled.expect("scaled"),
        Replicas {
            desired: 0,
            observed: 2
        }
    );
    assert_eq!(
        read.expect("read"),
        Replicas {
            desired: 5,
            observed: 5
        }
    );
}

#[test]
fn a_missing_workload_is_a_refusal_naming_it() {
    let path = scale_path(NodeKind::Compute);
    let exchanges = vec![Exchange {
        method: "PATCH",
        uri: format!("{path}?&fieldManager=squall-monitor"),
        patch: Some(json!({ "spec": { "replicas": 2 } })),
        status: 404,
        answer: status_object(
            404,
            "NotFound",
            "deployments.apps \"squall-compute\" not found",
        ),
    }];
    let (provider, server) = provider_with(KubernetesConfig::default(), exchanges);
    let err = provider.scale(NodeKind::Compute, 2).expect_err("refused");
    drop(provider);
    join(server);
    match &err {
        ProviderError::Refused {
            workload,
            action,
            code,
            reason,
            ..
        } => {
            assert_eq!(workload, "deployment squall/squall-compute");
            assert_eq!(*action, Action::Scale(2));
            assert_eq!((*code, reason.as_str()), (404, "NotFound"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "deployment squall/squall-compute: scaling to 2 replicas refused \
         (HTTP 404 NotFound): deployments.apps \"squall-compute\" not found"
    );
}

#[test]
fn a_forbidden_read_is_a_refusal_naming_the_workload() {
    let message = "statefulsets.apps \"squall-kvs\" is forbidden: User \
                   \"system:serviceaccount:squall:default\" cannot get resource \
                   \"statefulsets/scale\" in API group \"apps\" in the namespace \"squall\"";
    let exchanges = vec![Exchange {
        method: "GET",
        uri: scale_path(NodeKind::Storage).into(),
        patch: None,
        status: 403,
        answer: status_object(403, "Forbidden", message),
    }];
    let (provider, server) = provider_with(KubernetesConfig::default(), exchanges);
    let err = provider.replicas(NodeKind::Storage).expect_err("refused");
    drop(provider);
    join(server);
    assert!(
        matches!(&err, ProviderError::Refused { code: 403, reason, .. } if reason == "Forbidden"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "statefulset squall/squall-kvs: reading the replica count refused (HTTP 403 Forbidden)"
        ),
        "{text}"
    );
}

#[test]
fn a_scale_without_a_replica_count_is_malformed() {
    let mut answer = scale_object("squall-router", 1, 1);
    answer["spec"] = json!({});
    let exchanges = vec![Exchange {
        method: "GET",
        uri: scale_path(NodeKind::Router).into(),
        patch: None,
        status: 200,
        answer,
    }];
    let (provider, server) = provider_with(KubernetesConfig::default(), exchanges);
    let err = provider.replicas(NodeKind::Router).expect_err("malformed");
    drop(provider);
    join(server);
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("statefulset squall/squall-router:"));
}

#[test]
fn a_count_beyond_what_kubernetes_holds_is_refused_without_a_request() {
    let (provider, server) = provider_with(KubernetesConfig::default(), vec![]);
    let err = provider
        .scale(NodeKind::Scheduler, u32::MAX)
        .expect_err("too many");
    drop(provider);
    join(server);
    assert!(matches!(err, ProviderError::InvalidCount { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("statefulset squall/squall-scheduler"));
}

#[test]
fn an_unanswered_request_times_out_naming_the_workload() {
    let config = KubernetesConfig {
        request_timeout: Duration::from_millis(200),
        ..KubernetesConfig::default()
    };
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    // Receives the request and holds it unanswered until the test is done.
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let held = rt.block_on(handle.next_request());
        assert!(held.is_some(), "the request arrived");
        let _ = wait.recv();
    });
    let provider =
        KubernetesProvider::with_client(config, move || kube::Client::new(service, "default"))
            .expect("provider");
    let err = provider.replicas(NodeKind::Storage).expect_err("timeout");
    drop(done);
    join(server);
    assert!(
        matches!(err, ProviderError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("statefulset squall/squall-kvs:"));
}

#[test]
fn invalid_names_are_rejected_before_any_request() {
    let config = KubernetesConfig {
        storage: "Squall_KVS".into(),
        ..KubernetesConfig::default()
    };
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let err =
        KubernetesProvider::with_client(config, move || kube::Client::new(service, "default"))
            .err()
            .expect("rejected");
    assert!(err.to_string().contains("kubernetes.storage"), "{err}");
}

#[test]
fn the_defaults_name_the_workloads_of_deploy_k8s() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let config = KubernetesConfig::default();
    let expect = [
        ("storage.yaml", "StatefulSet", &config.storage),
        ("router.yaml", "StatefulSet", &config.routers),
        ("scheduler.yaml", "StatefulSet", &config.schedulers),
        ("compute.yaml", "Deployment", &config.compute),
    ];
    for (file, kind, name) in expect {
        let text = read(file);
        let found = text.split("\n---").any(|doc| {
            doc.contains(&format!("\nkind: {kind}\n"))
                && doc.contains(&format!("\n  name: {name}\n"))
                && doc.contains(&format!("\n  namespace: {}\n", config.namespace))
        });
        assert!(found, "{file} has no {kind} {}/{name}", config.namespace);
    }
}
