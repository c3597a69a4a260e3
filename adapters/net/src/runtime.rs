//! The dedicated tokio runtime a network transport runs its sockets on. Partitions live on actix
//! arbiters; keeping network I/O on its own threads means a busy arbiter never stalls heartbeats
//! to other nodes, and transports work the same whether the application runs actix or not.

use std::sync::Mutex;
use tokio::runtime::{Builder, Handle, Runtime};

/// An owned multi-threaded tokio runtime that is shut down without blocking.
#[derive(Debug)]
pub struct NetRuntime {
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
}

impl NetRuntime {
    /// A runtime with `threads` worker threads named `name`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let runtime =
            Builder::new_multi_thread().worker_threads(threads.max(1)).thread_name(name).enable_all().build()?;
        let handle = runtime.handle().clone();
        Ok(NetRuntime { runtime: Mutex::new(Some(runtime)), handle })
    }

    /// Spawn work on the runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stop every task (in the background; safe to call from async code).
    pub fn shutdown(&self) {
        if let Some(runtime) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}
