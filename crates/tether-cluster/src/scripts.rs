//! The Lua scripts, each prefixed with `lua/common.lua` (key layout and
//! the shared `append`). redis-rs runs them with EVALSHA and loads them on
//! NOSCRIPT, so a restarted Redis needs nothing.

use redis::Script;

pub(crate) const COMMON: &str = include_str!("lua/common.lua");

pub(crate) struct Scripts {
    pub(crate) open: Script,
    pub(crate) claim: Script,
    pub(crate) commit: Script,
    pub(crate) append: Script,
    pub(crate) fetch: Script,
    pub(crate) acked: Script,
    pub(crate) confirm: Script,
    pub(crate) end: Script,
    pub(crate) lease: Script,
    pub(crate) reap: Script,
    pub(crate) restart: Script,
    pub(crate) kick: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            open: script(include_str!("lua/open.lua")),
            claim: script(include_str!("lua/claim.lua")),
            commit: script(include_str!("lua/commit.lua")),
            append: script(include_str!("lua/append.lua")),
            fetch: script(include_str!("lua/fetch.lua")),
            acked: script(include_str!("lua/acked.lua")),
            confirm: script(include_str!("lua/confirm.lua")),
            end: script(include_str!("lua/end.lua")),
            lease: script(include_str!("lua/lease.lua")),
            reap: script(include_str!("lua/reap.lua")),
            restart: script(include_str!("lua/restart.lua")),
            kick: script(include_str!("lua/kick.lua")),
        }
    }
}
