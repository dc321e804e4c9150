//! The `pod-template-hash`: the name suffix and label that tie a ReplicaSet to the pod
//! template it was made from.
//!
//! Kubernetes' `ComputeHash` feeds a dump of the template (and the Deployment's
//! `collisionCount`, little-endian, when set) to FNV-1a 32 and encodes the decimal digits
//! of the sum with its name alphabet. We do the same over the template's JSON encoding,
//! which k8s-openapi makes deterministic (fields in declaration order, maps sorted): the
//! hash is stable across processes and versions of kommit for the same template, though
//! not bit-identical to Kubernetes' (which hashes Go's dump format).

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::context::NAME_ALPHABET;
use crate::meta::POD_TEMPLATE_HASH;

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits.
pub fn fnv1a32(chunks: &[&[u8]]) -> u32 {
    let mut h = FNV32_OFFSET;
    for chunk in chunks {
        for b in *chunk {
            h ^= u32::from(*b);
            h = h.wrapping_mul(FNV32_PRIME);
        }
    }
    h
}

/// Kubernetes' `SafeEncodeString`: each byte mapped into the name alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| NAME_ALPHABET[usize::from(b) % NAME_ALPHABET.len()] as char)
        .collect()
}

/// The pod-template-hash of a Deployment's template (the template as written, without a
/// `pod-template-hash` label) and its `collisionCount`.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut t = template.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(POD_TEMPLATE_HASH);
    }
    let json = serde_json::to_vec(&t).expect("k8s-openapi objects serialise to JSON");
    let sum = match collision_count {
        Some(c) => fnv1a32(&[&json, &(c as u32).to_le_bytes()]),
        None => fnv1a32(&[&json]),
    };
    safe_encode(&sum.to_string())
}

/// Whether two templates are equal ignoring the `pod-template-hash` label (Kubernetes'
/// `EqualIgnoreHash`, used to find a Deployment's current ReplicaSet).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut()
            && let Some(l) = m.labels.as_mut()
        {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                m.labels = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Reference values of FNV-1a 32.
        assert_eq!(fnv1a32(&[b""]), 0x811c9dc5);
        assert_eq!(fnv1a32(&[b"a"]), 0xe40c292c);
        assert_eq!(fnv1a32(&[b"foobar"]), 0xbf9cf968);
        assert_eq!(fnv1a32(&[b"foo", b"bar"]), 0xbf9cf968);
    }

    #[test]
    fn hash_is_stable_and_changes_with_template_and_collisions() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(a.bytes().all(|c| NAME_ALPHABET.contains(&c)));
        assert!(!a.is_empty() && a.len() <= 10);
        // The hash label itself does not change the hash.
        let mut labelled = template("nginx:1");
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), a.clone());
        assert_eq!(pod_template_hash(&labelled, None), a);
        assert!(equal_ignore_hash(&labelled, &template("nginx:1")));
        assert!(!equal_ignore_hash(&labelled, &template("nginx:2")));
    }
}
