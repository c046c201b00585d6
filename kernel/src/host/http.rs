//! HTTP: requests the kernel makes for its callers, with reqwest over rustls, never through a
//! shell.
//!
//! This module owns what may be reached and how:
//!
//! * **The address policy.** Loopback, link-local (with the cloud metadata address
//!   169.254.169.254), private, shared (carrier-grade NAT), unspecified, multicast, broadcast
//!   and reserved addresses, in IPv4 and IPv6, and IPv4 addresses embedded in IPv6
//!   (`::ffff:127.0.0.1`, NAT64, 6to4), are refused unless a CIDR of `http_allow_private`
//!   covers them; so are the well-known metadata host names. It protects the host's own
//!   network from whoever asks the kernel, so it applies to every caller, operators included.
//! * **Checked on the address actually connected.** Names are resolved by our own resolver
//!   (reqwest's `dns_resolver` hook), which drops every refused address before reqwest sees
//!   the list; a name left with no address is refused. A DNS answer that changes between a
//!   check and the connect (DNS rebinding) cannot slip through, because there is no separate
//!   check: the addresses connected are the filtered ones. IP-literal URLs bypass resolvers,
//!   so they are checked before anything is sent. Proxies are off (a proxy would resolve and
//!   connect for us).
//! * **Redirects** are followed here, not by reqwest, at most [`MAX_REDIRECTS`] hops, and each
//!   hop is checked again like the first URL: scheme, the agent's domain and method lists,
//!   the address policy.
//! * **Caps.** The whole exchange, redirects and body included, must finish within the
//!   request's `timeout` (capped by `http_max_timeout_secs`); a response body larger than
//!   `http_max_response` is a `limit_exceeded` error, never silently cut. The request body is
//!   bounded by the frame size (`max_frame`).
//! * **Who may.** Operators are not restricted by the permission lists; an agent needs
//!   `can_http`, the URL's host in `network` and the method in `http_methods` ([`Gate`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clove_abi::msg::{domain_matches, method_matches, HttpReply, HttpRequest, Permissions};
use clove_abi::{ErrorCode, WireError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use tokio::time::Instant;

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 10;

/// Host names of cloud metadata services: refused whatever they resolve to.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Request headers the kernel sets or that belong to one connection, not to the request: a
/// caller's value is dropped.
const DROPPED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

// ---------------------------------------------------------------- address policy

/// An address range: `10.0.0.0/8`, `::1/128`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address. Host bits below the prefix are ignored.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("{text:?} is not a CIDR (addr/prefix): {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Ok(Cidr { net, prefix })
    }

    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The kind of special range `ip` is in (`"loopback"`, `"private"`, ...), or `None` for an
/// ordinary (global) address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    Some(match ip.octets() {
        [0, 0, 0, 0] => "unspecified",
        [0, ..] => "this-network (0.0.0.0/8)",
        [127, ..] => "loopback",
        [10, ..] => "private",
        [172, b, ..] if (16..32).contains(&b) => "private",
        [192, 168, ..] => "private",
        [169, 254, 169, 254] => "cloud metadata (link-local)",
        [169, 254, ..] => "link-local",
        [100, b, ..] if (64..128).contains(&b) => "shared (carrier-grade NAT)",
        [192, 0, 0, _] => "IETF protocol assignment",
        [198, 18 | 19, ..] => "benchmarking",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let s = ip.segments();
    let low32 = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        // IPv4-compatible (deprecated): ::a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] => Some("reserved (IPv4-compatible)"),
        // NAT64: the embedded IPv4 address is what gets reached.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => special_v4(low32),
        [0x64, 0xff9b, 1, ..] => Some("private (local-use NAT64)"),
        // 6to4: 2002:AABB:CCDD::/48 tunnels to a.b.c.d.
        [0x2002, hi, lo, ..] => special_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        [0x100, 0, 0, 0, ..] => Some("discard-only"),
        [a, ..] if a & 0xffc0 == 0xfe80 => Some("link-local"),
        [a, ..] if a & 0xffc0 == 0xfec0 => Some("site-local"),
        [a, ..] if a & 0xfe00 == 0xfc00 => Some("private (unique local)"),
        [a, ..] if a & 0xff00 == 0xff00 => Some("multicast"),
        _ => None,
    }
}

