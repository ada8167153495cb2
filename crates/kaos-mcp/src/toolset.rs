//! [`McpToolset`]: the tools of a set of MCP servers, as a kaos [`ToolSource`]. Servers start
//! once (when the toolset connects) and are shared by every runner on the runtime.

use std::sync::{Arc, RwLock, Weak};

use globset::{Glob, GlobSetBuilder};
use kaos_agents::otel::OTelHook;
use kaos_agents::{Agent, KaosRuntime, McpServerConfig, Tool, ToolContext, ToolSource};
use opentelemetry::Context;
use tokio::sync::watch;

use crate::McpError;
use crate::link::{ListChanged, ServerLink};
use crate::tool::McpTool;
use crate::trace::{TraceResolver, current_context, otel_resolver};

/// Shared state of a toolset (tools hold a weak reference to it).
pub(crate) struct Inner {
    links: Vec<Arc<ServerLink>>,
    /// Per server (same order as `links`): its allowed tools as of the last listing.
    tools: RwLock<Vec<Vec<Arc<dyn Tool>>>>,
    generation: watch::Sender<u64>,
    trace: RwLock<Option<TraceResolver>>,
}

impl Inner {
    /// The OTel context of the call's span.
    pub(crate) fn trace_context(&self, ctx: &ToolContext) -> Option<Context> {
        let resolver = self
            .trace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match resolver {
            Some(r) => r(ctx),
            None => current_context(),
        }
    }

    /// Re-lists `link`'s tools in the background.
    pub(crate) fn refresh_later(self: &Arc<Self>, link: &Arc<ServerLink>) {
        let Some(index) = self.links.iter().position(|l| Arc::ptr_eq(l, link)) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.refresh(index).await {
                tracing::warn!(error = %e, "refreshing an MCP server's tools failed");
            }
        });
    }

    async fn refresh(self: &Arc<Self>, index: usize) -> Result<(), McpError> {
        let link = self.links[index].clone();
        let listed = link.list_tools().await?;
        let allow = allow_list(&link.config)?;
        let weak = Arc::downgrade(self);
        let tools: Vec<Arc<dyn Tool>> = listed
            .iter()
            .filter(|t| {
                allow
                    .as_ref()
                    .is_none_or(|set| set.is_match(t.name.as_ref()))
            })
            .map(|t| Arc::new(McpTool::new(link.clone(), t, weak.clone())) as Arc<dyn Tool>)
            .collect();
        {
            let mut all = self
                .tools
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            all[index] = tools;
        }
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }
}

fn allow_list(config: &McpServerConfig) -> Result<Option<globset::GlobSet>, McpError> {
    if config.tools.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for g in &config.tools {
        builder.add(Glob::new(g).map_err(|e| McpError::Config {
            server: config.name.clone(),
            message: format!("tools glob {g:?}: {}", e.kind()),
        })?);
    }
    builder.build().map(Some).map_err(|e| McpError::Config {
        server: config.name.clone(),
        message: e.to_string(),
    })
}

/// The tools of some MCP servers. Cheap to clone (clones share the servers).
///
/// ```no_run
/// # async fn demo() -> Result<(), kaos_mcp::McpError> {
/// use kaos_agents::{KaosRuntime, McpServerConfig};
/// let toolset = kaos_mcp::McpToolset::connect(vec![
///     McpServerConfig::stdio("files", ["npx", "-y", "some-mcp-server", "/data"]).allow("read_*"),
/// ])
/// .await?;
/// let runtime = KaosRuntime::test_mode().with_tool_source(toolset.source());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct McpToolset {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for McpToolset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpToolset")
            .field("servers", &self.server_names())
            .field("generation", &self.generation())
            .finish()
    }
}

impl McpToolset {
    /// Starts (or connects to) every server and lists its tools. A server that cannot be
    /// reached, or a bad entry, is an error naming the server.
    pub async fn connect(configs: Vec<McpServerConfig>) -> Result<Self, McpError> {
        for (i, c) in configs.iter().enumerate() {
            c.validate(&format!("mcp_servers[{i}]"))
                .map_err(|e| McpError::Config {
                    server: c.name.clone(),
                    message: e.message,
                })?;
        }
        let (generation, _) = watch::channel(0u64);
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let links = configs
                .into_iter()
                .enumerate()
                .map(|(index, config)| {
                    let weak = weak.clone();
                    let on_change: ListChanged = Arc::new(move || {
                        if let Some(inner) = weak.upgrade() {
                            let link = inner.links[index].clone();
                            inner.refresh_later(&link);
                        }
                    });
                    Arc::new(ServerLink::new(config, on_change))
                })
                .collect::<Vec<_>>();
            Inner {
                tools: RwLock::new(vec![Vec::new(); links.len()]),
                links,
                generation,
                trace: RwLock::new(None),
            }
        });
        let refreshes = (0..inner.links.len()).map(|i| inner.refresh(i));
        for r in futures::future::join_all(refreshes).await {
            r?;
        }
        Ok(Self { inner })
    }

    /// Connects the servers of `agent.mcp_servers`.
    pub async fn for_agent(agent: &Agent) -> Result<Self, McpError> {
        Self::connect(agent.mcp_servers.clone()).await
    }

    /// Puts the `traceparent` of `hook`'s tool-call span into each call's `params._meta`
    /// (without a hook, the current OTel context is used when it holds a span).
    pub fn with_otel_hook(self, hook: Arc<OTelHook>) -> Self {
        self.with_trace_resolver(otel_resolver(hook))
    }

    /// Uses `resolver` to find the OTel context of a call's span.
    pub fn with_trace_resolver(self, resolver: TraceResolver) -> Self {
        *self
            .inner
            .trace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(resolver);
        self
    }

    /// This toolset as a tool source for [`KaosRuntime::with_tool_source`].
    pub fn source(&self) -> Arc<dyn ToolSource> {
        Arc::new(self.clone())
    }

    /// `runtime` with this toolset's tools.
    pub fn attach(&self, runtime: KaosRuntime) -> KaosRuntime {
        runtime.with_tool_source(self.source())
    }

    /// The servers' names.
    pub fn server_names(&self) -> Vec<String> {
        self.inner
            .links
            .iter()
            .map(|l| l.config.name.clone())
            .collect()
    }

    /// How many times server `name` was started (restarts after a crash count).
    pub fn starts(&self, name: &str) -> Option<u64> {
        self.inner
            .links
            .iter()
            .find(|l| l.config.name == name)
            .map(|l| l.starts())
    }

    /// A counter that moves each time a server's tool list is re-read.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// Watches [`McpToolset::generation`] (e.g. to wait for a `tools/list_changed` refresh).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Re-lists every server's tools now.
    pub async fn refresh(&self) -> Result<(), McpError> {
        for i in 0..self.inner.links.len() {
            self.inner.refresh(i).await?;
        }
        Ok(())
    }

    /// The tools as of now.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        ToolSource::tools(self)
    }
}

impl ToolSource for McpToolset {
    fn generation(&self) -> u64 {
        McpToolset::generation(self)
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.inner
            .tools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}
