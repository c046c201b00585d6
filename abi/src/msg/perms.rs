//! GET_PERMS, SET_PERMS, and the permission set they (and SPAWN) carry.
//!
//! A [`Permissions`] value says what an agent may do. Each capability has a switch
//! (`can_read`, `can_exec`, ...) and, where it has a scope, lists that narrow it. The list
//! conventions are the same everywhere in the kernel and are implemented here, next to
//! [`Permissions::is_within`], so that checking a request and comparing two permission sets
//! can never disagree:
//!
//! * **Paths** (`filesystem.read`, `filesystem.write`, `filesystem.blocked`) are globs matched
//!   against an absolute, normalized path (the kernel resolves `..` and symlinks first), see
//!   [`glob_match`]: `*` matches any run of characters except `/`, `?` one character except
//!   `/`, `**` any run of characters including `/`. A pattern ending in `/**` also matches the
//!   directory itself (`/tmp/**` matches `/tmp`, `/tmp/a` and `/tmp/a/b`). `**` alone matches
//!   every path. Nothing else is special (no `[...]`, no escapes).
//! * **Commands** (`exec`) are prefixes, see [`command_matches`]: a command is allowed when it
//!   equals a prefix or continues it after a whitespace character (`git` allows `git status`,
//!   not `gitk`). `*` allows every command.
//! * **Blocked commands** (`blocked_commands`) are substrings, as in the original: a command
//!   containing one is refused, whatever `exec` says. This is a convenience deny list, not a
//!   security boundary (the sandbox is).
//! * **Domains** (`network`) match a URL's host, ASCII case-insensitively, see
//!   [`domain_matches`]: `example.com` matches only that host, `*.example.com` matches its
//!   subdomains at any depth (not `example.com` itself), `*` matches every host.
//! * **HTTP methods** (`http_methods`) match case-insensitively; `*` allows every method.
//! * An empty allow list allows nothing; `0` in a limit means "no limit".
//!
//! A capability whose switch is off grants nothing, whatever its lists say.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

/// What an agent may do: GET_PERMS `permissions`, SET_PERMS `permissions`, SPAWN
/// `permissions`.
///
/// Every field may be left out of a request; a missing field takes its value from the
/// `standard` level ([`Permissions::default`]), so `{}` means `standard` and
/// `{"can_exec": true, "exec": ["git"]}` means `standard` plus `git`. The list conventions
/// are in the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default)]
pub struct Permissions {
    /// May run commands (EXEC), within `exec` and `blocked_commands`. Standard: false.
    pub can_exec: bool,
    /// May read files (READ), within `filesystem.read` and `filesystem.blocked`. Standard: true.
    pub can_read: bool,
    /// May write files (WRITE), within `filesystem.write` and `filesystem.blocked`. Standard:
    /// true.
    pub can_write: bool,
    /// May call the LLM (THINK), within `llm`. Standard: true.
    pub can_think: bool,
    /// May start agents (SPAWN), each with at most what it holds itself. Standard: true (the
    /// original never checked it, and its supervisor example is an agent of the standard
    /// level that spawns workers); sandboxed, readonly and minimal: false.
    pub can_spawn: bool,
    /// May make HTTP requests (HTTP), within `network` and `http_methods`. Standard: false.
    pub can_http: bool,
    /// The paths READ and WRITE may touch. Standard: read and write `**`, nothing blocked.
    pub filesystem: FilesystemPerms,
    /// Allowed command prefixes (`*`: any command). Standard: none.
    pub exec: Vec<String>,
    /// Refused command substrings, checked after `exec`. Standard: none.
    pub blocked_commands: Vec<String>,
    /// Hosts HTTP may reach (`example.com`, `*.example.com`, `*`). Standard: none.
    pub network: Vec<String>,
    /// HTTP methods allowed (`GET`, ...; `*`: any). Standard: none.
    pub http_methods: Vec<String>,
    /// LLM quotas and usage. Standard: no quota.
    pub llm: LlmPerms,
    /// Longest a command may run, in ms (0: no cap beyond EXEC's own `timeout`). Standard: 0.
    pub max_exec_time_ms: u64,
}

/// `permissions.filesystem`: path globs (see the [module docs](self)).
///
/// A missing field takes the `standard` level's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default)]
pub struct FilesystemPerms {
    /// Globs READ may open. Standard: `["**"]`.
    pub read: Vec<String>,
    /// Globs WRITE may create or change. Standard: `["**"]`.
    pub write: Vec<String>,
    /// Globs neither READ nor WRITE may touch, whatever `read` and `write` say. Standard: none.
    pub blocked: Vec<String>,
}

impl Default for FilesystemPerms {
    /// The `standard` level's: read and write `**`, nothing blocked.
    fn default() -> Self {
        FilesystemPerms {
            read: vec![ALL_PATHS.to_owned()],
            write: vec![ALL_PATHS.to_owned()],
            blocked: Vec::new(),
        }
    }
}