/// Which addresses HTTP may connect to: every ordinary address, and special ones only inside
/// `allow`.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
}

impl AddressPolicy {
    /// The default policy plus the ranges of `allow` (`http_allow_private`).
    pub fn new(allow: Vec<Cidr>) -> AddressPolicy {
        AddressPolicy { allow }
    }

    /// `Ok` when `ip` may be connected to; otherwise why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        Err(format!(
            "{ip} is a {range} address; HTTP to it is refused unless http_allow_private allows it"
        ))
    }
}

/// A host name as compared and looked up: trimmed, lower case, without brackets or trailing
/// dots.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` (normalized) names a cloud metadata service.
pub fn is_metadata_host(host: &str) -> bool {
    METADATA_HOSTS.contains(&host)
}

// ---------------------------------------------------------------- resolver

/// A refusal by the address policy, raised inside reqwest's connect path (the resolver) and
/// found again in the error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Resolves with the fixed answers first, then the system resolver, and passes on only the
/// addresses the policy allows.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    fixed: Arc<BTreeMap<String, Vec<IpAddr>>>,
}

impl GuardedResolver {
    async fn resolve(
        policy: &AddressPolicy,
        fixed: &BTreeMap<String, Vec<IpAddr>>,
        name: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let host = normalize_host(name);
        if is_metadata_host(&host) {
            return Err(Box::new(Refused(format!(
                "{host} is a cloud metadata host name; HTTP to it is refused"
            ))));
        }
        let found: Vec<IpAddr> = match fixed.get(&host) {
            Some(ips) => ips.clone(),
            None => tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect(),
        };
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for ip in found {
            match policy.check(ip) {
                Ok(()) => allowed.push(ip),
                Err(why) => refused.push(why),
            }
        }
        if allowed.is_empty() {
            return Err(Box::new(Refused(if refused.is_empty() {
                format!("{host} resolves to no address")
            } else {
                format!(
                    "{host} resolves only to refused addresses: {}",
                    refused.join("; ")
                )
            })));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, fixed) = (Arc::clone(&self.policy), Arc::clone(&self.fixed));
        Box::pin(async move {
            let ips = GuardedResolver::resolve(&policy, &fixed, name.as_str()).await?;
            // Port 0: reqwest puts the URL's port (or the scheme's) in.
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

// ---------------------------------------------------------------- who may

/// What the caller may reach: an agent's permission lists, or nothing to check (operators).
#[derive(Debug, Clone)]
pub struct Gate {
    /// The caller, for messages: `agent 7 (fetcher)`.
    pub who: String,
    /// The agent's permissions; `None` for an operator.
    pub perms: Option<Permissions>,
}

fn denied(why: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::PermissionDenied, why.into())
}

impl Gate {
    /// May the caller send `method` to `host` (normalized, an IP address without brackets)?
    pub fn check(&self, method: &Method, host: &str) -> Result<(), WireError> {
        let Some(p) = &self.perms else {
            return Ok(());
        };
        if !p.can_http {
            return Err(denied(format!(
                "{}: may not make HTTP requests (can_http is off)",
                self.who
            )));
        }
        if !p.network.iter().any(|d| domain_matches(d, host)) {
            return Err(denied(format!(
                "{}: host {host} is not in its network list {:?}",
                self.who, p.network
            )));
        }
        if !p
            .http_methods
            .iter()
            .any(|m| method_matches(m, method.as_str()))
        {
            return Err(denied(format!(
                "{}: method {method} is not in its http_methods {:?}",
                self.who, p.http_methods
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the client

/// The HTTP settings from the configuration.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Special ranges allowed after all (`http_allow_private`).
    pub allow_private: Vec<Cidr>,
    /// Fixed answers for names (`http_resolve`), keys normalized.
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
    /// Largest response body (`http_max_response`).
    pub max_response: u64,
    /// Longest a request may take (`http_max_timeout_secs`).
    pub max_timeout: Duration,
}

/// The kernel's HTTP client: one connection pool for every caller, behind the address
/// policy.
pub struct Http {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    max_response: u64,
    max_timeout: Duration,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("policy", &self.policy)
            .field("max_response", &self.max_response)
            .field("max_timeout", &self.max_timeout)
            .finish_non_exhaustive()
    }
}

/// A request checked and ready to send.
#[derive(Debug)]
pub struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    timeout: Duration,
    gate: Gate,
}

impl Http {
    /// A client with `settings`; fails only when the TLS backend cannot start.
    pub fn new(settings: &HttpSettings) -> anyhow::Result<Http> {
        let policy = Arc::new(AddressPolicy::new(settings.allow_private.clone()));
        let resolver = GuardedResolver {
            policy: Arc::clone(&policy),
            fixed: Arc::new(settings.resolve.clone()),
        };
        let client = reqwest::Client::builder()
            // A proxy would resolve and connect for us, past the address policy.
            .no_proxy()
            // Followed by `run`, each hop checked.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(resolver))
            .user_agent(concat!("clove-kernel/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Http {
            client,
            policy,
            max_response: settings.max_response,
            max_timeout: settings.max_timeout,
        })
    }

    /// Checks `req` from the caller `gate` describes: its fields, the first URL against the
    /// caller's permissions and (for an IP literal) the address policy. Everything refused
    /// here is refused before any connection or name lookup.
    pub fn prepare(&self, gate: Gate, req: HttpRequest) -> Result<Prepared, WireError> {
        let method_text = req.method.trim().to_ascii_uppercase();
        let method = Method::from_bytes(method_text.as_bytes())
            .ok()
            .filter(|m| !method_text.is_empty() && *m != Method::CONNECT)
            .ok_or_else(|| {
                WireError::invalid_request(format!("method {:?}: not an HTTP method", req.method))
            })?;
        let timeout = match req.timeout() {
            None => {
                return Err(WireError::invalid_request(format!(
                    "timeout {}: must be a number of seconds, 0 or more",
                    req.timeout
                )))
            }
            Some(t) if t.is_zero() => self.max_timeout,
            Some(t) => t.min(self.max_timeout),
        };
        let url = Url::parse(req.url.trim())
            .map_err(|e| WireError::invalid_request(format!("url {:?}: {e}", req.url)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                WireError::invalid_request(format!("header {name:?}: not a header name"))
            })?;
            if DROPPED_HEADERS.contains(&header.as_str()) {
                continue;
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                WireError::invalid_request(format!("header {name}: not a valid header value"))
            })?;
            headers.append(header, value);
        }
        self.check_hop(&gate, &method, &url)?;
        Ok(Prepared {
            method,
            url,
            headers,
            body: req.body,
            timeout,
            gate,
        })
    }

    /// One URL about to be requested: http or https, a host, the caller's lists, and for an
    /// IP literal the address policy (names are checked by the resolver, on the addresses
    /// themselves).
    fn check_hop(&self, gate: &Gate, method: &Method, url: &Url) -> Result<(), WireError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WireError::invalid_request(format!(
                "url {url}: only http and https URLs"
            )));
        }
        let host = match url.host() {
            None => {
                return Err(WireError::invalid_request(format!("url {url}: no host")));
            }
            Some(url::Host::Domain(d)) => normalize_host(d),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
        };
        gate.check(method, &host)?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        match literal {
            Some(ip) => self
                .policy
                .check(ip)
                .map_err(|why| denied(format!("{url}: {why}"))),
            None if is_metadata_host(&host) => Err(denied(format!(
                "{url}: {host} is a cloud metadata host name; HTTP to it is refused"
            ))),
            None => Ok(()),
        }
    }

    /// Sends a prepared request, following redirects (each hop checked again), and reads
    /// the response within the caps.
    pub async fn run(&self, p: Prepared) -> Result<HttpReply, WireError> {
        let deadline = Instant::now() + p.timeout;
        let Prepared {
            mut method,
            mut url,
            mut headers,
            mut body,
            timeout,
            gate,
        } = p;
        for hop in 0..=MAX_REDIRECTS {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timed_out(&url, timeout));
            }
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(remaining);
            if let Some(b) = &body {
                request = request.body(b.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| send_error(&url, e, timeout))?;
            let Some(next) = redirect_target(&response, &url) else {
                return self.read(response, &url, deadline, timeout).await;
            };
            if hop == MAX_REDIRECTS {
                return Err(WireError::new(
                    ErrorCode::LimitExceeded,
                    format!("{url}: more than {MAX_REDIRECTS} redirects"),
                ));
            }
            let status = response.status();
            if (status == StatusCode::SEE_OTHER && method != Method::HEAD)
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST)
            {
                method = Method::GET;
                body = None;
                headers.remove(reqwest::header::CONTENT_TYPE);
            }
            if next.origin() != url.origin() {
                // Credentials meant for one origin are not handed to another.
                for h in [
                    reqwest::header::AUTHORIZATION,
                    reqwest::header::COOKIE,
                    reqwest::header::PROXY_AUTHORIZATION,
                ] {
                    headers.remove(h);
                }
            }
            self.check_hop(&gate, &method, &next).map_err(|e| {
                WireError::new(e.code, format!("redirect from {url}: {}", e.message))
            })?;
            url = next;
        }
        Err(WireError::new(
            ErrorCode::Internal,
            "redirect loop ended without an answer",
        ))
    }

    async fn read(
        &self,
        mut response: reqwest::Response,
        url: &Url,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<HttpReply, WireError> {
        let too_big = || {
            WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{url}: the response body is larger than http_max_response ({} bytes)",
                    self.max_response
                ),
            )
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response)
        {
            return Err(too_big());
        }
        let status_code = response.status().as_u16();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_ascii_lowercase())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .map_err(|_| timed_out(url, timeout))?
                .map_err(|e| send_error(url, e, timeout))?;
            let Some(chunk) = chunk else { break };
            if bytes.len() as u64 + chunk.len() as u64 > self.max_response {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(HttpReply {
            success: true,
            status_code,
            body,
            headers: Some(headers),
            ..HttpReply::default()
        })
    }
}

