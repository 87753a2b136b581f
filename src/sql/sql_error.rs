//! SQL stage 0, the wording of a statement that does not parse or plan (issue 17 §1): the
//! parser's and planner's errors become a stable "where and what" — line and column, and
//! the kind of thing expected (a statement, an expression, a closing parenthesis, a keyword,
//! …) or found wrong (an unknown column, table or function) — in English and Japanese, never
//! the engine's own text (`SQL error: ParserError("Expected: …")`), which changes between
//! versions and speaks only English.
//!
//! Guarantees: the message names only what the caller wrote (its own tokens and
//! identifiers, at most [`MAX_ECHO`] characters each), never a data value; an error of a
//! kind not recognised here gets the generic wording with its position when one is known.

use datafusion::common::{Diagnostic, SchemaError};
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

use crate::query::QueryError;

/// Longest piece of the caller's own SQL echoed in a message.
pub const MAX_ECHO: usize = 40;

/// Where in the statement (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// What the parser expected, in kinds people know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Statement,
    EndOfStatement,
    Expression,
    Identifier,
    DataType,
    QueryBody,
    Literal,
    Symbol(String),
    Keyword(String),
    Other,
}

/// What went wrong, in kinds people know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The parser wanted `expected` where it found `found` (`None`: the end of the query).
    Expected {
        expected: Expected,
        found: Option<String>,
    },
    UnterminatedString,
    UnterminatedIdentifier,
    UnterminatedComment,
    UnexpectedCharacter,
    UnknownColumn(String),
    UnknownTable(String),
    UnknownFunction(String),
    AmbiguousColumn(String),
    /// Two output columns with one name (e.g. two unnamed aggregates).
    DuplicateNames,
    /// Recognised as a parse or plan error, but of no kind above.
    Other,
}

/// A located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlProblem {
    pub problem: Problem,
    pub at: Option<Position>,
}

/// The refusal of a statement the parser rejected.
pub fn parse_refusal(e: &DataFusionError) -> QueryError {
    refusal(&classify(e))
}

/// The refusal of a statement the planner rejected (unknown names, types, …).
pub fn plan_refusal(e: &DataFusionError) -> QueryError {
    refusal(&classify(e))
}

fn refusal(p: &SqlProblem) -> QueryError {
    let (en, ja) = wording(p);
    QueryError::InvalidSql {
        message: format!("{en} / {ja}"),
    }
}

/// Classify a DataFusion error of parsing or planning.
pub fn classify(e: &DataFusionError) -> SqlProblem {
    let diag_at = e.diagnostic().and_then(diagnostic_position);
    for inner in layers(e) {
        match inner {
            DataFusionError::SQL(pe, _) => return parser_problem(pe),
            DataFusionError::SchemaError(se, _) => {
                return SqlProblem {
                    problem: schema_problem(se),
                    at: diag_at,
                };
            }
            DataFusionError::Plan(msg) => {
                return SqlProblem {
                    problem: plan_problem(msg),
                    at: diag_at,
                };
            }
            _ => {}
        }
    }
    SqlProblem {
        problem: Problem::Other,
        at: diag_at,
    }
}

/// The error and the errors it wraps (diagnostics, context, shared, the first of a collection).
fn layers(e: &DataFusionError) -> Vec<&DataFusionError> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(x) = cur {
        out.push(x);
        cur = match x {
            DataFusionError::Diagnostic(_, inner) | DataFusionError::Context(_, inner) => {
                Some(inner.as_ref())
            }
            DataFusionError::Shared(inner) => Some(inner.as_ref()),
            DataFusionError::Collection(all) => all.first(),
            _ => None,
        };
    }
    out
}

fn diagnostic_position(d: &Diagnostic) -> Option<Position> {
    let s = d.span.as_ref()?;
    (s.start.line > 0).then_some(Position {
        line: s.start.line,
        column: s.start.column,
    })
}

