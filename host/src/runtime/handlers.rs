//! The registry as the runtime shares it (step 4): the handler thread
//! dispatches through it, and the embedding app adds or removes handlers at
//! any time (`listen` / `off`, the seed SDK's Command API, and plugin
//! installs).
//!
//! One `Mutex<Registry>`: the handler thread holds it for the length of one
//! call, so a `listen` from the app waits at most for the running call (and
//! a replace never happens mid-call). The async driver never takes this lock
//! (it would stall every message behind a slow handler); what it needs to
//! read (the plugin list for `_plugins`) is a snapshot kept next to it and
//! refreshed after every change.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use relay_core::engine::Plugin;
use relay_core::plugin::{CommandSpec, PluginInfo};
use relay_core::registry::{ListenError, NativeHandler, Registry};

/// A cloneable handle on the runtime's registry.
#[derive(Clone, Default)]
pub struct Handlers {
    registry: Arc<Mutex<Registry>>,
    plugins: Arc<RwLock<Vec<PluginInfo>>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("plugins", &self.plugins())
            .finish()
    }
}

impl Handlers {
    pub fn new(registry: Registry) -> Self {
        let handlers = Handlers {
            registry: Arc::new(Mutex::new(registry)),
            plugins: Arc::default(),
        };
        handlers.refresh(&handlers.lock());
        handlers
    }

    /// Locks the registry. A panic inside a handler is caught by the
    /// executor before it can poison the lock; should it happen anyway, the
    /// registry itself is still consistent (every mutation is one map
    /// operation), so the poison is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `listen(name, handler)`: a native handler callable by every role.
    pub fn listen(
        &self,
        name: &str,
        handler: impl NativeHandler + 'static,
    ) -> Result<(), ListenError> {
        self.lock().listen(name, handler)
    }

    /// A native handler with explicit roles and budget.
    pub fn listen_with(
        &self,
        spec: CommandSpec,
        handler: impl NativeHandler + 'static,
    ) -> Result<(), ListenError> {
        self.lock().listen_with(spec, handler)
    }

    /// `off(name)`: true if a handler was removed; safe when absent.
    pub fn off(&self, name: &str) -> bool {
        self.lock().off(name)
    }

    /// Installs (or atomically replaces) a loaded plugin.
    pub fn install(&self, plugin: Box<dyn Plugin>) -> Result<Option<Box<dyn Plugin>>, ListenError> {
        let mut registry = self.lock();
        let replaced = registry.install(plugin)?;
        self.refresh(&registry);
        Ok(replaced)
    }

    /// Unloads a plugin and its commands.
    pub fn uninstall(&self, name: &str) -> Option<Box<dyn Plugin>> {
        let mut registry = self.lock();
        let removed = registry.uninstall(name);
        self.refresh(&registry);
        removed
    }

    /// Runs `f` on the locked registry and refreshes the plugin snapshot
    /// after it (an update command, a rollback).
    pub fn update<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.lock();
        let out = f(&mut registry);
        self.refresh(&registry);
        out
    }

    /// The loaded plugins (a snapshot; never waits for a running handler).
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh(&self, registry: &Registry) {
        let infos: Vec<PluginInfo> = registry.plugins().cloned().collect();
        *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = infos;
    }
}
