//! SQL stage, before parsing: a bound on how deeply one expression nests.
//!
//! A left-deep chain such as `1=1 AND 1=1 AND …` (20,000 terms is about 140 kB, well under
//! the body limit) parses without recursion but becomes an expression tree as deep as the
//! chain; planning, optimising, rewriting and even dropping that tree recurse once per
//! level and overflow a worker thread's stack, which aborts the whole process — every
//! researcher's session with it. Guarantee: the nesting is estimated from the token
//! stream alone (the tokenizer is iterative, so the estimate itself cannot overflow), and
//! a statement whose estimate exceeds [`MAX_DEPTH`] — or that has more tokens than
//! [`super::size::MAX_TOKENS`] — is refused as `invalid_sql` before any tree is built;
//! nesting the parser itself refuses (its recursion limit, [`PARSER_RECURSION_LIMIT`]:
//! nested subqueries and function calls) gets the same bilingual refusal
//! ([`parse_error`]). Set operations and joins count as operators: a chain of 20,000
//! `UNION ALL` or `JOIN` builds a plan as deep as the chain.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::query::QueryError;

/// The deepest expression accepted. Measured in a debug build on a 2 MiB worker stack,
/// the process overflowed at about 175 ANDed comparisons (an estimate of about 350); the
/// example queries stay below half of it (tested).
pub const MAX_DEPTH: usize = 200;

/// The parser's own recursion limit (nested subqueries, function calls, parentheses),
/// set explicitly on the parser (DataFusion's default, kept).
pub const PARSER_RECURSION_LIMIT: usize = 50;

/// The most levels of parentheses and CASE … END one statement may nest. Each level costs
/// the parser one to three steps of its recursion limit (a subquery costs three), so this
/// bound refuses, with a clear message, what the parser would otherwise refuse with a
/// confusing one (it backtracks and reports an unexpected token). The example queries
/// nest at most half of it (tested).
pub const MAX_NESTING: usize = 16;

/// Refuse a statement whose expressions nest deeper than [`MAX_DEPTH`] or that has more
/// tokens than [`super::size::MAX_TOKENS`].
pub fn check_depth(sql: &str) -> Result<(), QueryError> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        // The parser reports the tokenizer's error with its position.
        return Ok(());
    };
    let significant = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .count();
    super::size::check_tokens(significant)?;
    let levels = nesting(&tokens);
    if levels > MAX_NESTING {
        return Err(too_deep(&format!("{levels} levels"), MAX_NESTING));
    }
    let depth = estimate(&tokens);
    if depth <= MAX_DEPTH {
        return Ok(());
    }
    Err(too_deep(&format!("about {depth} operators"), MAX_DEPTH))
}

/// The refusal of a too-deep query: `what` is how deep it is, `limit` the bound.
fn too_deep(what: &str, limit: usize) -> QueryError {
    QueryError::InvalidSql {
        message: format!(
            "the query is too deep to parse: an expression, subquery or set operation nests {what} deep (at most {limit}); list values with IN (…) instead of chaining OR/AND, use a CASE with several WHEN branches instead of nesting CASE or functions, join subqueries side by side instead of nesting them, or split the query / 入れ子が深すぎて解析できません（{what}、上限 {limit}）。OR/AND を連ねる代わりに IN (…) を、CASE や関数を入れ子にする代わりに WHEN を並べた CASE を使い、副問合せは入れ子にせず並べて結合するか、クエリを分けてください"
        ),
    }
}

/// The refusal of a statement the parser rejected: its own recursion limit gets the same
/// bilingual refusal as [`check_depth`]; other parse errors are worded by
/// [`super::sql_error`] (line, column and what was expected, never the parser's text).
pub fn parse_error(e: DataFusionError) -> QueryError {
    let e = match e {
        DataFusionError::Diagnostic(_, inner) => *inner,
        e => e,
    };
    match e {
        DataFusionError::SQL(pe, _) if matches!(*pe, ParserError::RecursionLimitExceeded) => {
            too_deep("more levels", PARSER_RECURSION_LIMIT)
        }
        e => super::sql_error::parse_refusal(&e),
    }
}