fn parser_problem(pe: &ParserError) -> SqlProblem {
    let (text, tokenizer) = match pe {
        ParserError::ParserError(t) => (t.as_str(), false),
        ParserError::TokenizerError(t) => (t.as_str(), true),
        ParserError::RecursionLimitExceeded => {
            return SqlProblem {
                problem: Problem::Other,
                at: None,
            };
        }
    };
    let (body, at) = split_location(text);
    let problem = if tokenizer {
        let lower = body.to_ascii_lowercase();
        if lower.contains("unterminated string") || lower.contains("unterminated encoded string") {
            Problem::UnterminatedString
        } else if lower.contains("quoted identifier") || lower.contains("delimited") {
            Problem::UnterminatedIdentifier
        } else if lower.contains("comment") {
            Problem::UnterminatedComment
        } else {
            Problem::UnexpectedCharacter
        }
    } else {
        expected_problem(body)
    };
    SqlProblem { problem, at }
}

/// Split sqlparser's ` at Line: L, Column: C` suffix off a message.
fn split_location(text: &str) -> (&str, Option<Position>) {
    let Some(i) = text.rfind(" at Line: ") else {
        return (text, None);
    };
    let rest = &text[i + " at Line: ".len()..];
    let mut parts = rest.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse().ok());
    let column = parts.next().and_then(|c| {
        c.trim()
            .trim_end_matches(|ch: char| !ch.is_ascii_digit())
            .parse()
            .ok()
    });
    match (line, column) {
        (Some(line), Some(column)) => (&text[..i], Some(Position { line, column })),
        _ => (text, None),
    }
}

fn expected_problem(body: &str) -> Problem {
    let Some(rest) = body.strip_prefix("Expected: ") else {
        return Problem::Other;
    };
    let (want, found) = match rest.rfind(", found: ") {
        Some(i) => (&rest[..i], Some(&rest[i + ", found: ".len()..])),
        None => (rest, None),
    };
    let found = found
        .map(str::trim)
        .filter(|f| !f.is_empty() && *f != "EOF")
        .map(echo);
    Problem::Expected {
        expected: expected_kind(want.trim()),
        found,
    }
}

fn expected_kind(want: &str) -> Expected {
    let lower = want.to_ascii_lowercase();
    if lower.contains("sql statement") {
        Expected::Statement
    } else if lower.contains("end of statement") {
        Expected::EndOfStatement
    } else if lower.contains("select, values") || lower.contains("query body") {
        Expected::QueryBody
    } else if lower.contains("expression") {
        Expected::Expression
    } else if lower.contains("identifier") {
        Expected::Identifier
    } else if lower.contains("data type") {
        Expected::DataType
    } else if lower.contains("literal") {
        Expected::Literal
    } else if matches!(want, ")" | "(" | "," | ";" | "=" | "." | "]" | "[") {
        Expected::Symbol(want.to_string())
    } else if !want.is_empty()
        && want.len() <= 20
        && want
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b' ' || b == b'_')
    {
        Expected::Keyword(want.to_string())
    } else {
        Expected::Other
    }
}

fn schema_problem(se: &SchemaError) -> Problem {
    match se {
        SchemaError::FieldNotFound { field, .. } => Problem::UnknownColumn(echo(&field.name)),
        SchemaError::AmbiguousReference { field } => Problem::AmbiguousColumn(echo(&field.name)),
        _ => Problem::Other,
    }
}

fn plan_problem(msg: &str) -> Problem {
    if msg.contains("require unique expression names") {
        return Problem::DuplicateNames;
    }
    if let Some(name) = quoted_after(msg, "Invalid function '") {
        return Problem::UnknownFunction(echo(name));
    }
    if let Some(name) = quoted_after(msg, "table '")
        && msg.contains("not found")
    {
        // DataFusion names the table fully qualified (datafusion.public.t); say only `t`.
        return Problem::UnknownTable(echo(name.rsplit('.').next().unwrap_or(name)));
    }
    if let Some(name) = quoted_after(msg, "column '")
        && msg.contains("not found")
    {
        return Problem::UnknownColumn(echo(name));
    }
    Problem::Other
}

