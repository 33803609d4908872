//! Option schemas as plugin authors declare them, and the option values a pass reads.

use crate::abi::{option_kind, CcOptionSpec, CcStr};

/// The kind of an option's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptionKind {
    /// An integer within the bounds (inclusive).
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A finite number.
    Float,
    /// `true`/`false`.
    Bool,
    /// Any text.
    Str,
    /// One of the `|`-separated words.
    Enum(&'static str),
}

/// One option of a plugin pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionDecl {
    /// Name (`key` in `key=value`).
    pub name: &'static str,
    /// Kind of value.
    pub kind: OptionKind,
    /// Default, as text that parses as `kind`.
    pub default: &'static str,
    /// One-line help.
    pub help: &'static str,
}

impl OptionDecl {
    /// An integer option in `min..=max`.
    pub const fn int(
        name: &'static str,
        min: i64,
        max: i64,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self::new(name, OptionKind::Int { min, max }, default, help)
    }
    /// A number option.
    pub const fn float(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self::new(name, OptionKind::Float, default, help)
    }
    /// A boolean option.
    pub const fn bool(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self::new(name, OptionKind::Bool, default, help)
    }
    /// A text option.
    pub const fn str(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self::new(name, OptionKind::Str, default, help)
    }
    /// An option taking one of the `|`-separated `words`.
    pub const fn choice(
        name: &'static str,
        words: &'static str,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self::new(name, OptionKind::Enum(words), default, help)
    }

    const fn new(
        name: &'static str,
        kind: OptionKind,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        OptionDecl {
            name,
            kind,
            default,
            help,
        }
    }

    /// The C form (borrowing the static strings).
    pub fn to_c(&self) -> CcOptionSpec {
        let (kind, int_min, int_max, choices) = match self.kind {
            OptionKind::Int { min, max } => (option_kind::INT, min, max, ""),
            OptionKind::Float => (option_kind::FLOAT, i64::MIN, i64::MAX, ""),
            OptionKind::Bool => (option_kind::BOOL, i64::MIN, i64::MAX, ""),
            OptionKind::Str => (option_kind::STR, i64::MIN, i64::MAX, ""),
            OptionKind::Enum(words) => (option_kind::ENUM, i64::MIN, i64::MAX, words),
        };
        CcOptionSpec {
            name: CcStr::from_static(self.name),
            kind,
            int_min,
            int_max,
            choices: CcStr::from_static(choices),
            default_value: CcStr::from_static(self.default),
            help: CcStr::from_static(self.help),
        }
    }
}

/// The options a pass runs with: every declared option, defaults filled in and values
/// already validated by the host against the schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptionValues {
    values: Vec<(String, String)>,
}

impl OptionValues {
    /// Parses the host's `key=value` lines.
    pub fn parse(text: &str) -> Result<OptionValues, String> {
        let values = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("option line {l:?} is not key=value"))
            })
            .collect::<Result<_, _>>()?;
        Ok(OptionValues { values })
    }

    /// The `key=value` lines for `values` (what the host sends).
    pub fn to_text(values: &[(String, String)]) -> String {
        values.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// The text of option `name`.
    pub fn str(&self, name: &str) -> Result<&str, String> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("option {name:?} was not given to the pass"))
    }
    /// Option `name` as a number.
    pub fn f64(&self, name: &str) -> Result<f64, String> {
        let s = self.str(name)?;
        s.parse()
            .map_err(|_| format!("option {name}={s:?} is not a number"))
    }
    /// Option `name` as an integer.
    pub fn i64(&self, name: &str) -> Result<i64, String> {
        let s = self.str(name)?;
        s.parse()
            .map_err(|_| format!("option {name}={s:?} is not an integer"))
    }
    /// Option `name` as a boolean.
    pub fn bool(&self, name: &str) -> Result<bool, String> {
        match self.str(name)? {
            "true" => Ok(true),
            "false" => Ok(false),
            s => Err(format!("option {name}={s:?} is not true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_convert() {
        let text = OptionValues::to_text(&[
            ("ratio".into(), "0.5".into()),
            ("n".into(), "3".into()),
            ("on".into(), "true".into()),
            ("ops".into(), "a=b".into()),
        ]);
        let v = OptionValues::parse(&text).unwrap();
        assert_eq!(v.f64("ratio"), Ok(0.5));
        assert_eq!(v.i64("n"), Ok(3));
        assert_eq!(v.bool("on"), Ok(true));
        assert_eq!(v.str("ops"), Ok("a=b"));
        assert!(v.str("x").unwrap_err().contains("\"x\""));
        assert!(v.i64("ratio").is_err());
        assert!(OptionValues::parse("novalue\n").is_err());
    }

    #[test]
    fn declarations_lower_to_c() {
        let d = OptionDecl::choice("mode", "a|b", "a", "help");
        let c = d.to_c();
        assert_eq!(c.kind, option_kind::ENUM);
        assert_eq!(unsafe { c.choices.to_str() }, Ok("a|b"));
        assert_eq!(unsafe { c.default_value.to_str() }, Ok("a"));
        let c = OptionDecl::int("n", 1, 9, "2", "h").to_c();
        assert_eq!((c.kind, c.int_min, c.int_max), (option_kind::INT, 1, 9));
    }
}
