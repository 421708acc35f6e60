//! Tenants and what a caller may do (DESIGN §11): every job belongs to a tenant, every API key to one
//! tenant with a set of scopes, and a caller sees only its own tenant's jobs unless it holds `admin`.

use std::fmt;

/// The tenant of jobs submitted while the server runs without keys.
pub const DEFAULT_TENANT: &str = "default";

/// What a key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Submit jobs (single and batch), cancel and delete them.
    Submit,
    /// Read the status monitor, results, lists, events and kinds.
    Read,
    /// Claim and run jobs as an external worker.
    Work,
    /// Every tenant's jobs, every operation, and `/metrics`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Submit, Scope::Read, Scope::Work, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Work => "work",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| format!("unknown scope `{s}`: expected submit, read, work or admin"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether a caller holding these scopes may do what `needed` allows: `admin` allows everything.
    pub fn allow(self, needed: Scope) -> bool {
        self.contains(needed) || self.contains(Scope::Admin)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |scope| self.contains(*scope))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `submit,read` (commas, spaces ignored); at least one scope.
    ///
    /// # Errors
    /// An unknown scope, or none at all.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            scopes = scopes.with(part.parse()?);
        }
        if scopes.is_empty() {
            return Err("give at least one scope: submit, read, work or admin".to_owned());
        }
        Ok(scopes)
    }

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::default(), Scopes::with)
    }
}

/// Who is calling: the tenant its jobs belong to and what it may do. Set on every API request by the
/// authentication middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub scopes: Scopes,
}

impl Caller {
    /// A caller on a server without keys: the default tenant, every scope.
    pub fn open() -> Caller {
        Caller {
            tenant: DEFAULT_TENANT.to_owned(),
            scopes: Scopes::all(),
        }
    }

    /// The tenant whose jobs this caller may see, or `None` for every tenant (`admin`).
    pub fn visible_tenant(&self) -> Option<&str> {
        (!self.scopes.contains(Scope::Admin)).then_some(self.tenant.as_str())
    }
}

/// Checks a tenant name: 1 to 63 letters, digits, `.`, `_` or `-`, starting with a letter or digit (it
/// appears in URLs, logs and metric labels as is).
///
/// # Errors
/// What is wrong with it.
pub fn validate_tenant_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.len() <= 63 && first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "tenant `{name}` is not a valid name: 1 to 63 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_every_scope_and_others_only_their_own() {
        let admin = Scopes::parse("admin").unwrap();
        assert!(Scope::ALL.iter().all(|scope| admin.allow(*scope)));
        let reader = Scopes::parse("read, submit").unwrap();
        assert!(reader.allow(Scope::Read) && reader.allow(Scope::Submit));
        assert!(!reader.allow(Scope::Work) && !reader.allow(Scope::Admin));
        assert_eq!(reader.names(), vec!["submit", "read"]);
    }

    #[test]
    fn scopes_and_tenant_names_are_checked() {
        assert!(Scopes::parse("").is_err());
        assert!(Scopes::parse("read,write").is_err());
        assert!(validate_tenant_name("acme-eu.1").is_ok());
        for bad in ["", "-acme", "a b", "acme#batch", &"x".repeat(64)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad}");
        }
    }
}