/// The text between `prefix` and the next `'`.
fn quoted_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let start = msg.find(prefix)? + prefix.len();
    let end = msg[start..].find('\'')?;
    Some(&msg[start..start + end])
}

/// A piece of the caller's own SQL, shortened.
fn echo(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_ECHO {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX_ECHO).collect();
        out.push('…');
        out
    }
}

/// The English and Japanese wording of a problem: where, what, and what to do.
pub fn wording(p: &SqlProblem) -> (String, String) {
    let (en_where, ja_where) = match p.at {
        Some(Position { line, column }) => (
            format!("Line {line}, column {column}: "),
            format!("{line} 行 {column} 列目: "),
        ),
        None => (String::new(), String::new()),
    };
    let (en, ja) = what(&p.problem);
    (format!("{en_where}{en}"), format!("{ja_where}{ja}"))
}

fn found_text(found: &Option<String>) -> (String, String) {
    match found {
        Some(f) => (format!("`{f}`"), format!("`{f}`")),
        None => ("the end of the query".into(), "クエリの終わり".into()),
    }
}

fn what(p: &Problem) -> (String, String) {
    match p {
        Problem::Expected { expected, found } => {
            let (fe, fj) = found_text(found);
            let (we, wj, fix_en, fix_ja) = expected_words(expected);
            (
                format!("expected {we}, found {fe}. {fix_en}"),
                format!("{wj}が必要な位置に {fj} があります。{fix_ja}"),
            )
        }
        Problem::UnterminatedString => (
            "a string literal is not closed; end it with a single quote (').".into(),
            "文字列がシングルクォート（'）で閉じられていません。".into(),
        ),
        Problem::UnterminatedIdentifier => (
            "a quoted name is not closed; end it with a double quote (\").".into(),
            "ダブルクォート（\"）で囲んだ名前が閉じられていません。".into(),
        ),
        Problem::UnterminatedComment => (
            "a comment is not closed; end it with */.".into(),
            "コメントが */ で閉じられていません。".into(),
        ),
        Problem::UnexpectedCharacter => (
            "a character that SQL does not use here; remove it or put it in quotes.".into(),
            "SQL では使えない文字があります。削除するか引用符で囲んでください。".into(),
        ),
        Problem::UnknownColumn(c) => (
            format!(
                "no column `{c}` in the tables of this query; check the spelling in the catalogue, or qualify it with its table."
            ),
            format!(
                "列 `{c}` はこのクエリの表にありません。カタログで綴りを確認するか、表名を付けてください。"
            ),
        ),
        Problem::UnknownTable(t) => (
            format!(
                "no table `{t}` in this application's scope; pick a table from the catalogue."
            ),
            format!("表 `{t}` はこの申請の範囲にありません。カタログの表を使ってください。"),
        ),
        Problem::UnknownFunction(f) => (
            format!("no function `{f}`; see the allowed functions in the user guide."),
            format!(
                "関数 `{f}` はありません。使える関数は利用者ガイドを参照してください。"
            ),
        ),
        Problem::AmbiguousColumn(c) => (
            format!("column `{c}` is in more than one table; qualify it (table.{c})."),
            format!(
                "列 `{c}` は複数の表にあります。表名を付けてください（表名.{c}）。"
            ),
        ),
        Problem::DuplicateNames => (
            "two output columns have the same name; give each computed column its own name with AS (count(*) AS n).".into(),
            "同じ名前の出力列が 2 つあります。計算した列には AS で別々の名前を付けてください（count(*) AS n など）。".into(),
        ),
        Problem::Other => (
            "the statement could not be read or planned; check it against the examples in the user guide.".into(),
            "SQL 文を解釈できませんでした。利用者ガイドの例と見比べてください。".into(),
        ),
    }
}

