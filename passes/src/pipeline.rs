//! The pipeline language: `name`, `name{key=value,key=value}`, comma-separated.
//!
//! Commas inside braces separate options; whitespace around names, keys, values and
//! separators is ignored. [`Pipeline::parse`] resolves names and options against the
//! registry; its `Display` is the canonical form with every option filled in.

use crate::error::PassError;
use crate::options::Options;
use crate::pass::Pass;
use crate::registry::{lookup, PassInfo};
use std::fmt;

/// One pass of a pipeline as written: name and (key, value) options, with positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// Pass name.
    pub name: String,
    /// Byte offset of the name.
    pub pos: usize,
    /// Options as written, in order.
    pub options: Vec<(String, String)>,
}

fn syntax(pos: usize, message: impl Into<String>) -> PassError {
    PassError::PipelineSyntax {
        pos,
        message: message.into(),
    }
}

/// Whether `c` may appear in a pass or option name.
pub(crate) fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }
    /// A run of characters accepted by `ok`, trimmed of surrounding whitespace.
    fn take_while(&mut self, ok: impl Fn(char) -> bool) -> (usize, &str) {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek().filter(|&c| ok(c)) {
            self.pos += c.len_utf8();
        }
        let word = self.text[start..self.pos].trim_end();
        self.skip_ws();
        (start, word)
    }
}

/// Splits pipeline text into entries (no registry lookup). Empty or blank text is an
/// empty pipeline.
pub fn parse_syntax(text: &str) -> Result<Vec<RawEntry>, PassError> {
    let mut lx = Lexer { text, pos: 0 };
    let mut out = Vec::new();
    lx.skip_ws();
    if lx.peek().is_none() {
        return Ok(out);
    }
    loop {
        let (pos, name) = lx.take_while(is_word);
        if name.is_empty() {
            return Err(match lx.peek() {
                None | Some(',') => syntax(pos, "expected a pass name"),
                Some(c) => syntax(
                    lx.pos,
                    format!("unexpected {c:?} where a pass name belongs"),
                ),
            });
        }
        let mut entry = RawEntry {
            name: name.to_string(),
            pos,
            options: Vec::new(),
        };
        if lx.peek() == Some('{') {
            let open = lx.pos;
            lx.pos += 1;
            parse_options(&mut lx, open, &mut entry.options)?;
        }
        out.push(entry);
        match lx.peek() {
            None => return Ok(out),
            Some(',') => lx.pos += 1,
            Some('}') => return Err(syntax(lx.pos, "'}' without a matching '{'")),
            Some(c) => return Err(syntax(lx.pos, format!("unexpected {c:?} after a pass"))),
        }
    }
}

/// Parses `key=value,...}` after an opening brace at `open`.
fn parse_options(
    lx: &mut Lexer<'_>,
    open: usize,
    opts: &mut Vec<(String, String)>,
) -> Result<(), PassError> {
    lx.skip_ws();
    if lx.peek() == Some('}') {
        lx.pos += 1;
        lx.skip_ws();
        return Ok(());
    }
    loop {
        let (kpos, key) = lx.take_while(is_word);
        if key.is_empty() {
            return Err(match lx.peek() {
                None => syntax(open, "'{' is never closed"),
                _ => syntax(kpos, "expected an option name"),
            });
        }
        let key = key.to_string();
        if lx.peek() != Some('=') {
            return Err(match lx.peek() {
                None => syntax(open, "'{' is never closed"),
                _ => syntax(lx.pos, format!("expected '=' after option {key:?}")),
            });
        }
        lx.pos += 1;
        let (_, value) = lx.take_while(|c| !matches!(c, ',' | '{' | '}' | '='));
        let value = value.to_string();
        opts.push((key, value));
        match lx.peek() {
            Some(',') => lx.pos += 1,
            Some('}') => {
                lx.pos += 1;
                lx.skip_ws();
                return Ok(());
            }
            None => return Err(syntax(open, "'{' is never closed")),
            Some(c) => return Err(syntax(lx.pos, format!("unexpected {c:?} in options"))),
        }
    }
}

/// A resolved pipeline entry: the registered pass and its options (defaults filled).
#[derive(Clone)]
pub struct PipelineEntry {
    /// The registered pass.
    pub info: &'static PassInfo,
    /// Its options.
    pub options: Options,
}

