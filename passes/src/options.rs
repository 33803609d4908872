//! Typed pass options, parsed from `key=value` text against a pass's option schema.

use crate::error::PassError;
use std::fmt;

/// The kind of an option's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptionKind {
    /// An integer, optionally bounded (inclusive).
    Int {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// A finite floating-point number.
    Float,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// Any text.
    Str,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
}

impl OptionKind {
    /// What a value of this kind looks like, for messages.
    pub fn describe(&self) -> String {
        match self {
            OptionKind::Int { min, max } => match (min, max) {
                (None, None) => "an integer".into(),
                (Some(a), None) => format!("an integer >= {a}"),
                (None, Some(b)) => format!("an integer <= {b}"),
                (Some(a), Some(b)) => format!("an integer in {a}..={b}"),
            },
            OptionKind::Float => "a number".into(),
            OptionKind::Bool => "a boolean (true/false)".into(),
            OptionKind::Str => "a string".into(),
            OptionKind::Enum(words) => format!("one of {}", words.join("|")),
        }
    }

    /// Parses `text` as this kind; `None` when it does not fit.
    pub fn parse(&self, text: &str) -> Option<OptionValue> {
        match self {
            OptionKind::Int { min, max } => {
                let v: i64 = text.parse().ok()?;
                let ok = min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
                ok.then_some(OptionValue::Int(v))
            }
            OptionKind::Float => {
                let v: f64 = text.parse().ok()?;
                v.is_finite().then_some(OptionValue::Float(v))
            }
            OptionKind::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(OptionValue::Bool(true)),
                "false" | "0" | "no" | "off" => Some(OptionValue::Bool(false)),
                _ => None,
            },
            OptionKind::Str => Some(OptionValue::Str(text.to_string())),
            OptionKind::Enum(words) => words
                .contains(&text)
                .then(|| OptionValue::Str(text.to_string())),
        }
    }
}

/// The schema of one option.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionSpec {
    /// Option name (`key` in `key=value`).
    pub name: &'static str,
    /// Value kind.
    pub kind: OptionKind,
    /// Default value as text (must parse as `kind`).
    pub default: &'static str,
    /// One-line help.
    pub help: &'static str,
}

/// A parsed option value.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// String or enum word.
    Str(String),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Int(v) => write!(f, "{v}"),
            OptionValue::Float(v) => write!(f, "{v}"),
            OptionValue::Bool(v) => write!(f, "{v}"),
            OptionValue::Str(s) => f.write_str(s),
        }
    }
}

/// The options of one pass instance: every option of the schema, defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pass: String,
    values: Vec<(&'static str, OptionValue)>,
}

impl Options {
    /// Parses `given` (key, value) pairs against `spec` for pass `pass`. Unknown keys,
    /// keys given twice and values that do not parse are errors.
    pub fn parse(
        pass: &str,
        spec: &'static [OptionSpec],
        given: &[(String, String)],
    ) -> Result<Options, PassError> {
        for (i, (k, v)) in given.iter().enumerate() {
            if !spec.iter().any(|s| s.name == k) {
                return Err(PassError::UnknownOption {
                    pass: pass.to_string(),
                    option: k.clone(),
                    valid: spec.iter().map(|s| s.name.to_string()).collect(),
                });
            }
            if given[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(PassError::BadOptionValue {
                    pass: pass.to_string(),
                    option: k.clone(),
                    value: v.clone(),
                    expected: "given only once".into(),
                });
            }
        }
        let mut values = Vec::with_capacity(spec.len());
        for s in spec {
            let text = given
                .iter()
                .find(|(k, _)| k == s.name)
                .map_or(s.default, |(_, v)| v.as_str());
            let v = s
                .kind
                .parse(text)
                .ok_or_else(|| PassError::BadOptionValue {
                    pass: pass.to_string(),
                    option: s.name.to_string(),
                    value: text.to_string(),
                    expected: s.kind.describe(),
                })?;
            values.push((s.name, v));
        }
        Ok(Options {
            pass: pass.to_string(),
            values,
        })
    }

    /// The pass these options belong to.
    pub fn pass(&self) -> &str {
        &self.pass
    }

    /// All defaults of `spec`.
    pub fn defaults(pass: &str, spec: &'static [OptionSpec]) -> Result<Options, PassError> {
        Self::parse(pass, spec, &[])
    }

    /// The options in schema order.
    pub fn values(&self) -> &[(&'static str, OptionValue)] {
        &self.values
    }

    fn get(&self, name: &str) -> Result<&OptionValue, PassError> {
        self.values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| PassError::UnknownOption {
                pass: self.pass.clone(),
                option: name.to_string(),
                valid: self.values.iter().map(|(k, _)| k.to_string()).collect(),
            })
    }

