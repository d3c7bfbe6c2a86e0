//! Which web pages may open WebSocket sessions: the upgrade's `Origin`
//! header, checked against the server's policy (cross-site WebSocket
//! hijacking: a page on any site can open a WebSocket to a gateway, and
//! the browser sends that user's cookies with it). A request without an
//! `Origin` is not from a browser page and always passes.

/// The server's policy for the `Origin` of WebSocket upgrades.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origins {
    /// Any page (the library's default; the gateway's is [`Origins::same_host`]).
    #[default]
    Any,
    /// Pages served from the host the upgrade is addressed to (its `Host`
    /// header, any port; the loopback names `localhost`, `127.0.0.1` and
    /// `[::1]` count as one host), when `same_host`, and the origins listed
    /// (`scheme://host[:port]`, compared without regard to case).
    Allowed {
        /// Pages of the upgrade's own host pass.
        same_host: bool,
        /// Origins that pass besides.
        list: Vec<String>,
    },
}

impl Origins {
    /// Same host, plus `list`.
    pub fn same_host(list: Vec<String>) -> Self {
        Origins::Allowed { same_host: true, list }
    }

    /// True when a page of `origin` may upgrade a request for `host`.
    pub fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Origins::Allowed { same_host, list } = self else { return true };
        let Some(origin) = origin else { return true };
        let Ok(origin) = std::str::from_utf8(origin) else { return false };
        let origin = origin.trim();
        if list.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
            return true;
        }
        if !same_host {
            return false;
        }
        // "scheme://host[:port]": the host part of both sides.
        let Some((_, rest)) = origin.split_once("://") else { return false };
        let (Some(page), Some(target)) =
            (host_of(rest), host.and_then(|h| std::str::from_utf8(h).ok()).and_then(host_of))
        else {
            return false;
        };
        page.eq_ignore_ascii_case(target) || (loopback(page) && loopback(target))
    }
}

/// The host of "host[:port]" or "[v6]:port" (no path).
fn host_of(s: &str) -> Option<&str> {
    let s = s.trim();
    let h = if let Some(r) = s.strip_prefix('[') {
        &s[..r.find(']')? + 2]
    } else {
        s.rsplit_once(':').map_or(s, |(h, _)| h)
    };
    (!h.is_empty() && !h.contains('/')).then_some(h)
}

fn loopback(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost") || h == "127.0.0.1" || h == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_the_same_host_and_listed_origins_pass_others_do_not() {
        let p = Origins::same_host(vec!["https://app.example.com".into()]);
        let ok = |o: &str, h: &str| p.allows(Some(o.as_bytes()), Some(h.as_bytes()));
        assert!(p.allows(None, Some(b"gw.example.com")), "not a browser page");
        assert!(ok("https://gw.example.com", "gw.example.com:7401"));
        assert!(ok("http://GW.example.com:7403", "gw.example.com:7401"));
        assert!(ok("http://127.0.0.1:7403", "127.0.0.1:7401"));
        assert!(ok("http://localhost:7403", "127.0.0.1:7401"));
        assert!(ok("http://[::1]:7403", "localhost:7401"));
        assert!(ok("https://app.example.com", "gw.example.com"));
        assert!(ok("HTTPS://APP.example.com", "gw.example.com"));
        assert!(!ok("https://evil.example", "gw.example.com:7401"));
        assert!(!ok("https://gw.example.com.evil.example", "gw.example.com"));
        assert!(!ok("null", "gw.example.com"));
        assert!(!ok("https://evil.example", "127.0.0.1:7401"));
        assert!(!p.allows(Some(b"https://gw.example.com"), None), "no Host to compare with");
        assert!(!Origins::Allowed { same_host: false, list: vec![] }.allows(Some(b"http://a"), Some(b"a")));
        assert!(Origins::Any.allows(Some(b"https://evil.example"), Some(b"gw")));
    }
}
