//! Prometheus metrics. Counters are bumped where things happen; gauges that
//! depend on the time (key age, time to the next rotation) are set from the
//! current snapshot when `/metrics` is scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use crate::keys::Alg;
use crate::lifecycle::{KeyState, Trigger};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum AlgLabel {
    ES256,
    ES384,
    RS256,
    PS256,
    EdDSA,
    Ed25519,
}

impl From<Alg> for AlgLabel {
    fn from(a: Alg) -> Self {
        match a {
            Alg::ES256 => AlgLabel::ES256,
            Alg::ES384 => AlgLabel::ES384,
            Alg::RS256 => AlgLabel::RS256,
            Alg::PS256 => AlgLabel::PS256,
            Alg::EdDSA => AlgLabel::EdDSA,
            Alg::Ed25519 => AlgLabel::Ed25519,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlgLabels {
    pub alg: AlgLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStateLabels {
    pub alg: AlgLabel,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub alg: AlgLabel,
    pub trigger: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignLabels {
    pub alg: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientResultLabels {
    /// A configured client's name, or `unknown`: bounded by the
    /// configuration.
    pub client: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    pub client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub published_keys: Family<KeyStateLabels, Gauge>,
    pub active_key_age: Family<AlgLabels, FloatGauge>,
    pub next_rotation: Family<AlgLabels, FloatGauge>,
    pub rotations: Family<RotationLabels, Counter>,
    pub last_rotation: Family<AlgLabels, FloatGauge>,
    pub generation_failures: Family<AlgLabels, Counter>,
    pub key_waits: Family<AlgLabels, Counter>,
    pub lifecycle_failures: Family<ActionLabels, Counter>,
    pub lifecycle_failing: Gauge,
    pub jwks_200: Counter,
    pub jwks_304: Counter,
    pub sign: Family<SignLabels, Counter>,
    sign_ok: [Counter; Alg::ALL.len()],
    pub auth_failures: Family<StatusLabels, Counter>,
    pub client_sign: Family<ClientResultLabels, Counter>,
    pub client_auth_failures: Family<ClientLabels, Counter>,
    pub clients_reloads: Family<ResultLabels, Counter>,
    pub console_sign_ins: Family<ResultLabels, Counter>,
    pub clients: Gauge,
    pub clock_jumps: Counter,
    pub clock_offset: FloatGauge,
    pub leader: Gauge,
    pub store_up: Gauge,
    pub store_state_readable: Gauge,
    pub store_state_age: FloatGauge,
    pub token_errors: Family<KindLabels, Counter>,
    pub token_up: Gauge,
    pub audit_last_seq: Gauge,
    pub audit_write_failures: Counter,
    pub event_subscribers: Gauge,
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    pub webhook_delivered_seq: Family<EndpointLabels, Gauge>,
    pub webhook_pending: Family<EndpointLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The endpoint's `name` (configured, so bounded).
    pub endpoint: String,
    /// `ok`, or `failed` (an error, a timeout, or a status other than 2xx).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

/// A new metric, registered under `name` with its help text.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jwksd");
        let published_keys: Family<KeyStateLabels, Gauge> = registered(
            &mut registry,
            "published_keys",
            "Keys in the JWK Set, by algorithm and state",
        );
        let active_key_age: Family<AlgLabels, FloatGauge> = registered(
            &mut registry,
            "active_key_age_seconds",
            "Seconds since the active key of each algorithm was activated",
        );
        let next_rotation: Family<AlgLabels, FloatGauge> = registered(
            &mut registry,
            "next_rotation_seconds",
            "Seconds until the next scheduled rotation (negative: overdue)",
        );
        let rotations: Family<RotationLabels, Counter> = registered(
            &mut registry,
            "rotations",
            "Rotations by algorithm, trigger and result",
        );
        let last_rotation: Family<AlgLabels, FloatGauge> = registered(
            &mut registry,
            "last_successful_rotation_timestamp_seconds",
            "Unix time the active key of each algorithm was activated",
        );
        let generation_failures: Family<AlgLabels, Counter> = registered(
            &mut registry,
            "key_generation_failures",
            "Failed key generations",
        );
        let key_waits: Family<AlgLabels, Counter> = registered(
            &mut registry,
            "key_waits",
            "Requests (sign, active key) that found no active key and waited for one being generated",
        );
        let lifecycle_failures: Family<ActionLabels, Counter> = registered(
            &mut registry,
            "lifecycle_failures",
            "Lifecycle steps (generate, commit) that failed and will be retried",
        );
        let lifecycle_failing: Gauge = registered(
            &mut registry,
            "lifecycle_failing",
            "1 while the last lifecycle step failed and is being retried",
        );
        let jwks: Family<StatusLabels, Counter> =
            registered(&mut registry, "jwks_requests", "JWKS requests by status");
        let jwks_200 = jwks
            .get_or_create(&StatusLabels {
                status: "200".into(),
            })
            .clone();
        let jwks_304 = jwks
            .get_or_create(&StatusLabels {
                status: "304".into(),
            })
            .clone();
        let sign: Family<SignLabels, Counter> = registered(
            &mut registry,
            "sign_requests",
            "POST /v1/sign requests by algorithm and result",
        );
        let sign_ok = Alg::ALL.map(|a| {
            sign.get_or_create(&SignLabels {
                alg: a.as_str().into(),
                result: "ok".into(),
            })
            .clone()
        });
        let auth_failures: Family<StatusLabels, Counter> = registered(
            &mut registry,
            "admin_auth_failures",
            "Admin requests refused for authentication (401), role (403) or rate (429)",
        );
        let client_sign: Family<ClientResultLabels, Counter> = registered(
            &mut registry,
            "client_sign_requests",
            "POST /v1/sign requests by client (a configured name, or unknown) and result (ok, \
             refused: 4xx, failed: 5xx)",
        );
        let client_auth_failures: Family<ClientLabels, Counter> = registered(
            &mut registry,
            "client_auth_failures",
            "Failed authentications by the client the credentials named (an expired token, a \
             certificate), or unknown",
        );
        let clients_reloads: Family<ResultLabels, Counter> = registered(
            &mut registry,
            "clients_reloads",
            "Reloads of the clients list (SIGHUP, file changed) by result (ok, failed: the \
             previous list stays)",
        );
        let console_sign_ins: Family<ResultLabels, Counter> = registered(
            &mut registry,
            "console_sign_ins",
            "Sign-ins to the operator console by result (ok; refused: a bad or missing \
             credential, a signer, another origin)",
        );
        let clients: Gauge = registered(
            &mut registry,
            "clients",
            "Clients the admin listener accepts, built-ins included",
        );
        let clock_jumps: Counter = registered(
            &mut registry,
            "clock_jumps",
            "Wall-clock jumps detected against the monotonic clock",
        );
        let clock_offset: FloatGauge = registered(
            &mut registry,
            "clock_offset_seconds",
            "Wall clock minus jwksd's time after a jump it did not follow (0 when they agree)",
        );
        let leader: Gauge = registered(
            &mut registry,
            "leader",
            "1 while this replica holds the lease to run rotations",
        );
        let store_up: Gauge = registered(
            &mut registry,
            "store_up",
            "1 while the key store answers (0: serving the last known keys)",
        );
        store_up.set(1);
        let store_state_readable: Gauge = registered(
            &mut registry,
            "store_state_readable",
            "1 while this replica can read and apply the shared key-ring state (0: it stops \
             signing once its freshness window is over, and does not lead)",
        );
        store_state_readable.set(1);
        let store_state_age: FloatGauge = registered(
            &mut registry,
            "store_state_age_seconds",
            "Time since this replica last read and applied the shared key-ring state",
        );
        let token_errors: Family<KindLabels, Counter> = registered(
            &mut registry,
            "token_errors",
            "Failures of the PKCS#11 token by kind (token_gone, pool_timeout, key_not_found, pin, \
             token_not_found, module, operation)",
        );
        let token_up: Gauge = registered(
            &mut registry,
            "token_up",
            "1 while the PKCS#11 token answers (0: signing with its keys fails; jwksd reopens it \
             every second); 1 without a token",
        );
        token_up.set(1);
        let audit_last_seq: Gauge = registered(
            &mut registry,
            "audit_last_seq",
            "Sequence number of the last audit record this replica wrote or read",
        );
        let audit_write_failures: Counter = registered(
            &mut registry,
            "audit_write_failures",
            "Audit records of refused commands and store commands that could not be written \
             (a state change and its records fail together)",
        );
        let event_subscribers: Gauge = registered(
            &mut registry,
            "event_subscribers",
            "Connections following GET /v1/events",
        );
        let webhook_deliveries: Family<WebhookLabels, Counter> = registered(
            &mut registry,
            "webhook_deliveries",
            "Webhook requests by endpoint and result (ok: a 2xx answer; failed: retried)",
        );
        let webhook_delivered_seq: Family<EndpointLabels, Gauge> = registered(
            &mut registry,
            "webhook_delivered_seq",
            "Sequence number of the last audit record delivered to each endpoint",
        );
        let webhook_pending: Family<EndpointLabels, Gauge> = registered(
            &mut registry,
            "webhook_pending",
            "Audit records waiting for delivery to each endpoint (the leader's count)",
        );
        Metrics {
            audit_last_seq,
            audit_write_failures,
            event_subscribers,
            webhook_deliveries,
            webhook_delivered_seq,
            webhook_pending,
            token_errors,
            token_up,
            registry,
            store_state_readable,
            store_state_age,
            clock_offset,
            leader,
            store_up,
            published_keys,
            active_key_age,
            next_rotation,
            rotations,
            last_rotation,
            generation_failures,
            key_waits,
            lifecycle_failures,
            lifecycle_failing,
            jwks_200,
            jwks_304,
            sign,
            sign_ok,
            auth_failures,
            client_sign,
            client_auth_failures,
            clients_reloads,
            console_sign_ins,
            clients,
            clock_jumps,
        }
    }

    pub fn token_error(&self, kind: &str) {
        self.token_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn rotation(&self, alg: Alg, trigger: Trigger, ok: bool) {
        self.rotations
            .get_or_create(&RotationLabels {
                alg: alg.into(),
                trigger: trigger.as_str().into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    pub fn sign_result(&self, alg: Option<Alg>, result: &str) {
        if result == "ok"
            && let Some(a) = alg
        {
            // The hot path: no label strings built per token.
            self.sign_ok[a as usize].inc();
            return;
        }
        self.sign
            .get_or_create(&SignLabels {
                alg: alg.map(|a| a.as_str()).unwrap_or("none").into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn client_sign_result(&self, client: &str, result: &str) {
        self.client_sign
            .get_or_create(&ClientResultLabels {
                client: client.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn client_auth_failure(&self, client: &str) {
        self.client_auth_failures
            .get_or_create(&ClientLabels {
                client: client.into(),
            })
            .inc();
    }

    pub fn console_sign_in(&self, ok: bool) {
        self.console_sign_ins
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "refused" }.into(),
            })
            .inc();
    }

    pub fn clients_reloaded(&self, ok: bool) {
        self.clients_reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    pub fn set_published(&self, alg: Alg, state: KeyState, n: i64) {
        self.published_keys
            .get_or_create(&KeyStateLabels {
                alg: alg.into(),
                state: state.as_str().into(),
            })
            .set(n);
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