/// `permissions.llm`: THINK quotas, what has been used of them, and the scheduling weight.
///
/// Every field defaults to 0, except `weight` (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default)]
pub struct LlmPerms {
    /// Most tokens the agent may use in all (0: unlimited).
    pub max_tokens: u64,
    /// Most THINK calls the agent may make in all (0: unlimited).
    pub max_calls: u64,
    /// Tokens used so far. Reported by GET_PERMS; the kernel keeps its own count and ignores
    /// this in SET_PERMS and SPAWN.
    pub tokens_used: u64,
    /// THINK calls made so far. Reported by GET_PERMS; ignored in SET_PERMS and SPAWN.
    pub calls_made: u64,
    /// Extension: the agent's share of the LLM when agents compete for it, relative to the
    /// others' (an agent of weight 2 is served twice the tokens of one of weight 1 while both
    /// wait); 1 to [`LlmPerms::MAX_WEIGHT`] (0 reads as 1).
    pub weight: u32,
}

impl LlmPerms {
    /// The largest scheduling weight.
    pub const MAX_WEIGHT: u32 = 1000;

    /// The scheduling weight in use: `weight` within 1..=[`LlmPerms::MAX_WEIGHT`].
    pub fn effective_weight(&self) -> u32 {
        self.weight.clamp(1, LlmPerms::MAX_WEIGHT)
    }
}

impl Default for LlmPerms {
    /// No quotas, nothing used, weight 1.
    fn default() -> Self {
        LlmPerms {
            max_tokens: 0,
            max_calls: 0,
            tokens_used: 0,
            calls_made: 0,
            weight: 1,
        }
    }
}

/// The glob matching every path.
const ALL_PATHS: &str = "**";
/// The pattern allowing every command, host or method.
const ANY: &str = "*";

impl Default for Permissions {
    /// The `standard` level: read, write (everywhere), think and spawn; no exec or HTTP.
    fn default() -> Self {
        Permissions {
            can_exec: false,
            can_read: true,
            can_write: true,
            can_think: true,
            can_spawn: true,
            can_http: false,
            filesystem: FilesystemPerms::default(),
            exec: Vec::new(),
            blocked_commands: Vec::new(),
            network: Vec::new(),
            http_methods: Vec::new(),
            llm: LlmPerms::default(),
            max_exec_time_ms: 0,
        }
    }
}

impl From<PermissionLevel> for Permissions {
    /// The level's permissions ([`PermissionLevel::permissions`]).
    fn from(level: PermissionLevel) -> Self {
        level.permissions()
    }
}

impl Permissions {
    /// Nothing at all: every switch off, every list empty, no limits. The base the levels are
    /// built from.
    pub fn none() -> Self {
        Permissions {
            can_exec: false,
            can_read: false,
            can_write: false,
            can_think: false,
            can_spawn: false,
            can_http: false,
            filesystem: FilesystemPerms {
                read: Vec::new(),
                write: Vec::new(),
                blocked: Vec::new(),
            },
            exec: Vec::new(),
            blocked_commands: Vec::new(),
            network: Vec::new(),
            http_methods: Vec::new(),
            llm: LlmPerms::default(),
            max_exec_time_ms: 0,
        }
    }

    /// True when `self` grants nothing `other` does not, so an agent holding `other` may take
    /// `self` (the kernel lets callers only lower their own permissions, and a spawner grant
    /// only what it holds).
    ///
    /// For each capability `self` has switched on, `other` must have it on too, and:
    /// * every allow-list entry of `self` must be covered by one of `other`'s (a pattern
    ///   covers another when everything the second matches, the first matches too; the check
    ///   is conservative: it may refuse a real subset written in an unusual way, it never
    ///   accepts a wider one);
    /// * every block-list entry of `other` must be covered by one of `self`'s;
    /// * each limit of `other` that is set (non-zero) must be set in `self` and not higher.
    ///
    /// A capability `self` has switched off is not compared (it grants nothing). The usage
    /// counters `llm.tokens_used` and `llm.calls_made` are not compared.
    pub fn is_within(&self, other: &Permissions) -> bool {
        let (fs, ofs) = (&self.filesystem, &other.filesystem);
        let blocked_paths_kept = || covers_all(&fs.blocked, &ofs.blocked, glob_covers);
        let read = !self.can_read
            || (other.can_read
                && covers_all(&ofs.read, &fs.read, glob_covers)
                && blocked_paths_kept());
        let write = !self.can_write
            || (other.can_write
                && covers_all(&ofs.write, &fs.write, glob_covers)
                && blocked_paths_kept());
        let exec = !self.can_exec
            || (other.can_exec
                && covers_all(&other.exec, &self.exec, command_covers)
                && covers_all(&self.blocked_commands, &other.blocked_commands, |s, o| {
                    o.contains(s)
                })
                && limit_within(self.max_exec_time_ms, other.max_exec_time_ms));
        let http = !self.can_http
            || (other.can_http
                && covers_all(&other.network, &self.network, domain_covers)
                && covers_all(&other.http_methods, &self.http_methods, method_matches));
        let think = !self.can_think
            || (other.can_think
                && limit_within(self.llm.max_tokens, other.llm.max_tokens)
                && limit_within(self.llm.max_calls, other.llm.max_calls)
                && self.llm.effective_weight() <= other.llm.effective_weight());
        let spawn = !self.can_spawn || other.can_spawn;
        read && write && exec && http && think && spawn
    }

