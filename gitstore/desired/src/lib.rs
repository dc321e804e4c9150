//! Desired state from Git: a commit of Kubernetes manifests, loaded, validated and planned.
