//! [`LogType`]: the application's type tag of a log entry. Every entry carries one and the write
//! path copies entries several times (log → WAL batch → messages to each follower → delivery), so
//! the tag is a small-string-optimised value: tags of up to 23 bytes live inline and clone
//! without allocating; longer ones share one reference-counted buffer. It derefs to `str`,
//! compares with string types and serializes as a plain string.

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// An application-defined type tag of a log entry (empty for protocol entries).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogType(SmolStr);

impl LogType {
    /// The empty tag of protocol entries.
    pub const EMPTY: LogType = LogType(SmolStr::new_inline(""));

    /// A tag from a string slice (no allocation up to 23 bytes).
    pub fn new(tag: &str) -> LogType {
        LogType(SmolStr::new(tag))
    }

    /// The tag as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for LogType {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for LogType {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for LogType {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for LogType {
    fn from(tag: &str) -> LogType {
        LogType::new(tag)
    }
}

impl From<&String> for LogType {
    fn from(tag: &String) -> LogType {
        LogType::new(tag)
    }
}

impl From<String> for LogType {
    fn from(tag: String) -> LogType {
        LogType(SmolStr::from(tag))
    }
}

impl From<&LogType> for LogType {
    fn from(tag: &LogType) -> LogType {
        tag.clone()
    }
}

impl From<LogType> for String {
    fn from(tag: LogType) -> String {
        tag.0.into()
    }
}

impl PartialEq<str> for LogType {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for LogType {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for LogType {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_str()
    }
}

impl PartialEq<LogType> for str {
    fn eq(&self, other: &LogType) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<LogType> for &str {
    fn eq(&self, other: &LogType) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for LogType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for LogType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_tags_compare_clone_and_serialize_like_strings() {
        let short = LogType::from("order");
        let long = LogType::from("a-log-type-tag-longer-than-twenty-three-bytes".to_string());
        assert_eq!(short, "order");
        assert_eq!("order", short);
        assert_eq!(long.clone(), long);
        assert_eq!(long.len(), 45);
        assert!(LogType::EMPTY.is_empty());
        assert_eq!(format!("{short} {short:?}"), "order \"order\"");
        let encoded = postcard::to_allocvec(&short).unwrap();
        assert_eq!(encoded, postcard::to_allocvec("order").unwrap());
        assert_eq!(postcard::from_bytes::<LogType>(&encoded).unwrap(), short);
    }
}
