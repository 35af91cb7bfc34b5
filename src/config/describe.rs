//! The effective timeline in words, for `jwksd check-config`.

use super::{Config, ConfigError};
use crate::lifecycle::{Policy, Schedule};
use crate::time::{Timestamp, format_duration};

impl Config {
    /// The effective timeline in words, for `jwksd check-config`, under the
    /// policy `p` this configuration sets.
    pub fn describe(&self, p: &Policy, now: Timestamp) -> Result<String, ConfigError> {
        let mut out = String::new();
        let algs: Vec<&str> = p.algorithms.iter().map(|a| a.as_str()).collect();
        // rsa_bits means something only where an RSA algorithm is listed.
        if p.algorithms.iter().any(|a| a.is_rsa()) {
            out.push_str(&format!(
                "algorithms: {} (RSA keys of {} bits)\n",
                algs.join(", "),
                p.rsa_bits
            ));
        } else {
            out.push_str(&format!("algorithms: {}\n", algs.join(", ")));
        }
        match &p.schedule {
            Schedule::Every(d) => out.push_str(&format!(
                "keys rotate every {} after the active key was activated\n",
                format_duration(*d)
            )),
            Schedule::Cron(c) => out.push_str(&format!(
                "keys rotate on the cron schedule {:?} (UTC)\n",
                c.expr()
            )),
        }
        let mut t = now;
        let mut fires = Vec::new();
        for _ in 0..3 {
            match p.schedule.next_after(t) {
                Some(n) => {
                    fires.push(n.to_rfc3339());
                    t = n;
                }
                None => break,
            }
        }
        match &p.schedule {
            Schedule::Every(_) => out.push_str(&format!(
                "if a key were activated now, it would rotate out at {}\n",
                fires.first().map(String::as_str).unwrap_or("never")
            )),
            Schedule::Cron(_) => out.push_str(&format!(
                "the next scheduled rotations: {}\n",
                fires.join(", ")
            )),
        }
        out.push_str(&format!(
            "keys are published at least {} before they sign (jwks.publish_ahead)\n",
            format_duration(p.publish_ahead)
        ));
        out.push_str(&format!(
            "verifiers may cache the JWKS for {} (Cache-Control max-age)\n",
            format_duration(p.jwks_cache_max_age)
        ));
        out.push_str(&format!(
            "a rotated-out key stays published {} (retention = signing_key.cache_max_age {} + \
             tokens.max_lifetime {} + tokens.clock_skew {} + propagation {})\n",
            format_duration(p.retention()),
            format_duration(p.signing_key_cache_max_age),
            format_duration(p.max_token_lifetime),
            format_duration(p.clock_skew),
            format_duration(p.propagation)
        ));
        out.push_str(&format!(
            "at most {} keys per algorithm are published at once\n",
            p.max_published_per_alg(now)
        ));
        let store = if self.store_url().is_some() {
            format!(
                "a shared PostgreSQL store (replicas; leader lease {}, polled every {})",
                format_duration(self.store.leader_lease.0),
                format_duration(self.store.poll_interval.0)
            )
        } else {
            self.keys_dir.display().to_string()
        };
        out.push_str(&format!(
            "public listener {}, admin listener {}; keys in {store}\n",
            self.listen.public, self.listen.admin
        ));
        out.push_str(&match (&self.keys.backend, &self.keys.pkcs11) {
            (super::schema::Backend::Pkcs11, Some(t)) => format!(
                "new keys are generated and used inside PKCS#11 token {:?} (module {}; keys.backend: \
                 pkcs11, {} sessions): their private keys never leave it and are never exported\n",
                t.token_label,
                t.module.display(),
                t.sessions
            ),
            (_, Some(t)) => format!(
                "new keys are kept in the store (keys.backend: software); keys already in PKCS#11 \
                 token {:?} (module {}) stay there until they retire\n",
                t.token_label,
                t.module.display()
            ),
            (_, None) => "new keys are kept in the store (keys.backend: software)\n".to_string(),
        });
        out.push_str(if self.signing_key.export {
            "the signing key is exported: GET /v1/keys/active hands the private key to signer-token \
             holders (signing_key.export: true)\n"
        } else {
            "the signing key is not exported (sign-only): GET /v1/keys/active answers the public key \
             only, auth servers sign through POST /v1/sign (signing_key.export: false)\n"
        });
        out.push_str(&format!(
            "every change is recorded in the store's audit log (jwksd audit); GET /v1/events \
             streams key changes to at most {} signers (events.max_subscribers)\n",
            self.events.max_subscribers
        ));
        if self.events.webhooks.is_empty() {
            out.push_str("no webhooks (events.webhooks)\n");
        }
        for w in &self.events.webhooks {
            let events: Vec<&str> = w.events.iter().map(|k| k.as_str()).collect();
            out.push_str(&format!(
                "webhook {}: {} events to {}, signed with the secret in {} (read at start-up)\n",
                w.name,
                if events.is_empty() {
                    "all".to_owned()
                } else {
                    events.join(", ")
                },
                w.url,
                w.secret_file.display()
            ));
        }
        out.push_str(&if self.console.enabled {
            format!(
                "the operator console is at /console/ on the admin listener; a sign-in lasts {} at \
                 most, {} idle (console.*)\n",
                format_duration(self.console.session_lifetime.0),
                format_duration(self.console.idle_timeout.0)
            )
        } else {
            "the operator console is off (console.enabled: false)\n".to_owned()
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DEFAULT_YAML;
    use crate::config::testing::{now, parse};

    #[test]
    fn describe_speaks_the_timeline() {
        let c = parse(DEFAULT_YAML).unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(d.contains("published at least 6m before they sign"), "{d}");
        assert!(d.contains("stays published 1day 2m"), "{d}");
        assert!(d.contains("2026-11-27T03:00:00.000Z"), "{d}");
        assert!(d.contains("the signing key is exported"), "{d}");
        let c = parse("signing_key:\n  export: false\n").unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(
            d.contains("the signing key is not exported (sign-only)"),
            "{d}"
        );
        assert!(!d.contains("is exported"), "{d}");
    }

    /// check-config names each webhook and what it gets, and reads no
    /// secret (the file here does not exist).
    #[test]
    fn describe_names_the_webhooks() {
        let c = parse(DEFAULT_YAML).unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(
            d.contains("no webhooks") && d.contains("at most 256 signers"),
            "{d}"
        );
        let hooks = "events:\n  webhooks:\n    - name: chat\n      url: https://hooks.example.com/x\n      secret_file: /nonexistent/secret\n      events: [key.active, key.revoked]\n";
        let c = parse(hooks).unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(
            d.contains("webhook chat: key.active, key.revoked events to https://hooks.example.com/x, signed with the secret in /nonexistent/secret"),
            "{d}"
        );
    }

    /// check-config names the backend, the module and the token, and opens
    /// nothing (the module path here does not exist).
    #[test]
    fn describe_names_the_key_backend() {
        let c = parse(DEFAULT_YAML).unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(d.contains("keys.backend: software"), "{d}");
        let token = "keys:\n  backend: pkcs11\n  pkcs11:\n    module: /nonexistent/libhsm.so\n    token_label: prod\n";
        let c = parse(token).unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(
            d.contains("inside PKCS#11 token \"prod\" (module /nonexistent/libhsm.so; keys.backend: pkcs11, 4 sessions)"),
            "{d}"
        );
        assert!(d.contains("never exported"), "{d}");
        let moving = token.replace("backend: pkcs11", "backend: software");
        let c = parse(&moving).unwrap();
        let d = c.describe(&c.policy(now()).unwrap(), now()).unwrap();
        assert!(d.contains("stay there until they retire"), "{d}");
    }
}
