//! Where a key's private half lives: the store (a key file or a database
//! row) or a PKCS#11 token. Recorded per key in the state, so that a change
//! of `keys.backend` moves keys by rotation, never by copy: each key stays
//! where it was made until it retires (docs/pkcs11.md, "Moving between
//! backends").

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum Custody {
    /// In the store, sealed when a master key is set (`keys.backend:
    /// software`).
    #[default]
    Software,
    /// Inside the PKCS#11 token with this label; never leaves it.
    Pkcs11 { token_label: String },
}

impl Custody {
    pub fn is_software(&self) -> bool {
        matches!(self, Custody::Software)
    }

    /// The token's label, for a key in a token.
    pub fn token_label(&self) -> Option<&str> {
        match self {
            Custody::Software => None,
            Custody::Pkcs11 { token_label } => Some(token_label),
        }
    }
}

impl fmt::Display for Custody {
    /// As `jwksd keys` and the logs print it: `software` (in the store, as
    /// `keys.backend: software` keeps keys) or `pkcs11:<label>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Custody::Software => f.write_str("software"),
            Custody::Pkcs11 { token_label } => write!(f, "pkcs11:{token_label}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custody_serialises_tagged_and_prints_short() {
        let t = Custody::Pkcs11 {
            token_label: "jwksd".into(),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"backend":"pkcs11","token_label":"jwksd"}"#);
        assert_eq!(serde_json::from_str::<Custody>(&json).unwrap(), t);
        assert_eq!(t.to_string(), "pkcs11:jwksd");
        assert_eq!(Custody::Software.to_string(), "software");
        assert!(serde_json::from_str::<Custody>(r#"{"backend":"kms"}"#).is_err());
    }
}