/// (what was expected in English, in Japanese, the fix in English, in Japanese).
fn expected_words(e: &Expected) -> (String, String, String, String) {
    let s = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
    match e {
        Expected::Statement => s(
            "a statement such as SELECT",
            "SELECT などの SQL 文",
            "Check the spelling of the first keyword.",
            "最初のキーワードの綴りを確認してください。",
        ),
        Expected::EndOfStatement => s(
            "the end of the statement",
            "文の終わり",
            "Remove what follows, or join it to the statement with the right keyword.",
            "余分な語を削除するか、正しいキーワードでつないでください。",
        ),
        Expected::QueryBody => s(
            "SELECT, VALUES or a subquery",
            "SELECT、VALUES または副問合せ",
            "Start the query with SELECT.",
            "クエリは SELECT で始めてください。",
        ),
        Expected::Expression => s(
            "an expression (a column, a value or a function)",
            "式（列・値・関数）",
            "Look for a missing value or a doubled comma or operator.",
            "値の抜けや、カンマ・演算子の重複がないか確認してください。",
        ),
        Expected::Identifier => s(
            "a name (of a column, table or alias)",
            "名前（列名・表名・別名）",
            "A reserved word used as a name must be put in double quotes.",
            "予約語を名前に使う場合はダブルクォートで囲んでください。",
        ),
        Expected::DataType => s(
            "a data type (e.g. INT, VARCHAR, DOUBLE)",
            "データ型（INT・VARCHAR・DOUBLE など）",
            "Check the type in CAST.",
            "CAST の型を確認してください。",
        ),
        Expected::Literal => s(
            "a literal value",
            "定数",
            "Write a number or a quoted string here.",
            "数値か引用符で囲んだ文字列を書いてください。",
        ),
        Expected::Symbol(sym) => {
            let (en, ja) = match sym.as_str() {
                ")" => ("a closing parenthesis `)`", "閉じ括弧 `)`"),
                "(" => ("an opening parenthesis `(`", "開き括弧 `(`"),
                "," => ("a comma `,`", "カンマ `,`"),
                _ => ("a symbol", "記号"),
            };
            (
                en.into(),
                ja.into(),
                "Check that every parenthesis is closed.".into(),
                "括弧の対応を確認してください。".into(),
            )
        }
        Expected::Keyword(k) => (
            format!("the keyword {k}"),
            format!("キーワード {k}"),
            "Check the order of the clauses (SELECT … FROM … WHERE … GROUP BY …).".into(),
            "句の順序（SELECT … FROM … WHERE … GROUP BY …）を確認してください。".into(),
        ),
        Expected::Other => s(
            "something else",
            "別の語",
            "Check the statement against the examples in the user guide.",
            "利用者ガイドの例と見比べてください。",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// Parse and plan `sql` against a tiny table; the refusal's message.
    async fn refused(sql: &str) -> String {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE patient (pid VARCHAR, sex VARCHAR, birth_year INT)")
            .await
            .unwrap();
        let state = ctx.state();
        let e = match state.create_logical_plan(sql).await {
            Ok(_) => panic!("{sql} planned"),
            Err(e) => e,
        };
        match plan_refusal(&e) {
            QueryError::InvalidSql { message } => message,
            other => panic!("{other:?}"),
        }
    }

    /// No engine wording leaks: neither sqlparser's nor DataFusion's.
    fn no_engine_text(m: &str) {
        for bad in [
            "ParserError",
            "SQL error",
            "Expected:",
            "found:",
            "Error during planning",
            "Schema error",
            "datafusion",
            "Valid fields",
        ] {
            assert!(!m.contains(bad), "engine text `{bad}` in {m}");
        }
        let (en, ja) = m.split_once(" / ").expect("English / Japanese");
        assert!(!en.is_empty() && ja.chars().any(|c| c > '\u{3000}'), "{m}");
    }

    #[tokio::test]
    async fn a_misspelt_keyword_names_line_column_and_a_statement() {
        let m = refused("SELEC sex FROM patient").await;
        no_engine_text(&m);
        assert!(
            m.starts_with("Line 1, column 1: expected a statement such as SELECT, found `SELEC`"),
            "{m}"
        );
        assert!(
            m.contains("1 行 1 列目: SELECT などの SQL 文が必要な位置に `SELEC` があります"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn a_second_line_error_has_its_own_position() {
        let m = refused("SELECT sex,\n  count(*) AS n FROM patient GROUP sex").await;
        no_engine_text(&m);
        assert!(
            m.starts_with("Line 2, column 30: expected the end of the statement, found `GROUP`"),
            "{m}"
        );
        assert!(
            m.contains("2 行 30 列目: 文の終わりが必要な位置に `GROUP` があります"),
            "{m}"
        );
        let m = refused("SELECT CAST(sex VARCHAR) AS s FROM patient").await;
        no_engine_text(&m);
        assert!(
            m.contains("expected the keyword AS, found `VARCHAR`"),
            "{m}"
        );
        assert!(m.contains("キーワード AS"), "{m}");
        let m = refused("SELECT sex\n  FROM patient WHERE = 1").await;
        no_engine_text(&m);
        assert!(
            m.contains("Line 2, column 22: expected an expression"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn a_missing_parenthesis_and_a_truncated_query() {
        let m = refused("SELECT count(DISTINCT pid FROM patient").await;
        no_engine_text(&m);
        assert!(m.contains("a closing parenthesis `)`"), "{m}");
        assert!(m.contains("閉じ括弧"), "{m}");
        let m = refused("SELECT sex FROM").await;
        no_engine_text(&m);
        assert!(m.contains("found the end of the query"), "{m}");
        assert!(m.contains("クエリの終わり"), "{m}");
    }

    #[tokio::test]
    async fn an_unterminated_string_is_named() {
        let m = refused("SELECT sex FROM patient WHERE sex = 'M").await;
        no_engine_text(&m);
        assert!(m.contains("string literal is not closed"), "{m}");
        assert!(m.contains("閉じられていません"), "{m}");
        assert!(m.contains("Line 1, column 37"), "{m}");
    }

    #[tokio::test]
    async fn unknown_names_are_said_without_the_engine_list_of_fields() {
        let m = refused("SELECT sexx FROM patient").await;
        no_engine_text(&m);
        assert!(m.contains("no column `sexx`"), "{m}");
        assert!(m.contains("列 `sexx`"), "{m}");
        assert!(
            !m.contains("birth_year"),
            "other columns are not listed: {m}"
        );
        let m = refused("SELECT count(*) FROM patients").await;
        no_engine_text(&m);
        assert!(m.contains("no table `patients`"), "{m}");
        let m = refused("SELECT cnt(sex) FROM patient").await;
        no_engine_text(&m);
        assert!(m.contains("no function `cnt`"), "{m}");
        let m = refused(
            "SELECT sex, count(*), (SELECT count(*) FROM patient) FROM patient GROUP BY sex",
        )
        .await;
        no_engine_text(&m);
        assert!(m.contains("the same name") && m.contains("同じ名前"), "{m}");
    }

    #[test]
    fn long_tokens_are_shortened() {
        let long = "x".repeat(200);
        let p = expected_problem(&format!("Expected: end of statement, found: {long}"));
        let Problem::Expected { found: Some(f), .. } = p else {
            panic!("{p:?}")
        };
        assert!(f.chars().count() <= MAX_ECHO + 1, "{f}");
    }

    #[test]
    fn location_suffix_is_read() {
        let (body, at) = split_location("Expected: ), found: FROM at Line: 3, Column: 14");
        assert_eq!(body, "Expected: ), found: FROM");
        assert_eq!(
            at,
            Some(Position {
                line: 3,
                column: 14
            })
        );
        assert_eq!(split_location("no location").1, None);
    }
}
