//! Settings: parsing of sizes and durations given on the command line, and the endpoint choice.

use std::time::Duration;

/// The Hub used when neither `--endpoint` nor `HF_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Parses a byte size: `512MiB`, `1GiB`, `256M`, `1G`, `4096`, `64k` (K/M/G/T, with or without
/// `i`/`B`, all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit like 512MiB")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use K, M, G or T (powers of 1024)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: `60s`, `5m`, `500ms`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 60s, 5m, 500ms"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    })
}

/// The endpoint: the flag, else env `HF_ENDPOINT`, else the public Hub. A trailing `/` is removed.
pub fn choose_endpoint(flag: Option<&str>, env: Option<&str>) -> String {
    flag.or(env)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim()
        .trim_end_matches('/')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn endpoint_precedence() {
        assert_eq!(
            choose_endpoint(Some("http://a/"), Some("http://b")),
            "http://a"
        );
        assert_eq!(choose_endpoint(None, Some("http://b/")), "http://b");
        assert_eq!(choose_endpoint(None, None), DEFAULT_ENDPOINT);
        assert_eq!(choose_endpoint(None, Some("")), DEFAULT_ENDPOINT);
    }
}
