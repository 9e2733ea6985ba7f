//! The monitor: collects statistics from both tiers and scales each on its
//! own through a provider (local processes or Kubernetes).
//!
//! `squall monitor` (the cli crate) drives [`Monitor`] and carries out its
//! decisions through a [`Provider`]: the local-process one (cli crate) or
//! [`KubernetesProvider`].
//!
//! # Layout
//!
//! - `provider.rs`: [`Provider`], the one interface for "run N nodes of kind
//!   X" ([`NodeKind`]: storage, router, scheduler, compute), the counts it
//!   reports ([`Replicas`]: desired and observed) and its error
//!   ([`ProviderError`], every variant naming the workload). The trait is
//!   synchronous and object-safe, so a local-process provider can implement
//!   it with plain `std::process` calls and the monitor can hold a
//!   `Box<dyn Provider>`.
//! - `kubernetes.rs`: [`KubernetesProvider`], which scales the workloads of
//!   `deploy/k8s` through their `/scale` subresource (a merge patch of
//!   `spec.replicas`; reads are a GET of the same subresource), and its
//!   settings ([`KubernetesConfig`], defaults matching the manifests). It
//!   owns a one-thread Tokio runtime and bounds each request by
//!   `request_timeout`.
//!
//! # What is tested, and how
//!
//! No Kubernetes API server can run on the machine this was built on, so:
//!
//! - `tests/kubernetes_mock.rs` puts a `tower-test` mock service under a real
//!   `kube::Client` (as kube-rs tests itself) and asserts the exact HTTP
//!   request of every call for every kind (method, path, query, the merge
//!   patch's content type, the JSON body), answers it with a `Scale` object
//!   or a `Status` error (404, 403), and checks the result or error. These
//!   run in `cargo test -p squall-monitor`.
//! - The manifests of `deploy/k8s` are validated offline against the
//!   Kubernetes schemas by `deploy/k8s/validate.sh` (`kubernetes-validate
//!   --strict`); that checks their shape, not their behaviour.
//! - `tests/kubernetes_cluster.rs` holds `#[ignore]`d tests that read and
//!   re-apply the replica counts on a real cluster where the manifests are
//!   deployed: `KUBECONFIG=... cargo test -p squall-monitor -- --ignored`.
//!   They have never been run: no cluster was reachable. Neither has the
//!   `connect` path (kubeconfig or in-cluster service account) nor the
//!   manifests on a real cluster.
//!
//! # Statistics and policies
//!
//! - `config.rs`: [`MonitorConfig`], the `[monitor]` section: the period
//!   and every policy's thresholds.
//! - `monitor.rs`: [`Monitor`], a [`anna::role::Role`]: every period it
//!   asks a router for the cluster state, every live storage thread for its
//!   `StorageReport` and every scheduler for its compute status, evaluates
//!   the policies on what came back, and carries every decision out as
//!   messages: `Prewarm`s to executors, replication overrides written by
//!   its own `ClientCore`, `Message::Scale` to its actuator (the
//!   `squall monitor` process's [`Provider`], which also repairs what
//!   died). It answers `MonitorStatusRequest` (for `squall status`) and
//!   sends the `/metrics` text to the metrics server (`Message::Metrics`),
//!   so the simulator drives all of it (`tests/sim.rs`).
//! - `policy.rs`: the policies as pure functions (KVS and executor
//!   elasticity, hot keys, hot functions), each returning [`Decision`]s
//!   that carry their event (what, why, the figures).
//! - `metrics.rs`: the Prometheus text page.
//! - `history.rs`: [`history::History`], a bounded ring of one sample per
//!   period (throughput and p99 of both tiers) for the dashboard's plots.
//! - `dashboard.rs`: the dashboard's JSON (`/api/cluster`).
//! - `totals.rs`: figures of many roles added up (the schedulers' call
//!   figures, latency per tier).
//!
pub mod config;
pub mod dashboard;
pub mod history;
pub mod kubernetes;
pub mod metrics;
pub mod monitor;
pub mod policy;
pub mod provider;
pub mod totals;

pub use config::{HotFunctionPolicy, HotKeyPolicy, MonitorConfig, TierPolicy};
pub use monitor::{Monitor, Outlets};
pub use policy::Decision;

pub use kubernetes::{KubernetesConfig, KubernetesProvider, Workload, WorkloadResource};
pub use provider::{Action, NodeKind, Provider, ProviderError, Replicas};