    /// The capabilities in which `self` grants more than `other` (empty exactly when
    /// [`Permissions::is_within`] holds): `read`, `write`, `exec`, `http`, `think`, `spawn`, for
    /// error messages that say what was refused.
    pub fn beyond(&self, other: &Permissions) -> Vec<&'static str> {
        let none = Permissions::none;
        let fs = |read: bool| FilesystemPerms {
            read: if read {
                self.filesystem.read.clone()
            } else {
                Vec::new()
            },
            write: if read {
                Vec::new()
            } else {
                self.filesystem.write.clone()
            },
            blocked: self.filesystem.blocked.clone(),
        };
        let parts = [
            (
                "read",
                self.can_read,
                Permissions {
                    can_read: true,
                    filesystem: fs(true),
                    ..none()
                },
            ),
            (
                "write",
                self.can_write,
                Permissions {
                    can_write: true,
                    filesystem: fs(false),
                    ..none()
                },
            ),
            (
                "exec",
                self.can_exec,
                Permissions {
                    can_exec: true,
                    exec: self.exec.clone(),
                    blocked_commands: self.blocked_commands.clone(),
                    max_exec_time_ms: self.max_exec_time_ms,
                    ..none()
                },
            ),
            (
                "http",
                self.can_http,
                Permissions {
                    can_http: true,
                    network: self.network.clone(),
                    http_methods: self.http_methods.clone(),
                    ..none()
                },
            ),
            (
                "think",
                self.can_think,
                Permissions {
                    can_think: true,
                    llm: self.llm,
                    ..none()
                },
            ),
            (
                "spawn",
                self.can_spawn,
                Permissions {
                    can_spawn: true,
                    ..none()
                },
            ),
        ];
        parts
            .into_iter()
            .filter(|(_, on, part)| *on && !part.is_within(other))
            .map(|(name, _, _)| name)
            .collect()
    }

    /// May READ open `path` (absolute and normalized)?
    pub fn allows_read(&self, path: &str) -> bool {
        self.can_read && self.path_allowed(&self.filesystem.read, path)
    }

    /// May WRITE change `path` (absolute and normalized)?
    pub fn allows_write(&self, path: &str) -> bool {
        self.can_write && self.path_allowed(&self.filesystem.write, path)
    }

    fn path_allowed(&self, allow: &[String], path: &str) -> bool {
        allow.iter().any(|g| glob_match(g, path))
            && !self.filesystem.blocked.iter().any(|g| glob_match(g, path))
    }

    /// May EXEC run `command` (leading whitespace is ignored)?
    pub fn allows_command(&self, command: &str) -> bool {
        let command = command.trim_start();
        self.can_exec
            && self.exec.iter().any(|p| command_matches(p, command))
            && !self
                .blocked_commands
                .iter()
                .any(|b| command.contains(b.as_str()))
    }

    /// May HTTP send `method` to `host` (the URL's host, without port)?
    pub fn allows_http(&self, method: &str, host: &str) -> bool {
        self.can_http
            && self.network.iter().any(|d| domain_matches(d, host))
            && self.http_methods.iter().any(|m| method_matches(m, method))
    }

    /// The level these permissions are exactly (the usage counters ignored), if any; for the
    /// GET_PERMS `level` extension.
    pub fn level(&self) -> Option<PermissionLevel> {
        let mut bare = self.clone();
        bare.llm.tokens_used = 0;
        bare.llm.calls_made = 0;
        PermissionLevel::ALL
            .into_iter()
            .find(|l| l.permissions() == bare)
    }
}

/// True when every entry of `inner` is covered by some entry of `outer`.
fn covers_all(outer: &[String], inner: &[String], covers: impl Fn(&str, &str) -> bool) -> bool {
    inner
        .iter()
        .all(|i| outer.iter().any(|o| covers(o.as_str(), i.as_str())))
}

/// A limit (`0`: none) is within another when the other is unlimited or it is set and not
/// higher.
fn limit_within(limit: u64, other: u64) -> bool {
    other == 0 || (limit != 0 && limit <= other)
}

/// True when the path glob `pattern` matches `path` (conventions in the [module docs](self)).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    if let Some(dir) = pattern.strip_suffix("/**") {
        if !dir.is_empty() && glob_tokens_match(dir, path) {
            return true;
        }
    }
    glob_tokens_match(pattern, path)
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Char(char),
    /// `?`
    One,
    /// `*`
    Segment,
    /// `**`
    Any,
}

