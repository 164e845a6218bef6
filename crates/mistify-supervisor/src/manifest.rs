//! Service manifests: govisor's JSON format (one service per file in `<dir>/services`)
//! plus our keys, validated when loaded, with `${VAR}` / `${VAR:-default}` expansion.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What is wrong with one manifest: the file, the key (when one is at fault) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: key {k:?}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// `type`: how an exit is judged and when the service counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// A daemon; exit while not being stopped is a failure (exit 0 only with `failOnExit`,
    /// as in govisor).
    #[default]
    Longrun,
    /// A setup step: ready once it exits 0.
    Oneshot,
}

/// `ready`: when dependents may start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Readiness {
    /// As soon as the process was started (govisor's behaviour).
    #[default]
    Exec,
    /// When the process sends `READY=1` to `$NOTIFY_SOCKET`.
    Notify,
    /// When 127.0.0.1:PORT accepts TCP connections.
    Tcp(u16),
    /// When a GET of the URL answers 2xx.
    Http(String),
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Exec => f.write_str("exec"),
            Readiness::Notify => f.write_str("notify"),
            Readiness::Tcp(p) => write!(f, "tcp:{p}"),
            Readiness::Http(u) => write!(f, "http:{u}"),
        }
    }
}

/// Everything a manifest says, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub directory: Option<PathBuf>,
    pub stop_command: Vec<String>,
    pub stop_time: Duration,
    pub fail_on_exit: bool,
    pub check: Vec<String>,
    pub restart: bool,
    pub provides: Vec<String>,
    pub depends: Vec<String>,
    /// `onDependencyLoss: "keep"`: `depends` only orders the start; a dependency that
    /// fails or stops later leaves this service running (default `"stop"`).
    pub keep_on_dependency_loss: bool,
    pub conflicts: Vec<String>,
    pub service_type: ServiceType,
    pub ready: Readiness,
    pub ready_timeout: Duration,
    pub restart_backoff: Duration,
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    pub check_interval: Duration,
    pub check_failures: u32,
    pub log_file: Option<PathBuf>,
}

pub const DEFAULT_STOP_TIME: Duration = Duration::from_secs(10);
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(100);
pub const DEFAULT_START_LIMIT_BURST: u32 = 5;
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_CHECK_FAILURES: u32 = 3;

/// The keys we accept, in their canonical spelling (matched case-insensitively).
const KEYS: &[&str] = &[
    "name",
    "description",
    "command",
    "env",
    "directory",
    "stopCommand",
    "stopTime",
    "failOnExit",
    "check",
    "restart",
    "provides",
    "depends",
    "onDependencyLoss",
    "conflicts",
    "type",
    "ready",
    "readyTimeout",
    "restartBackoff",
    "startLimitBurst",
    "startLimitInterval",
    "checkInterval",
    "checkFailures",
    "logFile",
];

/// Whether `name` is a valid service name or pattern: `base` or `base:variant`, ASCII
/// letters, digits and `_`.
pub fn valid_name(name: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match name.split_once(':') {
        Some((b, v)) => ok(b) && ok(v),
        None => ok(name),
    }
}

/// govisor's pattern match: equal bases, and either no variant in the pattern or equal
/// variants.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (pb, pv) = split(pattern);
    let (nb, nv) = split(name);
    pb == nb && (pv.is_none() || pv == nv)
}

fn split(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((b, v)) => (b, Some(v)),
        None => (s, None),
    }
}

