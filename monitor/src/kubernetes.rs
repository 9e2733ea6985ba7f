//! The Kubernetes provider: scales the workloads of `deploy/k8s` through
//! their `/scale` subresource.
//!
//! Storage nodes are the StatefulSet `squall-kvs` (stable ordinals give
//! stable node ids; scaling down removes the highest ordinal, whose pod
//! departs gracefully on SIGTERM). Routers and schedulers are the
//! StatefulSets `squall-router` and `squall-scheduler` (each pod has a
//! stable DNS name that every other component names; a scale past the
//! lists written in the manifests adds pods nobody names). Compute nodes
//! are the Deployment `squall-compute`. A change is one merge patch, `{"spec":{"replicas":N}}`, to
//! `/apis/apps/v1/namespaces/NS/{statefulsets|deployments}/NAME/scale`; a
//! read is a GET of the same path. Both answer an `autoscaling/v1` `Scale`,
//! whose `spec.replicas` is the desired count and `status.replicas` the
//! observed one. The RBAC in `deploy/k8s/monitor.yaml` grants exactly these.
//!
//! All Kubernetes code of the monitor lives in this module.

use crate::provider::{Action, NodeKind, Provider, ProviderError, Replicas};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// The field manager the monitor's patches are recorded under.
pub const FIELD_MANAGER: &str = "squall-monitor";

/// Where the workloads are. Every default matches `deploy/k8s`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace of every workload.
    pub namespace: String,
    /// The storage nodes' StatefulSet.
    pub storage: String,
    /// The routers' StatefulSet.
    pub routers: String,
    /// The schedulers' StatefulSet.
    pub schedulers: String,
    /// The compute nodes' Deployment (cache and executors per pod).
    pub compute: String,
    /// One request to the API server gets this long, in milliseconds.
    #[serde(with = "anna::config::millis")]
    pub request_timeout: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: "squall".into(),
            storage: "squall-kvs".into(),
            routers: "squall-router".into(),
            schedulers: "squall-scheduler".into(),
            compute: "squall-compute".into(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl KubernetesConfig {
    /// Checks every name is a valid Kubernetes object name (RFC 1123 label)
    /// and the timeout is not zero.
    pub fn validate(&self) -> Result<(), String> {
        let names = [
            ("namespace", &self.namespace),
            ("storage", &self.storage),
            ("routers", &self.routers),
            ("schedulers", &self.schedulers),
            ("compute", &self.compute),
        ];
        for (field, name) in names {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !ok {
                return Err(format!(
                    "kubernetes.{field} = {name:?} is not a valid Kubernetes name \
                     (lowercase letters, digits and '-', at most 63)"
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return Err("kubernetes.request_timeout must be above 0".into());
        }
        Ok(())
    }

    /// The workload that holds nodes of `kind`.
    pub fn workload(&self, kind: NodeKind) -> Workload {
        let (resource, name) = match kind {
            NodeKind::Storage => (WorkloadResource::StatefulSet, &self.storage),
            NodeKind::Router => (WorkloadResource::StatefulSet, &self.routers),
            NodeKind::Scheduler => (WorkloadResource::StatefulSet, &self.schedulers),
            NodeKind::Compute => (WorkloadResource::Deployment, &self.compute),
        };
        Workload {
            resource,
            namespace: self.namespace.clone(),
            name: name.clone(),
        }
    }
}

/// The two workload resources the provider scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadResource {
    StatefulSet,
    Deployment,
}

/// One scaled workload, e.g. `statefulset squall/squall-kvs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub resource: WorkloadResource,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = match self.resource {
            WorkloadResource::StatefulSet => "statefulset",
            WorkloadResource::Deployment => "deployment",
        };
        write!(f, "{resource} {}/{}", self.namespace, self.name)
    }
}