fn glob_tokens_match(pattern: &str, path: &str) -> bool {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Token::Any
            }
            '*' => Token::Segment,
            '?' => Token::One,
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = path.chars().collect();
    // matches[j]: tokens[i..] match text[j..], computed for i from the end down.
    let mut matches = vec![false; text.len() + 1];
    matches[text.len()] = true;
    for token in tokens.iter().rev() {
        let mut next = vec![false; text.len() + 1];
        for j in (0..=text.len()).rev() {
            let here = text.get(j).copied();
            next[j] = match token {
                Token::Char(c) => here == Some(*c) && matches[j + 1],
                Token::One => here.is_some_and(|h| h != '/') && matches[j + 1],
                // Empty, or one more non-`/` character then the same token again.
                Token::Segment => matches[j] || (here.is_some_and(|h| h != '/') && next[j + 1]),
                Token::Any => matches[j] || (here.is_some() && next[j + 1]),
            };
        }
        matches = next;
    }
    matches[0]
}

fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Conservative "every path `inner` matches, `outer` matches too".
fn glob_covers(outer: &str, inner: &str) -> bool {
    if outer == inner || outer == ALL_PATHS {
        return true;
    }
    if !has_wildcard(inner) {
        return glob_match(outer, inner);
    }
    // `dir/**` covers any pattern that starts with `dir/` literally.
    match outer.strip_suffix("**") {
        Some(dir) if dir.ends_with('/') && !has_wildcard(dir) => inner.starts_with(dir),
        _ => false,
    }
}

/// True when the command prefix `prefix` allows `command` (see the [module docs](self)).
pub fn command_matches(prefix: &str, command: &str) -> bool {
    if prefix == ANY {
        return true;
    }
    match command.strip_prefix(prefix) {
        Some(rest) => {
            rest.is_empty()
                || prefix.ends_with(char::is_whitespace)
                || rest.starts_with(char::is_whitespace)
        }
        None => false,
    }
}

/// "Every command `inner` allows, `outer` allows too."
fn command_covers(outer: &str, inner: &str) -> bool {
    outer == ANY || (inner != ANY && command_matches(outer, inner))
}

/// True when the domain pattern `pattern` matches `host` (see the [module docs](self)).
pub fn domain_matches(pattern: &str, host: &str) -> bool {
    if pattern == ANY {
        return true;
    }
    let host = host.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            host.len() > suffix.len() && host.ends_with(suffix)
        }
        _ => host == pattern,
    }
}

/// "Every host `inner` matches, `outer` matches too."
fn domain_covers(outer: &str, inner: &str) -> bool {
    if outer == ANY || outer.eq_ignore_ascii_case(inner) {
        return true;
    }
    match outer.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            inner.len() > suffix.len()
                && inner
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
        }
        _ => false,
    }
}

/// True when the method pattern `pattern` (`GET`, ..., `*`) allows `method`.
pub fn method_matches(pattern: &str, method: &str) -> bool {
    pattern == ANY || pattern.eq_ignore_ascii_case(method)
}

/// A named permission set (SET_PERMS and SPAWN `level`), lower-case on the wire.
///
/// The levels are not a chain: `sandboxed` (read and write under a few directories) and
/// `readonly` (read everywhere, write nowhere) each grant something the other does not.
/// Both are within `standard`, which is within `unrestricted`, and `minimal` is within all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum PermissionLevel {
    /// `"unrestricted"`: everything, with no limits (root operators hold it).
    Unrestricted,
    /// `"standard"` (the default): read and write everywhere, think, spawn (within itself); no
    /// exec or HTTP.
    #[default]
    Standard,
    /// `"sandboxed"`: read under `/tmp` and `/home`, write under `/tmp`, think.
    Sandboxed,
    /// `"readonly"`: read everywhere, think.
    Readonly,
    /// `"minimal"`: think only.
    Minimal,
}

impl PermissionLevel {
    /// Every level, most permissive first.
    pub const ALL: [PermissionLevel; 5] = [
        PermissionLevel::Unrestricted,
        PermissionLevel::Standard,
        PermissionLevel::Sandboxed,
        PermissionLevel::Readonly,
        PermissionLevel::Minimal,
    ];