/// Expands `${VAR}` and `${VAR:-default}` from `lookup`. An unset variable without a
/// default is an error naming it.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {s:?}"))?;
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad variable name {var:?} in {s:?}"));
        }
        match (lookup(var).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("variable {var} is not set (and has no default)")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a duration: an integer number of nanoseconds (govisor) or text such as `"10s"`,
/// `"500ms"`, `"1m30s"`, `"2.5s"`.
pub fn parse_duration_text(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_nanos(n));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: a unit (ns, us, ms, s, m, h) is missing"))?;
        if num_end == 0 {
            return Err(format!("{s:?} is not a duration"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        let unit_rest = &rest[num_end..];
        let unit_end = unit_rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(unit_rest.len());
        let factor = match &unit_rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("{s:?}: unknown unit {u:?}")),
        };
        total += n * factor;
        rest = &unit_rest[unit_end..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    fn string(&self, key: &str, v: &Value) -> Result<String, ManifestError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(key, "must be a string"))
    }

    fn strings(&self, key: &str, v: &Value) -> Result<Vec<String>, ManifestError> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(key, "must be an array of strings"))
                })
                .collect(),
            _ => Err(self.err(key, "must be an array of strings")),
        }
    }

    fn boolean(&self, key: &str, v: &Value) -> Result<bool, ManifestError> {
        v.as_bool()
            .ok_or_else(|| self.err(key, "must be true or false"))
    }

    fn duration(&self, key: &str, v: &Value) -> Result<Duration, ManifestError> {
        match v {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Ok(Duration::from_nanos(u))
                } else {
                    Err(self.err(
                        key,
                        format!("{n} is negative or not an integer (nanoseconds)"),
                    ))
                }
            }
            Value::String(s) => {
                if s.trim_start().starts_with('-') {
                    return Err(self.err(key, format!("{s:?} is negative")));
                }
                parse_duration_text(s).map_err(|e| self.err(key, e))
            }
            _ => Err(self.err(key, "must be nanoseconds or a duration such as \"10s\"")),
        }
    }

    fn count(&self, key: &str, v: &Value) -> Result<u32, ManifestError> {
        match v.as_i64() {
            Some(n) if n < 0 => Err(self.err(key, format!("{n} is negative"))),
            Some(n) => u32::try_from(n).map_err(|_| self.err(key, format!("{n} is too large"))),
            None => Err(self.err(key, "must be a non-negative integer")),
        }
    }

    fn names(&self, key: &str, v: &Value) -> Result<Vec<String>, ManifestError> {
        let list = self.strings(key, v)?;
        for n in &list {
            if !valid_name(n) {
                return Err(self.err(
                    key,
                    format!("{n:?} is not a valid name (base or base:variant)"),
                ));
            }
        }
        Ok(list)
    }
}