/// Scales Squall's workloads on a Kubernetes cluster.
///
/// Owns a single-threaded Tokio runtime and blocks on it for each call, so
/// it is used from a plain thread like every other Squall driver; calling
/// it from inside another Tokio runtime panics.
pub struct KubernetesProvider {
    config: KubernetesConfig,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl KubernetesProvider {
    /// Connects as `kubectl` would: `KUBECONFIG` or `~/.kube/config`, else
    /// the pod's service account (how the monitor's Deployment runs).
    pub fn connect(config: KubernetesConfig) -> Result<Self, ProviderError> {
        let runtime = Self::runtime()?;
        let timeout = config.request_timeout;
        let client = runtime
            .block_on(async { tokio::time::timeout(timeout, Client::try_default()).await })
            .map_err(|_| setup(format!("no kubeconfig answer within {timeout:?}")))?
            .map_err(|e| setup(e.to_string()))?;
        Self::assemble(config, runtime, client)
    }

    /// Uses the client `make_client` builds. It runs inside the provider's
    /// runtime, as `kube::Client::new` requires; tests pass a client over a
    /// mock service.
    pub fn with_client(
        config: KubernetesConfig,
        make_client: impl FnOnce() -> Client,
    ) -> Result<Self, ProviderError> {
        let runtime = Self::runtime()?;
        let client = {
            let _inside = runtime.enter();
            make_client()
        };
        Self::assemble(config, runtime, client)
    }

    /// The settings in use.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    fn runtime() -> Result<tokio::runtime::Runtime, ProviderError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ProviderError::Setup {
                provider: "kubernetes",
                source: Box::new(e),
            })
    }

    fn assemble(
        config: KubernetesConfig,
        runtime: tokio::runtime::Runtime,
        client: Client,
    ) -> Result<Self, ProviderError> {
        config.validate().map_err(setup)?;
        Ok(KubernetesProvider {
            config,
            runtime,
            client,
        })
    }

    /// Runs one request to the API server for `workload`, bounded by the
    /// request timeout, and turns its answer into replica counts.
    fn call(
        &self,
        workload: &Workload,
        action: Action,
        request: impl Future<Output = kube::Result<Scale>>,
    ) -> Result<Replicas, ProviderError> {
        let after = self.config.request_timeout;
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(after, request).await })
            .map_err(|_| ProviderError::Timeout {
                workload: workload.to_string(),
                action,
                after,
            })?;
        match answer {
            Ok(scale) => replicas_of(&scale, workload, action),
            Err(kube::Error::Api(status)) => Err(ProviderError::Refused {
                workload: workload.to_string(),
                action,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            }),
            Err(other) => Err(ProviderError::Failed {
                workload: workload.to_string(),
                action,
                source: Box::new(other),
            }),
        }
    }
}

/// Which API serves `workload`'s scale subresource. Both paths are
/// `/apis/apps/v1/namespaces/NS/<resource>/NAME/scale`.
enum ScaleApi {
    StatefulSet(Api<StatefulSet>),
    Deployment(Api<Deployment>),
}

impl ScaleApi {
    fn new(client: &Client, workload: &Workload) -> Self {
        let ns = &workload.namespace;
        match workload.resource {
            WorkloadResource::StatefulSet => {
                ScaleApi::StatefulSet(Api::namespaced(client.clone(), ns))
            }
            WorkloadResource::Deployment => {
                ScaleApi::Deployment(Api::namespaced(client.clone(), ns))
            }
        }
    }

    async fn get(&self, name: &str) -> kube::Result<Scale> {
        match self {
            ScaleApi::StatefulSet(api) => api.get_scale(name).await,
            ScaleApi::Deployment(api) => api.get_scale(name).await,
        }
    }

    async fn patch(&self, name: &str, replicas: i32) -> kube::Result<Scale> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        match self {
            ScaleApi::StatefulSet(api) => api.patch_scale(name, &params, &patch).await,
            ScaleApi::Deployment(api) => api.patch_scale(name, &params, &patch).await,
        }
    }
}

impl Provider for KubernetesProvider {
    fn scale(&self, kind: NodeKind, replicas: u32) -> Result<Replicas, ProviderError> {
        let workload = self.config.workload(kind);
        let count = i32::try_from(replicas).map_err(|_| ProviderError::InvalidCount {
            workload: workload.to_string(),
            replicas,
            why: "Kubernetes replica counts are 32-bit signed",
        })?;
        let api = ScaleApi::new(&self.client, &workload);
        self.call(
            &workload,
            Action::Scale(replicas),
            api.patch(&workload.name, count),
        )
    }

    fn replicas(&self, kind: NodeKind) -> Result<Replicas, ProviderError> {
        let workload = self.config.workload(kind);
        let api = ScaleApi::new(&self.client, &workload);
        self.call(&workload, Action::Read, api.get(&workload.name))
    }
}

fn setup(why: impl Into<String>) -> ProviderError {
    ProviderError::Setup {
        provider: "kubernetes",
        source: why.into().into(),
    }
}

/// `spec.replicas` (desired) and `status.replicas` (observed; 0 before the
/// controller has reported) of a `Scale`.
fn replicas_of(
    scale: &Scale,
    workload: &Workload,
    action: Action,
) -> Result<Replicas, ProviderError> {
    let malformed = |what: String| ProviderError::Malformed {
        workload: workload.to_string(),
        action,
        what,
    };
    let desired = scale
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .ok_or_else(|| malformed("no spec.replicas".into()))?;
    let observed = scale.status.as_ref().map_or(0, |s| s.replicas);
    let count = |field: &str, n: i32| {
        u32::try_from(n).map_err(|_| malformed(format!("{field} is negative ({n})")))
    };
    Ok(Replicas {
        desired: count("spec.replicas", desired)?,
        observed: count("status.replicas", observed)?,
    })
}
