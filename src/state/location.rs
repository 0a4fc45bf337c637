//! Where a state lives: a local file (the default) or an S3 object shared by a team (`s3://BUCKET/KEY`).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl Location {
    /// `s3://BUCKET/KEY`, or else a local path. An `s3://` text that is not a usable bucket and key is an error, so a
    /// typo never turns into a local file named `s3:`.
    pub fn parse(text: &str) -> Result<Location, String> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.is_empty() {
                return Err("the state location is empty".into());
            }
            if text.contains("://") {
                return Err(format!("`{text}`: only local paths and s3://BUCKET/KEY are supported"));
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(|why| format!("`{text}`: {why}"))?;
        if key.is_empty() || key.ends_with('/') {
            return Err(format!("`{text}` names no object: add the key, e.g. s3://{bucket}/secep/STACK.state.json"));
        }
        if key.len() > 1000 {
            return Err(format!("`{text}`: the key is longer than S3's 1024 bytes once `.lock` is added"));
        }
        Ok(Location::S3 { bucket: bucket.into(), key: key.into() })
    }

    pub fn local(path: &Path) -> Location {
        Location::Local(path.to_path_buf())
    }

    /// A sibling of the state: `KEY.lock`, `KEY.bak`.
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Local(path) => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(suffix);
                Location::Local(path.with_file_name(name))
            }
            Location::S3 { bucket, key } => Location::S3 { bucket: bucket.clone(), key: format!("{key}{suffix}") },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// S3's rules for general purpose bucket names (3-63 characters of a-z, 0-9, '.', '-', starting and ending with a
/// letter or digit).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok_chars = bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if bucket.is_empty() {
        return Err("no bucket name after s3://".into());
    }
    if !(3..=63).contains(&bucket.len())
        || !ok_chars
        || !ends_ok(bucket.chars().next())
        || !ends_ok(bucket.chars().last())
    {
        return Err(format!(
            "`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_and_paths_parse_and_print_as_given() {
        for text in ["s3://team-state/secep/prod.state.json", ".secep/s.state.json", "/abs/s.json"] {
            assert_eq!(Location::parse(text).unwrap().to_string(), text);
        }
        let s3 = Location::parse("s3://team-state/a/b.json").unwrap();
        assert_eq!(s3, Location::S3 { bucket: "team-state".into(), key: "a/b.json".into() });
        assert_eq!(s3.with_suffix(".lock").to_string(), "s3://team-state/a/b.json.lock");
        assert_eq!(Location::parse("x/s.json").unwrap().with_suffix(".bak").to_string(), "x/s.json.bak");
    }

    #[test]
    fn a_malformed_s3_url_is_an_error_not_a_local_file() {
        for (text, says) in [
            ("s3://", "no bucket name"),
            ("s3://Team_State/k", "not an S3 bucket name"),
            ("s3://bucket", "names no object"),
            ("s3://bucket/dir/", "names no object"),
            ("gs://bucket/key", "only local paths and s3://"),
            ("", "empty"),
        ] {
            let err = Location::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