    /// The wire spelling: `unrestricted`, `standard`, `sandboxed`, `readonly`, `minimal`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PermissionLevel::Unrestricted => "unrestricted",
            PermissionLevel::Standard => "standard",
            PermissionLevel::Sandboxed => "sandboxed",
            PermissionLevel::Readonly => "readonly",
            PermissionLevel::Minimal => "minimal",
        }
    }

    /// The level with this wire spelling (exact, lower-case); `None` for anything else.
    pub fn parse(text: &str) -> Option<PermissionLevel> {
        PermissionLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == text)
    }

    /// The level's permissions:
    /// * `unrestricted`: every switch on; read and write `**`; exec, network and
    ///   HTTP methods `*`; nothing blocked; no limits;
    /// * `standard`: [`Permissions::default`];
    /// * `sandboxed`: read `/tmp/**` and `/home/**`, write `/tmp/**`, think;
    /// * `readonly`: read `**`, think;
    /// * `minimal`: think.
    ///
    /// Lists of capabilities a level has switched off are empty; no level below
    /// `unrestricted` has LLM or exec-time limits (quotas are set explicitly).
    pub fn permissions(self) -> Permissions {
        let any = || vec![ANY.to_owned()];
        let globs = |list: &[&str]| list.iter().map(|g| (*g).to_owned()).collect();
        let think_only = Permissions {
            can_think: true,
            ..Permissions::none()
        };
        match self {
            PermissionLevel::Unrestricted => Permissions {
                can_exec: true,
                can_read: true,
                can_write: true,
                can_think: true,
                can_spawn: true,
                can_http: true,
                filesystem: FilesystemPerms {
                    read: globs(&[ALL_PATHS]),
                    write: globs(&[ALL_PATHS]),
                    blocked: Vec::new(),
                },
                exec: any(),
                blocked_commands: Vec::new(),
                network: any(),
                http_methods: any(),
                llm: LlmPerms::default(),
                max_exec_time_ms: 0,
            },
            PermissionLevel::Standard => Permissions::default(),
            PermissionLevel::Sandboxed => Permissions {
                can_read: true,
                can_write: true,
                filesystem: FilesystemPerms {
                    read: globs(&["/tmp/**", "/home/**"]),
                    write: globs(&["/tmp/**"]),
                    blocked: Vec::new(),
                },
                ..think_only
            },
            PermissionLevel::Readonly => Permissions {
                can_read: true,
                filesystem: FilesystemPerms {
                    read: globs(&[ALL_PATHS]),
                    write: Vec::new(),
                    blocked: Vec::new(),
                },
                ..think_only
            },
            PermissionLevel::Minimal => think_only,
        }
    }
}

/// GET_PERMS `{agent_id?}`: read an agent's permissions (the original SDK sends `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GetPermsRequest {
    /// Extension: the agent whose permissions to read; absent: the caller's own.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_id: Option<u32>,
}

/// GET_PERMS reply: `{success, permissions}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GetPermsReply {
    /// The request was carried out.
    pub success: bool,
    /// The agent's permissions, with its LLM usage so far.
    pub permissions: Permissions,
    /// Extension: whose permissions these are.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_id: Option<u32>,
    /// Extension: the level the permissions are exactly ([`Permissions::level`]); absent when
    /// they are no level's.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub level: Option<PermissionLevel>,
}

/// SET_PERMS `{agent_id?, level? | permissions?}`: replace an agent's permissions.
///
/// The kernel accepts the new set only when it is within what the caller may grant
/// ([`Permissions::is_within`]): an agent may only lower its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SetPermsRequest {
    /// The agent to change; absent: the caller.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_id: Option<u32>,
    /// A named level; `permissions` wins when both are given.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub level: Option<PermissionLevel>,
    /// An explicit permission set (missing fields take the `standard` level's values).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub permissions: Option<Permissions>,
}

impl SetPermsRequest {
    /// The permissions asked for: `permissions`, else `level`'s; `None` when neither is given
    /// (the kernel answers "SET_PERMS needs level or permissions").
    pub fn effective(&self) -> Option<Permissions> {
        match (&self.permissions, self.level) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(level)) => Some(level.permissions()),
            (None, None) => None,
        }
    }
}

/// SET_PERMS reply: `{success, agent_id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SetPermsReply {
    /// The permissions were replaced.
    pub success: bool,
    /// The agent whose permissions changed.
    pub agent_id: u32,
}