/// An upper bound of the expression depth: for every open parenthesis level, the binary
/// operators since the last comma at that level, plus the levels themselves.
pub fn estimate(tokens: &[Token]) -> usize {
    // ops[i]: operators in the current list item at parenthesis level i; `open` is their
    // running sum, kept so that the estimate stays linear in the tokens (a sum per token
    // would be quadratic in the nesting — itself a way to stall the gateway).
    let mut ops: Vec<usize> = vec![0];
    let mut open = 0;
    let mut deepest = 0;
    for t in tokens {
        match t {
            Token::LParen => ops.push(0),
            Token::RParen if ops.len() > 1 => open -= ops.pop().expect("checked"),
            Token::Comma => open -= std::mem::take(ops.last_mut().expect("never empty")),
            t if is_operator(t) => {
                *ops.last_mut().expect("never empty") += 1;
                open += 1;
            }
            _ => {}
        }
        deepest = deepest.max(open + ops.len() - 1);
    }
    deepest
}

/// The deepest nesting of parentheses and CASE … END.
pub fn nesting(tokens: &[Token]) -> usize {
    let (mut level, mut deepest) = (0usize, 0usize);
    for t in tokens {
        match t {
            Token::LParen => level += 1,
            Token::Word(w) if w.keyword == Keyword::CASE => level += 1,
            Token::RParen => level = level.saturating_sub(1),
            Token::Word(w) if w.keyword == Keyword::END => level = level.saturating_sub(1),
            _ => {}
        }
        deepest = deepest.max(level);
    }
    deepest
}

/// Tokens that join two operands into one deeper expression node.
fn is_operator(t: &Token) -> bool {
    match t {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::JOIN
                | Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::IS
                | Keyword::BETWEEN
                | Keyword::WHEN
        ),
        Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe
        | Token::DoubleColon => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(sql: &str) -> usize {
        estimate(&Tokenizer::new(&GenericDialect {}, sql).tokenize().unwrap())
    }

    #[test]
    fn chains_count_every_operator_and_lists_reset_at_commas() {
        assert_eq!(depth("SELECT a FROM t"), 0);
        assert_eq!(depth("SELECT a FROM t WHERE x = 1 AND y = 2"), 3);
        // Items of a list are siblings, not nested.
        assert_eq!(depth("SELECT a + 1, b + 2, c + 3 FROM t"), 1);
        // A parenthesis nests inside the operators before it: `=` AND, one level, `= OR =`.
        assert_eq!(
            depth("SELECT a FROM t WHERE x = 1 AND (y = 2 OR z = 3)"),
            2 + 1 + 3
        );
        // An IN list is flat; `count(*)`'s star counts as one (an overestimate is safe).
        assert_eq!(
            depth("SELECT count(*) FROM t WHERE x IN (1, 2, 3, 4, 5, 6)"),
            2
        );
    }

    #[test]
    fn attack_deep_and_chain_is_refused_and_a_short_one_is_not() {
        let chain = |n: usize| vec!["1=1"; n].join(" AND ");
        let deep = format!("SELECT count(*) FROM patient WHERE {}", chain(20_000));
        let e = check_depth(&deep).unwrap_err();
        assert_eq!(e.code(), "invalid_sql");
        assert!(
            e.public_message().contains("IN (…)"),
            "{}",
            e.public_message()
        );
        let short = format!("SELECT count(*) FROM patient WHERE {}", chain(40));
        assert!(check_depth(&short).is_ok());
    }

    #[test]
    fn attack_deep_parentheses_are_refused_in_linear_time() {
        let n = 100_000;
        let sql = format!("SELECT {}1{} FROM patient", "(".repeat(n), ")".repeat(n));
        assert_eq!(depth(&sql), n);
        assert_eq!(check_depth(&sql).unwrap_err().code(), "invalid_sql");
    }

    #[test]
    fn the_example_queries_stay_far_below_the_limit() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/queries");
        let mut seen = 0;
        for sub in ["examples", "dp", "pms"] {
            for f in std::fs::read_dir(format!("{dir}/{sub}")).unwrap() {
                let sql = std::fs::read_to_string(f.unwrap().path()).unwrap();
                let tokens = Tokenizer::new(&GenericDialect {}, &sql).tokenize().unwrap();
                assert!(estimate(&tokens) < MAX_DEPTH / 2, "{sql}");
                assert!(nesting(&tokens) <= MAX_NESTING / 2, "{sql}");
                seen += 1;
            }
        }
        assert!(seen >= 10, "only {seen} example queries found");
    }
}
