//! Query stage, the audit detail of a failure: an engine error reduced to its kind and
//! location, never its values.
//!
//! Engine messages carry data values (a failed cast prints the value, a regex built from
//! a column prints the pattern, `make_date` prints the year, month and day), and the audit
//! log is read by reviewers and auditors. Guarantee: [`ErrorShape`] holds only what the
//! error's *structure* says — the chain of error variants from the outermost in (walking
//! `Context`, `Diagnostic`, `Shared`, `Collection`, `External`, Arrow's `ExternalError`),
//! the I/O error kind, whether a task panicked — and the name of the function that failed
//! where a message names one in a function position (`name(`, `function name`, `for
//! name`); that name is *extracted* from a whitelist (DataFusion's built-in scalar,
//! aggregate and window functions), never produced by stripping text, so no character of
//! an engine message reaches the output except a whitelisted function name.

use std::collections::HashSet;
use std::error::Error;
use std::fmt;
use std::sync::LazyLock;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use serde::Serialize;

/// What an auditor may know of an engine error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorShape {
    /// The error variants from the outermost in, e.g. `context > arrow > cast error`.
    pub kinds: Vec<&'static str>,
    /// The failing function, when a message names a built-in one in a function position.
    pub function: Option<&'static str>,
}

impl fmt::Display for ErrorShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kinds.join(" > "))?;
        if let Some(name) = self.function {
            write!(f, " (function {name})")?;
        }
        Ok(())
    }
}

/// The shape of a DataFusion error.
pub fn shape(e: &DataFusionError) -> ErrorShape {
    let mut s = ErrorShape::default();
    s.datafusion(e);
    s
}

/// The shape of any error whose chain reaches a DataFusion or Arrow error; `None` when
/// none does (then the error is kura's own and its text carries no engine message).
pub fn shape_dyn(e: &(dyn Error + 'static)) -> Option<ErrorShape> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<DataFusionError>() || c.is::<ArrowError>() {
            let mut s = ErrorShape::default();
            s.any(c);
            return Some(s);
        }
        cur = c.source();
    }
    None
}

impl ErrorShape {
    fn any(&mut self, e: &(dyn Error + 'static)) {
        if let Some(d) = e.downcast_ref::<DataFusionError>() {
            self.datafusion(d);
        } else if let Some(a) = e.downcast_ref::<ArrowError>() {
            self.arrow(a);
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            self.kinds.push("io");
            self.kinds.push(io_kind(io));
        } else {
            self.kinds.push("external");
            if let Some(s) = e.source() {
                self.any(s);
            }
        }
    }

    fn datafusion(&mut self, e: &DataFusionError) {
        use DataFusionError as D;
        let (kind, text) = match e {
            D::ArrowError(a, _) => {
                self.kinds.push("arrow");
                return self.arrow(a);
            }
            D::External(b) => return self.any(b.as_ref()),
            D::Context(c, inner) => {
                self.kinds.push("context");
                self.function_in(c);
                return self.datafusion(inner);
            }
            D::Diagnostic(_, inner) => return self.datafusion(inner),
            D::Shared(inner) => return self.datafusion(inner),
            D::Collection(all) => {
                self.kinds.push("collection");
                return all.iter().take(1).for_each(|x| self.datafusion(x));
            }
            D::IoError(io) => {
                self.kinds.push("io");
                return self.kinds.push(io_kind(io));
            }
            D::ExecutionJoin(j) if j.is_panic() => ("task panicked", None),
            D::ExecutionJoin(_) => ("task cancelled", None),
            D::ParquetError(_) => ("parquet", None),
            D::ObjectStore(_) => ("object store", None),
            D::SQL(..) => ("sql parser", None),
            D::SchemaError(..) => ("schema", None),
            D::NotImplemented(t) => ("not implemented", Some(t)),
            D::Internal(t) => ("internal", Some(t)),
            D::Plan(t) => ("plan", Some(t)),
            D::Configuration(t) => ("configuration", Some(t)),
            D::Execution(t) => ("execution", Some(t)),
            D::ResourcesExhausted(t) => ("resources exhausted", Some(t)),
            D::Substrait(t) => ("substrait", Some(t)),
            D::Ffi(t) => ("ffi", Some(t)),
        };
        self.kinds.push(kind);
        if let Some(t) = text {
            self.function_in(t);
        }
    }

    fn arrow(&mut self, e: &ArrowError) {
        use ArrowError as A;
        let (kind, text) = match e {
            A::ExternalError(b) => return self.any(b.as_ref()),
            A::IoError(_, io) => {
                self.kinds.push("io");
                return self.kinds.push(io_kind(io));
            }
            A::NotYetImplemented(t) => ("not yet implemented", Some(t)),
            A::CastError(t) => ("cast error", Some(t)),
            A::MemoryError(t) => ("memory error", Some(t)),
            A::ParseError(t) => ("parse error", Some(t)),
            A::SchemaError(t) => ("schema error", Some(t)),
            A::ComputeError(t) => ("compute error", Some(t)),
            A::DivideByZero => ("divide by zero", None),
            A::ArithmeticOverflow(t) => ("arithmetic overflow", Some(t)),
            A::CsvError(t) => ("csv error", Some(t)),
            A::JsonError(t) => ("json error", Some(t)),
            A::AvroError(t) => ("avro error", Some(t)),
            A::IpcError(t) => ("ipc error", Some(t)),
            A::InvalidArgumentError(t) => ("invalid argument", Some(t)),
            A::ParquetError(t) => ("parquet error", Some(t)),
            A::CDataInterface(t) => ("c data interface", Some(t)),
            A::DictionaryKeyOverflowError => ("dictionary key overflow", None),
            A::RunEndIndexOverflowError => ("run end index overflow", None),
            A::OffsetOverflowError(_) => ("offset overflow", None),
        };
        self.kinds.push(kind);
        if let Some(t) = text {
            self.function_in(t);
        }
    }

    /// The first whitelisted function name in a function position of `text`, if no
    /// function was found yet (the outermost mention wins).
    fn function_in(&mut self, text: &str) {
        if self.function.is_none() {
            self.function = function_named(text);
        }
    }
}

/// A fixed name of an I/O error kind.
fn io_kind(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "not found",
        K::PermissionDenied => "permission denied",
        K::UnexpectedEof => "unexpected end of file",
        K::OutOfMemory => "out of memory",
        K::InvalidData => "invalid data",
        K::TimedOut => "timed out",
        _ => "other",
    }
}