syscall! {
    GetPermsRequest => GetPerms, GetPermsReply;
    SetPermsRequest => SetPerms, SetPermsReply;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn levels_are_what_their_docs_say() {
        let u = PermissionLevel::Unrestricted.permissions();
        assert!(
            u.can_exec && u.can_read && u.can_write && u.can_think && u.can_spawn && u.can_http
        );
        assert!(u.allows_read("/etc/hosts") && u.allows_write("/var/x"));
        assert!(u.allows_command("rm -rf /tmp/x") && u.allows_http("DELETE", "example.com"));

        let s = PermissionLevel::Standard.permissions();
        assert_eq!(s, Permissions::default());
        assert!(s.allows_read("/etc/hosts") && s.allows_write("/home/a/x") && s.can_think);
        assert!(!s.can_exec && !s.can_http && s.can_spawn);
        assert!(!s.allows_command("ls") && !s.allows_http("GET", "example.com"));

        let sb = PermissionLevel::Sandboxed.permissions();
        assert!(sb.allows_read("/tmp/a") && sb.allows_read("/home/u/f") && sb.allows_read("/tmp"));
        assert!(!sb.allows_read("/etc/hosts") && !sb.allows_read("/homework"));
        assert!(sb.allows_write("/tmp/a/b") && !sb.allows_write("/home/u/f"));
        assert!(sb.can_think && !sb.can_exec && !sb.can_http && !sb.can_spawn);

        let r = PermissionLevel::Readonly.permissions();
        assert!(r.allows_read("/etc/hosts") && !r.allows_write("/tmp/a") && r.can_think);
        assert!(!r.can_exec && !r.can_http && !r.can_spawn);

        let m = PermissionLevel::Minimal.permissions();
        assert!(m.can_think && !m.can_read && !m.can_write && !m.can_exec && !m.can_http);
        assert!(!m.can_spawn && !m.allows_read("/tmp/a"));

        for level in PermissionLevel::ALL {
            assert_eq!(PermissionLevel::parse(level.as_str()), Some(level));
            assert_eq!(Permissions::from(level), level.permissions());
            assert_eq!(level.permissions().level(), Some(level), "{level:?}");
        }
        assert_eq!(PermissionLevel::parse("Standard"), None);
        assert_eq!(PermissionLevel::parse("root"), None);
        assert_eq!(PermissionLevel::default(), PermissionLevel::Standard);
    }

    #[test]
    fn beyond_names_what_is_not_within() {
        use PermissionLevel::*;
        let p = |l: PermissionLevel| l.permissions();
        assert!(p(Minimal).beyond(&p(Standard)).is_empty());
        assert_eq!(p(Standard).beyond(&p(Readonly)), ["write", "spawn"]);
        assert_eq!(p(Unrestricted).beyond(&p(Standard)), ["exec", "http"]);
        assert_eq!(p(Readonly).beyond(&p(Sandboxed)), ["read"]);
        let mut quota = p(Standard);
        quota.llm.max_tokens = 100;
        assert_eq!(p(Standard).beyond(&quota), ["think"]);
        for a in PermissionLevel::ALL {
            for b in PermissionLevel::ALL {
                assert_eq!(
                    p(a).beyond(&p(b)).is_empty(),
                    p(a).is_within(&p(b)),
                    "{a:?} / {b:?}"
                );
            }
        }
    }

    #[test]
    fn level_ignores_usage_counters_only() {
        let mut p = PermissionLevel::Readonly.permissions();
        p.llm.tokens_used = 5;
        p.llm.calls_made = 1;
        assert_eq!(p.level(), Some(PermissionLevel::Readonly));
        p.llm.max_calls = 3;
        assert_eq!(p.level(), None);
    }

    #[test]
    fn levels_nest_as_documented() {
        use PermissionLevel::*;
        let within =
            |a: PermissionLevel, b: PermissionLevel| a.permissions().is_within(&b.permissions());
        for a in PermissionLevel::ALL {
            assert!(within(a, a), "{a:?} within itself");
            assert!(within(a, Unrestricted), "{a:?} within unrestricted");
            assert!(within(Minimal, a), "minimal within {a:?}");
        }
        for (a, b) in [(Sandboxed, Standard), (Readonly, Standard)] {
            assert!(within(a, b), "{a:?} within {b:?}");
        }
        for (a, b) in [
            (Unrestricted, Standard),
            (Standard, Sandboxed),
            (Standard, Readonly),
            (Sandboxed, Readonly),
            (Readonly, Sandboxed),
            (Standard, Minimal),
        ] {
            assert!(!within(a, b), "{a:?} not within {b:?}");
        }
    }

    #[test]
    fn is_within_checks_every_switch() {
        let u = PermissionLevel::Unrestricted.permissions();
        let none = Permissions::none();
        assert!(none.is_within(&none) && none.is_within(&u));
        let flips: [fn(&mut Permissions); 6] = [
            |p| p.can_exec = true,
            |p| p.can_read = true,
            |p| p.can_write = true,
            |p| p.can_think = true,
            |p| p.can_spawn = true,
            |p| p.can_http = true,
        ];
        for flip in flips {
            // One switch on, with `unrestricted`'s lists: within `unrestricted`, not within
            // nothing.
            let mut p = Permissions {
                filesystem: u.filesystem.clone(),
                exec: u.exec.clone(),
                network: u.network.clone(),
                http_methods: u.http_methods.clone(),
                ..Permissions::none()
            };
            assert!(p.is_within(&none), "all switches off: {p:?}");
            flip(&mut p);
            assert!(p.is_within(&u), "{p:?}");
            assert!(!p.is_within(&none), "{p:?}");
        }
    }

    #[test]
    fn is_within_compares_paths_by_coverage() {
        let mut outer = Permissions::none();
        outer.can_read = true;
        outer.can_write = true;
        outer.filesystem.read = strings(&["/data/**", "/etc/hosts", "/srv/*.txt"]);
        outer.filesystem.write = strings(&["/tmp/**"]);
        outer.filesystem.blocked = strings(&["/data/secret/**"]);
        let mut inner = outer.clone();
        inner.filesystem.read = strings(&["/data/a/**", "/data/b.txt", "/etc/hosts", "/srv/*.txt"]);
        inner.filesystem.write = strings(&["/tmp/x/*", "/tmp"]);
        assert!(inner.is_within(&outer));
        // Wider: a path outside, a pattern escaping its directory, a different pattern.
        for read in [
            &["/data2/**"][..],
            &["/**"],
            &["/data*"],
            &["/srv/*"],
            &["**"],
        ] {
            let mut wider = inner.clone();
            wider.filesystem.read = strings(read);
            assert!(!wider.is_within(&outer), "{read:?}");
        }
        // Write is compared too, and a read switch off skips the read lists.
        let mut wider = inner.clone();
        wider.filesystem.write = strings(&["/var/**"]);
        assert!(!wider.is_within(&outer));
        let mut off = inner.clone();
        off.can_read = false;
        off.filesystem.read = strings(&["**"]);
        assert!(off.is_within(&outer));
        // Blocks must be kept, by the same or a wider pattern.
        let mut unblocked = inner.clone();
        unblocked.filesystem.blocked.clear();
        assert!(!unblocked.is_within(&outer));
        let mut wider_block = inner.clone();
        wider_block.filesystem.blocked = strings(&["/data/**"]);
        assert!(wider_block.is_within(&outer));
        let mut narrower_block = inner;
        narrower_block.filesystem.blocked = strings(&["/data/secret/key"]);
        assert!(!narrower_block.is_within(&outer));
    }

    #[test]
    fn is_within_compares_commands_hosts_methods_and_limits() {
        let mut outer = Permissions::none();
        outer.can_exec = true;
        outer.can_http = true;
        outer.can_think = true;
        outer.exec = strings(&["git", "ls "]);
        outer.blocked_commands = strings(&["push"]);
        outer.network = strings(&["*.example.com", "api.test"]);
        outer.http_methods = strings(&["GET", "POST"]);
        outer.llm.max_tokens = 1000;
        outer.max_exec_time_ms = 5000;
        let mut inner = outer.clone();
        inner.exec = strings(&["git status", "ls -l", "git"]);
        inner.blocked_commands = strings(&["push", "rm"]);
        inner.network = strings(&["a.b.EXAMPLE.com", "*.x.example.com", "API.test"]);
        inner.http_methods = strings(&["get"]);
        inner.llm.max_tokens = 10;
        inner.llm.max_calls = 3;
        inner.llm.tokens_used = 999_999;
        inner.max_exec_time_ms = 5000;
        assert!(inner.is_within(&outer));

        type Change = fn(&mut Permissions);
        let cases: [(&str, Change); 10] = [
            ("prefix without a word boundary", |p| {
                p.exec = strings(&["gitk"])
            }),
            ("any command", |p| p.exec = strings(&["*"])),
            ("dropped block", |p| p.blocked_commands.clear()),
            ("narrower block", |p| {
                p.blocked_commands = strings(&["git push"])
            }),
            ("bare domain of a wildcard", |p| {
                p.network = strings(&["example.com"])
            }),
            ("any host", |p| p.network = strings(&["*"])),
            ("method", |p| p.http_methods = strings(&["DELETE"])),
            ("unlimited tokens", |p| p.llm.max_tokens = 0),
            ("more tokens", |p| p.llm.max_tokens = 1001),
            ("longer exec", |p| p.max_exec_time_ms = 5001),
        ];
        for (what, change) in cases {
            let mut wider = inner.clone();
            change(&mut wider);
            assert!(!wider.is_within(&outer), "{what}");
        }
        // `git push` is refused by the narrower `push` block, so it is a wider block list.
        let mut wider_block = inner.clone();
        wider_block.blocked_commands = strings(&["pus"]);
        assert!(wider_block.is_within(&outer));
        // Unlimited other: any limit is within.
        let mut unlimited = outer.clone();
        unlimited.llm.max_tokens = 0;
        unlimited.max_exec_time_ms = 0;
        let mut big = inner;
        big.llm.max_tokens = u64::MAX;
        big.max_exec_time_ms = 0;
        assert!(big.is_within(&unlimited));
    }

    #[test]
    fn globs_follow_the_documented_conventions() {
        let m = glob_match;
        assert!(m("**", "/") && m("**", "/a/b/c") && m("**", ""));
        assert!(m("/tmp/**", "/tmp") && m("/tmp/**", "/tmp/") && m("/tmp/**", "/tmp/a/b"));
        assert!(!m("/tmp/**", "/tmpx") && !m("/tmp/**", "/tm"));
        assert!(m("/a/*.txt", "/a/b.txt") && !m("/a/*.txt", "/a/b/c.txt"));
        assert!(m("/a/*", "/a/") && m("/a/*", "/a/x") && !m("/a/*", "/a"));
        assert!(m("/a/?", "/a/x") && !m("/a/?", "/a/") && !m("/a/?", "/a/xy"));
        assert!(m("/a/**/z", "/a/b/c/z") && m("/a/**.py", "/a/b/c.py") && !m("/a/**/z", "/a/z"));
        assert!(m("/x/é?", "/x/éé") && m("/exact", "/exact") && !m("/exact", "/exact/"));
        assert!(m("/**", "/anything/at/all") && m("/a/***", "/a/b/c"));
    }

    #[test]
    fn commands_hosts_and_methods_follow_the_documented_conventions() {
        assert!(command_matches("git", "git") && command_matches("git", "git status"));
        assert!(command_matches("git", "git\tlog") && !command_matches("git", "gitk"));
        assert!(command_matches("ls ", "ls -l") && !command_matches("ls ", "ls"));
        assert!(command_matches("*", "anything") && !command_matches("git", "sudo git"));
        assert!(domain_matches("*.example.com", "a.example.com"));
        assert!(domain_matches("*.example.com", "a.b.EXAMPLE.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(!domain_matches("*.example.com", "badexample.com"));
        assert!(domain_matches("Example.com", "example.COM") && domain_matches("*", "x"));
        assert!(!domain_matches("example.com", "a.example.com"));
        assert!(method_matches("GET", "get") && method_matches("*", "PATCH"));
        assert!(!method_matches("GET", "POST"));

        let mut p = Permissions::none();
        p.can_exec = true;
        p.exec = strings(&["git"]);
        p.blocked_commands = strings(&["push"]);
        assert!(p.allows_command("  git status") && !p.allows_command("git push origin"));
        p.can_http = true;
        p.network = strings(&["api.test"]);
        p.http_methods = strings(&["GET"]);
        assert!(p.allows_http("get", "API.test") && !p.allows_http("POST", "api.test"));
        assert!(!p.allows_http("GET", "other.test"));
        p.can_http = false;
        assert!(!p.allows_http("GET", "api.test"));
        let mut b = PermissionLevel::Standard.permissions();
        b.filesystem.blocked = strings(&["/etc/shadow", "/root/**"]);
        assert!(b.allows_read("/etc/hosts") && !b.allows_read("/etc/shadow"));
        assert!(!b.allows_write("/root") && !b.allows_write("/root/.ssh/id"));
    }

    proptest::proptest! {
        // The cover checks behind `is_within` are sound: whatever the inner pattern allows,
        // the outer one allows too.
        #[test]
        fn glob_covers_is_sound(
            outer in "(/[ab]{0,2}){0,2}/(\\*\\*|[ab*?]{0,3})|\\*\\*|[ab/*?]{0,5}",
            tail in "[ab/*?]{0,4}",
            path in "[ab/]{0,7}",
        ) {
            let prefix = outer.trim_end_matches('*');
            for inner in [format!("{prefix}{tail}"), tail.clone(), outer.clone()] {
                // Paths near the inner pattern, where a wrong answer would hide.
                let near = inner.replace('?', "a");
                let dir = near.strip_suffix("/**").unwrap_or(&near).to_owned();
                for path in [&path, &near.replace('*', ""), &near.replace('*', "b/a"), &dir] {
                    if glob_covers(&outer, &inner) && glob_match(&inner, path) {
                        proptest::prop_assert!(glob_match(&outer, path), "{outer} {inner} {path}");
                    }
                }
            }
        }

        #[test]
        fn command_covers_is_sound(
            outer in "\\*|[ab ]{0,4}",
            tail in "[ab ]{0,3}",
            command in "[ab ]{0,7}",
        ) {
            for inner in [format!("{outer}{tail}"), tail.clone()] {
                for command in [&command, &inner, &format!("{inner} a"), &format!("{inner}a")] {
                    if command_covers(&outer, &inner) && command_matches(&inner, command) {
                        proptest::prop_assert!(command_matches(&outer, command), "{outer:?} {inner:?} {command:?}");
                    }
                }
            }
        }

        #[test]
        fn domain_covers_is_sound(
            outer in "\\*|(\\*\\.)?[aB.]{0,4}",
            head in "(\\*\\.)?[Ab.]{0,3}",
            host in "[aAbB.]{0,7}",
        ) {
            let suffix = outer.trim_start_matches('*');
            for inner in [format!("{head}{suffix}"), head.clone()] {
                let near = inner.trim_start_matches('*');
                for host in [&host, &inner, &near.to_owned(), &format!("a{near}"), &format!("b.{near}")] {
                    if domain_covers(&outer, &inner) && domain_matches(&inner, host) {
                        proptest::prop_assert!(domain_matches(&outer, host), "{outer} {inner} {host}");
                    }
                }
            }
        }
    }

    #[test]
    fn set_perms_picks_permissions_over_level() {
        let mut r = SetPermsRequest::default();
        assert_eq!(r.effective(), None);
        r.level = Some(PermissionLevel::Minimal);
        assert_eq!(r.effective(), Some(PermissionLevel::Minimal.permissions()));
        r.permissions = Some(PermissionLevel::Readonly.permissions());
        assert_eq!(r.effective(), Some(PermissionLevel::Readonly.permissions()));
    }
}
