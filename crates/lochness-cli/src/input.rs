//! Arguments: from the command line or, when none are given and stdin is not a terminal,
//! from stdin one per line; ids, specs and pairs checked before anything is sent.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

use serde_json::{Map, Value};

use crate::CliError;

/// How a line of stdin becomes arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Split at the first space into at most two arguments (`<id> <spec>` pairs, ids).
    FirstSpace,
    /// The whole line is one argument (a JSON spec, which may hold spaces).
    Whole,
}

/// The arguments in `text`, one line at a time: each line trimmed, blank lines skipped,
/// then split as `lines` says (the second part of a split line trimmed too).
pub fn split_lines(text: impl BufRead, lines: Lines) -> std::io::Result<Vec<String>> {
    let mut args = Vec::new();
    for line in text.lines() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match (lines, line.split_once(' ')) {
            (Lines::FirstSpace, Some((first, rest))) => {
                args.push(first.to_string());
                let rest = rest.trim();
                if !rest.is_empty() {
                    args.push(rest.to_string());
                }
            }
            _ => args.push(line.to_string()),
        }
    }
    Ok(args)
}

/// Where a command's arguments came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command line (or stdin, which was not a terminal): these, possibly none.
    Given(Vec<String>),
    /// No arguments, and stdin is a terminal: nothing was read.
    Nothing,
}

/// `args` when there are any; otherwise stdin's lines when stdin is not a terminal;
/// otherwise [`Source::Nothing`].
pub fn args_or_stdin(args: Vec<String>, lines: Lines) -> Result<Source, CliError> {
    if !args.is_empty() {
        return Ok(Source::Given(args));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Source::Nothing);
    }
    split_lines(stdin.lock(), lines)
        .map(Source::Given)
        .map_err(|source| CliError::Io {
            what: "reading stdin".to_string(),
            source,
        })
}

/// As [`args_or_stdin`], for a command that needs arguments: no arguments on a terminal
/// is a usage error that says what to give.
pub fn required(args: Vec<String>, lines: Lines, what: &str) -> Result<Vec<String>, CliError> {
    match args_or_stdin(args, lines)? {
        Source::Given(args) => Ok(args),
        Source::Nothing => Err(CliError::Usage(format!(
            "give {what} as arguments or one per line on stdin"
        ))),
    }
}

/// A UUID in its canonical lower-case form: 36 characters `8-4-4-4-12` of hex digits,
/// optionally after `urn:uuid:` (any case), as the original CLIs accepted.
pub fn uuid(what: &str, arg: &str) -> Result<String, CliError> {
    let bad = || CliError::Usage(format!("invalid {what} {arg:?}: not a UUID"));
    let text = arg.trim();
    let text = match text.get(..9) {
        Some(prefix) if prefix.eq_ignore_ascii_case("urn:uuid:") => &text[9..],
        _ => text,
    };
    if text.len() != 36 {
        return Err(bad());
    }
    for (i, c) in text.chars().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok(text.to_ascii_lowercase())
}

/// Every argument a UUID ([`uuid`]).
pub fn uuids(what: &str, args: &[String]) -> Result<Vec<String>, CliError> {
    args.iter().map(|a| uuid(what, a)).collect()
}

/// A VLAN tag: 1–4095.
pub fn tag(arg: &str) -> Result<u16, CliError> {
    arg.trim()
        .parse::<u16>()
        .ok()
        .filter(|t| (1..=4095).contains(t))
        .ok_or_else(|| CliError::Usage(format!("invalid VLAN tag {arg:?}: a number 1-4095")))
}

/// A spec: a JSON object.
pub fn spec(arg: &str) -> Result<Map<String, Value>, CliError> {
    match serde_json::from_str::<Value>(arg) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CliError::Usage(format!(
            "invalid spec {arg:?}: not a JSON object"
        ))),
        Err(e) => Err(CliError::Usage(format!("invalid spec {arg:?}: {e}"))),
    }
}

/// A spec whose values are all strings (a hypervisor's config or subnet links).
pub fn string_map(arg: &str) -> Result<BTreeMap<String, String>, CliError> {
    spec(arg)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(CliError::Usage(format!(
                "invalid spec {arg:?}: the value of {k:?} is {other}, not a string"
            ))),
        })
        .collect()
}

/// `(first, second)` pairs of consecutive arguments; an odd count is a usage error.
pub fn pairs(args: Vec<String>, what: &str) -> Result<Vec<(String, String)>, CliError> {
    if !args.len().is_multiple_of(2) {
        return Err(CliError::Usage(format!(
            "expected pairs of {what}, got {} argument{}",
            args.len(),
            if args.len() == 1 { "" } else { "s" }
        )));
    }
    let mut out = Vec::with_capacity(args.len() / 2);
    let mut iter = args.into_iter();
    while let (Some(a), Some(b)) = (iter.next(), iter.next()) {
        out.push((a, b));
    }
    Ok(out)
}

