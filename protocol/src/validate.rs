//! Validation errors that name the field, the problem and the fix.

use std::fmt;

/// One problem with one field of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `interfaces[0].capabilities`.
    pub field: String,
    /// What is wrong, in lowercase words.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.field, self.problem, self.fix)
    }
}

/// Every problem found in one document, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is invalid:\n{}", list(.errors))]
pub struct Invalid {
    /// What was validated, e.g. `manifest of image "beacon"`.
    pub what: String,
    pub errors: Vec<FieldError>,
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects field errors while a validator walks a document.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    pub(crate) fn push(
        &mut self,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.errors.push(FieldError {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    pub(crate) fn finish(self, what: impl Into<String>) -> Result<(), Invalid> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid {
                what: what.into(),
                errors: self.errors,
            })
        }
    }
}