    fn wrong(&self, name: &str, v: &OptionValue, want: &str) -> PassError {
        PassError::BadOptionValue {
            pass: self.pass.clone(),
            option: name.to_string(),
            value: v.to_string(),
            expected: want.to_string(),
        }
    }

    /// An integer option.
    pub fn get_int(&self, name: &str) -> Result<i64, PassError> {
        match self.get(name)? {
            OptionValue::Int(v) => Ok(*v),
            v => Err(self.wrong(name, v, "an integer")),
        }
    }
    /// A float option (integers widen).
    pub fn get_float(&self, name: &str) -> Result<f64, PassError> {
        match self.get(name)? {
            OptionValue::Float(v) => Ok(*v),
            OptionValue::Int(v) => Ok(*v as f64),
            v => Err(self.wrong(name, v, "a number")),
        }
    }
    /// A boolean option.
    pub fn get_bool(&self, name: &str) -> Result<bool, PassError> {
        match self.get(name)? {
            OptionValue::Bool(v) => Ok(*v),
            v => Err(self.wrong(name, v, "a boolean")),
        }
    }
    /// A string or enum option.
    pub fn get_str(&self, name: &str) -> Result<&str, PassError> {
        match self.get(name)? {
            OptionValue::Str(v) => Ok(v),
            v => Err(self.wrong(name, v, "a string")),
        }
    }

    /// Canonical text: `key=value` pairs in schema order, comma-separated.
    pub fn canonical(&self) -> String {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Test helper: the options of registered pass `pass` from `k=v,k=v` text.
#[cfg(test)]
pub(crate) fn test_options(pass: &str, text: &str) -> Result<Options, PassError> {
    let spec = crate::registry::lookup(pass)?;
    let given: Vec<(String, String)> = text
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Options::parse(pass, spec.options, &given)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[OptionSpec] = &[
        OptionSpec {
            name: "bits",
            kind: OptionKind::Int {
                min: Some(2),
                max: Some(8),
            },
            default: "8",
            help: "bit width",
        },
        OptionSpec {
            name: "ratio",
            kind: OptionKind::Float,
            default: "0.5",
            help: "ratio",
        },
        OptionSpec {
            name: "sym",
            kind: OptionKind::Bool,
            default: "true",
            help: "symmetric",
        },
        OptionSpec {
            name: "mode",
            kind: OptionKind::Enum(&["tensor", "channel"]),
            default: "channel",
            help: "granularity",
        },
        OptionSpec {
            name: "tag",
            kind: OptionKind::Str,
            default: "",
            help: "label",
        },
    ];

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_typed_getters() {
        let o = Options::parse("q", SPEC, &kv(&[("bits", "4"), ("sym", "no")])).unwrap();
        assert_eq!(o.get_int("bits").unwrap(), 4);
        assert_eq!(o.get_float("ratio").unwrap(), 0.5);
        assert!(!o.get_bool("sym").unwrap());
        assert_eq!(o.get_str("mode").unwrap(), "channel");
        assert_eq!(
            o.canonical(),
            "bits=4,ratio=0.5,sym=false,mode=channel,tag="
        );
        assert!(o.get_bool("bits").is_err());
        assert!(matches!(
            o.get_int("nope"),
            Err(PassError::UnknownOption { .. })
        ));
    }

    #[test]
    fn typing_errors_name_the_option() {
        let e = Options::parse("q", SPEC, &kv(&[("bits", "9")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pass q: option bits=\"9\" is not an integer in 2..=8"
        );
        let e = Options::parse("q", SPEC, &kv(&[("ratio", "half")])).unwrap_err();
        assert!(matches!(e, PassError::BadOptionValue { ref option, .. } if option == "ratio"));
        let e = Options::parse("q", SPEC, &kv(&[("mode", "row")])).unwrap_err();
        assert!(e.to_string().contains("one of tensor|channel"), "{e}");
        let e = Options::parse("q", SPEC, &kv(&[("sym", "maybe")])).unwrap_err();
        assert!(e.to_string().contains("boolean"), "{e}");
        let e = Options::parse("q", SPEC, &kv(&[("bits", "4"), ("bits", "5")])).unwrap_err();
        assert!(e.to_string().contains("only once"), "{e}");
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let e = Options::parse("q", SPEC, &kv(&[("bit", "4")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pass q: unknown option \"bit\"; valid options: bits, ratio, sym, mode, tag"
        );
    }
}
