//! The service proxy ("kube-proxy"): gives Services stable addresses, in iptables or userspace.
