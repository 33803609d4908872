//! The error type of the pass infrastructure.

/// Everything that can go wrong while parsing a pipeline or running passes.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// An IR operation failed.
    #[error(transparent)]
    Ir(#[from] cc_ir::Error),
    /// The pipeline names a pass that is not registered.
    #[error("unknown pass {name:?}; registered passes: {}", known.join(", "))]
    UnknownPass {
        /// The name asked for.
        name: String,
        /// All registered pass names, sorted.
        known: Vec<String>,
    },
    /// A pass was given an option it does not have.
    #[error("pass {pass}: unknown option {option:?}; valid options: {}", if valid.is_empty() { "(none)".to_string() } else { valid.join(", ") })]
    UnknownOption {
        /// The pass.
        pass: String,
        /// The option asked for.
        option: String,
        /// The pass's options.
        valid: Vec<String>,
    },
    /// An option value does not parse as the option's kind.
    #[error("pass {pass}: option {option}={value:?} is not {expected}")]
    BadOptionValue {
        /// The pass.
        pass: String,
        /// The option.
        option: String,
        /// The text given.
        value: String,
        /// What was expected (e.g. `an integer in 0..=8`).
        expected: String,
    },
    /// The pipeline text is malformed.
    #[error("pipeline syntax error at position {pos}: {message}")]
    PipelineSyntax {
        /// Byte offset into the pipeline text.
        pos: usize,
        /// What is wrong.
        message: String,
    },
    /// The verifier rejected the graph a pass left behind.
    #[error("verification failed after pass {pass}: {source}")]
    Verify {
        /// The pass that ran last.
        pass: String,
        /// The verifier's complaint.
        source: cc_ir::Error,
    },
    /// A plugin could not be loaded, or one of its passes failed.
    #[error("plugin {plugin}: {message}")]
    Plugin {
        /// The plugin: its name (when known) and the library's path.
        plugin: String,
        /// What went wrong, on one line.
        message: String,
    },
    /// A pass failed.
    #[error("pass {pass}: {source}")]
    InPass {
        /// The failing pass.
        pass: String,
        /// The underlying error.
        source: Box<PassError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_wrong() {
        let e = PassError::UnknownPass {
            name: "flod".into(),
            known: vec!["dce".into(), "fold".into()],
        };
        assert_eq!(
            e.to_string(),
            "unknown pass \"flod\"; registered passes: dce, fold"
        );
        let e = PassError::UnknownOption {
            pass: "dce".into(),
            option: "x".into(),
            valid: vec![],
        };
        assert!(e.to_string().ends_with("valid options: (none)"));
        let e: PassError = cc_ir::Error::invalid("bad").into();
        assert_eq!(e.to_string(), "bad");
    }
}
