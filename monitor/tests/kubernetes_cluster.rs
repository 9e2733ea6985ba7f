//! The Kubernetes provider against a real cluster where `deploy/k8s` is
//! applied. Ignored by default (no API server runs where CI does); run with
//!
//! ```text
//! KUBECONFIG=~/.kube/config cargo test -p squall-monitor -- --ignored
//! ```
//!
//! `SQUALL_K8S_NAMESPACE` overrides the namespace (default `squall`). The
//! tests only re-apply the counts they read, so they leave the cluster as
//! they found it. Without `KUBECONFIG` they say so and pass.

use squall_monitor::{KubernetesConfig, KubernetesProvider, NodeKind, Provider};

fn provider() -> Option<KubernetesProvider> {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("KUBECONFIG is not set: skipping the real-cluster test");
        return None;
    }
    let mut config = KubernetesConfig::default();
    if let Ok(ns) = std::env::var("SQUALL_K8S_NAMESPACE") {
        config.namespace = ns;
    }
    Some(KubernetesProvider::connect(config).expect("connecting to the cluster"))
}

#[test]
#[ignore = "needs a Kubernetes cluster: set KUBECONFIG and pass --ignored"]
fn reads_the_replicas_of_every_kind_on_a_real_cluster() {
    let Some(provider) = provider() else { return };
    for kind in NodeKind::ALL {
        let replicas = provider.replicas(kind).expect("read");
        eprintln!("{kind}: {replicas:?}");
    }
}

#[test]
#[ignore = "needs a Kubernetes cluster: set KUBECONFIG and pass --ignored"]
fn reapplying_the_current_count_changes_nothing_on_a_real_cluster() {
    let Some(provider) = provider() else { return };
    for kind in NodeKind::ALL {
        let before = provider.replicas(kind).expect("read");
        let after = provider.scale(kind, before.desired).expect("scale");
        assert_eq!(after.desired, before.desired, "{kind}");
    }
}