impl PipelineEntry {
    /// An entry for `name` with default options.
    pub fn new(name: &str) -> Result<PipelineEntry, PassError> {
        let info = lookup(name)?;
        Ok(PipelineEntry {
            info,
            options: info.parse_options(&[])?,
        })
    }
    /// Builds the pass.
    pub fn create(&self) -> Result<Box<dyn Pass>, PassError> {
        (self.info.create)(&self.options)
    }
}

impl fmt::Display for PipelineEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info.name)?;
        if !self.options.values().is_empty() {
            write!(f, "{{{}}}", self.options.canonical())?;
        }
        Ok(())
    }
}

impl fmt::Debug for PipelineEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A resolved pipeline.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    /// The passes, in order.
    pub entries: Vec<PipelineEntry>,
}

impl Pipeline {
    /// Parses and resolves pipeline text against the registry.
    pub fn parse(text: &str) -> Result<Pipeline, PassError> {
        let entries = parse_syntax(text)?
            .into_iter()
            .map(|raw| {
                let info = lookup(&raw.name)?;
                Ok(PipelineEntry {
                    info,
                    options: info.parse_options(&raw.options)?,
                })
            })
            .collect::<Result<_, PassError>>()?;
        Ok(Pipeline { entries })
    }

    /// True when the pipeline has no passes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos_of(text: &str) -> usize {
        match parse_syntax(text) {
            Err(PassError::PipelineSyntax { pos, .. }) => pos,
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn names_options_and_whitespace() {
        let e = parse_syntax(" fold , prune{ ratio = 0.5 , mode=l1 },dce ").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "fold");
        assert_eq!(e[0].pos, 1);
        assert_eq!(e[1].name, "prune");
        assert_eq!(
            e[1].options,
            vec![
                ("ratio".to_string(), "0.5".to_string()),
                ("mode".to_string(), "l1".to_string())
            ]
        );
        assert_eq!(e[2].name, "dce");
        assert!(parse_syntax("   ").unwrap().is_empty());
        assert!(parse_syntax("a{}").unwrap()[0].options.is_empty());
    }

    #[test]
    fn syntax_errors_carry_positions() {
        assert_eq!(pos_of("fold,"), 5);
        assert_eq!(pos_of(",fold"), 0);
        assert_eq!(pos_of("fold,,dce"), 5);
        assert_eq!(pos_of("fold{a=1"), 4);
        assert_eq!(pos_of("fold{a=1,"), 4);
        assert_eq!(pos_of("fold}"), 4);
        assert_eq!(pos_of("fold{a}"), 6);
        assert_eq!(pos_of("fold{=1}"), 5);
        assert_eq!(pos_of("fold dce"), 5);
        assert_eq!(pos_of("fold{a=1}x"), 9);
        let msg = parse_syntax("fold{a}").unwrap_err().to_string();
        assert_eq!(
            msg,
            "pipeline syntax error at position 6: expected '=' after option \"a\""
        );
    }

    #[test]
    fn resolution_and_canonical_form() {
        let p = Pipeline::parse("fold, fold-batchnorm,remove-identity , dce").unwrap();
        assert_eq!(
            p.to_string(),
            "fold{always-elements=65536,growth=4},fold-batchnorm,remove-identity,dce"
        );
        let p = Pipeline::parse("fold{growth=2.5}").unwrap();
        assert_eq!(p.to_string(), "fold{always-elements=65536,growth=2.5}");
        // The canonical form parses back to itself.
        assert_eq!(
            Pipeline::parse(&p.to_string()).unwrap().to_string(),
            p.to_string()
        );
        assert!(Pipeline::parse("").unwrap().is_empty());
    }

    #[test]
    fn resolution_errors() {
        assert!(matches!(
            Pipeline::parse("fold,nope"),
            Err(PassError::UnknownPass { ref name, .. }) if name == "nope"
        ));
        assert!(matches!(
            Pipeline::parse("dce{x=1}"),
            Err(PassError::UnknownOption { .. })
        ));
        assert!(matches!(
            Pipeline::parse("fold{growth=lots}"),
            Err(PassError::BadOptionValue { .. })
        ));
    }
}
