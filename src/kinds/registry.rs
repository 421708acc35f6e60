//! The kinds a process knows: in-process handlers (built in, or embedded Rust) and kinds configured in
//! `jobdock.toml`, each with its defaults and payload schema. The API accepts every kind here; the
//! in-process workers claim only those with a handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::schema::PayloadSchema;
use super::Handler;

/// How a kind's jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerType {
    /// In this process: the built-in kinds and kinds embedded in Rust.
    Builtin,
    /// By external workers over HTTP (`POST /v1/worker/claim`).
    External,
    /// In this process, by calling an upstream HTTP service ([`super::http`]).
    Http,
    /// In this process, by running a command ([`super::exec`]).
    Exec,
}

impl HandlerType {
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerType::Builtin => "builtin",
            HandlerType::External => "external",
            HandlerType::Http => "http",
            HandlerType::Exec => "exec",
        }
    }
}

/// What the API knows of a kind: how it runs, the defaults for submissions that leave fields out, and
/// the schema its payloads must meet.
#[derive(Debug, Clone)]
pub struct KindSpec {
    pub name: String,
    pub handler: HandlerType,
    pub queue: Option<String>,
    pub max_attempts: Option<i32>,
    pub timeout_secs: Option<i32>,
    pub payload_schema: Option<PayloadSchema>,
    /// What runs its jobs in this process (`http` and `exec` kinds); `None` for `external` ones.
    pub runner: Option<Runner>,
}

/// A configured kind's in-process handler.
#[derive(Clone)]
pub struct Runner(pub Arc<dyn Handler>);

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Runner").field(&self.0.kind()).finish()
    }
}

impl KindSpec {
    fn builtin(name: &str) -> KindSpec {
        KindSpec {
            name: name.to_owned(),
            handler: HandlerType::Builtin,
            queue: None,
            max_attempts: None,
            timeout_secs: None,
            payload_schema: None,
            runner: None,
        }
    }
}

/// A kind found by [`Registry::lookup`].
pub enum Lookup<'a> {
    /// Run in this process by this handler.
    InProcess(&'a Arc<dyn Handler>),
    /// Declared in the configuration; run elsewhere.
    Configured(&'a KindSpec),
}

/// The kinds a process knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    configured: BTreeMap<String, KindSpec>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.handlers.keys().chain(self.configured.keys()))
            .finish()
    }
}

impl Registry {
    /// No kinds at all.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in kinds: `echo`, `sleep` and `fail`.
    pub fn builtin() -> Self {
        Registry::empty()
            .with(super::echo::Echo)
            .with(super::sleep::Sleep)
            .with(super::fail::Fail)
    }

    /// Adds a kind run in this process, replacing any of the same name.
    pub fn with(mut self, handler: impl Handler) -> Self {
        let name = handler.kind().to_owned();
        self.configured.remove(&name);
        self.handlers.insert(name, Arc::new(handler));
        self
    }

    /// Adds kinds declared in the configuration; the `http` and `exec` ones run in this process.
    ///
    /// # Errors
    /// When one has the name of a kind this process runs itself.
    pub fn with_configured(
        mut self,
        kinds: impl IntoIterator<Item = KindSpec>,
    ) -> Result<Self, String> {
        for kind in kinds {
            if self.handlers.contains_key(&kind.name) {
                return Err(format!(
                    "kind `{}` is declared in the configuration and also run by this process; rename one",
                    kind.name
                ));
            }
            if let Some(runner) = &kind.runner {
                self.handlers.insert(kind.name.clone(), runner.0.clone());
            }
            self.configured.insert(kind.name.clone(), kind);
        }
        Ok(self)
    }

    /// The in-process handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// How `kind` is known, if this process accepts it: configured (with its defaults and schema), or
    /// only as an in-process handler.
    pub fn lookup(&self, kind: &str) -> Option<Lookup<'_>> {
        self.configured
            .get(kind)
            .map(Lookup::Configured)
            .or_else(|| self.handlers.get(kind).map(Lookup::InProcess))
    }

    /// The kinds this process runs itself (what its workers claim), sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// The kinds this process runs that have a `max_concurrency`, with it.
    pub fn concurrency_limits(&self) -> Vec<(String, usize)> {
        self.handlers
            .iter()
            .filter_map(|(kind, handler)| Some((kind.clone(), handler.max_concurrency()?)))
            .collect()
    }

    /// Every kind this process accepts, sorted.
    pub fn accepted(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .handlers
            .keys()
            .chain(self.configured.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every kind this process accepts, with its settings, sorted by name.
    pub fn specs(&self) -> Vec<KindSpec> {
        self.accepted()
            .iter()
            .filter_map(|name| self.spec(name))
            .collect()
    }

    /// One kind's settings.
    pub fn spec(&self, kind: &str) -> Option<KindSpec> {
        match self.lookup(kind)? {
            Lookup::InProcess(_) => Some(KindSpec::builtin(kind)),
            Lookup::Configured(spec) => Some(spec.clone()),
        }
    }

    /// True when some kind this process runs can be paused by back-pressure (an `http` kind).
    pub fn can_pause(&self) -> bool {
        self.configured
            .values()
            .any(|spec| spec.handler == HandlerType::Http)
    }

    /// True when `kind` is declared for external workers.
    pub fn is_external(&self, kind: &str) -> bool {
        self.configured
            .get(kind)
            .is_some_and(|spec| spec.handler == HandlerType::External)
    }
}