/// `key=value` (the value may be empty; the key may not).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("expected KEY=VALUE, got {s:?} (empty key)"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A `--rule` of a firewall group: `key=value,…` with keys `source`, `group`, `ports`
/// (`22` or `1000-2000`), `protocol`, `action` (default `accept`).
pub fn fw_rule(s: &str) -> Result<Value, String> {
    let mut rule = Map::new();
    let mut ports = None;
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = key_value(part)?;
        match key.as_str() {
            "source" | "group" | "protocol" | "action" => {
                rule.insert(key, Value::String(value));
            }
            "ports" | "port" => {
                let (start, end) = value.split_once('-').unwrap_or((&value, &value));
                let number = |p: &str| {
                    p.trim().parse::<u16>().map_err(|_| {
                        format!("ports must be N or N-M with N, M in 0-65535, got {value:?}")
                    })
                };
                ports = Some((number(start)?, number(end)?));
            }
            other => {
                return Err(format!(
                    "unknown rule key {other:?} (expected source, group, ports, protocol, action)"
                ))
            }
        }
    }
    let (start, end) = ports.ok_or_else(|| format!("rule {s:?} has no ports=N or ports=N-M"))?;
    if !rule.contains_key("protocol") {
        return Err(format!("rule {s:?} has no protocol=…"));
    }
    rule.insert("portStart".into(), Value::from(start));
    rule.insert("portEnd".into(), Value::from(end));
    rule.entry("action")
        .or_insert_with(|| Value::String("accept".into()));
    Ok(Value::Object(rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, how: Lines) -> Vec<String> {
        split_lines(text.as_bytes(), how).unwrap()
    }

    #[test]
    fn stdin_lines_split_at_the_first_space() {
        let text = "  aaaa {\"ip\": \"10.0.0.1\", \"mac\": \"x\"}  \n\nbbbb\n   \ncccc   dddd\n";
        assert_eq!(
            lines(text, Lines::FirstSpace),
            vec![
                "aaaa",
                r#"{"ip": "10.0.0.1", "mac": "x"}"#,
                "bbbb",
                "cccc",
                "dddd"
            ]
        );
        assert_eq!(
            lines("{\"a\": 1}\n{\"b\": 2}\n", Lines::Whole),
            vec![r#"{"a": 1}"#, r#"{"b": 2}"#]
        );
        assert!(lines("", Lines::FirstSpace).is_empty());
    }

    #[test]
    fn uuids_are_checked_and_canonical() {
        let id = "AAAA0001-1111-4111-8111-000000000001";
        assert_eq!(uuid("guest id", id).unwrap(), id.to_ascii_lowercase());
        assert_eq!(
            uuid("guest id", &format!("URN:uuid:{id}")).unwrap(),
            id.to_ascii_lowercase()
        );
        for bad in [
            "",
            "abc",
            "aaaa0001111141118111000000000001",
            "aaaa0001-1111-4111-8111-00000000000g",
            "aaaa0001-1111-4111-8111_000000000001",
            "{aaaa0001-1111-4111-8111-000000000001}",
            "aaaa0001-1111-4111-8111-0000000000011",
        ] {
            let e = uuid("guest id", bad).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn odd_pairs_are_a_usage_error() {
        let args: Vec<String> = ["a", "{}", "b"].iter().map(|s| s.to_string()).collect();
        let e = pairs(args, "<id> <spec>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected pairs of <id> <spec>, got 3 arguments"
        );
        assert_eq!(e.exit_code(), 2);
        let args: Vec<String> = ["a", "{}"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            pairs(args, "x").unwrap(),
            vec![("a".to_string(), "{}".to_string())]
        );
    }

    #[test]
    fn specs_are_json_objects() {
        assert_eq!(spec(r#"{"ip":"1.2.3.4"}"#).unwrap()["ip"], "1.2.3.4");
        assert!(spec("[1]")
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
        assert!(spec("{bad").is_err());
        assert_eq!(
            string_map(r#"{"a":"1","b":""}"#).unwrap(),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), String::new())])
        );
        assert!(string_map(r#"{"a":1}"#)
            .unwrap_err()
            .to_string()
            .contains("not a string"));
    }

    #[test]
    fn tags_and_rules() {
        assert_eq!(tag("100").unwrap(), 100);
        for bad in ["0", "4096", "x", "-1"] {
            assert!(tag(bad).is_err(), "{bad}");
        }
        assert_eq!(
            fw_rule("source=10.0.0.0/8,ports=22,protocol=tcp").unwrap(),
            serde_json::json!({"source": "10.0.0.0/8", "portStart": 22, "portEnd": 22,
                               "protocol": "tcp", "action": "accept"})
        );
        assert_eq!(
            fw_rule("group=g,ports=1000-2000,protocol=udp,action=drop").unwrap()["portEnd"],
            2000
        );
        assert!(fw_rule("ports=22").unwrap_err().contains("protocol"));
        assert!(fw_rule("protocol=tcp").unwrap_err().contains("ports"));
        assert!(fw_rule("ports=x,protocol=tcp").is_err());
        assert!(fw_rule("speed=1,ports=1,protocol=tcp")
            .unwrap_err()
            .contains("speed"));
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=v").is_err());
    }
}
