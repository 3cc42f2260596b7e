//! The effective guardrails of a tenant: the global `[shield]` section merged with the
//! tenant's override, compiled once per distinct policy and cached (compiling builds regex and
//! Aho-Corasick automata; scanning then only runs them).
//!
//! Merge rule: a tenant's `pii` or `injection` replaces the global rule of the same name;
//! its `deny_terms` are added to the global ones; `responses` is on if either turns it on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{CompiledPolicy, Shield, ShieldError, ShieldPolicy, DEFAULT_INJECTION_THRESHOLD};
use crate::config::raw::RawShield;
use crate::store::Tenant;

/// The global section merged with a tenant override.
pub fn merge(global: &RawShield, tenant: Option<&RawShield>) -> RawShield {
    let Some(t) = tenant else {
        return global.clone();
    };
    let mut deny_terms = global.deny_terms.clone();
    for term in &t.deny_terms {
        if !deny_terms.contains(term) {
            deny_terms.push(term.clone());
        }
    }
    RawShield {
        pii: t.pii.clone().or_else(|| global.pii.clone()),
        injection: t.injection.clone().or_else(|| global.injection.clone()),
        deny_terms,
        responses: global.responses || t.responses,
    }
}

/// The engine's policy for a section as written.
pub fn policy_of(raw: &RawShield) -> ShieldPolicy {
    ShieldPolicy {
        pii: raw.pii.as_ref().map(|r| r.action),
        injection: raw.injection.as_ref().map(|r| r.action),
        injection_threshold: raw
            .injection
            .as_ref()
            .and_then(|r| r.threshold)
            .unwrap_or(DEFAULT_INJECTION_THRESHOLD),
        deny_terms: raw.deny_terms.clone(),
        responses: raw.responses,
    }
}

/// Compiled guardrails for every tenant.
pub struct Guardrails {
    shield: Shield,
    global: RawShield,
    global_policy: Arc<CompiledPolicy>,
    /// Per tenant with an override: the override it was compiled from, and the result.
    tenants: RwLock<HashMap<String, (RawShield, Arc<CompiledPolicy>)>>,
}

impl std::fmt::Debug for Guardrails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrails")
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

impl Guardrails {
    /// Compiles the detectors and the global policy.
    pub fn new(global: &RawShield) -> Result<Self, ShieldError> {
        let shield = Shield::new();
        let global_policy = Arc::new(shield.compile(&policy_of(global))?);
        Ok(Self {
            shield,
            global: global.clone(),
            global_policy,
            tenants: RwLock::new(HashMap::new()),
        })
    }

    /// The detectors.
    pub fn shield(&self) -> &Shield {
        &self.shield
    }

    /// Checks that a tenant override compiles (admin API, config), without caching it.
    pub fn check(&self, tenant: &RawShield) -> Result<(), ShieldError> {
        self.shield
            .compile(&policy_of(&merge(&self.global, Some(tenant))))
            .map(drop)
    }

    /// The compiled policy of `tenant`.
    pub fn policy_for(&self, tenant: &Tenant) -> Arc<CompiledPolicy> {
        let Some(over) = tenant.shield.as_ref() else {
            return Arc::clone(&self.global_policy);
        };
        if let Some((seen, policy)) = self
            .tenants
            .read()
            .ok()
            .and_then(|m| m.get(&tenant.id).cloned())
        {
            if &seen == over {
                return policy;
            }
        }
        let policy = match self
            .shield
            .compile(&policy_of(&merge(&self.global, Some(over))))
        {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // Overrides are checked when they are written; one that slipped through (an
                // older build wrote it) must not open the gate: use the global policy.
                tracing::error!(tenant = %tenant.id, error = %e, "invalid shield override; using the global policy");
                Arc::clone(&self.global_policy)
            }
        };
        if let Ok(mut m) = self.tenants.write() {
            m.insert(tenant.id.clone(), (over.clone(), Arc::clone(&policy)));
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawRule, ShieldAction};

    #[expect(clippy::unnecessary_wraps, reason = "the field it fills is an Option")]
    fn rule(action: ShieldAction) -> Option<RawRule> {
        Some(RawRule {
            action,
            threshold: None,
        })
    }

    #[test]
    fn tenant_rules_replace_global_ones_and_terms_add_up() {
        let global = RawShield {
            pii: rule(ShieldAction::Redact),
            injection: rule(ShieldAction::Log),
            deny_terms: vec!["alpha".into()],
            responses: false,
        };
        let tenant = RawShield {
            pii: rule(ShieldAction::Block),
            injection: None,
            deny_terms: vec!["beta".into(), "alpha".into()],
            responses: true,
        };
        let m = merge(&global, Some(&tenant));
        assert_eq!(m.pii.unwrap().action, ShieldAction::Block);
        assert_eq!(m.injection.unwrap().action, ShieldAction::Log);
        assert_eq!(m.deny_terms, ["alpha", "beta"]);
        assert!(m.responses);
        assert_eq!(merge(&global, None), global);
    }

    #[test]
    fn policies_are_cached_per_override_and_recompiled_when_it_changes() {
        let g = Guardrails::new(&RawShield::default()).unwrap();
        let mut t = Tenant::new("t");
        assert!(!g.policy_for(&t).is_active());
        t.shield = Some(RawShield {
            pii: rule(ShieldAction::Block),
            ..RawShield::default()
        });
        let a = g.policy_for(&t);
        assert!(a.is_active());
        assert!(Arc::ptr_eq(&a, &g.policy_for(&t)), "cached");
        t.shield = Some(RawShield {
            deny_terms: vec!["x".into()],
            ..RawShield::default()
        });
        assert!(!Arc::ptr_eq(&a, &g.policy_for(&t)), "recompiled");
        assert!(g
            .check(&RawShield {
                injection: rule(ShieldAction::Redact),
                ..RawShield::default()
            })
            .is_err());
    }
}