/// The next URL of a redirect response: a 301, 302, 303, 307 or 308 with a usable
/// `Location`. Any other response, or one whose `Location` is missing or unusable, is the
/// answer itself.
fn redirect_target(response: &reqwest::Response, url: &Url) -> Option<Url> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    url.join(location).ok()
}

fn timed_out(url: &Url, timeout: Duration) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!(
            "{url}: no complete response within {} s",
            timeout.as_secs_f64()
        ),
    )
}

/// A failed exchange as a wire error: a refusal by the resolver is `permission_denied`, the
/// timeout `timeout`, anything else (no route, refused connection, TLS, a broken response)
/// `unavailable`.
fn send_error(url: &Url, e: reqwest::Error, timeout: Duration) -> WireError {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return denied(format!("{url}: {refused}"));
        }
        chain.push(err.to_string());
        cur = err.source();
    }
    if e.is_timeout() {
        return timed_out(url, timeout);
    }
    // reqwest's own line repeats the URL; the causes say what happened.
    let cause = chain.get(1..).map(|c| c.join(": ")).unwrap_or_default();
    let what = if e.is_connect() {
        "connect failed"
    } else {
        "request failed"
    };
    WireError::new(
        ErrorCode::Unavailable,
        if cause.is_empty() {
            format!("{url}: {what}")
        } else {
            format!("{url}: {what}: {cause}")
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_special_range_is_refused_by_default() {
        let policy = AddressPolicy::default();
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this-network"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.0.1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("192.0.0.170", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("fc00::1", "unique local"),
            ("fd00:ec2::254", "unique local"),
            ("ff02::1", "multicast"),
            ("::7f00:1", "IPv4-compatible"),
            ("100::1", "discard-only"),
            ("64:ff9b:1::1", "local-use NAT64"),
            // IPv4 inside IPv6: mapped, NAT64, 6to4.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a9fe:a9fe::1", "cloud metadata"),
            ("2002:c0a8:101::1", "private"),
        ];
        for (addr, kind) in cases {
            let why = policy.check(ip(addr)).unwrap_err();
            assert!(why.contains(kind), "{addr}: {why}");
            assert!(why.contains("http_allow_private"), "{why}");
        }
        for ordinary in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "192.169.0.1",
            "11.0.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fe00::1",
        ] {
            assert_eq!(policy.check(ip(ordinary)), Ok(()), "{ordinary}");
        }
    }

    #[test]
    fn allow_list_cidrs_open_exactly_their_ranges() {
        let policy = AddressPolicy::new(vec![
            Cidr::parse("127.0.0.1/32").unwrap(),
            Cidr::parse("10.1.0.0/16").unwrap(),
            Cidr::parse("fd00::/8").unwrap(),
        ]);
        for ok in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "10.1.255.255",
            "fd12::1",
        ] {
            assert_eq!(policy.check(ip(ok)), Ok(()), "{ok}");
        }
        for refused in ["127.0.0.2", "10.2.0.1", "::1", "fc00::1", "169.254.169.254"] {
            assert!(policy.check(ip(refused)).is_err(), "{refused}");
        }
        // An IPv6 range never covers IPv4 addresses and the other way round.
        let any6 = AddressPolicy::new(vec![Cidr::parse("::/0").unwrap()]);
        assert!(any6.check(ip("10.0.0.1")).is_err());
        assert_eq!(any6.check(ip("::1")), Ok(()));
        let any4 = AddressPolicy::new(vec![Cidr::parse("0.0.0.0/0").unwrap()]);
        assert_eq!(any4.check(ip("::ffff:10.0.0.1")), Ok(()));
        assert!(any4.check(ip("::1")).is_err());
    }

    #[test]
    fn cidrs_parse_and_print() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse(" 127.0.0.1 ").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(Cidr::parse("fe80::1/10").unwrap().to_string(), "fe80::/10");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0/8",
            "",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_normalized_and_metadata_names_known() {
        assert_eq!(normalize_host(" Name.TEST. "), "name.test");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert!(is_metadata_host(&normalize_host(
            "Metadata.Google.Internal."
        )));
        assert!(!is_metadata_host("metadata.example.com"));
    }

    fn agent(network: &[&str], methods: &[&str]) -> Gate {
        let mut p = Permissions::none();
        p.can_http = true;
        p.network = network.iter().map(|s| s.to_string()).collect();
        p.http_methods = methods.iter().map(|s| s.to_string()).collect();
        Gate {
            who: "agent 7 (t)".into(),
            perms: Some(p),
        }
    }

    #[test]
    fn the_gate_checks_can_http_domains_and_methods() {
        let g = agent(&["*.example.com", "api.test"], &["GET", "post"]);
        assert!(g.check(&Method::GET, "a.example.com").is_ok());
        assert!(g.check(&Method::POST, "api.test").is_ok());
        let e = g.check(&Method::GET, "example.com").unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(
            e.message
                .contains("host example.com is not in its network list"),
            "{e:?}"
        );
        let e = g.check(&Method::DELETE, "api.test").unwrap_err();
        assert!(e.message.contains("method DELETE"), "{e:?}");
        let mut off = g.clone();
        if let Some(p) = off.perms.as_mut() {
            p.can_http = false;
        }
        let e = off.check(&Method::GET, "api.test").unwrap_err();
        assert!(e.message.contains("can_http is off"), "{e:?}");
        let operator = Gate {
            who: "operator".into(),
            perms: None,
        };
        assert!(operator.check(&Method::DELETE, "anything").is_ok());
    }

    fn http(allow: &[&str]) -> Http {
        Http::new(&HttpSettings {
            allow_private: allow.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            resolve: BTreeMap::new(),
            max_response: 1 << 20,
            max_timeout: Duration::from_secs(60),
        })
        .unwrap()
    }

    fn operator() -> Gate {
        Gate {
            who: "operator".into(),
            perms: None,
        }
    }

    #[test]
    fn prepare_checks_fields_and_literal_addresses() {
        let h = http(&[]);
        let req = |url: &str| HttpRequest::get(url);
        for (url, code) in [
            ("http://127.0.0.1:8080/", ErrorCode::PermissionDenied),
            ("http://[::1]/", ErrorCode::PermissionDenied),
            ("http://[::ffff:7f00:1]/", ErrorCode::PermissionDenied),
            (
                "http://169.254.169.254/latest/meta-data/",
                ErrorCode::PermissionDenied,
            ),
            ("http://0x7f.1/", ErrorCode::PermissionDenied),
            ("http://2130706433/", ErrorCode::PermissionDenied),
            ("http://0/", ErrorCode::PermissionDenied),
            (
                "http://metadata.google.internal./",
                ErrorCode::PermissionDenied,
            ),
            ("file:///etc/passwd", ErrorCode::InvalidRequest),
            ("ftp://example.com/", ErrorCode::InvalidRequest),
            ("not a url", ErrorCode::InvalidRequest),
        ] {
            let e = h.prepare(operator(), req(url)).unwrap_err();
            assert_eq!(e.code, code, "{url}: {e:?}");
        }
        assert!(h.prepare(operator(), req("https://example.com/x")).is_ok());

        let mut bad = req("http://example.com/");
        bad.method = "GE T".into();
        assert_eq!(
            h.prepare(operator(), bad).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let mut bad = req("http://example.com/");
        bad.timeout = -1.0;
        assert_eq!(
            h.prepare(operator(), bad).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let mut bad = req("http://example.com/");
        bad.headers.insert("bad header".into(), "x".into());
        assert_eq!(
            h.prepare(operator(), bad).unwrap_err().code,
            ErrorCode::InvalidRequest
        );

        // Lower-case methods are upper-cased; hop-by-hop headers and Host are dropped; the
        // timeout is capped, 0 meaning the cap.
        let mut ok = req("http://example.com/");
        ok.method = "post".into();
        ok.timeout = 1e6;
        ok.headers.insert("Host".into(), "evil.test".into());
        ok.headers.insert("Connection".into(), "close".into());
        ok.headers.insert("X-Thing".into(), "1".into());
        let p = h.prepare(operator(), ok).unwrap();
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.timeout, Duration::from_secs(60));
        assert_eq!(p.headers.len(), 1);
        assert_eq!(p.headers["x-thing"], "1");
        let mut zero = req("http://example.com/");
        zero.timeout = 0.0;
        assert_eq!(
            h.prepare(operator(), zero).unwrap().timeout,
            Duration::from_secs(60)
        );

        // An allowed range opens the literal; the agent's lists still apply.
        let h = http(&["127.0.0.1/32"]);
        assert!(h.prepare(operator(), req("http://127.0.0.1:8080/")).is_ok());
        let e = h
            .prepare(
                agent(&["example.com"], &["GET"]),
                req("http://127.0.0.1:8080/"),
            )
            .unwrap_err();
        assert!(
            e.message
                .contains("host 127.0.0.1 is not in its network list"),
            "{e:?}"
        );
        assert!(h
            .prepare(
                agent(&["127.0.0.1"], &["GET"]),
                req("http://127.0.0.1:8080/")
            )
            .is_ok());
    }

    #[tokio::test]
    async fn the_resolver_passes_only_allowed_addresses() {
        let mut fixed = BTreeMap::new();
        fixed.insert("name.test".to_owned(), vec![ip("10.0.0.1")]);
        fixed.insert(
            "mixed.test".to_owned(),
            vec![ip("10.0.0.2"), ip("93.184.215.14")],
        );
        fixed.insert("local.test".to_owned(), vec![ip("127.0.0.1")]);
        let policy = AddressPolicy::default();
        let e = GuardedResolver::resolve(&policy, &fixed, "Name.Test.")
            .await
            .unwrap_err();
        let refused = e.downcast_ref::<Refused>().unwrap();
        assert!(
            refused.0.contains(
                "name.test resolves only to refused addresses: 10.0.0.1 is a private address"
            ),
            "{refused}"
        );
        let got = GuardedResolver::resolve(&policy, &fixed, "mixed.test")
            .await
            .unwrap();
        assert_eq!(got, vec![ip("93.184.215.14")]);
        let e = GuardedResolver::resolve(&policy, &fixed, "metadata.google.internal")
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<Refused>().is_some());
        let open = AddressPolicy::new(vec![Cidr::parse("127.0.0.0/8").unwrap()]);
        let got = GuardedResolver::resolve(&open, &fixed, "local.test")
            .await
            .unwrap();
        assert_eq!(got, vec![ip("127.0.0.1")]);
    }
}