fn expand_value(
    v: &mut Value,
    key: &str,
    ctx: &Ctx<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ManifestError> {
    match v {
        Value::String(s) => {
            *s = expand(s, lookup).map_err(|e| ctx.err(key, e))?;
        }
        Value::Array(items) => {
            for i in items {
                expand_value(i, key, ctx, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses one manifest. `lookup` resolves `${VAR}`.
pub fn parse(
    file: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let ctx = Ctx { file };
    // Only the first JSON value is read, as govisor's decoder does.
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = match stream.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return Err(ManifestError {
                file: file.to_path_buf(),
                key: None,
                message: format!("not valid JSON: {e}"),
            })
        }
        None => {
            return Err(ManifestError {
                file: file.to_path_buf(),
                key: None,
                message: "empty file".into(),
            })
        }
    };
    let Value::Object(obj) = value else {
        return Err(ManifestError {
            file: file.to_path_buf(),
            key: None,
            message: "must hold a JSON object".into(),
        });
    };
    let mut fields: HashMap<&'static str, Value> = HashMap::new();
    for (k, mut v) in obj {
        let Some(canon) = KEYS.iter().find(|c| c.eq_ignore_ascii_case(&k)) else {
            return Err(ctx.err(&k, "unknown key"));
        };
        if fields.contains_key(canon) {
            return Err(ctx.err(canon, "given twice"));
        }
        expand_value(&mut v, canon, &ctx, lookup)?;
        fields.insert(canon, v);
    }
    let get = |k: &str| fields.get(k).filter(|v| !v.is_null());

    let name = match get("name") {
        Some(v) => ctx.string("name", v)?,
        None => return Err(ctx.err("name", "is required")),
    };
    if !valid_name(&name) {
        return Err(ctx.err(
            "name",
            format!("{name:?} is not a valid name (ASCII letters, digits, _, one optional ':')"),
        ));
    }
    let command = match get("command") {
        Some(v) => ctx.strings("command", v)?,
        None => return Err(ctx.err("command", "is required")),
    };
    if command.first().is_none_or(|c| c.is_empty()) {
        return Err(ctx.err("command", "must name a program"));
    }
    let mut env = Vec::new();
    if let Some(v) = get("env") {
        for item in ctx.strings("env", v)? {
            match item.split_once('=') {
                Some((k, val)) if !k.is_empty() => env.push((k.to_string(), val.to_string())),
                _ => return Err(ctx.err("env", format!("{item:?} is not KEY=VALUE"))),
            }
        }
    }
    let directory = match get("directory") {
        Some(v) => {
            let d = ctx.string("directory", v)?;
            if d.is_empty() {
                None
            } else {
                Some(PathBuf::from(d))
            }
        }
        None => None,
    };
    let stop_command = match get("stopCommand") {
        Some(v) => ctx.strings("stopCommand", v)?,
        None => Vec::new(),
    };
    let stop_time = match get("stopTime") {
        Some(v) => ctx.duration("stopTime", v)?,
        None => Duration::ZERO,
    };
    // 0 meant "wait forever" in govisor; we never wait without a limit.
    let stop_time = if stop_time.is_zero() {
        DEFAULT_STOP_TIME
    } else {
        stop_time
    };
    let fail_on_exit = match get("failOnExit") {
        Some(v) => ctx.boolean("failOnExit", v)?,
        None => false,
    };
    let check = match get("check") {
        Some(v) => ctx.strings("check", v)?,
        None => Vec::new(),
    };
    let restart = match get("restart") {
        Some(v) => ctx.boolean("restart", v)?,
        None => false,
    };
    let provides = match get("provides") {
        Some(v) => ctx.names("provides", v)?,
        None => Vec::new(),
    };
    let depends = match get("depends") {
        Some(v) => ctx.names("depends", v)?,
        None => Vec::new(),
    };
    let keep_on_dependency_loss = match get("onDependencyLoss") {
        Some(v) => match ctx.string("onDependencyLoss", v)?.as_str() {
            "stop" => false,
            "keep" => true,
            other => {
                return Err(ctx.err("onDependencyLoss", format!("{other:?} is not stop or keep")))
            }
        },
        None => false,
    };
    let conflicts = match get("conflicts") {
        Some(v) => ctx.names("conflicts", v)?,
        None => Vec::new(),
    };
    let service_type = match get("type") {
        Some(v) => match ctx.string("type", v)?.as_str() {
            "longrun" => ServiceType::Longrun,
            "oneshot" => ServiceType::Oneshot,
            other => return Err(ctx.err("type", format!("{other:?} is not longrun or oneshot"))),
        },
        None => ServiceType::Longrun,
    };
    let ready = match get("ready") {
        Some(v) => parse_ready(&ctx.string("ready", v)?).map_err(|e| ctx.err("ready", e))?,
        None => Readiness::Exec,
    };
    let dur = |k: &str, d: Duration| -> Result<Duration, ManifestError> {
        match get(k) {
            Some(v) => ctx.duration(k, v),
            None => Ok(d),
        }
    };
    let ready_timeout = dur("readyTimeout", DEFAULT_READY_TIMEOUT)?;
    let restart_backoff = dur("restartBackoff", DEFAULT_RESTART_BACKOFF)?;
    let start_limit_interval = dur("startLimitInterval", DEFAULT_START_LIMIT_INTERVAL)?;
    let check_interval = dur("checkInterval", DEFAULT_CHECK_INTERVAL)?;
    if ready_timeout.is_zero() {
        return Err(ctx.err("readyTimeout", "must be more than 0"));
    }
    if check_interval < Duration::from_millis(10) {
        return Err(ctx.err("checkInterval", "must be at least 10ms"));
    }
    let start_limit_burst = match get("startLimitBurst") {
        Some(v) => ctx.count("startLimitBurst", v)?,
        None => DEFAULT_START_LIMIT_BURST,
    };
    let check_failures = match get("checkFailures") {
        Some(v) => ctx.count("checkFailures", v)?,
        None => DEFAULT_CHECK_FAILURES,
    };
    if check_failures == 0 {
        return Err(ctx.err("checkFailures", "must be at least 1"));
    }
    let log_file = match get("logFile") {
        Some(v) => Some(PathBuf::from(ctx.string("logFile", v)?)),
        None => None,
    };
    Ok(Manifest {
        file: file.to_path_buf(),
        name,
        description: match get("description") {
            Some(v) => ctx.string("description", v)?,
            None => String::new(),
        },
        command,
        env,
        directory,
        stop_command,
        stop_time,
        fail_on_exit,
        check,
        restart,
        provides,
        depends,
        keep_on_dependency_loss,
        conflicts,
        service_type,
        ready,
        ready_timeout,
        restart_backoff,
        start_limit_burst,
        start_limit_interval,
        check_interval,
        check_failures,
        log_file,
    })
}

fn parse_ready(s: &str) -> Result<Readiness, String> {
    if s == "exec" {
        return Ok(Readiness::Exec);
    }
    if s == "notify" {
        return Ok(Readiness::Notify);
    }
    if let Some(p) = s.strip_prefix("tcp:") {
        return match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Readiness::Tcp(port)),
            _ => Err(format!("{p:?} is not a TCP port")),
        };
    }
    if let Some(u) = s.strip_prefix("http:") {
        // `http:http://host:port/path`, or the short `http://host:port/path`.
        let url = if u.starts_with("//") {
            format!("http:{u}")
        } else {
            u.to_string()
        };
        return match url::Url::parse(&url) {
            Ok(parsed) if parsed.scheme() == "http" && parsed.host().is_some() => {
                Ok(Readiness::Http(url))
            }
            _ => Err(format!("{url:?} is not an http:// URL")),
        };
    }
    Err(format!(
        "{s:?} is not one of exec, notify, tcp:PORT, http:URL"
    ))
}

/// The result of loading a directory: the valid manifests (sorted by file name) and the
/// errors of the files that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub manifests: Vec<Manifest>,
    pub errors: Vec<ManifestError>,
}

/// Loads `<dir>/services/*` with the daemon's environment for `${VAR}`.
pub fn load_dir(dir: &Path) -> Loaded {
    load_dir_with(dir, &|k| std::env::var(k).ok())
}

/// Loads `<dir>/services/*`: files in name order (dot files and `*~` skipped), each
/// validated; duplicate names and dependency cycles are refused.
pub fn load_dir_with(dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Loaded {
    let services = dir.join("services");
    let mut loaded = Loaded::default();
    let entries = match std::fs::read_dir(&services) {
        Ok(e) => e,
        Err(e) => {
            loaded.errors.push(ManifestError {
                file: services,
                key: None,
                message: format!("cannot read the directory: {e}"),
            });
            return loaded;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !n.starts_with('.') && !n.ends_with('~') && p.is_file()
        })
        .collect();
    files.sort();
    let mut by_name: BTreeMap<String, Manifest> = BTreeMap::new();
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                loaded.errors.push(ManifestError {
                    file: f,
                    key: None,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse(&f, &text, lookup) {
            Ok(m) => {
                if let Some(prev) = by_name.get(&m.name) {
                    loaded.errors.push(ManifestError {
                        file: f.clone(),
                        key: Some("name".into()),
                        message: format!(
                            "service {:?} is already defined by {}",
                            m.name,
                            prev.file.display()
                        ),
                    });
                } else {
                    by_name.insert(m.name.clone(), m);
                }
            }
            Err(e) => loaded.errors.push(e),
        }
    }
    let mut all: Vec<Manifest> = by_name.into_values().collect();
    let cyclic = find_cycles(&all);
    all.retain(|m| {
        if cyclic.contains(&m.name) {
            loaded.errors.push(ManifestError {
                file: m.file.clone(),
                key: Some("depends".into()),
                message: format!("{} is part of a dependency cycle", m.name),
            });
            false
        } else {
            true
        }
    });
    all.sort_by(|a, b| a.file.cmp(&b.file));
    loaded.manifests = all;
    loaded
}

/// Whether a service (its name and provides) satisfies `pattern`.
pub fn satisfies(name: &str, provides: &[String], pattern: &str) -> bool {
    pattern_matches(pattern, name) || provides.iter().any(|p| pattern_matches(pattern, p))
}

/// Names of the services that lie on a dependency cycle.
pub fn find_cycles(all: &[Manifest]) -> Vec<String> {
    let n = all.len();
    let edges: Vec<Vec<usize>> = all
        .iter()
        .map(|m| {
            (0..n)
                .filter(|&j| {
                    all[j].name != m.name
                        && m.depends
                            .iter()
                            .any(|d| satisfies(&all[j].name, &all[j].provides, d))
                })
                .collect()
        })
        .collect();
    // A node is on a cycle when it can reach itself.
    let mut out = Vec::new();
    for start in 0..n {
        let mut seen = vec![false; n];
        let mut stack: Vec<usize> = edges[start].clone();
        let mut found = false;
        while let Some(x) = stack.pop() {
            if x == start {
                found = true;
                break;
            }
            if !seen[x] {
                seen[x] = true;
                stack.extend(edges[x].iter().copied());
            }
        }
        if found {
            out.push(all[start].name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PORT" => Some("4000".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn p(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("/x/services/a.json"), text, &env)
    }

    #[test]
    fn matching_follows_govisor() {
        assert!(pattern_matches("smtp", "smtp:postfix"));
        assert!(pattern_matches("smtp", "smtp"));
        assert!(pattern_matches("smtp:postfix", "smtp:postfix"));
        assert!(!pattern_matches("smtp:postfix", "smtp:exim"));
        assert!(!pattern_matches("smtp:postfix", "smtp"));
        assert!(!pattern_matches("postfix", "smtp:postfix"));
        assert!(satisfies("smtp:postfix", &["mta".into()], "mta"));
    }

    #[test]
    fn expansion() {
        assert_eq!(expand("a${PORT}b", &env), Ok("a4000b".into()));
        assert_eq!(expand("${NOPE:-7}", &env), Ok("7".into()));
        assert_eq!(expand("${EMPTY:-d}", &env), Ok("d".into()));
        assert_eq!(expand("${PORT:-1}", &env), Ok("4000".into()));
        assert!(expand("${NOPE}", &env).is_err());
        assert!(expand("${PORT", &env).is_err());
        assert_eq!(expand("no vars $HOME", &env), Ok("no vars $HOME".into()));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_text("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration_text("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration_text("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration_text("5000000000"),
            Ok(Duration::from_secs(5))
        );
        assert!(parse_duration_text("10").is_ok());
        assert!(parse_duration_text("ten").is_err());
        assert!(parse_duration_text("10x").is_err());
    }

    #[test]
    fn govisor_manifest_case_insensitive() {
        let m = p(
            r#"{"Name":"a:b","COMMAND":["sleep","1"],"stopTime":5000000000,"failOnExit":true,"env":["A=1"]}"#,
        );
        let m = m.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.name, "a:b");
        assert_eq!(m.stop_time, Duration::from_secs(5));
        assert!(m.fail_on_exit);
        assert_eq!(m.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(m.ready, Readiness::Exec);
    }

    #[test]
    fn our_keys_and_expansion() {
        let m = p(r#"{"name":"a","command":["srv","--port","${PORT}"],"type":"oneshot","ready":"tcp:${PORT}","stopTime":"2s","startLimitBurst":3}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.command[2], "4000");
        assert_eq!(m.ready, Readiness::Tcp(4000));
        assert_eq!(m.service_type, ServiceType::Oneshot);
        assert_eq!(m.stop_time, Duration::from_secs(2));
        assert_eq!(m.start_limit_burst, 3);
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            (r#"{"name":"a","command":["x"],"bogus":1}"#, "bogus"),
            (r#"{"name":"a"}"#, "command"),
            (r#"{"name":"a","command":[]}"#, "command"),
            (r#"{"name":"a b","command":["x"]}"#, "name"),
            (
                r#"{"name":"a","command":["x"],"startLimitBurst":-1}"#,
                "startLimitBurst",
            ),
            (r#"{"name":"a","command":["x"],"stopTime":-5}"#, "stopTime"),
            (
                r#"{"name":"a","command":["x"],"stopTime":"-5s"}"#,
                "stopTime",
            ),
            (r#"{"name":"a","command":["x"],"ready":"udp:3"}"#, "ready"),
            (
                r#"{"name":"a","command":["x"],"onDependencyLoss":"restart"}"#,
                "onDependencyLoss",
            ),
            (r#"{"name":"a","command":["x"],"type":"forking"}"#, "type"),
            (r#"{"name":"a","command":["${UNSET_VAR}"]}"#, "command"),
            (r#"{"name":"a","command":["x"],"env":["NOEQ"]}"#, "env"),
        ];
        for (text, key) in cases {
            let e = p(text).err().unwrap_or_else(|| panic!("{text} accepted"));
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains("/x/services/a.json"), "{e}");
        }
        let e = p("[1]").err();
        assert!(e.is_some());
    }

    #[test]
    fn cycles_detected() {
        let mk = |n: &str, d: &[&str]| {
            let mut m = p(r#"{"name":"x","command":["x"]}"#).unwrap_or_else(|e| panic!("{e}"));
            m.name = n.into();
            m.depends = d.iter().map(|s| s.to_string()).collect();
            m
        };
        let all = vec![
            mk("a", &["b"]),
            mk("b", &["c"]),
            mk("c", &["a"]),
            mk("d", &["a"]),
        ];
        let mut c = find_cycles(&all);
        c.sort();
        assert_eq!(c, vec!["a", "b", "c"]);
    }
}
