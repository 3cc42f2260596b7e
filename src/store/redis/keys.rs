//! The key layout. Everything one tenant's Lua scripts touch carries the tenant as its Redis
//! Cluster hash tag (`{<tenant>}`), so a script's keys always share one slot:
//!
//! | key | type | what |
//! |---|---|---|
//! | `sntl:tenants` | set | every tenant id |
//! | `sntl:{<tenant>}:tenant` | string | the tenant record, JSON |
//! | `sntl:{<tenant>}:keys` | zset | the tenant's key ids, scored by `created_at` |
//! | `sntl:{<tenant>}:budget:<period>` | hash | `spent`, `reserved` nano-USD |
//! | `sntl:{<tag>}:win:<scope>:<bucket>` | string | a window bucket's count; `<tag>` is the scope up to its first `:` |
//! | `sntl:key:<id>` | hash | `rec` (the key record as JSON, `revoked_at` left out), `revoked_at` |
//! | `sntl:keyhash:<sha256-hex>` | string | the key id |
//! | `sntl:changes` | string | the change sequence; also the pub/sub channel name |
//!
//! Key records are found by id or by hash without knowing the tenant, so they live outside the
//! tenant's slot; nothing needs them atomically together with tenant keys.

/// The set of tenant ids.
pub(super) const TENANTS: &str = "sntl:tenants";

/// The change counter, and the pub/sub channel that carries changed ids.
pub(super) const CHANGES: &str = "sntl:changes";

pub(super) fn tenant(id: &str) -> String {
    format!("sntl:{{{id}}}:tenant")
}

pub(super) fn tenant_keys(id: &str) -> String {
    format!("sntl:{{{id}}}:keys")
}

pub(super) fn budget(tenant: &str, period: &str) -> String {
    format!("sntl:{{{tenant}}}:budget:{period}")
}

/// The tenant's register of admission leases (a sorted set: member per lease, scored by the
/// time it is reaped if never given back).
pub(super) fn leases(tenant: &str) -> String {
    format!("sntl:{{{tenant}}}:leases")
}

/// A window bucket of `scope` (`"<tenant>:rpm"`, `"<tenant>:key:<id>:tpm"`, ...): the hash tag
/// is the part before the first `:`, so all of a tenant's counters share its slot.
pub(super) fn window(scope: &str, bucket: u64) -> String {
    let tag = scope.split_once(':').map_or(scope, |(tag, _)| tag);
    format!("sntl:{{{tag}}}:win:{scope}:{bucket}")
}

pub(super) fn key(id: &str) -> String {
    format!("sntl:key:{id}")
}

pub(super) fn key_hash(hex: &str) -> String {
    format!("sntl:keyhash:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_share_the_tenant_tag() {
        assert_eq!(tenant("acme"), "sntl:{acme}:tenant");
        assert_eq!(tenant_keys("acme"), "sntl:{acme}:keys");
        assert_eq!(budget("acme", "2026-11"), "sntl:{acme}:budget:2026-11");
        assert_eq!(window("acme:rpm", 7), "sntl:{acme}:win:acme:rpm:7");
        assert_eq!(
            window("acme:key:key_1:tpm", 7),
            "sntl:{acme}:win:acme:key:key_1:tpm:7"
        );
        assert_eq!(window("bare", 7), "sntl:{bare}:win:bare:7");
        assert_eq!(key("key_1"), "sntl:key:key_1");
        assert_eq!(key_hash("ab"), "sntl:keyhash:ab");
    }
}
