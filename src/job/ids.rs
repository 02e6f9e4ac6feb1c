//! The names of things: a job's id and a source video's URL, as distinct types so that one is
//! never passed where the other is meant (both were plain strings, and a queue of calls held
//! either). Both are stored as plain JSON strings.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        /// Shown as the string itself (messages quote ids with `{:?}`).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl $name {
            pub fn new(value: impl Into<String>) -> $name {
                $name(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            /// The text itself, padded as the format asks (`{:<22}` lines up a table).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> $name {
                $name(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> $name {
                $name(value.to_string())
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

string_newtype!(
    /// A job's id: the manifest's `id` (validated as a file name) or one derived from the row.
    JobId
);

string_newtype!(
    /// A source video's URL exactly as the manifest wrote it (trimmed). It is sent to the API
    /// byte for byte and keys the video's shared analysis, so it is never normalised.
    VideoUrl
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_padded_as_the_format_asks() {
        assert_eq!(format!("[{:<6}]", JobId::from("ab")), "[ab    ]");
        assert_eq!(format!("[{:>4}]", VideoUrl::from("v")), "[   v]");
    }
}