/// DataFusion's built-in function names (scalar, aggregate, window, with aliases).
static FUNCTIONS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut names = HashSet::new();
    for f in datafusion::functions::all_default_functions() {
        names.insert(f.name().to_string());
        names.extend(f.aliases().iter().cloned());
    }
    for f in datafusion::functions_aggregate::all_default_aggregate_functions() {
        names.insert(f.name().to_string());
        names.extend(f.aliases().iter().cloned());
    }
    for f in datafusion::functions_window::all_default_window_functions() {
        names.insert(f.name().to_string());
        names.extend(f.aliases().iter().cloned());
    }
    names
});

/// The first word of `text` that is a built-in function name and stands in a function
/// position: followed by `(`, or after the word `function` or `for`, or written in
/// capitals (`NTILE requires …`). Returns the whitelist's own copy of the name.
fn function_named(text: &str) -> Option<&'static str> {
    let functions: &'static HashSet<String> = &FUNCTIONS;
    let mut previous = "";
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(is_word_char)?;
        rest = &rest[start..];
        let end = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        let lower = word.to_ascii_lowercase();
        let positioned = after.starts_with('(')
            || matches!(previous, "function" | "for")
            || (word.len() > 2 && word.chars().all(|c| !c.is_ascii_lowercase()));
        if positioned && let Some(name) = functions.get(&lower) {
            return Some(name.as_str());
        }
        previous = match lower.as_str() {
            "function" => "function",
            "for" => "for",
            _ => "",
        };
        rest = after;
    }
    None
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "Tanaka-1987-03-02";

    fn cast_error() -> DataFusionError {
        DataFusionError::Context(
            "while evaluating".into(),
            Box::new(DataFusionError::ArrowError(
                Box::new(ArrowError::CastError(format!(
                    "Cannot cast string '{MARKER}' to value of Date32 type"
                ))),
                None,
            )),
        )
    }

    #[test]
    fn attack_a_data_value_in_the_message_is_not_in_the_shape() {
        let e = cast_error();
        // Control: the engine's own text carries the value.
        assert!(crate::errors::chain(&e).contains(MARKER));
        let s = shape(&e);
        assert_eq!(s.kinds, vec!["context", "arrow", "cast error"]);
        assert!(!s.to_string().contains(MARKER), "{s}");
        assert!(!serde_json::to_string(&s).unwrap().contains("1987"));
    }

    #[test]
    fn the_chain_is_walked_through_shared_external_and_collections() {
        let inner = DataFusionError::Execution(format!(
            "Error parsing timestamp from '{MARKER}' for function to_date"
        ));
        let e = DataFusionError::Collection(vec![DataFusionError::Shared(
            DataFusionError::External(Box::new(inner)).into(),
        )]);
        let s = shape(&e);
        assert_eq!(s.kinds, vec!["collection", "execution"]);
        assert_eq!(s.function, Some("to_date"));
        assert!(!s.to_string().contains(MARKER));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(ArrowError::DivideByZero);
        assert_eq!(
            shape_dyn(boxed.as_ref()).unwrap().kinds,
            vec!["divide by zero"]
        );
        let own: Box<dyn Error + Send + Sync> = "kura's own message".into();
        assert_eq!(shape_dyn(own.as_ref()), None);
    }

    #[test]
    fn function_names_come_only_from_the_whitelist_in_a_function_position() {
        assert_eq!(
            function_named("NTILE requires a positive integer"),
            Some("ntile")
        );
        assert_eq!(function_named("substr(x, 1, -1) failed"), Some("substr"));
        assert_eq!(
            function_named("Unsupported data type Utf8 for function make_date"),
            Some("make_date")
        );
        // Plain words that happen to be function names are not taken.
        assert_eq!(function_named("cast to the right type"), None);
        // A data value is never a function name unless it is one from the whitelist.
        assert_eq!(function_named(&format!("value {MARKER}(")), None);
    }
}
